//! Worker assists (abi docs, "Worker assists"): while a profiler asks for it, a worker
//! about to run a task first records a batch of parked ones into the arena.
//!
//! Why the workers: when every worker is busy, the profiler's walk (or the helper
//! thread's) is one more runnable thread than there are CPUs, and the kernel makes some
//! running task wait for it: on 2 vCPUs that was the task the benchmark's probe ran in
//! about half the snapshots, for 1.5-4 ms at 1k tasks (sched_switch traces,
//! BENCHMARKS.md). Go's profile goroutine has no such cost because it shares its
//! scheduler with the goroutines it records; an assist does the same here, a batch at
//! a time, between two tasks of a worker that switches anyway. A worker that never
//! switches (a task that never yields) never assists, and the profiler walks the slots
//! itself once it sees no progress.
//!
//! Only called while a session is active, on the path that already checks the barrier:
//! a switch with no profile active costs nothing more.

use crate::profile::{record_held, Recorded};
use crate::region::{self, Region};
use crate::shared_futex;
use gprof_abi::{assist, prof, session, ControlBlock, Hold};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};

/// Slots a worker visits per assist: ~10-20 us of copying when they hold parked tasks
/// (a record is a `memcpy` of ~600 bytes of stack, ~0.15 us, plus a fresh arena page
/// every few records on a first snapshot). The task the worker is about to run waits
/// that long, once per switch, only while the session lasts.
const BATCH: u64 = 64;

/// Visit one batch of the slots the profiler asked the workers to record, if session
/// `s` (the word the caller just loaded) asked for it and slots are left.
pub(crate) fn assist(cb: &ControlBlock, s: u64) {
    if cb.assist_session.load(Acquire) != s {
        return;
    }
    let g = session::generation(s);
    let region = region::get();
    let end = cb.assist_end.load(Relaxed).min(u64::from(region::SLOT_CAP));
    let Some(first) = take(&cb.assist_next, g, |n| {
        (n < end).then(|| (n + BATCH).min(end))
    }) else {
        return;
    };
    let last = (first + BATCH).min(end);
    let Some(left) = visit(region, cb, s, first as u32..last as u32) else {
        // The session ended under us: nobody counts on this batch any more.
        return;
    };
    if left != 0 {
        cb.assist_left.fetch_add(left, Relaxed);
    }
    let n = last - first;
    if let Some(done) = take(&cb.assist_done, g, |d| Some(d + n)) {
        if done + n >= end {
            cb.assist_wake.fetch_add(1, Release);
            shared_futex::wake(&cb.assist_wake);
        }
    }
}

/// CAS the count in `word` (tagged with generation `g`, abi `assist`) to `next(count)`;
/// the count it replaced, or `None` if the word is another session's or `next` declines.
/// AcqRel: a profiler that reads the count reads the records and `assist_left` before it.
fn take(word: &AtomicU64, g: u64, next: impl Fn(u64) -> Option<u64>) -> Option<u64> {
    let mut w = word.load(Relaxed);
    loop {
        if !assist::is_generation(w, g) {
            return None;
        }
        let n = assist::count(w);
        let to = assist::pack(g, next(n)?);
        match word.compare_exchange_weak(w, to, AcqRel, Relaxed) {
            Ok(_) => return Some(n),
            Err(now) => w = now,
        }
    }
}

/// Record every task in `slots` that session `s` has not recorded yet; the number of
/// slots left neither recorded nor free, or `None` if the session ended first.
fn visit(region: &Region, cb: &ControlBlock, s: u64, slots: std::ops::Range<u32>) -> Option<u32> {
    let g = session::generation(s);
    let in_progress = prof::pack(g, prof::IN_PROGRESS);
    let satisfied = prof::pack(g, prof::SATISFIED);
    let mut left = 0;
    for i in slots {
        if cb.session.load(Acquire) != s {
            return None;
        }
        let slot = region.slot(i);
        let was = match slot.try_hold(g) {
            Hold::Held { was } => was,
            // The spawner decides in a moment whether the task predates STW 1; the
            // profiler's walk waits for that.
            Hold::Unborn => {
                left += 1;
                continue;
            }
            Hold::No => {
                // Free, recorded, or held by a runtime thread that is recording it
                // into the arena (only runtime threads hold while workers assist: the
                // profiler is not walking, and batches do not overlap).
                let p = slot.prof.load(Acquire);
                if slot.task_id.load(Acquire) != 0 && p != satisfied && p != in_progress {
                    left += 1;
                }
                continue;
            }
        };
        // Not running (a running task is SATISFIED since STW 1 or its barrier), so it
        // cannot exit under the hold; a slot freed between the two loads is given back.
        let id = slot.task_id.load(Acquire);
        if id == 0 {
            let _ = slot
                .prof
                .compare_exchange(in_progress, was, SeqCst, Relaxed);
            continue;
        }
        // Given back (arena full): the profiler's walk takes it. Lost: a later session
        // took it, and this one has ended.
        if record_held(cb, i, id, slot, g, was) != Recorded::Yes {
            left += 1;
        }
    }
    Some(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_is_taken_only_in_its_own_generation() {
        let word = AtomicU64::new(assist::pack(7, 0));
        let end = 100;
        let claim = |n: u64| (n < end).then(|| (n + BATCH).min(end));
        assert_eq!(take(&word, 7, claim), Some(0));
        assert_eq!(take(&word, 7, claim), Some(BATCH));
        // Handed out: nothing more, and the word is left alone.
        assert_eq!(take(&word, 7, claim), None);
        assert_eq!(word.load(Relaxed), assist::pack(7, end));
        // A worker held up since session 6 neither claims nor counts in session 7.
        assert_eq!(take(&word, 6, |n| Some(n + 1)), None);
        assert_eq!(word.load(Relaxed), assist::pack(7, end));
        // Generations compare in the 32 bits the word keeps.
        let wrapped = AtomicU64::new(assist::pack(7 + (1 << 32), 3));
        assert_eq!(take(&wrapped, 7, |n| Some(n + 1)), Some(3));
    }
}
