//! `FastCgiExternalServer` definitions: option parsing and validation (the messages
//! `apachectl -t` prints), and the process-wide registry that routes filenames to servers.
//! Pure Rust, no httpd types: unit-tested directly.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Where a backend listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A unix-domain socket path.
    Unix(Vec<u8>),
    /// A TCP address.
    Inet(SocketAddr),
}

/// Longest unix socket path (sun_path is 108 bytes on Linux, one is the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;
/// Default `-idle-timeout` (seconds), as mod_fastcgi.
pub const DEFAULT_IDLE_TIMEOUT: u32 = 30;
/// Default `-pool-idle-timeout` (seconds).
pub const DEFAULT_POOL_IDLE_TIMEOUT: u32 = 5;
/// Default `-connect-retry` (seconds): covers a php-fpm restart (about 0.1-0.3 s down) with room.
pub const DEFAULT_CONNECT_RETRY: u32 = 1;

/// A `-pass-header` request header, ready for the handler (looked up and renamed without any
/// work per request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassHeader {
    /// The header name as written (a token: no NUL).
    pub name: std::ffi::CString,
    /// Its CGI variable: `HTTP_` + the name upper-cased, other characters than letters and
    /// digits as `_` (what httpd does for every other request header).
    pub env: Vec<u8>,
}

impl PassHeader {
    #[cold]
    pub fn new(name: &str) -> Self {
        let mut env = b"HTTP_".to_vec();
        env.extend(name.bytes().map(|c| match c {
            c if c.is_ascii_alphanumeric() => c.to_ascii_uppercase(),
            _ => b'_',
        }));
        PassHeader {
            name: std::ffi::CString::new(name.replace('\0', "")).unwrap_or_default(),
            env,
        }
    }
}

/// One `FastCgiExternalServer` line, parsed and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerDef {
    /// The virtual path, absolute and normalised (no `.`/`..`/`//`, no trailing `/`).
    pub path: Vec<u8>,
    /// Where the application listens: one unix socket, or the TCP addresses `-host` resolved to
    /// (tried in order).
    pub targets: Vec<Target>,
    /// `-host`/`-socket` as written, for log lines.
    pub address_text: String,
    /// `-appConnTimeout`; `None` (0) means httpd's `Timeout`.
    pub connect_timeout: Option<Duration>,
    /// `-idle-timeout` in seconds (≥ 1).
    pub idle_timeout: u32,
    pub flush: bool,
    pub nph: bool,
    /// `-pass-header` names, as written, with their CGI variable names.
    pub pass_headers: Vec<PassHeader>,
    pub user: Option<String>,
    pub group: Option<String>,
    /// `-keep-conn on|off`: reuse connections (FCGI_KEEP_CONN) through the per-child pool.
    /// Default: on when `-max-conns` is set (the pool then knows what the application can
    /// serve), off otherwise (one connection per request, as mod_fastcgi).
    pub keep_conn: bool,
    /// `-max-conns n`: most connections the whole Apache instance opens to this server at once
    /// (0 = no cap; the starvation guard still releases idle connections when others wait).
    pub max_conns: u32,
    /// `-pool-idle-timeout n`: seconds an unused pooled connection is kept.
    pub pool_idle_timeout: u32,
    /// `-connect-retry n`: for up to n seconds after the application began refusing
    /// connections (not listening: restarting), requests keep trying to connect instead of
    /// failing; 0 fails at once, as mod_fastcgi.
    pub connect_retry: u32,
    /// `-trust-direct`: requests the client sends straight to the virtual path's URL get
    /// PATH_TRANSLATED like redirected ones (mod_fastcgi's behaviour). Off by default.
    pub trust_direct: bool,
    /// `-request-buffering on|off`: read every request body whole (spooled, as chunked ones
    /// always are) before connecting, so that no upload holds an application process while
    /// the client sends it. Off by default: bodies over 64 KiB stream after their first 16 KiB.
    pub request_buffering: bool,
}

/// An on/off option value (`on`/`off`, or yes/no, true/false, 1/0).
#[cold]
fn on_off(name: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "on" | "yes" | "true" | "1" => Ok(true),
        "off" | "no" | "false" | "0" => Ok(false),
        _ => Err(format!(
            "invalid value for {name}: \"{v}\" must be on or off"
        )),
    }
}

#[cold]
fn display(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Makes `p` absolute against `root` and removes `.`, `..`, empty segments and any trailing `/`.
#[cold]
pub fn normalize_path(p: &[u8], root: &[u8]) -> Vec<u8> {
    let mut joined = Vec::with_capacity(root.len() + p.len() + 1);
    if !p.starts_with(b"/") {
        joined.extend_from_slice(root);
        joined.push(b'/');
    }
    joined.extend_from_slice(p);
    let mut segs: Vec<&[u8]> = Vec::new();
    for s in joined.split(|&c| c == b'/') {
        match s {
            b"" | b"." => {}
            b".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    let mut out = Vec::with_capacity(joined.len());
    for s in segs {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

/// Context the parser needs from httpd.
pub struct ParseCtx<'a> {
    pub server_root: &'a [u8],
    /// Directory that relative `-socket` paths are resolved against (FastCgiIpcDir).
    pub ipc_dir: &'a [u8],
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

/// Parses `-host` values: `host:port`, `[v6]:port`, `v6:port` (last colon splits).
#[cold]
pub fn parse_host(v: &str) -> Result<Vec<SocketAddr>, String> {
    let (host, port) = if let Some(rest) = v.strip_prefix('[') {
        let Some((h, after)) = rest.split_once(']') else {
            return Err(format!("\"{v}\": missing ']' after the IPv6 address"));
        };
        let Some(p) = after.strip_prefix(':') else {
            return Err(format!("\"{v}\": missing port specification"));
        };
        (h, p)
    } else {
        match v.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => return Err(format!("\"{v}\": missing port specification")),
        }
    };
    if host.is_empty() {
        return Err(format!("\"{v}\": missing host name"));
    }
    let port: u16 = match port.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => n as u16,
        _ => return Err(format!("bad port number \"{port}\"")),
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    match (host, port).to_socket_addrs() {
        Ok(it) => {
            let mut v: Vec<SocketAddr> = Vec::new();
            for a in it {
                if !v.contains(&a) {
                    v.push(a);
                }
            }
            if v.is_empty() {
                Err(format!("failed to resolve \"{host}\" to an IP address"))
            } else {
                Ok(v)
            }
        }
        Err(e) => Err(format!(
            "failed to resolve \"{host}\" to an IP address: {e}"
        )),
    }
}

#[cold]
fn parse_uint(opt: &str, v: &str, min: u64, max: u64) -> Result<u64, String> {
    let n: u64 = v
        .parse()
        .map_err(|_| format!("invalid value for {opt}: \"{v}\" must be a positive integer"))?;
    if n < min {
        return Err(format!("invalid value for {opt}: \"{n}\" must be >= {min}"));
    }
    if n > max {
        return Err(format!("invalid value for {opt}: \"{n}\" must be <= {max}"));
    }
    Ok(n)
}

/// Parses the arguments of one `FastCgiExternalServer` line (everything after the directive
/// name). Errors are complete messages naming the directive and the problem.
#[cold]
pub fn parse_external_server(args: &[&str], ctx: &ParseCtx<'_>) -> Result<ServerDef, String> {
    const D: &str = "FastCgiExternalServer";
    let Some((&raw_path, opts)) = args.split_first().filter(|(p, _)| !p.is_empty()) else {
        return Err(format!(
            "{D} requires a path and either a -socket or -host option"
        ));
    };
    let path = normalize_path(raw_path.as_bytes(), ctx.server_root);
    let pd = display(&path);
    let err = |m: String| format!("{D} {pd}: {m}");
    let mut host: Option<(String, Vec<SocketAddr>)> = None;
    let mut socket: Option<Vec<u8>> = None;
    let mut def = ServerDef {
        path: path.clone(),
        targets: Vec::new(),
        address_text: String::new(),
        connect_timeout: None,
        idle_timeout: DEFAULT_IDLE_TIMEOUT,
        flush: false,
        nph: false,
        pass_headers: Vec::new(),
        user: None,
        group: None,
        keep_conn: false,
        max_conns: 0,
        pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
        connect_retry: DEFAULT_CONNECT_RETRY,
        trust_direct: false,
        request_buffering: false,
    };
    let mut keep_conn: Option<bool> = None;
    let mut it = opts.iter();
    while let Some(&opt) = it.next() {
        let lower = opt.to_ascii_lowercase();
        let mut value = |name: &str| -> Result<&str, String> {
            match it.next() {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(err(format!(
                    "invalid value for {name}: \"\" (a value is required)"
                ))),
            }
        };
        match lower.as_str() {
            "-host" => {
                let v = value("-host")?;
                let addrs =
                    parse_host(v).map_err(|m| err(format!("invalid value for -host: {m}")))?;
                host = Some((v.to_string(), addrs));
            }
            "-socket" => {
                let v = value("-socket")?;
                let p = if v.starts_with('/') {
                    normalize_path(v.as_bytes(), b"/")
                } else {
                    normalize_path(v.as_bytes(), ctx.ipc_dir)
                };
                if p.len() > MAX_SOCKET_PATH {
                    return Err(err(format!(
                        "invalid value for -socket: path \"{}\" is too long for a Domain socket ({} bytes, at most {MAX_SOCKET_PATH})",
                        display(&p),
                        p.len()
                    )));
                }
                socket = Some(p);
            }
            "-appconntimeout" => {
                let n = parse_uint("-appConnTimeout", value("-appConnTimeout")?, 0, 86_400)
                    .map_err(err)?;
                def.connect_timeout = (n > 0).then(|| Duration::from_secs(n));
            }
            "-idle-timeout" => {
                def.idle_timeout =
                    parse_uint("-idle-timeout", value("-idle-timeout")?, 1, 86_400 * 7)
                        .map_err(err)? as u32;
            }
            "-flush" => def.flush = true,
            "-trust-direct" => def.trust_direct = true,
            "-nph" => def.nph = true,
            "-pass-header" => {
                let v = value("-pass-header")?;
                if !is_token(v) {
                    return Err(err(format!(
                        "invalid value for -pass-header: \"{v}\" is not a valid header name"
                    )));
                }
                if v.eq_ignore_ascii_case("proxy") {
                    return Err(err(
                        "-pass-header Proxy is refused: it would hand the client's Proxy header to the application as HTTP_PROXY (httpoxy, CVE-2016-5387)".to_string(),
                    ));
                }
                if !def
                    .pass_headers
                    .iter()
                    .any(|h| h.name.to_bytes().eq_ignore_ascii_case(v.as_bytes()))
                {
                    def.pass_headers.push(PassHeader::new(v));
                }
            }
            "-keep-conn" => {
                keep_conn = Some(on_off("-keep-conn", value("-keep-conn")?).map_err(err)?);
            }
            "-request-buffering" => {
                def.request_buffering =
                    on_off("-request-buffering", value("-request-buffering")?).map_err(err)?;
            }
            "-max-conns" => {
                def.max_conns =
                    parse_uint("-max-conns", value("-max-conns")?, 0, 100_000).map_err(err)? as u32;
            }
            "-pool-idle-timeout" => {
                def.pool_idle_timeout = parse_uint(
                    "-pool-idle-timeout",
                    value("-pool-idle-timeout")?,
                    1,
                    86_400,
                )
                .map_err(err)? as u32;
            }
            "-connect-retry" => {
                def.connect_retry = parse_uint("-connect-retry", value("-connect-retry")?, 0, 3600)
                    .map_err(err)? as u32;
            }
            "-user" => def.user = Some(value("-user")?.to_string()),
            "-group" => def.group = Some(value("-group")?.to_string()),
            _ => return Err(err(format!("invalid option: {opt}"))),
        }
    }
    def.keep_conn = keep_conn.unwrap_or(def.max_conns > 0);
    match (host, socket) {
        (Some(_), Some(_)) => Err(err(
            "-host and -socket are mutually exclusive options".into()
        )),
        (None, None) => Err(err("-socket or -host option missing".into())),
        (Some((text, addrs)), None) => {
            def.address_text = text;
            def.targets = addrs.into_iter().map(Target::Inet).collect();
            Ok(def)
        }
        (None, Some(p)) => {
            def.address_text = display(&p);
            def.targets = vec![Target::Unix(p)];
            Ok(def)
        }
    }
}

/// What the directory walk should be told about a path that does not exist on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fake {
    /// A missing directory on the way to a virtual path.
    Dir,
    /// The missing virtual path itself (treated as a file, as if it existed).
    File,
}

/// A missing path the registry knows of: on the way to virtual paths (`dir`), a virtual path
/// (`file`), or both; `under_file`: a virtual path lies above it, so whether the walk should
/// see it at all depends on the rest of the request's path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Node {
    dir: bool,
    file: bool,
    under_file: bool,
}

/// All definitions of one configuration generation, shared by every virtual host (as in
/// mod_fastcgi, a definition inside a `<VirtualHost>` serves any request that maps to its path).
#[derive(Debug)]
pub struct Registry<T> {
    entries: Vec<(ServerDef, T)>,
    by_path: HashMap<Vec<u8>, usize>,
    fakes: HashMap<Vec<u8>, Node>,
    longest: usize,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Registry {
            entries: Vec::new(),
            by_path: HashMap::new(),
            fakes: HashMap::new(),
            longest: 0,
        }
    }
}

impl<T> Registry<T> {
    /// Adds a definition. The same path defined again with identical options (the classic :80
    /// and :443 pair of vhosts) is accepted once; different options for one path are an error.
    /// `make` builds the runtime companion of a new entry.
    #[cold]
    pub fn add(
        &mut self,
        def: ServerDef,
        make: impl FnOnce(&ServerDef) -> T,
    ) -> Result<(), String> {
        if let Some(&i) = self.by_path.get(&def.path) {
            if self.entries[i].0 == def {
                return Ok(());
            }
            return Err(format!(
                "FastCgiExternalServer: redefinition of previously defined class \"{}\" with different options (the same path may be repeated only with identical options)",
                display(&def.path)
            ));
        }
        let t = make(&def);
        self.by_path.insert(def.path.clone(), self.entries.len());
        // Every ancestor directory is a fake directory (and may be a virtual path as well).
        let p = &def.path;
        for (i, _) in p.iter().enumerate().filter(|&(i, &c)| c == b'/' && i > 0) {
            self.fakes.entry(p[..i].to_vec()).or_default().dir = true;
        }
        self.fakes.entry(p.clone()).or_default().file = true;
        // Which nodes lie below a virtual path: the new one may be above earlier nodes.
        let by_path = &self.by_path;
        for (path, node) in self.fakes.iter_mut() {
            node.under_file = path
                .iter()
                .enumerate()
                .any(|(i, &c)| c == b'/' && i > 0 && by_path.contains_key(&path[..i]));
        }
        self.longest = self.longest.max(p.len());
        self.entries.push((def, t));
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &(ServerDef, T)> {
        self.entries.iter()
    }

    /// The definition serving `filename`: the longest virtual path equal to it or a parent of it
    /// on a `/` boundary (`/x/php.fcgi` serves `/x/php.fcgi/a` but not `/x/php.fcgi2`).
    pub fn lookup(&self, filename: &[u8]) -> Option<&(ServerDef, T)> {
        if self.entries.is_empty() {
            return None;
        }
        let f = trim_trailing_slashes(filename);
        let mut end = f.len().min(self.longest);
        loop {
            if (end == f.len() || f.get(end) == Some(&b'/'))
                && let Some(&i) = self.by_path.get(&f[..end])
            {
                return self.entries.get(i);
            }
            // Next shorter candidate: the previous '/'.
            match f[..end].iter().rposition(|&c| c == b'/') {
                Some(0) | None => return None,
                Some(pos) => end = pos,
            }
        }
    }

    /// For the directory walk, which has reached `path` with `rest` of the request's path still
    /// to walk: does `path` lie on the way to (or equal) a virtual path? Where virtual paths
    /// are nested, the walk follows `lookup`: a node is a directory only while the longest
    /// virtual path serving `path` + `rest` lies below it; a virtual path that serves the
    /// request itself is the script (the walk stops, `rest` becomes its PATH_INFO), and a
    /// directory below that script is not reported at all.
    /// `rest` is asked for only there (the walk's other steps need not measure it).
    pub fn fake_for<'r>(&self, path: &[u8], rest: impl FnOnce() -> &'r [u8]) -> Option<Fake> {
        if self.fakes.is_empty() {
            return None;
        }
        let path = trim_trailing_slashes(path);
        let node = self.fakes.get(path)?;
        if node.dir && (node.file || node.under_file) {
            let full = [path, rest()].concat();
            if self
                .lookup(&full)
                .is_some_and(|(def, _)| def.path.len() > path.len())
            {
                return Some(Fake::Dir);
            }
            return node.file.then_some(Fake::File);
        }
        Some(if node.dir { Fake::Dir } else { Fake::File })
    }
}

/// The three request phases in which mod_fastcgi runs an application in the FastCGI AUTHORIZER
/// role (`FastCgiAuthenticator`, `FastCgiAuthorizer`, `FastCgiAccessChecker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthPhase {
    /// check_user_id: the application checks the user and password of Basic authentication.
    Authenticator = 0,
    /// auth_checker: the application decides whether the authenticated user may proceed.
    Authorizer = 1,
    /// access_checker: the application decides whether the request may proceed at all.
    AccessChecker = 2,
}

impl AuthPhase {
    /// `FCGI_APACHE_ROLE` as mod_fastcgi sends it.
    pub fn apache_role(self) -> &'static [u8] {
        match self {
            AuthPhase::Authenticator => b"AUTHENTICATOR",
            AuthPhase::Authorizer => b"AUTHORIZER",
            AuthPhase::AccessChecker => b"ACCESS_CHECKER",
        }
    }
    pub fn directive(self) -> &'static str {
        match self {
            AuthPhase::Authenticator => "FastCgiAuthenticator",
            AuthPhase::Authorizer => "FastCgiAuthorizer",
            AuthPhase::AccessChecker => "FastCgiAccessChecker",
        }
    }
    /// The phase a directive name configures, and whether it is the `...Authoritative` flag.
    #[cold]
    pub fn from_directive(name: &str) -> Option<(AuthPhase, bool)> {
        let (base, flag) = match name.strip_suffix("Authoritative") {
            Some(b) => (b, true),
            None => (name, false),
        };
        [
            AuthPhase::Authenticator,
            AuthPhase::Authorizer,
            AuthPhase::AccessChecker,
        ]
        .into_iter()
        .find(|p| p.directive().eq_ignore_ascii_case(base))
        .map(|p| (p, flag))
    }
}

/// An authorizer application configured for a directory: the `FastCgiExternalServer` path it
/// is reached by, and `-compat` (mod_fastcgi's stricter reading of the FastCGI specification).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSpec {
    pub path: Vec<u8>,
    pub compat: bool,
}

/// Per-directory configuration: the authorizer applications of the three phases and their
/// `...Authoritative` flags. A section inherits what it does not set itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirConf {
    pub auth: [Option<AuthSpec>; 3],
    pub authoritative: [Option<bool>; 3],
}

impl DirConf {
    pub fn merge(base: &DirConf, add: &DirConf) -> DirConf {
        let mut m = base.clone();
        for i in 0..3 {
            if add.auth[i].is_some() {
                m.auth[i] = add.auth[i].clone();
            }
            if add.authoritative[i].is_some() {
                m.authoritative[i] = add.authoritative[i];
            }
        }
        m
    }
    pub fn spec(&self, p: AuthPhase) -> Option<&AuthSpec> {
        self.auth[p as usize].as_ref()
    }
    /// Whether a failure of the phase's application is final (default) or lets other modules
    /// decide.
    pub fn authoritative(&self, p: AuthPhase) -> bool {
        self.authoritative[p as usize].unwrap_or(true)
    }
}

/// `FastCgiAuthenticator|FastCgiAuthorizer|FastCgiAccessChecker <path> [-compat]`.
#[cold]
pub fn parse_auth(phase: AuthPhase, args: &[&str], server_root: &[u8]) -> Result<AuthSpec, String> {
    let name = phase.directive();
    let (path, rest) = match args {
        [p, rest @ ..] if !p.is_empty() && rest.len() <= 1 => (*p, rest),
        _ => {
            return Err(format!(
                "{name} takes the path of a FastCgiExternalServer, optionally followed by -compat"
            ));
        }
    };
    let compat = match rest {
        [] => false,
        [o] if o.eq_ignore_ascii_case("-compat") => true,
        [o] => {
            return Err(format!(
                "{name}: unknown option: \"{o}\" (only -compat is known)"
            ));
        }
        _ => unreachable!("checked above"),
    };
    Ok(AuthSpec {
        path: normalize_path(path.as_bytes(), server_root),
        compat,
    })
}

/// `...Authoritative On|Off`.
#[cold]
pub fn parse_flag(name: &str, args: &[&str]) -> Result<bool, String> {
    match args {
        [v] if v.eq_ignore_ascii_case("on") => Ok(true),
        [v] if v.eq_ignore_ascii_case("off") => Ok(false),
        _ => Err(format!("{name} must be On or Off")),
    }
}

fn trim_trailing_slashes(p: &[u8]) -> &[u8] {
    let mut e = p.len();
    while e > 1 && p[e - 1] == b'/' {
        e -= 1;
    }
    &p[..e]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ParseCtx<'static> {
        ParseCtx {
            server_root: b"/etc/apache2",
            ipc_dir: b"/run/apache2/fastcgi",
        }
    }
    fn parse(args: &[&str]) -> Result<ServerDef, String> {
        parse_external_server(args, &ctx())
    }

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize_path(b"/a//b/./c/../d/", b"/r"), b"/a/b/d");
        assert_eq!(normalize_path(b"x/y", b"/etc/apache2"), b"/etc/apache2/x/y");
        assert_eq!(normalize_path(b"/", b"/r"), b"/");
        assert_eq!(normalize_path(b"/../..", b"/r"), b"/");
    }

    #[test]
    fn parses_full_line() {
        let d = parse(&[
            "/usr/local/www/fastcgi/php5.fcgi",
            "-flush",
            "-host",
            "127.0.0.1:9000",
            "-idle-timeout",
            "310",
            "-pass-header",
            "Authorization",
            "-appConnTimeout",
            "3",
            "-NPH",
            "-user",
            "u",
            "-group",
            "g",
        ])
        .unwrap();
        assert_eq!(d.path, b"/usr/local/www/fastcgi/php5.fcgi");
        assert_eq!(
            d.targets,
            vec![Target::Inet("127.0.0.1:9000".parse().unwrap())]
        );
        assert!(d.flush && d.nph);
        assert_eq!(d.idle_timeout, 310);
        assert_eq!(d.connect_timeout, Some(Duration::from_secs(3)));
        assert_eq!(d.pass_headers.len(), 1);
        assert_eq!(d.pass_headers[0].name.to_bytes(), b"Authorization");
        assert_eq!(d.pass_headers[0].env, b"HTTP_AUTHORIZATION");
        assert_eq!(
            PassHeader::new("X-Forwarded-For").env,
            b"HTTP_X_FORWARDED_FOR"
        );
        assert_eq!(d.user.as_deref(), Some("u"));
    }

    #[test]
    fn defaults() {
        let d = parse(&["php.fcgi", "-socket", "php.sock"]).unwrap();
        assert_eq!(d.path, b"/etc/apache2/php.fcgi");
        assert_eq!(
            d.targets,
            vec![Target::Unix(b"/run/apache2/fastcgi/php.sock".to_vec())]
        );
        assert_eq!(d.idle_timeout, 30);
        assert_eq!(d.connect_timeout, None);
        assert!(!d.flush && !d.nph);
        assert!(!d.trust_direct);
        assert!(
            parse(&["/x", "-socket", "/s", "-trust-direct"])
                .unwrap()
                .trust_direct
        );
        assert!(!d.keep_conn);
        assert!(
            parse(&["/x", "-socket", "/s", "-max-conns", "8"])
                .unwrap()
                .keep_conn
        );
        assert!(
            !parse(&[
                "/x",
                "-socket",
                "/s",
                "-max-conns",
                "8",
                "-keep-conn",
                "off"
            ])
            .unwrap()
            .keep_conn
        );
        assert!(
            parse(&["/x", "-socket", "/s", "-keep-conn", "on"])
                .unwrap()
                .keep_conn
        );
        assert_eq!(
            (d.max_conns, d.pool_idle_timeout),
            (0, DEFAULT_POOL_IDLE_TIMEOUT)
        );
        let d = parse(&[
            "/x",
            "-socket",
            "/s",
            "-keep-conn",
            "off",
            "-max-conns",
            "4",
            "-pool-idle-timeout",
            "2",
        ])
        .unwrap();
        assert!(!d.keep_conn);
        assert_eq!((d.max_conns, d.pool_idle_timeout), (4, 2));
        assert!(
            parse(&["/x", "-socket", "/s", "-keep-conn", "maybe"])
                .unwrap_err()
                .contains("must be on or off")
        );
        assert!(!d.request_buffering);
        assert!(
            parse(&["/x", "-socket", "/s", "-request-buffering", "On"])
                .unwrap()
                .request_buffering
        );
        assert!(
            parse(&["/x", "-socket", "/s", "-request-buffering", "maybe"])
                .unwrap_err()
                .contains("invalid value for -request-buffering: \"maybe\" must be on or off")
        );
        assert!(
            parse(&["/x", "-socket", "/s", "-pool-idle-timeout", "0"])
                .unwrap_err()
                .contains("must be >= 1")
        );
        let d = parse(&["/x", "-appConnTimeout", "0", "-socket", "/s"]).unwrap();
        assert_eq!(d.connect_timeout, None);
        assert_eq!(d.connect_retry, DEFAULT_CONNECT_RETRY);
        let d = parse(&["/x", "-socket", "/s", "-connect-retry", "0"]).unwrap();
        assert_eq!(d.connect_retry, 0);
        assert!(
            parse(&["/x", "-socket", "/s", "-connect-retry", "soon"])
                .unwrap_err()
                .contains("invalid value for -connect-retry")
        );
    }

    #[test]
    fn ipv6_and_names() {
        let d = parse(&["/x", "-host", "[::1]:9000"]).unwrap();
        assert_eq!(d.targets, vec![Target::Inet("[::1]:9000".parse().unwrap())]);
        let d = parse(&["/x", "-host", "localhost:9000"]).unwrap();
        assert!(!d.targets.is_empty());
        assert!(
            d.targets
                .iter()
                .all(|t| matches!(t, Target::Inet(a) if a.port() == 9000 && a.ip().is_loopback()))
        );
    }

    #[test]
    fn errors_name_directive_and_problem() {
        let cases: &[(&[&str], &str)] = &[
            (
                &[],
                "FastCgiExternalServer requires a path and either a -socket or -host option",
            ),
            (
                &["/x"],
                "FastCgiExternalServer /x: -socket or -host option missing",
            ),
            (
                &["/x", "-host", "127.0.0.1:1", "-socket", "/s"],
                "-host and -socket are mutually exclusive options",
            ),
            (
                &["/x", "-socket", "/s", "-foo"],
                "FastCgiExternalServer /x: invalid option: -foo",
            ),
            (
                &["/x", "-socket", "/s", "-idle-timeout", "0"],
                "invalid value for -idle-timeout: \"0\" must be >= 1",
            ),
            (
                &["/x", "-socket", "/s", "-idle-timeout", "x"],
                "invalid value for -idle-timeout: \"x\" must be a positive integer",
            ),
            (
                &["/x", "-socket", "/s", "-idle-timeout"],
                "invalid value for -idle-timeout: \"\"",
            ),
            (
                &["/x", "-socket", "/s", "-appConnTimeout", "-1"],
                "invalid value for -appConnTimeout: \"-1\" must be a positive integer",
            ),
            (&["/x", "-host", "127.0.0.1"], "missing port specification"),
            (&["/x", "-host", "127.0.0.1:0"], "bad port number \"0\""),
            (
                &["/x", "-host", "127.0.0.1:70000"],
                "bad port number \"70000\"",
            ),
            (
                &["/x", "-host", "no-such-host.invalid:80"],
                "failed to resolve \"no-such-host.invalid\"",
            ),
            (&["/x", "-socket"], "invalid value for -socket: \"\""),
            (&["/x", "-socket", "/s", "-pass-header", "Proxy"], "httpoxy"),
            (
                &["/x", "-socket", "/s", "-pass-header", "Bad Name"],
                "not a valid header name",
            ),
            (
                &["/x", "-socket", "/s", "-pass-header"],
                "invalid value for -pass-header",
            ),
        ];
        for (args, want) in cases {
            let e = parse(args).unwrap_err();
            assert!(e.contains(want), "args {args:?}: got {e:?}, want {want:?}");
            assert!(e.starts_with("FastCgiExternalServer"), "{e}");
        }
        let long = format!("/{}", "s".repeat(120));
        let e = parse(&["/x", "-socket", &long]).unwrap_err();
        assert!(e.contains("is too long for a Domain socket"), "{e}");
    }

    #[test]
    fn registry_routes_on_slash_boundary() {
        let mut r: Registry<u32> = Registry::default();
        r.add(parse(&["/x/php.fcgi", "-socket", "/s"]).unwrap(), |_| 1)
            .unwrap();
        r.add(parse(&["/site", "-socket", "/s2"]).unwrap(), |_| 2)
            .unwrap();
        r.add(parse(&["/site/deeper", "-socket", "/s3"]).unwrap(), |_| 3)
            .unwrap();
        let id = |f: &[u8]| r.lookup(f).map(|e| e.1);
        assert_eq!(id(b"/x/php.fcgi"), Some(1));
        assert_eq!(id(b"/x/php.fcgi/"), Some(1));
        assert_eq!(id(b"/x/php.fcgi/a/b.php"), Some(1));
        assert_eq!(id(b"/x/php.fcgi2"), None);
        assert_eq!(id(b"/x/php.fcg"), None);
        assert_eq!(id(b"/x"), None);
        assert_eq!(id(b"/"), None);
        assert_eq!(id(b""), None);
        assert_eq!(id(b"/site/www/index.php"), Some(2));
        assert_eq!(id(b"/site/deeper/x"), Some(3));
        assert_eq!(id(b"/site/deeperx"), Some(2));
        assert_eq!(r.fake_for(b"/x", || b"/php.fcgi"), Some(Fake::Dir));
        assert_eq!(r.fake_for(b"/x/", || b""), Some(Fake::Dir));
        assert_eq!(r.fake_for(b"/x/php.fcgi", || b""), Some(Fake::File));
        assert_eq!(r.fake_for(b"/x/php.fcgi", || b"/a/b"), Some(Fake::File));
        assert_eq!(r.fake_for(b"/x/php.fcgi/a", || b"/b"), None);
        assert_eq!(r.fake_for(b"/y", || b""), None);
        // /site has /site/deeper below it: the walk goes on where the rest leads there.
        assert_eq!(r.fake_for(b"/site", || b""), Some(Fake::File));
        assert_eq!(r.fake_for(b"/site", || b"/"), Some(Fake::File));
        assert_eq!(r.fake_for(b"/site", || b"/www/index.php"), Some(Fake::File));
        assert_eq!(r.fake_for(b"/site", || b"/deeperx"), Some(Fake::File));
        assert_eq!(r.fake_for(b"/site", || b"/deeper"), Some(Fake::Dir));
        assert_eq!(r.fake_for(b"/site", || b"/deeper/x"), Some(Fake::Dir));
        assert_eq!(r.fake_for(b"/site/deeper", || b"/x"), Some(Fake::File));
    }

    #[test]
    fn nested_virtual_paths_in_either_order() {
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let paths = ["/a", "/a/b/c", "/a/b/c/d"];
            let mut r: Registry<usize> = Registry::default();
            for i in order {
                r.add(parse(&[paths[i], "-socket", "/s"]).unwrap(), |_| i)
                    .unwrap();
            }
            let f = |p: &[u8], rest: &[u8]| r.fake_for(p, || rest);
            assert_eq!(f(b"/a", b"/b/x"), Some(Fake::File), "{order:?}");
            assert_eq!(f(b"/a", b"/b/c"), Some(Fake::Dir), "{order:?}");
            assert_eq!(f(b"/a/b", b"/c/d/e"), Some(Fake::Dir), "{order:?}");
            assert_eq!(f(b"/a/b/c", b"/e"), Some(Fake::File), "{order:?}");
            assert_eq!(f(b"/a/b/c", b"/d/e"), Some(Fake::Dir), "{order:?}");
            assert_eq!(f(b"/a/b/c/d", b"/e"), Some(Fake::File), "{order:?}");
            // below /a but not on the way to what serves the request: not reported (as when
            // the walk's first stat asks about the whole filename, with no rest)
            assert_eq!(f(b"/a/b", b""), None, "{order:?}");
            assert_eq!(f(b"/a/b/", b""), None, "{order:?}");
            assert_eq!(f(b"/a/b", b"/x"), None, "{order:?}");
            assert_eq!(f(b"/a/b/c", b""), Some(Fake::File), "{order:?}");
            assert_eq!(r.lookup(b"/a/b/c/e").map(|e| e.1), Some(1));
        }
    }

    #[test]
    fn auth_directives() {
        use AuthPhase::*;
        assert_eq!(
            AuthPhase::from_directive("FastCgiAuthorizer"),
            Some((Authorizer, false))
        );
        assert_eq!(
            AuthPhase::from_directive("FastCgiAccessCheckerAuthoritative"),
            Some((AccessChecker, true))
        );
        assert_eq!(AuthPhase::from_directive("FastCgiServer"), None);
        let s = parse_auth(Authenticator, &["fcgi/auth.fcgi"], b"/etc/apache2").unwrap();
        assert_eq!(s.path, b"/etc/apache2/fcgi/auth.fcgi");
        assert!(!s.compat);
        let s = parse_auth(Authorizer, &["/x/a//b/", "-COMPAT"], b"/r").unwrap();
        assert_eq!((s.path.as_slice(), s.compat), (&b"/x/a/b"[..], true));
        let e = parse_auth(AccessChecker, &["/x", "-strict"], b"/r").unwrap_err();
        assert!(
            e.contains("FastCgiAccessChecker") && e.contains("-strict"),
            "{e}"
        );
        assert!(parse_auth(Authorizer, &[], b"/r").is_err());
        assert!(parse_auth(Authorizer, &["/x", "-compat", "y"], b"/r").is_err());
        assert_eq!(parse_flag("F", &["off"]), Ok(false));
        assert_eq!(parse_flag("F", &["On"]), Ok(true));
        assert!(
            parse_flag("F", &["maybe"])
                .unwrap_err()
                .contains("On or Off")
        );
    }

    #[test]
    fn dir_conf_inherits_what_a_section_does_not_set() {
        let spec = |p: &[u8]| {
            Some(AuthSpec {
                path: p.to_vec(),
                compat: false,
            })
        };
        let base = DirConf {
            auth: [spec(b"/a"), spec(b"/z"), None],
            authoritative: [Some(false), None, None],
        };
        let add = DirConf {
            auth: [None, spec(b"/b"), None],
            authoritative: [None, Some(false), None],
        };
        let m = DirConf::merge(&base, &add);
        assert_eq!(m.spec(AuthPhase::Authenticator).unwrap().path, b"/a");
        assert_eq!(m.spec(AuthPhase::Authorizer).unwrap().path, b"/b");
        assert!(m.spec(AuthPhase::AccessChecker).is_none());
        assert!(!m.authoritative(AuthPhase::Authenticator));
        assert!(!m.authoritative(AuthPhase::Authorizer));
        assert!(m.authoritative(AuthPhase::AccessChecker));
    }

    #[test]
    fn registry_duplicates() {
        let mut r: Registry<()> = Registry::default();
        let a = parse(&["/x", "-socket", "/s", "-flush"]).unwrap();
        r.add(a.clone(), |_| ()).unwrap();
        r.add(a, |_| ()).unwrap();
        assert_eq!(r.iter().count(), 1);
        let e = r
            .add(parse(&["/x", "-socket", "/other"]).unwrap(), |_| ())
            .unwrap_err();
        assert!(
            e.contains("redefinition of previously defined class \"/x\""),
            "{e}"
        );
    }
}
