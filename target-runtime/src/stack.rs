//! Task stacks: mmap'd, one guard page below each, pooled for reuse.
//!
//! A guard page made with `mprotect` splits the mapping into two VMAs per stack, and
//! Linux caps a process at `vm.max_map_count` (65530 by default) VMAs: 100k tasks would
//! not fit. Linux 6.13 added `MADV_GUARD_INSTALL`, which marks pages as guard pages in
//! the page tables without splitting the VMA, so stacks of the default size are carved
//! out of large chunks and guarded that way. On an older kernel the runtime falls back
//! to `mprotect` (and to one VMA pair per stack).
//!
//! Freed stacks go back to a pool. Past [`HOT_POOL`] pooled stacks, a returned stack's
//! pages are released with `MADV_DONTNEED` (which keeps guard markers) so that a burst
//! of tasks does not pin its memory forever.

use std::io;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

/// Default usable stack size of a task (bytes). Pages are touched only as the task uses
/// them, so this is address space, not memory.
pub const DEFAULT_STACK_SIZE: usize = 256 * 1024;
/// Smallest stack a task may ask for. Signal handlers run on the task's stack (only the
/// overflow handler has its own), and glibc's handlers plus a Rust panic need room.
pub const MIN_STACK_SIZE: usize = 32 * 1024;
/// Largest stack a task may ask for.
pub const MAX_STACK_SIZE: usize = 1 << 30;
/// Stacks of the default size carved out of one mmap.
const CHUNK_STACKS: usize = 32;
/// Pooled stacks kept with their pages.
const HOT_POOL: usize = 256;
/// `MADV_GUARD_INSTALL` (include/uapi/asm-generic/mman-common.h, Linux 6.13).
const MADV_GUARD_INSTALL: libc::c_int = 102;

/// The page size.
pub fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    *PAGE.get_or_init(|| unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize })
}

/// One task stack: `[lo, hi)` usable, the page below `lo` is the guard.
#[derive(Debug)]
pub struct Stack {
    lo: u64,
    hi: u64,
    /// Whether this stack owns its own mapping (non-default size) or lives in a chunk.
    owned_map: bool,
}

impl Stack {
    /// Lowest usable address.
    pub fn lo(&self) -> u64 {
        self.lo
    }
    /// One past the highest usable address (16-byte aligned).
    pub fn hi(&self) -> u64 {
        self.hi
    }
    /// Usable bytes.
    pub fn size(&self) -> usize {
        (self.hi - self.lo) as usize
    }
}

/// Kernel support for `MADV_GUARD_INSTALL`: 0 unknown, 1 yes, 2 no.
static GUARD_MADVISE: AtomicU8 = AtomicU8::new(0);

fn install_guard(addr: u64, len: usize) -> io::Result<()> {
    if GUARD_MADVISE.load(Ordering::Relaxed) != 2 {
        // SAFETY: the range lies inside a mapping this module created and still owns.
        let r = unsafe { libc::madvise(addr as *mut libc::c_void, len, MADV_GUARD_INSTALL) };
        if r == 0 {
            GUARD_MADVISE.store(1, Ordering::Relaxed);
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(e);
        }
        GUARD_MADVISE.store(2, Ordering::Relaxed);
    }
    // SAFETY: as above; PROT_NONE on pages nobody uses.
    if unsafe { libc::mprotect(addr as *mut libc::c_void, len, libc::PROT_NONE) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn map(len: usize) -> io::Result<u64> {
    // SAFETY: an anonymous private mapping at a kernel-chosen address.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p as u64)
}

struct Pool {
    free: Vec<Stack>,
}

static POOL: Mutex<Pool> = Mutex::new(Pool { free: Vec::new() });

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// Check a requested stack size; returns the size rounded up to whole pages.
pub fn validate_size(size: usize) -> Result<usize, String> {
    if size < MIN_STACK_SIZE {
        return Err(format!(
            "stack size {size} bytes is below the minimum of {MIN_STACK_SIZE} bytes"
        ));
    }
    if size > MAX_STACK_SIZE {
        return Err(format!(
            "stack size {size} bytes is above the maximum of {MAX_STACK_SIZE} bytes"
        ));
    }
    Ok(round_up(size, page_size()))
}

/// Get a stack of `size` usable bytes (already validated and page-rounded).
pub fn alloc(size: usize) -> io::Result<Stack> {
    if size == DEFAULT_STACK_SIZE {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = pool.free.pop() {
            return Ok(s);
        }
        refill(&mut pool)?;
        return Ok(pool.free.pop().expect("refill adds stacks"));
    }
    let page = page_size();
    let base = map(size + page)?;
    install_guard(base, page)?;
    Ok(Stack {
        lo: base + page as u64,
        hi: base + (page + size) as u64,
        owned_map: true,
    })
}

fn refill(pool: &mut Pool) -> io::Result<()> {
    let page = page_size();
    let each = DEFAULT_STACK_SIZE + page;
    let base = map(each * CHUNK_STACKS)?;
    for i in 0..CHUNK_STACKS {
        let start = base + (i * each) as u64;
        install_guard(start, page)?;
        pool.free.push(Stack {
            lo: start + page as u64,
            hi: start + each as u64,
            owned_map: false,
        });
    }
    Ok(())
}

/// Return a stack. Its contents are garbage from now on.
pub fn free(stack: Stack) {
    if stack.owned_map {
        let page = page_size() as u64;
        // SAFETY: the mapping was created by `alloc` for this stack alone and nothing
        // refers to it any more (the task that ran on it has switched away for good).
        unsafe {
            libc::munmap(
                (stack.lo - page) as *mut libc::c_void,
                stack.size() + page as usize,
            )
        };
        return;
    }
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if pool.free.len() >= HOT_POOL {
        // Keep the top page: it is the one the next task touches first.
        let keep = page_size() as u64;
        // SAFETY: the range is inside this stack's chunk and no task runs on it.
        unsafe {
            libc::madvise(
                stack.lo as *mut libc::c_void,
                (stack.hi - keep - stack.lo) as usize,
                libc::MADV_DONTNEED,
            )
        };
    }
    pool.free.push(stack);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_validated() {
        assert!(validate_size(1024)
            .unwrap_err()
            .contains("below the minimum"));
        assert!(validate_size(MAX_STACK_SIZE + 1).is_err());
        assert_eq!(validate_size(MIN_STACK_SIZE + 1).unwrap() % page_size(), 0);
    }

    #[test]
    fn stacks_are_usable_and_reused() {
        let s = alloc(DEFAULT_STACK_SIZE).unwrap();
        assert_eq!(s.size(), DEFAULT_STACK_SIZE);
        // SAFETY: the stack's usable range is mapped read-write.
        unsafe { ((s.hi() - 8) as *mut u64).write(7) };
        let lo = s.lo();
        free(s);
        let t = alloc(DEFAULT_STACK_SIZE).unwrap();
        assert_eq!(t.lo(), lo, "the pool hands back the stack just freed");
        free(t);
    }
}
