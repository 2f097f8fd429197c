//! Deleting stale UDP conntrack entries after a Service's endpoints change (kube-proxy's
//! `CleanStaleEntries`): otherwise a UDP client keeps hitting a removed endpoint.
//!
//! Talks ctnetlink directly: one filtered flush request (`IPCTNL_MSG_CT_DELETE` with
//! `CTA_FILTER`, kernel ≥ 6.12), acting in the calling thread's network namespace.

use std::io;
use std::net::Ipv4Addr;

use rtnetlink::sys::protocols::NETLINK_NETFILTER;
use rtnetlink::sys::{Socket, SocketAddr};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLMSG_ERROR: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;
const AF_INET: u8 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_IP: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_FILTER: u16 = 25;
const CTA_FILTER_ORIG_FLAGS: u16 = 1;
const CTA_FILTER_REPLY_FLAGS: u16 = 2;
const FILTER_IP_DST: u32 = 1 << 1;
const FILTER_PROTO_NUM: u32 = 1 << 3;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

/// Errors from deleting conntrack entries.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error("conntrack delete (dst {dst}): {step}: {source}")]
    Io { dst: Ipv4Addr, step: &'static str, source: io::Error },
    #[error("conntrack delete (dst {dst}): kernel answered with an unexpected message")]
    BadReply { dst: Ipv4Addr },
}

/// One netlink attribute, padded to 4 bytes.
fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
    let len = 4 + payload.len();
    let mut out = Vec::with_capacity(len.next_multiple_of(4));
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(len.next_multiple_of(4), 0);
    out
}

/// The request deleting every IPv4 conntrack entry whose original destination is `dst` and
/// protocol `protocol` (pure).
pub fn encode_delete_request(dst: Ipv4Addr, protocol: u8, seq: u32) -> Vec<u8> {
    let tuple_ip = attr(CTA_TUPLE_IP | NLA_F_NESTED, &attr(CTA_IP_V4_DST, &dst.octets()));
    let tuple_proto = attr(CTA_TUPLE_PROTO | NLA_F_NESTED, &attr(CTA_PROTO_NUM, &[protocol]));
    let orig = attr(CTA_TUPLE_ORIG | NLA_F_NESTED, &[tuple_ip, tuple_proto].concat());
    let flags = [
        attr(CTA_FILTER_ORIG_FLAGS, &(FILTER_IP_DST | FILTER_PROTO_NUM).to_ne_bytes()),
        attr(CTA_FILTER_REPLY_FLAGS, &0u32.to_ne_bytes()),
    ]
    .concat();
    let filter = attr(CTA_FILTER | NLA_F_NESTED, &flags);
    // nfgenmsg: family, version, resource id (big endian).
    let body = [&[AF_INET, 0, 0, 0][..], &orig, &filter].concat();
    let mut msg = Vec::with_capacity(16 + body.len());
    msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE).to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&body);
    msg
}

/// The errno of a netlink ack (0 = success), or `None` if `reply` is not an ack.
pub fn parse_ack(reply: &[u8]) -> Option<i32> {
    let kind = u16::from_ne_bytes(reply.get(4..6)?.try_into().ok()?);
    if kind != NLMSG_ERROR {
        return None;
    }
    let code = i32::from_ne_bytes(reply.get(16..20)?.try_into().ok()?);
    Some(-code)
}

/// Deletes all UDP conntrack entries to `dst` (a Service IP whose endpoints changed).
pub fn delete_udp_to(dst: Ipv4Addr) -> Result<(), ConntrackError> {
    let io_err = |step| move |source| ConntrackError::Io { dst, step, source };
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(io_err("open socket"))?;
    socket.bind_auto().map_err(io_err("bind"))?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(io_err("connect"))?;
    socket.send(&encode_delete_request(dst, IPPROTO_UDP, 1), 0).map_err(io_err("send"))?;
    let mut reply = Vec::with_capacity(4096);
    socket.recv(&mut reply, 0).map_err(io_err("receive"))?;
    match parse_ack(&reply) {
        Some(0) | Some(2) => Ok(()), // success, or ENOENT: nothing to delete
        Some(errno) => {
            Err(ConntrackError::Io { dst, step: "delete", source: io::Error::from_raw_os_error(errno) })
        }
        None => Err(ConntrackError::BadReply { dst }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let msg = encode_delete_request(Ipv4Addr::new(10, 96, 0, 10), IPPROTO_UDP, 7);
        assert_eq!(u32::from_ne_bytes(msg[0..4].try_into().unwrap()) as usize, msg.len());
        assert_eq!(u16::from_ne_bytes(msg[4..6].try_into().unwrap()), 0x0102);
        assert_eq!(u16::from_ne_bytes(msg[6..8].try_into().unwrap()), 0x5);
        assert_eq!(u32::from_ne_bytes(msg[8..12].try_into().unwrap()), 7);
        assert_eq!(msg[16], AF_INET);
        // The destination address appears in network order; the whole message is 4-byte aligned.
        assert!(msg.windows(4).any(|w| w == [10, 96, 0, 10]));
        assert_eq!(msg.len() % 4, 0);
        // CTA_TUPLE_ORIG (nested): 4 + (CTA_TUPLE_IP 4+8) + (CTA_TUPLE_PROTO 4+8) = 28 bytes.
        assert_eq!(u16::from_ne_bytes(msg[20..22].try_into().unwrap()), 28);
        assert_eq!(u16::from_ne_bytes(msg[22..24].try_into().unwrap()), CTA_TUPLE_ORIG | NLA_F_NESTED);
    }

    #[test]
    fn attributes_are_padded() {
        assert_eq!(attr(1, &[17]), vec![5, 0, 1, 0, 17, 0, 0, 0]);
    }

    #[test]
    fn acks_are_parsed() {
        let mut ack = vec![0u8; 36];
        ack[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert_eq!(parse_ack(&ack), Some(0));
        ack[16..20].copy_from_slice(&(-95i32).to_ne_bytes());
        assert_eq!(parse_ack(&ack), Some(95));
        assert_eq!(parse_ack(&[0u8; 8]), None);
    }
}
