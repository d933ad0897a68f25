#!/usr/bin/env bash
# target-runtime vs Go 1.19, side by side on this machine.
#
# Builds target-runtime/benches/runtime.rs twice (default, and with the
# `no-profile-barrier` feature) and benches/go/runtime_bench.go, then runs the three
# interleaved: for every round and every benchmark, each implementation runs once
# (REPS samples), in an order that rotates per round, so that the noise of a shared
# machine falls on all of them alike. Prints a markdown table of the medians over all
# samples and the ratios Rust/Go (lower is better for Rust).
#
#   benches/runtime-vs-go.sh                 # ROUNDS=3 REPS=5
#   ROUNDS=5 REPS=7 benches/runtime-vs-go.sh
#
# Raw samples go to target/runtime-vs-go/raw.tsv.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
REPS=${REPS:-5}
cd "$(dirname "$0")/.."
OUT=target/runtime-vs-go
mkdir -p "$OUT"

bench_exe() {
    cargo bench -p target-runtime --bench runtime --no-run --message-format=json "$@" 2>/dev/null |
        jq -r 'select(.reason == "compiler-artifact" and .target.name == "runtime" and .executable != null) | .executable' |
        tail -n 1
}
echo "building..." >&2
cargo bench -p target-runtime --bench runtime --no-run >&2
cargo bench -p target-runtime --bench runtime --no-run --features no-profile-barrier >&2
RUST=$(bench_exe)
RUST_NB=$(bench_exe --features no-profile-barrier)
cp "$RUST" "$OUT/rust-bench"
cp "$RUST_NB" "$OUT/rust-bench-nobarrier"
GOFLAGS=-mod=mod GO111MODULE=off go build -o "$OUT/go-bench" benches/go/runtime_bench.go

# bench:workers:implementations
CASES="yield1:1:rust,nobarrier,go yield2:1:rust,nobarrier,go spawn:1:rust,go spawn:2:rust,go
pingpong:1:rust,nobarrier,go pingpong:2:rust,go mem:2:rust,go"

RAW=$OUT/raw.tsv
: >"$RAW"
for round in $(seq 1 "$ROUNDS"); do
    for c in $CASES; do
        IFS=: read -r bench workers impls <<<"$c"
        IFS=, read -r -a list <<<"$impls"
        n=${#list[@]}
        for k in $(seq 0 $((n - 1))); do
            impl=${list[$(((k + round) % n))]}
            case $impl in
            rust) exe=$OUT/rust-bench ;;
            nobarrier) exe=$OUT/rust-bench-nobarrier ;;
            go) exe=$OUT/go-bench ;;
            esac
            echo "round $round/$ROUNDS: $impl $bench workers=$workers" >&2
            "$exe" --reps "$REPS" --workers "$workers" "$bench" | tail -n +2 >>"$RAW"
        done
    done
done

# CPU work per operation, from hardware counters, which a busy machine disturbs far less
# than wall time: user-space cycles and instructions of the whole process (perf stat),
# run once with N and once with 3N iterations; the difference divided by the 2N extra
# operations cancels start-up and warm-up. 1-worker benchmarks only (with 2 workers the
# counts include idle workers spinning). Skipped if perf cannot count: perf exits 0 and
# prints "<not supported>" when the (virtual) machine exposes no hardware counters.
CTR=$OUT/counters.tsv
: >"$CTR"
if perf stat -x, -e cycles:u,instructions:u true 2>&1 >/dev/null | grep -q '^[0-9]'; then
    # bench:n:operations per iteration
    CCASES="yield1:1000000:1 yield2:500000:2 spawn:100000:1 pingpong:100000:1"
    count() { # exe bench n -> "cycles instructions"
        perf stat -x, -e cycles:u,instructions:u "$1" --reps 1 --workers 1 --n "$3" "$2" 2>&1 >/dev/null |
            awk -F, '$3 ~ /^cycles/ {c=$1} $3 ~ /^instructions/ {i=$1} END {print c, i}'
    }
    for round in $(seq 1 "$ROUNDS"); do
        for c in $CCASES; do
            IFS=: read -r bench n per <<<"$c"
            for impl in rust nobarrier go; do
                case $impl in
                rust) exe=$OUT/rust-bench ;;
                nobarrier) exe=$OUT/rust-bench-nobarrier ;;
                go) exe=$OUT/go-bench ;;
                esac
                echo "counters round $round/$ROUNDS: $impl $bench" >&2
                read -r c1 i1 <<<"$(count "$exe" "$bench" "$n")"
                read -r c3 i3 <<<"$(count "$exe" "$bench" $((3 * n)))"
                printf '%s\t%s\t%s\t%s\n' "$impl" "$bench" \
                    $(((c3 - c1) / (2 * n * per))) $(((i3 - i1) / (2 * n * per))) >>"$CTR"
            done
        done
    done
elif command -v valgrind >/dev/null; then
    # No hardware counters: instructions alone, counted by callgrind (exact, ~50x
    # slower), for the switch path with and without the barrier check. Cycles: -1.
    echo "perf cannot count here: instructions from callgrind instead (no cycles, no Go)" >&2
    icount() { # exe bench n -> instructions of the whole process
        valgrind --tool=callgrind --callgrind-out-file=/dev/null "$1" --reps 1 --workers 1 \
            --n "$3" "$2" 2>&1 >/dev/null | sed -n 's/.*I *refs: *//p' | tr -d ,
    }
    for c in yield1:100000:1 yield2:50000:2; do
        IFS=: read -r bench n per <<<"$c"
        for impl in rust nobarrier; do
            exe=$OUT/rust-bench
            [ "$impl" = nobarrier ] && exe=$OUT/rust-bench-nobarrier
            echo "callgrind: $impl $bench" >&2
            i1=$(icount "$exe" "$bench" "$n")
            i3=$(icount "$exe" "$bench" $((3 * n)))
            printf '%s\t%s\t-1\t%s\n' "$impl" "$bench" $(((i3 - i1) / (2 * n * per))) >>"$CTR"
        done
    done
fi

python3 - "$RAW" "$ROUNDS" "$REPS" "$CTR" <<'EOF'
import statistics, sys
raw, rounds, reps, ctr = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
samples = {}
for line in open(raw):
    f = line.rstrip("\n").split("\t")
    impl, bench, workers, unit = f[0], f[1], int(f[2]), f[4]
    samples.setdefault((bench, workers), {}).setdefault(impl, []).extend(float(x) for x in f[8].split(","))
    samples[(bench, workers)]["unit"] = unit

names = {
    "yield1": "yield, 1 task",
    "yield2": "yield, 2 tasks (task switch)",
    "spawn": "spawn + join",
    "pingpong": "unbuffered chan ping-pong (round trip)",
    "mem": "RSS per parked task (100k)",
    "mem-anon": "  of which anonymous",
    "mem-shmem": "  of which shared (task table memfd)",
    "mem-stackinuse": "  Go MemStats.StackInuse per goroutine",
}
order = ["yield1", "yield2", "spawn", "pingpong", "mem", "mem-anon", "mem-shmem", "mem-stackinuse"]
def fmt(v):
    return "–" if v is None else f"{v:.1f}"
def med(d, k):
    v = d.get(k)
    return statistics.median(v) if v else None
def rng(d, k):
    v = d.get(k)
    return f"{min(v):.0f}–{max(v):.0f}" if v else "–"

print(f"Wall time: median of {rounds} rounds x {reps} samples. Rust/Go < 1 means Rust is faster or smaller.\n")
print("| benchmark | workers | unit | Go 1.19 | target-runtime | Rust/Go | Rust, no barrier check | Go range | Rust range |")
print("|---|---|---|---|---|---|---|---|---|")
for (bench, workers) in sorted(samples, key=lambda k: (order.index(k[0]), k[1])):
    d = samples[(bench, workers)]
    go, rs, nb = med(d, "go"), med(d, "rust"), med(d, "rust-nobarrier")
    ratio = f"{rs / go:.2f}" if go and rs else "–"
    print(f"| {names.get(bench, bench)} | {workers} | {d['unit']} | {fmt(go)} | {fmt(rs)} | {ratio} | {fmt(nb)} | {rng(d, 'go')} | {rng(d, 'rust')} |")

counters = {}
for line in open(ctr):
    impl, bench, cyc, ins = line.split()
    counters.setdefault(bench, {}).setdefault(impl, []).append((int(cyc), int(ins)))
if counters:
    how = "perf stat" if all(c >= 0 for v in counters.values() for xs in v.values() for c, _ in xs) else "callgrind, no cycles: the machine exposes no hardware counters"
    print(f"\nCPU work per operation: user-space cycles and instructions ({how}; differential N vs 3N, median of the rounds; 1 worker)\n")
    print("| benchmark | Go 1.19 cycles | Rust cycles | Rust/Go | Go instructions | Rust instructions | Rust, no barrier check: cycles / instructions |")
    print("|---|---|---|---|---|---|---|")
    for bench in [b for b in order if b in counters]:
        d = counters[bench]
        def m(impl, k):
            v = d.get(impl)
            return statistics.median(x[k] for x in v) if v else float("nan")
        gc, rc, nc = m("go", 0), m("rust", 0), m("nobarrier", 0)
        gi, ri, ni = m("go", 1), m("rust", 1), m("nobarrier", 1)
        f = lambda x: "–" if x != x or x < 0 else f"{x:.0f}"
        ratio = f"{rc / gc:.2f}" if gc == gc and gc > 0 and rc >= 0 else "–"
        print(f"| {names.get(bench, bench)} | {f(gc)} | {f(rc)} | {ratio} | {f(gi)} | {f(ri)} | {f(nc)} / {f(ni)} |")
EOF
