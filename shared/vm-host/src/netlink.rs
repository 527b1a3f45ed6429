//! rtnetlink over a plain blocking socket: the links, bridges and addresses
//! vm-net and vm-run need, without running `ip` or `brctl`.

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};

/// The alias vm-net gives the links it makes, so `vm-net list` can tell
/// them from the host's own.
pub const VMTOOLS_ALIAS: &str = "vmtools";

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("{what}: {source}")]
    Kernel {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("malformed netlink reply: {0}")]
    Decode(String),
}

impl NetlinkError {
    /// The errno the kernel answered with, if it did.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { source, .. } | Self::Socket(source) => source.raw_os_error(),
            Self::Decode(_) => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, NetlinkError>;

/// One network interface as `ip link` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `bridge`, `tun`, `veth`, ... (none for physical devices).
    pub kind: Option<String>,
    /// The bridge this link is a port of.
    pub master: Option<u32>,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Has a carrier (IFF_LOWER_UP): for a tap, someone holds it open.
    pub lower_up: bool,
    /// The kernel's operational state: UP, DOWN, UNKNOWN, ...
    pub oper_state: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    pub alias: Option<String>,
}

/// A route netlink socket.
#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    pub fn open() -> Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
        socket.bind_auto().map_err(NetlinkError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Socket)?;
        Ok(Self { socket, seq: 0 })
    }

    /// Sends `msg` and collects the replies until the ACK (or the end of a
    /// dump); a kernel error becomes `Kernel { what }`.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        what: &str,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
        packet.header.flags = NLM_F_REQUEST | flags;
        packet.header.sequence_number = self.seq;
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0).map_err(NetlinkError::Socket)?;
        let mut out = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full().map_err(NetlinkError::Socket)?;
            let mut offset = 0;
            while offset < data.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..])
                    .map_err(|e| NetlinkError::Decode(e.to_string()))?;
                let len = reply.header.length as usize;
                if reply.header.sequence_number == self.seq {
                    match reply.payload {
                        NetlinkPayload::Done(_) => return Ok(out),
                        NetlinkPayload::Error(e) => {
                            return match e.code {
                                None => Ok(out),
                                Some(_) => Err(NetlinkError::Kernel {
                                    what: what.to_string(),
                                    source: e.to_io(),
                                }),
                            };
                        }
                        NetlinkPayload::InnerMessage(m) => out.push(m),
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
            // A reply to a plain request (no dump, no ACK asked) ends here.
            if flags & NLM_F_DUMP != NLM_F_DUMP && flags & NLM_F_ACK == 0 {
                return Ok(out);
            }
        }
    }

    /// Every link in this network namespace.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let replies = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
            "listing links",
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_of(&l)),
                _ => None,
            })
            .collect())
    }

    /// The link named `name`, if there is one.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>> {
        Ok(self.links()?.into_iter().find(|l| l.name == name))
    }

    /// Makes a Linux bridge (down, like `ip link add NAME type bridge`),
    /// with its own fixed MAC address ([`bridge_mac`]). A bridge without
    /// one takes the lowest MAC of its ports, so it changes whenever a
    /// VM's tap comes or goes, and a guest that cached the old address
    /// (a restored or migrated one) can no longer reach the host.
    /// libvirt's and systemd's bridges keep a fixed MAC for the same reason.
    pub fn add_bridge(&mut self, name: &str) -> Result<()> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes
            .push(LinkAttribute::Address(bridge_mac(name).to_vec()));
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.request(
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK,
            &format!("creating bridge {name}"),
        )?;
        Ok(())
    }

    pub fn delete_link(&mut self, index: u32, name: &str) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.request(
            RouteNetlinkMessage::DelLink(m),
            NLM_F_ACK,
            &format!("deleting {name}"),
        )?;
        Ok(())
    }

    fn set_link(&mut self, index: u32, attrs: Vec<LinkAttribute>, what: &str) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes = attrs;
        self.request(RouteNetlinkMessage::SetLink(m), NLM_F_ACK, what)?;
        Ok(())
    }

    /// Makes `index` a port of bridge `master`, or of none.
    pub fn set_master(&mut self, index: u32, master: Option<u32>, what: &str) -> Result<()> {
        self.set_link(
            index,
            vec![LinkAttribute::Controller(master.unwrap_or(0))],
            what,
        )
    }

    /// Marks a link as made by vmtools.
    pub fn set_alias(&mut self, index: u32, alias: &str, what: &str) -> Result<()> {
        self.set_link(index, vec![LinkAttribute::IfAlias(alias.to_string())], what)
    }

    /// `ip link set NAME up` / `down`.
    pub fn set_up(&mut self, index: u32, up: bool, what: &str) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.change_mask = LinkFlags::Up;
        if up {
            m.header.flags = LinkFlags::Up;
        }
        self.request(RouteNetlinkMessage::SetLink(m), NLM_F_ACK, what)?;
        Ok(())
    }

    fn address_message(index: u32, addr: IpAddr, prefix: u8) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.index = index;
        m.header.prefix_len = prefix;
        m.header.family = match addr {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        m.attributes.push(AddressAttribute::Local(addr));
        m.attributes.push(AddressAttribute::Address(addr));
        m
    }

    pub fn add_address(&mut self, index: u32, addr: IpAddr, prefix: u8, what: &str) -> Result<()> {
        self.request(
            RouteNetlinkMessage::NewAddress(Self::address_message(index, addr, prefix)),
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK,
            what,
        )?;
        Ok(())
    }

    pub fn del_address(&mut self, index: u32, addr: IpAddr, prefix: u8, what: &str) -> Result<()> {
        self.request(
            RouteNetlinkMessage::DelAddress(Self::address_message(index, addr, prefix)),
            NLM_F_ACK,
            what,
        )?;
        Ok(())
    }

    /// The addresses on link `index`, with their prefix lengths.
    pub fn addresses(&mut self, index: u32) -> Result<Vec<(IpAddr, u8)>> {
        let replies = self.request(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
            "listing addresses",
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                // IPv4 puts the interface's own address in Local (Address is
                // the peer's on point-to-point links); IPv6 has only Address.
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
                    let ip = |local: bool| {
                        a.attributes.iter().find_map(|at| match at {
                            AddressAttribute::Local(ip) if local => Some(*ip),
                            AddressAttribute::Address(ip) if !local => Some(*ip),
                            _ => None,
                        })
                    };
                    ip(true)
                        .or_else(|| ip(false))
                        .map(|ip| (ip, a.header.prefix_len))
                }
                _ => None,
            })
            .collect())
    }
}

fn link_of(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        kind: None,
        master: None,
        up: m.header.flags.contains(LinkFlags::Up),
        lower_up: m.header.flags.contains(LinkFlags::LowerUp),
        oper_state: "UNKNOWN".into(),
        mac: None,
        mtu: None,
        alias: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name.clone_from(n),
            LinkAttribute::Controller(i) => l.master = Some(*i),
            LinkAttribute::Mtu(v) => l.mtu = Some(*v),
            LinkAttribute::IfAlias(s) => l.alias = Some(s.clone()),
            LinkAttribute::Address(b) if b.len() == 6 => {
                l.mac = Some([b[0], b[1], b[2], b[3], b[4], b[5]]);
            }
            LinkAttribute::OperState(s) => l.oper_state = state_name(*s).into(),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        l.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    l
}

fn state_name(s: State) -> &'static str {
    match s {
        State::Up => "UP",
        State::Down => "DOWN",
        State::LowerLayerDown => "LOWERLAYERDOWN",
        State::Dormant => "DORMANT",
        State::Testing => "TESTING",
        State::NotPresent => "NOTPRESENT",
        _ => "UNKNOWN",
    }
}

/// A bridge's MAC address, the same for the same name on every host:
/// FNV-1a of the name, as a locally administered unicast address.
pub fn bridge_mac(name: &str) -> [u8; 6] {
    let h = name
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
        .to_le_bytes();
    [(h[0] & 0xfc) | 0x02, h[1], h[2], h[3], h[4], h[5]]
}

#[cfg(test)]
mod bridge_mac_tests {
    use super::bridge_mac;

    #[test]
    fn bridge_macs_are_stable_local_unicast_and_differ_by_name() {
        let a = bridge_mac("br0");
        assert_eq!(a, bridge_mac("br0"));
        assert_ne!(a, bridge_mac("br1"));
        assert_eq!(a[0] & 0x01, 0, "unicast");
        assert_eq!(a[0] & 0x02, 0x02, "locally administered");
    }
}
