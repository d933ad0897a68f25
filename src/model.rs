//! What a snapshot is made of, independent of how it was taken or how it is written.
//!
//! The snapshot engine fills these types; the output writers read them. Addresses are
//! absolute addresses in the target (`*_avma`); stacks are interned so that tasks with
//! the same stack share one entry and symbolization runs once per distinct address.

use std::collections::HashMap;

/// Index into [`StackTable`].
pub type StackId = u32;

/// Frames of one stack, innermost first. The first address is the instruction
/// pointer; every later one is a return address (look it up at `addr - 1`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Stack {
    /// Frame addresses in the target, innermost first.
    pub addrs: Vec<u64>,
    /// The unwinder stopped early (cap, bad CFI, truncated copy) instead of at the task entry.
    pub incomplete: bool,
}

/// Interned stacks.
#[derive(Debug, Default)]
pub struct StackTable {
    stacks: Vec<Stack>,
    index: HashMap<Stack, StackId>,
}

impl StackTable {
    /// Intern `stack`, returning its id.
    pub fn intern(&mut self, stack: Stack) -> StackId {
        if let Some(&id) = self.index.get(&stack) {
            return id;
        }
        let id = self.stacks.len() as StackId;
        self.stacks.push(stack.clone());
        self.index.insert(stack, id);
        id
    }
    /// The stack with this id.
    pub fn get(&self, id: StackId) -> &Stack {
        &self.stacks[id as usize]
    }
    /// All stacks, indexed by id.
    pub fn all(&self) -> &[Stack] {
        &self.stacks
    }
}

/// Where a task was spawned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpawnSite {
    /// Source file of the `spawn` call (from `#[track_caller]`), if readable. Shared:
    /// thousands of tasks come from one spawn site.
    pub file: Option<std::sync::Arc<str>>,
    /// Line of the `spawn` call.
    pub line: u32,
    /// An address inside the function that called `spawn` (0 if unknown).
    pub pc: u64,
}

/// How a task's stack got into the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordedBy {
    /// The tool, during STW 1, because a worker was running (or about to run) it.
    StopTheWorld,
    /// The tool, during the concurrent phase.
    Tool,
    /// The runtime itself, on its profile barrier, before it resumed the task.
    Runtime,
}

/// One task as of STW 1.
#[derive(Debug, Clone)]
pub struct TaskRecord {
    /// Task id (unique for the life of the process).
    pub id: u64,
    /// Index of the task's slot in the target's task table: a task keeps its slot for
    /// life, and no two live tasks share one.
    pub slot: u32,
    /// `gprof_abi::TaskState` value.
    pub state: u32,
    /// `gprof_abi::WaitReason` value.
    pub wait_reason: u32,
    /// How long the task had been waiting at the snapshot, in nanoseconds (0 if not waiting).
    pub wait_ns: u64,
    /// Parent task id (0 for a root task).
    pub parent_id: u64,
    /// Spawn site, shared by the tasks spawned at one site.
    pub spawn: std::sync::Arc<SpawnSite>,
    /// Name and labels, which most tasks have not: `None` for neither.
    pub extra: Option<Box<TaskExtra>>,
    /// Runtime-internal task.
    pub system: bool,
    /// Interned stack.
    pub stack: StackId,
    /// How the stack was recorded.
    pub recorded_by: RecordedBy,
}

// A snapshot holds one per task: at a million tasks each byte here is a megabyte of
// fresh memory the tool faults in (and on a VM that hands freed memory back to its
// host, ~3 ms of system time per MB; BENCHMARKS.md, session 5). Rare or shared parts
// live behind pointers.
const _: () = assert!(std::mem::size_of::<TaskRecord>() <= 64);

/// What only some tasks carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskExtra {
    /// Optional name given at spawn.
    pub name: Option<Box<str>>,
    /// Labels, in the order the runtime stored them.
    pub labels: Box<[(String, String)]>,
}

impl TaskExtra {
    /// `None` for a task with neither a name nor labels.
    pub fn new(name: Option<Box<str>>, labels: Box<[(String, String)]>) -> Option<Box<Self>> {
        (name.is_some() || !labels.is_empty()).then(|| Box::new(TaskExtra { name, labels }))
    }
}

impl TaskRecord {
    /// The name given at spawn, if any.
    pub fn name(&self) -> Option<&str> {
        self.extra.as_ref()?.name.as_deref()
    }

    /// Labels, in the order the runtime stored them.
    pub fn labels(&self) -> &[(String, String)] {
        self.extra.as_ref().map_or(&[], |e| &e.labels)
    }

    /// Name the task (tests and builders).
    pub fn set_name(&mut self, name: &str) {
        self.extra.get_or_insert_with(Box::default).name = Some(name.into());
    }
}

/// One executable mapping of the target, for symbolization and pprof `Mapping`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    /// Start of the mapping (avma).
    pub start: u64,
    /// End of the mapping (avma, exclusive).
    pub end: u64,
    /// File offset the mapping starts at.
    pub file_offset: u64,
    /// Path of the file as the target sees it.
    pub path: String,
    /// GNU build id, hex, if the ELF has one.
    pub build_id: Option<String>,
}

/// Timings and counters of one snapshot (`--stats`).
#[derive(Debug, Clone, Default)]
pub struct SnapshotStats {
    /// Wall time of STW 1 (first interrupt to last resume), nanoseconds.
    pub stw1_ns: u64,
    /// Wall time of STW 2, nanoseconds.
    pub stw2_ns: u64,
    /// The profile session, from STW 1's first interrupt to STW 2's last resume (the
    /// one stop, in `--mode stw`): while it lasts every task switch checks the barrier.
    pub session_ns: u64,
    /// Whole snapshot, attach to detach, nanoseconds.
    pub total_ns: u64,
    /// Threads stopped.
    pub threads: u32,
    /// Tasks recorded by the tool during STW 1 / the concurrent phase / by the runtime.
    pub recorded_stw: u64,
    /// Tasks recorded by the tool during the concurrent phase.
    pub recorded_tool: u64,
    /// Tasks recorded by the runtime on its barrier.
    pub recorded_runtime: u64,
    /// Tasks recorded by the tool from an earlier snapshot's stack, because they had not
    /// been resumed since (`Session::set_reuse_unchanged`); counted in `recorded_tool`
    /// too.
    pub reused: u64,
    /// Holds the runtime took back (torn copies dropped and re-read).
    pub torn: u64,
    /// Stack bytes copied out of the target by the tool's own walk.
    pub bytes_copied: u64,
    /// Bytes of records the runtime wrote (its arena and its helper's ring) read by the
    /// tool.
    pub runtime_bytes: u64,
    /// The runtime's next task id at STW 1: every task in the snapshot has a smaller id,
    /// every task spawned after STW 1 a larger or equal one.
    pub id_cutoff: u64,
    /// Generation of the profile session this snapshot was taken in.
    pub generation: u64,
    /// After STW 1, waiting while the runtime recorded tasks itself, or unwinding its
    /// profile helper's records while it wrote them, nanoseconds.
    pub wait_ns: u64,
    /// The tool's walk of the table (copy, unwind), nanoseconds.
    pub walk_ns: u64,
    /// After STW 2, reading and unwinding the runtime's records not read before,
    /// nanoseconds.
    pub arena_ns: u64,
    /// Whether the runtime's profile helper recorded for this snapshot, and how the tool
    /// read its ring: `Some(true)` while the helper wrote it (two idle CPUs),
    /// `Some(false)` in turns, `None` without the helper.
    pub helper_alongside: Option<bool>,
    /// When the helper's pass covered every slot alive at STW 1: how many slots it left
    /// to the tool, which walked only those (`None`: the tool walked the whole table).
    pub helper_leftovers: Option<u64>,
    /// Whether the target's workers were asked to record the parked tasks between their
    /// own (abi docs, "Worker assists"): `Some(true)` when they covered every slot (the
    /// tool walked none), `Some(false)` when they stalled or left some, `None` if not
    /// asked.
    pub assist_covered: Option<bool>,
    /// Stacks given the frames of an earlier walk of the same shape instead of being
    /// walked (`unwind/memo.rs`).
    pub memo_hits: u64,
}

/// A consistent picture of every task alive at STW 1.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Target pid.
    pub pid: u32,
    /// Tasks, sorted by id.
    pub tasks: Vec<TaskRecord>,
    /// Interned stacks the tasks point into.
    pub stacks: StackTable,
    /// Executable mappings of the target.
    pub modules: Vec<ModuleInfo>,
    /// CLOCK_REALTIME nanoseconds at STW 1.
    pub time_unix_ns: u64,
    /// Counters and timings.
    pub stats: SnapshotStats,
}
