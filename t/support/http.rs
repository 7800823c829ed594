//! Minimal HTTP/1.1 client for the integration tests (std only).
//!
//! * send arbitrary raw bytes or a [`Request`];
//! * parse status line and headers (duplicates kept, case-insensitive lookup);
//! * body framing by Content-Length, chunked, or connection close; HEAD/1xx/204/304 have none;
//! * report whether a chunked body ended with the terminating 0-chunk and whether the body was
//!   complete (so aborted responses can be detected instead of raising an error);
//! * keep-alive: one [`Conn`] can carry several requests;
//! * streaming: the body can be handed to a callback instead of being stored, and the arrival
//!   time of each piece of body data (one per socket read) can be recorded.
#![allow(dead_code)]

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Receives streamed body data.
pub type BodySink<'a> = &'a mut dyn FnMut(&[u8]) -> Result<(), String>;

#[derive(Debug, Clone)]
pub enum HttpError {
    Connect(String),
    Io(String),
    Timeout(String),
    /// The peer closed the connection before a complete header block arrived.
    ClosedBeforeResponse {
        received: usize,
    },
    Malformed(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Connect(s) => write!(f, "connect failed: {s}"),
            HttpError::Io(s) => write!(f, "I/O error: {s}"),
            HttpError::Timeout(s) => write!(f, "timeout: {s}"),
            HttpError::ClosedBeforeResponse { received } => {
                write!(
                    f,
                    "connection closed before a complete response header ({received} bytes received)"
                )
            }
            HttpError::Malformed(s) => write!(f, "malformed response: {s}"),
        }
    }
}

impl From<HttpError> for String {
    fn from(e: HttpError) -> String {
        e.to_string()
    }
}

fn io_err(e: io::Error, what: &str) -> HttpError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => HttpError::Timeout(what.to_string()),
        _ => HttpError::Io(format!("{what}: {e}")),
    }
}

/// A request to serialize. `Content-Length` is added automatically when a body is present or
/// the method is POST/PUT (unless the caller set Content-Length or Transfer-Encoding itself).
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub host: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub close: bool,
}

impl Request {
    pub fn new(method: &str, target: &str) -> Request {
        Request {
            method: method.to_string(),
            target: target.to_string(),
            host: "localhost".to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            close: false,
        }
    }
    pub fn get(target: &str) -> Request {
        Request::new("GET", target)
    }
    pub fn head(target: &str) -> Request {
        Request::new("HEAD", target)
    }
    pub fn post(target: &str, body: impl Into<Vec<u8>>) -> Request {
        let mut r = Request::new("POST", target);
        r.body = body.into();
        r
    }
    pub fn host(mut self, h: &str) -> Request {
        self.host = h.to_string();
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    /// Ask the server to close the connection after this response.
    pub fn close(mut self) -> Request {
        self.close = true;
        self
    }
    pub fn is_head(&self) -> bool {
        self.method.eq_ignore_ascii_case("HEAD")
    }
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\n",
            self.method, self.target, self.host
        );
        let has = |n: &str| self.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        let m = self.method.to_ascii_uppercase();
        if !has("content-length")
            && !has("transfer-encoding")
            && (!self.body.is_empty() || m == "POST" || m == "PUT")
        {
            s.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        if self.close && !has("connection") {
            s.push_str("Connection: close\r\n");
        }
        s.push_str("\r\n");
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body by definition (HEAD, 1xx, 204, 304).
    NoBody,
    ContentLength(u64),
    Chunked,
    /// Delimited by connection close.
    Close,
}

/// Arrival of one piece of body data (one socket read).
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    /// Time since the request was sent.
    pub at: Duration,
    /// Body offset of the first byte of this piece.
    pub offset: u64,
    pub len: usize,
}

#[derive(Debug, Clone)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    /// Stored body (empty in streaming mode).
    pub body: Vec<u8>,
    /// Number of body bytes received (also in streaming mode).
    pub body_len: u64,
    pub framing: Framing,
    /// The body ended exactly as its framing says (length reached, terminating chunk seen, or
    /// EOF for close-delimited bodies). False means the response was cut short.
    pub complete: bool,
    /// For chunked bodies: the terminating 0-size chunk was received.
    pub chunked_terminated: bool,
    /// Status codes of interim (1xx) responses received before this one.
    pub interim: Vec<u16>,
    /// Time from sending the request to the end of the header block.
    pub header_time: Duration,
    /// Time from sending the request to the end of the body.
    pub total_time: Duration,
    /// Arrival times of body pieces (only recorded in streaming mode).
    pub arrivals: Vec<Arrival>,
}

impl Response {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// All headers with this name, in order.
    pub fn headers_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// `KEY=value` lines of the body.
    pub fn kv(&self) -> std::collections::BTreeMap<String, String> {
        super::util::parse_kv(&self.text())
    }
    /// Short description for error messages.
    pub fn summary(&self) -> String {
        let mut b = self.text();
        if b.len() > 600 {
            let mut cut = 600;
            while !b.is_char_boundary(cut) {
                cut -= 1;
            }
            b.truncate(cut);
            b.push_str("...");
        }
        format!(
            "{} {} {:?} body({} bytes)={:?}",
            self.status, self.reason, self.headers, self.body_len, b
        )
    }
    fn wants_close(&self) -> bool {
        let conn_close = self
            .headers_all("connection")
            .iter()
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
        conn_close || self.version == "HTTP/1.0" || self.framing == Framing::Close || !self.complete
    }
}

/// One client connection (possibly used for several requests).
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
    last_read_at: Instant,
    /// The server indicated (or the framing implies) that the connection cannot be reused.
    pub closed: bool,
    /// Number of complete responses read on this connection.
    pub served: usize,
}

impl Conn {
    pub fn connect(port: u16) -> Result<Conn, HttpError> {
        Conn::connect_addr(SocketAddr::from(([127, 0, 0, 1], port)), DEFAULT_TIMEOUT)
    }

    pub fn connect_addr(addr: SocketAddr, timeout: Duration) -> Result<Conn, HttpError> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .map_err(|e| HttpError::Connect(format!("{addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let c = Conn {
            stream,
            buf: Vec::with_capacity(65536),
            pos: 0,
            eof: false,
            last_read_at: Instant::now(),
            closed: false,
            served: 0,
        };
        c.set_timeout(timeout)?;
        Ok(c)
    }

    pub fn set_timeout(&self, t: Duration) -> Result<(), HttpError> {
        self.stream
            .set_read_timeout(Some(t))
            .map_err(|e| io_err(e, "set_read_timeout"))?;
        self.stream
            .set_write_timeout(Some(t))
            .map_err(|e| io_err(e, "set_write_timeout"))
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn send_raw(&mut self, data: &[u8]) -> Result<(), HttpError> {
        self.stream
            .write_all(data)
            .map_err(|e| io_err(e, "write request"))?;
        self.stream.flush().map_err(|e| io_err(e, "flush request"))
    }

    /// Half-close the sending side (the server sees EOF on the request stream).
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Send a request and read its response (body stored).
    pub fn roundtrip(&mut self, req: &Request) -> Result<Response, HttpError> {
        self.send_raw(&req.to_bytes())?;
        let t0 = Instant::now();
        self.read_response_at(req.is_head(), t0, None)
    }

    /// Send a request and stream the body into `sink`; arrival times are recorded.
    pub fn roundtrip_streaming(
        &mut self,
        req: &Request,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<Response, HttpError> {
        self.send_raw(&req.to_bytes())?;
        let t0 = Instant::now();
        self.read_response_at(req.is_head(), t0, Some(sink))
    }

    /// Read one response (for raw requests sent with [`Conn::send_raw`]).
    pub fn read_response(&mut self, head: bool) -> Result<Response, HttpError> {
        self.read_response_at(head, Instant::now(), None)
    }

    /// Read one response; with `sink` the body is streamed and arrivals recorded (times are
    /// relative to `t0`, normally the moment the request was sent).
    pub fn read_response_at(
        &mut self,
        head: bool,
        t0: Instant,
        mut sink: Option<BodySink<'_>>,
    ) -> Result<Response, HttpError> {
        let mut interim = Vec::new();
        loop {
            let (version, status, reason, headers) = self.read_head()?;
            if (100..200).contains(&status) && status != 101 {
                interim.push(status);
                continue;
            }
            let header_time = t0.elapsed();
            let mut resp = Response {
                version,
                status,
                reason,
                headers,
                body: Vec::new(),
                body_len: 0,
                framing: Framing::NoBody,
                complete: true,
                chunked_terminated: false,
                interim,
                header_time,
                total_time: header_time,
                arrivals: Vec::new(),
            };
            resp.framing = framing_of(&resp, head)?;
            let record = sink.is_some();
            let mut store = |data: &[u8], resp_body: &mut Vec<u8>| -> Result<(), HttpError> {
                match sink.as_mut() {
                    Some(f) => f(data).map_err(|e| HttpError::Io(format!("body sink: {e}"))),
                    None => {
                        resp_body.extend_from_slice(data);
                        Ok(())
                    }
                }
            };
            let mut body = Vec::new();
            let mut arrivals: Vec<Arrival> = Vec::new();
            let mut got: u64 = 0;
            // Deliver up to `want` bytes from the connection to the body.
            macro_rules! take {
                ($want:expr) => {{
                    let want: u64 = $want;
                    let mut left = want;
                    while left > 0 {
                        if self.pos >= self.buf.len() && !self.fill()? {
                            break;
                        }
                        let avail = (self.buf.len() - self.pos) as u64;
                        let n = avail.min(left) as usize;
                        let piece = self.buf[self.pos..self.pos + n].to_vec();
                        self.pos += n;
                        if record {
                            let at = self.last_read_at.duration_since(t0);
                            match arrivals.last_mut() {
                                Some(a) if a.at == at && a.offset + a.len as u64 == got => {
                                    a.len += n
                                }
                                _ => arrivals.push(Arrival {
                                    at,
                                    offset: got,
                                    len: n,
                                }),
                            }
                        }
                        store(&piece, &mut body)?;
                        got += n as u64;
                        left -= n as u64;
                    }
                    want - left
                }};
            }
            match resp.framing {
                Framing::NoBody => {}
                Framing::ContentLength(n) => {
                    let got_n = take!(n);
                    resp.complete = got_n == n;
                }
                Framing::Close => {
                    let _ = take!(u64::MAX);
                    resp.complete = true;
                }
                Framing::Chunked => {
                    resp.complete = false;
                    // EOF before the terminating chunk = aborted response
                    while let Some(line) = self.read_line()? {
                        let s = String::from_utf8_lossy(&line);
                        let s = s.trim_end_matches(['\r', '\n']);
                        let size_s = s.split(';').next().unwrap_or("").trim();
                        let size = u64::from_str_radix(size_s, 16).map_err(|_| {
                            HttpError::Malformed(format!("bad chunk size line {s:?}"))
                        })?;
                        if size == 0 {
                            resp.chunked_terminated = true;
                            // trailers until the empty line
                            let mut ok = false;
                            while let Some(t) = self.read_line()? {
                                if t == b"\r\n" || t == b"\n" {
                                    ok = true;
                                    break;
                                }
                                let ts = String::from_utf8_lossy(&t);
                                if let Some((k, v)) = ts.trim_end().split_once(':') {
                                    resp.headers
                                        .push((k.trim().to_string(), v.trim().to_string()));
                                }
                            }
                            resp.complete = ok;
                            break;
                        }
                        if take!(size) != size {
                            break;
                        }
                        match self.read_line()? {
                            Some(l) if l == b"\r\n" || l == b"\n" => {}
                            Some(l) => {
                                return Err(HttpError::Malformed(format!(
                                    "chunk not followed by CRLF: {l:?}"
                                )));
                            }
                            None => break,
                        }
                    }
                }
            }
            resp.body = body;
            resp.body_len = got;
            resp.arrivals = arrivals;
            resp.total_time = t0.elapsed();
            if resp.wants_close() || self.eof {
                self.closed = true;
            }
            self.served += 1;
            return Ok(resp);
        }
    }

    /// Read status line + headers.
    #[allow(clippy::type_complexity)]
    fn read_head(&mut self) -> Result<(String, u16, String, Vec<(String, String)>), HttpError> {
        let mut received = 0usize;
        let status_line = loop {
            match self.read_line()? {
                None => return Err(HttpError::ClosedBeforeResponse { received }),
                Some(l) => {
                    received += l.len();
                    // tolerate stray empty lines before the status line
                    if l == b"\r\n" || l == b"\n" {
                        continue;
                    }
                    break l;
                }
            }
        };
        let sl = String::from_utf8_lossy(&status_line).trim_end().to_string();
        let mut parts = sl.splitn(3, ' ');
        let version = parts.next().unwrap_or("").to_string();
        if !version.starts_with("HTTP/") {
            return Err(HttpError::Malformed(format!("status line {sl:?}")));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| HttpError::Malformed(format!("status line {sl:?}")))?;
        let reason = parts.next().unwrap_or("").to_string();
        let mut headers: Vec<(String, String)> = Vec::new();
        loop {
            let line = match self.read_line()? {
                None => return Err(HttpError::ClosedBeforeResponse { received }),
                Some(l) => l,
            };
            received += line.len();
            if line == b"\r\n" || line == b"\n" {
                break;
            }
            let s = String::from_utf8_lossy(&line)
                .trim_end_matches(['\r', '\n'])
                .to_string();
            if s.starts_with(' ') || s.starts_with('\t') {
                // obs-fold: append to the previous header
                if let Some(last) = headers.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(s.trim());
                }
                continue;
            }
            let (k, v) = s
                .split_once(':')
                .ok_or_else(|| HttpError::Malformed(format!("header line {s:?}")))?;
            headers.push((k.to_string(), v.trim().to_string()));
        }
        Ok((version, status, reason, headers))
    }

    /// Read more bytes into the buffer; Ok(false) on EOF.
    fn fill(&mut self) -> Result<bool, HttpError> {
        if self.eof {
            return Ok(false);
        }
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 65536 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let mut tmp = [0u8; 65536];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.last_read_at = Instant::now();
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    // treat a reset like EOF: callers decide whether the response was complete
                    self.eof = true;
                    return Ok(false);
                }
                Err(e) => return Err(io_err(e, "read response")),
            }
        }
    }

    /// One line including its `\n`; at EOF returns the partial remainder (if any) or None.
    fn read_line(&mut self) -> Result<Option<Vec<u8>>, HttpError> {
        let mut scanned = self.pos;
        loop {
            if let Some(i) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + i + 1;
                let line = self.buf[self.pos..end].to_vec();
                self.pos = end;
                return Ok(Some(line));
            }
            scanned = self.buf.len();
            if self.buf.len() - self.pos > 1 << 20 {
                return Err(HttpError::Malformed("line longer than 1 MiB".into()));
            }
            let before = self.pos;
            if !self.fill()? {
                if self.pos < self.buf.len() {
                    // partial line at EOF: consume it, report EOF
                    self.pos = self.buf.len();
                }
                return Ok(None);
            }
            // fill() may have compacted the buffer
            if self.pos != before {
                scanned = self.pos;
            } else {
                scanned = scanned.min(self.buf.len());
            }
        }
    }

    /// True if the server closed the connection (reads EOF without blocking long).
    pub fn is_closed_by_peer(&mut self, wait: Duration) -> bool {
        if self.eof {
            return true;
        }
        let _ = self.stream.set_read_timeout(Some(wait));
        let mut b = [0u8; 1];
        let r = match self.stream.peek(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        };
        let _ = self.stream.set_read_timeout(Some(DEFAULT_TIMEOUT));
        r
    }
}

fn framing_of(resp: &Response, head: bool) -> Result<Framing, HttpError> {
    if head || resp.status == 204 || resp.status == 304 || (100..200).contains(&resp.status) {
        return Ok(Framing::NoBody);
    }
    let te = resp.headers_all("transfer-encoding").join(",");
    if !te.is_empty() {
        let last = te
            .split(',')
            .map(|t| t.trim().to_ascii_lowercase())
            .rfind(|t| !t.is_empty());
        return Ok(if last.as_deref() == Some("chunked") {
            Framing::Chunked
        } else {
            Framing::Close
        });
    }
    let cls = resp.headers_all("content-length");
    if let Some(first) = cls.first() {
        let n: u64 = first
            .trim()
            .parse()
            .map_err(|_| HttpError::Malformed(format!("Content-Length {first:?}")))?;
        if cls.iter().any(|v| v.trim() != first.trim()) {
            return Err(HttpError::Malformed(format!(
                "conflicting Content-Length headers {cls:?}"
            )));
        }
        return Ok(Framing::ContentLength(n));
    }
    Ok(Framing::Close)
}

/// Whether a failed request on a reused keep-alive connection may be retried on a new one: the
/// server closed the idle connection before sending a single byte (a normal race, e.g. the event
/// MPM closes keep-alive connections when all workers are busy; RFC 9112 §9.3.1).
pub fn is_idle_close_race(conn: &Conn, err: &HttpError) -> bool {
    conn.served > 0 && matches!(err, HttpError::ClosedBeforeResponse { received: 0 })
}

/// Round trip on `*conn`, reconnecting once if the keep-alive connection was closed by the server
/// before any response byte (see [`is_idle_close_race`]). Returns whether it retried.
pub fn roundtrip_ka(
    conn: &mut Conn,
    port: u16,
    req: &Request,
) -> Result<(Response, bool), HttpError> {
    match conn.roundtrip(req) {
        Err(e) if is_idle_close_race(conn, &e) => {
            *conn = Conn::connect(port)?;
            conn.roundtrip(req).map(|r| (r, true))
        }
        r => r.map(|r| (r, false)),
    }
}

/// One request on a fresh connection (`Connection: close`).
pub fn fetch(port: u16, req: Request) -> Result<Response, HttpError> {
    let mut c = Conn::connect(port)?;
    c.roundtrip(&req.close())
}

/// Send raw bytes on a fresh connection and read one response.
pub fn fetch_raw(port: u16, raw: &[u8], head: bool) -> Result<Response, HttpError> {
    let mut c = Conn::connect(port)?;
    c.send_raw(raw)?;
    c.read_response(head)
}
