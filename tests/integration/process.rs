//! The process layer against `examples/fake_target.rs`: locating and mapping the region,
//! hostile descriptors and control blocks, the lease, and ptrace stop-the-world.
//!
//! Every target is started with a READY handshake and killed when its handle drops;
//! nothing here sleeps to synchronize, and nothing asserts on timings.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use gprof_rs::error::Error;
use gprof_rs::locate::{self, copy_name};
use gprof_rs::process::stop::{thread_state, thread_states};
use gprof_rs::process::{StopKind, Tracer};

/// Build the fixture once per test run (the integration target does not build examples).
fn fake_target_exe() -> PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let profile_dir = std::env::current_exe()
            .unwrap()
            .parent()
            .and_then(|p| p.parent())
            .unwrap()
            .to_path_buf();
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-q", "-p", "gprof-rs", "--example", "fake_target"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("cargo build --example fake_target");
        assert!(st.success(), "building examples/fake_target.rs failed");
        profile_dir.join("examples").join("fake_target")
    })
    .clone()
}

struct Fake {
    child: Child,
    pid: u32,
    stdin: Option<ChildStdin>,
    out: BufReader<ChildStdout>,
}

impl Fake {
    fn start(args: &[&str]) -> Fake {
        let mut child = Command::new(fake_target_exe())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start fake_target");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let pid = child.id();
        assert_eq!(line.trim(), format!("READY {pid}"), "fake_target {args:?}");
        let stdin = child.stdin.take();
        Fake {
            child,
            pid,
            stdin,
            out,
        }
    }

    fn variant(name: &str) -> Fake {
        Fake::start(&["--variant", name])
    }

    /// The target answers: it is running (not stopped, not wedged).
    fn ping(&mut self) -> u64 {
        let s = self.stdin.as_mut().unwrap();
        writeln!(s, "ping").unwrap();
        s.flush().unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.trim()
            .strip_prefix("pong ")
            .unwrap_or_else(|| panic!("bad pong {line:?}"))
            .parse()
            .unwrap()
    }

    /// Close stdin; returns (EINTR count, threads churned) from the target's last line.
    fn finish(mut self) -> (u64, u64) {
        drop(self.stdin.take());
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        let st = self.child.wait().unwrap();
        assert!(st.success(), "fake_target exited with {st}");
        let w: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            (w.first(), w.get(2)),
            (Some(&"EINTR"), Some(&"CHURN")),
            "{line:?}"
        );
        (w[1].parse().unwrap(), w[3].parse().unwrap())
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

/// Poll a condition for up to 10 s (the kernel does these transitions asynchronously).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn tracer_pid(pid: u32) -> u32 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn locate_map_and_validate_the_fake_target() {
    let fake = Fake::variant("ok");
    let loc = locate::locate(fake.pid).unwrap();
    assert!(
        loc.object_path.ends_with("fake_target"),
        "{}",
        loc.object_path
    );
    // PIE: the descriptor is far above the ELF's link-time addresses.
    assert!(loc.descriptor_addr > 0x10000, "{:#x}", loc.descriptor_addr);
    let region = loc.open_region().unwrap();
    let l = *region.layout();
    assert_eq!(l.slot_cap, 64);
    assert_eq!(l.worker_cap, gprof_abi::WORKER_CAP);
    assert_eq!(l.region_len, loc.region_len);
    assert_eq!(l.runtime_pid, fake.pid);
    use std::sync::atomic::Ordering::Acquire;
    assert_eq!(
        region.control().owner_pid.load(Acquire),
        u64::from(std::process::id())
    );
    assert_eq!(region.control().slot_hwm.load(Acquire), 3);
    assert_eq!(region.worker(0).unwrap().tid.load(Acquire), fake.pid);
    assert!(region.worker(l.worker_cap).is_none());
    assert!(region.slot(l.slot_cap).is_none());
    for i in 0..3 {
        let slot = region.slot(i).unwrap();
        assert_eq!(slot.task_id.load(Acquire), u64::from(i) + 1);
        let n = slot.name_len.load(Acquire) as usize;
        assert_eq!(&copy_name(slot)[..n], format!("fake-{i}").as_bytes());
    }
    let mut buf = [0xffu8; 16];
    region.read_arena(0, &mut buf).unwrap();
    assert_eq!(buf, [0; 16]);
    assert!(matches!(
        region.read_arena(l.arena_len - 8, &mut buf),
        Err(Error::BadTargetData(_))
    ));

    let modules = loc.modules();
    let exe = modules
        .iter()
        .find(|m| m.path.ends_with("fake_target"))
        .expect("exe mapping");
    assert!(exe.start < exe.end);
    assert!(
        modules
            .iter()
            .any(|m| m.path == "[vdso]" && m.build_id.is_some()),
        "{modules:#?}"
    );
    drop(region);
}

#[test]
fn hostile_variants_give_precise_errors() {
    let want_bad = |needle: &'static str| move |e: &Error| matches!(e, Error::BadTargetData(m) if m.contains(needle));
    type Check = Box<dyn Fn(&Error) -> bool>;
    let cases: Vec<(&str, Check)> = vec![
        ("bad-magic", Box::new(want_bad("magic"))),
        (
            "future-abi",
            Box::new(|e: &Error| {
                matches!(e, Error::AbiMismatch { found, expected }
                    if *found == gprof_abi::ABI_VERSION + 1 && *expected == gprof_abi::ABI_VERSION)
            }),
        ),
        ("absurd-slot-cap", Box::new(want_bad("slot_cap"))),
        ("absurd-offset", Box::new(want_bad("slot table"))),
        (
            "unmapped-region",
            Box::new(want_bad("not a shared memfd mapping")),
        ),
        (
            "not-started",
            Box::new(|e: &Error| matches!(e, Error::RuntimeNotStarted)),
        ),
        ("unsealed", Box::new(want_bad("sealed"))),
        ("fd-not-open", Box::new(want_bad("not open in the target"))),
    ];
    for (variant, ok) in cases {
        let fake = Fake::variant(variant);
        let r = locate::locate(fake.pid).and_then(|l| l.open_region());
        match r {
            Ok(_) => panic!("{variant}: accepted"),
            Err(e) => {
                assert!(ok(&e), "{variant}: wrong error: {e:?}");
                // One line, and the class decides the exit code.
                assert!(!e.to_string().contains('\n'));
                assert!(
                    matches!(e.exit_code(), 5 | 6 | 9),
                    "{variant}: {}",
                    e.exit_code()
                );
            }
        }
    }
    // Not a target at all: cat(1) has no descriptor. (This test binary links
    // target-runtime, so it has one, unstarted: RuntimeNotStarted.)
    let mut cat = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let e = locate::locate(cat.id());
    let _ = cat.kill();
    let _ = cat.wait();
    assert!(matches!(e, Err(Error::NotATarget { .. })), "{e:?}");
    let e = locate::locate(std::process::id()).unwrap_err();
    assert!(matches!(e, Error::RuntimeNotStarted), "{e:?}");
    // No such process.
    let e = locate::locate(i32::MAX as u32).unwrap_err();
    assert!(matches!(e, Error::ProcessNotFound { .. }), "{e:?}");
}

#[test]
fn second_region_open_is_profiler_busy() {
    let fake = Fake::variant("ok");
    let loc = locate::locate(fake.pid).unwrap();
    let first = loc.open_region().unwrap();
    match loc.open_region() {
        Err(Error::ProfilerBusy { owner_pid }) => {
            assert_eq!(owner_pid, u64::from(std::process::id()))
        }
        other => panic!("expected ProfilerBusy, got {other:?}"),
    }
    let e = loc.open_region().unwrap_err();
    assert!(
        e.to_string().contains(&format!(
            "another profiler (pid {}) is active",
            std::process::id()
        )),
        "{e}"
    );
    assert_eq!(e.exit_code(), 7);
    drop(first);
    // Released with the file description.
    let again = loc.open_region().unwrap();
    drop(again);
}

fn threads_of(pid: u32) -> Vec<u32> {
    let mut t: Vec<u32> = thread_states(pid).into_iter().map(|(t, _)| t).collect();
    t.sort();
    t
}

#[test]
fn stop_world_200_times_without_eintr() {
    let mut fake = Fake::variant("ok");
    let pid = fake.pid;
    let all = threads_of(pid);
    assert_eq!(all.len(), 5, "main + 4 workers");
    let mut tracer = Tracer::new(pid).unwrap();
    let mut pauses = Vec::new();
    for i in 0..200 {
        let stop = tracer.stop_world(deadline()).unwrap();
        let tids: Vec<u32> = stop.threads().iter().map(|t| t.tid).collect();
        assert_eq!(tids, all, "round {i}");
        assert!(stop.unstopped().is_empty());
        assert!(!stop.job_stopped());
        for t in stop.threads() {
            assert!(t.regs.ip != 0 && t.regs.sp != 0, "{t:?}");
            assert_eq!(t.stop, StopKind::Interrupt, "{t:?}");
        }
        if i % 50 == 0 {
            // Really stopped: "t" is ptrace-stop in /proc (proc(5)).
            for &t in &all {
                assert_eq!(thread_state(pid, t), Some('t'), "thread {t}");
            }
        }
        let tm = stop.timings();
        assert!(tm.begin <= tm.first_interrupt && tm.first_interrupt <= tm.stopped);
        assert!(tm.settled && tm.rounds >= 3, "{tm:?}");
        let resumed = stop.resume();
        assert!(resumed >= tm.stopped);
        pauses.push(resumed - tm.first_interrupt);
    }
    // Informational only (never asserted): the pause as the tool sees it.
    pauses.sort();
    eprintln!(
        "stop+resume of {} threads: median {:?}, max {:?}",
        all.len(),
        pauses[pauses.len() / 2],
        pauses[pauses.len() - 1]
    );
    // Still running: the busy thread moves on.
    let a = fake.ping();
    eventually("spinner progress", || fake.ping() > a);
    released_untouched(tracer, fake);
}

/// Exactly the threads `held` of `all` are in ptrace-stop ("t" in /proc, proc(5)).
fn assert_held_exactly(pid: u32, all: &[u32], held: &[u32]) {
    for &t in all {
        let st = thread_state(pid, t);
        if held.contains(&t) {
            assert_eq!(st, Some('t'), "held thread {t} is ptrace-stopped");
        } else {
            assert_ne!(st, Some('t'), "thread {t} was stopped");
        }
    }
}

/// Drop the tracer: nobody traces the fake any more, and none of its blocked calls
/// saw EINTR.
fn released_untouched(tracer: Tracer, fake: Fake) {
    let pid = fake.pid;
    drop(tracer);
    assert_eq!(tracer_pid(pid), 0);
    let (eintr, _) = fake.finish();
    assert_eq!(eintr, 0, "blocked read/futex/nanosleep saw EINTR");
}

#[test]
fn stop_threads_holds_only_the_listed_threads() {
    let fake = Fake::variant("ok");
    let pid = fake.pid;
    let all = threads_of(pid);
    let listed = vec![all[1], all[3]];
    // Untrusted input: a TID of some other process (this test's) must never be seized.
    let outsider = std::process::id();
    let mut tracer = Tracer::new(pid).unwrap();
    for _ in 0..20 {
        let mut ask = listed.clone();
        ask.push(outsider);
        ask.push(0);
        let stop = tracer.stop_threads(&ask, deadline()).unwrap();
        let tids: Vec<u32> = stop.threads().iter().map(|t| t.tid).collect();
        assert_eq!(tids, listed);
        assert!(stop.unstopped().is_empty());
        let tm = stop.timings();
        assert!(tm.settled && tm.rounds == 1, "no /proc scans: {tm:?}");
        assert_held_exactly(pid, &all, &listed);
        stop.resume();
    }
    released_untouched(tracer, fake);
}

/// A worker that appears after a stop began is added to it (`WorldStop::extend`, what
/// STW 1 does for a worker that published its TID late): already-held threads are not
/// seized twice, untrusted TIDs are skipped, the rest of the process runs on.
#[test]
fn a_stop_extended_with_late_threads_holds_them_too() {
    let fake = Fake::variant("ok");
    let pid = fake.pid;
    let all = threads_of(pid);
    let outsider = std::process::id();
    let mut tracer = Tracer::new(pid).unwrap();
    for _ in 0..10 {
        let mut stop = tracer.stop_threads(&[all[1]], deadline()).unwrap();
        stop.extend(&[all[1], all[3], outsider, 0], deadline())
            .unwrap();
        let tids: Vec<u32> = stop.threads().iter().map(|t| t.tid).collect();
        assert_eq!(tids, vec![all[1], all[3]]);
        assert!(stop.unstopped().is_empty());
        assert_held_exactly(pid, &all, &[all[1], all[3]]);
        stop.resume();
    }
    released_untouched(tracer, fake);
}

#[test]
fn thread_churn_still_stops_completely() {
    let fake = Fake::start(&["--churn"]);
    let pid = fake.pid;
    let mut tracer = Tracer::new(pid).unwrap();
    for i in 0..100 {
        let stop = tracer.stop_world(deadline()).unwrap();
        assert!(
            stop.unstopped().is_empty(),
            "round {i}: {:?}",
            stop.unstopped()
        );
        // Verification scan while stopped (reliability.md §2.3 T-CLONE-STORM): every
        // thread is either one we hold, or already dead.
        let held: Vec<u32> = stop.threads().iter().map(|t| t.tid).collect();
        for (t, st) in thread_states(pid) {
            assert!(
                held.contains(&t) || st == 'Z' || st == 'X',
                "round {i}: thread {t} in state {st} not stopped"
            );
            if held.contains(&t) {
                assert_eq!(
                    thread_state(pid, t).unwrap_or('t'),
                    't',
                    "round {i}: thread {t}"
                );
            }
        }
        drop(stop);
    }
    drop(tracer);
    let (eintr, churned) = fake.finish();
    assert_eq!(eintr, 0);
    assert!(churned > 0);
}

#[test]
fn job_stopped_target_stays_stopped() {
    let mut fake = Fake::variant("ok");
    let pid = fake.pid;
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
    eventually("group stop", || {
        threads_of(pid)
            .iter()
            .all(|&t| thread_state(pid, t) == Some('T'))
    });
    let mut tracer = Tracer::new(pid).unwrap();
    for _ in 0..3 {
        let stop = tracer.stop_world(deadline()).unwrap();
        assert!(stop.job_stopped(), "{:?}", stop.threads());
        for t in stop.threads() {
            assert_eq!(t.stop, StopKind::GroupStop(libc::SIGSTOP));
        }
        drop(stop);
        // Detached, never continued: back in group-stop ("T"), untraced.
        eventually("back in T", || {
            threads_of(pid)
                .iter()
                .all(|&t| thread_state(pid, t) == Some('T'))
                && tracer_pid(pid) == 0
        });
    }
    drop(tracer);
    for &t in &threads_of(pid) {
        assert_eq!(thread_state(pid, t), Some('T'));
    }
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGCONT) }, 0);
    let a = fake.ping();
    eventually("progress after SIGCONT", || fake.ping() > a);
    let (eintr, _) = fake.finish();
    assert_eq!(eintr, 0);
}

#[test]
fn signals_racing_with_stops_neither_kill_nor_wedge_the_target() {
    // SIGURG (default action: ignore) sent right before each stop: a thread may report
    // a signal-delivery-stop instead of our interrupt; it counts as stopped and the
    // signal goes back with PTRACE_DETACH.
    let mut fake = Fake::variant("ok");
    let pid = fake.pid;
    let mut tracer = Tracer::new(pid).unwrap();
    for _ in 0..50 {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid as i32, libc::SIGURG) };
        let stop = tracer.stop_world(deadline()).unwrap();
        for t in stop.threads() {
            assert!(
                matches!(t.stop, StopKind::Interrupt | StopKind::Signal(libc::SIGURG)),
                "{t:?}"
            );
        }
        drop(stop);
    }
    drop(tracer);
    fake.ping();
    assert_eq!(fake.finish().0, 0);
}

#[test]
fn already_traced_target_is_permission_denied_with_the_tracer_named() {
    if Command::new("strace").arg("-V").output().is_err() {
        println!("SKIP: strace not installed");
        return;
    }
    let fake = Fake::variant("ok");
    let pid = fake.pid;
    let mut strace = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=none",
            "-o",
            "/dev/null",
            "-p",
            &pid.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("strace attached", || tracer_pid(pid) != 0);
    let mut tracer = Tracer::new(pid).unwrap();
    let e = tracer.stop_world(deadline()).unwrap_err();
    let _ = strace.kill();
    let _ = strace.wait();
    match &e {
        Error::PermissionDenied { hint, .. } => {
            assert!(hint.contains("already traced by PID"), "{hint}")
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
    assert_eq!(e.exit_code(), 4);
}

/// Runs only when `GPROF_TEST_EPERM_PID` is set: the body of the unprivileged child of
/// `unprivileged_tool_gets_permission_denied`.
#[test]
fn eperm_child() {
    let Ok(pid) = std::env::var("GPROF_TEST_EPERM_PID") else {
        return;
    };
    let pid: u32 = pid.parse().unwrap();
    let t = Tracer::new(pid).unwrap_err();
    let l = locate::locate(pid).unwrap_err();
    for e in [&t, &l] {
        assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
        assert_eq!(e.exit_code(), 4);
    }
    println!("EPERM-CHILD-OK {t}");
}

#[test]
fn unprivileged_tool_gets_permission_denied() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP: needs root to drop privileges to nobody");
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        println!("SKIP: setpriv not installed");
        return;
    }
    let fake = Fake::variant("ok");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "process::eperm_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("GPROF_TEST_EPERM_PID", fake.pid.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() && stdout.is_empty() {
        println!(
            "SKIP: could not run the test binary as nobody: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    assert!(
        out.status.success() && stdout.contains("EPERM-CHILD-OK"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("not permitted to inspect PID"), "{stdout}");
    // The target was never touched.
    assert_eq!(tracer_pid(fake.pid), 0);
}

#[test]
fn thread_in_d_state_is_reported_unstopped_then_detached_when_it_stops() {
    // reliability.md §2.6 T-DSTATE: a vfork parent stays in D and does not report the
    // interrupt until its child exits (1 s here); the stop gives up on it at the
    // deadline, the rest of the world stops and resumes, and the tracer detaches the
    // laggard once it has stopped.
    let mut fake = Fake::start(&["--vfork"]);
    let pid = fake.pid;
    let mut tracer = Tracer::new(pid).unwrap();
    let mut seen = false;
    for _ in 0..10 {
        let stop = tracer
            .stop_world(Instant::now() + Duration::from_millis(100))
            .unwrap();
        let n = stop.threads().len();
        if stop.unstopped().is_empty() {
            // The thread was between two children; try again.
            assert_eq!(n, 6);
            continue;
        }
        assert_eq!(stop.unstopped().len(), 1, "{:?}", stop.unstopped());
        assert_eq!(n, 5, "every other thread stopped");
        let laggard = stop.unstopped()[0];
        drop(stop);
        assert_eq!(tracer.lagging(), &[laggard]);
        seen = true;
        break;
    }
    assert!(seen, "the vfork thread was never caught in D state");
    // The running threads run again.
    let a = fake.ping();
    eventually("progress while the laggard is in D", || fake.ping() > a);
    // Once its child exits it traps, and service() detaches it.
    eventually("laggard detached", || tracer.service() == 0);
    drop(tracer);
    eventually("untraced", || {
        tracer_pid(pid) == 0
            && threads_of(pid)
                .iter()
                .all(|&t| thread_state(pid, t) != Some('t'))
    });
    // Stopping still works afterwards.
    let mut tracer = Tracer::new(pid).unwrap();
    drop(tracer.stop_world(deadline()).unwrap());
    drop(tracer);
    assert_eq!(fake.finish().0, 0);
}

#[test]
fn zombie_leader_target_is_located_and_stopped() {
    // reliability.md §2.4 / §2.1(e): the main thread exited, the process runs on. Its
    // /proc/PID/{maps,fd} are empty and SEIZE of it gives EPERM; both must be handled.
    let mut fake = Fake::start(&["--leader-exit"]);
    let pid = fake.pid;
    eventually("zombie leader", || thread_state(pid, pid) == Some('Z'));
    let loc = locate::locate(pid).unwrap();
    assert_ne!(loc.mem_pid, pid);
    // LiveMemory of the PID itself falls back to a live thread.
    let mut magic = [0u8; 8];
    use gprof_rs::process::RemoteMemory;
    gprof_rs::process::LiveMemory::new(pid)
        .read(loc.descriptor_addr, &mut magic)
        .unwrap();
    assert_eq!(u64::from_le_bytes(magic), gprof_abi::MAGIC);
    let region = loc.open_region().unwrap();
    assert_eq!(region.layout().slot_cap, 64);
    assert!(loc
        .modules()
        .iter()
        .any(|m| m.path.ends_with("fake_target")));
    let live: Vec<u32> = threads_of(pid).into_iter().filter(|&t| t != pid).collect();
    let mut tracer = Tracer::new(pid).unwrap();
    for _ in 0..20 {
        let stop = tracer.stop_world(deadline()).unwrap();
        let tids: Vec<u32> = stop.threads().iter().map(|t| t.tid).collect();
        assert_eq!(tids, live);
        assert!(stop.unstopped().is_empty());
        drop(stop);
    }
    drop(tracer);
    drop(region);
    fake.ping();
    assert_eq!(fake.finish().0, 0);
}
