#!/usr/bin/env bash
# Profiling overhead: the throughput of a target with N tasks doing unbuffered channel
# ping-pong while `gprof-rs record --rate HZ` samples it, against the same target
# unprofiled. This machine is shared and its speed drifts by 10-30 % from one minute
# (and one process) to the next, so the comparison is made inside one run:
#
# MODE=windows (default): one target runs for PHASES x PHASE seconds and prints its round
#   trips every 100 ms; the profiler is on during every other phase (a fresh
#   `gprof-rs record` per phase, so each on-phase also pays one attach). Each on-phase is
#   compared with the mean of the off-phases on either side of it, skipping the first
#   and last 300 ms of every phase; the median ratio is the result.
# MODE=runs: separate target runs, unprofiled and profiled, interleaved over ROUNDS rounds.
#
#   benches/record-overhead.sh                       # N=10000 HZ=10 PHASE=3 PHASES=13 (~45 s)
#   PHASES=21 benches/record-overhead.sh             # 10 on-phases (~65 s)
#   MODE=runs N=10000 HZ=10 DUR=5 ROUNDS=8 benches/record-overhead.sh
set -euo pipefail
N=${N:-10000}; HZ=${HZ:-10}; MODE=${MODE:-windows}
cd "$(dirname "$0")/.."
cargo build -q --release -p gprof-rs
cargo build -q --release -p target-runtime --example pingpong_load
TOOL=target/release/gprof-rs
LOAD=target/release/examples/pingpong_load
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

if [ "$MODE" = windows ]; then
    PHASE=${PHASE:-3}; PHASES=${PHASES:-13}
    total=$((PHASE * PHASES + 1))
    "$LOAD" --tasks "$N" --seconds "$total" --window-ms 100 > "$OUT/w" &
    pid=$!
    until grep -q READY "$OUT/w" 2>/dev/null; do sleep 0.01; done
    start=$(date +%s.%N)
    : > "$OUT/phases"
    for p in $(seq 0 $((PHASES - 1))); do
        # Phase p covers [p*PHASE, (p+1)*PHASE) seconds after READY; odd phases profiled.
        target=$(awk -v s="$start" -v t=$((p * PHASE)) 'BEGIN {print s + t}')
        now=$(date +%s.%N)
        sleep "$(awk -v a="$target" -v b="$now" 'BEGIN {d = a - b; print (d > 0 ? d : 0)}')"
        if [ $((p % 2)) -eq 1 ]; then
            "$TOOL" record "$pid" --rate "$HZ" --duration "${PHASE}s" -o "$OUT/p$p.pb.gz" 2>> "$OUT/tool.log" || true
            echo "$p on" >> "$OUT/phases"
        else
            echo "$p off" >> "$OUT/phases"
        fi
    done
    wait "$pid"
    awk -v P=$((PHASE * 1000)) -v skip=300 '
        FNR == NR { on[$1] = ($2 == "on"); n = $1 + 1; next }
        $1 == "W" { t = $2; c = $3
            if (prev_t != "") {
                ph = int(prev_t / P); off = prev_t - ph * P
                if (off >= skip && t - ph * P <= P - skip) { rt[ph] += c - prev_c; ms[ph] += t - prev_t }
            }
            prev_t = t; prev_c = c }
        END {
            printf "phase\tprofiled\tround trips/s\tratio to neighbours\n"
            k = 0
            for (p = 0; p < n; p++) {
                r = (ms[p] > 0) ? rt[p] / ms[p] * 1000 : 0; rate[p] = r
                printf "%d\t%s\t%.0f", p, on[p] ? "yes" : "no", r
                if (on[p] && p > 0 && p + 1 < n && rate[p-1] > 0) {
                    nb = (rate[p-1] + (rt[p+1] / ms[p+1] * 1000)) / 2
                    printf "\t%.4f", r / nb; ratios[k++] = r / nb
                }
                printf "\n"
            }
            # median of the ratios (insertion sort: k is small)
            for (i = 1; i < k; i++) { v = ratios[i]; j = i - 1; while (j >= 0 && ratios[j] > v) { ratios[j+1] = ratios[j]; j-- } ratios[j+1] = v }
            if (k > 0) printf "median ratio (profiled / unprofiled) over %d on-phases: %.4f\n", k, (k % 2) ? ratios[int(k/2)] : (ratios[k/2-1] + ratios[k/2]) / 2
        }' "$OUT/phases" "$OUT/w"
    echo "gprof-rs, per on-phase:"
    grep 'snapshots in' "$OUT/tool.log" | sed 's/^/  /'
    exit 0
fi

SECONDS_=${DUR:-5}; ROUNDS=${ROUNDS:-3}
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
