//! Starting and stopping a runtime.

use crate::sched::{self, Shared};
use crate::stack;
use crossbeam_deque::Worker as Deque;
use std::fmt;
use std::panic::Location;
use std::sync::Arc;

/// Why a runtime could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// `workers(0)` or more workers than the task table can describe.
    InvalidWorkers(String),
    /// The default stack size is out of range.
    InvalidStackSize(String),
    /// A thread or the main task could not be created.
    Io(String),
    /// `run` was called from inside a task.
    Nested,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::InvalidWorkers(m) | BuildError::InvalidStackSize(m) => {
                write!(f, "invalid runtime configuration: {m}")
            }
            BuildError::Io(m) => write!(f, "cannot start the runtime: {m}"),
            BuildError::Nested => write!(
                f,
                "target_runtime::run called from inside a task: spawn a task instead"
            ),
        }
    }
}

impl std::error::Error for BuildError {}

/// Configures and runs a runtime.
///
/// ```no_run
/// let answer = target_runtime::Builder::new()
///     .workers(2)
///     .stack_size(128 * 1024)
///     .run(|| 42)
///     .expect("valid configuration");
/// assert_eq!(answer, 42);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Builder {
    workers: Option<usize>,
    stack_size: Option<usize>,
}

impl Builder {
    /// Defaults: one worker per available CPU, [`crate::DEFAULT_STACK_SIZE`] stacks.
    pub fn new() -> Self {
        Builder::default()
    }

    /// Number of worker threads (at least 1, at most 256).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Default usable stack size of tasks, in bytes.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Run `f` as the main task and return its result once it ends. Tasks still alive
    /// then are abandoned, as goroutines are when `main` returns. A panic in the main
    /// task is re-raised here after the runtime has stopped.
    #[track_caller]
    pub fn run<F, T>(self, f: F) -> Result<T, BuildError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        if sched::in_task() {
            return Err(BuildError::Nested);
        }
        if shadow_stack_enabled() {
            return Err(BuildError::Io(
                "this thread runs with a CET shadow stack, which a user-space stack switch \
                 would break; run without user shadow stacks (glibc.cpu.x86_shstk=off)"
                    .into(),
            ));
        }
        let workers = match self.workers {
            None => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(256),
            Some(0) => {
                return Err(BuildError::InvalidWorkers(
                    "workers(0): a runtime needs at least one worker thread".into(),
                ))
            }
            Some(n) if n > gprof_abi::WORKER_CAP as usize => {
                return Err(BuildError::InvalidWorkers(format!(
                    "workers({n}): at most {} worker threads are supported",
                    gprof_abi::WORKER_CAP
                )))
            }
            Some(n) => n,
        };
        let stack = match self.stack_size {
            None => stack::DEFAULT_STACK_SIZE,
            Some(s) => stack::validate_size(s).map_err(BuildError::InvalidStackSize)?,
        };
        let shared = Shared::new(workers, stack);
        crate::profile_helper::ensure_started();
        let main = crate::task::spawn_on(
            &shared,
            crate::task::Builder::new().name("main"),
            f,
            0,
            Arc::new(Vec::new()),
            Location::caller(),
            0,
        )
        .map_err(|e| BuildError::Io(e.to_string()))?;

        let deques: Vec<Deque<crate::task::TaskRef>> =
            (0..workers).map(|_| Deque::new_fifo()).collect();
        let _ = shared
            .stealers
            .set(deques.iter().map(|d| d.stealer()).collect());
        let timer = {
            let s = shared.clone();
            std::thread::Builder::new()
                .name("target-runtime-timer".into())
                .spawn(move || s.timers.run())
                .map_err(|e| BuildError::Io(format!("timer thread: {e}")))?
        };
        let mut handles = Vec::with_capacity(workers);
        for (i, d) in deques.into_iter().enumerate() {
            let s = shared.clone();
            let h = std::thread::Builder::new()
                .name(format!("target-runtime-worker-{i}"))
                .spawn(move || sched::worker_main(s, i, d))
                .map_err(|e| BuildError::Io(format!("worker thread: {e}")))?;
            let _ = shared.threads[i].set(h.thread().clone());
            handles.push(h);
        }
        // Workers that went idle before their Thread handle was published must look again.
        shared.wake_all();
        let result = main.join();
        shared
            .shutdown
            .store(true, std::sync::atomic::Ordering::SeqCst);
        shared.wake_all();
        for h in handles {
            let _ = h.join();
        }
        shared.timers.stop();
        let _ = timer.join();
        while let Some(t) = steal_all(&shared) {
            sched::abandon(t);
        }
        Ok(match result {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        })
    }
}

fn steal_all(shared: &Shared) -> Option<crate::task::TaskRef> {
    loop {
        match shared.injector.steal() {
            crossbeam_deque::Steal::Success(t) => return Some(t),
            crossbeam_deque::Steal::Empty => return None,
            crossbeam_deque::Steal::Retry => {}
        }
    }
}

/// Run `f` as the main task of a runtime with default settings and return its result.
///
/// # Panics
///
/// If the runtime cannot start (the message says why), if called from inside a task,
/// or if the main task panics.
#[track_caller]
pub fn run<F, T>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match Builder::new().run(f) {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// Is an Intel CET user shadow stack enabled for this thread? Switching stacks in user
/// space without switching shadow stacks makes every `ret` fault, so the runtime refuses
/// to start rather than crash at the first switch (research/runtime.md).
fn shadow_stack_enabled() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        /// `ARCH_SHSTK_STATUS` (arch/x86/include/uapi/asm/prctl.h, Linux 6.6).
        const ARCH_SHSTK_STATUS: libc::c_long = 0x5005;
        /// `ARCH_SHSTK_SHSTK`: the shadow-stack feature bit.
        const ARCH_SHSTK_SHSTK: u64 = 1;
        let mut features: u64 = 0;
        // SAFETY: arch_prctl(ARCH_SHSTK_STATUS) writes one u64 through the pointer; on
        // kernels without it the call fails with EINVAL and writes nothing.
        let r = unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_SHSTK_STATUS,
                &mut features as *mut u64,
            )
        };
        r == 0 && features & ARCH_SHSTK_SHSTK != 0
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
