#!/usr/bin/env bash
# CI fuzzing: every cargo-fuzz target in fuzz/ for FUZZ_SECONDS (default 60) seconds.
# Installs cargo-fuzz (cargo install cargo-fuzz --locked, needs crates.io, ~3 min) only if
# missing. Prints executions per target; exits non-zero if any target crashes (or fails to
# build). Seeds: fuzz/corpus/<t> (read only); new inputs go to fuzz/target/fuzz-corpus/<t>;
# crash inputs to fuzz/artifacts/<t>/.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export RUSTC_BOOTSTRAP=1
FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
CARGO="${CARGO:-cargo}"
start=$(date +%s)

if [ ! -f fuzz/Cargo.toml ]; then echo "fuzz-ci: no fuzz/Cargo.toml; nothing to fuzz"; exit 0; fi
if ! $CARGO fuzz --version >/dev/null 2>&1; then
    echo "fuzz-ci: cargo-fuzz missing; cargo install cargo-fuzz --locked"
    $CARGO install cargo-fuzz --locked
fi
echo "fuzz-ci: $($CARGO fuzz --version), $FUZZ_SECONDS s per target"
cd fuzz
targets=$($CARGO fuzz list)
[ -n "$targets" ] || { echo "fuzz-ci: no fuzz targets"; exit 0; }

# Build all targets first (so build time is not counted against the fuzzing time).
t_build=$(date +%s)
$CARGO fuzz build
echo "fuzz-ci: build took $(( $(date +%s) - t_build ))s"

failed=""; summary=""
for t in $targets; do
    mkdir -p "target/fuzz-corpus/$t" "artifacts/$t"
    seeds=""; [ -d "corpus/$t" ] && seeds="corpus/$t"
    log="target/fuzz-ci-$t.log"
    echo "=== fuzz-ci: $t for ${FUZZ_SECONDS}s"
    rc=0
    $CARGO fuzz run "$t" "target/fuzz-corpus/$t" $seeds -- \
        -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 >"$log" 2>&1 || rc=$?
    execs=$(grep -E '^stat::number_of_executed_units:' "$log" | awk '{print $2}' | tail -1)
    rate=$(grep -E '^stat::average_exec_per_sec:' "$log" | awk '{print $2}' | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | awk '{print $2}')
    line="$t: exit $rc, ${execs:-?} executions (${rate:-?}/s), cov ${cov:-?}"
    if [ "$rc" -ne 0 ] || grep -qE '^==[0-9]+==ERROR|SUMMARY: (libFuzzer|AddressSanitizer)|panicked at|deadly signal' "$log"; then
        failed="$failed $t"
        line="$line  ** CRASH **"
        echo "--- tail of $log:"; tail -40 "$log"
        ls -1 "artifacts/$t" 2>/dev/null | sed 's/^/    artifact: /' || true
    fi
    echo "$line"
    summary="$summary$line"$'\n'
done
echo "=== fuzz-ci summary (total $(( $(date +%s) - start ))s):"
printf '%s' "$summary"
if [ -n "$failed" ]; then echo "fuzz-ci: FAILED:$failed" >&2; exit 1; fi
echo "fuzz-ci: no crash"
