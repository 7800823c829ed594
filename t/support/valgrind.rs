//! Valgrind mode of the harness (`MFCGI_VALGRIND=1`): the suite's main Apache runs as
//! `valgrind --tool=memcheck ... apache2 -f <conf> -X` (prefork, one process), and after the
//! last test its memcheck log(s) are read back here.
//!
//! Verdict: any memory error (invalid read/write/free, mismatched free, use of uninitialised
//! memory, overlapping copy) fails, wherever it is; a "definitely lost" record fails when its
//! stack goes through the module (httpd and APR may leak a few blocks at exit by design), or
//! when a frame cannot be attributed at all (`???` without an object: it could be ours).
//!
//! httpd unloads the modules at exit, before valgrind's leak search; `--keep-debuginfo=yes`
//! keeps their symbols so leak stacks through the module still name it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Memcheck options; the log is `<log_dir>/valgrind.<pid>.log`.
pub fn command(apache_bin: &Path, conf: &Path, log_dir: &Path) -> Command {
    let mut cmd = Command::new("valgrind");
    cmd.arg("--tool=memcheck")
        .arg("--leak-check=full")
        .arg("--show-leak-kinds=definite")
        .arg("--num-callers=30")
        .arg("--keep-debuginfo=yes")
        // no gdbserver FIFOs in /tmp (Apache drops to www-data and could not remove them)
        .arg("--vgdb=no")
        .arg(format!(
            "--log-file={}",
            log_dir.join("valgrind.%p.log").display()
        ))
        .arg(apache_bin)
        .arg("-f")
        .arg(conf)
        .arg("-X");
    cmd
}

/// `valgrind --version`, or why it cannot run.
pub fn version() -> Result<String, String> {
    let out = Command::new("valgrind")
        .arg("--version")
        .output()
        .map_err(|e| {
            format!("MFCGI_VALGRIND=1 but valgrind cannot be run ({e}); install it: apt-get install valgrind")
        })?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The memcheck logs written into `log_dir`.
pub fn logs(log_dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(log_dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("valgrind.") && n.ends_with(".log"))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Error kinds that fail the run wherever they come from (first line of a memcheck error).
const ERROR_KINDS: &[&str] = &[
    "Invalid read",
    "Invalid write",
    "Invalid free",
    "Mismatched free",
    "uninitialised",
    "Source and destination overlap",
];

/// A stack frame in the module: Rust symbols (`mod_fastcgi::...`), the .so when there is no
/// debug info, or the C shim compiled into it.
fn in_module(record: &str) -> bool {
    record.contains("mod_fastcgi") || record.contains("shim.c:")
}

/// A frame valgrind could not attribute to any object (`by 0x508F691: ???`); a frame with an
/// object but no symbol reads `??? (in /usr/sbin/apache2)`.
fn unknown_frame(record: &str) -> bool {
    record.lines().any(|l| l.trim_end().ends_with(": ???"))
}

/// What one or more memcheck logs say.
#[derive(Debug, Default)]
pub struct Report {
    pub logs: usize,
    /// Logs that reached the heap summary (valgrind saw the process exit).
    pub finished: usize,
    /// Memory errors of the kinds in `ERROR_KINDS` (the records themselves).
    pub errors: Vec<String>,
    /// Number of "definitely lost" loss records.
    pub definite: usize,
    /// The definitely-lost records whose stack contains the module.
    pub ours: Vec<String>,
    /// Definitely-lost records (not ours) with a frame in unknown code (`???`, no object).
    pub unattributed: Vec<String>,
}

impl Report {
    pub fn add_log(&mut self, text: &str) {
        self.logs += 1;
        if text.contains("HEAP SUMMARY:") {
            self.finished += 1;
        }
        for rec in records(text) {
            let first = rec.lines().next().unwrap_or("");
            if first.contains("definitely lost in loss record") {
                self.definite += 1;
                if in_module(&rec) {
                    self.ours.push(rec);
                } else if unknown_frame(&rec) {
                    self.unattributed.push(rec);
                }
            } else if ERROR_KINDS.iter().any(|k| first.contains(k)) {
                self.errors.push(rec);
            }
        }
    }

    pub fn clean(&self) -> bool {
        self.logs > 0
            && self.finished == self.logs
            && self.errors.is_empty()
            && self.ours.is_empty()
            && self.unattributed.is_empty()
    }

    pub fn summary(&self, requests: usize) -> String {
        format!(
            "valgrind memcheck: {} log(s) ({} complete), {} memory error(s), {} definite-leak record(s), {} with mod_fastcgi in the stack, {} unattributed, {} request(s) served",
            self.logs,
            self.finished,
            self.errors.len(),
            self.definite,
            self.ours.len(),
            self.unattributed.len(),
            requests
        )
    }

    /// Why the run fails (empty when clean); shows the first records.
    pub fn failure(&self) -> String {
        let mut s = Vec::new();
        if self.logs == 0 {
            s.push("no valgrind log written".to_string());
        } else if self.finished < self.logs {
            s.push(format!(
                "{} of {} log(s) without a heap summary (Apache killed before valgrind finished?)",
                self.logs - self.finished,
                self.logs
            ));
        }
        if !self.errors.is_empty() {
            s.push(format!(
                "{} memory error(s); first:\n{}",
                self.errors.len(),
                self.errors
                    .iter()
                    .take(3)
                    .map(|r| indent(r))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
        if !self.ours.is_empty() {
            s.push(format!(
                "{} definite leak(s) through mod_fastcgi; first:\n{}",
                self.ours.len(),
                self.ours
                    .iter()
                    .take(3)
                    .map(|r| indent(r))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
        if !self.unattributed.is_empty() {
            s.push(format!(
                "{} definite leak(s) through unknown code (`???`, possibly the module); first:\n{}",
                self.unattributed.len(),
                self.unattributed
                    .iter()
                    .take(3)
                    .map(|r| indent(r))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
        s.join("; ")
    }
}

fn indent(r: &str) -> String {
    r.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The log split into records: runs of non-empty lines, with the `==pid== ` prefix removed.
pub fn records(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Vec<&str> = Vec::new();
    for line in text.lines() {
        let body = strip_pid(line);
        if body.trim().is_empty() {
            if !cur.is_empty() {
                out.push(cur.join("\n"));
                cur.clear();
            }
        } else {
            cur.push(body);
        }
    }
    if !cur.is_empty() {
        out.push(cur.join("\n"));
    }
    out
}

/// `==123== text` → `text` (lines without the prefix are kept as they are).
fn strip_pid(line: &str) -> &str {
    if let Some(rest) = line.strip_prefix("==")
        && let Some(i) = rest.find("==")
        && rest[..i].bytes().all(|b| b.is_ascii_digit())
    {
        return rest[i + 2..].strip_prefix(' ').unwrap_or(&rest[i + 2..]);
    }
    line
}

/// Read every log in `log_dir`.
pub fn check_dir(log_dir: &Path) -> Report {
    let mut r = Report::default();
    for l in logs(log_dir) {
        r.add_log(&std::fs::read_to_string(&l).unwrap_or_default());
    }
    r
}
