//! Moving blocking calls off the workers.
//!
//! A task that makes a blocking system call (file I/O, DNS, a C library that sleeps)
//! blocks the worker thread under it, and with it every task queued on that worker.
//! [`blocking`] runs the call on a separate thread and parks only the task.

use std::sync::{Arc, Mutex};

/// Run `f` on a helper thread and park the calling task until it returns. The task
/// shows as waiting on I/O in profiles meanwhile.
///
/// # Panics
///
/// Outside a task; re-raises a panic of `f`.
pub fn blocking<F, T>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let slot: Arc<Mutex<Option<std::thread::Result<T>>>> = Arc::new(Mutex::new(None));
    let waiter = crate::park::prepare_park();
    let s2 = slot.clone();
    std::thread::Builder::new()
        .name("target-runtime-blocking".into())
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            *s2.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            waiter.wake();
        })
        .expect("target-runtime: cannot start a thread for a blocking call");
    crate::park::park(gprof_abi::WaitReason::IO);
    loop {
        if let Some(r) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return r.unwrap_or_else(|p| std::panic::resume_unwind(p));
        }
        // Only a stale waiter racing can get us here (see `park::park`); the helper's
        // wake is still to come, so poll politely until the result lands.
        crate::yield_now();
    }
}
