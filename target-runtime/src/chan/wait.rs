//! Building blocks shared by the channels and by [`crate::sync`]: a short spin lock and a
//! one-shot wake-up that works for tasks (through [`crate::park`]) and, as a fallback, for
//! plain OS threads.

use std::cell::UnsafeCell;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

/// A test-and-test-and-set spin lock for critical sections of O(1) work.
///
/// Nothing ever parks while holding one, so a waiter only spins while another thread
/// runs a few instructions; after a while it yields the OS thread in case the holder was
/// descheduled by the kernel (the machine may have fewer cores than threads).
pub(crate) struct SpinLock {
    locked: AtomicBool,
}

impl SpinLock {
    pub(crate) const fn new() -> Self {
        SpinLock {
            locked: AtomicBool::new(false),
        }
    }

    #[inline]
    pub(crate) fn lock(&self) {
        if self
            .locked
            .compare_exchange_weak(false, true, Acquire, Relaxed)
            .is_err()
        {
            self.lock_slow();
        }
    }

    #[cold]
    fn lock_slow(&self) {
        let mut spins = 0u32;
        loop {
            while self.locked.load(Relaxed) {
                if spins < 64 {
                    for _ in 0..(1u32 << (spins / 8).min(5)) {
                        std::hint::spin_loop();
                    }
                    spins += 1;
                } else {
                    std::thread::yield_now();
                }
            }
            if self
                .locked
                .compare_exchange_weak(false, true, Acquire, Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }

    /// Release the lock. The caller must hold it.
    #[inline]
    pub(crate) fn unlock(&self) {
        self.locked.store(false, Release);
    }
}

/// A value guarded by a [`SpinLock`], with a guard type.
pub(crate) struct SpinMutex<T> {
    lock: SpinLock,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through a guard, and the lock makes guards exclusive;
// moving `T` between threads through the lock needs `T: Send` and nothing more (like
// std::sync::Mutex).
unsafe impl<T: Send> Sync for SpinMutex<T> {}
// SAFETY: as above; owning the mutex owns the `T`.
unsafe impl<T: Send> Send for SpinMutex<T> {}

impl<T> SpinMutex<T> {
    pub(crate) const fn new(value: T) -> Self {
        SpinMutex {
            lock: SpinLock::new(),
            value: UnsafeCell::new(value),
        }
    }

    #[inline]
    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        self.lock.lock();
        SpinGuard { m: self }
    }
}

pub(crate) struct SpinGuard<'a, T> {
    m: &'a SpinMutex<T>,
}

impl<T> std::ops::Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while the lock is held.
        unsafe { &*self.m.value.get() }
    }
}

impl<T> std::ops::DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists only while the lock is held, and `&mut self` makes
        // this the only reference handed out.
        unsafe { &mut *self.m.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        self.m.lock.unlock();
    }
}

/// Who to wake: a task (parked through [`crate::park`]) or an OS thread that is not a
/// task (parked with [`std::thread::park`]).
pub(crate) enum Wake {
    Task(crate::park::Waiter),
    Thread(std::thread::Thread),
}

impl Wake {
    /// A wake-up for the next block of the caller. For a task this is
    /// [`crate::park::prepare_park`], so it must be followed by [`block`].
    #[inline]
    pub(crate) fn prepare() -> Wake {
        if crate::sched::in_task() {
            Wake::Task(crate::park::prepare_park())
        } else {
            Wake::Thread(std::thread::current())
        }
    }

    /// Wake the blocked party. The caller must first have published the condition the
    /// blocked party re-checks (see [`block`]) with release ordering.
    #[inline]
    pub(crate) fn wake(self) {
        match self {
            Wake::Task(w) => {
                // Only the one claimant of a wait calls this (callers arbitrate with their
                // own atomics first). It can still return false: the blocked task may have
                // seen the condition after a spurious return of `park` and moved on to a
                // later park, which this stale waiter correctly leaves alone.
                w.wake();
            }
            Wake::Thread(t) => t.unpark(),
        }
    }
}

/// Block the caller until `done()` returns true. The caller has prepared a [`Wake`]
/// with [`Wake::prepare`] and made it reachable by whoever will make `done()` true; that
/// party sets the condition (release) and then calls [`Wake::wake`].
///
/// Loops over spurious returns of [`crate::park::park`] (which re-parks on the same
/// prepared waiter) and of [`std::thread::park`].
#[inline]
pub(crate) fn block(reason: u32, task: bool, mut done: impl FnMut() -> bool) {
    if task {
        while !done() {
            crate::park::park(reason);
        }
    } else {
        while !done() {
            std::thread::park();
        }
    }
}
