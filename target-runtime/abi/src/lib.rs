//! The shared-memory ABI between `target-runtime` and `gprof-rs`.
//!
//! This crate is the single definition of every byte the runtime shares with the
//! profiler. Both sides compile against it; nobody re-declares an offset by hand.
//!
//! # Rules for the types here
//!
//! * `#[repr(C)]`, fields are `u32`/`u64` (or their atomic twins, which have the same
//!   layout). No Rust `enum`, `bool`, reference or niche type: the profiler reads these
//!   bytes from another process, and every bit pattern must be a valid value.
//! * Enumerations are `u32` with associated constants ([`TaskState`], [`WaitReason`]).
//! * Every struct's size is asserted at compile time, so a change to a layout is a
//!   compile error until [`ABI_VERSION`] is bumped and the asserts are updated.
//!
//! # How the profiler finds the region
//!
//! The runtime exports a [`Descriptor`] under the symbol [`DESCRIPTOR_SYMBOL`]. When the
//! runtime first starts it creates a memfd (`MFD_CLOEXEC | MFD_ALLOW_SEALING`, mode
//! 0600), sizes it sparse with `ftruncate`, seals it against shrinking and growing, maps
//! it `MAP_SHARED`, fills the [`ControlBlock`] and then publishes the region's address in
//! the descriptor (a release store of `region_addr`). The profiler reads the descriptor
//! with `process_vm_readv`, opens `/proc/PID/fd/<memfd>` itself and maps the same pages.
//!
//! # Region layout
//!
//! ```text
//! 0                      ControlBlock (CONTROL_SIZE bytes reserved)
//! worker_off             WorkerRecord x worker_cap
//! slot_off               TaskSlot x slot_cap          (sparse: pages touched on use)
//! arena_off              self-recorded stacks, arena_len bytes (sparse)
//! ring_off               the profile helper's ring, ring_len bytes (v6)
//! ```
//!
//! # Profile protocol (the write-ordering contract)
//!
//! A profile is a *session* with generation `g` (see [`session`]). Each task slot has a
//! profile word `prof` (see [`prof`]) that packs a generation and a state. A word whose
//! generation is older than the current session's reads as ABSENT, so no reset pass is
//! needed after a profile. A word of a *newer* generation never reads as absent: a
//! runtime thread that loaded the session word before a later STW 1 must not take a task
//! that session already recorded.
//!
//! 1. STW 1 (the profiler has ptrace-stopped every worker thread, i.e. every thread
//!    whose TID a [`WorkerRecord`] holds: only workers run tasks): the profiler stores
//!    `session = g | ACTIVE` (SeqCst), then reads `next_task_id` (the id cutoff) and the
//!    worker records again, and stops any worker it had not stopped. A worker publishes
//!    its TID (SeqCst store, then a SeqCst fence) before it runs a task, so either the
//!    profiler sees and stops it, or the worker sees the session. The profiler resets
//!    `arena_used`, and records itself every task that a
//!    worker record names as current (from ptrace registers if the thread's stack pointer
//!    is inside that task's stack, otherwise from the slot's saved registers), marking
//!    each `SATISFIED(g)`.
//! 2. Concurrent phase: for each slot the profiler CASes `prof` from a stale
//!    generation to `IN_PROGRESS(g)`, copies the saved registers and the live stack,
//!    then CASes to `SATISFIED(g)`. If that last CAS fails the runtime revoked the hold
//!    (`TORN(g)`), and the copy is discarded. The runtime, before it switches to a task,
//!    does the same first CAS; when it wins it copies the task into the arena
//!    ([`ArenaRecord`]) and stores `SATISFIED(g)` with release ordering. When it finds
//!    `IN_PROGRESS(g)` it waits, bounded by the lease.
//! 3. STW 2 (workers stopped again): the profiler stores `session = g` (ACTIVE
//!    cleared), reads `arena_used` and the arena, and detaches.
//!
//! Task creation: the spawner writes the slot with `prof = UNBORN`, then publishes
//! `task_id` (SeqCst), then loads `session` (SeqCst) and CASes `prof` from `UNBORN` to
//! `SATISFIED(g)` when a session is active (the task is newer than STW 1) or to
//! `ABSENT` of the session's generation otherwise. The profiler never takes an `UNBORN`
//! slot; it looks at it again after its walk. Task exit stores `task_id = 0` and
//! `prof = FREE` after the task is SATISFIED for any active session.
//!
//! Resume count (v4): the worker about to switch into a task stores `resumes + 1` after
//! the barrier and before the switch. A profiler that holds a task `IN_PROGRESS` and
//! finds its `task_id` and `resumes` equal to those of an earlier record knows the task
//! has not run since, so that record's frames still hold (a waker may have written a
//! value into a local of the parked task, never into its return addresses or saved
//! registers). Never for a task recorded at
//! STW 1: it may be running, and a running task changes its stack without a new resume.
//!
//! Profile helper (v5, ring since v6): one runtime thread (its TID in `helper_tid`)
//! sleeps on the futex word `help_seq`. A profiler that wants the parked tasks recorded
//! in-process (a one-shot snapshot) makes sure the helper is idle (`help_done ==
//! help_ack`), stores `ring_tail = ring_head` (an empty ring), adds 1 to `help_seq` after
//! STW 1 and wakes it. The helper then stores the session's generation in `help_ack`
//! and walks the slots in order doing what the profiler's walk does (step 2: CAS a slot
//! absent for the session to `IN_PROGRESS(g)`, write a record, CAS to `SATISFIED(g)`,
//! add 1 to `self_recorded`), stopping when the session word is no longer `g | ACTIVE`;
//! then it stores `help_done = g`. Its records go to the ring, not the arena: the
//! profiler consumes them while the helper produces, so a snapshot of a million tasks
//! passes through a few MiB that stay allocated instead of allocating hundreds.
//!
//! The ring is single-producer (the helper), single-consumer (the profiler), with
//! byte positions that only grow: a record at position `p` starts at `ring_off + p %
//! ring_len` and never straddles the ring's end. Where the next record does not fit
//! before the end, the helper skips to the end: if a header's worth of bytes
//! (`size_of::<ArenaRecord>()`) is left there it first writes a header whose `slot` is
//! [`ArenaRecord::PAD_SLOT`] and whose `generation` is the session's; fewer bytes are
//! skipped without one. Records are [`ArenaRecord`]s as in the arena. The helper
//! writes a record, then stores `ring_head` past it (Release), then releases the task
//! (`SATISFIED(g)`), so a profiler that sees the task released (Acquire) finds its
//! record below `ring_head`. It writes only into `[ring_head, ring_tail + ring_len)`;
//! when a record does not fit it gives its task back first (CAS to the old word), then
//! sleeps on `ring_wake` until the profiler moves `ring_tail`, the session ends, or
//! the profiler is found gone (the lease probe below, which also aborts the session).
//! Slots it visits but does not record because a spawner was publishing them
//! (`UNBORN`) or someone else held them, it names in header-only records
//! ([`ArenaRecord::FLAG_LEFTOVER`]); a pass over every slot ends with a
//! [`ArenaRecord::FLAG_PASS_DONE`] header naming the slot count it covered. A profiler
//! that reads that header has the helper's word that every other slot below it was
//! recorded or needs nothing, and looks only at the leftovers, instead of touching
//! every slot of the table (a million slots are 512 MB of it). A pass cut short (the
//! session ended, the profiler vanished) sends no such header: the profiler then walks
//! every slot.
//!
//! It never holds a task while it waits, and stores `ring_waiting = 1` before it
//! sleeps and 0 when it goes on. A profiler may consume while the helper writes (both
//! run at once: two CPUs) or only while `ring_waiting` is 1 and then the whole ring
//! (they take turns: one CPU, when the machine has no other idle one to give); the
//! helper wakes `ring_waiting` (`FUTEX_WAKE`, shared) after each store to it and after
//! it stores `help_done`, so that a profiler taking turns sleeps on that word instead
//! of polling. In turns the profiler also stores the CPU it runs on in `help_cpu` (v7,
//! CPU + 1) before each wake of the helper, which keeps to that CPU until the next
//! (looking at the word between records and after each wait for room) and goes back
//! to its own CPU set when the session ends. A CPU the kernel refuses is ignored. A
//! profiler that stops consuming early (a helper that stalled) walks the
//! slots itself, and after STW 2, once no task is held, reads whatever lies between
//! `ring_tail` and `ring_head`.
//!
//! Worker assists (v8): when every worker is busy a helper thread (and the profiler
//! itself) would be one more runnable thread than there are CPUs, and the kernel makes
//! some running task wait for it. Then the profiler asks the workers instead, as Go's
//! profile goroutine shares its scheduler with the tasks it records. During STW 1 it
//! stores `assist_next = 0`, `assist_end = slot_hwm`, `assist_done = 0`, `assist_left =
//! 0` (the two counts tagged with `g`, see [`assist`]), then `assist_session = g |
//! ACTIVE`. A worker about to run a task while that is the session word takes a batch
//! of slots (CAS on `assist_next`, only if it is tagged `g` and below `assist_end`) and
//! visits each as the helper does (step 2's CASes; records go to the arena, as the
//! barrier's, so the profiler reads them after STW 2); a slot it cannot leave recorded
//! or free it counts in `assist_left`. It stops visiting when the session word
//! changes; otherwise it then adds the batch's slot count to `assist_done` (CAS, only
//! if tagged `g`), and when the sum reaches `assist_end` adds 1 to `assist_wake` and
//! wakes it. A profiler that finds `assist_done` at `assist_end` and `assist_left == 0`
//! has the workers' word that every slot alive at STW 1 is recorded or needs nothing,
//! and walks none; otherwise (the workers stopped switching, a slot was left) it walks
//! every slot, the CASes deciding who takes each.
//!
//! The helper is not a worker: the STWs do not stop it, and it needs not be stopped,
//! since it only takes tasks that are not running, through the same CASes the profiler
//! uses. The profiler then walks every slot itself (the helper's are SATISFIED and
//! skipped), so a helper that never runs (a job-stopped target) costs one short wait.
//! Arena and ring pages stay allocated after a session, so that the next snapshot
//! writes into memory that is already there (a fresh page costs ~4 us on a VM); the
//! helper punches them out (`FALLOCATE_PUNCH_HOLE`) once no session has started for a
//! while, holding `LOCK_SH` on the memfd meanwhile so that no profiler can take the
//! lease (and start a session) during the punch. A profiler that finds the lock taken
//! while `owner_pid` is 0 retries for a moment.
//!
//! Liveness: the profiler holds `flock(LOCK_EX)` on its own open of `/proc/PID/fd/N`
//! and bumps `heartbeat`. The runtime probes the lock with `LOCK_SH | LOCK_NB` on its
//! own descriptor: if it can take it, the profiler is gone and the session is aborted.
//! A held task whose heartbeat does not move for `lease_ms` is taken back (`TORN`).
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use core::mem::size_of;
use core::sync::atomic::Ordering::{Acquire, Relaxed, SeqCst};
use core::sync::atomic::{AtomicU32, AtomicU64};

/// Name of the exported [`Descriptor`] symbol.
pub const DESCRIPTOR_SYMBOL: &str = "GPROF_RT_DESCRIPTOR";

/// `b"GPROFRT1"` read as a little-endian `u64`; first field of the descriptor and of the
/// control block.
pub const MAGIC: u64 = u64::from_le_bytes(*b"GPROFRT1");

/// Version of everything in this crate. Bumped on any change of layout or protocol.
pub const ABI_VERSION: u32 = 8;

/// Bytes reserved for the [`ControlBlock`] at offset 0 of the region.
pub const CONTROL_SIZE: u64 = 4096;
/// Most worker threads a region describes.
pub const WORKER_CAP: u32 = 256;
/// Bytes of a slot's inline name.
pub const NAME_CAP: usize = 40;
/// Bytes of a slot's inline labels (`key\0value\0` pairs).
pub const LABELS_CAP: usize = 344;
/// Largest stack copy (bytes) one record keeps; deeper stacks are truncated and flagged.
pub const MAX_STACK_COPY: u64 = 256 * 1024;

/// The exported entry point. Lives in the target's `.data`; everything else is reached
/// through `region_addr`.
#[repr(C)]
#[derive(Debug)]
pub struct Descriptor {
    /// [`MAGIC`].
    pub magic: u64,
    /// [`ABI_VERSION`] of the runtime that wrote it.
    pub abi_version: u32,
    /// `size_of::<Descriptor>()`.
    pub descriptor_size: u32,
    /// Address of the mapped region in the target, 0 until the runtime has started.
    pub region_addr: AtomicU64,
    /// Length of the region in bytes.
    pub region_len: AtomicU64,
    /// File descriptor number of the memfd in the target.
    pub memfd: AtomicU32,
    /// `size_of::<ControlBlock>()`.
    pub control_size: u32,
    /// `size_of::<WorkerRecord>()`.
    pub worker_record_size: u32,
    /// `size_of::<TaskSlot>()`.
    pub slot_size: u32,
}
const _: () = assert!(size_of::<Descriptor>() == 48);

impl Descriptor {
    /// The value the runtime exports before it has started.
    pub const fn new() -> Self {
        Descriptor {
            magic: MAGIC,
            abi_version: ABI_VERSION,
            descriptor_size: size_of::<Descriptor>() as u32,
            region_addr: AtomicU64::new(0),
            region_len: AtomicU64::new(0),
            memfd: AtomicU32::new(u32::MAX),
            control_size: size_of::<ControlBlock>() as u32,
            worker_record_size: size_of::<WorkerRecord>() as u32,
            slot_size: size_of::<TaskSlot>() as u32,
        }
    }
}

impl Default for Descriptor {
    fn default() -> Self {
        Self::new()
    }
}

/// Header of the shared region.
#[repr(C)]
#[derive(Debug)]
pub struct ControlBlock {
    /// [`MAGIC`].
    pub magic: u64,
    /// [`ABI_VERSION`].
    pub abi_version: u32,
    /// `size_of::<ControlBlock>()`.
    pub control_size: u32,
    /// Total length of the region.
    pub region_len: u64,
    /// Offset of the worker records.
    pub worker_off: u64,
    /// Number of worker records.
    pub worker_cap: u32,
    /// `size_of::<WorkerRecord>()`.
    pub worker_record_size: u32,
    /// Offset of the task slots.
    pub slot_off: u64,
    /// Number of task slots.
    pub slot_cap: u32,
    /// `size_of::<TaskSlot>()`.
    pub slot_size: u32,
    /// Offset of the arena for self-recorded stacks.
    pub arena_off: u64,
    /// Length of the arena.
    pub arena_len: u64,
    /// Pid of the process that created the region.
    pub runtime_pid: u32,
    /// Futex word of the runtime's profile helper (v5): the profiler adds 1 after STW 1
    /// and wakes it (`FUTEX_WAKE`, not private: the word is in a shared mapping) to have
    /// the runtime record the parked tasks itself. See "Profile helper" in the crate docs.
    pub help_seq: AtomicU32,
    /// Slots `[0, slot_hwm)` have ever been used; the profiler walks only those.
    pub slot_hwm: AtomicU64,
    /// Next task id to hand out (ids start at 1).
    pub next_task_id: AtomicU64,
    /// Number of worker records in use, `[0, worker_count)`.
    pub worker_count: AtomicU32,
    /// Thread id of the runtime's profile helper, 0 if it has none (v5).
    pub helper_tid: AtomicU32,
    /// Tasks alive now (spawned and not yet exited).
    pub live_tasks: AtomicU64,

    // ---- profile state ----
    /// Generation and flags of the current session, see [`session`].
    pub session: AtomicU64,
    /// Bumped by the profiler at least every few milliseconds while it holds a session.
    pub heartbeat: AtomicU64,
    /// Pid of the profiler that owns the session (diagnostics only: the lease decides).
    pub owner_pid: AtomicU64,
    /// The runtime takes back a held task after the heartbeat stood still this long.
    pub lease_ms: AtomicU32,
    /// A session older than this (runtime clock) is aborted by the runtime.
    pub session_cap_ms: AtomicU32,
    /// Bytes of the arena in use in this session, tagged with the session's generation
    /// (see [`arena`]).
    pub arena_used: AtomicU64,
    /// Tasks the runtime recorded itself in this session.
    pub self_recorded: AtomicU64,
    /// Tasks the runtime could not record because the arena was full (left to the tool).
    pub arena_full: AtomicU64,
    /// Holds the runtime took back from a silent profiler (total).
    pub revoked: AtomicU64,
    /// Sessions the runtime aborted because the profiler went away (total).
    pub aborted: AtomicU64,
    /// Nanoseconds (CLOCK_MONOTONIC) at which the current session started, by the
    /// runtime's clock: set by the runtime when it first sees the session.
    pub session_seen_ns: AtomicU64,
    /// Sessions started (total), written by the profiler.
    pub sessions: AtomicU64,
    /// Generation of the session the profile helper last started to record (v5): the
    /// profiler waits a little longer for a helper that has not started yet.
    pub help_ack: AtomicU64,

    // ---- the helper's ring (v6, "Profile helper" in the crate docs) ----
    /// Offset of the ring the profile helper writes its records into.
    pub ring_off: u64,
    /// Length of the ring, a multiple of 16.
    pub ring_len: u64,
    /// Bytes the helper has written into the ring, ever (its position is `% ring_len`).
    /// Written by the helper only, with Release, after the record is complete.
    pub ring_head: AtomicU64,
    /// Bytes of the ring the profiler has consumed, ever. Written by the profiler only
    /// (Release, after it copied the records out): the helper may write over them.
    pub ring_tail: AtomicU64,
    /// Generation of the session the helper last finished with: it writes nothing more
    /// into the ring until the next `help_seq`.
    pub help_done: AtomicU64,
    /// Futex word the helper sleeps on while the ring is full; the profiler adds 1 and
    /// wakes it after it moves `ring_tail`.
    pub ring_wake: AtomicU32,
    /// 1 while the helper waits for room in the ring (it writes nothing meanwhile), 0
    /// otherwise. A profiler that does not want to run beside the helper reads the ring
    /// only then.
    pub ring_waiting: AtomicU32,
    /// CPU the helper is to run on while it records, plus one; 0 for wherever the
    /// kernel puts it (v7). Written by a profiler that takes turns with the helper,
    /// before each wake.
    pub help_cpu: AtomicU32,
    /// Reserved, 0.
    pub _reserved: u32,

    // ---- worker assists (v8, "Worker assists" in the crate docs) ----
    /// Session word (`g | ACTIVE`) for which the workers are asked to record parked
    /// tasks between two of their own; any other value asks nothing. Written by the
    /// profiler during STW 1, after the other `assist_*` words.
    pub assist_session: AtomicU64,
    /// Next slot to hand out, tagged with the session's generation (see [`assist`]): a
    /// worker takes a batch by CAS, only from the generation it read.
    pub assist_next: AtomicU64,
    /// Slots `[0, assist_end)` are to be visited (`slot_hwm` at STW 1).
    pub assist_end: AtomicU64,
    /// Slots of `[0, assist_end)` the workers have finished visiting, tagged with the
    /// generation (see [`assist`]; added to by CAS, only in the generation read).
    pub assist_done: AtomicU64,
    /// Futex word the profiler sleeps on while workers assist: the worker whose batch
    /// brings `assist_done` to `assist_end` adds 1 and wakes it (`FUTEX_WAKE`, shared).
    pub assist_wake: AtomicU32,
    /// Slots a worker visited but left neither recorded nor free (a spawner was
    /// publishing it, someone else held it, the arena was full): if not 0 the profiler
    /// walks every slot itself.
    pub assist_left: AtomicU32,
}
const _: () = assert!(size_of::<ControlBlock>() == 304);
const _: () = assert!(size_of::<ControlBlock>() as u64 <= CONTROL_SIZE);

/// One record per worker thread.
#[repr(C)]
#[derive(Debug)]
pub struct WorkerRecord {
    /// Kernel thread id, 0 when the record is unused.
    pub tid: AtomicU32,
    /// [`WorkerRecord::IDLE`] or [`WorkerRecord::ACTIVE`].
    pub status: AtomicU32,
    /// Slot index + 1 of the task this worker is about to run or is running, 0 for none.
    /// Set before the scheduler checks the profile barrier and cleared after the task
    /// has switched away, so a thread stopped anywhere in between names its task.
    pub current: AtomicU64,
    /// Switches into tasks made by this worker (statistics).
    pub switches: AtomicU64,
    /// Reserved.
    pub _reserved: [u64; 5],
}
const _: () = assert!(size_of::<WorkerRecord>() == 64);

impl WorkerRecord {
    /// Record free or worker parked.
    pub const IDLE: u32 = 0;
    /// Worker running its scheduler loop.
    pub const ACTIVE: u32 = 1;
}

/// Saved registers of a suspended task, enough to start a DWARF unwind.
#[repr(C)]
#[derive(Debug, Default)]
pub struct SavedRegs {
    /// Stack pointer at the suspension point.
    pub sp: AtomicU64,
    /// Instruction pointer at which the task resumes (the switch's resume point).
    pub pc: AtomicU64,
    /// Frame pointer.
    pub fp: AtomicU64,
}

/// One task's entry in the shared table. Slots are reused, never moved.
#[repr(C)]
#[derive(Debug)]
pub struct TaskSlot {
    /// Task id, 0 when the slot is free.
    pub task_id: AtomicU64,
    /// Profile word, see [`prof`].
    pub prof: AtomicU64,
    /// [`TaskState`].
    pub state: AtomicU32,
    /// [`WaitReason`] while waiting.
    pub wait_reason: AtomicU32,
    /// CLOCK_MONOTONIC nanoseconds at which the current wait began.
    pub wait_since_ns: AtomicU64,
    /// Id of the task that spawned this one (0 for a root task).
    pub parent_id: AtomicU64,
    /// [`TaskSlot::FLAG_SYSTEM`] and friends.
    pub flags: AtomicU32,
    /// Bytes used in `name`.
    pub name_len: AtomicU32,
    /// Registers saved when the task last switched away.
    pub saved: SavedRegs,
    /// Times a worker has switched into the task (wrapping). Written only by the worker
    /// about to resume it, before the switch. A profiler that sees the same value as at
    /// an earlier sample knows the task has not run since: its frames, saved registers,
    /// name and labels are those it recorded then (ABI v4). (Its locals may have
    /// changed: a waker can hand a value into a parked task's frame. Return addresses
    /// and saved registers only change when the task runs.)
    pub resumes: AtomicU64,
    /// Lowest usable stack address (just above the guard page).
    pub stack_lo: AtomicU64,
    /// One past the highest stack address (the stack's top).
    pub stack_hi: AtomicU64,
    /// Address in the target of the spawn site's file name (UTF-8, not NUL-terminated).
    pub spawn_file_addr: AtomicU64,
    /// Length of that file name.
    pub spawn_file_len: AtomicU32,
    /// Line of the spawn site.
    pub spawn_line: AtomicU32,
    /// An instruction address inside the function that spawned the task.
    pub spawn_pc: AtomicU64,
    /// Seqlock for `name` and `labels`: odd while they are being written.
    pub meta_seq: AtomicU32,
    /// Bytes used in `labels`.
    pub labels_len: AtomicU32,
    /// The task's name (UTF-8).
    pub name: [u8; NAME_CAP],
    /// Labels as `key\0value\0` pairs (UTF-8).
    pub labels: [u8; LABELS_CAP],
}
const _: () = assert!(size_of::<TaskSlot>() == 512);

impl TaskSlot {
    /// Runtime-internal task (Go's system goroutine).
    pub const FLAG_SYSTEM: u32 = 1;
    /// Labels did not fit `LABELS_CAP` and were cut.
    pub const FLAG_LABELS_TRUNCATED: u32 = 2;

    /// The first step of recording a task for session `g` from outside its worker (the
    /// profiler's walk, the runtime's profile helper; protocol step 2): CAS a word that
    /// reads absent for `g` to `IN_PROGRESS(g)`. The holder copies the task, then CASes
    /// `IN_PROGRESS(g)` to `SATISFIED(g)` (or back to the returned word to give it up).
    #[inline]
    pub fn try_hold(&self, g: u64) -> Hold {
        if self.task_id.load(Acquire) == 0 {
            return Hold::No;
        }
        let p = self.prof.load(Acquire);
        if p == prof::UNBORN {
            return Hold::Unborn;
        }
        if !prof::is_absent_for(p, g)
            || self
                .prof
                .compare_exchange(p, prof::pack(g, prof::IN_PROGRESS), SeqCst, Relaxed)
                .is_err()
        {
            return Hold::No;
        }
        Hold::Held { was: p }
    }
}

/// What [`TaskSlot::try_hold`] did (a value in one process, never shared memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The caller holds the task `IN_PROGRESS(g)`; `was` is the word it replaced.
    Held {
        /// The profile word before the hold.
        was: u64,
    },
    /// A spawner is still publishing the slot: look again later (protocol, "Task
    /// creation").
    Unborn,
    /// Free, already recorded or held by someone else, or taken first by another.
    No,
}

/// Values of [`TaskSlot::state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskState;
impl TaskState {
    /// Ready to run, in a run queue.
    pub const RUNNABLE: u32 = 1;
    /// On a worker.
    pub const RUNNING: u32 = 2;
    /// Parked; see the wait reason.
    pub const WAITING: u32 = 3;
    /// Finished.
    pub const DEAD: u32 = 4;

    /// Go-style name of a state value.
    pub fn name(v: u32) -> &'static str {
        match v {
            Self::RUNNABLE => "runnable",
            Self::RUNNING => "running",
            Self::WAITING => "waiting",
            Self::DEAD => "dead",
            _ => "unknown",
        }
    }
}

/// Values of [`TaskSlot::wait_reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitReason;
impl WaitReason {
    /// Not waiting.
    pub const NONE: u32 = 0;
    /// Blocked sending on a channel.
    pub const CHAN_SEND: u32 = 1;
    /// Blocked receiving from a channel.
    pub const CHAN_RECV: u32 = 2;
    /// Blocked in a select over several channels.
    pub const SELECT: u32 = 3;
    /// Sleeping.
    pub const SLEEP: u32 = 4;
    /// Waiting for a mutex.
    pub const MUTEX: u32 = 5;
    /// Waiting on a wait group.
    pub const WAIT_GROUP: u32 = 6;
    /// Waiting for another task to finish.
    pub const JOIN: u32 = 7;
    /// Waiting for I/O or a blocking call moved off the workers.
    pub const IO: u32 = 8;

    /// Go-style name of a wait reason value, as `goroutine N [name]:` shows it.
    pub fn name(v: u32) -> &'static str {
        match v {
            Self::NONE => "",
            Self::CHAN_SEND => "chan send",
            Self::CHAN_RECV => "chan receive",
            Self::SELECT => "select",
            Self::SLEEP => "sleep",
            Self::MUTEX => "sync.Mutex.Lock",
            Self::WAIT_GROUP => "sync.WaitGroup.Wait",
            Self::JOIN => "join",
            Self::IO => "IO wait",
            _ => "unknown",
        }
    }
}

/// Packing of [`ControlBlock::session`]: `generation << 2 | flags`.
pub mod session {
    /// A profile is in progress.
    pub const ACTIVE: u64 = 1;
    /// The runtime gave up on the session (the profiler died or overran its cap).
    pub const ABORTED: u64 = 2;
    /// Generation of a session word.
    pub const fn generation(word: u64) -> u64 {
        word >> 2
    }
    /// Is the session active (and not aborted)?
    pub const fn is_active(word: u64) -> bool {
        word & (ACTIVE | ABORTED) == ACTIVE
    }
    /// Build a session word.
    pub const fn pack(generation: u64, flags: u64) -> u64 {
        (generation << 2) | (flags & 3)
    }
}

/// Packing of [`TaskSlot::prof`]: `generation << 2 | state`.
///
/// Generations are 62 bits and start at 1; the all-ones generation marks the two
/// special words [`prof::UNBORN`] and [`prof::FREE`], which never match a session.
pub mod prof {
    /// Not yet recorded in the profile of this generation.
    pub const ABSENT: u64 = 0;
    /// Being recorded by whoever won the CAS.
    pub const IN_PROGRESS: u64 = 1;
    /// Recorded (or born after the profile started).
    pub const SATISFIED: u64 = 2;
    /// The runtime took the task back from a silent profiler; the profiler's copy is void.
    pub const TORN: u64 = 3;
    /// Generation bits of the two special words.
    pub const SPECIAL_GEN: u64 = u64::MAX >> 2;
    /// A slot being filled by its spawner.
    pub const UNBORN: u64 = SPECIAL_GEN << 2;
    /// A free slot.
    pub const FREE: u64 = (SPECIAL_GEN << 2) | 1;
    /// Generation of a profile word.
    pub const fn generation(word: u64) -> u64 {
        word >> 2
    }
    /// State bits of a profile word.
    pub const fn state(word: u64) -> u64 {
        word & 3
    }
    /// Build a profile word.
    pub const fn pack(generation: u64, state: u64) -> u64 {
        (generation << 2) | (state & 3)
    }
    /// Does this word read as ABSENT for a session of generation `g`? Only words of an
    /// older generation (or `g`'s own ABSENT) do; the special words and words of newer
    /// generations never do.
    pub const fn is_absent_for(word: u64, g: u64) -> bool {
        let gen = generation(word);
        gen < g || (gen == g && state(word) == ABSENT)
    }
}

/// Packing of [`ControlBlock::arena_used`]: `generation << 40 | bytes used`.
///
/// The profiler stores `pack(g, 0)` in STW 1. A runtime thread reserves space with one
/// `fetch_add` and keeps the reservation only if the word's generation is the session
/// it is recording for: a thread that loaded an older session word before this STW 1
/// would otherwise write into the new session's records.
pub mod arena {
    /// Bits of the byte count.
    pub const OFFSET_BITS: u32 = 40;
    const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;
    /// Build an `arena_used` word.
    pub const fn pack(generation: u64, used: u64) -> u64 {
        (generation << OFFSET_BITS) | (used & OFFSET_MASK)
    }
    /// The (truncated) generation of an `arena_used` word.
    pub const fn generation(word: u64) -> u64 {
        word >> OFFSET_BITS
    }
    /// Does `word` belong to session `g` (compared in the bits the word keeps)?
    pub const fn is_generation(word: u64, g: u64) -> bool {
        generation(word) == (g << OFFSET_BITS) >> OFFSET_BITS
    }
    /// Bytes used.
    pub const fn used(word: u64) -> u64 {
        word & OFFSET_MASK
    }
}

/// Packing of [`ControlBlock::assist_next`] and [`ControlBlock::assist_done`]: the
/// generation's low 32 bits above a 32-bit slot count, so that a worker held up since
/// an older session (stopped by this one's STW 1 between its loads and its CAS) can
/// neither take slots from nor add to this one's counts.
pub mod assist {
    /// Bits of the slot count.
    pub const COUNT_BITS: u32 = 32;
    const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
    /// Build a word.
    pub const fn pack(generation: u64, count: u64) -> u64 {
        (generation << COUNT_BITS) | (count & COUNT_MASK)
    }
    /// Does `word` belong to session `g` (compared in the bits the word keeps)?
    pub const fn is_generation(word: u64, g: u64) -> bool {
        word >> COUNT_BITS == (g << COUNT_BITS) >> COUNT_BITS
    }
    /// The slot count.
    pub const fn count(word: u64) -> u64 {
        word & COUNT_MASK
    }
}

/// Header of one record in the arena. The first `slot_len` bytes of the task's
/// [`TaskSlot`] follow (taken before the task ran again: its name, labels and spawn site
/// as of the snapshot, even if the slot is reused later), padded to 16, then `stack_len`
/// stack bytes, then padding to 16.
///
/// `slot_len` is [`SLOT_COPY_MIN`] plus the slot's `labels_len` (v5; up to v4 the whole
/// 512-byte slot was copied): every field before `labels`, and the labels in use. A
/// writer reserves at least [`ArenaRecord::MIN_SPAN`] bytes, so a reader may view a
/// whole `TaskSlot` at `SLOT_OFFSET` without leaving the arena (the bytes past
/// `slot_len` are not the slot's and must not be read).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArenaRecord {
    /// Index of the task's slot.
    pub slot: u32,
    /// [`ArenaRecord::FLAG_TRUNCATED`].
    pub flags: u32,
    /// Task id at the time of the record.
    pub task_id: u64,
    /// Session generation it belongs to.
    pub generation: u64,
    /// Saved stack pointer; the copied bytes start here.
    pub sp: u64,
    /// Saved instruction pointer.
    pub pc: u64,
    /// Saved frame pointer.
    pub fp: u64,
    /// Bytes of stack that follow the slot copy (at most [`MAX_STACK_COPY`]).
    pub stack_len: u32,
    /// Bytes of the slot copy, `SLOT_COPY_MIN ..= size_of::<TaskSlot>()`.
    pub slot_len: u32,
    /// Task state when recorded.
    pub state: u32,
    /// Wait reason when recorded.
    pub wait_reason: u32,
}
const _: () = assert!(size_of::<ArenaRecord>() == 64);

impl ArenaRecord {
    /// The stack was longer than [`MAX_STACK_COPY`] and was cut.
    pub const FLAG_TRUNCATED: u32 = 1;
    /// `slot` of a ring header that pads the ring to its end (v6): the next record is
    /// at the ring's start.
    pub const PAD_SLOT: u32 = u32::MAX;
    /// A ring header alone (v6, `slot_len` and `stack_len` 0): the helper did not
    /// record the task in `slot` (a spawner was publishing it, or someone else held
    /// it); the profiler looks at that slot itself.
    pub const FLAG_LEFTOVER: u32 = 2;
    /// A ring header alone (v6, `slot_len` and `stack_len` 0), the helper's last record
    /// of a session: it has visited every slot below `slot` since the session began,
    /// recording each task absent from it or sending a [`Self::FLAG_LEFTOVER`] header.
    pub const FLAG_PASS_DONE: u32 = 4;
    /// Bytes of a header-only ring record ([`Self::FLAG_LEFTOVER`],
    /// [`Self::FLAG_PASS_DONE`]).
    pub const MARK_LEN: u64 = size_of::<ArenaRecord>() as u64;
    /// The largest footprint a record can have: a whole slot and [`MAX_STACK_COPY`]
    /// bytes of stack. A ring of less than twice this could not always take the next
    /// record.
    pub const MAX_FOOTPRINT: u64 = Self::footprint(size_of::<TaskSlot>() as u64, MAX_STACK_COPY);
    /// Bytes a record with `slot_len` bytes of slot and `stack_len` bytes of stack
    /// takes in the arena.
    pub const fn footprint(slot_len: u64, stack_len: u64) -> u64 {
        (Self::stack_offset(slot_len) + stack_len + 15) & !15
    }
    /// Offset of the slot copy from the start of a record.
    pub const SLOT_OFFSET: u64 = size_of::<ArenaRecord>() as u64;
    /// Offset of the stack bytes from the start of a record.
    pub const fn stack_offset(slot_len: u64) -> u64 {
        Self::SLOT_OFFSET + ((slot_len + 15) & !15)
    }
    /// Least arena space a record may span from its start to the arena's end: room for
    /// a whole `TaskSlot` view at `SLOT_OFFSET`.
    pub const MIN_SPAN: u64 = Self::SLOT_OFFSET + size_of::<TaskSlot>() as u64;
}

/// Bytes of a [`TaskSlot`] an arena record always copies: every field before `labels`.
pub const SLOT_COPY_MIN: u64 = core::mem::offset_of!(TaskSlot, labels) as u64;
const _: () = assert!(SLOT_COPY_MIN == 168);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_words_never_read_absent() {
        for g in [1, 2, 1000, prof::SPECIAL_GEN - 1] {
            assert!(!prof::is_absent_for(prof::UNBORN, g));
            assert!(!prof::is_absent_for(prof::FREE, g));
            assert!(prof::is_absent_for(prof::pack(g - 1, prof::SATISFIED), g));
            assert!(!prof::is_absent_for(prof::pack(g, prof::SATISFIED), g));
            assert!(!prof::is_absent_for(prof::pack(g, prof::IN_PROGRESS), g));
            // A newer session's word, seen by a thread with a stale session load.
            assert!(!prof::is_absent_for(prof::pack(g + 1, prof::SATISFIED), g));
        }
    }

    #[test]
    fn session_flags() {
        assert!(session::is_active(session::pack(5, session::ACTIVE)));
        assert!(!session::is_active(session::pack(
            5,
            session::ACTIVE | session::ABORTED
        )));
        assert!(!session::is_active(session::pack(5, 0)));
        assert_eq!(session::generation(session::pack(5, 3)), 5);
    }

    #[test]
    fn arena_words_carry_their_session() {
        let w = arena::pack(7, 4096);
        assert!(arena::is_generation(w, 7));
        assert!(!arena::is_generation(w, 8));
        assert_eq!(arena::used(w + 576), 4672);
        assert!(arena::is_generation(arena::pack(1 << 30, 0), 1 << 30));
    }

    #[test]
    fn arena_footprint_is_aligned() {
        assert_eq!(ArenaRecord::footprint(SLOT_COPY_MIN, 0), 240);
        assert_eq!(ArenaRecord::footprint(SLOT_COPY_MIN, 1), 256);
        assert_eq!(ArenaRecord::footprint(SLOT_COPY_MIN + 1, 16), 256);
        assert_eq!(ArenaRecord::footprint(512, 0), 576);
        assert_eq!(ArenaRecord::stack_offset(SLOT_COPY_MIN + 3), 240);
    }
}
