//! Parking and waking tasks: the one primitive every blocking operation is built on.
//!
//! The protocol (Go's `gopark`/`goready`, made safe against wake-before-park):
//!
//! ```text
//! let w = park::prepare_park();       // a waiter for the *next* park of this task
//! { lock queue; push w.clone(); unlock }
//! park::park(WaitReason::CHAN_RECV);  // returns once some clone of `w` was woken
//! ```
//!
//! A wake that lands between `prepare_park` and `park` is not lost: `park` then returns
//! at once. Clones of one waiter may sit in several queues (select); exactly one
//! `wake` wins, the others return `false`.
//!
//! The task is published to the run queues only after it has switched away
//! (research/runtime.md: publishing earlier lets two workers run one stack).

use crate::sched::{self, Action};
use crate::task::{run_state, TaskRef};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};

/// A handle that can wake one park of one task. Clones share the wake-up: exactly one
/// `wake` among them succeeds.
#[derive(Clone)]
pub(crate) struct Waiter {
    task: TaskRef,
    token: u64,
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Waiter(task {}, token {})", self.task.id, self.token)
    }
}

impl Waiter {
    /// Wake the task if this waiter's park is still pending. Returns true for the one
    /// call that woke it. Never blocks; callable from any thread.
    pub(crate) fn wake(&self) -> bool {
        let t = &self.task;
        if t.park_token
            .compare_exchange(self.token, self.token + 1, SeqCst, Relaxed)
            .is_err()
        {
            return false;
        }
        // Only a swap that finds PARKED schedules: the scheduler sets PARKED once, after
        // the switch away, so the task can never be queued twice.
        if t.run_state.swap(run_state::NOTIFIED, SeqCst) == run_state::PARKED {
            sched::schedule_woken(t.clone());
        }
        true
    }
}

/// A waiter for the next park of the calling task. Waiters from earlier parks go stale.
///
/// # Panics
///
/// Outside a task.
pub(crate) fn prepare_park() -> Waiter {
    sched::with_current_task("park", |t| {
        let token = t.park_token.fetch_add(1, SeqCst) + 1;
        // SAFETY: we are the running task.
        unsafe { t.owned().prepared_token = token };
        Waiter {
            // SAFETY: the running task is alive; bump its count for the waiter.
            task: unsafe { clone_ref(t) },
            token,
        }
    })
}

/// # Safety
///
/// `t` must be a task kept alive by an `Arc` (every task is).
unsafe fn clone_ref(t: &crate::task::Task) -> TaskRef {
    let p = t as *const crate::task::Task;
    // SAFETY: `p` came from Arc::as_ptr of a live Arc (see `run_task`).
    unsafe {
        std::sync::Arc::increment_strong_count(p);
        std::sync::Arc::from_raw(p)
    }
}

/// Switch away until a clone of the waiter from the matching [`prepare_park`] is woken
/// (or return at once if it already was). May, rarely, return without a wake when a
/// stale waiter races: callers re-check their condition in a loop.
pub(crate) fn park(reason: u32) {
    let parked = sched::with_current_task("park", |t| {
        let slot = t.slot();
        slot.wait_reason.store(reason, Relaxed);
        slot.wait_since_ns
            .store(crate::timer::coarse_now_ns(), Relaxed);
        t.run_state.store(run_state::PARKING, SeqCst);
        // SAFETY: we are the running task.
        let prepared = unsafe { t.owned().prepared_token };
        if t.park_token.load(SeqCst) != prepared {
            // Woken between prepare_park and now: no switch needed.
            t.run_state.store(run_state::RUNNING, Relaxed);
            slot.wait_reason.store(0, Relaxed);
            return false;
        }
        true
    });
    if parked {
        sched::switch_out(Action::Park);
    }
}
