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

    cold_text_layout(&out);
}

/// The input sections of the code that never runs in a working server's children: the standard
/// library's backtrace printer and DWARF symbolizer (gimli, addr2line, object, miniz_oxide,
/// rustc_demangle), which Rust links into every program through its default panic hook although
/// the module replaces that hook (about 180 KB, a third of the module's code); and the module's
/// own functions marked `#[cold]` (rustc puts them in `.text.unlikely.<symbol>`): the reading of
/// the configuration, which runs in Apache's parent only (about 35 KB). (Code that a child runs
/// however rarely — mod_status's page, the log line of a failed connect — stays with the rest:
/// running it would map 64 KiB of this section.)
/// The standard library's own `#[cold]` functions stay with the rest: some run in every child
/// (a `Vec` that grows, the CPU feature detection of `memchr`).
const COLD_SECTIONS: &[&str] = &[
    ".text.*5gimli*",
    ".text.*9addr2line*",
    ".text.*6object*",
    ".text.*11miniz_oxide*",
    ".text.*14rustc_demangle*",
    ".text.*12backtrace_rs*",
    ".text.*3std9backtrace*",
    ".text.*3sys9backtrace10__print*",
    ".text.*3sys9backtrace13BacktraceLock*",
    ".text.*3sys9backtrace4lock*",
    ".text.*3sys9backtrace15output_filename*",
    ".text.*12default_hook*",
    ".text.unlikely.*11mod_fastcgi*",
];

/// Puts the cold sections together, before the rest of the code, and starts the rest on a
/// 64 KiB boundary (with segments aligned to 64 KiB, so that the boundary holds where the
/// library is loaded). Linux maps a file's pages around every page a process touches, 64 KiB at
/// a time ("fault-around"): spread through the code, the never-run third was mapped into every
/// Apache process with the rest and counted in its RSS; kept apart, it is never mapped. The
/// script only adds a section (`INSERT`), so the linker's default layout stays as it is; if the
/// linker does not take it (a test link fails), the module is linked as before.
fn cold_text_layout(out: &std::path::Path) {
    let script = format!(
        "/* generated by build.rs: see cold_text_layout() */\nSECTIONS\n{{\n  .text.cold : {{\n    *({})\n    . = ALIGN(0x10000);\n  }}\n}}\nINSERT BEFORE .text;\n",
        COLD_SECTIONS.join(" ")
    );
    let ld = out.join("cold-text.ld");
    std::fs::write(&ld, script).expect("write cold-text.ld");
    let args = [
        format!("-Wl,-T,{}", ld.display()),
        "-Wl,-z,max-page-size=0x10000".to_string(),
    ];
    let probe_c = out.join("cold-probe.c");
    std::fs::write(&probe_c, "int cold_probe(void) { return 0; }\n").expect("write probe");
    let compiler = cc::Build::new().get_compiler();
    let linked = compiler
        .to_command()
        .args(["-shared", "-fPIC", "-o"])
        .arg(out.join("cold-probe.so"))
        .arg(&probe_c)
        .args(&args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if linked {
        for a in &args {
            println!("cargo:rustc-cdylib-link-arg={a}");
        }
    } else {
        println!(
            "cargo:warning=the linker does not take the cold-code layout script; linking without it \
             (the module works the same, its processes map about 180 KB more code)"
        );
    }
}
