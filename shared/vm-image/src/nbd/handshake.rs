//! The fixed newstyle handshake: what the client asks for before any
//! request, and what it takes from the server's answers.

use std::io::Write;

use super::wire::{self, get_u16, get_u32, get_u64};
use super::{Address, Error, Stream};

#[derive(Debug, Default)]
pub(super) struct ExportInfo {
    pub size: u64,
    pub min_block: u32,
    pub max_block: u32,
    /// The transmission flags (NBD_FLAG_*: read-only, what it accepts).
    pub flags: u16,
}

/// The fixed newstyle handshake: structured replies, the metadata
/// context, then NBD_OPT_GO. Returns the context's id and what the server
/// said of the export. Without structured replies reads still work
/// (simple replies) and block status says every byte is data.
pub(super) fn handshake(s: &mut Stream, a: &Address) -> Result<(Option<u32>, ExportInfo), Error> {
    if get_u64(s)? != wire::NBDMAGIC {
        return Err(Error::Protocol("not an NBD server".into()));
    }
    if get_u64(s)? != wire::IHAVEOPT {
        return Err(Error::Unsupported(
            "the server speaks NBD's oldstyle protocol, which is not supported".into(),
        ));
    }
    let server_flags = get_u16(s)?;
    if server_flags & wire::FLAG_FIXED_NEWSTYLE == 0 {
        return Err(Error::Unsupported(
            "the server does not speak NBD's fixed newstyle protocol".into(),
        ));
    }
    let client_flags = u32::from(server_flags & (wire::FLAG_FIXED_NEWSTYLE | wire::FLAG_NO_ZEROES));
    s.write_all(&client_flags.to_be_bytes())?;

    wire::send_option(s, wire::OPT_STRUCTURED_REPLY, &[])?;
    let structured = match wire::option_reply(s, wire::OPT_STRUCTURED_REPLY) {
        Ok((wire::REP_ACK, _)) => true,
        Ok(_) => {
            return Err(Error::Protocol(
                "unexpected reply to structured replies".into(),
            ))
        }
        Err(Error::Refused { .. }) => false,
        Err(e) => return Err(e),
    };

    let context = if structured {
        meta_context(s, a)?
    } else {
        None
    };
    if a.meta_context.is_some() && context.is_none() {
        return Err(Error::Unsupported(format!(
            "the server does not provide the metadata context '{}'",
            a.meta_context.as_deref().unwrap_or_default()
        )));
    }

    let mut go = Vec::new();
    wire::put_name(&mut go, &a.export)?;
    go.extend_from_slice(&1u16.to_be_bytes());
    go.extend_from_slice(&wire::INFO_BLOCK_SIZE.to_be_bytes());
    wire::send_option(s, wire::OPT_GO, &go)?;
    let mut info = ExportInfo::default();
    let mut have_export = false;
    loop {
        let (kind, data) = wire::option_reply(s, wire::OPT_GO)?;
        match kind {
            wire::REP_ACK => break,
            wire::REP_INFO if data.len() >= 2 => {
                let d = &data[2..];
                match u16::from_be_bytes([data[0], data[1]]) {
                    wire::INFO_EXPORT if d.len() == 10 => {
                        let mut r = d;
                        info.size = get_u64(&mut r)?;
                        info.flags = get_u16(&mut r)?;
                        have_export = true;
                    }
                    wire::INFO_BLOCK_SIZE if d.len() == 12 => {
                        let mut r = d;
                        info.min_block = get_u32(&mut r)?;
                        let _preferred = get_u32(&mut r)?;
                        info.max_block = get_u32(&mut r)?;
                        if info.min_block > 64 << 10
                            || !info.min_block.is_power_of_two() && info.min_block != 0
                        {
                            return Err(Error::Protocol(format!(
                                "minimum block size {}",
                                info.min_block
                            )));
                        }
                    }
                    _ => {}
                }
            }
            _ => {
                return Err(Error::Protocol(format!(
                    "unexpected reply {kind} to NBD_OPT_GO"
                )))
            }
        }
    }
    if info.flags & wire::FLAG_HAS_FLAGS == 0 {
        // Without this bit the other flags mean nothing.
        info.flags = 0;
    }
    if !have_export {
        return Err(Error::Protocol(
            "the server did not say how large the export is".into(),
        ));
    }
    if info.size > i64::MAX as u64 {
        return Err(Error::Protocol(format!("export of {} bytes", info.size)));
    }
    Ok((context, info))
}

/// Asks for one metadata context (`base:allocation`, or the one
/// `x-dirty-bitmap` names); its id when the server has it.
fn meta_context(s: &mut Stream, a: &Address) -> Result<Option<u32>, Error> {
    let want = a.meta_context.as_deref().unwrap_or("base:allocation");
    let mut q = Vec::new();
    wire::put_name(&mut q, &a.export)?;
    q.extend_from_slice(&1u32.to_be_bytes());
    wire::put_name(&mut q, want)?;
    wire::send_option(s, wire::OPT_SET_META_CONTEXT, &q)?;
    let mut id = None;
    loop {
        match wire::option_reply(s, wire::OPT_SET_META_CONTEXT) {
            Ok((wire::REP_ACK, _)) => return Ok(id),
            Ok((wire::REP_META_CONTEXT, d)) if d.len() >= 4 => {
                if &d[4..] != want.as_bytes() || id.is_some() {
                    return Err(Error::Protocol("a metadata context not asked for".into()));
                }
                id = Some(u32::from_be_bytes([d[0], d[1], d[2], d[3]]));
            }
            Ok((kind, _)) => {
                return Err(Error::Protocol(format!(
                    "unexpected reply {kind} to NBD_OPT_SET_META_CONTEXT"
                )))
            }
            Err(Error::Refused { .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}
