//! Integration tests for mod_fastcgi-rs against a real Apache httpd and php-fpm.
//!
//! Run: `cargo build --release && cargo test --release --test integration [-- FILTER...]`
//!
//! Environment:
//! * `MOD_FASTCGI_SO` – module to load (default `<crate>/target/release/libmod_fastcgi.so`)
//! * `MPM`            – `event` (default) | `prefork` | `worker`
//! * `APACHE2`        – httpd binary (default `/usr/sbin/apache2`)
//! * `PHP_FPM`        – php-fpm binary (default: first `/usr/sbin/php-fpm*`)
//! * `MFCGI_KEEP=1`   – keep the temp dir even when everything passed
//! * `MFCGI_VERBOSE=1` – print per-test durations and some measurements
//! * `MFCGI_VALGRIND=1` – run the main Apache under valgrind memcheck as one process (`-X`,
//!   needs/implies `MPM=prefork`); after the last test Apache is stopped and its memcheck log
//!   checked (test `valgrind_memcheck`). Used by `make check-valgrind`.
//!
//! One php-fpm master (several pools) and ONE Apache instance serve all suites; every suite
//! adds its vhosts (each on its own loopback port) in its `setup`. Output: one
//! `test <name> ... ok|FAILED: <reason>` line per test and a final `N passed, N failed`.
//! FILTER selects the tests whose name contains it, or all tests of the suite it names
//! (`foundation`, `conformance`, `pool`, `direct`, `auth`, `faults`, `hostile`, `apps`, `dav`, `modphp`, `git`, `wordpress`, `phpmyadmin`, `stack`,
//! `status`, `final`, `selftest`).

#[path = "support/apache.rs"]
mod apache;
#[path = "support/check.rs"]
mod check;
#[path = "support/fakefcgi.rs"]
mod fakefcgi;
#[path = "support/fpm.rs"]
mod fpm;
#[path = "support/harness.rs"]
mod harness;
#[path = "support/http.rs"]
mod http;
#[path = "support/mariadb.rs"]
mod mariadb;
#[path = "support/netns.rs"]
mod netns;
#[path = "support/pool_fcgi.rs"]
mod pool_fcgi;
#[path = "support/pool_inst.rs"]
mod pool_inst;
#[path = "support/procs.rs"]
mod procs;
#[path = "support/scenario.rs"]
mod scenario;
#[path = "support/util.rs"]
mod util;
#[path = "support/valgrind.rs"]
mod valgrind;

mod apps;
mod auth;
mod conformance;
mod dav;
mod direct;
mod faults;
mod foundation;
mod git;
mod hostile;
mod modphp;
mod phpmyadmin;
mod pool;
mod selftest;
mod stack;
mod status;
mod wordpress;

fn main() {
    harness::main(&[
        selftest::SUITE,
        foundation::SUITE,
        conformance::SUITE,
        pool::SUITE,
        direct::SUITE,
        auth::SUITE,
        faults::SUITE,
        hostile::SUITE,
        apps::SUITE,
        dav::SUITE,
        modphp::SUITE,
        git::SUITE,
        wordpress::SUITE,
        phpmyadmin::SUITE,
        stack::SUITE,
        status::SUITE,
        foundation::FINAL,
    ]);
}
