//! `attach` against live targets: exact task counts, frames, states, labels.

use crate::target::{gprof_rs, Target};
use gprof_abi::{TaskState, WaitReason};
use gprof_rs::model::Snapshot;
use gprof_rs::snapshot::{Mode, Session};
use gprof_rs::symbolize::Symbolizer;
use gprof_rs::unwind::ProcFiles;
use std::collections::BTreeMap;

/// Function names of every frame of a task, innermost first (inlined frames included).
fn frames(snap: &Snapshot, sym: &mut Symbolizer, stack: u32) -> Vec<String> {
    let st = snap.stacks.get(stack);
    let mut out = Vec::new();
    for (i, &a) in st.addrs.iter().enumerate() {
        for f in sym.lookup(a, i > 0) {
            out.push(f.function.clone());
        }
    }
    out
}

fn short(f: &str) -> &str {
    f.rsplit("::").next().unwrap_or(f)
}

/// Which fixture group a task belongs to, from its frames.
fn group(fr: &[String]) -> &'static str {
    let has = |n: &str| fr.iter().any(|f| short(f) == n);
    if has("recv_outer") {
        // Exactly the call chain the fixture built, in order.
        let pos = |n: &str| fr.iter().position(|f| short(f) == n).unwrap();
        assert!(
            pos("recv_leaf") < pos("recv_middle") && pos("recv_middle") < pos("recv_outer"),
            "{fr:?}"
        );
        "recv"
    } else if has("sleep_leaf") {
        "sleep"
    } else if has("mutex_leaf") {
        "mutex"
    } else if has("join_leaf") {
        "join"
    } else if has("joined_target") {
        "joined"
    } else if has("labeled_leaf") {
        "labeled"
    } else if has("busy_leaf") {
        "busy"
    } else if has("serve") {
        "main"
    } else {
        "other"
    }
}

const ARGS: &[&str] = &[
    "--workers",
    "2",
    "--recv",
    "1000",
    "--sleep",
    "500",
    "--mutex",
    "300",
    "--join",
    "200",
    "--labeled",
    "100",
    "--busy",
    "2",
];

fn check_fixture_snapshot(mode: Mode) {
    let t = Target::start("fixture", ARGS);
    let mut session = Session::attach(t.pid).expect("attach");
    let snap = session.snapshot(mode).expect("snapshot");
    drop(session);
    let mut sym = Symbolizer::new(ProcFiles { pid: t.pid });
    sym.set_modules(&snap.modules);

    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut ids = std::collections::HashSet::new();
    for task in &snap.tasks {
        assert!(ids.insert(task.id), "task {} reported twice", task.id);
        let fr = frames(&snap, &mut sym, task.stack);
        let g = group(&fr);
        *counts.entry(g).or_default() += 1;
        // Every stack ends at the task's entry trampoline, never in the scheduler.
        assert!(
            !snap.stacks.get(task.stack).incomplete,
            "task {} ({g}) stack incomplete: {fr:?}",
            task.id
        );
        assert_eq!(
            fr.last().map(String::as_str),
            Some("gprof_rt_task_entry"),
            "task {} ({g}): {fr:?}",
            task.id
        );
        assert!(!fr.iter().any(|f| f.contains("worker_main")), "{fr:?}");
        let (want_state, want_reason) = match g {
            "recv" | "labeled" | "joined" => (TaskState::WAITING, WaitReason::CHAN_RECV),
            "sleep" => (TaskState::WAITING, WaitReason::SLEEP),
            "mutex" => (TaskState::WAITING, WaitReason::MUTEX),
            "join" => (TaskState::WAITING, WaitReason::JOIN),
            _ => (task.state, task.wait_reason),
        };
        assert_eq!(
            (task.state, task.wait_reason),
            (want_state, want_reason),
            "task {} ({g})",
            task.id
        );
        if g == "labeled" {
            assert_eq!(
                task.labels().to_vec(),
                vec![
                    ("group".into(), "labeled".into()),
                    ("tier".into(), "gold".into())
                ]
            );
        } else if g != "main" {
            assert!(
                task.labels().is_empty(),
                "task {} ({g}) has labels {:?}",
                task.id,
                task.labels()
            );
        }
        if g == "busy" {
            assert!(
                task.state == TaskState::RUNNING || task.state == TaskState::RUNNABLE,
                "busy task state {}",
                task.state
            );
        }
    }
    let expect: BTreeMap<&str, usize> = [
        ("recv", 1000),
        ("sleep", 500),
        ("mutex", 300),
        ("join", 200),
        ("joined", 200),
        ("labeled", 100),
        ("busy", 2),
        ("main", 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(counts, expect);
    assert_eq!(snap.tasks.len(), 2303);
    assert_eq!(
        t.finish().code(),
        Some(0),
        "the fixture ran on and exited cleanly"
    );
}

#[test]
fn concurrent_snapshot_has_every_task_with_its_exact_stack() {
    check_fixture_snapshot(Mode::Concurrent);
}

#[test]
fn stw_snapshot_has_every_task_with_its_exact_stack() {
    check_fixture_snapshot(Mode::StopTheWorld);
}

/// Frames of C compiled with `-O2 -fomit-frame-pointer` in the middle of a task's stack
/// unwind through their DWARF CFI: the stack continues past them to the Rust caller
/// and ends at the task entry.
#[test]
fn c_frames_without_frame_pointers_unwind() {
    let t = Target::start("fixture", &["--workers", "2", "--cgo", "20"]);
    let snap = Session::attach(t.pid)
        .unwrap()
        .snapshot(Mode::Concurrent)
        .unwrap();
    let mut sym = Symbolizer::new(ProcFiles { pid: t.pid });
    sym.set_modules(&snap.modules);
    let mut seen = 0;
    for task in &snap.tasks {
        let fr = frames(&snap, &mut sym, task.stack);
        if !fr.iter().any(|f| short(f) == "cgo_leaf") {
            continue;
        }
        seen += 1;
        let names: Vec<&str> = fr.iter().map(|f| short(f)).collect();
        let leaf = names.iter().position(|&f| f == "cgo_leaf").unwrap();
        let caller = names
            .iter()
            .position(|&f| f == "cgo_caller")
            .expect("caller frame");
        let c_frames = names[leaf..caller]
            .iter()
            .filter(|&&f| f == "gprof_rt_c_middle")
            .count();
        assert_eq!(c_frames, 3, "{names:?}");
        assert!(!snap.stacks.get(task.stack).incomplete, "{names:?}");
        assert_eq!(names.last(), Some(&"gprof_rt_task_entry"), "{names:?}");
    }
    assert_eq!(seen, 20);
}

#[test]
fn cli_tasks_format_shows_states_waits_and_creators() {
    let t = Target::start(
        "fixture",
        &["--workers", "2", "--recv", "3", "--sleep", "2"],
    );
    let out = gprof_rs()
        .args(["attach", &t.pid.to_string(), "--format", "tasks"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("[chan receive").count(), 3, "{text}");
    assert_eq!(text.matches("[sleep").count(), 2, "{text}");
    assert!(text.contains("recv_leaf"), "{text}");
    assert!(text.contains("created by "), "{text}");
    assert!(text.contains("fixture.rs:"), "{text}");
}

#[test]
fn cli_errors_are_one_line_with_distinct_codes() {
    let out = gprof_rs().args(["attach", "999999999"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // A live process that does not contain the runtime.
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let out = gprof_rs()
        .args(["attach", &sleeper.id().to_string()])
        .output()
        .unwrap();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("no target-runtime found in PID"), "{err}");
}
