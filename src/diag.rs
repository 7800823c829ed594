//! What the kernel knows about the application's end of a connection (sock_diag over
//! netlink, SIOCOUTQ): whether a fresh connection's request still waits in the application's
//! listen backlog, and whether the application has read everything sent on a pooled one.
//! Plain libc, no httpd, so it is unit-tested on its own.
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `Conn::request_untouched` on a bare socket, with a question made for each call (tests):
/// Some(true) while the connection waits in the application's listen backlog (not accepted:
/// its socket has no inode yet) or nothing of the `sent` bytes has been read; Some(false) once
/// a process took it; None when the kernel cannot tell.
#[cfg(test)]
pub fn request_untouched(fd: BorrowedFd<'_>, tcp: bool, sent: u64) -> Option<bool> {
    let end = if tcp {
        TcpQuestion::new(fd)?.ask()?
    } else {
        unix_app_end(fd)?
    };
    Some(untouched(end, sent))
}

/// `request_untouched` from the application's end of the connection (`TcpQuestion::ask`,
/// `unix_app_end`): not accepted yet, or none of the `sent` bytes read.
pub fn untouched((accepted, unread): (bool, u32), sent: u64) -> bool {
    !accepted || u64::from(unread) >= sent
}

/// A prepared sock_diag question about the application's end of one TCP connection (its
/// `inet_diag_req_v2`), built once per connection: asking it again is then two system calls
/// on a netlink socket kept by each thread, with no allocation.
#[derive(Debug, Clone, Copy)]
pub struct TcpQuestion([u8; INET_REQ_LEN]);

const INET_REQ_LEN: usize = 56;

impl TcpQuestion {
    /// None for a socket that is not a connected TCP one.
    pub fn new(fd: BorrowedFd<'_>) -> Option<TcpQuestion> {
        TcpQuestion::between(sock_addr(fd, false)?, sock_addr(fd, true)?)
    }

    /// The question about the socket at `peer` connected to `ours`.
    fn between(ours: SocketAddr, peer: SocketAddr) -> Option<TcpQuestion> {
        let ((family, src), (ours_family, dst)) = (ip_words(peer), ip_words(ours));
        if family != ours_family {
            return None;
        }
        // struct inet_diag_req_v2 for the application's socket: its source is our peer
        let mut req = [0u8; INET_REQ_LEN];
        let mut at = 0;
        let mut put = |b: &[u8]| {
            req[at..at + b.len()].copy_from_slice(b);
            at += b.len();
        };
        put(&[family as u8, libc::IPPROTO_TCP as u8, 0, 0]);
        put(&u32::MAX.to_ne_bytes()); // every state
        put(&peer.port().to_be_bytes());
        put(&ours.port().to_be_bytes());
        for w in src.iter().chain(dst.iter()) {
            put(&w.to_ne_bytes());
        }
        put(&0u32.to_ne_bytes()); // interface
        put(&[0xff; 8]); // INET_DIAG_NOCOOKIE
        Some(TcpQuestion(req))
    }

    /// The application's end: whether a process accepted it, and how many bytes wait unread
    /// in its receive queue (None: the kernel cannot tell, as for an application on another
    /// host, or sock_diag is unavailable).
    pub fn ask(&self) -> Option<(bool, u32)> {
        THREAD_NETLINK.with(|nl| {
            let mut nl = nl.borrow_mut();
            if nl.is_none() {
                *nl = Netlink::open();
            }
            let mut buf = [0u8; 256];
            let msg = nl.as_ref()?.ask_into(&self.0, &mut buf)?;
            // Where the application's end is gone (closed: a reset may be on its way), the
            // kernel's lookup answers with the listener of its port instead, whose queue is
            // its backlog: that says nothing of this connection (it read it as "accepted,
            // nothing unread", so a request looked taken and was not replayed).
            if msg.get(1) == Some(&(TCP_LISTEN as u8)) {
                return None;
            }
            // struct inet_diag_msg: 4 bytes, the 48-byte id, expires, rqueue, wqueue, uid, inode
            let (rqueue, inode) = (u32_at(msg, 56)?, u32_at(msg, 68)?);
            Some((inode != 0, rqueue))
        })
    }
}

/// A prepared sock_diag question about the application's listening socket: how many
/// connections wait in its accept queue (its backlog). Other clients of the application (a
/// second web server, cron jobs talking FastCGI, another Apache) wait there when every
/// application process is held by connections idle in this pool.
#[derive(Debug, Clone, Copy)]
pub enum ListenQuestion {
    /// `inet_diag_req_v2` for the listener that accepts connections to the application's
    /// address (an exact lookup finds a listener bound to it or to the wildcard address).
    Tcp([u8; INET_REQ_LEN]),
    /// The inode of the listening unix socket bound to the same file as the application's end
    /// of a connection.
    Unix(u32),
}

impl ListenQuestion {
    /// Prepared from a connection to the application (None: not a connected socket, or the
    /// kernel cannot tell).
    pub fn new(fd: BorrowedFd<'_>, tcp: bool) -> Option<ListenQuestion> {
        if tcp {
            let peer = sock_addr(fd, true)?;
            let (family, src) = ip_words(peer);
            let mut req = [0u8; INET_REQ_LEN];
            req[0] = family as u8;
            req[1] = libc::IPPROTO_TCP as u8;
            req[4..8].copy_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
            req[8..10].copy_from_slice(&peer.port().to_be_bytes());
            // (destination port and address stay 0: a listener's)
            for (i, w) in src.iter().enumerate() {
                req[12 + 4 * i..16 + 4 * i].copy_from_slice(&w.to_ne_bytes());
            }
            req[48..56].copy_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE
            return Some(ListenQuestion::Tcp(req));
        }
        let nl = Netlink::open()?;
        // SAFETY: libc::stat is plain data.
        let mut st: libc::stat = unsafe { zeroed() };
        // SAFETY: fstat fills the stat buffer we own.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return None;
        }
        let peer = nl.unix_attr(
            u32::try_from(st.st_ino).ok()?,
            UDIAG_SHOW_PEER,
            UNIX_DIAG_PEER,
        )?;
        // The application's end was accepted from the listener and shares its file: the
        // file's inode and device (inode numbers alone repeat across tmpfs mounts: /run,
        // /run/user/N and /tmp each number their own).
        let file = nl.unix_vfs(peer)?;
        nl.unix_listener_of_file(file).map(ListenQuestion::Unix)
    }

    /// Connections waiting in the listener's accept queue (None: the kernel cannot tell, as
    /// for an application on another host, or the listener is gone).
    pub fn backlog(&self) -> Option<u32> {
        THREAD_NETLINK.with(|nl| {
            let mut nl = nl.borrow_mut();
            if nl.is_none() {
                *nl = Netlink::open();
            }
            let nl = nl.as_ref()?;
            match self {
                ListenQuestion::Tcp(req) => {
                    let mut buf = [0u8; 256];
                    let msg = nl.ask_into(req, &mut buf)?;
                    // inet_diag_msg: state at 1 (a listener's), rqueue at 56 (its accept queue)
                    (msg.get(1) == Some(&(TCP_LISTEN as u8))).then_some(())?;
                    u32_at(msg, 56)
                }
                ListenQuestion::Unix(ino) => nl.unix_attr(*ino, UDIAG_SHOW_RQLEN, UNIX_DIAG_RQLEN),
            }
        })
    }
}

thread_local! {
    /// Each thread's netlink socket for `TcpQuestion::ask` (opened at its first question,
    /// closed when the thread ends).
    static THREAD_NETLINK: std::cell::RefCell<Option<Netlink>> = const { std::cell::RefCell::new(None) };
}

/// Whether bytes sent on this unix stream socket still wait unread at the other end (SIOCOUTQ:
/// the memory of our sent buffers the receiver has not consumed yet). None if the call fails.
pub fn unix_unread_by_peer(fd: BorrowedFd<'_>) -> Option<bool> {
    let mut n: libc::c_int = 0;
    // SAFETY: valid descriptor; SIOCOUTQ (= TIOCOUTQ) writes one int.
    let rv = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    (rv == 0).then_some(n > 0)
}

/// The application's end of a unix connection: whether a process accepted it, and how many
/// bytes wait unread in its receive queue (`TcpQuestion::ask` for TCP).
pub fn unix_app_end(fd: BorrowedFd<'_>) -> Option<(bool, u32)> {
    let nl = Netlink::open()?;
    // SAFETY: libc::stat is plain data.
    let mut st: libc::stat = unsafe { zeroed() };
    // SAFETY: fstat fills the stat buffer we own.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return None;
    }
    let ours = u32::try_from(st.st_ino).ok()?;
    let peer = nl.unix_attr(ours, UDIAG_SHOW_PEER, UNIX_DIAG_PEER)?;
    if peer == 0 {
        return Some((false, 0)); // not accepted: the socket has no inode yet
    }
    let rqueue = nl.unix_attr(peer, UDIAG_SHOW_RQLEN, UNIX_DIAG_RQLEN)?;
    Some((true, rqueue))
}

/// An address as inet_diag carries it: its family, and four words in network order.
fn ip_words(a: SocketAddr) -> (libc::c_int, [u32; 4]) {
    match a {
        SocketAddr::V4(a) => (
            libc::AF_INET,
            [u32::from_ne_bytes(a.ip().octets()), 0, 0, 0],
        ),
        SocketAddr::V6(a) => {
            let b = a.ip().octets();
            (
                libc::AF_INET6,
                std::array::from_fn(|i| {
                    u32::from_ne_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
                }),
            )
        }
    }
}

/// The value of attribute `attr` among a unix_diag_msg's attributes (after its 16 bytes:
/// length, type, value; 4-aligned).
fn unix_msg_attr(msg: &[u8], attr: u16) -> Option<&[u8]> {
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
            return msg.get(at + 4..at + len);
        }
        at += (len + 3) & !3;
    }
    None
}

/// A unix_diag_msg's UNIX_DIAG_VFS value: the inode and the device of the socket's file.
fn vfs_of(msg: &[u8]) -> Option<[u8; 8]> {
    unix_msg_attr(msg, UNIX_DIAG_VFS)?.get(..8)?.try_into().ok()
}

/// The native-endian u32 at `at` (netlink messages are in host order).
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// The kernel's TCP_LISTEN state (also a listening unix socket's).
const TCP_LISTEN: u32 = 10;
const UDIAG_SHOW_VFS: u32 = 0x02;
const UDIAG_SHOW_PEER: u32 = 0x04;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_VFS: u16 = 1;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_RQLEN: u16 = 4;

/// A NETLINK_SOCK_DIAG socket, with the sequence number of its last question.
struct Netlink(OwnedFd, std::cell::Cell<u32>);

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
        (fd >= 0).then(|| Netlink(unsafe { OwnedFd::from_raw_fd(fd) }, std::cell::Cell::new(0)))
    }

    /// Sends one SOCK_DIAG_BY_FAMILY message with `flags` and `body` (at most 64 bytes);
    /// returns its sequence number.
    fn send(&self, flags: u16, body: &[u8]) -> Option<u32> {
        let len = 16 + body.len();
        let mut m = [0u8; 80];
        let seq = self.1.get().wrapping_add(1);
        self.1.set(seq);
        m.get_mut(16..len)?.copy_from_slice(body);
        m[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
        m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        m[6..8].copy_from_slice(&flags.to_ne_bytes());
        m[8..12].copy_from_slice(&seq.to_ne_bytes());
        // (port id 0: the kernel's)
        // SAFETY: sockaddr_nl is plain data; zero = the kernel.
        let mut to: libc::sockaddr_nl = unsafe { zeroed() };
        to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: live buffers of the given lengths.
        let rv = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                m.as_ptr().cast(),
                len,
                0,
                (&to as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        (rv >= 0).then_some(seq)
    }

    /// Sends one SOCK_DIAG_BY_FAMILY request with `body` (at most 64 bytes) and returns the
    /// payload of the answer, read into `buf` (None for an error answer: no such socket, or no
    /// diag support).
    fn ask_into<'b>(&self, body: &[u8], buf: &'b mut [u8]) -> Option<&'b [u8]> {
        let seq = self.send(libc::NLM_F_REQUEST as u16, body)?;
        // The answer is queued before sendto returns; never wait for one that does not come.
        // An answer to an earlier question (its reader gave up) is skipped by its sequence.
        loop {
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
            let hdr_len = u32_at(buf, 0)? as usize;
            let kind = buf.get(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]]))?;
            if u32_at(buf, 8)? != seq {
                continue;
            }
            if kind != SOCK_DIAG_BY_FAMILY || hdr_len < 16 || hdr_len > n {
                return None;
            }
            return buf.get(16..hdr_len);
        }
    }

    /// The inode of the listening unix stream socket bound to the file `file` (inode and device)
    /// (a dump of the listening unix sockets: made once per definition and process, and again
    /// only when the listener changed).
    fn unix_listener_of_file(&self, file: [u8; 8]) -> Option<u32> {
        // listeners only (any inode: a dump), with their file
        let req = unix_diag_req(1 << TCP_LISTEN, 0, UDIAG_SHOW_VFS);
        self.send((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16, &req)?;
        let mut found = None;
        let mut buf = vec![0u8; 32 * 1024];
        // (a socket of its own, read to the end of the dump: the kernel fills each read)
        for _ in 0..4096 {
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
            let mut at = 0;
            while at + 16 <= n {
                let mlen = u32_at(&buf, at)? as usize;
                let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
                if mlen < 16 || at + mlen > n {
                    return found;
                }
                if kind == libc::NLMSG_DONE as u16 || kind == libc::NLMSG_ERROR as u16 {
                    return found;
                }
                // struct unix_diag_msg (16 bytes: family, type, state, pad, inode, cookie),
                // then its attributes
                let msg = &buf[at + 16..at + mlen];
                if msg.get(1) == Some(&(libc::SOCK_STREAM as u8)) && vfs_of(msg) == Some(file) {
                    found = u32_at(msg, 4);
                }
                at += (mlen + 3) & !3;
            }
        }
        found
    }

    /// The u32 attribute `attr` of unix socket `ino`, asked for with `show`.
    fn unix_attr(&self, ino: u32, show: u32, attr: u16) -> Option<u32> {
        self.ask_unix(ino, show, |msg| u32_at(unix_msg_attr(msg, attr)?, 0))
    }

    /// The file unix socket `ino` is bound to: its inode and device (struct unix_diag_vfs).
    fn unix_vfs(&self, ino: u32) -> Option<[u8; 8]> {
        self.ask_unix(ino, UDIAG_SHOW_VFS, vfs_of)
    }

    /// Asks about unix socket `ino` with `show`, and reads the answer with `read`.
    fn ask_unix<T>(&self, ino: u32, show: u32, read: impl FnOnce(&[u8]) -> Option<T>) -> Option<T> {
        // (the answer about one socket: a unix_diag_msg and an attribute or two, as for TCP)
        let mut buf = [0u8; 256];
        read(self.ask_into(&unix_diag_req(u32::MAX, ino, show), &mut buf)?)
    }
}

/// struct unix_diag_req: sockets in `states` (a bit per state), inode `ino` (0 with a dump),
/// the attributes `show`, no cookie.
fn unix_diag_req(states: u32, ino: u32, show: u32) -> [u8; 24] {
    let mut req = [0u8; 24];
    req[0] = libc::AF_UNIX as u8;
    req[4..8].copy_from_slice(&states.to_ne_bytes());
    req[8..12].copy_from_slice(&ino.to_ne_bytes());
    req[12..16].copy_from_slice(&show.to_ne_bytes());
    req[16..24].copy_from_slice(&[0xff; 8]);
    req
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

    /// A unix_diag_msg with the given attributes (type, value).
    fn unix_msg(attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut m = vec![0u8; 16];
        for (kind, value) in attrs {
            m.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
            m.extend_from_slice(&kind.to_ne_bytes());
            m.extend_from_slice(value);
            m.resize((m.len() + 3) & !3, 0);
        }
        m
    }

    #[test]
    fn socket_file_is_inode_and_device() {
        let vfs =
            |ino: u32, dev: u32| -> Vec<u8> { [ino.to_ne_bytes(), dev.to_ne_bytes()].concat() };
        let rq = 9u32.to_ne_bytes();
        let m = unix_msg(&[(UNIX_DIAG_RQLEN, &rq), (UNIX_DIAG_VFS, &vfs(41, 7))]);
        assert_eq!(vfs_of(&m), Some(vfs(41, 7).try_into().unwrap()));
        // the same inode number on another device (another tmpfs) is another file
        let other = unix_msg(&[(UNIX_DIAG_VFS, &vfs(41, 8))]);
        assert_ne!(vfs_of(&other), vfs_of(&m));
        assert_eq!(
            u32_at(unix_msg_attr(&m, UNIX_DIAG_RQLEN).unwrap(), 0),
            Some(9)
        );
        assert_eq!(vfs_of(&unix_msg(&[(UNIX_DIAG_RQLEN, &rq)])), None);
        // a value cut short is no value
        let mut cut = unix_msg(&[(UNIX_DIAG_VFS, &vfs(41, 7))]);
        cut.truncate(16 + 4 + 6);
        assert_eq!(vfs_of(&cut), None);
    }

    fn expect(fd: std::os::fd::BorrowedFd<'_>, tcp: bool, want: bool, what: &str) {
        assert_eq!(request_untouched(fd, tcp, 100), Some(want), "{what}");
    }

    /// What `Conn::app_busy` asks: whether the other end has read all we sent, over TCP (a
    /// prepared question, asked twice) and over a unix socket (SIOCOUTQ).
    #[test]
    fn unread_bytes_at_the_other_end() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut a, _) = l.accept().unwrap();
        let q = TcpQuestion::new(c.as_fd()).unwrap();
        assert_eq!(q.ask(), Some((true, 0)), "tcp: nothing sent");
        c.write_all(&[5u8; 16]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(q.ask(), Some((true, 16)), "tcp: 16 bytes unread");
        let mut b = [0u8; 16];
        a.read_exact(&mut b).unwrap();
        assert_eq!(q.ask(), Some((true, 0)), "tcp: all read");
        let (mut x, mut y) = std::os::unix::net::UnixStream::pair().unwrap();
        let unread = |s: &std::os::unix::net::UnixStream| unix_unread_by_peer(s.as_fd());
        assert_eq!(unread(&x), Some(false), "unix: nothing sent");
        x.write_all(&[5u8; 16]).unwrap();
        assert_eq!(unread(&x), Some(true), "unix: 16 bytes unread");
        y.read_exact(&mut b[..8]).unwrap();
        assert_eq!(unread(&x), Some(true), "unix: 8 bytes unread");
        y.read_exact(&mut b[..8]).unwrap();
        assert_eq!(unread(&x), Some(false), "unix: all read");
    }

    /// The listener's backlog, asked from a connection it accepted: over TCP (IPv4, IPv6 where
    /// the machine has it, a listener on the wildcard address) and over a unix socket; a
    /// question about a listener that is gone has no answer.
    #[test]
    fn listen_backlog_of_the_application() {
        for (bind, to) in [
            ("127.0.0.1:0", None),
            ("0.0.0.0:0", Some("127.0.0.1")),
            ("[::1]:0", None),
        ] {
            let Ok(l) = std::net::TcpListener::bind(bind) else {
                continue;
            };
            let mut addr = l.local_addr().unwrap();
            if let Some(ip) = to {
                addr.set_ip(ip.parse().unwrap());
            }
            let c = std::net::TcpStream::connect(addr).unwrap();
            let _a = l.accept().unwrap();
            let q = ListenQuestion::new(c.as_fd(), true).unwrap();
            assert_eq!(q.backlog(), Some(0), "{bind}: nobody waits");
            let waiting: Vec<_> = (0..3)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect();
            std::thread::sleep(std::time::Duration::from_millis(20));
            assert_eq!(q.backlog(), Some(3), "{bind}: three wait");
            drop(waiting);
            drop(l);
            assert_eq!(q.backlog(), None, "{bind}: the listener is gone");
        }
        let dir = std::env::temp_dir().join(format!("mfcgi-listen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        // another listener first, which must not be taken for this one
        let other = std::os::unix::net::UnixListener::bind(dir.join("t")).unwrap();
        let _o = std::os::unix::net::UnixStream::connect(dir.join("t")).unwrap();
        let c = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let _a = l.accept().unwrap();
        let q = ListenQuestion::new(c.as_fd(), false).unwrap();
        assert_eq!(q.backlog(), Some(0), "unix: nobody waits");
        let waiting: Vec<_> = (0..2)
            .map(|_| std::os::unix::net::UnixStream::connect(&path).unwrap())
            .collect();
        assert_eq!(q.backlog(), Some(2), "unix: two wait");
        drop(waiting);
        drop(l);
        drop(other);
        assert_eq!(q.backlog(), None, "unix: the listener is gone");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A question about a connection whose application end is gone gets no answer, not the
    /// listener's.
    #[test]
    fn a_gone_application_end_is_not_its_listener() {
        // no connection from this port exists: the kernel's lookup falls back to the listener
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(l) = std::net::TcpListener::bind(addr) else {
                continue;
            };
            let app = l.local_addr().unwrap();
            let unused = std::net::TcpListener::bind(addr)
                .unwrap()
                .local_addr()
                .unwrap();
            let q = TcpQuestion::between(unused, app).unwrap();
            assert_eq!(
                q.ask(),
                None,
                "{addr}: the listener was taken for the connection"
            );
        }
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
