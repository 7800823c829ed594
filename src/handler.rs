//! The request handler: builds the FastCGI request from httpd's CGI environment, streams the
//! request body to the application and its response back to the client, in bounded memory,
//! under the idle timeout, and maps every failure to one log line and the right status.
use std::ffi::c_int;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::time::{Duration, Instant};

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::backend::{ASK_AGAIN, Conn, ConnectError, LOOK_AFTER, Runtime};
use crate::config::{AuthPhase, AuthSpec, ServerDef};
use crate::fcgi::headers::{Feed, Head, HeaderScanner};
use crate::fcgi::params::ParamsWriter;
use crate::fcgi::record::{self, Decoder, Event, rtype};
use crate::ffi::{self, sock};
use crate::httpd::log::escape;
use crate::httpd::{Brigade, Request, ShareBuf};
use crate::reuse::{self, Reused};
use crate::rlog;

/// FastCGI request id (one request per connection at a time, as every FastCGI web server does).
const REQUEST_ID: u16 = 1;
/// Reads of at least this much body are handed to httpd as buckets sharing the read block
/// (`httpd::ShareBuf`; half a block: data httpd holds for a slow client then pins at most
/// twice its size in memory); smaller ones are copied and the block goes back at once.
const SHARE_MIN: usize = crate::blocks::BLOCK / 2;

/// Response body bytes found in one read, in order.
enum Piece {
    /// A range of the read buffer.
    At(usize, usize),
    /// Bytes from elsewhere (not produced by the decoder today; kept correct anyway).
    Bytes(Vec<u8>),
}

thread_local! {
    /// Spare piece lists (see `reuse`).
    static PIECES: std::cell::RefCell<Vec<Vec<Piece>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The response header scanner, whose block buffer goes back to the thread's spares.
struct Scanner(HeaderScanner);

impl Scanner {
    fn new() -> Self {
        let buf = Reused::take(&reuse::BYTES, 512).into_inner();
        Scanner(HeaderScanner::with_buffer(MAX_HEADER_BLOCK, buf))
    }
}

impl Drop for Scanner {
    fn drop(&mut self) {
        drop(Reused::adopt(&reuse::BYTES, self.0.take_buffer()));
    }
}
/// Request body bytes read from the client per step, sent as one STDIN record (16 KiB with
/// its header) straight from httpd's buckets (see `InPlace`); a spooled body is copied into
/// the send buffer in pieces of this size.
const BODY_STEP: usize = 16 * 1024 - record::HEADER_LEN;
/// Request bodies up to this long are read whole before the application is connected (one
/// in-place STDIN record's worth, under 64 KiB); of a longer one, BODY_STEP bytes are.
/// mod_fastcgi read 16 KiB first so that slow uploaders would not hold an application
/// process; a whole small body also means that a form post the client gives up on never
/// reaches the application cut short, and that the request can be replayed on a fresh
/// connection. (Longer bodies would hold more memory per thread for no such gain.)
const PREREAD: usize = 4 * BODY_STEP;
/// Largest PARAMS record content: the protocol's maximum. php-fpm decodes each PARAMS record
/// on its own, so a variable has to fit in one record; this lets one of up to 64 KiB through
/// (large cookies or Kerberos tokens under a raised LimitRequestFieldSize), as
/// mod_proxy_fcgi does. Records are as long as their pairs need.
const PARAMS_RECORD: usize = 65535;
/// How long the end of an HTTP/2 request body without a length is held back in case it was
/// the client resetting the stream (see `spool_body`).
const H2_RESET_GRACE: Duration = Duration::from_millis(2);
/// Longest header block accepted from the application.
pub const MAX_HEADER_BLOCK: usize = 128 * 1024;
/// Without -flush, data handed to httpd is flushed after this much application silence.
const FLUSH_AFTER_SILENCE: Duration = Duration::from_millis(100);
/// Spooled request bodies (chunked ones, or all under `-request-buffering on`) are kept in
/// memory up to this size, then in an unlinked temporary file. Small, as nginx's body buffer:
/// at 1 MiB, 24 concurrent chunked uploads of 900 KB left each Apache child 17 MiB larger
/// (the C heap keeps what a thread once held), against 1 MiB when they stream.
const SPOOL_IN_MEMORY: usize = PREREAD;
/// Longest stderr line logged in one piece.
const STDERR_LINE_MAX: usize = 4000;

/// Where the rest of the request body comes from.
enum BodySource {
    /// Nothing more (no body, or all of it queued).
    Done,
    /// Streamed from the client (Content-Length bodies).
    Client,
    /// Spooled earlier (chunked bodies, whose length had to be known for CONTENT_LENGTH).
    Spool(Spool),
}

/// A request body held in memory or in an unlinked temp file.
enum Spool {
    Mem(Vec<u8>, usize),
    File(std::fs::File),
}

impl Spool {
    fn rewind(&mut self) -> io::Result<()> {
        match self {
            Spool::Mem(_, pos) => {
                *pos = 0;
                Ok(())
            }
            Spool::File(f) => f.seek(SeekFrom::Start(0)).map(|_| ()),
        }
    }

    fn read_into(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Spool::Mem(v, pos) => {
                let n = (v.len() - *pos).min(buf.len());
                buf[..n].copy_from_slice(&v[*pos..*pos + n]);
                *pos += n;
                Ok(n)
            }
            Spool::File(f) => f.read(buf),
        }
    }
}

fn temp_file() -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir();
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(&dir)
    {
        Ok(f) => Ok(f),
        Err(_) => {
            // Filesystems without O_TMPFILE: create a unique name and unlink it at once.
            let n = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let p = dir.join(format!("mod_fastcgi-body-{}-{n}", std::process::id()));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&p)?;
            let _ = std::fs::remove_file(&p);
            Ok(f)
        }
    }
}

/// How a failure is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    /// Already logged; answer with this status (or abort the response if it began).
    Status(c_int),
    /// The client went away: nothing to send.
    ClientGone,
    /// The connection turned out to be closed before anything was received, and the
    /// request can be replayed on a fresh connection: a pooled connection the application
    /// closed while idle, or (idempotent requests only) a new connection the application
    /// reset without reading the whole request.
    Retry,
}

/// What to do with the response once its header block is known.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Headers,
    Body,
    /// `Location: /local` without a Status: discard the body, then redirect internally.
    LocalRedirect(Vec<u8>),
    /// `Location: <absolute URL>` without a Status: discard the body, httpd sends a 302.
    ExternalRedirect,
    /// -nph: bytes go to the client unparsed.
    Nph,
    /// An authorizer's answer: its header block is kept in `Exchange::answer`, its body dropped.
    Auth,
}

/// What an application in the AUTHORIZER role answered.
#[derive(Debug, Default)]
pub struct AuthAnswer {
    /// The `Status` code (200 when there is none).
    pub status: u16,
    /// Every header but `Status` and `Location`, in order (Content-Type included).
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// The answer had a `Location`, which an authorizer may not send.
    pub location: bool,
}

/// A FastCGI request in the AUTHORIZER role, for one of the three auth phases.
struct AuthCall<'p> {
    phase: AuthPhase,
    compat: bool,
    /// The Basic-authentication password (FastCgiAuthenticator): REMOTE_PASSWD.
    password: Option<&'p [u8]>,
}

struct Exchange<'r, 'd> {
    def: &'d ServerDef,
    rt: &'d Arc<Runtime>,
    conn: Conn,
    /// Response bytes received on this connection.
    received: u64,
    /// Request body was read from the client during the exchange (no replay possible).
    consumed_client: bool,
    /// A reset before any response byte on this new connection may be replayed once.
    retry_on_reset: bool,
    /// Address and length of the bytes of the current read (to locate body pieces in it).
    read_span: (usize, usize),
    /// Body pieces of the current read, appended to `bb` after it (see `flush_pieces`).
    pieces: Reused<Piece>,
    piece_bytes: usize,
    /// Bytes followed END_REQUEST (the connection cannot be reused).
    trailing: bool,
    /// This request is counted as waiting for the application (fresh connection unanswered).
    stall_marked: bool,
    /// The kernel said an application process read this request: its silence is the
    /// script's time, not a queue (no stall to watch for), and a failure from now on is not
    /// replayed (the script may have acted on the request).
    taken: bool,
    /// When (since the request was sent) the fresh connection is next looked at:
    /// `Runtime::ask_after()`, then every ASK_AGAIN while it waits in the backlog (None: no
    /// more looks, the kernel cannot tell).
    next_ask: Option<Duration>,
    /// When (since the request was sent) a request not watched for a stall is next looked at:
    /// has the application read it (`taken`)? LOOK_AFTER, then twice as long each time.
    next_look: Option<Duration>,
    /// The receive of a pooled connection waited its timeout (LOOK_AFTER): wait with a poll
    /// from then on, not with receives that end every LOOK_AFTER.
    recv_timed_out: bool,
    /// An application process was asked for (see `Runtime::ask_release`).
    asked: bool,
    /// Bytes of the request sent on this connection.
    sent_total: u64,
    out: Reused<u8>,
    out_pos: usize,
    /// The body piece sent after `out` from `body_in`'s buckets.
    in_place: InPlace,
    stdin_done: bool,
    stdin_broken: bool,
    source: BodySource,
    body_in: Brigade<'r>,
    dec: Decoder,
    scanner: Scanner,
    mode: Mode,
    bb: Brigade<'r>,
    /// Something was handed to httpd's output filters (the response has begun).
    sent_any: bool,
    /// TCP_QUICKACK was set since our last send on the connection (Conn::ack_promptly).
    acked_promptly: bool,
    /// Data was passed without a FLUSH since the last flush.
    unflushed: bool,
    stderr: Vec<u8>,
    ended: bool,
    /// The header block of an authorizer's answer (Mode::Auth).
    answer: Option<AuthAnswer>,
    /// The application's Content-Length, kept because of `ap_trust_cgilike_cl`.
    declared: Option<u64>,
    /// Flush after every read: `-flush`, or `X-Accel-Buffering: no` from the application.
    flush_each: bool,
    /// With `declared`: body bytes taken for the client, and the ones past it dropped.
    body_seen: u64,
    excess: u64,
}

/// Turns an environment name into a CGI variable name (as ap_create_environment does).
fn env_name(name: &[u8], out: &mut Vec<u8>) {
    out.clear();
    for (i, &c) in name.iter().enumerate() {
        if i == 0 && c.is_ascii_digit() {
            out.push(b'_');
        } else if c.is_ascii_alphanumeric() {
            out.push(c);
        } else {
            out.push(b'_');
        }
    }
}

/// Variables whose values never go to the log: credentials and cookies, also under the
/// `REDIRECT_` names an internal redirect gives them (the AddType/Action recipe turns a
/// rewrite's `[E=HTTP_AUTHORIZATION:...]` into `REDIRECT_HTTP_AUTHORIZATION`).
fn redact(mut name: &[u8]) -> bool {
    while let Some(rest) = name.strip_prefix(b"REDIRECT_") {
        name = rest;
    }
    matches!(
        name,
        b"HTTP_AUTHORIZATION" | b"HTTP_COOKIE" | b"HTTP_PROXY_AUTHORIZATION" | b"REMOTE_PASSWD"
    )
}

pub fn handle(r: &mut Request<'_>, def: &ServerDef, rt: &Arc<Runtime>) -> c_int {
    exchange(r, def, rt, None).0
}

/// Runs the application of an auth phase (FastCgiAuthenticator, FastCgiAuthorizer,
/// FastCgiAccessChecker) and applies its answer, as mod_fastcgi does: 200 passes (its headers
/// become environment variables for the rest of the request), anything else denies (its
/// headers go to the client with httpd's 401 or 403). A failure to reach the application
/// (already logged) gives its status (503, 502, 504). Not authoritative: a denial or failure
/// lets the other modules decide (DECLINED).
pub fn run_authorizer(
    r: &mut Request<'_>,
    def: &ServerDef,
    rt: &Arc<Runtime>,
    phase: AuthPhase,
    spec: &AuthSpec,
    authoritative: bool,
) -> c_int {
    let server = String::from_utf8_lossy(&def.path).into_owned();
    let directive = phase.directive();
    let password = if phase == AuthPhase::Authenticator {
        match r.basic_auth_password() {
            Ok(pw) => Some(pw),
            // No credentials yet (401 with a challenge), or not Basic authentication.
            Err(rc) => return rc,
        }
    } else {
        None
    };
    // The variables added for the application's request stay out of the rest of the request
    // (REMOTE_PASSWD above all): the environment is restored afterwards.
    let saved = r.save_subprocess_env();
    let call = AuthCall {
        phase,
        compat: spec.compat,
        password,
    };
    let (rc, answer) = exchange(r, def, rt, Some(&call));
    r.restore_subprocess_env(saved);
    let a = match answer {
        Some(a) => a,
        // Not reached or broken (logged): its status, unless other modules may decide.
        None if authoritative => return rc,
        None => return ffi::DECLINED,
    };
    let why = if a.location {
        format!("FastCGI: {directive} \"{server}\" redirected (not allowed)")
    } else if a.status == 200 {
        let env = r.subprocess_env();
        for (name, value) in &a.headers {
            match strip_variable_prefix(name) {
                Some(n) => env.set(n, value),
                None if !spec.compat => env.set(name, value),
                None => {}
            }
        }
        return ffi::OK;
    } else {
        // The client gets httpd's 401/403 page with the application's headers, except those
        // that describe (or would frame) a body it does not get.
        let out = r.err_headers_out();
        for (name, value) in &a.headers {
            match &name.to_ascii_lowercase()[..] {
                b"content-type" | b"content-length" | b"transfer-encoding" => {}
                b"set-cookie" => out.add(name, value),
                _ => out.set(name, value),
            }
        }
        let uri = r.uri().map(escape).unwrap_or_default();
        let status = a.status;
        match phase {
            AuthPhase::AccessChecker => {
                format!(
                    "FastCGI: access denied by {directive} \"{server}\" (status {status}): {uri}"
                )
            }
            _ => format!(
                "FastCGI: {} failed for user \"{}\" by {directive} \"{server}\" (status {status}): {uri}",
                if phase == AuthPhase::Authenticator {
                    "authentication"
                } else {
                    "authorization"
                },
                r.user().map(escape).unwrap_or_default()
            ),
        }
    };
    if !authoritative {
        return ffi::DECLINED;
    }
    let id = if a.location { 101 } else { 100 };
    rlog!(r, ERR, 0, id, "{why}");
    if phase == AuthPhase::AccessChecker {
        ffi::HTTP_FORBIDDEN
    } else {
        r.note_auth_failure();
        ffi::HTTP_UNAUTHORIZED
    }
}

/// `Variable-NAME` → `NAME` (the prefix an authorizer marks variables with), case-insensitive.
fn strip_variable_prefix(name: &[u8]) -> Option<&[u8]> {
    const P: &[u8] = b"variable-";
    (name.len() > P.len() && name[..P.len()].eq_ignore_ascii_case(P)).then(|| &name[P.len()..])
}

/// Sends one request to the application and handles its answer: as a responder (the answer
/// goes to the client; returns the handler's status) or, with `auth`, in the AUTHORIZER role
/// (the answer's head is returned, its body dropped).
fn exchange(
    r: &mut Request<'_>,
    def: &ServerDef,
    rt: &Arc<Runtime>,
    auth: Option<&AuthCall<'_>>,
) -> (c_int, Option<AuthAnswer>) {
    let rc = |c: c_int| (c, None);
    #[cfg(feature = "test-panic")]
    if r.headers_in().get(c"X-Fastcgi-Test-Panic").is_some() {
        panic!("test panic requested by X-Fastcgi-Test-Panic");
    }
    let server = String::from_utf8_lossy(&def.path);

    // 0. Decoded CR/LF in the path (from %0d/%0a) never reach the application: they are the
    // raw material of PATH_INFO confusion attacks on php-fpm (CVE-2019-11043 class). httpd
    // itself already refuses %00.
    let bad =
        |p: Option<&[u8]>| p.is_some_and(|p| p.iter().any(|&c| c == b'\r' || c == b'\n' || c == 0));
    if bad(r.path_info()) || bad(r.filename()) {
        rlog!(
            r,
            INFO,
            0,
            63,
            "FastCGI: request path with a CR, LF or NUL character refused (server \"{server}\")"
        );
        return rc(ffi::HTTP_NOT_FOUND);
    }
    // `AcceptPathInfo Off` refuses a trailing path after the script, as mod_php, mod_cgi and
    // mod_fcgid do (mod_fastcgi ignored it). The request was not served: nothing is logged
    // above info, like any other 404.
    if auth.is_none()
        && let Some(extra) = r.refused_path_info()
    {
        rlog!(
            r,
            INFO,
            0,
            64,
            "FastCGI: AcceptPathInfo Off refuses the trailing path \"{}\" (server \"{server}\")",
            crate::httpd::log::escape(extra)
        );
        return rc(ffi::HTTP_NOT_FOUND);
    }

    // 1. The request body: validate framing first (nothing is opened for a bad request).
    // An authorizer gets no request body (FastCGI specification, 6.3).
    let info = match auth {
        Some(_) => crate::httpd::BodyInfo {
            has_body: false,
            chunked: false,
            length: None,
        },
        None => match r.setup_body() {
            Ok(i) => i,
            Err(status) => return rc(status),
        },
    };
    let mut body_in = Brigade::new(r);
    // The first piece of a streamed body stays in `body_in` until the request is framed.
    let mut first_piece_read = false;
    let mut source = BodySource::Done;
    let mut body_eos = !info.has_body;
    let mut spooled_len: Option<u64> = None;
    if info.has_body && (info.chunked || def.request_buffering) {
        match spool_body(r, &mut body_in, &server) {
            Ok((spool, len)) => {
                source = BodySource::Spool(spool);
                spooled_len = Some(len);
                body_eos = false;
            }
            Err(f) => return rc(finish_early(r, f)),
        }
    } else if info.has_body {
        // Read the body, up to PREREAD bytes of it, before connecting: a client that sends
        // slowly or nothing never ties up an application process.
        if let Err(f) = preread_body(r, &mut body_in, info.length, &server) {
            return rc(finish_early(r, f));
        }
        first_piece_read = true;
    }

    // 2. The CGI environment.
    match auth {
        Some(a) => r.add_authorizer_environment(a.compat),
        None => r.add_cgi_environment(),
    }
    let env = r.subprocess_env();
    if let Some(a) = auth {
        env.set(b"FCGI_APACHE_ROLE", a.phase.apache_role());
        if let Some(pw) = a.password {
            env.set(b"REMOTE_PASSWD", pw);
        }
    }
    let hin = r.headers_in();
    let mut name_buf = Reused::take(&reuse::BYTES, 64);
    for h in &def.pass_headers {
        if let Some(v) = hin.get(&h.name) {
            env.set(&h.env, v);
        }
    }
    if let Some(len) = spooled_len {
        // The application gets the body de-chunked, CONTENT_LENGTH bytes long: the client's
        // `Transfer-Encoding: chunked` no longer describes it, and frameworks that see it
        // (Werkzeug: Flask) ignore CONTENT_LENGTH and read no body at all.
        env.set(b"CONTENT_LENGTH", len.to_string().as_bytes());
        env.unset(c"HTTP_TRANSFER_ENCODING");
    }
    // A client asking for the virtual path's URL itself (`/php5.fcgi/uploads/x.jpg`) must not
    // be able to name the file the application executes: without PATH_TRANSLATED, php-fpm
    // (cgi.fix_pathinfo 0 or 1) looks for the virtual path and finds nothing, while
    // applications meant to be requested directly still get PATH_INFO.
    if auth.is_none() && !def.trust_direct && r.is_direct() && env.get(c"PATH_TRANSLATED").is_some()
    {
        env.unset(c"PATH_TRANSLATED");
        rlog!(
            r,
            DEBUG,
            0,
            80,
            "FastCGI: direct request to the virtual path of server \"{server}\": PATH_TRANSLATED withheld (-trust-direct sends it)"
        );
    }

    let mut out = Reused::take(&reuse::BYTES, 8 * 1024 + 64);
    let role = match auth {
        Some(_) => record::ROLE_AUTHORIZER,
        None => record::ROLE_RESPONDER,
    };
    record::push_begin_request(&mut out, REQUEST_ID, role, rt.keep_conn());
    let trace = r.log_level() >= crate::httpd::log::TRACE3;
    let mut trace_text = String::new();
    {
        let mut pw = ParamsWriter::new(&mut out, REQUEST_ID, PARAMS_RECORD);
        let mut skipped: Vec<(String, usize)> = Vec::new();
        env.for_each(|k, v| {
            env_name(k, &mut name_buf);
            if name_buf[..] == *b"HTTP_PROXY" {
                return; // httpoxy: never, whatever set it
            }
            if let Err(e) = pw.add(&name_buf, v) {
                skipped.push((
                    String::from_utf8_lossy(&name_buf).into_owned(),
                    e.encoded_len,
                ));
                return;
            }
            if trace {
                let shown = if redact(&name_buf) {
                    "[redacted]".to_string()
                } else {
                    escape(v)
                };
                trace_text.push_str(&format!(" {}={};", escape(&name_buf), shown));
            }
        });
        pw.finish();
        for (name, len) in skipped {
            rlog!(
                r,
                WARNING,
                0,
                50,
                "FastCGI: variable {name} ({len} bytes encoded) does not fit in a FastCGI PARAMS record of {PARAMS_RECORD} bytes and was not sent to server \"{server}\""
            );
        }
    }
    if trace {
        rlog!(
            r,
            TRACE3,
            0,
            51,
            "FastCGI: params for server \"{server}\":{trace_text}"
        );
    }
    let mut in_place = InPlace::default();
    if first_piece_read {
        // Sent from httpd's buckets: no copy of the body of our own.
        match frame_piece(r, &mut body_in, &mut out, &mut in_place, &server) {
            Ok(eos) => {
                body_eos = eos;
                source = if eos {
                    BodySource::Done
                } else {
                    BodySource::Client
                };
            }
            Err(f) => return rc(finish_early(r, f)),
        }
    }
    let stdin_done = body_eos && matches!(source, BodySource::Done);
    if stdin_done && !first_piece_read {
        // (frame_piece ended the stream of a body that was read)
        record::push_stream_end(&mut out, rtype::STDIN, REQUEST_ID);
    }

    // 3. Connect (a pooled connection if one is alive) and run the exchange. A pooled
    // connection the application closed meanwhile is detected before any response byte; the
    // request is then replayed once on a fresh connection.
    let timeout = def.connect_timeout.unwrap_or_else(|| {
        r.server()
            .map(|s| s.timeout())
            .unwrap_or(Duration::from_secs(60))
    });
    let nph = auth.is_none()
        && (def.nph
            || r.filename()
                .and_then(|f| f.rsplit(|&c| c == b'/').next())
                .is_some_and(|b| b.starts_with(b"nph-")));
    if nph {
        // Unparsed output carries its own framing (or none): never reuse the client connection.
        r.bypass_protocol_filters();
        r.close_connection();
    }
    // Methods nginx also treats as safe to send again; see replayable_reset().
    let idempotent = ![ffi::M_POST, ffi::M_PATCH, ffi::M_LOCK].contains(&r.method_number());
    let mut attempt = 0;
    let stats = rt.stats();
    stats.requests.fetch_add(1, Ordering::Relaxed);
    loop {
        let conn = match rt.checkout(&def.targets, timeout, attempt == 0) {
            Ok(c) => c,
            Err(e) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                log_connect_error(r, def, &e, timeout);
                return rc(finish_early(r, Fail::Status(ffi::HTTP_SERVICE_UNAVAILABLE)));
            }
        };
        if conn.reused {
            stats.reuses.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.connects.fetch_add(1, Ordering::Relaxed);
        }
        let retry_on_reset = attempt == 0 && !conn.reused && idempotent;
        let replay_ok = conn.reused || retry_on_reset;
        // A request that is complete in `out` (no body still to stream) leaves `out` untouched
        // by the exchange, so a replay reuses it. A body streamed from the client is
        // replayable only until its next piece is read, and `out` is cleared only then, so it
        // is intact whenever a replay is possible; only a spooled body (rewound for the
        // replay) needs the head kept.
        let initial = (replay_ok && !stdin_done && matches!(source, BodySource::Spool(_)))
            .then(|| out.to_vec());
        let mut x = Exchange {
            def,
            rt,
            conn,
            received: 0,
            consumed_client: false,
            retry_on_reset,
            read_span: (0, 0),
            pieces: Reused::take(&PIECES, 4),
            piece_bytes: 0,
            trailing: false,
            stall_marked: false,
            taken: false,
            next_ask: Some(rt.ask_after()),
            next_look: Some(LOOK_AFTER),
            recv_timed_out: false,
            asked: false,
            sent_total: 0,
            out,
            out_pos: 0,
            in_place,
            stdin_done,
            stdin_broken: false,
            source,
            body_in,
            dec: Decoder::new(REQUEST_ID),
            scanner: Scanner::new(),
            mode: if nph { Mode::Nph } else { Mode::Headers },
            answer: auth.map(|_| AuthAnswer::default()),
            bb: Brigade::new(r),
            sent_any: false,
            acked_promptly: false,
            unflushed: false,
            stderr: Vec::new(),
            ended: false,
            declared: None,
            flush_each: def.flush,
            body_seen: 0,
            excess: 0,
        };
        let result = x.run(r, &server);
        x.flush_stderr(r, &server);
        if matches!(result, Err(Fail::Retry)) && replay_ok {
            if x.conn.reused {
                rlog!(
                    r,
                    DEBUG,
                    0,
                    24,
                    "FastCGI: pooled connection to server \"{server}\" was closed by the application; retrying on a new connection"
                );
            } else {
                rlog!(
                    r,
                    WARNING,
                    0,
                    25,
                    "FastCGI: server \"{server}\" reset a new connection without reading the whole request (application stopping?); retrying it once on another connection"
                );
            }
            // (a request marked stalled while it sat in the backlog is not waiting any more)
            x.unmark_stall();
            let Exchange {
                out: sent,
                in_place: ip,
                source: s,
                body_in: b,
                ..
            } = x;
            debug_assert!(initial.is_some() || !sent.is_empty());
            let resend = initial.map(|v| Reused::adopt(&reuse::BYTES, v));
            (out, in_place, source, body_in) = (resend.unwrap_or(sent), ip, s, b);
            in_place.rewind();
            if let BodySource::Spool(sp) = &mut source
                && let Err(e) = sp.rewind()
            {
                return rc(finish_early(r, spool_failed(r, e, &server)));
            }
            attempt += 1;
            stats.replays.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        return match result {
            Ok(()) => {
                let answer = x.answer.take();
                (x.complete(r), answer)
            }
            Err(Fail::Retry) => {
                rlog!(
                    r,
                    ERR,
                    0,
                    23,
                    "FastCGI: comm with server \"{server}\" aborted: connection closed before any response"
                );
                rc(x.fail(r, Fail::Status(ffi::HTTP_BAD_GATEWAY)))
            }
            Err(f) => rc(x.fail(r, f)),
        };
    }
}

/// Reports a failure that happened before anything was sent.
fn finish_early(r: &mut Request<'_>, f: Fail) -> c_int {
    match f {
        Fail::Status(s) => {
            r.close_connection();
            s
        }
        Fail::ClientGone => {
            // Nothing reached the application and there is no one to answer; the access log
            // says the request failed (400, as mod_cgi logs a body the client never
            // finished) rather than 200.
            r.set_status(ffi::HTTP_BAD_REQUEST as u16, None);
            ffi::DONE
        }
        Fail::Retry => ffi::DONE,
    }
}

fn log_connect_error(r: &Request<'_>, def: &ServerDef, e: &ConnectError, timeout: Duration) {
    let server = String::from_utf8_lossy(&def.path);
    let errno = e.error.raw_os_error().unwrap_or(0);
    if e.timed_out {
        let setting = match def.connect_timeout {
            Some(t) => format!("appConnTimeout={}sec", t.as_secs()),
            None => format!("Timeout={}sec", timeout.as_secs()),
        };
        rlog!(
            r,
            ERR,
            errno,
            11,
            "FastCGI: failed to connect to server \"{server}\": connect() timed out ({setting}) (address {})",
            e.target
        );
    } else if let Some(down) = e.refused_for {
        rlog!(
            r,
            ERR,
            errno,
            10,
            "FastCGI: failed to connect to server \"{server}\": connect() failed: {} (address {}); refusing connections for {:.1} sec (-connect-retry {})",
            e.error,
            e.target,
            down.as_secs_f64(),
            def.connect_retry
        );
    } else {
        rlog!(
            r,
            ERR,
            errno,
            10,
            "FastCGI: failed to connect to server \"{server}\": connect() failed: {} (address {})",
            e.error,
            e.target
        );
    }
}

/// A piece of the request body sent straight from httpd's buckets (in `body_in`), without a
/// copy: its record header is the end of `out`, the data stays in the buckets until sent, and
/// `tail` holds the record's padding, followed by the end-of-stream record after the last
/// piece. Sent in that order after `out`.
#[derive(Clone, Copy, Default)]
struct InPlace {
    len: usize,
    sent: usize,
    tail: [u8; 16],
    tail_len: usize,
    tail_sent: usize,
}

impl InPlace {
    fn done(&self) -> bool {
        self.sent >= self.len && self.tail_sent >= self.tail_len
    }
    /// Everything to be sent again (a replay on another connection).
    fn rewind(&mut self) {
        self.sent = 0;
        self.tail_sent = 0;
    }
}

/// Most data buckets a piece sent in place may have (with `out` and the tail, one sendmsg).
const IN_PLACE_PARTS: usize = 30;

/// Frames the body piece in `bb` as one STDIN record (plus the end of the stream once the
/// body ended) to be sent in place; a piece that does not fit one record or one system call
/// is copied into `out` instead. Returns whether the body ended.
fn frame_piece<'r>(
    r: &mut Request<'r>,
    bb: &mut Brigade<'r>,
    out: &mut Vec<u8>,
    ip: &mut InPlace,
    server: &str,
) -> Result<bool, Fail> {
    *ip = InPlace::default();
    let (len, parts, eos) = match bb.load() {
        Ok(x) => x,
        Err(rv) => {
            bb.cleanup();
            return Err(body_read_failed(r, rv, server));
        }
    };
    if eos && body_cut(r, server) {
        bb.cleanup();
        return Err(Fail::ClientGone);
    }
    if len > record::MAX_STREAM_CHUNK || parts > IN_PLACE_PARTS {
        let eos = push_stdin_with(out, |o| drain_body(r, bb, o, server))?;
        if eos {
            record::push_stream_end(out, rtype::STDIN, REQUEST_ID);
        }
        return Ok(eos);
    }
    if len > 0 {
        let (hdr, pad) = record::stream_header(rtype::STDIN, REQUEST_ID, len);
        out.extend_from_slice(&hdr);
        ip.len = len;
        ip.tail_len = pad; // zero bytes
    }
    if eos {
        let (end, _) = record::stream_header(rtype::STDIN, REQUEST_ID, 0);
        ip.tail[ip.tail_len..ip.tail_len + record::HEADER_LEN].copy_from_slice(&end);
        ip.tail_len += record::HEADER_LEN;
    }
    Ok(eos)
}

/// Reads the request body into `bb` until it ends, or until BODY_STEP bytes are in where its
/// `length` is over PREREAD, keeping httpd's buckets (set aside between reads). Each read goes
/// into an empty brigade: httpd's HTTP_IN counts what it returns by the length of the whole
/// brigade it fills.
fn preread_body<'r>(
    r: &mut Request<'r>,
    bb: &mut Brigade<'r>,
    length: Option<u64>,
    server: &str,
) -> Result<(), Fail> {
    let want = match length {
        Some(n) if n <= PREREAD as u64 => PREREAD,
        _ => BODY_STEP,
    };
    read_client_body(r, bb, BODY_STEP, server)?;
    let mut piece: Option<Brigade<'r>> = None;
    loop {
        let (len, eos) = match bb.load() {
            Ok((len, _, eos)) => (len, eos),
            Err(rv) => {
                bb.cleanup();
                return Err(body_read_failed(r, rv, server));
            }
        };
        if eos || len >= want {
            return Ok(());
        }
        if let Err(rv) = bb.setaside(&r.pool()) {
            bb.cleanup();
            return Err(body_read_failed(r, rv, server));
        }
        let piece = piece.get_or_insert_with(|| Brigade::new(r));
        if let Err(f) = read_client_body(r, piece, BODY_STEP.min(want - len), server) {
            bb.cleanup();
            return Err(f);
        }
        bb.append(piece);
    }
}

/// Reads one piece of the request body (at most `max` bytes) from the client into `bb`.
fn read_client_body<'r>(
    r: &mut Request<'r>,
    bb: &mut Brigade<'r>,
    max: usize,
    server: &str,
) -> Result<(), Fail> {
    if let Err(rv) = r.read_body(bb, max) {
        bb.cleanup();
        return Err(body_read_failed(r, rv, server));
    }
    Ok(())
}

/// Moves the body bytes in `bb` to the end of `dst`. Returns true at the end of the body.
fn drain_body<'r>(
    r: &mut Request<'r>,
    bb: &mut Brigade<'r>,
    dst: &mut Vec<u8>,
    server: &str,
) -> Result<bool, Fail> {
    bb.drain(|d| dst.extend_from_slice(d))
        .map_err(|rv| body_read_failed(r, rv, server))
}

/// Appends what `fill` appends to `out` as STDIN data: framed in place as one record when it
/// fits (the usual case: pieces are at most BODY_STEP bytes), else copied into several.
fn push_stdin_with<T, E>(
    out: &mut Vec<u8>,
    fill: impl FnOnce(&mut Vec<u8>) -> Result<T, E>,
) -> Result<T, E> {
    let h = out.len();
    out.extend_from_slice(&[0u8; record::HEADER_LEN]);
    let res = fill(out);
    let n = out.len() - h - record::HEADER_LEN;
    if n == 0 {
        out.truncate(h);
    } else if n > record::MAX_STREAM_CHUNK {
        let data = out.split_off(h + record::HEADER_LEN);
        out.truncate(h);
        record::push_stream(out, rtype::STDIN, REQUEST_ID, &data);
    } else {
        let (hdr, pad) = record::stream_header(rtype::STDIN, REQUEST_ID, n);
        out[h..h + record::HEADER_LEN].copy_from_slice(&hdr);
        out.resize(out.len() + pad, 0);
    }
    res
}

/// Whether the end of the request body just read is the client giving up rather than the end
/// of what it sent. An HTTP/2 client that resets its stream (a cancelled upload) makes
/// mod_http2 end the stream's input as if the body were complete; only the aborted secondary
/// connection tells the two apart. Such a body must never reach the application as a whole
/// request: a cut upload would be stored as if it were the file.
fn body_cut(r: &Request<'_>, server: &str) -> bool {
    if !r.connection_aborted() {
        return false;
    }
    rlog!(
        r,
        INFO,
        0,
        60,
        "FastCGI: client stopped connection before the request body was read (server \"{server}\"): the body it sent is not passed on"
    );
    true
}

fn body_read_failed(r: &mut Request<'_>, rv: ffi::apr_status_t, server: &str) -> Fail {
    if r.connection_aborted() {
        rlog!(
            r,
            INFO,
            rv,
            60,
            "FastCGI: client stopped connection before the request body was read (server \"{server}\")"
        );
        return Fail::ClientGone;
    }
    let status = Request::body_error_status(rv);
    if status == ffi::AP_FILTER_ERROR {
        rlog!(
            r,
            INFO,
            rv,
            61,
            "FastCGI: reading the request body for server \"{server}\" failed; httpd's input filter already answered (e.g. 413 for LimitRequestBody)"
        );
    } else {
        rlog!(
            r,
            INFO,
            rv,
            61,
            "FastCGI: reading the request body for server \"{server}\" failed; answering {status}"
        );
    }
    Fail::Status(status)
}

fn spool_body<'r>(
    r: &mut Request<'r>,
    bb: &mut Brigade<'r>,
    server: &str,
) -> Result<(Spool, u64), Fail> {
    let mut mem: Vec<u8> = Vec::new();
    let mut file: Option<std::fs::File> = None;
    let mut total: u64 = 0;
    loop {
        let mut piece = Vec::new();
        read_client_body(r, bb, BODY_STEP, server)?;
        let eos = drain_body(r, bb, &mut piece, server)?;
        total += piece.len() as u64;
        if let Some(f) = file.as_mut() {
            f.write_all(&piece)
                .map_err(|e| spool_failed(r, e, server))?;
        } else {
            mem.extend_from_slice(&piece);
            if mem.len() > SPOOL_IN_MEMORY {
                let mut f = temp_file().map_err(|e| spool_failed(r, e, server))?;
                f.write_all(&mem).map_err(|e| spool_failed(r, e, server))?;
                mem = Vec::new();
                file = Some(f);
            }
        }
        if eos {
            if r.on_secondary_connection() {
                // mod_http2 ends a reset stream's input before it marks the stream's
                // connection aborted (about 0.1 ms apart when idle): a body without a length
                // that ended at a reset looks complete until then. HTTP/2 uploads without a
                // length are rare, and this one is buffered whole anyway.
                let t0 = Instant::now();
                while !r.connection_aborted() && t0.elapsed() < H2_RESET_GRACE {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            if body_cut(r, server) {
                return Err(Fail::ClientGone);
            }
            break;
        }
    }
    match file {
        Some(mut f) => {
            f.seek(SeekFrom::Start(0))
                .map_err(|e| spool_failed(r, e, server))?;
            Ok((Spool::File(f), total))
        }
        None => Ok((Spool::Mem(mem, 0), total)),
    }
}

fn spool_failed(r: &Request<'_>, e: io::Error, server: &str) -> Fail {
    rlog!(
        r,
        ERR,
        e.raw_os_error().unwrap_or(0),
        62,
        "FastCGI: cannot spool the request body for server \"{server}\" to a temporary file: {e}"
    );
    Fail::Status(ffi::HTTP_INTERNAL_SERVER_ERROR)
}

fn is_peer_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPIPE) | Some(libc::ECONNRESET))
}

/// What `apply_head` found in a response header block.
struct Applied {
    /// How the body is to be handled.
    mode: Mode,
    /// The body length the application declared, when it is kept (`ap_trust_cgilike_cl`).
    declared: Option<u64>,
    /// `X-Accel-Buffering: no`: the application asks for its output unbuffered.
    unbuffered: bool,
}

/// A header block whose Status is 1xx (but 101): its headers go out as that interim
/// response (PHP's `header('Status: 103 Early Hints')` with `Link` headers), and the response
/// goes on as a 200 with the same headers and the body that follows. CGI has one header block
/// per response, so a 1xx cannot be the final status: sent as one, the client would read the
/// body as the next response.
fn send_interim(r: &mut Request<'_>, head: &Head<'_>, code: u16) {
    let line = head.status_line.as_deref();
    r.send_interim(code, line, |t| {
        head.for_each_header(|name, value| {
            let framing = name.eq_ignore_ascii_case(b"content-length")
                || name.eq_ignore_ascii_case(b"transfer-encoding")
                || name.eq_ignore_ascii_case(b"set-cookie");
            if !framing {
                t.add(name, value);
            }
        });
    });
}

/// Applies a response header block to the request.
fn apply_head(r: &mut Request<'_>, head: &Head<'_>, server: &str) -> Applied {
    // A 1xx was sent as an interim response (send_interim): the final status is 200.
    let final_status = head.status.filter(|&c| c >= 200);
    if let Some(code) = final_status {
        r.set_status(code, head.status_line.as_deref());
    }
    if let Some(ct) = &head.content_type {
        r.set_content_type(ct);
    }
    let plain = final_status.is_none() || final_status == Some(200);
    let mut mode = Mode::Body;
    if let Some(loc) = &head.location {
        if plain && loc.starts_with(b"/") {
            mode = Mode::LocalRedirect(loc.to_vec());
        } else {
            r.headers_out().set(b"Location", loc);
            if plain {
                mode = Mode::ExternalRedirect;
            }
        }
    }
    // The application's Content-Length is dropped (CVE-2024-24795 class: httpd frames the
    // body it actually gets) unless the request carries `ap_trust_cgilike_cl`, httpd's own
    // switch for mod_cgi and mod_proxy_fcgi since 2.4.59. Kept, it is enforced: the body is
    // cut at that length and a shorter body fails the response (see `Exchange::complete`).
    // An answer to HEAD has no body for a length to misframe, so there it is kept too: the
    // client learns the size of what GET would send (a download's), as from mod_php.
    let trust = r.header_only() || r.subprocess_env().get(c"ap_trust_cgilike_cl").is_some();
    let mut lengths: Vec<Vec<u8>> = Vec::new();
    let mut unbuffered = false;
    let (out, err_out) = (r.headers_out(), r.err_headers_out());
    head.for_each_header(|name, value| {
        // nginx's per-response switch, which frameworks send with streamed responses
        // (server-sent events, progress output): flush every piece, as -flush does. The header
        // itself goes on to the client, as every other one.
        if name.eq_ignore_ascii_case(b"x-accel-buffering") {
            unbuffered = value.trim_ascii().eq_ignore_ascii_case(b"no");
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            if trust {
                lengths.push(value.to_vec());
            }
            return;
        }
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Never trusted: the FastCGI records frame the body.
            return;
        }
        if name.eq_ignore_ascii_case(b"set-cookie") {
            err_out.add(name, value);
        } else {
            out.add(name, value);
        }
    });
    let mut declared = None;
    match crate::fcgi::headers::declared_length(lengths.iter().map(Vec::as_slice)) {
        Ok(Some(n)) if mode == Mode::Body => {
            out.set(b"Content-Length", n.to_string().as_bytes());
            declared = Some(n);
        }
        Ok(_) => {}
        Err(bad) => rlog!(
            r,
            WARNING,
            0,
            36,
            "FastCGI: server \"{server}\" sent an invalid or conflicting Content-Length \"{}\"; it is not passed on",
            crate::fcgi::headers::escape_lossy(&bad)
        ),
    }
    Applied {
        mode,
        declared,
        unbuffered,
    }
}

impl<'r, 'd> Exchange<'r, 'd> {
    fn idle(&self) -> Duration {
        Duration::from_secs(u64::from(self.def.idle_timeout))
    }

    fn idle_timed_out(&self, r: &Request<'_>, server: &str) -> Fail {
        rlog!(
            r,
            ERR,
            0,
            20,
            "FastCGI: comm with server \"{server}\" aborted: idle timeout ({} sec)",
            self.def.idle_timeout
        );
        Fail::Status(ffi::HTTP_GATEWAY_TIME_OUT)
    }

    /// Drives the exchange until END_REQUEST (Ok) or a failure (already logged).
    fn run(&mut self, r: &mut Request<'r>, server: &str) -> Result<(), Fail> {
        let Some(mut rbuf) = ShareBuf::new(&self.bb) else {
            rlog!(
                r,
                ERR,
                0,
                21,
                "FastCGI: comm with server \"{server}\" aborted: no bucket allocator"
            );
            return Err(Fail::Status(ffi::HTTP_INTERNAL_SERVER_ERROR));
        };
        let mut last_activity = Instant::now();
        let started = last_activity;
        // A new or pooled connection is almost always writable: send the request head at once
        // instead of polling first.
        match self.send_queued() {
            Ok(_) => self.acked_promptly = false,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if self.replayable_reset(&e) => return Err(Fail::Retry),
            Err(e) if is_peer_gone(&e) => self.stdin_broken = true,
            Err(e) => {
                rlog!(
                    r,
                    ERR,
                    e.raw_os_error().unwrap_or(0),
                    22,
                    "FastCGI: comm with server \"{server}\" aborted: write failed: {e}"
                );
                return Err(Fail::Status(ffi::HTTP_BAD_GATEWAY));
            }
        }
        while !self.ended {
            let want_write = !self.stdin_broken && (!self.all_sent() || !self.stdin_done);
            let idle_left = self.idle().saturating_sub(last_activity.elapsed());
            let mut wait = if self.unflushed {
                idle_left.min(FLUSH_AFTER_SILENCE)
            } else {
                idle_left
            };
            let mut stall_pending = !self.stall_marked
                && !self.taken
                && self.received == 0
                && !self.conn.reused
                && self.rt.guards_stalls();
            if stall_pending {
                let since = started.elapsed();
                if self.next_ask.is_some_and(|t| since >= t) {
                    // No answer yet: is the request still in the application's backlog
                    // (possibly behind processes held by idle connections elsewhere)?
                    match self.conn.request_untouched(self.sent_total) {
                        // One process of the application is asked for, now. Still there
                        // ASK_AGAIN later: another one (the process freed for us took an older
                        // connection of the backlog, or the one asked had no idle connection
                        // left and frees one only when its request ends).
                        Some(true) => {
                            if !self.asked {
                                self.rt.stats().backlogged.fetch_add(1, Ordering::Relaxed);
                            }
                            self.rt.ask_release(true);
                            self.asked = true;
                            self.next_ask = Some(since + ASK_AGAIN);
                        }
                        Some(false) => self.taken = true,
                        None => self.next_ask = None,
                    }
                }
                if self.taken {
                    stall_pending = false;
                } else if since >= self.rt.stall_after() {
                    // Still not taken (or the kernel cannot tell) after stall_after(): tell
                    // every child to stop keeping idle connections until we are served.
                    if self.conn.request_untouched(self.sent_total) == Some(false) {
                        self.taken = true;
                        stall_pending = false;
                    } else {
                        self.rt.stats().stalled.fetch_add(1, Ordering::Relaxed);
                        self.rt.set_waiting(true);
                        self.stall_marked = true;
                    }
                } else {
                    let stall = self.rt.stall_after();
                    let next = self.next_ask.map_or(stall, |t| t.min(stall));
                    wait = wait.min(next.saturating_sub(since));
                }
            }
            // Nothing to send, nothing to flush, no stall to watch for: a pooled connection
            // waits for the answer in the receive itself (its receive timeout is LOOK_AFTER),
            // one system call instead of a poll and a receive.
            let in_recv = self.conn.can_wait_in_recv()
                && !self.recv_timed_out
                && !want_write
                && !self.unflushed
                && !stall_pending;
            // Has the application read the request yet? (A request watched for a stall is
            // looked at above.)
            if !stall_pending
                && !self.taken
                && self.received == 0
                && let Some(at) = self.next_look
            {
                let since = started.elapsed();
                if since >= at {
                    self.look_if_taken(since);
                } else if !in_recv {
                    wait = wait.min(at - since);
                }
            }
            let ready = if in_recv {
                Ok(Some(sock::Ready {
                    readable: true,
                    writable: false,
                    broken: false,
                }))
            } else {
                self.conn.wait(want_write, wait)
            };
            let ready = match ready {
                Ok(r) => r,
                Err(e) => {
                    rlog!(
                        r,
                        ERR,
                        e.raw_os_error().unwrap_or(0),
                        21,
                        "FastCGI: comm with server \"{server}\" aborted: poll failed: {e}"
                    );
                    return Err(Fail::Status(ffi::HTTP_BAD_GATEWAY));
                }
            };
            let Some(ready) = ready else {
                if self.unflushed {
                    self.bb.push_flush();
                    self.pass(r, server)?;
                    self.unflushed = false;
                    last_activity = Instant::now();
                    continue;
                }
                if last_activity.elapsed() >= self.idle() {
                    return Err(self.idle_timed_out(r, server));
                }
                continue;
            };
            if ready.readable || ready.broken {
                let got = if in_recv {
                    self.conn.recv_share_wait(&mut rbuf)
                } else {
                    self.conn.recv_share(&mut rbuf)
                };
                match got {
                    Ok(0) => return self.on_eof(r, server),
                    Ok(n) => {
                        last_activity = Instant::now();
                        self.received += n as u64;
                        self.unmark_stall();
                        let data = rbuf.filled();
                        self.read_span = (data.as_ptr() as usize, data.len());
                        self.pieces.clear();
                        self.piece_bytes = 0;
                        self.on_bytes(r, data, server)?;
                        self.flush_pieces(&mut rbuf);
                        // No block is held while waiting for the next data.
                        rbuf.park();
                        if !self.ended && !self.acked_promptly {
                            // More is coming: see Conn::ack_promptly (TCP delayed ACKs).
                            self.conn.ack_promptly();
                            self.acked_promptly = true;
                        }
                        // When the response just ended, complete() sends the rest together with
                        // the end of stream: one write, and httpd can frame it with a
                        // Content-Length instead of chunks.
                        if !self.bb.is_empty() && !self.ended {
                            if self.flush_each {
                                self.bb.push_flush();
                                self.unflushed = false;
                            } else {
                                self.unflushed = true;
                            }
                            self.pass(r, server)?;
                            // Time spent waiting for a slow client is not backend inactivity.
                            last_activity = Instant::now();
                        }
                        continue;
                    }
                    // The receive waited its timeout (LOOK_AFTER): look at the request, then
                    // wait by poll for the rest of the idle timeout.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock && in_recv => {
                        if last_activity.elapsed() >= self.idle() {
                            return Err(self.idle_timed_out(r, server));
                        }
                        self.recv_timed_out = true;
                        rbuf.park();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => rbuf.park(),
                    Err(e) if self.replayable_reset(&e) => return Err(Fail::Retry),
                    Err(e) => {
                        rlog!(
                            r,
                            ERR,
                            e.raw_os_error().unwrap_or(0),
                            21,
                            "FastCGI: comm with server \"{server}\" aborted: read failed: {e}"
                        );
                        return Err(Fail::Status(ffi::HTTP_BAD_GATEWAY));
                    }
                }
            }
            if ready.writable && want_write {
                if self.all_sent() {
                    self.out.clear();
                    self.out_pos = 0;
                    if self.in_place.len > 0 || self.in_place.tail_len > 0 {
                        self.in_place = InPlace::default();
                        self.body_in.cleanup();
                    }
                    self.refill(r, server)?;
                    last_activity = Instant::now();
                }
                if !self.all_sent() {
                    match self.send_queued() {
                        Ok(_) => {
                            self.acked_promptly = false;
                            last_activity = Instant::now();
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) if is_peer_gone(&e) => {
                            // The application stopped reading; its answer may still be there.
                            rlog!(
                                r,
                                DEBUG,
                                e.raw_os_error().unwrap_or(0),
                                22,
                                "FastCGI: server \"{server}\" closed its input before the request body was sent"
                            );
                            self.stdin_broken = true;
                        }
                        Err(e) => {
                            rlog!(
                                r,
                                ERR,
                                e.raw_os_error().unwrap_or(0),
                                22,
                                "FastCGI: comm with server \"{server}\" aborted: write failed: {e}"
                            );
                            return Err(Fail::Status(ffi::HTTP_BAD_GATEWAY));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Queues the next piece of the request body as STDIN records.
    fn refill(&mut self, r: &mut Request<'r>, server: &str) -> Result<(), Fail> {
        match &mut self.source {
            BodySource::Done => {
                if !self.stdin_done {
                    record::push_stream_end(&mut self.out, rtype::STDIN, REQUEST_ID);
                    self.stdin_done = true;
                }
            }
            BodySource::Client => {
                self.consumed_client = true;
                read_client_body(r, &mut self.body_in, BODY_STEP, server)?;
                let eos = frame_piece(
                    r,
                    &mut self.body_in,
                    &mut self.out,
                    &mut self.in_place,
                    server,
                )?;
                if eos {
                    self.source = BodySource::Done;
                    self.stdin_done = true;
                }
            }
            BodySource::Spool(sp) => {
                let n = push_stdin_with(&mut self.out, |out| {
                    let at = out.len();
                    out.resize(at + BODY_STEP, 0);
                    let got = sp.read_into(&mut out[at..]);
                    out.truncate(at + *got.as_ref().unwrap_or(&0));
                    got
                })
                .map_err(|e| spool_failed(r, e, server))?;
                if n == 0 {
                    // The spool stays: a replay on a fresh connection rewinds it.
                    record::push_stream_end(&mut self.out, rtype::STDIN, REQUEST_ID);
                    self.stdin_done = true;
                }
            }
        }
        Ok(())
    }

    fn on_bytes(&mut self, r: &mut Request<'r>, mut data: &[u8], server: &str) -> Result<(), Fail> {
        while !data.is_empty() {
            let (used, ev) = match self.dec.decode(data) {
                Ok(x) => x,
                Err(e) => {
                    rlog!(
                        r,
                        ERR,
                        0,
                        32,
                        "FastCGI: comm with server \"{server}\" aborted: protocol error: {e}"
                    );
                    return Err(Fail::Status(ffi::HTTP_BAD_GATEWAY));
                }
            };
            data = &data[used..];
            match ev {
                Some(Event::Stdout(d)) => self.on_stdout(r, d, server)?,
                Some(Event::Stderr(d)) => self.on_stderr(r, d, server),
                Some(Event::StdoutEnd) => {}
                Some(Event::EndRequest {
                    app_status,
                    protocol_status,
                }) => {
                    if protocol_status != record::protocol_status::REQUEST_COMPLETE {
                        let (why, status) = refusal(protocol_status);
                        rlog!(
                            r,
                            ERR,
                            0,
                            33,
                            "FastCGI: comm with server \"{server}\" aborted: {why} (FCGI_END_REQUEST protocol status {protocol_status}, app status {app_status})"
                        );
                        return Err(Fail::Status(status));
                    }
                    self.ended = true;
                    if !data.is_empty() {
                        self.trailing = true;
                        rlog!(
                            r,
                            ERR,
                            0,
                            32,
                            "FastCGI: comm with server \"{server}\" aborted: protocol error: {} bytes after FCGI_END_REQUEST",
                            data.len()
                        );
                        // The response itself is complete; only the connection is unusable.
                    }
                    return Ok(());
                }
                None => {
                    if used == 0 {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    fn on_stdout(&mut self, r: &mut Request<'r>, d: &[u8], server: &str) -> Result<(), Fail> {
        match self.mode {
            Mode::Headers => match self.scanner.0.feed(d) {
                Ok(Feed::NeedMore) => Ok(()),
                Ok(Feed::Done { body_offset }) => {
                    let mode = match (self.scanner.0.head(), self.answer.as_mut()) {
                        (Ok(head), Some(a)) => {
                            a.status = head.status.unwrap_or(200);
                            a.location = head.location.is_some();
                            if let Some(ct) = &head.content_type {
                                a.headers.push((b"Content-Type".to_vec(), ct.to_vec()));
                            }
                            head.for_each_header(|n, v| a.headers.push((n.to_vec(), v.to_vec())));
                            Mode::Auth
                        }
                        (Ok(head), None) => {
                            if let Some(code @ 100..=199) = head.status {
                                if code == 101 {
                                    return Err(self.header_error(
                                        r,
                                        "Status 101 (a protocol switch) cannot be answered through FastCGI",
                                        server,
                                    ));
                                }
                                send_interim(r, &head, code);
                            }
                            let applied = apply_head(r, &head, server);
                            self.declared = applied.declared;
                            if applied.unbuffered {
                                self.flush_each = true;
                            }
                            applied.mode
                        }
                        (Err(e), _) => return Err(self.header_error(r, &e.to_string(), server)),
                    };
                    self.mode = mode;
                    let rest = d.get(body_offset..).unwrap_or(b"");
                    self.on_body(r, rest);
                    Ok(())
                }
                Err(e) => Err(self.header_error(r, &e.to_string(), server)),
            },
            _ => {
                self.on_body(r, d);
                Ok(())
            }
        }
    }

    fn header_error(&self, r: &Request<'_>, what: &str, server: &str) -> Fail {
        rlog!(
            r,
            ERR,
            0,
            31,
            "FastCGI: comm with server \"{server}\" aborted: error parsing headers: {what}"
        );
        Fail::Status(ffi::HTTP_BAD_GATEWAY)
    }

    fn on_body(&mut self, r: &Request<'r>, d: &[u8]) {
        if d.is_empty() || r.header_only() {
            return;
        }
        if matches!(self.mode, Mode::Body | Mode::Nph) {
            let mut d = d;
            // (`declared` is only ever set for Mode::Body.) Never more than the Content-Length
            // passed on: the rest would be read by the client as the start of the next response.
            if let Some(n) = self.declared {
                let room = usize::try_from(n - self.body_seen).unwrap_or(usize::MAX);
                if d.len() > room {
                    self.excess += (d.len() - room) as u64;
                    d = &d[..room];
                    if d.is_empty() {
                        return;
                    }
                }
                self.body_seen += d.len() as u64;
            }
            let (base, len) = self.read_span;
            let at = d.as_ptr() as usize;
            if at >= base && at + d.len() <= base + len {
                self.pieces.push(Piece::At(at - base, d.len()));
            } else {
                self.pieces.push(Piece::Bytes(d.to_vec()));
            }
            self.piece_bytes += d.len();
        }
    }

    /// Appends the body pieces of the last read to the brigade: a large amount as buckets
    /// sharing the read buffer (no copy; the next read gets a new buffer), a small one copied.
    fn flush_pieces(&mut self, rbuf: &mut ShareBuf<'r>) {
        if self.pieces.is_empty() {
            return;
        }
        let all_ranges = self.pieces.iter().all(|p| matches!(p, Piece::At(..)));
        if all_ranges && self.piece_bytes >= SHARE_MIN {
            let ranges = self.pieces.iter().filter_map(|p| match p {
                Piece::At(o, n) => Some((*o, *n)),
                Piece::Bytes(_) => None,
            });
            rbuf.hand_over(&mut self.bb, ranges);
        } else {
            let data = rbuf.filled();
            for p in self.pieces.iter() {
                match p {
                    Piece::At(o, n) => self.bb.write(data.get(*o..*o + *n).unwrap_or(b"")),
                    Piece::Bytes(b) => self.bb.write(b),
                }
            }
        }
        self.pieces.clear();
        self.piece_bytes = 0;
    }

    fn on_stderr(&mut self, r: &Request<'_>, d: &[u8], server: &str) {
        for &c in d {
            match c {
                b'\n' | b'\r' => self.log_stderr_line(r, server),
                0 => {}
                c => {
                    self.stderr.push(c);
                    if self.stderr.len() >= STDERR_LINE_MAX {
                        self.log_stderr_line(r, server);
                    }
                }
            }
        }
    }

    fn log_stderr_line(&mut self, r: &Request<'_>, server: &str) {
        if self.stderr.is_empty() {
            return;
        }
        let mut line = String::with_capacity(self.stderr.len());
        for chunk in self.stderr.utf8_chunks() {
            for ch in chunk.valid().chars() {
                if ch.is_control() && ch != '\t' {
                    line.push_str(&format!("\\x{:02x}", ch as u32));
                } else {
                    line.push(ch);
                }
            }
            for b in chunk.invalid() {
                line.push_str(&format!("\\x{b:02x}"));
            }
        }
        rlog!(r, ERR, 0, 40, "FastCGI: server \"{server}\" stderr: {line}");
        self.stderr.clear();
    }

    fn flush_stderr(&mut self, r: &Request<'_>, server: &str) {
        self.log_stderr_line(r, server);
    }

    fn pass(&mut self, r: &mut Request<'r>, server: &str) -> Result<(), Fail> {
        self.sent_any = true;
        if r.pass(&mut self.bb).is_err() || r.connection_aborted() {
            rlog!(
                r,
                INFO,
                0,
                60,
                "FastCGI: client stopped connection before send body completed (server \"{server}\")"
            );
            return Err(Fail::ClientGone);
        }
        Ok(())
    }

    /// Nothing of the response arrived and the request can be sent again as it was.
    fn replayable(&self) -> bool {
        self.conn.reused && self.nothing_exchanged()
    }

    /// No response byte arrived, no request body was taken from the client, and the
    /// application was not seen reading the request (see LOOK_AFTER).
    fn nothing_exchanged(&self) -> bool {
        self.received == 0 && !self.consumed_client && !self.taken
    }

    /// Asks the kernel whether the application read the request (`taken`); if not yet, looks
    /// again after twice the time.
    fn look_if_taken(&mut self, since: Duration) {
        self.next_look = match self.conn.request_untouched(self.sent_total) {
            Some(false) => {
                self.taken = true;
                None
            }
            Some(true) => Some(since * 2),
            None => None,
        };
    }

    /// A reset (or a write to a closed peer) before any response byte, the application not
    /// seen reading the request. On a pooled connection this is the idle-close race. On a new
    /// one, the application closed the connection with part of the request unread —
    /// typically a php-fpm worker told to stop (reload) right after accepting it; idempotent
    /// requests are replayed once. (php-fpm leaves the request's last record unread while the
    /// script runs, so a worker killed mid-script resets the connection too: such a request
    /// was seen read by then, unless it failed within LOOK_AFTER.) A clean EOF on a new
    /// connection is never replayed: the application may have read and acted on the request.
    fn replayable_reset(&self, e: &io::Error) -> bool {
        is_peer_gone(e) && (self.conn.reused || self.retry_on_reset) && self.nothing_exchanged()
    }

    fn unmark_stall(&mut self) {
        if self.stall_marked {
            self.stall_marked = false;
            self.rt.set_waiting(false);
        }
    }

    /// The connection may go back to the pool: the request ended cleanly with every record
    /// consumed and the whole request body sent.
    fn reusable(&self) -> bool {
        self.rt.keep_conn()
            && self.ended
            && !self.trailing
            && self.dec.at_record_boundary()
            && self.stdin_done
            && !self.stdin_broken
            && self.all_sent()
    }

    /// Everything queued (`out`, then the body piece in place) was sent.
    fn all_sent(&self) -> bool {
        self.out_pos >= self.out.len() && self.in_place.done()
    }

    /// Sends what is queued, in one system call: the rest of `out`, then the rest of the body
    /// piece in `body_in` and its tail.
    fn send_queued(&mut self) -> io::Result<usize> {
        let head = self.out.get(self.out_pos..).unwrap_or(&[]);
        let ip = self.in_place;
        let tail = &ip.tail[ip.tail_sent.min(ip.tail_len)..ip.tail_len];
        let conn = &self.conn;
        let n = if ip.sent < ip.len {
            self.body_in
                .with_data::<IN_PLACE_PARTS, _>(|parts| {
                    let mut bufs: [&[u8]; IN_PLACE_PARTS + 2] = [&[]; IN_PLACE_PARTS + 2];
                    bufs[0] = head;
                    let mut k = 1;
                    let mut skip = ip.sent;
                    for p in parts {
                        if skip >= p.len() {
                            skip -= p.len();
                            continue;
                        }
                        bufs[k] = &p[skip..];
                        skip = 0;
                        k += 1;
                    }
                    bufs[k] = tail;
                    conn.sendv(&bufs[..=k])
                })
                .unwrap_or_else(|| Err(io::Error::other("request body buckets changed")))?
        } else {
            conn.sendv(&[head, tail])?
        };
        self.sent_total += n as u64;
        let mut left = n;
        let a = left.min(head.len());
        self.out_pos += a;
        left -= a;
        let b = left.min(ip.len - ip.sent);
        self.in_place.sent += b;
        left -= b;
        self.in_place.tail_sent += left;
        Ok(n)
    }

    fn log_incomplete_headers(&self, r: &Request<'_>, server: &str) {
        rlog!(
            r,
            ERR,
            0,
            30,
            "FastCGI: incomplete headers ({} bytes) received from server \"{server}\"",
            self.scanner.0.buffered_len()
        );
    }

    fn on_eof(&mut self, r: &mut Request<'r>, server: &str) -> Result<(), Fail> {
        if self.replayable() {
            return Err(Fail::Retry);
        }
        if self.mode == Mode::Headers {
            self.log_incomplete_headers(r, server);
        } else {
            rlog!(
                r,
                ERR,
                0,
                23,
                "FastCGI: comm with server \"{server}\" aborted: connection closed before FCGI_END_REQUEST"
            );
        }
        Err(Fail::Status(ffi::HTTP_BAD_GATEWAY))
    }

    /// END_REQUEST received: finish the response.
    fn complete(mut self, r: &mut Request<'r>) -> c_int {
        let server = String::from_utf8_lossy(&self.def.path);
        self.unmark_stall();
        if self.mode == Mode::Headers {
            self.log_incomplete_headers(r, &server);
            return self.fail(r, Fail::Status(ffi::HTTP_BAD_GATEWAY));
        }
        if self.excess > 0 {
            rlog!(
                r,
                WARNING,
                0,
                35,
                "FastCGI: server \"{server}\" sent {} bytes more than its Content-Length ({}); they were not sent to the client",
                self.excess,
                self.declared.unwrap_or(0)
            );
        }
        if let Some(n) = self.declared
            && self.body_seen < n
            && !r.header_only()
            && !matches!(r.status(), 204 | 304)
        {
            rlog!(
                r,
                ERR,
                0,
                34,
                "FastCGI: comm with server \"{server}\" aborted: the response ended after {} of the {n} bytes its Content-Length announced",
                self.body_seen
            );
            if self.sent_any {
                // The response has begun: what did arrive goes out before the abort.
                let _ = r.pass(&mut self.bb);
            }
            return self.fail(r, Fail::Status(ffi::HTTP_BAD_GATEWAY));
        }
        let reusable = self.reusable();
        let Exchange {
            conn,
            rt,
            mut bb,
            mode,
            ..
        } = self;
        // Hand the connection back before talking to the (possibly slow) client.
        if reusable {
            rt.checkin(conn);
        } else {
            drop(conn);
        }
        match mode {
            Mode::LocalRedirect(loc) => {
                r.discard_body();
                r.make_get_without_body();
                r.internal_redirect(&loc);
                ffi::OK
            }
            Mode::ExternalRedirect => {
                r.discard_body();
                ffi::HTTP_MOVED_TEMPORARILY
            }
            // An authorizer's answer is applied by run_authorizer; nothing goes to the client.
            Mode::Auth => ffi::OK,
            Mode::Headers | Mode::Body | Mode::Nph => {
                bb.push_eos();
                if r.pass(&mut bb).is_err() {
                    rt.stats().client_aborts.fetch_add(1, Ordering::Relaxed);
                    rlog!(
                        r,
                        INFO,
                        0,
                        60,
                        "FastCGI: client stopped connection before send body completed (server \"{server}\")"
                    );
                }
                ffi::OK
            }
        }
    }

    fn fail(self, r: &mut Request<'r>, f: Fail) -> c_int {
        let mut x = self;
        x.unmark_stall();
        let Exchange {
            conn,
            mut bb,
            sent_any,
            ..
        } = x;
        drop(conn);
        let stats = x.rt.stats();
        match f {
            Fail::ClientGone => stats.client_aborts.fetch_add(1, Ordering::Relaxed),
            Fail::Status(_) | Fail::Retry => stats.failures.fetch_add(1, Ordering::Relaxed),
        };
        match f {
            Fail::ClientGone | Fail::Retry => ffi::OK,
            Fail::Status(status) if !sent_any => {
                r.close_connection();
                r.headers_out().clear();
                r.err_headers_out().clear();
                status
            }
            Fail::Status(_) => {
                // The response has begun: make it visibly incomplete (no final chunk, connection
                // closed) instead of pretending it ended.
                bb.cleanup();
                // 502 is the status httpd's chunk filter recognises as "backend broke": it then
                // omits the terminating chunk and closes the connection (whatever the cause).
                bb.push_error(ffi::HTTP_BAD_GATEWAY, r.pool());
                bb.push_eos();
                let _ = r.pass(&mut bb);
                r.close_connection();
                ffi::OK
            }
        }
    }
}

/// What an FCGI_END_REQUEST that did not complete the request says, and the status for it:
/// an application that refuses work because it is overloaded is unavailable (503, as a full
/// backlog is); the other refusals (a role it does not take, a second request on a connection
/// it does not multiplex, a status the protocol does not define) are a bad gateway.
fn refusal(protocol_status: u8) -> (&'static str, c_int) {
    use record::protocol_status as ps;
    match protocol_status {
        ps::OVERLOADED => (
            "the application refused the request: overloaded (FCGI_OVERLOADED)",
            ffi::HTTP_SERVICE_UNAVAILABLE,
        ),
        ps::UNKNOWN_ROLE => (
            "the application refused the request: it does not take this role (FCGI_UNKNOWN_ROLE)",
            ffi::HTTP_BAD_GATEWAY,
        ),
        ps::CANT_MPX_CONN => (
            "the application refused the request: it takes one request per connection at a time (FCGI_CANT_MPX_CONN)",
            ffi::HTTP_BAD_GATEWAY,
        ),
        _ => (
            "protocol error: invalid FCGI_END_REQUEST status",
            ffi::HTTP_BAD_GATEWAY,
        ),
    }
}
