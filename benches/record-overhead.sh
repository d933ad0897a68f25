#!/usr/bin/env bash
# Profiling overhead: the throughput of a target with N tasks doing unbuffered channel
# ping-pong, unprofiled and while `gprof-rs record --rate HZ` samples it, interleaved
# over ROUNDS rounds on this machine (which is shared: compare within one run).
#
#   benches/record-overhead.sh                  # N=10000 HZ=10 DUR=5 ROUNDS=3
#   N=10000 HZ=10 DUR=10 ROUNDS=5 benches/record-overhead.sh
set -euo pipefail
N=${N:-10000}; HZ=${HZ:-10}; SECONDS_=${DUR:-5}; ROUNDS=${ROUNDS:-3}
cd "$(dirname "$0")/.."
cargo build -q --release -p gprof-rs
cargo build -q --release -p target-runtime --example pingpong_load
TOOL=target/release/gprof-rs
LOAD=target/release/examples/pingpong_load
OUT=$(mktemp -d)

run() { # $1 = plain|profiled ; prints round trips
    local fifo="$OUT/out.$1"
    "$LOAD" --tasks "$N" --seconds "$SECONDS_" > "$fifo" &
    local pid=$!
    until grep -q READY "$fifo" 2>/dev/null; do sleep 0.01; done
    if [ "$1" = profiled ]; then
        "$TOOL" record "$pid" --rate "$HZ" --duration "$((SECONDS_ + 5))s" -o "$OUT/p.pb.gz" 2>/dev/null &
        local tool=$!
    fi
    wait "$pid"
    [ "$1" = profiled ] && { kill -INT "$tool" 2>/dev/null || true; wait "$tool" || true; }
    awk '/round trips/ {print $1}' "$fifo"
}

printf 'round\tplain\tprofiled\tratio\n'
for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then p=$(run plain); q=$(run profiled); else q=$(run profiled); p=$(run plain); fi
    printf '%s\t%s\t%s\t%s\n' "$r" "$p" "$q" "$(awk -v p="$p" -v q="$q" 'BEGIN {printf "%.4f", q / p}')"
done
rm -rf "$OUT"
