//! Tasks: spawning, joining, identity.

use crate::region;
use crate::sched::{self, Shared};
use crate::stack::{self, Stack};
use gprof_abi::{prof, session, TaskSlot, TaskState, NAME_CAP};
use std::any::Any;
use std::cell::UnsafeCell;
use std::fmt;
use std::panic::Location;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::Thread;

pub(crate) type TaskRef = Arc<Task>;

/// `Task::run_state` values: who owns the task's next step.
pub(crate) mod run_state {
    pub const RUNNABLE: u32 = 0;
    pub const RUNNING: u32 = 1;
    /// Switching away to park; the scheduler finishes the park after the switch.
    pub const PARKING: u32 = 2;
    /// Parked; the waker that swaps this state out schedules the task.
    pub const PARKED: u32 = 3;
    /// Woken before the park completed; the scheduler requeues it.
    pub const NOTIFIED: u32 = 4;
}

/// State only ever touched by the thread that is running the task (or by the spawner
/// before the task first runs).
pub(crate) struct Owned {
    pub stack: Option<Stack>,
    pub entry: Option<Box<dyn FnOnce() + Send>>,
    pub labels: Arc<Vec<(String, String)>>,
    pub locals: Vec<(usize, Box<dyn Any>)>,
    pub prepared_token: u64,
}

pub(crate) struct Task {
    pub id: u64,
    pub slot: u32,
    pub name: Option<Arc<str>>,
    pub shared: Arc<Shared>,
    pub run_state: AtomicU32,
    pub park_token: AtomicU64,
    /// When the profile barrier first found this task held by the profiler and ran
    /// another task instead (coarse clock, ns; 0 = not deferred).
    pub held_since_ns: AtomicU64,
    owned: UnsafeCell<Owned>,
}

// SAFETY: `owned` is only accessed by the one thread that currently runs the task (the
// scheduler hands a task to exactly one worker at a time), or by its spawner before the
// task is published. Everything else is atomics or immutable.
unsafe impl Sync for Task {}
// SAFETY: as above; the boxed entry closure is Send, and `locals` is emptied on the
// task's own stack before the task ends, so no non-Send value crosses threads by drop.
unsafe impl Send for Task {}

impl Task {
    /// The task's owned state.
    ///
    /// # Safety
    ///
    /// The caller is running this task (or is its spawner before it was published), and
    /// holds no other reference obtained from this function.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn owned(&self) -> &mut Owned {
        // SAFETY: forwarded contract: exclusive access by the running thread.
        unsafe { &mut *self.owned.get() }
    }

    pub(crate) fn slot(&self) -> &'static TaskSlot {
        region::get().slot(self.slot)
    }
}

/// Why a task could not be spawned.
#[derive(Debug)]
#[non_exhaustive]
pub enum SpawnError {
    /// The requested stack size is out of range.
    InvalidStackSize(String),
    /// Every slot of the shared task table is in use.
    TableFull,
    /// The stack could not be mapped.
    Io(std::io::Error),
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::InvalidStackSize(m) => write!(f, "cannot spawn task: {m}"),
            SpawnError::TableFull => write!(
                f,
                "cannot spawn task: all {} task slots are in use",
                region::SLOT_CAP
            ),
            SpawnError::Io(e) => write!(f, "cannot spawn task: stack allocation failed: {e}"),
        }
    }
}

impl std::error::Error for SpawnError {}

struct JoinState<T> {
    result: Option<std::thread::Result<T>>,
    done: bool,
    task_waiter: Option<crate::park::Waiter>,
    thread_waiter: Option<Thread>,
}

struct JoinInner<T> {
    state: Mutex<JoinState<T>>,
    cond: Condvar,
}

impl<T> JoinInner<T> {
    fn complete(&self, r: std::thread::Result<T>) {
        let (tw, th) = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.result = Some(r);
            s.done = true;
            (s.task_waiter.take(), s.thread_waiter.take())
        };
        if let Some(w) = tw {
            w.wake();
        }
        if th.is_some() {
            self.cond.notify_all();
        }
    }
}

/// An owned permission to wait for a task's result.
pub struct JoinHandle<T> {
    inner: Arc<JoinInner<T>>,
    id: u64,
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("task", &self.id)
            .finish()
    }
}

impl<T> JoinHandle<T> {
    /// Id of the task.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Has the task finished?
    pub fn is_finished(&self) -> bool {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .done
    }

    /// Wait for the task to finish and return its result; `Err` carries the panic
    /// payload if the task panicked. Blocks the calling task (or, outside a task, the
    /// calling thread).
    pub fn join(self) -> std::thread::Result<T> {
        let in_task = sched::in_task();
        loop {
            let waiter = in_task.then(crate::park::prepare_park);
            {
                let mut s = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
                if s.done {
                    return s.result.take().expect("a task's result is taken once");
                }
                match waiter {
                    Some(w) => s.task_waiter = Some(w),
                    None => {
                        s.thread_waiter = Some(std::thread::current());
                        while !s.done {
                            s = self.inner.cond.wait(s).unwrap_or_else(|e| e.into_inner());
                        }
                        return s.result.take().expect("a task's result is taken once");
                    }
                }
            }
            crate::park::park(gprof_abi::WaitReason::JOIN);
        }
    }
}

/// Options for one task: name and stack size.
#[derive(Debug, Default, Clone)]
pub struct Builder {
    name: Option<String>,
    stack_size: Option<usize>,
    system: bool,
}

impl Builder {
    /// A builder with the runtime's defaults.
    pub fn new() -> Self {
        Builder::default()
    }

    /// Name the task; the name shows in profiles and in the overflow message.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Usable stack size in bytes (rounded up to whole pages; at least
    /// [`crate::MIN_STACK_SIZE`]).
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Mark the task as runtime-internal (Go's system goroutines). Profiles take part
    /// with every other task but hide it unless asked.
    #[doc(hidden)]
    pub fn system(mut self, yes: bool) -> Self {
        self.system = yes;
        self
    }

    /// Spawn the task on the current runtime.
    ///
    /// # Panics
    ///
    /// Outside a runtime (call it from a task started by [`crate::run`]).
    #[track_caller]
    #[inline(always)]
    pub fn spawn<F, T>(self, f: F) -> Result<JoinHandle<T>, SpawnError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let pc = crate::arch::current_pc();
        let shared = sched::current_shared("task::Builder::spawn");
        let (parent, labels) = sched::current_task_meta();
        spawn_on(&shared, self, f, parent, labels, Location::caller(), pc)
    }
}

/// Spawn `f` as a new task on the current runtime.
///
/// # Panics
///
/// Outside a runtime, or if the task cannot be created (table full, out of memory).
#[track_caller]
#[inline(always)]
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let pc = crate::arch::current_pc();
    let shared = sched::current_shared("spawn");
    let (parent, labels) = sched::current_task_meta();
    match spawn_on(
        &shared,
        Builder::new(),
        f,
        parent,
        labels,
        Location::caller(),
        pc,
    ) {
        Ok(h) => h,
        Err(e) => panic!("{e}"),
    }
}

pub(crate) fn spawn_on<F, T>(
    shared: &Arc<Shared>,
    b: Builder,
    f: F,
    parent: u64,
    labels: Arc<Vec<(String, String)>>,
    site: &'static Location<'static>,
    pc: u64,
) -> Result<JoinHandle<T>, SpawnError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let size = match b.stack_size {
        Some(s) => stack::validate_size(s).map_err(SpawnError::InvalidStackSize)?,
        None => shared.default_stack,
    };
    let join = Arc::new(JoinInner {
        state: Mutex::new(JoinState {
            result: None,
            done: false,
            task_waiter: None,
            thread_waiter: None,
        }),
        cond: Condvar::new(),
    });
    let j2 = join.clone();
    let entry: Box<dyn FnOnce() + Send> = Box::new(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        j2.complete(r);
    });
    let task = create(
        shared, entry, b.name, size, b.system, parent, labels, site, pc,
    )?;
    let id = task.id;
    sched::schedule_new(task);
    Ok(JoinHandle { inner: join, id })
}

/// Allocate slot and stack, fill the slot, publish it, decide the profile state.
#[allow(clippy::too_many_arguments)]
pub(crate) fn create(
    shared: &Arc<Shared>,
    entry: Box<dyn FnOnce() + Send>,
    name: Option<String>,
    size: usize,
    system: bool,
    parent: u64,
    labels: Arc<Vec<(String, String)>>,
    site: &'static Location<'static>,
    pc: u64,
) -> Result<TaskRef, SpawnError> {
    let region = region::get();
    let cb = region.control();
    let stack = stack::alloc(size).map_err(SpawnError::Io)?;
    let Some(slot_index) = region.alloc_slot() else {
        stack::free(stack);
        return Err(SpawnError::TableFull);
    };
    let id = cb.next_task_id.fetch_add(1, Relaxed);
    let (lo, hi) = (stack.lo(), stack.hi());
    let task = Arc::new(Task {
        id,
        slot: slot_index,
        name: name.map(Arc::from),
        shared: shared.clone(),
        run_state: AtomicU32::new(run_state::RUNNABLE),
        park_token: AtomicU64::new(0),
        held_since_ns: AtomicU64::new(0),
        owned: UnsafeCell::new(Owned {
            stack: Some(stack),
            entry: Some(entry),
            labels,
            locals: Vec::new(),
            prepared_token: 0,
        }),
    });
    let slot = region.slot(slot_index);
    slot.state.store(TaskState::RUNNABLE, Relaxed);
    slot.wait_reason.store(0, Relaxed);
    slot.wait_since_ns.store(0, Relaxed);
    slot.parent_id.store(parent, Relaxed);
    slot.flags
        .store(if system { TaskSlot::FLAG_SYSTEM } else { 0 }, Relaxed);
    slot.stack_lo.store(lo, Relaxed);
    slot.stack_hi.store(hi, Relaxed);
    slot.spawn_file_addr
        .store(site.file().as_ptr() as u64, Relaxed);
    slot.spawn_file_len.store(site.file().len() as u32, Relaxed);
    slot.spawn_line.store(site.line(), Relaxed);
    slot.spawn_pc.store(pc, Relaxed);
    // SAFETY: the task is not published yet; its stack's top 80 bytes are ours.
    let sp = unsafe { crate::arch::init_stack(hi, sched::task_main, Arc::as_ptr(&task) as usize) };
    slot.saved.sp.store(sp, Relaxed);
    slot.saved.pc.store(crate::arch::resume_pc(), Relaxed);
    slot.saved.fp.store(0, Relaxed);
    write_meta(slot_index, task.name.as_deref(), &task_labels(&task));
    // Publish, then decide: see the task-creation rule in gprof_abi's protocol docs.
    slot.task_id.store(id, SeqCst);
    let s = cb.session.load(SeqCst);
    let word = if session::is_active(s) {
        prof::pack(session::generation(s), prof::SATISFIED)
    } else {
        prof::pack(session::generation(s), prof::ABSENT)
    };
    slot.prof.store(word, SeqCst);
    cb.live_tasks.fetch_add(1, Relaxed);
    Ok(task)
}

fn task_labels(task: &Task) -> Arc<Vec<(String, String)>> {
    // SAFETY: called by the spawner before the task is published.
    unsafe { task.owned().labels.clone() }
}

/// Write name and labels into the slot under its seqlock.
pub(crate) fn write_meta(slot_index: u32, name: Option<&str>, labels: &[(String, String)]) {
    let region = region::get();
    let slot = region.slot(slot_index);
    let p = region.slot_ptr(slot_index);
    let seq = slot.meta_seq.load(Relaxed);
    slot.meta_seq.store(seq.wrapping_add(1) | 1, SeqCst);
    let name = name.unwrap_or("").as_bytes();
    let n = floor_char_boundary(name, NAME_CAP);
    let mut buf = [0u8; gprof_abi::LABELS_CAP];
    let mut len = 0;
    let mut truncated = false;
    for (k, v) in labels {
        let need = k.len() + v.len() + 2;
        if len + need > buf.len() {
            truncated = true;
            break;
        }
        buf[len..len + k.len()].copy_from_slice(k.as_bytes());
        len += k.len() + 1;
        buf[len..len + v.len()].copy_from_slice(v.as_bytes());
        len += v.len() + 1;
    }
    // SAFETY: `p` points at this slot; the byte arrays are plain memory that only the
    // task's owner writes (under the seqlock), and readers copy them and check the seq.
    unsafe {
        std::ptr::copy_nonoverlapping(name.as_ptr(), (*p).name.as_mut_ptr(), n);
        std::ptr::copy_nonoverlapping(buf.as_ptr(), (*p).labels.as_mut_ptr(), len);
    }
    slot.name_len.store(n as u32, Relaxed);
    slot.labels_len.store(len as u32, Relaxed);
    let flags = slot.flags.load(Relaxed) & !TaskSlot::FLAG_LABELS_TRUNCATED;
    slot.flags.store(
        flags
            | if truncated {
                TaskSlot::FLAG_LABELS_TRUNCATED
            } else {
                0
            },
        Relaxed,
    );
    slot.meta_seq
        .store((seq.wrapping_add(1) | 1).wrapping_add(1), SeqCst);
}

fn floor_char_boundary(s: &[u8], max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    let mut n = max;
    while n > 0 && (s[n] & 0xC0) == 0x80 {
        n -= 1;
    }
    n
}

/// Id of the calling task.
///
/// # Panics
///
/// Outside a task.
pub fn current_id() -> u64 {
    sched::with_current_task("task::current_id", |t| t.id)
}

/// Name of the calling task, if it has one.
pub fn current_name() -> Option<String> {
    sched::with_current_task("task::current_name", |t| {
        t.name.as_deref().map(String::from)
    })
}

/// Flag the calling task as runtime-internal or not (Go's system goroutines, see issue
/// golang/go#74090). Profiles hide system tasks unless asked for them.
#[doc(hidden)]
pub fn set_system(yes: bool) {
    sched::with_current_task("task::set_system", |t| {
        let slot = t.slot();
        let f = slot.flags.load(Relaxed);
        let f = if yes {
            f | TaskSlot::FLAG_SYSTEM
        } else {
            f & !TaskSlot::FLAG_SYSTEM
        };
        slot.flags.store(f, Relaxed);
    })
}
