#!/usr/bin/env bash
# Paired A/B benchmark (`make bench-paired`; not part of `make test`; installs what it needs).
#
# benches/run.sh starts one server at a time and measures each variant for DURATION seconds, so
# two variants are measured 10-60 s apart. On a shared VM the time the hypervisor steals, and the
# speed of the CPU, change on that scale: the same variant has measured 8,000 and 20,000 req/s
# in two rounds of one run. Here both variants run at the same time, each with a backend of its
# own (its own php-fpm pool with the same settings, its own null backend), and are measured in
# short slices that alternate A B B A A B ..., so that each pair of slices sees the same machine.
# The result is the median of the per-pair ratios A/B, overall and over the pairs whose slices
# lost less than STEAL_MAX % of either CPU to steal, with the quartiles of the ratios.
#
# Variants (as in run.sh): fcgi-pool fcgi-pool-b fcgi-capped fcgi-capped-b fcgi-nopool fcgi-guard proxy proxy-reuse
# proxy-capped nginx static, and fpm-direct: no web server, benches/null-backend's fcgi-load sends
# the GETs (hello 1mib null busy sleep) to php-fpm or the null backend over FastCGI itself — what
# the application alone serves, the second term of the issue's bound 1/(1/static + 1/direct). Workloads: hello 1mib post256k null, and busy (~2 ms of CPU),
# sleep (5 ms without CPU), mix (9 hello.php : 1 sleep of 50 ms). CPU_SERVER and CPU_CLIENT take
# lists (0,1: both CPUs, shared).
#
# Settings (environment):
#   A=fcgi-pool B=proxy-reuse WORKLOADS="hello"  PAIRS=20 SLICE=2 WARM=0.5 STEAL_MAX=5
#   CONNS=32 WRK_THREADS=1 APACHE_MPM=event APACHE_PROCS=2 APACHE_THREADS=25
#   FPM_CHILDREN=$((APACHE_PROCS * APACHE_THREADS)) FCGI_CAPPED_CONNS=8 TRANSPORT=tcp|unix
#   MOD_FASTCGI_SO=... MOD_FASTCGI_SO_B=... (for the -b variants) CPU_SERVER=0 CPU_CLIENT=1 KEEP=1
#   CLIENT_CLOSE=1: a new client connection for every request (Connection: close), so that
#   requests land on any Apache child rather than stay with the child of a kept connection.
#   POLICY_A=normal|batch POLICY_B=normal|batch: scheduling policy of that side's server (Apache
#   or nginx, never the backends); batch runs it under `chrt -b 0` (README, *Tuning*). A and B
#   may then be the same variant.
#   NULL_MODE=epoll|threads: how the null backend serves (benches/null-backend: one epoll thread,
#   or one thread per connection like php-fpm's process per connection).
#   STATUS=1: load mod_status in the module's variants and print, after each workload, how the
#   pool's counters (`/server-status?auto`: reuses, releases, backlogged, stalled...) moved.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"

A=${A:-fcgi-pool}
B=${B:-proxy-reuse}
WORKLOADS=${WORKLOADS:-hello}
PAIRS=${PAIRS:-20}
SLICE=${SLICE:-2}
WARM=${WARM:-0.5}
STEAL_MAX=${STEAL_MAX:-5}
CONNS=${CONNS:-32}
WRK_THREADS=${WRK_THREADS:-1}
APACHE_MPM=${APACHE_MPM:-event}
APACHE_PROCS=${APACHE_PROCS:-2}
APACHE_THREADS=${APACHE_THREADS:-25}
FPM_CHILDREN=${FPM_CHILDREN:-$((APACHE_PROCS * APACHE_THREADS))}
FCGI_CAPPED_CONNS=${FCGI_CAPPED_CONNS:-8}
PROXY_CAPPED_MAX=$(((FCGI_CAPPED_CONNS + APACHE_PROCS - 1) / APACHE_PROCS))
TRANSPORT=${TRANSPORT:-tcp}
CPU_SERVER=${CPU_SERVER:-0}
CPU_CLIENT=${CPU_CLIENT:-1}
KEEP=${KEEP:-0}
CLIENT_CLOSE=${CLIENT_CLOSE:-0}
POLICY_A=${POLICY_A:-normal}
POLICY_B=${POLICY_B:-normal}
STATUS=${STATUS:-0}
NULL_BODY=100
NULL_MODE=${NULL_MODE:-epoll}

log() { printf '%s\n' "$*" >&2; }
die() { log "paired: ERROR: $*"; exit 1; }

# shared with run.sh: render, ports, wait_port, server_rss, to_ms, cpu_ticks, make_docroot,
# fcgi_opts, workload_target
. "$HERE/lib.sh"

case $TRANSPORT in tcp | unix) ;; *) die "TRANSPORT must be tcp or unix" ;; esac
for p in "$POLICY_A" "$POLICY_B"; do case $p in normal | batch) ;; *) die "POLICY_A/POLICY_B: normal or batch" ;; esac; done
[ "$A/$POLICY_A" != "$B/$POLICY_B" ] || die "A and B are the same variant ($A) with the same policy"
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (server and client pinned apart)"
# what is missing comes from `make deps` (apache2, php-fpm, wrk, curl ...) and, for the nginx
# variant, nginx-light
missing=0
for c in wrk taskset curl ss; do command -v $c >/dev/null || missing=1; done
[ -x /usr/sbin/apache2 ] && [ -f /usr/lib/apache2/modules/mod_proxy_fcgi.so ] && ls /usr/sbin/php-fpm* >/dev/null 2>&1 || missing=1
if [ $missing = 1 ]; then
    [ "$(id -u)" -eq 0 ] || die "apache2, php-fpm, wrk or curl missing: run 'make deps' as root"
    make -C "$REPO" deps >&2
fi
if { [ "$A" = nginx ] || [ "$B" = nginx ]; } && [ ! -x /usr/sbin/nginx ]; then
    [ "$(id -u)" -eq 0 ] || die "nginx missing: apt-get install nginx-light"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 nginx-light >&2
fi
PHP_FPM=$(ls /usr/sbin/php-fpm* 2>/dev/null | sort -V | tail -n1)
[ -n "$PHP_FPM" ] || die "php-fpm not found"

if [ -z "${MOD_FASTCGI_SO:-}" ]; then
    log "paired: cargo build --release (module)"
    (cd "$REPO" && cargo build --release -q)
    MOD_FASTCGI_SO="$REPO/target/release/libmod_fastcgi.so"
fi
cargo build --release -q --manifest-path "$HERE/null-backend/Cargo.toml" --target-dir "$REPO/target/null-backend"
NULL_BIN="$REPO/target/null-backend/release/null-fcgi"
LOAD_BIN="$REPO/target/null-backend/release/fcgi-load"

RUN=$(mktemp -d /tmp/mfcgi-paired.XXXXXX)
chmod 755 "$RUN"
PIDS=()
cleanup() {
    local rc=$? p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "$KEEP" = 1 ] || [ $rc -ne 0 ]; then log "paired: files kept in $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$RUN/raw"
make_docroot "$RUN/www"
DOCROOT="$RUN/www"

spawn() { # OUTFILE CMD... -> SPAWNED (pinned to the server CPU; SPAWN_POLICY=batch: SCHED_BATCH)
    local out=$1 pre=()
    shift
    [ "${SPAWN_POLICY:-normal}" = batch ] && pre=(chrt -b 0)
    (exec taskset -c "$CPU_SERVER" "${pre[@]}" "$@") >"$out" 2>&1 </dev/null &
    SPAWNED=$!
    PIDS+=("$SPAWNED")
}

# start_instance NAME VARIANT: its own php-fpm pool, null backend and server under $RUN/NAME;
# sets PORT_<NAME>
start_instance() {
    local n=$1 v=$2 d="$RUN/$1" fpm null http fpm_addr null_addr fcgi_fpm fcgi_null so opts
    mkdir -p "$d/logs" "$d/run" "$d/apache/run" "$d/apache/logs" "$d/nginx/logs" "$d/nginx/tmp"
    printf 'text/plain txt\napplication/octet-stream bin\ntext/html html\n' >"$d/mime.types"
    fpm=$(pick_port); null=$(pick_port); http=$(pick_port)
    if [ "$TRANSPORT" = unix ]; then
        fpm_addr="$d/run/fpm.sock"; null_addr="$d/run/null.sock"
        fcgi_fpm="-socket \"$fpm_addr\""; fcgi_null="-socket \"$null_addr\""
    else
        fpm_addr="127.0.0.1:$fpm"; null_addr="127.0.0.1:$null"
        fcgi_fpm="-host $fpm_addr"; fcgi_null="-host $null_addr"
    fi
    chmod -R a+rX "$RUN"
    render "$HERE/conf/php-fpm.conf.in" "$d/php-fpm.conf" RUN="$d" FPM_LISTEN="$fpm_addr" FPM_CHILDREN="$FPM_CHILDREN"
    spawn "$d/logs/php-fpm.out" "$PHP_FPM" -F -y "$d/php-fpm.conf"
    local fpm_pid=$SPAWNED
    wait_port "$([ "$TRANSPORT" = unix ] && echo "$fpm_addr" || echo "$fpm")" "$SPAWNED" || die "php-fpm of $n did not start"
    spawn "$d/logs/null.out" "$NULL_BIN" --listen "$([ "$TRANSPORT" = unix ] && echo "unix:$null_addr" || echo "$null_addr")" --body-size "$NULL_BODY" --mode "$NULL_MODE"
    wait_port "$([ "$TRANSPORT" = unix ] && echo "$null_addr" || echo "$null")" "$SPAWNED" || die "null backend of $n did not start"
    [ "$TRANSPORT" = unix ] && chmod 666 "$null_addr"
    if [ "$v" = fpm-direct ]; then
        # no web server: fcgi-load talks FastCGI to the backends themselves (RSS: php-fpm's)
        [ "$TRANSPORT" = unix ] && { fpm_addr="unix:$fpm_addr"; null_addr="unix:$null_addr"; }
        printf -v "FPMADDR_$n" '%s' "$fpm_addr"; printf -v "NULLADDR_$n" '%s' "$null_addr"
        printf -v "PORT_$n" '%s' "$fpm"; printf -v "SPID_$n" '%s' "$fpm_pid"
        return
    fi
    # null.php goes to the null backend, everything else to php-fpm
    case $v in
    fcgi-pool | fcgi-pool-b | fcgi-capped | fcgi-capped-b | fcgi-nopool | fcgi-guard | fcgi-guard-b)
        opts=$(fcgi_opts "$v")
        so=$MOD_FASTCGI_SO
        case $v in *-b) so=${MOD_FASTCGI_SO_B:-}; [ -f "$so" ] || die "$v needs MOD_FASTCGI_SO_B" ;; esac
        render "$HERE/conf/apache-fcgi.conf.in" "$d/apache/variant.conf" MODULE_SO="$so" FCGI_ROUTE_CONF="FastCgiExternalServer \"$DOCROOT\" $fcgi_fpm $opts
FastCgiExternalServer \"$DOCROOT/null.php\" $fcgi_null $opts"
        # (aliased out of the docroot, which is a virtual path: the module would answer it)
        [ "$STATUS" = 1 ] && printf '%s\n' "LoadModule status_module /usr/lib/apache2/modules/mod_status.so" \
            "Alias /server-status \"$d/status\"" "<Location /server-status>" "SetHandler server-status" "Require all granted" \
            "</Location>" >>"$d/apache/variant.conf"
        ;;
    proxy | proxy-reuse | proxy-capped)
        local reuse=on max="" pt_fpm pt_null
        [ "$v" = proxy ] && reuse=off
        [ "$v" = proxy-capped ] && max=" max=$PROXY_CAPPED_MAX"
        if [ "$TRANSPORT" = unix ]; then pt_fpm="unix:$fpm_addr|fcgi://localhost"; pt_null="unix:$null_addr|fcgi://nullbackend"
        else pt_fpm="fcgi://$fpm_addr"; pt_null="fcgi://$null_addr"; fi
        {
            echo "LoadModule proxy_module /usr/lib/apache2/modules/mod_proxy.so"
            echo "LoadModule proxy_fcgi_module /usr/lib/apache2/modules/mod_proxy_fcgi.so"
            echo "ProxyPass \"/null.php\" \"$pt_null$DOCROOT/null.php\" enablereuse=$reuse$max"
            echo "ProxyPassMatch \"^/(.*\\.php)\$\" \"$pt_fpm$DOCROOT/\$1\" enablereuse=$reuse$max"
        } >"$d/apache/variant.conf"
        ;;
    static) render "$HERE/conf/apache-static.conf.in" "$d/apache/variant.conf" ;;
    nginx) ;;
    *) die "unknown variant $v" ;;
    esac
    local pol="POLICY_$n"
    SPAWN_POLICY=${!pol}
    if [ "$v" = nginx ]; then
        [ "$TRANSPORT" = unix ] && fpm_addr="unix:$fpm_addr"
        render "$HERE/conf/nginx.conf.in" "$d/nginx/nginx.conf" RUN="$d" HTTP_PORT="$http" \
            NGINX_SERVER="$fpm_addr" DOCROOT="$DOCROOT" NGINX_KEEPALIVE="$CONNS"
        spawn "$d/logs/server.out" /usr/sbin/nginx -p "$d/nginx/" -c "$d/nginx/nginx.conf"
    else
        render "$HERE/conf/apache-common.conf.in" "$d/apache/httpd.conf" RUN="$d" HTTP_PORT="$http" DOCROOT="$DOCROOT" \
            APACHE_MPM="$APACHE_MPM" APACHE_PROCS="$APACHE_PROCS" APACHE_THREADS="$APACHE_THREADS" \
            APACHE_WORKERS=$((APACHE_PROCS * APACHE_THREADS))
        spawn "$d/logs/server.out" /usr/sbin/apache2 -f "$d/apache/httpd.conf" -DFOREGROUND
    fi
    wait_port "$http" "$SPAWNED" || { tail -5 "$d/logs/server.out" "$d/apache/logs/error.log" >&2 2>/dev/null; die "$v did not start"; }
    printf -v "PORT_$n" '%s' "$http"
    printf -v "SPID_$n" '%s' "$SPAWNED"
    SPAWN_POLICY=normal
}

path_of() { # workload variant -> "path|lua script|backend" (empty: not applicable)
    # each instance's nginx passes only to its php-fpm; fcgi-load sends plain GETs only
    local t
    [ "$1:$2" = null:nginx ] && return
    t=$(workload_target "$1" "$2")
    if [ "$2" = fpm-direct ]; then case $t in *"|"?*"|"*) return ;; esac; fi
    echo "$t"
}

# load NAME VARIANT WORKLOAD SECONDS [--latency]: wrk against the instance's server, or for
# fpm-direct fcgi-load against its php-fpm or null backend (same output lines)
load() {
    local n=$1 v=$2 w=$3 secs=$4 lat=${5:-} port path script backend addr sargs=()
    IFS='|' read -r path script backend <<<"$(path_of "$w" "$v")"
    if [ "$v" = fpm-direct ]; then
        addr="FPMADDR_$n"; [ "$backend" = null ] && addr="NULLADDR_$n"
        taskset -c "$CPU_CLIENT" "$LOAD_BIN" --connect "${!addr}" --script "$DOCROOT$path" --uri "$path" \
            --conns "$CONNS" --duration "$secs"
        return
    fi
    port="PORT_$n"; port=${!port}
    [ -n "$script" ] && sargs=(-s "$script")
    [ "$CLIENT_CLOSE" = 1 ] && sargs+=(-H "Connection: close")
    taskset -c "$CPU_CLIENT" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${secs}s" $lat "${sargs[@]}" "http://127.0.0.1:$port$path"
}

# slice WORKLOAD NAME VARIANT PAIR -> appends a row to $RESULTS
slice() {
    local w=$1 n=$2 v=$3 k=$4 out s0 c0 s1 c1
    load "$n" "$v" "$w" "$WARM" >/dev/null 2>&1 || true
    out="$RUN/raw/$w-$k-$n.txt"
    s0=$(cpu_ticks "$CPU_SERVER"); c0=$(cpu_ticks "$CPU_CLIENT")
    load "$n" "$v" "$w" "$SLICE" --latency >"$out" 2>&1 || true
    s1=$(cpu_ticks "$CPU_SERVER"); c1=$(cpu_ticks "$CPU_CLIENT")
    awk -v w="$w" -v k="$k" -v n="$n" -v s0="$s0" -v s1="$s1" -v c0="$c0" -v c1="$c1" -v hz="$(getconf CLK_TCK)" \
        -v p50="$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")" -v p99="$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")" '
        /^Requests\/sec:/ { rps = $2 }
        / requests in / { nreq = $1 }
        /Non-2xx or 3xx responses:/ { err += $NF }
        /Socket errors:/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
        END {
            split(s0, a, " "); split(s1, b, " "); split(c0, x, " "); split(c1, y, " ")
            ts = (b[1]-a[1]) + (b[2]-a[2]) + (b[3]-a[3]); tc = (y[1]-x[1]) + (y[2]-x[2]) + (y[3]-x[3])
            printf "%s\t%s\t%s\t%.1f\t%.1f\t%.1f\t%.1f\t%.3f\t%.3f\t%d\n", w, k, n, rps + 0,
                (nreq > 0 ? (b[1]-a[1]) * 1e6 / hz / nreq : 0),
                (ts > 0 ? 100 * (b[3]-a[3]) / ts : 0), (tc > 0 ? 100 * (y[3]-x[3]) / tc : 0), p50, p99, err
        }' "$out" >>"$RESULTS"
}

RESULTS="$RUN/results.tsv"
RSSF="$RUN/rss.tsv"
: >"$RESULTS"; : >"$RSSF"
side_label() { if [ "$2" = batch ]; then echo "$1+batch"; else echo "$1"; fi; }
LA=$(side_label "$A" "$POLICY_A"); LB=$(side_label "$B" "$POLICY_B")
log "paired: A=$LA B=$LB, workloads: $WORKLOADS; $PAIRS pairs of ${SLICE}s slices (+${WARM}s warm-up each), $CONNS connections"
log "paired: php-fpm $PHP_FPM pm=static max_children=$FPM_CHILDREN per instance; Apache $APACHE_MPM ${APACHE_PROCS}x${APACHE_THREADS}; $TRANSPORT; servers on CPU $CPU_SERVER, wrk on CPU $CPU_CLIENT"
start_instance A "$A"
start_instance B "$B"
sleep 0.5
# fcgi_status NAME VARIANT: the module's pool counters of that instance (STATUS=1), one line
fcgi_status() {
    local port="PORT_$1"
    [ "$STATUS" = 1 ] || return 0
    case $2 in fcgi-*) ;; *) return 0 ;; esac
    # (definition 0: php-fpm; 1: the null backend)
    curl -s "http://127.0.0.1:${!port}/server-status?auto" | grep -E '^FastCGIServer[01](Requests|Connects|Reuses|Releases|BusyPassed|Backlogged|Stalled|Queued|Failures):' |
        sed 's/^FastCGIServer0/fpm /; s/^FastCGIServer1/null /' | tr '\n' ' ' || true
}
for w in $WORKLOADS; do
    stat_a=$(fcgi_status A "$A"); stat_b=$(fcgi_status B "$B")
    if [ -z "$(path_of "$w" "$A")" ] || [ -z "$(path_of "$w" "$B")" ]; then log "paired: $w: not applicable to $A/$B, skipped"; continue; fi
    # both servers and backends warm (connections, pools, caches) before the first pair
    for n in A B; do
        load "$n" "${!n}" "$w" 2 >/dev/null 2>&1 || true
    done
    for ((k = 1; k <= PAIRS; k++)); do
        # A B, B A, A B, ...: neither variant always goes first
        if ((k % 2)); then slice "$w" A "$A" "$k"; slice "$w" B "$B" "$k"
        else slice "$w" B "$B" "$k"; slice "$w" A "$A" "$k"; fi
    done
    # right after the last slice, and again once both sides were idle for 1 s (a server that
    # gives memory back when idle shows it there; the first figure is the one the targets use)
    rss_a=$(server_rss "$SPID_A"); rss_b=$(server_rss "$SPID_B"); sleep 1
    printf '%s\t%s\t%s\t%s\t%s\n' "$w" "$rss_a" "$rss_b" "$(server_rss "$SPID_A")" "$(server_rss "$SPID_B")" >>"$RSSF"
    tail -n $((2 * PAIRS)) "$RESULTS" | awk -F'\t' -v k="$PAIRS" '
        $3 == "A" { ra[$2] = $4 } $3 == "B" { rb[$2] = $4 }
        END { for (i = 1; i <= k; i++) printf "%s%.2f", (i > 1 ? " " : ""), (rb[i] > 0 ? ra[i] / rb[i] : 0); print "" }' |
        sed "s/^/paired: $w per-pair A\/B: /" >&2
    if [ -n "$stat_a" ]; then log "paired: $w pool counters A before: $stat_a"; log "paired: $w pool counters A after:  $(fcgi_status A "$A")"; fi
    if [ -n "$stat_b" ]; then log "paired: $w pool counters B before: $stat_b"; log "paired: $w pool counters B after:  $(fcgi_status B "$B")"; fi
done

# summary: per workload, medians of each side and of the per-pair ratios
awk -F'\t' -v A="$LA" -v B="$LB" -v smax="$STEAL_MAX" -v rssf="$RSSF" '
function median(arr, n,    i, j, t) {
    for (i = 2; i <= n; i++) { t = arr[i]; for (j = i - 1; j >= 1 && arr[j] > t; j--) arr[j + 1] = arr[j]; arr[j + 1] = t }
    if (n == 0) return 0
    return (n % 2) ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
}
function quart(arr, n, q,    i) { if (n == 0) return 0; i = int(q * (n - 1) + 1.5); return arr[i] }
{
    key = $1 SUBSEP $2; ws[$1] = 1
    rps[key, $3] = $4; cpu[key, $3] = $5; st[key, $3] = ($6 > $7 ? $6 : $7)
    p50[key, $3] = $8; p99[key, $3] = $9; err[$1, $3] += $10; pairs[$1, $2] = 1
}
END {
    while ((getline line < rssf) > 0) { split(line, f, "\t"); rssa[f[1]] = f[2]; rssb[f[1]] = f[3]; idla[f[1]] = f[4]; idlb[f[1]] = f[5] }
    printf "\n%-9s %6s %14s %14s %9s %9s %21s %21s %7s\n", "workload", "pairs", A " req/s", B " req/s", "ratio", "quiet", "A p50/p99 ms", "B p50/p99 ms", "CPU A/B"
    for (w in ws) {
        n = 0; q = 0
        split("", r); split("", rq); split("", xa); split("", xb); split("", ca); split("", cb)
        split("", a50); split("", a99); split("", b50); split("", b99)
        for (kk in pairs) {
            split(kk, kp, SUBSEP); if (kp[1] != w) continue
            key = w SUBSEP kp[2]
            if (rps[key, "B"] <= 0 || rps[key, "A"] <= 0) continue
            n++; r[n] = rps[key, "A"] / rps[key, "B"]; xa[n] = rps[key, "A"]; xb[n] = rps[key, "B"]
            ca[n] = cpu[key, "A"]; cb[n] = cpu[key, "B"]
            a50[n] = p50[key, "A"]; a99[n] = p99[key, "A"]; b50[n] = p50[key, "B"]; b99[n] = p99[key, "B"]
            if (st[key, "A"] < smax && st[key, "B"] < smax) { q++; rq[q] = r[n] }
        }
        mr = median(r, n); lo = quart(r, n, 0.25); hi = quart(r, n, 0.75)
        mq = median(rq, q)
        printf "%-9s %6d %14.0f %14.0f %8.2fx %8s %21s %21s %6.2fx\n", w, n, median(xa, n), median(xb, n), mr,
            (q > 0 ? sprintf("%.2fx", mq) : "-"),
            sprintf("%.2f/%.2f", median(a50, n), median(a99, n)), sprintf("%.2f/%.2f", median(b50, n), median(b99, n)),
            (median(cb, n) > 0 ? median(ca, n) / median(cb, n) : 0)
        printf "          ratio quartiles %.2fx .. %.2fx; %d of %d pairs with steal < %s%% on both CPUs (\"quiet\"); errors A %d, B %d; RSS A %s MiB, B %s MiB (after 1 s idle: A %s, B %s)\n",
            lo, hi, q, n, smax, err[w, "A"], err[w, "B"], rssa[w], rssb[w], idla[w], idlb[w]
    }
}' "$RESULTS"
