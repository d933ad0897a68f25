//! Fuzz target bodies, shared by the cargo-fuzz targets in `fuzz/` (libFuzzer, nightly)
//! and by this module's tests, which run them on a deterministic pseudo-random corpus
//! in every `cargo test` (reliability.md section 4.4, DESIGN invariant 8).
//!
//! * [`abi_parse`]: bytes from a hostile target through every validator and decoder of
//!   the shared region: descriptor, control-block header, task slot, arena and ring
//!   records.
//! * [`UnwindTarget`]: random registers and stack bytes unwound against the CFI of this
//!   very binary (`/proc/self/maps`, files read locally).
//!
//! Both must never panic (other than their own assertions), never allocate beyond the
//! caps, and always end.

use crate::locate::{validate_descriptor, validate_header, DescriptorCopy, HeaderCopy};
use crate::process::memory::pod_from_bytes;
use crate::unwind::{file::parse_proc_maps, LocalFiles, Unwinder, DEFAULT_MAX_FRAMES};
use gprof_abi::{ControlBlock, Descriptor, LABELS_CAP, SLOT_COPY_MIN};
use std::mem::size_of;

/// Bytes of a descriptor and a control block, at the start of an [`abi_parse`] input.
pub const HEAD: usize = size_of::<Descriptor>() + size_of::<ControlBlock>();
/// Bytes of a task slot, after [`HEAD`].
pub const SLOT: usize = size_of::<gprof_abi::TaskSlot>();

/// The input layout: descriptor (48 bytes), control block (256), task slot (512), then
/// the arena (the rest, also parsed as a chunk of the helper's ring). The session
/// generation and the arena's used length come from the control block's `session` and
/// `arena_used` words.
pub fn abi_parse(data: &[u8]) {
    let Some(d) = pod_from_bytes::<Descriptor>(data) else {
        return;
    };
    let d = DescriptorCopy::from(&d);
    let _ = validate_descriptor(&d);
    let Some(cb) = pod_from_bytes::<ControlBlock>(&data[size_of::<Descriptor>()..]) else {
        return;
    };
    let h = HeaderCopy {
        magic: cb.magic,
        abi_version: cb.abi_version,
        control_size: cb.control_size,
        region_len: cb.region_len,
        worker_off: cb.worker_off,
        worker_cap: cb.worker_cap,
        worker_record_size: cb.worker_record_size,
        slot_off: cb.slot_off,
        slot_cap: cb.slot_cap,
        slot_size: cb.slot_size,
        arena_off: cb.arena_off,
        arena_len: cb.arena_len,
        ring_off: cb.ring_off,
        ring_len: cb.ring_len,
        runtime_pid: cb.runtime_pid,
    };
    for region_len in [d.region_len, cb.region_len] {
        if let Ok(l) = validate_header(&h, region_len) {
            // Every accepted layout fits its region, so no later access can overflow.
            let end = |off: u64, n: u64, size: u64| off.checked_add(n.checked_mul(size)?);
            let parts = [
                end(l.worker_off, l.worker_cap.into(), 64),
                end(l.slot_off, l.slot_cap.into(), SLOT as u64),
                end(l.arena_off, l.arena_len, 1),
                end(l.ring_off, l.ring_len, 1),
            ];
            for p in parts {
                assert!(p.is_some_and(|e| e <= region_len), "{l:?} {region_len:#x}");
            }
        }
    }
    let rest = &data[HEAD..];
    let (slot, arena) = rest.split_at(rest.len().min(SLOT));
    let g = gprof_abi::session::generation(cb.session.into_inner());
    let used = gprof_abi::arena::used(cb.arena_used.into_inner());
    crate::snapshot::fuzz_slot_and_arena(slot, arena, g, used);
    // The same bytes as a chunk of the helper's ring (its records have the arena's
    // format, plus pad headers).
    crate::snapshot::fuzz_ring_chunk(arena, g);
}

/// Unwinds random stacks against this binary's own CFI.
pub struct UnwindTarget {
    unwinder: Unwinder,
    /// Executable mappings of this process: `(start, end)`.
    code: Vec<(u64, u64)>,
}

impl Default for UnwindTarget {
    fn default() -> Self {
        Self::new()
    }
}

impl UnwindTarget {
    /// Load the modules of this process.
    pub fn new() -> UnwindTarget {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let modules = parse_proc_maps(&maps);
        let mut unwinder = Unwinder::new(LocalFiles);
        unwinder.set_modules(&modules);
        let code = modules.iter().map(|m| (m.start, m.end)).collect();
        UnwindTarget { unwinder, code }
    }

    /// A code address picked by `x`, or `x` itself when there is no module.
    fn code_addr(&self, x: u64) -> u64 {
        if self.code.is_empty() {
            return x;
        }
        let (s, e) = self.code[(x % self.code.len() as u64) as usize];
        s + (x >> 8) % (e - s).max(1)
    }

    /// Input: a control byte, ip, sp, bp (8 bytes each, little endian), then the stack.
    /// Bit 0 of the control byte maps ip into this binary's code; bit 1 turns every
    /// stack word with a set low bit into a code address as well, so the walk gets
    /// past the first frame into real CFI rows.
    pub fn run(&mut self, data: &[u8]) {
        if data.len() < 25 {
            return;
        }
        let word = |i: usize| u64::from_le_bytes(data[1 + 8 * i..9 + 8 * i].try_into().unwrap());
        let ctl = data[0];
        let ip = if ctl & 1 != 0 {
            self.code_addr(word(0))
        } else {
            word(0)
        };
        let (sp, bp) = (word(1), word(2));
        let mut stack = data[25..].to_vec();
        if ctl & 2 != 0 {
            for w in stack.chunks_exact_mut(8) {
                let v = u64::from_le_bytes(w.try_into().unwrap());
                if v & 1 != 0 {
                    w.copy_from_slice(&self.code_addr(v).to_le_bytes());
                }
            }
        }
        let mut out = Vec::new();
        let _ = self.unwinder.unwind(ip, sp, bp, &stack, &mut out);
        assert!(!out.is_empty() && out.len() <= DEFAULT_MAX_FRAMES);
        assert_eq!(out[0], ip);
    }
}

/// xorshift64*: a deterministic byte source for the tests' corpus.
#[derive(Debug, Clone)]
pub struct Prng(pub u64);

impl Prng {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// A valid descriptor + header + slot + arena image, the seed the tests mutate (random
/// bytes alone rarely get past the magic numbers).
pub fn valid_abi_input(p: &mut Prng) -> Vec<u8> {
    use gprof_abi::{arena, session, ArenaRecord, TaskSlot, WorkerRecord, ABI_VERSION, MAGIC};
    let put = |v: &mut Vec<u8>, off: usize, bytes: &[u8]| {
        v[off..off + bytes.len()].copy_from_slice(bytes)
    };
    let mut v = vec![0u8; HEAD + SLOT];
    let region_len: u64 = 1 << 20;
    // Descriptor.
    put(&mut v, 0, &MAGIC.to_le_bytes());
    put(&mut v, 8, &ABI_VERSION.to_le_bytes());
    put(&mut v, 12, &(size_of::<Descriptor>() as u32).to_le_bytes());
    put(&mut v, 16, &0x7f00_0000_0000u64.to_le_bytes());
    put(&mut v, 24, &region_len.to_le_bytes());
    put(&mut v, 32, &3u32.to_le_bytes());
    put(
        &mut v,
        36,
        &(size_of::<ControlBlock>() as u32).to_le_bytes(),
    );
    put(
        &mut v,
        40,
        &(size_of::<WorkerRecord>() as u32).to_le_bytes(),
    );
    put(&mut v, 44, &(size_of::<TaskSlot>() as u32).to_le_bytes());
    // Control block (offsets from `ControlBlock`'s field order).
    let c = size_of::<Descriptor>();
    let g = 1 + p.next_u64() % 1000;
    put(&mut v, c, &MAGIC.to_le_bytes());
    put(&mut v, c + 8, &ABI_VERSION.to_le_bytes());
    put(
        &mut v,
        c + 12,
        &(size_of::<ControlBlock>() as u32).to_le_bytes(),
    );
    put(&mut v, c + 16, &region_len.to_le_bytes());
    put(&mut v, c + 24, &4096u64.to_le_bytes());
    put(&mut v, c + 32, &16u32.to_le_bytes());
    put(
        &mut v,
        c + 36,
        &(size_of::<WorkerRecord>() as u32).to_le_bytes(),
    );
    put(&mut v, c + 40, &8192u64.to_le_bytes());
    put(&mut v, c + 48, &64u32.to_le_bytes());
    put(
        &mut v,
        c + 52,
        &(size_of::<TaskSlot>() as u32).to_le_bytes(),
    );
    put(&mut v, c + 56, &(8192u64 + 64 * 512).to_le_bytes());
    put(&mut v, c + 64, &(64u64 << 10).to_le_bytes());
    let session_at = c + std::mem::offset_of!(ControlBlock, session);
    put(
        &mut v,
        session_at,
        &session::pack(g, session::ACTIVE).to_le_bytes(),
    );
    // Slot: random bytes.
    let slot = p.bytes(SLOT);
    put(&mut v, HEAD, &slot);
    // Arena: a few records of generation g (or older), random stacks.
    let mut used = 0u64;
    for _ in 0..(p.next_u64() % 4) {
        let len = p.next_u64() % 256;
        let slot_len = SLOT_COPY_MIN + p.next_u64() % (LABELS_CAP as u64 + 1);
        let rec = ArenaRecord {
            slot: (p.next_u64() % 64) as u32,
            flags: 0,
            task_id: p.next_u64() % 100,
            generation: g - (p.next_u64() % 2).min(g - 1),
            sp: p.next_u64(),
            pc: p.next_u64(),
            fp: p.next_u64(),
            stack_len: len as u32,
            slot_len: slot_len as u32,
            state: 3,
            wait_reason: 2,
        };
        let mut bytes = vec![0u8; ArenaRecord::footprint(slot_len, len) as usize];
        // SAFETY: ArenaRecord is plain integers (repr(C), 64 bytes); `bytes` is longer.
        let raw = unsafe {
            std::slice::from_raw_parts(
                (&rec as *const ArenaRecord).cast::<u8>(),
                size_of::<ArenaRecord>(),
            )
        };
        bytes[..raw.len()].copy_from_slice(raw);
        let rest = p.bytes(bytes.len() - raw.len());
        bytes[raw.len()..].copy_from_slice(&rest);
        used += bytes.len() as u64;
        v.extend_from_slice(&bytes);
    }
    // A writer leaves room for a whole-slot view after its last record (abi docs).
    v.resize(v.len() + ArenaRecord::MIN_SPAN as usize, 0);
    let used_at = c + std::mem::offset_of!(ControlBlock, arena_used);
    put(&mut v, used_at, &arena::pack(g, used).to_le_bytes());
    v
}

/// Flip, overwrite or truncate a few bytes of `v`.
pub fn mutate(p: &mut Prng, v: &mut Vec<u8>) {
    for _ in 0..1 + p.next_u64() % 8 {
        if v.is_empty() {
            return;
        }
        let i = (p.next_u64() % v.len() as u64) as usize;
        match p.next_u64() % 5 {
            0 => v[i] ^= 1 << (p.next_u64() % 8),
            1 => v[i] = p.next_u64() as u8,
            2 => {
                let n = (v.len() - i).min(8);
                let w = p.next_u64().to_le_bytes();
                v[i..i + n].copy_from_slice(&w[..n]);
            }
            3 => v.truncate(i),
            _ => {
                let n = (v.len() - i).min(8);
                let w = [0xffu8; 8];
                v[i..i + n].copy_from_slice(&w[..n]);
            }
        }
    }
}

/// Iterations of the deterministic runs (`GPROF_FUZZ_ITERS`, default 20 000).
pub fn iterations() -> u64 {
    std::env::var("GPROF_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_parse_deterministic_corpus() {
        let mut p = Prng(0x5eed_0001);
        let mut accepted = 0;
        for i in 0..iterations() {
            let mut v = valid_abi_input(&mut p);
            if i % 8 == 0 {
                let n = (p.next_u64() % 2048) as usize;
                v = p.bytes(n);
            } else if i % 8 != 1 {
                mutate(&mut p, &mut v);
            }
            abi_parse(&v);
            if v.len() >= HEAD && pod_from_bytes::<Descriptor>(&v).is_some() {
                let d = DescriptorCopy::from(&pod_from_bytes::<Descriptor>(&v).unwrap());
                accepted += u64::from(validate_descriptor(&d).is_ok());
            }
        }
        // The corpus reaches past the first check most of the time.
        assert!(accepted > iterations() / 4, "{accepted}");
    }

    /// `GPROF_FUZZ_SEEDS=fuzz/corpus/abi_parse cargo test --lib write_seed_corpus`
    /// writes the valid images the corpus tests start from, as seeds for cargo-fuzz.
    #[test]
    fn write_seed_corpus() {
        let Some(dir) = std::env::var_os("GPROF_FUZZ_SEEDS") else {
            return;
        };
        std::fs::create_dir_all(&dir).unwrap();
        let mut p = Prng(0x5eed_0003);
        for i in 0..8 {
            let v = valid_abi_input(&mut p);
            std::fs::write(std::path::Path::new(&dir).join(format!("seed-{i}")), v).unwrap();
        }
    }

    #[test]
    fn unwind_random_stacks_deterministic_corpus() {
        let mut t = UnwindTarget::new();
        let mut p = Prng(0x5eed_0002);
        for _ in 0..iterations() / 4 {
            let n = 25 + (p.next_u64() % 4096) as usize;
            let mut v = p.bytes(n);
            // Aligned stack pointers and a code ip most of the time.
            v[0] |= 1;
            if p.next_u64() % 2 == 0 {
                v[9] &= 0xf0;
            }
            t.run(&v);
        }
    }
}
