//! Walks remembered by what they read.
//!
//! Thousands of parked tasks usually share a handful of stack shapes: the same code
//! path, the same frame sizes, only the stack's address differs. An unwind is a pure
//! function of the instruction pointer, the stack and frame pointers, and the stack
//! words it reads. So a walk is remembered with every word it read, and a later stack
//! with the same instruction pointer, the same length and start (relative to its stack
//! pointer) is given the remembered frames when every one of those words matches:
//!
//! * a word the walk used as a return address must be equal;
//! * any other word (a saved frame pointer) must be equal *relative to the stack
//!   pointer*: the new walk then computes the same addresses shifted by the difference
//!   of the two stack pointers, reads the same offsets, and so returns the same frames;
//! * the frame pointer register likewise, relative to the stack pointer;
//! * words read in the walk's last step only decided that the walk ends (a zero return
//!   address, say), so they must be equal.
//!
//! Code built without frame pointers saves `rbp` as an ordinary register, whose value
//! differs from task to task and means nothing to the walk. So before a walk is
//! remembered it is done again with the frame pointer register and the words of the
//! second kind flipped in a high bit (all at once, then, if that changed anything, one
//! at a time): what can be flipped without changing the offsets read or the frames
//! returned was not used (a value used as an address would have moved every read that
//! depends on it out of the copy) and is not compared at all.
//!
//! A step that read its return address value twice is not remembered (we could not
//! tell which read was which).

use super::UnwindEnd;
use rustc_hash::FxHashMap;

/// Shapes remembered at most; a target with more distinct shapes unwinds the rest in full.
const MAX_WALKS: usize = 4096;
/// Reads a remembered walk may have (deeper walks are not remembered).
const MAX_READS: usize = 512;

/// What a remembered walk is found by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Key {
    pub ip: u64,
    /// `sp - base`: bytes copied below the stack pointer.
    pub below_sp: u64,
    /// Bytes copied.
    pub len: u64,
}

/// One word a walk read: its offset in the copy, and its value (relative to the stack
/// pointer unless `exact`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Read {
    off: u32,
    value: u64,
    exact: bool,
}

/// A walk ready to be remembered ([`Memo::classify`], [`Memo::remember`]).
#[derive(Debug)]
pub(super) struct Walk {
    /// `bp - sp` of the walk, or `None` when the walk does not depend on it.
    bp_rel: Option<u64>,
    reads: Vec<Read>,
    frames: Vec<u64>,
    end: UnwindEnd,
}

/// Flipped in the second walk (see the module docs): moves any address out of any copy.
pub(super) const FLIP: u64 = 1 << 44;

/// The remembered walks, and what the walk in progress reads.
#[derive(Debug, Default)]
pub(super) struct Memo {
    walks: FxHashMap<Key, Walk>,
    /// Reads of the walk in progress: (offset, value), `None` when outside the copy.
    pub reading: Vec<(u64, Option<u64>)>,
    /// Index in `reading` where each step of the walk in progress began.
    pub steps: Vec<usize>,
    hits: u64,
}

fn word(stack: &[u8], off: u32) -> Option<u64> {
    let off = off as usize;
    let b = stack.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

impl Memo {
    /// Forget everything (the modules changed: the same addresses may unwind otherwise).
    pub fn clear(&mut self) {
        self.walks.clear();
    }

    /// Stacks given remembered frames so far.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// The remembered frames for this stack, if its walk would read what the
    /// remembered one did.
    pub fn find(
        &mut self,
        key: &Key,
        sp: u64,
        bp: u64,
        stack: &[u8],
        out: &mut Vec<u64>,
    ) -> Option<UnwindEnd> {
        let w = self.walks.get(key)?;
        let reads_match = w.reads.iter().all(|r| {
            word(stack, r.off).is_some_and(|v| {
                if r.exact {
                    v == r.value
                } else {
                    v.wrapping_sub(sp) == r.value
                }
            })
        });
        if !reads_match || w.bp_rel.is_some_and(|r| bp.wrapping_sub(sp) != r) {
            return None;
        }
        out.clear();
        out.extend_from_slice(&w.frames);
        self.hits += 1;
        Some(w.end)
    }

    /// Whether another walk can be remembered under `key`.
    pub fn has_room(&self, key: &Key) -> bool {
        self.walks.len() < MAX_WALKS || self.walks.contains_key(key)
    }

    /// Start recording a walk.
    pub fn begin(&mut self) {
        self.reading.clear();
        self.steps.clear();
    }

    /// Remember `walk` under `key`, without comparing the words at the offsets `free`,
    /// nor the frame pointer register if `bp_free` (what the flipped walks showed to
    /// be unused).
    pub fn remember(&mut self, key: Key, mut walk: Walk, free: &[u64], bp_free: bool) {
        if bp_free {
            walk.bp_rel = None;
        }
        walk.reads
            .retain(|r| r.exact || !free.contains(&u64::from(r.off)));
        if self.has_room(&key) {
            self.walks.insert(key, walk);
        }
    }

    /// Offsets of the words of the second kind in `walk` (what the second walk flips).
    pub fn relative_offsets(walk: &Walk) -> Vec<u64> {
        walk.reads
            .iter()
            .filter(|r| !r.exact)
            .map(|r| u64::from(r.off))
            .collect()
    }

    /// Offsets read by the walk in progress, in order.
    pub fn read_offsets(&self) -> Vec<u64> {
        self.reading.iter().map(|(off, _)| *off).collect()
    }

    /// The walk in progress (which ended with `frames` and `end`) as the rules above
    /// want it; `None` if it cannot be remembered.
    pub fn classify(&self, sp: u64, bp: u64, frames: &[u64], end: UnwindEnd) -> Option<Walk> {
        if self.reading.len() > MAX_READS {
            return None;
        }
        let mut reads = Vec::with_capacity(self.reading.len());
        for (s, &start) in self.steps.iter().enumerate() {
            let stop = self.steps.get(s + 1).copied().unwrap_or(self.reading.len());
            // Step s produced frames[s + 1] as its return address, if it produced one.
            let ra = frames.get(s + 1).copied();
            let step = &self.reading[start..stop];
            if let Some(ra) = ra {
                if step.iter().filter(|(_, v)| *v == Some(ra)).count() > 1 {
                    return None;
                }
            }
            for &(off, v) in step {
                // A read outside the copy fails the same way for every stack of this
                // shape (same length, same offset): nothing to compare.
                let Some(v) = v else { continue };
                let off = u32::try_from(off).ok()?;
                let exact = ra.is_none_or(|ra| v == ra);
                reads.push(Read {
                    off,
                    value: if exact { v } else { v.wrapping_sub(sp) },
                    exact,
                });
            }
        }
        Some(Walk {
            bp_rel: Some(bp.wrapping_sub(sp)),
            reads,
            frames: frames.to_vec(),
            end,
        })
    }
}
