//! The target of the snapshot benchmark (`benches/snapshot.rs`,
//! `benches/snapshot-vs-go.sh`); `benches/go/snapshot_target.go` is its Go twin.
//!
//! ```text
//! bench_target --tasks N [--depth D] [--workers W] [--loaded]
//! ```
//!
//! * N tasks parked receiving on one channel, D (default 8) distinct functions deep:
//!   `park_1 -> park_2 -> ... -> park_D -> Receiver::recv`.
//! * A probe task that spins on the clock (the TSC, calibrated against CLOCK_MONOTONIC)
//!   and remembers the largest gap between two consecutive readings: the longest time
//!   its worker did not run it.
//!   It never yields, so it keeps one worker to itself.
//! * `--loaded`: two busy tasks per other worker, spinning in `busy_leaf` and yielding
//!   every ~20 µs, so that every worker is busy (the probe's and the others).
//!
//! It prints `READY <pid>` once all N tasks are parked (counted through the runtime's
//! own table), then reads commands on stdin, one per line, each answered with one line:
//!
//! * `wake`: the probe (and busy tasks) start spinning; the gap is reset. `ok`
//! * `sleep`: they stop spinning (sleep in 10 ms steps), so that another target on the
//!   same machine can be measured without competing for the CPUs. `ok`
//! * `reset`: forget the largest gap. `ok`
//! * `gap?`: `<largest gap> <largest gap inside a profile session> <session changes>`:
//!   ns since the last `reset`/`wake`. A session runs from STW 1 to STW 2; the probe
//!   sees its start and end through the control block's session word, which the tool
//!   changes only while the world is stopped.
//! * `probe?`: the kernel thread id of the worker the probe spins on (for the
//!   benchmark's `--sched-trace`).
//! * `exit` or end of input: exit.
//!
//! The command reader is a plain thread, not a task, so that answering never depends on
//! the scheduler while the probe holds a worker.

use gprof_abi::session;
use std::hint::black_box;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use target_runtime::{chan, spawn, Builder};

/// Largest gap seen by the probe since the last reset, ns.
static MAX_GAP: AtomicU64 = AtomicU64::new(0);
/// Largest gap inside a profile session: from the gap that holds STW 1 to the gap that
/// holds STW 2 (the one gap holding the single stop of `--mode stw`), ns.
static SESSION_GAP: AtomicU64 = AtomicU64::new(0);
/// Changes of the session word seen since the last reset (2 per concurrent snapshot,
/// 1 per `--mode stw` snapshot).
static SESSION_CHANGES: AtomicU64 = AtomicU64::new(0);
/// Kernel thread id of the worker the probe spins on (it keeps that worker while awake).
static PROBE_TID: AtomicU32 = AtomicU32::new(0);
/// Set by `reset`/`wake`; the probe restarts its clock and clears `MAX_GAP`.
static RESET: AtomicBool = AtomicBool::new(false);
/// Whether the probe and busy tasks spin.
static AWAKE: AtomicBool = AtomicBool::new(false);
/// Whether the probe has seen the last reset (so that `reset` can wait for it).
static RESET_SEEN: AtomicBool = AtomicBool::new(true);

struct Plan {
    tasks: usize,
    depth: usize,
    workers: usize,
    loaded: bool,
}

fn parse() -> Plan {
    let mut p = Plan {
        tasks: 1000,
        depth: 8,
        workers: 2,
        loaded: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = || -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("bench_target: {a} needs a number"))
        };
        match a.as_str() {
            "--tasks" => p.tasks = num(),
            "--depth" => p.depth = num(),
            "--workers" => p.workers = num(),
            "--loaded" => p.loaded = true,
            other => panic!("bench_target: unknown flag {other}"),
        }
    }
    assert!((1..=8).contains(&p.depth), "bench_target: --depth 1..=8");
    p
}

macro_rules! park_chain {
    ($($name:ident => $next:ident),* ; $last:ident) => {
        $(
            #[inline(never)]
            fn $name(rx: &chan::Receiver<u32>, depth: usize) -> u32 {
                if depth <= 1 {
                    return black_box(rx.recv().unwrap_or(0));
                }
                black_box($next(rx, depth - 1)) + 1
            }
        )*
        #[inline(never)]
        fn $last(rx: &chan::Receiver<u32>, _depth: usize) -> u32 {
            black_box(rx.recv().unwrap_or(0))
        }
    };
}
park_chain!(park_1 => park_2, park_2 => park_3, park_3 => park_4, park_4 => park_5,
            park_5 => park_6, park_6 => park_7, park_7 => park_8; park_8);

fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The probe's clock. On x86_64 the TSC, read inline, so that the probe's stack never
/// has a libc frame (`clock_gettime`): a snapshot that catches the probe running would
/// otherwise make the tool load libc's separate debug file to symbolize it, which is
/// a fixed cost unrelated to the task count. (Go's probe reads the vDSO from Go code.)
#[inline(always)]
fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: rdtsc has no preconditions.
    return unsafe { core::arch::x86_64::_rdtsc() };
    #[cfg(not(target_arch = "x86_64"))]
    return mono_ns();
}

/// Nanoseconds per tick, times 2^20, measured against CLOCK_MONOTONIC at start-up.
static NS_PER_TICK_Q20: AtomicU64 = AtomicU64::new(1 << 20);

fn calibrate() {
    let (t0, m0) = (ticks(), mono_ns());
    std::thread::sleep(Duration::from_millis(50));
    let (t1, m1) = (ticks(), mono_ns());
    let q = ((m1 - m0) as u128 * (1 << 20) / u128::from((t1 - t0).max(1))) as u64;
    NS_PER_TICK_Q20.store(q.max(1), Relaxed);
}

fn ticks_to_ns(t: u64) -> u64 {
    ((u128::from(t) * u128::from(NS_PER_TICK_Q20.load(Relaxed))) >> 20) as u64
}

#[inline(never)]
fn probe() {
    let cb = target_runtime::__private::control().expect("runtime region");
    loop {
        if !AWAKE.load(Relaxed) {
            target_runtime::sleep(Duration::from_millis(10));
            continue;
        }
        // SAFETY: gettid has no preconditions.
        PROBE_TID.store(unsafe { libc::syscall(libc::SYS_gettid) } as u32, Relaxed);
        let mut last = ticks();
        let mut word = cb.session.load(Relaxed);
        MAX_GAP.store(0, Relaxed);
        SESSION_GAP.store(0, Relaxed);
        SESSION_CHANGES.store(0, Relaxed);
        RESET.store(false, Relaxed);
        RESET_SEEN.store(true, Relaxed);
        let (mut max, mut in_session, mut boundary) = (0, false, false);
        while AWAKE.load(Relaxed) {
            let now = ticks();
            let w = cb.session.load(Relaxed);
            let gap = now.wrapping_sub(last);
            last = now;
            if gap > max {
                max = gap;
                MAX_GAP.store(ticks_to_ns(max), Relaxed);
            }
            // The session word changes only while the tool has the world stopped
            // (STW 1 sets a new generation, with ACTIVE in the concurrent mode; STW 2
            // clears ACTIVE). The gap in which a change shows up, or the next one if
            // the stop fell between the clock read and the load, holds that stop.
            let changed = w != word;
            if changed {
                word = w;
                SESSION_CHANGES.fetch_add(1, Relaxed);
                in_session = session::is_active(w);
            }
            if changed || boundary || in_session {
                SESSION_GAP.fetch_max(ticks_to_ns(gap), Relaxed);
            }
            boundary = changed;
            if RESET.load(Relaxed) {
                break;
            }
        }
    }
}

#[inline(never)]
fn busy_leaf() -> u64 {
    let mut x = 0u64;
    loop {
        if !AWAKE.load(Relaxed) {
            target_runtime::sleep(Duration::from_millis(10));
            continue;
        }
        // ~20 µs, on the TSC for the same reason as the probe.
        let limit = (20_000u64 << 20) / NS_PER_TICK_Q20.load(Relaxed);
        let t = ticks();
        while ticks().wrapping_sub(t) < limit {
            for _ in 0..100 {
                x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        target_runtime::yield_now();
    }
}

fn main() {
    let plan = parse();
    calibrate();
    let workers = plan.workers;
    Builder::new()
        .workers(workers)
        .run(move || serve(plan))
        .unwrap_or_else(|e| panic!("bench_target: {e}"));
}

fn serve(plan: Plan) {
    let (tx, rx) = chan::unbounded::<u32>();
    for _ in 0..plan.tasks {
        let rx = rx.clone();
        let depth = plan.depth;
        spawn(move || park_1(&rx, depth));
    }
    drop(rx);
    // (The count scans the whole task table: poll gently.)
    while target_runtime::__private::waiting_tasks() < plan.tasks {
        target_runtime::sleep(Duration::from_millis(20));
    }
    spawn(probe);
    if plan.loaded {
        for _ in 0..2 * plan.workers.saturating_sub(1).max(1) {
            spawn(busy_leaf);
        }
    }
    std::thread::Builder::new()
        .name("bench-commands".into())
        .spawn(commands)
        .expect("command thread");
    println!("READY {}", std::process::id());
    let _ = std::io::stdout().flush();
    // Keep the tasks' channel open for as long as the process lives.
    loop {
        target_runtime::sleep(Duration::from_secs(3600));
        black_box(&tx);
    }
}

fn reset() {
    RESET_SEEN.store(false, Relaxed);
    RESET.store(true, Relaxed);
    // The probe acknowledges within nanoseconds when it runs; do not wait forever if
    // it is asleep or descheduled.
    let t = std::time::Instant::now();
    while AWAKE.load(Relaxed) && !RESET_SEEN.load(Relaxed) && t.elapsed() < Duration::from_secs(1) {
        std::thread::yield_now();
    }
}

fn commands() {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let reply = match line.trim() {
            "wake" => {
                AWAKE.store(true, Relaxed);
                reset();
                "ok".to_string()
            }
            "sleep" => {
                AWAKE.store(false, Relaxed);
                "ok".to_string()
            }
            "reset" => {
                reset();
                "ok".to_string()
            }
            "gap?" => format!(
                "{} {} {}",
                MAX_GAP.load(Relaxed),
                SESSION_GAP.load(Relaxed),
                SESSION_CHANGES.load(Relaxed)
            ),
            "probe?" => PROBE_TID.load(Relaxed).to_string(),
            "exit" => break,
            other => format!("error: unknown command {other:?}"),
        };
        let _ = writeln!(out, "{reply}");
        let _ = out.flush();
    }
    std::process::exit(0);
}
