//! A target whose tasks never hold still, for gprof-rs's invariant tests (DESIGN section
//! 4, invariants 1-3).
//!
//! ```text
//! churn [--workers W] [--phase N] [--spawners S] [--inflight M] [--nap E]
//! ```
//!
//! * `--phase N` (default 200): N *phase tasks*. Each loops forever over phases
//!   `k = 0, 1, 2, ...`: it reads the profile session's generation `G` from the shared
//!   control block, picks a depth `d = depth_of(k, id)` (1..=12), logs `(G, k, d)`,
//!   recurses `d` levels of [`phase_frame`] and at the leaf yields (or, one phase in
//!   eight, sleeps 200 us; with `--nap E`, one phase in E naps 20 ms instead, long
//!   enough to stay parked across several snapshots), then unwinds and checks the
//!   recursion's result.
//!
//!   The runtime records a task on its profile barrier *before* the task runs again, so
//!   a snapshot of generation `g` must show a phase task that was not running at STW 1
//!   exactly `d_k` frames of `phase_frame` deep, where `k` is the last phase whose
//!   logged `G` is smaller than `g`: the read of phase `k + 1` happens after the yield of
//!   phase `k` returned, which is after STW 1.
//! * `--spawners S` (default 4): S tasks that spawn short-lived children as fast as they
//!   can (at most `--inflight M`, default 128, alive at once). A child computes a value
//!   from its input, yields once or twice, adds the value to a shared sum and exits.
//!
//! It prints `READY <pid>` once every phase task has logged a phase and every spawner
//! has spawned, then reads lines from stdin:
//!
//! * `dump`: stop the spawners, wait for their children, then print
//!   `CHURN <spawned> <completed> <expected_sum> <sum>`, one line
//!   `PHASE <id> <phases> <errors> <G>:<k>:<d> ...` per phase task (for each generation
//!   it saw, the last phase that read it and that phase's depth), and `END`.
//! * `exit` or end of input: exit 0.

use std::hint::black_box;
use std::io::BufRead;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use target_runtime::{spawn, yield_now, Builder, JoinHandle};

#[derive(Clone, Copy)]
struct Plan {
    workers: usize,
    phase: usize,
    spawners: usize,
    inflight: u64,
    /// One phase in `nap` sleeps 20 ms (0: never).
    nap: u64,
}

fn parse() -> Plan {
    let mut p = Plan {
        workers: 2,
        phase: 200,
        spawners: 4,
        inflight: 128,
        nap: 0,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v: usize = args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("churn: {} needs a number", args[i]));
        match args[i].as_str() {
            "--workers" => p.workers = v,
            "--phase" => p.phase = v,
            "--spawners" => p.spawners = v,
            "--inflight" => p.inflight = v as u64,
            "--nap" => p.nap = v as u64,
            other => panic!("churn: unknown flag {other}"),
        }
        i += 2;
    }
    p
}

/// Depth of phase `k` of task `id`: 1..=12, changing every phase.
fn depth_of(k: u64, id: u64) -> u32 {
    1 + ((k.wrapping_mul(7).wrapping_add(id)) % 12) as u32
}

/// What one phase task has done, read by `dump`.
#[derive(Default)]
struct Log {
    /// Phases completed.
    phases: u64,
    /// Recursions that returned a wrong value (a corrupted stack would show here).
    errors: u64,
    /// `(G, k, d)`: for each session generation the task read, the last phase `k` that
    /// read it and that phase's depth. Generations only grow.
    entries: Vec<(u64, u64, u32)>,
}

fn generation() -> u64 {
    let cb = target_runtime::__private::control().expect("the runtime has started");
    gprof_abi::session::generation(cb.session.load(SeqCst))
}

/// How a phase waits at its deepest frame.
#[derive(Clone, Copy)]
enum Leaf {
    Yield,
    Sleep,
    Nap,
}

/// One level of a phase's recursion. Returns `depth + (depth - 1) + ... + 1`. The local
/// whose address escapes keeps every level a real frame (no tail-call or loop rewrite).
#[inline(never)]
fn phase_frame(depth: u32, leaf: Leaf) -> u64 {
    let mut here = u64::from(depth);
    black_box(&mut here);
    let below = if depth > 1 {
        phase_frame(depth - 1, leaf)
    } else {
        match leaf {
            Leaf::Yield => yield_now(),
            Leaf::Sleep => target_runtime::sleep(Duration::from_micros(200)),
            Leaf::Nap => target_runtime::sleep(Duration::from_millis(20)),
        }
        0
    };
    black_box(here) + below
}

#[inline(never)]
fn phase_main(id: u64, log: Arc<Mutex<Log>>, started: Arc<AtomicU64>, nap: u64) {
    let mut k = 0u64;
    loop {
        let g = generation();
        let d = depth_of(k, id);
        {
            let mut l = log.lock().unwrap();
            match l.entries.last_mut() {
                Some(e) if e.0 == g => *e = (g, k, d),
                _ => l.entries.push((g, k, d)),
            }
        }
        if k == 0 {
            started.fetch_add(1, SeqCst);
        }
        let leaf = if nap > 0 && (k + id) % nap == 0 {
            Leaf::Nap
        } else if (k + id) % 8 == 0 {
            Leaf::Sleep
        } else {
            Leaf::Yield
        };
        let got = phase_frame(d, leaf);
        let want = u64::from(d) * (u64::from(d) + 1) / 2;
        let mut l = log.lock().unwrap();
        l.phases += 1;
        if got != want {
            l.errors += 1;
        }
        drop(l);
        k += 1;
    }
}

/// Shared counters of the churn spawners and their children.
#[derive(Default)]
struct Churn {
    stop: AtomicU64,
    inflight: AtomicU64,
    spawned: AtomicU64,
    completed: AtomicU64,
    expected_sum: AtomicU64,
    sum: AtomicU64,
    started: AtomicU64,
}

fn work(x: u64) -> u64 {
    let mut h = x ^ 0x9E37_79B9_7F4A_7C15;
    for _ in 0..16 {
        h = black_box(
            h.wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407),
        );
    }
    h >> 16
}

#[inline(never)]
fn churn_child(x: u64, c: &Churn) {
    let v = work(x);
    yield_now();
    if x % 2 == 0 {
        yield_now();
    }
    c.sum.fetch_add(v, SeqCst);
    c.completed.fetch_add(1, SeqCst);
    c.inflight.fetch_sub(1, SeqCst);
}

#[inline(never)]
fn spawner_main(index: u64, c: Arc<Churn>, max_inflight: u64) {
    let mut i = 0u64;
    while c.stop.load(SeqCst) == 0 {
        if c.inflight.load(SeqCst) >= max_inflight {
            yield_now();
            continue;
        }
        let x = (index << 40) | i;
        c.inflight.fetch_add(1, SeqCst);
        c.spawned.fetch_add(1, SeqCst);
        c.expected_sum.fetch_add(work(x), SeqCst);
        let c2 = c.clone();
        drop(spawn(move || churn_child(x, &c2)));
        if i == 0 {
            c.started.fetch_add(1, SeqCst);
        }
        i += 1;
        if i % 4 == 0 {
            yield_now();
        }
    }
}

fn main() {
    let plan = parse();
    Builder::new()
        .workers(plan.workers)
        .run(move || serve(plan))
        .unwrap_or_else(|e| panic!("churn: {e}"));
}

fn serve(plan: Plan) {
    let started = Arc::new(AtomicU64::new(0));
    let mut phases: Vec<(u64, Arc<Mutex<Log>>)> = Vec::new();
    for _ in 0..plan.phase {
        let log = Arc::new(Mutex::new(Log::default()));
        let (l2, s2) = (log.clone(), started.clone());
        let nap = plan.nap;
        let h = spawn(move || phase_main(target_runtime::task::current_id(), l2, s2, nap));
        phases.push((h.id(), log));
    }
    let churn = Arc::new(Churn::default());
    let spawners: Vec<JoinHandle<()>> = (0..plan.spawners as u64)
        .map(|i| {
            let c = churn.clone();
            spawn(move || spawner_main(i, c, plan.inflight))
        })
        .collect();
    while started.load(SeqCst) < plan.phase as u64
        || churn.started.load(SeqCst) < plan.spawners as u64
    {
        target_runtime::sleep(Duration::from_millis(1));
    }
    println!("READY {}", std::process::id());
    let mut spawners = Some(spawners);
    loop {
        let line = target_runtime::blocking(|| {
            let mut s = String::new();
            let _ = std::io::stdin().lock().read_line(&mut s);
            s
        });
        match line.trim() {
            "dump" => {
                churn.stop.store(1, SeqCst);
                for h in spawners.take().unwrap_or_default() {
                    let _ = h.join();
                }
                while churn.inflight.load(SeqCst) != 0 {
                    target_runtime::sleep(Duration::from_millis(1));
                }
                dump(&churn, &phases);
            }
            "" | "exit" => std::process::exit(0),
            other => eprintln!("churn: unknown command {other:?}"),
        }
    }
}

fn dump(c: &Churn, phases: &[(u64, Arc<Mutex<Log>>)]) {
    use std::fmt::Write as _;
    let mut out = format!(
        "CHURN {} {} {} {}\n",
        c.spawned.load(SeqCst),
        c.completed.load(SeqCst),
        c.expected_sum.load(SeqCst),
        c.sum.load(SeqCst)
    );
    for (id, log) in phases {
        let l = log.lock().unwrap();
        let _ = write!(out, "PHASE {id} {} {}", l.phases, l.errors);
        for (g, k, d) in &l.entries {
            let _ = write!(out, " {g}:{k}:{d}");
        }
        out.push('\n');
    }
    out.push_str("END\n");
    print!("{out}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
}
