//! Backend-side tools for the connection-pool suite (`t/pool.rs`), std only:
//!
//! * [`FakeFcgi`] – a scripted FastCGI responder on a loopback TCP port that counts accepted
//!   connections and requests and either honours `FCGI_KEEP_CONN` or ignores it in one of
//!   several ways ([`KeepMode`]);
//! * [`Relay`] – a counting TCP relay put in front of php-fpm (php-fpm's own `accepted conn`
//!   counts requests, not connections);
//! * [`fcgi_request`] / [`fpm_status`] – a direct FastCGI client (php-fpm's status page);
//! * [`backend_sockets`] – the client ends of TCP connections to a port (sock_diag netlink).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

pub const BEGIN_REQUEST: u8 = 1;
pub const ABORT_REQUEST: u8 = 2;
pub const END_REQUEST: u8 = 3;
pub const PARAMS: u8 = 4;
pub const STDIN: u8 = 5;
pub const STDOUT: u8 = 6;
pub const STDERR: u8 = 7;
pub const FLAG_KEEP_CONN: u8 = 1;

/// Appends one record; `pad` padding bytes follow the content.
pub fn push_record(out: &mut Vec<u8>, rtype: u8, id: u16, content: &[u8], pad: usize) {
    assert!(content.len() <= 0xffff && pad <= 0xff);
    out.extend_from_slice(&[
        1,
        rtype,
        (id >> 8) as u8,
        id as u8,
        (content.len() >> 8) as u8,
        content.len() as u8,
        pad as u8,
        0,
    ]);
    out.extend_from_slice(content);
    out.extend(std::iter::repeat_n(0u8, pad));
}

/// Appends a stream (STDOUT, STDIN, PARAMS…) in records of at most 32 KiB, each padded to a
/// multiple of 8 bytes as php-fpm does, and the empty record that ends it when `end`.
pub fn push_stream(out: &mut Vec<u8>, rtype: u8, id: u16, data: &[u8], end: bool) {
    for piece in data.chunks(32 * 1024) {
        let pad = (8 - piece.len() % 8) % 8;
        push_record(out, rtype, id, piece, pad);
    }
    if end {
        push_record(out, rtype, id, b"", 0);
    }
}

fn push_len(out: &mut Vec<u8>, n: usize) {
    if n < 128 {
        out.push(n as u8);
    } else {
        out.extend_from_slice(&((n as u32) | 0x8000_0000).to_be_bytes());
    }
}

pub fn encode_params(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut v = Vec::new();
    for (k, val) in pairs {
        push_len(&mut v, k.len());
        push_len(&mut v, val.len());
        v.extend_from_slice(k.as_bytes());
        v.extend_from_slice(val.as_bytes());
    }
    v
}

/// Name-value pairs of a PARAMS stream.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

pub fn decode_params(mut d: &[u8]) -> Result<Pairs, String> {
    fn len(d: &mut &[u8]) -> Result<usize, String> {
        let first = *d.first().ok_or("truncated length")?;
        if first < 128 {
            *d = &d[1..];
            Ok(first as usize)
        } else {
            if d.len() < 4 {
                return Err("truncated 4-byte length".into());
            }
            let n = u32::from_be_bytes([d[0] & 0x7f, d[1], d[2], d[3]]) as usize;
            *d = &d[4..];
            Ok(n)
        }
    }
    let mut out = Vec::new();
    while !d.is_empty() {
        let kl = len(&mut d)?;
        let vl = len(&mut d)?;
        if d.len() < kl + vl {
            return Err(format!("pair overruns the data ({kl}+{vl} > {})", d.len()));
        }
        out.push((d[..kl].to_vec(), d[kl..kl + vl].to_vec()));
        d = &d[kl + vl..];
    }
    Ok(out)
}

/// One record as read from a stream.
#[derive(Debug)]
pub struct Record {
    pub rtype: u8,
    pub id: u16,
    pub content: Vec<u8>,
}

/// Reads one record; `Ok(None)` on EOF before its first byte.
pub fn read_record(r: &mut impl Read) -> io::Result<Option<Record>> {
    let mut h = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        match r.read(&mut h[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF inside a record header",
                ));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if h[0] != 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad FastCGI version {}", h[0]),
        ));
    }
    let clen = (h[4] as usize) << 8 | h[5] as usize;
    let mut body = vec![0u8; clen + h[6] as usize];
    r.read_exact(&mut body)?;
    body.truncate(clen);
    Ok(Some(Record {
        rtype: h[1],
        id: (h[2] as u16) << 8 | h[3] as u16,
        content: body,
    }))
}

/// FNV-1a 64 of a byte string (the fake backend reports it for the request body).
pub fn fnv64(d: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in d {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

// ------------------------------------------------------------------------------------------
// scripted FastCGI responder

/// What the fake backend does about `FCGI_KEEP_CONN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepMode {
    /// Keeps the connection when the flag is set (as php-fpm does), closes it otherwise.
    Honor,
    /// Ignores the flag: closes right after END_REQUEST.
    CloseAfterResponse,
    /// Ignores the flag: closes this many milliseconds after END_REQUEST (the module may pick
    /// the connection from its pool and send a request before the close arrives).
    CloseAfterDelay(u64),
    /// Serves one request per connection, keeps the connection open, then closes it as soon
    /// as the next request arrives, without reading it (what a php-fpm worker that is stopped
    /// while idle on a kept connection can look like: a reset).
    CloseOnNextRequest,
    /// Serves one request per connection, keeps the connection open, then reads the next
    /// request completely, stays silent this many milliseconds and resets the connection (a
    /// php-fpm worker killed while it runs a script: `request_terminate_timeout`, a crash).
    DiesMidScript(u64),
    /// Keeps connections as `Honor` does, but takes new ones from its listen backlog only
    /// every this many milliseconds: an application whose free process needs a moment to get
    /// the CPU (a loaded or stolen-from CPU), so a new connection waits up to that long.
    HonorAcceptingLate(u64),
}

#[derive(Debug, Default)]
pub struct FakeStats {
    /// Connections accepted.
    pub accepted: AtomicUsize,
    /// Requests answered.
    pub answered: AtomicUsize,
    /// Requests that arrived with FCGI_KEEP_CONN.
    pub keep_flag: AtomicUsize,
    /// Complete requests read and then dropped by closing (CloseOnNextRequest).
    pub dropped: AtomicUsize,
    /// Most requests answered on one connection.
    pub max_per_conn: AtomicUsize,
    /// Protocol violations seen from the module.
    pub errors: Mutex<Vec<String>>,
}

impl FakeStats {
    pub fn snapshot(&self) -> (usize, usize, usize, usize) {
        (
            self.accepted.load(Ordering::SeqCst),
            self.answered.load(Ordering::SeqCst),
            self.keep_flag.load(Ordering::SeqCst),
            self.dropped.load(Ordering::SeqCst),
        )
    }
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }
}

pub struct FakeFcgi {
    pub port: u16,
    pub mode: KeepMode,
    pub stats: Arc<FakeStats>,
}

/// One request as read by the fake backend.
struct FakeReq {
    id: u16,
    keep: bool,
    params: BTreeMap<String, String>,
    stdin: Vec<u8>,
}

/// Reads one complete request (BEGIN_REQUEST, PARAMS…, STDIN…). `Ok(None)` on EOF between
/// requests.
fn read_request(s: &mut TcpStream) -> Result<Option<FakeReq>, String> {
    let Some(begin) = read_record(s).map_err(|e| format!("reading BEGIN_REQUEST: {e}"))? else {
        return Ok(None);
    };
    if begin.rtype != BEGIN_REQUEST || begin.content.len() != 8 {
        return Err(format!(
            "expected BEGIN_REQUEST, got type {} len {}",
            begin.rtype,
            begin.content.len()
        ));
    }
    let role = (begin.content[0] as u16) << 8 | begin.content[1] as u16;
    if role != 1 {
        return Err(format!("role {role}, expected RESPONDER"));
    }
    let keep = begin.content[2] & FLAG_KEEP_CONN != 0;
    let mut params_raw = Vec::new();
    let mut stdin = Vec::new();
    let (mut params_done, mut stdin_done) = (false, false);
    while !(params_done && stdin_done) {
        let rec = read_record(s)
            .map_err(|e| format!("reading request records: {e}"))?
            .ok_or("EOF in the middle of a request")?;
        if rec.id != begin.id {
            return Err(format!(
                "record for request id {} inside request {}",
                rec.id, begin.id
            ));
        }
        match rec.rtype {
            PARAMS if !params_done => {
                if rec.content.is_empty() {
                    params_done = true;
                } else {
                    params_raw.extend_from_slice(&rec.content);
                }
            }
            STDIN if !stdin_done => {
                if rec.content.is_empty() {
                    stdin_done = true;
                } else {
                    stdin.extend_from_slice(&rec.content);
                }
            }
            ABORT_REQUEST => return Err("ABORT_REQUEST received".into()),
            t => {
                return Err(format!(
                    "unexpected record type {t} (params_done={params_done}, stdin_done={stdin_done})"
                ));
            }
        }
    }
    let params = decode_params(&params_raw)?
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect();
    Ok(Some(FakeReq {
        id: begin.id,
        keep,
        params,
        stdin,
    }))
}

fn answer(s: &mut TcpStream, req: &FakeReq, conn_no: usize, seq: usize) -> io::Result<()> {
    let uri = req
        .params
        .get("REQUEST_URI")
        .map(String::as_str)
        .unwrap_or("-");
    let body = format!(
        "MARKER=fake-fcgi\nCONN={conn_no}\nSEQ={seq}\nKEEP={}\nSTDIN_LEN={}\nSTDIN_FNV={:016x}\nURI={uri}\n",
        req.keep as u8,
        req.stdin.len(),
        fnv64(&req.stdin)
    );
    let head = format!("Content-Type: text/plain\r\nX-Fake-Conn: {conn_no}\r\n\r\n");
    let mut out = Vec::with_capacity(head.len() + body.len() + 64);
    // Header block and body in separate records, both padded.
    push_stream(&mut out, STDOUT, req.id, head.as_bytes(), false);
    push_stream(&mut out, STDOUT, req.id, body.as_bytes(), true);
    push_record(&mut out, END_REQUEST, req.id, &[0, 0, 0, 0, 0, 0, 0, 0], 0);
    s.write_all(&out)
}

impl FakeFcgi {
    /// Binds 127.0.0.1:`port` (0: any) and serves forever in background threads (one per
    /// connection).
    pub fn start(port: u16, mode: KeepMode) -> Result<FakeFcgi, String> {
        let l = TcpListener::bind(("127.0.0.1", port))
            .map_err(|e| format!("fake fcgi bind 127.0.0.1:{port}: {e}"))?;
        let port = l.local_addr().map_err(|e| e.to_string())?.port();
        let stats = Arc::new(FakeStats::default());
        let st = stats.clone();
        thread::Builder::new()
            .name(format!("fake-fcgi-{port}"))
            .spawn(move || {
                let serve = |s: TcpStream| {
                    let conn_no = st.accepted.fetch_add(1, Ordering::SeqCst) + 1;
                    let st = st.clone();
                    let _ = thread::Builder::new().spawn(move || serve_conn(s, conn_no, mode, &st));
                };
                if let KeepMode::HonorAcceptingLate(ms) = mode {
                    let _ = l.set_nonblocking(true);
                    loop {
                        thread::sleep(Duration::from_millis(ms));
                        while let Ok((s, _)) = l.accept() {
                            let _ = s.set_nonblocking(false);
                            serve(s);
                        }
                    }
                }
                for conn in l.incoming() {
                    let Ok(s) = conn else { continue };
                    serve(s);
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(FakeFcgi { port, mode, stats })
    }
}

fn serve_conn(mut s: TcpStream, conn_no: usize, mode: KeepMode, st: &FakeStats) {
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_secs(120)));
    let mut seq = 0usize;
    loop {
        if mode == KeepMode::CloseOnNextRequest && seq >= 1 {
            // wait for the request to arrive, then close with it unread
            let mut b = [0u8; 1];
            if matches!(s.peek(&mut b), Ok(n) if n > 0) {
                st.dropped.fetch_add(1, Ordering::SeqCst);
            }
            reset_close(s);
            return;
        }
        let req = match read_request(&mut s) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                // The module may close a kept connection while we wait for the next request;
                // only complain about garbage, not about EOF / resets between requests.
                if !e.contains("reading BEGIN_REQUEST") {
                    st.errors
                        .lock()
                        .unwrap()
                        .push(format!("conn {conn_no}: {e}"));
                }
                return;
            }
        };
        if req.keep {
            st.keep_flag.fetch_add(1, Ordering::SeqCst);
        }
        if let KeepMode::DiesMidScript(ms) = mode
            && seq >= 1
        {
            st.dropped.fetch_add(1, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(ms));
            reset_close(s);
            return;
        }
        seq += 1;
        if answer(&mut s, &req, conn_no, seq).is_err() {
            return;
        }
        st.answered.fetch_add(1, Ordering::SeqCst);
        st.max_per_conn.fetch_max(seq, Ordering::SeqCst);
        match mode {
            KeepMode::Honor | KeepMode::HonorAcceptingLate(_) if req.keep => continue,
            KeepMode::CloseOnNextRequest | KeepMode::DiesMidScript(_) => continue,
            KeepMode::CloseAfterDelay(ms) => {
                thread::sleep(Duration::from_millis(ms));
                return;
            }
            _ => return,
        }
    }
}

/// Closes with SO_LINGER {on, 0}: the peer gets a reset, as from a process that died with
/// data unread.
pub fn reset_close(s: TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor and a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const l).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}

// ------------------------------------------------------------------------------------------
// counting relay

/// A TCP relay on 127.0.0.1:`port` (0: any; or another address, [`Relay::start_on`]) to
/// `upstream` that counts the connections it accepts.
pub struct Relay {
    pub port: u16,
    pub accepted: Arc<AtomicUsize>,
}

impl Relay {
    pub fn start(port: u16, upstream: SocketAddr) -> Result<Relay, String> {
        Relay::start_on(std::net::Ipv4Addr::LOCALHOST.into(), port, upstream)
    }

    /// A relay on `ip`:`port` instead of 127.0.0.1.
    pub fn start_on(
        ip: std::net::IpAddr,
        port: u16,
        upstream: SocketAddr,
    ) -> Result<Relay, String> {
        let at = SocketAddr::new(ip, port);
        let l = TcpListener::bind(at).map_err(|e| format!("relay bind {at}: {e}"))?;
        let port = l.local_addr().map_err(|e| e.to_string())?.port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let acc = accepted.clone();
        thread::Builder::new()
            .name(format!("relay-{port}"))
            .spawn(move || {
                for conn in l.incoming() {
                    let Ok(down) = conn else { continue };
                    acc.fetch_add(1, Ordering::SeqCst);
                    let Ok(up) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))
                    else {
                        continue; // dropping `down` closes it
                    };
                    let _ = down.set_nodelay(true);
                    let _ = up.set_nodelay(true);
                    let (Ok(d2), Ok(u2)) = (down.try_clone(), up.try_clone()) else {
                        continue;
                    };
                    let _ = thread::Builder::new().spawn(move || pipe(down, up));
                    let _ = thread::Builder::new().spawn(move || pipe(u2, d2));
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Relay { port, accepted })
    }

    pub fn count(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Copies `from` to `to` until EOF, then half-closes `to` (a reset closes both).
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    let _ = from.shutdown(Shutdown::Both);
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

// ------------------------------------------------------------------------------------------
// direct FastCGI client

/// One FastCGI request (id 1, no KEEP_CONN) to `addr`; returns (stdout, stderr).
pub fn fcgi_request(
    addr: SocketAddr,
    params: &[(&str, &str)],
    stdin: &[u8],
    timeout: Duration,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut s =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    fcgi_exchange(&mut s, &addr.to_string(), params, stdin)
}

/// [`fcgi_request`] over a unix socket.
pub fn fcgi_request_unix(
    path: &std::path::Path,
    params: &[(&str, &str)],
    stdin: &[u8],
    timeout: Duration,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    let addr = path.display().to_string();
    let mut s = std::os::unix::net::UnixStream::connect(path)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    fcgi_exchange(&mut s, &addr, params, stdin)
}

fn fcgi_exchange(
    s: &mut (impl Read + Write),
    addr: &str,
    params: &[(&str, &str)],
    stdin: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut out = Vec::new();
    push_record(&mut out, BEGIN_REQUEST, 1, &[0, 1, 0, 0, 0, 0, 0, 0], 0);
    push_stream(&mut out, PARAMS, 1, &encode_params(params), true);
    push_stream(&mut out, STDIN, 1, stdin, true);
    s.write_all(&out)
        .map_err(|e| format!("write to {addr}: {e}"))?;
    let (mut so, mut se) = (Vec::new(), Vec::new());
    loop {
        let rec = read_record(s)
            .map_err(|e| format!("read from {addr}: {e}"))?
            .ok_or_else(|| format!("{addr} closed before END_REQUEST"))?;
        match rec.rtype {
            STDOUT => so.extend_from_slice(&rec.content),
            STDERR => se.extend_from_slice(&rec.content),
            END_REQUEST => return Ok((so, se)),
            t => return Err(format!("unexpected record type {t} from {addr}")),
        }
    }
}

/// php-fpm's status page (`pm.status_path = /fpm-status` in the pool) as key → value.
pub fn fpm_status(port: u16) -> Result<BTreeMap<String, String>, String> {
    fpm_status_at(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// [`fpm_status`] of the pool listening on `addr`.
pub fn fpm_status_at(addr: SocketAddr) -> Result<BTreeMap<String, String>, String> {
    let (out, _) = fcgi_request(
        addr,
        &[
            ("SCRIPT_NAME", "/fpm-status"),
            ("SCRIPT_FILENAME", "/fpm-status"),
            ("REQUEST_URI", "/fpm-status"),
            ("REQUEST_METHOD", "GET"),
            ("QUERY_STRING", ""),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("GATEWAY_INTERFACE", "CGI/1.1"),
        ],
        b"",
        Duration::from_secs(10),
    )?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or(&text);
    let mut m = BTreeMap::new();
    for line in body.lines() {
        if let Some((k, v)) = line.split_once(':') {
            m.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    if !m.contains_key("accepted conn") {
        return Err(format!("no status page from {addr}: {text:?}"));
    }
    Ok(m)
}

// ------------------------------------------------------------------------------------------
// client ends of connections to a port (sock_diag netlink, /proc/net/tcp as a fallback)

/// Client-side ends of IPv4 TCP connections to 127.0.0.1:`port`, by state.
#[derive(Debug, Default, Clone)]
pub struct BackendSockets {
    pub established: usize,
    pub syn_sent: usize,
    pub close_wait: usize,
    /// Counted by [`backend_sockets_at`] when asked for.
    pub time_wait: usize,
    /// Local (ephemeral) ports of the established ones.
    pub local_ports: Vec<u16>,
}

impl BackendSockets {
    /// Connections held open on the client side.
    pub fn held(&self) -> usize {
        self.established + self.syn_sent + self.close_wait
    }

    fn add(&mut self, state: u8, local_port: u16) {
        match state {
            1 => {
                self.established += 1;
                self.local_ports.push(local_port);
            }
            2 => self.syn_sent += 1,
            6 => self.time_wait += 1,
            8 => self.close_wait += 1,
            _ => {}
        }
    }
}

/// Reading /proc/net/tcp takes long with tens of thousands of TIME_WAIT sockets (a load run
/// with a connection per request makes them), so the kernel is asked through sock_diag for the
/// three states of interest only.
pub fn backend_sockets(port: u16) -> BackendSockets {
    diag::query([127, 0, 0, 1], port, false).unwrap_or_else(|_| proc_net_tcp(port))
}

/// Client-side ends of connections to `addr` (an application in another network namespace),
/// by state, TIME_WAIT included with `time_wait`.
pub fn backend_sockets_at(
    addr: std::net::SocketAddrV4,
    time_wait: bool,
) -> Result<BackendSockets, String> {
    diag::query(addr.ip().octets(), addr.port(), time_wait).map_err(|e| format!("sock_diag: {e}"))
}

fn proc_net_tcp(port: u16) -> BackendSockets {
    let mut r = BackendSockets::default();
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        let (Some((_, lp)), Some((rip, rp))) = (f[1].split_once(':'), f[2].split_once(':')) else {
            continue;
        };
        if rip != "0100007F" || u16::from_str_radix(rp, 16).ok() != Some(port) {
            continue;
        }
        let st = u8::from_str_radix(f[3], 16).unwrap_or(0);
        r.add(st, u16::from_str_radix(lp, 16).unwrap_or(0));
    }
    r
}

mod diag {
    //! Minimal NETLINK_SOCK_DIAG client (inet_diag_req_v2 dump, IPv4 TCP).
    use super::BackendSockets;
    use std::io;

    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_DUMP: u16 = 0x300;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    /// TCP_ESTABLISHED, TCP_SYN_SENT, TCP_CLOSE_WAIT
    const STATES: u32 = (1 << 1) | (1 << 2) | (1 << 8);
    /// TCP_TIME_WAIT
    const TIME_WAIT: u32 = 1 << 6;

    #[repr(C)]
    struct Req {
        // nlmsghdr
        len: u32,
        rtype: u16,
        flags: u16,
        seq: u32,
        pid: u32,
        // inet_diag_req_v2
        family: u8,
        protocol: u8,
        ext: u8,
        pad: u8,
        states: u32,
        // inet_diag_sockid
        sport: u16,
        dport: u16,
        src: [u32; 4],
        dst: [u32; 4],
        ifindex: u32,
        cookie: [u32; 2],
    }

    pub fn query(ip: [u8; 4], port: u16, time_wait: bool) -> io::Result<BackendSockets> {
        // SAFETY: plain socket(2); the fd is closed by the guard below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        struct Fd(i32);
        impl Drop for Fd {
            fn drop(&mut self) {
                // SAFETY: closing the fd we own.
                unsafe { libc::close(self.0) };
            }
        }
        let fd = Fd(fd);
        let req = Req {
            len: std::mem::size_of::<Req>() as u32,
            rtype: SOCK_DIAG_BY_FAMILY,
            flags: NLM_F_REQUEST | NLM_F_DUMP,
            seq: 1,
            pid: 0,
            family: libc::AF_INET as u8,
            protocol: libc::IPPROTO_TCP as u8,
            ext: 0,
            pad: 0,
            states: if time_wait {
                STATES | TIME_WAIT
            } else {
                STATES
            },
            sport: 0,
            dport: 0,
            src: [0; 4],
            dst: [0; 4],
            ifindex: 0,
            cookie: [0; 2],
        };
        // SAFETY: sockaddr_nl is plain old data.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: `req` is a live repr(C) value of the given size; `sa` a valid sockaddr_nl.
        let rv = unsafe {
            libc::sendto(
                fd.0,
                (&req as *const Req).cast(),
                std::mem::size_of::<Req>(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rv < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut out = BackendSockets::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: `buf` is live and writable for its length.
            let n = unsafe { libc::recv(fd.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut off = 0usize;
            let n = n as usize;
            while off + 16 <= n {
                let u32_at = |o: usize| u32::from_ne_bytes(buf[o..o + 4].try_into().unwrap());
                let len = u32_at(off) as usize;
                let mtype = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
                if len < 16 || off + len > n {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "bad netlink message",
                    ));
                }
                match mtype {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => return Err(io::Error::other("sock_diag error")),
                    _ => {
                        // inet_diag_msg after the 16-byte header: family, state, timer,
                        // retrans, then inet_diag_sockid (sport, dport big-endian, src, dst).
                        let m = off + 16;
                        if m + 4 + 40 <= off + len {
                            let state = buf[m + 1];
                            let sport = u16::from_be_bytes([buf[m + 4], buf[m + 5]]);
                            let dport = u16::from_be_bytes([buf[m + 6], buf[m + 7]]);
                            let dst = &buf[m + 24..m + 28];
                            if dport == port && dst == ip {
                                out.add(state, sport);
                            }
                        }
                    }
                }
                off += (len + 3) & !3;
            }
        }
    }
}
