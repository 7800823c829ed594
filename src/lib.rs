//! mod_fastcgi-rs: an Apache httpd 2.4 module implementing mod_fastcgi's
//! `FastCgiExternalServer`, written in Rust and loaded through the C ABI.
//!
//! Layout: `fcgi` (the FastCGI protocol, pure safe Rust) and `config` (directive parsing and
//! routing, pure) form the safe core, unit-tested without httpd; `ffi` (bindings and shims),
//! `httpd` (safe wrappers), `module` (module record, directives, hooks), `backend`
//! (connections) and `handler` (the request exchange) are the shell around it (`reuse`: the
//! per-thread buffers the handler recycles, safe and unit-tested; `blocks`: the read blocks a
//! child's threads share), tested through a
//! real Apache and php-fpm (`t/`).
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod blocks;
pub mod config;
mod diag;
pub mod fcgi;
mod reuse;
mod status;

#[cfg(not(test))]
mod backend;
#[cfg(not(test))]
mod ffi;
#[cfg(not(test))]
mod handler;
#[cfg(not(test))]
mod httpd;
#[cfg(not(test))]
pub mod module;
/// The socket helpers (plain libc, no httpd) alone, for their unit tests.
#[cfg(test)]
#[path = "ffi/sock.rs"]
#[allow(dead_code)]
mod sock;

/// The panic boundary every `extern "C"` entry point runs its body in: a panic is caught,
/// logged once (with the request when one is given) and turned into `$default`, so it never
/// unwinds into httpd.
///
/// `boundary!(default, { body })` or `boundary!(request_ptr, default, { body })`.
#[macro_export]
macro_rules! boundary {
    ($r:expr, $default:expr, $body:block) => {{
        let __r: *mut $crate::ffi::request_rec = $r;
        match ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| $body)) {
            Ok(v) => v,
            Err(payload) => {
                $crate::report_panic(__r, &*payload, concat!(file!(), ":", line!()));
                $default
            }
        }
    }};
    ($default:expr, $body:block) => {
        $crate::boundary!(::std::ptr::null_mut(), $default, $body)
    };
}

#[cfg(not(test))]
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Logs a caught panic (one error line).
#[cfg(not(test))]
#[doc(hidden)]
pub(crate) fn report_panic(
    r: *mut ffi::request_rec,
    payload: &(dyn std::any::Any + Send),
    at: &str,
) {
    let msg = format!(
        "FastCGI: internal error (panic caught at {at}): {}; request answered with 500",
        panic_text(payload)
    );
    // Logging itself must not panic out of here.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: `r` is NULL or the live request of the entry point that caught the panic.
        match unsafe { httpd::Request::from_ptr(r) } {
            Some(req) => rlog!(&req, ERR, 0, 70, "{msg}"),
            None => slog!(None, ERR, 0, 70, "{msg}"),
        }
    }));
}

/// Silences Rust's default panic message on stderr (the boundary logs one line instead).
#[cfg(not(test))]
fn install_quiet_panic_hook() {
    std::panic::set_hook(Box::new(|_| {}));
}
