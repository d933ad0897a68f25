//! Reliability under faults: a profiler killed or interrupted at random moments, two
//! profilers at once, a target that dies mid-snapshot, a signal storm during
//! back-to-back snapshots, hostile task stacks, and the security of the shared region.
//! RELIABILITY.md (repository root) has the table of scenarios, trials and bounds.
//!
//! The target is `target-runtime/examples/victim.rs`: busy tasks measure, by the
//! runtime's own clock, the largest gap between two of their iterations (how long the
//! target was kept from running), parked tasks answer wake-ups, sleepers count timer
//! wake-ups, and a SIGUSR1 handler counts signals.
//!
//! Every wait on another process is a handshake (a line it prints) with a deadline, so a
//! wedged target or tool fails the test with a message instead of hanging it. The only
//! timing assertions are the bounds the reliability issue states: how long a killed
//! profiler may block the target ([`BLOCK_BOUND`]) and how soon the tool must give up on
//! a target that died ([`DEATH_BOUND`]).
//!
//! Trial counts: `GPROF_KILL_TRIALS` (default 200), `GPROF_SIGNALS` (default 10 000),
//! `GPROF_DEATH_TRIALS` (default 30); `GPROF_SEED` repeats a randomized run.

use crate::target::{examples_dir, gprof_rs};
use gprof_abi::session;
use gprof_rs::process::{LiveMemory, RemoteMemory};
use gprof_rs::snapshot::{Mode, Session};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Longest the target may be kept from running by a profiler that is killed or
/// interrupted at any moment. The protocol's own bound is much smaller: a task the dead
/// profiler held is taken back after HOLD_SPIN (1 ms) plus one lease probe, a stopped
/// thread runs on as soon as the kernel detaches it at the tool's death, and the
/// watchdog (every 10 ms) aborts an abandoned session. 500 ms leaves room for a shared,
/// loaded 2-core machine running the other tests.
pub const BLOCK_BOUND: Duration = Duration::from_millis(500);
/// A tool whose target died must exit within this long of the death.
pub const DEATH_BOUND: Duration = Duration::from_secs(1);
/// Deadline for any answer from a process under test (a hang, not a slow answer).
const ANSWER: Duration = Duration::from_secs(20);

/// The failpoints of `src/snapshot/mod.rs`, in snapshot order.
const POINTS: [&str; 7] = [
    "in-stw1",
    "after-stw1",
    "helper-woken",
    "assist-asked",
    "mid-walk",
    "before-stw2",
    "in-stw2",
];

const VICTIM: &[&str] = &[
    "--workers",
    "2",
    "--busy",
    "4",
    "--parked",
    "64",
    "--sleepers",
    "4",
];

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*; the seed is printed so that a failing run can be repeated.
pub struct Rng(u64);

impl Rng {
    pub fn new(test: &str) -> Rng {
        let seed = std::env::var("GPROF_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("{test}: GPROF_SEED={seed}");
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// The victim's answer to `stats`.
#[derive(Debug)]
struct Stats {
    gap: Duration,
    after: Duration,
    stalled: u64,
    live: u64,
    tasks: u64,
    usr1: u64,
}

/// A running `victim`; killed when dropped.
struct Victim {
    child: Child,
    pid: u32,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    usr1_addr: u64,
    mark_addr: u64,
}

impl Victim {
    fn start(args: &[&str]) -> Victim {
        let mut cmd = Command::new(examples_dir().join("victim"));
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped());
        // SAFETY: setrlimit is async-signal-safe; no core files from the abort tests.
        unsafe {
            cmd.pre_exec(|| {
                let none = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::setrlimit(libc::RLIMIT_CORE, &none);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("start victim");
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in out.lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let pid = child.id();
        let stdin = child.stdin.take();
        let mut v = Victim {
            child,
            pid,
            stdin,
            lines,
            usr1_addr: 0,
            mark_addr: 0,
        };
        let ready = v.line("READY");
        let w: Vec<&str> = ready.split_whitespace().collect();
        assert_eq!(
            (w.first(), w.get(1)),
            (Some(&"READY"), Some(&&*pid.to_string())),
            "{ready:?}"
        );
        let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
        v.usr1_addr = hex(w[2]);
        v.mark_addr = hex(w[3]);
        v
    }

    fn send(&mut self, line: &str) {
        let s = self.stdin.as_mut().unwrap();
        writeln!(s, "{line}").unwrap();
        s.flush().unwrap();
    }

    fn line(&mut self, what: &str) -> String {
        match self.lines.recv_timeout(ANSWER) {
            Ok(l) => l,
            Err(_) => {
                let status = self.child.try_wait();
                let threads: Vec<String> = tids(self.pid)
                    .into_iter()
                    .map(|t| {
                        let st =
                            std::fs::read_to_string(format!("/proc/{}/task/{t}/stat", self.pid))
                                .unwrap_or_default();
                        let wchan =
                            std::fs::read_to_string(format!("/proc/{}/task/{t}/wchan", self.pid))
                                .unwrap_or_default();
                        format!(
                            "{t}:{}:{wchan}",
                            st.rsplit(')')
                                .next()
                                .unwrap_or("")
                                .trim()
                                .chars()
                                .next()
                                .unwrap_or('?')
                        )
                    })
                    .collect();
                panic!(
                    "the target did not answer `{what}` within {ANSWER:?}: wedged; exit status {status:?}; threads {threads:?}"
                )
            }
        }
    }

    /// Progress of every busy task and sleeper since the last call, the largest gap.
    fn stats(&mut self) -> Stats {
        self.send("stats");
        let l = self.line("stats");
        let kv = |k: &str| -> u64 {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {k} in {l:?}"))
        };
        Stats {
            gap: Duration::from_micros(kv("gap_us")),
            after: Duration::from_micros(kv("after_us")),
            stalled: kv("stalled"),
            live: kv("live"),
            tasks: kv("tasks"),
            usr1: kv("usr1"),
        }
    }

    /// Wake `k` parked tasks through a channel and wait for their `k` replies.
    fn wake(&mut self, k: u32) {
        self.send(&format!("wake {k}"));
        assert_eq!(self.line("wake"), format!("WOKE {k}"));
    }

    /// The SIGUSR1 counter, read from the target's memory.
    fn usr1(&self) -> u64 {
        let mut b = [0u8; 8];
        LiveMemory::new(self.pid)
            .read(self.usr1_addr, &mut b)
            .expect("read the victim's SIGUSR1 counter");
        u64::from_le_bytes(b)
    }

    /// Write "now" (CLOCK_MONOTONIC) into the target's mark: its busy tasks then measure
    /// how long they stay blocked after this moment.
    fn mark(&self) {
        let now = mono_ns().to_ne_bytes();
        let local = libc::iovec {
            iov_base: now.as_ptr() as *mut libc::c_void,
            iov_len: 8,
        };
        let remote = libc::iovec {
            iov_base: self.mark_addr as *mut libc::c_void,
            iov_len: 8,
        };
        // SAFETY: one 8-byte local buffer and one remote range; the kernel checks both.
        let n = unsafe { libc::process_vm_writev(self.pid as i32, &local, 1, &remote, 1, 0) };
        assert_eq!(n, 8, "write the victim's mark");
    }

    /// The post-conditions of a profiler that went away (after [`Victim::mark`]): no
    /// thread traced or in ptrace-stop, every task alive, every busy task and sleeper
    /// running, no wake-up lost, and no task blocked for [`BLOCK_BOUND`] or more after
    /// the mark. Returns the largest gap since the last call, and the blocked time after
    /// the mark.
    fn runs_on(&mut self, at: &str) -> (Duration, Duration) {
        for tid in tids(self.pid) {
            let st = std::fs::read_to_string(format!("/proc/{}/task/{tid}/status", self.pid))
                .unwrap_or_default();
            let field = |k: &str| {
                st.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .map(|v| v.trim().to_string())
                    .unwrap_or_default()
            };
            assert_eq!(field("TracerPid:"), "0", "{at}: thread {tid} still traced");
            assert!(
                !field("State:").starts_with('t'),
                "{at}: thread {tid} left in ptrace-stop"
            );
        }
        let s = self.stats();
        assert_eq!(s.stalled, 0, "{at}: tasks stopped making progress: {s:?}");
        assert_eq!(s.live, s.tasks, "{at}: tasks lost: {s:?}");
        assert!(
            s.after < BLOCK_BOUND,
            "{at}: the target was still blocked {:?} after the profiler went away (bound {BLOCK_BOUND:?})",
            s.after
        );
        self.wake(64);
        (s.gap, s.after)
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn tids(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A `gprof-rs` process with its stderr read line by line.
struct Tool {
    child: Child,
    /// The tool's standard input: a line (or closing it) releases a `:stdin` failpoint.
    stdin: Option<ChildStdin>,
    err: mpsc::Receiver<String>,
    seen: Vec<String>,
}

fn tool(args: &[&str], failpoint: Option<&str>) -> Tool {
    tool_with(
        args,
        failpoint,
        failpoint.is_some_and(|p| p.starts_with("assist-asked")),
    )
}

/// [`tool`]; `assisted`: the target's workers are asked to record the parked tasks
/// (abi docs, "Worker assists") instead of the runtime's helper.
fn tool_with(args: &[&str], failpoint: Option<&str>, assisted: bool) -> Tool {
    let mut cmd = gprof_rs();
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // The fixtures are small: have the runtime's helper record their parked tasks
    // anyway, so that its path meets every failure here too; except where the tool's
    // walk must hold tasks (the helper would leave it nothing).
    cmd.env("GPROF_RS_HELPER", "always");
    if let Some(p) = failpoint {
        cmd.env("GPROF_FAILPOINT", p);
        if p.starts_with("mid-walk") {
            cmd.env("GPROF_RS_HELPER", "never");
        }
    }
    if assisted {
        cmd.env("GPROF_RS_HELPER", "auto");
        cmd.env("GPROF_RS_ASSIST", "always");
    }
    let mut child = cmd.spawn().expect("start gprof-rs");
    let err = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in err.lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    Tool {
        stdin: child.stdin.take(),
        child,
        err: rx,
        seen: Vec::new(),
    }
}

impl Tool {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for a stderr line containing `needle`.
    fn wait_for(&mut self, needle: &str) {
        let until = Instant::now() + ANSWER;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.err.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.contains(needle);
                    self.seen.push(l);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!(
                    "gprof-rs never said {needle:?} within {ANSWER:?}; stderr: {:?}",
                    self.seen
                ),
            }
        }
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid() as i32, sig) };
    }

    /// Wait for the exit (at most [`ANSWER`]: a hang fails); status and all of stderr.
    fn finish(mut self) -> (ExitStatus, String) {
        let until = Instant::now() + ANSWER;
        let st = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                panic!("gprof-rs hung; stderr so far: {:?}", self.seen);
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        while let Ok(l) = self.err.recv_timeout(ANSWER) {
            self.seen.push(l);
        }
        let err = self.seen.join("\n");
        assert!(!err.contains("panicked"), "gprof-rs panicked: {err}");
        (st, err)
    }
}

/// The session word and the runtime's abort counter, read through a fresh attach (so
/// only while no tool holds the lease).
fn session_state(pid: u32) -> (u64, u64) {
    let loc = gprof_rs::locate::locate(pid).unwrap();
    let region = loc.open_region().unwrap();
    let cb = region.control();
    (
        cb.session.load(Ordering::SeqCst),
        cb.aborted.load(Ordering::SeqCst),
    )
}

/// A full snapshot of the victim: every task, every stack complete.
fn full_snapshot(pid: u32, tasks: u64, at: &str) {
    let snap = Session::attach(pid)
        .unwrap_or_else(|e| panic!("{at}: the next attach failed: {e}"))
        .snapshot(Mode::Concurrent)
        .unwrap_or_else(|e| panic!("{at}: the next snapshot failed: {e}"));
    assert_eq!(
        snap.tasks.len() as u64,
        tasks,
        "{at}: tasks in the snapshot"
    );
    for t in &snap.tasks {
        assert!(
            !snap.stacks.get(t.stack).incomplete,
            "{at}: task {} has an incomplete stack",
            t.id
        );
    }
}

fn kill_trials(trials: usize) {
    let mut rng = Rng::new("kill_trials");
    let mut v = Victim::start(VICTIM);
    let pid = v.pid.to_string();
    let tasks = v.stats().tasks;
    // One undisturbed run, to draw the random kill moments from its duration.
    let t0 = Instant::now();
    let (st, err) = tool(&["attach", &pid, "-o", "/dev/null"], None).finish();
    assert!(st.success(), "{err}");
    let full = t0.elapsed();
    v.runs_on("after an undisturbed run");

    // Per moment: trials, largest gap (whole trial), largest block after the kill.
    let mut per_kind = std::collections::BTreeMap::<String, (u32, Duration, Duration)>::new();
    let mut worst = (Duration::ZERO, String::new());
    for i in 0..trials {
        let k = rng.below(POINTS.len() as u64 + 2) as usize;
        let (kind, t) = if k < POINTS.len() {
            let mut t = tool(&["attach", &pid, "-o", "/dev/null"], Some(POINTS[k]));
            t.wait_for(&format!("failpoint {}", POINTS[k]));
            std::thread::sleep(Duration::from_micros(rng.below(3000)));
            (POINTS[k].to_string(), t)
        } else {
            // Anywhere in a whole run: locating, either stop, the walk (or the workers'
            // assists, every other time), writing.
            let assisted = k > POINTS.len();
            let t = tool_with(&["attach", &pid, "-o", "/dev/null"], None, assisted);
            std::thread::sleep(Duration::from_micros(rng.below(full.as_micros() as u64)));
            let kind = if assisted {
                "random-assisted"
            } else {
                "random"
            };
            (kind.to_string(), t)
        };
        let at = format!("trial {i} (SIGKILL at {kind})");
        eprintln!("{at}");
        v.mark();
        t.signal(libc::SIGKILL);
        t.finish();
        let (gap, after) = v.runs_on(&at);
        let e = per_kind.entry(kind).or_default();
        e.0 += 1;
        e.1 = e.1.max(gap);
        e.2 = e.2.max(after);
        if after > worst.0 {
            worst = (after, at.clone());
        }
        if i % 20 == 19 || i + 1 == trials {
            full_snapshot(v.pid, tasks, &at);
        }
    }
    eprintln!(
        "kill_trials: {trials} SIGKILLs, 0 failures; longest the target stayed blocked after a kill: {:?} ({}); \
         bound {BLOCK_BOUND:?}; per moment (trials, largest gap in the trial, largest block after the kill): {per_kind:?}",
        worst.0, worst.1
    );
}

/// Issue item 2: SIGKILL the tool at random moments (each failpoint, or anywhere in a
/// whole run), 200 times by default (`GPROF_KILL_TRIALS`).
#[test]
fn sigkill_at_random_moments_never_blocks_loses_or_wedges() {
    kill_trials(env_usize("GPROF_KILL_TRIALS", 200));
}

/// Issue item 2: SIGINT and SIGTERM at every failpoint: the tool releases the target
/// itself (session no longer active, the runtime did not have to abort it) before it
/// exits 130.
#[test]
fn sigint_and_sigterm_restore_the_target_before_the_tool_exits() {
    let mut v = Victim::start(VICTIM);
    let pid = v.pid.to_string();
    let tasks = v.stats().tasks;
    for point in POINTS {
        for (sig, name) in [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM")] {
            let at = format!("{name} at {point}");
            let (_, aborted_before) = session_state(v.pid);
            let mut t = tool(&["attach", &pid, "-o", "/dev/null"], Some(point));
            t.wait_for(&format!("failpoint {point}"));
            v.mark();
            t.signal(sig);
            let (st, err) = t.finish();
            if point == "in-stw2" {
                // The snapshot was complete by then; writing it is as good as stopping.
                assert!(matches!(st.code(), Some(0 | 130)), "{at}: {st} {err}");
            } else {
                assert_eq!(st.code(), Some(130), "{at}: {err}");
                assert!(err.contains("interrupted"), "{at}: {err}");
            }
            let (word, aborted) = session_state(v.pid);
            assert!(
                !session::is_active(word),
                "{at}: the tool exited with the session still active ({word:#x})"
            );
            assert_eq!(
                aborted, aborted_before,
                "{at}: the runtime had to abort the session: the tool did not release it"
            );
            v.runs_on(&at);
        }
    }
    full_snapshot(v.pid, tasks, "after the interrupts");
}

/// Issue item 3: a second profiler gets a clear "another profiler (pid N)" error (exit
/// 7), from `attach` and `record`; the first one's snapshot is not disturbed.
#[test]
fn a_second_profiler_is_refused_and_names_the_first() {
    let mut v = Victim::start(VICTIM);
    let pid = v.pid.to_string();
    let tasks = v.stats().tasks;
    for point in ["after-stw1", "mid-walk"] {
        let mut first = tool(&["attach", &pid, "-o", "/dev/null"], Some(point));
        first.wait_for(&format!("failpoint {point}"));
        let want = format!("another profiler (pid {}) is active", first.pid());
        let dir = tempdir();
        let rec = dir.join("r.pb.gz");
        for args in [
            vec!["attach", &pid],
            vec!["record", &pid, "-n", "1", "-o", rec.to_str().unwrap()],
        ] {
            let (st, err) = tool(&args, None).finish();
            assert_eq!(st.code(), Some(7), "{args:?} during {point}: {err}");
            assert!(err.contains(&want), "{args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "one line: {err}");
        }
        assert!(!rec.exists(), "the refused record wrote a file");
        v.mark();
        first.signal(libc::SIGINT);
        assert_eq!(first.finish().0.code(), Some(130));
        v.runs_on(point);
    }
    full_snapshot(v.pid, tasks, "after two profilers");
}

/// A fresh private directory (mode 0700) under the target directory.
pub fn tempdir() -> std::path::PathBuf {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "reliability-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Issue item 4, at known moments: the target dies (SIGKILL, SIGABRT, exit) while the
/// tool stands at each failpoint; released, the tool exits 8 within [`DEATH_BOUND`] and
/// never panics or hangs. Exit 0 is accepted only where the death may come after the tool has
/// its snapshot: at `in-stw2`, and for SIGABRT/SIGTERM sent while the world is stopped
/// (they take effect only when the tool resumes the threads).
#[test]
fn target_dying_at_each_point_ends_the_tool_with_a_clear_error() {
    let mut worst = Duration::ZERO;
    for point in POINTS {
        for how in ["kill", "abort", "exit"] {
            let at = format!("target {how} at {point}");
            let mut v = Victim::start(VICTIM);
            let pid = v.pid.to_string();
            let mut t = tool(
                &["attach", &pid, "-o", "/dev/null"],
                Some(&format!("{point}:stdin")),
            );
            t.wait_for(&format!("failpoint {point}"));
            let stopped = point.starts_with("in-stw");
            let sig = match how {
                "kill" => Some(libc::SIGKILL),
                "abort" => Some(libc::SIGABRT),
                // A clean exit(3) needs the target to run: not while it is stopped.
                _ if stopped => Some(libc::SIGTERM),
                _ => None,
            };
            match sig {
                // SAFETY: signalling our own child.
                Some(sig) => unsafe {
                    libc::kill(v.pid as i32, sig);
                },
                None => drop(v.stdin.take()),
            }
            // Dead before the tool goes on, unless the signal waits for the resume.
            let certain = sig == Some(libc::SIGKILL) || !stopped;
            if certain {
                let until = Instant::now() + ANSWER;
                // Every thread a zombie (traced ones wait for the tool to reap them).
                let dead = |t: u32| {
                    matches!(
                        gprof_rs::process::stop::thread_state(v.pid, t),
                        None | Some('Z' | 'X')
                    )
                };
                while !tids(v.pid).into_iter().all(dead) {
                    assert!(Instant::now() < until, "{at}: the target does not die");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            let released = Instant::now();
            drop(t.stdin.take());
            let (st, err) = t.finish();
            let took = released.elapsed();
            eprintln!("{at}: {st} {took:?} after the release");
            worst = worst.max(took);
            if st.code() == Some(0) {
                assert!(
                    point == "in-stw2" || !certain,
                    "{at}: the snapshot of a dead target succeeded: {err}"
                );
            } else {
                assert_eq!(st.code(), Some(8), "{at}: {st}: {err}");
                assert!(
                    err.contains(&format!("PID {pid} exited while being profiled")),
                    "{at}: {err}"
                );
                assert_eq!(err.lines().count(), 2, "{at}: failpoint + one line: {err}");
                // The bound is on giving up; a complete snapshot (exit 0) is still
                // symbolized and written, however long that takes (`finish` fails a hang).
                assert!(
                    took < DEATH_BOUND,
                    "{at}: the tool took {took:?} after the target died (bound {DEATH_BOUND:?}): {err}"
                );
            }
            let _ = v.child.wait();
        }
    }
    eprintln!("target death at each point: the tool ended at most {worst:?} after its release");
}

/// Issue item 4, at random moments: the target ends itself (exit, abort, SIGKILL) a
/// random time into `attach` or `record`; the tool never panics or hangs, and either
/// finished its snapshot or recording (exit 0, `record` ends on the target's exit by
/// design) or says the target exited (exit 8) within [`DEATH_BOUND`] of the death.
#[test]
fn target_dying_at_random_moments_never_hangs_or_panics_the_tool() {
    let trials = env_usize("GPROF_DEATH_TRIALS", 30);
    let mut rng = Rng::new("target_death");
    let mut codes = std::collections::BTreeMap::<String, u32>::new();
    let mut worst = Duration::ZERO;
    let dir = tempdir();
    for i in 0..trials {
        let how = ["exit", "abort", "kill"][rng.below(3) as usize];
        let us = rng.below(400_000).to_string();
        let mut args = VICTIM.to_vec();
        args.extend(["--die-after-us", &us, "--die-how", how]);
        let mut v = Victim::start(&args);
        let pid = v.pid.to_string();
        let out = dir.join(format!("{i}.pb.gz"));
        let record = i % 2 == 1;
        let t = if record {
            tool(
                &["record", &pid, "-i", "10ms", "-o", out.to_str().unwrap()],
                None,
            )
        } else {
            tool(&["attach", &pid, "-o", "/dev/null"], None)
        };
        let at = format!(
            "trial {i}: target {how} after {us} us, {}",
            if record { "record" } else { "attach" }
        );
        // Reap the target as soon as it dies, as its parent normally would.
        let died = v.child.wait().unwrap();
        let dead_at = Instant::now();
        let (st, err) = t.finish();
        let took = dead_at.elapsed();
        let code = st.code().unwrap_or(-1);
        match code {
            // The snapshot (or a recording) was complete: the tool wrote it; it was
            // symbolizing, not waiting (and `finish` fails a hang).
            0 => {}
            // Dead before the tool looked it up.
            3 => assert!(err.contains("no process with PID"), "{at}: {err}"),
            8 => {
                assert!(err.contains("exited while being profiled"), "{at}: {err}");
                assert!(
                    took < DEATH_BOUND,
                    "{at}: the tool gave up {took:?} after the death (bound {DEATH_BOUND:?}): {err}"
                );
                worst = worst.max(took);
            }
            _ => panic!("{at} ({died}): exit {st}: {err}"),
        }
        *codes
            .entry(format!(
                "{} exit {code}",
                if record { "record" } else { "attach" }
            ))
            .or_default() += 1;
    }
    eprintln!(
        "target death at random moments: {trials} trials, outcomes {codes:?}, exit 8 came at most {worst:?} after the death"
    );
}

/// Issue item 5: 10 000 SIGUSR1, one at a time (a standard signal is not queued, so
/// each is sent once the previous one was handled), during back-to-back snapshots:
/// every one is handled exactly once.
#[test]
fn signals_during_back_to_back_snapshots_are_neither_lost_nor_duplicated() {
    let n = env_usize("GPROF_SIGNALS", 10_000) as u64;
    let mut v = Victim::start(VICTIM);
    let pid = v.pid;
    let tasks = v.stats().tasks;
    let stop = Arc::new(AtomicBool::new(false));
    let (started_tx, started) = mpsc::channel();
    let snapper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut s = Session::attach(pid).expect("attach");
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let snap = s.snapshot(Mode::Concurrent).expect("snapshot");
                assert_eq!(snap.tasks.len() as u64, tasks, "snapshot {k}");
                if k == 0 {
                    started_tx.send(()).unwrap();
                }
                k += 1;
            }
            k
        })
    };
    started.recv_timeout(ANSWER).expect("first snapshot");
    let t0 = Instant::now();
    for i in 0..n {
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGUSR1) }, 0);
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let c = v.usr1();
            if c == i + 1 {
                break;
            }
            assert!(
                c <= i + 1,
                "signal {i}: handled {c} times in total: duplicated"
            );
            assert!(Instant::now() < until, "signal {i} lost (count stays {c})");
            std::thread::yield_now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    let snaps = snapper.join().expect("snapshot thread");
    let s = v.stats();
    assert_eq!(s.usr1, n, "signals handled by the end");
    assert_eq!(s.stalled, 0);
    v.wake(64);
    eprintln!(
        "{n} SIGUSR1 in {:?} during {snaps} back-to-back snapshots: all handled once",
        t0.elapsed()
    );
    assert!(snaps > 0);
}

/// Build and return `examples/fake_target` (the root crate's example).
fn fake_target_exe() -> std::path::PathBuf {
    static EXE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    EXE.get_or_init(|| {
        let profile_dir = examples_dir().parent().unwrap().to_path_buf();
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-q", "-p", "gprof-rs", "--example", "fake_target"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        assert!(cmd.status().unwrap().success(), "building fake_target");
        profile_dir.join("examples").join("fake_target")
    })
    .clone()
}

/// Most data memory (heap and private writable mappings, RLIMIT_DATA) the tool may use
/// on a hostile target: beyond it an allocation fails and the tool dies.
const TOOL_DATA_LIMIT: u64 = 256 << 20;

/// Run `cmd` to completion under `RLIMIT_DATA` = `data_limit` (if any); its exit code
/// (minus the signal number if killed), stdout and stderr.
fn run_limited(cmd: &mut Command, data_limit: Option<u64>) -> (i32, String, String) {
    if let Some(limit) = data_limit {
        // SAFETY: setrlimit is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                let l = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_DATA, &l) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let dir = tempdir();
    let (o, e) = (dir.join("out"), dir.join("err"));
    let st = cmd
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap())
        .status()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    (
        st.code().unwrap_or_else(|| -st.signal().unwrap_or(0)),
        std::fs::read_to_string(o).unwrap(),
        std::fs::read_to_string(e).unwrap(),
    )
}

/// Issue item 7: task slots whose stacks are random bytes, a return-address loop, a
/// frame-pointer cycle, absurd, inverted or unmapped bounds, with lengths and enum values
/// out of range, and counts (slot_hwm, worker_count) far beyond their caps: every
/// snapshot completes, the hostile stacks come out truncated and flagged incomplete,
/// within bounded time (10 s for three snapshots) and memory (the CLI runs under a
/// 256 MiB RLIMIT_DATA).
#[test]
fn hostile_task_stacks_are_flagged_in_bounded_time_and_memory() {
    let mut child = Command::new(fake_target_exe())
        .args(["--variant", "hostile-stacks"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut ready = String::new();
    out.read_line(&mut ready).unwrap();
    let pid = child.id();
    assert_eq!(ready.trim(), format!("READY {pid}"));
    let t0 = Instant::now();
    let mut s = Session::attach(pid).expect("attach a hostile target");
    for mode in [Mode::Concurrent, Mode::StopTheWorld, Mode::Concurrent] {
        let snap = s
            .snapshot(mode)
            .unwrap_or_else(|e| panic!("{mode:?} snapshot of a hostile target: {e}"));
        let ids: Vec<u64> = snap.tasks.iter().map(|t| t.id).collect();
        assert_eq!(ids, (1..=11).collect::<Vec<_>>(), "{mode:?}");
        for t in snap.tasks.iter().filter(|t| t.id >= 4) {
            let st = snap.stacks.get(t.stack);
            assert!(
                st.incomplete,
                "{mode:?}: hostile task {} not flagged: {st:?}",
                t.id
            );
            assert!(st.addrs.len() <= gprof_rs::unwind::DEFAULT_MAX_FRAMES);
        }
        let t11 = &snap.tasks[10];
        assert!(t11
            .name()
            .is_some_and(|n| n.len() <= 4 * gprof_abi::NAME_CAP));
        assert_eq!(
            t11.spawn.file, None,
            "a spawn file of absurd length is not read"
        );
    }
    drop(s);
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "three snapshots took {took:?}"
    );
    let (code, text, err) = run_limited(
        gprof_rs().args([
            "attach",
            &pid.to_string(),
            "--format",
            "tasks",
            "--mode",
            "stw",
        ]),
        Some(TOOL_DATA_LIMIT),
    );
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(text.contains("...additional frames elided..."), "{text}");
    eprintln!(
        "hostile stacks: 3 snapshots in {took:?}; the CLI ran within a {} MiB data limit",
        TOOL_DATA_LIMIT >> 20
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// System calls that create, change or remove a name in a file system, or execute.
const STRACE_FILE_CALLS: &str = "trace=creat,open,openat,openat2,mkdir,mkdirat,mknod,mknodat,\
rename,renameat,renameat2,link,linkat,symlink,symlinkat,unlink,unlinkat,truncate,chmod,\
fchmodat,chown,fchownat,execve,execveat,memfd_create";

/// Lines of an strace log that create or write a file, or execute something; each
/// with the path it names. `allowed` paths (prefixes) are left out.
fn strace_writes(log: &str, allowed: &[&str]) -> (Vec<String>, usize) {
    let mut bad = Vec::new();
    let mut execs = 0;
    for l in log.lines() {
        // "PID call(args) = result"; signals, exits and resumed calls are skipped.
        let Some((call, _)) = l.split_whitespace().nth(1).and_then(|t| t.split_once('(')) else {
            continue;
        };
        let path = l.split('"').nth(1).unwrap_or("");
        let writes = match call {
            "open" | "openat" | "openat2" => ["O_CREAT", "O_WRONLY", "O_RDWR", "O_TRUNC"]
                .iter()
                .any(|f| l.contains(f)),
            "execve" | "execveat" => {
                execs += 1;
                false
            }
            "memfd_create" | "" => false,
            _ => !l.contains("= -1"),
        };
        if writes && !l.contains("= -1") && !allowed.iter().any(|a| path.starts_with(a)) {
            bad.push(l.to_string());
        }
    }
    (bad, execs)
}

/// Issue item 9: the region is a 0600 memfd owned by the target's uid, with no name in
/// any file system; the runtime creates no file; the tool creates or writes no file but
/// its output, and executes nothing. (A tool without the right to ptrace the target is
/// refused with the reason: `process::unprivileged_tool_gets_permission_denied`.)
#[test]
fn the_region_is_a_private_memfd_and_nothing_is_written_but_the_output() {
    let mut v = Victim::start(VICTIM);
    let pid = v.pid;
    let mut memfds = 0;
    for ent in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        // 0-2 are the test's pipes, or whatever the test itself inherited.
        if ent.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) < Some(3) {
            continue;
        }
        let link = std::fs::read_link(ent.path()).unwrap_or_default();
        let link = link.to_string_lossy();
        if link.starts_with("/memfd:gprof-rt-tasks") {
            use std::os::unix::fs::MetadataExt;
            let md = std::fs::metadata(ent.path()).unwrap();
            assert_eq!(md.mode() & 0o7777, 0o600, "memfd mode");
            // SAFETY: getuid has no preconditions.
            assert_eq!(md.uid(), unsafe { libc::getuid() }, "memfd owner");
            assert_eq!(md.nlink(), 0, "the memfd has a name somewhere");
            memfds += 1;
        } else {
            assert!(
                ["pipe:", "socket:", "anon_inode:", "/dev/"]
                    .iter()
                    .any(|p| link.starts_with(p)),
                "the target holds a named file: {link}"
            );
        }
    }
    assert_eq!(memfds, 1);
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    for l in maps.lines() {
        let perms = l.split_whitespace().nth(1).unwrap_or("");
        if perms.ends_with('s') {
            assert!(l.contains("/memfd:gprof-rt-tasks"), "shared mapping {l}");
        }
    }
    if Command::new("strace").arg("-V").output().is_err() {
        println!("SKIP: strace not installed; the file-creation checks need it");
        return;
    }
    let dir = tempdir();
    // The tool, under strace, taking three snapshots and writing one file.
    let out = dir.join("rec.pb.gz");
    let log = dir.join("tool.strace");
    let (code, _, err) = run_limited(
        Command::new("strace").args([
            "-f",
            "-qq",
            "-e",
            STRACE_FILE_CALLS,
            "-o",
            log.to_str().unwrap(),
            "--",
            env!("CARGO_BIN_EXE_gprof-rs"),
            "record",
            &pid.to_string(),
            "-n",
            "3",
            "-i",
            "10ms",
            "-o",
            out.to_str().unwrap(),
        ]),
        None,
    );
    assert_eq!(code, 0, "{err}");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains(out.to_str().unwrap()),
        "strace saw no write of the output: {log}"
    );
    // The lease is our own read-write open of the target's memfd through /proc.
    let (bad, execs) = strace_writes(&log, &[out.to_str().unwrap(), &format!("/proc/{pid}/")]);
    assert!(
        bad.is_empty(),
        "the tool wrote outside its output: {bad:#?}"
    );
    assert_eq!(execs, 1, "the tool executed something: {log}");
    v.runs_on("after the traced tool");
    drop(v);
    // The runtime, under strace from its start to its exit.
    let log = dir.join("rt.strace");
    let mut rt = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            STRACE_FILE_CALLS,
            "-o",
            log.to_str().unwrap(),
            "--",
        ])
        .arg(examples_dir().join("victim"))
        .args(VICTIM)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(rt.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("READY"), "{line}");
    drop(rt.stdin.take());
    assert!(rt.wait().unwrap().success());
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("memfd_create(\"gprof-rt-tasks\""), "{log}");
    let (bad, _) = strace_writes(&log, &[]);
    assert!(
        bad.is_empty(),
        "the runtime created or wrote files: {bad:#?}"
    );
}

/// Issue item 3, `--wait`: a second profiler waits for the first instead of failing: a
/// bounded wait that runs out exits 7 naming the holder; a wait that the first
/// profiler's end satisfies gives a full snapshot (`attach`) or recording (`record`).
#[test]
fn wait_lets_a_second_profiler_take_its_turn() {
    let mut v = Victim::start(VICTIM);
    let pid = v.pid.to_string();
    let tasks = v.stats().tasks;
    let dir = tempdir();

    let mut first = tool(&["attach", &pid, "-o", "/dev/null"], Some("mid-walk"));
    first.wait_for("failpoint mid-walk");
    let t0 = Instant::now();
    let (st, err) = tool(&["attach", &pid, "--wait=300ms"], None).finish();
    assert_eq!(st.code(), Some(7), "{err}");
    assert!(t0.elapsed() >= Duration::from_millis(300), "gave up early");
    let holder = format!("another profiler (pid {}) is active", first.pid());
    assert!(err.contains(&holder), "{err}");
    assert!(err.contains("waiting up to 0.3 s"), "{err}");

    let out = dir.join("tasks.txt");
    let mut second = tool(
        &[
            "attach",
            &pid,
            "--wait",
            "--format",
            "tasks",
            "-o",
            out.to_str().unwrap(),
        ],
        None,
    );
    second.wait_for("waiting up to 10.0 s");
    v.mark();
    first.signal(libc::SIGINT);
    assert_eq!(first.finish().0.code(), Some(130));
    let (st, err) = second.finish();
    assert!(st.success(), "{err}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        text.lines().filter(|l| l.starts_with("task ")).count() as u64,
        tasks,
        "the waiting profiler's snapshot is complete"
    );
    v.runs_on("after attach --wait");

    let mut first = tool(&["attach", &pid, "-o", "/dev/null"], Some("after-stw1"));
    first.wait_for("failpoint after-stw1");
    let rec = dir.join("rec.pb.gz");
    let mut second = tool(
        &[
            "record",
            &pid,
            "--wait",
            "5s",
            "-n",
            "2",
            "-i",
            "10ms",
            "-o",
            rec.to_str().unwrap(),
        ],
        None,
    );
    second.wait_for("waiting up to 5.0 s");
    v.mark();
    first.signal(libc::SIGTERM);
    assert_eq!(first.finish().0.code(), Some(130));
    let (st, err) = second.finish();
    assert!(st.success(), "{err}");
    assert!(err.contains("2 snapshots"), "{err}");
    assert!(std::fs::metadata(&rec).unwrap().len() > 0);
    v.runs_on("after record --wait");
}
