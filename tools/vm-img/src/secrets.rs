//! `--object secret,id=ID,data=DATA[,format=raw|base64]` and
//! `--object secret,id=ID,file=PATH`: the passwords encrypted images are
//! made and opened with, as qemu-img takes them. Other object types, and
//! secrets that are themselves encrypted (`keyid`, `iv`), are refused.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Context, Result};

#[derive(Debug, Default)]
pub struct Secrets(HashMap<String, Vec<u8>>);

impl Secrets {
    pub fn parse(objects: &[String]) -> Result<Self> {
        let mut out = HashMap::new();
        for obj in objects {
            let mut kind = None;
            let mut id = None;
            let mut data = None;
            let mut file = None;
            let mut format = "raw";
            let items = crate::input::names::option_items(obj);
            for (i, item) in items.iter().enumerate() {
                let (k, v) = match item.split_once('=') {
                    Some(kv) => kv,
                    None if i == 0 => ("qom-type", item.as_str()),
                    None => bail!("Invalid parameter '{item}'"),
                };
                match k {
                    "qom-type" => kind = Some(v),
                    "id" => id = Some(v),
                    "data" => data = Some(v),
                    "file" => file = Some(v),
                    "format" => format = v,
                    "keyid" | "iv" => {
                        bail!("secrets encrypted with another secret (keyid) are not supported")
                    }
                    other => bail!("Parameter '{other}' is unexpected"),
                }
            }
            match kind {
                Some("secret") => {}
                Some(t) => bail!("Invalid object type '{t}' (only secret objects are taken)"),
                None => bail!("Parameter 'qom-type' is missing"),
            }
            let id = id.ok_or_else(|| anyhow!("Parameter 'id' is missing"))?;
            let raw = match (data, file) {
                (Some(d), None) => d.as_bytes().to_vec(),
                (None, Some(f)) => {
                    std::fs::read(f).with_context(|| format!("Unable to read secret file '{f}'"))?
                }
                (Some(_), Some(_)) => bail!("'data' and 'file' are mutually exclusive"),
                (None, None) => bail!("Either 'data' or 'file' must be provided"),
            };
            let value = match format {
                "raw" => raw,
                "base64" => base64(&raw).ok_or_else(|| anyhow!("Invalid base64 data"))?,
                other => bail!("Invalid parameter 'format': '{other}' (raw or base64)"),
            };
            if out.insert(id.to_string(), value).is_some() {
                bail!("attempt to add duplicate property '{id}' to object");
            }
        }
        Ok(Self(out))
    }

    pub fn get(&self, id: &str) -> Result<&[u8]> {
        self.0
            .get(id)
            .map(Vec::as_slice)
            .ok_or_else(|| anyhow!("No secret with id '{id}'"))
    }
}

/// Standard base64 with padding; `None` for anything else.
fn base64(text: &[u8]) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(
            match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return None,
            }
            .into(),
        )
    };
    let text: Vec<u8> = text
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if text.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for (i, q) in text.chunks(4).enumerate() {
        let last = i == text.len() / 4 - 1;
        let pad = q.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &q[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_as_qemu_img_takes_them() {
        let s = Secrets::parse(&[
            "secret,id=a,data=hunter2".into(),
            "qom-type=secret,id=b,data=MTIzNDU2,format=base64".into(),
            // `,,` is a comma inside a value
            "secret,id=c,,d,data=x,,y,,,,z".into(),
        ])
        .unwrap();
        assert_eq!(s.get("c,d").unwrap(), b"x,y,,z");
        assert_eq!(s.get("a").unwrap(), b"hunter2");
        assert_eq!(s.get("b").unwrap(), b"123456");
        assert!(s.get("c").is_err());
        assert!(s.get("d").is_err());
        for bad in [
            "iothread,id=x",
            "secret,data=x",
            "secret,id=x",
            "secret,id=x,data=@@@@,format=base64",
            "secret,id=x,data=y,keyid=k",
            "secret,id=x,data=y,file=/etc/hostname",
        ] {
            assert!(Secrets::parse(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(
            Secrets::parse(&["secret,id=x,data=1".into(), "secret,id=x,data=2".into()]).is_err()
        );
        assert_eq!(base64(b"aGk=").unwrap(), b"hi");
        assert_eq!(base64(b"").unwrap(), b"");
        assert!(base64(b"a=bc").is_none());
    }
}
