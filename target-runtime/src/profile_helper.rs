//! The profile helper: one runtime thread that records parked tasks in-process when a
//! profiler asks (gprof_abi docs, "Profile helper"), and gives the arena's pages back
//! once nobody has profiled for a while.
//!
//! Why a thread of the target does this: the profiler's own copy of a parked task is a
//! `process_vm_readv` of one stack page, which the kernel pins and walks page tables
//! for (~0.9 us per task on the VMs this was measured on, research/perf.md); here it is
//! a `memcpy` from memory the process already maps (~0.12 us per task, 100k stacks in
//! 12 ms, measured side by side). The profiler unwinds from the arena afterwards.
//!
//! The helper is not a worker, so no profile stop holds it, and it must not need to be
//! held: it only takes tasks that are not running, through the same CASes as the
//! profiler, and checks the session word as it goes. It never waits on the profiler.

use crate::region::{self, Region};
use gprof_abi::{prof, session, Hold};
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::Once;
use std::time::Duration;

/// Arena pages are kept this long after the last session started, so that a profiler
/// that comes back (`record`, `top`, an operator repeating `attach`) writes into
/// allocated memory. `GPROF_RT_ARENA_KEEP_MS` overrides it (read once at start).
const ARENA_KEEP: Duration = Duration::from_secs(30);
/// The arena is punched out this many bytes at a time, each under its own `LOCK_SH`
/// probe, so that a profiler arriving meanwhile waits at most one step.
const PUNCH_STEP: u64 = 2 << 20;
/// The helper stops once the session's records reach this many bytes of the arena
/// beyond what earlier sessions left allocated, and leaves the rest to the profiler.
/// Fresh arena pages cost the kernel ~4 us each to allocate on a VM (more than the
/// profiler's own copy of the tasks they hold), and they stay allocated for
/// `ARENA_KEEP`: this bounds what one snapshot pays (~160k tasks of 576 stack bytes),
/// while repeated snapshots of a large target warm the arena up step by step. Measured
/// at 1M tasks with no bound: 3.7 s for a first snapshot instead of 1.6 s.
const HELP_BUDGET: u64 = 128 << 20;
/// Pause between two punch steps, with the lock free.
const PUNCH_PAUSE: Duration = Duration::from_millis(1);
/// Slots between two looks at the session word while helping.
const SESSION_CHECK_EVERY: u32 = 256;

static START: Once = Once::new();

/// Start the helper once per process (every runtime shares the one region).
pub(crate) fn ensure_started() {
    START.call_once(|| {
        let region = region::get();
        let keep = std::env::var("GPROF_RT_ARENA_KEEP_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(ARENA_KEEP, Duration::from_millis);
        // A failure to start leaves `helper_tid` at 0: profilers then copy every task
        // themselves, as they would from a v4 runtime. Nothing else depends on it.
        let _ = std::thread::Builder::new()
            .name("target-runtime-profile".into())
            .stack_size(64 << 10)
            .spawn(move || run(region, keep));
    });
}

fn run(region: &'static Region, keep: Duration) {
    let cb = region.control();
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
    cb.helper_tid.store(tid, Release);
    let mut seen = cb.help_seq.load(Acquire);
    // `sessions` when the arena was last punched (or at start: nothing to punch), and
    // when it was last looked at: a punch waits for a whole `keep` without a session.
    let mut punched_at = cb.sessions.load(Relaxed);
    let mut looked_at = punched_at;
    // Bytes at the start of the arena known to be allocated (written since the last
    // punch): each session's budget starts there.
    let mut warm = 0;
    loop {
        futex_wait(&cb.help_seq, seen, keep);
        let now = cb.help_seq.load(Acquire);
        if now != seen {
            seen = now;
            help(region, warm + HELP_BUDGET);
            warm = warm.max(gprof_abi::arena::used(cb.arena_used.load(Relaxed)));
            continue;
        }
        let sessions = cb.sessions.load(Relaxed);
        if sessions != looked_at {
            looked_at = sessions;
            continue;
        }
        if sessions != punched_at && punch_arena(region) {
            warm = 0;
            punched_at = sessions;
        }
    }
}

/// Record every task absent from the active session, in slot order, until the session
/// ends or the session's records reach `budget` bytes of the arena (or it is full).
fn help(region: &Region, budget: u64) {
    let cb = region.control();
    let s = cb.session.load(Acquire);
    if !session::is_active(s) {
        return;
    }
    let g = session::generation(s);
    cb.help_ack.store(g, Release);
    let in_progress = prof::pack(g, prof::IN_PROGRESS);
    let satisfied = prof::pack(g, prof::SATISFIED);
    let hwm = cb.slot_hwm.load(Acquire).min(u64::from(region::SLOT_CAP)) as u32;
    for i in 0..hwm {
        if i % SESSION_CHECK_EVERY == 0 && cb.session.load(Acquire) != s {
            return;
        }
        let slot = region.slot(i);
        let Hold::Held { was: p } = slot.try_hold(g) else {
            continue;
        };
        // Absent means not running (a running task passed the barrier or was recorded
        // at STW 1), so it cannot exit under the hold; a slot freed between the two
        // loads above is given back as the profiler's walk does.
        let id = slot.task_id.load(Acquire);
        if id == 0 {
            let _ = slot.prof.compare_exchange(in_progress, p, SeqCst, Relaxed);
            continue;
        }
        let used = gprof_abi::arena::used(cb.arena_used.load(Relaxed));
        if used >= budget || !crate::profile::record_self(cb, i, id, slot, g) {
            // Budget spent, arena full, or a newer session began: the profiler walks
            // every slot after us and takes this task and the rest.
            let _ = slot.prof.compare_exchange(in_progress, p, SeqCst, Relaxed);
            return;
        }
        cb.self_recorded.fetch_add(1, Relaxed);
        let _ = slot
            .prof
            .compare_exchange(in_progress, satisfied, Release, Relaxed);
    }
}

/// Give the arena's pages back. `false` if a profiler holds (or takes) the lease
/// meanwhile: try again after the next quiet period.
fn punch_arena(region: &Region) -> bool {
    let cb = region.control();
    let (start, len) = region.arena_range();
    let fd = region.fd();
    let mut off = 0;
    while off < len {
        // The shared lock keeps a profiler from taking the lease (and starting a session
        // that writes into the arena) during this step; a held lease fails it.
        // SAFETY: flock on our own memfd; no memory is involved.
        if unsafe { libc::flock(fd, libc::LOCK_SH | libc::LOCK_NB) } != 0 {
            return false;
        }
        let active = session::is_active(cb.session.load(Acquire));
        let step = PUNCH_STEP.min(len - off);
        if !active {
            // SAFETY: punches whole pages of our own memfd inside the arena; the file's
            // seals forbid growing and shrinking, not punching (memfd_create(2)).
            unsafe {
                libc::fallocate(
                    fd,
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    (start + off) as libc::off_t,
                    step as libc::off_t,
                )
            };
        }
        // SAFETY: as above; drop the shared lock.
        unsafe { libc::flock(fd, libc::LOCK_UN) };
        if active {
            return false;
        }
        off += step;
        // Leave the lock free for a while between steps: a profiler that found it taken
        // retries every few hundred microseconds (src/locate.rs), and must get it.
        std::thread::sleep(PUNCH_PAUSE);
    }
    true
}

/// `FUTEX_WAIT` (shared: the profiler wakes the word through its own mapping) while
/// `word` is `val`, at most `timeout`. Spurious and early returns are fine: the caller
/// looks at the word again.
fn futex_wait(word: &AtomicU32, val: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a live, aligned u32 in the shared mapping; `ts` outlives the
    // call. EINTR, EAGAIN (the value already changed) and ETIMEDOUT all just return.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            val,
            &ts as *const libc::timespec,
        )
    };
}
