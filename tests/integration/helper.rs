//! The runtime's profile helper (abi docs, "Profile helper"): in a one-shot snapshot the
//! runtime records its parked tasks itself, with the same result as the tool's own walk;
//! and the arena's pages go back to the kernel once nobody has profiled for a while.

use crate::target::Target;
use gprof_rs::model::Snapshot;
use gprof_rs::snapshot::{HelperUse, Mode, Session};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Two workers, both kept busy by a task that yields every few microseconds, and 1800
/// parked tasks.
pub(crate) const ARGS: &[&str] = &[
    "--workers",
    "2",
    "--recv",
    "1500",
    "--sleep",
    "300",
    "--busy",
    "2",
];

/// Frames (return addresses) of every waiting task, by task id.
pub(crate) fn waiting_stacks(s: &Snapshot) -> BTreeMap<u64, Vec<u64>> {
    s.tasks
        .iter()
        .filter(|t| t.state == gprof_abi::TaskState::WAITING)
        .map(|t| (t.id, s.stacks.get(t.stack).addrs.clone()))
        .collect()
}

#[test]
fn parked_tasks_recorded_by_the_helper_match_the_tools_own_walk() {
    let mut t = Target::start("fixture", ARGS);
    let mut helped = Session::attach(t.pid).unwrap();
    helped.set_runtime_helper(HelperUse::Always);
    let a = helped.snapshot(Mode::Concurrent).unwrap();
    drop(helped);
    let mut alone = Session::attach(t.pid).unwrap();
    alone.set_runtime_helper(HelperUse::Never);
    let b = alone.snapshot(Mode::Concurrent).unwrap();
    drop(alone);

    // 1500 recv + 300 sleep + 2 busy + main.
    assert_eq!(a.tasks.len(), 1803);
    assert_eq!(b.tasks.len(), 1803);
    // The helper took most parked tasks (the tool walks too once the helper makes no
    // progress for a moment, which a loaded test machine can cause); without it the
    // tool took them all.
    assert!(
        a.stats.recorded_runtime >= 900,
        "helper recorded only {} tasks ({:?})",
        a.stats.recorded_runtime,
        a.stats
    );
    assert!(b.stats.recorded_tool >= 1800, "{:?}", b.stats);
    // The same stacks, frame for frame, whoever copied them.
    let (wa, wb) = (waiting_stacks(&a), waiting_stacks(&b));
    assert!(wa.len() >= 1800, "recv + sleep wait: {}", wa.len());
    assert_eq!(wa, wb);
    t.send("exit");
    assert!(t.finish().success());
}

/// More records than the ring holds: the helper wraps around it and waits for the tool
/// to make room (abi docs, "Profile helper"), and nothing is lost or doubled on the way.
#[test]
fn records_through_a_ring_smaller_than_the_snapshot_are_all_there() {
    let mut t = Target::start_with_env("fixture", ARGS, &[("GPROF_RT_RING_KB", "1024")]);
    let mut alone = Session::attach(t.pid).unwrap();
    alone.set_runtime_helper(HelperUse::Never);
    let b = alone.snapshot(Mode::Concurrent).unwrap();
    drop(alone);
    // The ring's positions carry on across sessions, so each snapshot wraps at other
    // offsets (a record ending less than a header before the ring's end, for one).
    for i in 0..10 {
        // Both ways of sharing the ring: read while the helper writes, and in turns.
        let mut session = Session::attach(t.pid).unwrap();
        session.set_runtime_helper(if i % 2 == 0 {
            HelperUse::Alongside
        } else {
            HelperUse::InTurns
        });
        let a = session.snapshot(Mode::Concurrent).unwrap();
        drop(session);
        assert!(a.stats.recorded_runtime >= 900, "{:?}", a.stats);
        assert_eq!(a.tasks.len(), 1803);
        // More than the 1 MiB ring holds at once went through it.
        assert!(a.stats.runtime_bytes > 1 << 20, "{:?}", a.stats);
        assert_eq!(waiting_stacks(&a), waiting_stacks(&b));
    }
    t.send("exit");
    assert!(t.finish().success());
}

/// In turns the helper keeps to the tool's CPU for the session (`help_cpu`), and has
/// its own CPU set back once the snapshot returns: the target is left as it was.
#[test]
fn in_turns_the_helper_works_on_the_tools_cpu_and_gets_its_cpus_back() {
    let mut t = Target::start("fixture", &["--workers", "2", "--recv", "1500"]);
    let helper = crate::lease::helper_tid(t.pid);
    let before = crate::lease::cpus_allowed(t.pid, helper);
    for _ in 0..3 {
        let mut session = Session::attach(t.pid).unwrap();
        session.set_runtime_helper(HelperUse::InTurns);
        let a = session.snapshot(Mode::Concurrent).unwrap();
        drop(session);
        assert_eq!(a.tasks.len(), 1501);
        assert!(a.stats.recorded_runtime >= 900, "{:?}", a.stats);
        assert_eq!(a.stats.helper_alongside, Some(false));
        assert_eq!(crate::lease::cpus_allowed(t.pid, helper), before);
    }
    t.send("exit");
    assert!(t.finish().success());
}

/// Bytes the kernel holds for the target's shared region (the memfd), from its
/// `/proc/PID/fd` link.
fn region_bytes(pid: u32) -> u64 {
    use std::os::unix::fs::MetadataExt;
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let p = e.unwrap().path();
        let link = std::fs::read_link(&p).unwrap_or_default();
        if link.to_string_lossy().starts_with("/memfd:gprof-rt-tasks") {
            return std::fs::metadata(&p).unwrap().blocks() * 512;
        }
    }
    panic!("no gprof-rt-tasks memfd in /proc/{pid}/fd");
}

/// A snapshot with the runtime's helper on, which recorded most tasks.
fn helped_snapshot(pid: u32) -> Snapshot {
    let mut session = Session::attach(pid).unwrap();
    session.set_runtime_helper(HelperUse::Always);
    let snap = session.snapshot(Mode::Concurrent).unwrap();
    assert!(snap.stats.recorded_runtime >= 900, "{:?}", snap.stats);
    snap
}

/// Wait until the region holds fewer than `bytes`: for the state, bounded, rather than
/// for a time.
fn given_back(pid: u32, bytes: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while region_bytes(pid) >= bytes {
        assert!(
            Instant::now() < deadline,
            "arena still allocated: {} bytes, expected under {bytes}",
            region_bytes(pid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_arena_is_given_back_once_nobody_profiles() {
    let mut t = Target::start_with_env("fixture", ARGS, &[("GPROF_RT_ARENA_KEEP_MS", "100")]);
    let before = region_bytes(t.pid);
    let snap = helped_snapshot(t.pid);
    let after = region_bytes(t.pid);
    // Each record holds at least a header, the slot's fixed fields and some stack.
    let records = snap.stats.recorded_runtime * 240;
    assert!(
        after >= before + records,
        "the arena grew {} bytes for {} records",
        after - before,
        snap.stats.recorded_runtime
    );
    // Two quiet periods (the first one sees the session), then the punch.
    given_back(t.pid, before + records);
    // And a snapshot afterwards still works, from a fresh arena.
    let again = Session::attach(t.pid)
        .unwrap()
        .snapshot(Mode::Concurrent)
        .unwrap();
    assert_eq!(again.tasks.len(), 1803);
    t.send("exit");
    assert!(t.finish().success());
}

#[test]
fn a_profiler_arriving_while_the_arena_is_given_back_gets_the_lease() {
    let mut t = Target::start_with_env("fixture", ARGS, &[("GPROF_RT_ARENA_KEEP_MS", "50")]);
    let before = region_bytes(t.pid);
    let snap = helped_snapshot(t.pid);
    // The runtime gives the arena back in steps, each under a shared lock on the memfd
    // that conflicts with a profiler's lease: attaching over and over across that time
    // must always get the lease (never "another profiler is active").
    let until = Instant::now() + Duration::from_millis(1500);
    let mut attaches = 0;
    while Instant::now() < until {
        let s = Session::attach(t.pid).unwrap_or_else(|e| panic!("attach #{attaches}: {e}"));
        drop(s);
        attaches += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    // Left alone, the runtime finishes giving it back.
    given_back(t.pid, before + snap.stats.recorded_runtime * 240);
    t.send("exit");
    assert!(t.finish().success());
}
