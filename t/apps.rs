//! A real PHP application through the module: DokuWiki (Debian's `dokuwiki` package, which
//! `make deps` installs) copied into the temp dir with its own configuration and data, served by
//! php-fpm behind the mod_fastcgi recipe (AddType + Action + Alias + FastCgiExternalServer on a
//! virtual path whose directory does not exist), with the pool on.
//!
//! What a migration is judged by: log in (POST, cookies, a redirect built from the server
//! variables), save a page (a large UTF-8 form body), read it back through mod_rewrite's pretty
//! URLs (`.htaccess`, `userewrite=1`) and through PATH_INFO (`userewrite=2`, `/doku.php/<id>`),
//! upload a binary file as multipart/form-data and get it back byte for byte, and the
//! application's own HTTP caching: ETag / Last-Modified answered with 304 and no body, Range
//! answered with 206, HEAD without a body.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::check::{ensure, expect_status, p};
use crate::fpm::Pool;
use crate::harness::{Builder, Ctx, Suite, test};
use crate::http::{Framing, Request, Response};
use crate::procs::Endpoint;
use crate::util::{self, q};

pub const SUITE: Suite = Suite {
    name: "apps",
    setup,
    tests: &[
        test("apps_dokuwiki_login_edit_view", login_edit_view),
        test("apps_dokuwiki_media_upload_and_caching", media),
        test("apps_dokuwiki_stylesheets_scripts_feed", static_like),
        test("apps_dokuwiki_log_only_application_stderr", logs),
    ],
};

/// Debian's layout of the package.
const DW_CODE: &str = "/usr/share/dokuwiki";
const DW_CONF: &str = "/etc/dokuwiki";
const DW_DATA: &str = "/var/lib/dokuwiki/data";

/// Vhost ids: `err_` because DokuWiki 2022 on PHP 8.2 writes warnings to stderr, which the
/// module logs at error level (FCGI040) and the global clean-log check would count; the last
/// test checks this log itself.
const REWRITE: &str = "err_apps_dw";
const PATHINFO: &str = "err_apps_dw_pi";

const USER: &str = "admin";
const PASSWORD: &str = "mfcgi-secret";

/// The vhost body of mod_fastcgi's recipe for an application in `www` (`.htaccess` allowed):
/// AddType + Action + Alias to the virtual path `vpath` (its directory never exists) +
/// FastCgiExternalServer on php-fpm's socket, with the pool on and `-pass-header Authorization`.
pub fn recipe_vhost(index: &str, www: &Path, vpath: &Path, sock: &Path) -> String {
    let vdir = vpath.parent().unwrap_or(vpath);
    format!(
        "DirectoryIndex {index}\n\
         <Directory {www}>\n    AllowOverride All\n</Directory>\n\
         AddType application/x-httpd-fastphp .php\n\
         Action application/x-httpd-fastphp /php.fcgi\n\
         Alias /php.fcgi {vp}\n\
         FastCgiExternalServer {vp} -socket {sock} -pass-header Authorization -max-conns 4\n\
         <Directory {vd}>\n    Require all granted\n</Directory>\n",
        www = q(p(www)),
        vp = q(p(vpath)),
        sock = q(p(sock)),
        vd = q(p(vdir)),
    )
}

/// Fails with the error-level lines of these vhosts' logs other than the application's own
/// stderr (FCGI040).
pub fn only_app_stderr(ctx: &Ctx, ids: &[&str]) -> Result<(), String> {
    let bad: Vec<String> = ids
        .iter()
        .flat_map(|id| crate::check::bad_log_lines(&ctx.vhost(id).error_log, 0))
        .filter(|l| !l.contains("FCGI040"))
        .collect();
    ensure(bad.is_empty(), || {
        format!("unexpected log lines:\n    {}", bad.join("\n    "))
    })
}

fn setup(b: &mut Builder) -> Result<(), String> {
    if !Path::new(DW_CODE).join("doku.php").is_file() {
        // the tests report it; setup errors would stop every other suite
        b.set("dw_missing", "1");
        return Ok(());
    }
    let root = b.tmp.join("apps/dokuwiki");
    let www = root.join("www");
    let conf = root.join("conf");
    let data = root.join("data");
    util::mkdir_p(&root)?;
    // -L: the package links into /etc, /var/lib and other packages' directories
    for (from, to) in [(DW_CODE, &www), (DW_CONF, &conf), (DW_DATA, &data)] {
        let st = Command::new("cp")
            .arg("-rL")
            .arg(from)
            .arg(to)
            .status()
            .map_err(|e| format!("cp: {e}"))?;
        if !st.success() {
            return Err(format!("cp -rL {from} {}: {st}", to.display()));
        }
    }
    // point the copy at its own configuration and data
    let preload = www.join("inc/preload.php");
    let text = util::read_to_string_lossy(&preload)
        .replace("'/etc/dokuwiki/'", &format!("'{}/'", p(&conf)))
        .replace("/etc/dokuwiki/", &format!("{}/", p(&conf)));
    util::write_file(&preload, text)?;
    let main = conf.join("dokuwiki.php");
    let text = util::read_to_string_lossy(&main).replace(DW_DATA, &p(&data));
    util::write_file(&main, text)?;
    // local.php is PHP: the PATH_INFO vhost gets userewrite=2, the other one mod_rewrite
    util::write_file(
        &conf.join("local.php"),
        "<?php\n$conf['title'] = 'mfcgi wiki';\n$conf['useacl'] = 1;\n\
         $conf['superuser'] = '@admin';\n$conf['compression'] = 0;\n\
         $conf['userewrite'] = (($_SERVER['HTTP_HOST'] ?? '') === 'dw-pathinfo.test') ? 2 : 1;\n",
    )?;
    // DokuWiki recognises a bare md5 hex digest as a password hash
    util::write_file(
        &conf.join("users.auth.php"),
        format!(
            "{USER}:{}:Admin:admin@example.org:admin,user\n",
            util::md5_hex(PASSWORD.as_bytes())?
        ),
    )?;
    util::write_file(&conf.join("acl.auth.php"), "*\t@ALL\t1\n*\t@user\t8\n")?;
    // the rewrite rules DokuWiki documents for userewrite=1
    util::write_file(
        &www.join(".htaccess"),
        "RewriteEngine on\nRewriteBase /\n\
         RewriteRule ^_media/(.*)              lib/exe/fetch.php?media=$1  [QSA,L]\n\
         RewriteRule ^_detail/(.*)             lib/exe/detail.php?media=$1  [QSA,L]\n\
         RewriteRule ^_export/([^/]+)/(.*)     doku.php?do=export_$1&id=$2  [QSA,L]\n\
         RewriteRule ^$                        doku.php  [L]\n\
         RewriteCond %{REQUEST_FILENAME}       !-f\n\
         RewriteCond %{REQUEST_FILENAME}       !-d\n\
         RewriteRule (.*)                      doku.php?id=$1  [QSA,L]\n",
    )?;
    for d in [&conf, &data] {
        let st = Command::new("chown")
            .args(["-R", "www-data:www-data"])
            .arg(d)
            .status()
            .map_err(|e| format!("chown: {e}"))?;
        if !st.success() {
            return Err(format!("chown -R www-data {}: {st}", d.display()));
        }
    }
    let sock = b.tmp.join("run/apps-dw.sock");
    let mut pool = Pool::new("apps", "www-data", "www-data", Endpoint::Unix(sock.clone()));
    pool.max_children = 4;
    b.pool(pool);
    // the virtual path's directory is never created
    let vpath = b.tmp.join("apps/fastcgi/php.fcgi");
    for (id, name) in [(REWRITE, "dw.test"), (PATHINFO, "dw-pathinfo.test")] {
        let mut body = recipe_vhost("doku.php", &www, &vpath, &sock);
        if id == REWRITE {
            // downloads keep the length fetch.php declares (httpd's ap_trust_cgilike_cl),
            // set where the script lives, as sites do for their download scripts
            body.push_str(&format!(
                "<Directory {}>\n    SetEnv ap_trust_cgilike_cl 1\n</Directory>\n",
                q(p(&www.join("lib/exe")))
            ));
        }
        let port = b.port()?;
        b.vhost(id, port, name, &www, &body);
    }
    b.set("dw_root", p(&root));
    Ok(())
}

/// A client with a cookie jar, as a browser would be (also used by the WordPress suite).
pub struct Browser<'a> {
    ctx: &'a Ctx,
    id: &'static str,
    pub cookies: BTreeMap<String, String>,
}

/// The tests need Debian's dokuwiki package (setup records its absence instead of failing).
fn installed(ctx: &Ctx) -> Result<(), String> {
    if ctx.vals.contains_key("dw_missing") {
        return Err(format!(
            "DokuWiki is not installed ({DW_CODE}): `make deps-test` installs Debian's dokuwiki package"
        ));
    }
    Ok(())
}

impl<'a> Browser<'a> {
    pub fn new(ctx: &'a Ctx, id: &'static str) -> Browser<'a> {
        Browser {
            ctx,
            id,
            cookies: BTreeMap::new(),
        }
    }

    pub fn send(&mut self, mut req: Request) -> Result<Response, String> {
        if !self.cookies.is_empty() {
            let c: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            req = req.header("Cookie", &c.join("; "));
        }
        let what = format!("{} {}", req.method, req.target);
        let r = self
            .ctx
            .req(self.id, req)
            .map_err(|e| format!("{what}: {e}"))?;
        for sc in r.headers_all("Set-Cookie") {
            let pair = sc.split(';').next().unwrap_or("");
            if let Some((k, v)) = pair.split_once('=') {
                if v == "deleted" || sc.contains("Max-Age=0") {
                    self.cookies.remove(k.trim());
                } else {
                    self.cookies.insert(k.trim().to_string(), v.to_string());
                }
            }
        }
        ensure(r.complete, || {
            format!("{what}: response cut short: {}", r.summary())
        })?;
        Ok(r)
    }

    pub fn get(&mut self, target: &str) -> Result<Response, String> {
        self.send(Request::get(target))
    }

    pub fn post_form(&mut self, target: &str, fields: &[(&str, &str)]) -> Result<Response, String> {
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect();
        self.send(
            Request::post(target, body.join("&"))
                .header("Content-Type", "application/x-www-form-urlencoded"),
        )
    }

    /// Posts a multipart/form-data body: `fields`, then one file (field name, file name,
    /// content type, bytes), as a browser's upload form sends them.
    pub fn post_multipart(
        &mut self,
        target: &str,
        fields: &[(&str, &str)],
        file: (&str, &str, &str, &[u8]),
    ) -> Result<Response, String> {
        let boundary = "----mfcgiBoundary7MA4YWxkTrZu0gW";
        let mut body = Vec::new();
        for (k, v) in fields {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                )
                .as_bytes(),
            );
        }
        let (name, filename, ctype, data) = file;
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: {ctype}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        self.send(Request::post(target, body).header(
            "Content-Type",
            &format!("multipart/form-data; boundary={boundary}"),
        ))
    }

    fn login(&mut self) -> Result<(), String> {
        let form = self.get("/doku.php?id=start&do=login")?;
        expect_status(&form, 200)?;
        let r = self.post_form(
            "/doku.php?id=start&do=login",
            &[
                (
                    "sectok",
                    &input_value(&form.text(), "sectok").unwrap_or_default(),
                ),
                ("id", "start"),
                ("do", "login"),
                ("u", USER),
                ("p", PASSWORD),
            ],
        )?;
        // DokuWiki answers a good login with a redirect to the page, built from HTTP_HOST
        expect_status(&r, 302)?;
        let loc = r.header("Location").unwrap_or("");
        let host = &self.ctx.vhost(self.id).server_name;
        ensure(loc.starts_with(&format!("http://{host}")), || {
            format!("login redirect {loc:?} does not name the client's host {host}")
        })?;
        let page = self.get("/doku.php?id=start")?;
        ensure(page.text().contains("do=logout"), || {
            format!(
                "not logged in after the login POST (cookies {:?}): {}",
                self.cookies,
                page.summary()
            )
        })
    }
}

pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `value` of the `<input name="NAME" value="...">` in a page.
pub fn input_value(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\""))?;
    let tail = &html[at..];
    let v = tail.find("value=\"")? + 7;
    let end = tail[v..].find('"')?;
    Some(html_unescape(&tail[v..v + end]))
}

fn html_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#039;", "'")
        .replace("&amp;", "&")
}

/// Wiki text of ~40 KB with multi-byte characters and characters that need form encoding.
fn page_text(tag: &str) -> String {
    let mut s =
        format!("====== {tag} ======\n\nUmlauts äöü, 日本語, & = + % ; and \"quotes\".\n\n");
    for i in 0..400 {
        s.push_str(&format!("  * line {i:03} of {tag}: {}\n", "x".repeat(80)));
    }
    s
}

fn save_page(br: &mut Browser, id: &str, text: &str) -> Result<(), String> {
    let form = br.get(&format!("/doku.php?id={id}&do=edit"))?;
    expect_status(&form, 200)?;
    let html = form.text();
    let field = |n: &str| input_value(&html, n).unwrap_or_default();
    let (sectok, date, changecheck) = (field("sectok"), field("date"), field("changecheck"));
    let r = br.post_form(
        &format!("/doku.php?id={id}&do=edit"),
        &[
            ("sectok", &sectok),
            ("id", id),
            ("rev", "0"),
            ("date", &date),
            ("prefix", "."),
            ("suffix", ""),
            ("changecheck", &changecheck),
            ("target", "section"),
            ("wikitext", text),
            ("summary", "saved through mod_fastcgi-rs"),
            ("do[save]", "Save"),
        ],
    )?;
    ensure(r.status == 302, || format!("saving {id}: {}", r.summary()))
}

fn login_edit_view(ctx: &Ctx) -> Result<(), String> {
    installed(ctx)?;
    let mut br = Browser::new(ctx, REWRITE);
    let front = br.get("/")?;
    expect_status(&front, 200)?;
    ensure(front.text().contains("mfcgi wiki"), || {
        format!("front page: {}", front.summary())
    })?;
    br.login()?;
    let text = page_text("Rewrite page");
    save_page(&mut br, "mfcgi:rewrite", &text)?;
    // pretty URL through .htaccess + mod_rewrite + the Action chain
    let view = br.get("/mfcgi:rewrite")?;
    expect_status(&view, 200)?;
    ensure(
        view.text()
            .contains("Umlauts äöü, 日本語, &amp; = + % ; and")
            && view.text().contains("line 399 of Rewrite page"),
        || {
            format!(
                "/mfcgi:rewrite does not show the saved text: {}",
                view.summary()
            )
        },
    )?;
    // the raw export must be exactly what was posted (DokuWiki normalises line ends only)
    let raw = br.get("/_export/raw/mfcgi:rewrite")?;
    expect_status(&raw, 200)?;
    ensure(
        raw.header("Content-Type")
            .unwrap_or("")
            .starts_with("text/plain"),
        || format!("export_raw Content-Type {:?}", raw.header("Content-Type")),
    )?;
    ensure(raw.text().trim_end() == text.trim_end(), || {
        format!(
            "export_raw differs from the posted text ({} vs {} bytes)",
            raw.body.len(),
            text.len()
        )
    })?;

    // PATH_INFO URLs (userewrite=2): SCRIPT_NAME and PATH_INFO must be split as with mod_php
    let mut pi = Browser::new(ctx, PATHINFO);
    pi.login()?;
    let text2 = page_text("PathInfo page");
    save_page(&mut pi, "mfcgi:pathinfo", &text2)?;
    let view = pi.get("/doku.php/mfcgi:pathinfo")?;
    expect_status(&view, 200)?;
    ensure(view.text().contains("line 399 of PathInfo page"), || {
        format!("/doku.php/mfcgi:pathinfo: {}", view.summary())
    })?;
    ensure(
        view.text()
            .contains("href=\"/doku.php/mfcgi:pathinfo?do=edit"),
        || {
            "the page's own links are not /doku.php/<id> (SCRIPT_NAME/PATH_INFO split wrong?)"
                .into()
        },
    )?;
    let logout = pi.get(&format!(
        "/doku.php/mfcgi:pathinfo?do=logout&sectok={}",
        input_value(&view.text(), "sectok").unwrap_or_default()
    ))?;
    expect_status(&logout, 302)?;
    let after = pi.get("/doku.php/mfcgi:pathinfo")?;
    ensure(!after.text().contains("do=logout"), || {
        "still logged in after logging out".into()
    })
}

fn media(ctx: &Ctx) -> Result<(), String> {
    installed(ctx)?;
    let mut br = Browser::new(ctx, REWRITE);
    br.login()?;
    // a PNG of 2 MiB: a real header (DokuWiki checks image types) and pseudo-random data
    let mut png: Vec<u8> = vec![
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0x49, 0x48, 0x44, 0x52, 0,
        0, 0, 1, 0, 0, 0, 1, 8, 6, 0, 0, 0, 0x1f, 0x15, 0xc4, 0x89,
    ];
    png.extend(util::Prng::new(0xd0c0).bytes(2 * 1024 * 1024));
    let mgr = br.get("/doku.php?id=mfcgi:media&do=media&ns=mfcgi")?;
    expect_status(&mgr, 200)?;
    let sectok = input_value(&mgr.text(), "sectok").unwrap_or_default();
    let up = br.post_multipart(
        "/lib/exe/mediamanager.php?ns=mfcgi&tab_files=upload",
        &[
            ("sectok", sectok.as_str()),
            ("ns", "mfcgi"),
            ("mediaid", "pic.png"),
        ],
        ("upload", "pic.png", "image/png", &png),
    )?;
    expect_status(&up, 200)?;

    // fetched back through the rewrite rule, byte for byte
    let got = br.get("/_media/mfcgi:pic.png")?;
    expect_status(&got, 200)?;
    ensure(got.body == png, || {
        format!(
            "fetched {} bytes, uploaded {} (equal: {})",
            got.body.len(),
            png.len(),
            got.body == png
        )
    })?;
    // ap_trust_cgilike_cl on lib/exe (this vhost only): fetch.php's Content-Length frames
    // the download; without it (the PATH_INFO vhost) httpd frames the body itself
    ensure(
        got.framing == Framing::ContentLength(png.len() as u64),
        || {
            format!(
                "download with ap_trust_cgilike_cl: want Content-Length {}, got {:?}",
                png.len(),
                got.framing
            )
        },
    )?;
    let plain = Browser::new(ctx, PATHINFO).get("/lib/exe/fetch.php?media=mfcgi:pic.png")?;
    ensure(
        plain.status == 200 && plain.body == png && plain.framing == Framing::Chunked,
        || {
            format!(
                "download without ap_trust_cgilike_cl: want {} bytes, chunked: {} ({} bytes, {:?})",
                png.len(),
                plain.status,
                plain.body.len(),
                plain.framing
            )
        },
    )?;
    let etag = got.header("ETag").unwrap_or("").to_string();
    let lm = got.header("Last-Modified").unwrap_or("").to_string();
    ensure(!etag.is_empty() && !lm.is_empty(), || {
        format!("fetch.php sent no ETag/Last-Modified: {:?}", got.headers)
    })?;
    // the application's 304s: no body, whatever the framing
    for (h, v) in [
        ("If-None-Match", etag.as_str()),
        ("If-Modified-Since", lm.as_str()),
    ] {
        let r = br.send(Request::get("/lib/exe/fetch.php?media=mfcgi:pic.png").header(h, v))?;
        ensure(r.status == 304 && r.body.is_empty(), || {
            format!("{h}: want 304 without a body, got {}", r.summary())
        })?;
    }
    let r = br.send(
        Request::get("/lib/exe/fetch.php?media=mfcgi:pic.png").header("Range", "bytes=1000-1999"),
    )?;
    ensure(r.status == 206 && r.body == png[1000..2000], || {
        format!(
            "Range: want 206 with bytes 1000-1999, got {} ({} bytes, Content-Range {:?})",
            r.status,
            r.body.len(),
            r.header("Content-Range")
        )
    })?;
    let h = br.send(Request::head("/lib/exe/fetch.php?media=mfcgi:pic.png"))?;
    ensure(h.status == 200 && h.body.is_empty(), || {
        format!("HEAD: {}", h.summary())
    })?;
    ensure(h.header("Content-Type") == Some("image/png"), || {
        format!("HEAD Content-Type {:?}", h.header("Content-Type"))
    })?;
    let want = png.len().to_string();
    ensure(h.headers_all("Content-Length") == [want.as_str()], || {
        format!(
            "HEAD with ap_trust_cgilike_cl: want Content-Length {want}: {}",
            h.summary()
        )
    })
}

fn static_like(ctx: &Ctx) -> Result<(), String> {
    installed(ctx)?;
    let mut br = Browser::new(ctx, REWRITE);
    let css = br.get("/lib/exe/css.php?t=dokuwiki")?;
    expect_status(&css, 200)?;
    ensure(
        css.header("Content-Type")
            .unwrap_or("")
            .starts_with("text/css")
            && css.body.len() > 10_000,
        || {
            format!(
                "css.php: {:?}, {} bytes",
                css.header("Content-Type"),
                css.body.len()
            )
        },
    )?;
    // the first request builds DokuWiki's stylesheet cache, which the ETag names; take the
    // ETag of a request that found the cache built
    let css = br.get("/lib/exe/css.php?t=dokuwiki")?;
    let etag = css.header("ETag").unwrap_or("").to_string();
    let again =
        br.send(Request::get("/lib/exe/css.php?t=dokuwiki").header("If-None-Match", &etag))?;
    ensure(again.status == 304 && again.body.is_empty(), || {
        format!("css.php with If-None-Match {etag:?}: {}", again.summary())
    })?;
    let js = br.get("/lib/exe/js.php?t=dokuwiki")?;
    expect_status(&js, 200)?;
    ensure(js.body.len() > 10_000, || {
        format!("js.php: {} bytes", js.body.len())
    })?;
    let feed = br.get("/feed.php")?;
    expect_status(&feed, 200)?;
    ensure(
        feed.header("Content-Type").unwrap_or("").contains("xml")
            && feed.text().contains("<channel"),
        || format!("feed.php: {}", feed.summary()),
    )
}

/// The only error-level lines the module may have written for these vhosts are the
/// application's own stderr (FCGI040).
fn logs(ctx: &Ctx) -> Result<(), String> {
    installed(ctx)?;
    only_app_stderr(ctx, &[REWRITE, PATHINFO])
}
