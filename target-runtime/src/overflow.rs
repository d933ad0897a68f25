//! Stack overflow reporting.
//!
//! A task that runs off its stack faults on the guard page below it. The SIGSEGV handler
//! runs on a per-worker alternate signal stack (the task's own stack is exhausted), finds
//! the task the worker is running, and if the fault lies in that task's guard page prints
//! `task N (name) overflowed its S-byte stack` and aborts, as Go's runtime does with
//! "goroutine stack exceeds limit". Any other fault restores the default action and
//! returns, so the faulting instruction re-faults and the process dies with the usual
//! signal and core dump.

use crate::region;
use std::sync::Once;

/// Bytes of each worker's alternate signal stack.
const ALT_STACK: usize = 64 * 1024;

/// A worker thread's alternate signal stack; removed and unmapped on drop.
pub(crate) struct AltStack {
    base: *mut libc::c_void,
}

impl AltStack {
    /// Install the SIGSEGV handler (once per process) and an alternate stack for the
    /// calling thread.
    pub(crate) fn install() -> Option<AltStack> {
        static HANDLER: Once = Once::new();
        HANDLER.call_once(install_handler);
        // SAFETY: anonymous private mapping at a kernel-chosen address.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ALT_STACK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        let ss = libc::stack_t {
            ss_sp: base,
            ss_flags: 0,
            ss_size: ALT_STACK,
        };
        // SAFETY: `ss` describes the mapping just made, which outlives its use (drop
        // disables the alternate stack before unmapping it).
        unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) };
        Some(AltStack { base })
    }
}

impl Drop for AltStack {
    fn drop(&mut self) {
        let ss = libc::stack_t {
            ss_sp: std::ptr::null_mut(),
            ss_flags: libc::SS_DISABLE,
            ss_size: 0,
        };
        // SAFETY: disables this thread's alternate stack, then unmaps our mapping.
        unsafe {
            libc::sigaltstack(&ss, std::ptr::null_mut());
            libc::munmap(self.base, ALT_STACK);
        }
    }
}

fn install_handler() {
    // SAFETY: a zeroed sigaction is a valid starting value; we fill handler and flags.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction =
            handler as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
    }
}

/// A tiny formatter into a stack buffer: the handler may not allocate.
struct Buf {
    b: [u8; 256],
    n: usize,
}

impl Buf {
    fn push(&mut self, s: &[u8]) {
        let k = s.len().min(self.b.len() - self.n);
        self.b[self.n..self.n + k].copy_from_slice(&s[..k]);
        self.n += k;
    }
    fn num(&mut self, mut v: u64) {
        let mut d = [0u8; 20];
        let mut i = d.len();
        loop {
            i -= 1;
            d[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&d[i..]);
    }
}

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as u64;
    if let Some(region) = region::try_get() {
        let w = crate::sched::worker_ptr();
        if let Some(slot_index) = current_slot(w) {
            let slot = region.slot(slot_index);
            let lo = slot.stack_lo.load(std::sync::atomic::Ordering::Relaxed);
            let hi = slot.stack_hi.load(std::sync::atomic::Ordering::Relaxed);
            let page = crate::stack::page_size() as u64;
            // A frame may jump a little past the guard with its first touch: accept a
            // fault anywhere from one guard page below `lo` up to `lo`.
            if addr < lo && addr >= lo.saturating_sub(page) {
                let mut b = Buf { b: [0; 256], n: 0 };
                b.push(b"fatal error: task ");
                b.num(slot.task_id.load(std::sync::atomic::Ordering::Relaxed));
                let n = (slot.name_len.load(std::sync::atomic::Ordering::Relaxed) as usize)
                    .min(gprof_abi::NAME_CAP);
                if n > 0 {
                    b.push(b" (");
                    // SAFETY: the slot's name bytes are plain memory in our mapping.
                    let name = unsafe { &(&(*region.slot_ptr(slot_index)).name)[..n] };
                    b.push(name);
                    b.push(b")");
                }
                b.push(b" overflowed its ");
                b.num(hi - lo);
                b.push(b"-byte stack\n");
                // SAFETY: write(2) and abort(3) are async-signal-safe.
                unsafe {
                    libc::write(2, b.b.as_ptr() as *const libc::c_void, b.n);
                    libc::abort();
                }
            }
        }
    }
    // Not ours: fall back to the default action and let the instruction fault again.
    // SAFETY: resetting a handler is async-signal-safe.
    unsafe { libc::signal(sig, libc::SIG_DFL) };
}

fn current_slot(w: *const crate::sched::WorkerCtx) -> Option<u32> {
    if w.is_null() {
        return None;
    }
    // SAFETY: a non-null worker pointer refers to this thread's live WorkerCtx.
    unsafe { crate::sched::current_slot_of(&*w) }
}
