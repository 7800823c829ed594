//! The section mod_status shows for this module (`/server-status`, and `?auto`): per
//! `FastCgiExternalServer` definition, the pool's state now and totals since the configuration
//! was loaded. Pure text building; module.rs hands it to httpd.
#![forbid(unsafe_code)]

/// A server definition's state and totals as mod_status shows them.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The counters are shared by all children (false: this process only).
    pub instance_wide: bool,
    pub keep_conn: bool,
    pub max_conns: u32,
    /// Connections open now (all children), in use or pooled.
    pub open: u32,
    /// Requests waiting for the application now.
    pub waiting: u32,
    /// Requests queued for a `-max-conns` slot now.
    pub queued_now: u32,
    /// Pooled connections idle in the process that answers the status request.
    pub idle_here: usize,
    /// (pid, open connections) of the processes holding connections.
    pub by_process: Vec<(u32, u32)>,
    pub requests: u64,
    pub connects: u64,
    pub reuses: u64,
    pub replays: u64,
    pub queued: u64,
    pub failures: u64,
    pub client_aborts: u64,
    /// Idle connections other processes were asked to give up.
    pub releases: u64,
    /// Idle connections passed over: their application process was still busy.
    pub busy_passed: u64,
    /// New connections found waiting in the application's backlog (no process free).
    pub backlogged: u64,
    /// Of those, the ones still waiting after 20 ms (pooling stopped until served).
    pub stalled: u64,
    /// Idle connections given up for clients of the application this Apache does not know of.
    pub outsider_releases: u64,
}

/// One definition as shown: virtual path, address as written, state.
pub struct Row<'a> {
    pub path: &'a [u8],
    pub address: &'a str,
    pub snap: Snapshot,
}

fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Printable form of a path for `?auto` lines: no control characters (a path with a newline
/// would forge a line).
fn line_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn pool_text(s: &Snapshot) -> String {
    match (s.keep_conn, s.max_conns) {
        (false, _) => "off (a connection per request)".into(),
        (true, 0) => "on, no -max-conns".into(),
        (true, n) => format!("on, -max-conns {n}"),
    }
}

/// `?auto`: `Key: value` lines, definitions numbered in configuration order.
pub fn render_short(rows: &[Row<'_>]) -> String {
    let mut s = String::new();
    for (i, row) in rows.iter().enumerate() {
        let sn = &row.snap;
        let k = format!("FastCGIServer{i}");
        s.push_str(&format!(
            "{k}Path: {}\n{k}Address: {}\n{k}Pool: {}\n{k}MaxConns: {}\n",
            line_safe(&String::from_utf8_lossy(row.path)),
            line_safe(row.address),
            if sn.keep_conn { "on" } else { "off" },
            sn.max_conns
        ));
        for (name, v) in [
            ("OpenConns", u64::from(sn.open)),
            ("IdleConnsHere", sn.idle_here as u64),
            ("Waiting", u64::from(sn.waiting)),
            ("QueuedNow", u64::from(sn.queued_now)),
            ("Requests", sn.requests),
            ("Connects", sn.connects),
            ("Reuses", sn.reuses),
            ("Replays", sn.replays),
            ("Queued", sn.queued),
            ("Failures", sn.failures),
            ("ClientAborts", sn.client_aborts),
            ("Releases", sn.releases),
            ("BusyPassed", sn.busy_passed),
            ("Backlogged", sn.backlogged),
            ("Stalled", sn.stalled),
            ("OutsiderReleases", sn.outsider_releases),
        ] {
            s.push_str(&format!("{k}{name}: {v}\n"));
        }
    }
    s
}

/// The HTML section (`tables`: false for mod_status's `?notable`).
pub fn render_html(rows: &[Row<'_>], tables: bool) -> String {
    let mut s = String::from("<hr>\n<h2>FastCGI external servers (mod_fastcgi-rs)</h2>\n");
    if rows.is_empty() {
        s.push_str("<p>No FastCgiExternalServer is configured.</p>\n");
        return s;
    }
    let local = rows.iter().any(|r| !r.snap.instance_wide);
    s.push_str(
        "<p>Connections open and requests waiting are for the whole Apache instance; idle \
         connections are those pooled in the process that answered this page. Totals count \
         since the configuration was loaded (start or restart).",
    );
    if local {
        s.push_str(" Shared memory was not available: the figures are this process's alone.");
    }
    s.push_str("</p>\n");
    fn cells(row: &Row<'_>) -> Vec<String> {
        let sn = &row.snap;
        vec![
            html(&String::from_utf8_lossy(row.path)),
            html(row.address),
            html(&pool_text(sn)),
            sn.open.to_string(),
            sn.idle_here.to_string(),
            format!("{} ({} queued)", sn.waiting, sn.queued_now),
            sn.requests.to_string(),
            sn.connects.to_string(),
            sn.reuses.to_string(),
            sn.replays.to_string(),
            sn.queued.to_string(),
            sn.failures.to_string(),
            sn.client_aborts.to_string(),
            sn.releases.to_string(),
            sn.busy_passed.to_string(),
            sn.backlogged.to_string(),
            sn.stalled.to_string(),
            sn.outsider_releases.to_string(),
        ]
    }
    const HEAD: [&str; 18] = [
        "Virtual path",
        "Address",
        "Pool",
        "Open",
        "Idle here",
        "Waiting now",
        "Requests",
        "New connections",
        "Reused",
        "Replayed",
        "Waited for a slot",
        "Failed",
        "Client aborts",
        "Idle ones released for others",
        "Idle ones passed over (application busy)",
        "New ones left in the backlog (no application process free)",
        "Left there over 20 ms",
        "Idle ones released for clients Apache does not serve",
    ];
    fn by_process(sn: &Snapshot) -> String {
        sn.by_process
            .iter()
            .map(|(pid, n)| format!("{pid}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
    if tables {
        s.push_str("<table border=\"0\">\n<tr>");
        for h in HEAD {
            s.push_str(&format!("<th>{h}</th>"));
        }
        s.push_str("</tr>\n");
        for row in rows {
            s.push_str("<tr>");
            for c in cells(row) {
                s.push_str(&format!("<td>{c}</td>"));
            }
            s.push_str("</tr>\n");
            if !row.snap.by_process.is_empty() {
                s.push_str(&format!(
                    "<tr><td></td><td colspan=\"16\">open connections by process (pid: count): {}</td></tr>\n",
                    by_process(&row.snap)
                ));
            }
        }
        s.push_str("</table>\n");
    } else {
        for row in rows {
            let c = cells(row);
            s.push_str(&format!("<h3>{}</h3>\n<dl>\n", c[0]));
            for (h, v) in HEAD.iter().zip(c.iter()).skip(1) {
                s.push_str(&format!("<dt>{h}</dt><dd>{v}</dd>\n"));
            }
            if !row.snap.by_process.is_empty() {
                s.push_str(&format!(
                    "<dt>Open connections by process</dt><dd>{}</dd>\n",
                    by_process(&row.snap)
                ));
            }
            s.push_str("</dl>\n");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &'static [u8]) -> Row<'static> {
        Row {
            path,
            address: "127.0.0.1:9000",
            snap: Snapshot {
                instance_wide: true,
                keep_conn: true,
                max_conns: 4,
                open: 3,
                waiting: 1,
                queued_now: 1,
                idle_here: 2,
                by_process: vec![(100, 2), (101, 1)],
                requests: 20,
                connects: 1,
                reuses: 19,
                replays: 0,
                queued: 5,
                failures: 0,
                client_aborts: 2,
                releases: 3,
                busy_passed: 4,
                backlogged: 6,
                stalled: 1,
                outsider_releases: 3,
            },
        }
    }

    #[test]
    fn short_lines_are_key_value_and_numbered() {
        let out = render_short(&[row(b"/a/php.fcgi"), row(b"/b\n/x.fcgi")]);
        assert!(out.contains("FastCGIServer0Path: /a/php.fcgi\n"));
        assert!(out.contains("FastCGIServer0Requests: 20\n"));
        assert!(out.contains("FastCGIServer0Reuses: 19\n"));
        assert!(out.contains("FastCGIServer0MaxConns: 4\n"));
        assert!(out.contains("FastCGIServer0Releases: 3\n"));
        assert!(out.contains("FastCGIServer0BusyPassed: 4\n"));
        assert!(out.contains("FastCGIServer0Backlogged: 6\n"));
        assert!(out.contains("FastCGIServer0OutsiderReleases: 3\n"));
        assert!(out.contains("FastCGIServer0Stalled: 1\n"));
        // a newline in a path cannot forge a line
        assert!(out.contains("FastCGIServer1Path: /b?/x.fcgi\n"));
        assert!(out.lines().all(|l| l.starts_with("FastCGIServer")));
    }

    #[test]
    fn html_escapes_and_shows_processes() {
        let mut r = row(b"/a/<b>&.fcgi");
        r.address = "/run/\"x\".sock";
        let out = render_html(&[r], true);
        assert!(out.contains("/a/&lt;b&gt;&amp;.fcgi"));
        assert!(out.contains("/run/&quot;x&quot;.sock"));
        assert!(!out.contains("<b>&"));
        assert!(out.contains("100: 2, 101: 1"));
        assert!(out.contains("on, -max-conns 4"));
        let plain = render_html(&[row(b"/a.fcgi")], false);
        assert!(!plain.contains("<table"));
        assert!(plain.contains("<dt>Reused</dt><dd>19</dd>"));
    }

    #[test]
    fn no_servers_says_so() {
        assert!(render_html(&[], true).contains("No FastCgiExternalServer"));
        assert_eq!(render_short(&[]), "");
    }
}
