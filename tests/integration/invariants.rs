//! DESIGN section 4, invariants 1-3 and 7, against live targets that never hold still.
//!
//! * `churn` (target-runtime/examples/churn.rs): phase tasks that log the session
//!   generation they read and then park at a depth chosen for that phase, plus spawners
//!   that create and end short-lived tasks continuously. Every snapshot must hold each
//!   task alive at STW 1 once, no task born later, and each parked phase task at exactly
//!   the depth it had at STW 1.
//! * `syscalls` (target-runtime/examples/syscalls.rs): threads blocked in read(2), futex,
//!   epoll_wait and sigtimedwait, and sleeping tasks, under 200 snapshots: no EINTR where
//!   the kernel restarts the call, handled EINTR where it does not, no early or lost timer.

use crate::target::Target;
use gprof_abi::TaskState;
use gprof_rs::model::{RecordedBy, Snapshot};
use gprof_rs::snapshot::{AssistUse, HelperUse, Mode, Session};
use gprof_rs::symbolize::Symbolizer;
use gprof_rs::unwind::ProcFiles;
use std::collections::{BTreeMap, HashMap};

/// Function names of every frame of a stack, innermost first (inlined frames included).
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

/// One phase task's log from churn's `dump`.
struct PhaseLog {
    phases: u64,
    errors: u64,
    /// `(generation, last phase that read it, that phase's depth)`, generations ascending.
    entries: Vec<(u64, u64, u32)>,
}

impl PhaseLog {
    /// Depth the task must show in a snapshot of generation `g` if it was parked at
    /// STW 1: the depth of the last phase that read a generation older than `g`.
    fn expected(&self, g: u64) -> Option<(u64, u32)> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.0 < g)
            .map(|e| (e.1, e.2))
    }
}

struct Dump {
    spawned: u64,
    completed: u64,
    expected_sum: u64,
    sum: u64,
    phases: BTreeMap<u64, PhaseLog>,
}

fn read_dump(t: &mut Target) -> Dump {
    t.send("dump");
    let mut d = Dump {
        spawned: 0,
        completed: 0,
        expected_sum: 0,
        sum: 0,
        phases: BTreeMap::new(),
    };
    loop {
        let line = t.read_line();
        assert!(!line.is_empty(), "churn ended before END");
        let mut w = line.split_whitespace();
        let num = |s: Option<&str>| -> u64 {
            s.and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("bad line {line:?}"))
        };
        match w.next() {
            Some("END") => return d,
            Some("CHURN") => {
                d.spawned = num(w.next());
                d.completed = num(w.next());
                d.expected_sum = num(w.next());
                d.sum = num(w.next());
            }
            Some("PHASE") => {
                let id = num(w.next());
                let phases = num(w.next());
                let errors = num(w.next());
                let entries = w
                    .map(|e| {
                        let v: Vec<u64> = e.split(':').map(|x| num(Some(x))).collect();
                        (v[0], v[1], v[2] as u32)
                    })
                    .collect();
                d.phases.insert(
                    id,
                    PhaseLog {
                        phases,
                        errors,
                        entries,
                    },
                );
            }
            _ => panic!("unexpected line from churn: {line:?}"),
        }
    }
}

/// Counters over all snapshots, to show that every path was exercised.
#[derive(Default, Debug)]
struct Seen {
    depth_checked: BTreeMap<&'static str, u64>,
    live_running: u64,
    children: u64,
    unstarted: u64,
}

fn by_name(by: RecordedBy) -> &'static str {
    match by {
        RecordedBy::StopTheWorld => "stw",
        RecordedBy::Tool => "tool",
        RecordedBy::Runtime => "runtime",
    }
}

fn check_snapshot(
    n: usize,
    mode: Mode,
    snap: &Snapshot,
    dump: &Dump,
    sym: &mut Symbolizer,
    seen: &mut Seen,
) {
    let g = snap.stats.generation;
    let cut = snap.stats.id_cutoff;
    let at = format!("snapshot #{n} ({mode:?}, generation {g}, id cutoff {cut})");
    let st = &snap.stats;
    // The engine sorts and deduplicates by id; the per-path counters count every record
    // it made, so a task recorded twice shows up here even though the list hides it.
    assert_eq!(
        st.recorded_stw + st.recorded_tool + st.recorded_runtime,
        snap.tasks.len() as u64,
        "{at}: records made (stw {} + tool {} + runtime {}) != tasks reported {}: a task was recorded twice",
        st.recorded_stw,
        st.recorded_tool,
        st.recorded_runtime,
        snap.tasks.len()
    );
    let mut ids: HashMap<u64, String> = HashMap::new();
    let mut cache: HashMap<u32, Vec<String>> = HashMap::new();
    for task in &snap.tasks {
        let id = task.id;
        assert!(
            id < cut,
            "{at}: task {id} was born after STW 1 (ids from {cut} on are newer) but was reported"
        );
        assert_ne!(
            task.state,
            TaskState::DEAD,
            "{at}: task {id} is dead but was reported"
        );
        let fr = cache
            .entry(task.stack)
            .or_insert_with(|| frames(snap, sym, task.stack))
            .clone();
        let how = by_name(task.recorded_by);
        let what = format!(
            "{at}: task {id} (recorded by {how}, state {})",
            TaskState::name(task.state)
        );
        if let Some(first) = ids.insert(id, format!("{what}: {fr:?}")) {
            panic!("{at}: task {id} reported twice: {first} and {what}: {fr:?}");
        }
        assert!(
            !snap.stacks.get(task.stack).incomplete,
            "{what}: stack incomplete: {fr:?}"
        );
        assert_eq!(
            fr.last().map(String::as_str),
            Some("gprof_rt_task_entry"),
            "{what}: stack does not end at the task entry: {fr:?}"
        );
        assert!(
            !fr.iter().any(|f| f.contains("worker_main")),
            "{what}: scheduler frame in a task's stack: {fr:?}"
        );
        let has = |name: &str| fr.iter().any(|f| short(f) == name);
        let live = task.recorded_by == RecordedBy::StopTheWorld && task.state == TaskState::RUNNING;
        if live {
            seen.live_running += 1;
        }
        if let Some(log) = dump.phases.get(&id) {
            assert!(
                has("phase_main"),
                "{what}: phase task without phase_main: {fr:?}"
            );
            if live {
                // Running at STW 1: anywhere in its phase, recorded from its registers.
                continue;
            }
            let depth = fr.iter().filter(|f| short(f) == "phase_frame").count() as u32;
            let (k, want) = log.expected(g).unwrap_or_else(|| {
                panic!(
                    "{what}: the task logged no phase before generation {g}: {:?}",
                    log.entries
                )
            });
            assert_eq!(
                depth, want,
                "{what}: parked at STW 1 in phase {k} at depth {want}, but the snapshot shows depth {depth} \
                 (it ran after STW 1 before it was recorded); log {:?}; frames {fr:?}",
                log.entries
            );
            *seen.depth_checked.entry(how).or_default() += 1;
        } else if has("churn_child") {
            seen.children += 1;
        } else if has("spawner_main") || has("serve") || (live && has("task_main")) {
            // Spawners and main; or a task running at STW 1 in the runtime's task
            // prologue or epilogue (before or after its closure).
        } else if live {
            // Running at STW 1 inside the switch into a child's first instruction.
            assert!(fr.len() <= 2, "{what}: unknown task: {fr:?}");
        } else {
            // A child that had not run yet: only the entry trampoline's first frame.
            assert_eq!(
                task.state,
                TaskState::RUNNABLE,
                "{what}: unknown task: {fr:?}"
            );
            assert!(fr.len() <= 2, "{what}: unknown task: {fr:?}");
            seen.unstarted += 1;
        }
    }
    for &id in dump.phases.keys() {
        assert!(
            ids.contains_key(&id),
            "{at}: phase task {id} (alive throughout) is missing"
        );
    }
}

#[test]
fn churn_every_task_alive_at_stw1_appears_once_with_its_stw1_stack() {
    churn(None, false);
}

/// The same with `Session::set_reuse_unchanged` (what `record` and `top` use): phase
/// tasks that nap across several snapshots are recorded from an earlier snapshot's stack,
/// and every one of those stacks must still be the depth of the phase the task was in at
/// STW 1 — a task that ran in between (and changed depth) must not be reused.
#[test]
fn churn_with_stacks_reused_across_snapshots() {
    churn(None, true);
}

/// The same checks for 30 s of back-to-back snapshots (`GPROF_CHURN_SECS`; .ci/run runs
/// it for a shorter time).
#[test]
#[ignore = "30 s; run with --ignored (GPROF_CHURN_SECS to change the duration)"]
fn churn_for_30s_every_task_alive_at_stw1_appears_once_with_its_stw1_stack() {
    let secs = std::env::var("GPROF_CHURN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    churn(Some(std::time::Duration::from_secs(secs)), false);
}

/// 36 snapshots, or as many as `duration` allows (at least 36).
fn churn(duration: Option<std::time::Duration>, reuse: bool) {
    let t0 = std::time::Instant::now();
    let mut args = vec![
        "--workers",
        "2",
        "--phase",
        "200",
        "--spawners",
        "4",
        "--inflight",
        "128",
    ];
    if reuse {
        args.extend(["--nap", "3"]);
    }
    let mut t = Target::start("churn", &args);
    let mut session = Session::attach(t.pid).expect("attach");
    session.set_reuse_unchanged(reuse);
    let mut snaps = Vec::new();
    let mut i = 0;
    while i < 36 || duration.is_some_and(|d| t0.elapsed() < d) {
        let mode = if i % 6 == 5 {
            Mode::StopTheWorld
        } else {
            Mode::Concurrent
        };
        // Every other snapshot without the runtime's profile helper, so that the tool's
        // own walk records parked tasks too (with it, the helper records them, its ring
        // read alongside or in turns).
        // One in four asks the workers to assist (abi docs, "Worker assists").
        session.set_runtime_helper(match i % 4 {
            0 => HelperUse::Alongside,
            2 => HelperUse::InTurns,
            3 => HelperUse::Auto,
            _ => HelperUse::Never,
        });
        session.set_assist(if i % 4 == 3 {
            AssistUse::Always
        } else {
            AssistUse::Never
        });
        let snap = session
            .snapshot(mode)
            .unwrap_or_else(|e| panic!("snapshot #{i} ({mode:?}): {e}"));
        snaps.push((mode, snap));
        i += 1;
    }
    drop(session);
    let dump = read_dump(&mut t);
    assert_eq!(
        dump.phases.len(),
        200,
        "churn reported {} phase tasks",
        dump.phases.len()
    );
    assert_eq!(
        dump.spawned, dump.completed,
        "churn children lost: spawned {} completed {}",
        dump.spawned, dump.completed
    );
    assert_eq!(
        dump.sum, dump.expected_sum,
        "churn children computed a wrong sum"
    );
    for (id, log) in &dump.phases {
        assert_eq!(
            log.errors, 0,
            "phase task {id}: {} recursions returned a wrong value",
            log.errors
        );
        assert!(log.phases > 0, "phase task {id} made no progress");
    }

    let mut sym = Symbolizer::new(ProcFiles { pid: t.pid });
    sym.set_modules(&snaps[0].1.modules);
    let mut seen = Seen::default();
    let mut last_gen = 0;
    for (n, (mode, snap)) in snaps.iter().enumerate() {
        assert!(
            snap.stats.generation > last_gen,
            "snapshot #{n}: generation did not advance"
        );
        last_gen = snap.stats.generation;
        check_snapshot(n, *mode, snap, &dump, &mut sym, &mut seen);
    }
    let total = |f: fn(&gprof_rs::model::SnapshotStats) -> u64| -> u64 {
        snaps
            .iter()
            .filter(|(m, _)| *m == Mode::Concurrent)
            .map(|(_, s)| f(&s.stats))
            .sum()
    };
    eprintln!(
        "churn: {} snapshots; children spawned {}; per snapshot tasks {:?}; concurrent records: stw {} tool {} runtime {}; {seen:?}",
        snaps.len(),
        dump.spawned,
        snaps.iter().map(|(_, s)| s.tasks.len()).collect::<Vec<_>>(),
        total(|s| s.recorded_stw),
        total(|s| s.recorded_tool),
        total(|s| s.recorded_runtime),
    );
    // Snapshots where the helper's pass covered the table and the tool walked only the
    // slots it left: the checks above hold on that path too, and it must be taken.
    let trusted: Vec<u64> = snaps
        .iter()
        .filter_map(|(_, s)| s.stats.helper_leftovers)
        .collect();
    eprintln!(
        "churn: {} snapshots walked only the helper's leftovers ({} slots in all)",
        trusted.len(),
        trusted.iter().sum::<u64>()
    );
    // Snapshots where the workers' assists covered the table and the tool walked none.
    let covered = snaps
        .iter()
        .filter(|(_, s)| s.stats.assist_covered == Some(true))
        .count();
    eprintln!("churn: {covered} snapshots recorded by assisting workers alone");
    if !reuse {
        assert!(
            !trusted.is_empty(),
            "no helper pass was trusted: the path is untested"
        );
        assert!(
            covered > 0,
            "no assisted pass covered the table: the path is untested"
        );
    }
    if reuse {
        let reused = total(|s| s.reused);
        assert!(reused > 0, "no stack was reused across snapshots");
        eprintln!("churn: {reused} task records reused from an earlier snapshot");
    } else {
        assert_eq!(total(|s| s.reused), 0, "reuse was off");
    }
    // The test means something only if every recording path was taken.
    for how in ["tool", "runtime", "stw"] {
        assert!(
            seen.depth_checked.get(how).copied().unwrap_or(0) > 0,
            "no phase task's depth was checked on the {how} path: {seen:?}"
        );
    }
    assert!(
        seen.live_running > 0,
        "no task was running at STW 1 in any snapshot: {seen:?}"
    );
    assert!(
        seen.children > 0,
        "no churn child was in any snapshot: {seen:?}"
    );
    t.send("exit");
    assert_eq!(
        t.finish().code(),
        Some(0),
        "churn ran on and exited cleanly"
    );
}

fn read_counters(t: &mut Target) -> BTreeMap<String, u64> {
    t.send("report");
    let line = t.read_line();
    let rest = line
        .strip_prefix("COUNTERS ")
        .unwrap_or_else(|| panic!("syscalls said {line:?} instead of COUNTERS"));
    let counters = rest
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| panic!("bad counter {kv:?}"));
            (
                k.to_string(),
                v.parse().unwrap_or_else(|_| panic!("bad counter {kv:?}")),
            )
        })
        .collect();
    assert_eq!(t.read_line().trim(), "END");
    counters
}

#[test]
fn blocked_syscalls_see_no_eintr_and_timers_are_exact_over_200_snapshots() {
    const SLEEPERS: usize = 40;
    let mut t = Target::start("syscalls", &["--workers", "2", "--sleepers", "40"]);
    let mut session = Session::attach(t.pid).expect("attach");
    for i in 0..200 {
        let snap = session
            .snapshot(Mode::Concurrent)
            .unwrap_or_else(|e| panic!("snapshot #{i}: {e}"));
        // The sleepers and main, every time: none lost while they sleep and wake.
        assert_eq!(
            snap.tasks.len(),
            SLEEPERS + 1,
            "snapshot #{i}: task ids {:?}",
            snap.tasks.iter().map(|t| t.id).collect::<Vec<_>>()
        );
    }
    drop(session);
    let c = read_counters(&mut t);
    let get = |k: &str| {
        *c.get(k)
            .unwrap_or_else(|| panic!("no counter {k} in {c:?}"))
    };
    eprintln!(
        "syscalls after 200 snapshots: EINTR handled by retrying with the timeout recomputed: \
         epoll_wait {} (of {} timed waits), sigtimedwait {} (of {} timed waits, {} signals); \
         kernel timeouts before the deadline (waited out): epoll {} sigtimedwait {}; all: {c:?}",
        get("epoll_eintr"),
        get("epoll_waits"),
        get("sig_eintr"),
        get("sig_waits"),
        get("sig_received"),
        get("epoll_raw_early"),
        get("sig_raw_early"),
    );
    // Calls the kernel restarts transparently after a ptrace stop: no trace of the stops.
    for k in [
        "read_eintr",
        "read_other_errors",
        "futex_eintr",
        "futex_spurious",
        "futex_timed_eintr",
        "futex_timed_early",
    ] {
        assert_eq!(get(k), 0, "{k}: {c:?}");
    }
    assert_eq!(
        get("read_bytes"),
        1,
        "the blocked read got exactly the byte sent at the end"
    );
    assert!(get("futex_timed_waits") > 0, "{c:?}");
    // Calls that do return EINTR: the wrappers retry, so no wait ends before its deadline.
    assert_eq!(
        get("epoll_early"),
        0,
        "an epoll wait ended before its deadline: {c:?}"
    );
    assert_eq!(
        get("sig_early"),
        0,
        "a sigtimedwait ended before its deadline: {c:?}"
    );
    // Waits completed (the target announced READY only after one of each); a
    // sigtimedwait usually ends with a signal (one is queued about every millisecond).
    assert!(
        get("epoll_waits") > 0 && get("sig_waits") + get("sig_received") > 0,
        "{c:?}"
    );
    // Signals: none lost, none duplicated.
    assert_eq!(get("sig_other"), 0, "{c:?}");
    assert!(get("sig_sent") > 0, "{c:?}");
    assert_eq!(
        get("sig_received"),
        get("sig_sent"),
        "real-time signals lost or duplicated: {c:?}"
    );
    // Timers: never early, never lost.
    assert_eq!(
        get("sleeps_early"),
        0,
        "a sleep ended before its duration: {c:?}"
    );
    assert!(get("sleeps_started") > 0, "{c:?}");
    assert_eq!(
        get("sleeps_completed"),
        get("sleeps_started"),
        "sleeps begun but never ended (lost wakeups): {c:?}"
    );
    t.send("exit");
    assert_eq!(
        t.finish().code(),
        Some(0),
        "syscalls ran on and exited cleanly"
    );
}
