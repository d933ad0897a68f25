//! Timers (`sleep`) and the runtime's housekeeping thread.
//!
//! One thread per runtime keeps a heap of deadlines and sleeps on a condition variable
//! until the earliest one. Condition variables wait in `futex`, which the kernel restarts
//! transparently after a ptrace stop (DESIGN section 6), and the deadline is absolute
//! (`Instant`), so a profiler's pause can delay a timer by the pause but never make it
//! fire early or lose it.
//!
//! While a profile session is active the same thread runs the profile watchdog every
//! [`WATCHDOG_PERIOD`]: a profiler that died or stalled never wedges the runtime.

use crate::park::{self, Waiter};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// How often the watchdog looks at an active profile session.
pub(crate) const WATCHDOG_PERIOD: Duration = Duration::from_millis(10);

struct Entry {
    at: Instant,
    seq: u64,
    waiter: Waiter,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

#[derive(Default)]
struct State {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    stop: bool,
}

/// The timer heap of one runtime.
pub(crate) struct Timers {
    state: Mutex<State>,
    cond: Condvar,
    /// Set when a profile session was seen, so the thread starts its watchdog ticks.
    pub(crate) watch: AtomicBool,
}

impl Timers {
    pub(crate) fn new() -> Self {
        Timers {
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
            watch: AtomicBool::new(false),
        }
    }

    fn add(&self, at: Instant, waiter: Waiter) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.seq += 1;
        let seq = s.seq;
        let earliest = s.heap.peek().is_none_or(|Reverse(e)| at < e.at);
        s.heap.push(Reverse(Entry { at, seq, waiter }));
        drop(s);
        if earliest {
            self.cond.notify_one();
        }
    }

    /// Nudge the thread (a profile session started).
    pub(crate) fn poke(&self) {
        // Called on every switch while a session is active: a plain load keeps the cache
        // line shared between workers; only the first poke of a session writes it.
        if !self.watch.load(Ordering::Relaxed) && !self.watch.swap(true, Ordering::SeqCst) {
            self.cond.notify_one();
        }
    }

    pub(crate) fn stop(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
        self.cond.notify_one();
    }

    /// Body of the timer thread.
    pub(crate) fn run(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if s.stop {
                // Sleepers of a runtime that ended are never resumed.
                s.heap.clear();
                return;
            }
            let now = Instant::now();
            let mut due = Vec::new();
            while let Some(Reverse(e)) = s.heap.peek() {
                if e.at > now {
                    break;
                }
                let Reverse(e) = s.heap.pop().expect("peeked");
                due.push(e.waiter);
            }
            if !due.is_empty() {
                drop(s);
                for w in due {
                    w.wake();
                }
                s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                continue;
            }
            let mut wait = s.heap.peek().map(|Reverse(e)| e.at - now);
            if self.watch.load(Ordering::SeqCst) {
                drop(s);
                if !crate::profile::watchdog_tick() {
                    self.watch.store(false, Ordering::SeqCst);
                }
                s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                wait = Some(wait.map_or(WATCHDOG_PERIOD, |w| w.min(WATCHDOG_PERIOD)));
            }
            s = match wait {
                Some(d) => {
                    self.cond
                        .wait_timeout(s, d)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.cond.wait(s).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }
}

/// CLOCK_MONOTONIC_COARSE in nanoseconds: a few ns to read, a few ms of resolution,
/// the same time base as CLOCK_MONOTONIC. Used for wait-since stamps, which a profile
/// shows in minutes.
pub(crate) fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_MONOTONIC in nanoseconds.
pub(crate) fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Put the calling task to sleep for at least `d`.
///
/// # Panics
///
/// Outside a task.
pub fn sleep(d: Duration) {
    let deadline = Instant::now() + d;
    sleep_until(deadline)
}

/// Put the calling task to sleep until `deadline`.
///
/// # Panics
///
/// Outside a task.
pub fn sleep_until(deadline: Instant) {
    let shared = crate::sched::current_shared("sleep");
    while Instant::now() < deadline {
        let w = park::prepare_park();
        shared.timers.add(deadline, w);
        park::park(gprof_abi::WaitReason::SLEEP);
    }
}
