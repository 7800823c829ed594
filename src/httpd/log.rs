//! The one logging helper. Every line carries a stable message id (`FCGI###`), and names the
//! FastCGI server it is about; text is always passed through a constant `"%s"` format.
use std::ffi::c_int;

use super::{Request, Server, cstring_lossy};
use crate::ffi;

pub const ERR: c_int = ffi::APLOG_ERR;
pub const WARNING: c_int = ffi::APLOG_WARNING;
pub const INFO: c_int = ffi::APLOG_INFO;
pub const DEBUG: c_int = ffi::APLOG_DEBUG;
pub const TRACE3: c_int = ffi::APLOG_TRACE3;
/// An error found while checking the configuration: printed to the console of `apachectl -t`
/// and of a start, without the usual log prefix.
pub const STARTUP_ERR: c_int = ffi::APLOG_ERR | ffi::APLOG_STARTUP as c_int;

/// Logs one line for a request: `FCGI<id>: <msg>`; `status` is an errno/apr_status_t shown
/// by httpd as `(n)text:` (0 for none).
pub fn rlog(
    r: &Request<'_>,
    file: &'static std::ffi::CStr,
    line: u32,
    level: c_int,
    status: i32,
    id: u16,
    msg: &str,
) {
    if level > ffi::APLOG_NOTICE && r.log_level() < level {
        return;
    }
    let text = cstring_lossy(format!("FCGI{id:03}: {msg}").as_bytes());
    // SAFETY: live request; constant "%s" format with one NUL-terminated argument.
    unsafe {
        ffi::ap_log_rerror_(
            file.as_ptr(),
            line as c_int,
            crate::module::module_index(),
            level,
            status,
            r.as_ptr(),
            c"%s".as_ptr(),
            text.as_ptr(),
        );
    }
}

/// Logs one line for a server (configuration and process-level events).
pub fn slog(
    s: Option<Server<'_>>,
    file: &'static std::ffi::CStr,
    line: u32,
    level: c_int,
    status: i32,
    id: u16,
    msg: &str,
) {
    let text = cstring_lossy(format!("FCGI{id:03}: {msg}").as_bytes());
    let sp = s
        .map(|s| s.as_ptr() as *const ffi::server_rec)
        .unwrap_or(std::ptr::null());
    // SAFETY: `sp` is a live server_rec or NULL (allowed by ap_log_error_); constant format.
    unsafe {
        ffi::ap_log_error_(
            file.as_ptr(),
            line as c_int,
            crate::module::module_index(),
            level,
            status,
            sp,
            c"%s".as_ptr(),
            text.as_ptr(),
        );
    }
}

/// `rlog!(r, LEVEL, status, id, "fmt", args…)`
#[macro_export]
macro_rules! rlog {
    ($r:expr, $level:ident, $status:expr, $id:expr, $($fmt:tt)+) => {
        $crate::httpd::log::rlog(
            $r,
            // SAFETY-free: file!() has no NUL bytes.
            match ::std::ffi::CStr::from_bytes_with_nul(concat!(file!(), "\0").as_bytes()) { Ok(c) => c, Err(_) => c"?" },
            line!(),
            $crate::httpd::log::$level,
            $status,
            $id,
            &format!($($fmt)+),
        )
    };
}

/// `slog!(server_option, LEVEL, status, id, "fmt", args…)`
#[macro_export]
macro_rules! slog {
    ($s:expr, $level:ident, $status:expr, $id:expr, $($fmt:tt)+) => {
        $crate::httpd::log::slog(
            $s,
            match ::std::ffi::CStr::from_bytes_with_nul(concat!(file!(), "\0").as_bytes()) { Ok(c) => c, Err(_) => c"?" },
            line!(),
            $crate::httpd::log::$level,
            $status,
            $id,
            &format!($($fmt)+),
        )
    };
}

/// Escapes bytes for a log line: printable ASCII kept, everything else as `\xNN`.
pub fn escape(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        if (0x20..0x7f).contains(&c) && c != b'\\' {
            s.push(c as char);
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    s
}
