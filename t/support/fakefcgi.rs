//! Scripted fake FastCGI applications for the conformance tests.
//!
//! A [`Backend`] is an in-process listener (127.0.0.1 TCP port or unix socket) served by
//! threads. Every accepted connection reads FastCGI requests with the module's own protocol
//! code ([`fcgi::record::RequestDecoder`], [`fcgi::params::decode_pairs`]); after the empty
//! PARAMS record a script (a closure of the request) yields a list of [`Action`]s that are
//! performed in order. What was received (params, stdin, FCGI_KEEP_CONN, connection number,
//! whether and when the web server closed the connection, marks) is recorded for the tests.
//!
//! With FCGI_KEEP_CONN the connection stays open after the script and the next request is read
//! from it (stdin left unread by the previous script is skipped); without it the application
//! closes the connection, as the FastCGI spec says.
//!
//! Everything is bounded: accept and read use short timeouts, every backend stops at its
//! deadline or when [`Backend::stop`] is called, and at most `MAX_CONNS` connections are served.
#![allow(dead_code)]

#[allow(dead_code, unused_imports)]
#[path = "../../src/fcgi/mod.rs"]
mod fcgi;

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use fcgi::record::{RequestDecoder, RequestEvent, push_end_request, push_stream, stream_header};
pub use fcgi::record::{VERSION_1, rtype};

/// Request id the scripts answer with (the module always uses 1).
pub const REQUEST_ID: u16 = 1;
/// Connections served per backend at most.
const MAX_CONNS: usize = 500;
/// A backend serves for at most this long after it was started.
const LIFETIME: Duration = Duration::from_secs(600);
/// Poll interval of the accept loop and of reads (to notice `stop`).
const TICK: Duration = Duration::from_millis(50);
/// A connection waiting for its next request gives up after this long.
const IDLE_CONN_LIMIT: Duration = Duration::from_secs(30);

/// One step of a script.
#[derive(Debug, Clone)]
pub enum Action {
    /// Raw bytes, written as they are.
    Send(Vec<u8>),
    /// STDOUT records of at most `MAX_STREAM_CHUNK` bytes (padded to 8), one write.
    Stdout(Vec<u8>),
    /// STDOUT records of at most `n` content bytes each (no padding), all in one write.
    StdoutSplit(Vec<u8>, usize),
    /// STDOUT records of at most `n` content bytes each, one write (and flush) per record with
    /// `ms` milliseconds between them.
    StdoutTrickle(Vec<u8>, usize, u64),
    /// `n` bytes of the pattern `byte[i] = i % 251` ([`pattern_byte`]) as STDOUT records of
    /// 32 KiB, written one record at a time (no big buffer).
    StdoutPattern(usize),
    /// One STDOUT record (content ≤ 65535 bytes) with exactly this padding length.
    StdoutPadded(Vec<u8>, u8),
    /// The empty STDOUT record.
    StdoutEnd,
    /// STDERR records.
    Stderr(Vec<u8>),
    Sleep(u64),
    /// END_REQUEST.
    End {
        app_status: u32,
        protocol_status: u8,
    },
    /// An END_REQUEST record whose content is exactly these bytes (any length), padded to 8.
    EndRaw(Vec<u8>),
    /// Read (and record) the request body up to the empty STDIN record.
    WaitStdin,
    /// `STDIN_LEN=<n>\nSTDIN_FNV=<hex>\n` of the recorded stdin, as STDOUT.
    StdinSummary,
    /// Half-close (FIN) and stop the script; the connection is then drained and closed.
    Close,
    /// Read and discard until the peer closes the connection or `ms` pass; records when.
    WaitPeerClose(u64),
    /// Record the time under a name.
    Mark(&'static str),
}

/// What a script sees of its request.
#[derive(Debug, Clone)]
pub struct Req {
    /// Connection number (1-based, per backend).
    pub conn: usize,
    /// Request number on this connection (1-based).
    pub nth_on_conn: usize,
    pub request_id: u16,
    pub role: u16,
    pub keep_conn: bool,
    pub params: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Req {
    pub fn param(&self, name: &str) -> Option<String> {
        self.params
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
    /// `QUERY_STRING` (empty if absent).
    pub fn query(&self) -> String {
        self.param("QUERY_STRING").unwrap_or_default()
    }
    /// All params as `NAME=value` lines (sorted).
    pub fn params_text(&self) -> String {
        let m: BTreeMap<String, String> = self
            .params
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect();
        m.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
    }
}

/// What was recorded about one request (pushed when its script has finished).
#[derive(Debug, Clone)]
pub struct Record {
    pub req: Req,
    /// When the empty PARAMS record was read.
    pub started: Instant,
    /// Request body (only what `WaitStdin` read).
    pub stdin: Vec<u8>,
    /// The empty STDIN record was seen.
    pub stdin_complete: bool,
    /// The web server closed the connection (seen by `WaitPeerClose`), time since `started`.
    pub peer_closed_after: Option<Duration>,
    pub marks: Vec<(&'static str, Duration)>,
    /// Write errors while performing the script (e.g. the web server had closed).
    pub write_error: Option<String>,
}

impl Record {
    pub fn mark(&self, name: &str) -> Option<Duration> {
        self.marks.iter().find(|(n, _)| *n == name).map(|(_, d)| *d)
    }
}

pub type Script = Arc<dyn Fn(&Req) -> Vec<Action> + Send + Sync>;

/// Where a backend listens.
#[derive(Debug, Clone)]
pub enum Addr {
    Tcp(u16),
    Unix(PathBuf),
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_read_timeout(t),
            Sock::Unix(s) => s.set_read_timeout(t),
        }
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_write_timeout(t),
            Sock::Unix(s) => s.set_write_timeout(t),
        }
    }
    fn shutdown_write(&self) {
        let _ = match self {
            Sock::Tcp(s) => s.shutdown(Shutdown::Write),
            Sock::Unix(s) => s.shutdown(Shutdown::Write),
        };
    }
}

impl Read for Sock {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(b),
            Sock::Unix(s) => s.read(b),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write(b),
            Sock::Unix(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Shared {
    name: String,
    script: Script,
    stop: AtomicBool,
    deadline: Instant,
    connections: AtomicUsize,
    /// One slot per request in the order they arrived, filled when its script has finished
    /// (so a request that finishes late does not take a later request's index).
    records: Mutex<Vec<Option<Record>>>,
    /// Protocol errors in what the web server sent, and other anomalies.
    errors: Mutex<Vec<String>>,
    conn_threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A running scripted backend.
pub struct Backend {
    pub addr: Addr,
    shared: Arc<Shared>,
    accept_thread: Mutex<Option<JoinHandle<()>>>,
}

impl Backend {
    /// Listen on 127.0.0.1:`port` (0: any free port; prefer a port reserved through the
    /// harness, `Builder::port`, so that it cannot collide with the ports it hands out).
    pub fn tcp(name: &str, port: u16, script: Script) -> Result<Backend, String> {
        let l = TcpListener::bind(("127.0.0.1", port))
            .map_err(|e| format!("fake backend {name}: bind 127.0.0.1:{port}: {e}"))?;
        let port = l.local_addr().map_err(|e| e.to_string())?.port();
        Self::start(name, Addr::Tcp(port), Listener::Tcp(l), script)
    }

    /// Listen on a unix socket (mode 0666 so that Apache's children can connect).
    pub fn unix(name: &str, path: &Path, script: Script) -> Result<Backend, String> {
        let _ = std::fs::remove_file(path);
        let l = UnixListener::bind(path)
            .map_err(|e| format!("fake backend {name}: bind {}: {e}", path.display()))?;
        super::util::chmod(path, 0o666)?;
        Self::start(
            name,
            Addr::Unix(path.to_path_buf()),
            Listener::Unix(l),
            script,
        )
    }

    fn start(name: &str, addr: Addr, l: Listener, script: Script) -> Result<Backend, String> {
        match &l {
            Listener::Tcp(t) => t.set_nonblocking(true),
            Listener::Unix(u) => u.set_nonblocking(true),
        }
        .map_err(|e| format!("fake backend {name}: set_nonblocking: {e}"))?;
        let shared = Arc::new(Shared {
            name: name.to_string(),
            script,
            stop: AtomicBool::new(false),
            deadline: Instant::now() + LIFETIME,
            connections: AtomicUsize::new(0),
            records: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            conn_threads: Mutex::new(Vec::new()),
        });
        let sh = Arc::clone(&shared);
        let h = thread::Builder::new()
            .name(format!("fcgi-{name}"))
            .spawn(move || accept_loop(l, sh))
            .map_err(|e| format!("spawn backend thread: {e}"))?;
        Ok(Backend {
            addr,
            shared,
            accept_thread: Mutex::new(Some(h)),
        })
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn port(&self) -> u16 {
        match &self.addr {
            Addr::Tcp(p) => *p,
            Addr::Unix(_) => 0,
        }
    }

    /// `-host 127.0.0.1:N` or `-socket <path>`.
    pub fn fces_target(&self) -> String {
        match &self.addr {
            Addr::Tcp(p) => format!("-host 127.0.0.1:{p}"),
            Addr::Unix(p) => format!("-socket {}", super::util::q(p.to_string_lossy())),
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Requests whose script has finished.
    /// The finished requests, in arrival order.
    pub fn records(&self) -> Vec<Record> {
        self.shared
            .records
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// Requests that arrived (finished or not).
    pub fn record_count(&self) -> usize {
        self.shared.records.lock().unwrap().len()
    }

    /// Wait until the `n`-th request to arrive (1-based) has finished; returns it.
    pub fn wait_record(&self, n: usize, timeout: Duration) -> Result<Record, String> {
        let t0 = Instant::now();
        loop {
            {
                let r = self.shared.records.lock().unwrap();
                if let Some(Some(rec)) = r.get(n - 1) {
                    return Ok(rec.clone());
                }
            }
            if t0.elapsed() > timeout {
                return Err(format!(
                    "backend {}: request #{n} not recorded within {timeout:?} ({} recorded, {} connections)",
                    self.shared.name,
                    self.record_count(),
                    self.connections()
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn errors(&self) -> Vec<String> {
        self.shared.errors.lock().unwrap().clone()
    }

    /// Stop accepting, end every connection thread, join them all.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept_thread.lock().unwrap().take() {
            let _ = h.join();
        }
        let hs: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.shared.conn_threads.lock().unwrap());
        for h in hs {
            let _ = h.join();
        }
    }
}

fn stopping(sh: &Shared) -> bool {
    sh.stop.load(Ordering::SeqCst) || Instant::now() >= sh.deadline
}

fn accept_loop(l: Listener, sh: Arc<Shared>) {
    while !stopping(&sh) && sh.connections.load(Ordering::SeqCst) < MAX_CONNS {
        let sock = match &l {
            Listener::Tcp(t) => t.accept().map(|(s, _)| {
                let _ = s.set_nonblocking(false);
                let _ = s.set_nodelay(true);
                Sock::Tcp(s)
            }),
            Listener::Unix(u) => u.accept().map(|(s, _)| {
                let _ = s.set_nonblocking(false);
                Sock::Unix(s)
            }),
        };
        match sock {
            Ok(s) => {
                let n = sh.connections.fetch_add(1, Ordering::SeqCst) + 1;
                let sh2 = Arc::clone(&sh);
                match thread::Builder::new()
                    .name(format!("fcgi-{}-{n}", sh.name))
                    .spawn(move || serve_conn(s, n, sh2))
                {
                    Ok(h) => {
                        let mut v = sh.conn_threads.lock().unwrap();
                        v.retain(|h| !h.is_finished());
                        v.push(h);
                    }
                    Err(e) => sh
                        .errors
                        .lock()
                        .unwrap()
                        .push(format!("spawn connection thread: {e}")),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_readable(&l, TICK),
            Err(e) => {
                sh.errors.lock().unwrap().push(format!("accept: {e}"));
                thread::sleep(TICK);
            }
        }
    }
}

/// Sleep until the listener has a pending connection or `t` passes.
fn wait_readable(l: &Listener, t: Duration) {
    use std::os::fd::AsRawFd;
    let fd = match l {
        Listener::Tcp(t) => t.as_raw_fd(),
        Listener::Unix(u) => u.as_raw_fd(),
    };
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, t.as_millis() as libc::c_int) };
}

/// Incoming side of one connection: buffered bytes + the request decoder.
struct Reader {
    sock: Sock,
    buf: Vec<u8>,
    pos: usize,
    dec: RequestDecoder,
    eof: bool,
}

enum Got {
    Begin {
        request_id: u16,
        role: u16,
        keep_conn: bool,
    },
    Params(Vec<u8>),
    ParamsEnd,
    Stdin(Vec<u8>),
    StdinEnd,
    Abort,
}

impl Reader {
    /// Next decoded event; None at EOF, timeout (`limit`) or stop.
    fn next(&mut self, sh: &Shared, limit: Duration) -> Result<Option<Got>, String> {
        let t0 = Instant::now();
        loop {
            if self.pos < self.buf.len() {
                let (used, ev) = self
                    .dec
                    .decode(&self.buf[self.pos..])
                    .map_err(|e| format!("protocol error in the web server's records: {e}"))?;
                self.pos += used;
                let got = ev.map(|ev| match ev {
                    RequestEvent::Begin {
                        request_id,
                        role,
                        keep_conn,
                    } => Got::Begin {
                        request_id,
                        role,
                        keep_conn,
                    },
                    RequestEvent::Params(d) => Got::Params(d.to_vec()),
                    RequestEvent::ParamsEnd => Got::ParamsEnd,
                    RequestEvent::Stdin(d) => Got::Stdin(d.to_vec()),
                    RequestEvent::StdinEnd => Got::StdinEnd,
                    RequestEvent::Abort => Got::Abort,
                });
                if got.is_some() {
                    return Ok(got);
                }
                if used > 0 {
                    continue;
                }
            }
            // decoder wants more input (it may also hold a partial header internally)
            if self.pos >= self.buf.len() {
                self.buf.clear();
                self.pos = 0;
            }
            if self.eof || stopping(sh) || t0.elapsed() > limit {
                return Ok(None);
            }
            let mut tmp = [0u8; 65536];
            let n = self.read_some(&mut tmp);
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    /// One read (up to the socket's read timeout); sets `eof` at the end of the stream or on
    /// an error. Returns the bytes read (0 when none arrived).
    fn read_some(&mut self, tmp: &mut [u8]) -> usize {
        match self.sock.read(tmp) {
            Ok(0) => self.eof = true,
            Ok(n) => return n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => self.eof = true,
        }
        0
    }

    /// Read and discard until EOF or `limit`; true at EOF.
    fn wait_eof(&mut self, sh: &Shared, limit: Duration) -> bool {
        let t0 = Instant::now();
        let mut tmp = [0u8; 65536];
        while !self.eof && !stopping(sh) && t0.elapsed() < limit {
            self.read_some(&mut tmp);
        }
        self.eof
    }
}

fn serve_conn(sock: Sock, conn_no: usize, sh: Arc<Shared>) {
    let _ = sock.set_read_timeout(Some(TICK));
    let _ = sock.set_write_timeout(Some(Duration::from_secs(20)));
    let mut rd = Reader {
        sock,
        buf: Vec::new(),
        pos: 0,
        dec: RequestDecoder::new(),
        eof: false,
    };
    let err = |m: String| {
        sh.errors
            .lock()
            .unwrap()
            .push(format!("connection {conn_no}: {m}"))
    };
    let mut nth = 0usize;
    'requests: loop {
        // BEGIN_REQUEST (skipping the previous request's unread stdin)
        let (request_id, role, keep_conn) = loop {
            match rd.next(&sh, IDLE_CONN_LIMIT) {
                Ok(Some(Got::Begin {
                    request_id,
                    role,
                    keep_conn,
                })) => break (request_id, role, keep_conn),
                Ok(Some(Got::Params(_) | Got::ParamsEnd)) if nth > 0 => {
                    err("PARAMS before BEGIN_REQUEST".into());
                }
                Ok(Some(_)) => {}
                Ok(None) => break 'requests,
                Err(e) => {
                    err(e);
                    break 'requests;
                }
            }
        };
        nth += 1;
        let mut params = Vec::new();
        loop {
            match rd.next(&sh, Duration::from_secs(10)) {
                Ok(Some(Got::Params(d))) => params.extend_from_slice(&d),
                Ok(Some(Got::ParamsEnd)) => break,
                Ok(Some(_)) => {
                    err("unexpected record while reading PARAMS".into());
                    break 'requests;
                }
                Ok(None) => {
                    err("connection ended inside PARAMS".into());
                    break 'requests;
                }
                Err(e) => {
                    err(e);
                    break 'requests;
                }
            }
        }
        let pairs = match fcgi::params::decode_pairs(&params) {
            Ok(p) => p
                .into_iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect(),
            Err(e) => {
                err(format!("bad PARAMS content: {e}"));
                break 'requests;
            }
        };
        let req = Req {
            conn: conn_no,
            nth_on_conn: nth,
            request_id,
            role,
            keep_conn,
            params: pairs,
        };
        let started = Instant::now();
        let slot = {
            let mut recs = sh.records.lock().unwrap();
            recs.push(None);
            recs.len() - 1
        };
        let actions = (sh.script)(&req);
        let mut rec = Record {
            req,
            started,
            stdin: Vec::new(),
            stdin_complete: false,
            peer_closed_after: None,
            marks: Vec::new(),
            write_error: None,
        };
        let mut closed = false;
        for a in actions {
            if let Err(e) = perform(&mut rd, &sh, &mut rec, a, &mut closed) {
                rec.write_error.get_or_insert(e);
                closed = true;
            }
            if closed {
                break;
            }
        }
        sh.records.lock().unwrap()[slot] = Some(rec);
        if closed || !keep_conn || rd.eof {
            break;
        }
    }
    // Close like a polite application: FIN, then drain what the web server still sends.
    rd.sock.shutdown_write();
    rd.wait_eof(&sh, Duration::from_secs(2));
}

fn write_all(rd: &mut Rd, data: &[u8]) -> Result<(), String> {
    rd.sock.write_all(data).map_err(|e| format!("write: {e}"))
}

type Rd = Reader;

/// Frame `data` as stream records of at most `max` bytes (no padding).
pub fn records(t: u8, data: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in data.chunks(max.clamp(1, 65535)) {
        out.extend_from_slice(&[
            VERSION_1,
            t,
            0,
            REQUEST_ID as u8,
            (c.len() >> 8) as u8,
            c.len() as u8,
            0,
            0,
        ]);
        out.extend_from_slice(c);
    }
    out
}

/// A raw record: header fields as given, content, then `padding` zero bytes.
pub fn raw_record(version: u8, t: u8, request_id: u16, content: &[u8], padding: u8) -> Vec<u8> {
    let id = request_id.to_be_bytes();
    let len = (content.len() as u16).to_be_bytes();
    let mut out = vec![version, t, id[0], id[1], len[0], len[1], padding, 0];
    out.extend_from_slice(content);
    out.resize(out.len() + padding as usize, 0);
    out
}

/// END_REQUEST bytes.
pub fn end_request(app_status: u32, protocol_status: u8) -> Vec<u8> {
    let mut out = Vec::new();
    push_end_request(&mut out, REQUEST_ID, app_status, protocol_status);
    out
}

/// STDOUT records the way the module's encoder frames them (padded to 8).
pub fn stdout(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    push_stream(&mut out, rtype::STDOUT, REQUEST_ID, data);
    out
}

/// Byte `i` of the [`Action::StdoutPattern`] body.
pub fn pattern_byte(i: usize) -> u8 {
    (i % 251) as u8
}

/// 64-bit FNV-1a, for comparing bodies without keeping them twice.
pub fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn perform(
    rd: &mut Rd,
    sh: &Shared,
    rec: &mut Record,
    a: Action,
    closed: &mut bool,
) -> Result<(), String> {
    match a {
        Action::Send(b) => write_all(rd, &b)?,
        Action::Stdout(b) => write_all(rd, &stdout(&b))?,
        Action::StdoutSplit(b, n) => write_all(rd, &records(rtype::STDOUT, &b, n))?,
        Action::StdoutTrickle(b, n, ms) => {
            for (i, c) in b.chunks(n.max(1)).enumerate() {
                if i > 0 {
                    thread::sleep(Duration::from_millis(ms));
                }
                write_all(rd, &records(rtype::STDOUT, c, c.len()))?;
            }
        }
        Action::StdoutPattern(n) => {
            let mut off = 0usize;
            while off < n {
                let len = (n - off).min(32 * 1024);
                let piece: Vec<u8> = (off..off + len).map(pattern_byte).collect();
                write_all(rd, &records(rtype::STDOUT, &piece, piece.len()))?;
                off += len;
            }
        }
        Action::StdoutPadded(b, pad) => write_all(
            rd,
            &raw_record(VERSION_1, rtype::STDOUT, REQUEST_ID, &b, pad),
        )?,
        Action::StdoutEnd => {
            let (h, _) = stream_header(rtype::STDOUT, REQUEST_ID, 0);
            write_all(rd, &h)?
        }
        Action::Stderr(b) => {
            let mut out = Vec::new();
            push_stream(&mut out, rtype::STDERR, REQUEST_ID, &b);
            write_all(rd, &out)?
        }
        Action::Sleep(ms) => thread::sleep(Duration::from_millis(ms)),
        Action::End {
            app_status,
            protocol_status,
        } => write_all(rd, &end_request(app_status, protocol_status))?,
        Action::EndRaw(b) => {
            let pad = (b.len().wrapping_neg() & 7) as u8;
            write_all(
                rd,
                &raw_record(VERSION_1, rtype::END_REQUEST, REQUEST_ID, &b, pad),
            )?
        }
        Action::WaitStdin => loop {
            match rd.next(sh, Duration::from_secs(20))? {
                Some(Got::Stdin(d)) => rec.stdin.extend_from_slice(&d),
                Some(Got::StdinEnd) => {
                    rec.stdin_complete = true;
                    break;
                }
                Some(_) => return Err("unexpected record while reading STDIN".into()),
                None => return Err("no end of STDIN".into()),
            }
        },
        Action::StdinSummary => {
            let s = format!(
                "STDIN_LEN={}\nSTDIN_FNV={:016x}\n",
                rec.stdin.len(),
                fnv64(&rec.stdin)
            );
            write_all(rd, &stdout(s.as_bytes()))?
        }
        Action::Close => {
            rd.sock.shutdown_write();
            *closed = true;
        }
        Action::WaitPeerClose(ms) => {
            if rd.wait_eof(sh, Duration::from_millis(ms)) {
                rec.peer_closed_after = Some(rec.started.elapsed());
            }
        }
        Action::Mark(name) => rec.marks.push((name, rec.started.elapsed())),
    }
    Ok(())
}

/// A unix listener with a tiny backlog that never accepts (to provoke a full backlog).
pub struct StuckUnixListener {
    fd: std::os::fd::OwnedFd,
    pub path: PathBuf,
}

impl StuckUnixListener {
    pub fn new(path: &Path, backlog: i32) -> Result<StuckUnixListener, String> {
        use std::os::fd::FromRawFd;
        use std::os::unix::ffi::OsStrExt;
        let _ = std::fs::remove_file(path);
        let bytes = path.as_os_str().as_bytes();
        // SAFETY: plain socket calls on a descriptor we own; sockaddr_un filled within bounds.
        unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(format!("socket: {}", io::Error::last_os_error()));
            }
            let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
            let mut sa: libc::sockaddr_un = std::mem::zeroed();
            sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
            if bytes.len() >= sa.sun_path.len() {
                return Err(format!("socket path too long: {}", path.display()));
            }
            for (i, b) in bytes.iter().enumerate() {
                sa.sun_path[i] = *b as libc::c_char;
            }
            use std::os::fd::AsRawFd;
            let len =
                (std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1) as libc::socklen_t;
            if libc::bind(
                fd.as_raw_fd(),
                &sa as *const libc::sockaddr_un as *const libc::sockaddr,
                len,
            ) != 0
            {
                return Err(format!(
                    "bind {}: {}",
                    path.display(),
                    io::Error::last_os_error()
                ));
            }
            if libc::listen(fd.as_raw_fd(), backlog) != 0 {
                return Err(format!("listen: {}", io::Error::last_os_error()));
            }
            super::util::chmod(path, 0o666)?;
            Ok(StuckUnixListener {
                fd,
                path: path.to_path_buf(),
            })
        }
    }

    /// Fill the backlog with non-blocking connects until the kernel refuses (EAGAIN); the
    /// returned sockets must be kept open while the backlog should stay full.
    pub fn fill(&self) -> Result<Vec<std::os::fd::OwnedFd>, String> {
        use std::os::fd::{AsRawFd, FromRawFd};
        use std::os::unix::ffi::OsStrExt;
        let bytes = self.path.as_os_str().as_bytes();
        let mut held = Vec::new();
        for _ in 0..64 {
            // SAFETY: as above.
            unsafe {
                let fd = libc::socket(
                    libc::AF_UNIX,
                    libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                    0,
                );
                if fd < 0 {
                    return Err(format!("socket: {}", io::Error::last_os_error()));
                }
                let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
                let mut sa: libc::sockaddr_un = std::mem::zeroed();
                sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
                for (i, b) in bytes.iter().enumerate() {
                    sa.sun_path[i] = *b as libc::c_char;
                }
                let len =
                    (std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1) as libc::socklen_t;
                let rv = libc::connect(
                    fd.as_raw_fd(),
                    &sa as *const libc::sockaddr_un as *const libc::sockaddr,
                    len,
                );
                if rv != 0 {
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() == Some(libc::EAGAIN) {
                        return Ok(held);
                    }
                    return Err(format!(
                        "filling the backlog of {}: connect: {e}",
                        self.path.display()
                    ));
                }
                held.push(fd);
            }
        }
        Err(format!(
            "backlog of {} never filled after {} connects",
            self.path.display(),
            held.len()
        ))
    }

    pub fn raw_fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.fd.as_raw_fd()
    }
}
