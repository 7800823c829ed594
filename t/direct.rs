//! Direct requests to the virtual path (issue #5): a client that asks for the Action/Alias URL
//! itself (`/php5.fcgi/uploads/evil.jpg`) must never get an uploaded non-PHP file executed, with
//! php-fpm's `cgi.fix_pathinfo` 0 or 1, even where `security.limit_extensions` was widened to
//! allow `.jpg` (so the module's own rule is what is tested). `-trust-direct` restores
//! mod_fastcgi's behaviour; the test shows that it is exploitable there, which proves the check
//! can fail.

use crate::check::{ensure, p};
use crate::fpm::Pool;
use crate::harness::{Builder, Ctx, Suite, test};
use crate::procs::Endpoint;
use crate::util::{self, q};

pub const SUITE: Suite = Suite {
    name: "direct",
    setup,
    tests: &[
        test(
            "direct_request_cannot_run_upload_fix_pathinfo_0",
            fix_pathinfo_0,
        ),
        test(
            "direct_request_cannot_run_upload_fix_pathinfo_1",
            fix_pathinfo_1,
        ),
        test("direct_request_trust_direct_is_mod_fastcgi", trust_direct),
    ],
};

const EVIL: &str = "<?php echo \"PWNED-\" . (6 * 7) . \"\\n\";\n";

fn setup(b: &mut Builder) -> Result<(), String> {
    let tmp = b.tmp.clone();
    let run = tmp.join("run");
    let docroot = b.docroot("direct")?;
    util::write_file(&docroot.join("uploads/evil.jpg"), EVIL)?;
    for fp in [0, 1] {
        let mut pool = Pool::new(
            &format!("direct{fp}"),
            "www-data",
            "www-data",
            Endpoint::Unix(run.join(format!("direct{fp}.sock"))),
        );
        pool.max_children = 2;
        // Widened on purpose: php-fpm's own extension check must not be what saves us.
        pool.extra
            .push("security.limit_extensions = .php .jpg".into());
        pool.extra
            .push(format!("php_admin_value[cgi.fix_pathinfo] = {fp}"));
        b.pool(pool);
    }
    for (id, fp, opts) in [
        ("err_direct0", 0, ""),
        ("err_direct1", 1, ""),
        ("err_direct0_trust", 0, " -trust-direct"),
    ] {
        let vdir = tmp.join("direct-fcgi"); // never created
        let vpath = vdir.join(format!("{id}.fcgi"));
        let body = format!(
            "AddType application/x-httpd-fastphp5 .php\n\
             Action application/x-httpd-fastphp5 /php5.fcgi\n\
             Alias /php5.fcgi {vp}\n\
             FastCgiExternalServer {vp} -socket {sock}{opts}\n\
             <Directory {vd}>\n    Require all granted\n</Directory>\n",
            vp = q(p(&vpath)),
            sock = q(p(&run.join(format!("direct{fp}.sock")))),
            vd = q(p(&vdir)),
        );
        // `err_` ids: php-fpm's refusals ("Primary script unknown", "Access denied") are logged
        // as application stderr, which error_logs_clean must not count.
        let port = b.port()?;
        b.vhost(
            id,
            port,
            &format!("{}.test", id.replace('_', "-")),
            &docroot,
            &body,
        );
    }
    Ok(())
}

fn pwned(ctx: &Ctx, id: &str) -> Result<(u16, bool), String> {
    let r = ctx.get(id, "/php5.fcgi/uploads/evil.jpg")?;
    Ok((r.status, r.text().contains("PWNED-42")))
}

fn not_executed(ctx: &Ctx, id: &str) -> Result<(), String> {
    // The normal route works (so the pool and the chain are right) ...
    let ok = ctx.get(id, "/index.php?a=1")?;
    ensure(
        ok.status == 200 && ok.text().contains("SCRIPT_NAME"),
        || format!("/index.php: {}", ok.summary()),
    )?;
    // ... the upload as a static file is not executed ...
    let st = ctx.get(id, "/uploads/evil.jpg")?;
    ensure(!st.text().contains("PWNED-42"), || {
        "the upload ran as PHP through the normal route".into()
    })?;
    // ... and asking for the virtual path directly does not run it either.
    let (status, ran) = pwned(ctx, id)?;
    ensure(!ran, || {
        format!("direct request executed the uploaded file (status {status})")
    })?;
    ensure(status >= 400, || {
        format!("direct request answered {status}, want an error status")
    })
}

fn fix_pathinfo_0(ctx: &Ctx) -> Result<(), String> {
    not_executed(ctx, "err_direct0")
}

fn fix_pathinfo_1(ctx: &Ctx) -> Result<(), String> {
    not_executed(ctx, "err_direct1")
}

fn trust_direct(ctx: &Ctx) -> Result<(), String> {
    let (status, ran) = pwned(ctx, "err_direct0_trust")?;
    ensure(ran, || {
        format!(
            "with -trust-direct (mod_fastcgi's behaviour) the widened php-fpm pool should have run the upload; got {status}"
        )
    })
}
