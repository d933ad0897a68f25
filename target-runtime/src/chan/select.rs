//! Waiting on several channel operations at once (Go's `select`).
//!
//! The algorithm is Go's `selectgo`: lock every channel involved (in address order, so
//! two selects cannot deadlock), poll the cases in a random order and complete the first
//! ready one; if none is ready, link one hook per case into the channels' wait queues,
//! unlock, and park. Whoever first claims the select (an atomic compare-and-swap on its
//! shared context) completes that one case and wakes it; later claimants see the select
//! taken and skip its hooks. After waking, the select locks the channels again and
//! unlinks its remaining hooks.

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Acquire;

use super::wait::{block, Wake};
use super::WAITING;
use super::{Chan, Hook, Receiver, RecvError, SelectCtx, SendError, Sender, TryRecv, TrySend};
use gprof_abi::WaitReason;
use std::cell::UnsafeCell;

/// One case of a select, type-erased.
trait Case<R> {
    /// The channel, for lock ordering and de-duplication.
    fn chan_addr(&self) -> usize;
    fn lock(&self);
    fn unlock(&self);
    /// Try to complete the case now. `Some(wake)` if it completed (wake that party after
    /// unlocking every channel).
    ///
    /// # Safety
    ///
    /// The channel's lock is held.
    unsafe fn poll(&mut self) -> Option<Option<Wake>>;
    /// Link this case's hook, owned by `ctx` as case `index`.
    ///
    /// # Safety
    ///
    /// The channel's lock is held; the case (boxed) and `ctx` stay put until
    /// [`Case::unregister`] ran under the lock.
    unsafe fn register(&mut self, ctx: *const SelectCtx, index: usize);
    /// Unlink this case's hook if it is still linked.
    ///
    /// # Safety
    ///
    /// The channel's lock is held.
    unsafe fn unregister(&mut self);
    /// Run the case's closure with its outcome. Called once the case completed, by
    /// [`Case::poll`] or by a peer that claimed the select.
    fn finish(self: Box<Self>) -> R;
}

struct RecvCase<'a, T, F> {
    chan: &'a Chan<T>,
    hook: Hook<T>,
    result: Option<Result<T, RecvError>>,
    f: F,
}

impl<T, R, F: FnOnce(Result<T, RecvError>) -> R> Case<R> for RecvCase<'_, T, F> {
    fn chan_addr(&self) -> usize {
        self.chan.addr()
    }
    fn lock(&self) {
        self.chan.lock();
    }
    fn unlock(&self) {
        self.chan.unlock();
    }
    unsafe fn poll(&mut self) -> Option<Option<Wake>> {
        // SAFETY: the caller holds the lock.
        match unsafe { self.chan.try_recv_locked() } {
            TryRecv::Got(v, w) => {
                self.result = Some(Ok(v));
                Some(w)
            }
            TryRecv::Disconnected => {
                self.result = Some(Err(RecvError));
                Some(None)
            }
            TryRecv::Empty => None,
        }
    }
    unsafe fn register(&mut self, ctx: *const SelectCtx, index: usize) {
        self.hook.sel = ctx;
        self.hook.index = index;
        // SAFETY: per the caller's contract.
        unsafe { self.chan.enqueue_recv(&self.hook) };
    }
    unsafe fn unregister(&mut self) {
        // SAFETY: the caller holds the lock; the hook only ever joins this recvq.
        unsafe { self.chan.dequeue_recv(&self.hook) };
    }
    fn finish(self: Box<Self>) -> R {
        let this = *self;
        let result = match this.result {
            Some(r) => r,
            None if this.hook.succeeded() => {
                // SAFETY: the hook was claimed, completed and unlinked; it is ours.
                let v = unsafe { (*this.hook.slot().get()).take() };
                Ok(v.expect("a completed receive has a value"))
            }
            None => Err(RecvError),
        };
        (this.f)(result)
    }
}

struct SendCase<'a, T, F> {
    chan: &'a Chan<T>,
    /// Holds the value to send until the case completes.
    hook: Hook<T>,
    result: Option<Result<(), SendError<T>>>,
    f: F,
}

impl<T, R, F: FnOnce(Result<(), SendError<T>>) -> R> Case<R> for SendCase<'_, T, F> {
    fn chan_addr(&self) -> usize {
        self.chan.addr()
    }
    fn lock(&self) {
        self.chan.lock();
    }
    fn unlock(&self) {
        self.chan.unlock();
    }
    unsafe fn poll(&mut self) -> Option<Option<Wake>> {
        // SAFETY: the hook is not linked (registration comes after polling); it is ours.
        let slot = unsafe { &mut *self.hook.slot().get() };
        let v = slot.take().expect("an unsent value");
        // SAFETY: the caller holds the lock.
        match unsafe { self.chan.try_send_locked(v) } {
            TrySend::Sent(w) => {
                self.result = Some(Ok(()));
                Some(w)
            }
            TrySend::Disconnected(v) => {
                self.result = Some(Err(SendError(v)));
                Some(None)
            }
            TrySend::Full(v) => {
                *slot = Some(v);
                None
            }
        }
    }
    unsafe fn register(&mut self, ctx: *const SelectCtx, index: usize) {
        self.hook.sel = ctx;
        self.hook.index = index;
        // SAFETY: per the caller's contract.
        unsafe { self.chan.enqueue_send(&self.hook) };
    }
    unsafe fn unregister(&mut self) {
        // SAFETY: the caller holds the lock; the hook only ever joins this sendq.
        unsafe { self.chan.dequeue_send(&self.hook) };
    }
    fn finish(self: Box<Self>) -> R {
        let this = *self;
        let result = match this.result {
            Some(r) => r,
            None if this.hook.succeeded() => Ok(()),
            None => {
                // SAFETY: the hook was claimed and unlinked; it is ours.
                let v = unsafe { (*this.hook.slot().get()).take() };
                Err(SendError(v.expect("a refused send keeps its value")))
            }
        };
        (this.f)(result)
    }
}

/// A set of channel operations to wait on; exactly one of them completes.
///
/// Each case carries a closure that turns its outcome into the select's result `R`:
///
/// ```
/// use target_runtime::chan::{self, Select};
///
/// target_runtime::run(|| {
///     let (tx1, rx1) = chan::bounded::<u32>(1);
///     let (_tx2, rx2) = chan::bounded::<String>(1);
///     tx1.send(7).unwrap();
///     let got = Select::new()
///         .recv(&rx1, |r| format!("rx1: {}", r.unwrap()))
///         .recv(&rx2, |r| format!("rx2: {}", r.unwrap()))
///         .wait();
///     assert_eq!(got, "rx1: 7");
/// });
/// ```
///
/// When several cases are ready, one is chosen uniformly at random (Go's fairness rule).
/// A receive on a disconnected, drained channel and a send on a channel without
/// receivers are always ready: their closures get the error. The value of a send case
/// that was not chosen is dropped with the `Select`.
///
/// The [`select!`](crate::select) macro is sugar over this type.
pub struct Select<'a, R> {
    cases: Vec<Box<dyn Case<R> + 'a>>,
}

impl<R> Default for Select<'_, R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R> std::fmt::Debug for Select<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Select")
            .field("cases", &self.cases.len())
            .finish()
    }
}

impl<'a, R> Select<'a, R> {
    /// A select with no cases.
    pub fn new() -> Self {
        Select { cases: Vec::new() }
    }

    /// Add a receive from `rx`; `f` gets the value, or [`RecvError`] if `rx` is
    /// disconnected and drained.
    pub fn recv<T: 'a, F>(mut self, rx: &'a Receiver<T>, f: F) -> Self
    where
        F: FnOnce(Result<T, RecvError>) -> R + 'a,
    {
        self.cases.push(Box::new(RecvCase {
            chan: &rx.chan,
            hook: Hook::for_select(None),
            result: None,
            f,
        }));
        self
    }

    /// Add a send of `v` on `tx`; `f` gets `Ok(())`, or the value back in [`SendError`]
    /// if every receiver is gone.
    pub fn send<T: 'a, F>(mut self, tx: &'a Sender<T>, v: T, f: F) -> Self
    where
        F: FnOnce(Result<(), SendError<T>>) -> R + 'a,
    {
        self.cases.push(Box::new(SendCase {
            chan: &tx.chan,
            hook: Hook::for_select(Some(v)),
            result: None,
            f,
        }));
        self
    }

    /// Number of cases.
    pub fn len(&self) -> usize {
        self.cases.len()
    }

    /// Has no case been added?
    pub fn is_empty(&self) -> bool {
        self.cases.is_empty()
    }

    /// Block (the task, or a non-task thread) until one case completes, and return its
    /// closure's result. With no cases this blocks forever, like Go's `select {}`.
    pub fn wait(self) -> R {
        match self.run(true) {
            Some(r) => r,
            None => unreachable!("a blocking select always completes a case"),
        }
    }

    /// Complete a case that is ready now and return its closure's result, or return
    /// `None` without blocking if none is (Go's `select` with a `default` case).
    pub fn try_wait(self) -> Option<R> {
        self.run(false)
    }

    fn run(mut self, blocking: bool) -> Option<R> {
        let n = self.cases.len();
        if n == 0 {
            if !blocking {
                return None;
            }
            block_forever();
        }
        let mut poll_order: Vec<usize> = (0..n).collect();
        shuffle(&mut poll_order);
        let mut lock_order: Vec<usize> = (0..n).collect();
        lock_order.sort_by_key(|&i| self.cases[i].chan_addr());

        self.lock_all(&lock_order);
        for &i in &poll_order {
            // SAFETY: lock_all holds every case's channel lock.
            if let Some(w) = unsafe { self.cases[i].poll() } {
                self.unlock_all(&lock_order);
                if let Some(w) = w {
                    w.wake();
                }
                return Some(self.finish(i));
            }
        }
        if !blocking {
            self.unlock_all(&lock_order);
            return None;
        }

        let wake = Wake::prepare();
        let task = matches!(wake, Wake::Task(_));
        let ctx = SelectCtx {
            done: AtomicUsize::new(WAITING),
            wake: UnsafeCell::new(Some(wake)),
        };
        for &i in &poll_order {
            // SAFETY: we hold every lock; the cases are boxed and `ctx` lives on this
            // frame until the unregister pass below, which runs under the locks.
            unsafe { self.cases[i].register(&ctx, i) };
        }
        self.unlock_all(&lock_order);

        block(WaitReason::SELECT, task, || {
            ctx.done.load(Acquire) != WAITING
        });
        let won = ctx.done.load(Acquire);

        // Unlink the hooks that did not fire. Taking the locks also waits out any
        // claimant still inside a channel's critical section, so that after this pass no
        // other thread can reach `ctx` or the hooks.
        self.lock_all(&lock_order);
        for i in 0..n {
            if i != won {
                // SAFETY: we hold every lock.
                unsafe { self.cases[i].unregister() };
            }
        }
        self.unlock_all(&lock_order);
        drop(ctx);
        Some(self.finish(won))
    }

    fn finish(mut self, i: usize) -> R {
        let case = self.cases.swap_remove(i);
        // The other cases (and their unsent values) drop with `self` after the closure
        // ran: a panicking closure still drops them during unwinding.
        case.finish()
    }

    fn lock_all(&self, order: &[usize]) {
        let mut last = 0;
        for &i in order {
            let c = &self.cases[i];
            if c.chan_addr() != last {
                c.lock();
                last = c.chan_addr();
            }
        }
    }

    fn unlock_all(&self, order: &[usize]) {
        let mut last = 0;
        for &i in order {
            let c = &self.cases[i];
            if c.chan_addr() != last {
                c.unlock();
                last = c.chan_addr();
            }
        }
    }
}

fn block_forever() -> ! {
    let wake = Wake::prepare();
    let task = matches!(wake, Wake::Task(_));
    // Nobody holds `wake`, so this never returns.
    block(WaitReason::SELECT, task, || false);
    unreachable!()
}

/// Fisher-Yates with a per-thread xorshift generator (fairness only, not security).
fn shuffle(v: &mut [usize]) {
    for i in (1..v.len()).rev() {
        let j = (next_rand() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// Never inlined and never held across a park: a task may move to another worker thread
/// at any park (research/runtime.md, thread-locals across migration).
#[inline(never)]
fn next_rand() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static RNG: Cell<u64> = const { Cell::new(0) };
    }
    RNG.with(|r| {
        let mut x = r.get();
        if x == 0 {
            // Seed from the thread's stack address and the clock.
            let local = 0u8;
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            x = ((&local as *const u8 as u64) ^ t.rotate_left(17)) | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        r.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// Wait on several channel operations and complete exactly one of them, like Go's
/// `select`.
///
/// ```
/// use target_runtime::{chan, select};
///
/// target_runtime::run(|| {
///     let (tx, rx) = chan::bounded::<u32>(1);
///     let (done_tx, done_rx) = chan::bounded::<()>(0);
///     drop(done_tx);
///     tx.send(1).unwrap();
///     let mut seen = Vec::new();
///     loop {
///         select! {
///             recv(rx) -> v => seen.push(v.unwrap()),
///             recv(done_rx) -> r => {
///                 assert!(r.is_err()); // disconnected
///                 if rx.is_empty() { break }
///             }
///         }
///     }
///     assert_eq!(seen, [1]);
///
///     // With `default`, select never blocks.
///     let r = select! {
///         send(tx, 5) -> r => r.is_ok(),
///         default => false,
///     };
///     assert!(r);
/// });
/// ```
///
/// Arms are `recv(receiver) -> pattern => body`, `send(sender, value) -> pattern =>
/// body`, and at most one `default => body`. The pattern of a `recv` arm binds a
/// `Result<T, RecvError>`, of a `send` arm a `Result<(), SendError<T>>`; patterns must be
/// irrefutable. Arms are separated by commas (optional after a block body). Every channel
/// and value expression is evaluated once, in order, before waiting. Bodies run outside
/// any closure, so `break`, `continue`, `return` and `?` work in them. The value of the
/// `select!` is the value of the body that ran.
///
/// Without `default`, it blocks until one operation completes; with it, it runs `default`
/// when no operation is ready. When several are ready, one is picked at random.
#[macro_export]
macro_rules! select {
    ($($arms:tt)*) => {
        $crate::__select_internal!(@parse [] [] $($arms)*)
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __select_internal {
    // ---- parsing: accumulate (kind slot (args) (pattern) (body)) and the default body ----
    (@parse [$($c:tt)*] [$($d:tt)*]) => {
        $crate::__select_internal!(@gen [$($c)*] [$($d)*])
    };
    (@parse [$($c:tt)*] [$($d:tt)*]
        recv($rx:expr) -> $p:pat => $body:block, $($rest:tt)*) => {
        $crate::__select_internal!(@parse [$($c)* (recv __slot ($rx) ($p) ($body))] [$($d)*] $($rest)*)
    };
    (@parse [$($c:tt)*] [$($d:tt)*]
        recv($rx:expr) -> $p:pat => $body:block $($rest:tt)*) => {
        $crate::__select_internal!(@parse [$($c)* (recv __slot ($rx) ($p) ($body))] [$($d)*] $($rest)*)
    };
    (@parse [$($c:tt)*] [$($d:tt)*]
        recv($rx:expr) -> $p:pat => $body:expr, $($rest:tt)*) => {
        $crate::__select_internal!(@parse [$($c)* (recv __slot ($rx) ($p) ($body))] [$($d)*] $($rest)*)
    };
    (@parse [$($c:tt)*] [$($d:tt)*]
        recv($rx:expr) -> $p:pat => $body:expr) => {
        $crate::__select_internal!(@parse [$($c)* (recv __slot ($rx) ($p) ($body))] [$($d)*])
    };
    (@parse [$($c:tt)*] [$($d:tt)*]
        send($tx:expr, $v:expr) -> $p:pat => $body:block, $($rest:tt)*) => {
        $crate::__select_internal!(@parse [$($c)* (send __slot ($tx, $v) ($p) ($body))] [$($d)*] $($rest)*)
    };
    (@parse [$($c:tt)*] [$($d:tt)*]
        send($tx:expr, $v:expr) -> $p:pat => $body:block $($rest:tt)*) => {
        $crate::__select_internal!(@parse [$($c)* (send __slot ($tx, $v) ($p) ($body))] [$($d)*] $($rest)*)
    };
    (@parse [$($c:tt)*] [$($d:tt)*]
        send($tx:expr, $v:expr) -> $p:pat => $body:expr, $($rest:tt)*) => {
        $crate::__select_internal!(@parse [$($c)* (send __slot ($tx, $v) ($p) ($body))] [$($d)*] $($rest)*)
    };
    (@parse [$($c:tt)*] [$($d:tt)*]
        send($tx:expr, $v:expr) -> $p:pat => $body:expr) => {
        $crate::__select_internal!(@parse [$($c)* (send __slot ($tx, $v) ($p) ($body))] [$($d)*])
    };
    (@parse [$($c:tt)*] []
        default => $body:block, $($rest:tt)*) => {
        $crate::__select_internal!(@parse [$($c)*] [($body)] $($rest)*)
    };
    (@parse [$($c:tt)*] []
        default => $body:block $($rest:tt)*) => {
        $crate::__select_internal!(@parse [$($c)*] [($body)] $($rest)*)
    };
    (@parse [$($c:tt)*] []
        default => $body:expr, $($rest:tt)*) => {
        $crate::__select_internal!(@parse [$($c)*] [($body)] $($rest)*)
    };
    (@parse [$($c:tt)*] []
        default => $body:expr) => {
        $crate::__select_internal!(@parse [$($c)*] [($body)])
    };
    (@parse [$($c:tt)*] [$($d:tt)+] default $($rest:tt)*) => {
        ::core::compile_error!("select!: more than one `default` arm")
    };
    (@parse [$($c:tt)*] [$($d:tt)*] $($rest:tt)+) => {
        ::core::compile_error!(
            "select!: expected `recv(rx) -> pat => body`, `send(tx, value) -> pat => body` \
             or `default => body`"
        )
    };

    // ---- generation ----
    // Each arm's `__slot` comes from a different expansion step above, so hygiene makes
    // them distinct variables. Closures only store the outcome; bodies run afterwards,
    // outside any closure.
    (@gen [$(($kind:ident $slot:ident ($($args:tt)*) ($($p:tt)*) ($($body:tt)*)))*] []) => {{
        $( let mut $slot = ::core::option::Option::None; )*
        {
            let __sel: $crate::chan::Select<'_, ()> = $crate::chan::Select::new();
            $( let __sel = $crate::__select_internal!(@add __sel $kind $slot $($args)*); )*
            __sel.wait();
        }
        $(
            if let ::core::option::Option::Some(__v) = $slot {
                let $($p)* = __v;
                $($body)*
            } else
        )*
        { ::core::unreachable!("select!: no arm fired") }
    }};
    (@gen [$(($kind:ident $slot:ident ($($args:tt)*) ($($p:tt)*) ($($body:tt)*)))*] [($($default:tt)*)]) => {{
        $( let mut $slot = ::core::option::Option::None; )*
        let __fired = {
            let __sel: $crate::chan::Select<'_, ()> = $crate::chan::Select::new();
            $( let __sel = $crate::__select_internal!(@add __sel $kind $slot $($args)*); )*
            __sel.try_wait().is_some()
        };
        if !__fired {
            $($default)*
        } else
        $(
            if let ::core::option::Option::Some(__v) = $slot {
                let $($p)* = __v;
                $($body)*
            } else
        )*
        { ::core::unreachable!("select!: no arm fired") }
    }};
    (@add $sel:ident recv $slot:ident $rx:expr) => {
        $sel.recv(&$rx, |__r| $slot = ::core::option::Option::Some(__r))
    };
    (@add $sel:ident send $slot:ident $tx:expr, $v:expr) => {
        $sel.send(&$tx, $v, |__r| $slot = ::core::option::Option::Some(__r))
    };
}
