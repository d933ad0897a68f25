//! A target with threads blocked in system calls and tasks sleeping on timers, for
//! gprof-rs's "the target observes nothing but the pauses" tests (DESIGN invariant 7).
//!
//! ```text
//! syscalls [--workers W] [--sleepers N]
//! ```
//!
//! OS threads (not tasks), each counting what its call returned:
//!
//! * `read`: blocked in read(2) on a pipe nobody writes to until `report`.
//! * `futex`: blocked in FUTEX_WAIT without a timeout on a word nobody changes until
//!   `report`; `futex-timed`: FUTEX_WAIT with a 20 ms timeout, in a loop. The kernel
//!   restarts both transparently after a ptrace stop: any EINTR or early return counts.
//! * `epoll`: epoll_wait on an idle epoll set with a 10 ms timeout, in a loop;
//!   `sigtimedwait`: waits 10 ms at a time for a real-time signal that a sender thread
//!   queues to it about once a millisecond (at most 4 outstanding). These two calls *do* return
//!   EINTR when the thread is ptrace-stopped (research/perf.md section 3); they are
//!   wrapped the way a runtime must wrap them: on EINTR, retry with the timeout
//!   recomputed from an absolute deadline ([`epoll_wait_until`], [`sigtimedwait_until`]).
//!   The EINTRs they saw are counted; a wrapper that returned a timeout before its
//!   deadline would count as early.
//!
//! Tasks: `--sleepers N` (default 40) tasks sleep for assorted durations (0 to 7 ms) in
//! a loop and count sleeps begun, sleeps ended and sleeps that ended before their
//! duration had passed.
//!
//! It prints `READY <pid>` once the read and futex threads are inside their system
//! calls (from /proc/self/task/TID/syscall) and every sleeper has slept once. On the
//! stdin line `report` it stops everything, waits (bounded) for the sleepers, the signal
//! queue and the threads, prints `COUNTERS key=value ...` and `END`. `exit` or end of
//! input ends the process.

use std::io::BufRead;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};
use target_runtime::{spawn, Builder};

/// Every counter the target reports, by name.
#[derive(Default)]
struct Counters {
    read_eintr: AtomicU64,
    read_bytes: AtomicU64,
    read_other_errors: AtomicU64,
    futex_eintr: AtomicU64,
    futex_spurious: AtomicU64,
    futex_timed_eintr: AtomicU64,
    futex_timed_waits: AtomicU64,
    futex_timed_early: AtomicU64,
    epoll_eintr: AtomicU64,
    epoll_waits: AtomicU64,
    epoll_early: AtomicU64,
    epoll_raw_early: AtomicU64,
    sig_eintr: AtomicU64,
    sig_waits: AtomicU64,
    sig_early: AtomicU64,
    sig_raw_early: AtomicU64,
    sig_sent: AtomicU64,
    sig_received: AtomicU64,
    sig_other: AtomicU64,
    sleeps_started: AtomicU64,
    sleeps_completed: AtomicU64,
    sleeps_early: AtomicU64,
}

impl Counters {
    fn line(&self) -> String {
        let all = [
            ("read_eintr", &self.read_eintr),
            ("read_bytes", &self.read_bytes),
            ("read_other_errors", &self.read_other_errors),
            ("futex_eintr", &self.futex_eintr),
            ("futex_spurious", &self.futex_spurious),
            ("futex_timed_eintr", &self.futex_timed_eintr),
            ("futex_timed_waits", &self.futex_timed_waits),
            ("futex_timed_early", &self.futex_timed_early),
            ("epoll_eintr", &self.epoll_eintr),
            ("epoll_waits", &self.epoll_waits),
            ("epoll_early", &self.epoll_early),
            ("epoll_raw_early", &self.epoll_raw_early),
            ("sig_eintr", &self.sig_eintr),
            ("sig_waits", &self.sig_waits),
            ("sig_early", &self.sig_early),
            ("sig_raw_early", &self.sig_raw_early),
            ("sig_sent", &self.sig_sent),
            ("sig_received", &self.sig_received),
            ("sig_other", &self.sig_other),
            ("sleeps_started", &self.sleeps_started),
            ("sleeps_completed", &self.sleeps_completed),
            ("sleeps_early", &self.sleeps_early),
        ];
        let mut s = String::from("COUNTERS");
        for (k, v) in all {
            s.push_str(&format!(" {k}={}", v.load(SeqCst)));
        }
        s
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// The signal the sigtimedwait thread waits for.
fn wait_signal() -> i32 {
    libc::SIGRTMIN() + 1
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

/// `epoll_wait` until an event or `deadline`: EINTR (a ptrace stop, a signal) retries
/// with the timeout recomputed; a timeout that the kernel reports before the deadline
/// (millisecond rounding) waits for the rest. Returns the number of events.
fn epoll_wait_until(ep: i32, deadline: Instant, c: &Counters) -> i32 {
    let mut ev = libc::epoll_event { events: 0, u64: 0 };
    loop {
        let now = Instant::now();
        if now >= deadline {
            return 0;
        }
        // Round up: a timeout rounded down would end before the deadline.
        let ms = (deadline - now)
            .as_nanos()
            .div_ceil(1_000_000)
            .min(i32::MAX as u128) as i32;
        // SAFETY: `ev` is a valid buffer for one event.
        let r = unsafe { libc::epoll_wait(ep, &mut ev, 1, ms) };
        if r < 0 {
            if errno() == libc::EINTR {
                c.epoll_eintr.fetch_add(1, SeqCst);
                continue;
            }
            panic!("epoll_wait: {}", std::io::Error::last_os_error());
        }
        if r > 0 {
            return r;
        }
        if Instant::now() < deadline {
            c.epoll_raw_early.fetch_add(1, SeqCst);
        }
    }
}

/// `sigtimedwait` for `set` until a signal or `deadline`, with the same retry rule as
/// [`epoll_wait_until`]. Returns the signal number or 0 at the deadline.
fn sigtimedwait_until(set: &libc::sigset_t, deadline: Instant, c: &Counters) -> i32 {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return 0;
        }
        let ts = timespec(deadline - now);
        // SAFETY: valid set and timeout; no siginfo wanted.
        let r = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
        if r > 0 {
            return r;
        }
        match errno() {
            libc::EINTR => {
                c.sig_eintr.fetch_add(1, SeqCst);
            }
            libc::EAGAIN => {
                if Instant::now() < deadline {
                    c.sig_raw_early.fetch_add(1, SeqCst);
                }
            }
            e => panic!("sigtimedwait: errno {e}"),
        }
    }
}

/// FUTEX_WAIT on `word` while it holds `val`, with an optional relative timeout.
fn futex_wait(word: &AtomicU32, val: u32, timeout: Option<Duration>) -> (i64, i32) {
    let ts = timeout.map(timespec);
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live, aligned u32; `tsp` is null or points at `ts`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            val,
            tsp,
        )
    };
    (r, if r < 0 { errno() } else { 0 })
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned u32.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        )
    };
}

/// The system call number thread `tid` of this process is blocked in, if any.
fn blocked_in(tid: i32) -> Option<i64> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

struct Threads {
    stop: Arc<AtomicBool>,
    pipe_w: i32,
    futex_word: Arc<AtomicU32>,
    handles: Vec<std::thread::JoinHandle<()>>,
    read_tid: Arc<AtomicI32>,
    futex_tid: Arc<AtomicI32>,
}

fn start_threads(c: &Arc<Counters>) -> Threads {
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();

    // read(2) on a pipe.
    let mut fds = [0i32; 2];
    // SAFETY: valid out-array of two fds.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let (pipe_r, pipe_w) = (fds[0], fds[1]);
    let read_tid = Arc::new(AtomicI32::new(0));
    {
        let (c, tid) = (c.clone(), read_tid.clone());
        handles.push(std::thread::spawn(move || {
            tid.store(gettid(), SeqCst);
            let mut buf = [0u8; 64];
            loop {
                // SAFETY: reads into our own buffer from our own pipe.
                let n = unsafe { libc::read(pipe_r, buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    if errno() == libc::EINTR {
                        c.read_eintr.fetch_add(1, SeqCst);
                    } else {
                        c.read_other_errors.fetch_add(1, SeqCst);
                        return;
                    }
                    continue;
                }
                c.read_bytes.fetch_add(n as u64, SeqCst);
                if n == 0 || buf[..n as usize].contains(&b'q') {
                    return;
                }
            }
        }));
    }

    // FUTEX_WAIT without a timeout.
    let futex_word = Arc::new(AtomicU32::new(0));
    let futex_tid = Arc::new(AtomicI32::new(0));
    {
        let (c, word, tid) = (c.clone(), futex_word.clone(), futex_tid.clone());
        handles.push(std::thread::spawn(move || {
            tid.store(gettid(), SeqCst);
            while word.load(SeqCst) == 0 {
                let (r, e) = futex_wait(&word, 0, None);
                if r < 0 && e == libc::EINTR {
                    c.futex_eintr.fetch_add(1, SeqCst);
                } else if r == 0 && word.load(SeqCst) == 0 {
                    c.futex_spurious.fetch_add(1, SeqCst);
                }
            }
        }));
    }

    // FUTEX_WAIT with a timeout, in a loop.
    {
        let (c, stop) = (c.clone(), stop.clone());
        handles.push(std::thread::spawn(move || {
            let word = AtomicU32::new(0);
            let d = Duration::from_millis(20);
            while !stop.load(SeqCst) {
                let start = Instant::now();
                let (r, e) = futex_wait(&word, 0, Some(d));
                if r < 0 && e == libc::EINTR {
                    c.futex_timed_eintr.fetch_add(1, SeqCst);
                } else if r < 0 && e == libc::ETIMEDOUT {
                    c.futex_timed_waits.fetch_add(1, SeqCst);
                    if start.elapsed() < d {
                        c.futex_timed_early.fetch_add(1, SeqCst);
                    }
                } else {
                    c.futex_spurious.fetch_add(1, SeqCst);
                }
            }
        }));
    }

    // epoll_wait with a timeout, on an epoll set with an idle pipe in it.
    {
        let (c, stop) = (c.clone(), stop.clone());
        handles.push(std::thread::spawn(move || {
            // SAFETY: creates an fd; no pointers involved.
            let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            assert!(ep >= 0, "epoll_create1");
            let mut idle = [0i32; 2];
            // SAFETY: valid out-array of two fds.
            let r = unsafe { libc::pipe2(idle.as_mut_ptr(), libc::O_CLOEXEC) };
            assert_eq!(r, 0, "pipe2");
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: 1,
            };
            // SAFETY: registers our own pipe's read end with a valid event.
            let r = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, idle[0], &mut ev) };
            assert_eq!(r, 0, "epoll_ctl");
            let d = Duration::from_millis(10);
            while !stop.load(SeqCst) {
                let deadline = Instant::now() + d;
                let n = epoll_wait_until(ep, deadline, &c);
                assert_eq!(n, 0, "nobody writes to the idle pipe");
                c.epoll_waits.fetch_add(1, SeqCst);
                if Instant::now() < deadline {
                    c.epoll_early.fetch_add(1, SeqCst);
                }
            }
        }));
    }

    // sigtimedwait with a timeout, fed by a sender thread.
    let sig_tid = Arc::new(AtomicI32::new(0));
    {
        let (c, stop, tid) = (c.clone(), stop.clone(), sig_tid.clone());
        handles.push(std::thread::spawn(move || {
            tid.store(gettid(), SeqCst);
            // SAFETY: a zeroed sigset_t is valid storage for sigemptyset.
            let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
            // SAFETY: valid set.
            unsafe {
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, wait_signal());
            }
            let d = Duration::from_millis(10);
            // After `stop`, drain: keep waiting until every sent signal arrived (bounded).
            let mut drain_until = None;
            loop {
                if stop.load(SeqCst) {
                    let until =
                        *drain_until.get_or_insert_with(|| Instant::now() + Duration::from_secs(5));
                    if c.sig_received.load(SeqCst) >= c.sig_sent.load(SeqCst)
                        || Instant::now() > until
                    {
                        return;
                    }
                }
                let deadline = Instant::now() + d;
                let sig = sigtimedwait_until(&set, deadline, &c);
                if sig == wait_signal() {
                    c.sig_received.fetch_add(1, SeqCst);
                } else if sig != 0 {
                    c.sig_other.fetch_add(1, SeqCst);
                } else {
                    c.sig_waits.fetch_add(1, SeqCst);
                    if Instant::now() < deadline {
                        c.sig_early.fetch_add(1, SeqCst);
                    }
                }
            }
        }));
    }
    {
        let (c, stop, tid) = (c.clone(), stop.clone(), sig_tid.clone());
        handles.push(std::thread::spawn(move || {
            while tid.load(SeqCst) == 0 {
                std::thread::yield_now();
            }
            let tid = tid.load(SeqCst);
            while !stop.load(SeqCst) {
                if c.sig_sent.load(SeqCst) - c.sig_received.load(SeqCst) >= 4 {
                    std::thread::sleep(Duration::from_micros(500));
                    continue;
                }
                // One signal a millisecond: the receiver spends most of its time blocked.
                std::thread::sleep(Duration::from_millis(1));
                // Count first: the receiver may take it before tgkill returns.
                c.sig_sent.fetch_add(1, SeqCst);
                // SAFETY: sends a blocked real-time signal to our own thread.
                let r =
                    unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, wait_signal()) };
                if r != 0 {
                    let e = std::io::Error::last_os_error();
                    // At shutdown the receiver may stop before this sender sees `stop`.
                    if e.raw_os_error() == Some(libc::ESRCH) && stop.load(SeqCst) {
                        c.sig_sent.fetch_sub(1, SeqCst);
                        break;
                    }
                    panic!("tgkill: {e}");
                }
            }
        }));
    }

    Threads {
        stop,
        pipe_w,
        futex_word,
        handles,
        read_tid,
        futex_tid,
    }
}

impl Threads {
    /// Wait until the read and futex threads are inside their system calls.
    fn wait_blocked(&self) {
        for (tid, nr) in [
            (&self.read_tid, libc::SYS_read),
            (&self.futex_tid, libc::SYS_futex),
        ] {
            loop {
                let t = tid.load(SeqCst);
                if t != 0 && blocked_in(t) == Some(nr) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    fn stop(self) {
        self.stop.store(true, SeqCst);
        self.futex_word.store(1, SeqCst);
        futex_wake(&self.futex_word);
        // SAFETY: writes one byte to our own pipe.
        let n = unsafe { libc::write(self.pipe_w, b"q".as_ptr().cast(), 1) };
        assert_eq!(n, 1);
        for h in self.handles {
            h.join().expect("a syscall thread panicked");
        }
    }
}

/// Sleep durations the sleepers cycle through.
const SLEEPS: [Duration; 6] = [
    Duration::ZERO,
    Duration::from_micros(50),
    Duration::from_micros(300),
    Duration::from_millis(1),
    Duration::from_millis(3),
    Duration::from_millis(7),
];

#[inline(never)]
fn sleeper(i: usize, c: Arc<Counters>, stop: Arc<AtomicBool>, slept_once: Arc<AtomicU64>) {
    let mut k = i;
    while !stop.load(SeqCst) {
        let d = SLEEPS[k % SLEEPS.len()];
        k += 1;
        c.sleeps_started.fetch_add(1, SeqCst);
        let before = Instant::now();
        target_runtime::sleep(d);
        if before.elapsed() < d {
            c.sleeps_early.fetch_add(1, SeqCst);
        }
        c.sleeps_completed.fetch_add(1, SeqCst);
        if k == i + 1 {
            slept_once.fetch_add(1, SeqCst);
        }
    }
}

fn main() {
    let mut workers = 2;
    let mut sleepers = 40;
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let v: usize = pair
            .get(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("syscalls: {} needs a number", pair[0]));
        match pair[0].as_str() {
            "--workers" => workers = v,
            "--sleepers" => sleepers = v,
            other => panic!("syscalls: unknown flag {other}"),
        }
    }
    // Block the real-time signal in every thread (they inherit this mask), so that only
    // sigtimedwait takes it.
    // SAFETY: valid sets; changes only this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, wait_signal());
        assert_eq!(
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()),
            0
        );
    }
    Builder::new()
        .workers(workers)
        .run(move || serve(sleepers))
        .unwrap_or_else(|e| panic!("syscalls: {e}"));
}

fn serve(sleepers: usize) {
    let c = Arc::new(Counters::default());
    let threads = start_threads(&c);
    let stop = Arc::new(AtomicBool::new(false));
    let slept_once = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..sleepers)
        .map(|i| {
            let (c, stop, once) = (c.clone(), stop.clone(), slept_once.clone());
            spawn(move || sleeper(i, c, stop, once))
        })
        .collect();
    // Ready once every sleeper has slept and the epoll and sigtimedwait threads have each
    // finished a wait: the test's 200 snapshots may take less than one 10 ms wait.
    while slept_once.load(SeqCst) < sleepers as u64
        || c.epoll_waits.load(SeqCst) == 0
        || c.sig_waits.load(SeqCst) + c.sig_received.load(SeqCst) == 0
    {
        target_runtime::sleep(Duration::from_millis(1));
    }
    let threads = target_runtime::blocking(move || {
        threads.wait_blocked();
        threads
    });
    serve_loop(threads, handles, c, stop);
}

fn serve_loop(
    threads: Threads,
    handles: Vec<target_runtime::JoinHandle<()>>,
    c: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    println!("READY {}", std::process::id());
    let mut threads = Some(threads);
    let mut handles = Some(handles);
    loop {
        let line = target_runtime::blocking(|| {
            let mut s = String::new();
            let _ = std::io::stdin().lock().read_line(&mut s);
            s
        });
        match line.trim() {
            "report" => {
                stop.store(true, SeqCst);
                // Every sleep begun must end; a lost wakeup shows as a shortfall here
                // (bounded: the runtime's own clock, no sleep involved).
                let until = Instant::now() + Duration::from_secs(5);
                while c.sleeps_completed.load(SeqCst) < c.sleeps_started.load(SeqCst)
                    && Instant::now() < until
                {
                    target_runtime::yield_now();
                }
                if c.sleeps_completed.load(SeqCst) == c.sleeps_started.load(SeqCst) {
                    for h in handles.take().unwrap_or_default() {
                        let _ = h.join();
                    }
                }
                if let Some(t) = threads.take() {
                    target_runtime::blocking(move || t.stop());
                }
                println!("{}", c.line());
                println!("END");
            }
            "" | "exit" => std::process::exit(0),
            other => eprintln!("syscalls: unknown command {other:?}"),
        }
    }
}
