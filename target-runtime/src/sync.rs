//! Task-blocking synchronisation: [`Mutex`] and [`WaitGroup`].
//!
//! Both park the waiting *task* (its worker thread runs other tasks meanwhile). Called
//! from a thread that is not a task, they block that OS thread instead.

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::chan::wait::{block, SpinMutex, Wake};
use gprof_abi::WaitReason;

// ---------------------------------------------------------------------------------------
// Mutex
// ---------------------------------------------------------------------------------------

/// The mutex is held.
const LOCKED: u32 = 1;
/// A waiter was woken to compete for the lock and has not yet retried: unlockers need
/// not wake another.
const WOKEN: u32 = 2;
/// Starvation mode: ownership is handed to the head waiter; newcomers queue.
const STARVING: u32 = 4;
/// The wait queue is non-empty (changed only under the queue lock).
const QUEUED: u32 = 8;

/// A waiter that waited this long switches the mutex to starvation mode (Go's value).
const STARVE_AFTER: Duration = Duration::from_millis(1);
/// Spin rounds before queueing, when the holder may be running on another worker.
const SPIN_ROUNDS: u32 = 4;

/// `MutexWaiter::status`: still queued.
const W_PENDING: u8 = 0;
/// Woken to compete for the lock again (normal mode).
const W_WOKEN: u8 = 1;
/// The lock was handed to this waiter (starvation mode): it owns it.
const W_OWNER: u8 = 2;

struct MutexWaiter {
    wake: UnsafeCell<Option<Wake>>,
    status: AtomicU8,
    /// When this waiter first queued, for the starvation rule.
    since: Instant,
}

/// The queue of blocked lockers: pointers to [`MutexWaiter`]s on their stacks.
struct WaitQueue(VecDeque<*const MutexWaiter>);

// SAFETY: the pointers are only followed under the queue's lock, while the waiter they
// point to is queued (its owner stays blocked until it is popped and signalled).
unsafe impl Send for WaitQueue {}

/// A mutual-exclusion lock that parks the waiting task instead of blocking its thread.
///
/// It follows Go's `sync.Mutex` (runtime/sema.go and sync/mutex.go):
///
/// * Fast path: one compare-and-swap to lock, one to unlock.
/// * Normal mode: a contended locker spins briefly, then queues FIFO and parks. Unlock
///   releases the lock and wakes the head waiter, which competes with newly arriving
///   lockers (barging keeps throughput high: the running task usually wins).
/// * Starvation mode: a waiter that has waited over 1 ms switches the mutex to direct
///   hand-off: unlock passes ownership to the head waiter and newcomers queue behind it.
///   It switches back when the queue empties or a waiter got the lock in under 1 ms.
///
/// The guard may be held across parks (channel operations, sleeps, other locks), and
/// may be dropped on another worker thread than it was taken on.
///
/// **No poisoning.** If a task panics while holding the guard, the guard is dropped
/// while unwinding and the mutex is simply unlocked (like Go, and `parking_lot`); the
/// data may be in whatever state the panicking code left it.
pub struct Mutex<T: ?Sized> {
    state: AtomicU32,
    queue: SpinMutex<WaitQueue>,
    data: UnsafeCell<T>,
}

// SAFETY: the lock gives one guard at a time exclusive access to `T`, which may be on any
// thread: `T: Send` is what that needs (as for std::sync::Mutex).
unsafe impl<T: ?Sized + Send> Send for Mutex<T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Send> Sync for Mutex<T> {}

/// Proof of holding a [`Mutex`]; derefs to the data, unlocks on drop.
#[must_use = "the mutex unlocks as soon as the guard is dropped"]
pub struct MutexGuard<'a, T: ?Sized> {
    mutex: &'a Mutex<T>,
}

// SAFETY: a guard hands out `&T`; sharing it between threads needs `T: Sync`.
unsafe impl<T: ?Sized + Sync> Sync for MutexGuard<'_, T> {}
// SAFETY: unlocking from another thread is fine for this mutex (no thread ownership);
// moving the guard moves `&mut T` access, which needs `T: Send`.
unsafe impl<T: ?Sized + Send> Send for MutexGuard<'_, T> {}

impl<T> Mutex<T> {
    /// A new, unlocked mutex.
    pub const fn new(value: T) -> Self {
        Mutex {
            state: AtomicU32::new(0),
            queue: SpinMutex::new(WaitQueue(VecDeque::new())),
            data: UnsafeCell::new(value),
        }
    }

    /// Consume the mutex and return the data.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Lock, parking the task while another holds the lock.
    #[inline]
    pub fn lock(&self) -> MutexGuard<'_, T> {
        if self
            .state
            .compare_exchange(0, LOCKED, Acquire, Relaxed)
            .is_err()
        {
            self.lock_slow();
        }
        MutexGuard { mutex: self }
    }

    /// Lock if that is possible without waiting. Like Go's `TryLock`, this fails in
    /// starvation mode even when the lock is momentarily free, so that queued waiters
    /// keep their turn.
    #[inline]
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        let mut s = self.state.load(Relaxed);
        loop {
            if s & (LOCKED | STARVING) != 0 {
                return None;
            }
            match self
                .state
                .compare_exchange_weak(s, s | LOCKED, Acquire, Relaxed)
            {
                Ok(_) => return Some(MutexGuard { mutex: self }),
                Err(now) => s = now,
            }
        }
    }

    /// Mutable access without locking: `&mut self` proves nobody else holds it.
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }

    /// Is the mutex locked right now? (A snapshot, for diagnostics.)
    pub fn is_locked(&self) -> bool {
        self.state.load(Relaxed) & LOCKED != 0
    }

    #[cold]
    fn lock_slow(&self) {
        let mut first_queued: Option<Instant> = None;
        // We hold the WOKEN flag: an unlocker woke us and we have not retried yet.
        let mut woken = false;
        let mut spins = 0;
        loop {
            let s = self.state.load(Relaxed);
            if s & (LOCKED | STARVING) == 0 {
                let new = (s | LOCKED) & !if woken { WOKEN } else { 0 };
                if self
                    .state
                    .compare_exchange_weak(s, new, Acquire, Relaxed)
                    .is_ok()
                {
                    return;
                }
                continue;
            }
            if s & STARVING == 0 && spins < SPIN_ROUNDS {
                spins += 1;
                for _ in 0..30 {
                    std::hint::spin_loop();
                }
                continue;
            }

            // Queue up and park.
            let requeue = first_queued.is_some();
            let since = *first_queued.get_or_insert_with(Instant::now);
            let starving = requeue && since.elapsed() >= STARVE_AFTER;
            let wake = Wake::prepare();
            let task = matches!(wake, Wake::Task(_));
            let me = MutexWaiter {
                wake: UnsafeCell::new(Some(wake)),
                status: AtomicU8::new(W_PENDING),
                since,
            };
            let mut q = self.queue.lock();
            loop {
                let s = self.state.load(Relaxed);
                if s & (LOCKED | STARVING) == 0 {
                    // Freed meanwhile: take it instead of queueing. (The prepared
                    // waiter is dropped unused; that is allowed.)
                    let new = (s | LOCKED) & !if woken { WOKEN } else { 0 };
                    if self
                        .state
                        .compare_exchange_weak(s, new, Acquire, Relaxed)
                        .is_ok()
                    {
                        return;
                    }
                    continue;
                }
                // `s` has LOCKED (STARVING implies LOCKED), so the holder's unlock will
                // see QUEUED and wake or hand off to someone.
                let mut new = s | QUEUED;
                if woken {
                    new &= !WOKEN;
                }
                if starving {
                    new |= STARVING;
                }
                if self
                    .state
                    .compare_exchange_weak(s, new, Relaxed, Relaxed)
                    .is_ok()
                {
                    break;
                }
            }
            // A waiter that was woken and lost the race goes back to the front (Go's
            // queueLifo), so it keeps its place in line.
            if requeue {
                q.0.push_front(&me);
            } else {
                q.0.push_back(&me);
            }
            drop(q);

            block(WaitReason::MUTEX, task, || {
                me.status.load(Acquire) != W_PENDING
            });
            if me.status.load(Relaxed) == W_OWNER {
                return;
            }
            woken = true;
            spins = 0;
        }
    }

    #[inline]
    fn unlock(&self) {
        if self
            .state
            .compare_exchange(LOCKED, 0, Release, Relaxed)
            .is_err()
        {
            self.unlock_slow();
        }
    }

    #[cold]
    fn unlock_slow(&self) {
        let mut s = self.state.load(Relaxed);
        loop {
            debug_assert!(s & LOCKED != 0, "unlock of an unlocked mutex");
            if s & STARVING != 0 {
                self.hand_off();
                return;
            }
            match self
                .state
                .compare_exchange_weak(s, s & !LOCKED, Release, Relaxed)
            {
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        if s & QUEUED == 0 || s & WOKEN != 0 {
            return;
        }
        let mut q = self.queue.lock();
        loop {
            let s = self.state.load(Relaxed);
            // Locked again (its holder's unlock will wake someone), a waiter already
            // awake, or nobody queued: nothing to do.
            if s & (LOCKED | WOKEN | STARVING) != 0 || s & QUEUED == 0 {
                return;
            }
            if self
                .state
                .compare_exchange_weak(s, s | WOKEN, Relaxed, Relaxed)
                .is_ok()
            {
                break;
            }
        }
        let w = q.0.pop_front().expect("QUEUED mutex has a waiter");
        if q.0.is_empty() {
            self.state.fetch_and(!QUEUED, Relaxed);
        }
        // SAFETY: `w` was queued, so its owner is blocked until we store its status,
        // and only we (holding the queue lock, having popped it) touch it.
        let wake = unsafe { signal(w, W_WOKEN) };
        drop(q);
        wake.wake();
    }

    /// Starvation mode: give the lock (still LOCKED) to the head waiter.
    fn hand_off(&self) {
        let mut q = self.queue.lock();
        let w = q.0.pop_front().expect("starving mutex has a waiter");
        // SAFETY: as in `unlock_slow`; `since` is read before the status store.
        let waited = unsafe { (*w).since.elapsed() };
        let mut clear = 0;
        if q.0.is_empty() {
            clear |= QUEUED | STARVING;
        } else if waited < STARVE_AFTER {
            clear |= STARVING;
        }
        if clear != 0 {
            self.state.fetch_and(!clear, Relaxed);
        }
        // SAFETY: as in `unlock_slow`.
        let wake = unsafe { signal(w, W_OWNER) };
        drop(q);
        wake.wake();
    }
}

/// Take the waiter's wake-up and publish its new status.
///
/// # Safety
///
/// `w` was just popped from the queue under its lock and its owner is still blocked.
/// After this returns `w` may be gone.
unsafe fn signal(w: *const MutexWaiter, status: u8) -> Wake {
    // SAFETY: per the contract.
    unsafe {
        let wake = (*(*w).wake.get())
            .take()
            .expect("a queued waiter has a wake-up");
        (*w).status.store(status, Release);
        wake
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the lock is held.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves the lock is held, and `&mut self` makes this the only
        // reference it hands out.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        self.mutex.unlock();
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Self {
        Mutex::new(T::default())
    }
}

impl<T> From<T> for Mutex<T> {
    fn from(v: T) -> Self {
        Mutex::new(v)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Mutex");
        match self.try_lock() {
            Some(g) => d.field("data", &&*g),
            None => d.field("data", &format_args!("<locked>")),
        };
        d.finish_non_exhaustive()
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

// ---------------------------------------------------------------------------------------
// WaitGroup
// ---------------------------------------------------------------------------------------

struct WgWaiter {
    wake: UnsafeCell<Option<Wake>>,
    done: AtomicBool,
}

struct WgState {
    count: isize,
    waiters: Vec<*const WgWaiter>,
}

// SAFETY: the waiter pointers are only followed under the lock, while their owners are
// blocked in `wait` (see `WaitGroup::add`).
unsafe impl Send for WgState {}

/// Wait for a collection of tasks to finish (Go's `sync.WaitGroup`).
///
/// A `WaitGroup` is a handle: clones share one counter (Go passes `*sync.WaitGroup`;
/// here you clone the handle into each task). [`add`](WaitGroup::add) raises the
/// counter, [`done`](WaitGroup::done) lowers it, [`wait`](WaitGroup::wait) parks until
/// it is zero. It can be reused once a wait has returned.
///
/// ```
/// use target_runtime::sync::WaitGroup;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
///
/// target_runtime::run(|| {
///     let wg = WaitGroup::new();
///     let n = Arc::new(AtomicUsize::new(0));
///     for _ in 0..10 {
///         wg.add(1);
///         let (wg, n) = (wg.clone(), n.clone());
///         target_runtime::spawn(move || {
///             n.fetch_add(1, Ordering::Relaxed);
///             wg.done();
///         });
///     }
///     wg.wait();
///     assert_eq!(n.load(Ordering::Relaxed), 10);
/// });
/// ```
#[derive(Clone)]
pub struct WaitGroup {
    inner: Arc<SpinMutex<WgState>>,
}

impl Default for WaitGroup {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for WaitGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitGroup")
            .field("count", &self.count())
            .finish()
    }
}

impl WaitGroup {
    /// A wait group with counter zero.
    pub fn new() -> Self {
        WaitGroup {
            inner: Arc::new(SpinMutex::new(WgState {
                count: 0,
                waiters: Vec::new(),
            })),
        }
    }

    /// Add `delta` (which may be negative) to the counter. When it reaches zero every
    /// waiter is released.
    ///
    /// # Panics
    ///
    /// If the counter would go negative ("sync: negative WaitGroup counter", Go's
    /// message); the counter is left unchanged.
    pub fn add(&self, delta: isize) {
        let mut st = self.inner.lock();
        let count = match st.count.checked_add(delta) {
            Some(c) if c >= 0 => c,
            _ => {
                let was = st.count;
                drop(st);
                panic!(
                    "sync: negative WaitGroup counter (counter {was}, add({delta})): \
                     done() was called more times than add() counted"
                );
            }
        };
        st.count = count;
        if count != 0 || st.waiters.is_empty() {
            return;
        }
        let waiters = std::mem::take(&mut st.waiters);
        let wakes: Vec<Wake> = waiters
            .into_iter()
            .map(|w| {
                // SAFETY: a listed waiter's owner stays blocked until `done` is set, and
                // only we (holding the lock, having taken the list) touch it; after the
                // store it may be gone, so the wake-up is taken first.
                unsafe {
                    let wake = (*(*w).wake.get()).take().expect("waiter has a wake-up");
                    (*w).done.store(true, Release);
                    wake
                }
            })
            .collect();
        drop(st);
        for w in wakes {
            w.wake();
        }
    }

    /// Lower the counter by one: `add(-1)`.
    ///
    /// # Panics
    ///
    /// If the counter is already zero.
    pub fn done(&self) {
        self.add(-1);
    }

    /// Park until the counter is zero (returns at once if it is).
    pub fn wait(&self) {
        let mut st = self.inner.lock();
        if st.count == 0 {
            return;
        }
        let wake = Wake::prepare();
        let task = matches!(wake, Wake::Task(_));
        let me = WgWaiter {
            wake: UnsafeCell::new(Some(wake)),
            done: AtomicBool::new(false),
        };
        st.waiters.push(&me);
        drop(st);
        block(WaitReason::WAIT_GROUP, task, || me.done.load(Acquire));
    }

    /// The current counter (a snapshot, for diagnostics).
    pub fn count(&self) -> usize {
        self.inner.lock().count as usize
    }

    /// `add(1)`, then spawn `f` as a task that calls `done()` when it finishes, even by
    /// panicking (Go 1.25's `WaitGroup.Go`).
    ///
    /// # Panics
    ///
    /// Outside a task (as [`crate::spawn`]).
    pub fn spawn<F, T>(&self, f: F) -> crate::JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        struct Done(WaitGroup);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0.done();
            }
        }
        self.add(1);
        let done = Done(self.clone());
        crate::spawn(move || {
            let _done = done;
            f()
        })
    }
}
