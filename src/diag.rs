//! What the kernel knows about the application's end of a connection (sock_diag over
//! netlink): whether a fresh connection's request still waits in the application's listen
//! backlog. Plain libc, no httpd, so it is unit-tested on its own.
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Whether the application has not begun to read the request sent on this fresh connection:
/// Some(true) while the connection waits in the application's listen backlog (not accepted:
/// its socket has no inode yet) or nothing of the `sent` bytes has been read; Some(false) once
/// a process took it; None when the kernel cannot tell (the application on another host,
/// sock_diag unavailable). Asks the kernel (sock_diag over netlink) about the application's
/// end of the connection: a few system calls, for connections that have been silent a while.
pub fn request_untouched(fd: BorrowedFd<'_>, tcp: bool, sent: u64) -> Option<bool> {
    let nl = Netlink::open()?;
    if tcp {
        let (ours, peer) = (sock_addr(fd, false)?, sock_addr(fd, true)?);
        let (family, src, dst) = match (peer, ours) {
            (SocketAddr::V4(p), SocketAddr::V4(o)) => {
                let w = |a: std::net::Ipv4Addr| [u32::from_ne_bytes(a.octets()), 0, 0, 0];
                (libc::AF_INET, w(*p.ip()), w(*o.ip()))
            }
            (SocketAddr::V6(p), SocketAddr::V6(o)) => {
                let w = |a: std::net::Ipv6Addr| {
                    let b = a.octets();
                    std::array::from_fn(|i| {
                        u32::from_ne_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
                    })
                };
                (libc::AF_INET6, w(*p.ip()), w(*o.ip()))
            }
            _ => return None,
        };
        // struct inet_diag_req_v2 for the application's socket: its source is our peer
        let mut req = Vec::with_capacity(56);
        req.extend_from_slice(&[family as u8, libc::IPPROTO_TCP as u8, 0, 0]);
        req.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
        req.extend_from_slice(&peer.port().to_be_bytes());
        req.extend_from_slice(&ours.port().to_be_bytes());
        for w in src.iter().chain(dst.iter()) {
            req.extend_from_slice(&w.to_ne_bytes());
        }
        req.extend_from_slice(&0u32.to_ne_bytes()); // interface
        req.extend_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE
        let msg = nl.ask(&req)?;
        // struct inet_diag_msg: 4 bytes, the 48-byte id, expires, rqueue, wqueue, uid, inode
        let (rqueue, inode) = (u32_at(&msg, 56)?, u32_at(&msg, 68)?);
        Some(inode == 0 || u64::from(rqueue) >= sent)
    } else {
        // SAFETY: libc::stat is plain data.
        let mut st: libc::stat = unsafe { zeroed() };
        // SAFETY: fstat fills the stat buffer we own.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return None;
        }
        let ours = u32::try_from(st.st_ino).ok()?;
        let peer = nl.unix_attr(ours, UDIAG_SHOW_PEER, UNIX_DIAG_PEER)?;
        if peer == 0 {
            return Some(true); // not accepted: the socket has no inode yet
        }
        let rqueue = nl.unix_attr(peer, UDIAG_SHOW_RQLEN, UNIX_DIAG_RQLEN)?;
        Some(u64::from(rqueue) >= sent)
    }
}

/// The native-endian u32 at `at` (netlink messages are in host order).
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const UDIAG_SHOW_PEER: u32 = 0x04;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_RQLEN: u16 = 4;

/// A NETLINK_SOCK_DIAG socket for one question or two.
struct Netlink(OwnedFd);

impl Netlink {
    fn open() -> Option<Netlink> {
        // SAFETY: plain socket(2); the fd is owned at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            )
        };
        // SAFETY: a fresh descriptor nobody else owns.
        (fd >= 0).then(|| Netlink(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Sends one SOCK_DIAG_BY_FAMILY request with `body` and returns the payload of the
    /// answer (None for an error answer: no such socket, or no diag support).
    fn ask(&self, body: &[u8]) -> Option<Vec<u8>> {
        let len = 16 + body.len();
        let mut m = Vec::with_capacity(len);
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        m.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
        m.extend_from_slice(&1u32.to_ne_bytes()); // sequence
        m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        m.extend_from_slice(body);
        // SAFETY: sockaddr_nl is plain data; zero = the kernel.
        let mut to: libc::sockaddr_nl = unsafe { zeroed() };
        to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: live buffers of the given lengths.
        let rv = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                m.as_ptr().cast(),
                m.len(),
                0,
                (&to as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rv < 0 {
            return None;
        }
        let mut buf = vec![0u8; 8192];
        // The answer is queued before sendto returns; never wait for one that does not come.
        // SAFETY: live buffer of its length.
        let n = unsafe {
            libc::recv(
                self.0.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        let n = usize::try_from(n).ok()?;
        let hdr_len = u32_at(&buf, 0)? as usize;
        let kind = buf.get(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]]))?;
        if kind != SOCK_DIAG_BY_FAMILY || hdr_len < 16 || hdr_len > n {
            return None;
        }
        buf.truncate(hdr_len);
        Some(buf.split_off(16))
    }

    /// The u32 attribute `attr` of unix socket `ino`, asked for with `show`.
    fn unix_attr(&self, ino: u32, show: u32, attr: u16) -> Option<u32> {
        // struct unix_diag_req
        let mut req = Vec::with_capacity(24);
        req.extend_from_slice(&[libc::AF_UNIX as u8, 0, 0, 0]);
        req.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
        req.extend_from_slice(&ino.to_ne_bytes());
        req.extend_from_slice(&show.to_ne_bytes());
        req.extend_from_slice(&[0xff; 8]); // no cookie
        let msg = self.ask(&req)?;
        // struct unix_diag_msg (16 bytes), then attributes (len, type, value; 4-aligned)
        let mut at = 16;
        while let Some(h) = msg.get(at..at + 4) {
            let (len, kind) = (
                u16::from_ne_bytes([h[0], h[1]]) as usize,
                u16::from_ne_bytes([h[2], h[3]]),
            );
            if len < 4 {
                return None;
            }
            if kind == attr {
                return u32_at(&msg, at + 4);
            }
            at += (len + 3) & !3;
        }
        None
    }
}

/// This socket's own address, or its peer's.
fn sock_addr(fd: BorrowedFd<'_>, peer: bool) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is plain data, large enough for any address.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let p = (&mut ss as *mut libc::sockaddr_storage).cast();
    // SAFETY: buffer and length describe `ss`.
    let rv = unsafe {
        if peer {
            libc::getpeername(fd.as_raw_fd(), p, &mut len)
        } else {
            libc::getsockname(fd.as_raw_fd(), p, &mut len)
        }
    };
    if rv != 0 {
        return None;
    }
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in.
            let a: libc::sockaddr_in =
                unsafe { std::ptr::read((&ss as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::from((
                a.sin_addr.s_addr.to_ne_bytes(),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6.
            let a: libc::sockaddr_in6 =
                unsafe { std::ptr::read((&ss as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::from((
                a.sin6_addr.s6_addr,
                u16::from_be(a.sin6_port),
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    fn expect(fd: std::os::fd::BorrowedFd<'_>, tcp: bool, want: bool, what: &str) {
        assert_eq!(request_untouched(fd, tcp, 100), Some(want), "{what}");
    }

    /// The kernel tells a connection waiting in the listen backlog from one a process took.
    #[test]
    fn request_untouched_tells_backlog_from_taken() {
        // TCP over loopback (IPv4, and IPv6 where the machine has it)
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(l) = std::net::TcpListener::bind(addr) else {
                continue;
            };
            let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            c.write_all(&[7u8; 100]).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
            expect(c.as_fd(), true, true, &format!("{addr}: backlog"));
            let (mut a, _) = l.accept().unwrap();
            // accepted, nothing read yet: still untouched
            expect(c.as_fd(), true, true, &format!("{addr}: unread"));
            let mut b = [0u8; 92];
            a.read_exact(&mut b).unwrap();
            // 8 bytes left unread (php-fpm leaves the empty STDIN record while it runs)
            expect(c.as_fd(), true, false, &format!("{addr}: read"));
        }
        let dir = std::env::temp_dir().join(format!("mfcgi-diag-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let mut c = std::os::unix::net::UnixStream::connect(&path).unwrap();
        c.write_all(&[7u8; 100]).unwrap();
        expect(c.as_fd(), false, true, "unix: backlog");
        let (mut a, _) = l.accept().unwrap();
        let mut b = [0u8; 92];
        a.read_exact(&mut b).unwrap();
        expect(c.as_fd(), false, false, "unix: read");
        std::fs::remove_dir_all(&dir).ok();
    }
}
