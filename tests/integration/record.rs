//! `gprof-rs record` against live targets: exact sample counts (the fixture's
//! population is fixed, so every snapshot sees every task), the state split, every
//! output format, Ctrl-C, the target exiting, and launch mode (`-- CMD`).
//!
//! Synchronisation is by the tool's own stderr lines (`recording PID ...` after the
//! first snapshot, `wrote FILE` after the output) and the fixture's `READY`, never by
//! sleeping; no assertion depends on timing.

use crate::target::{examples_dir, gprof_rs, Target};
use flate2::read::GzDecoder;
use gprof_rs::output::pprof_proto::Profile;
use prost::Message;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The shared 40-task fixture population (see `target::SMALL_FIXTURE`).
const FIXTURE: &[&str] = crate::target::SMALL_FIXTURE;
const TASKS: i64 = 20 + 10 + 5 + 4 + 1;

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gprof-rs-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn read_pprof(path: &Path) -> Profile {
    let mut bytes = Vec::new();
    GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut bytes)
        .unwrap();
    Profile::decode(&bytes[..]).unwrap()
}

fn s(p: &Profile, i: i64) -> &str {
    &p.string_table[i as usize]
}

/// Number of snapshots, from the profile's first comment.
fn snapshots(p: &Profile) -> i64 {
    let c = s(p, p.comment[0]);
    let n = c.split(": ").nth(1).and_then(|r| r.split(' ').next());
    n.and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no snapshot count in comment {c:?}"))
}

/// Sum of value `index` over samples, grouped by the value of label `key`.
fn by_label(p: &Profile, key: &str, index: usize) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for sample in &p.sample {
        for l in &sample.label {
            if s(p, l.key) == key {
                *out.entry(s(p, l.str).to_string()).or_default() += sample.value[index];
            }
        }
    }
    out
}

fn total(p: &Profile, index: usize) -> i64 {
    p.sample.iter().map(|x| x.value[index]).sum()
}

fn function_names(p: &Profile) -> Vec<&str> {
    p.function.iter().map(|f| s(p, f.name)).collect()
}

fn go_available() -> bool {
    match Command::new("go").arg("version").output() {
        Ok(o) if o.status.success() => true,
        _ => {
            eprintln!("skipping `go tool pprof` checks: `go` is not installed");
            false
        }
    }
}

fn go_pprof(file: &Path, args: &[&str]) -> String {
    let tmp = std::env::temp_dir();
    let out = Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .arg(file)
        .env("HOME", &tmp)
        .env("PPROF_TMPDIR", &tmp)
        .env("PPROF_BINARY_PATH", "/nonexistent")
        .output()
        .expect("run go tool pprof");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Run `gprof-rs record` to completion; panics with its stderr on failure.
fn record(args: &[&str]) -> String {
    let out = gprof_rs().arg("record").args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "record {args:?} failed: {err}");
    err
}

/// Read stderr lines until one contains `needle`; returns everything read.
fn read_until(r: &mut impl BufRead, needle: &str) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap() == 0 {
            panic!("stream ended before {needle:?}:\n{all}");
        }
        all.push_str(&line);
        if line.contains(needle) {
            return all;
        }
    }
}

#[test]
fn record_counts_every_task_in_every_snapshot_split_by_state() {
    let mut t = Target::start("fixture", FIXTURE);
    let file = temp_path("counts.pb.gz");
    let pid = t.pid.to_string();
    let f = file.to_str().unwrap();
    let err = record(&[&pid, "--samples", "100", "--rate", "50", "-o", f]);
    assert!(err.contains("wrote"), "{err}");
    let p = read_pprof(&file);

    let types: Vec<(&str, &str)> = p
        .sample_type
        .iter()
        .map(|v| (s(&p, v.r#type), s(&p, v.unit)))
        .collect();
    assert_eq!(types, [("samples", "count"), ("wall", "nanoseconds")]);
    assert_eq!(p.period, 20_000_000);
    assert_eq!(snapshots(&p), 100);
    assert_eq!(total(&p, 0), 100 * TASKS);
    assert_eq!(total(&p, 1), 100 * TASKS * 20_000_000);
    for x in &p.sample {
        assert_eq!(x.value[1], x.value[0] * 20_000_000);
    }

    let states = by_label(&p, "state", 0);
    assert_eq!(states["chan receive"], (20 + 4) * 100, "{states:?}");
    assert_eq!(states["sleep"], 10 * 100, "{states:?}");
    assert_eq!(states["sync.Mutex.Lock"], 5 * 100, "{states:?}");
    // Every task has exactly one state label; main's is whatever it was doing.
    assert_eq!(states.values().sum::<i64>(), 100 * TASKS, "{states:?}");
    assert_eq!(by_label(&p, "group", 0)["labeled"], 4 * 100);
    assert_eq!(by_label(&p, "tier", 0)["gold"], 4 * 100);

    let names = function_names(&p);
    for f in [
        "fixture::recv_leaf",
        "fixture::sleep_leaf",
        "fixture::mutex_leaf",
    ] {
        assert!(names.contains(&f), "{f} missing from {names:?}");
    }
    // The runtime's switch frames are hidden by default, as in `attach`.
    assert!(!names.contains(&"gprof_rt_switch"), "{names:?}");

    if go_available() {
        let top = go_pprof(&file, &["-top", "-sample_index=samples"]);
        assert!(top.contains(&format!("of {} total", 100 * TASKS)), "{top}");
        assert!(top.contains("target_runtime::park::park"), "{top}");
        let tags = go_pprof(&file, &["-tags", "-sample_index=samples"]);
        assert!(tags.contains("state: Total 4000"), "{tags}");
        assert!(tags.contains("(60.00%): chan receive"), "{tags}");
        let focus = go_pprof(
            &file,
            &["-top", "-sample_index=samples", "-tagfocus=state=sleep"],
        );
        assert!(
            focus.contains("accounting for 1000, 25.00% of 4000 total"),
            "{focus}"
        );
        assert!(focus.contains("fixture::sleep_leaf"), "{focus}");
    }

    t.send("exit");
    assert_eq!(t.child.wait().unwrap().code(), Some(0), "the target ran on");
}

#[test]
fn record_writes_flamegraph_folded_and_speedscope() {
    let t = Target::start("fixture", FIXTURE);
    let pid = t.pid.to_string();
    const N: i64 = 5;
    let n = N.to_string();

    let svg = temp_path("flame.svg");
    record(&[&pid, "-n", &n, "-r", "50", "-o", svg.to_str().unwrap()]);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.starts_with("<?xml"),
        "{}",
        &text[..100.min(text.len())]
    );
    assert!(text.trim_end().ends_with("</svg>"));
    for f in ["recv_leaf", "sleep_leaf", "mutex_leaf", "labeled_leaf"] {
        assert!(text.contains(f), "{f} not in the flame graph");
    }

    let folded = temp_path("stacks.folded");
    record(&[&pid, "-n", &n, "-r", "50", "-o", folded.to_str().unwrap()]);
    let text = std::fs::read_to_string(&folded).unwrap();
    let mut sum = 0;
    let mut recv = 0;
    for line in text.lines() {
        let (stack, count) = line.rsplit_once(' ').expect("`stack count`");
        let count: i64 = count.parse().expect("count");
        let frames: Vec<&str> = stack.split(';').collect();
        assert!(frames.iter().all(|f| !f.is_empty()), "{line}");
        assert_eq!(frames[0], "gprof_rt_task_entry", "root first: {line}");
        if frames.iter().any(|f| f.ends_with("::recv_leaf")) {
            let leaf = frames.iter().position(|f| f.ends_with("::recv_leaf"));
            let outer = frames.iter().position(|f| f.ends_with("::recv_outer"));
            assert!(outer < leaf, "root first: {line}");
            recv += count;
        }
        sum += count;
    }
    assert_eq!(sum, N * TASKS, "{text}");
    assert_eq!(recv, 20 * N, "{text}");

    let json = temp_path("profile.json");
    record(&[&pid, "-n", &n, "-r", "50", "-o", json.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_reader(std::fs::File::open(&json).unwrap())
        .expect("speedscope JSON parses");
    assert_eq!(
        v["$schema"],
        "https://www.speedscope.app/file-format-schema.json"
    );
    let frames = v["shared"]["frames"].as_array().unwrap();
    let profiles = v["profiles"].as_array().unwrap();
    let names: Vec<&str> = profiles
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    // All tasks, then one per state: chan receive, sleep, sync.Mutex.Lock, and main's
    // (parked reading its input).
    assert_eq!(profiles.len(), 5, "{names:?}");
    assert_eq!(names[0], "all tasks");
    for want in ["state=chan receive", "state=sleep", "state=sync.Mutex.Lock"] {
        assert!(names.contains(&want), "{names:?}");
    }
    let interval = 20_000_000;
    for p in profiles {
        assert_eq!(p["type"], "sampled");
        assert_eq!(p["unit"], "nanoseconds");
        let samples = p["samples"].as_array().unwrap();
        let weights = p["weights"].as_array().unwrap();
        assert_eq!(samples.len(), weights.len());
        let sum: u64 = weights.iter().map(|w| w.as_u64().unwrap()).sum();
        assert_eq!(p["endValue"].as_u64(), Some(sum));
        for st in samples {
            for i in st.as_array().unwrap() {
                assert!((i.as_u64().unwrap() as usize) < frames.len());
            }
        }
    }
    assert_eq!(
        profiles[0]["endValue"].as_u64(),
        Some((N * TASKS * interval) as u64)
    );
    let recv: u64 = profiles
        .iter()
        .find(|p| p["name"] == "state=chan receive")
        .unwrap()["endValue"]
        .as_u64()
        .unwrap();
    assert_eq!(recv, (24 * N * interval) as u64);
    assert!(frames.iter().any(|f| f["name"] == "fixture::recv_leaf"));

    assert_eq!(t.finish().code(), Some(0));
}

#[test]
fn sigint_ends_the_recording_writes_it_and_leaves_the_target_running() {
    let mut t = Target::start("fixture", FIXTURE);
    let file = temp_path("interrupted.pb.gz");
    let mut tool = gprof_rs()
        .args(["record", &t.pid.to_string(), "-r", "50", "-o"])
        .arg(&file)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(tool.stderr.take().unwrap());
    // Printed after the first snapshot: the recording is under way.
    let mut log = read_until(&mut err, "recording PID");
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(tool.id() as i32, libc::SIGINT) }, 0);
    let status = tool.wait().unwrap();
    err.read_to_string(&mut log).unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("(interrupted)"), "{log}");
    assert!(log.contains("wrote"), "{log}");

    let p = read_pprof(&file);
    let n = snapshots(&p);
    assert!(n >= 1, "{log}");
    assert_eq!(total(&p, 0), n * TASKS);
    assert_eq!(by_label(&p, "state", 0)["sleep"], n * 10);

    // The target was left as it was: not stopped, and it still answers and exits cleanly.
    assert!(!matches!(t.state(), 'T' | 't' | 'Z'), "state {}", t.state());
    t.send("exit");
    assert_eq!(t.child.wait().unwrap().code(), Some(0));
}

/// The fixture, started by the tool: its stdin, stdout and stderr are the tool's.
fn launch(tool_args: &[&str], fixture_args: &[&str]) -> std::process::Child {
    let fixture = examples_dir().join("fixture");
    gprof_rs()
        .arg("record")
        .args(tool_args)
        .arg("--")
        .arg(&fixture)
        .args(fixture_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Launch mode with a sample limit: the tool records N snapshots, writes the file and
/// then waits for the command, which still reads the tool's stdin and exits on `exit`.
#[test]
fn launch_mode_records_then_waits_for_the_command() {
    let file = temp_path("launched.pb.gz");
    let mut tool = launch(
        &[
            "--samples",
            "10",
            "--rate",
            "50",
            "-o",
            file.to_str().unwrap(),
        ],
        &["--recv", "20", "--sleep", "10"],
    );
    let mut out = BufReader::new(tool.stdout.take().unwrap());
    let mut err = BufReader::new(tool.stderr.take().unwrap());
    let ready = read_until(&mut out, "READY ");
    let child_pid: u32 = ready.trim().rsplit(' ').next().unwrap().parse().unwrap();
    let mut log = read_until(&mut err, "wrote");
    log += &read_until(&mut err, "waiting for");
    assert!(log.contains(&format!("recording PID {child_pid}")), "{log}");
    // The command runs on: the tool is waiting for it.
    let p = read_pprof(&file);
    assert_eq!(snapshots(&p), 10);
    let names = function_names(&p);
    assert!(names.contains(&"fixture::serve"), "{names:?}");
    // At most every task in every snapshot (the first snapshots can predate some).
    assert!(total(&p, 0) >= 10 && total(&p, 0) <= 10 * 31, "{log}");

    let mut stdin = tool.stdin.take().unwrap();
    writeln!(stdin, "exit").unwrap();
    drop(stdin);
    let status = tool.wait().unwrap();
    err.read_to_string(&mut log).unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(!log.contains("ended with"), "the command exited 0: {log}");
}

/// Launch mode without a limit: the command exiting ends the recording, which is
/// written, and the tool exits 0 with a note.
#[test]
fn launch_mode_ends_when_the_command_exits() {
    let file = temp_path("until-exit.folded");
    let mut tool = launch(
        &["--rate", "50", "-o", file.to_str().unwrap()],
        &["--recv", "5"],
    );
    let mut err = BufReader::new(tool.stderr.take().unwrap());
    let mut log = read_until(&mut err, "recording PID");
    let mut stdin = tool.stdin.take().unwrap();
    writeln!(stdin, "exit").unwrap();
    drop(stdin);
    let status = tool.wait().unwrap();
    err.read_to_string(&mut log).unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("exited, recording ended"), "{log}");
    let text = std::fs::read_to_string(&file).unwrap();
    let sum: u64 = text
        .lines()
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum();
    assert!(sum >= 1, "at least the first snapshot: {text}");
    assert!(text.contains("recv_leaf"), "{text}");
}

/// `attach -- CMD` starts the command, snapshots it once its runtime is up and leaves it
/// running.
#[test]
fn attach_launch_mode_snapshots_once_and_leaves_the_command_running() {
    let fixture = examples_dir().join("fixture");
    // Files, not pipes: the command inherits them and outlives the tool.
    let out_path = temp_path("attach-launch.out");
    let err_path = temp_path("attach-launch.err");
    let mut tool = gprof_rs()
        .args(["attach", "--format", "tasks", "--"])
        .arg(&fixture)
        .args(["--recv", "3"])
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let stdin = tool.stdin.take().unwrap();
    let status = tool.wait().unwrap();
    let stdout = std::fs::read_to_string(&out_path).unwrap();
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("fixture::"), "{stdout}");
    let pid: u32 = stderr
        .split(" as PID ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no PID in {stderr:?}"));
    // The command outlived the tool (it waits for its input, our pipe).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("command alive");
    let state = stat.rsplit(')').next().unwrap().trim().chars().next();
    assert!(!matches!(state, Some('Z' | 'X' | 'T' | 't')), "{stat}");
    // Closing its input ends it.
    drop(stdin);
}

#[test]
fn record_help_explains_every_option_with_examples() {
    let out = gprof_rs().args(["record", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--output",
        "--format",
        "--rate",
        "--interval",
        "--duration",
        "--samples",
        "--mode",
        "--system",
        "--all-frames",
        "[CMD]",
        "Examples:",
        "go tool pprof",
        "-tagfocus",
        "speedscope",
        "flamegraph",
    ] {
        assert!(
            help.contains(needle),
            "record --help lacks {needle:?}:\n{help}"
        );
    }
}

#[test]
fn record_usage_errors_exit_2() {
    for args in [
        &["record", "-o", "x.svg"][..],
        &["record", "1", "-o", "x.svg", "--", "true"],
        &["record", "1", "-o", "x.svg", "--rate", "0"],
        &["record", "1", "-o", "x.svg", "--duration", "ten"],
    ] {
        let out = gprof_rs().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    }
}
