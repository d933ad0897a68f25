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
    let mut tool = gprof_rs()
        .args(["attach", &pid.to_string()])
        .env("GPROF_FAILPOINT", point)
        // The runtime's helper would leave the tool's walk nothing to hold.
        .env("GPROF_RS_HELPER", "never")
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
