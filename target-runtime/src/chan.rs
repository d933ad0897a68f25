//! Go-like channels that block tasks, not threads.
//!
//! ```
//! use target_runtime::chan;
//!
//! let sum = target_runtime::run(|| {
//!     let (tx, rx) = chan::bounded::<u64>(0); // unbuffered, like Go's make(chan uint64)
//!     let producer = target_runtime::spawn(move || {
//!         for i in 1..=10 {
//!             tx.send(i).unwrap();
//!         }
//!         // dropping the last Sender disconnects the channel, like Go's close()
//!     });
//!     let sum: u64 = rx.iter().sum();
//!     producer.join().unwrap();
//!     sum
//! });
//! assert_eq!(sum, 55);
//! ```
//!
//! * [`bounded`]`(0)` is a rendezvous channel: `send` returns once a receiver has taken
//!   the value. [`bounded`]`(n)` buffers `n` values, [`unbounded`] never blocks senders.
//! * [`Sender`] and [`Receiver`] are both `Clone` (many producers, many consumers). When
//!   the last `Sender` is dropped, receivers drain what is buffered and then get
//!   [`RecvError`]. When the last `Receiver` is dropped, buffered values are dropped and
//!   every send returns its value inside [`SendError`].
//! * [`select!`](crate::select) and [`Select`] wait on several operations and complete
//!   exactly one, like Go's `select`.
//! * Blocking operations park the calling task. Called from a thread that is not a task
//!   (for example the thread that called [`run`](crate::run), or any `std::thread`), they
//!   block that OS thread instead, so channels also connect tasks with plain threads.
//!
//! # How it works
//!
//! Like Go's `hchan`: a short spin lock (never held across a park) guards a ring buffer
//! and two FIFO queues of blocked operations (Go's `sudog`s). A blocked operation's
//! record lives on the blocked task's own stack and is linked into the queue
//! intrusively, so blocking allocates nothing. A sender that finds a blocked receiver
//! writes the value straight into that receiver's record and wakes it (direct hand-off),
//! and symmetrically for a receiver that finds a blocked sender; the buffer is used only
//! when nobody is waiting.

mod select;
pub(crate) mod wait;

pub use select::Select;

/// Wait on several channel operations and complete exactly one; see the
/// [crate-level macro](crate::select) for the syntax.
pub use crate::select;

use std::cell::{Cell, UnsafeCell};
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicU8, AtomicUsize};
use std::sync::Arc;

use gprof_abi::WaitReason;
use wait::{block, SpinLock, Wake};

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// [`Sender::send`] failed because every [`Receiver`] is gone; the value comes back.
#[derive(PartialEq, Eq, Clone, Copy)]
pub struct SendError<T>(pub T);

/// [`Sender::try_send`] failed.
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum TrySendError<T> {
    /// The channel is full (for an unbuffered channel: no receiver is waiting).
    Full(T),
    /// Every [`Receiver`] is gone.
    Disconnected(T),
}

/// [`Receiver::recv`] failed because the channel is empty and every [`Sender`] is gone.
#[derive(PartialEq, Eq, Clone, Copy, Debug)]
pub struct RecvError;

/// [`Receiver::try_recv`] failed.
#[derive(PartialEq, Eq, Clone, Copy, Debug)]
pub enum TryRecvError {
    /// Nothing to receive right now (for an unbuffered channel: no sender is waiting).
    Empty,
    /// The channel is empty and every [`Sender`] is gone.
    Disconnected,
}

impl<T> SendError<T> {
    /// The value that could not be sent.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> TrySendError<T> {
    /// The value that could not be sent.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(v) | TrySendError::Disconnected(v) => v,
        }
    }

    /// Did it fail because the channel was full?
    pub fn is_full(&self) -> bool {
        matches!(self, TrySendError::Full(_))
    }

    /// Did it fail because every receiver is gone?
    pub fn is_disconnected(&self) -> bool {
        matches!(self, TrySendError::Disconnected(_))
    }
}

impl<T> From<SendError<T>> for TrySendError<T> {
    fn from(e: SendError<T>) -> Self {
        TrySendError::Disconnected(e.0)
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError { .. }")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sending on a channel whose receivers are all gone")
    }
}

impl<T> std::error::Error for SendError<T> {}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Disconnected(_) => f.write_str("Disconnected(..)"),
        }
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("sending on a full channel"),
            TrySendError::Disconnected(_) => {
                f.write_str("sending on a channel whose receivers are all gone")
            }
        }
    }
}

impl<T> std::error::Error for TrySendError<T> {}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("receiving on an empty channel whose senders are all gone")
    }
}

impl std::error::Error for RecvError {}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryRecvError::Empty => f.write_str("receiving on an empty channel"),
            TryRecvError::Disconnected => {
                f.write_str("receiving on an empty channel whose senders are all gone")
            }
        }
    }
}

impl std::error::Error for TryRecvError {}

impl From<RecvError> for TryRecvError {
    fn from(_: RecvError) -> Self {
        TryRecvError::Disconnected
    }
}

// ---------------------------------------------------------------------------------------
// Blocked operations (Go's sudog)
// ---------------------------------------------------------------------------------------

/// Status of a [`Hook`]: still waiting.
const PENDING: u8 = 0;
/// The operation completed (value handed over).
const DONE: u8 = 1;
/// Woken because the other side of the channel is gone.
const CLOSED: u8 = 2;

/// `SelectCtx::done` while no case has fired.
pub(crate) const WAITING: usize = usize::MAX;

/// Shared by every hook of one blocked select: the first claimant wins.
pub(crate) struct SelectCtx {
    /// Index of the case that fired, or [`WAITING`].
    pub(crate) done: AtomicUsize,
    /// Taken (only) by the claimant that moved `done` away from [`WAITING`].
    pub(crate) wake: UnsafeCell<Option<Wake>>,
}

/// One blocked send or receive, linked into a channel's `sendq` or `recvq`.
///
/// It lives on the blocked party's stack. Every field except `status` is touched only
/// under the owning channel's lock while the hook is linked; once a claimant has
/// unlinked it and stored `status` (release), it belongs to its owner again.
pub(crate) struct Hook<T> {
    prev: Cell<*const Hook<T>>,
    next: Cell<*const Hook<T>>,
    linked: Cell<bool>,
    /// A receiver's incoming value, or a sender's outgoing one.
    slot: UnsafeCell<Option<T>>,
    status: AtomicU8,
    /// Plain operations: who to wake. Select hooks use `sel` instead.
    wake: UnsafeCell<Option<Wake>>,
    /// The select this hook belongs to, or null.
    sel: *const SelectCtx,
    /// Case index within `sel`.
    index: usize,
}

impl<T> Hook<T> {
    fn plain(slot: Option<T>, wake: Wake) -> Self {
        Hook {
            prev: Cell::new(std::ptr::null()),
            next: Cell::new(std::ptr::null()),
            linked: Cell::new(false),
            slot: UnsafeCell::new(slot),
            status: AtomicU8::new(PENDING),
            wake: UnsafeCell::new(Some(wake)),
            sel: std::ptr::null(),
            index: 0,
        }
    }

    pub(crate) fn for_select(slot: Option<T>) -> Self {
        Hook {
            prev: Cell::new(std::ptr::null()),
            next: Cell::new(std::ptr::null()),
            linked: Cell::new(false),
            slot: UnsafeCell::new(slot),
            status: AtomicU8::new(PENDING),
            wake: UnsafeCell::new(None),
            sel: std::ptr::null(),
            index: 0,
        }
    }

    /// Become the one party that completes this (just unlinked) hook. Returns who to
    /// wake once the outcome is stored, or `None` if the hook is stale: its select
    /// already fired on another case.
    ///
    /// # Safety
    ///
    /// The caller holds the lock of the channel the hook was linked into and has just
    /// unlinked it; a select hook's context is alive (its owner unlinks every hook under
    /// the channel locks before the context goes away).
    unsafe fn claim(&self) -> Option<Wake> {
        if self.sel.is_null() {
            // SAFETY: a plain hook has exactly one queue, and we just took it out of it.
            unsafe { (*self.wake.get()).take() }
        } else {
            // SAFETY: see the function's contract.
            let ctx = unsafe { &*self.sel };
            if ctx
                .done
                .compare_exchange(WAITING, self.index, AcqRel, Acquire)
                .is_ok()
            {
                // SAFETY: the CAS above made us the only claimant of this select.
                unsafe { (*ctx.wake.get()).take() }
            } else {
                None
            }
        }
    }

    /// The value slot; the caller owns the hook or holds its channel's lock.
    pub(crate) fn slot(&self) -> &UnsafeCell<Option<T>> {
        &self.slot
    }

    /// Did the operation complete (true) or was the channel disconnected (false)?
    /// Only meaningful once the hook has been claimed.
    pub(crate) fn succeeded(&self) -> bool {
        self.status.load(Acquire) == DONE
    }
}

/// An intrusive FIFO of hooks.
struct Queue<T> {
    head: *const Hook<T>,
    tail: *const Hook<T>,
    len: usize,
}

impl<T> Queue<T> {
    const fn new() -> Self {
        Queue {
            head: std::ptr::null(),
            tail: std::ptr::null(),
            len: 0,
        }
    }

    /// # Safety
    ///
    /// `h` is valid and unlinked, and stays valid until it is unlinked again.
    unsafe fn push_back(&mut self, h: *const Hook<T>) {
        // SAFETY: per the contract, and every linked hook is valid.
        unsafe {
            let hook = &*h;
            hook.prev.set(self.tail);
            hook.next.set(std::ptr::null());
            hook.linked.set(true);
            if self.tail.is_null() {
                self.head = h;
            } else {
                (*self.tail).next.set(h);
            }
        }
        self.tail = h;
        self.len += 1;
    }

    /// # Safety
    ///
    /// Every linked hook is valid.
    unsafe fn pop_front(&mut self) -> Option<&Hook<T>> {
        if self.head.is_null() {
            return None;
        }
        // SAFETY: linked hooks are valid.
        let h = unsafe { &*self.head };
        // SAFETY: as above.
        unsafe { self.unlink(h) };
        Some(h)
    }

    /// Unlink `h` if it is linked (into this queue).
    ///
    /// # Safety
    ///
    /// Every linked hook is valid, and `h` is linked into this queue or into none.
    pub(crate) unsafe fn unlink(&mut self, h: &Hook<T>) {
        if !h.linked.get() {
            return;
        }
        let (prev, next) = (h.prev.get(), h.next.get());
        if prev.is_null() {
            self.head = next;
        } else {
            // SAFETY: linked hooks are valid.
            unsafe { (*prev).next.set(next) };
        }
        if next.is_null() {
            self.tail = prev;
        } else {
            // SAFETY: linked hooks are valid.
            unsafe { (*next).prev.set(prev) };
        }
        h.linked.set(false);
        self.len -= 1;
        h.prev.set(std::ptr::null());
        h.next.set(std::ptr::null());
    }

    fn is_empty(&self) -> bool {
        self.head.is_null()
    }
}

// ---------------------------------------------------------------------------------------
// The channel
// ---------------------------------------------------------------------------------------

struct State<T> {
    buf: VecDeque<T>,
    /// 0: unbuffered; `usize::MAX`: unbounded.
    cap: usize,
    recvq: Queue<T>,
    sendq: Queue<T>,
    /// Every Sender is gone.
    no_senders: bool,
    /// Every Receiver is gone.
    no_receivers: bool,
}

/// The shared part of a channel.
pub(crate) struct Chan<T> {
    lock: SpinLock,
    state: UnsafeCell<State<T>>,
    senders: AtomicUsize,
    receivers: AtomicUsize,
}

// SAFETY: `state` (values of type `T` and raw pointers to hooks that carry `T`s and
// wake-ups) is only touched under `lock`; values move between threads, hence `T: Send`.
unsafe impl<T: Send> Send for Chan<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Chan<T> {}

/// Outcome of a receive attempt under the lock.
pub(crate) enum TryRecv<T> {
    /// Got a value; wake this party after unlocking.
    Got(T, Option<Wake>),
    Empty,
    Disconnected,
}

/// Outcome of a send attempt under the lock.
pub(crate) enum TrySend<T> {
    /// Sent; wake this party after unlocking.
    Sent(Option<Wake>),
    Full(T),
    Disconnected(T),
}

impl<T> Chan<T> {
    fn new(cap: usize) -> Self {
        Chan {
            lock: SpinLock::new(),
            state: UnsafeCell::new(State {
                buf: VecDeque::with_capacity(if cap == usize::MAX { 0 } else { cap.min(1024) }),
                cap,
                recvq: Queue::new(),
                sendq: Queue::new(),
                no_senders: false,
                no_receivers: false,
            }),
            senders: AtomicUsize::new(1),
            receivers: AtomicUsize::new(1),
        }
    }

    #[inline]
    pub(crate) fn lock(&self) {
        self.lock.lock();
    }

    #[inline]
    pub(crate) fn unlock(&self) {
        self.lock.unlock();
    }

    /// # Safety
    ///
    /// The caller holds the lock, and drops the reference before unlocking.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    unsafe fn state(&self) -> &mut State<T> {
        // SAFETY: per the contract, the lock makes this the only reference.
        unsafe { &mut *self.state.get() }
    }

    /// Receive without blocking.
    ///
    /// # Safety
    ///
    /// The caller holds the lock.
    pub(crate) unsafe fn try_recv_locked(&self) -> TryRecv<T> {
        // SAFETY: we hold the lock.
        let st = unsafe { self.state() };
        // A blocked sender means the buffer is full (or the channel unbuffered): take the
        // head of the buffer and let the sender's value in behind it, or take the
        // sender's value directly.
        // SAFETY: hooks in the queue are valid; we hold the lock.
        while let Some(h) = unsafe { st.sendq.pop_front() } {
            // SAFETY: just unlinked under the lock.
            if let Some(w) = unsafe { h.claim() } {
                // SAFETY: the claimant owns the hook until it stores `status`.
                let v = unsafe { (*h.slot.get()).take() }.expect("a blocked send has a value");
                let v = match st.buf.pop_front() {
                    Some(front) => {
                        st.buf.push_back(v);
                        front
                    }
                    None => v,
                };
                // After this store the owner may return and its stack frame be reused:
                // `h` is not touched again.
                h.status.store(DONE, Release);
                return TryRecv::Got(v, Some(w));
            }
            // A stale select hook: dropped from the queue, its owner skips it.
        }
        if let Some(v) = st.buf.pop_front() {
            return TryRecv::Got(v, None);
        }
        if st.no_senders {
            TryRecv::Disconnected
        } else {
            TryRecv::Empty
        }
    }

    /// Send without blocking.
    ///
    /// # Safety
    ///
    /// The caller holds the lock.
    pub(crate) unsafe fn try_send_locked(&self, v: T) -> TrySend<T> {
        // SAFETY: we hold the lock.
        let st = unsafe { self.state() };
        if st.no_receivers {
            return TrySend::Disconnected(v);
        }
        // SAFETY: hooks in the queue are valid; we hold the lock.
        while let Some(h) = unsafe { st.recvq.pop_front() } {
            // SAFETY: just unlinked under the lock.
            if let Some(w) = unsafe { h.claim() } {
                // Direct hand-off into the blocked receiver's slot.
                // SAFETY: the claimant owns the hook until it stores `status`.
                unsafe { *h.slot.get() = Some(v) };
                h.status.store(DONE, Release);
                return TrySend::Sent(Some(w));
            }
        }
        if st.buf.len() < st.cap {
            st.buf.push_back(v);
            return TrySend::Sent(None);
        }
        TrySend::Full(v)
    }

    /// Link a receive hook.
    ///
    /// # Safety
    ///
    /// The caller holds the lock; `h` is unlinked and stays valid until unlinked.
    pub(crate) unsafe fn enqueue_recv(&self, h: *const Hook<T>) {
        // SAFETY: per the contract.
        unsafe { self.state().recvq.push_back(h) }
    }

    /// Link a send hook (its slot holds the value).
    ///
    /// # Safety
    ///
    /// As for [`Chan::enqueue_recv`].
    pub(crate) unsafe fn enqueue_send(&self, h: *const Hook<T>) {
        // SAFETY: per the contract.
        unsafe { self.state().sendq.push_back(h) }
    }

    /// Unlink a receive hook if still linked.
    ///
    /// # Safety
    ///
    /// The caller holds the lock; `h` was linked only into this channel's `recvq`.
    pub(crate) unsafe fn dequeue_recv(&self, h: &Hook<T>) {
        // SAFETY: per the contract.
        unsafe { self.state().recvq.unlink(h) }
    }

    /// Unlink a send hook if still linked.
    ///
    /// # Safety
    ///
    /// The caller holds the lock; `h` was linked only into this channel's `sendq`.
    pub(crate) unsafe fn dequeue_send(&self, h: &Hook<T>) {
        // SAFETY: per the contract.
        unsafe { self.state().sendq.unlink(h) }
    }

    fn send(&self, v: T) -> Result<(), SendError<T>> {
        self.lock();
        // SAFETY: we hold the lock.
        match unsafe { self.try_send_locked(v) } {
            TrySend::Sent(w) => {
                self.unlock();
                if let Some(w) = w {
                    w.wake();
                }
                Ok(())
            }
            TrySend::Disconnected(v) => {
                self.unlock();
                Err(SendError(v))
            }
            TrySend::Full(v) => {
                let wake = Wake::prepare();
                let task = matches!(wake, Wake::Task(_));
                let hook = Hook::plain(Some(v), wake);
                // SAFETY: we hold the lock; `hook` outlives its link: we return only
                // after a claimant unlinked it and stored its status.
                unsafe { self.enqueue_send(&hook) };
                self.unlock();
                block(WaitReason::CHAN_SEND, task, || {
                    hook.status.load(Acquire) != PENDING
                });
                if hook.status.load(Relaxed) == DONE {
                    Ok(())
                } else {
                    // SAFETY: claimed and status stored: the hook is ours again.
                    let v = unsafe { (*hook.slot.get()).take() };
                    Err(SendError(v.expect("a refused send keeps its value")))
                }
            }
        }
    }

    fn recv(&self) -> Result<T, RecvError> {
        self.lock();
        // SAFETY: we hold the lock.
        match unsafe { self.try_recv_locked() } {
            TryRecv::Got(v, w) => {
                self.unlock();
                if let Some(w) = w {
                    w.wake();
                }
                Ok(v)
            }
            TryRecv::Disconnected => {
                self.unlock();
                Err(RecvError)
            }
            TryRecv::Empty => {
                let wake = Wake::prepare();
                let task = matches!(wake, Wake::Task(_));
                let hook = Hook::plain(None, wake);
                // SAFETY: as in `send`.
                unsafe { self.enqueue_recv(&hook) };
                self.unlock();
                block(WaitReason::CHAN_RECV, task, || {
                    hook.status.load(Acquire) != PENDING
                });
                if hook.status.load(Relaxed) == DONE {
                    // SAFETY: claimed and status stored: the hook is ours again.
                    let v = unsafe { (*hook.slot.get()).take() };
                    Ok(v.expect("a completed receive has a value"))
                } else {
                    Err(RecvError)
                }
            }
        }
    }

    fn try_send(&self, v: T) -> Result<(), TrySendError<T>> {
        self.lock();
        // SAFETY: we hold the lock.
        let r = unsafe { self.try_send_locked(v) };
        self.unlock();
        match r {
            TrySend::Sent(w) => {
                if let Some(w) = w {
                    w.wake();
                }
                Ok(())
            }
            TrySend::Full(v) => Err(TrySendError::Full(v)),
            TrySend::Disconnected(v) => Err(TrySendError::Disconnected(v)),
        }
    }

    fn try_recv(&self) -> Result<T, TryRecvError> {
        self.lock();
        // SAFETY: we hold the lock.
        let r = unsafe { self.try_recv_locked() };
        self.unlock();
        match r {
            TryRecv::Got(v, w) => {
                if let Some(w) = w {
                    w.wake();
                }
                Ok(v)
            }
            TryRecv::Empty => Err(TryRecvError::Empty),
            TryRecv::Disconnected => Err(TryRecvError::Disconnected),
        }
    }

    /// Wake every hook of `q` with status CLOSED (the other side is gone).
    ///
    /// # Safety
    ///
    /// The caller holds the lock and `q` is one of this channel's queues.
    unsafe fn close_queue(q: &mut Queue<T>) {
        // SAFETY: hooks in the queue are valid; we hold the lock.
        while let Some(h) = unsafe { q.pop_front() } {
            // SAFETY: just unlinked under the lock.
            if let Some(w) = unsafe { h.claim() } {
                h.status.store(CLOSED, Release);
                // Waking under the lock is allowed and keeps this loop simple; it only
                // happens once per channel.
                w.wake();
            }
        }
    }

    fn drop_sender(&self) {
        if self.senders.fetch_sub(1, AcqRel) != 1 {
            return;
        }
        self.lock();
        // SAFETY: we hold the lock.
        let st = unsafe { self.state() };
        st.no_senders = true;
        // SAFETY: we hold the lock.
        unsafe { Self::close_queue(&mut st.recvq) };
        self.unlock();
    }

    fn drop_receiver(&self) {
        if self.receivers.fetch_sub(1, AcqRel) != 1 {
            return;
        }
        self.lock();
        // SAFETY: we hold the lock.
        let st = unsafe { self.state() };
        st.no_receivers = true;
        // SAFETY: we hold the lock.
        unsafe { Self::close_queue(&mut st.sendq) };
        // Nobody can receive these any more: drop them now, outside the lock.
        let buffered = std::mem::take(&mut st.buf);
        self.unlock();
        drop(buffered);
    }

    fn len(&self) -> usize {
        self.lock();
        // SAFETY: we hold the lock.
        let n = unsafe { self.state() }.buf.len();
        self.unlock();
        n
    }

    fn capacity(&self) -> Option<usize> {
        // SAFETY: `cap` never changes after construction; read under the lock anyway to
        // keep the access pattern uniform.
        self.lock();
        // SAFETY: we hold the lock.
        let c = unsafe { self.state() }.cap;
        self.unlock();
        (c != usize::MAX).then_some(c)
    }

    fn blocked(&self) -> (usize, usize) {
        self.lock();
        // SAFETY: we hold the lock.
        let st = unsafe { self.state() };
        let n = (st.sendq.len, st.recvq.len);
        self.unlock();
        n
    }

    /// Address identifying the channel, for lock ordering in select.
    pub(crate) fn addr(&self) -> usize {
        self as *const Self as usize
    }
}

impl<T> Drop for Chan<T> {
    fn drop(&mut self) {
        let st = self.state.get_mut();
        debug_assert!(st.recvq.is_empty() && st.sendq.is_empty());
    }
}

// ---------------------------------------------------------------------------------------
// Public handles
// ---------------------------------------------------------------------------------------

/// Create a channel buffering up to `cap` values. `bounded(0)` is unbuffered: a send
/// completes only when a receiver takes the value (Go's `make(chan T)`).
pub fn bounded<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    let cap = if cap == usize::MAX { cap - 1 } else { cap };
    let chan = Arc::new(Chan::new(cap));
    (Sender { chan: chan.clone() }, Receiver { chan })
}

/// Create a channel with an unlimited buffer: sends never block.
pub fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
    let chan = Arc::new(Chan::new(usize::MAX));
    (Sender { chan: chan.clone() }, Receiver { chan })
}

/// The sending half of a channel. Clone it for more producers.
pub struct Sender<T> {
    pub(crate) chan: Arc<Chan<T>>,
}

/// The receiving half of a channel. Clone it for more consumers; each value goes to
/// exactly one of them.
pub struct Receiver<T> {
    pub(crate) chan: Arc<Chan<T>>,
}

impl<T> Sender<T> {
    /// Send `v`, parking the task while the channel is full (for an unbuffered channel:
    /// until a receiver takes it). Fails, giving `v` back, when every receiver is gone,
    /// including when the last one goes while this send is blocked.
    pub fn send(&self, v: T) -> Result<(), SendError<T>> {
        self.chan.send(v)
    }

    /// Send `v` if that can be done without blocking.
    pub fn try_send(&self, v: T) -> Result<(), TrySendError<T>> {
        self.chan.try_send(v)
    }

    /// Number of values in the buffer (always 0 for an unbuffered channel).
    pub fn len(&self) -> usize {
        self.chan.len()
    }

    /// Is the buffer empty?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Buffer capacity: `Some(0)` for unbuffered, `None` for unbounded.
    pub fn capacity(&self) -> Option<usize> {
        self.chan.capacity()
    }

    /// Do both handles belong to the same channel?
    pub fn same_channel(&self, other: &Sender<T>) -> bool {
        Arc::ptr_eq(&self.chan, &other.chan)
    }

    /// Diagnostics: how many operations are blocked on this channel right now, as
    /// `(sends, receives)` (blocked selects count once per case on this channel).
    pub fn blocked(&self) -> (usize, usize) {
        self.chan.blocked()
    }
}

impl<T> Receiver<T> {
    /// Receive a value, parking the task while the channel is empty. Fails once the
    /// channel is empty and every sender is gone.
    pub fn recv(&self) -> Result<T, RecvError> {
        self.chan.recv()
    }

    /// Receive a value if one is available without blocking.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.chan.try_recv()
    }

    /// Iterate over received values until the channel is disconnected (Go's `range ch`).
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { rx: self }
    }

    /// Iterate over the values available right now, without blocking.
    pub fn try_iter(&self) -> TryIter<'_, T> {
        TryIter { rx: self }
    }

    /// Number of values in the buffer (always 0 for an unbuffered channel).
    pub fn len(&self) -> usize {
        self.chan.len()
    }

    /// Is the buffer empty?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Buffer capacity: `Some(0)` for unbuffered, `None` for unbounded.
    pub fn capacity(&self) -> Option<usize> {
        self.chan.capacity()
    }

    /// Do both handles belong to the same channel?
    pub fn same_channel(&self, other: &Receiver<T>) -> bool {
        Arc::ptr_eq(&self.chan, &other.chan)
    }

    /// Diagnostics: how many operations are blocked on this channel right now, as
    /// `(sends, receives)` (blocked selects count once per case on this channel).
    pub fn blocked(&self) -> (usize, usize) {
        self.chan.blocked()
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.chan.senders.fetch_add(1, Relaxed);
        Sender {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        self.chan.receivers.fetch_add(1, Relaxed);
        Receiver {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.chan.drop_sender();
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.chan.drop_receiver();
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

/// Blocking iterator over a [`Receiver`]; ends when the channel is disconnected.
#[derive(Debug)]
pub struct Iter<'a, T> {
    rx: &'a Receiver<T>,
}

impl<T> Iterator for Iter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.recv().ok()
    }
}

/// Non-blocking iterator over a [`Receiver`]; ends when nothing is available.
#[derive(Debug)]
pub struct TryIter<'a, T> {
    rx: &'a Receiver<T>,
}

impl<T> Iterator for TryIter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.try_recv().ok()
    }
}

/// Owning blocking iterator over a [`Receiver`].
#[derive(Debug)]
pub struct IntoIter<T> {
    rx: Receiver<T>,
}

impl<T> Iterator for IntoIter<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.recv().ok()
    }
}

impl<'a, T> IntoIterator for &'a Receiver<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<T> IntoIterator for Receiver<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;
    fn into_iter(self) -> IntoIter<T> {
        IntoIter { rx: self }
    }
}
