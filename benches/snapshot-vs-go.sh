#!/usr/bin/env bash
# gprof-rs snapshot vs Go 1.19's in-process goroutine profile, on this machine.
#
# Builds the release tool (target/release/gprof-rs), the Rust target
# (target-runtime/examples/bench_target.rs), the Go target
# (benches/go/snapshot_target.go) and the harness (benches/snapshot.rs), then runs the
# harness: for N parked tasks at depth 8, idle and loaded, it snapshots each target
# REPS times per mode (gprof-rs concurrent, gprof-rs --mode stw, Go's
# pprof.Lookup("goroutine").WriteTo, and a no-tool noise window), interleaved.
#
#   benches/snapshot-vs-go.sh            # N = 1k, 10k, 100k; REPS=7   (~2-5 min)
#   benches/snapshot-vs-go.sh --full     # adds N = 1M                  (~10-15 min,
#                                        #   ~5 GB + ~3 GB of target RSS)
#   REPS=9 TASKS=1k,100k VARIANTS=idle benches/snapshot-vs-go.sh
#
# Extra arguments go to the harness (see benches/snapshot.rs). Raw samples:
# target/snapshot-vs-go/raw.tsv; the tables are printed and saved to
# target/snapshot-vs-go/report.md.
set -euo pipefail
cd "$(dirname "$0")/.."

TASKS=${TASKS:-1k,10k,100k}
REPS=${REPS:-7}
VARIANTS=${VARIANTS:-idle,loaded}
if [[ ${1:-} == --full ]]; then
    shift
    TASKS=${TASKS_FULL:-1k,10k,100k,1M}
fi
OUT=target/snapshot-vs-go
mkdir -p "$OUT"

echo "building..." >&2
cargo build --release --bin gprof-rs >&2
cargo build --release -p target-runtime --example bench_target >&2
GO111MODULE=off go build -o "$OUT/go-target" benches/go/snapshot_target.go
HARNESS=$(cargo bench --bench snapshot --no-run --message-format=json 2>/dev/null |
    jq -r 'select(.reason == "compiler-artifact" and .target.name == "snapshot" and .executable != null) | .executable' |
    tail -n 1)

{
    echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
        "kernel $(uname -r), $(go version | cut -d' ' -f3), $(rustc --version | cut -d' ' -f1-2)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
} | tee "$OUT/report.md"
"$HARNESS" --tasks "$TASKS" --reps "$REPS" --variants "$VARIANTS" --out "$OUT" "$@" |
    tee -a "$OUT/report.md"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/report.md"
