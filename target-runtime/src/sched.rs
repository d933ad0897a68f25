//! The M:N scheduler: N worker threads, each with a FIFO run queue and a `runnext` slot,
//! a global queue, work stealing, and idle workers that sleep in the kernel.
//!
//! Each worker runs its scheduler loop on the thread's own stack (Go's g0) and switches
//! into one task at a time. A task that parks, yields or ends switches back to that loop,
//! which finishes the operation *after* the switch: a parked task becomes visible to
//! wakers only once its registers are saved (research/runtime.md).
//!
//! Thread-locals: a task may resume on another worker, and LLVM may keep a thread-local's
//! address across a call, so every access to this module's thread-local goes through
//! [`worker_ptr`], which is `#[inline(never)]` and never held across a switch.

use crate::region;
use crate::task::{run_state, Task, TaskRef};
use crate::timer::Timers;
use crossbeam_deque::{Injector, Steal, Stealer, Worker as Deque};
use gprof_abi::{session, TaskState, WorkerRecord};
use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{fence, AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;

/// Take the global queue first once every this many scheduling rounds (fairness).
const GLOBAL_EVERY: u32 = 61;
/// Consecutive `runnext` picks before the local queue gets a turn.
const RUNNEXT_LIMIT: u32 = 16;

/// State shared by every worker of one runtime.
pub(crate) struct Shared {
    pub injector: Injector<TaskRef>,
    pub stealers: OnceLock<Vec<Stealer<TaskRef>>>,
    pub threads: Vec<OnceLock<Thread>>,
    idle: Mutex<Vec<usize>>,
    num_idle: AtomicUsize,
    /// Workers between "found nothing" and going to sleep, still looking for work.
    spinning: AtomicUsize,
    pub shutdown: AtomicBool,
    pub timers: Timers,
    pub default_stack: usize,
}

impl Shared {
    pub(crate) fn new(workers: usize, default_stack: usize) -> Arc<Shared> {
        Arc::new(Shared {
            injector: Injector::new(),
            stealers: OnceLock::new(),
            threads: (0..workers).map(|_| OnceLock::new()).collect(),
            idle: Mutex::new(Vec::with_capacity(workers)),
            num_idle: AtomicUsize::new(0),
            spinning: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            timers: Timers::new(),
            default_stack,
        })
    }

    /// Wake one sleeping worker, if any sleeps and none is already looking for work
    /// (Go's `wakep`: a spinning worker will find the work; waking another is a futex
    /// call and a migration for nothing).
    pub(crate) fn wake_one(&self) {
        fence(SeqCst);
        if self.num_idle.load(SeqCst) == 0 || self.spinning.load(SeqCst) > 0 {
            return;
        }
        let idx = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let i = idle.pop();
            if i.is_some() {
                self.num_idle.fetch_sub(1, SeqCst);
            }
            i
        };
        if let Some(i) = idx {
            if let Some(t) = self.threads[i].get() {
                t.unpark();
            }
        }
    }

    pub(crate) fn wake_all(&self) {
        let all: Vec<usize> = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            self.num_idle.store(0, SeqCst);
            idle.drain(..).collect()
        };
        drop(all);
        for t in self.threads.iter().filter_map(|t| t.get()) {
            t.unpark();
        }
    }

    fn has_visible_work(&self) -> bool {
        !self.injector.is_empty()
            || self
                .stealers
                .get()
                .is_some_and(|s| s.iter().any(|s| !s.is_empty()))
    }
}

/// What the task asked the scheduler to do once it has switched away.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Yield,
    Park,
    Exit,
}

/// Per-worker state; lives on the worker thread's stack for the worker's lifetime.
pub(crate) struct WorkerCtx {
    index: usize,
    pub shared: Arc<Shared>,
    local: Deque<TaskRef>,
    runnext: Cell<Option<TaskRef>>,
    sched_sp: UnsafeCell<u64>,
    current: Cell<*const Task>,
    action: Cell<Action>,
    record: u32,
    tick: Cell<u32>,
    runnext_streak: Cell<u32>,
    rng: Cell<u64>,
}

thread_local! {
    static WORKER: Cell<*const WorkerCtx> = const { Cell::new(std::ptr::null()) };
}

/// The calling thread's worker, or null. Never inlined and never kept across a switch:
/// see the module docs.
#[inline(never)]
pub(crate) fn worker_ptr() -> *const WorkerCtx {
    WORKER.with(|w| w.get())
}

/// Is the caller a task?
pub(crate) fn in_task() -> bool {
    let w = worker_ptr();
    // SAFETY: a non-null WORKER points at the live WorkerCtx of this thread.
    !w.is_null() && unsafe { !(*w).current.get().is_null() }
}

fn outside(what: &str) -> ! {
    panic!(
        "target_runtime::{what} called outside a task: call it from code running under \
         target_runtime::run (or a task spawned from there)"
    )
}

/// Run `f` with the calling task.
pub(crate) fn with_current_task<R>(what: &str, f: impl FnOnce(&Task) -> R) -> R {
    let w = worker_ptr();
    if w.is_null() {
        outside(what)
    }
    // SAFETY: WORKER is non-null only while its WorkerCtx lives (set/cleared by
    // `worker_main`); `current` points at a task kept alive by `run_task` while it runs.
    let t = unsafe { (*w).current.get() };
    if t.is_null() {
        outside(what)
    }
    // SAFETY: as above.
    f(unsafe { &*t })
}

/// The runtime of the calling task.
pub(crate) fn current_shared(what: &str) -> Arc<Shared> {
    with_current_task(what, |t| t.shared.clone())
}

/// Parent id and labels a task spawned now inherits.
pub(crate) fn current_task_meta() -> (u64, Arc<Vec<(String, String)>>) {
    with_current_task("spawn", |t| {
        // SAFETY: the caller is the running task.
        (t.id, unsafe { t.owned().labels.clone() })
    })
}

/// Put a task that was just created into a run queue.
///
/// Like Go's `newproc`, the new task goes to this worker's `runnext`: a spawner that
/// then waits for it (spawn + join) hands it the processor without waking anybody.
/// The task it displaces goes to the stealable queue, and an idle worker is woken for it.
pub(crate) fn schedule_new(task: TaskRef) {
    make_runnable_here(task);
}

/// Make a parked task runnable (called by the waker that owns the wake-up).
pub(crate) fn schedule_woken(task: TaskRef) {
    task.run_state.store(run_state::RUNNABLE, Relaxed);
    task.slot().state.store(TaskState::RUNNABLE, Relaxed);
    make_runnable_here(task);
}

/// Queue `task` on the calling worker's `runnext` (or the global queue off-runtime).
fn make_runnable_here(task: TaskRef) {
    let w = worker_ptr();
    // SAFETY: see `with_current_task`.
    if !w.is_null() && unsafe { Arc::ptr_eq(&(*w).shared, &task.shared) } {
        // SAFETY: as above; runnext is only touched by this worker's thread.
        let w = unsafe { &*w };
        if let Some(old) = w.runnext.replace(Some(task)) {
            w.local.push(old);
            w.shared.wake_one();
        }
    } else {
        let shared = task.shared.clone();
        shared.injector.push(task);
        shared.wake_one();
    }
}

/// Switch from the running task to its worker's scheduler loop.
pub(crate) fn switch_out(action: Action) {
    let w = worker_ptr();
    // SAFETY: only tasks call this (callers check), so WORKER and `current` are set.
    let (save, load) = unsafe {
        let w = &*w;
        w.action.set(action);
        let t = &*w.current.get();
        (t.slot().saved.sp.as_ptr(), *w.sched_sp.get())
    };
    // SAFETY: `load` is this worker's scheduler context, saved when it switched into
    // us; `save` is the task's slot, valid while the task exists.
    unsafe { crate::arch::switch(save, load) };
}

/// First code of every task, on its own stack (called by the entry trampoline).
pub(crate) extern "C" fn task_main(arg: usize) -> ! {
    // SAFETY: `arg` is the Task pointer given to init_stack; the worker's `current`
    // keeps that Arc alive while the task runs.
    let task = unsafe { &*(arg as *const Task) };
    // SAFETY: we are the running task.
    let entry = unsafe { task.owned().entry.take() };
    if let Some(entry) = entry {
        entry();
    }
    // Task-locals may be !Send: drop them here, on the task's own thread of execution.
    // SAFETY: we are the running task.
    let locals = std::mem::take(unsafe { &mut task.owned().locals });
    drop(locals);
    switch_out(Action::Exit);
    unreachable!("an exited task was resumed");
}

/// Run `task` on this worker until it switches back.
fn run_task(w: &WorkerCtx, task: TaskRef) {
    let region = region::get();
    let rec = region.worker(w.record);
    let slot = task.slot();
    // Name the task before the barrier check, so that a thread stopped anywhere past
    // this point has its task recorded by the profiler during STW 1 (abi docs).
    rec.current.store(u64::from(task.slot) + 1, Relaxed);
    if cfg!(not(feature = "no-profile-barrier")) {
        let cb = region.control();
        let s = cb.session.load(Relaxed);
        if s & session::ACTIVE != 0 {
            // A batch of parked tasks for a profiler that asked the workers, then this
            // task's own barrier.
            crate::profile_assist::assist(cb, s);
            if crate::profile::before_run(&task) == crate::profile::Barrier::Deferred {
                rec.current.store(0, Relaxed);
                w.shared.injector.push(task);
                std::thread::yield_now();
                return;
            }
        }
    }
    task.run_state.store(run_state::RUNNING, Relaxed);
    slot.state.store(TaskState::RUNNING, Relaxed);
    slot.wait_reason.store(0, Relaxed);
    // After the barrier, before the task runs: a profiler that finds the count unchanged
    // since an earlier sample may reuse that sample's stack (abi docs, `resumes`). Only
    // this worker writes it now, so no read-modify-write instruction is needed.
    slot.resumes
        .store(slot.resumes.load(Relaxed).wrapping_add(1), Release);
    w.current.set(Arc::as_ptr(&task));
    // SAFETY: `sched_sp` is this worker's own save location; the task's saved sp was
    // stored by its last switch away (or by init_stack) and its stack is mapped.
    unsafe { crate::arch::switch(w.sched_sp.get(), slot.saved.sp.load(Acquire)) };
    w.current.set(std::ptr::null());
    // SAFETY: the task has just switched away: its frame is complete on its stack.
    let fp = unsafe { crate::arch::saved_fp(slot.saved.sp.load(Relaxed)) };
    slot.saved.fp.store(fp, Relaxed);
    rec.switches.fetch_add(1, Relaxed);
    match w.action.get() {
        Action::Yield => {
            rec.current.store(0, Relaxed);
            task.run_state.store(run_state::RUNNABLE, Relaxed);
            slot.state.store(TaskState::RUNNABLE, Relaxed);
            w.local.push(task);
        }
        Action::Park => {
            // WAITING only once the switch is complete, and before the task can be
            // woken (a waker sets RUNNABLE only after it sees PARKED).
            slot.state.store(TaskState::WAITING, Relaxed);
            rec.current.store(0, Relaxed);
            if task
                .run_state
                .compare_exchange(run_state::PARKING, run_state::PARKED, SeqCst, SeqCst)
                .is_err()
            {
                // Woken while it was switching away: it is ours to requeue.
                task.run_state.store(run_state::RUNNABLE, Relaxed);
                slot.state.store(TaskState::RUNNABLE, Relaxed);
                w.local.push(task);
            }
            // Otherwise whoever holds its waiter owns it now; drop our reference.
        }
        Action::Exit => exit_task(rec, task),
    }
}

fn exit_task(rec: &WorkerRecord, task: TaskRef) {
    let region = region::get();
    let slot = task.slot();
    slot.state.store(TaskState::DEAD, Relaxed);
    // A running task is always SATISFIED for an active session (recorded at STW 1 or on
    // the barrier before it ran), so the slot can go without consulting the profiler.
    slot.task_id.store(0, SeqCst);
    rec.current.store(0, Relaxed);
    // SAFETY: the task has switched away for the last time; this worker owns it.
    if let Some(stack) = unsafe { task.owned().stack.take() } {
        crate::stack::free(stack);
    }
    region.free_slot(task.slot);
    region.control().live_tasks.fetch_sub(1, Relaxed);
}

impl WorkerCtx {
    fn next_rand(&self) -> u64 {
        // xorshift64*: only for picking steal victims.
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn find_task(&self) -> Option<TaskRef> {
        let tick = self.tick.get().wrapping_add(1);
        self.tick.set(tick);
        if tick % GLOBAL_EVERY == 0 {
            if let Some(t) = steal_one(|| self.shared.injector.steal_batch_and_pop(&self.local)) {
                return Some(t);
            }
        }
        if self.runnext_streak.get() < RUNNEXT_LIMIT {
            if let Some(t) = self.runnext.take() {
                self.runnext_streak.set(self.runnext_streak.get() + 1);
                return Some(t);
            }
        }
        self.runnext_streak.set(0);
        if let Some(t) = self.local.pop() {
            return Some(t);
        }
        if let Some(t) = self.runnext.take() {
            return Some(t);
        }
        if let Some(t) = steal_one(|| self.shared.injector.steal_batch_and_pop(&self.local)) {
            return Some(t);
        }
        let stealers = self.shared.stealers.get()?;
        let n = stealers.len();
        let start = (self.next_rand() % n as u64) as usize;
        for k in 0..n {
            let i = (start + k) % n;
            if i == self.index {
                continue;
            }
            if let Some(t) = steal_one(|| stealers[i].steal_batch_and_pop(&self.local)) {
                return Some(t);
            }
        }
        None
    }

    /// Sleep until woken. Returns false on shutdown.
    fn idle(&self) -> bool {
        let shared = &*self.shared;
        {
            let mut idle = shared.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.push(self.index);
            shared.num_idle.fetch_add(1, SeqCst);
        }
        let rec = region::get().worker(self.record);
        // Pairs with the fence in `wake_one`: either the pusher sees us idle, or we see
        // its work here.
        fence(SeqCst);
        if !shared.has_visible_work() && !shared.shutdown.load(SeqCst) {
            rec.status.store(WorkerRecord::IDLE, Relaxed);
            std::thread::park();
            rec.status.store(WorkerRecord::ACTIVE, Relaxed);
        }
        let mut idle = shared.idle.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pos) = idle.iter().position(|&i| i == self.index) {
            idle.swap_remove(pos);
            shared.num_idle.fetch_sub(1, SeqCst);
        }
        !shared.shutdown.load(SeqCst)
    }
}

fn steal_one(mut f: impl FnMut() -> Steal<TaskRef>) -> Option<TaskRef> {
    loop {
        match f() {
            Steal::Success(t) => return Some(t),
            Steal::Empty => return None,
            Steal::Retry => std::hint::spin_loop(),
        }
    }
}

/// Body of one worker thread.
pub(crate) fn worker_main(shared: Arc<Shared>, index: usize, local: Deque<TaskRef>) {
    let region = region::get();
    let record = region
        .alloc_worker()
        .expect("target-runtime: more than 256 worker threads in one process");
    let _altstack = crate::overflow::AltStack::install();
    let ctx = WorkerCtx {
        index,
        shared,
        local,
        runnext: Cell::new(None),
        sched_sp: UnsafeCell::new(0),
        current: Cell::new(std::ptr::null()),
        action: Cell::new(Action::Yield),
        record,
        tick: Cell::new(0),
        runnext_streak: Cell::new(0),
        rng: Cell::new(
            0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407),
        ),
    };
    WORKER.with(|w| w.set(&ctx));
    loop {
        if ctx.shared.shutdown.load(Relaxed) {
            break;
        }
        match ctx.find_task() {
            Some(t) => run_task(&ctx, t),
            None => {
                // A short spin before sleeping: work often arrives within microseconds.
                ctx.shared.spinning.fetch_add(1, SeqCst);
                let mut found = None;
                for _ in 0..32 {
                    std::hint::spin_loop();
                    if ctx.shared.has_visible_work() {
                        found = ctx.find_task();
                        if found.is_some() {
                            break;
                        }
                    }
                }
                ctx.shared.spinning.fetch_sub(1, SeqCst);
                match found {
                    Some(t) => {
                        // The last spinner to find work wakes another for what remains
                        // (Go's `resetspinning`).
                        if ctx.shared.has_visible_work() {
                            ctx.shared.wake_one();
                        }
                        run_task(&ctx, t)
                    }
                    None => {
                        if !ctx.idle() {
                            break;
                        }
                    }
                }
            }
        }
    }
    WORKER.with(|w| w.set(std::ptr::null()));
    // Tasks left in queues at shutdown are never resumed (like goroutines when main
    // returns); their stacks and slots go back.
    while let Some(t) = ctx.runnext.take().or_else(|| ctx.local.pop()) {
        abandon(t);
    }
    region.free_worker(record);
}

/// Release a task that will never run again.
pub(crate) fn abandon(task: TaskRef) {
    let region = region::get();
    let slot = task.slot();
    slot.state.store(TaskState::DEAD, Relaxed);
    slot.task_id.store(0, SeqCst);
    // SAFETY: the task is not running and never will; we own it.
    if let Some(stack) = unsafe { task.owned().stack.take() } {
        crate::stack::free(stack);
    }
    region.free_slot(task.slot);
    region.control().live_tasks.fetch_sub(1, Relaxed);
}

/// Yield the processor to other runnable tasks.
///
/// # Panics
///
/// Outside a task.
pub fn yield_now() {
    if !in_task() {
        outside("yield_now")
    }
    switch_out(Action::Yield);
}

/// Slot of the task `w` is running, for the signal handler.
///
/// # Safety
///
/// `w` is the calling thread's live worker context.
pub(crate) unsafe fn current_slot_of(w: &WorkerCtx) -> Option<u32> {
    let t = w.current.get();
    // SAFETY: `current` is null or points at the running task (kept alive by run_task).
    (!t.is_null()).then(|| unsafe { (*t).slot })
}
