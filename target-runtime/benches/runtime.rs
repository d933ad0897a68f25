//! Runtime micro-benchmarks, measured exactly like `benches/go/runtime_bench.go` so the
//! two can be compared side by side (`benches/runtime-vs-go.sh`).
//!
//! ```text
//! cargo bench -p target-runtime --bench runtime                      # everything
//! cargo bench -p target-runtime --bench runtime -- --reps 7 yield2   # one benchmark
//! cargo bench -p target-runtime --bench runtime --features no-profile-barrier
//! ```
//!
//! Benchmarks (each timed with a monotonic clock around the loop, inside the runtime):
//!
//! * `yield1`: one task calls `yield_now()` K times (1 worker). ns per yield.
//! * `yield2`: two tasks each call `yield_now()` K times (1 worker). ns per yield
//!   (total time / 2K), i.e. one task switch.
//! * `spawn`: `spawn(|| ()).join()` N times. ns per spawn+join pair.
//! * `pingpong`: two tasks bounce a value over two `bounded(0)` channels. ns per round
//!   trip (two sends, two receives).
//! * `mem`: RSS before and after 100k tasks parked in `recv` on one `bounded(0)`
//!   channel, bytes per parked task. RSS is `/proc/self/statm` resident pages, the same
//!   as the Go program. One sample per fresh process (pools would otherwise hide costs).
//!
//! Output: one tab-separated line per benchmark,
//! `impl bench workers iters unit median min max samples`, `impl` being `rust` or
//! `rust-nobarrier` (built with the `no-profile-barrier` feature).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use target_runtime::{chan, spawn, yield_now, Builder};

const IMPL: &str = if cfg!(feature = "no-profile-barrier") {
    "rust-nobarrier"
} else {
    "rust"
};

struct Opts {
    reps: usize,
    n: Option<u64>,
    workers: Option<usize>,
    benches: Vec<String>,
}

fn parse_args() -> Opts {
    let mut o = Opts {
        reps: 5,
        n: None,
        workers: None,
        benches: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| -> String {
            args.next()
                .unwrap_or_else(|| panic!("{name} needs a value"))
        };
        match a.as_str() {
            // `cargo bench` passes --bench to harness = false binaries.
            "--bench" => {}
            "--reps" => o.reps = val("--reps").parse().expect("--reps: a number"),
            "--n" => o.n = Some(val("--n").parse().expect("--n: a number")),
            "--workers" => o.workers = Some(val("--workers").parse().expect("--workers: a number")),
            s if s.starts_with('-') => panic!("unknown flag {s}"),
            s => o.benches.push(s.to_string()),
        }
    }
    o
}

fn rt<T: Send + 'static>(workers: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
    Builder::new()
        .workers(workers)
        .run(f)
        .expect("runtime starts")
}

fn ns_per(d: Duration, ops: u64) -> f64 {
    d.as_nanos() as f64 / ops as f64
}

/// One task yielding `k` times.
fn yield1(workers: usize, k: u64) -> f64 {
    rt(workers, move || {
        let t = Instant::now();
        for _ in 0..k {
            yield_now();
        }
        ns_per(t.elapsed(), k)
    })
}

/// Two tasks yielding `k` times each; ns per yield (= per task switch).
fn yield2(workers: usize, k: u64) -> f64 {
    rt(workers, move || {
        let t = Instant::now();
        let a = spawn(move || {
            for _ in 0..k {
                yield_now();
            }
        });
        let b = spawn(move || {
            for _ in 0..k {
                yield_now();
            }
        });
        a.join().unwrap();
        b.join().unwrap();
        ns_per(t.elapsed(), 2 * k)
    })
}

/// Spawn a trivial task and join it, `n` times.
fn spawn_join(workers: usize, n: u64) -> f64 {
    rt(workers, move || {
        // Warm the stack pool and the task table.
        for _ in 0..1000 {
            spawn(|| ()).join().unwrap();
        }
        let t = Instant::now();
        for _ in 0..n {
            spawn(|| ()).join().unwrap();
        }
        ns_per(t.elapsed(), n)
    })
}

/// Ping-pong over two unbuffered channels, `n` round trips.
fn pingpong(workers: usize, n: u64) -> f64 {
    rt(workers, move || {
        let (ping_tx, ping_rx) = chan::bounded::<u64>(0);
        let (pong_tx, pong_rx) = chan::bounded::<u64>(0);
        let echo = spawn(move || {
            while let Ok(v) = ping_rx.recv() {
                if pong_tx.send(v).is_err() {
                    break;
                }
            }
        });
        for i in 0..1000 {
            ping_tx.send(i).unwrap();
            pong_rx.recv().unwrap();
        }
        let t = Instant::now();
        for i in 0..n {
            ping_tx.send(i).unwrap();
            pong_rx.recv().unwrap();
        }
        let ns = ns_per(t.elapsed(), n);
        drop(ping_tx);
        echo.join().unwrap();
        ns
    })
}

/// Resident set size in bytes, from /proc/self/statm (same as the Go program).
fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .expect("statm resident field")
        .parse()
        .expect("number");
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

/// `RssAnon`/`RssShmem` (bytes) from /proc/self/status, to say where the memory went.
fn rss_split() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let field = |name: &str| -> u64 {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("RssAnon:"), field("RssShmem:"))
}

/// RSS growth per task for `n` tasks parked in `recv` on one unbuffered channel.
/// Returns (bytes per task, anon bytes per task, shmem bytes per task).
fn mem(workers: usize, n: u64) -> (f64, f64, f64) {
    rt(workers, move || {
        // Let the runtime reach its steady state (workers, timer, task table) first.
        spawn(|| ()).join().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let before = rss_bytes();
        let (anon0, shm0) = rss_split();
        let (tx, rx) = chan::bounded::<u64>(0);
        let started = Arc::new(AtomicUsize::new(0));
        for _ in 0..n {
            let rx = rx.clone();
            let started = started.clone();
            drop(spawn(move || {
                started.fetch_add(1, Ordering::Relaxed);
                let _ = rx.recv();
            }));
        }
        while started.load(Ordering::Relaxed) < n as usize {
            target_runtime::sleep(Duration::from_millis(1));
        }
        target_runtime::sleep(Duration::from_millis(100));
        let parked = target_runtime::__private::waiting_tasks();
        assert!(parked as u64 >= n, "only {parked} of {n} tasks parked");
        let after = rss_bytes();
        let (anon1, shm1) = rss_split();
        drop(tx);
        let per = |a: u64, b: u64| (b as f64 - a as f64) / n as f64;
        (per(before, after), per(anon0, anon1), per(shm0, shm1))
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn report(bench: &str, workers: usize, iters: u64, unit: &str, mut samples: Vec<f64>) {
    let list: Vec<String> = samples.iter().map(|s| format!("{s:.1}")).collect();
    let med = median(&mut samples);
    println!(
        "{IMPL}\t{bench}\t{workers}\t{iters}\t{unit}\t{med:.1}\t{:.1}\t{:.1}\t{}",
        samples[0],
        samples[samples.len() - 1],
        list.join(",")
    );
}

fn run_one(bench: &str, workers: usize, n: Option<u64>, reps: usize) {
    let (iters, f): (u64, fn(usize, u64) -> f64) = match bench {
        "yield1" => (n.unwrap_or(2_000_000), yield1),
        "yield2" => (n.unwrap_or(1_000_000), yield2),
        "spawn" => (n.unwrap_or(200_000), spawn_join),
        "pingpong" => (n.unwrap_or(200_000), pingpong),
        "mem" => {
            let n = n.unwrap_or(100_000);
            // One sample per process: re-run this binary for the other repetitions.
            let (mut all, mut anon, mut shm) = (Vec::new(), Vec::new(), Vec::new());
            for rep in 0..reps {
                let (b, a, s) = if rep == 0 {
                    mem(workers, n)
                } else {
                    mem_in_child(workers, n)
                };
                all.push(b);
                anon.push(a);
                shm.push(s);
            }
            report("mem", workers, n, "bytes/task", all);
            report("mem-anon", workers, n, "bytes/task", anon);
            report("mem-shmem", workers, n, "bytes/task", shm);
            return;
        }
        other => panic!("unknown benchmark {other} (yield1 yield2 spawn pingpong mem)"),
    };
    let samples = (0..reps).map(|_| f(workers, iters)).collect();
    report(bench, workers, iters, "ns/op", samples);
}

fn mem_in_child(workers: usize, n: u64) -> (f64, f64, f64) {
    let exe = std::env::current_exe().expect("current_exe");
    let out = std::process::Command::new(exe)
        .args([
            "--reps",
            "1",
            "--workers",
            &workers.to_string(),
            "--n",
            &n.to_string(),
            "mem",
        ])
        .output()
        .expect("run child");
    assert!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |name: &str| -> f64 {
        text.lines()
            .map(|l| l.split('\t').collect::<Vec<_>>())
            .find(|f| f.get(1) == Some(&name))
            .and_then(|f| f.get(5)?.parse().ok())
            .unwrap_or_else(|| panic!("child printed no {name} line: {text}"))
    };
    (get("mem"), get("mem-anon"), get("mem-shmem"))
}

fn main() {
    let o = parse_args();
    println!("impl\tbench\tworkers\titers\tunit\tmedian\tmin\tmax\tsamples");
    if o.benches.is_empty() {
        for (b, w) in [
            ("yield1", 1),
            ("yield2", 1),
            ("spawn", 1),
            ("spawn", 2),
            ("pingpong", 1),
            ("pingpong", 2),
            ("mem", 2),
        ] {
            run_one(b, o.workers.unwrap_or(w), o.n, o.reps);
        }
    } else {
        for b in &o.benches {
            let w = o.workers.unwrap_or(if b == "mem" { 2 } else { 1 });
            run_one(b, w, o.n, o.reps);
        }
    }
}
