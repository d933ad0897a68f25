//! Load for the profiling-overhead benchmark (benches/record-overhead.sh): N tasks in
//! pairs doing unbuffered channel ping-pong for a fixed time, then the total number of
//! round trips on stdout. Prints `READY <pid>` once every pair is running.
//!
//! ```text
//! pingpong_load [--tasks N] [--seconds S] [--workers W] [--window-ms MS]
//! ```
//!
//! With `--window-ms`, it also prints `W <ms since READY> <round trips so far>` every MS
//! milliseconds, so that one run can be compared with itself, window by window, while a
//! profiler is switched on and off (benches/record-overhead.sh, the default mode).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use target_runtime::{chan, spawn, Builder};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} needs a number"))
        })
        .unwrap_or(default)
}

#[inline(never)]
fn ping(tx: chan::Sender<u64>, rx: chan::Receiver<u64>, stop: &AtomicBool, n: &AtomicU64) {
    let mut local = 0;
    while !stop.load(Ordering::Relaxed) {
        if tx.send(local).is_err() || rx.recv().is_err() {
            break;
        }
        local += 1;
        if local % 64 == 0 {
            n.fetch_add(64, Ordering::Relaxed);
        }
    }
    drop(tx);
}

#[inline(never)]
fn pong(tx: chan::Sender<u64>, rx: chan::Receiver<u64>) {
    while let Ok(v) = rx.recv() {
        if tx.send(v).is_err() {
            break;
        }
    }
}

fn main() {
    let tasks = arg("--tasks", 10_000);
    let seconds = arg("--seconds", 5);
    let workers = arg("--workers", 2) as usize;
    let window_ms = arg("--window-ms", 0);
    let total = Builder::new()
        .workers(workers)
        .run(move || {
            let stop = Arc::new(AtomicBool::new(false));
            let n = Arc::new(AtomicU64::new(0));
            for _ in 0..tasks / 2 {
                let (tx1, rx1) = chan::bounded(0);
                let (tx2, rx2) = chan::bounded(0);
                let (stop, n) = (stop.clone(), n.clone());
                spawn(move || ping(tx1, rx2, &stop, &n));
                spawn(move || pong(tx2, rx1));
            }
            println!("READY {}", std::process::id());
            let start = Instant::now();
            let begin = n.load(Ordering::Relaxed);
            let end = start + Duration::from_secs(seconds);
            if window_ms > 0 {
                let mut next = start;
                while next < end {
                    next += Duration::from_millis(window_ms);
                    target_runtime::sleep(next.saturating_duration_since(Instant::now()));
                    let t = start.elapsed().as_millis();
                    println!("W {t} {}", n.load(Ordering::Relaxed) - begin);
                }
            } else {
                target_runtime::sleep(Duration::from_secs(seconds));
            }
            let done = n.load(Ordering::Relaxed) - begin;
            stop.store(true, Ordering::Relaxed);
            (done, start.elapsed())
        })
        .expect("runtime starts");
    println!("{} round trips in {:.3} s", total.0, total.1.as_secs_f64());
    std::process::exit(0);
}
