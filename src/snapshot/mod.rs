//! The snapshot engine: Go's concurrent goroutine profile (CL 387415), driven from
//! outside the process through the shared region and ptrace.
//!
//! ```text
//! STW 1   ptrace-stop every worker thread                            O(workers)
//!         session = g | ACTIVE; record the task each worker names as current
//!         resume; wake the runtime's profile helper (4096 tasks or more), or,
//!         every worker busy (65536 tasks at most), ask the workers to assist
//! follow  unwind the helper's records from its ring as it writes them (ring.rs)
//! assist  sleep while the workers record parked tasks between their own; walk
//!         nothing if they covered every slot
//! walk    for each slot (only those the helper left, if its pass was whole): CAS
//!         absent -> IN_PROGRESS(g), copy registers and stack, CAS -> SATISFIED(g);
//!         unwind the copy after the task is released
//!         (meanwhile the runtime records tasks itself before it resumes them)
//! STW 2   ptrace-stop workers; session = g (ACTIVE cleared); resume      O(workers)
//! after   read the runtime's arena records and the rest of the ring; unwind them
//! ```
//!
//! The rules of the protocol are written down once, in `gprof_abi`'s crate docs.
//! `Mode::StopTheWorld` does the walk inside STW 1 instead (Go's old sync profile), for
//! comparison and as a fallback.

use crate::error::{Error, Result};
use crate::locate::{copy_labels, copy_name, Region};
use crate::model::{
    ModuleInfo, RecordedBy, Snapshot, SnapshotStats, SpawnSite, Stack, StackId, StackTable,
    TaskExtra, TaskRecord,
};
use crate::process::memory::{pod_from_bytes, LiveMemory, RemoteMemory};
use crate::process::placement;
use crate::process::priority::RealtimeGuard;
use crate::process::stop::{StoppedThread, Tracer};
use crate::unwind::{ProcFiles, Unwinder};
use gprof_abi::{
    assist, prof, session, ArenaRecord, Hold, TaskSlot, TaskState, WorkerRecord, LABELS_CAP,
    MAX_STACK_COPY, NAME_CAP, SLOT_COPY_MIN,
};
use rustc_hash::FxHashMap;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};
use target_runtime::shared_futex;

mod ring;

/// How to take a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Two short stops; the tasks are recorded while the target runs.
    Concurrent,
    /// Everything inside one stop (pause grows with the number of tasks).
    StopTheWorld,
}

/// When the runtime's profile helper records the parked tasks
/// ([`Session::set_runtime_helper`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelperUse {
    /// When there are enough tasks for it to pay (see `HELPER_MIN_TASKS`).
    Auto,
    /// Whenever the runtime has one.
    Always,
    /// Always, and the tool reads the helper's ring while the helper writes it, whatever
    /// the CPUs are doing (normally decided per snapshot: two idle CPUs).
    Alongside,
    /// Always, and the tool and the helper take turns on the ring.
    InTurns,
    /// Never: the tool copies every task (no worker assists either, unless
    /// [`AssistUse::Always`]).
    Never,
}

impl HelperUse {
    /// `GPROF_RS_HELPER=never|auto|always|alongside|turns` (for benchmarks and tests
    /// that compare the ways); `Auto` when unset or unrecognised.
    pub fn from_env() -> HelperUse {
        match std::env::var("GPROF_RS_HELPER").as_deref() {
            Ok("never") => HelperUse::Never,
            Ok("always") => HelperUse::Always,
            Ok("alongside") => HelperUse::Alongside,
            Ok("turns") => HelperUse::InTurns,
            _ => HelperUse::Auto,
        }
    }
}

/// When the target's workers are asked to record the parked tasks between their own
/// (abi docs, "Worker assists").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssistUse {
    /// When every worker was busy at STW 1, the tasks fit the arena comfortably (see
    /// `ASSIST_MAX_TASKS`) and the helper was left to decide ([`HelperUse::Auto`]).
    Auto,
    /// Whenever the snapshot could (concurrent, no stack reuse).
    Always,
    /// Never.
    Never,
}

impl AssistUse {
    /// `GPROF_RS_ASSIST=never|auto|always` (for benchmarks and tests that compare the
    /// ways); `Auto` when unset or unrecognised.
    pub fn from_env() -> AssistUse {
        match std::env::var("GPROF_RS_ASSIST").as_deref() {
            Ok("never") => AssistUse::Never,
            Ok("always") => AssistUse::Always,
            _ => AssistUse::Auto,
        }
    }
}

/// Bytes below the stack pointer copied for a thread stopped at an arbitrary
/// instruction: the x86_64 red zone, where the switch's final `jmp` reads its target.
const RED_ZONE: u64 = 128;
/// Tasks held IN_PROGRESS at once, so that their stacks are read in one
/// `process_vm_readv` call.
const BATCH: usize = 128;
/// While a walk is delayed ([`Session::set_periodic`]), how often the runtime's
/// progress is looked at.
const WALK_POLL: Duration = Duration::from_micros(500);

/// How long a periodic snapshot waits after STW 1 before the tool walks the task table
/// ([`Session::set_periodic`]): a quarter of the interval, at most [`MAX_WALK_DELAY`].
/// The wait ends earlier at the first poll that sees the runtime record nothing more.
pub fn walk_delay(interval: Duration) -> Duration {
    (interval / 4).min(MAX_WALK_DELAY)
}

/// Upper bound of [`walk_delay`].
pub const MAX_WALK_DELAY: Duration = Duration::from_millis(25);

/// Longest time the tool follows the runtime's profile helper (it records ~3M tasks a
/// second; the runtime aborts a session after 10 s).
const MAX_HELPER_WAIT: Duration = Duration::from_secs(5);

/// Fewer tasks than this at STW 1 and the tool copies them itself: the helper saves
/// less than a millisecond there, and waking it costs a running task up to a few
/// hundred microseconds when the scheduler puts it on that task's CPU (benchmark at 1k
/// idle tasks: probe gap 291 us with the helper, 153 us without).
const HELPER_MIN_TASKS: u64 = 4096;

/// Longest wait for the runtime's profile helper to start (`help_ack`): it was asleep,
/// and on a busy machine it waits for a CPU. A helper that cannot run at all (a
/// job-stopped target) costs this once.
const HELPER_START_WAIT: Duration = Duration::from_millis(20);

/// More tasks than this at STW 1 and the workers are not asked to assist: their records
/// go to the arena, which the tool reads only after STW 2 (~70 MB at 100k tasks, fresh
/// pages in the target on a first snapshot), where the helper's ring is a few MiB
/// unwound while it fills.
const ASSIST_MAX_TASKS: u64 = 65536;

/// While workers assist, the tool looks at their progress at least this often (the last
/// batch wakes it sooner).
const ASSIST_POLL: Duration = Duration::from_millis(1);

/// Workers that record nothing for this long are not switching (their tasks do not
/// yield): the tool walks the slots itself.
const ASSIST_STALL: Duration = Duration::from_millis(2);

/// Longest time the tool leaves the recording to assisting workers, however steadily
/// they progress.
const MAX_ASSIST_WAIT: Duration = Duration::from_secs(1);

/// How long one stop may take before the threads that did not stop are given up on.
const STOP_DEADLINE: Duration = Duration::from_secs(2);
/// Longest wait for a spawner to finish publishing a slot (it is running, not stopped).
const UNBORN_WAIT: Duration = Duration::from_millis(20);
/// Longest wait for a runtime thread to finish an arena record it started before STW 2.
const ARENA_WAIT: Duration = Duration::from_millis(50);
/// Largest stack the tool accepts for a task (anything larger is bad data).
const MAX_STACK_SPAN: u64 = 1 << 30;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_sig: libc::c_int) {
    INTERRUPTED.store(true, SeqCst);
}

/// Make SIGINT and SIGTERM end a snapshot cleanly: the handler only sets a flag, which
/// the snapshot checks between batches, so a stop in progress always completes its
/// resume and the session is released (`Error::Interrupted`) before the tool exits.
pub fn install_interrupt_handler() {
    // SAFETY: installs an async-signal-safe handler (one atomic store).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_interrupt as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
    }
}

/// Mark the tool interrupted, as SIGINT/SIGTERM do: for signal handlers installed
/// elsewhere (`record`'s launch mode forwards the signal to its child, then calls this).
/// Async-signal-safe: one atomic store.
pub fn set_interrupted() {
    INTERRUPTED.store(true, SeqCst);
}

/// Has SIGINT or SIGTERM arrived since [`install_interrupt_handler`]?
pub fn interrupted() -> bool {
    INTERRUPTED.load(SeqCst)
}

/// Test hook (`GPROF_FAILPOINT=<name>[:<ms>|:stdin]`): the first time the tool reaches
/// the named point it announces itself on stderr (`gprof-rs: failpoint <name>`) and
/// stalls until SIGINT/SIGTERM (or SIGKILL) arrives; with `:<ms>`, for that many
/// milliseconds and then goes on; with `:stdin`, until a line or the end of standard
/// input, then goes on. The reliability tests use it to interrupt or kill the tool, or
/// kill the target under it, at a known moment. Points, in snapshot order:
/// `in-stw1` (every worker stopped, session active, running tasks recorded),
/// `after-stw1` (target running, session active, no task held), `helper-woken` (the
/// runtime's helper asked to record, its ring not consumed: it fills it and waits for
/// room), `assist-asked` (the workers asked to record between their tasks; they go on
/// without the tool), `mid-walk` (a batch of tasks held IN_PROGRESS), `before-stw2` (walk done,
/// nothing held, session active), `in-stw2` (every worker stopped, session no longer
/// active).
fn failpoint(name: &str) {
    static POINT: std::sync::OnceLock<Option<(String, String)>> = std::sync::OnceLock::new();
    static FIRED: AtomicBool = AtomicBool::new(false);
    let point = POINT.get_or_init(|| {
        let v = std::env::var("GPROF_FAILPOINT").ok()?;
        let (n, arg) = v.split_once(':').unwrap_or((&v, ""));
        Some((n.to_string(), arg.to_string()))
    });
    let Some((point, arg)) = point else { return };
    if point != name || FIRED.swap(true, SeqCst) {
        return;
    }
    eprintln!("gprof-rs: failpoint {name}");
    if arg == "stdin" {
        let _ = std::io::stdin().read_line(&mut String::new());
        return;
    }
    let ms: Option<u64> = arg.parse().ok();
    let until = Instant::now() + ms.map_or(Duration::from_secs(60), Duration::from_millis);
    while !interrupted() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Clears the session's ACTIVE bit on every exit path (error, interrupt): the runtime
/// then stops waiting on tasks this tool still holds and runs them.
struct ActiveGuard<'a> {
    cb: &'a gprof_abi::ControlBlock,
    word: u64,
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        let idle = self.word & !session::ACTIVE;
        let _ = self
            .cb
            .session
            .compare_exchange(self.word, idle, SeqCst, Relaxed);
    }
}

/// A profiling session on one target: attached once, any number of snapshots.
pub struct Session {
    pid: u32,
    region: Region,
    tracer: Tracer,
    mem: LiveMemory,
    unwinder: Unwinder,
    modules: Vec<ModuleInfo>,
    walk_delay: Duration,
    unordered: bool,
    /// Reuse the stacks of tasks not resumed since the previous snapshot.
    reuse: bool,
    /// See [`Session::set_runtime_helper`].
    helper: HelperUse,
    /// In turns, have the helper keep to the tool's CPU (abi docs, `help_cpu`).
    helper_cpu: bool,
    /// See [`AssistUse`].
    assist: AssistUse,
    cache: StackCache,
}

/// A task's copied state, before unwinding: owning its stack bytes, or (`Copy<&[u8]>`)
/// borrowing them from the walk's batch buffer.
struct Copy<S = Vec<u8>> {
    /// Index of the task's slot.
    index: u32,
    slot: SlotCopy,
    ip: u64,
    sp: u64,
    bp: u64,
    base: u64,
    stack: S,
    by: RecordedBy,
}

impl Copy<&[u8]> {
    fn into_owned(self) -> Copy {
        Copy {
            index: self.index,
            slot: self.slot,
            ip: self.ip,
            sp: self.sp,
            bp: self.bp,
            base: self.base,
            stack: self.stack.to_vec(),
            by: self.by,
        }
    }
}

impl Session {
    /// Find the runtime in `pid`, take the profiler lease and seize the threads.
    pub fn attach(pid: u32) -> Result<Session> {
        let tracer = Tracer::new(pid)?;
        let (region, modules) = crate::locate::attach(pid)?;
        let mut unwinder = Unwinder::new(ProcFiles { pid });
        unwinder.set_modules(&modules);
        Ok(Session {
            pid,
            region,
            tracer,
            mem: LiveMemory::new(pid),
            unwinder,
            modules,
            walk_delay: Duration::ZERO,
            unordered: false,
            reuse: false,
            // For benchmarks that compare both ways.
            helper: HelperUse::from_env(),
            // `GPROF_RS_HELPER_CPU=any`: leave the helper where the kernel wakes it.
            helper_cpu: std::env::var("GPROF_RS_HELPER_CPU").as_deref() != Ok("any"),
            assist: AssistUse::from_env(),
            cache: StackCache::default(),
        })
    }

    /// [`Session::attach`]; while another profiler holds the target's lease, try again
    /// every 10 ms for at most `wait` (`--wait`), saying so once on stderr. `None`, or a
    /// lease still held at the end, gives [`Error::ProfilerBusy`]. SIGINT/SIGTERM end
    /// the wait ([`Error::Interrupted`]).
    pub fn attach_waiting(pid: u32, wait: Option<Duration>) -> Result<Session> {
        let until = wait.map(|w| Instant::now() + w);
        let mut said = false;
        loop {
            match Session::attach(pid) {
                Err(Error::ProfilerBusy { owner_pid })
                    if until.is_some_and(|u| Instant::now() < u) =>
                {
                    if !said {
                        said = true;
                        let w = wait.unwrap_or_default();
                        eprintln!(
                            "gprof-rs: another profiler (pid {owner_pid}) is active on PID {pid}; waiting up to {:.1} s for it to finish (--wait)",
                            w.as_secs_f64()
                        );
                    }
                    if interrupted() {
                        return Err(Error::Interrupted);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                r => return r,
            }
        }
    }

    /// Target pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The target's executable mappings.
    pub fn modules(&self) -> &[ModuleInfo] {
        &self.modules
    }

    /// Configure the session for snapshots taken every `interval` (`record`, `top`):
    ///
    /// * Wait after STW 1 before walking the task table ([`walk_delay`]). While the
    ///   session is active the runtime records every absent task itself just before it
    ///   resumes it, with an in-process copy of a stack it is about to touch anyway; the
    ///   tool's copy costs a `process_vm_readv` page pin per task. So busy tasks record
    ///   themselves and the tool copies only the ones that stay parked. Consistency does
    ///   not depend on it: every stack is still the one of STW 1.
    /// * Return tasks in no particular order: aggregating consumers do not need it, and
    ///   sorting 10k task records was 8 % of `record`'s time at 10 Hz.
    /// * Reuse unchanged stacks ([`Session::set_reuse_unchanged`]).
    pub fn set_periodic(&mut self, interval: Duration) {
        self.walk_delay = walk_delay(interval);
        self.unordered = true;
        self.set_reuse_unchanged(true);
    }

    /// Return tasks in no particular order, for output that aggregates them (pprof, the
    /// grouped text dump): sorting a million 64-byte task records by id was 9 % of a
    /// 1M-task snapshot's CPU. Debug builds still sort, to check no task came twice.
    pub fn set_unordered(&mut self) {
        self.unordered = true;
    }

    /// When a concurrent snapshot without stack reuse asks the runtime's profile helper
    /// to record the parked tasks in-process (abi docs, "Profile helper"). By default
    /// [`HelperUse::from_env`]; without it the tool copies every task itself.
    pub fn set_runtime_helper(&mut self, helper: HelperUse) {
        self.helper = helper;
    }

    /// When a concurrent snapshot asks the target's workers to record the parked tasks
    /// between their own (abi docs, "Worker assists"). By default `GPROF_RS_ASSIST`,
    /// else [`AssistUse::Auto`].
    pub fn set_assist(&mut self, assist: AssistUse) {
        self.assist = assist;
    }

    /// Reuse, from one snapshot to the next, the stack of every task that has not been
    /// resumed in between (`TaskSlot::resumes` unchanged): no copy and no unwind for it.
    /// For periodic sampling of a mostly idle target (thousands of tasks parked for
    /// seconds) that is most of the work. Costs the tool one cached frame list per task.
    pub fn set_reuse_unchanged(&mut self, reuse: bool) {
        self.reuse = reuse;
        if !reuse {
            self.cache = StackCache::default();
        }
    }

    /// Does this snapshot ask the runtime's helper to record, with `live` tasks alive?
    /// Not when stacks are reused across samples: the helper would copy every task
    /// again, which the reuse exists to avoid.
    fn helper_wanted(&self, mode: Mode, live: u64) -> bool {
        mode == Mode::Concurrent
            && !self.reuse
            && match self.helper {
                HelperUse::Never => false,
                HelperUse::Auto => live >= HELPER_MIN_TASKS,
                HelperUse::Always | HelperUse::Alongside | HelperUse::InTurns => true,
            }
    }

    /// Take one snapshot.
    pub fn snapshot(&mut self, mode: Mode) -> Result<Snapshot> {
        let start = Instant::now();
        let mut stats = SnapshotStats::default();
        let cb = self.region.control();
        // How the helper's ring will be read, decided before STW 1: right after it the
        // workers it woke are runnable for a moment, and would count as busy CPUs. The
        // CPU count is looked at (~0.4 ms) only if the helper is likely to be asked, by
        // the target's live count now (a hint: STW 1 decides).
        let alongside = match self.helper {
            HelperUse::Alongside => true,
            HelperUse::InTurns => false,
            _ => self.helper_wanted(mode, cb.live_tasks.load(Relaxed)) && ring::alongside(),
        };
        let g = session::generation(cb.session.load(SeqCst)) + 1;
        let slot_cap = self.region.layout().slot_cap;
        // Slots ever used, bounded by the table's size (both read from the target).
        let hwm = || cb.slot_hwm.load(Acquire).min(u64::from(slot_cap)) as u32;

        // The task records' memory, faulted in now rather than record by record inside
        // the session: at 1M tasks that is 64 MB, whose first touch cost ~190 ms of a
        // 650 ms session on this VM (the session, during which every switch checks the
        // barrier, went to 460 ms; end to end is unchanged). Sized by the target's live
        // count (a hint: the vector grows if more come), never past the slots in use.
        let live_hint = cb.live_tasks.load(Relaxed).min(u64::from(hwm())) as usize;
        let tasks_vec = prefaulted_vec(live_hint + live_hint / 16 + 64);
        // A worker our set-up displaced runs again before it is stopped (placement.rs).
        placement::give_way();
        // ---- STW 1 ----
        let mut copies = Vec::new();
        let mut _active = None;
        let stw1_mono;
        let stw1_began;
        let self_recorded_at_stw1;
        let live_at_stw1;
        let hwm_at_stw1;
        let assisting;
        {
            let workers = worker_tids(&self.region);
            let _rt = RealtimeGuard::raise();
            let mut stop = self
                .tracer
                .stop_threads(&workers, Instant::now() + STOP_DEADLINE)?;
            let t = stop.timings();
            stw1_mono = mono_ns();
            stats.generation = g;
            cb.owner_pid.store(u64::from(std::process::id()), Relaxed);
            cb.heartbeat.store(0, Relaxed);
            cb.arena_used.store(gprof_abi::arena::pack(g, 0), Relaxed);
            cb.arena_full.store(0, Relaxed);
            cb.session_seen_ns.store(0, Relaxed);
            cb.sessions.fetch_add(1, Relaxed);
            // The generation advances in both modes: it is what makes every slot's
            // profile word read as absent for this snapshot.
            let flags = if mode == Mode::Concurrent {
                session::ACTIVE
            } else {
                0
            };
            cb.session.store(session::pack(g, flags), SeqCst);
            // After the session store: a task whose id is at or past the cutoff was
            // given its id after this store, so its spawner (stopped or not) sees the
            // session and marks it newer than STW 1 (abi docs, "Task creation").
            stats.id_cutoff = cb.next_task_id.load(SeqCst);
            // Every task alive now has its slot below this (a slot is counted in
            // `slot_hwm` before a task is put in it).
            hwm_at_stw1 = hwm();
            self_recorded_at_stw1 = cb.self_recorded.load(SeqCst);
            live_at_stw1 = cb.live_tasks.load(SeqCst);
            _active = Some(ActiveGuard {
                cb,
                word: session::pack(g, flags),
            });
            // A worker that published its TID after we read the list was not stopped.
            // It publishes before it runs any task and then reads the session word (a
            // SeqCst store then load, as ours: Dekker), so either it sees this session
            // and passes the barrier like everyone, or we see it here and stop it too.
            let late: Vec<u32> = worker_tids(&self.region)
                .into_iter()
                .filter(|t| !workers.contains(t))
                .collect();
            if !late.is_empty() {
                stop.extend(&late, Instant::now() + STOP_DEADLINE)?;
            }
            stats.threads = stop.threads().len() as u32;
            record_current(&self.region, &self.mem, stop.threads(), g, &mut copies)?;
            stats.recorded_stw = copies.len() as u64;
            // The counts first, the session word that asks for assists last: a worker
            // that sees the request sees them (abi docs, "Worker assists").
            assisting = assist_wanted(
                (self.assist, self.helper),
                self.reuse,
                &self.region,
                mode,
                live_at_stw1,
            );
            if assisting {
                cb.assist_next.store(assist::pack(g, 0), Relaxed);
                cb.assist_end.store(u64::from(hwm_at_stw1), Relaxed);
                cb.assist_done.store(assist::pack(g, 0), Relaxed);
                cb.assist_left.store(0, Relaxed);
                cb.assist_session.store(session::pack(g, flags), Release);
            } else {
                cb.assist_session.store(0, Release);
            }
            if mode == Mode::StopTheWorld {
                let mut skipped = Vec::new();
                walk(
                    &self.region,
                    &self.mem,
                    g,
                    0..hwm(),
                    RecordedBy::StopTheWorld,
                    &mut Collect(&mut copies),
                    &mut skipped,
                    &mut stats,
                )?;
                stats.recorded_stw = copies.len() as u64;
                stats.recorded_tool = 0;
            }
            failpoint("in-stw1");
            let resumed = stop.resume();
            stats.stw1_ns = (resumed - t.first_interrupt).as_nanos() as u64;
            stw1_began = t.first_interrupt;
            stats.session_ns = stats.stw1_ns;
        }
        failpoint("after-stw1");
        if interrupted() {
            return Err(Error::Interrupted);
        }
        // A one-shot snapshot asks the runtime's profile helper to record the parked
        // tasks in-process (abi docs, "Profile helper"): a memcpy there instead of a
        // page-pinning system call here.
        let helping = !assisting
            && self.helper_wanted(mode, live_at_stw1)
            && cb.helper_tid.load(Acquire) != 0
            // Idle: it finished the last session it began, so nothing else writes the
            // ring (a helper still busy with an aborted session is left alone).
            && cb.help_done.load(Acquire) == cb.help_ack.load(Acquire);
        let mut ring = None;
        if helping {
            stats.helper_alongside = Some(alongside);
            ring = Some(ring::RingReader::start(
                &self.region,
                g,
                alongside,
                self.helper_cpu,
            ));
            cb.help_seq.fetch_add(1, Release);
            shared_futex::wake(&cb.help_seq);
            failpoint("helper-woken");
        }

        let memo_hits_before = self.unwinder.memo_hits();
        let cache = self.reuse.then_some(&mut self.cache);
        let mut fin = Finisher::new(stw1_mono, &mut self.unwinder, &self.mem, tasks_vec, cache);
        if mode == Mode::Concurrent {
            // ---- concurrent walk ----
            let t_wait = Instant::now();
            if let Some(ring) = ring.as_mut() {
                // Unwind the helper's records while it writes more: the two halves of
                // the work overlap on two CPUs. Whatever it has not done when it stops
                // (or stalls) the walk below does.
                ring.follow(
                    &self.region,
                    HELPER_START_WAIT,
                    MAX_HELPER_WAIT,
                    &interrupted,
                    &mut |c| fin.add(c),
                )?;
            } else if assisting {
                // The workers record between their own tasks; the tool stays off the
                // CPUs (it would make one of them wait) until they are done or stall.
                failpoint("assist-asked");
                let covered = wait_assists(&self.region, g, hwm_at_stw1)?;
                stats.assist_covered = Some(covered);
            } else if !self.walk_delay.is_zero() {
                // While the runtime keeps recording tasks, or until it has recorded
                // as many as were alive at STW 1, at most the delay: once a poll sees
                // no progress the tasks left are parked, and waiting longer only keeps
                // the session (during which every switch checks the barrier) open.
                // The counts are the target's: they decide when to walk, never what
                // is recorded.
                let until = Instant::now() + self.walk_delay;
                let mut last = 0;
                loop {
                    crate::record::sleep_until(Instant::now() + WALK_POLL);
                    cb.heartbeat.fetch_add(1, Relaxed);
                    let by_runtime = cb
                        .self_recorded
                        .load(Acquire)
                        .wrapping_sub(self_recorded_at_stw1);
                    if by_runtime == last
                        || by_runtime.saturating_add(stats.recorded_stw) >= live_at_stw1
                        || Instant::now() >= until
                        || interrupted()
                    {
                        break;
                    }
                    last = by_runtime;
                }
            }
            if interrupted() {
                return Err(Error::Interrupted);
            }
            stats.wait_ns = t_wait.elapsed().as_nanos() as u64;
            let t_walk = Instant::now();
            let mut skipped = Vec::new();
            for c in std::mem::take(&mut copies) {
                fin.add(c);
            }
            // A helper that visited every slot alive at STW 1 named the ones it left
            // (abi docs, "Profile helper"): only those are walked, and the tool never
            // touches the rest of the table (512 MB of it at 1M tasks).
            let leftovers = ring
                .as_mut()
                .filter(|r| r.marks.pass_done.is_some_and(|h| h >= hwm_at_stw1))
                .map(|r| std::mem::take(&mut r.marks.leftovers));
            // Workers that visited every slot and left none: nothing to walk. (Their
            // `leftovers` would be wrong after STW 2, though: a slot another runtime
            // thread was recording counts as done, and may still be held then.)
            let walk_none = stats.assist_covered == Some(true);
            stats.helper_leftovers = leftovers.as_ref().map(|l| l.len() as u64);
            // Each batch is unwound straight from the walk's buffer once its tasks are
            // released.
            walk(
                &self.region,
                &self.mem,
                g,
                match &leftovers {
                    _ if walk_none => Box::new(0..0u32) as Box<dyn Iterator<Item = u32>>,
                    Some(l) => Box::new(l.iter().copied()),
                    None => Box::new(0..hwm()),
                },
                RecordedBy::Tool,
                &mut fin,
                &mut skipped,
                &mut stats,
            )?;
            // Slots a spawner was still publishing: it is running and decides within
            // nanoseconds whether the task predates STW 1 (abi docs). Wait for the
            // decision, then take the ones that do.
            let deadline = Instant::now() + UNBORN_WAIT;
            let unborn = |i: &u32| {
                self.region
                    .slot(*i)
                    .is_some_and(|s| s.prof.load(Acquire) == prof::UNBORN)
            };
            while skipped.iter().any(unborn) && Instant::now() < deadline {
                std::thread::yield_now();
            }
            // Tasks the runtime could not record (arena full) are left to us too: walk
            // everything again, a bounded number of times.
            let mut rounds = 0;
            while !skipped.is_empty() || (cb.arena_full.load(Acquire) != 0 && rounds < 4) {
                rounds += 1;
                let again: Vec<u32> = if cb.arena_full.swap(0, AcqRel) != 0 {
                    (0..hwm()).collect()
                } else {
                    std::mem::take(&mut skipped)
                };
                skipped.clear();
                let mut still_unborn = Vec::new();
                walk(
                    &self.region,
                    &self.mem,
                    g,
                    again.into_iter(),
                    RecordedBy::Tool,
                    &mut fin,
                    &mut still_unborn,
                    &mut stats,
                )?;
            }

            stats.walk_ns = t_walk.elapsed().as_nanos() as u64;
            failpoint("before-stw2");
            if interrupted() {
                return Err(Error::Interrupted);
            }

            // ---- STW 2 ----
            let used;
            {
                let workers = worker_tids(&self.region);
                let _rt = RealtimeGuard::raise();
                let stop = self
                    .tracer
                    .stop_threads(&workers, Instant::now() + STOP_DEADLINE)?;
                let t = stop.timings();
                cb.session.store(session::pack(g, 0), SeqCst);
                used = arena_bytes(cb.arena_used.load(Acquire), g);
                failpoint("in-stw2");
                let resumed = stop.resume();
                stats.stw2_ns = (resumed - t.first_interrupt).as_nanos() as u64;
                stats.session_ns = (resumed - stw1_began).as_nanos() as u64;
            }
            // The workers resumed on our CPU run before we go on (placement.rs).
            placement::give_way();

            // A worker that won a task's CAS before STW 2 may not have reserved its arena
            // record yet (its thread was descheduled): the task is in no other record, so
            // wait for its hold to end and read the arena's length again.
            let t_arena = Instant::now();
            let (used_now, settled) = match &leftovers {
                // Nothing else can be held: the helper has finished, and every other
                // slot was recorded or free when it passed.
                Some(l) => wait_runtime_holds(&self.region, g, l.iter().copied()),
                None => wait_runtime_holds(&self.region, g, 0..hwm()),
            };
            let used = used.max(used_now);
            // A target that died while one of its threads was writing a record leaves
            // it unfinished: say that it died, not that it lied.
            let died = |e| {
                if crate::record::process_gone(self.pid) {
                    Error::ProcessExited { pid: self.pid }
                } else {
                    e
                }
            };
            stats.recorded_runtime =
                read_arena(&self.region, g, used, settled, &mut |c| fin.add(c)).map_err(died)?;
            stats.runtime_bytes = used;
            if let Some(ring) = ring.as_mut() {
                // What the helper wrote after we stopped following it: every record of a
                // task it released is below the head (abi docs).
                ring.consume(&self.region, &mut |c| fin.add(c))
                    .map_err(died)?;
                stats.recorded_runtime += ring.records;
                stats.runtime_bytes += ring.bytes;
            }
            stats.arena_ns = t_arena.elapsed().as_nanos() as u64;
        } else {
            // As after STW 2 above.
            placement::give_way();
            for c in copies {
                fin.add(c);
            }
        }
        let Finisher {
            mut tasks, stacks, ..
        } = fin;
        stats.memo_hits = self.unwinder.memo_hits() - memo_hits_before;
        if !self.unordered || cfg!(debug_assertions) {
            // Unstable: ids are unique, and a stable sort would allocate half the table
            // again.
            tasks.sort_unstable_by_key(|t| t.id);
            // A task recorded twice would be a protocol bug (DESIGN invariant 1): loud in
            // debug builds and tests, harmless in release.
            debug_assert!(
                tasks.windows(2).all(|w| w[0].id != w[1].id),
                "a task was recorded twice"
            );
            tasks.dedup_by_key(|t| t.id);
        }
        stats.total_ns = start.elapsed().as_nanos() as u64;
        Ok(Snapshot {
            pid: self.pid,
            tasks,
            stacks,
            modules: self.modules.clone(),
            time_unix_ns: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            stats,
        })
    }
}

/// After STW 1 of an assisted snapshot: sleep while the target's workers record the
/// slots below `end`, waking when the last batch is done (`assist_wake`) or every
/// [`ASSIST_POLL`] to look at their progress. `true` when they visited every slot and
/// left none; `false` when they stopped progressing for [`ASSIST_STALL`] (tasks that do
/// not yield), or the session ended: then the tool walks every slot.
fn wait_assists(region: &Region, g: u64, end: u32) -> Result<bool> {
    let cb = region.control();
    let started = Instant::now();
    let mut last = 0;
    let mut moved = started;
    loop {
        let seq = cb.assist_wake.load(Acquire);
        let w = cb.assist_done.load(Acquire);
        if !assist::is_generation(w, g)
            || cb.session.load(Acquire) != session::pack(g, session::ACTIVE)
        {
            return Ok(false);
        }
        let done = assist::count(w);
        if done >= u64::from(end) {
            return Ok(cb.assist_left.load(Acquire) == 0);
        }
        let now = Instant::now();
        if done != last {
            last = done;
            moved = now;
        }
        if now - moved >= ASSIST_STALL || now - started >= MAX_ASSIST_WAIT {
            return Ok(false);
        }
        if interrupted() {
            return Err(Error::Interrupted);
        }
        // Nothing is held by the tool meanwhile; the beat only says it is alive.
        cb.heartbeat.fetch_add(1, Relaxed);
        shared_futex::wait(&cb.assist_wake, seq, ASSIST_POLL);
    }
}

/// Does a snapshot ask the target's workers to assist, with `live` tasks alive and the
/// workers as STW 1 found them? Not when stacks are reused across samples (`reuse`: the
/// workers would copy every task), nor when a worker was idle: the helper or the tool
/// then has a CPU to itself, and nobody would wake that worker to assist.
/// A helper asked for by name (`HelperUse` other than `Auto`) is used instead.
fn assist_wanted(
    (assist, helper): (AssistUse, HelperUse),
    reuse: bool,
    region: &Region,
    mode: Mode,
    live: u64,
) -> bool {
    mode == Mode::Concurrent
        && !reuse
        && match assist {
            AssistUse::Never => false,
            AssistUse::Auto => {
                helper == HelperUse::Auto && live <= ASSIST_MAX_TASKS && every_worker_busy(region)
            }
            AssistUse::Always => true,
        }
}

/// Was every worker of the target running a task or looking for one (none asleep)? At
/// STW 1, with every worker stopped.
fn every_worker_busy(region: &Region) -> bool {
    worker_records(region)
        .filter(|rec| rec.tid.load(SeqCst) != 0)
        .all(|rec| rec.status.load(Relaxed) == WorkerRecord::ACTIVE)
}

fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A slot's fields as plain values: the shared slot changes under us, so every field is
/// loaded once, and the byte arrays are copied only when they hold something.
#[derive(Debug, Clone, Default)]
struct SlotCopy {
    id: u64,
    /// `TaskSlot::resumes` when copied.
    resumes: u64,
    state: u32,
    wait_reason: u32,
    wait_since_ns: u64,
    parent_id: u64,
    flags: u32,
    sp: u64,
    pc: u64,
    fp: u64,
    lo: u64,
    hi: u64,
    file_addr: u64,
    file_len: u32,
    line: u32,
    spawn_pc: u64,
    name: Option<String>,
    labels: Vec<(String, String)>,
}

impl SlotCopy {
    fn load(s: &TaskSlot) -> SlotCopy {
        SlotCopy::load_prefix(s, LABELS_CAP)
    }

    /// [`SlotCopy::load`] of a slot copy that holds only `labels_cap` bytes of labels
    /// (an arena record's, abi docs `ArenaRecord`): the bytes after them are not the
    /// slot's, so labels that claim to be longer are cut there.
    fn load_prefix(s: &TaskSlot, labels_cap: usize) -> SlotCopy {
        let name_len = (s.name_len.load(Relaxed) as usize).min(NAME_CAP);
        let labels_len = (s.labels_len.load(Relaxed) as usize)
            .min(LABELS_CAP)
            .min(labels_cap);
        SlotCopy {
            id: s.task_id.load(Acquire),
            resumes: s.resumes.load(Acquire),
            state: s.state.load(Relaxed),
            wait_reason: s.wait_reason.load(Relaxed),
            wait_since_ns: s.wait_since_ns.load(Relaxed),
            parent_id: s.parent_id.load(Relaxed),
            flags: s.flags.load(Relaxed),
            sp: s.saved.sp.load(Acquire),
            pc: s.saved.pc.load(Relaxed),
            fp: s.saved.fp.load(Relaxed),
            lo: s.stack_lo.load(Relaxed),
            hi: s.stack_hi.load(Relaxed),
            file_addr: s.spawn_file_addr.load(Relaxed),
            file_len: s.spawn_file_len.load(Relaxed),
            line: s.spawn_line.load(Relaxed),
            spawn_pc: s.spawn_pc.load(Relaxed),
            name: (name_len > 0)
                .then(|| String::from_utf8_lossy(&copy_name(s)[..name_len]).into_owned()),
            labels: if labels_len > 0 {
                decode_labels(&copy_labels(s)[..labels_len])
            } else {
                Vec::new()
            },
        }
    }

    /// The live part of the stack, `[sp, hi)`, capped; empty if sp is outside the stack.
    fn live_len(&self) -> u64 {
        let valid = self.lo < self.hi && self.hi - self.lo <= MAX_STACK_SPAN;
        if valid && self.sp >= self.lo && self.sp < self.hi {
            (self.hi - self.sp).min(MAX_STACK_COPY)
        } else {
            0
        }
    }
}

/// Validated stack span `[lo, hi)` of a slot.
fn stack_span(s: &TaskSlot) -> Option<(u64, u64)> {
    let lo = s.stack_lo.load(Relaxed);
    let hi = s.stack_hi.load(Relaxed);
    (lo < hi && hi - lo <= MAX_STACK_SPAN).then_some((lo, hi))
}

/// TIDs of the runtime's worker threads, the threads a stop must hold (see
/// [`Tracer::stop_threads`]). Untrusted: the tracer checks that each is a thread of
/// the target before seizing it.
fn worker_tids(region: &Region) -> Vec<u32> {
    worker_records(region)
        .map(|rec| rec.tid.load(SeqCst))
        .filter(|&tid| tid != 0)
        .collect()
}

/// The worker records the target says are in use (`worker_count`, bounded by the table).
fn worker_records(region: &Region) -> impl Iterator<Item = &WorkerRecord> {
    let n = region
        .control()
        .worker_count
        .load(SeqCst)
        .min(gprof_abi::WORKER_CAP);
    (0..n).filter_map(|w| region.worker(w))
}

/// STW 1: tasks that workers are running or about to run.
fn record_current(
    region: &Region,
    mem: &LiveMemory,
    threads: &[StoppedThread],
    g: u64,
    out: &mut Vec<Copy>,
) -> Result<()> {
    let cb = region.control();
    let n = cb.worker_count.load(Acquire).min(gprof_abi::WORKER_CAP);
    let by_tid: HashMap<u32, &StoppedThread> = threads.iter().map(|t| (t.tid, t)).collect();
    for w in 0..n {
        let Some(rec) = region.worker(w) else {
            continue;
        };
        let cur = rec.current.load(Acquire);
        if cur == 0 {
            continue;
        }
        let Some((index, slot)) = u32::try_from(cur - 1)
            .ok()
            .and_then(|i| Some((i, region.slot(i)?)))
        else {
            continue;
        };
        if slot.task_id.load(Acquire) == 0 {
            continue;
        }
        if slot.state.load(Acquire) == TaskState::DEAD {
            // Stopped in `exit_task` after the task's last switch: it was not alive at
            // STW 1. Mark it so that nobody records it before its slot is freed.
            slot.prof.store(prof::pack(g, prof::SATISFIED), SeqCst);
            continue;
        }
        let Some((lo, hi)) = stack_span(slot) else {
            continue;
        };
        let copy = SlotCopy::load(slot);
        let running = by_tid
            .get(&rec.tid.load(Relaxed))
            .map(|t| t.regs)
            .filter(|r| r.sp >= lo && r.sp < hi);
        let (ip, sp, bp) = match running {
            // The thread's stack pointer is inside the task's stack: the task is running
            // (or mid-switch; the switch's CFI is right at every instruction).
            Some(r) => (r.ip, r.sp, r.bp),
            // In the scheduler before switching in, or after switching out: the saved
            // context is complete (the switch stores sp before leaving the stack).
            None => (copy.pc, copy.sp, copy.fp),
        };
        if sp < lo || sp >= hi {
            continue;
        }
        let base = sp.saturating_sub(RED_ZONE).max(lo);
        let len = hi.saturating_sub(base).min(MAX_STACK_COPY + RED_ZONE);
        let mut stack = vec![0u8; len as usize];
        let got = mem
            .read_many(&mut [(base, &mut stack[..])])
            .map_err(|e| e.into_error(mem.pid()))?[0];
        stack.truncate(got);
        slot.prof.store(prof::pack(g, prof::SATISFIED), SeqCst);
        out.push(Copy {
            index,
            slot: copy,
            ip,
            sp,
            bp,
            base,
            stack,
            by: RecordedBy::StopTheWorld,
        });
    }
    Ok(())
}

/// Walk every slot: take the absent ones, copy them in batches, release them.
///
/// Up to [`BATCH`] tasks are held IN_PROGRESS at once so that their stacks are read
/// with one `process_vm_readv` into one reused buffer; the hold lasts one system call.
/// Once a batch is released, `sink` gets each copy, its stack borrowed from that buffer.
#[allow(clippy::too_many_arguments)]
fn walk(
    region: &Region,
    mem: &LiveMemory,
    g: u64,
    slots: impl Iterator<Item = u32>,
    by: RecordedBy,
    sink: &mut dyn Sink,
    unborn: &mut Vec<u32>,
    stats: &mut SnapshotStats,
) -> Result<()> {
    let cb = region.control();
    let mut slots = slots;
    let in_progress = prof::pack(g, prof::IN_PROGRESS);
    let satisfied = prof::pack(g, prof::SATISFIED);
    let mut held: Vec<(u32, SlotCopy)> = Vec::with_capacity(BATCH);
    // Released copies of the current batch: (slot index, slot fields, offset and length
    // in `buf`).
    let mut ready: Vec<(u32, SlotCopy, usize, usize)> = Vec::with_capacity(BATCH);
    let mut buf: Vec<u8> = Vec::new();
    let mut more = true;
    while more || !held.is_empty() {
        if more && held.len() < BATCH {
            let Some(i) = slots.next() else {
                more = false;
                continue;
            };
            let Some(slot) = region.slot(i) else { continue };
            let p = match slot.try_hold(g) {
                Hold::Held { was } => was,
                Hold::Unborn => {
                    unborn.push(i);
                    continue;
                }
                Hold::No => continue,
            };
            let copy = SlotCopy::load(slot);
            if copy.id == 0 {
                // Freed between our two loads (it had exited): give the word back.
                let _ = slot.prof.compare_exchange(in_progress, p, SeqCst, Relaxed);
                continue;
            }
            // Not resumed since an earlier sample recorded it (the count was read while
            // we hold the task, so it cannot change under us): that sample's stack is
            // this one. No copy, no unwind.
            if sink.knows(i, copy.id, copy.resumes) {
                if slot
                    .prof
                    .compare_exchange(in_progress, satisfied, SeqCst, Relaxed)
                    .is_ok()
                {
                    stats.reused += 1;
                    stats.recorded_tool += 1;
                    sink.add_known(i, copy);
                } else {
                    stats.torn += 1;
                }
                continue;
            }
            held.push((i, copy));
            continue;
        }
        failpoint("mid-walk");
        // One batched read of every held task's live stack, then release them all.
        let lens: Vec<usize> = held.iter().map(|(_, c)| c.live_len() as usize).collect();
        buf.clear();
        buf.resize(lens.iter().sum(), 0);
        let mut reqs: Vec<(u64, &mut [u8])> = Vec::with_capacity(held.len());
        let mut rest = &mut buf[..];
        for ((_, c), &n) in held.iter().zip(&lens) {
            let (head, tail) = rest.split_at_mut(n);
            reqs.push((c.sp, head));
            rest = tail;
        }
        let got = mem
            .read_many(&mut reqs)
            .map_err(|e| e.into_error(mem.pid()))?;
        drop(reqs);
        let mut off = 0;
        for (((idx, c), n), got) in held.drain(..).zip(lens).zip(got) {
            let len = got.min(n);
            let at = off;
            off += n;
            let slot = region.slot(idx).expect("held slot exists");
            if slot
                .prof
                .compare_exchange(in_progress, satisfied, SeqCst, Relaxed)
                .is_err()
            {
                // The runtime took it back (TORN): our copy may be inconsistent.
                stats.torn += 1;
                continue;
            }
            stats.bytes_copied += len as u64;
            stats.recorded_tool += 1;
            ready.push((idx, c, at, len));
        }
        cb.heartbeat.fetch_add(1, Relaxed);
        if interrupted() {
            return Err(Error::Interrupted);
        }
        for (i, c, at, len) in ready.drain(..) {
            sink.add(Copy {
                index: i,
                ip: c.pc,
                sp: c.sp,
                bp: c.fp,
                base: c.sp,
                stack: &buf[at..at + len],
                slot: c,
                by,
            });
        }
    }
    Ok(())
}

/// After STW 2: wait (bounded) until no slot is still held `IN_PROGRESS(g)` by a runtime
/// thread, then return the arena's length, and whether no hold was left. The tool holds
/// nothing by now, so every such hold is a runtime thread between its CAS and its
/// `SATISFIED` store.
fn wait_runtime_holds(region: &Region, g: u64, slots: impl Iterator<Item = u32>) -> (u64, bool) {
    let cb = region.control();
    let in_progress = prof::pack(g, prof::IN_PROGRESS);
    let held = |i: &u32| {
        region
            .slot(*i)
            .is_some_and(|s| s.prof.load(Acquire) == in_progress)
    };
    let mut holds: Vec<u32> = slots.filter(held).collect();
    let t = Instant::now();
    while !holds.is_empty() && t.elapsed() < ARENA_WAIT {
        std::thread::yield_now();
        holds.retain(held);
    }
    (
        arena_bytes(cb.arena_used.load(Acquire), g),
        holds.is_empty(),
    )
}

/// Bytes of the arena that belong to session `g` (0 if the word is another session's).
fn arena_bytes(word: u64, g: u64) -> u64 {
    if gprof_abi::arena::is_generation(word, g) {
        gprof_abi::arena::used(word)
    } else {
        0
    }
}

/// Records the runtime wrote itself, bounded and validated. `settled`: no slot was held
/// `IN_PROGRESS(g)` after STW 2, so every record of session `g` is complete (a record
/// is written between the CAS that takes its task and the one that releases it), and
/// the slots need not be looked at one by one (a cache miss each).
fn read_arena(
    region: &Region,
    g: u64,
    used: u64,
    settled: bool,
    sink: &mut dyn FnMut(Copy<&[u8]>),
) -> Result<u64> {
    let slot_cap = region.layout().slot_cap;
    let used = used.min(region.arena_len());
    // The records are read in order through a window of the file (`pread`), so the
    // whole arena costs one kernel copy per window and no page faults.
    let window = std::cell::RefCell::new(ArenaWindow::new(region, used));
    parse_arena(
        &mut |off, buf| window.borrow_mut().read(off, buf),
        &mut |off, labels_cap| {
            // Only the bytes the record holds (the rest of the view is not the slot's,
            // and is never read: `load_prefix`).
            let mut raw = [0u8; size_of::<TaskSlot>()];
            let len = (SLOT_COPY_MIN as usize + labels_cap).min(raw.len());
            window
                .borrow_mut()
                .read(off, &mut raw[..len])
                .map_err(|_| Error::bad(format!("arena slot copy at {off:#x} is misplaced")))?;
            let slot = pod_from_bytes::<TaskSlot>(&raw).expect("sized");
            Ok(SlotCopy::load_prefix(&slot, labels_cap))
        },
        &|slot| {
            if settled {
                // Any word but IN_PROGRESS: complete. `None` still marks a bad index.
                (slot < slot_cap).then_some(prof::FREE)
            } else {
                region.slot(slot).map(|s| s.prof.load(Acquire))
            }
        },
        g,
        used,
        ARENA_WAIT,
        sink,
    )
}

/// Bytes of the arena read per `pread`.
const ARENA_WINDOW: usize = 1 << 20;

/// A moving window over the arena file, refilled forward as the records are read.
struct ArenaWindow<'r> {
    region: &'r Region,
    /// Arena offset of `buf[0]`.
    start: u64,
    buf: Vec<u8>,
    /// Bytes of `buf` that hold data.
    filled: usize,
    /// Where the arena's records end, plus room for a whole-slot view of the last one.
    limit: u64,
}

impl<'r> ArenaWindow<'r> {
    fn new(region: &'r Region, used: u64) -> Self {
        ArenaWindow {
            region,
            start: 0,
            buf: Vec::new(),
            filled: 0,
            limit: (used + ArenaRecord::MIN_SPAN).min(region.arena_len()),
        }
    }

    fn read(&mut self, off: u64, out: &mut [u8]) -> Result<()> {
        let end = off.checked_add(out.len() as u64);
        let inside =
            |w: &Self| off >= w.start && end.is_some_and(|e| e <= w.start + w.filled as u64);
        if !inside(self) {
            if end.is_none_or(|e| e > self.limit) {
                // Outside what was published: read it directly (and fail if it is
                // outside the arena).
                return self.region.read_arena(off, out);
            }
            let len = ARENA_WINDOW.max(out.len()).min((self.limit - off) as usize);
            self.buf.resize(len, 0);
            self.filled = self.region.pread_arena(off, &mut self.buf[..len])?;
            self.start = off;
            if !inside(self) {
                return Err(Error::bad(format!(
                    "arena read at {off:#x} came back short"
                )));
            }
        }
        let at = (off - self.start) as usize;
        out.copy_from_slice(&self.buf[at..at + out.len()]);
        Ok(())
    }
}

/// [`read_arena`] over any source of arena bytes (`read`), slot copies (`slot_at`: the
/// copy at an arena offset, with at most so many bytes of labels) and profile words of
/// slots (`prof_of`), waiting at most `wait` in all for records that look unfinished. Each
/// record of session `g` goes to `sink`, its stack borrowed from one reused buffer;
/// returns how many did.
fn parse_arena(
    read: &mut dyn FnMut(u64, &mut [u8]) -> Result<()>,
    slot_at: &mut dyn FnMut(u64, usize) -> Result<SlotCopy>,
    prof_of: &dyn Fn(u32) -> Option<u64>,
    g: u64,
    used: u64,
    wait: Duration,
    sink: &mut dyn FnMut(Copy<&[u8]>),
) -> Result<u64> {
    let mut count = 0;
    let mut stack = Vec::with_capacity(MAX_STACK_COPY as usize);
    let mut off = 0u64;
    // The smallest record there is.
    let hdr = ArenaRecord::footprint(SLOT_COPY_MIN, 0);
    let mut head = vec![0u8; ArenaRecord::SLOT_OFFSET as usize];
    // A runtime thread may still be writing a record it reserved just before STW 2: it
    // is running again and finishes within microseconds. One bounded wait for the whole
    // arena, not one per record: a dead or hostile target can leave any number of
    // records looking unfinished (that cost 50 ms per record, seconds in all).
    let t = Instant::now();
    while off + hdr <= used {
        let rec = loop {
            read(off, &mut head)?;
            let rec: ArenaRecord = pod_from_bytes(&head).expect("sized");
            // Complete once its task is no longer held for the record's generation (a
            // record of an older session is a late write by a thread that was held up
            // across that session's STW 2; it is skipped below).
            let complete = rec.generation != 0
                && rec.generation <= g
                && prof_of(rec.slot)
                    .is_some_and(|p| p != prof::pack(rec.generation, prof::IN_PROGRESS));
            if complete || t.elapsed() > wait {
                break rec;
            }
            std::thread::yield_now();
        };
        let (stack_len, slot_len) = check_record(&rec, off, g, prof_of(rec.slot).is_some())?;
        let next = off + ArenaRecord::footprint(slot_len, stack_len);
        if next > used {
            break;
        }
        if rec.generation != g {
            off = next;
            continue;
        }
        let slot = slot_at(
            off + ArenaRecord::SLOT_OFFSET,
            (slot_len - SLOT_COPY_MIN) as usize,
        )?;
        stack.resize(stack_len as usize, 0);
        read(off + ArenaRecord::stack_offset(slot_len), &mut stack)?;
        count += 1;
        sink(Copy {
            index: rec.slot,
            slot,
            ip: rec.pc,
            sp: rec.sp,
            bp: rec.fp,
            base: rec.sp,
            stack: &stack[..],
            by: RecordedBy::Runtime,
        });
        off = next;
    }
    Ok(count)
}

/// The stack and slot lengths of an arena or ring record at `off`, checked against
/// what any record of session `g` can hold; `slot_ok`: its slot index is in the table.
fn check_record(rec: &ArenaRecord, off: u64, g: u64, slot_ok: bool) -> Result<(u64, u64)> {
    let (stack_len, slot_len) = (u64::from(rec.stack_len), u64::from(rec.slot_len));
    if rec.generation == 0
        || rec.generation > g
        || stack_len > MAX_STACK_COPY
        || !(SLOT_COPY_MIN..=size_of::<TaskSlot>() as u64).contains(&slot_len)
        || !slot_ok
    {
        return Err(Error::bad(format!(
            "arena record at {off:#x} is malformed (slot {}, slot_len {slot_len}, stack_len {stack_len}, generation {} of {g})",
            rec.slot, rec.generation
        )));
    }
    Ok((stack_len, slot_len))
}

/// Turns copies into task records: unwinds, interns, decodes the metadata. Its scratch
/// space lives across tasks, so a task whose stack was seen before allocates nothing
/// for its stack (the unwind goes into one reused buffer, and interning looks the
/// frames up by a cheap hash before it builds a `Stack`).
/// Where the walk delivers what it takes: a task it copied (`add`), or a task that has not
/// run since a previous snapshot recorded it (`knows`, then `add_known`).
trait Sink {
    fn add(&mut self, c: Copy<&[u8]>);
    /// Is there a recorded stack for the task `id` in slot `index`, taken when its
    /// resume count was `resumes`?
    fn knows(&self, index: u32, id: u64, resumes: u64) -> bool;
    /// Record the task from that stack.
    fn add_known(&mut self, index: u32, slot: SlotCopy);
}

/// `--mode stw`: the copies are kept until the world resumes, and nothing is reused.
struct Collect<'a>(&'a mut Vec<Copy>);

impl Sink for Collect<'_> {
    fn add(&mut self, c: Copy<&[u8]>) {
        self.0.push(c.into_owned());
    }
    fn knows(&self, _: u32, _: u64, _: u64) -> bool {
        false
    }
    fn add_known(&mut self, _: u32, _: SlotCopy) {
        unreachable!("Collect knows no stack")
    }
}

/// Frames of each task as last recorded, by slot ([`Session::set_reuse_unchanged`]).
/// Indexed directly: slots are dense, and the walk visits them in order (a hash map
/// here was 40 % of a 100k-task sample, one cache miss per lookup).
#[derive(Default)]
struct StackCache {
    by_slot: Vec<Option<Known>>,
}

impl StackCache {
    fn get(&self, index: u32) -> Option<&Known> {
        self.by_slot.get(index as usize)?.as_ref()
    }

    /// The entry of slot `index`; `None` for an index no valid table has (an arena
    /// record is untrusted input, and must not size an allocation).
    fn entry(&mut self, index: u32) -> Option<&mut Option<Known>> {
        if index >= crate::locate::MAX_SLOTS {
            return None;
        }
        let i = index as usize;
        if i >= self.by_slot.len() {
            self.by_slot.resize_with(i + 1, || None);
        }
        Some(&mut self.by_slot[i])
    }
}

/// One task's frames as of a snapshot, and how to tell they still hold.
struct Known {
    task_id: u64,
    resumes: u64,
    addrs: Vec<u64>,
    incomplete: bool,
    hash: u64,
}

impl Sink for Finisher<'_> {
    fn add(&mut self, c: Copy<&[u8]>) {
        Finisher::add(self, c);
    }
    fn knows(&self, index: u32, id: u64, resumes: u64) -> bool {
        self.cache
            .as_ref()
            .and_then(|c| c.get(index))
            .is_some_and(|k| k.task_id == id && k.resumes == resumes)
    }
    fn add_known(&mut self, index: u32, slot: SlotCopy) {
        let cache = self.cache.as_mut().expect("knows() said yes");
        let k = cache.get(index).expect("knows() said yes");
        let stack = intern_frames(
            &mut self.stacks,
            &mut self.seen,
            k.hash,
            &k.addrs,
            k.incomplete,
        );
        self.push_task(index, slot, stack, RecordedBy::Tool);
    }
}

struct Finisher<'a> {
    stw1_mono: u64,
    unwinder: &'a mut Unwinder,
    mem: &'a LiveMemory,
    cache: Option<&'a mut StackCache>,
    stacks: StackTable,
    tasks: Vec<TaskRecord>,
    files: FxHashMap<(u64, u32), Option<Arc<str>>>,
    /// Spawn sites by (file address, file length, line, pc).
    spawns: FxHashMap<(u64, u32, u32, u64), Arc<SpawnSite>>,
    /// Frames of the task being finished.
    addrs: Vec<u64>,
    /// Interned stacks by [`stack_hash`]; a hit is compared frame by frame.
    seen: HashMap<u64, StackId, BuildHasherDefault<HashIsKey>>,
}

impl<'a> Finisher<'a> {
    fn new(
        stw1_mono: u64,
        unwinder: &'a mut Unwinder,
        mem: &'a LiveMemory,
        tasks: Vec<TaskRecord>,
        cache: Option<&'a mut StackCache>,
    ) -> Finisher<'a> {
        Finisher {
            stw1_mono,
            unwinder,
            mem,
            cache,
            stacks: StackTable::default(),
            tasks,
            files: FxHashMap::default(),
            spawns: FxHashMap::default(),
            addrs: Vec::with_capacity(64),
            seen: HashMap::default(),
        }
    }

    fn add<S: AsRef<[u8]>>(&mut self, c: Copy<S>) {
        let end =
            self.unwinder
                .unwind_from(c.ip, c.sp, c.bp, c.base, c.stack.as_ref(), &mut self.addrs);
        let incomplete = !end.is_complete();
        let h = stack_hash(&self.addrs, incomplete);
        let stack = intern_frames(&mut self.stacks, &mut self.seen, h, &self.addrs, incomplete);
        // Not a task recorded at STW 1: it may be running, and its stack changes without a
        // new resume.
        let entry = self
            .cache
            .as_mut()
            .filter(|_| c.by != RecordedBy::StopTheWorld)
            .and_then(|cache| cache.entry(c.index));
        if let Some(entry) = entry {
            let k = entry.get_or_insert_with(|| Known {
                task_id: 0,
                resumes: 0,
                addrs: Vec::new(),
                incomplete: false,
                hash: 0,
            });
            k.task_id = c.slot.id;
            k.resumes = c.slot.resumes;
            k.addrs.clear();
            k.addrs.extend_from_slice(&self.addrs);
            k.incomplete = incomplete;
            k.hash = h;
        }
        self.push_task(c.index, c.slot, stack, c.by);
    }

    /// The task record of a task whose stack is interned as `stack`.
    fn push_task(&mut self, index: u32, s: SlotCopy, stack: StackId, by: RecordedBy) {
        let wait_ns = if s.state == TaskState::WAITING && s.wait_since_ns != 0 {
            self.stw1_mono.saturating_sub(s.wait_since_ns)
        } else {
            0
        };
        // Thousands of tasks share a spawn site: one allocation each.
        let site = (s.file_addr, s.file_len, s.line, s.spawn_pc);
        let spawn = match self.spawns.get(&site) {
            Some(shared) => shared.clone(),
            None => {
                let shared = Arc::new(SpawnSite {
                    file: spawn_file(self.mem, &mut self.files, s.file_addr, s.file_len),
                    line: s.line,
                    pc: s.spawn_pc,
                });
                self.spawns.insert(site, shared.clone());
                shared
            }
        };
        self.tasks.push(TaskRecord {
            id: s.id,
            slot: index,
            state: s.state,
            wait_reason: s.wait_reason,
            wait_ns,
            parent_id: s.parent_id,
            spawn,
            extra: TaskExtra::new(
                s.name.map(String::into_boxed_str),
                s.labels.into_boxed_slice(),
            ),
            system: s.flags & TaskSlot::FLAG_SYSTEM != 0,
            stack,
            recorded_by: by,
        });
    }
}

/// An empty vector with room for `n` elements (at most 4M), its memory already faulted
/// in, in transparent huge pages where the system allows them (`madvise` mode). A
/// million task records are 64 MB of fresh memory: in 4 KiB pages that is 16k page
/// faults (32k were 10 % of a 1M-task snapshot when a record was 128 bytes, perf); in
/// 2 MiB pages, 32.
fn prefaulted_vec<T>(n: usize) -> Vec<T> {
    const HUGE: usize = 2 << 20;
    /// `MADV_POPULATE_WRITE` (Linux 5.14), not in every libc crate version.
    const MADV_POPULATE_WRITE: libc::c_int = 23;
    let v = Vec::with_capacity(n.min(1 << 22));
    let (start, bytes) = (v.as_ptr() as usize, v.capacity() * size_of::<T>());
    let (from, to) = (start.next_multiple_of(HUGE), (start + bytes) / HUGE * HUGE);
    if to > from {
        // SAFETY: [from, to) lies inside the vector's own allocation (page-aligned
        // within it), which nothing has touched yet; MADV_HUGEPAGE changes only how the
        // kernel backs it, never its contents. A failure (THP off) changes nothing.
        unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE) };
    }
    let page = crate::locate::page_size() as usize;
    let (from, to) = (start.next_multiple_of(page), (start + bytes) / page * page);
    if to > from {
        // SAFETY: [from, to) is the page-aligned part of the vector's own, untouched
        // allocation; populating maps zero-filled pages, as a first write would, and
        // changes no byte the vector holds (it holds none). A failure (a kernel before
        // 5.14) leaves the pages to be faulted in on first use, as before.
        unsafe { libc::madvise(from as *mut libc::c_void, to - from, MADV_POPULATE_WRITE) };
    }
    v
}

/// Intern the frames `addrs` (hash `h`, see [`stack_hash`]) in `stacks`; a known stack
/// costs a lookup and a comparison, no allocation.
fn intern_frames(
    stacks: &mut StackTable,
    seen: &mut HashMap<u64, StackId, BuildHasherDefault<HashIsKey>>,
    h: u64,
    addrs: &[u64],
    incomplete: bool,
) -> StackId {
    let known = seen.get(&h).copied().filter(|&id| {
        let s = stacks.get(id);
        s.incomplete == incomplete && s.addrs == addrs
    });
    known.unwrap_or_else(|| {
        let id = stacks.intern(Stack {
            addrs: addrs.to_vec(),
            incomplete,
        });
        seen.insert(h, id);
        id
    })
}

/// FxHash-style hash of a stack's frames (a lookup key only: hits are verified).
fn stack_hash(addrs: &[u64], incomplete: bool) -> u64 {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    let mut h = u64::from(incomplete);
    for &a in addrs {
        h = (h.rotate_left(5) ^ a).wrapping_mul(K);
    }
    h
}

/// Hasher for keys that already are hashes.
#[derive(Default)]
struct HashIsKey(u64);

impl std::hash::Hasher for HashIsKey {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn decode_labels(b: &[u8]) -> Vec<(String, String)> {
    let mut parts = b.split(|&c| c == 0);
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (parts.next(), parts.next()) {
        if k.is_empty() {
            break;
        }
        out.push((
            String::from_utf8_lossy(k).into_owned(),
            String::from_utf8_lossy(v).into_owned(),
        ));
    }
    out
}

/// Longest spawn-site file name read from the target.
const MAX_FILE_NAME: u32 = 4096;

/// The spawn site's file name (a `&'static str` in the target), read once per address.
fn spawn_file(
    mem: &LiveMemory,
    cache: &mut FxHashMap<(u64, u32), Option<Arc<str>>>,
    addr: u64,
    len: u32,
) -> Option<Arc<str>> {
    if addr == 0 || len == 0 || len > MAX_FILE_NAME {
        return None;
    }
    cache
        .entry((addr, len))
        .or_insert_with(|| {
            let mut buf = vec![0u8; len as usize];
            mem.read(addr, &mut buf)
                .ok()
                .map(|_| Arc::from(String::from_utf8_lossy(&buf)))
        })
        .clone()
}

/// Fuzzing entry point (`fuzz/fuzz_targets/abi_parse.rs`, and `crate::fuzzing`'s
/// deterministic test): `slot` as a task slot of the target, `arena` as the runtime's
/// arena of session `g` with `used` bytes. Decoding hostile bytes must never panic,
/// allocate beyond the caps, or wait. Returns the number of arena records accepted.
#[doc(hidden)]
pub fn fuzz_slot_and_arena(slot: &[u8], arena: &[u8], g: u64, used: u64) -> usize {
    if let Some(s) = pod_from_bytes::<TaskSlot>(slot) {
        let c = SlotCopy::load(&s);
        assert!(c.live_len() <= MAX_STACK_COPY);
        assert!(c.name.as_ref().is_none_or(|n| n.len() <= 3 * NAME_CAP));
    }
    let len = arena.len() as u64;
    let mut read = |off: u64, buf: &mut [u8]| -> Result<()> {
        let end = off.checked_add(buf.len() as u64).filter(|&e| e <= len);
        match end {
            Some(e) => {
                buf.copy_from_slice(&arena[off as usize..e as usize]);
                Ok(())
            }
            None => Err(Error::bad("outside the arena")),
        }
    };
    // Every slot held by its writer, so every record looks unfinished: the wait is
    // bounded by the budget (zero here), not by the number of records.
    let held = |_slot: u32| Some(prof::pack(g, prof::IN_PROGRESS));
    let mut slot_at = |off: u64, labels_cap: usize| -> Result<SlotCopy> {
        let b = usize::try_from(off)
            .ok()
            .and_then(|o| arena.get(o..o.checked_add(size_of::<TaskSlot>())?))
            .ok_or_else(|| Error::bad("outside the arena"))?;
        let c = SlotCopy::load_prefix(&pod_from_bytes::<TaskSlot>(b).expect("sized"), labels_cap);
        assert!(
            c.labels
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
                <= 3 * labels_cap
        );
        Ok(c)
    };
    let mut check = |c: Copy<&[u8]>| assert!(c.stack.len() as u64 <= MAX_STACK_COPY);
    match parse_arena(
        &mut read,
        &mut slot_at,
        &held,
        g,
        used.min(len),
        Duration::ZERO,
        &mut check,
    ) {
        Ok(n) => n as usize,
        Err(_) => 0,
    }
}

/// Parse `buf` as a chunk of the helper's ring of session `g`, as if it ended at the
/// helper's head, at the ring's end, and at the read window (fuzzing entry point).
#[doc(hidden)]
pub fn fuzz_ring_chunk(buf: &[u8], g: u64) -> usize {
    use ring::ChunkEnd;
    let mut n = 0;
    for end in [ChunkEnd::Head, ChunkEnd::Ring, ChunkEnd::Window] {
        let mut check = |c: Copy<&[u8]>| {
            assert!(c.stack.len() as u64 <= MAX_STACK_COPY);
            n += 1;
        };
        if let Ok((used, _)) = ring::parse_chunk(
            buf,
            g,
            u32::MAX,
            0,
            end,
            &mut Default::default(),
            &mut check,
        ) {
            assert!(used <= buf.len() as u64);
        }
    }
    n
}
