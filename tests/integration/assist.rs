//! Worker assists (abi docs, "Worker assists"): with every worker busy, the target's
//! workers record the parked tasks between their own instead of the tool, with the same
//! result as the tool's own walk; workers that never get to assist leave it to the tool.

use crate::helper::{waiting_stacks, ARGS as BUSY};
use crate::target::Target;
use gprof_rs::model::Snapshot;
use gprof_rs::snapshot::{AssistUse, HelperUse, Mode, Session};

fn snapshot(pid: u32, assist: AssistUse, helper: HelperUse) -> Snapshot {
    let mut session = Session::attach(pid).unwrap();
    session.set_assist(assist);
    session.set_runtime_helper(helper);
    session.snapshot(Mode::Concurrent).unwrap()
}

#[test]
fn parked_tasks_recorded_by_assisting_workers_match_the_tools_own_walk() {
    let mut t = Target::start("fixture", BUSY);
    let alone = snapshot(t.pid, AssistUse::Never, HelperUse::Never);
    assert_eq!(alone.stats.assist_covered, None);
    // 1500 recv + 300 sleep + 2 busy + main.
    assert_eq!(alone.tasks.len(), 1803);
    assert!(alone.stats.recorded_tool >= 1800, "{:?}", alone.stats);
    let expected = waiting_stacks(&alone);
    assert!(
        expected.len() >= 1800,
        "recv + sleep wait: {}",
        expected.len()
    );

    // Left to decide, the tool asks the busy workers. A worker the test machine keeps
    // off its CPU for a few ms makes the tool walk as well (the workers "stalled"), so
    // the path where they cover everything is asked of only one try in five.
    let mut covered = 0;
    for _ in 0..5 {
        let a = snapshot(t.pid, AssistUse::Auto, HelperUse::Auto);
        let Some(all) = a.stats.assist_covered else {
            panic!(
                "every worker was busy, yet no assist was asked: {:?}",
                a.stats
            );
        };
        assert_eq!(a.tasks.len(), 1803);
        assert_eq!(a.stats.helper_alongside, None, "the helper was woken too");
        // The same stacks, frame for frame, whoever copied them.
        assert_eq!(waiting_stacks(&a), expected);
        if all {
            covered += 1;
            assert_eq!(a.stats.recorded_tool, 0, "{:?}", a.stats);
            assert!(a.stats.recorded_runtime >= 1800, "{:?}", a.stats);
        }
    }
    assert!(covered > 0, "the workers never covered the table");
    t.send("exit");
    assert!(t.finish().success());
}

/// Idle workers sleep: nobody would assist, so the tool does not ask, and when told to
/// ask anyway it waits for progress only briefly, then walks every slot itself.
#[test]
fn idle_workers_are_not_asked_and_a_stalled_assist_leaves_the_walk_to_the_tool() {
    let mut t = Target::start("fixture", &["--workers", "2", "--recv", "1500"]);
    let auto = snapshot(t.pid, AssistUse::Auto, HelperUse::Never);
    assert_eq!(auto.stats.assist_covered, None, "{:?}", auto.stats);
    assert_eq!(auto.tasks.len(), 1501);

    let asked = snapshot(t.pid, AssistUse::Always, HelperUse::Never);
    assert_eq!(asked.stats.assist_covered, Some(false), "{:?}", asked.stats);
    assert_eq!(asked.tasks.len(), 1501);
    assert!(asked.stats.recorded_tool >= 1500, "{:?}", asked.stats);
    assert_eq!(waiting_stacks(&asked), waiting_stacks(&auto));
    t.send("exit");
    assert!(t.finish().success());
}

/// A helper asked for by name is used instead of assists, busy workers or not.
#[test]
fn a_helper_asked_for_by_name_is_used_instead() {
    let mut t = Target::start("fixture", BUSY);
    let a = snapshot(t.pid, AssistUse::Auto, HelperUse::Always);
    assert_eq!(a.stats.assist_covered, None, "{:?}", a.stats);
    assert!(a.stats.helper_alongside.is_some(), "{:?}", a.stats);
    assert_eq!(a.tasks.len(), 1803);
    t.send("exit");
    assert!(t.finish().success());
}
