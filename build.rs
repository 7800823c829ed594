//! Generates the httpd/APR bindings (bindgen over apache-headers/wrapper.h with the allowlist in
//! apache-headers/allowlist.txt) and compiles the macro shims (apache-headers/shim.c).
//! Header locations come from `apxs -q` (override the tool with APXS=/path/to/apxs); without apxs
//! we fall back to apr-1-config and pkg-config (apr-1), plus APACHE_INCLUDEDIR if set.
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn query(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    for v in ["APXS", "APACHE_INCLUDEDIR", "APR_INCLUDEDIR"] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    println!("cargo:rerun-if-changed=apache-headers");
    println!("cargo:rerun-if-changed=build.rs");

    let apxs = env::var("APXS").unwrap_or_else(|_| {
        ["apxs", "apxs2", "/usr/bin/apxs", "/usr/bin/apxs2"]
            .iter()
            .find(|c| query(c, &["-q", "INCLUDEDIR"]).is_some())
            .unwrap_or(&"apxs")
            .to_string()
    });
    let mut incs: Vec<String> = Vec::new();
    let mut defs: Vec<String> = Vec::new();
    if let Some(d) = env::var("APACHE_INCLUDEDIR")
        .ok()
        .or_else(|| query(&apxs, &["-q", "INCLUDEDIR"]))
    {
        incs.push(d);
    }
    for q in ["APR_INCLUDEDIR", "APU_INCLUDEDIR"] {
        if let Some(d) = env::var(q).ok().or_else(|| query(&apxs, &["-q", q])) {
            incs.push(d);
        }
    }
    if let Some(f) = query(&apxs, &["-q", "EXTRA_CPPFLAGS"]) {
        defs.extend(
            f.split_whitespace()
                .filter(|a| a.starts_with("-D"))
                .map(str::to_string),
        );
    }
    if incs.len() < 2 {
        // No apxs: ask APR itself.
        let apr = query("apr-1-config", &["--includes"])
            .or_else(|| query("pkg-config", &["--cflags", "apr-1"]));
        if let Some(f) = apr {
            incs.extend(
                f.split_whitespace()
                    .filter_map(|a| a.strip_prefix("-I"))
                    .map(str::to_string),
            );
        }
        if let Some(f) = query("apr-1-config", &["--cppflags"]) {
            defs.extend(
                f.split_whitespace()
                    .filter(|a| a.starts_with("-D"))
                    .map(str::to_string),
            );
        }
    }
    if incs.is_empty() {
        panic!(
            "cannot find the httpd/APR headers: install apache2-dev (Debian) or httpd-devel, \
             or set APXS=/path/to/apxs or APACHE_INCLUDEDIR/APR_INCLUDEDIR"
        );
    }
    incs.dedup();
    if defs.is_empty() {
        defs = vec![
            "-DLINUX".into(),
            "-D_REENTRANT".into(),
            "-D_GNU_SOURCE".into(),
        ];
    }

    let allow = std::fs::read_to_string("apache-headers/allowlist.txt")
        .expect("apache-headers/allowlist.txt");
    let mut b = bindgen::Builder::default()
        .header("apache-headers/wrapper.h")
        .clang_args(incs.iter().map(|i| format!("-I{i}")))
        .clang_args(defs.iter().cloned())
        .layout_tests(false)
        .generate_comments(false)
        .derive_default(true)
        .default_macro_constant_type(bindgen::MacroTypeVariation::Signed)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for line in allow
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (kind, re) = line
            .split_once(' ')
            .expect("allowlist line: <kind> <regex>");
        b = match kind {
            "function" => b.allowlist_function(re.trim()),
            "type" => b.allowlist_type(re.trim()),
            "var" => b.allowlist_var(re.trim()),
            other => panic!("allowlist: unknown kind {other}"),
        };
    }
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    b.generate()
        .expect("bindgen failed")
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings");

    let mut cc = cc::Build::new();
    cc.file("apache-headers/shim.c").warnings(true);
    for i in &incs {
        cc.include(i);
    }
    for d in &defs {
        let d = d.trim_start_matches("-D");
        match d.split_once('=') {
            Some((k, v)) => cc.define(k, Some(v)),
            None => cc.define(d, None),
        };
    }
    cc.compile("fcgi_shim");
}
