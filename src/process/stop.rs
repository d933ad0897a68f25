//! Stop the world with ptrace, for a few tens of microseconds: the runtime's worker
//! threads ([`Tracer::stop_threads`], what snapshots use: only workers run tasks), or
//! every thread of the target ([`Tracer::stop_world`]).
//!
//! The rules come from reliability.md §0 and §2 (measured on this machine) and
//! DESIGN.md §6:
//!
//! * `PTRACE_SEIZE` + `PTRACE_INTERRUPT`, never `PTRACE_ATTACH`/SIGSTOP, never
//!   `PTRACE_O_EXITKILL`: if this process dies, the kernel detaches seized threads and
//!   they run on (`kernel/ptrace.c:exit_ptrace`; reliability.md §2.7, E2).
//! * Stops are observed with `waitid(P_PID, tid, WSTOPPED|WNOWAIT|__WALL|WNOHANG)` and
//!   never consumed: a consumed signal-delivery-stop loses its signal if we die before
//!   detaching (`kernel/exit.c:wait_task_stopped` zeroes `exit_code` unless `WNOWAIT`;
//!   reliability.md §0.2, E3/E4). We always end a stop with `PTRACE_DETACH`, which sets
//!   the tracee's `exit_code` from its `data` argument, so nothing needs consuming.
//! * Every wait has a deadline (a thread in `D` state, e.g. a vfork parent, reports its
//!   stop only when it leaves `D`: reliability.md §2.6, E10); a zombie leader never
//!   reports a stop, so `/proc` state is checked while waiting (§2.4, E7; delve
//!   `pkg/proc/native/proc_linux.go` `wait()`).
//! * New threads ([`Tracer::stop_world`]): `PTRACE_O_TRACECLONE` auto-attaches threads
//!   cloned by a seized thread, and `/proc/PID/task` is rescanned until two scans in a
//!   row find nothing new, at most [`StopConfig::max_rounds`] scans (gdb
//!   `linux_proc_attach_tgid_threads`, CRIU `collect_loop`; reliability.md §2.3). A stop
//!   of listed threads ([`Tracer::stop_threads`]) needs neither: a thread a worker clones
//!   is not a worker, and a worker that starts during the stop is found by the caller,
//!   which re-reads the runtime's worker records after publishing the session and
//!   extends the stop ([`WorldStop::extend`]; the handshake is in `gprof_abi`'s docs).
//! * A signal-delivery-stop counts as stopped; its signal goes back in `PTRACE_DETACH`
//!   (§2.9). A job-stopped target (Ctrl-Z) reports `PTRACE_EVENT_STOP` with its stop
//!   signal and is only detached, never continued, so it stays in `T` (§2.8, E8).
//!
//! # Attach per stop
//!
//! A [`Tracer`] lives as long as the profiling session and is reused for every stop,
//! but it holds threads seized only *during* a stop: [`Tracer::stop_world`] and
//! [`Tracer::stop_threads`] seize and interrupt, [`WorldStop`] detaches on drop (py-spy's
//! `remoteprocess` locks a process per sample the same way). Staying seized between stops would make
//! every signal sent to the target park the receiving thread in a signal-delivery-stop
//! until our next stop (ptrace(2), "Signal-delivery-stop"), would leave exiting
//! threads as zombies until we reap them (`kernel/exit.c:exit_notify`, traced tasks are
//! not autoreaped), and would turn an `execve` into a SIGTRAP unless we handled
//! `PTRACE_EVENT_EXEC` (ptrace(2), "execve(2) under ptrace"). Seizing is done for all
//! threads *before* the first interrupt, so its cost is outside the pause.
//!
//! The exception are threads that did not stop before the deadline: they stay seized
//! with their interrupt pending (it cannot be cancelled, and `PTRACE_DETACH` of a
//! running tracee fails with ESRCH — reliability.md §2.6, illegalstudio/elephc#798).
//! The tracer keeps them as *lagging* and detaches them as soon as they stop: at the
//! next stop, in [`Tracer::service`], or (bounded) when the tracer is dropped. If the
//! tool exits first the kernel detaches them.
//!
//! ptrace is per tracer *thread* (reliability.md §2.12): `Tracer` is `!Send`, so every
//! request comes from the thread that created it.

use std::collections::HashSet;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::regs::{self, Regs};
use crate::error::{Error, Result};

/// `PTRACE_EVENT_STOP` (linux/ptrace.h): group-stop or `PTRACE_INTERRUPT` under SEIZE.
const PTRACE_EVENT_STOP: i32 = 128;

/// Tunables of a stop.
#[derive(Debug, Clone)]
pub struct StopConfig {
    /// Most `/proc/PID/task` scans per stop (reliability.md §2.3 suggests 8).
    pub max_rounds: u32,
    /// Wake-ups (a SIGCHLD or a timeout) before a thread that has not stopped is checked
    /// in /proc for being a zombie.
    pub spin_polls: u32,
    /// Longest single sleep between polls.
    pub max_sleep: Duration,
    /// Consecutive scans that must find no new thread, with every known thread stopped,
    /// before the world counts as stopped. 2 is gdb's rule (and the brief's). One
    /// would do if `readdir` of `/proc/PID/task` always lists every thread that exists
    /// for the whole scan: then an unseen thread could only have been created during
    /// the scan by another unseen thread, which is impossible once all seen threads are
    /// stopped. Each extra scan costs tens of microseconds inside the pause.
    pub quiet_scans: u32,
}

impl Default for StopConfig {
    fn default() -> Self {
        StopConfig {
            max_rounds: 8,
            spin_polls: 3,
            max_sleep: Duration::from_millis(1),
            quiet_scans: 2,
        }
    }
}

/// Why a thread is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopKind {
    /// Our `PTRACE_INTERRUPT` (`PTRACE_EVENT_STOP` with SIGTRAP).
    Interrupt,
    /// The thread is in group-stop (job control: SIGSTOP/SIGTSTP/SIGTTIN/SIGTTOU);
    /// it must stay stopped after we detach.
    GroupStop(i32),
    /// A signal was about to be delivered; it is passed back when we detach.
    Signal(i32),
    /// Another ptrace event (`PTRACE_EVENT_CLONE`, `PTRACE_EVENT_EXEC`, ...).
    Event(i32),
}

impl StopKind {
    fn decode(status: i32) -> StopKind {
        // waitid() reports a ptrace stop as CLD_TRAPPED with si_status = the tracee's
        // exit_code = `signal | event << 8` (kernel/exit.c:wait_task_stopped,
        // kernel/signal.c:ptrace_do_notify).
        let sig = status & 0xff;
        let event = (status >> 8) & 0xff;
        match event {
            0 => StopKind::Signal(sig),
            PTRACE_EVENT_STOP if sig == libc::SIGTRAP => StopKind::Interrupt,
            PTRACE_EVENT_STOP => StopKind::GroupStop(sig),
            ev => StopKind::Event(ev),
        }
    }

    /// The signal to pass to `PTRACE_DETACH`.
    fn detach_signal(self) -> Option<Signal> {
        match self {
            StopKind::Signal(s) => Signal::try_from(s).ok(),
            _ => None,
        }
    }
}

/// One thread held by a [`WorldStop`].
#[derive(Debug, Clone)]
pub struct StoppedThread {
    /// Kernel thread id.
    pub tid: u32,
    /// Its registers at the stop.
    pub regs: Regs,
    /// Why it is stopped.
    pub stop: StopKind,
}

/// When the phases of a stop happened (no assertions on these in tests: they are for
/// `--stats` and benchmarks).
#[derive(Debug, Clone, Copy)]
pub struct StopTimings {
    /// `stop_world` was called.
    pub begin: Instant,
    /// The first `PTRACE_INTERRUPT` was issued: the pause starts here.
    pub first_interrupt: Instant,
    /// Every thread was stopped (or given up on) and its registers read.
    pub stopped: Instant,
    /// `/proc/PID/task` scans made.
    pub rounds: u32,
    /// The last scans found no new thread ([`StopConfig::quiet_scans`] in a row). False
    /// when [`StopConfig::max_rounds`] ran out while threads kept appearing: every
    /// thread seen is held, but one created after the last scan may be running.
    pub settled: bool,
}

/// Per-thread result of polling for a stop.
enum Poll {
    NotYet,
    Stopped(StopKind),
    Exited,
}

/// Which threads a stop holds.
#[derive(Clone, Copy)]
enum Scope<'a> {
    /// Every thread in `/proc/PID/task`, rescanned until stable.
    All,
    /// These TIDs (those that are threads of the target), no scans.
    Only(&'a [u32]),
}

/// The ptrace side of a profiling session. See the module docs.
#[derive(Debug)]
pub struct Tracer {
    pid: u32,
    config: StopConfig,
    /// Seized threads whose interrupt had not been reported when a stop gave up on them.
    lagging: Vec<u32>,
    /// ptrace requests must all come from one thread.
    _not_send: PhantomData<*const ()>,
}

/// Everything a stop in progress holds, so that an error can release it.
#[derive(Default)]
struct Held {
    /// Threads we saw in `/proc/PID/task` (any outcome).
    known: HashSet<u32>,
    /// Seized, interrupted, not yet reported.
    pending: Vec<u32>,
    /// Stopped, in order of stopping.
    stopped: Vec<(u32, StopKind)>,
    /// Seized but not stopped by the deadline.
    unstopped: Vec<u32>,
    first_interrupt: Option<Instant>,
    exec_seen: bool,
}

impl Tracer {
    /// A tracer for process `pid`. Checks that the process exists and that we may trace
    /// it (a cheap pre-check of the kernel's ptrace access rule; the real answer comes
    /// from `PTRACE_SEIZE` at the first stop).
    pub fn new(pid: u32) -> Result<Tracer> {
        Self::with_config(pid, StopConfig::default())
    }

    /// [`Tracer::new`] with explicit tunables.
    pub fn with_config(pid: u32, config: StopConfig) -> Result<Tracer> {
        if pid == 0 || pid > i32::MAX as u32 {
            return Err(Error::ProcessNotFound { pid });
        }
        // Only a thread-group leader has its own /proc/PID/task; a TID is not a PID here.
        match std::fs::metadata(format!("/proc/{pid}/task")) {
            Ok(_) => {}
            Err(e) => return Err(crate::error::from_proc_io(pid, e)),
        }
        if proc_tgid(pid) != Some(pid) {
            return Err(Error::ProcessNotFound { pid });
        }
        // Opening /proc/PID/mem makes the same PTRACE_MODE_ATTACH check as PTRACE_SEIZE
        // (fs/proc/base.c:mem_open -> proc_mem_open -> mm_access; FSCREDS instead of
        // REALCREDS), Yama included: fail early with the right hint rather than at the
        // first stop.
        // A zombie leader has no mm (ESRCH): ask through a live thread.
        let (dir, _) = crate::locate::proc_dir(pid);
        if let Err(e) = std::fs::File::open(format!("{dir}/mem")) {
            return Err(crate::error::from_proc_io(pid, e));
        }
        block_sigchld();
        Ok(Tracer {
            pid,
            config,
            lagging: Vec::new(),
            _not_send: PhantomData,
        })
    }

    /// The target PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Threads still seized from an earlier stop that gave up on them.
    pub fn lagging(&self) -> &[u32] {
        &self.lagging
    }

    /// Detach lagging threads that have stopped since (non-blocking). Call it now and
    /// then between stops when a stop reported [`WorldStop::unstopped`] threads; returns
    /// how many remain lagging.
    pub fn service(&mut self) -> usize {
        let pid = self.pid;
        self.lagging.retain(|&tid| match poll(tid) {
            Poll::Stopped(kind) => {
                let _ = ptrace::detach(Pid::from_raw(tid as i32), kind.detach_signal());
                false
            }
            Poll::Exited => {
                reap(pid, tid);
                false
            }
            Poll::NotYet => !matches!(thread_state(pid, tid), None | Some('Z') | Some('X')),
        });
        self.lagging.len()
    }

    /// Stop every thread of the target. Threads that have not stopped by `deadline` are
    /// listed in [`WorldStop::unstopped`]: they cannot run user code (a seized thread
    /// with a pending interrupt traps before returning to user mode; reliability.md
    /// §2.6), but their registers are unknown. Dropping the returned guard resumes
    /// every thread.
    pub fn stop_world(&mut self, deadline: Instant) -> Result<WorldStop<'_>> {
        self.stop(Scope::All, deadline)
    }

    /// Stop only the threads `tids` of the target (its runtime's workers), with the same
    /// guarantees as [`Tracer::stop_world`] for each, and none of its `/proc/PID/task`
    /// scans: the pause is O(listed threads). Other threads run on. A listed TID that is
    /// not (or no longer) a thread of the target is skipped, never seized: the list
    /// comes from the target's memory and is untrusted.
    ///
    /// Go's stop-the-world works the same way: it stops every P (the right to run Go
    /// code), not every OS thread; threads in system calls or C code keep running and
    /// must acquire a P to touch Go state. Here a worker thread is the only kind of
    /// thread that runs task code or switches stacks (`target-runtime/src/sched.rs`);
    /// the timer thread, `blocking` helpers and the program's own threads only wake or
    /// spawn tasks, through the same atomics the profile barrier orders.
    pub fn stop_threads(&mut self, tids: &[u32], deadline: Instant) -> Result<WorldStop<'_>> {
        self.stop(Scope::Only(tids), deadline)
    }

    fn stop(&mut self, scope: Scope<'_>, deadline: Instant) -> Result<WorldStop<'_>> {
        let begin = Instant::now();
        let mut held = Held::default();
        // Lagging threads from an earlier stop are still seized: wait for them again.
        for tid in std::mem::take(&mut self.lagging) {
            held.known.insert(tid);
            held.pending.push(tid);
        }
        match self.stop_inner(scope, deadline, &mut held) {
            Ok((threads, rounds, settled)) => {
                let stopped = Instant::now();
                let timings = StopTimings {
                    begin,
                    first_interrupt: held.first_interrupt.unwrap_or(begin),
                    stopped,
                    rounds,
                    settled,
                };
                let stop = WorldStop {
                    tracer: self,
                    threads,
                    unstopped: held.unstopped,
                    timings,
                    done: false,
                };
                if held.exec_seen {
                    let pid = stop.tracer.pid;
                    drop(stop);
                    return Err(Error::TargetExeced { pid });
                }
                Ok(stop)
            }
            Err(e) => {
                self.release(&mut held);
                Err(e)
            }
        }
    }

    fn stop_inner(
        &mut self,
        scope: Scope<'_>,
        deadline: Instant,
        held: &mut Held,
    ) -> Result<(Vec<StoppedThread>, u32, bool)> {
        let pid = self.pid;
        let mut quiet = 0;
        let mut settled = false;
        let mut rounds = 0;
        // Lagging threads carried over: re-interrupting is harmless and covers the case
        // where the earlier interrupt was consumed by another stop meanwhile.
        for &tid in &held.pending {
            let _ = ptrace::interrupt(Pid::from_raw(tid as i32));
        }
        if let Scope::Only(tids) = scope {
            rounds = 1;
            settled = true;
            let new: Vec<u32> = tids
                .iter()
                .copied()
                .filter(|&t| held.known.insert(t) && is_thread_of(pid, t))
                .collect();
            let mut seized = Vec::with_capacity(new.len());
            for tid in new {
                if self.seize(tid, false)? {
                    seized.push(tid);
                }
            }
            self.interrupt_all(seized, held)?;
            self.wait_pending(held, deadline);
        }
        while matches!(scope, Scope::All) && rounds < self.config.max_rounds {
            rounds += 1;
            let tids = list_threads(pid)?;
            let new: Vec<u32> = tids
                .into_iter()
                .filter(|t| !held.known.contains(t))
                .collect();
            if new.is_empty() && held.pending.is_empty() {
                // gdb linux_proc_attach_tgid_threads: "two iterations without finding
                // new threads".
                quiet += 1;
                if quiet >= self.config.quiet_scans.max(1) {
                    settled = true;
                    break;
                }
                continue;
            }
            quiet = 0;
            // Seize everything new first (threads keep running: outside the pause)...
            let mut seized = Vec::with_capacity(new.len());
            for tid in new {
                held.known.insert(tid);
                if self.seize(tid, true)? {
                    seized.push(tid);
                }
            }
            // ...then interrupt them back to back.
            self.interrupt_all(seized, held)?;
            self.wait_pending(held, deadline);
        }
        // Only a stop that caught nothing needs to ask whether the process is still there
        // (a readdir inside the pause otherwise).
        if held.stopped.is_empty()
            && (matches!(scope, Scope::All) || !held.known.is_empty())
            && (list_threads(pid).is_err() || held.unstopped.is_empty() && !pid_alive(pid))
        {
            return Err(Error::ProcessExited { pid });
        }
        // Registers: one PTRACE_GETREGS per stopped thread, O(threads).
        let mut threads = Vec::with_capacity(held.stopped.len());
        let mut i = 0;
        while i < held.stopped.len() {
            let (tid, stop) = held.stopped[i];
            if let StopKind::Event(libc::PTRACE_EVENT_EXEC) = stop {
                held.exec_seen = true;
            }
            match regs::read(Pid::from_raw(tid as i32)) {
                Ok(regs) => {
                    threads.push(StoppedThread { tid, regs, stop });
                    i += 1;
                }
                // Killed (SIGKILL wakes traced threads) after it stopped.
                Err(Errno::ESRCH) => {
                    held.stopped.swap_remove(i);
                    reap(pid, tid);
                }
                Err(e) => {
                    return Err(Error::Ptrace {
                        op: "GETREGS",
                        tid,
                        source: e.into(),
                    })
                }
            }
        }
        threads.sort_by_key(|t| t.tid);
        Ok((threads, rounds, settled))
    }

    /// `PTRACE_SEIZE` one thread. `Ok(true)` = seized (or already ours), `Ok(false)` =
    /// gone or a zombie, `Err` = permission.
    fn seize(&self, tid: u32, trace_clone: bool) -> Result<bool> {
        // TRACECLONE (whole-process stops only): clones of a seized thread are attached
        // at birth and start in PTRACE_EVENT_STOP (ptrace(2), PTRACE_O_TRACECLONE; delve
        // addThread). A stop of listed threads leaves clones alone: they are not workers.
        // TRACEEXEC: an execve shows up as PTRACE_EVENT_EXEC instead of a SIGTRAP that
        // re-injecting would turn into a crash (ptrace(2), "execve(2) under ptrace").
        // Never EXITKILL (reliability.md §0.1).
        let mut opts = ptrace::Options::PTRACE_O_TRACEEXEC;
        if trace_clone {
            opts |= ptrace::Options::PTRACE_O_TRACECLONE;
        }
        match ptrace::seize(Pid::from_raw(tid as i32), opts) {
            Ok(()) => Ok(true),
            Err(Errno::ESRCH) => Ok(false),
            Err(Errno::EPERM) => {
                // Classify in the order of reliability.md §2.1 "Our handling".
                match thread_state(self.pid, tid) {
                    // Exited meanwhile, or a zombie (a zombie leader gives EPERM to
                    // SEIZE: E6; CRIU compel_interrupt_task / compel_wait_task).
                    None | Some('Z') | Some('X') => return Ok(false),
                    _ => {}
                }
                // Already ours: auto-attached through TRACECLONE (delve tolerates EPERM
                // here for the same reason). TracerPid is the tracer thread's TID.
                let tracer = tracer_pid(self.pid, tid);
                if tracer.is_some_and(|t| t == gettid() || t == std::process::id()) {
                    return Ok(true);
                }
                Err(Error::permission(self.pid))
            }
            Err(e) => Err(Error::Ptrace {
                op: "SEIZE",
                tid,
                source: e.into(),
            }),
        }
    }

    /// `PTRACE_INTERRUPT` freshly seized threads back to back; the pause starts at the
    /// first one.
    fn interrupt_all(&self, seized: Vec<u32>, held: &mut Held) -> Result<()> {
        for tid in seized {
            match ptrace::interrupt(Pid::from_raw(tid as i32)) {
                Ok(()) => {
                    held.first_interrupt.get_or_insert_with(Instant::now);
                    held.pending.push(tid);
                }
                // ESRCH: gone between SEIZE and INTERRUPT (reliability.md §2.3 item 4).
                Err(Errno::ESRCH) => reap(self.pid, tid),
                Err(e) => {
                    return Err(Error::Ptrace {
                        op: "INTERRUPT",
                        tid,
                        source: e.into(),
                    })
                }
            }
        }
        Ok(())
    }

    /// Wait until every pending thread has stopped, exited, or the deadline passed.
    fn wait_pending(&self, held: &mut Held, deadline: Instant) {
        let pid = self.pid;
        let mut polls: u32 = 0;
        let mut sleep = Duration::from_micros(200);
        loop {
            let check_proc = polls >= self.config.spin_polls;
            let mut i = 0;
            while i < held.pending.len() {
                let tid = held.pending[i];
                match poll(tid) {
                    Poll::Stopped(kind) => {
                        held.stopped.push((tid, kind));
                        held.pending.swap_remove(i);
                    }
                    Poll::Exited => {
                        reap(pid, tid);
                        held.pending.swap_remove(i);
                    }
                    Poll::NotYet => {
                        // A seized leader that exits becomes a zombie whose stop is never
                        // reported (reliability.md §2.4, E7): look at /proc once spinning
                        // has not helped. The zombie stays seized: it cannot be detached
                        // (not stopped), and the kernel drops it when the group exits.
                        if check_proc
                            && matches!(thread_state(pid, tid), None | Some('Z') | Some('X'))
                        {
                            held.pending.swap_remove(i);
                        } else {
                            i += 1;
                        }
                    }
                }
            }
            if held.pending.is_empty() {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                held.unstopped.append(&mut held.pending);
                return;
            }
            polls += 1;
            // Sleep until the kernel reports a tracee stop (SIGCHLD, blocked in this
            // thread and taken synchronously) instead of spinning: the tool runs at
            // SCHED_FIFO during a stop, and a spinning FIFO thread would keep a tracee that
            // shares its CPU from ever reaching its trap. The wait is capped so that a
            // SIGCHLD taken by another thread, or coalesced, costs a re-poll, not a hang.
            wait_for_sigchld(sleep.min(deadline - now));
            sleep = (sleep * 2).min(self.config.max_sleep);
        }
    }

    /// Undo a (partial) stop: detach stopped threads, remember unstopped ones as lagging.
    fn release(&mut self, held: &mut Held) {
        for (tid, kind) in held.stopped.drain(..) {
            detach(self.pid, tid, kind);
        }
        // Seized, interrupt pending or not yet reported: cannot be detached until it stops.
        self.lagging.append(&mut held.pending);
        self.lagging.append(&mut held.unstopped);
        self.service();
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        // Give lagging threads a bounded chance to stop so they can be detached; after
        // that the kernel detaches them when this process exits (reliability.md §2.6).
        let until = Instant::now() + Duration::from_millis(100);
        while self.service() > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Every thread of the target, stopped. Dropping it (or [`WorldStop::resume`]) detaches
/// them all, re-injecting pending signals and leaving job-stopped threads stopped.
#[derive(Debug)]
pub struct WorldStop<'t> {
    tracer: &'t mut Tracer,
    threads: Vec<StoppedThread>,
    unstopped: Vec<u32>,
    timings: StopTimings,
    done: bool,
}

impl WorldStop<'_> {
    /// The stopped threads, sorted by TID.
    pub fn threads(&self) -> &[StoppedThread] {
        &self.threads
    }
    /// Threads seized and interrupted that had not stopped by the deadline (e.g. in `D`
    /// state): registers unknown.
    pub fn unstopped(&self) -> &[u32] {
        &self.unstopped
    }
    /// When the phases of this stop happened.
    pub fn timings(&self) -> StopTimings {
        self.timings
    }
    /// Is the whole target job-stopped (every stopped thread in group-stop)? Then it will
    /// stay stopped after we detach, and nothing in it runs until someone sends SIGCONT.
    pub fn job_stopped(&self) -> bool {
        !self.threads.is_empty()
            && self
                .threads
                .iter()
                .all(|t| matches!(t.stop, StopKind::GroupStop(_)))
    }
    /// The target PID.
    pub fn pid(&self) -> u32 {
        self.tracer.pid
    }

    /// Also stop those of `tids` that this stop does not hold yet (a worker that started
    /// after the list was read). Inside the pause, so only for the rare late thread.
    pub fn extend(&mut self, tids: &[u32], deadline: Instant) -> Result<()> {
        let mut held = Held::default();
        held.known.extend(self.threads.iter().map(|t| t.tid));
        held.known.extend(self.unstopped.iter().copied());
        match self
            .tracer
            .stop_inner(Scope::Only(tids), deadline, &mut held)
        {
            Ok((threads, _, _)) => {
                self.threads.extend(threads);
                self.threads.sort_by_key(|t| t.tid);
                self.unstopped.append(&mut held.unstopped);
                if held.exec_seen {
                    return Err(Error::TargetExeced {
                        pid: self.tracer.pid,
                    });
                }
                Ok(())
            }
            Err(e) => {
                self.tracer.release(&mut held);
                Err(e)
            }
        }
    }

    /// Resume every thread now; returns the instant the last thread was released.
    pub fn resume(mut self) -> Instant {
        self.resume_inner()
    }

    fn resume_inner(&mut self) -> Instant {
        if !self.done {
            self.done = true;
            let pid = self.tracer.pid;
            for t in &self.threads {
                detach(pid, t.tid, t.stop);
            }
            self.tracer.lagging.append(&mut self.unstopped);
        }
        let at = Instant::now();
        if !self.tracer.lagging.is_empty() {
            self.tracer.service();
        }
        at
    }
}

impl Drop for WorldStop<'_> {
    fn drop(&mut self) {
        self.resume_inner();
    }
}

/// `PTRACE_DETACH`, with the pending signal of a signal-delivery-stop (reliability.md
/// §2.9, preferred option). A group-stopped thread is detached with no signal and stays
/// in group-stop (§2.8: never PTRACE_CONT it). With the same signal number the kernel
/// keeps the original siginfo (`kernel/signal.c:ptrace_signal` only fakes one when the
/// number changed), so queued RT payloads survive.
fn detach(pid: u32, tid: u32, kind: StopKind) {
    match ptrace::detach(Pid::from_raw(tid as i32), kind.detach_signal()) {
        Ok(()) => {}
        // Killed while stopped (SIGKILL wakes traced threads): reap if it is ours to reap.
        Err(Errno::ESRCH) => reap(pid, tid),
        Err(_) => {}
    }
}

/// Non-blocking `waitid(P_PID, tid, WSTOPPED|WEXITED|WNOWAIT|WNOHANG|__WALL)`.
fn poll(tid: u32) -> Poll {
    // SAFETY: siginfo_t is plain data; all-zero is a valid value (si_pid == 0 is how
    // WNOHANG reports "nothing yet", waitid(2)).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // WNOWAIT: observe without consuming (reliability.md §0.2). __WALL: tid is a thread
    // (clone child), not only a process (waitid(2)).
    let flags = libc::WSTOPPED | libc::WEXITED | libc::WNOWAIT | libc::WNOHANG | libc::__WALL;
    // SAFETY: `info` is a valid, writable siginfo_t for the duration of the call.
    let r = unsafe { libc::waitid(libc::P_PID, tid as libc::id_t, &mut info, flags) };
    if r < 0 {
        // ECHILD: not (or no longer) our tracee — it exited and was reaped.
        return Poll::Exited;
    }
    // SAFETY: waitid filled `info` (or left it zeroed); these accessors read the
    // SIGCHLD fields, which is what waitid writes.
    let (si_pid, si_status) = unsafe { (info.si_pid(), info.si_status()) };
    if si_pid == 0 {
        return Poll::NotYet;
    }
    match info.si_code {
        libc::CLD_TRAPPED => Poll::Stopped(StopKind::decode(si_status)),
        // A plain job-control stop reported to us as the real parent; for a tracee
        // the kernel reports ptrace stops instead (kernel/exit.c:wait_consider_task).
        libc::CLD_STOPPED => Poll::Stopped(StopKind::GroupStop(si_status & 0xff)),
        libc::CLD_EXITED | libc::CLD_KILLED | libc::CLD_DUMPED => Poll::Exited,
        _ => Poll::NotYet,
    }
}

/// Reap an exited traced thread that is not the leader: a traced thread is not
/// autoreaped (kernel/exit.c:exit_notify) and would hold back the process's exit
/// notification. The leader is left alone: the process's real parent reaps it (and
/// that may be us, in tests).
fn reap(pid: u32, tid: u32) {
    if tid == pid {
        return;
    }
    // SAFETY: as in `poll`.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is valid for writes; WNOHANG never blocks.
    unsafe {
        libc::waitid(
            libc::P_PID,
            tid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::__WALL,
        )
    };
}

fn gettid() -> u32 {
    nix::unistd::gettid().as_raw() as u32
}

/// TIDs in `/proc/PID/task`.
fn list_threads(pid: u32) -> Result<Vec<u32>> {
    let dir =
        std::fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ESRCH) => Error::ProcessExited { pid },
            _ => crate::error::from_proc_io(pid, e),
        })?;
    let mut out = Vec::new();
    for ent in dir {
        // An entry can vanish while we read; that thread is gone.
        let Ok(ent) = ent else { continue };
        if let Some(tid) = ent.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
            out.push(tid);
        }
    }
    Ok(out)
}

/// Is `tid` a thread of process `pid`? (A TID read from the target's memory could name
/// any process on the machine.)
fn is_thread_of(pid: u32, tid: u32) -> bool {
    tid != 0
        && tid <= i32::MAX as u32
        && std::fs::metadata(format!("/proc/{pid}/task/{tid}")).is_ok()
}

fn pid_alive(pid: u32) -> bool {
    !matches!(thread_state(pid, pid), None | Some('Z') | Some('X'))
        || list_threads(pid).is_ok_and(|t| {
            t.iter()
                .any(|&t| t != pid && !matches!(thread_state(pid, t), None | Some('Z') | Some('X')))
        })
}

/// State letter of a thread from `/proc/PID/task/TID/stat` (`None` if it is gone).
pub fn thread_state(pid: u32, tid: u32) -> Option<char> {
    let s = std::fs::read(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    // "tid (comm) S ...": comm may contain ')' and spaces; the state follows the last ')'.
    let close = s.iter().rposition(|&c| c == b')')?;
    s.get(close + 2).map(|&c| c as char)
}

/// State letter of every thread of `pid` (for tests and diagnostics).
pub fn thread_states(pid: u32) -> Vec<(u32, char)> {
    list_threads(pid)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|t| thread_state(pid, t).map(|s| (t, s)))
        .collect()
}

fn status_field(pid: u32, tid: u32, name: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_string())
}

fn tracer_pid(pid: u32, tid: u32) -> Option<u32> {
    status_field(pid, tid, "TracerPid:")?.parse().ok()
}

fn proc_tgid(pid: u32) -> Option<u32> {
    status_field(pid, pid, "Tgid:")?.parse().ok()
}

/// Block SIGCHLD in the calling thread, so that [`wait_for_sigchld`] can take it
/// synchronously. Threads created afterwards inherit the mask.
fn block_sigchld() {
    // SAFETY: manipulates the calling thread's signal mask with valid pointers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Wait up to `timeout` for a SIGCHLD (a tracee stopped or a child exited).
fn wait_for_sigchld(timeout: Duration) {
    // SAFETY: sigtimedwait with valid pointers to local values; SIGCHLD is blocked in
    // this thread (Tracer::with_config), so it is taken here rather than delivered.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        libc::sigtimedwait(&set, std::ptr::null_mut(), &ts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_stop_status() {
        assert_eq!(
            StopKind::decode(libc::SIGTRAP | PTRACE_EVENT_STOP << 8),
            StopKind::Interrupt
        );
        assert_eq!(
            StopKind::decode(libc::SIGSTOP | PTRACE_EVENT_STOP << 8),
            StopKind::GroupStop(libc::SIGSTOP)
        );
        assert_eq!(
            StopKind::decode(libc::SIGUSR1),
            StopKind::Signal(libc::SIGUSR1)
        );
        assert_eq!(
            StopKind::decode(libc::SIGTRAP | libc::PTRACE_EVENT_CLONE << 8),
            StopKind::Event(libc::PTRACE_EVENT_CLONE)
        );
        assert_eq!(
            StopKind::Signal(libc::SIGUSR1).detach_signal(),
            Some(Signal::SIGUSR1)
        );
        assert_eq!(StopKind::GroupStop(libc::SIGSTOP).detach_signal(), None);
        assert_eq!(StopKind::Interrupt.detach_signal(), None);
    }

    #[test]
    fn own_thread_state_is_readable() {
        let pid = std::process::id();
        assert!(matches!(thread_state(pid, pid), Some('R') | Some('S')));
        assert!(thread_state(pid, u32::MAX).is_none());
    }
}
