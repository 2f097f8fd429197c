//! Gratuitous ARP (RFC 5227's ARP announcement) on one link, through an `AF_PACKET` socket: tells
//! the segment that an IPv4 address is now reached at this link's hardware address.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const ETH_P_ARP: u16 = 0x0806;

/// The 28-byte ARP request announcing `ip` at `mac` (sender and target address both `ip`).
pub fn announcement(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 28] {
    let mut p = [0u8; 28];
    p[0..2].copy_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    p[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    p[4] = 6;
    p[5] = 4;
    p[6..8].copy_from_slice(&1u16.to_be_bytes()); // request
    p[8..14].copy_from_slice(&mac);
    p[14..18].copy_from_slice(&ip.octets());
    // Target hardware address stays zero.
    p[24..28].copy_from_slice(&ip.octets());
    p
}

/// Broadcasts the announcement of `ip` at `mac` on the link with `ifindex`.
pub fn send_announcement(ifindex: u32, mac: [u8; 6], ip: Ipv4Addr) -> io::Result<()> {
    let frame = announcement(mac, ip);
    let protocol = i32::from(ETH_P_ARP.to_be());
    // SAFETY: socket(2) takes no pointers; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut broadcast = [0u8; 8];
    broadcast[..6].fill(0xff);
    let to = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: ETH_P_ARP.to_be(),
        sll_ifindex: i32::try_from(ifindex).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr: broadcast,
    };
    // SAFETY: `frame` and `to` live across the call and the lengths passed are theirs.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&to as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if sent < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcement_names_the_address_as_sender_and_target() {
        let p = announcement([2, 0, 0, 0, 0, 1], Ipv4Addr::new(10, 250, 0, 200));
        assert_eq!(&p[..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&p[8..14], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&p[14..18], &[10, 250, 0, 200]);
        assert_eq!(&p[18..24], &[0; 6]);
        assert_eq!(&p[24..28], &[10, 250, 0, 200]);
    }
}
