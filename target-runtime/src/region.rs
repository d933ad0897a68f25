//! The shared region: a sealed memfd that holds the task table and the profile state,
//! and the exported descriptor that lets gprof-rs find it (layout in `gprof_abi`).
//!
//! One region per process, created by the first runtime that starts and shared by every
//! runtime after it, so task ids and slots are unique process-wide.

use gprof_abi::{
    prof, ControlBlock, Descriptor, TaskSlot, WorkerRecord, ABI_VERSION, CONTROL_SIZE, MAGIC,
    WORKER_CAP,
};
use std::io;
use std::mem::size_of;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering::{Relaxed, Release, SeqCst};
use std::sync::{Mutex, OnceLock};

/// The symbol gprof-rs looks for ([`gprof_abi::DESCRIPTOR_SYMBOL`]).
#[no_mangle]
#[used]
pub static GPROF_RT_DESCRIPTOR: Descriptor = Descriptor::new();

/// Task slots in the table. Sparse: a slot costs memory only once used.
pub const SLOT_CAP: u32 = 1 << 21;
/// Bytes of the arena for stacks the runtime records itself. Sparse, like the table:
/// ~800 bytes per task a snapshot has the runtime record (the profile helper records
/// every parked task), so 1 GiB holds a million.
pub const ARENA_LEN: u64 = 1 << 30;
/// Bytes of the profile helper's ring (abi docs, "Profile helper"). The profiler
/// consumes it while the helper fills it, or in turns with it; 2 MiB is ~2.5k records
/// of a parked task: the helper fills it in ~0.8 ms, the profiler unwinds it in ~1 ms.
/// Bigger buys nothing when both run at once, and in turns it makes each turn longer:
/// a turn taken on the CPU of a running task is a pause that task suffers. It is what
/// a snapshot of any number of parked tasks allocates. `GPROF_RT_RING_KB` overrides it
/// (tests make the ring wrap and fill with few tasks), never below [`MIN_RING_LEN`].
pub const RING_LEN: u64 = 2 << 20;
/// Smallest ring: twice the largest record, rounded up, so that the next record always
/// fits once the profiler has consumed the ring.
pub const MIN_RING_LEN: u64 = 1 << 20;
const _: () = assert!(MIN_RING_LEN >= 2 * gprof_abi::ArenaRecord::MAX_FOOTPRINT);

/// The mapped region and the runtime's bookkeeping of free slots.
pub struct Region {
    base: u64,
    len: u64,
    fd: RawFd,
    slot_off: u64,
    worker_off: u64,
    arena_off: u64,
    ring_off: u64,
    ring_len: u64,
    free_slots: Mutex<Vec<u32>>,
    free_workers: Mutex<Vec<u32>>,
}

static REGION: OnceLock<Region> = OnceLock::new();

/// The process's region, created on first use.
pub fn get() -> &'static Region {
    REGION.get_or_init(|| match Region::create() {
        Ok(r) => r,
        Err(e) => panic!("target-runtime: cannot create the shared task table (memfd): {e}"),
    })
}

/// The region if some runtime has created it.
pub fn try_get() -> Option<&'static Region> {
    REGION.get()
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn align(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

impl Region {
    fn create() -> io::Result<Region> {
        let page = crate::stack::page_size() as u64;
        let worker_off = CONTROL_SIZE;
        let slot_off = align(
            worker_off + u64::from(WORKER_CAP) * size_of::<WorkerRecord>() as u64,
            page,
        );
        let arena_off = align(
            slot_off + u64::from(SLOT_CAP) * size_of::<TaskSlot>() as u64,
            page,
        );
        let ring_off = arena_off + ARENA_LEN;
        let ring_len = std::env::var("GPROF_RT_RING_KB")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(RING_LEN, |kb| align((kb << 10).max(MIN_RING_LEN), page));
        // The ring is last, so one punch from `arena_off` to the end covers both.
        let len = ring_off + ring_len;

        // SAFETY: the name is a NUL-terminated literal.
        let fd = cvt(unsafe {
            libc::memfd_create(
                c"gprof-rt-tasks".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        })?;
        // SAFETY: fd is the memfd just created; these calls only change its metadata.
        unsafe {
            cvt(libc::fchmod(fd, 0o600))?;
            cvt(libc::ftruncate(fd, len as libc::off_t))?;
            // Sealed so that nobody (the runtime included) can shrink the file under the
            // profiler's mapping, which would SIGBUS it (reliability.md section 4.2).
            cvt(libc::fcntl(
                fd,
                libc::F_ADD_SEALS,
                libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
            ))?;
        }
        // SAFETY: maps the whole memfd shared; the mapping lives for the process.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = p as u64;
        let region = Region {
            base,
            len,
            fd,
            slot_off,
            worker_off,
            arena_off,
            ring_off,
            ring_len,
            free_slots: Mutex::new(Vec::new()),
            free_workers: Mutex::new((0..WORKER_CAP).rev().collect()),
        };
        // SAFETY: offset 0 of the fresh zero-filled mapping, large enough and aligned.
        let cb = unsafe { &mut *(base as *mut ControlBlock) };
        cb.magic = MAGIC;
        cb.abi_version = ABI_VERSION;
        cb.control_size = size_of::<ControlBlock>() as u32;
        cb.region_len = len;
        cb.worker_off = worker_off;
        cb.worker_cap = WORKER_CAP;
        cb.worker_record_size = size_of::<WorkerRecord>() as u32;
        cb.slot_off = slot_off;
        cb.slot_cap = SLOT_CAP;
        cb.slot_size = size_of::<TaskSlot>() as u32;
        cb.arena_off = arena_off;
        cb.arena_len = ARENA_LEN;
        cb.ring_off = ring_off;
        cb.ring_len = ring_len;
        cb.runtime_pid = std::process::id();
        cb.next_task_id.store(1, Relaxed);
        cb.lease_ms.store(100, Relaxed);
        cb.session_cap_ms.store(10_000, Relaxed);

        GPROF_RT_DESCRIPTOR.region_len.store(len, Relaxed);
        GPROF_RT_DESCRIPTOR.memfd.store(fd as u32, Relaxed);
        // Last: the profiler treats a non-zero address as "everything above is valid".
        GPROF_RT_DESCRIPTOR.region_addr.store(base, Release);
        Ok(region)
    }

    /// The control block.
    pub fn control(&self) -> &ControlBlock {
        // SAFETY: offset 0 holds a ControlBlock for the life of the process; all fields
        // that change after creation are atomics.
        unsafe { &*(self.base as *const ControlBlock) }
    }

    /// The memfd.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Slot `i`.
    pub fn slot(&self, i: u32) -> &TaskSlot {
        assert!(i < SLOT_CAP);
        // SAFETY: in bounds (checked); slots are 512-byte aligned records in the mapping.
        unsafe {
            &*((self.base + self.slot_off + u64::from(i) * size_of::<TaskSlot>() as u64)
                as *const TaskSlot)
        }
    }

    /// Raw pointer to slot `i`, for the non-atomic byte arrays (name, labels).
    pub fn slot_ptr(&self, i: u32) -> *mut TaskSlot {
        assert!(i < SLOT_CAP);
        (self.base + self.slot_off + u64::from(i) * size_of::<TaskSlot>() as u64) as *mut TaskSlot
    }

    /// Worker record `i`.
    pub fn worker(&self, i: u32) -> &WorkerRecord {
        assert!(i < WORKER_CAP);
        // SAFETY: in bounds; records are plain atomics.
        unsafe {
            &*((self.base + self.worker_off + u64::from(i) * size_of::<WorkerRecord>() as u64)
                as *const WorkerRecord)
        }
    }

    /// Start address and length of the arena.
    pub fn arena(&self) -> (u64, u64) {
        (self.base + self.arena_off, ARENA_LEN)
    }

    /// Start address and length of the profile helper's ring.
    pub fn ring(&self) -> (u64, u64) {
        (self.base + self.ring_off, self.ring_len)
    }

    /// Offset in the memfd and length of the pages a session writes and the helper
    /// gives back when nobody profiles: the arena and the ring after it (for
    /// `fallocate`).
    pub fn scratch_range(&self) -> (u64, u64) {
        (self.arena_off, self.len - self.arena_off)
    }

    /// Take a free slot, marked UNBORN. `None` when the table is full.
    pub fn alloc_slot(&self) -> Option<u32> {
        let reused = self
            .free_slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        let i = match reused {
            Some(i) => i,
            None => {
                let cb = self.control();
                let i = cb.slot_hwm.fetch_add(1, SeqCst);
                if i >= u64::from(SLOT_CAP) {
                    cb.slot_hwm.fetch_sub(1, SeqCst);
                    return None;
                }
                i as u32
            }
        };
        self.slot(i).prof.store(prof::UNBORN, SeqCst);
        Some(i)
    }

    /// Give a slot back. The caller has already cleared `task_id`.
    pub fn free_slot(&self, i: u32) {
        self.slot(i).prof.store(prof::FREE, Release);
        self.free_slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(i);
    }

    /// Take a worker record for the calling thread.
    pub fn alloc_worker(&self) -> Option<u32> {
        let i = self
            .free_workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()?;
        let cb = self.control();
        // worker_count is a high-water mark: the profiler scans [0, worker_count).
        cb.worker_count.fetch_max(i + 1, SeqCst);
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
        let w = self.worker(i);
        w.current.store(0, SeqCst);
        w.status.store(WorkerRecord::ACTIVE, SeqCst);
        w.tid.store(tid, SeqCst);
        // The profiler stops only threads whose TID it finds here (abi docs, step 1):
        // order this store before every later load of the session word, which the
        // profile barrier makes with Relaxed ordering.
        std::sync::atomic::fence(SeqCst);
        Some(i)
    }

    /// Release a worker record.
    pub fn free_worker(&self, i: u32) {
        let w = self.worker(i);
        w.tid.store(0, SeqCst);
        w.status.store(WorkerRecord::IDLE, SeqCst);
        w.current.store(0, SeqCst);
        self.free_workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(i);
    }
}
