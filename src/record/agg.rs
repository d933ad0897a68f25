//! Many snapshots folded into one sampled profile.
//!
//! Each snapshot has its own [`StackTable`]; stacks are merged by their address vectors
//! into one table, so every distinct stack of the whole recording is unwound once per
//! snapshot (by the engine) but interned, trimmed and symbolized once. A task seen in a
//! snapshot adds one sample and one interval of wall time to the entry keyed by its
//! (stack, labels), where the labels are its own plus `state` (`running`, `runnable` or
//! its wait reason, e.g. `chan receive`).

use std::time::Duration;

use rustc_hash::FxHashMap;

use gprof_abi::{TaskState, WaitReason};

use crate::model::{ModuleInfo, Snapshot, StackId, StackTable};
use crate::symbolize::Symbolizer;

/// Index of a label set of a [`Recording`].
pub type LabelSetId = u32;

/// The label key that carries a task's state.
pub const STATE_LABEL: &str = "state";

/// Values of one (stack, labels) entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Snapshots that saw a task with this stack and labels, summed over tasks.
    pub samples: u64,
    /// `samples` × the sampling interval, nanoseconds.
    pub wall_ns: u64,
}

/// One aggregated entry, for the writers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Stack in [`Recording::stacks`].
    pub stack: StackId,
    /// Labels sorted by key then value, `state` among them.
    pub labels: &'a [(String, String)],
    /// The values.
    pub counts: Counts,
}

impl Entry<'_> {
    /// The value of the `state` label.
    pub fn state(&self) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| k == STATE_LABEL)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// The `state` label of a task: `running`, `runnable`, its wait reason, or the state name.
pub fn state_label(state: u32, wait_reason: u32) -> &'static str {
    match state {
        TaskState::WAITING => match WaitReason::name(wait_reason) {
            "" => TaskState::name(state),
            r => r,
        },
        s => TaskState::name(s),
    }
}

/// Snapshots of one target, aggregated.
#[derive(Debug)]
pub struct Recording {
    /// Target pid.
    pub pid: u32,
    /// Every distinct stack seen.
    pub stacks: StackTable,
    /// Executable mappings of the target.
    pub modules: Vec<ModuleInfo>,
    /// Sampling interval, nanoseconds (each sample's wall time).
    pub interval_ns: u64,
    /// Snapshots taken.
    pub snapshots: u64,
    /// CLOCK_REALTIME nanoseconds of the first snapshot (0 before it).
    pub start_unix_ns: u64,
    /// From the first snapshot to the end of the recording, nanoseconds.
    pub duration_ns: u64,
    /// Tasks in the latest snapshot.
    pub tasks_last: usize,
    /// Longest STW 1 + STW 2 of one snapshot, nanoseconds.
    pub pause_max_ns: u64,
    /// Sum of STW 1 + STW 2 over all snapshots, nanoseconds.
    pub pause_total_ns: u64,
    label_sets: Vec<Vec<(String, String)>>,
    label_index: FxHashMap<Vec<(String, String)>, LabelSetId>,
    /// The label set of an unlabelled task, by (state, wait reason): most tasks, and
    /// no allocation per task.
    state_sets: FxHashMap<(u32, u32), LabelSetId>,
    counts: FxHashMap<(StackId, LabelSetId), Counts>,
    /// The task id last seen in each slot: a task keeps its slot for life, so a slot
    /// showing a new id is a new task. (A set of ids was a hash insert per task per
    /// sample: a quarter of a 100k-task recording's time.)
    last_id_by_slot: Vec<u64>,
    tasks_seen: usize,
}

impl Recording {
    /// An empty recording of `pid` sampled every `interval`.
    pub fn new(pid: u32, modules: Vec<ModuleInfo>, interval: Duration) -> Self {
        Recording {
            pid,
            stacks: StackTable::default(),
            modules,
            interval_ns: u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX),
            snapshots: 0,
            start_unix_ns: 0,
            duration_ns: 0,
            tasks_last: 0,
            pause_max_ns: 0,
            pause_total_ns: 0,
            label_sets: Vec::new(),
            label_index: FxHashMap::default(),
            state_sets: FxHashMap::default(),
            counts: FxHashMap::default(),
            last_id_by_slot: Vec::new(),
            tasks_seen: 0,
        }
    }

    /// Add one snapshot; system tasks only with `include_system`. Returns the stacks it
    /// added to [`Recording::stacks`] (for incremental symbolization).
    pub fn add(&mut self, snap: &Snapshot, include_system: bool) -> Vec<StackId> {
        if self.snapshots == 0 {
            self.start_unix_ns = snap.time_unix_ns;
        }
        self.snapshots += 1;
        let pause = snap.stats.stw1_ns + snap.stats.stw2_ns;
        self.pause_max_ns = self.pause_max_ns.max(pause);
        self.pause_total_ns += pause;
        let mut remap: Vec<Option<StackId>> = vec![None; snap.stacks.all().len()];
        let mut added = Vec::new();
        let mut tasks = 0;
        for t in &snap.tasks {
            if t.system && !include_system {
                continue;
            }
            tasks += 1;
            // Slot indices are bounded by the table's capacity (validated at attach).
            let slot = t.slot as usize;
            if slot >= self.last_id_by_slot.len() {
                self.last_id_by_slot.resize(slot + 1, 0);
            }
            if self.last_id_by_slot[slot] != t.id {
                self.last_id_by_slot[slot] = t.id;
                self.tasks_seen += 1;
            }
            let stack = *remap[t.stack as usize].get_or_insert_with(|| {
                let before = self.stacks.all().len();
                let id = self.stacks.intern(snap.stacks.get(t.stack).clone());
                if id as usize == before {
                    added.push(id);
                }
                id
            });
            let set = if t.labels().is_empty() {
                match self.state_sets.get(&(t.state, t.wait_reason)) {
                    Some(&id) => id,
                    None => {
                        let id = self.label_set(t.state, t.wait_reason, &[]);
                        self.state_sets.insert((t.state, t.wait_reason), id);
                        id
                    }
                }
            } else {
                self.label_set(t.state, t.wait_reason, t.labels())
            };
            let c = self.counts.entry((stack, set)).or_default();
            c.samples += 1;
            c.wall_ns = c.wall_ns.saturating_add(self.interval_ns);
        }
        self.tasks_last = tasks;
        added
    }

    /// The id of the label set made of `labels` and the `state` label.
    fn label_set(
        &mut self,
        state: u32,
        wait_reason: u32,
        labels: &[(String, String)],
    ) -> LabelSetId {
        let mut set: Vec<(String, String)> = Vec::with_capacity(labels.len() + 1);
        set.push((
            STATE_LABEL.to_string(),
            state_label(state, wait_reason).to_string(),
        ));
        set.extend(labels.iter().cloned());
        set.sort();
        match self.label_index.get(&set) {
            Some(&id) => id,
            None => {
                let id = self.label_sets.len() as LabelSetId;
                self.label_sets.push(set.clone());
                self.label_index.insert(set, id);
                id
            }
        }
    }

    /// Distinct task ids seen in any snapshot.
    pub fn tasks_seen(&self) -> usize {
        self.tasks_seen
    }

    /// Sum of all samples (tasks × snapshots).
    pub fn total_samples(&self) -> u64 {
        self.counts.values().map(|c| c.samples).sum()
    }

    /// Every entry, most samples first; ties broken by the stack's addresses, then the
    /// labels, so the order is deterministic.
    pub fn entries(&self) -> Vec<Entry<'_>> {
        let mut out: Vec<Entry<'_>> = self
            .counts
            .iter()
            .map(|(&(stack, set), &counts)| Entry {
                stack,
                labels: &self.label_sets[set as usize],
                counts,
            })
            .collect();
        out.sort_by(|a, b| {
            b.counts
                .samples
                .cmp(&a.counts.samples)
                .then_with(|| {
                    self.stacks
                        .get(a.stack)
                        .addrs
                        .cmp(&self.stacks.get(b.stack).addrs)
                })
                .then_with(|| a.stack.cmp(&b.stack))
                .then_with(|| a.labels.cmp(b.labels))
        });
        out
    }

    /// Drop the runtime's context-switch and task-entry frames from every stack
    /// ([`crate::output::trim`]); entries whose stacks become equal are merged.
    pub fn hide_runtime_frames(&mut self, sym: &mut Symbolizer) {
        let (table, remap) = crate::output::trim::trim_stacks(&self.stacks, sym);
        let mut counts: FxHashMap<(StackId, LabelSetId), Counts> = FxHashMap::default();
        for ((stack, set), c) in self.counts.drain() {
            let e = counts.entry((remap[stack as usize], set)).or_default();
            e.samples += c.samples;
            e.wall_ns = e.wall_ns.saturating_add(c.wall_ns);
        }
        self.counts = counts;
        self.stacks = table;
    }

    /// Resolve every address of every stack (each distinct address once; the
    /// symbolizer caches). Returns nothing: read the results with `Symbolizer::cached`.
    pub fn symbolize(&self, sym: &mut Symbolizer, stacks: impl IntoIterator<Item = StackId>) {
        for id in stacks {
            for (i, &addr) in self.stacks.get(id).addrs.iter().enumerate() {
                sym.lookup(addr, i > 0);
            }
        }
    }

    /// [`Recording::symbolize`] for every stack.
    pub fn symbolize_all(&self, sym: &mut Symbolizer) {
        self.symbolize(sym, 0..self.stacks.all().len() as StackId);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RecordedBy, SpawnSite, Stack, TaskRecord};

    fn task(
        id: u64,
        state: u32,
        reason: u32,
        stack: StackId,
        labels: &[(&str, &str)],
    ) -> TaskRecord {
        TaskRecord {
            id,
            slot: id as u32,
            state,
            wait_reason: reason,
            wait_ns: 0,
            parent_id: 0,
            spawn: SpawnSite::default().into(),
            extra: crate::model::TaskExtra::new(
                None,
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            system: false,
            stack,
            recorded_by: RecordedBy::Tool,
        }
    }

    /// Two snapshots whose stack tables number the same stacks differently.
    #[test]
    fn merges_stacks_by_address_across_snapshots() {
        let s = |a: &[u64]| Stack {
            addrs: a.to_vec(),
            incomplete: false,
        };
        let mut one = Snapshot::default();
        let a1 = one.stacks.intern(s(&[1, 2, 3]));
        let b1 = one.stacks.intern(s(&[4, 5]));
        one.tasks = vec![
            task(1, TaskState::WAITING, WaitReason::CHAN_RECV, a1, &[]),
            task(2, TaskState::WAITING, WaitReason::CHAN_RECV, a1, &[]),
            task(3, TaskState::RUNNING, 0, b1, &[("k", "v")]),
        ];
        let mut two = Snapshot::default();
        let b2 = two.stacks.intern(s(&[4, 5]));
        let a2 = two.stacks.intern(s(&[1, 2, 3]));
        two.tasks = vec![
            task(1, TaskState::WAITING, WaitReason::CHAN_RECV, a2, &[]),
            task(2, TaskState::RUNNABLE, 0, a2, &[]),
            task(3, TaskState::RUNNING, 0, b2, &[("k", "v")]),
        ];
        let mut r = Recording::new(7, Vec::new(), Duration::from_millis(10));
        assert_eq!(r.add(&one, false).len(), 2);
        assert_eq!(r.add(&two, false).len(), 0);
        assert_eq!(r.stacks.all().len(), 2);
        assert_eq!(r.total_samples(), 6);
        assert_eq!(r.tasks_seen(), 3);
        let e = r.entries();
        let got: Vec<(Vec<u64>, &str, u64, u64)> = e
            .iter()
            .map(|e| {
                (
                    r.stacks.get(e.stack).addrs.clone(),
                    e.state(),
                    e.counts.samples,
                    e.counts.wall_ns,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (vec![1, 2, 3], "chan receive", 3, 30_000_000),
                (vec![4, 5], "running", 2, 20_000_000),
                (vec![1, 2, 3], "runnable", 1, 10_000_000),
            ]
        );
        assert_eq!(
            e[1].labels,
            &[
                ("k".to_string(), "v".to_string()),
                ("state".to_string(), "running".to_string())
            ]
        );
    }

    #[test]
    fn state_labels() {
        assert_eq!(state_label(TaskState::RUNNING, 0), "running");
        assert_eq!(state_label(TaskState::RUNNABLE, 0), "runnable");
        assert_eq!(state_label(TaskState::WAITING, WaitReason::SLEEP), "sleep");
        assert_eq!(state_label(TaskState::WAITING, WaitReason::NONE), "waiting");
    }
}
