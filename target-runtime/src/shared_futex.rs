//! The futex half of the region's wake protocol (abi docs, "Profile helper"), used by
//! both sides: the runtime's profile helper and gprof-rs.
//!
//! Shared futexes, not `FUTEX_PRIVATE`: waker and waiter are two processes, each with
//! its own mapping of the region's memfd, and a shared futex on a `MAP_SHARED` file
//! mapping is keyed by the file page, the same in both.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Wake every waiter on `word`. A failure wakes nobody; every waiter's wait is bounded,
/// and it looks at the word again when it ends.
pub fn wake(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned u32 (a field of the mapped region, which
    // outlives the call). FUTEX_WAKE only reads its address.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX) };
}

/// Sleep while `word` is `val`, at most `timeout`. A wake, a changed value, a signal
/// or the timeout all return: the caller looks at the word again.
pub fn wait(word: &AtomicU32, val: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a live, aligned u32 as above; `ts` outlives the call. EINTR,
    // EAGAIN (the value already changed) and ETIMEDOUT all just return.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            val,
            &ts as *const libc::timespec,
        )
    };
}
