//! The module structure httpd loads (`fastcgi_module`), its directive table and hooks.
//! Every `extern "C"` function here runs its body inside `boundary!`, so a panic becomes a safe
//! return value and one log line instead of unwinding into httpd.
use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr::{addr_of, addr_of_mut, null, null_mut};

use crate::backend::{Reaper, Runtime};
use crate::config::{self, AuthPhase, DirConf, Fake, Registry};
use crate::ffi;
use crate::httpd::{Cmd, Pool, Request, Server};
use crate::{boundary, slog};

/// Handler name set on requests routed to an external FastCGI server (as mod_fastcgi).
pub const HANDLER: &CStr = c"fastcgi-script";

/// Configuration shared by every server_rec of one configuration generation. Lives in pconf
/// (dropped when the configuration is re-read).
#[derive(Default)]
pub struct Shared {
    pub registry: Registry<std::sync::Arc<Runtime>>,
    /// FastCgiIpcDir (for relative `-socket` paths); default `<runtime dir>/fastcgi`.
    pub ipc_dir: Option<Vec<u8>>,
    /// FastCgiWrapper was enabled (accepted for compatibility; we never spawn applications).
    pub wrapper: bool,
    /// Paths named by the authorizer directives, checked against the FastCgiExternalServer
    /// definitions once the whole configuration is read (check_config): a definition may
    /// follow the <Directory> that uses it.
    pub auth_paths: Vec<(AuthPhase, Vec<u8>)>,
}

const SHARED_KEY: &CStr = c"mod_fastcgi-rs:shared";

#[repr(transparent)]
struct StaticPtrs<const N: usize>([*const c_char; N]);
// SAFETY: read-only table of pointers to static C strings.
unsafe impl<const N: usize> Sync for StaticPtrs<N> {}

#[repr(transparent)]
struct Commands<const N: usize>([ffi::command_rec; N]);
// SAFETY: httpd only reads the command table; every pointer in it is to static data.
unsafe impl<const N: usize> Sync for Commands<N> {}

const fn argv_cmd(
    name: &'static CStr,
    req_override: c_int,
    f: unsafe extern "C" fn(
        *mut ffi::cmd_parms,
        *mut c_void,
        c_int,
        *const *mut c_char,
    ) -> *const c_char,
    help: &'static CStr,
) -> ffi::command_rec {
    ffi::command_rec {
        name: name.as_ptr(),
        func: ffi::cmd_func { take_argv: Some(f) },
        cmd_data: null_mut(),
        req_override,
        args_how: ffi::cmd_how_TAKE_ARGV,
        errmsg: help.as_ptr(),
    }
}

const SRV: c_int = ffi::RSRC_CONF;
const ANY: c_int = ffi::RSRC_CONF | ffi::OR_ALL;

const DIR: c_int = ffi::ACCESS_CONF;

static COMMANDS: Commands<16> = Commands([
    argv_cmd(c"FastCgiExternalServer", SRV,
        cmd_external_server,
        c"<path> -host <host:port>|-socket <path> [-appConnTimeout n] [-idle-timeout n] [-flush] [-pass-header name] [-nph] [-user u] [-group g]",
    ),
    argv_cmd(c"ExternalAppClass", SRV, cmd_external_server, c"alias of FastCgiExternalServer"),
    argv_cmd(c"FastCgiIpcDir", SRV, cmd_ipc_dir, c"directory for relative -socket paths"),
    argv_cmd(c"FastCgiWrapper", SRV, cmd_wrapper, c"On|Off|path (accepted for compatibility; applications are never spawned)"),
    argv_cmd(c"FastCgiSuexec", SRV, cmd_wrapper, c"alias of FastCgiWrapper"),
    argv_cmd(c"FastCgiConfig", SRV, cmd_config, c"options for dynamic applications (not supported; ignored with a warning)"),
    argv_cmd(c"FCGIConfig", SRV, cmd_config, c"alias of FastCgiConfig"),
    argv_cmd(c"FastCgiServer", ANY, cmd_unsupported, c"not supported: run the application under its own manager (php-fpm) and use FastCgiExternalServer"),
    argv_cmd(c"AppClass", ANY, cmd_unsupported, c"alias of FastCgiServer (not supported)"),
    argv_cmd(c"FastCgiAuthenticator", DIR, cmd_auth, c"<FastCgiExternalServer path> [-compat]: checks Basic authentication credentials (FCGI_APACHE_ROLE=AUTHENTICATOR)"),
    argv_cmd(c"FastCgiAuthenticatorAuthoritative", DIR, cmd_auth, c"On|Off: Off lets other modules authenticate when the application refuses"),
    argv_cmd(c"FastCgiAuthorizer", DIR, cmd_auth, c"<FastCgiExternalServer path> [-compat]: authorizes the authenticated user (FCGI_APACHE_ROLE=AUTHORIZER)"),
    argv_cmd(c"FastCgiAuthorizerAuthoritative", DIR, cmd_auth, c"On|Off: Off lets other modules authorize when the application refuses"),
    argv_cmd(c"FastCgiAccessChecker", DIR, cmd_auth, c"<FastCgiExternalServer path> [-compat]: decides access before authentication (FCGI_APACHE_ROLE=ACCESS_CHECKER)"),
    argv_cmd(c"FastCgiAccessCheckerAuthoritative", DIR, cmd_auth, c"On|Off: Off lets other modules decide when the application refuses"),
    ffi::command_rec {
        name: null(),
        func: ffi::cmd_func { take_argv: None },
        cmd_data: null_mut(),
        req_override: 0,
        args_how: 0,
        errmsg: null(),
    },
]);

/// The module record httpd finds with `dlsym("fastcgi_module")`. It must be mutable: httpd
/// writes `module_index`, `next` and `dynamic_load_handle` into it (a read-only static would sit
/// in RELRO memory and crash LoadModule).
#[unsafe(no_mangle)]
pub static mut fastcgi_module: ffi::module = ffi::module {
    version: ffi::MODULE_MAGIC_NUMBER_MAJOR,
    minor_version: ffi::MODULE_MAGIC_NUMBER_MINOR,
    module_index: -1,
    name: c"mod_fastcgi.c".as_ptr(),
    dynamic_load_handle: null_mut(),
    next: null_mut(),
    magic: ffi::MODULE_MAGIC_COOKIE as std::ffi::c_ulong,
    rewrite_args: None,
    create_dir_config: Some(create_dir_config),
    merge_dir_config: Some(merge_dir_config),
    create_server_config: Some(create_server_config),
    merge_server_config: Some(merge_server_config),
    cmds: addr_of!(COMMANDS.0) as *const ffi::command_rec,
    register_hooks: Some(register_hooks),
    flags: 0,
};

/// Pointer to the module record (for ap_get_module_config).
pub fn module_ptr() -> *const ffi::module {
    addr_of!(fastcgi_module)
}

/// This module's index, read at call time (it changes across restarts).
pub fn module_index() -> c_int {
    // SAFETY: plain read of an int httpd set during LoadModule; no reference is kept.
    unsafe { (*addr_of!(fastcgi_module)).module_index }
}

/// The shared configuration for a server.
pub fn shared<'a>(s: Server<'a>) -> Option<&'a Shared> {
    let p = s.module_config().cast::<Shared>();
    // SAFETY: the config pointer of every server is the `Shared` adopted into pconf by
    // create_server_config; it lives as long as the server_rec. Shared data is only mutated
    // while directives are parsed (single-threaded).
    unsafe { p.as_ref() }
}

fn shared_mut<'a>(s: Server<'a>) -> Option<&'a mut Shared> {
    let p = s.module_config().cast::<Shared>();
    // SAFETY: as in `shared`; called only from directive handlers, when httpd is
    // single-threaded and no other reference to `Shared` is alive.
    unsafe { p.as_mut() }
}

#[cold]
unsafe extern "C" fn create_server_config(
    p: *mut ffi::apr_pool_t,
    _s: *mut ffi::server_rec,
) -> *mut c_void {
    boundary!(null_mut(), {
        // SAFETY: httpd passes its live configuration pool.
        let Some(pool) = (unsafe { Pool::from_ptr(p) }) else {
            return null_mut();
        };
        let existing = pool.userdata(SHARED_KEY);
        if !existing.is_null() {
            return existing;
        }
        let ptr = pool.adopt(Shared::default()).cast::<c_void>();
        pool.set_userdata(SHARED_KEY, ptr);
        ptr
    })
}

#[cold]
unsafe extern "C" fn merge_server_config(
    _p: *mut ffi::apr_pool_t,
    base: *mut c_void,
    add: *mut c_void,
) -> *mut c_void {
    // Every server shares the same `Shared`; keep whichever is set.
    if add.is_null() { base } else { add }
}

unsafe extern "C" fn create_dir_config(p: *mut ffi::apr_pool_t, _dir: *mut c_char) -> *mut c_void {
    boundary!(null_mut(), {
        // SAFETY: httpd passes a live configuration pool.
        match unsafe { Pool::from_ptr(p) } {
            Some(pool) => pool.adopt(DirConf::default()).cast::<c_void>(),
            None => null_mut(),
        }
    })
}

unsafe extern "C" fn merge_dir_config(
    p: *mut ffi::apr_pool_t,
    base: *mut c_void,
    add: *mut c_void,
) -> *mut c_void {
    boundary!(add, {
        // SAFETY: both are DirConf made by create_dir_config (or merge_dir_config) in pools
        // that outlive this call; they are only read here.
        let (Some(pool), Some(b), Some(a)) = (
            unsafe { Pool::from_ptr(p) },
            unsafe { base.cast::<DirConf>().as_ref() },
            unsafe { add.cast::<DirConf>().as_ref() },
        ) else {
            return add;
        };
        if *a == DirConf::default() {
            return base;
        }
        pool.adopt(DirConf::merge(b, a)).cast::<c_void>()
    })
}

/// The per-directory configuration of a request.
fn dir_conf<'a>(r: &Request<'a>) -> Option<&'a DirConf> {
    // SAFETY: the entry is the DirConf made by create_dir_config/merge_dir_config in a pool
    // that outlives the request; it is never written after configuration.
    unsafe { r.dir_config().cast::<DirConf>().as_ref() }
}

/// `FastCgiAuthenticator`, `FastCgiAuthorizer`, `FastCgiAccessChecker` and their
/// `...Authoritative` flags.
#[cold]
unsafe extern "C" fn cmd_auth(
    cmd: *mut ffi::cmd_parms,
    m: *mut c_void,
    argc: c_int,
    argv: *const *mut c_char,
) -> *const c_char {
    boundary!(c"FastCGI authorizer directive: internal error".as_ptr(), {
        // SAFETY: httpd passes the live cmd_parms of this directive.
        let Some(cmd) = (unsafe { Cmd::from_ptr(cmd) }) else {
            return null();
        };
        let name = cmd.directive_name();
        let Some((phase, flag)) = AuthPhase::from_directive(&name) else {
            return cmd.error(&format!("{name}: unknown directive"));
        };
        // SAFETY: `m` is this section's DirConf (create_dir_config); directives are parsed
        // single-threaded and nothing else refers to it meanwhile.
        let Some(dc) = (unsafe { m.cast::<DirConf>().as_mut() }) else {
            return cmd.error(&format!("{name}: module configuration missing"));
        };
        // SAFETY: httpd passes argc/argv of this directive.
        let a = unsafe { args(argc, argv) };
        let a: Vec<&str> = a.iter().map(|s| s.as_ref()).collect();
        if flag {
            return match config::parse_flag(&name, &a) {
                Ok(v) => {
                    dc.authoritative[phase as usize] = Some(v);
                    null()
                }
                Err(e) => cmd.error(&e),
            };
        }
        let spec = match config::parse_auth(phase, &a, &crate::httpd::server_root()) {
            Ok(s) => s,
            Err(e) => return cmd.error(&e),
        };
        let Some(sh) = cmd.server().and_then(shared_mut) else {
            return cmd.error(&format!("{name}: module configuration missing"));
        };
        sh.auth_paths.push((phase, spec.path.clone()));
        dc.auth[phase as usize] = Some(spec);
        null()
    })
}

/// Every path named by an authorizer directive must be served by a FastCgiExternalServer
/// (checked once all of the configuration is read, so `apachectl -t` reports it).
#[cold]
unsafe extern "C" fn check_config(
    _pconf: *mut ffi::apr_pool_t,
    _plog: *mut ffi::apr_pool_t,
    _ptemp: *mut ffi::apr_pool_t,
    s: *mut ffi::server_rec,
) -> c_int {
    boundary!(ffi::OK, {
        // SAFETY: httpd passes the live main server.
        let server = unsafe { Server::from_ptr(s) };
        let Some(sh) = server.and_then(shared) else {
            return ffi::OK;
        };
        let mut rc = ffi::OK;
        for (phase, path) in &sh.auth_paths {
            if sh.registry.lookup(path).is_none() {
                slog!(
                    server,
                    STARTUP_ERR,
                    0,
                    6,
                    "{} {}: no FastCgiExternalServer is defined for this path (an authorizer application must be an external FastCGI server; this module starts none)",
                    phase.directive(),
                    String::from_utf8_lossy(path)
                );
                rc = ffi::HTTP_INTERNAL_SERVER_ERROR;
            }
        }
        rc
    })
}

/// The three auth phases: run the directory's authorizer application, if it has one.
fn auth_hook(r: *mut ffi::request_rec, phase: AuthPhase) -> c_int {
    // SAFETY: httpd passes the live request, used by this thread only.
    let Some(mut req) = (unsafe { Request::from_ptr(r) }) else {
        return ffi::DECLINED;
    };
    let Some(dc) = dir_conf(&req) else {
        return ffi::DECLINED;
    };
    let Some(spec) = dc.spec(phase) else {
        return ffi::DECLINED;
    };
    let Some(sh) = req.server().and_then(shared) else {
        return ffi::DECLINED;
    };
    let Some((def, rt)) = sh.registry.lookup(&spec.path) else {
        // check_config refuses such a configuration; kept safe anyway.
        crate::rlog!(
            &req,
            ERR,
            0,
            102,
            "FastCGI: {} \"{}\": no FastCgiExternalServer serves this path",
            phase.directive(),
            String::from_utf8_lossy(&spec.path)
        );
        return ffi::HTTP_INTERNAL_SERVER_ERROR;
    };
    crate::handler::run_authorizer(&mut req, def, rt, phase, spec, dc.authoritative(phase))
}

unsafe extern "C" fn check_authn(r: *mut ffi::request_rec) -> c_int {
    boundary!(r, ffi::HTTP_INTERNAL_SERVER_ERROR, {
        auth_hook(r, AuthPhase::Authenticator)
    })
}

unsafe extern "C" fn check_authz(r: *mut ffi::request_rec) -> c_int {
    boundary!(r, ffi::HTTP_INTERNAL_SERVER_ERROR, {
        auth_hook(r, AuthPhase::Authorizer)
    })
}

unsafe extern "C" fn check_access(r: *mut ffi::request_rec) -> c_int {
    boundary!(r, ffi::HTTP_INTERNAL_SERVER_ERROR, {
        auth_hook(r, AuthPhase::AccessChecker)
    })
}

/// Collects TAKE_ARGV arguments as UTF-8 strings (directive arguments are config text).
///
/// # Safety
/// `argv` must hold `argc` NUL-terminated strings.
#[cold]
unsafe fn args<'a>(argc: c_int, argv: *const *mut c_char) -> Vec<std::borrow::Cow<'a, str>> {
    let n = usize::try_from(argc).unwrap_or(0);
    if argv.is_null() || n == 0 {
        return Vec::new();
    }
    // SAFETY: caller guarantees `argc` valid entries.
    let v = unsafe { std::slice::from_raw_parts(argv, n) };
    v.iter()
        .filter(|p| !p.is_null())
        // SAFETY: each entry is a NUL-terminated string in the config pool.
        .map(|&p| String::from_utf8_lossy(unsafe { CStr::from_ptr(p) }.to_bytes()))
        .collect()
}

#[cold]
unsafe extern "C" fn cmd_external_server(
    cmd: *mut ffi::cmd_parms,
    _m: *mut c_void,
    argc: c_int,
    argv: *const *mut c_char,
) -> *const c_char {
    boundary!(c"FastCgiExternalServer: internal error".as_ptr(), {
        // SAFETY: httpd passes the live cmd_parms of this directive.
        let Some(cmd) = (unsafe { Cmd::from_ptr(cmd) }) else {
            return null();
        };
        if let Some(e) = cmd.check_global_or_vhost() {
            return e;
        }
        // SAFETY: httpd passes argc/argv of this directive.
        let a = unsafe { args(argc, argv) };
        let a: Vec<&str> = a.iter().map(|s| s.as_ref()).collect();
        let Some(server) = cmd.server() else {
            return null();
        };
        let Some(sh) = shared_mut(server) else {
            return cmd.error("FastCgiExternalServer: module configuration missing");
        };
        let ipc = sh
            .ipc_dir
            .clone()
            .unwrap_or_else(|| cmd.runtime_dir_relative(b"fastcgi"));
        let root = crate::httpd::server_root();
        let ctx = config::ParseCtx {
            server_root: &root,
            ipc_dir: &ipc,
        };
        let def = match config::parse_external_server(&a, &ctx) {
            Ok(d) => d,
            Err(e) => return cmd.error(&e),
        };
        match sh.registry.add(def, Runtime::new) {
            Ok(()) => null(),
            Err(e) => cmd.error(&e),
        }
    })
}

#[cold]
unsafe extern "C" fn cmd_ipc_dir(
    cmd: *mut ffi::cmd_parms,
    _m: *mut c_void,
    argc: c_int,
    argv: *const *mut c_char,
) -> *const c_char {
    boundary!(c"FastCgiIpcDir: internal error".as_ptr(), {
        // SAFETY: httpd passes the live cmd_parms of this directive.
        let Some(cmd) = (unsafe { Cmd::from_ptr(cmd) }) else {
            return null();
        };
        if let Some(e) = cmd.check_global_only() {
            return e;
        }
        // SAFETY: httpd passes argc/argv of this directive.
        let a = unsafe { args(argc, argv) };
        if a.len() != 1 || a[0].is_empty() {
            return cmd.error("FastCgiIpcDir takes exactly one argument, a directory");
        }
        let Some(sh) = cmd.server().and_then(shared_mut) else {
            return null();
        };
        if !sh.registry.is_empty() {
            return cmd
                .error("The FastCgiIpcDir command must precede static FastCGI server definitions");
        }
        let dir = cmd.server_root_relative(a[0].as_bytes());
        sh.ipc_dir = Some(config::normalize_path(&dir, b"/"));
        null()
    })
}

#[cold]
unsafe extern "C" fn cmd_wrapper(
    cmd: *mut ffi::cmd_parms,
    _m: *mut c_void,
    argc: c_int,
    argv: *const *mut c_char,
) -> *const c_char {
    boundary!(c"FastCgiWrapper: internal error".as_ptr(), {
        // SAFETY: httpd passes the live cmd_parms of this directive.
        let Some(cmd) = (unsafe { Cmd::from_ptr(cmd) }) else {
            return null();
        };
        if let Some(e) = cmd.check_global_only() {
            return e;
        }
        // SAFETY: httpd passes argc/argv of this directive.
        let a = unsafe { args(argc, argv) };
        if a.len() != 1 {
            return cmd.error("FastCgiWrapper takes one argument: On, Off or a path");
        }
        let Some(sh) = cmd.server().and_then(shared_mut) else {
            return null();
        };
        sh.wrapper = !a[0].eq_ignore_ascii_case("off");
        null()
    })
}

#[cold]
unsafe extern "C" fn cmd_config(
    cmd: *mut ffi::cmd_parms,
    _m: *mut c_void,
    _argc: c_int,
    _argv: *const *mut c_char,
) -> *const c_char {
    boundary!(c"FastCgiConfig: internal error".as_ptr(), {
        // SAFETY: httpd passes the live cmd_parms of this directive.
        let Some(cmd) = (unsafe { Cmd::from_ptr(cmd) }) else {
            return null();
        };
        if let Some(e) = cmd.check_global_only() {
            return e;
        }
        slog!(
            cmd.server(),
            WARNING,
            0,
            2,
            "FastCgiConfig only tunes dynamic FastCGI applications, which mod_fastcgi-rs does not run; the directive is ignored"
        );
        null()
    })
}

#[cold]
unsafe extern "C" fn cmd_unsupported(
    cmd: *mut ffi::cmd_parms,
    _m: *mut c_void,
    _argc: c_int,
    _argv: *const *mut c_char,
) -> *const c_char {
    boundary!(c"unsupported directive".as_ptr(), {
        // SAFETY: httpd passes the live cmd_parms of this directive.
        let Some(cmd) = (unsafe { Cmd::from_ptr(cmd) }) else {
            return null();
        };
        let name = cmd.directive_name();
        cmd.error(&format!(
            "{name} is not supported by mod_fastcgi-rs: it only connects to external FastCGI servers. \
             Run the application under its own process manager (for PHP: php-fpm) and use FastCgiExternalServer"
        ))
    })
}

/// Hooks that must see the walk's stat calls after this module: mpm-itk's (at MIDDLE, it
/// answers a missing path with its error, and the walk then ends in a 403 or 404 for the
/// virtual path when mpm_itk is loaded before this module).
static SUCC_DIRWALK: StaticPtrs<2> = StaticPtrs([c"mpm_itk.c".as_ptr(), null()]);

#[cold]
unsafe extern "C" fn register_hooks(_p: *mut ffi::apr_pool_t) {
    boundary!((), {
        crate::install_quiet_panic_hook();
        // SAFETY: registering hook functions with static, NULL-terminated successor lists
        // (or NULL = none).
        unsafe {
            // FIRST: it only answers for virtual paths of this module's own configuration
            // (declining everything else), and no other stat hook may answer for them before.
            ffi::ap_hook_dirwalk_stat(
                Some(dirwalk_stat),
                null(),
                SUCC_DIRWALK.0.as_ptr(),
                ffi::APR_HOOK_FIRST,
            );
            ffi::ap_hook_fixups(Some(fixups), null(), null(), ffi::APR_HOOK_MIDDLE);
            ffi::ap_hook_check_config(Some(check_config), null(), null(), ffi::APR_HOOK_MIDDLE);
            // The auth phases, run once per configuration (not again for a subrequest or
            // internal redirect under the same per-directory configuration). The
            // authenticator runs before mod_auth_basic/mod_auth_digest, which would otherwise
            // look for their own providers first.
            ffi::ap_hook_check_authn(
                Some(check_authn),
                null(),
                null(),
                ffi::APR_HOOK_FIRST,
                ffi::AP_AUTH_INTERNAL_PER_CONF as c_int,
            );
            ffi::ap_hook_check_authz(
                Some(check_authz),
                null(),
                null(),
                ffi::APR_HOOK_MIDDLE,
                ffi::AP_AUTH_INTERNAL_PER_CONF as c_int,
            );
            ffi::ap_hook_check_access(
                Some(check_access),
                null(),
                null(),
                ffi::APR_HOOK_MIDDLE,
                ffi::AP_AUTH_INTERNAL_PER_CONF as c_int,
            );
            ffi::ap_hook_handler(Some(handler), null(), null(), ffi::APR_HOOK_MIDDLE);
            ffi::ap_hook_post_config(Some(post_config), null(), null(), ffi::APR_HOOK_MIDDLE);
            ffi::ap_hook_child_init(Some(child_init), null(), null(), ffi::APR_HOOK_MIDDLE);
            ffi::ap_hook_child_stopping(Some(child_stopping), null(), null(), ffi::APR_HOOK_MIDDLE);
            // mod_status's optional hook (registered whether or not mod_status is loaded).
            // SAFETY: mod_status calls it as `int (*)(request_rec *, int)`, the type of
            // `status_hook`; APR stores it as a generic function pointer.
            let hook: unsafe extern "C" fn() = std::mem::transmute::<
                unsafe extern "C" fn(*mut ffi::request_rec, c_int) -> c_int,
                unsafe extern "C" fn(),
            >(status_hook);
            ffi::apr_optional_hook_add(
                c"status_hook".as_ptr(),
                Some(hook),
                null(),
                null(),
                ffi::APR_HOOK_MIDDLE,
            );
        }
    })
}

/// mod_status: a section with every FastCgiExternalServer's pool and totals.
unsafe extern "C" fn status_hook(r: *mut ffi::request_rec, flags: c_int) -> c_int {
    boundary!(ffi::OK, {
        // SAFETY: mod_status passes the live request it is answering, on this thread.
        let Some(mut req) = (unsafe { Request::from_ptr(r) }) else {
            return ffi::OK;
        };
        let Some(sh) = req.server().and_then(shared) else {
            return ffi::OK;
        };
        let rows: Vec<crate::status::Row<'_>> = sh
            .registry
            .iter()
            .map(|(def, rt)| crate::status::Row {
                path: &def.path,
                address: &def.address_text,
                snap: rt.snapshot(),
            })
            .collect();
        let text = if flags & ffi::AP_STATUS_SHORT as c_int != 0 {
            crate::status::render_short(&rows)
        } else {
            crate::status::render_html(&rows, flags & ffi::AP_STATUS_NOTABLE as c_int == 0)
        };
        req.write_body(text.as_bytes());
        ffi::OK
    })
}

/// Answers the directory walk's stat calls for the missing directories on the way to a
/// virtual path (as directories) and for a missing virtual path itself (as a file), so a
/// request is routed, split and access-checked as if they existed. Anything that exists on disk
/// is reported as it is.
unsafe extern "C" fn dirwalk_stat(
    finfo: *mut ffi::apr_finfo_t,
    r: *mut ffi::request_rec,
    wanted: i32,
) -> ffi::apr_status_t {
    boundary!(ffi::AP_DECLINED, {
        // SAFETY: httpd passes the live request being walked.
        let Some(req) = (unsafe { Request::from_ptr(r) }) else {
            return ffi::AP_DECLINED;
        };
        let Some(sh) = req.server().and_then(shared) else {
            return ffi::AP_DECLINED;
        };
        let Some(name) = req.filename() else {
            return ffi::AP_DECLINED;
        };
        let rest = || req.path_info().unwrap_or_default();
        let Some(kind) = sh.registry.fake_for(name, rest) else {
            return ffi::AP_DECLINED;
        };
        if finfo.is_null() {
            return ffi::AP_DECLINED;
        }
        // SAFETY: `finfo` is the walk's output struct; r->filename is a live C string.
        let rv = unsafe { ffi::apr_stat(finfo, (*r).filename, wanted, req.pool().as_ptr()) };
        if rv != libc::ENOENT {
            return rv;
        }
        // SAFETY: `finfo` is a live apr_finfo_t owned by the caller.
        unsafe {
            *finfo = ffi::apr_finfo_t::default();
            (*finfo).pool = req.pool().as_ptr();
            (*finfo).valid = ffi::APR_FINFO_TYPE;
            (*finfo).filetype = match kind {
                Fake::Dir => ffi::apr_filetype_e_APR_DIR,
                Fake::File => ffi::apr_filetype_e_APR_REG,
            };
            (*finfo).fname = (*r).filename;
        }
        ffi::APR_INCOMPLETE
    })
}

/// Routes requests whose filename is (or lies below) a virtual path to our handler.
unsafe extern "C" fn fixups(r: *mut ffi::request_rec) -> c_int {
    boundary!(ffi::DECLINED, {
        // SAFETY: httpd passes the live request.
        let Some(mut req) = (unsafe { Request::from_ptr(r) }) else {
            return ffi::DECLINED;
        };
        let Some(sh) = req.server().and_then(shared) else {
            return ffi::DECLINED;
        };
        let Some(name) = req.filename() else {
            return ffi::DECLINED;
        };
        if sh.registry.lookup(name).is_none() {
            return ffi::DECLINED;
        }
        req.set_handler(HANDLER);
        ffi::OK
    })
}

unsafe extern "C" fn handler(r: *mut ffi::request_rec) -> c_int {
    boundary!(r, ffi::HTTP_INTERNAL_SERVER_ERROR, {
        // SAFETY: httpd passes the live request, used by this thread only.
        let Some(mut req) = (unsafe { Request::from_ptr(r) }) else {
            return ffi::DECLINED;
        };
        if req.handler() != Some(HANDLER.to_bytes()) {
            return ffi::DECLINED;
        }
        let Some(sh) = req.server().and_then(shared) else {
            return ffi::DECLINED;
        };
        let Some(name) = req.filename() else {
            return ffi::DECLINED;
        };
        let Some((def, rt)) = sh.registry.lookup(name) else {
            // The handler was set by the configuration (AddHandler/SetHandler fastcgi-script)
            // for a file no definition serves: mod_fastcgi ran it as a dynamic application.
            // Never decline: the default handler would send the script's source.
            if !req.file_exists() {
                crate::rlog!(
                    &req,
                    INFO,
                    0,
                    91,
                    "FastCGI: handler fastcgi-script: \"{}\" does not exist and no FastCgiExternalServer serves it",
                    crate::httpd::log::escape(name)
                );
                return ffi::HTTP_NOT_FOUND;
            }
            crate::rlog!(
                &req,
                ERR,
                0,
                90,
                "FastCGI: handler fastcgi-script: no FastCgiExternalServer serves \"{}\", and dynamic FastCGI applications are not supported (run it under its own process manager and define it with FastCgiExternalServer)",
                crate::httpd::log::escape(name)
            );
            return ffi::HTTP_INTERNAL_SERVER_ERROR;
        };
        crate::handler::handle(&mut req, def, rt)
    })
}

#[cold]
unsafe extern "C" fn post_config(
    pconf: *mut ffi::apr_pool_t,
    _plog: *mut ffi::apr_pool_t,
    _ptemp: *mut ffi::apr_pool_t,
    s: *mut ffi::server_rec,
) -> c_int {
    boundary!(ffi::OK, {
        // SAFETY: httpd passes the live main server.
        let server = unsafe { Server::from_ptr(s) };
        let Some(sh) = server.and_then(shared) else {
            return ffi::OK;
        };
        // Instance-wide connection counters, inherited by the children forked after this.
        let n = sh.registry.iter().count();
        match crate::ffi::sock::SharedCounterMap::new(n) {
            Some(map) => {
                for (i, (_, rt)) in sh.registry.iter().enumerate() {
                    if let Some(c) = map.get(i) {
                        rt.attach(c);
                    }
                }
                // Unmapped with pconf (before the runtimes, which were adopted earlier);
                // children keep their inherited mapping.
                // SAFETY: httpd passes its live configuration pool.
                if let Some(p) = unsafe { Pool::from_ptr(pconf) } {
                    p.adopt(map);
                }
            }
            None => slog!(
                server,
                WARNING,
                0,
                3,
                "FastCGI: cannot map shared memory for connection accounting; -max-conns and the starvation guard work per child process only"
            ),
        }
        // mpm-itk runs every client connection in a process of its own, forked from the
        // child and gone with the connection: nothing would expire its pooled connections or
        // give them up to other processes (there is no reaper thread in a forked process),
        // so every definition uses one connection per request there.
        let forks = crate::httpd::module_loaded(c"mpm_itk.c");
        FORKS_PER_CONNECTION.store(forks, std::sync::atomic::Ordering::Relaxed);
        if forks {
            for (def, rt) in sh.registry.iter() {
                let asked = rt.keep_conn();
                rt.forked_per_connection();
                if !asked {
                    continue;
                }
                slog!(
                    server,
                    WARNING,
                    0,
                    7,
                    "FastCGI: mpm-itk runs each client connection in a process of its own: connections to server \"{}\" are not pooled (one per request; -max-conns still applies)",
                    String::from_utf8_lossy(&def.path)
                );
            }
        }
        // Definitions that reach the same application (several virtual paths, one php-fpm
        // pool) guard each other's backlog.
        crate::backend::link_siblings(
            sh.registry
                .iter()
                .map(|(def, rt)| (def.targets.as_slice(), rt)),
        );
        for (def, _) in sh.registry.iter() {
            if (def.user.is_some() || def.group.is_some()) && !sh.wrapper {
                slog!(
                    server,
                    WARNING,
                    0,
                    1,
                    "FastCGI: there is no fastcgi wrapper set, user/group options are ignored (server \"{}\")",
                    String::from_utf8_lossy(&def.path)
                );
            }
        }
        ffi::OK
    })
}

/// Starts this child's reaper (pool expiry, read-block trimming); it stops (and idle
/// connections close) with the child pool.
unsafe extern "C" fn child_init(pchild: *mut ffi::apr_pool_t, s: *mut ffi::server_rec) {
    boundary!((), {
        // SAFETY: httpd passes the child's live pool and main server.
        let (Some(pool), Some(server)) = (unsafe { Pool::from_ptr(pchild) }, unsafe {
            Server::from_ptr(s)
        }) else {
            return;
        };
        // The read blocks the child's threads share go with the child's pool.
        struct Blocks;
        impl Drop for Blocks {
            fn drop(&mut self) {
                crate::blocks::close();
            }
        }
        pool.adopt(Blocks);
        let Some(sh) = shared(server) else { return };
        let rts: Vec<_> = sh
            .registry
            .iter()
            .filter(|(_, rt)| rt.keep_conn())
            .map(|(_, rt)| std::sync::Arc::clone(rt))
            .collect();
        let mut generation: c_int = 0;
        // SAFETY: plain MPM query into a live int.
        let known = unsafe { ffi::ap_mpm_query(ffi::AP_MPMQ_GENERATION, &mut generation) } == 0;
        // Which generation a child belongs to is what tells a restarted one from a leftover of
        // the previous configuration (prefork may fork a child just before it restarts).
        slog!(
            Some(server),
            DEBUG,
            0,
            5,
            "FastCGI: child process {} started (generation {}); {} server(s) with a connection pool",
            std::process::id(),
            if known {
                generation.to_string()
            } else {
                "unknown".into()
            },
            rts.len()
        );
        // mpm-itk forks this process for each connection and never serves one in it: no
        // reaper, whose locks a fork could copy held into the process that serves.
        if FORKS_PER_CONNECTION.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        // (started without a pool too: it also gives back the read blocks' memory)
        let superseded = move || known && running_generation().is_some_and(|g| g != generation);
        match Reaper::start(rts, superseded) {
            Ok(r) => {
                pool.adopt(r);
            }
            Err(e) => slog!(
                Some(server),
                WARNING,
                e.raw_os_error().unwrap_or(0),
                4,
                "FastCGI: cannot start the reaper thread ({e}); idle pooled connections expire only when used, and unused read buffers are not given back"
            ),
        }
    })
}

/// Set at post_config where mpm-itk is loaded (a process forked per client connection).
static FORKS_PER_CONNECTION: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// The generation of children the parent currently runs (from the scoreboard in shared memory).
fn running_generation() -> Option<c_int> {
    // SAFETY: ap_scoreboard_image is set before children start and points to shared memory
    // that stays mapped in the child; the int is written only by the parent (a racy read of a
    // whole int is fine for this check).
    unsafe {
        let sb = ffi::ap_scoreboard_image;
        if sb.is_null() || (*sb).global.is_null() {
            return None;
        }
        Some(std::ptr::read_volatile(
            &raw const (*(*sb).global).running_generation,
        ))
    }
}

/// A child begins to stop (graceful restart or stop, process reduction): its idle pooled
/// connections are closed at once and nothing more is pooled.
unsafe extern "C" fn child_stopping(_pchild: *mut ffi::apr_pool_t, _graceful: c_int) {
    boundary!((), {
        // SAFETY: ap_server_conf is the main server of the running generation (or NULL).
        let Some(server) = (unsafe { Server::from_ptr(ffi::ap_server_conf) }) else {
            return;
        };
        let Some(sh) = shared(server) else { return };
        for (_, rt) in sh.registry.iter() {
            rt.stop_pooling();
        }
    })
}

#[allow(dead_code)]
fn _assert_mut_static() {
    // The record must stay a `static mut` (see the comment on `fastcgi_module`).
    let _ = addr_of_mut!(fastcgi_module);
}
