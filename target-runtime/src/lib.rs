//! A Go-like green-thread runtime whose every task can be snapshotted from outside the
//! process by `gprof-rs`.
//!
//! Tasks are stackful (each has its own mmap'd stack with a guard page) and run on an
//! M:N work-stealing scheduler over N worker threads. Blocking operations (channels,
//! mutexes, wait groups, sleeps, joins) park the task, never the thread.
//!
//! ```no_run
//! use target_runtime::{chan, spawn};
//!
//! let sum = target_runtime::run(|| {
//!     let (tx, rx) = chan::bounded(0);
//!     for i in 0..10u64 {
//!         let tx = tx.clone();
//!         spawn(move || tx.send(i).unwrap());
//!     }
//!     drop(tx);
//!     let mut sum = 0;
//!     while let Ok(v) = rx.recv() {
//!         sum += v;
//!     }
//!     sum
//! });
//! assert_eq!(sum, 45);
//! ```
//!
//! # Things to know
//!
//! * **Thread-locals move under you.** A task may resume on another worker after any
//!   park or yield, so `thread_local!` values are per worker, not per task. Use
//!   [`task_local!`] for per-task state.
//! * **Blocking system calls block a worker**, and with it the tasks queued there. Wrap
//!   them in [`blocking()`], which runs the call on a helper thread and parks only the task.
//! * **Stacks do not grow.** The default is [`DEFAULT_STACK_SIZE`] of address space
//!   (memory is used only as pages are touched); a task that overflows it hits a guard
//!   page and the process aborts with `task N (name) overflowed its S-byte stack`.
//!   Signal handlers run on the interrupted task's stack, which is why stacks are at
//!   least [`MIN_STACK_SIZE`].
//! * **Profiling.** The task table lives in a sealed memfd exported through the
//!   `GPROF_RT_DESCRIPTOR` symbol (see the `gprof-abi` crate). When no profile is
//!   running, the cost to the scheduler is one relaxed load per task switch.
#![deny(missing_docs)]

mod arch;
mod blocking;
pub mod chan;
pub mod labels;
mod local;
mod overflow;
mod park;
mod profile;
mod profile_assist;
mod profile_helper;
mod region;
mod rt;
mod sched;
pub mod shared_futex;
mod stack;
pub mod sync;
pub mod task;
mod timer;

pub use blocking::blocking;
pub use local::LocalKey;
pub use rt::{run, BuildError, Builder};
pub use sched::yield_now;
pub use stack::{DEFAULT_STACK_SIZE, MIN_STACK_SIZE};
pub use task::{spawn, JoinHandle};
pub use timer::{sleep, sleep_until};

/// Support for test and fixture programs: addresses and counters gprof-rs tests check.
#[doc(hidden)]
pub mod __private {
    /// Address of the switch's resume point.
    pub fn resume_pc() -> u64 {
        crate::arch::resume_pc()
    }
    /// Address of the task entry trampoline.
    pub fn task_entry_pc() -> u64 {
        crate::arch::task_entry_pc()
    }
    /// Tasks of this process now parked (state waiting), counted from the shared table.
    /// For fixtures that must not announce themselves before every task has parked.
    pub fn waiting_tasks() -> usize {
        let Some(r) = crate::region::try_get() else {
            return 0;
        };
        let hwm = r
            .control()
            .slot_hwm
            .load(std::sync::atomic::Ordering::SeqCst);
        (0..hwm as u32)
            .map(|i| r.slot(i))
            .filter(|s| {
                s.task_id.load(std::sync::atomic::Ordering::SeqCst) != 0
                    && s.state.load(std::sync::atomic::Ordering::SeqCst)
                        == gprof_abi::TaskState::WAITING
            })
            .count()
    }
    /// Call `f` through three frames of C compiled with `-O2 -fomit-frame-pointer`
    /// (csrc/nofp.c), so that its stack has frames only DWARF CFI can unwind.
    pub fn call_through_c(f: &mut dyn FnMut()) {
        extern "C" {
            fn gprof_rt_c_middle(
                cb: extern "C" fn(*mut std::ffi::c_void),
                arg: *mut std::ffi::c_void,
                depth: std::ffi::c_long,
            ) -> std::ffi::c_long;
        }
        extern "C" fn trampoline(arg: *mut std::ffi::c_void) {
            // SAFETY: `arg` is the `&mut &mut dyn FnMut()` passed below, alive for the call.
            let f = unsafe { &mut *(arg as *mut &mut dyn FnMut()) };
            f();
        }
        let mut f = f;
        // SAFETY: the C function calls `trampoline(arg)` once, synchronously, with the
        // pointer it was given; `f` outlives the call.
        unsafe {
            gprof_rt_c_middle(
                trampoline,
                &mut f as *mut &mut dyn FnMut() as *mut std::ffi::c_void,
                2,
            )
        };
    }
    /// The control block of this process's region, if a runtime has started.
    pub fn control() -> Option<&'static gprof_abi::ControlBlock> {
        crate::region::try_get().map(|r| r.control())
    }
}
