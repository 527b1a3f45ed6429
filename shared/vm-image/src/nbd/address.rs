//! Where an NBD export is: the names qemu-img takes for one, parsed into
//! a socket address, an export name and the metadata context to query.
//!
//! - URIs: `nbd://HOST[:PORT]/EXPORT`, `nbd+tcp://...`,
//!   `nbd+unix:///EXPORT?socket=PATH`
//! - the old form: `nbd:unix:PATH[:exportname=NAME]`,
//!   `nbd:HOST:PORT[:exportname=NAME]`
//! - options (`--image-opts`, `json:`): `server.type=unix`, `server.path`,
//!   `server.type=inet`, `server.host`, `server.port`, `export`,
//!   `x-dirty-bitmap`; QEMU's older `path`, `host`, `port` too.
//!
//! TLS (`nbds://`, `tls-creds`) is refused, never silently dropped.

use std::path::PathBuf;

use super::Error;

/// NBD's registered port.
pub const DEFAULT_PORT: u16 = 10809;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Socket {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub socket: Socket,
    pub export: String,
    /// QEMU's `x-dirty-bitmap`: a metadata context read in place of
    /// `base:allocation`, its bits taken as if they were that context's
    /// (bit 0 "hole", bit 1 "zero"). qemu-img map shows dirty bitmaps and
    /// allocation depth through it.
    pub meta_context: Option<String>,
}

impl Address {
    /// Whether `name` is written as an NBD filename (not whether it parses).
    pub fn is_nbd_name(name: &str) -> bool {
        name.starts_with("nbd:")
            || name.starts_with("nbd+unix:")
            || name.starts_with("nbd+tcp:")
            || name.starts_with("nbds:")
            || name.starts_with("nbds+unix:")
    }

    /// An NBD filename: a URI or the old `nbd:` form.
    pub fn parse(name: &str) -> Result<Self, Error> {
        if name.starts_with("nbds") {
            return Err(Error::Unsupported(format!(
                "'{name}': NBD over TLS is not supported"
            )));
        }
        if let Some(rest) = name.strip_prefix("nbd+unix://") {
            return parse_unix_uri(name, rest);
        }
        if let Some(rest) = name
            .strip_prefix("nbd://")
            .or_else(|| name.strip_prefix("nbd+tcp://"))
        {
            return parse_tcp_uri(name, rest);
        }
        if let Some(rest) = name.strip_prefix("nbd:") {
            return parse_legacy(name, rest);
        }
        Err(bad(name, "not an NBD name"))
    }

    /// QEMU's option keys for the nbd driver (already flattened, with the
    /// `driver` key taken out). `text` is what the user gave, for errors.
    pub fn from_options(text: &str, opts: &[(String, String)]) -> Result<Self, Error> {
        let mut kind = None;
        let mut path = None;
        let mut host = None;
        let mut port = None;
        let mut export = String::new();
        let mut meta_context = None;
        for (k, v) in opts {
            match k.as_str() {
                "server.type" => kind = Some(v.as_str()),
                "server.path" | "path" => path = Some(PathBuf::from(v)),
                "server.host" | "host" => host = Some(v.clone()),
                "server.port" | "port" => port = Some(v.as_str()),
                "export" => export.clone_from(v),
                "x-dirty-bitmap" => meta_context = Some(v.clone()),
                "tls-creds" | "tls-hostname" => {
                    return Err(Error::Unsupported(format!(
                        "'{text}': NBD over TLS is not supported"
                    )))
                }
                // Tuning that changes nothing about what is read.
                "reconnect-delay" | "open-timeout" | "node-name" | "read-only" => {}
                other => {
                    return Err(Error::Unsupported(format!(
                        "'{text}': option '{other}' is not supported for nbd"
                    )))
                }
            }
        }
        let socket = match (kind, path, host) {
            (Some("unix") | None, Some(p), None) => Socket::Unix(p),
            (Some("inet") | None, None, Some(h)) => Socket::Tcp {
                host: h,
                port: port.map_or(Ok(DEFAULT_PORT), |p| parse_port(text, p))?,
            },
            (Some(t), _, _) if t != "unix" && t != "inet" => {
                return Err(Error::Unsupported(format!(
                    "'{text}': server.type '{t}' is not supported"
                )))
            }
            _ => return Err(bad(text, "give either server.path or server.host")),
        };
        Ok(Self {
            socket,
            export,
            meta_context,
        })
    }

    /// The URI form, as qemu-img names an export in what it prints.
    pub fn uri(&self) -> String {
        match &self.socket {
            Socket::Unix(p) => format!("nbd+unix:///{}?socket={}", self.export, p.display()),
            Socket::Tcp { host, port } => format!("nbd://{host}:{port}/{}", self.export),
        }
    }
}

fn bad(name: &str, why: &str) -> Error {
    Error::Invalid(format!("'{name}': {why}"))
}

fn parse_port(name: &str, p: &str) -> Result<u16, Error> {
    p.parse()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| bad(name, "the port must be a number from 1 to 65535"))
}

/// `/EXPORT?socket=PATH` after `nbd+unix://` (the authority must be empty).
fn parse_unix_uri(name: &str, rest: &str) -> Result<Address, Error> {
    let rest = rest.strip_prefix('/').ok_or_else(|| {
        bad(
            name,
            "a unix socket URI has no host: nbd+unix:///EXPORT?socket=PATH",
        )
    })?;
    let (export, query) = rest
        .split_once('?')
        .ok_or_else(|| bad(name, "no socket given (?socket=PATH)"))?;
    let mut socket = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("socket", p)) if !p.is_empty() => {
                socket = Some(PathBuf::from(unescape(name, p)?));
            }
            _ => return Err(bad(name, "the only query parameter taken is socket=PATH")),
        }
    }
    Ok(Address {
        socket: Socket::Unix(socket.ok_or_else(|| bad(name, "no socket given (?socket=PATH)"))?),
        export: unescape(name, export)?,
        meta_context: None,
    })
}

/// `HOST[:PORT][/EXPORT]` after `nbd://`.
fn parse_tcp_uri(name: &str, rest: &str) -> Result<Address, Error> {
    if rest.contains('?') {
        return Err(bad(name, "a TCP URI takes no query parameters"));
    }
    let (authority, export) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| bad(name, "unclosed '[' in the host"))?;
        (h, after.strip_prefix(':'))
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad(name, "no host given"));
    }
    Ok(Address {
        socket: Socket::Tcp {
            host: host.to_string(),
            port: port.map_or(Ok(DEFAULT_PORT), |p| parse_port(name, p))?,
        },
        export: unescape(name, export)?,
        meta_context: None,
    })
}

/// `unix:PATH[:exportname=NAME]` or `HOST:PORT[:exportname=NAME]`.
fn parse_legacy(name: &str, rest: &str) -> Result<Address, Error> {
    let (rest, export) = match rest.split_once(":exportname=") {
        Some((r, e)) => (r, e.to_string()),
        None => (rest, String::new()),
    };
    let socket = if let Some(path) = rest.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(bad(name, "no socket path given"));
        }
        Socket::Unix(PathBuf::from(path))
    } else {
        let (host, port) = rest.rsplit_once(':').unwrap_or((rest, ""));
        if host.is_empty() {
            return Err(bad(name, "no host given"));
        }
        Socket::Tcp {
            host: host.to_string(),
            port: if port.is_empty() {
                DEFAULT_PORT
            } else {
                parse_port(name, port)?
            },
        }
    };
    Ok(Address {
        socket,
        export,
        meta_context: None,
    })
}

/// Percent-decoding of a URI part.
fn unescape(name: &str, s: &str) -> Result<String, Error> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad(name, "a '%' not followed by two hex digits"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad(name, "not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(p: &str, e: &str) -> Address {
        Address {
            socket: Socket::Unix(p.into()),
            export: e.into(),
            meta_context: None,
        }
    }
    fn tcp(h: &str, port: u16, e: &str) -> Address {
        Address {
            socket: Socket::Tcp {
                host: h.into(),
                port,
            },
            export: e.into(),
            meta_context: None,
        }
    }

    #[test]
    fn names_qemu_img_takes() {
        let cases = [
            ("nbd+unix:///exp?socket=/s/x.sock", unix("/s/x.sock", "exp")),
            ("nbd+unix:///?socket=/s", unix("/s", "")),
            ("nbd+unix:///a%20b?socket=/s%3A1", unix("/s:1", "a b")),
            ("nbd://localhost/exp", tcp("localhost", 10809, "exp")),
            ("nbd://127.0.0.1:10810", tcp("127.0.0.1", 10810, "")),
            ("nbd+tcp://[::1]:99/e", tcp("::1", 99, "e")),
            ("nbd:unix:/run/s.sock", unix("/run/s.sock", "")),
            ("nbd:unix:/run/s:exportname=d", unix("/run/s", "d")),
            ("nbd:host:4000:exportname=x", tcp("host", 4000, "x")),
        ];
        for (name, want) in cases {
            assert_eq!(Address::parse(name).unwrap(), want, "{name}");
        }
        assert_eq!(unix("/s", "e").uri(), "nbd+unix:///e?socket=/s");
    }

    #[test]
    fn bad_names_say_why() {
        for name in [
            "nbd+unix://host/exp?socket=/s",
            "nbd+unix:///exp",
            "nbd+unix:///exp?socket=/s&x=1",
            "nbd://:80/e",
            "nbd://h:0/e",
            "nbd://h:99999/e",
            "nbd://h/e?x=1",
            "nbd:unix:",
            "nbd+unix:///%zz?socket=/s",
            "nbds://h/e",
        ] {
            assert!(Address::parse(name).is_err(), "{name}");
        }
    }

    #[test]
    fn options_as_image_opts_give_them() {
        let o = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter().map(|(a, b)| ((*a).into(), (*b).into())).collect()
        };
        let a = Address::from_options(
            "t",
            &o(&[
                ("server.type", "unix"),
                ("server.path", "/s"),
                ("x-dirty-bitmap", "qemu:allocation-depth"),
            ]),
        )
        .unwrap();
        assert_eq!(a.socket, Socket::Unix("/s".into()));
        assert_eq!(a.meta_context.as_deref(), Some("qemu:allocation-depth"));
        let a = Address::from_options(
            "t",
            &o(&[
                ("server.type", "inet"),
                ("server.host", "h"),
                ("export", "e"),
            ]),
        )
        .unwrap();
        assert_eq!(a, tcp("h", 10809, "e"));
        for bad in [
            o(&[("server.type", "fd"), ("server.path", "/s")]),
            o(&[("server.path", "/s"), ("server.host", "h")]),
            o(&[("server.path", "/s"), ("tls-creds", "t")]),
            o(&[("server.path", "/s"), ("bogus", "1")]),
            o(&[]),
        ] {
            assert!(Address::from_options("t", &bad).is_err(), "{bad:?}");
        }
    }
}
