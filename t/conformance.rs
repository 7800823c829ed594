//! Issue "Conformance" (#3): mod_fastcgi's documented options and response rules, request
//! bodies, and the mapping of failures to statuses and log lines — mostly against scripted fake
//! FastCGI applications (`support/fakefcgi.rs`), plus php-fpm for the chunked upload.
//!
//! Every scenario has its own virtual path, fake application and vhost (id = scenario name; a
//! vhost that provokes error-level log lines has an id starting with `err_`, see foundation).
//! In every vhost `/app[/…]` maps to the virtual path; `?ok` always gets a normal `OK` answer,
//! which is how fault tests check that the next normal request on the same vhost succeeds.
//!
//! Test names all contain `conformance` (run them with `-- conformance`).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::check::{ensure, expect_status, p};
use crate::fakefcgi::{
    Action, Backend, Req, StuckUnixListener, fnv64, pattern_byte, raw_record, rtype,
};
use crate::fpm::Pool;
use crate::harness::{Builder, Ctx, Suite, test};
use crate::http::{Conn, Framing, Request, Response};
use crate::procs::Endpoint;
use crate::scenario::{AppSite, Logs, add_app_site, expect_aborted, host, late, ms, vpath};
use crate::util::{self, q};

pub const SUITE: Suite = Suite {
    name: "conformance",
    setup,
    tests: &[
        // options
        test(
            "conformance_flush_option_streams_each_piece",
            flush_option_streams_each_piece,
        ),
        test(
            "conformance_x_accel_buffering_no_streams_each_piece",
            x_accel_buffering_no_streams_each_piece,
        ),
        test(
            "conformance_no_flush_holds_data_at_most_100ms",
            no_flush_holds_data_at_most_100ms,
        ),
        test(
            "conformance_no_flush_continuous_output_not_held",
            no_flush_continuous_output_not_held,
        ),
        test(
            "conformance_idle_timeout_before_headers_504",
            idle_timeout_before_headers_504,
        ),
        test(
            "conformance_idle_timeout_app_not_reading_body_504",
            idle_timeout_app_not_reading_body_504,
        ),
        test(
            "conformance_idle_timeout_after_headers_aborts",
            idle_timeout_after_headers_aborts,
        ),
        test(
            "conformance_idle_timeout_trickle_does_not_fire",
            idle_timeout_trickle_does_not_fire,
        ),
        test(
            "conformance_idle_timeout_slow_client_does_not_fire",
            idle_timeout_slow_client_does_not_fire,
        ),
        test(
            "conformance_idle_timeout_slow_upload_does_not_fire",
            idle_timeout_slow_upload_does_not_fire,
        ),
        test(
            "conformance_app_conn_timeout_full_backlog_503",
            app_conn_timeout_full_backlog_503,
        ),
        test(
            "conformance_app_conn_timeout_0_means_timeout",
            app_conn_timeout_0_means_timeout,
        ),
        test(
            "conformance_pass_header_adds_http_vars",
            pass_header_adds_http_vars,
        ),
        test(
            "conformance_pass_header_proxy_refused",
            pass_header_proxy_refused,
        ),
        test("conformance_option_values_checked", option_values_checked),
        test(
            "conformance_nph_option_bytes_unchanged",
            nph_option_bytes_unchanged,
        ),
        test("conformance_nph_file_name_prefix", nph_file_name_prefix),
        test(
            "conformance_action_virtual_with_accept_path_info_off",
            action_virtual_accept_path_info_off,
        ),
        test(
            "conformance_nested_virtual_paths_longest_serves",
            nested_virtual_paths,
        ),
        test(
            "conformance_user_group_ignored_with_warning",
            user_group_ignored_with_warning,
        ),
        // response rules
        test(
            "conformance_header_terminators_and_record_splits",
            header_terminators_and_record_splits,
        ),
        test(
            "conformance_header_block_8k_64k_120k_128k",
            header_block_8k_64k_120k_128k,
        ),
        test(
            "conformance_header_block_over_limit_502",
            header_block_over_limit_502,
        ),
        test("conformance_status_valid_used", status_valid_used),
        test("conformance_status_missing_200", status_missing_200),
        test("conformance_status_invalid_502", status_invalid_502),
        test("conformance_status_1xx_interim", status_1xx_interim),
        test(
            "conformance_location_path_internal_redirect_get",
            location_path_internal_redirect_get,
        ),
        test("conformance_location_url_302", location_url_302),
        test(
            "conformance_location_with_status_3xx_passthrough",
            location_with_status_3xx_passthrough,
        ),
        test(
            "conformance_malformed_header_502_one_line",
            malformed_header_502_one_line,
        ),
        test("conformance_obs_fold_unfolded", obs_fold_unfolded),
        test(
            "conformance_backend_framing_headers_not_trusted",
            backend_framing_headers_not_trusted,
        ),
        test("conformance_big_cookie_reaches_php", big_cookie_reaches_php),
        test(
            "conformance_trusted_content_length_php",
            trusted_content_length_php,
        ),
        test(
            "conformance_trusted_content_length_checked",
            trusted_content_length_checked,
        ),
        test(
            "conformance_stderr_logged_line_by_line",
            stderr_logged_line_by_line,
        ),
        test(
            "conformance_stderr_9k_before_stdout",
            stderr_9k_before_stdout,
        ),
        test("conformance_end_request_bad_size", end_request_bad_size),
        test(
            "conformance_end_request_protocol_status",
            end_request_protocol_status,
        ),
        test(
            "conformance_bad_version_or_type_502",
            bad_version_or_type_502,
        ),
        test("conformance_max_padding_records", max_padding_records),
        test("conformance_wrong_request_id_502", wrong_request_id_502),
        test("conformance_eof_before_headers_502", eof_before_headers_502),
        test(
            "conformance_eof_after_headers_aborts",
            eof_after_headers_aborts,
        ),
        // requests
        test(
            "conformance_chunked_request_body_php_3mib",
            chunked_request_body_php_3mib,
        ),
        test("conformance_limit_request_body_413", limit_request_body_413),
        test(
            "conformance_unread_body_drained_keepalive",
            unread_body_drained_keepalive,
        ),
        test(
            "conformance_invalid_request_no_backend_connection",
            invalid_request_no_backend_connection,
        ),
        // failures
        test("conformance_connect_refused_503", connect_refused_503),
        test(
            "conformance_connect_socket_missing_503",
            connect_socket_missing_503,
        ),
        test(
            "conformance_connect_permission_denied_503",
            connect_permission_denied_503,
        ),
        test(
            "conformance_connect_retry_waits_for_application",
            connect_retry_waits_for_application,
        ),
        // last: stop the fake applications, check what they saw
        test(
            "conformance_fake_backends_saw_valid_records",
            fake_backends_saw_valid_records,
        ),
    ],
};

// ------------------------------------------------------------------------------------------
// fake applications and their vhosts

static BACKENDS: Mutex<Vec<(String, Arc<Backend>)>> = Mutex::new(Vec::new());
static STUCK: Mutex<Vec<(String, StuckUnixListener)>> = Mutex::new(Vec::new());
static HELD: Mutex<Vec<UnixListener>> = Mutex::new(Vec::new());

fn backend(id: &str) -> Arc<Backend> {
    BACKENDS
        .lock()
        .unwrap()
        .iter()
        .find(|(n, _)| n == id)
        .map(|(_, b)| Arc::clone(b))
        .unwrap_or_else(|| panic!("no fake backend {id:?}"))
}

const OK_BODY: &[u8] = b"OK\n";
const TEXT: &[u8] = b"Content-Type: text/plain\r\n\r\n";

/// `length.php?n=N[&say=M]`: declares `Content-Length: N` and sends M bytes (N by default) in
/// two halves 150 ms apart, so the response is streamed (not framed by httpd at its end).
const LENGTH_PHP: &str = r#"<?php
while (ob_get_level()) { ob_end_flush(); }
$n = (int)($_GET['n'] ?? 0);
$say = isset($_GET['say']) ? (int)$_GET['say'] : $n;
header('Content-Type: application/octet-stream');
header("Content-Length: $n");
$half = intdiv($say, 2);
echo str_repeat('a', $half);
flush();
usleep(150000);
echo str_repeat('b', $say - $half);
"#;

/// What length.php sends when told to say `say` bytes.
fn length_php_body(say: usize) -> Vec<u8> {
    let mut b = vec![b'a'; say / 2];
    b.resize(say, b'b');
    b
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A complete answer after reading the request body: STDOUT data, empty STDOUT, END_REQUEST.
fn respond(stdout: &[u8]) -> Vec<Action> {
    vec![
        Action::WaitStdin,
        Action::Stdout(stdout.to_vec()),
        Action::StdoutEnd,
        Action::End {
            app_status: 0,
            protocol_status: 0,
        },
    ]
}

fn end() -> Action {
    Action::End {
        app_status: 0,
        protocol_status: 0,
    }
}

/// `a=1&b&c=x` → pairs.
fn query_map(qs: &str) -> Vec<(String, String)> {
    qs.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.to_string(), String::new()),
        })
        .collect()
}

fn qget<'a>(m: &'a [(String, String)], k: &str) -> Option<&'a str> {
    m.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// `X-Pad-NNNN: vvv…\r\n` lines and the blank line: exactly `total` bytes; returns the block
/// and the number of X-Pad lines.
fn big_header_block(total: usize) -> (Vec<u8>, usize) {
    let mut out = b"Content-Type: text/plain\r\n".to_vec();
    let mut n = 0;
    // each line: "X-Pad-NNNN: " (12) + value + "\r\n" (2)
    while total - out.len() - 2 > 14 {
        let left = total - out.len() - 2;
        let line_len = if left >= 1000 + 15 { 1000 } else { left };
        n += 1;
        out.extend_from_slice(format!("X-Pad-{n:04}: ").as_bytes());
        out.resize(out.len() + line_len - 14, b'v');
        out.extend_from_slice(b"\r\n");
    }
    while out.len() < total - 2 {
        // too little room for another line: lengthen the last one
        let at = out.len() - 2;
        out.insert(at, b'w');
    }
    out.extend_from_slice(b"\r\n");
    (out, n)
}

/// The general-purpose player (vhosts `cf_play`, `err_cf_*` that share it):
/// * `?params`: read stdin, answer the params as `NAME=value` lines plus a stdin summary;
/// * `?bighdr=N`: a header block of exactly N bytes, then `BODY`;
/// * `?out=<hex>[&split=N][&nostdin]`: play these STDOUT bytes (in records of N bytes), then
///   the empty STDOUT record and END_REQUEST.
fn player(r: &Req) -> Vec<Action> {
    let m = query_map(&r.query());
    if qget(&m, "params").is_some() {
        let mut text = TEXT.to_vec();
        text.extend_from_slice(r.params_text().as_bytes());
        return vec![
            Action::WaitStdin,
            Action::Stdout(text),
            Action::StdinSummary,
            Action::StdoutEnd,
            end(),
        ];
    }
    if let Some(n) = qget(&m, "bighdr").and_then(|v| v.parse::<usize>().ok()) {
        let (mut block, _) = big_header_block(n);
        block.extend_from_slice(b"BODY");
        return vec![
            Action::WaitStdin,
            Action::StdoutSplit(block, 8192),
            Action::StdoutEnd,
            end(),
        ];
    }
    let out = unhex(qget(&m, "out").unwrap_or(""));
    let split: usize = qget(&m, "split").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut v = Vec::new();
    if qget(&m, "nostdin").is_none() {
        v.push(Action::WaitStdin);
    }
    v.push(if split > 0 {
        Action::StdoutSplit(out, split)
    } else {
        Action::Stdout(out)
    });
    v.push(Action::StdoutEnd);
    v.push(end());
    v
}

fn two_chunks(_: &Req) -> Vec<Action> {
    vec![
        Action::WaitStdin,
        Action::Stdout(cat(&[TEXT, b"first-chunk\n"])),
        Action::Sleep(300),
        Action::Stdout(b"second-chunk\n".to_vec()),
        Action::StdoutEnd,
        end(),
    ]
}

/// Response size for the slow-client test: well above what the kernel buffers on the way can
/// hold (backend send buffer ≤ 4 MiB, module receive buffer ≤ tcp_rmem max = 32 MiB here,
/// Apache's send buffer ≤ 4 MiB, the idle client's small receive window).
const SLOW_CLIENT_LEN: usize = 96 << 20;

fn setup(b: &mut Builder) -> Result<(), String> {
    type S = fn(&Req) -> Vec<Action>;
    let sites: Vec<(&str, &str, &str, S)> = vec![
        // (vhost id, FastCgiExternalServer options, extra vhost lines, script)
        ("cf_play", "", "", player),
        ("cf_flush", "-flush", "", two_chunks),
        // no -flush: the application asks for unbuffered output itself (nginx's header)
        ("cf_unbuffered", "", "", |_| {
            vec![
                Action::WaitStdin,
                Action::Stdout(
                    b"Content-Type: text/plain\r\nX-Accel-Buffering: no\r\n\r\nfirst-chunk\n"
                        .to_vec(),
                ),
                Action::Sleep(300),
                Action::Stdout(b"second-chunk\n".to_vec()),
                Action::StdoutEnd,
                end(),
            ]
        }),
        ("cf_noflush", "", "", |r| {
            if r.query() == "stream" {
                // 40 KiB in 2 KiB records every 50 ms: never 100 ms of silence
                let mut data = TEXT.to_vec();
                data.extend((0..40 * 1024).map(|i| b'a' + (i % 26) as u8));
                vec![
                    Action::WaitStdin,
                    Action::StdoutTrickle(data, 2048, 50),
                    Action::StdoutEnd,
                    end(),
                ]
            } else {
                two_chunks(r)
            }
        }),
        (
            "err_cf_idle_hdr",
            "-idle-timeout 1 -keep-conn off",
            "",
            |r| {
                if r.query() == "noread" {
                    // neither reads the request body nor answers
                    vec![Action::Sleep(2500), Action::Close]
                } else if r.query() == "partial" {
                    vec![
                        Action::WaitStdin,
                        Action::Stdout(b"Status: 200\r\nX-Partial: ye".to_vec()),
                        Action::WaitPeerClose(4000),
                    ]
                } else {
                    vec![Action::WaitStdin, Action::WaitPeerClose(4000)]
                }
            },
        ),
        (
            "err_cf_idle_body",
            "-idle-timeout 1 -flush -keep-conn off",
            "",
            |_| {
                vec![
                    Action::WaitStdin,
                    Action::Stdout(cat(&[TEXT, b"part1"])),
                    Action::WaitPeerClose(4000),
                ]
            },
        ),
        ("cf_idle_trickle", "-idle-timeout 1", "", |_| {
            vec![
                Action::WaitStdin,
                Action::StdoutTrickle(
                    b"Content-Type: text/plain\r\nX-Trickle: 1\r\n\r\n".to_vec(),
                    14,
                    500,
                ),
                Action::Sleep(500),
                Action::StdoutTrickle(b"abcd".to_vec(), 1, 500),
                Action::Sleep(500),
                Action::StdoutEnd,
                Action::Sleep(500),
                end(),
            ]
        }),
        ("cf_idle_slowclient", "-idle-timeout 1", "", |_| {
            vec![
                Action::WaitStdin,
                Action::Stdout(b"Content-Type: application/octet-stream\r\n\r\n".to_vec()),
                Action::StdoutPattern(SLOW_CLIENT_LEN),
                Action::Mark("written"),
                Action::StdoutEnd,
                end(),
            ]
        }),
        ("cf_idle_slowupload", "-idle-timeout 1", "", |_| {
            vec![
                Action::WaitStdin,
                Action::Stdout(TEXT.to_vec()),
                Action::StdinSummary,
                Action::StdoutEnd,
                end(),
            ]
        }),
        (
            "cf_passhdr",
            "-pass-header Authorization -pass-header Proxy-Authorization",
            "",
            player,
        ),
        ("cf_nph", "-nph", "", |_| {
            respond(
                b"HTTP/1.1 299 Raw Status\r\nX-Nph: yes\r\nContent-Length: 11\r\n\r\nhello world",
            )
        }),
        ("cf_usergroup", "-user nobody -group nogroup", "", player),
        ("err_cf_hdr_huge", "", "", |r| {
            if r.query().starts_with("bighdr=") {
                return player(r);
            }
            let mut block = b"Content-Type: text/plain\r\n".to_vec();
            if r.query() == "oneline" {
                block.extend_from_slice(b"X-Huge: ");
                block.resize(200 * 1024, b'h');
            } else {
                let mut i = 0;
                while block.len() < 200 * 1024 {
                    i += 1;
                    block.extend_from_slice(
                        format!("X-Many-{i:05}: {}\r\n", "m".repeat(100)).as_bytes(),
                    );
                }
            }
            block.extend_from_slice(b"\r\nBODY");
            vec![
                Action::WaitStdin,
                Action::StdoutSplit(block, 16384),
                Action::StdoutEnd,
                end(),
            ]
        }),
        ("err_cf_status", "", "", player),
        (
            "err_cf_trust_cl",
            "",
            "SetEnv ap_trust_cgilike_cl 1",
            player,
        ),
        ("err_cf_malformed", "", "", player),
        ("err_cf_stderr", "", "", |_| {
            let mut long = b"long:".to_vec();
            long.resize(10_005, b'x');
            long.push(b'\n');
            vec![
                Action::WaitStdin,
                Action::Stderr(b"first line\nsecond line\r\nnul\0byte\n".to_vec()),
                Action::Stdout(cat(&[TEXT, b"body1"])),
                Action::Stderr(b"between\n".to_vec()),
                Action::Stdout(b"body2".to_vec()),
                Action::Stderr(long),
                Action::Stderr(b"unterminated".to_vec()),
                Action::StdoutEnd,
                end(),
            ]
        }),
        ("err_cf_stderr9k", "", "", |_| {
            let mut e = Vec::new();
            for i in 0..100 {
                e.extend_from_slice(format!("E{i:03} {}\n", "e".repeat(86)).as_bytes());
            }
            e.truncate(9 * 1024);
            e.push(b'\n');
            vec![
                Action::WaitStdin,
                Action::Stderr(e),
                Action::Stdout(cat(&[TEXT, b"after stderr\n"])),
                Action::StdoutEnd,
                end(),
            ]
        }),
        ("err_cf_end_size", "-flush", "", |r| {
            if r.query() == "before" {
                vec![Action::WaitStdin, Action::EndRaw(vec![0, 0, 0, 0])]
            } else {
                vec![
                    Action::WaitStdin,
                    Action::Stdout(cat(&[TEXT, b"partial"])),
                    Action::Sleep(300),
                    Action::EndRaw(vec![0; 12]),
                ]
            }
        }),
        ("err_cf_end_status", "-flush", "", |r| {
            let refused = match r.query().as_str() {
                "overloaded" => Some(2),
                "role" => Some(3),
                "nine" => Some(9),
                _ => None,
            };
            if let Some(protocol_status) = refused {
                vec![
                    Action::WaitStdin,
                    Action::End {
                        app_status: 0,
                        protocol_status,
                    },
                ]
            } else {
                vec![
                    Action::WaitStdin,
                    Action::Stdout(cat(&[TEXT, b"partial"])),
                    Action::Sleep(300),
                    Action::End {
                        app_status: 0,
                        protocol_status: 1,
                    },
                ]
            }
        }),
        ("err_cf_proto", "", "", |r| {
            let stdout = cat(&[TEXT, b"should not be seen"]);
            let first = match r.query().as_str() {
                "version" => raw_record(2, rtype::STDOUT, 1, &stdout, 0),
                "type" => raw_record(1, 20, 1, b"unknown!", 0),
                _ => raw_record(1, rtype::BEGIN_REQUEST, 1, &[0, 1, 0, 0, 0, 0, 0, 0], 0),
            };
            vec![
                Action::WaitStdin,
                Action::Send(first),
                Action::Stdout(stdout),
                Action::StdoutEnd,
                end(),
            ]
        }),
        ("cf_padding", "-keep-conn on", "", |_| {
            vec![
                Action::WaitStdin,
                Action::Send(raw_record(
                    1,
                    rtype::STDOUT,
                    1,
                    b"Content-Type: text/plain\r\nX-Padded: 1\r\n\r\n",
                    255,
                )),
                Action::Send(raw_record(1, rtype::STDOUT, 1, b"padded-1\n", 255)),
                Action::Send(raw_record(1, rtype::STDOUT, 1, b"unpadded-2\n", 0)),
                Action::Send(raw_record(1, rtype::STDOUT, 1, b"padded-3\n", 7)),
                Action::Send(raw_record(1, rtype::STDOUT, 1, b"", 255)),
                Action::Send(raw_record(
                    1,
                    rtype::END_REQUEST,
                    1,
                    &[0, 0, 0, 0, 0, 0, 0, 0],
                    255,
                )),
            ]
        }),
        ("err_cf_reqid", "", "", |_| {
            vec![
                Action::WaitStdin,
                Action::Send(raw_record(
                    1,
                    rtype::STDOUT,
                    2,
                    &cat(&[TEXT, b"for request 2"]),
                    0,
                )),
                Action::Stdout(cat(&[TEXT, b"for request 1"])),
                Action::StdoutEnd,
                end(),
            ]
        }),
        ("err_cf_eof_hdr", "", "", |r| {
            if r.query() == "zero" {
                vec![Action::WaitStdin, Action::Close]
            } else {
                vec![
                    Action::WaitStdin,
                    Action::Stdout(b"Status: 200\r\nX-Partial: yes".to_vec()),
                    Action::Close,
                ]
            }
        }),
        ("err_cf_eof_body", "-flush", "", |_| {
            vec![
                Action::WaitStdin,
                Action::Stdout(cat(&[TEXT, b"partial"])),
                Action::Sleep(300),
                Action::Close,
            ]
        }),
        ("err_cf_limit", "", "LimitRequestBody 1048576", |_| {
            vec![
                Action::WaitStdin,
                Action::Stdout(TEXT.to_vec()),
                Action::StdinSummary,
                Action::StdoutEnd,
                end(),
            ]
        }),
        ("cf_nodrain", "", "", |_| {
            // answers at once, never reads the request body
            vec![
                Action::Stdout(cat(&[TEXT, b"answered without reading\n"])),
                Action::StdoutEnd,
                end(),
            ]
        }),
        ("err_cf_badreq", "", "", player),
    ];
    for (id, opts, extra, script) in sites {
        // Fault scenarios run with the connection pool on (unless they say otherwise), so
        // that "the next request on the same vhost succeeds" also proves that no broken
        // connection went back to the pool.
        let opts = if id.starts_with("err_") && !opts.contains("-keep-conn") {
            format!("{opts} -keep-conn on")
        } else {
            opts.to_string()
        };
        let s: S = script;
        let port = b.port()?;
        let be = Backend::tcp(
            id,
            port,
            Arc::new(move |r: &Req| {
                if r.query() == "ok" {
                    respond(&cat(&[TEXT, OK_BODY]))
                } else {
                    s(r)
                }
            }),
        )?;
        add_site(b, id, &be.fces_target(), &opts, extra, "")?;
        BACKENDS
            .lock()
            .unwrap()
            .push((id.to_string(), Arc::new(be)));
    }

    // `AcceptPathInfo Off` where a URL with no file behind it goes to the application through
    // `Action ... virtual`
    let croot = b.docroot("conformance")?;
    add_site(
        b,
        "cf_action_virtual",
        &backend("cf_play").fces_target(),
        "",
        &format!(
            "<Directory {d}>\n    AcceptPathInfo Off\n</Directory>\n\
             <Location /api>\n    SetHandler cf-api\n    Action cf-api /app virtual\n</Location>\n",
            d = q(p(&croot))
        ),
        "",
    )?;

    // Two virtual paths, one below the other, neither on disk (nor their directory): the
    // longest one that the filename reaches serves it, whatever the order of definition.
    let nest = b.tmp.join("cf-fcgi").join("cf_nested.fcgi");
    let play = backend("cf_play").fces_target();
    add_site(
        b,
        "cf_nested",
        &play,
        "",
        &format!(
            "FastCgiExternalServer {v2} {play}\nFastCgiExternalServer {v3} {play}\n",
            v2 = q(p(&nest.join("v2"))),
            v3 = q(p(&nest.join("v2/deep/v3"))),
        ),
        "",
    )?;

    // NPH by file name (nph-*), no -nph option; the same fake application as cf_nph.
    let nph_target = backend("cf_nph").fces_target();
    add_site(b, "cf_nph_name", &nph_target, "", "", "nph-cf")?;

    // Connect failures: a TCP port where nothing listens, a missing socket, a root-only socket,
    // and unix listeners with a full backlog (-appConnTimeout 2; and 0 = the vhost's Timeout 2).
    let refused = refused_port()?;
    b.set("refused_port", refused);
    let run = b.tmp.join("run");
    // -connect-retry 0: fails at once, as mod_fastcgi (the default, 1 s, is err_cf_nosock's)
    add_site(
        b,
        "err_cf_refused",
        &format!("-host 127.0.0.1:{refused}"),
        "-connect-retry 0",
        "",
        "",
    )?;
    // an application that is not there yet, then starts, then stops (-connect-retry 3)
    let restart_sock = run.join("cf-restart.sock");
    let _ = std::fs::remove_file(&restart_sock);
    b.set("restart_sock", p(&restart_sock));
    add_site(
        b,
        "err_cf_restart",
        &format!("-socket {}", q(p(&restart_sock))),
        "-connect-retry 3",
        "",
        "",
    )?;
    let nosock = run.join("cf-missing.sock");
    b.set("nosock", p(&nosock));
    add_site(
        b,
        "err_cf_nosock",
        &format!("-socket {}", q(p(&nosock))),
        "",
        "",
        "",
    )?;
    let eacces = run.join("cf-eacces.sock");
    let _ = std::fs::remove_file(&eacces);
    let l = UnixListener::bind(&eacces).map_err(|e| format!("bind {}: {e}", eacces.display()))?;
    util::chmod(&eacces, 0o600)?;
    HELD.lock().unwrap().push(l);
    b.set("eacces_sock", p(&eacces));
    add_site(
        b,
        "err_cf_eacces",
        &format!("-socket {}", q(p(&eacces))),
        "",
        "",
        "",
    )?;
    for (id, opts, extra) in [
        ("err_cf_backlog", "-appConnTimeout 2", ""),
        ("err_cf_backlog0", "", "Timeout 2"),
    ] {
        let sock = run.join(format!("{}.sock", id.replace('_', "-")));
        let l = StuckUnixListener::new(&sock, 1)?;
        b.set(&format!("{id}.sock"), p(&sock));
        add_site(b, id, &format!("-socket {}", q(p(&sock))), opts, extra, "")?;
        STUCK.lock().unwrap().push((id.to_string(), l));
    }

    // php-fpm for the chunked upload
    let fpm_port = b.port()?;
    b.pool(Pool::new(
        "conformance",
        "www-data",
        "www-data",
        Endpoint::Tcp(fpm_port),
    ));
    let docroot = b.docroot("conformance")?;
    // length.php: the same script where the application's Content-Length is not trusted (the
    // document root) and where httpd's switch `ap_trust_cgilike_cl` says it is (cl/).
    util::write_file(&docroot.join("length.php"), LENGTH_PHP)?;
    util::write_file(&docroot.join("cl/length.php"), LENGTH_PHP)?;
    util::write_file(
        &docroot.join("ssi/hints.shtml"),
        "before\n<!--#include virtual=\"/early-hints.php\" -->after\n",
    )?;
    util::write_file(
        &docroot.join("early-hints.php"),
        "<?php\nheader('Status: 103 Early Hints');\n\
         header('Link: </a.css>; rel=preload; as=style');\necho \"page after hints\\n\";\n",
    )?;
    util::write_file(
        &docroot.join("cookie.php"),
        "<?php\n$c = $_SERVER['HTTP_COOKIE'] ?? '';\n\
         echo 'COOKIE_LEN=', strlen($c), \"\\n\", 'COOKIE_MD5=', md5($c), \"\\n\",\n\
         \x20    'BIG_LEN=', strlen($_COOKIE['big'] ?? ''), \"\\n\";\n",
    )?;
    let vdir = b.tmp.join("cf-fcgi");
    let vpath = vdir.join("php.fcgi");
    b.set("cf_php.vpath", p(&vpath));
    let body = format!(
        "AddType application/x-httpd-fastphp5 .php\n\
         Action application/x-httpd-fastphp5 /php.fcgi\n\
         Alias /php.fcgi {vp}\n\
         FastCgiExternalServer {vp} -host 127.0.0.1:{fpm_port}\n\
         <Directory {vd}>\n    Require all granted\n</Directory>\n\
         <Directory {cl}>\n    SetEnv ap_trust_cgilike_cl 1\n</Directory>\n\
         <Directory {ssi}>\n    Options +Includes\n    AddOutputFilter INCLUDES .shtml\n</Directory>\n\
         LimitRequestFieldSize 65536\n",
        vp = q(p(&vpath)),
        vd = q(p(&vdir)),
        cl = q(p(&docroot.join("cl"))),
        ssi = q(p(&docroot.join("ssi"))),
    );
    let port = b.port()?;
    b.vhost("cf_php", port, "cf-php.test", &docroot, &body);
    // the same site, for the cases that log an error on purpose
    b.set("err_cf_php.vpath", p(&vpath));
    let port = b.port()?;
    b.vhost("err_cf_php", port, "err-cf-php.test", &docroot, &body);
    Ok(())
}

/// A port where nothing listens, outside the ephemeral range (so nothing the tests start can
/// take it): the first of a few well-known small ports that refuses a connection.
fn refused_port() -> Result<u16, String> {
    for p in [9u16, 19, 47, 1023, 1021] {
        match TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], p)),
            Duration::from_secs(1),
        ) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(p),
            _ => continue,
        }
    }
    Err("no refusing port among 9, 19, 47, 1023, 1021".into())
}

/// A vhost whose `/app` maps to a virtual path `<tmp>/cf-fcgi/<name>.fcgi` served by `target`
/// (`<id>.fcgi` when `name` is empty).
fn add_site(
    b: &mut Builder,
    id: &str,
    target: &str,
    opts: &str,
    extra: &str,
    name: &str,
) -> Result<(), String> {
    let file = if name.is_empty() { id } else { name };
    let site = AppSite {
        dir: "cf-fcgi",
        file,
        docroot: "conformance",
        target,
        opts,
        extra,
    };
    add_app_site(b, id, site)
}

/// `AcceptPathInfo Off` does not refuse a URL that `Action ... virtual` sends to the
/// application with no file behind it (`<Location /api> SetHandler`, no /api in the document
/// root): the part after the last existing directory is not a path after a script, and mod_cgi
/// serves such a URL too. (A real script's trailing path is still refused:
/// `seed1_accept_path_info_off`.)
fn action_virtual_accept_path_info_off(ctx: &Ctx) -> Result<(), String> {
    let id = "cf_action_virtual";
    let logs = Logs::mark(ctx, id);
    let r = ctx.get(id, "/api/v1/users?params=1")?;
    ensure(
        r.status == 200 && r.text().contains("PATH_INFO=/api/v1/users\n"),
        || {
            format!(
                "want the application's answer with PATH_INFO /api/v1/users, got {}",
                r.summary()
            )
        },
    )?;
    ensure(!logs.text().contains("FCGI064"), || {
        "refused as a trailing path (FCGI064)".to_string()
    })
}

/// Nested virtual paths (`…/cf_nested.fcgi`, `…/cf_nested.fcgi/v2` and
/// `…/cf_nested.fcgi/v2/deep/v3`, none on disk): a URL reaching a deeper one is its script with
/// the rest as PATH_INFO; anything else is the shorter one's PATH_INFO. (The directory walk
/// used to stop at the shortest, so the deeper definitions were never used.)
fn nested_virtual_paths(ctx: &Ctx) -> Result<(), String> {
    let id = "cf_nested";
    let base = ctx.val(&format!("{id}.vpath"));
    let cases = [
        ("/app/x/y", "/app", "", "/x/y"),
        ("/app/v2/x", "/app/v2", "/v2", "/x"),
        ("/app/v2", "/app/v2", "/v2", ""),
        ("/app/v2x", "/app", "", "/v2x"),
        ("/app/v2/deep/x", "/app/v2", "/v2", "/deep/x"),
        ("/app/v2/deep/v3/z", "/app/v2/deep/v3", "/v2/deep/v3", "/z"),
    ];
    for (url, script_name, below, path_info) in cases {
        let r = ctx.get(id, &format!("{url}?params"))?;
        let text = r.text();
        let want = [
            format!("SCRIPT_NAME={script_name}\n"),
            format!("SCRIPT_FILENAME={base}{below}\n"),
        ];
        let info_ok = if path_info.is_empty() {
            !text.contains("PATH_INFO=")
        } else {
            text.contains(&format!("PATH_INFO={path_info}\n"))
        };
        ensure(
            r.status == 200 && want.iter().all(|w| text.contains(w.as_str())) && info_ok,
            || {
                format!(
                    "{url}: want SCRIPT_NAME={script_name}, SCRIPT_FILENAME={base}{below}, PATH_INFO={path_info:?}; got {}",
                    r.summary()
                )
            },
        )?;
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// helpers

/// The checks after every fault: no crash, and a normal request on the same vhost succeeds.
fn after_fault(ctx: &Ctx, id: &str, logs: &Logs) -> Result<(), String> {
    logs.no_crash()?;
    let r = ctx
        .get(id, "/app/ok?ok")
        .map_err(|e| format!("normal request after the fault: {e}"))?;
    ensure(r.status == 200 && r.body == OK_BODY && r.complete, || {
        format!("normal request after the fault: {}", r.summary())
    })?;
    logs.no_crash()
}

/// After a connect failure there is no application to talk to: check no crash and that a
/// healthy vhost still answers.
fn after_connect_fault(ctx: &Ctx, logs: &Logs) -> Result<(), String> {
    logs.no_crash()?;
    let r = ctx.get("cf_play", "/app/ok?ok")?;
    ensure(r.status == 200 && r.body == OK_BODY, || {
        format!("healthy vhost after the fault: {}", r.summary())
    })
}

/// `/app/x?out=<hex>[&split=n]`
fn play_target(out: &[u8], split: usize) -> String {
    let mut t = format!("/app/x?out={}", util::hex(out));
    if split > 0 {
        t.push_str(&format!("&split={split}"));
    }
    t
}

/// A normal request on the same client connection after `what` is served: the previous
/// response left no bytes behind (no framing desync) and the connection open.
fn next_request_ok(c: &mut Conn, h: &str, what: &str) -> Result<(), String> {
    let r = c
        .roundtrip(&Request::get("/app/ok?ok").host(h).close())
        .map_err(|e| format!("{what}: next request on the connection: {e}"))?;
    ensure(r.status == 200 && r.body == OK_BODY, || {
        format!("{what}: next request on the connection: {}", r.summary())
    })
}

/// Raw bytes of a whole exchange (request sent, everything read until the server closes).
fn raw_exchange(port: u16, req: &[u8]) -> Result<Vec<u8>, String> {
    let mut s = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(5),
    )
    .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(req).map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(format!("read after {} bytes: {e}", out.len())),
        }
    }
    Ok(out)
}

fn raw_get(ctx: &Ctx, id: &str, target: &str) -> Result<Vec<u8>, String> {
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        host(ctx, id)
    );
    raw_exchange(ctx.vhost(id).port, req.as_bytes())
}

/// Header block of a raw HTTP response as text.
fn raw_head(raw: &[u8]) -> String {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// GET on a keep-alive connection (to see whether the server closes it afterwards).
fn get_keepalive(ctx: &Ctx, id: &str, target: &str) -> Result<(Response, Conn), String> {
    let mut c = ctx.connect(id)?;
    let r = c
        .roundtrip(&Request::get(target).host(&host(ctx, id)))
        .map_err(|e| format!("GET {target}: {e}"))?;
    Ok((r, c))
}

/// Split a chunk-encoded request body.
fn chunk_encode(data: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1024);
    let mut pos = 0;
    let mut i = 0;
    while pos < data.len() {
        let n = sizes[i % sizes.len()].min(data.len() - pos);
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend_from_slice(&data[pos..pos + n]);
        out.extend_from_slice(b"\r\n");
        pos += n;
        i += 1;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Send `head` then `body` (from a thread: the server may answer before reading it all) and
/// read the response. The writer's errors are ignored (the server may stop reading).
fn post_streamed(port: u16, head: &[u8], body: Vec<u8>) -> Result<Response, String> {
    let mut c = Conn::connect(port).map_err(String::from)?;
    c.send_raw(head).map_err(String::from)?;
    let mut w = c.stream().try_clone().map_err(|e| e.to_string())?;
    let h = thread::spawn(move || {
        let _ = w.write_all(&body);
    });
    let r = c.read_response(false).map_err(String::from);
    let _ = c.stream().shutdown(Shutdown::Both);
    let _ = h.join();
    r
}

// ------------------------------------------------------------------------------------------
// options

/// (first chunk arrival, second chunk arrival) for the two_chunks script.
fn two_chunk_arrivals(ctx: &Ctx, id: &str) -> Result<(Duration, Duration), String> {
    let mut c = ctx.connect(id)?;
    let mut body = Vec::new();
    let req = Request::get("/app/x?chunks").host(&host(ctx, id)).close();
    let r = c
        .roundtrip_streaming(&req, &mut |d| {
            body.extend_from_slice(d);
            Ok(())
        })
        .map_err(String::from)?;
    expect_status(&r, 200)?;
    ensure(r.complete && body == b"first-chunk\nsecond-chunk\n", || {
        format!(
            "body {:?} complete={} ({})",
            String::from_utf8_lossy(&body),
            r.complete,
            r.summary()
        )
    })?;
    let at = |off: u64| {
        r.arrivals
            .iter()
            .find(|a| a.offset <= off && off < a.offset + a.len as u64)
            .map(|a| a.at)
            .ok_or_else(|| format!("no arrival for offset {off}: {:?}", r.arrivals))
    };
    Ok((at(0)?, at(b"first-chunk\n".len() as u64)?))
}

fn flush_option_streams_each_piece(ctx: &Ctx) -> Result<(), String> {
    expect_streamed(ctx, "cf_flush", "-flush")
}

/// `X-Accel-Buffering: no` from the application streams its output as `-flush` does, on a
/// server defined without `-flush` (where the first piece would be held up to 100 ms).
fn x_accel_buffering_no_streams_each_piece(ctx: &Ctx) -> Result<(), String> {
    expect_streamed(ctx, "cf_unbuffered", "X-Accel-Buffering: no")
}

/// The two chunks of vhost `id` reach the client as they leave the application: the first
/// passed and flushed after the read that brought it (no 100 ms hold), the second 300 ms later.
fn expect_streamed(ctx: &Ctx, id: &str, what: &str) -> Result<(), String> {
    let (first, second) = two_chunk_arrivals(ctx, id)?;
    if std::env::var_os("MFCGI_VERBOSE").is_some() {
        println!(
            "    {what}: first chunk at {} ms, second at {} ms",
            ms(first),
            ms(second)
        );
    }
    // (under valgrind only the gap below tells: the first run of a code path alone can take
    // 700 ms there)
    let max_first = ctx.scaled(Duration::from_millis(80), Duration::from_millis(1000));
    ensure(first < max_first, || {
        format!(
            "with {what} the first chunk arrived after {} ms (want < {} ms: no holding)",
            ms(first),
            ms(max_first)
        )
    })?;
    ensure(
        second.saturating_sub(first) >= Duration::from_millis(200),
        || {
            format!(
                "no clear gap: first chunk at {} ms, second at {} ms (backend waits 300 ms)",
                ms(first),
                ms(second)
            )
        },
    )
}

fn no_flush_holds_data_at_most_100ms(ctx: &Ctx) -> Result<(), String> {
    let (first, second) = two_chunk_arrivals(ctx, "cf_noflush")?;
    if std::env::var_os("MFCGI_VERBOSE").is_some() {
        println!(
            "    no -flush: first chunk at {} ms, second at {} ms",
            ms(first),
            ms(second)
        );
    }
    let max_first = ctx.scaled(Duration::from_millis(250), Duration::from_millis(600));
    ensure(first <= max_first, || {
        format!(
            "without -flush the first chunk was held {} ms (want ≤ 100 ms of backend silence + slack, ≤ {} ms)",
            ms(first),
            ms(max_first)
        )
    })?;
    ensure(
        second.saturating_sub(first) >= Duration::from_millis(100),
        || {
            format!(
                "first chunk at {} ms came with the second at {} ms",
                ms(first),
                ms(second)
            )
        },
    )
}

fn idle_timeout_before_headers_504(ctx: &Ctx) -> Result<(), String> {
    let id = "err_cf_idle_hdr";
    let be = backend(id);
    let vp = vpath(ctx, id);
    for (case, target) in [
        ("silent", "/app/x?silent"),
        ("partial headers", "/app/x?partial"),
    ] {
        let logs = Logs::mark(ctx, id);
        let n = be.record_count();
        let t0 = Instant::now();
        let r = ctx.get(id, target)?;
        let took = t0.elapsed();
        ensure(r.status == 504, || {
            format!("{case}: want 504, got {}", r.summary())
        })?;
        ensure(
            took >= Duration::from_millis(900) && took < late(ctx, 2500),
            || {
                format!(
                    "{case}: 504 after {} ms, want about 1000 ms (-idle-timeout 1)",
                    ms(took)
                )
            },
        )?;
        logs.expect_one_error(&[&format!(
            "FastCGI: comm with server \"{vp}\" aborted: idle timeout (1 sec)"
        )])
        .map_err(|e| format!("{case}: {e}"))?;
        let rec = be.wait_record(n + 1, Duration::from_secs(5))?;
        let closed = rec
            .peer_closed_after
            .ok_or_else(|| format!("{case}: the backend connection was not closed"))?;
        ensure(closed < late(ctx, 2500), || {
            format!(
                "{case}: backend connection closed {} ms after the request",
                ms(closed)
            )
        })?;
        after_fault(ctx, id, &logs)?;
    }
    Ok(())
}

fn no_flush_continuous_output_not_held(ctx: &Ctx) -> Result<(), String> {
    let id = "cf_noflush";
    let mut c = ctx.connect(id)?;
    let mut len = 0usize;
    let req = Request::get("/app/x?stream").host(&host(ctx, id)).close();
    let r = c
        .roundtrip_streaming(&req, &mut |d| {
            len += d.len();
            Ok(())
        })
        .map_err(String::from)?;
    ensure(r.status == 200 && r.complete && len == 40 * 1024, || {
        format!("{len} bytes: {}", r.summary())
    })?;
    let first = r.arrivals.first().map(|a| a.at).unwrap_or_default();
    let last = r.arrivals.last().map(|a| a.at).unwrap_or_default();
    if std::env::var_os("MFCGI_VERBOSE").is_some() {
        println!(
            "    no -flush, continuous output: {} arrivals, first at {} ms, last at {} ms",
            r.arrivals.len(),
            ms(first),
            ms(last)
        );
    }
    // mod_fastcgi passes its 8 KiB buffer when full: here after ~200 ms at the latest
    ensure(
        first <= late(ctx, 350)
            && r.arrivals.len() >= 4
            && last.saturating_sub(first) >= Duration::from_millis(500),
        || {
            format!(
                "output of an application that never pauses 100 ms was held: {} arrivals, first at {} ms, last at {} ms (application writes 2 KiB every 50 ms for ~1 s)",
                r.arrivals.len(),
                ms(first),
                ms(last)
            )
        },
    )
}

fn idle_timeout_app_not_reading_body_504(ctx: &Ctx) -> Result<(), String> {
    let id = "err_cf_idle_hdr";
    let logs = Logs::mark(ctx, id);
    let body = util::Prng::new(11).bytes(8 << 20);
    let head = format!(
        "POST /app/x?noread HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        host(ctx, id),
        body.len()
    );
    let t0 = Instant::now();
    let r = post_streamed(ctx.vhost(id).port, head.as_bytes(), body)?;
    let took = t0.elapsed();
    ensure(r.status == 504, || format!("want 504, got {}", r.summary()))?;
    ensure(
        took >= Duration::from_millis(900) && took < late(ctx, 3000),
        || {
            format!(
                "504 after {} ms, want about 1000 ms after the application stopped accepting the body",
                ms(took)
            )
        },
    )?;
    logs.expect_one_error(&[&format!(
        "FastCGI: comm with server \"{}\" aborted: idle timeout (1 sec)",
        vpath(ctx, id)
    )])?;
    after_fault(ctx, id, &logs)
}

fn idle_timeout_after_headers_aborts(ctx: &Ctx) -> Result<(), String> {
    let id = "err_cf_idle_body";
    let logs = Logs::mark(ctx, id);
    let be = backend(id);
    let n = be.record_count();
    let t0 = Instant::now();
    let (r, mut c) = get_keepalive(ctx, id, "/app/x?stall")?;
    let took = t0.elapsed();
    expect_aborted(&r, &mut c, b"part1")?;
    ensure(
        took >= Duration::from_millis(900) && took < late(ctx, 2500),
        || format!("response cut after {} ms, want about 1000 ms", ms(took)),
    )?;
    logs.expect_one_error(&[&format!(
        "FastCGI: comm with server \"{}\" aborted: idle timeout (1 sec)",
        vpath(ctx, id)
    )])?;
    let rec = be.wait_record(n + 1, Duration::from_secs(5))?;
    ensure(
        rec.peer_closed_after.is_some_and(|d| d < late(ctx, 2500)),
        || {
            format!(
                "backend connection not closed by the idle timeout: {:?}",
                rec.peer_closed_after
            )
        },
    )?;
    after_fault(ctx, id, &logs)
}

fn idle_timeout_trickle_does_not_fire(ctx: &Ctx) -> Result<(), String> {
    let id = "cf_idle_trickle";
    let logs = Logs::mark(ctx, id);
    let t0 = Instant::now();
    let r = ctx.get(id, "/app/x?trickle")?;
    let took = t0.elapsed();
    ensure(
        r.status == 200 && r.body == b"abcd" && r.complete && r.header("X-Trickle") == Some("1"),
        || format!("trickled response: {}", r.summary()),
    )?;
    ensure(took >= Duration::from_millis(2500), || {
        format!("trickle took only {} ms?", ms(took))
    })?;
    logs.expect_no_errors()
}

fn idle_timeout_slow_client_does_not_fire(ctx: &Ctx) -> Result<(), String> {
    let id = "cf_idle_slowclient";
    let logs = Logs::mark(ctx, id);
    let be = backend(id);
    let n = be.record_count();
    let mut c = ctx.connect(id)?;
    let req = Request::get("/app/x?slow").host(&host(ctx, id)).close();
    c.send_raw(&req.to_bytes()).map_err(String::from)?;
    let t0 = Instant::now();
    thread::sleep(Duration::from_millis(2500)); // read nothing for 2.5 × idle-timeout
    let mut len = 0usize;
    let mut mismatch: Option<usize> = None;
    let r = c
        .read_response_at(
            false,
            t0,
            Some(&mut |d: &[u8]| {
                for (i, &b) in d.iter().enumerate() {
                    if mismatch.is_none() && b != pattern_byte(len + i) {
                        mismatch = Some(len + i);
                    }
                }
                len += d.len();
                Ok(())
            }),
        )
        .map_err(String::from)?;
    ensure(r.status == 200 && r.complete, || {
        format!("slow client: {}", r.summary())
    })?;
    ensure(len == SLOW_CLIENT_LEN && mismatch.is_none(), || {
        format!(
            "slow client got {len} bytes (want {SLOW_CLIENT_LEN}), first wrong byte at {mismatch:?}"
        )
    })?;
    let rec = be.wait_record(n + 1, Duration::from_secs(5))?;
    let written = rec.mark("written").ok_or("no 'written' mark")?;
    // The module must have been held up by the client (bounded buffering), else this test
    // proved nothing.
    ensure(written >= Duration::from_millis(2000), || {
        format!(
            "the backend wrote all 96 MiB after {} ms although the client read nothing for 2500 ms (response buffered unboundedly?)",
            ms(written)
        )
    })?;
    logs.expect_no_errors()
}

fn idle_timeout_slow_upload_does_not_fire(ctx: &Ctx) -> Result<(), String> {
    let id = "cf_idle_slowupload";
    let logs = Logs::mark(ctx, id);
    let body = util::Prng::new(7).bytes(3000);
    let head = format!(
        "POST /app/x?upload HTTP/1.1\r\nHost: {}\r\nContent-Length: 3000\r\nConnection: close\r\n\r\n",
        host(ctx, id)
    );
    let mut c = ctx.connect(id)?;
    c.send_raw(head.as_bytes()).map_err(String::from)?;
    for (i, piece) in body.chunks(1000).enumerate() {
        if i > 0 {
            thread::sleep(Duration::from_millis(1500));
        }
        c.send_raw(piece).map_err(String::from)?;
    }
    let r = c.read_response(false).map_err(String::from)?;
    expect_status(&r, 200)?;
    let want = format!("STDIN_LEN=3000\nSTDIN_FNV={:016x}\n", fnv64(&body));
    ensure(r.text() == want, || {
        format!("want {want:?}, got {}", r.summary())
    })?;
    logs.expect_no_errors()
}

fn full_backlog_case(ctx: &Ctx, id: &str, setting: &str) -> Result<(), String> {
    let logs = Logs::mark(ctx, id);
    let sock = ctx.val(&format!("{id}.sock")).to_string();
    let held = {
        let stuck = STUCK.lock().unwrap();
        let l = stuck
            .iter()
            .find(|(n, _)| n == id)
            .map(|(_, l)| l)
            .ok_or("no stuck listener")?;
        l.fill()?
    };
    let t0 = Instant::now();
    let r = ctx.get(id, "/app/x?backlog");
    let took = t0.elapsed();
    drop(held);
    let r = r?;
    expect_status(&r, 503)?;
    ensure(
        took >= Duration::from_millis(1800) && took < late(ctx, 3500),
        || format!("503 after {} ms, want about 2000 ms", ms(took)),
    )?;
    logs.expect_one_error(&[
        &format!(
            "FastCGI: failed to connect to server \"{}\": connect() timed out ({setting})",
            vpath(ctx, id)
        ),
        &format!("(address unix:{sock})"),
        "(11)",
    ])?;
    after_connect_fault(ctx, &logs)
}

fn app_conn_timeout_full_backlog_503(ctx: &Ctx) -> Result<(), String> {
    full_backlog_case(ctx, "err_cf_backlog", "appConnTimeout=2sec")
}

fn app_conn_timeout_0_means_timeout(ctx: &Ctx) -> Result<(), String> {
    full_backlog_case(ctx, "err_cf_backlog0", "Timeout=2sec")
}

fn pass_header_adds_http_vars(ctx: &Ctx) -> Result<(), String> {
    let req = |id: &str| {
        ctx.req(
            id,
            Request::get("/app/x?params")
                .header("Authorization", "Basic Zm9vOmJhcg==")
                .header("Proxy-Authorization", "Basic cHJveHk6cHc=")
                .header("Proxy", "http://evil.example:3128/")
                .header("X-Api-Key", "k1"),
        )
    };
    let r = req("cf_passhdr")?;
    expect_status(&r, 200)?;
    let kv = r.kv();
    let mut errs = Vec::new();
    for (k, v) in [
        ("HTTP_AUTHORIZATION", Some("Basic Zm9vOmJhcg==")),
        ("HTTP_PROXY_AUTHORIZATION", Some("Basic cHJveHk6cHc=")),
        ("HTTP_X_API_KEY", Some("k1")),
        ("HTTP_PROXY", None),
    ] {
        if kv.get(k).map(|s| s.as_str()) != v {
            errs.push(format!("{k}={:?} (want {v:?})", kv.get(k)));
        }
    }
    // without -pass-header httpd withholds the credentials
    let r = req("cf_play")?;
    let kv2 = r.kv();
    for k in [
        "HTTP_AUTHORIZATION",
        "HTTP_PROXY_AUTHORIZATION",
        "HTTP_PROXY",
    ] {
        if let Some(v) = kv2.get(k) {
            errs.push(format!("without -pass-header: {k}={v:?} should be absent"));
        }
    }
    ensure(errs.is_empty(), || {
        format!("{}; params:\n{}", errs.join("; "), r.text())
    })
}

/// A minimal configuration for `apache2 -t` with this instance's modules and `fces` added.
pub fn config_text(ctx: &Ctx, name: &str, fces: &str) -> String {
    let dir = ctx.tmp.join("conf/configtest");
    format!(
        "ServerRoot {sr}\nServerName localhost\nPidFile {pid}\nDefaultRuntimeDir {rt}\n{mods}\nErrorLog {log}\n{fces}\n",
        sr = q(p(&ctx.tmp)),
        pid = q(p(&dir.join(format!("{name}.pid")))),
        rt = q(p(&ctx.tmp.join("run/apache"))),
        mods = ctx.apache_conf.load_modules(),
        log = q(p(&dir.join(format!("{name}.log")))),
    )
}

fn pass_header_proxy_refused(ctx: &Ctx) -> Result<(), String> {
    let good = ctx.config_test(
        "cf_passhdr_ok",
        &config_text(
            ctx,
            "cf_passhdr_ok",
            "FastCgiExternalServer /tmp/cf-x.fcgi -host 127.0.0.1:9 -pass-header Authorization",
        ),
    )?;
    ensure(good.ok, || {
        format!(
            "control config (-pass-header Authorization) rejected: {}",
            good.output
        )
    })?;
    for (name, line) in [
        (
            "cf_passhdr_proxy",
            "FastCgiExternalServer /tmp/cf-y.fcgi -host 127.0.0.1:9 -pass-header Proxy",
        ),
        (
            "cf_passhdr_proxy_lc",
            "FastCgiExternalServer /tmp/cf-z.fcgi -host 127.0.0.1:9 -pass-header proxy",
        ),
    ] {
        let t = ctx.config_test(name, &config_text(ctx, name, line))?;
        ensure(!t.ok, || {
            format!("{line:?} accepted by apache2 -t: {}", t.output)
        })?;
        ensure(
            t.output.to_ascii_lowercase().contains("proxy")
                && t.output.contains("FastCgiExternalServer"),
            || {
                format!(
                    "{line:?}: error does not explain (want the directive and Proxy): {}",
                    t.output
                )
            },
        )?;
    }
    Ok(())
}

fn option_values_checked(ctx: &Ctx) -> Result<(), String> {
    let base = "FastCgiExternalServer /tmp/cf-opt.fcgi -host 127.0.0.1:9";
    for (name, opts, ok, needle) in [
        ("cf_opt_idle0", "-idle-timeout 0", false, ">= 1"),
        (
            "cf_opt_idle_neg",
            "-idle-timeout -5",
            false,
            "-idle-timeout",
        ),
        (
            "cf_opt_idle_abc",
            "-idle-timeout abc",
            false,
            "-idle-timeout",
        ),
        ("cf_opt_idle1", "-idle-timeout 1", true, ""),
        ("cf_opt_act0", "-appConnTimeout 0", true, ""),
        (
            "cf_opt_act_neg",
            "-appConnTimeout -1",
            false,
            "-appConnTimeout",
        ),
        (
            "cf_opt_passhdr_missing",
            "-pass-header",
            false,
            "-pass-header",
        ),
        (
            "cf_opt_all",
            "-flush -nph -idle-timeout 2 -appConnTimeout 3 -pass-header Authorization -pass-header X-A -user nobody -group nogroup",
            true,
            "",
        ),
    ] {
        let t = ctx.config_test(name, &config_text(ctx, name, &format!("{base} {opts}")))?;
        ensure(t.ok == ok, || {
            format!("{opts:?}: apache2 -t ok={} (want {ok}): {}", t.ok, t.output)
        })?;
        ensure(ok || t.output.contains(needle), || {
            format!("{opts:?}: error does not mention {needle:?}: {}", t.output)
        })?;
    }
    Ok(())
}

const NPH_BYTES: &[u8] =
    b"HTTP/1.1 299 Raw Status\r\nX-Nph: yes\r\nContent-Length: 11\r\n\r\nhello world";

fn nph_exact(ctx: &Ctx, id: &str) -> Result<(), String> {
    let logs = Logs::mark(ctx, id);
    let raw = raw_get(ctx, id, "/app/x?nph")?;
    ensure(raw == NPH_BYTES, || {
        format!(
            "client got {:?}, want exactly the application's bytes {:?}",
            String::from_utf8_lossy(&raw),
            String::from_utf8_lossy(NPH_BYTES)
        )
    })?;
    logs.expect_no_errors()
}

fn nph_option_bytes_unchanged(ctx: &Ctx) -> Result<(), String> {
    nph_exact(ctx, "cf_nph")
}

fn nph_file_name_prefix(ctx: &Ctx) -> Result<(), String> {
    nph_exact(ctx, "cf_nph_name")
}

fn user_group_ignored_with_warning(ctx: &Ctx) -> Result<(), String> {
    let vp = vpath(ctx, "cf_usergroup");
    let text = util::read_to_string_lossy(&ctx.error_log())
        + &util::read_to_string_lossy(&ctx.tmp.join("logs/apache2.stderr"));
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.contains("there is no fastcgi wrapper set, user/group options are ignored")
                && l.contains(&vp)
        })
        .collect();
    ensure(!lines.is_empty(), || {
        format!("no startup warning for {vp} in error.log / apache2.stderr")
    })?;
    ensure(lines.iter().any(|l| l.contains("[fastcgi:warn]")), || {
        format!("warning not at warn level: {lines:?}")
    })?;
    // and the definition works
    let r = ctx.get("cf_usergroup", "/app/ok?ok")?;
    ensure(r.status == 200 && r.body == OK_BODY, || {
        format!("-user/-group server: {}", r.summary())
    })
}

// ------------------------------------------------------------------------------------------
// response rules

fn header_terminators_and_record_splits(ctx: &Ctx) -> Result<(), String> {
    let logs = Logs::mark(ctx, "cf_play");
    let blocks: [(&str, &[u8]); 5] = [
        (
            "LF LF",
            b"Status: 201 Created\nX-T: a\nContent-Type: text/plain\n\nBODY",
        ),
        (
            "CRLF CRLF",
            b"Status: 201 Created\r\nX-T: a\r\nContent-Type: text/plain\r\n\r\nBODY",
        ),
        (
            "CRLF LF",
            b"Status: 201 Created\r\nX-T: a\r\nContent-Type: text/plain\r\n\nBODY",
        ),
        (
            "LF CRLF",
            b"Status: 201 Created\nX-T: a\nContent-Type: text/plain\n\r\nBODY",
        ),
        (
            "mixed lines",
            b"Status: 201 Created\r\nX-T: a\nContent-Type: text/plain\r\n\r\nBODY",
        ),
    ];
    let mut errs = Vec::new();
    for (name, block) in blocks {
        for split in [0usize, 1, 2, 3, 7] {
            let r = ctx.get("cf_play", &play_target(block, split))?;
            if !(r.status == 201 && r.header("X-T") == Some("a") && r.body == b"BODY" && r.complete)
            {
                errs.push(format!("{name}, records of {split} bytes: {}", r.summary()));
            }
        }
    }
    // an empty header block
    for split in [0usize, 1] {
        let r = ctx.get("cf_play", &play_target(b"\r\nBODY", split))?;
        if !(r.status == 200 && r.body == b"BODY") {
            errs.push(format!(
                "empty header block, split {split}: {}",
                r.summary()
            ));
        }
    }
    ensure(errs.is_empty(), || errs.join("\n    "))?;
    logs.expect_no_errors()
}

fn header_block_8k_64k_120k_128k(ctx: &Ctx) -> Result<(), String> {
    let logs = Logs::mark(ctx, "cf_play");
    for size in [8 * 1024usize, 64 * 1024, 120 * 1024, 128 * 1024] {
        let (_, lines) = big_header_block(size);
        let r = ctx.get("cf_play", &format!("/app/x?bighdr={size}"))?;
        let pads = r
            .headers
            .iter()
            .filter(|(k, _)| k.starts_with("X-Pad-"))
            .count();
        ensure(
            r.status == 200 && r.body == b"BODY" && pads == lines,
            || {
                format!(
                    "{size}-byte header block: status {} body {:?} X-Pad headers {pads} (want {lines})",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                )
            },
        )?;
    }
    logs.expect_no_errors()
}

fn header_block_over_limit_502(ctx: &Ctx) -> Result<(), String> {
    let id = "err_cf_hdr_huge";
    // 128 KiB + 1 byte (the limit is 128 KiB, terminating blank line included), 200 KiB of
    // header lines, one 200 KiB line
    for case in ["bighdr=131073", "lines", "oneline"] {
        let logs = Logs::mark(ctx, id);
        let r = ctx.get(id, &format!("/app/x?{case}"))?;
        ensure(r.status == 502, || {
            format!(
                "{case}: header block over the limit: want 502, got {}",
                r.summary()
            )
        })?;
        logs.expect_one_error(&[&format!(
            "FastCGI: comm with server \"{}\" aborted: error parsing headers",
            vpath(ctx, id)
        )])
        .map_err(|e| format!("{case}: {e}"))?;
        after_fault(ctx, id, &logs)?;
    }
    Ok(())
}

fn status_valid_used(ctx: &Ctx) -> Result<(), String> {
    let logs = Logs::mark(ctx, "cf_play");
    for (status, code, reason) in [
        ("201 Created", 201, Some("Created")),
        ("404 Not Found", 404, Some("Not Found")),
        ("404", 404, None),
        ("299 Custom Reason", 299, Some("Custom Reason")),
        ("503 Busy Now", 503, Some("Busy Now")),
        ("200", 200, None),
    ] {
        let r = ctx.get(
            "cf_play",
            &play_target(
                format!("Status: {status}\r\nContent-Type: text/plain\r\n\r\napp body").as_bytes(),
                0,
            ),
        )?;
        ensure(r.status == code && r.body == b"app body", || {
            format!("Status: {status}: {}", r.summary())
        })?;
        if let Some(reason) = reason {
            ensure(r.reason == reason, || {
                format!("Status: {status}: reason phrase {:?}", r.reason)
            })?;
        }
    }
    logs.expect_no_errors()
}

/// A 1xx Status (PHP's `header('Status: 103 Early Hints')` with `Link` headers) goes out as
/// an interim response with the block's headers, and the response goes on as a 200 with the
/// same headers and the body; sent as the final status it left the client reading the body as
/// the next response. A 100 only goes to a client that expects one.
fn status_1xx_interim(ctx: &Ctx) -> Result<(), String> {
    let id = "cf_play";
    let logs = Logs::mark(ctx, id);
    let mut c = ctx.connect(id)?;
    let h = host(ctx, id);
    for (status, interim) in [("103 Early Hints", vec![103u16]), ("100", vec![])] {
        let out = format!(
            "Status: {status}\r\nLink: </a.css>; rel=preload; as=style\r\nContent-Type: text/plain\r\n\r\napp body"
        );
        let r = c
            .roundtrip(&Request::get(&play_target(out.as_bytes(), 0)).host(&h))
            .map_err(|e| format!("Status: {status}: {e}"))?;
        ensure(
            r.interim == interim
                && r.status == 200
                && r.body == b"app body"
                && r.header("Link") == Some("</a.css>; rel=preload; as=style")
                && r.header("Content-Type") == Some("text/plain"),
            || {
                format!(
                    "Status: {status}: want interim {interim:?} then 200 with the body and the Link header: interim {:?}, {}",
                    r.interim,
                    r.summary()
                )
            },
        )?;
    }
    // the connection stays usable (asked at once: under valgrind the requests below outlast
    // the keep-alive timeout)
    next_request_ok(&mut c, &h, "after the 1xx responses")?;
    // the same through php-fpm
    let id = "cf_php";
    let php_logs = Logs::mark(ctx, id);
    let r = c_php_early_hints(ctx, id, "/early-hints.php")?;
    ensure(
        r.interim == [103] && r.status == 200 && r.body == b"page after hints\n",
        || format!("PHP early hints: interim {:?}, {}", r.interim, r.summary()),
    )?;
    // included by mod_include (a subrequest): no interim response inside a response that has
    // begun, the script's output in place
    let r = c_php_early_hints(ctx, id, "/ssi/hints.shtml")?;
    ensure(
        r.interim.is_empty() && r.status == 200 && r.body == b"before\npage after hints\nafter\n",
        || {
            format!(
                "early hints in a subrequest: interim {:?}, {}",
                r.interim,
                r.summary()
            )
        },
    )?;
    php_logs.expect_no_errors()?;
    logs.expect_no_errors()
}

fn c_php_early_hints(ctx: &Ctx, id: &str, target: &str) -> Result<Response, String> {
    let mut c = ctx.connect(id)?;
    c.roundtrip(&Request::get(target).host(&host(ctx, id)).close())
        .map_err(|e| format!("GET {target}: {e}"))
}

fn status_missing_200(ctx: &Ctx) -> Result<(), String> {
    let r = ctx.get(
        "cf_play",
        &play_target(b"Content-Type: text/plain\r\nX-A: 1\r\n\r\nno status", 0),
    )?;
    ensure(
        r.status == 200 && r.body == b"no status" && r.header("X-A") == Some("1"),
        || r.summary(),
    )
}

fn status_invalid_502(ctx: &Ctx) -> Result<(), String> {
    let id = "err_cf_status";
    let vp = vpath(ctx, id);
    for v in [
        "abc",
        "-200",
        "-1",
        "99",
        "1000",
        "20",
        "2000 Too Big",
        "200OK",
        "0",
        "",
        "+200",
        // a protocol switch cannot be answered through FastCGI (other 1xx: status_1xx_interim)
        "101 Switching Protocols",
    ] {
        let logs = Logs::mark(ctx, id);
        let r = ctx.get(
            id,
            &play_target(
                format!("Status: {v}\r\nContent-Type: text/plain\r\n\r\nbody").as_bytes(),
                0,
            ),
        )?;
        ensure(r.status == 502, || {
            format!("Status: {v:?}: want 502, got {}", r.summary())
        })?;
        ensure(
            !r.text().contains("body") || r.text().contains("Bad Gateway"),
            || format!("Status: {v:?}: application body leaked: {}", r.summary()),
        )?;
        logs.expect_one_error(&[
            &format!("FastCGI: comm with server \"{vp}\" aborted: error parsing headers:"),
            "Status",
        ])
        .map_err(|e| format!("Status: {v:?}: {e}"))?;
        after_fault(ctx, id, &logs)?;
    }
    Ok(())
}

fn location_path_internal_redirect_get(ctx: &Ctx) -> Result<(), String> {
    let logs = Logs::mark(ctx, "cf_play");
    // POST with a body; the application answers with a local Location and a body to discard.
    let out = b"Location: /app/target?params\r\nContent-Type: text/plain\r\n\r\nthis body must not be seen";
    let target = format!("{}&nostdin", play_target(out, 0));
    let r = ctx.req(
        "cf_play",
        Request::post(&target, &b"request-body-1234"[..]).header("Content-Type", "text/plain"),
    )?;
    let kv = r.kv();
    let mut errs = Vec::new();
    if r.status != 200 {
        errs.push(format!("status {}", r.status));
    }
    if r.text().contains("must not be seen") {
        errs.push("the redirecting response's body was sent".into());
    }
    if kv.get("REQUEST_METHOD").map(|s| s.as_str()) != Some("GET") {
        errs.push(format!(
            "target saw REQUEST_METHOD={:?}, want GET",
            kv.get("REQUEST_METHOD")
        ));
    }
    if kv.get("STDIN_LEN").map(|s| s.as_str()) != Some("0") {
        errs.push(format!(
            "target got a body: STDIN_LEN={:?}",
            kv.get("STDIN_LEN")
        ));
    }
    if let Some(cl) = kv
        .get("CONTENT_LENGTH")
        .filter(|v| v.as_str() != "0" && !v.is_empty())
    {
        errs.push(format!("target saw CONTENT_LENGTH={cl}"));
    }
    // (REQUEST_URI stays the original request's, as for every CGI internal redirect)
    if kv.get("QUERY_STRING").map(|s| s.as_str()) != Some("params")
        || kv.get("PATH_INFO").map(|s| s.as_str()) != Some("/target")
    {
        errs.push(format!(
            "target saw QUERY_STRING={:?} PATH_INFO={:?}",
            kv.get("QUERY_STRING"),
            kv.get("PATH_INFO")
        ));
    }
    if !kv.contains_key("REDIRECT_URL") {
        errs.push("no REDIRECT_URL: not an internal redirect?".into());
    }
    ensure(errs.is_empty(), || {
        format!("{}: {}", errs.join("; "), r.summary())
    })?;
    // a local redirect to a static file
    let r = ctx.get(
        "cf_play",
        &play_target(b"Location: /static.txt\r\n\r\nignored", 0),
    )?;
    ensure(
        r.status == 200 && r.text() == "static file of conformance\n",
        || format!("redirect to /static.txt: {}", r.summary()),
    )?;
    logs.expect_no_errors()
}

fn location_url_302(ctx: &Ctx) -> Result<(), String> {
    let url = "http://elsewhere.example/path?q=1";
    let r = ctx.get(
        "cf_play",
        &play_target(
            format!("Location: {url}\r\nContent-Type: text/plain\r\n\r\napp body").as_bytes(),
            0,
        ),
    )?;
    ensure(r.status == 302 && r.header("Location") == Some(url), || {
        format!("want 302 Location {url}: {}", r.summary())
    })?;
    ensure(!r.text().contains("app body"), || {
        format!("application body sent with httpd's 302: {}", r.summary())
    })
}

fn location_with_status_3xx_passthrough(ctx: &Ctx) -> Result<(), String> {
    for (status, loc) in [
        ("301 Moved Permanently", "/elsewhere"),
        ("303 See Other", "http://elsewhere.example/x"),
    ] {
        let out = format!(
            "Status: {status}\r\nLocation: {loc}\r\nX-App: 1\r\nContent-Type: text/plain\r\n\r\napp body"
        );
        let r = ctx.get("cf_play", &play_target(out.as_bytes(), 0))?;
        let code: u16 = status[..3].parse().unwrap();
        ensure(
            r.status == code
                && r.header("Location") == Some(loc)
                && r.header("X-App") == Some("1")
                && r.body == b"app body",
            || format!("Status: {status} + Location {loc}: {}", r.summary()),
        )?;
    }
    Ok(())
}

fn malformed_header_502_one_line(ctx: &Ctx) -> Result<(), String> {
    let id = "err_cf_malformed";
    let vp = vpath(ctx, id);
    // (header block, the offending line without its line terminator, control characters shown
    // as \xNN by the module; httpd's error log then doubles backslashes, see httpd_log_escape)
    let cases: [(&[u8], &str); 12] = [
        (b"NoColonLine\r\n\r\nbody", "NoColonLine"),
        (b"HTTP 400 Bad Request\n\nbody", "HTTP 400 Bad Request"),
        (
            b"Content-Type: text/plain\r\nBad Name: v\r\n\r\nbody",
            "Bad Name: v",
        ),
        (b": empty-name\r\n\r\nbody", ": empty-name"),
        (b"X(y): v\r\n\r\nbody", "X(y): v"),
        (b"X-A: v\x00w\r\n\r\nbody", "X-A: v\\x00w"),
        (b"X-A\x00: v\n\nbody", "X-A\\x00: v"),
        (
            b"X-A: v\rX-Injected: yes\r\n\r\nbody",
            "X-A: v\\x0dX-Injected: yes",
        ),
        (
            b"X-A: v\rX-Injected: yes\n\nbody",
            "X-A: v\\x0dX-Injected: yes",
        ),
        (b"X-A: v\x0bw\n\nbody", "X-A: v\\x0bw"),
        (b"X-A: v\x1b[31m\n\nbody", "X-A: v\\x1b[31m"),
        (b"X-\xc3\xa9: v\n\nbody", "X-\u{e9}: v"),
    ];
    let mut errs = Vec::new();
    for (block, shown) in cases {
        let logs = Logs::mark(ctx, id);
        let r = ctx.get(id, &play_target(block, 0))?;
        let what = String::from_utf8_lossy(block).escape_debug().to_string();
        if r.status != 502 {
            errs.push(format!("{what}: want 502, got {}", r.summary()));
        }
        if r.header("X-Injected").is_some() || r.header("X-A").is_some() {
            errs.push(format!(
                "{what}: header passed to the client: {:?}",
                r.headers
            ));
        }
        let want = format!(
            "FastCGI: comm with server \"{vp}\" aborted: error parsing headers: malformed header '{}'",
            httpd_log_escape(shown)
        );
        match logs.expect_one_error(&[&format!(
            "FastCGI: comm with server \"{vp}\" aborted: error parsing headers: malformed header '"
        )]) {
            Ok(line) if line.contains(&want) => {}
            Ok(line) => errs.push(format!(
                "{what}: log line\n        {line}\n      want it to contain\n        {want}"
            )),
            Err(e) => errs.push(format!("{what}: {e}")),
        }
        after_fault(ctx, id, &logs)?;
    }
    ensure(errs.is_empty(), || {
        format!(
            "{} of {} cases failed:\n    {}",
            errs.len(),
            cases.len(),
            errs.join("\n    ")
        )
    })
}

/// How httpd's error log shows message text: `\` doubled, bytes outside printable ASCII as
/// `\xNN` (quotes are left alone).
fn httpd_log_escape(s: &str) -> String {
    let mut out = String::new();
    for &b in s.as_bytes() {
        match b {
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

fn obs_fold_unfolded(ctx: &Ctx) -> Result<(), String> {
    let out = b"Content-Type: text/plain\r\nX-Folded: a\r\n  b\r\n\tc\r\nX-After: 1\r\n\r\nbody";
    let raw = raw_get(ctx, "cf_play", &play_target(out, 0))?;
    let head = raw_head(&raw);
    ensure(head.starts_with("HTTP/1.1 200"), || {
        format!("response: {head}")
    })?;
    ensure(
        head.contains("\r\nX-Folded: a b c\r\n") && head.contains("\r\nX-After: 1\r\n"),
        || format!("folded header not unfolded to one space: {head:?}"),
    )
}

fn backend_framing_headers_not_trusted(ctx: &Ctx) -> Result<(), String> {
    let logs = Logs::mark(ctx, "cf_play");
    let body20 = b"0123456789abcdefghij";
    let cases: [(&str, Vec<u8>, &[u8]); 3] = [
        (
            "Content-Length: 5 with 20 bytes",
            cat(&[
                b"Content-Type: text/plain\r\nContent-Length: 5\r\n\r\n",
                body20,
            ]),
            body20,
        ),
        (
            "Content-Length: 100 with 20 bytes",
            cat(&[
                b"Content-Type: text/plain\r\nContent-Length: 100\r\n\r\n",
                body20,
            ]),
            body20,
        ),
        (
            "Transfer-Encoding: chunked, plain body",
            b"Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\nhello".to_vec(),
            b"hello",
        ),
    ];
    for (name, out, want) in cases {
        // on one keep-alive connection: a framing error would desynchronise the next response
        let mut c = ctx.connect("cf_play")?;
        let h = host(ctx, "cf_play");
        let r = c
            .roundtrip(&Request::get(&play_target(&out, 0)).host(&h))
            .map_err(|e| format!("{name}: {e}"))?;
        ensure(r.status == 200 && r.body == want && r.complete, || {
            format!("{name}: {}", r.summary())
        })?;
        let cls = r.headers_all("Content-Length");
        let tes = r.headers_all("Transfer-Encoding");
        ensure(
            (cls.is_empty() || cls == [want.len().to_string().as_str()])
                && tes.len() <= 1
                && !(cls.len() == 1 && tes.len() == 1),
            || format!("{name}: framing headers {:?}", r.headers),
        )?;
        next_request_ok(&mut c, &h, name)?;
    }
    logs.expect_no_errors()
}

/// A Cookie header of 40 KB (LimitRequestFieldSize raised, as sites with large session or
/// Kerberos tokens do) reaches PHP whole: php-fpm takes a variable of up to 64 KiB in one
/// PARAMS record.
fn big_cookie_reaches_php(ctx: &Ctx) -> Result<(), String> {
    let id = "cf_php";
    let logs = Logs::mark(ctx, id);
    let cookie = format!("small=1; big={}; last=2", "c".repeat(40_000));
    let mut c = ctx.connect(id)?;
    let r = c
        .roundtrip(
            &Request::get("/cookie.php")
                .host(&host(ctx, id))
                .header("Cookie", &cookie)
                .close(),
        )
        .map_err(|e| format!("GET with a 40 KB cookie: {e}"))?;
    let kv = r.kv();
    let want_md5 = util::md5_hex(cookie.as_bytes())?;
    ensure(
        r.status == 200
            && kv.get("COOKIE_LEN") == Some(&cookie.len().to_string())
            && kv.get("COOKIE_MD5") == Some(&want_md5)
            && kv.get("BIG_LEN").map(String::as_str) == Some("40000"),
        || {
            format!(
                "want HTTP_COOKIE of {} bytes (md5 {want_md5}) and $_COOKIE['big'] of 40000: {}",
                cookie.len(),
                r.summary()
            )
        },
    )?;
    ensure(!logs.text().contains("FCGI050"), || {
        format!("the cookie was skipped:\n{}", logs.text())
    })?;
    logs.expect_no_errors()
}

/// The application's Content-Length through php-fpm: dropped by default (httpd frames the
/// body), kept where httpd's `ap_trust_cgilike_cl` is set (as mod_cgi and mod_proxy_fcgi do),
/// and then held to: a longer body is cut at it, a shorter one aborts the response.
fn trusted_content_length_php(ctx: &Ctx) -> Result<(), String> {
    let id = "cf_php";
    let vp = vpath(ctx, id);
    let h = host(ctx, id);
    let n = 100_000usize;
    let logs = Logs::mark(ctx, id);
    // not trusted: streamed, so chunked
    let (r, _c) = get_keepalive(ctx, id, &format!("/length.php?n={n}"))?;
    ensure(
        r.status == 200 && r.body == length_php_body(n) && r.framing == Framing::Chunked,
        || {
            format!(
                "untrusted Content-Length: want a chunked body of {n} bytes: {}",
                r.summary()
            )
        },
    )?;
    // trusted: the application's length frames the response; the connection stays usable
    let mut c = ctx.connect(id)?;
    let r = c
        .roundtrip(&Request::get(&format!("/cl/length.php?n={n}")).host(&h))
        .map_err(|e| format!("trusted: {e}"))?;
    ensure(
        r.status == 200
            && r.body == length_php_body(n)
            && r.framing == Framing::ContentLength(n as u64)
            && r.headers_all("Content-Length") == [n.to_string().as_str()]
            && r.header("Transfer-Encoding").is_none(),
        || {
            format!(
                "trusted Content-Length: want {n} bytes framed by it: {}",
                r.summary()
            )
        },
    )?;
    let r = c
        .roundtrip(&Request::head(&format!("/cl/length.php?n={n}")).host(&h))
        .map_err(|e| format!("trusted HEAD: {e}"))?;
    ensure(
        r.status == 200 && r.headers_all("Content-Length") == [n.to_string().as_str()],
        || {
            format!(
                "HEAD: want the application's Content-Length {n}: {}",
                r.summary()
            )
        },
    )?;
    // longer than declared: cut at the declared length, the next response on the same
    // connection is intact
    let r = c
        .roundtrip(&Request::get("/cl/length.php?n=1000&say=5000").host(&h))
        .map_err(|e| format!("longer body: {e}"))?;
    ensure(
        r.status == 200
            && r.framing == Framing::ContentLength(1000)
            && r.body == length_php_body(5000)[..1000],
        || {
            format!(
                "body longer than its Content-Length: want the first 1000 bytes: {}",
                r.summary()
            )
        },
    )?;
    let r = c
        .roundtrip(&Request::get("/cl/length.php?n=10").host(&h).close())
        .map_err(|e| format!("request after the longer body: {e}"))?;
    ensure(r.status == 200 && r.body == length_php_body(10), || {
        format!("next request on the connection: {}", r.summary())
    })?;
    logs.wait_for(
        &[
            "[fastcgi:warn]",
            &format!("server \"{vp}\" sent 4000 bytes more than its Content-Length (1000)"),
        ],
        Duration::from_secs(3),
    )?;
    logs.expect_no_errors()?;
    // shorter than declared, after part of it was sent: visibly aborted, one error line
    let id = "err_cf_php";
    let vp = vpath(ctx, id);
    let logs = Logs::mark(ctx, id);
    let (r, mut c) = get_keepalive(ctx, id, &format!("/cl/length.php?n={n}&say=60000"))?;
    ensure(r.framing == Framing::ContentLength(n as u64), || {
        format!(
            "short body: want the declared length in the head: {}",
            r.summary()
        )
    })?;
    expect_aborted(&r, &mut c, &length_php_body(60000))?;
    logs.expect_one_error(&[&format!(
        "FastCGI: comm with server \"{vp}\" aborted: the response ended after 60000 of the {n} bytes its Content-Length announced"
    )])?;
    Ok(())
}

/// Kept Content-Length values that cannot be used, and the statuses without a body, through a
/// scripted application where `ap_trust_cgilike_cl` is set.
fn trusted_content_length_checked(ctx: &Ctx) -> Result<(), String> {
    let id = "err_cf_trust_cl";
    let vp = vpath(ctx, id);
    let h = host(ctx, id);
    let body20: &[u8] = b"0123456789abcdefghij";
    // exact, in records of 7 bytes (header block split too)
    let logs = Logs::mark(ctx, id);
    let out = cat(&[
        b"Content-Type: text/plain\r\nContent-Length: 20\r\n\r\n",
        body20,
    ]);
    let mut c = ctx.connect(id)?;
    let r = c
        .roundtrip(&Request::get(&play_target(&out, 7)).host(&h))
        .map_err(|e| format!("exact: {e}"))?;
    ensure(
        r.status == 200 && r.body == body20 && r.framing == Framing::ContentLength(20),
        || format!("exact Content-Length in 7-byte records: {}", r.summary()),
    )?;
    // 304 and HEAD: no body, the declared length stays
    let out304 = b"Status: 304 Not Modified\r\nContent-Length: 20\r\nETag: \"x\"\r\n\r\n";
    let r = c
        .roundtrip(&Request::get(&play_target(out304, 0)).host(&h))
        .map_err(|e| format!("304: {e}"))?;
    ensure(r.status == 304 && r.body.is_empty(), || {
        format!("304 with a Content-Length: {}", r.summary())
    })?;
    let head_only = b"Content-Type: text/plain\r\nContent-Length: 20\r\n\r\n";
    let r = c
        .roundtrip(&Request::head(&play_target(head_only, 0)).host(&h))
        .map_err(|e| format!("HEAD: {e}"))?;
    ensure(
        r.status == 200 && r.headers_all("Content-Length") == ["20"],
        || format!("HEAD answered with headers only: {}", r.summary()),
    )?;
    next_request_ok(&mut c, &h, "after 304 and HEAD")?;
    logs.expect_no_errors()?;
    ensure(!logs.text().contains("FCGI03"), || {
        format!("unexpected Content-Length lines:\n{}", logs.text())
    })?;
    // values that cannot be used: not passed on, the body framed by httpd, one warning each
    for (v, shown) in [
        ("abc", "abc"),
        ("-5", "-5"),
        ("20, 21", "21"),
        ("99999999999999999999", "99999999999999999999"),
    ] {
        let logs = Logs::mark(ctx, id);
        let out = cat(&[
            format!("Content-Type: text/plain\r\nContent-Length: {v}\r\n\r\n").as_bytes(),
            body20,
        ]);
        let mut c = ctx.connect(id)?;
        let r = c
            .roundtrip(&Request::get(&play_target(&out, 0)).host(&h))
            .map_err(|e| format!("Content-Length {v:?}: {e}"))?;
        let cls = r.headers_all("Content-Length");
        ensure(
            r.status == 200 && r.body == body20 && r.complete && (cls.is_empty() || cls == ["20"]),
            || {
                format!(
                    "Content-Length {v:?}: want the body framed by httpd: {}",
                    r.summary()
                )
            },
        )?;
        next_request_ok(&mut c, &h, &format!("Content-Length {v:?}"))?;
        logs.wait_for(
            &[
                "[fastcgi:warn]",
                &format!(
                    "server \"{vp}\" sent an invalid or conflicting Content-Length \"{shown}\""
                ),
            ],
            Duration::from_secs(3),
        )
        .map_err(|e| format!("Content-Length {v:?}: {e}"))?;
        logs.expect_no_errors()?;
    }
    // shorter: 502 when the end came before anything was handed to httpd, else the response
    // is aborted after the 20 bytes (which of the two depends on how the records arrived);
    // never presented as complete
    let logs = Logs::mark(ctx, id);
    let out = cat(&[
        b"Content-Type: text/plain\r\nContent-Length: 100\r\n\r\n",
        body20,
    ]);
    let (r, mut c) = get_keepalive(ctx, id, &play_target(&out, 0))?;
    if r.status == 502 {
        ensure(!r.text().contains("0123456789"), || {
            format!(
                "Content-Length 100 with 20 bytes: the body leaked into the 502: {}",
                r.summary()
            )
        })?;
    } else {
        expect_aborted(&r, &mut c, body20)
            .map_err(|e| format!("Content-Length 100 with 20 bytes: want 502 or an abort: {e}"))?;
    }
    logs.expect_one_error(&[&format!(
        "FastCGI: comm with server \"{vp}\" aborted: the response ended after 20 of the 100 bytes its Content-Length announced"
    )])?;
    after_fault(ctx, id, &logs)
}

fn stderr_logged_line_by_line(ctx: &Ctx) -> Result<(), String> {
    let id = "err_cf_stderr";
    let vp = vpath(ctx, id);
    let logs = Logs::mark(ctx, id);
    let r = ctx.get(id, "/app/x?stderr")?;
    ensure(
        r.status == 200 && r.body == b"body1body2" && r.complete,
        || format!("response: {}", r.summary()),
    )?;
    let prefix = format!("FastCGI: server \"{vp}\" stderr: ");
    logs.wait_for(&[&prefix, "unterminated"], Duration::from_secs(3))?;
    thread::sleep(Duration::from_millis(100));
    let errs = logs.errors();
    let msgs: Vec<String> = errs
        .iter()
        .filter_map(|l| l.find(&prefix).map(|i| l[i + prefix.len()..].to_string()))
        .collect();
    let mut problems = Vec::new();
    if errs.len() != msgs.len() {
        problems.push(format!(
            "error lines that are not stderr lines: {:?}",
            errs.iter()
                .filter(|l| !l.contains(&prefix))
                .collect::<Vec<_>>()
        ));
    }
    if !errs.iter().all(|l| l.contains("[fastcgi:error]")) {
        problems.push("stderr not logged at error level".into());
    }
    let short: Vec<&str> = msgs
        .iter()
        .filter(|m| !m.starts_with("long:") && !m.starts_with('x'))
        .map(|s| s.as_str())
        .collect();
    if short
        != [
            "first line",
            "second line",
            "nulbyte",
            "between",
            "unterminated",
        ]
    {
        problems.push(format!("short lines logged as {short:?}"));
    }
    let long: Vec<&String> = msgs
        .iter()
        .filter(|m| m.starts_with("long:") || m.starts_with('x'))
        .collect();
    let xs: usize = long
        .iter()
        .map(|m| m.chars().filter(|&c| c == 'x').count())
        .sum();
    if long.len() < 2 || xs != 10_000 {
        problems.push(format!(
            "the 10005-byte line: {} pieces with {xs} of 10000 x's",
            long.len()
        ));
    }
    ensure(problems.is_empty(), || {
        format!(
            "{}\nlogged:\n    {}",
            problems.join("\n"),
            errs.iter()
                .map(|l| if l.len() > 300 { &l[..300] } else { l })
                .collect::<Vec<_>>()
                .join("\n    ")
        )
    })?;
    after_fault(ctx, id, &logs)
}

fn stderr_9k_before_stdout(ctx: &Ctx) -> Result<(), String> {
    let id = "err_cf_stderr9k";
    let logs = Logs::mark(ctx, id);
    let r = ctx.get(id, "/app/x?stderr9k")?;
    ensure(
        r.status == 200 && r.body == b"after stderr\n" && r.complete,
        || format!("response: {}", r.summary()),
    )?;
    let prefix = format!("FastCGI: server \"{}\" stderr: E", vpath(ctx, id));
    logs.wait_for(&[&prefix, "E099"], Duration::from_secs(3))?;
    let n = logs.text().lines().filter(|l| l.contains(&prefix)).count();
    ensure(n == 100, || format!("{n} stderr lines logged, want 100"))?;
    after_fault(ctx, id, &logs)
}

fn end_request_cases(ctx: &Ctx, id: &str, want_log: &str) -> Result<(), String> {
    let vp = vpath(ctx, id);
    let line = format!("FastCGI: comm with server \"{vp}\" aborted: protocol error: {want_log}");
    // before the headers: 502
    let logs = Logs::mark(ctx, id);
    let r = ctx.get(id, "/app/x?before")?;
    ensure(r.status == 502, || {
        format!("before headers: want 502, got {}", r.summary())
    })?;
    logs.expect_one_error(&[&line])
        .map_err(|e| format!("before headers: {e}"))?;
    after_fault(ctx, id, &logs)?;
    aborted_after_headers(ctx, id, &line)
}

/// `/app/x?after` of a scripted END_REQUEST case: after the headers and some body the
/// response is aborted, with `line` logged once.
fn aborted_after_headers(ctx: &Ctx, id: &str, line: &str) -> Result<(), String> {
    let logs = Logs::mark(ctx, id);
    let (r, mut c) = get_keepalive(ctx, id, "/app/x?after")?;
    expect_aborted(&r, &mut c, b"partial").map_err(|e| format!("after headers: {e}"))?;
    logs.expect_one_error(&[line])
        .map_err(|e| format!("after headers: {e}"))?;
    after_fault(ctx, id, &logs)
}

fn end_request_bad_size(ctx: &Ctx) -> Result<(), String> {
    end_request_cases(ctx, "err_cf_end_size", "invalid FCGI_END_REQUEST size:")
}

/// An FCGI_END_REQUEST that does not complete the request: the application refusing it as
/// overloaded is a 503 (unavailable, as a full backlog is), the other refusals and an
/// undefined status a 502, each with one line that says which; after the response began,
/// the response is aborted.
fn end_request_protocol_status(ctx: &Ctx) -> Result<(), String> {
    let id = "err_cf_end_status";
    let vp = vpath(ctx, id);
    let aborted = format!("FastCGI: comm with server \"{vp}\" aborted: ");
    for (query, status, why) in [
        (
            "overloaded",
            503,
            "the application refused the request: overloaded (FCGI_OVERLOADED) (FCGI_END_REQUEST protocol status 2,",
        ),
        (
            "role",
            502,
            "the application refused the request: it does not take this role (FCGI_UNKNOWN_ROLE) (FCGI_END_REQUEST protocol status 3,",
        ),
        (
            "nine",
            502,
            "protocol error: invalid FCGI_END_REQUEST status (FCGI_END_REQUEST protocol status 9,",
        ),
    ] {
        let logs = Logs::mark(ctx, id);
        let r = ctx.get(id, &format!("/app/x?{query}"))?;
        ensure(r.status == status, || {
            format!("{query}: want {status}, got {}", r.summary())
        })?;
        let line = format!("{aborted}{why}");
        logs.expect_one_error(&[&line])
            .map_err(|e| format!("{query}: {e}"))?;
        after_fault(ctx, id, &logs)?;
    }
    // after the headers and some body: the response is aborted
    let line = format!(
        "{aborted}the application refused the request: it takes one request per connection at a time (FCGI_CANT_MPX_CONN)"
    );
    aborted_after_headers(ctx, id, &line)
}

fn bad_version_or_type_502(ctx: &Ctx) -> Result<(), String> {
    let id = "err_cf_proto";
    let vp = vpath(ctx, id);
    for (case, want) in [
        ("version", "invalid version: 2"),
        ("type", "invalid type: 20"),
        ("begin", "unexpected record type 1"),
    ] {
        let logs = Logs::mark(ctx, id);
        let r = ctx.get(id, &format!("/app/x?{case}"))?;
        ensure(
            r.status == 502 && !r.text().contains("should not be seen"),
            || format!("{case}: want 502, got {}", r.summary()),
        )?;
        logs.expect_one_error(&[&format!(
            "FastCGI: comm with server \"{vp}\" aborted: protocol error: {want}"
        )])
        .map_err(|e| format!("{case}: {e}"))?;
        after_fault(ctx, id, &logs)?;
    }
    Ok(())
}

fn max_padding_records(ctx: &Ctx) -> Result<(), String> {
    let id = "cf_padding";
    let logs = Logs::mark(ctx, id);
    let be = backend(id);
    let n0 = be.record_count();
    // one client connection: the same Apache child, so its pooled backend connection is reused
    // if the module consumed every padding byte (else the stream would be out of step)
    let mut c = ctx.connect(id)?;
    let h = host(ctx, id);
    for i in 0..3 {
        let r = c
            .roundtrip(&Request::get(&format!("/app/x?pad{i}")).host(&h))
            .map_err(|e| format!("request {i}: {e}"))?;
        ensure(
            r.status == 200
                && r.body == b"padded-1\nunpadded-2\npadded-3\n"
                && r.header("X-Padded") == Some("1")
                && r.complete,
            || format!("request {i}: {}", r.summary()),
        )?;
    }
    be.wait_record(n0 + 3, Duration::from_secs(3))?;
    let recs = be.records();
    let reused = recs[n0..].iter().filter(|r| r.req.nth_on_conn > 1).count();
    ensure(reused >= 1, || {
        format!(
            "no request reused the pooled backend connection (connections: {:?}) — END_REQUEST padding not consumed?",
            recs[n0..]
                .iter()
                .map(|r| (r.req.conn, r.req.nth_on_conn))
                .collect::<Vec<_>>()
        )
    })?;
    logs.expect_no_errors()
}

fn wrong_request_id_502(ctx: &Ctx) -> Result<(), String> {
    let id = "err_cf_reqid";
    let logs = Logs::mark(ctx, id);
    let r = ctx.get(id, "/app/x?reqid")?;
    ensure(r.status == 502 && !r.text().contains("for request"), || {
        format!("want 502, got {}", r.summary())
    })?;
    logs.expect_one_error(&[&format!(
        "FastCGI: comm with server \"{}\" aborted: protocol error: record for request id 2",
        vpath(ctx, id)
    )])?;
    after_fault(ctx, id, &logs)
}

fn eof_before_headers_502(ctx: &Ctx) -> Result<(), String> {
    let id = "err_cf_eof_hdr";
    let vp = vpath(ctx, id);
    let partial = b"Status: 200\r\nX-Partial: yes".len();
    for (case, n) in [("partial", partial), ("zero", 0)] {
        let logs = Logs::mark(ctx, id);
        let r = ctx.get(id, &format!("/app/x?{case}"))?;
        ensure(r.status == 502, || {
            format!("{case}: want 502, got {}", r.summary())
        })?;
        logs.expect_one_error(&[&format!(
            "FastCGI: incomplete headers ({n} bytes) received from server \"{vp}\""
        )])
        .map_err(|e| format!("{case}: {e}"))?;
        after_fault(ctx, id, &logs)?;
    }
    Ok(())
}

fn eof_after_headers_aborts(ctx: &Ctx) -> Result<(), String> {
    let id = "err_cf_eof_body";
    let logs = Logs::mark(ctx, id);
    let (r, mut c) = get_keepalive(ctx, id, "/app/x?eof")?;
    expect_aborted(&r, &mut c, b"partial")?;
    let line =
        logs.expect_one_error(&[&format!("FastCGI: comm with server \"{}\"", vpath(ctx, id))])?;
    ensure(!line.contains("incomplete headers"), || {
        format!("'incomplete headers' although they were complete: {line}")
    })?;
    after_fault(ctx, id, &logs)
}

// ------------------------------------------------------------------------------------------
// requests

fn chunked_request_body_php_3mib(ctx: &Ctx) -> Result<(), String> {
    let id = "cf_php";
    let logs = Logs::mark(ctx, id);
    let data = util::Prng::new(33).bytes(3 << 20);
    let md5 = util::md5_hex(&data)?;
    let body = chunk_encode(&data, &[1000, 65536, 7, 300_000, 4096]);
    let head = format!(
        "POST /post.php HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        host(ctx, id)
    );
    let r = post_streamed(ctx.vhost(id).port, head.as_bytes(), body)?;
    let kv = r.kv();
    let want_len = (3u64 << 20).to_string();
    ensure(
        r.status == 200
            && kv.get("LEN") == Some(&want_len)
            && kv.get("MD5") == Some(&md5)
            && kv.get("CONTENT_LENGTH") == Some(&want_len)
            // the body arrives de-chunked: a Transfer-Encoding left in the params made
            // Werkzeug (Flask) ignore CONTENT_LENGTH and read nothing
            && kv.get("HTTP_TRANSFER_ENCODING").map(|s| s.as_str()) == Some("-"),
        || format!("3 MiB chunked upload (md5 {md5}): {}", r.summary()),
    )?;
    logs.expect_no_errors()
}

fn limit_request_body_413(ctx: &Ctx) -> Result<(), String> {
    let id = "err_cf_limit";
    let be = backend(id);
    let port = ctx.vhost(id).port;
    let h = host(ctx, id);
    let big = util::Prng::new(5).bytes(2 << 20);
    let conns0 = be.connections();
    let chunked_head =
        format!("POST /app/x?limit HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\n");
    let r = post_streamed(port, chunked_head.as_bytes(), chunk_encode(&big, &[65536]))?;
    ensure(r.status == 413, || {
        format!(
            "2 MiB chunked over LimitRequestBody 1048576: {}",
            r.summary()
        )
    })?;
    let cl_head = format!(
        "POST /app/x?limit HTTP/1.1\r\nHost: {h}\r\nContent-Length: {}\r\n\r\n",
        big.len()
    );
    let r = post_streamed(port, cl_head.as_bytes(), big.clone())?;
    ensure(r.status == 413, || {
        format!(
            "2 MiB Content-Length over LimitRequestBody 1048576: {}",
            r.summary()
        )
    })?;
    thread::sleep(Duration::from_millis(100));
    ensure(be.connections() == conns0, || {
        format!(
            "the application was connected to for a body over the limit ({} connections)",
            be.connections() - conns0
        )
    })?;
    // under the limit it works (chunked and with Content-Length)
    let small = &big[..1 << 19];
    let want = format!(
        "STDIN_LEN={}\nSTDIN_FNV={:016x}\n",
        small.len(),
        fnv64(small)
    );
    let r = post_streamed(
        port,
        chunked_head
            .replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n")
            .as_bytes(),
        chunk_encode(small, &[10000]),
    )?;
    ensure(r.status == 200 && r.text() == want, || {
        format!("512 KiB chunked: {}", r.summary())
    })?;
    let r = ctx.req(id, Request::post("/app/x?limit", small.to_vec()))?;
    ensure(r.status == 200 && r.text() == want, || {
        format!("512 KiB with Content-Length: {}", r.summary())
    })?;
    Ok(())
}

fn unread_body_drained_keepalive(ctx: &Ctx) -> Result<(), String> {
    let id = "cf_nodrain";
    let logs = Logs::mark(ctx, id);
    let h = host(ctx, id);
    let body = util::Prng::new(9).bytes(1 << 20);
    let mut c = ctx.connect(id)?;
    let head = format!(
        "POST /app/x?nodrain HTTP/1.1\r\nHost: {h}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.send_raw(head.as_bytes()).map_err(String::from)?;
    let mut w = c.stream().try_clone().map_err(|e| e.to_string())?;
    let writer = thread::spawn(move || w.write_all(&body).map_err(|e| e.to_string()));
    let r = c.read_response(false).map_err(String::from)?;
    ensure(
        r.status == 200 && r.body == b"answered without reading\n" && r.complete,
        || format!("first response: {}", r.summary()),
    )?;
    writer
        .join()
        .map_err(|_| "writer panicked".to_string())?
        .map_err(|e| format!("the server stopped reading the 1 MiB body: {e}"))?;
    ensure(!c.closed, || {
        format!(
            "server closed the connection after the first response: {:?}",
            r.headers
        )
    })?;
    let r2 = c
        .roundtrip(&Request::get("/app/ok?ok").host(&h))
        .map_err(|e| format!("second request on the same connection: {e}"))?;
    ensure(
        r2.status == 200 && r2.body == OK_BODY && c.served == 2,
        || format!("second request: {}", r2.summary()),
    )?;
    logs.expect_no_errors()
}

fn invalid_request_no_backend_connection(ctx: &Ctx) -> Result<(), String> {
    let id = "err_cf_badreq";
    let be = backend(id);
    let port = ctx.vhost(id).port;
    let h = host(ctx, id);
    let c0 = be.connections();
    let cases: [(&str, String); 4] = [
        (
            "Content-Length: abc",
            format!(
                "POST /app/x?params HTTP/1.1\r\nHost: {h}\r\nContent-Length: abc\r\nConnection: close\r\n\r\nabc"
            ),
        ),
        (
            "Content-Length: -5",
            format!(
                "POST /app/x?params HTTP/1.1\r\nHost: {h}\r\nContent-Length: -5\r\nConnection: close\r\n\r\nabc"
            ),
        ),
        (
            "bad chunk size",
            format!(
                "POST /app/x?params HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
            ),
        ),
        (
            "chunked body cut short",
            format!(
                "POST /app/x?params HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n10\r\nabc"
            ),
        ),
    ];
    for (name, raw) in &cases {
        let mut c = Conn::connect(port).map_err(String::from)?;
        c.send_raw(raw.as_bytes()).map_err(String::from)?;
        if name.contains("cut short") {
            c.shutdown_write();
        }
        let r = c.read_response(false).map_err(|e| format!("{name}: {e}"))?;
        ensure(r.status == 400, || {
            format!("{name}: want 400, got {}", r.summary())
        })?;
    }
    thread::sleep(Duration::from_millis(100));
    ensure(be.connections() == c0, || {
        format!(
            "the application was connected to for an invalid request ({} connections)",
            be.connections() - c0
        )
    })?;
    let r = ctx.get(id, "/app/ok?ok")?;
    ensure(r.status == 200 && be.connections() > c0, || {
        format!("valid request: {}", r.summary())
    })
}

// ------------------------------------------------------------------------------------------
// failures

/// A request whose connect fails gets a 503 after between `min` and `max` ms (the time spent
/// waiting for a refusing application, `-connect-retry`) and one log line that names the
/// server, the address and the cause, plus `more`.
fn connect_failure(
    ctx: &Ctx,
    id: &str,
    addr: &str,
    errno: &str,
    (min, max): (u64, u64),
    more: &[&str],
) -> Result<String, String> {
    let logs = Logs::mark(ctx, id);
    let t0 = Instant::now();
    let r = ctx.get(id, "/app/x?connect")?;
    let took = t0.elapsed();
    ensure(r.status == 503, || format!("want 503, got {}", r.summary()))?;
    ensure(
        took >= Duration::from_millis(min) && took < late(ctx, max),
        || format!("took {} ms, want {min}..{max} ms", ms(took)),
    )?;
    let head = format!(
        "FastCGI: failed to connect to server \"{}\": connect() failed",
        vpath(ctx, id)
    );
    let address = format!("(address {addr})");
    let mut needles = vec![head.as_str(), address.as_str(), errno];
    needles.extend_from_slice(more);
    let line = logs.expect_one_error(&needles)?;
    after_connect_fault(ctx, &logs)?;
    Ok(line)
}

fn connect_refused_503(ctx: &Ctx) -> Result<(), String> {
    // -connect-retry 0: at once, and the line does not speak of waiting
    let port = ctx.val("refused_port").to_string();
    let line = connect_failure(
        ctx,
        "err_cf_refused",
        &format!("127.0.0.1:{port}"),
        "(111)Connection refused",
        (0, 500),
        &[],
    )?;
    ensure(!line.contains("-connect-retry"), || {
        format!("-connect-retry 0 still waited: {line}")
    })
}

fn connect_socket_missing_503(ctx: &Ctx) -> Result<(), String> {
    // the default -connect-retry: a missing socket (an application restarting) is waited
    // for one second, then the line says how long it has been refusing
    let sock = ctx.val("nosock").to_string();
    connect_failure(
        ctx,
        "err_cf_nosock",
        &format!("unix:{sock}"),
        "(2)No such file or directory",
        (950, 2500),
        &["refusing connections for", "(-connect-retry 1)"],
    )
    .map(drop)
}

fn connect_permission_denied_503(ctx: &Ctx) -> Result<(), String> {
    // not a refusal: never waited for
    let sock = ctx.val("eacces_sock").to_string();
    connect_failure(
        ctx,
        "err_cf_eacces",
        &format!("unix:{sock}"),
        "(13)Permission denied",
        (0, 500),
        &[],
    )
    .map(drop)
}

/// `-connect-retry 3`: a request that arrives while the application is not listening (socket
/// missing) waits and is served as soon as it listens; once it stops again (socket left behind,
/// connection refused), the first request in each child waits the 3 s and gets a 503 with one
/// log line, and later ones fail at once instead of waiting again.
fn connect_retry_waits_for_application(ctx: &Ctx) -> Result<(), String> {
    let id = "err_cf_restart";
    let sock = std::path::PathBuf::from(ctx.val("restart_sock"));
    let logs = Logs::mark(ctx, id);
    let (port, name) = (ctx.vhost(id).port, host(ctx, id));
    let target = play_target(b"Content-Type: text/plain\r\n\r\nOK\n", 0);
    let t0 = Instant::now();
    let waiting = thread::spawn(move || {
        crate::http::fetch(port, Request::get(&target).host(&name)).map_err(|e| e.to_string())
    });
    thread::sleep(Duration::from_millis(500));
    let be = Backend::unix("cf_restart", &sock, Arc::new(player))?;
    let r = waiting
        .join()
        .map_err(|_| "request thread panicked".to_string())??;
    let took = t0.elapsed();
    ensure(r.status == 200 && r.body == OK_BODY, || {
        format!(
            "request while the application was starting: {}",
            r.summary()
        )
    })?;
    ensure(
        took >= Duration::from_millis(450) && took < late(ctx, 2500),
        || format!("served after {} ms, want about 500 ms", ms(took)),
    )?;
    logs.expect_no_errors()?;
    let started = ms(took);

    be.stop();
    ensure(sock.exists(), || {
        "the stopped backend removed its socket".into()
    })?;
    let logs = Logs::mark(ctx, id);
    let t1 = Instant::now();
    let r = ctx.get(id, "/app/x?down")?;
    let took = t1.elapsed();
    ensure(r.status == 503, || {
        format!("after the stop: {}", r.summary())
    })?;
    ensure(
        took >= Duration::from_millis(2900) && took < late(ctx, 5000),
        || format!("503 after {} ms, want about 3000 ms", ms(took)),
    )?;
    logs.expect_one_error(&[
        "(111)Connection refused",
        "refusing connections for",
        "(-connect-retry 3)",
    ])?;

    // the outage is now older than -connect-retry: children that saw it fail at once
    let children = ctx.apache_children().len().max(1);
    let mut times = Vec::new();
    for i in 0..6 {
        let t = Instant::now();
        let r = ctx.get(id, &format!("/app/x?down={i}"))?;
        ensure(r.status == 503, || format!("request {i}: {}", r.summary()))?;
        times.push(ms(t.elapsed()));
    }
    let quick = ms(ctx.scaled(Duration::from_millis(1000), Duration::from_millis(2000)));
    let fast = times.iter().filter(|&&t| t < quick).count();
    ensure(fast + children.saturating_sub(1) >= times.len(), || {
        format!(
            "after a 3 s outage requests still waited: {times:?} ms ({children} Apache children)"
        )
    })?;
    println!(
        "    connect-retry: served {started} ms after arriving (application started after 500 ms); \
         after the stop 503 after {} ms, then {times:?} ms ({children} children)",
        ms(took)
    );
    after_connect_fault(ctx, &logs)
}

fn fake_backends_saw_valid_records(ctx: &Ctx) -> Result<(), String> {
    let all: Vec<(String, Arc<Backend>)> = BACKENDS.lock().unwrap().clone();
    let mut problems = Vec::new();
    // the parent logs a crashed child at its next maintenance tick (about once a second)
    thread::sleep(Duration::from_millis(1100));
    for l in util::read_to_string_lossy(&ctx.error_log()).lines() {
        if l.contains("exit signal") || l.contains("AH00052") || l.contains("FCGI070") {
            problems.push(format!("error.log: {l}"));
        }
    }
    for (name, be) in &all {
        be.stop();
        for e in be.errors() {
            problems.push(format!("{name}: {e}"));
        }
        for r in be.records() {
            if r.req.request_id != 1 || r.req.role != 1 {
                problems.push(format!(
                    "{name}: request id {} role {}",
                    r.req.request_id, r.req.role
                ));
            }
        }
    }
    STUCK.lock().unwrap().clear();
    HELD.lock().unwrap().clear();
    ensure(problems.is_empty(), || problems.join("\n    "))
}
