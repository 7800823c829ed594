//! Small helpers shared by the integration harness: temp dirs, files, ports, md5 (via the
//! `md5sum` command), a deterministic PRNG, log reading.
#![allow(dead_code)]

use std::ffi::CString;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Create a fresh directory from a `mkdtemp(3)` template such as `/tmp/mfcgi-test.XXXXXX`,
/// then chmod it 0755 so that unprivileged server users can traverse it.
pub fn mkdtemp(template: &str) -> Result<PathBuf, String> {
    let c = CString::new(template).map_err(|e| e.to_string())?;
    let mut buf = c.into_bytes_with_nul();
    let p = unsafe { libc::mkdtemp(buf.as_mut_ptr() as *mut libc::c_char) };
    if p.is_null() {
        return Err(format!(
            "mkdtemp({template}): {}",
            std::io::Error::last_os_error()
        ));
    }
    buf.pop();
    let path = PathBuf::from(String::from_utf8(buf).map_err(|e| e.to_string())?);
    chmod(&path, 0o755)?;
    Ok(path)
}

pub fn chmod(path: &Path, mode: u32) -> Result<(), String> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {:o} {}: {e}", mode, path.display()))
}

/// mkdir -p with mode 0755 on every directory created.
pub fn mkdir_p(path: &Path) -> Result<(), String> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        mkdir_p(parent)?;
    }
    fs::create_dir(path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
    chmod(path, 0o755)
}

/// Write a file (creating parent directories) readable by everybody (0644).
pub fn write_file(path: &Path, data: impl AsRef<[u8]>) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        mkdir_p(parent)?;
    }
    fs::write(path, data).map_err(|e| format!("write {}: {e}", path.display()))?;
    chmod(path, 0o644)
}

pub fn read_to_string_lossy(path: &Path) -> String {
    match fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => String::new(),
    }
}

/// Current size of a file (0 if missing); used as a log offset marker.
pub fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Text of a file from byte offset `from` (lossy UTF-8).
pub fn read_from(path: &Path, from: u64) -> String {
    let mut out = Vec::new();
    if let Ok(mut f) = fs::File::open(path)
        && f.seek(SeekFrom::Start(from)).is_ok()
    {
        let _ = f.read_to_end(&mut out);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Last `n` lines of a text file.
pub fn tail(path: &Path, n: usize) -> String {
    let s = read_to_string_lossy(path);
    let lines: Vec<&str> = s.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

/// Free loopback TCP ports, never the same one twice in this process, and outside the kernel's
/// ephemeral range (32768-60999 here), so neither an earlier hand-out nor the tests' own client
/// connections can be holding one when a server binds it. Each is checked by binding it.
pub fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LO: u32 = 20000;
    const SPAN: u32 = 12000; // 20000..32000
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    if NEXT.load(Ordering::Acquire) == u32::MAX {
        // Spread concurrent runs (CI, developers) over the range by process id.
        let start = (std::process::id() * 97) % SPAN;
        let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::AcqRel, Ordering::Acquire);
    }
    let mut ports = Vec::new();
    for _ in 0..SPAN {
        if ports.len() == n {
            break;
        }
        let p = (LO + NEXT.fetch_add(1, Ordering::AcqRel) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            ports.push(p);
        }
    }
    if ports.len() < n {
        return Err(format!(
            "only {} free ports found in {LO}..{}",
            ports.len(),
            LO + SPAN
        ));
    }
    Ok(ports)
}

/// Runs a command to its end: its stdout, or an error naming `what` with the exit status and
/// what it printed.
pub fn run(cmd: &mut Command, what: &str) -> Result<Vec<u8>, String> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out.stdout)
}

/// Incremental md5 through the `md5sum` command (no crates).
pub struct Md5 {
    child: Child,
}

impl Md5 {
    pub fn new() -> Result<Md5, String> {
        let child = Command::new("md5sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn md5sum: {e}"))?;
        Ok(Md5 { child })
    }
    pub fn update(&mut self, data: &[u8]) -> Result<(), String> {
        self.child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(data)
            .map_err(|e| format!("md5sum stdin: {e}"))
    }
    pub fn finish(mut self) -> Result<String, String> {
        drop(self.child.stdin.take());
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .map_err(|e| e.to_string())?;
        let st = self.child.wait().map_err(|e| e.to_string())?;
        if !st.success() {
            return Err(format!("md5sum failed: {st}"));
        }
        out.split_whitespace()
            .next()
            .map(|s| s.to_string())
            .ok_or_else(|| "md5sum printed nothing".to_string())
    }
}

pub fn md5_hex(data: &[u8]) -> Result<String, String> {
    let mut m = Md5::new()?;
    m.update(data)?;
    m.finish()
}

/// Deterministic xorshift64* generator for request bodies.
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Prng {
        Prng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

pub fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parse `KEY=value` lines (as printed by the PHP info scripts); the first `=` splits.
pub fn parse_kv(body: &str) -> std::collections::BTreeMap<String, String> {
    let mut m = std::collections::BTreeMap::new();
    for line in body.lines() {
        if let Some((k, v)) = line.split_once('=') {
            m.entry(k.to_string()).or_insert_with(|| v.to_string());
        }
    }
    m
}

/// Escape a string for a double-quoted Apache config argument.
pub fn q(s: impl AsRef<str>) -> String {
    format!(
        "\"{}\"",
        s.as_ref().replace('\\', "\\\\").replace('"', "\\\"")
    )
}

/// Resolve a user name to (uid, gid) via getpwnam(3).
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    let c = CString::new(name).ok()?;
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    unsafe { Some(((*pw).pw_uid, (*pw).pw_gid)) }
}

/// Primary group name of a user.
pub fn primary_group(user: &str) -> Option<String> {
    let (_, gid) = user_ids(user)?;
    let gr = unsafe { libc::getgrgid(gid) };
    if gr.is_null() {
        return None;
    }
    let name = unsafe { std::ffi::CStr::from_ptr((*gr).gr_name) };
    Some(name.to_string_lossy().into_owned())
}
