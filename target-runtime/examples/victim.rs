//! A target for gprof-rs's reliability tests (tests/integration/reliability.rs): tasks
//! that keep hitting the profile barrier and measure, by the runtime's own clock, how
//! long they were kept from running; tasks parked on a channel whose wake-ups are
//! counted; a SIGUSR1 counter; and an optional death at a chosen moment.
//!
//! ```text
//! victim [--workers W] [--busy N] [--parked M] [--sleepers S]
//!        [--die-after-us U --die-how exit|abort|kill]
//! ```
//!
//! * `--busy N` (default 4): N tasks that do a few microseconds of work and yield, in a
//!   loop. Each one measures the gap between two of its iterations (CLOCK_MONOTONIC);
//!   the largest gap is how long the target was blocked (by a stop, a task the profiler
//!   held, or the machine being busy).
//! * `--parked M` (default 64): M tasks that wait on a request channel and answer every
//!   request on a reply channel.
//! * `--sleepers S` (default 4): S tasks that sleep 1 ms in a loop (timer wake-ups).
//! * `--die-after-us U --die-how H`: a plain thread ends the process U microseconds
//!   after READY: `exit` (exit(3)), `abort` (SIGABRT) or `kill` (SIGKILL to itself).
//!
//! A SIGUSR1 handler counts receipts in an atomic. The first line printed is
//! `READY <pid> <address of the SIGUSR1 counter> <address of the mark>` (hex). The mark
//! is a CLOCK_MONOTONIC time in nanoseconds that a test writes into this process (with
//! `process_vm_writev`) when it does something to it, e.g. kills its profiler: the busy
//! tasks then also track the largest part of a gap that lies after the mark, which is
//! how long the target stayed blocked after that moment. Commands on stdin, one a line:
//!
//! * `stats`: wait (at most 5 s) until every busy task and every sleeper has made
//!   progress since the previous `stats`, then print `STATS gap_us=<largest gap since
//!   the previous stats> after_us=<largest part of a gap after the mark> stalled=<busy
//!   tasks and sleepers that made none> live=<tasks alive> tasks=<busy + parked +
//!   sleepers + main> usr1=<SIGUSR1 count>`, and clear the mark.
//! * `wake K`: send K requests, wait for the K replies, print `WOKE K`.
//! * `exit` or end of input: exit 0.

use std::hint::black_box;
use std::io::BufRead;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use target_runtime::{chan, spawn, yield_now, Builder};

static USR1: AtomicU64 = AtomicU64::new(0);
static MAX_GAP_NS: AtomicU64 = AtomicU64::new(0);
/// A CLOCK_MONOTONIC time the test writes into this process (0: none).
static MARK_NS: AtomicU64 = AtomicU64::new(0);
/// Largest part of a busy task's gap that lies after `MARK_NS`.
static AFTER_MARK_NS: AtomicU64 = AtomicU64::new(0);

fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

extern "C" fn on_usr1(_: libc::c_int) {
    USR1.fetch_add(1, Relaxed);
}

#[derive(Clone)]
struct Plan {
    workers: usize,
    busy: usize,
    parked: usize,
    sleepers: usize,
    die_after_us: Option<u64>,
    die_how: String,
}

fn parse() -> Plan {
    let mut p = Plan {
        workers: 2,
        busy: 4,
        parked: 64,
        sleepers: 4,
        die_after_us: None,
        die_how: "exit".into(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args
            .get(i + 1)
            .unwrap_or_else(|| panic!("victim: {} needs a value", args[i]));
        let num = || -> usize {
            v.parse()
                .unwrap_or_else(|_| panic!("victim: {} needs a number", args[i]))
        };
        match args[i].as_str() {
            "--workers" => p.workers = num(),
            "--busy" => p.busy = num(),
            "--parked" => p.parked = num(),
            "--sleepers" => p.sleepers = num(),
            "--die-after-us" => p.die_after_us = Some(num() as u64),
            "--die-how" => p.die_how = v.clone(),
            other => panic!("victim: unknown flag {other}"),
        }
        i += 2;
    }
    p
}

#[inline(never)]
fn busy_task(progress: Arc<AtomicU64>) {
    let mut x = 0u64;
    let mut last = mono_ns();
    loop {
        for _ in 0..200 {
            x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let now = mono_ns();
        MAX_GAP_NS.fetch_max(now.saturating_sub(last), Relaxed);
        let mark = MARK_NS.load(Relaxed);
        if mark != 0 && now > mark {
            AFTER_MARK_NS.fetch_max(now - last.max(mark), Relaxed);
        }
        last = now;
        progress.fetch_add(1, Relaxed);
        yield_now();
    }
}

#[inline(never)]
fn parked_task(req: chan::Receiver<u64>, rep: chan::Sender<u64>) {
    while let Ok(v) = req.recv() {
        if rep.send(v).is_err() {
            return;
        }
    }
}

#[inline(never)]
fn sleeper_task(progress: Arc<AtomicU64>) {
    loop {
        target_runtime::sleep(Duration::from_millis(1));
        progress.fetch_add(1, Relaxed);
    }
}

fn die(how: &str) -> ! {
    match how {
        "abort" => std::process::abort(),
        // SAFETY: signalling ourselves.
        "kill" => unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
            unreachable!()
        },
        _ => std::process::exit(3),
    }
}

fn main() {
    let plan = parse();
    // SAFETY: installs a handler that does one atomic add (async-signal-safe).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
    Builder::new()
        .workers(plan.workers)
        .run(move || serve(plan))
        .unwrap_or_else(|e| panic!("victim: {e}"));
}

fn serve(plan: Plan) {
    let (req_tx, req_rx) = chan::unbounded::<u64>();
    let (rep_tx, rep_rx) = chan::unbounded::<u64>();
    for _ in 0..plan.parked {
        let (rx, tx) = (req_rx.clone(), rep_tx.clone());
        spawn(move || parked_task(rx, tx));
    }
    let mut progress = Vec::new();
    for _ in 0..plan.busy {
        let p = Arc::new(AtomicU64::new(0));
        progress.push(p.clone());
        spawn(move || busy_task(p));
    }
    for _ in 0..plan.sleepers {
        let p = Arc::new(AtomicU64::new(0));
        progress.push(p.clone());
        spawn(move || sleeper_task(p));
    }
    while target_runtime::__private::waiting_tasks() < plan.parked {
        target_runtime::sleep(Duration::from_millis(1));
    }
    let tasks = plan.busy + plan.parked + plan.sleepers + 1;
    println!(
        "READY {} {:#x} {:#x}",
        std::process::id(),
        std::ptr::addr_of!(USR1) as usize,
        std::ptr::addr_of!(MARK_NS) as usize
    );
    if let Some(us) = plan.die_after_us {
        let how = plan.die_how.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_micros(us));
            die(&how);
        });
    }
    let mut seen: Vec<u64> = progress.iter().map(|p| p.load(Relaxed)).collect();
    loop {
        let line = target_runtime::blocking(|| {
            let mut s = String::new();
            let _ = std::io::stdin().lock().read_line(&mut s);
            s
        });
        let mut w = line.split_whitespace();
        match w.next() {
            Some("stats") => {
                let until = Instant::now() + Duration::from_secs(5);
                let stalled = loop {
                    let stalled = progress
                        .iter()
                        .zip(&seen)
                        .filter(|(p, &s)| p.load(Relaxed) == s)
                        .count();
                    if stalled == 0 || Instant::now() > until {
                        break stalled;
                    }
                    target_runtime::sleep(Duration::from_millis(1));
                };
                seen = progress.iter().map(|p| p.load(Relaxed)).collect();
                let live = target_runtime::__private::control()
                    .map_or(0, |cb| cb.live_tasks.load(Relaxed));
                MARK_NS.store(0, Relaxed);
                println!(
                    "STATS gap_us={} after_us={} stalled={stalled} live={live} tasks={tasks} usr1={}",
                    MAX_GAP_NS.swap(0, Relaxed) / 1000,
                    AFTER_MARK_NS.swap(0, Relaxed) / 1000,
                    USR1.load(Relaxed)
                );
            }
            Some("wake") => {
                let k: u64 = w.next().and_then(|k| k.parse().ok()).unwrap_or(1);
                for v in 0..k {
                    req_tx.send(v).unwrap();
                }
                let mut sum = 0;
                for _ in 0..k {
                    sum += rep_rx.recv().unwrap();
                }
                assert_eq!(sum, k * k.saturating_sub(1) / 2, "victim: wrong replies");
                println!("WOKE {k}");
            }
            _ => break,
        }
    }
    std::process::exit(0);
}
