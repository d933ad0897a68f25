//! The profile helper: one runtime thread that records parked tasks in-process when a
//! profiler asks (gprof_abi docs, "Profile helper"), and gives the arena's and the
//! ring's pages back once nobody has profiled for a while.
//!
//! Why a thread of the target does this: the profiler's own copy of a parked task is a
//! `process_vm_readv` of one stack page, which the kernel pins and walks page tables
//! for (~0.9 us per task on the VMs this was measured on, research/perf.md); here it is
//! a `memcpy` from memory the process already maps (~0.12 us per task, 100k stacks in
//! 12 ms, measured side by side). The records go through a ring the profiler consumes
//! while the helper fills it (abi docs): the profiler's unwinding overlaps the copying,
//! and the few MiB of the ring are all a snapshot allocates, whatever the task count
//! (with a growing arena a first snapshot of 1M tasks paid ~800 MB of fresh pages).
//!
//! The helper is not a worker, so no profile stop holds it, and it must not need to be
//! held: it only takes tasks that are not running, through the same CASes as the
//! profiler, and checks the session word as it goes. The one thing it waits for is room
//! in the ring, holding no task meanwhile, and only while the session lasts and its
//! profiler is alive.

use crate::profile::RecordShape;
use crate::region::{self, Region};
use crate::shared_futex;
use gprof_abi::{prof, session, ArenaRecord, ControlBlock, Hold};
use std::mem::size_of;
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
/// Pause between two punch steps, with the lock free.
const PUNCH_PAUSE: Duration = Duration::from_millis(1);
/// Slots between two looks at the session word while helping.
const SESSION_CHECK_EVERY: u32 = 256;
/// Longest sleep on `ring_wake` before the session word is looked at again.
const RING_WAIT: Duration = Duration::from_millis(2);
/// While waiting for room in the ring, the profiler's lease is probed this often.
const LEASE_PROBE_EVERY: Duration = Duration::from_millis(10);

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
        // A name that fits the kernel's 15 bytes of `comm`, so that `top -H` and tests
        // can tell the helper from the workers.
        let _ = std::thread::Builder::new()
            .name("gprof-rt-helper".into())
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
    loop {
        shared_futex::wait(&cb.help_seq, seen, keep);
        let now = cb.help_seq.load(Acquire);
        if now != seen {
            seen = now;
            help(region);
            continue;
        }
        let sessions = cb.sessions.load(Relaxed);
        if sessions != looked_at {
            looked_at = sessions;
            continue;
        }
        if sessions != punched_at && punch_arena(region) {
            punched_at = sessions;
        }
    }
}

/// Record every task absent from the active session into the ring, in slot order,
/// until the session ends; then say so (`help_done`).
fn help(region: &Region) {
    let cb = region.control();
    let s = cb.session.load(Acquire);
    if !session::is_active(s) {
        return;
    }
    let g = session::generation(s);
    cb.help_ack.store(g, Release);
    let mut pin = CpuPin::default();
    record_all(region, cb, s, &mut pin);
    drop(pin);
    cb.help_done.store(g, Release);
    // Its last turn: a profiler asleep on the word wakes to read the rest.
    shared_futex::wake(&cb.ring_waiting);
}

/// The helper kept on the CPU the profiler names in `help_cpu` (CPU + 1; abi docs,
/// "Profile helper") while it records a session, and given its own CPU set back
/// afterwards. A profiler taking turns names the CPU it runs on each time it hands the
/// ring back: a futex wake is not a "sync" wakeup, so the kernel would otherwise keep
/// the helper on whatever CPU it last ran on, often one a worker runs on, and the
/// helper would preempt that worker at every turn (sched_switch traces of 1M-task
/// snapshots, BENCHMARKS.md). [`CpuPin::follow`] is called between records and after
/// each wait for room. The value is the profiler's word:
/// anything the kernel refuses (no such CPU, outside our cpuset) leaves the helper
/// where it was.
#[derive(Default)]
struct CpuPin {
    /// The `help_cpu` value in force.
    asked: u32,
    /// Our CPU set before the first pin.
    saved: Option<libc::cpu_set_t>,
}

impl CpuPin {
    fn follow(&mut self, asked: u32) {
        if asked == self.asked {
            return;
        }
        self.asked = asked;
        let size = size_of::<libc::cpu_set_t>();
        if self.saved.is_none() {
            // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
            let mut saved: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            // SAFETY: the calling thread's (0) affinity into a set of `size` bytes.
            if unsafe { libc::sched_getaffinity(0, size, &mut saved) } != 0 {
                return;
            }
            self.saved = Some(saved);
        }
        let target = match asked.checked_sub(1) {
            Some(cpu) if (cpu as usize) < libc::CPU_SETSIZE as usize => {
                // SAFETY: as above.
                let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
                // SAFETY: writes bit `cpu` < CPU_SETSIZE of `one`.
                unsafe { libc::CPU_SET(cpu as usize, &mut one) };
                one
            }
            _ => self.saved.expect("saved above"),
        };
        // SAFETY: the calling thread's (0) affinity from a set of `size` bytes. A
        // refusal leaves it as it was.
        unsafe { libc::sched_setaffinity(0, size, &target) };
    }
}

impl Drop for CpuPin {
    fn drop(&mut self) {
        if let Some(saved) = self.saved.take() {
            // SAFETY: restores the calling thread's own affinity from a set it read.
            unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &saved) };
        }
    }
}

fn record_all(region: &Region, cb: &ControlBlock, s: u64, pin: &mut CpuPin) {
    let g = session::generation(s);
    let in_progress = prof::pack(g, prof::IN_PROGRESS);
    let satisfied = prof::pack(g, prof::SATISFIED);
    let mut ring = Ring::new(region, g);
    let hwm = cb.slot_hwm.load(Acquire).min(u64::from(region::SLOT_CAP)) as u32;
    let mut i = 0;
    while i < hwm {
        if i % SESSION_CHECK_EVERY == 0 {
            if cb.session.load(Acquire) != s {
                return;
            }
            pin.follow(cb.help_cpu.load(Acquire));
        }
        let slot = region.slot(i);
        let p = match slot.try_hold(g) {
            Hold::Held { was } => was,
            Hold::Unborn => {
                // The spawner decides in a moment whether the task predates STW 1.
                if !ring.mark(cb, s, ArenaRecord::FLAG_LEFTOVER, i) {
                    return;
                }
                i += 1;
                continue;
            }
            Hold::No => {
                // Free, recorded, or not ours to take: someone else holds it (its
                // record is on its way to the arena), or took it first.
                let done = slot.task_id.load(Acquire) == 0 || slot.prof.load(Acquire) == satisfied;
                if !done && !ring.mark(cb, s, ArenaRecord::FLAG_LEFTOVER, i) {
                    return;
                }
                i += 1;
                continue;
            }
        };
        // Absent means not running (a running task passed the barrier or was recorded
        // at STW 1), so it cannot exit under the hold; a slot freed between the two
        // loads above is given back as the profiler's walk does.
        let id = slot.task_id.load(Acquire);
        if id == 0 {
            let _ = slot.prof.compare_exchange(in_progress, p, SeqCst, Relaxed);
            i += 1;
            continue;
        }
        let shape = RecordShape::of(slot);
        let Some(dst) = ring.reserve(cb, shape.need) else {
            // No room: give the task back before waiting (a worker that wants to run
            // it must not wait on the profiler through us), then take it again.
            let _ = slot.prof.compare_exchange(in_progress, p, SeqCst, Relaxed);
            if !ring.wait_for_room(cb, s, shape.need) {
                return;
            }
            pin.follow(cb.help_cpu.load(Acquire));
            continue;
        };
        // SAFETY: `reserve` handed us [dst, dst + need) inside the ring, which the
        // profiler does not read before `publish`; we hold the task since before
        // `RecordShape::of`.
        unsafe { shape.write(dst, i, id, slot, g) };
        ring.publish(cb);
        cb.self_recorded.fetch_add(1, Relaxed);
        let _ = slot
            .prof
            .compare_exchange(in_progress, satisfied, Release, Relaxed);
        i += 1;
    }
    // Every slot below `hwm` visited: the profiler need only look at the leftovers.
    ring.mark(cb, s, ArenaRecord::FLAG_PASS_DONE, hwm);
}

/// The producer's side of the ring (abi docs, "Profile helper").
struct Ring {
    base: u64,
    len: u64,
    g: u64,
    /// Our `ring_head`: we are its only writer.
    head: u64,
    /// Where `head` goes at the next `publish`.
    next: u64,
}

impl Ring {
    fn new(region: &Region, g: u64) -> Ring {
        let (base, len) = region.ring();
        let head = region.control().ring_head.load(Relaxed);
        Ring {
            base,
            len,
            g,
            head,
            next: head,
        }
    }

    /// Bytes to skip before a record of `need` bytes, so that it does not straddle the
    /// ring's end.
    fn pad(&self, need: u64) -> u64 {
        let left = self.len - self.head % self.len;
        if need > left {
            left
        } else {
            0
        }
    }

    fn has_room(&self, cb: &ControlBlock, need: u64) -> bool {
        let tail = cb.ring_tail.load(Acquire);
        // A tail past the head is not the profiler's: no room until it says better.
        self.head >= tail && self.head - tail + self.pad(need) + need <= self.len
    }

    /// Room for a record of `need` bytes, padding the ring's end first if the record
    /// does not fit before it; `None` if the profiler has not consumed enough yet.
    fn reserve(&mut self, cb: &ControlBlock, need: u64) -> Option<*mut u8> {
        if !self.has_room(cb, need) {
            return None;
        }
        let pad = self.pad(need);
        let at = self.head % self.len;
        if pad >= size_of::<ArenaRecord>() as u64 {
            let header = ArenaRecord {
                slot: ArenaRecord::PAD_SLOT,
                generation: self.g,
                ..ArenaRecord::default()
            };
            // SAFETY: [at, at + header) lies inside the ring (pad >= its size, and the
            // pad ends at the ring's end), in room the profiler has consumed.
            unsafe { std::ptr::write_unaligned((self.base + at) as *mut ArenaRecord, header) };
        }
        let start = (self.head + pad) % self.len;
        self.next = self.head + pad + need;
        Some((self.base + start) as *mut u8)
    }

    /// Send a header-only record (`flags`, about `slot`), waiting for room if need be;
    /// `false` when the session ended (or its profiler vanished) first.
    fn mark(&mut self, cb: &ControlBlock, s: u64, flags: u32, slot: u32) -> bool {
        loop {
            if let Some(dst) = self.reserve(cb, ArenaRecord::MARK_LEN) {
                let header = ArenaRecord {
                    slot,
                    flags,
                    generation: self.g,
                    ..ArenaRecord::default()
                };
                // SAFETY: `reserve` handed us MARK_LEN = size_of::<ArenaRecord>()
                // bytes at `dst`, inside the ring, unread until `publish`.
                unsafe { std::ptr::write_unaligned(dst as *mut ArenaRecord, header) };
                self.publish(cb);
                return true;
            }
            if !self.wait_for_room(cb, s, ArenaRecord::MARK_LEN) {
                return false;
            }
        }
    }

    /// The reserved record is written: let the profiler read it.
    fn publish(&mut self, cb: &ControlBlock) {
        self.head = self.next;
        cb.ring_head.store(self.head, Release);
    }

    /// Sleep until the profiler has made room for `need` bytes: `false` when the session
    /// ended first, or its profiler is gone (then the session is aborted, as a worker
    /// waiting on a held task would).
    fn wait_for_room(&self, cb: &ControlBlock, s: u64, need: u64) -> bool {
        // A profiler in turns with us sleeps on this word until it changes: its turn
        // now, ours again below.
        cb.ring_waiting.store(1, Release);
        shared_futex::wake(&cb.ring_waiting);
        let room = self.sleep_for_room(cb, s, need);
        cb.ring_waiting.store(0, Release);
        shared_futex::wake(&cb.ring_waiting);
        room
    }

    fn sleep_for_room(&self, cb: &ControlBlock, s: u64, need: u64) -> bool {
        let mut probed = std::time::Instant::now();
        loop {
            let w = cb.ring_wake.load(Acquire);
            if self.has_room(cb, need) {
                return true;
            }
            if cb.session.load(Acquire) != s {
                return false;
            }
            if probed.elapsed() >= LEASE_PROBE_EVERY {
                if crate::profile::profiler_gone() {
                    crate::profile::abort_session(cb, s);
                    return false;
                }
                probed = std::time::Instant::now();
            }
            shared_futex::wait(&cb.ring_wake, w, RING_WAIT);
        }
    }
}

/// Give the arena's and the ring's pages back (`Region::scratch_range`). `false` if a
/// profiler holds (or takes) the lease meanwhile: try again after the next quiet period.
fn punch_arena(region: &Region) -> bool {
    let cb = region.control();
    let (start, len) = region.scratch_range();
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
