//! The runtime's half of the concurrent goroutine-profile protocol (gprof_abi docs).
//!
//! The scheduler calls [`before_run`] before it switches into a task, but only when the
//! session word has the ACTIVE bit: with no profile the cost is that one relaxed load.
//! Here the runtime either records the task itself (it won the CAS), or waits for the
//! profiler that holds it, bounded by the lease, or runs it at once (already recorded).
//!
//! Nothing here takes a lock a ptrace-stopped thread could hold, and every wait has a
//! bound measured by the runtime's own clock (DESIGN invariants 5 and 6).

use crate::region;
use crate::task::Task;
use gprof_abi::{
    prof, session, ArenaRecord, ControlBlock, TaskSlot, LABELS_CAP, MAX_STACK_COPY, SLOT_COPY_MIN,
};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::time::{Duration, Instant};

/// Spin this long on a task the profiler holds before checking that it is alive.
const HOLD_SPIN: Duration = Duration::from_millis(1);

/// What the scheduler should do with the task.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Barrier {
    /// Run it.
    Run,
    /// The arena is full and the profiler has not recorded it yet: run something else.
    Deferred,
}

/// The profile barrier. See the module docs.
pub(crate) fn before_run(task: &Task) -> Barrier {
    let b = before_run_inner(task);
    // A deferral episode (see `barrier`) ends when the task runs.
    if b == Barrier::Run && task.held_since_ns.load(Relaxed) != 0 {
        task.held_since_ns.store(0, Relaxed);
    }
    b
}

fn before_run_inner(task: &Task) -> Barrier {
    let region = region::get();
    let cb = region.control();
    let slot = task.slot();
    'session: loop {
        let s = cb.session.load(Acquire);
        if !session::is_active(s) {
            return Barrier::Run;
        }
        // Fast path while a session is active: a task already recorded for it (most
        // switches once the first pass is over) costs one more load and a compare.
        let p = slot.prof.load(Acquire);
        if prof::generation(p) == session::generation(s) && prof::state(p) == prof::SATISFIED {
            return Barrier::Run;
        }
        note_session(cb);
        match barrier(cb, task, slot, s) {
            Some(b) => return b,
            // The session ended while the task was held: look at the new session word.
            None => continue 'session,
        }
    }
}

/// [`before_run`] for the active session `s`; `None` when `s` ended (aborted, or a
/// newer session began) while the task was held.
fn barrier(cb: &ControlBlock, task: &Task, slot: &TaskSlot, s: u64) -> Option<Barrier> {
    let g = session::generation(s);
    loop {
        let p = slot.prof.load(Acquire);
        if prof::is_absent_for(p, g) {
            if slot
                .prof
                .compare_exchange(p, prof::pack(g, prof::IN_PROGRESS), SeqCst, Relaxed)
                .is_err()
            {
                continue;
            }
            return Some(match record_held(cb, task.slot, task.id, slot, g, p) {
                Recorded::Yes | Recorded::Lost => Barrier::Run,
                Recorded::GivenBack => Barrier::Deferred,
            });
        }
        if prof::generation(p) == g && prof::state(p) == prof::IN_PROGRESS {
            // The profiler is copying this task (it holds a batch for one read). Run
            // something else first instead of spinning: on a machine with few cores a
            // spinning worker takes the CPU the profiler needs to finish. Only a hold
            // that outlasts HOLD_SPIN goes to the bounded wait, which checks the lease.
            let now = crate::timer::coarse_now_ns();
            let since = task.held_since_ns.load(Relaxed);
            if since == 0 {
                task.held_since_ns.store(now, Relaxed);
                return Some(Barrier::Deferred);
            }
            if now.saturating_sub(since) < HOLD_SPIN.as_nanos() as u64 {
                return Some(Barrier::Deferred);
            }
            task.held_since_ns.store(0, Relaxed);
            wait_for_profiler(cb, slot, s);
            if cb.session.load(Acquire) != s {
                // Session `s` was aborted (its profiler died, or overran its cap) or
                // has ended while the task was still held: the word will never move
                // again. Take the task back (TORN: a profiler still copying it discards
                // its copy), then follow the current session word. Without this the
                // scheduler spun here forever: the slot stays IN_PROGRESS(g), and
                // `wait_for_profiler` returns at once because the session changed.
                let held = prof::pack(g, prof::IN_PROGRESS);
                let _ =
                    slot.prof
                        .compare_exchange(held, prof::pack(g, prof::TORN), SeqCst, Relaxed);
                return None;
            }
            continue;
        }
        return Some(Barrier::Run);
    }
}

/// First sight of a session: stamp it and start the watchdog.
fn note_session(cb: &ControlBlock) {
    if cb.session_seen_ns.load(Relaxed) == 0 {
        cb.session_seen_ns.store(crate::timer::now_ns(), Relaxed);
    }
    let w = crate::sched::worker_ptr();
    if !w.is_null() {
        // SAFETY: a non-null worker pointer refers to this thread's live WorkerCtx.
        let w = unsafe { &*w };
        w.shared.timers.poke();
    }
}

/// What [`record_held`] did with a task.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// Its record is in the arena and it is `SATISFIED(g)`.
    Yes,
    /// No room (or the arena is a newer session's): given back to the profiler, which
    /// walks every slot again (`arena_full`).
    GivenBack,
    /// Not recorded, and the word is no longer ours to give back: a later session's
    /// STW 1 has taken the task meanwhile.
    Lost,
}

/// Record the task in slot `index` (id `id`), which the caller holds `IN_PROGRESS(g)`
/// after replacing the word `was`, into the arena, and release it: the runtime's side
/// of protocol step 2, for the barrier and for worker assists alike.
///
/// Both ends of the hold are CASes: if this thread was held up since it loaded the
/// session word and a later session's STW 1 has meanwhile recorded the task (a
/// worker's current task) and marked it SATISFIED, that word must stay.
pub(crate) fn record_held(
    cb: &ControlBlock,
    index: u32,
    id: u64,
    slot: &TaskSlot,
    g: u64,
    was: u64,
) -> Recorded {
    let held = prof::pack(g, prof::IN_PROGRESS);
    if record_self(cb, index, id, slot, g) {
        cb.self_recorded.fetch_add(1, Relaxed);
        let done = prof::pack(g, prof::SATISFIED);
        let _ = slot.prof.compare_exchange(held, done, Release, Relaxed);
        return Recorded::Yes;
    }
    if slot
        .prof
        .compare_exchange(held, was, Release, Relaxed)
        .is_err()
    {
        return Recorded::Lost;
    }
    cb.arena_full.fetch_add(1, Relaxed);
    Recorded::GivenBack
}

/// Copy a held task's saved registers, slot fields and live stack into the arena.
/// `false` when the arena is full, or the reservation fell into a newer session's.
///
/// The caller holds the task `IN_PROGRESS(g)`: nobody runs it, so its stack, saved
/// registers, name and labels stand still during the copy.
fn record_self(cb: &ControlBlock, index: u32, id: u64, slot: &TaskSlot, g: u64) -> bool {
    let region = region::get();
    let shape = RecordShape::of(slot);
    let (arena, arena_len) = region.arena();
    let word = cb.arena_used.fetch_add(shape.need, Relaxed);
    if !gprof_abi::arena::is_generation(word, g) {
        // A newer session reset the arena after we loaded the session word: this
        // reservation is in its records. Leave it unwritten (abi docs, `arena`).
        return false;
    }
    let off = gprof_abi::arena::used(word);
    // Room for the record and for a reader's whole-slot view of it (`MIN_SPAN`).
    if off
        .checked_add(shape.need.max(ArenaRecord::MIN_SPAN))
        .is_none_or(|end| end > arena_len)
    {
        return false;
    }
    // SAFETY: [off, off + need) lies inside the arena (checked above) and was handed to
    // us alone by the fetch_add; the caller holds the task.
    unsafe { shape.write((arena + off) as *mut u8, index, id, slot, g) };
    true
}

/// The size of a held task's record ([`ArenaRecord`]): what [`RecordShape::write`]
/// copies, decided once so that the space reserved and the bytes written agree.
pub(crate) struct RecordShape {
    /// Stack pointer the copy starts at.
    sp: u64,
    /// Live stack bytes, `[sp, stack_hi)`.
    live: u64,
    /// Stack bytes copied: `live`, at most `MAX_STACK_COPY`.
    len: u64,
    /// Slot bytes copied: the fixed fields and the labels in use.
    slot_len: u64,
    /// Bytes the record takes.
    pub(crate) need: u64,
}

impl RecordShape {
    /// The shape of the record of `slot`, whose task the caller holds (it stands still).
    pub(crate) fn of(slot: &TaskSlot) -> RecordShape {
        let sp = slot.saved.sp.load(Relaxed);
        let live = slot.stack_hi.load(Relaxed).saturating_sub(sp);
        let len = live.min(MAX_STACK_COPY);
        // Only the labels in use: most tasks have none, and the copy is what a snapshot
        // of every parked task costs (abi docs, `ArenaRecord`).
        let labels = u64::from(slot.labels_len.load(Relaxed)).min(LABELS_CAP as u64);
        let slot_len = SLOT_COPY_MIN + labels;
        RecordShape {
            sp,
            live,
            len,
            slot_len,
            need: ArenaRecord::footprint(slot_len, len),
        }
    }

    /// Write the record of the task in slot `index` (id `id`, session `g`) at `dst`.
    ///
    /// # Safety
    ///
    /// `dst` is valid for `self.need` bytes that nobody else writes or reads meanwhile
    /// (the reader waits for the record to be published), and the caller holds the
    /// task `IN_PROGRESS(g)` since before [`RecordShape::of`]: nobody runs it, so its
    /// stack, saved registers, name and labels stand still during the copy.
    pub(crate) unsafe fn write(&self, dst: *mut u8, index: u32, id: u64, slot: &TaskSlot, g: u64) {
        let rec = ArenaRecord {
            slot: index,
            flags: if self.live > self.len {
                ArenaRecord::FLAG_TRUNCATED
            } else {
                0
            },
            task_id: id,
            generation: g,
            sp: self.sp,
            pc: slot.saved.pc.load(Relaxed),
            fp: slot.saved.fp.load(Relaxed),
            stack_len: self.len as u32,
            slot_len: self.slot_len as u32,
            state: slot.state.load(Relaxed),
            wait_reason: slot.wait_reason.load(Relaxed),
        };
        // SAFETY: `dst` is ours for `need` bytes (caller); the first `slot_len` <=
        // size_of::<TaskSlot>() bytes of the slot are in the mapped table; the stack
        // bytes [sp, sp + len) are the task's own mapped stack, which nobody runs on
        // while it is held.
        unsafe {
            std::ptr::write_unaligned(dst as *mut ArenaRecord, rec);
            std::ptr::copy_nonoverlapping(
                slot as *const TaskSlot as *const u8,
                dst.add(ArenaRecord::SLOT_OFFSET as usize),
                self.slot_len as usize,
            );
            std::ptr::copy_nonoverlapping(
                self.sp as *const u8,
                dst.add(ArenaRecord::stack_offset(self.slot_len) as usize),
                self.len as usize,
            );
        }
    }
}

/// The session word and heartbeat value of the last lease judged stale. A later wait in
/// the same session that finds the heartbeat still at that value takes its task back at
/// once: without this, every task a silent profiler held cost the worker that met it a
/// whole lease (128 held tasks on 2 workers: 6.4 s at 100 ms each). Written
/// `STALE_SESSION = 0`, `STALE_BEAT`, then `STALE_SESSION` (Release), so a reader that
/// sees the session sees its beat.
static STALE_SESSION: AtomicU64 = AtomicU64::new(0);
static STALE_BEAT: AtomicU64 = AtomicU64::new(0);

/// Wait while the profiler holds the task; take it back if the profiler is gone or
/// silent. Returns when the hold is over one way or the other.
fn wait_for_profiler(cb: &ControlBlock, slot: &TaskSlot, s: u64) {
    let g = session::generation(s);
    let held = prof::pack(g, prof::IN_PROGRESS);
    let start = Instant::now();
    let mut beat = cb.heartbeat.load(Relaxed);
    let mut beat_at = start;
    loop {
        if slot.prof.load(Acquire) != held || cb.session.load(Acquire) != s {
            return;
        }
        let now = Instant::now();
        if now - start < HOLD_SPIN {
            std::thread::yield_now();
            continue;
        }
        if profiler_gone() {
            abort_session(cb, s);
            return;
        }
        let b = cb.heartbeat.load(Relaxed);
        let judged_stale = STALE_SESSION.load(Acquire) == s && STALE_BEAT.load(Relaxed) == b;
        if b != beat && !judged_stale {
            beat = b;
            beat_at = now;
        } else if judged_stale
            || now - beat_at > Duration::from_millis(u64::from(cb.lease_ms.load(Relaxed).max(1)))
        {
            if !judged_stale {
                STALE_SESSION.store(0, Relaxed);
                STALE_BEAT.store(b, Relaxed);
                STALE_SESSION.store(s, Release);
            }
            // The profiler is alive but silent (stopped, debugged): take the task back.
            // The profiler's final CAS fails and it drops its copy (TORN).
            if slot
                .prof
                .compare_exchange(held, prof::pack(g, prof::TORN), SeqCst, Relaxed)
                .is_ok()
            {
                cb.revoked.fetch_add(1, Relaxed);
            }
            return;
        }
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// Is the profiler's lease (its exclusive flock on the memfd) gone?
///
/// The profiler opened `/proc/PID/fd/N` itself, so its lock lives on another open file
/// description than the runtime's fd and the two conflict (flock(2): locks belong to
/// open file descriptions). A dead profiler's lock is released by the kernel.
pub(crate) fn profiler_gone() -> bool {
    let fd = region::get().fd();
    // SAFETY: flock on our own memfd; a shared, non-blocking probe.
    if unsafe { libc::flock(fd, libc::LOCK_SH | libc::LOCK_NB) } == 0 {
        // SAFETY: as above; drop the probe lock at once.
        unsafe { libc::flock(fd, libc::LOCK_UN) };
        return true;
    }
    false
}

pub(crate) fn abort_session(cb: &ControlBlock, s: u64) {
    if cb
        .session
        .compare_exchange(s, s | session::ABORTED, SeqCst, Relaxed)
        .is_ok()
    {
        cb.aborted.fetch_add(1, Relaxed);
        cb.session_seen_ns.store(0, Relaxed);
    }
}

/// Watchdog step, from the timer thread every few ms while a session is active. Aborts
/// a session whose profiler died or that overran its cap. Returns whether a session is
/// still active (and the watchdog should keep ticking).
pub(crate) fn watchdog_tick() -> bool {
    let Some(region) = region::try_get() else {
        return false;
    };
    let cb = region.control();
    let s = cb.session.load(Acquire);
    if !session::is_active(s) {
        cb.session_seen_ns.store(0, Relaxed);
        return false;
    }
    let seen = cb.session_seen_ns.load(Relaxed);
    let now = crate::timer::now_ns();
    if seen == 0 {
        cb.session_seen_ns.store(now, Relaxed);
    }
    let cap_ns = u64::from(cb.session_cap_ms.load(Relaxed)) * 1_000_000;
    if profiler_gone() || (seen != 0 && now.saturating_sub(seen) > cap_ns) {
        abort_session(cb, s);
        return false;
    }
    true
}
