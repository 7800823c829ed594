//! Assertion helpers returning `Result<(), String>` with enough context to debug a failure.
#![allow(dead_code)]

use std::path::Path;

use super::http::Response;

/// Marker for [`expect_vars`]: the key must be absent.
pub const ABSENT: &str = "\u{0}<absent>";

pub fn expect_status(r: &Response, want: u16) -> Result<(), String> {
    if r.status != want {
        return Err(format!("expected status {want}, got {}", r.summary()));
    }
    Ok(())
}

/// Check `KEY=value` lines of the body; reports every mismatch at once.
pub fn expect_vars(r: &Response, want: &[(&str, &str)]) -> Result<(), String> {
    let kv = r.kv();
    let mut errs = Vec::new();
    for (k, v) in want {
        match (kv.get(*k), *v == ABSENT) {
            (None, true) => {}
            (Some(got), true) => errs.push(format!("{k} should be absent but is {got:?}")),
            (None, false) => errs.push(format!("{k} missing (want {v:?})")),
            (Some(got), false) if got != v => errs.push(format!("{k}={got:?}, want {v:?}")),
            _ => {}
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!("{}; response: {}", errs.join("; "), r.summary()))
    }
}

pub fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(msg()) }
}

/// Lines of a log that look like trouble: module/core errors, crashes.
pub fn bad_log_lines(path: &Path, from: u64) -> Vec<String> {
    let text = super::util::read_from(path, from);
    text.lines()
        .filter(|l| {
            l.contains("[fastcgi:error]")
                || l.contains("[fastcgi:crit]")
                || l.contains("[fastcgi:alert]")
                || l.contains("[fastcgi:emerg]")
                || l.contains("[core:error]")
                || l.contains("[core:crit]")
                || l.contains("[core:alert]")
                || l.contains("[core:emerg]")
                || l.contains("exit signal")
                || l.contains("panicked")
        })
        .map(|l| l.to_string())
        .collect()
}

pub fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
