//! Reading the target's memory.
//!
//! [`LiveMemory`] batches reads into `process_vm_readv` calls of up to [`IOV_MAX`]
//! iovecs and falls back to `/proc/PID/mem` when the syscall is unavailable (ENOSYS,
//! e.g. a seccomp profile that lacks it, reliability.md §2.2/§2.11). [`SliceMemory`]
//! serves tests from a few in-memory regions.
//!
//! Partial reads: process_vm_readv(2) says partial transfers happen "at the granularity
//! of iovec elements", but the kernel (`mm/process_vm_access.c`) copies page by page and
//! returns the byte count copied so far. We split every remote range at page boundaries
//! so a short count always points at the first unreadable page, and report, per
//! request, how many leading bytes were read (reliability.md §4.3: "use page-split
//! iovecs and treat a short read as truncated, never as success").

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

/// Most iovecs the kernel accepts per call (`UIO_MAXIOV`).
pub const IOV_MAX: usize = 1024;
const PAGE: u64 = 4096;

/// Why a read of the target's memory failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemError {
    /// Part of the range is not mapped (or not readable) in the target.
    #[error("target memory at {addr:#x} is not readable")]
    Unreadable {
        /// First unreadable address.
        addr: u64,
    },
    /// The target process is gone.
    #[error("the target process is gone")]
    ProcessGone,
    /// The kernel refused (ptrace access mode check).
    #[error("not permitted to read the target's memory")]
    PermissionDenied,
    /// Anything else.
    #[error("reading target memory: {0}")]
    Io(#[from] io::Error),
}

impl MemError {
    /// Convert into the tool's error for target `pid`.
    pub fn into_error(self, pid: u32) -> crate::error::Error {
        use crate::error::Error;
        match self {
            MemError::Unreadable { addr } => {
                Error::bad(format!("address {addr:#x} is not readable in the target"))
            }
            MemError::ProcessGone => Error::ProcessExited { pid },
            MemError::PermissionDenied => Error::permission(pid),
            MemError::Io(e) => Error::Io(e),
        }
    }
}

/// Read access to another address space.
pub trait RemoteMemory {
    /// Read exactly `buf.len()` bytes at `addr`.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let mut reqs = [(addr, buf)];
        let n = self.read_many(&mut reqs)?[0];
        if n == reqs[0].1.len() {
            Ok(())
        } else {
            Err(MemError::Unreadable {
                addr: addr + n as u64,
            })
        }
    }

    /// Read many ranges at once. Returns, per request, the number of leading bytes read
    /// (`== buf.len()` when complete). Errors are for the whole process (gone, not
    /// permitted); an unreadable range is a short count, not an error.
    fn read_many(&self, reqs: &mut [(u64, &mut [u8])]) -> Result<Vec<usize>, MemError>;
}

/// Types that may be read from raw bytes: `#[repr(C)]`, no padding-sensitive invariants,
/// every bit pattern a valid value, no `Drop`.
///
/// # Safety
///
/// Implement only for types for which every byte pattern of `size_of::<Self>()` bytes is
/// a valid value.
pub unsafe trait Pod: Sized {}

macro_rules! pod {
    ($($t:ty),* $(,)?) => {$(
        // SAFETY: integers, and the gprof-abi types, which that crate restricts to
        // `#[repr(C)]` structs of integers and their atomic twins (same layout, every bit
        // pattern valid, no Drop) — see the "Rules for the types here" in gprof_abi.
        unsafe impl Pod for $t {}
    )*};
}
pod!(
    u8,
    u16,
    u32,
    u64,
    i8,
    i16,
    i32,
    i64,
    usize,
    gprof_abi::Descriptor,
    gprof_abi::ControlBlock,
    gprof_abi::WorkerRecord,
    gprof_abi::TaskSlot,
    gprof_abi::SavedRegs,
    gprof_abi::ArenaRecord,
);
// SAFETY: an array of Pod values is Pod (no padding between elements, each valid).
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}

/// Decode a `T` from the start of `bytes` (unaligned). `None` if too short.
pub fn pod_from_bytes<T: Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: `bytes` holds at least size_of::<T>() initialized bytes (checked above);
    // read_unaligned has no alignment requirement; `T: Pod` makes every bit pattern valid.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Read a `T` from the target at `addr`.
pub fn read_pod<T: Pod>(mem: &(impl RemoteMemory + ?Sized), addr: u64) -> Result<T, MemError> {
    let mut buf = vec![0u8; std::mem::size_of::<T>()];
    mem.read(addr, &mut buf)?;
    Ok(pod_from_bytes(&buf).expect("buffer has the size of T"))
}

/// The memory of a live process.
#[derive(Debug)]
pub struct LiveMemory {
    pid: u32,
    /// The id the syscalls use: `pid`, or a live thread's TID once the leader turned
    /// out to be a zombie (it has no mm: process_vm_readv gives ESRCH; reliability.md
    /// §2.4).
    via: std::sync::atomic::AtomicU32,
    /// `/proc/PID/mem`, opened on first use when process_vm_readv is unavailable.
    mem_file: OnceLock<io::Result<File>>,
}

/// One page-bounded piece of one request.
#[derive(Clone, Copy)]
struct Chunk {
    req: usize,
    /// Offset inside the request's buffer.
    off: usize,
    addr: u64,
    len: usize,
}

impl LiveMemory {
    /// Memory of `pid` (no syscall yet).
    pub fn new(pid: u32) -> Self {
        LiveMemory {
            pid,
            via: std::sync::atomic::AtomicU32::new(pid),
            mem_file: OnceLock::new(),
        }
    }

    /// The PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn chunks(reqs: &[(u64, &mut [u8])]) -> Vec<Chunk> {
        let mut out = Vec::new();
        for (i, (addr, buf)) in reqs.iter().enumerate() {
            let mut off = 0usize;
            while off < buf.len() {
                let a = addr.wrapping_add(off as u64);
                let to_page_end = (PAGE - (a % PAGE)) as usize;
                let len = to_page_end.min(buf.len() - off);
                // A range that wraps past the end of the address space is unreadable
                // from the wrap on; the kernel would reject it anyway.
                if a.checked_add(len as u64).is_none() {
                    break;
                }
                out.push(Chunk {
                    req: i,
                    off,
                    addr: a,
                    len,
                });
                off += len;
            }
        }
        out
    }

    /// One `process_vm_readv` over `chunks`; returns the bytes transferred.
    fn readv(&self, reqs: &mut [(u64, &mut [u8])], chunks: &[Chunk]) -> Result<usize, nix::Error> {
        let mut local: Vec<libc::iovec> = Vec::with_capacity(chunks.len());
        let mut remote: Vec<libc::iovec> = Vec::with_capacity(chunks.len());
        for c in chunks {
            let buf = &mut reqs[c.req].1[c.off..c.off + c.len];
            local.push(libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: c.len,
            });
            remote.push(libc::iovec {
                iov_base: c.addr as usize as *mut libc::c_void,
                iov_len: c.len,
            });
        }
        // SAFETY: every local iovec points into a distinct, live, exclusively borrowed
        // sub-slice of a request buffer (`reqs` is &mut for the whole call, and chunks of
        // one request never overlap), with the exact length of that sub-slice. The remote
        // iovecs are only addresses in the other process, which the kernel validates.
        let n = unsafe {
            libc::process_vm_readv(
                self.via.load(std::sync::atomic::Ordering::Relaxed) as libc::pid_t,
                local.as_ptr(),
                local.len() as libc::c_ulong,
                remote.as_ptr(),
                remote.len() as libc::c_ulong,
                0,
            )
        };
        if n < 0 {
            Err(nix::Error::last())
        } else {
            Ok(n as usize)
        }
    }

    fn mem_file(&self) -> Result<&File, MemError> {
        let f = self
            .mem_file
            .get_or_init(|| File::open(format!("{}/mem", crate::locate::proc_dir(self.pid).0)));
        match f {
            Ok(f) => Ok(f),
            Err(e) => Err(match e.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ESRCH) => MemError::ProcessGone,
                Some(libc::EACCES) | Some(libc::EPERM) => MemError::PermissionDenied,
                _ => MemError::Io(io::Error::from_raw_os_error(
                    e.raw_os_error().unwrap_or(libc::EIO),
                )),
            }),
        }
    }

    fn read_many_procmem(
        &self,
        reqs: &mut [(u64, &mut [u8])],
        chunks: &[Chunk],
        done: &mut [usize],
    ) -> Result<(), MemError> {
        let f = self.mem_file()?;
        let mut failed = vec![false; reqs.len()];
        for c in chunks {
            if failed[c.req] {
                continue;
            }
            let buf = &mut reqs[c.req].1[c.off..c.off + c.len];
            // /proc/PID/mem takes the address as the file offset; addresses above
            // i64::MAX cannot be expressed (and are kernel addresses anyway).
            let r = if c.addr > i64::MAX as u64 {
                Ok(0)
            } else {
                f.read_at(buf, c.addr)
            };
            match r {
                Ok(n) if n == c.len => done[c.req] += n,
                Ok(n) => {
                    done[c.req] += n;
                    failed[c.req] = true;
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EIO) | Some(libc::EFAULT) => failed[c.req] = true,
                    Some(libc::ESRCH) => return Err(MemError::ProcessGone),
                    Some(libc::EPERM) | Some(libc::EACCES) => {
                        return Err(MemError::PermissionDenied)
                    }
                    _ => return Err(MemError::Io(e)),
                },
            }
        }
        Ok(())
    }
}

impl RemoteMemory for LiveMemory {
    fn read_many(&self, reqs: &mut [(u64, &mut [u8])]) -> Result<Vec<usize>, MemError> {
        let chunks = Self::chunks(reqs);
        let mut done = vec![0usize; reqs.len()];
        let mut failed = vec![false; reqs.len()];
        let mut i = 0;
        while i < chunks.len() {
            // Skip chunks of requests that already hit an unreadable page: we report
            // leading bytes only.
            if failed[chunks[i].req] {
                i += 1;
                continue;
            }
            let mut batch: Vec<Chunk> = Vec::with_capacity(IOV_MAX.min(chunks.len() - i));
            let mut j = i;
            while j < chunks.len() && batch.len() < IOV_MAX {
                if !failed[chunks[j].req] {
                    batch.push(chunks[j]);
                }
                j += 1;
            }
            match self.readv(reqs, &batch) {
                Ok(mut n) => {
                    // Credit whole chunks, then the one the kernel stopped in.
                    let mut k = 0;
                    while k < batch.len() && n >= batch[k].len {
                        n -= batch[k].len;
                        done[batch[k].req] += batch[k].len;
                        k += 1;
                    }
                    if k < batch.len() {
                        // The kernel stopped inside (or at the start of) chunk k: that
                        // page is unreadable. Count its readable prefix, fail the request,
                        // and go on right after it.
                        done[batch[k].req] += n;
                        failed[batch[k].req] = true;
                        i = position_after(&chunks, i, &batch[k]);
                    } else {
                        i = j;
                    }
                }
                Err(nix::Error::EFAULT) => {
                    // The very first remote iovec is unreadable (the kernel returns
                    // EFAULT instead of 0 when nothing could be copied).
                    failed[batch[0].req] = true;
                    i = position_after(&chunks, i, &batch[0]);
                }
                Err(nix::Error::ESRCH) => {
                    // A zombie leader: retry through a live thread, once per change.
                    let (_, alt) = crate::locate::proc_dir(self.pid);
                    if alt != self.via.swap(alt, std::sync::atomic::Ordering::Relaxed) {
                        continue;
                    }
                    return Err(MemError::ProcessGone);
                }
                Err(nix::Error::EPERM) | Err(nix::Error::EACCES) => {
                    return Err(MemError::PermissionDenied)
                }
                Err(nix::Error::ENOSYS) => {
                    // process_vm_readv filtered out (seccomp) or not built in.
                    let rest: Vec<Chunk> = chunks[i..]
                        .iter()
                        .copied()
                        .filter(|c| !failed[c.req])
                        .collect();
                    self.read_many_procmem(reqs, &rest, &mut done)?;
                    return Ok(done);
                }
                Err(e) => return Err(MemError::Io(e.into())),
            }
        }
        Ok(done)
    }
}

/// Index in `chunks` (searching from `from`) just after the chunk equal to `c`.
fn position_after(chunks: &[Chunk], from: usize, c: &Chunk) -> usize {
    chunks[from..]
        .iter()
        .position(|x| x.req == c.req && x.off == c.off)
        .map(|p| from + p + 1)
        .unwrap_or(chunks.len())
}

/// An address space made of a few byte regions, for tests and for memory that was
/// already copied (a frozen snapshot of stacks).
#[derive(Debug, Clone, Default)]
pub struct SliceMemory {
    regions: Vec<(u64, Vec<u8>)>,
}

impl SliceMemory {
    /// Empty address space.
    pub fn new() -> Self {
        Self::default()
    }
    /// Add a region of `bytes` at `base` (regions must not overlap).
    pub fn add(&mut self, base: u64, bytes: Vec<u8>) -> &mut Self {
        self.regions.push((base, bytes));
        self.regions.sort_by_key(|r| r.0);
        self
    }
    /// Builder form of [`SliceMemory::add`].
    pub fn with(mut self, base: u64, bytes: Vec<u8>) -> Self {
        self.add(base, bytes);
        self
    }

    fn read_prefix(&self, addr: u64, buf: &mut [u8]) -> usize {
        let mut done = 0usize;
        while done < buf.len() {
            let a = match addr.checked_add(done as u64) {
                Some(a) => a,
                None => break,
            };
            let Some((base, bytes)) = self
                .regions
                .iter()
                .find(|(base, bytes)| a >= *base && a - base < bytes.len() as u64)
            else {
                break;
            };
            let off = (a - base) as usize;
            let n = (bytes.len() - off).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&bytes[off..off + n]);
            done += n;
        }
        done
    }
}

impl RemoteMemory for SliceMemory {
    fn read_many(&self, reqs: &mut [(u64, &mut [u8])]) -> Result<Vec<usize>, MemError> {
        Ok(reqs
            .iter_mut()
            .map(|(addr, buf)| self.read_prefix(*addr, buf))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_memory_reads_across_adjacent_regions() {
        let m = SliceMemory::new()
            .with(0x1000, vec![1; 16])
            .with(0x1010, vec![2; 16])
            .with(0x3000, vec![3; 4]);
        let mut b = [0u8; 20];
        m.read(0x1008, &mut b).unwrap();
        assert_eq!(&b[..8], &[1; 8]);
        assert_eq!(&b[8..], &[2; 12]);
        let mut c = [0u8; 16];
        assert!(matches!(
            m.read(0x1018, &mut c),
            Err(MemError::Unreadable { addr: 0x1020 })
        ));
        let mut x = [0u8; 8];
        let mut y = [0u8; 2];
        let mut reqs: [(u64, &mut [u8]); 2] = [(0x2ffe, &mut x), (0x3000, &mut y)];
        assert_eq!(m.read_many(&mut reqs).unwrap(), vec![0, 2]);
        assert_eq!(read_pod::<u32>(&m, 0x3000).unwrap(), 0x03030303);
        assert!(read_pod::<u64>(&m, u64::MAX - 3).is_err());
    }

    #[test]
    fn live_memory_reads_self_with_partial_pages() {
        // Map three pages and unmap the middle one. (PROT_NONE would not do: the
        // /proc/PID/mem fallback reads with FOLL_FORCE, which ignores protections.)
        use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};
        use std::num::NonZeroUsize;
        let len = 3 * PAGE as usize;
        // SAFETY: a fresh anonymous private mapping; nothing else aliases it.
        let p = unsafe {
            mmap_anonymous(
                None,
                NonZeroUsize::new(len).unwrap(),
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }
        .unwrap();
        let base = p.as_ptr() as u64;
        // SAFETY: the mapping is `len` bytes, readable and writable, owned by this test.
        unsafe { std::ptr::write_bytes(p.as_ptr().cast::<u8>(), 0xab, len) };
        // SAFETY: the second page lies inside our own mapping; nothing refers to it.
        unsafe {
            munmap(
                std::ptr::NonNull::new((base + PAGE) as *mut libc::c_void).unwrap(),
                PAGE as usize,
            )
        }
        .unwrap();
        let mem = LiveMemory::new(std::process::id());
        let mut a = vec![0u8; 2 * PAGE as usize];
        let mut b = vec![0u8; 100];
        let mut c = vec![0u8; 100];
        let mut d = vec![0u8; 0];
        let mut reqs: [(u64, &mut [u8]); 4] = [
            (base + 100, &mut a),      // runs into the hole
            (base + PAGE + 8, &mut b), // starts in the hole
            (base + 2 * PAGE, &mut c), // fine
            (base, &mut d),            // empty
        ];
        let got = mem.read_many(&mut reqs).unwrap();
        assert_eq!(got, vec![PAGE as usize - 100, 0, 100, 0]);
        assert!(c.iter().all(|&x| x == 0xab));
        assert!(a[..PAGE as usize - 100].iter().all(|&x| x == 0xab));

        // More than IOV_MAX chunks in one call.
        let mut many: Vec<Vec<u8>> = (0..3000).map(|_| vec![0u8; 1]).collect();
        let mut reqs: Vec<(u64, &mut [u8])> = many
            .iter_mut()
            .enumerate()
            .map(|(i, v)| (base + 2 * PAGE + (i as u64 % 4000), v.as_mut_slice()))
            .collect();
        let got = mem.read_many(&mut reqs).unwrap();
        assert!(got.iter().all(|&n| n == 1));

        // /proc/PID/mem fallback gives the same answers.
        let mut a2 = vec![0u8; 2 * PAGE as usize];
        let mut reqs: [(u64, &mut [u8]); 1] = [(base + 100, &mut a2)];
        let chunks = LiveMemory::chunks(&reqs);
        let mut done = vec![0];
        mem.read_many_procmem(&mut reqs, &chunks, &mut done)
            .unwrap();
        assert_eq!(done, vec![PAGE as usize - 100]);
        // SAFETY: unmapping the two pages left of the mapping made above; no
        // references into them remain.
        unsafe {
            munmap(p, PAGE as usize).unwrap();
            munmap(
                std::ptr::NonNull::new((base + 2 * PAGE) as *mut libc::c_void).unwrap(),
                PAGE as usize,
            )
            .unwrap();
        }
    }
}
