#!/usr/bin/env bash
# Side-by-side benchmark of mod_fastcgi-rs (`make bench`; not part of `make test`).
#
# Variants, each run against the same php-fpm pool (pm=static) or the same null backend:
#   fcgi-pool     mod_fastcgi-rs, -max-conns $FPM_CHILDREN (pool on)
#   fcgi-nopool   mod_fastcgi-rs, -keep-conn off (one connection per request)
#   fcgi-capped   mod_fastcgi-rs, -max-conns $FCGI_CAPPED_CONNS (default 8: fewer PHP processes
#                 runnable at once on the one server core; the rest wait in Apache's FIFO queue)
#   proxy         mod_proxy_fcgi, enablereuse=off
#   proxy-reuse   mod_proxy_fcgi, enablereuse=on          (the reference of the ratio column)
#   proxy-capped  mod_proxy_fcgi, enablereuse=on max=$FCGI_CAPPED_CONNS/$APACHE_PROCS per process
#                 (mod_proxy's cap is per child: the same total as fcgi-capped, like for like)
#   nginx         nginx fastcgi_pass, upstream keepalive
#   static        Apache serving a static file of the same size (no FastCGI)
# Workloads:
#   hello         GET of a ~100-byte hello.php
#   1mib          GET of a 1 MiB PHP response
#   post256k      POST of 256 KiB to a PHP script that reads it (no static variant)
#   null          GET against benches/null-backend (answers at once, 100-byte body): the cost
#                 of the connector itself (NULL_MODE=epoll: one thread over all connections,
#                 the default; threads: one per connection, as php-fpm has a process each)
#
# Everything runs privately under a temp dir on 127.0.0.1 (never the system services). The
# server under test, php-fpm and the null backend are pinned to CPU 0, wrk to CPU 1. Each run
# starts its own server (so pooled connections of one variant never hold php-fpm workers during
# another's run), warms up, measures with `wrk --latency`, records the server's RSS, stops it.
# Variants are interleaved over the rounds (their order rotates every round); the table shows
# medians over the rounds.
#
# Settings (environment):
#   ROUNDS=3 DURATION=10 WARMUP=2 CONNS=32 WRK_THREADS=1
#   WORKLOADS="hello 1mib post256k null"
#   VARIANTS="fcgi-pool fcgi-capped fcgi-nopool proxy proxy-reuse proxy-capped nginx static"
#   APACHE_MPM=event APACHE_PROCS=2 APACHE_THREADS=25   (event/worker)
#   FPM_CHILDREN=$((APACHE_PROCS * APACHE_THREADS))   php-fpm pm.max_children: as many as
#                           Apache has threads, so that mod_proxy_fcgi's enablereuse=on (up to
#                           ThreadsPerChild connections per process) cannot starve php-fpm;
#                           mod_fastcgi-rs gets -max-conns $FPM_CHILDREN, nginx keepalive $CONNS
#   FCGI_ROUTE=direct       direct | action (mod_fastcgi's AddType + Action + Alias chain)
#   TRANSPORT=tcp           tcp | unix: how every variant reaches php-fpm and the null backend
#                           (127.0.0.1 ports, or unix sockets as Debian's php-fpm packages use)
#   CPU_SERVER=0 CPU_CLIENT=1   (PIN=0 disables pinning)
#   MOD_FASTCGI_SO=...      module to test (default: cargo build --release, target/release)
#   MOD_FASTCGI_SO_B=...    a second build, run as variants fcgi-pool-b / fcgi-capped-b (A/B of
#                           two builds in one interleaved run, e.g. VARIANTS="fcgi-pool fcgi-pool-b static")
#   KEEP=1                  keep the temp dir (configs, logs, raw wrk output)
#   NO_INSTALL=1            never run apt-get (fail if something is missing)
#   PERF=1                  record a CPU profile of the server CPU during each measured run
#                           (perf record -e cpu-clock -C $CPU_SERVER) to raw/rN-W-V.perf.data
#                           and print a per-process / per-DSO summary (implies KEEP=1);
#                           PERF_ARGS adds options (e.g. "--call-graph dwarf")
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-32}
WRK_THREADS=${WRK_THREADS:-1}
WORKLOADS=${WORKLOADS:-"hello 1mib post256k null"}
VARIANTS=${VARIANTS:-"fcgi-pool fcgi-capped fcgi-nopool proxy proxy-reuse proxy-capped nginx static"}
APACHE_MPM=${APACHE_MPM:-event}
APACHE_PROCS=${APACHE_PROCS:-2}
APACHE_THREADS=${APACHE_THREADS:-25}
FPM_CHILDREN=${FPM_CHILDREN:-$((APACHE_PROCS * APACHE_THREADS))}
FCGI_ROUTE=${FCGI_ROUTE:-direct}
FCGI_CAPPED_CONNS=${FCGI_CAPPED_CONNS:-8}
# proxy-capped: mod_proxy caps per child process, so the same total split over the children
PROXY_CAPPED_MAX=$(( (FCGI_CAPPED_CONNS + APACHE_PROCS - 1) / APACHE_PROCS ))
TRANSPORT=${TRANSPORT:-tcp}
case $TRANSPORT in tcp | unix) ;; *) echo "TRANSPORT must be tcp or unix" >&2; exit 2 ;; esac
CPU_SERVER=${CPU_SERVER:-0}
CPU_CLIENT=${CPU_CLIENT:-1}
PIN=${PIN:-1}
KEEP=${KEEP:-0}
PERF=${PERF:-0}
if [ "$PERF" = 1 ]; then
    command -v perf >/dev/null || die "PERF=1: perf not found (apt-get install linux-perf)"
    KEEP=1
fi
NO_INSTALL=${NO_INSTALL:-0}
NULL_BODY=100
NULL_MODE=${NULL_MODE:-epoll}

log() { printf '%s\n' "$*" >&2; }
die() { log "bench: ERROR: $*"; exit 1; }

# shared with paired.sh (benches/lib.sh): render, ports, wait_port, server_rss, to_ms, cpu_ticks,
# make_docroot, fcgi_opts, workload_target
. "$HERE/lib.sh"

# ---------------------------------------------------------------------------------------
# what we need

find_php_fpm() { ls /usr/sbin/php-fpm* 2>/dev/null | sort -V | tail -n1; }

install_missing() {
    local need=()
    command -v wrk >/dev/null || need+=(wrk)
    [ -x /usr/sbin/apache2 ] || need+=(apache2)
    [ -f /usr/lib/apache2/modules/mod_proxy_fcgi.so ] || need+=(apache2)
    [ -n "$(find_php_fpm)" ] || need+=(php-fpm)
    [ -x /usr/sbin/nginx ] || need+=(nginx-light)
    command -v taskset >/dev/null || need+=(util-linux)
    command -v curl >/dev/null || need+=(curl)
    command -v ss >/dev/null || need+=(iproute2)
    [ ${#need[@]} -eq 0 ] && return 0
    [ "$NO_INSTALL" = 1 ] && die "missing: ${need[*]} (NO_INSTALL=1)"
    [ "$(id -u)" -eq 0 ] || die "missing: ${need[*]}; install them as root: apt-get install -y ${need[*]}"
    log "bench: installing ${need[*]} (the packaged services are not used; on a system with"
    log "       an init system Debian may start them: stop them yourself if you do not want them)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    if ! apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "${need[@]}"; then
        # nginx-light is gone after Debian 12: fall back to nginx
        local alt=("${need[@]/nginx-light/nginx}")
        apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "${alt[@]}"
    fi
}

[ "$(uname -s)" = Linux ] || die "Linux only"
install_missing
command -v cargo >/dev/null || die "cargo not found (install Rust with rustup)"
PHP_FPM=$(find_php_fpm)
[ -n "$PHP_FPM" ] || die "php-fpm not found"
[ -f /etc/nginx/fastcgi_params ] || die "/etc/nginx/fastcgi_params missing (nginx-common)"

NCPU=$(nproc)
if [ "$PIN" = 1 ] && [ "$NCPU" -lt 2 ]; then
    log "bench: warning: $NCPU CPU: not pinning"
    PIN=0
fi
pin_client() { if [ "$PIN" = 1 ]; then taskset -c "$CPU_CLIENT" "$@"; else "$@"; fi; }
# spawn OUTFILE CMD...: starts CMD in the background, pinned to the server CPU; sets SPAWNED to
# its PID (the subshell execs taskset, which execs CMD: one process, so $! is the server).
spawn() {
    local out=$1
    shift
    if [ "$PIN" = 1 ]; then
        (exec taskset -c "$CPU_SERVER" "$@") >"$out" 2>&1 </dev/null &
    else
        (exec "$@") >"$out" 2>&1 </dev/null &
    fi
    SPAWNED=$!
}

# ---------------------------------------------------------------------------------------
# builds

if [ -z "${MOD_FASTCGI_SO:-}" ]; then
    log "bench: cargo build --release (module)"
    (cd "$REPO" && cargo build --release -q)
    MOD_FASTCGI_SO="$REPO/target/release/libmod_fastcgi.so"
fi
[ -f "$MOD_FASTCGI_SO" ] || die "module $MOD_FASTCGI_SO not found"
if [[ " $VARIANTS " == *" fcgi-pool-b "* || " $VARIANTS " == *" fcgi-capped-b "* ]]; then
    [ -f "${MOD_FASTCGI_SO_B:-}" ] || die "variants fcgi-pool-b and fcgi-capped-b need MOD_FASTCGI_SO_B (a module file)"
fi
log "bench: cargo build --release (null backend)"
cargo build --release -q --manifest-path "$HERE/null-backend/Cargo.toml" --target-dir "$REPO/target/null-backend"
NULL_BIN="$REPO/target/null-backend/release/null-fcgi"

# ---------------------------------------------------------------------------------------
# private run directory

RUN=$(mktemp -d /tmp/mfcgi-bench.XXXXXX)
chmod 755 "$RUN"
PIDS=()
SERVER_PID=""
cleanup() {
    local rc=$?
    [ -n "$SERVER_PID" ] && stop_server
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "$KEEP" = 1 ] || [ $rc -ne 0 ]; then log "bench: files kept in $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$RUN/logs" "$RUN/raw" "$RUN/fcgi"
make_docroot "$RUN/www"
printf 'text/plain txt\napplication/octet-stream bin\ntext/html html\n' >"$RUN/mime.types"
chmod -R a+rX "$RUN"
DOCROOT="$RUN/www"

FPM_PORT=$(pick_port); NULL_PORT=$(pick_port); HTTP_PORT=$(pick_port)
# backend_addr fpm|null -> "127.0.0.1:port" (tcp) or the socket path (unix)
backend_addr() {
    if [ "$TRANSPORT" = unix ]; then echo "$RUN/run/$1.sock"
    elif [ "$1" = null ]; then echo "127.0.0.1:$NULL_PORT"
    else echo "127.0.0.1:$FPM_PORT"; fi
}



# ---------------------------------------------------------------------------------------
# shared backends: php-fpm and the null responder

mkdir -p "$RUN/run"; chmod 755 "$RUN/run"
render "$HERE/conf/php-fpm.conf.in" "$RUN/php-fpm.conf" RUN="$RUN" FPM_LISTEN="$(backend_addr fpm)" FPM_CHILDREN="$FPM_CHILDREN"
spawn "$RUN/logs/php-fpm.out" "$PHP_FPM" -F -y "$RUN/php-fpm.conf"
FPM_PID=$SPAWNED; PIDS+=("$FPM_PID")
if [ "$TRANSPORT" = unix ]; then null_listen="unix:$(backend_addr null)"; else null_listen=$(backend_addr null); fi
spawn "$RUN/logs/null.out" "$NULL_BIN" --listen "$null_listen" --body-size "$NULL_BODY" --mode "$NULL_MODE"
NULL_PID=$SPAWNED; PIDS+=("$NULL_PID")
fpm_wait=$FPM_PORT; null_wait=$NULL_PORT
if [ "$TRANSPORT" = unix ]; then fpm_wait=$(backend_addr fpm); null_wait=$(backend_addr null); fi
wait_port "$fpm_wait" "$FPM_PID" || die "php-fpm did not start: $(tail -5 "$RUN/logs/php-fpm.log" 2>/dev/null; cat "$RUN/logs/php-fpm.out")"
wait_port "$null_wait" "$NULL_PID" || die "null backend did not start: $(cat "$RUN/logs/null.out")"
[ "$TRANSPORT" = unix ] && chmod 666 "$(backend_addr null)"
sleep 0.5

# ---------------------------------------------------------------------------------------
# one server per run

start_server() { # variant backend(fpm|null)
    local v=$1 be=$2 route opts addr fcgi_addr proxy_target nginx_server
    addr=$(backend_addr "$be")
    if [ "$TRANSPORT" = unix ]; then
        fcgi_addr="-socket \"$addr\""; proxy_target="unix:$addr|fcgi://localhost"; nginx_server="unix:$addr"
    else
        fcgi_addr="-host $addr"; proxy_target="fcgi://$addr"; nginx_server=$addr
    fi
    port_free "$HTTP_PORT" || die "port $HTTP_PORT still in use before starting $v"
    : >"$RUN/logs/apache.out"; : >"$RUN/logs/nginx.out"
    case $v in
    nginx)
        mkdir -p "$RUN/nginx/logs" "$RUN/nginx/tmp"
        render "$HERE/conf/nginx.conf.in" "$RUN/nginx/nginx.conf" RUN="$RUN" HTTP_PORT="$HTTP_PORT" \
            NGINX_SERVER="$nginx_server" DOCROOT="$DOCROOT" NGINX_KEEPALIVE="$CONNS"
        spawn "$RUN/logs/nginx.out" /usr/sbin/nginx -p "$RUN/nginx/" -c "$RUN/nginx/nginx.conf"
        SERVER_PID=$SPAWNED
        ;;
    *)
        mkdir -p "$RUN/apache/run" "$RUN/apache/logs"
        case $v in
        fcgi-pool | fcgi-pool-b | fcgi-nopool | fcgi-capped | fcgi-capped-b)
            opts=$(fcgi_opts "$v")
            if [ "$FCGI_ROUTE" = action ]; then
                route="AddType application/x-httpd-fastphp .php
Action application/x-httpd-fastphp /php.fcgi
Alias /php.fcgi \"$RUN/fcgi/php.fcgi\"
FastCgiExternalServer \"$RUN/fcgi/php.fcgi\" $fcgi_addr $opts
<Directory \"$RUN/fcgi/\">
    Require all granted
</Directory>"
            else
                route="FastCgiExternalServer \"$DOCROOT\" $fcgi_addr $opts"
            fi
            local so=$MOD_FASTCGI_SO
            case $v in *-b) so=$MOD_FASTCGI_SO_B ;; esac
            render "$HERE/conf/apache-fcgi.conf.in" "$RUN/apache/variant.conf" MODULE_SO="$so" FCGI_ROUTE_CONF="$route"
            ;;
        proxy | proxy-reuse | proxy-capped)
            local reuse=off max=""
            [ "$v" != proxy ] && reuse=on
            [ "$v" = proxy-capped ] && max=" max=$PROXY_CAPPED_MAX"
            render "$HERE/conf/apache-proxy.conf.in" "$RUN/apache/variant.conf" PROXY_TARGET="$proxy_target" DOCROOT="$DOCROOT" PROXY_REUSE="$reuse" PROXY_MAX="$max"
            ;;
        static)
            render "$HERE/conf/apache-static.conf.in" "$RUN/apache/variant.conf"
            ;;
        *) die "unknown variant $v" ;;
        esac
        render "$HERE/conf/apache-common.conf.in" "$RUN/apache/httpd.conf" RUN="$RUN" HTTP_PORT="$HTTP_PORT" DOCROOT="$DOCROOT" \
            APACHE_MPM="$APACHE_MPM" APACHE_PROCS="$APACHE_PROCS" APACHE_THREADS="$APACHE_THREADS" \
            APACHE_WORKERS=$((APACHE_PROCS * APACHE_THREADS))
        spawn "$RUN/logs/apache.out" /usr/sbin/apache2 -f "$RUN/apache/httpd.conf" -DFOREGROUND
        SERVER_PID=$SPAWNED
        ;;
    esac
    if ! wait_port "$HTTP_PORT" "$SERVER_PID"; then
        log "bench: $v did not start:"
        cat "$RUN/logs/apache.out" "$RUN/logs/nginx.out" "$RUN/apache/logs/error.log" "$RUN/nginx/logs/error.log" 2>/dev/null | tail -20 >&2
        return 1
    fi
    sleep 0.3
}

stop_server() {
    local p=$SERVER_PID
    SERVER_PID=""
    [ -n "$p" ] || return 0
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    # the next server binds the same port; let the children go too
    for _ in $(seq 100); do port_free "$HTTP_PORT" && break; sleep 0.05; done
}



RESULTS="$RUN/results.tsv"
: >"$RESULTS"

# cpu_us_per_req "ticks before" "ticks after" requests -> busy CPU time per request in µs (the
# cost of a request on the server CPU, everything it runs included; unlike req/s it does not
# move with the time the hypervisor takes away)
CLK_TCK=$(getconf CLK_TCK)
cpu_us_per_req() {
    awk -v a="$1" -v b="$2" -v n="$3" -v hz="$CLK_TCK" 'BEGIN { split(a, x, " "); split(b, y, " ")
        printf "%.1f", (n > 0 ? (y[1] - x[1]) * 1e6 / hz / n : 0) }'
}
# steal_pct "busy idle steal (before)" "busy idle steal (after)" -> steal as % of the elapsed ticks
steal_pct() {
    awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " ")
        t = (y[1] - x[1]) + (y[2] - x[2]) + (y[3] - x[3]); printf "%.1f", (t > 0 ? 100 * (y[3] - x[3]) / t : 0) }'
}

run_one() { # round workload variant
    local r=$1 w=$2 v=$3 t path script backend bport url out rps p50 p99 rss non2xx sockerr errs
    t=$(workload_target "$w" "$v")
    [ -n "$t" ] || return 0
    IFS='|' read -r path script backend <<<"$t"
    url="http://127.0.0.1:$HTTP_PORT$path"
    start_server "$v" "$backend" || { printf '%s\t%s\t%s\tFAILED\t0\t0\t0\t1\t0\t0\t0\n' "$r" "$w" "$v" >>"$RESULTS"; stop_server; return 0; }
    local sargs=()
    [ -n "$script" ] && sargs=(-s "$script")
    # sanity: one request must succeed
    local code
    if [ -n "$script" ]; then
        code=$(head -c 262144 /dev/zero | curl -s -o /dev/null -w '%{http_code}' --data-binary @- "$url" || true)
    else
        code=$(curl -s -o /dev/null -w '%{http_code}' "$url" || true)
    fi
    [ "$code" = 200 ] || log "bench: warning: $v $w: GET $path answered $code"
    if [ "$WARMUP" -gt 0 ]; then
        pin_client wrk -t"$WRK_THREADS" -c"$CONNS" -d"${WARMUP}s" "${sargs[@]}" "$url" >/dev/null 2>&1 || true
    fi
    out="$RUN/raw/r$r-$w-$v.txt"
    local perf_pid=""
    if [ "$PERF" = 1 ]; then
        perf record -q -e cpu-clock -F 4999 ${PERF_ARGS:-} -C "$CPU_SERVER" -o "$RUN/raw/r$r-$w-$v.perf.data" \
            -- sleep "$DURATION" >"$RUN/raw/r$r-$w-$v.perf.out" 2>&1 &
        perf_pid=$!
    fi
    local ts0 tc0 ts1 tc1 steal_s steal_c
    ts0=$(cpu_ticks "$CPU_SERVER"); tc0=$(cpu_ticks "$CPU_CLIENT")
    pin_client wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DURATION}s" --latency "${sargs[@]}" "$url" >"$out" 2>&1 || true
    ts1=$(cpu_ticks "$CPU_SERVER"); tc1=$(cpu_ticks "$CPU_CLIENT")
    steal_s=$(steal_pct "$ts0" "$ts1"); steal_c=$(steal_pct "$tc0" "$tc1")
    if [ -n "$perf_pid" ]; then
        wait "$perf_pid" || true
        perf report -i "$RUN/raw/r$r-$w-$v.perf.data" --no-children --sort comm,dso --stdio 2>/dev/null |
            grep -v '^#' | grep -v '^$' | head -n 12 >"$RUN/raw/r$r-$w-$v.perf.txt" || true
        log "bench: profile $RUN/raw/r$r-$w-$v.perf.data:"
        sed 's/^/bench:   /' "$RUN/raw/r$r-$w-$v.perf.txt" >&2
    fi
    rss=$(server_rss "$SERVER_PID")
    stop_server
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
    sockerr=$(awk '/Socket errors:/ {gsub(/,/, ""); print $4 + $6 + $8 + $10}' "$out")
    errs=$(( ${non2xx:-0} + ${sockerr:-0} ))
    local nreq cpu_us
    nreq=$(awk '/ requests in / {print $1}' "$out")
    cpu_us=$(cpu_us_per_req "$ts0" "$ts1" "${nreq:-0}")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$w" "$v" "${rps:-0}" "$p50" "$p99" "$rss" "$errs" "$steal_s" "$steal_c" "$cpu_us" >>"$RESULTS"
    printf 'bench: round %s/%s %-9s %-12s %10s req/s  p50 %8sms  p99 %8sms  RSS %7s MiB  errors %s  CPU %s us/req  steal %s%%/%s%%\n' \
        "$r" "$ROUNDS" "$w" "$v" "${rps:-?}" "$p50" "$p99" "$rss" "$errs" "$cpu_us" "$steal_s" "$steal_c" >&2
}

read -r -a VARR <<<"$VARIANTS"
read -r -a WARR <<<"$WORKLOADS"
log "bench: $ROUNDS round(s) x ${DURATION}s (+${WARMUP}s warm-up), $CONNS connections, workloads: ${WARR[*]}, variants: ${VARR[*]}"
log "bench: php-fpm $PHP_FPM pm=static max_children=$FPM_CHILDREN; Apache $APACHE_MPM ${APACHE_PROCS}x${APACHE_THREADS}; route $FCGI_ROUTE; pinning: $([ "$PIN" = 1 ] && echo "servers CPU $CPU_SERVER, wrk CPU $CPU_CLIENT" || echo off)"
for ((r = 1; r <= ROUNDS; r++)); do
    for w in "${WARR[@]}"; do
        n=${#VARR[@]}
        for ((i = 0; i < n; i++)); do
            run_one "$r" "$w" "${VARR[$(((i + r - 1) % n))]}"
        done
    done
done

# ---------------------------------------------------------------------------------------
# table

label() {
    case $1 in
    fcgi-pool) echo "mod_fastcgi-rs pool on (-max-conns $FPM_CHILDREN)" ;;
    fcgi-pool-b) echo "build B: pool on (-max-conns $FPM_CHILDREN)" ;;
    fcgi-nopool) echo "mod_fastcgi-rs pool off (-keep-conn off)" ;;
    fcgi-capped) echo "mod_fastcgi-rs pool on (-max-conns $FCGI_CAPPED_CONNS)" ;;
    fcgi-capped-b) echo "build B: pool on (-max-conns $FCGI_CAPPED_CONNS)" ;;
    proxy) echo "mod_proxy_fcgi reuse off" ;;
    proxy-reuse) echo "mod_proxy_fcgi enablereuse=on" ;;
    proxy-capped) echo "mod_proxy_fcgi reuse, max=$PROXY_CAPPED_MAX/process" ;;
    nginx) echo "nginx fastcgi keepalive" ;;
    static) echo "Apache static file" ;;
    *) echo "$1" ;;
    esac
}

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
med() { # workload variant column
    awk -F'\t' -v w="$1" -v v="$2" -v c="$3" '$2 == w && $3 == v && $4 != "FAILED" { print $c }' "$RESULTS" | median
}
errsum() { awk -F'\t' -v w="$1" -v v="$2" '$2 == w && $3 == v { s += $8 } END { print s + 0 }' "$RESULTS"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "nan" || b == "nan" || b == 0) print "-"; else printf "%.2fx", a / b }'; }

echo
echo "mod_fastcgi-rs benchmark: $ROUNDS round(s) x ${DURATION}s, $CONNS connections, wrk -t$WRK_THREADS; medians over the rounds"
echo "php-fpm pm=static max_children=$FPM_CHILDREN; Apache $APACHE_MPM ${APACHE_PROCS}x${APACHE_THREADS} threads, route $FCGI_ROUTE; $(nproc) CPUs; pinning: $([ "$PIN" = 1 ] && echo "servers+backends on CPU $CPU_SERVER, wrk on CPU $CPU_CLIENT" || echo off)"
echo "ratio: req/s against mod_proxy_fcgi enablereuse=on for the same workload; RSS: the server's processes after the run"
echo "CPU us: busy time of the server CPU per request (server, backend and kernel together; lower is better)"
echo "steal s/c: % of the server / client CPU's time the hypervisor gave to others during the run (0 on bare metal)"
echo
printf '%-9s %-40s %8s %6s %7s %7s %7s %7s %6s %5s %11s\n' workload variant "req/s" ratio "CPU us" "p50 ms" "p99 ms" p99/p50 "RSS MB" errs "steal s/c %"
for w in "${WARR[@]}"; do
    ref=$(med "$w" proxy-reuse 4)
    for v in "${VARR[@]}"; do
        [ -n "$(workload_target "$w" "$v")" ] || continue
        rps=$(med "$w" "$v" 4)
        printf '%-9s %-40s %8.0f %6s %7.1f %7.2f %7.2f %7s %6.1f %5s %11s\n' "$w" "$(label "$v")" "$rps" "$(ratio "$rps" "$ref")" \
            "$(med "$w" "$v" 11)" "$(med "$w" "$v" 5)" "$(med "$w" "$v" 6)" "$(ratio "$(med "$w" "$v" 6)" "$(med "$w" "$v" 5)")" "$(med "$w" "$v" 7)" \
            "$(errsum "$w" "$v")" "$(med "$w" "$v" 9)/$(med "$w" "$v" 10)" 2>/dev/null ||
            printf '%-9s %-40s %10s\n' "$w" "$(label "$v")" "n/a"
    done
done

# targets of issue #4
echo
echo "targets (issue #4):"
check() { # description value op limit
    local ok
    ok=$(awk -v a="$2" -v b="$4" -v op="$3" 'BEGIN { if (a == "nan" || b == "nan" || a == "" || b == "") { print "n/a"; exit }
        r = (op == ">=") ? (a >= b) : (a <= b); print r ? "PASS" : "FAIL" }')
    printf '  %-4s %s (%s %s %s)\n' "$ok" "$1" "$2" "$3" "$4"
}
have() { [[ " ${VARR[*]} " == *" $1 "* ]] && [[ " ${WARR[*]} " == *" $2 "* ]]; }
mul() { awk -v a="$1" -v m="$2" 'BEGIN { if (a == "nan") print "nan"; else printf "%.1f", a * m }'; }
if have fcgi-pool hello && have proxy-reuse hello; then
    check "hello.php: pool on >= 1.25x mod_proxy_fcgi(enablereuse=on)" "$(med hello fcgi-pool 4)" ">=" "$(mul "$(med hello proxy-reuse 4)" 1.25)"
fi
if have fcgi-pool hello; then
    check "hello.php: pool on p99 <= 3x p50" "$(med hello fcgi-pool 6)" "<=" "$(mul "$(med hello fcgi-pool 5)" 3)"
    if have static hello; then
        echo "       (same run, Apache serving a static file: p99 = $(ratio "$(med hello static 6)" "$(med hello static 5)") p50)"
    fi
fi
# the capped pool (-max-conns below php-fpm's workers: at most that many PHP processes compete
# for the server CPU, the rest wait in Apache's FIFO queue), against both mod_proxy_fcgi settings
if have fcgi-capped hello && have proxy-reuse hello; then
    check "hello.php: capped pool >= 1.25x mod_proxy_fcgi(enablereuse=on)" "$(med hello fcgi-capped 4)" ">=" "$(mul "$(med hello proxy-reuse 4)" 1.25)"
    check "hello.php: capped pool p99 <= 3x p50" "$(med hello fcgi-capped 6)" "<=" "$(mul "$(med hello fcgi-capped 5)" 3)"
fi
if have fcgi-capped hello && have proxy-capped hello; then
    echo "       (like for like, mod_proxy_fcgi with the same cap: capped pool = $(ratio "$(med hello fcgi-capped 4)" "$(med hello proxy-capped 4)") its req/s)"
fi
if have fcgi-pool null && have static null; then
    check "null backend: pool on >= 0.8x Apache static" "$(med null fcgi-pool 4)" ">=" "$(mul "$(med null static 4)" 0.8)"
fi
# the same two throughput targets measured by the server CPU's busy time per request (what
# they mean when the server CPU is the bottleneck, without the hypervisor's noise)
if have fcgi-pool hello && have proxy-reuse hello; then
    check "hello.php by CPU time/request: pool on <= mod_proxy_fcgi(enablereuse=on) / 1.25" "$(med hello fcgi-pool 11)" "<=" "$(mul "$(med hello proxy-reuse 11)" 0.8)"
fi
if have fcgi-pool null && have static null; then
    check "null backend by CPU time/request: pool on <= Apache static / 0.8" "$(med null fcgi-pool 11)" "<=" "$(mul "$(med null static 11)" 1.25)"
fi
if have fcgi-pool 1mib && have proxy-reuse 1mib; then
    check "1 MiB: pool on >= 1.3x mod_proxy_fcgi(enablereuse=on)" "$(med 1mib fcgi-pool 4)" ">=" "$(mul "$(med 1mib proxy-reuse 4)" 1.3)"
fi
if have fcgi-pool post256k && have proxy-reuse post256k; then
    check "256 KiB POST: pool on >= mod_proxy_fcgi(enablereuse=on)" "$(med post256k fcgi-pool 4)" ">=" "$(med post256k proxy-reuse 4)"
fi
for w in hello 1mib post256k; do
    if have fcgi-pool $w && have proxy-reuse $w; then
        check "$w: Apache RSS with pool on <= mod_proxy_fcgi(enablereuse=on)" "$(med $w fcgi-pool 7)" "<=" "$(med $w proxy-reuse 7)"
    fi
done
if have fcgi-nopool hello && have proxy hello; then
    check "hello.php: pool off >= mod_proxy_fcgi reuse off" "$(med hello fcgi-nopool 4)" ">=" "$(med hello proxy 4)"
fi
