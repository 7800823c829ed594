//! Null FastCGI responder for `benches/run.sh`: answers every request as soon as its STDIN
//! stream ends, with a fixed header block and a body of `--body-size` bytes, and honours
//! FCGI_KEEP_CONN. It does no work of its own, so a benchmark against it measures the web
//! server and its FastCGI connector. Std only (epoll declared by hand).
//!
//! Two ways to serve: `--mode epoll` (the default) is one thread over every connection with
//! epoll, so under load one wake-up answers every request that arrived meanwhile and the
//! backend costs the server CPU as little as a responder can; `--mode threads` is one blocking
//! thread per connection, like php-fpm's one process per connection: every request wakes the
//! thread of its connection.
//!
//! Usage: null-fcgi [--listen 127.0.0.1:9100 | --listen unix:/path/to.sock] [--body-size 100]
//!                  [--mode epoll|threads]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread;

const BEGIN_REQUEST: u8 = 1;
const ABORT_REQUEST: u8 = 2;
const END_REQUEST: u8 = 3;
const PARAMS: u8 = 4;
const STDIN: u8 = 5;
const STDOUT: u8 = 6;
const GET_VALUES: u8 = 9;
const GET_VALUES_RESULT: u8 = 10;
const UNKNOWN_TYPE: u8 = 11;
const KEEP_CONN: u8 = 1;

fn header(out: &mut Vec<u8>, rtype: u8, id: u16, len: usize, pad: u8) {
    out.extend_from_slice(&[
        1,
        rtype,
        (id >> 8) as u8,
        id as u8,
        (len >> 8) as u8,
        len as u8,
        pad,
        0,
    ]);
}

/// The complete answer to one request (STDOUT records, empty STDOUT, END_REQUEST).
fn response(id: u16, body_size: usize) -> Vec<u8> {
    let mut data = b"Content-Type: text/plain\r\n\r\n".to_vec();
    data.extend(std::iter::repeat_n(b'x', body_size.saturating_sub(1)));
    if body_size > 0 {
        data.push(b'\n');
    }
    let mut out = Vec::with_capacity(data.len() + 64);
    for piece in data.chunks(65528) {
        let pad = (8 - piece.len() % 8) % 8;
        header(&mut out, STDOUT, id, piece.len(), pad as u8);
        out.extend_from_slice(piece);
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    header(&mut out, STDOUT, id, 0, 0);
    header(&mut out, END_REQUEST, id, 8, 0);
    out.extend_from_slice(&[0; 8]);
    out
}

fn main() {
    let mut listen = "127.0.0.1:9100".to_string();
    let mut body_size = 100usize;
    let mut threads = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().expect("--listen needs an address"),
            "--body-size" => {
                body_size = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--body-size needs a number")
            }
            "--mode" => match args.next().as_deref() {
                Some("epoll") => threads = false,
                Some("threads") => threads = true,
                _ => {
                    eprintln!("null-fcgi: --mode needs epoll or threads");
                    std::process::exit(2);
                }
            },
            "-h" | "--help" => {
                println!("usage: null-fcgi [--listen 127.0.0.1:9100 | --listen unix:/path] [--body-size 100] [--mode epoll|threads]");
                return;
            }
            other => {
                eprintln!("null-fcgi: unknown argument {other:?}");
                std::process::exit(2);
            }
        }
    }
    let listener = Listener::bind(&listen).unwrap_or_else(|e| {
        eprintln!("null-fcgi: bind {listen}: {e}");
        std::process::exit(1);
    });
    let mode = if threads {
        "one thread per connection"
    } else {
        "epoll"
    };
    eprintln!("null-fcgi: listening on {listen}, body {body_size} bytes, {mode}");
    if threads {
        accept_loop(listener, body_size);
    } else {
        event_loop(listener, body_size);
    }
}

// ---- one blocking thread per connection ----

fn accept_loop(listener: Listener, body_size: usize) {
    loop {
        match listener.accept(false) {
            Ok(sock) => {
                let _ = thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        let mut conn = Conn::new(sock);
                        let (mut buf, mut cached) = (vec![0u8; 64 * 1024], HashMap::new());
                        // blocking: each pass waits for input, answers and writes it all
                        while let Ok(true) =
                            service(&mut conn, true, &mut buf, body_size, &mut cached)
                        {
                        }
                    });
            }
            Err(e) => eprintln!("null-fcgi: accept: {e}"),
        }
    }
}

// ---- one thread over every connection, with epoll (the default) ----

#[cfg_attr(target_arch = "x86_64", repr(C, packed))]
#[cfg_attr(not(target_arch = "x86_64"), repr(C))]
#[derive(Clone, Copy)]
struct EpollEvent {
    events: u32,
    data: u64,
}

extern "C" {
    fn epoll_create1(flags: i32) -> i32;
    fn epoll_ctl(epfd: i32, op: i32, fd: i32, event: *mut EpollEvent) -> i32;
    fn epoll_wait(epfd: i32, events: *mut EpollEvent, maxevents: i32, timeout: i32) -> i32;
}

const EPOLLIN: u32 = 0x001;
const EPOLLOUT: u32 = 0x004;
const EPOLL_CTL_ADD: i32 = 1;
const EPOLL_CTL_DEL: i32 = 2;
const EPOLL_CTL_MOD: i32 = 3;
const EPOLL_CLOEXEC: i32 = 0o2000000;

struct Epoll(RawFd);

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: plain system call; the descriptor is owned by the returned value.
        let fd = unsafe { epoll_create1(EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll(fd))
    }
    fn ctl(&self, op: i32, fd: RawFd, events: u32) -> io::Result<()> {
        let mut ev = EpollEvent {
            events,
            data: fd as u64,
        };
        // SAFETY: `ev` lives across the call; the kernel copies it.
        if unsafe { epoll_ctl(self.0, op, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    fn wait(&self, events: &mut [EpollEvent]) -> io::Result<usize> {
        // SAFETY: the kernel writes at most `events.len()` entries into the slice.
        let n = unsafe { epoll_wait(self.0, events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(n as usize)
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// `unix:/path` or a TCP address.
    fn bind(listen: &str) -> io::Result<Listener> {
        match listen.strip_prefix("unix:") {
            Some(path) => {
                let _ = std::fs::remove_file(path);
                UnixListener::bind(path).map(Listener::Unix)
            }
            None => TcpListener::bind(listen).map(Listener::Tcp),
        }
    }
    fn fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        }
    }
    fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(true),
            Listener::Unix(l) => l.set_nonblocking(true),
        }
    }
    /// The next connection, non-blocking if `nonblocking` (TCP: with TCP_NODELAY).
    fn accept(&self, nonblocking: bool) -> io::Result<Sock> {
        match self {
            Listener::Tcp(l) => l.accept().and_then(|(s, _)| {
                s.set_nodelay(true)?;
                s.set_nonblocking(nonblocking)?;
                Ok(Sock::Tcp(s))
            }),
            Listener::Unix(l) => l.accept().and_then(|(s, _)| {
                s.set_nonblocking(nonblocking)?;
                Ok(Sock::Unix(s))
            }),
        }
    }
}

enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    fn fd(&self) -> RawFd {
        match self {
            Sock::Tcp(s) => s.as_raw_fd(),
            Sock::Unix(s) => s.as_raw_fd(),
        }
    }
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
        }
    }
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write(buf),
            Sock::Unix(s) => s.write(buf),
        }
    }
}

struct Conn {
    sock: Sock,
    input: Vec<u8>,
    output: Vec<u8>,
    /// the request being received: id and keep-conn flag
    current: Option<(u16, bool)>,
    /// the peer asked to close after this answer (no FCGI_KEEP_CONN)
    close_after_output: bool,
    /// EPOLLOUT is registered (output is waiting for room; epoll mode)
    want_out: bool,
}

impl Conn {
    fn new(sock: Sock) -> Conn {
        Conn {
            sock,
            input: Vec::new(),
            output: Vec::new(),
            current: None,
            close_after_output: false,
            want_out: false,
        }
    }

    /// Handles every complete record in `input`; answers go to `output`.
    fn handle_records(
        &mut self,
        body_size: usize,
        cached: &mut HashMap<u16, Vec<u8>>,
    ) -> io::Result<()> {
        let mut at = 0;
        while self.input.len() - at >= 8 && !self.close_after_output {
            let h = &self.input[at..at + 8];
            if h[0] != 1 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "bad version"));
            }
            let rtype = h[1];
            let id = u16::from_be_bytes([h[2], h[3]]);
            let clen = u16::from_be_bytes([h[4], h[5]]) as usize;
            let total = 8 + clen + h[6] as usize;
            if self.input.len() - at < total {
                break;
            }
            let content = &self.input[at + 8..at + 8 + clen];
            match rtype {
                BEGIN_REQUEST => {
                    let keep = clen >= 3 && content[2] & KEEP_CONN != 0;
                    self.current = Some((id, keep));
                }
                STDIN if clen == 0 => {
                    if let Some((rid, keep)) = self.current.take() {
                        let answer = cached
                            .entry(rid)
                            .or_insert_with(|| response(rid, body_size));
                        self.output.extend_from_slice(answer);
                        if !keep {
                            self.close_after_output = true;
                        }
                    }
                }
                PARAMS | STDIN => {}
                ABORT_REQUEST => {
                    header(&mut self.output, END_REQUEST, id, 8, 0);
                    self.output.extend_from_slice(&[0; 8]);
                    self.current = None;
                }
                GET_VALUES => {
                    let (k, v): (&[u8], &[u8]) = (b"FCGI_MPXS_CONNS", b"0");
                    header(
                        &mut self.output,
                        GET_VALUES_RESULT,
                        0,
                        2 + k.len() + v.len(),
                        0,
                    );
                    self.output.push(k.len() as u8);
                    self.output.push(v.len() as u8);
                    self.output.extend_from_slice(k);
                    self.output.extend_from_slice(v);
                }
                t => {
                    header(&mut self.output, UNKNOWN_TYPE, 0, 8, 0);
                    self.output.extend_from_slice(&[t, 0, 0, 0, 0, 0, 0, 0]);
                }
            }
            at += total;
        }
        self.input.drain(..at);
        Ok(())
    }

    /// Writes what it can of `output`; Ok(true) when all of it went out.
    fn flush(&mut self) -> io::Result<bool> {
        let mut done = 0;
        while done < self.output.len() {
            match self.sock.write(&self.output[done..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.output.drain(..done);
        Ok(self.output.is_empty())
    }
}

/// Reads what is there, answers, writes; Ok(false) when the connection is to be closed.
fn service(
    conn: &mut Conn,
    readable: bool,
    buf: &mut [u8],
    body_size: usize,
    cached: &mut HashMap<u16, Vec<u8>>,
) -> io::Result<bool> {
    if readable && !conn.close_after_output {
        // One read per wake-up: epoll is level-triggered, so anything left is reported again.
        match conn.sock.read(buf) {
            Ok(0) => return Ok(false),
            Ok(n) => conn.input.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        conn.handle_records(body_size, cached)?;
    }
    let all_out = conn.output.is_empty() || conn.flush()?;
    Ok(!(all_out && conn.close_after_output))
}

fn event_loop(listener: Listener, body_size: usize) {
    let fail = |what: &str, e: io::Error| -> ! {
        eprintln!("null-fcgi: {what}: {e}");
        std::process::exit(1);
    };
    let ep = Epoll::new().unwrap_or_else(|e| fail("epoll_create1", e));
    listener
        .set_nonblocking()
        .unwrap_or_else(|e| fail("listener", e));
    let lfd = listener.fd();
    ep.ctl(EPOLL_CTL_ADD, lfd, EPOLLIN)
        .unwrap_or_else(|e| fail("epoll_ctl", e));
    let mut conns: HashMap<RawFd, Conn> = HashMap::new();
    let mut cached: HashMap<u16, Vec<u8>> = HashMap::new();
    let mut events = vec![EpollEvent { events: 0, data: 0 }; 256];
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = ep
            .wait(&mut events)
            .unwrap_or_else(|e| fail("epoll_wait", e));
        for ev in &events[..n] {
            let (fd, bits) = (ev.data as RawFd, ev.events);
            if fd == lfd {
                loop {
                    match listener.accept(true) {
                        Ok(sock) => {
                            let cfd = sock.fd();
                            if ep.ctl(EPOLL_CTL_ADD, cfd, EPOLLIN).is_ok() {
                                conns.insert(cfd, Conn::new(sock));
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            eprintln!("null-fcgi: accept: {e}");
                            break;
                        }
                    }
                }
                continue;
            }
            let Some(conn) = conns.get_mut(&fd) else {
                continue;
            };
            // EPOLLERR/EPOLLHUP come with the next read's error or end of file
            let readable = bits & !EPOLLOUT != 0;
            match service(conn, readable, &mut buf, body_size, &mut cached) {
                Ok(true) => {
                    let want_out = !conn.output.is_empty();
                    if want_out != conn.want_out {
                        conn.want_out = want_out;
                        let interest = if want_out {
                            EPOLLIN | EPOLLOUT
                        } else {
                            EPOLLIN
                        };
                        let _ = ep.ctl(EPOLL_CTL_MOD, fd, interest);
                    }
                }
                Ok(false) | Err(_) => {
                    let _ = ep.ctl(EPOLL_CTL_DEL, fd, 0);
                    conns.remove(&fd);
                }
            }
        }
    }
}
