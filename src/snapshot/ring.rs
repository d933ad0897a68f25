//! The consumer's side of the profile helper's ring (abi docs, "Profile helper"): the
//! tool unwinds the helper's records while the helper writes more (or in turns with
//! it, when the machine has no two idle CPUs), and moves `ring_tail` so that the
//! helper can write over what it has read.
//!
//! Everything here comes from the target: positions that run backwards or past the
//! ring, records that straddle its end, claim a foreign session or an impossible size
//! are bad data (an error), never a reason to read out of bounds or loop forever.

use super::{check_record, Copy, SlotCopy};
use crate::error::{Error, Result};
use crate::locate::Region;
use crate::model::RecordedBy;
use crate::process::memory::pod_from_bytes;
use gprof_abi::{ArenaRecord, TaskSlot, SLOT_COPY_MIN};
use std::mem::size_of;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::time::{Duration, Instant};
use target_runtime::shared_futex;

/// Bytes of the ring copied out at a time: about 1.3k records of a parked task.
const WINDOW: u64 = 1 << 20;
const _: () = assert!(WINDOW >= ArenaRecord::MAX_FOOTPRINT);
/// Bytes of a record header.
const HEADER: u64 = size_of::<ArenaRecord>() as u64;
/// Sleep between two looks at an empty ring while the helper works alongside.
const POLL: Duration = Duration::from_micros(100);
/// In turns, the longest sleep on `ring_waiting` (the helper wakes it when it waits for
/// room or is done; this bounds a wake lost to a race at the end, and lets the stall
/// check run).
const TURN_WAIT: Duration = Duration::from_millis(1);
/// A helper that has started and then adds nothing to the ring for this long, and is
/// not waiting for a CPU, is stalled (stopped, asleep, or done without saying so): the
/// tool walks the table itself.
const STALL: Duration = Duration::from_millis(2);

/// The tool's position in the ring and its read buffer.
pub(super) struct RingReader {
    /// Bytes of the ring consumed, ever (our `ring_tail`).
    tail: u64,
    len: u64,
    g: u64,
    slot_cap: u32,
    buf: Vec<u8>,
    /// Read the ring while the helper writes it (two CPUs), rather than in turns.
    alongside: bool,
    /// In turns: name our CPU to the helper at each handover (`help_cpu`).
    name_cpu: bool,
    /// The helper's leftovers and end of pass.
    pub(super) marks: Marks,
    /// Records delivered.
    pub(super) records: u64,
    /// Bytes consumed (records and padding).
    pub(super) bytes: u64,
}

impl RingReader {
    /// Empty the ring for session `g` (its helper is idle: nothing moves `ring_head`),
    /// before the helper is woken. `alongside`: see [`alongside`]. `keep_helper_here`:
    /// in turns, have the helper keep to our CPU (`help_cpu`).
    pub(super) fn start(
        region: &Region,
        g: u64,
        alongside: bool,
        keep_helper_here: bool,
    ) -> RingReader {
        let cb = region.control();
        let tail = cb.ring_head.load(Acquire);
        cb.ring_tail.store(tail, Release);
        let name_cpu = !alongside && keep_helper_here;
        cb.help_cpu
            .store(if name_cpu { our_cpu() } else { 0 }, Relaxed);
        RingReader {
            tail,
            len: region.ring_len(),
            g,
            slot_cap: region.layout().slot_cap,
            buf: Vec::new(),
            alongside,
            name_cpu,
            marks: Marks::default(),
            records: 0,
            bytes: 0,
        }
    }

    /// Consume the helper's records while it writes them, until it says it is done or
    /// stops making progress (then the tool's walk does the rest). `helper_start` is how
    /// long a helper that has not acknowledged the session yet may take to begin;
    /// `limit` bounds the whole wait.
    pub(super) fn follow(
        &mut self,
        region: &Region,
        helper_start: Duration,
        limit: Duration,
        interrupted: &dyn Fn() -> bool,
        sink: &mut dyn FnMut(Copy<&[u8]>),
    ) -> Result<()> {
        let cb = region.control();
        let start = Instant::now();
        let mut progress_at = start;
        let mut last_head = self.tail;
        loop {
            cb.heartbeat.fetch_add(1, Relaxed);
            let waiting = cb.ring_waiting.load(Acquire);
            // Before the read: a helper that said it is done had published every record.
            let done = cb.help_done.load(Acquire) == self.g;
            let head = cb.ring_head.load(Acquire);
            if head != last_head {
                last_head = head;
                progress_at = Instant::now();
            }
            // In turns, the ring is read once the helper waits for room (or is done).
            let turn = self.alongside || done || waiting == 1;
            if turn && self.consume(region, sink)? > 0 {
                progress_at = Instant::now();
                continue;
            }
            if done {
                return Ok(());
            }
            let started = cb.help_ack.load(Acquire) == self.g;
            let mut stalled = if started {
                progress_at.elapsed() >= STALL
            } else {
                start.elapsed() >= helper_start
            };
            if stalled && helper_busy(region) {
                // Not stalled, only waiting for a CPU (with a busy task on each of two
                // CPUs, the helper and the tool share one, in slices of a few ms) or
                // for a page. Look again in another STALL.
                stalled = false;
                progress_at = Instant::now();
            }
            // More records than slots: not a helper recording each task once.
            let flooding = self.records > u64::from(self.slot_cap);
            if stalled || flooding || start.elapsed() >= limit || interrupted() {
                return Ok(());
            }
            if self.alongside {
                std::thread::sleep(POLL);
            } else {
                // In turns: asleep until the helper hands over (or, after we gave the
                // ring back, takes it again), instead of waking every POLL, which on a
                // 2-CPU machine preempted whichever thread ran on the CPU we woke on,
                // ten thousand times a second.
                shared_futex::wait(&cb.ring_waiting, waiting, TURN_WAIT);
            }
        }
    }

    /// Read and deliver every record between our tail and the helper's head, giving the
    /// room back chunk by chunk (and waking a helper waiting for it). Returns the bytes
    /// consumed.
    pub(super) fn consume(
        &mut self,
        region: &Region,
        sink: &mut dyn FnMut(Copy<&[u8]>),
    ) -> Result<u64> {
        let cb = region.control();
        let head = cb.ring_head.load(Acquire);
        if head < self.tail || head - self.tail > self.len {
            return Err(Error::bad(format!(
                "the helper's ring head {head:#x} is not within {:#x} bytes after its tail {:#x}",
                self.len, self.tail
            )));
        }
        let from = self.tail;
        while self.tail < head {
            let at = self.tail % self.len;
            let left = self.len - at;
            if left < HEADER {
                // Too little room for a header: the helper skipped it.
                self.tail += left.min(head - self.tail);
                continue;
            }
            let avail = (head - self.tail).min(left).min(WINDOW);
            let end = if avail == left {
                ChunkEnd::Ring
            } else if avail == WINDOW {
                ChunkEnd::Window
            } else {
                ChunkEnd::Head
            };
            self.buf.resize(avail as usize, 0);
            region.read_ring(at, &mut self.buf)?;
            let records = &mut self.records;
            let (used, pad) = parse_chunk(
                &self.buf,
                self.g,
                self.slot_cap,
                at,
                end,
                &mut self.marks,
                &mut |c| {
                    *records += 1;
                    sink(c)
                },
            )?;
            self.tail += if pad {
                left.min(head - self.tail)
            } else {
                used
            };
            if self.alongside {
                // Each chunk's room back at once: the helper refills it while we
                // unwind the next one.
                self.give_back(cb);
            }
        }
        if !self.alongside && self.tail != from {
            // In turns: the helper sleeps until the whole ring is read.
            self.give_back(cb);
        }
        self.bytes += self.tail - from;
        Ok(self.tail - from)
    }

    /// Let the helper write over what we have read, and wake it if it waits for room.
    fn give_back(&self, cb: &gprof_abi::ControlBlock) {
        if self.name_cpu {
            // Where the helper is to run: here, where we are about to sleep (abi docs).
            cb.help_cpu.store(our_cpu(), Relaxed);
        }
        cb.ring_tail.store(self.tail, Release);
        cb.ring_wake.fetch_add(1, Release);
        shared_futex::wake(&cb.ring_wake);
    }
}

/// The CPU the calling thread runs on, plus one (`help_cpu`); 0 if the kernel does not
/// say.
fn our_cpu() -> u32 {
    crate::process::placement::current_cpu().map_or(0, |c| c.saturating_add(1))
}

/// Should the tool read the ring while the helper writes it? Only when that leaves the
/// target's running threads their CPUs: the tool and the helper together need two, so
/// only if two are idle, counting the tool as one already taken. Otherwise they take
/// turns on one CPU, as a single-threaded profiler would: a third runnable thread on
/// two busy CPUs is a scheduler slice (3-4 ms here) taken from whichever running
/// thread the kernel preempts for it, and that is the pause the benchmark's probe
/// measures (4.7 ms median at 1M idle tasks alongside, against 0.15 ms in turns, in
/// one side-by-side run; BENCHMARKS.md). `nr_running` is the kernel's count of
/// runnable threads (`/proc/loadavg`, proc(5)), the tool included.
/// The count is an instant's: the least of three looks 200 µs apart, so that a thread
/// that runs for a moment (a kernel worker, a timer) does not decide it.
pub(super) fn alongside() -> bool {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let running = || {
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().nth(3)?.split('/').next()?.parse().ok())
            .unwrap_or(usize::MAX)
    };
    let mut least = running();
    for _ in 0..2 {
        std::thread::sleep(Duration::from_micros(200));
        least = least.min(running());
    }
    least.saturating_add(1) <= cpus
}

/// Is the helper thread busy: runnable (`R`: running, or waiting for a CPU), or in an
/// uninterruptible wait (`D`: a page fault waiting for a page being migrated, which
/// the tool's own huge-page compaction can cause)? Only an `S` (asleep: waiting for
/// room it has, or done), a `T` (stopped) or a dead helper has stalled. The TID is the
/// target's word: a wrong one costs at most the follow's time limit.
fn helper_busy(region: &Region) -> bool {
    let tid = region.control().helper_tid.load(Acquire);
    tid != 0
        && matches!(
            crate::process::stop::thread_state(region.pid(), tid),
            Some('R' | 'D')
        )
}

/// What the helper's header-only records said (abi docs, "Profile helper").
#[derive(Debug, Default)]
pub(super) struct Marks {
    /// Slots the helper visited and left for the tool to look at.
    pub(super) leftovers: Vec<u32>,
    /// The helper visited every slot below this one.
    pub(super) pass_done: Option<u32>,
}

impl Marks {
    fn add(&mut self, rec: &ArenaRecord, off: u64, slot_cap: u32) -> Result<()> {
        let bad = |why: &str| {
            Err(Error::bad(format!(
                "the helper's ring mark at {off:#x} is malformed ({why}: flags {:#x}, slot {}, slot_len {}, stack_len {})",
                rec.flags, rec.slot, rec.slot_len, rec.stack_len
            )))
        };
        if rec.slot_len != 0 || rec.stack_len != 0 {
            return bad("a mark has no body");
        }
        match rec.flags {
            ArenaRecord::FLAG_LEFTOVER if rec.slot < slot_cap => {
                // A pass visits each slot once: more leftovers than the table holds
                // is not a helper's pass.
                if self.leftovers.len() >= slot_cap as usize {
                    return bad("more leftovers than slots");
                }
                self.leftovers.push(rec.slot);
            }
            ArenaRecord::FLAG_PASS_DONE if rec.slot <= slot_cap && self.pass_done.is_none() => {
                self.pass_done = Some(rec.slot);
            }
            _ => return bad("unknown, out of the table, or a second end of pass"),
        }
        Ok(())
    }
}

/// Where a chunk of the ring read in one go ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChunkEnd {
    /// At the helper's head: every byte belongs to a whole record.
    Head,
    /// At the ring's end: after the last record may come a pad header, or fewer bytes
    /// than a header, which the helper skipped.
    Ring,
    /// At the read window: the last record may go on past it (it is read again with
    /// the next chunk).
    Window,
}

/// Deliver the records of one chunk of the ring (`at`: its offset in the ring, for
/// messages). Returns the bytes of whole records parsed, and whether the rest of the
/// chunk (up to the ring's end) is padding the helper skipped.
pub(super) fn parse_chunk(
    buf: &[u8],
    g: u64,
    slot_cap: u32,
    at: u64,
    end: ChunkEnd,
    marks: &mut Marks,
    sink: &mut dyn FnMut(Copy<&[u8]>),
) -> Result<(u64, bool)> {
    let mut pos = 0usize;
    while pos < buf.len() {
        let off = at + pos as u64;
        let Some(head) = buf.get(pos..pos + HEADER as usize) else {
            match end {
                ChunkEnd::Window => break,
                ChunkEnd::Ring => return Ok((pos as u64, true)),
                ChunkEnd::Head => {
                    return Err(Error::bad(format!(
                        "the helper's ring ends in a partial record header at {off:#x}"
                    )))
                }
            }
        };
        let rec: ArenaRecord = pod_from_bytes(head).expect("sized");
        if rec.slot == ArenaRecord::PAD_SLOT && rec.generation == g {
            return Ok((pos as u64, true));
        }
        if rec.generation != g {
            return Err(Error::bad(format!(
                "the helper's ring holds a record of session {} at {off:#x} (this is session {g})",
                rec.generation
            )));
        }
        let marked = rec.flags & (ArenaRecord::FLAG_LEFTOVER | ArenaRecord::FLAG_PASS_DONE);
        if marked != 0 {
            marks.add(&rec, off, slot_cap)?;
            pos += ArenaRecord::MARK_LEN as usize;
            continue;
        }
        let (stack_len, slot_len) = check_record(&rec, off, g, rec.slot < slot_cap)?;
        let next = pos as u64 + ArenaRecord::footprint(slot_len, stack_len);
        if next > buf.len() as u64 {
            if end == ChunkEnd::Window {
                break;
            }
            return Err(Error::bad(format!(
                "the helper's ring record at {off:#x} runs past what the helper published"
            )));
        }
        let slot_at = pos + ArenaRecord::SLOT_OFFSET as usize;
        let mut raw = [0u8; size_of::<TaskSlot>()];
        raw[..slot_len as usize].copy_from_slice(&buf[slot_at..slot_at + slot_len as usize]);
        let slot = pod_from_bytes::<TaskSlot>(&raw).expect("sized");
        let stack_at = pos + ArenaRecord::stack_offset(slot_len) as usize;
        sink(Copy {
            index: rec.slot,
            slot: SlotCopy::load_prefix(&slot, (slot_len - SLOT_COPY_MIN) as usize),
            ip: rec.pc,
            sp: rec.sp,
            bp: rec.fp,
            base: rec.sp,
            stack: &buf[stack_at..stack_at + stack_len as usize],
            by: RecordedBy::Runtime,
        });
        pos = next as usize;
    }
    if pos == 0 && !buf.is_empty() {
        return Err(Error::bad(format!(
            "no whole record in {:#x} bytes of the helper's ring at {at:#x}",
            buf.len()
        )));
    }
    Ok((pos as u64, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(slot: u32, g: u64, stack: &[u8]) -> Vec<u8> {
        let slot_len = SLOT_COPY_MIN;
        let rec = ArenaRecord {
            slot,
            task_id: u64::from(slot) + 1,
            generation: g,
            sp: 0x1000,
            pc: 0x2000,
            stack_len: stack.len() as u32,
            slot_len: slot_len as u32,
            ..ArenaRecord::default()
        };
        let mut out = vec![0u8; ArenaRecord::footprint(slot_len, stack.len() as u64) as usize];
        out[..HEADER as usize].copy_from_slice(&pod_bytes(&rec));
        let s = ArenaRecord::stack_offset(slot_len) as usize;
        out[s..s + stack.len()].copy_from_slice(stack);
        out
    }

    fn pod_bytes(rec: &ArenaRecord) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&rec.slot.to_le_bytes());
        v.extend_from_slice(&rec.flags.to_le_bytes());
        for w in [rec.task_id, rec.generation, rec.sp, rec.pc, rec.fp] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        for w in [rec.stack_len, rec.slot_len, rec.state, rec.wait_reason] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        v
    }

    fn parse(buf: &[u8], end: ChunkEnd) -> Result<(u64, bool, Vec<u32>)> {
        let mut slots = Vec::new();
        let mut marks = Marks::default();
        let (used, pad) = parse_chunk(buf, 7, 100, 0, end, &mut marks, &mut |c| {
            slots.push(c.index)
        })?;
        Ok((used, pad, slots))
    }

    fn mark(flags: u32, slot: u32) -> Vec<u8> {
        pod_bytes(&ArenaRecord {
            slot,
            flags,
            generation: 7,
            ..ArenaRecord::default()
        })
    }

    #[test]
    fn leftovers_and_the_end_of_the_pass_are_collected_between_records() {
        let mut buf = mark(ArenaRecord::FLAG_LEFTOVER, 9);
        buf.extend(record(3, 7, &[1; 40]));
        buf.extend(mark(ArenaRecord::FLAG_LEFTOVER, 11));
        buf.extend(mark(ArenaRecord::FLAG_PASS_DONE, 100));
        let mut marks = Marks::default();
        let mut slots = Vec::new();
        let (used, pad) = parse_chunk(&buf, 7, 100, 0, ChunkEnd::Head, &mut marks, &mut |c| {
            slots.push(c.index)
        })
        .unwrap();
        assert_eq!((used, pad, slots), (buf.len() as u64, false, vec![3]));
        assert_eq!((marks.leftovers, marks.pass_done), (vec![9, 11], Some(100)));
    }

    #[test]
    fn malformed_marks_are_errors() {
        let mut with_body = mark(ArenaRecord::FLAG_LEFTOVER, 9);
        with_body[52..56].copy_from_slice(&SLOT_COPY_MIN.to_le_bytes()[..4]);
        let mut twice = mark(ArenaRecord::FLAG_PASS_DONE, 10);
        twice.extend(mark(ArenaRecord::FLAG_PASS_DONE, 10));
        for buf in [
            with_body,
            twice,
            mark(ArenaRecord::FLAG_LEFTOVER, 100),
            mark(ArenaRecord::FLAG_PASS_DONE, 101),
            mark(ArenaRecord::FLAG_LEFTOVER | ArenaRecord::FLAG_PASS_DONE, 1),
        ] {
            let e = parse(&buf, ChunkEnd::Head).unwrap_err();
            assert!(e.to_string().contains("mark"), "{e}");
        }
    }

    #[test]
    fn whole_records_are_delivered_in_order() {
        let mut buf = record(3, 7, &[1; 40]);
        buf.extend(record(5, 7, &[2; 8]));
        for end in [ChunkEnd::Head, ChunkEnd::Ring, ChunkEnd::Window] {
            let (used, pad, slots) = parse(&buf, end).unwrap();
            assert_eq!((used, pad, slots), (buf.len() as u64, false, vec![3, 5]));
        }
    }

    #[test]
    fn a_pad_header_ends_the_chunk() {
        let mut buf = record(3, 7, &[1; 40]);
        let first = buf.len() as u64;
        buf.extend(record(ArenaRecord::PAD_SLOT, 7, &[]));
        buf.extend(vec![0xee; 64]);
        let (used, pad, slots) = parse(&buf, ChunkEnd::Ring).unwrap();
        assert_eq!((used, pad, slots), (first, true, vec![3]));
    }

    /// Fewer bytes than a header before the ring's end are skipped by the helper (found
    /// by the benchmark: a record ending 32 bytes before the end of the ring); at
    /// the helper's head they would be a partial record.
    #[test]
    fn a_tail_too_short_for_a_header_is_skipped_only_at_the_rings_end() {
        let mut buf = record(3, 7, &[1; 40]);
        let first = buf.len() as u64;
        buf.extend([0xee; 32]);
        let (used, pad, slots) = parse(&buf, ChunkEnd::Ring).unwrap();
        assert_eq!((used, pad, slots), (first, true, vec![3]));
        let e = parse(&buf, ChunkEnd::Head).unwrap_err();
        assert!(e.to_string().contains("partial record header"), "{e}");
    }

    #[test]
    fn a_record_cut_by_the_window_waits_for_the_next_chunk() {
        let mut buf = record(3, 7, &[1; 40]);
        let first = buf.len();
        buf.extend(record(4, 7, &[2; 400]));
        let cut_at = first + 100;
        let (used, _, slots) = parse(&buf[..cut_at], ChunkEnd::Window).unwrap();
        assert_eq!((used, slots), (first as u64, vec![3]));
        // The same bytes, but at the helper's head or the ring's end: the record is
        // bad, not pending.
        for end in [ChunkEnd::Head, ChunkEnd::Ring] {
            let e = parse(&buf[..cut_at], end).unwrap_err();
            assert!(
                e.to_string().contains("past what the helper published"),
                "{e}"
            );
        }
    }

    #[test]
    fn foreign_sessions_bad_slots_and_sizes_are_errors() {
        for (buf, needle) in [
            (record(3, 6, &[1; 8]), "session 6"),
            (record(100, 7, &[1; 8]), "malformed"),
            (
                record(3, 7, &[1; 8])[..30].to_vec(),
                "partial record header",
            ),
        ] {
            let e = parse(&buf, ChunkEnd::Head).unwrap_err();
            assert!(e.to_string().contains(needle), "{needle}: {e}");
        }
        let mut big = record(3, 7, &[1; 8]);
        big[48..52].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = parse(&big, ChunkEnd::Window).unwrap_err();
        assert!(e.to_string().contains("malformed"), "{e}");
    }
}
