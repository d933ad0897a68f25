//! A target with a known population of tasks, for gprof-rs's integration tests.
//!
//! ```text
//! fixture [--workers W] [--recv N] [--sleep N] [--mutex N] [--join N] [--labeled N] [--busy N]
//! ```
//!
//! * `--recv N`: N tasks blocked in `chan receive` three calls deep:
//!   `recv_outer -> recv_middle -> recv_leaf -> Receiver::recv`.
//! * `--sleep N`: N tasks in `sleep_leaf -> sleep` for an hour.
//! * `--mutex N`: N tasks in `mutex_leaf -> Mutex::lock` on a mutex main holds.
//! * `--join N`: N tasks in `join_leaf -> JoinHandle::join` on a task that waits in
//!   `joined_target -> recv` (those N targets are also tasks).
//! * `--labeled N`: N tasks like `--recv` but inside `labels::with([("group",
//!   "labeled"), ("tier", "gold")])`, in `labeled_leaf`.
//! * `--busy N`: N tasks spinning in `busy_leaf`, yielding now and then.
//! * `--cgo N`: N tasks in `cgo_caller -> [3 C frames built without frame pointers]
//!   -> cgo_leaf -> Receiver::recv`.
//!
//! It prints `READY <pid>` once every parked task has really switched away (it counts
//! tasks in the waiting state through the runtime's own table), then reads commands on
//! stdin, one a line:
//!
//! * `park-late N`: spawn N more tasks that wait in `late_leaf -> Receiver::recv`, and
//!   print `PARKED` once they have all switched away (their waits start after READY).
//! * `release`: close the channel the `--recv` (and join, labeled, cgo, late) tasks wait
//!   on and print `RELEASED` once they have all returned (each must pass the profile
//!   barrier to run).
//! * anything else (`exit`), or end of input, ends the process.

use std::hint::black_box;
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use target_runtime::{chan, labels, spawn, sync::Mutex, Builder};

#[derive(Default, Clone, Copy)]
struct Plan {
    workers: usize,
    recv: usize,
    sleep: usize,
    mutex: usize,
    join: usize,
    labeled: usize,
    busy: usize,
    cgo: usize,
}

fn parse() -> Plan {
    let mut p = Plan {
        workers: 2,
        ..Plan::default()
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v: usize = args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("fixture: {} needs a number", args[i]));
        match args[i].as_str() {
            "--workers" => p.workers = v,
            "--recv" => p.recv = v,
            "--sleep" => p.sleep = v,
            "--mutex" => p.mutex = v,
            "--join" => p.join = v,
            "--labeled" => p.labeled = v,
            "--busy" => p.busy = v,
            "--cgo" => p.cgo = v,
            other => panic!("fixture: unknown flag {other}"),
        }
        i += 2;
    }
    p
}

#[inline(never)]
fn recv_leaf(rx: &chan::Receiver<u32>) -> u32 {
    black_box(rx.recv().unwrap_or(0))
}
#[inline(never)]
fn recv_middle(rx: &chan::Receiver<u32>) -> u32 {
    black_box(recv_leaf(rx)) + 1
}
#[inline(never)]
fn recv_outer(rx: chan::Receiver<u32>) -> u32 {
    black_box(recv_middle(&rx)) + 1
}
#[inline(never)]
fn sleep_leaf() {
    target_runtime::sleep(Duration::from_secs(3600));
    black_box(());
}
#[inline(never)]
fn mutex_leaf(m: &Mutex<u64>) {
    let mut g = m.lock();
    *g += 1;
    black_box(&*g);
}
#[inline(never)]
fn joined_target(rx: chan::Receiver<u32>) -> u32 {
    black_box(rx.recv().unwrap_or(4))
}
#[inline(never)]
fn join_leaf(h: target_runtime::JoinHandle<u32>) -> u32 {
    black_box(h.join().unwrap_or(0))
}
#[inline(never)]
fn labeled_leaf(rx: &chan::Receiver<u32>) -> u32 {
    black_box(rx.recv().unwrap_or(2))
}
#[inline(never)]
fn busy_leaf(stop: &AtomicBool) -> u64 {
    let mut x = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..10_000 {
            x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        target_runtime::yield_now();
    }
    x
}

#[inline(never)]
fn late_leaf(rx: &chan::Receiver<u32>) -> u32 {
    black_box(rx.recv().unwrap_or(0))
}

#[inline(never)]
fn cgo_leaf(rx: &chan::Receiver<u32>) -> u32 {
    // Distinct constants keep release builds from folding the identical leaves into one.
    black_box(rx.recv().unwrap_or(3))
}
#[inline(never)]
fn cgo_caller(rx: chan::Receiver<u32>) -> u32 {
    let mut out = 0;
    target_runtime::__private::call_through_c(&mut || out = cgo_leaf(&rx));
    black_box(out)
}

fn main() {
    let plan = parse();
    Builder::new()
        .workers(plan.workers)
        .run(move || serve(plan))
        .unwrap_or_else(|e| panic!("fixture: {e}"));
}

fn serve(plan: Plan) {
    let (tx, rx) = chan::unbounded::<u32>();
    let mut tx = Some(tx);
    let mut handles = Vec::new();
    for _ in 0..plan.recv {
        let rx = rx.clone();
        handles.push(spawn(move || recv_outer(rx)));
    }
    for _ in 0..plan.sleep {
        spawn(sleep_leaf);
    }
    let m = Arc::new(Mutex::new(0u64));
    let guard = m.lock();
    for _ in 0..plan.mutex {
        let m = m.clone();
        spawn(move || mutex_leaf(&m));
    }
    for _ in 0..plan.join {
        let rx = rx.clone();
        let target = spawn(move || joined_target(rx));
        spawn(move || join_leaf(target));
    }
    labels::with(&[("group", "labeled"), ("tier", "gold")], || {
        for _ in 0..plan.labeled {
            let rx = rx.clone();
            spawn(move || labeled_leaf(&rx));
        }
    });
    for _ in 0..plan.cgo {
        let rx = rx.clone();
        spawn(move || cgo_caller(rx));
    }
    let stop = Arc::new(AtomicBool::new(false));
    for _ in 0..plan.busy {
        let stop = stop.clone();
        spawn(move || busy_leaf(&stop));
    }
    let mut parked = plan.recv + plan.sleep + plan.mutex + 2 * plan.join + plan.labeled + plan.cgo;
    while target_runtime::__private::waiting_tasks() < parked {
        target_runtime::sleep(Duration::from_millis(1));
    }
    println!("READY {}", std::process::id());
    loop {
        let line = target_runtime::blocking(|| {
            let mut s = String::new();
            let _ = std::io::stdin().lock().read_line(&mut s);
            s
        });
        if line.trim() == "release" {
            drop(tx.take());
            // Everything that waited on the channel (recv, join, labeled, cgo, late) runs
            // to its end; the sleepers and the mutex waiters stay. Joining the --recv
            // tasks waits until each has really run (a woken task is runnable at once, but
            // runs only once the profile barrier lets it).
            parked = plan.sleep + plan.mutex;
            for h in handles.drain(..) {
                let _ = h.join();
            }
            println!("RELEASED");
            continue;
        }
        let Some(n) = line.trim().strip_prefix("park-late ") else {
            break;
        };
        let n: usize = n.trim().parse().expect("fixture: park-late N");
        for _ in 0..n {
            let rx = rx.clone();
            spawn(move || late_leaf(&rx));
        }
        parked += n;
        while target_runtime::__private::waiting_tasks() < parked {
            target_runtime::sleep(Duration::from_millis(1));
        }
        println!("PARKED");
    }
    stop.store(true, Ordering::Relaxed);
    drop(guard);
    drop(tx);
    std::process::exit(0);
}
