//! A profiler that is interrupted or killed mid-snapshot never wedges the target
//! (DESIGN invariant 6): SIGINT makes the tool release the target and exit 130; after
//! SIGKILL the runtime notices the lease (the tool's flock) is gone, abandons the
//! session and takes back the tasks the tool held; the next attach works.

use crate::target::{gprof_rs, Target};
use gprof_rs::snapshot::{Mode, Session};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Start `gprof-rs attach` stalled at `point` and wait until it says it is there.
fn stalled_tool(pid: u32, point: &str) -> Child {
    // The runtime's helper would leave the tool's walk nothing to hold.
    stalled_tool_with(pid, point, "never")
}

/// [`stalled_tool`] with `GPROF_RS_HELPER=helper`.
fn stalled_tool_with(pid: u32, point: &str, helper: &str) -> Child {
    let mut tool = gprof_rs()
        .args(["attach", &pid.to_string()])
        .env("GPROF_FAILPOINT", point)
        .env("GPROF_RS_HELPER", helper)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(tool.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), format!("gprof-rs: failpoint {point}"));
    // Keep draining stderr in the background so the tool never blocks on it.
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut rest);
        eprint!("{rest}");
    });
    tool
}

/// Wait for the fixture to exit after "exit", failing (instead of hanging) if it is
/// wedged.
fn exits_promptly(mut t: Target) {
    t.send("exit");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = t.child.try_wait().unwrap() {
            assert!(st.success(), "fixture exited with {st}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the target is wedged after the profiler went away"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

const ARGS: &[&str] = &["--workers", "2", "--recv", "2000", "--busy", "2"];

fn all_tasks_seen_again(pid: u32) {
    let snap = Session::attach(pid)
        .unwrap()
        .snapshot(Mode::Concurrent)
        .unwrap();
    assert_eq!(snap.tasks.len(), 2003, "recv + busy + main after recovery");
}

#[test]
fn sigint_mid_walk_releases_the_target() {
    let t = Target::start("fixture", ARGS);
    let mut tool = stalled_tool(t.pid, "mid-walk");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tool.id() as i32),
        nix::sys::signal::SIGINT,
    )
    .unwrap();
    let st = tool.wait().unwrap();
    assert_eq!(st.code(), Some(130));
    all_tasks_seen_again(t.pid);
    exits_promptly(t);
}

#[test]
fn sigkill_mid_walk_never_wedges_the_target() {
    let t = Target::start("fixture", ARGS);
    let mut tool = stalled_tool(t.pid, "mid-walk");
    tool.kill().unwrap();
    tool.wait().unwrap();
    all_tasks_seen_again(t.pid);
    exits_promptly(t);
}

#[test]
fn sigkill_after_stw1_never_wedges_the_target() {
    let t = Target::start("fixture", ARGS);
    let mut tool = stalled_tool(t.pid, "after-stw1");
    tool.kill().unwrap();
    tool.wait().unwrap();
    all_tasks_seen_again(t.pid);
    exits_promptly(t);
}

/// The TID of the runtime's profile helper thread, by its name.
pub(crate) fn helper_tid(pid: u32) -> u32 {
    for e in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let tid: u32 = e.unwrap().file_name().to_str().unwrap().parse().unwrap();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"));
        if comm.is_ok_and(|c| c.trim() == "gprof-rt-helper") {
            return tid;
        }
    }
    panic!("no gprof-rt-helper thread in {pid}");
}

/// The runtime's helper, woken and then left with a ring nobody consumes (1 MiB, less
/// than 2000 records), fills it and waits for room; the profiler dies meanwhile. The
/// helper must notice (the lease), end the session and be back in service: a later
/// snapshot gets its records again, and the target exits normally.
#[test]
fn sigkill_while_the_helper_waits_for_ring_room_never_wedges_the_target() {
    let t = Target::start_with_env("fixture", ARGS, &[("GPROF_RT_RING_KB", "1024")]);
    let mut tool = stalled_tool_with(t.pid, "helper-woken", "always");
    // Woken before the tool said so, the helper is runnable until the ring is full; it
    // cannot finish (2000 records do not fit), so asleep means waiting for room.
    let helper = helper_tid(t.pid);
    let deadline = Instant::now() + Duration::from_secs(10);
    while gprof_rs::process::stop::thread_state(t.pid, helper) != Some('S') {
        assert!(
            Instant::now() < deadline,
            "the helper never filled the ring"
        );
        std::thread::yield_now();
    }
    tool.kill().unwrap();
    tool.wait().unwrap();
    // The helper is idle again once it has noticed: poll for that state, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = Session::attach(t.pid).unwrap();
        s.set_runtime_helper(gprof_rs::snapshot::HelperUse::Always);
        let snap = s.snapshot(Mode::Concurrent).unwrap();
        assert_eq!(snap.tasks.len(), 2003, "recv + busy + main after recovery");
        if snap.stats.recorded_runtime >= 1000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the helper never came back after its profiler died: {:?}",
            snap.stats
        );
    }
    exits_promptly(t);
}

/// The CPUs a thread may run on, as the kernel lists them.
pub(crate) fn cpus_allowed(pid: u32, tid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string()
}

/// In turns the helper keeps to the tool's CPU (`help_cpu`); the tool killed while the
/// helper waits there for room in the ring leaves it pinned no longer than the
/// session: once the runtime notices, the helper has its own CPU set back and records
/// the next session.
#[test]
fn sigkill_while_the_helper_is_kept_on_the_tools_cpu_leaves_it_unpinned() {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return; // one CPU: the pin would not show
    }
    let t = Target::start_with_env(
        "fixture",
        &["--workers", "2", "--recv", "2000"],
        &[("GPROF_RT_RING_KB", "1024")],
    );
    let helper = helper_tid(t.pid);
    let own = cpus_allowed(t.pid, helper);
    let mut tool = stalled_tool_with(t.pid, "helper-woken", "turns");
    // Woken before the tool said so, the helper pins itself, fills the ring and waits
    // for room, asleep: poll for that state, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pinned = cpus_allowed(t.pid, helper);
        let asleep = gprof_rs::process::stop::thread_state(t.pid, helper) == Some('S');
        if asleep && pinned.parse::<u32>().is_ok() && pinned != own {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the helper, asleep: {asleep}, may run on {pinned} (its own set: {own}), not on the tool's CPU alone"
        );
        std::thread::yield_now();
    }
    tool.kill().unwrap();
    tool.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cpus_allowed(t.pid, helper) != own {
        assert!(
            Instant::now() < deadline,
            "the helper stayed pinned after its profiler died"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut s = Session::attach(t.pid).unwrap();
    s.set_runtime_helper(gprof_rs::snapshot::HelperUse::Always);
    let snap = s.snapshot(Mode::Concurrent).unwrap();
    assert_eq!(snap.tasks.len(), 2001, "recv + main after recovery");
    assert!(snap.stats.recorded_runtime >= 1000, "{:?}", snap.stats);
    drop(s);
    assert_eq!(cpus_allowed(t.pid, helper), own);
    exits_promptly(t);
}

/// A profiler that is alive but silent (here: stalled holding a batch of tasks) costs the
/// target one lease, not one lease per held task: once the runtime has judged a heartbeat
/// value stale, every other task held in that session is taken back at once. Before
/// that, 128 held tasks met by 2 workers took 128 x 100 ms / 2 = 6.4 s to release.
#[test]
fn a_silent_profiler_costs_one_lease_not_one_per_held_task() {
    let mut t = Target::start("fixture", &["--workers", "2", "--recv", "2000"]);
    let mut tool = stalled_tool(t.pid, "mid-walk");
    let start = Instant::now();
    t.send("release");
    assert_eq!(t.read_line().trim(), "RELEASED");
    let took = start.elapsed();
    // A bound on wedging with a wide margin (lease 100 ms, HOLD_SPIN 1 ms per held task
    // and worker), not a speed figure.
    assert!(
        took < Duration::from_secs(3),
        "releasing 2000 tasks, a batch of them held by a silent profiler, took {took:?}"
    );
    tool.kill().unwrap();
    tool.wait().unwrap();
    exits_promptly(t);
}
