//! Snapshot benchmark: `gprof-rs attach` (concurrent and `--mode stw`) against Go 1.19's
//! in-process `pprof.Lookup("goroutine").WriteTo(w, 0)`, on targets with N parked tasks.
//!
//! ```text
//! cargo bench --bench snapshot -- [--tasks 1000,10000,100000] [--reps 5]
//!     [--variants idle,loaded]
//!     [--modes concurrent,no-assist,no-give-way,no-helper,stw,go,noise] [--workers 2]
//!     [--depth 8] [--tool PATH] [--target PATH] [--go PATH] [--out DIR] [--sched-trace]
//! ```
//!
//! `benches/snapshot-vs-go.sh` builds the three programs and runs this; see BENCHMARKS.md.
//!
//! For every N and variant it starts both targets (`bench_target`, the Rust one, and
//! `benches/go/snapshot_target.go`), each with N tasks/goroutines parked 8 frames deep
//! and a probe that spins on the clock and keeps the largest gap it sees; `--loaded`
//! adds busy tasks so that every worker is busy. Only one target spins at a time (the
//! other's probe sleeps), and the modes run interleaved, in an order that rotates per
//! repetition and runs backwards every other one, so that the noise of a shared machine
//! falls on all of them alike and no mode always follows the same one:
//!
//! * `concurrent`, `stw`: the release `gprof-rs attach PID --stats -o FILE [--mode stw]`
//!   as a child process. STW 1 / STW 2 / bytes copied come from `--stats`; end-to-end is
//!   process start to exit (a pprof file written); peak RSS from `wait4`'s rusage. The
//!   probe reports its largest gap inside the profile session (from the gap holding
//!   STW 1 to the one holding STW 2, found through the session word) and over the
//!   tool's whole life (attach, symbolization and writing included).
//! * `no-helper`: `concurrent` without the runtime's helper (`GPROF_RS_HELPER=never`,
//!   which also leaves the workers' assists out): what the runtime's help bought.
//! * `no-assist`: `concurrent` without the workers' assists (`GPROF_RS_ASSIST=never`;
//!   they are asked only when every worker is busy): what they bought.
//! * `no-give-way`: `concurrent` without the tool's 200 µs sleeps before STW 1 and
//!   after STW 2 (`GPROF_RS_GIVE_WAY=never`): what they bought.
//! * `go`: the Go target profiles itself; latency is around `WriteTo` alone, the gap
//!   covers `WriteTo`.
//! * `noise`: the Rust target's probe spins with no tool, for as long as the last
//!   concurrent snapshot's session took: the machine's own worst gap over that window.
//!
//! `--sched-trace` (root, tracefs) also records the kernel's context switches during
//! each tool run and noise window, and reports how long the probe was preempted by the
//! tool or the runtime's helper, and by anything else (`benches/snapshot/sched_trace.rs`).
//!
//! Raw samples go to `DIR/raw.tsv` (default `target/snapshot-vs-go`); the tables to
//! stdout (markdown). No timing is asserted anywhere.

#[path = "snapshot/sched_trace.rs"]
mod sched_trace;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

struct Opts {
    tasks: Vec<usize>,
    reps: usize,
    variants: Vec<String>,
    modes: Vec<String>,
    workers: usize,
    depth: usize,
    tool: PathBuf,
    target: PathBuf,
    go: PathBuf,
    out: PathBuf,
    sched_trace: bool,
}

fn parse() -> Opts {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut o = Opts {
        tasks: vec![1000, 10_000, 100_000],
        reps: 5,
        variants: vec!["idle".into(), "loaded".into()],
        modes: vec![
            "concurrent".into(),
            "no-helper".into(),
            "stw".into(),
            "go".into(),
            "noise".into(),
        ],
        workers: 2,
        depth: 8,
        tool: root.join("target/release/gprof-rs"),
        target: root.join("target/release/examples/bench_target"),
        go: root.join("target/snapshot-vs-go/go-target"),
        out: root.join("target/snapshot-vs-go"),
        sched_trace: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--bench" {
            continue; // passed by `cargo bench`
        }
        if a == "--sched-trace" {
            o.sched_trace = true;
            continue;
        }
        let mut val = || {
            args.next()
                .unwrap_or_else(|| panic!("snapshot bench: {a} needs a value"))
        };
        let list = |s: String| s.split(',').map(str::to_string).collect::<Vec<_>>();
        match a.as_str() {
            "--tasks" => {
                o.tasks = list(val())
                    .iter()
                    .map(|s| parse_count(s))
                    .collect::<Vec<_>>()
            }
            "--reps" => o.reps = val().parse().expect("--reps"),
            "--variants" => o.variants = list(val()),
            "--modes" => o.modes = list(val()),
            "--workers" => o.workers = val().parse().expect("--workers"),
            "--depth" => o.depth = val().parse().expect("--depth"),
            "--tool" => o.tool = val().into(),
            "--target" => o.target = val().into(),
            "--go" => o.go = val().into(),
            "--out" => o.out = val().into(),
            other => panic!("snapshot bench: unknown argument {other}"),
        }
    }
    o
}

/// `1000`, `10k`, `1M`.
fn parse_count(s: &str) -> usize {
    let (num, mul) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1000),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1_000_000),
        _ => (s, 1),
    };
    num.parse::<usize>().expect("--tasks: a count") * mul
}

/// A target process driven through its stdin/stdout line protocol.
struct Target {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    pid: u32,
}

impl Target {
    fn start(cmd: &mut Command, what: &str) -> Target {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut t = Target {
            child,
            stdin,
            lines,
            pid: 0,
        };
        let ready = t.line(Duration::from_secs(900), what);
        t.pid = ready
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("{what}: expected READY <pid>, got {ready:?}"));
        t
    }

    fn line(&mut self, timeout: Duration, what: &str) -> String {
        self.lines
            .recv_timeout(timeout)
            .unwrap_or_else(|e| panic!("{what}: no answer ({e})"))
    }

    fn cmd(&mut self, c: &str) -> String {
        writeln!(self.stdin, "{c}").expect("write command");
        self.stdin.flush().expect("flush command");
        let l = self.line(Duration::from_secs(120), c);
        assert!(!l.starts_with("error"), "target answered {c:?} with {l:?}");
        l
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "exit");
        let _ = self.stdin.flush();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One measurement.
#[derive(Clone, Default)]
struct Sample {
    /// Probe's largest gap inside the profile session (STW 1 .. STW 2; Go: WriteTo).
    gap_us: f64,
    /// Probe's largest gap over the tool's whole life (Go: WriteTo).
    life_gap_us: f64,
    /// Session-word changes the probe saw (2 concurrent, 1 stw).
    changes: f64,
    stw1_us: f64,
    stw2_us: f64,
    /// Tool: process start to exit. Go: around WriteTo.
    e2e_ms: f64,
    /// Tool: the profile session (STW 1 to STW 2) from --stats; the noise window.
    snap_ms: f64,
    /// Tool: peak RSS (rusage; includes the target's task table, mapped shared).
    rss_kb: f64,
    /// Tool: private memory (RssAnon) at the end of its run, as `--stats` reports it: the
    /// high-water mark, since the snapshot and symbol tables are alive until then. Not
    /// polled from here: a poller waking every 10 ms on this 2-CPU machine took a 4 ms
    /// tick from the probe during long (1M-task) sessions, 2.5-7 ms gaps instead of
    /// ~0.1 ms (measured).
    anon_kb: f64,
    bytes_copied: f64,
    tasks: f64,
    /// `--sched-trace`: the probe's time preempted, by whom (Rust target only).
    lost: Option<sched_trace::Lost>,
    /// CPU time the hypervisor took from this guest's CPUs during the repetition
    /// (`steal` of `/proc/stat`, 10 ms ticks): on a shared VM, multi-ms probe gaps with
    /// both CPUs busy come with it, whatever runs in the guest.
    steal_ms: f64,
}

/// Steal time of all CPUs so far, ms (`/proc/stat`, proc(5): 8th value of the `cpu`
/// line, in USER_HZ = 100 ticks per second).
fn steal_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: f64 = stat
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(8)?.parse().ok())
        .unwrap_or(0.0);
    ticks * 10.0
}

/// The tool as a child process, reaped with wait4 for its rusage.
/// `no-helper`: concurrent, with the tool copying every task itself
/// (`GPROF_RS_HELPER=never`), as before the runtime's profile helper. `no-assist`:
/// concurrent without the workers' assists (`GPROF_RS_ASSIST=never`). `no-give-way`:
/// concurrent without the sleeps around the stops (`GPROF_RS_GIVE_WAY=never`).
fn run_tool(o: &Opts, pid: u32, mode: &str) -> Sample {
    let stw = mode == "stw";
    let file = o.out.join("snapshot.pb.gz");
    let mut cmd = Command::new(&o.tool);
    cmd.arg("attach")
        .arg(pid.to_string())
        .arg("--stats")
        .arg("-o")
        .arg(&file);
    if stw {
        cmd.args(["--mode", "stw"]);
    }
    if mode == "no-helper" {
        cmd.env("GPROF_RS_HELPER", "never");
    }
    if mode == "no-assist" {
        cmd.env("GPROF_RS_ASSIST", "never");
    }
    if mode == "no-give-way" {
        cmd.env("GPROF_RS_GIVE_WAY", "never");
    }
    let t0 = Instant::now();
    // Reaped below with wait4 (for its rusage), not Child::wait.
    #[allow(clippy::zombie_processes)]
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gprof-rs");
    let mut err = String::new();
    let mut stderr = child.stderr.take().expect("stderr");
    std::io::Read::read_to_string(&mut stderr, &mut err).expect("read gprof-rs stderr");
    let mut status = 0;
    // SAFETY: plain FFI; `ru` is a valid out-pointer and the child is ours, unreaped.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    let e2e = t0.elapsed();
    assert!(r > 0, "wait4: {}", std::io::Error::last_os_error());
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "gprof-rs failed (status {status:#x}): {err}"
    );
    let mut s = parse_stats(&err);
    s.e2e_ms = e2e.as_secs_f64() * 1e3;
    s.rss_kb = ru.ru_maxrss as f64;
    s.anon_kb = err
        .lines()
        .find_map(|l| l.strip_prefix("gprof-rs: private memory at the end: "))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no private-memory line in {err:?}"));
    s
}

/// `gprof-rs: 1003 tasks; STW1 85.2 us, STW2 60.1 us, total 12.34 ms; 3 threads; ...;
/// 123456 stack bytes copied`
fn parse_stats(err: &str) -> Sample {
    let line = err
        .lines()
        .find(|l| l.contains(" STW1 "))
        .unwrap_or_else(|| panic!("no --stats line in {err:?}"));
    let words: Vec<&str> = line
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .filter(|w| !w.is_empty())
        .collect();
    let after = |key: &str| -> f64 {
        let i = words
            .iter()
            .position(|w| *w == key)
            .unwrap_or_else(|| panic!("no {key} in {line:?}"));
        words[i + 1].parse().expect("number")
    };
    let before = |key: &str| -> f64 {
        let i = words
            .iter()
            .position(|w| *w == key)
            .unwrap_or_else(|| panic!("no {key} in {line:?}"));
        words[i - 1].parse().expect("number")
    };
    Sample {
        stw1_us: after("STW1"),
        stw2_us: after("STW2"),
        snap_ms: after("session"),
        tasks: before("tasks"),
        bytes_copied: before("stack"),
        ..Sample::default()
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// `gap?` answer `<whole ns> <session ns> <changes>` -> µs, µs, changes / 1000.
fn gaps(answer: &str) -> Vec<f64> {
    let v: Vec<f64> = answer
        .split_whitespace()
        .map(|x| x.parse::<f64>().expect("gap? answer") / 1e3)
        .collect();
    assert_eq!(v.len(), 3, "gap? answer {answer:?}");
    v
}

/// `--sched-trace`: start the trace, and name the probe's thread.
fn traced(o: &Opts, rt: &mut Target) -> Option<u32> {
    if !o.sched_trace {
        return None;
    }
    let tid = rt.cmd("probe?").parse().expect("probe? answer");
    sched_trace::start();
    Some(tid)
}

/// Let a freshly woken probe settle, then reset it.
const SETTLE: Duration = Duration::from_millis(30);

fn main() {
    let o = parse();
    std::fs::create_dir_all(&o.out).expect("out dir");
    for p in [&o.tool, &o.target, &o.go] {
        assert!(
            p.exists(),
            "{} is missing: run benches/snapshot-vs-go.sh",
            p.display()
        );
    }
    let raw_path = o.out.join("raw.tsv");
    let mut raw = std::fs::File::create(&raw_path).expect("raw.tsv");
    writeln!(
        raw,
        "tasks\tvariant\tmode\trep\tgap_us\tlife_gap_us\tstw1_us\tstw2_us\te2e_ms\tsession_ms\trss_kb\tanon_kb\tbytes_copied\trecorded\tsteal_ms\tlost_tool_us\tlost_tool_max_us\tlost_others_us\tlost_others_max_us"
    )
    .unwrap();
    let mut all: BTreeMap<(usize, String, String), Vec<Sample>> = BTreeMap::new();
    let mut loads = Vec::new();
    for &n in &o.tasks {
        for variant in &o.variants {
            let loaded = variant == "loaded";
            let t = Instant::now();
            eprintln!(
                "[{n} {variant}] starting the Rust target (load {})",
                loadavg()
            );
            let mut rt_cmd = Command::new(&o.target);
            rt_cmd.args([
                "--tasks",
                &n.to_string(),
                "--depth",
                &o.depth.to_string(),
                "--workers",
                &o.workers.to_string(),
            ]);
            if loaded {
                rt_cmd.arg("--loaded");
            }
            let mut rt = Target::start(&mut rt_cmd, "bench_target");
            rt.cmd("sleep");
            let rt_setup = t.elapsed();
            let t = Instant::now();
            let mut go_cmd = Command::new(&o.go);
            go_cmd.args([
                "-tasks",
                &n.to_string(),
                "-depth",
                &o.depth.to_string(),
                "-workers",
                &o.workers.to_string(),
                "-o",
            ]);
            go_cmd.arg(o.out.join("go.pb.gz"));
            if loaded {
                go_cmd.arg("-loaded");
            }
            let mut go = Target::start(&mut go_cmd, "go target");
            go.cmd("sleep");
            eprintln!(
                "[{n} {variant}] setup: Rust {:.1} s, Go {:.1} s",
                rt_setup.as_secs_f64(),
                t.elapsed().as_secs_f64()
            );
            let load_start = loadavg();
            let mut noise_window = Duration::from_millis(100);
            for rep in 0..o.reps {
                let k = o.modes.len();
                for j in 0..k {
                    // Rotated, and backwards every other repetition, so that no mode
                    // always runs right after the same one: with rotation alone, the
                    // tool's first run after Go's 1M-goroutine profile (and the noise
                    // window) was always `concurrent`, and two modes running the same
                    // code measured 1070 and 601 ms at 1M (BENCHMARKS.md, session 5).
                    let j = if rep % 2 == 1 { k - 1 - j } else { j };
                    let mode = &o.modes[(j + rep) % k];
                    let steal_before = steal_ms();
                    let mut s = match mode.as_str() {
                        "concurrent" | "stw" | "no-helper" | "no-assist" | "no-give-way" => {
                            rt.cmd("wake");
                            std::thread::sleep(SETTLE);
                            rt.cmd("reset");
                            let probe = traced(&o, &mut rt);
                            let mut s = run_tool(&o, rt.pid, mode);
                            let lost = probe.map(sched_trace::stop);
                            let g = gaps(&rt.cmd("gap?"));
                            (s.life_gap_us, s.gap_us, s.changes) = (g[0], g[1], g[2] * 1e3);
                            rt.cmd("sleep");
                            if mode == "concurrent" {
                                noise_window = Duration::from_secs_f64(s.snap_ms / 1e3);
                            }
                            s.lost = lost;
                            s
                        }
                        "go" => {
                            go.cmd("wake");
                            std::thread::sleep(SETTLE);
                            let r = go.cmd("profile");
                            go.cmd("sleep");
                            let v: Vec<f64> = r
                                .split_whitespace()
                                .map(|x| x.parse().expect("go profile answer"))
                                .collect();
                            Sample {
                                e2e_ms: v[0] / 1e6,
                                gap_us: v[1] / 1e3,
                                life_gap_us: v[1] / 1e3,
                                ..Sample::default()
                            }
                        }
                        "noise" => {
                            rt.cmd("wake");
                            std::thread::sleep(SETTLE);
                            rt.cmd("reset");
                            let probe = traced(&o, &mut rt);
                            std::thread::sleep(noise_window);
                            let lost = probe.map(sched_trace::stop);
                            let g = gaps(&rt.cmd("gap?"));
                            rt.cmd("sleep");
                            Sample {
                                lost,
                                gap_us: g[0],
                                life_gap_us: g[0],
                                e2e_ms: noise_window.as_secs_f64() * 1e3,
                                ..Sample::default()
                            }
                        }
                        other => panic!("unknown mode {other}"),
                    };
                    s.steal_ms = steal_ms() - steal_before;
                    eprintln!(
                        "[{n} {variant}] rep {rep} {mode:10}: gap {:9.1} us (life {:9.1}, {} changes)  stw1 {:8.1} us  stw2 {:7.1} us  e2e {:8.1} ms  rss {:7.0} KB (anon {:7.0})  copied {:.0}  steal {:.0} ms",
                        s.gap_us,
                        s.life_gap_us,
                        s.changes,
                        s.stw1_us,
                        s.stw2_us,
                        s.e2e_ms,
                        s.rss_kb,
                        s.anon_kb,
                        s.bytes_copied,
                        s.steal_ms
                    );
                    writeln!(
                        raw,
                        "{n}\t{variant}\t{mode}\t{rep}\t{:.1}\t{:.1}\t{:.1}\t{:.1}\t{:.3}\t{:.3}\t{:.0}\t{:.0}\t{:.0}\t{:.0}\t{:.0}\t{}",
                        s.gap_us,
                        s.life_gap_us,
                        s.stw1_us,
                        s.stw2_us,
                        s.e2e_ms,
                        s.snap_ms,
                        s.rss_kb,
                        s.anon_kb,
                        s.bytes_copied,
                        s.tasks,
                        s.steal_ms,
                        s.lost.map_or("-\t-\t-\t-".to_string(), |l| format!(
                            "{:.0}\t{:.0}\t{:.0}\t{:.0}",
                            l.to_tool_us, l.to_tool_max_us, l.to_others_us, l.to_others_max_us
                        ))
                    )
                    .unwrap();
                    all.entry((n, variant.clone(), mode.clone()))
                        .or_default()
                        .push(s);
                }
            }
            loads.push(format!(
                "N={n} {variant}: load average {load_start} -> {}",
                loadavg()
            ));
            drop(rt);
            drop(go);
        }
    }
    report(&o, &all, &loads);
    eprintln!("raw samples: {}", raw_path.display());
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn stat(s: &[Sample], f: impl Fn(&Sample) -> f64) -> (f64, f64) {
    let mut v: Vec<f64> = s.iter().map(f).collect();
    let max = v.iter().copied().fold(f64::NAN, f64::max);
    (median(&mut v), max)
}

fn fmt(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn mm(s: &[Sample], f: impl Fn(&Sample) -> f64) -> String {
    let (m, x) = stat(s, f);
    format!("{} / {}", fmt(m), fmt(x))
}

fn report(o: &Opts, all: &BTreeMap<(usize, String, String), Vec<Sample>>, loads: &[String]) {
    let get = |n: usize, v: &str, m: &str| all.get(&(n, v.to_string(), m.to_string()));
    println!(
        "Snapshot benchmark: {} repetitions per cell, depth {}, {} workers / GOMAXPROCS. median / max.\n",
        o.reps, o.depth, o.workers
    );
    println!("| N | variant | mode | probe worst gap in session µs | … over the tool's life µs | STW 1 µs | STW 2 µs | end-to-end ms | tool peak RSS MB | tool peak private (RssAnon) MB | stack bytes copied / task | host steal ms |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for ((n, v, m), s) in all {
        let tool = matches!(
            m.as_str(),
            "concurrent" | "stw" | "no-helper" | "no-assist" | "no-give-way"
        );
        let e2e_name = match m.as_str() {
            "go" => " (WriteTo)",
            "noise" => " (window)",
            _ => "",
        };
        println!(
            "| {n} | {v} | {m} | {} | {} | {} | {} | {}{e2e_name} | {} | {} | {} | {} |",
            mm(s, |x| x.gap_us),
            mm(s, |x| x.life_gap_us),
            if tool {
                mm(s, |x| x.stw1_us)
            } else {
                "–".into()
            },
            if tool {
                mm(s, |x| x.stw2_us)
            } else {
                "–".into()
            },
            mm(s, |x| x.e2e_ms),
            if tool {
                mm(s, |x| x.rss_kb / 1024.0)
            } else {
                "–".into()
            },
            if tool {
                mm(s, |x| x.anon_kb / 1024.0)
            } else {
                "–".into()
            },
            if tool {
                fmt(stat(s, |x| x.bytes_copied).0 / *n as f64)
            } else {
                "–".into()
            },
            mm(s, |x| x.steal_ms),
        );
    }

    if o.sched_trace {
        println!("\nWhere the probe's time went (`--sched-trace`: sched_switch events; µs the probe was preempted, median / max over the repetitions):\n");
        println!("| N | variant | mode | to gprof-rs or its helper, total | … longest once | runs with any | to anything else, total | … longest once |");
        println!("|---|---|---|---|---|---|---|---|");
        for ((n, v, m), s) in all {
            let traced: Vec<sched_trace::Lost> = s.iter().filter_map(|x| x.lost).collect();
            if traced.is_empty() {
                continue;
            }
            let col = |f: fn(&sched_trace::Lost) -> f64| {
                let mut v: Vec<f64> = traced.iter().map(f).collect();
                let max = v.iter().copied().fold(0.0, f64::max);
                format!("{} / {}", fmt(median(&mut v)), fmt(max))
            };
            let any = traced.iter().filter(|l| l.to_tool_us > 0.0).count();
            println!(
                "| {n} | {v} | {m} | {} | {} | {any}/{} | {} | {} |",
                col(|l| l.to_tool_us),
                col(|l| l.to_tool_max_us),
                traced.len(),
                col(|l| l.to_others_us),
                col(|l| l.to_others_max_us),
            );
        }
    }

    println!("\nRatios (medians; < 1: gprof-rs better):\n");
    println!("| N | variant | gap: concurrent / Go | gap over the tool's life: concurrent / Go | gap: stw / Go | gap: noise / Go | end-to-end concurrent / Go WriteTo | end-to-end stw / Go WriteTo |");
    println!("|---|---|---|---|---|---|---|---|");
    let med = |s: Option<&Vec<Sample>>, f: fn(&Sample) -> f64| s.map_or(f64::NAN, |s| stat(s, f).0);
    let r = |a: f64, b: f64| {
        if a.is_nan() || b.is_nan() {
            "–".to_string()
        } else {
            format!("{:.2}", a / b)
        }
    };
    for &n in &o.tasks {
        for v in &o.variants {
            let go_gap = med(get(n, v, "go"), |x| x.gap_us);
            let go_lat = med(get(n, v, "go"), |x| x.e2e_ms);
            println!(
                "| {n} | {v} | {} | {} | {} | {} | {} | {} |",
                r(med(get(n, v, "concurrent"), |x| x.gap_us), go_gap),
                r(med(get(n, v, "concurrent"), |x| x.life_gap_us), go_gap),
                r(med(get(n, v, "stw"), |x| x.gap_us), go_gap),
                r(med(get(n, v, "noise"), |x| x.gap_us), go_gap),
                r(med(get(n, v, "concurrent"), |x| x.e2e_ms), go_lat),
                r(med(get(n, v, "stw"), |x| x.e2e_ms), go_lat),
            );
        }
    }

    let (lo, hi) = (
        *o.tasks.iter().min().unwrap_or(&0),
        *o.tasks.iter().max().unwrap_or(&0),
    );
    if hi > lo {
        println!("\nScaling from N={lo} to N={hi}:\n");
        for v in &o.variants {
            for m in ["concurrent", "stw", "go"] {
                let a = med(get(lo, v, m), |x| x.gap_us);
                let b = med(get(hi, v, m), |x| x.gap_us);
                if a.is_nan() || b.is_nan() {
                    continue;
                }
                println!(
                    "* {v}, {m}: probe worst gap median N={hi} / N={lo} = {}",
                    r(b, a)
                );
            }
            // Least-squares slope of the STW-mode pause (tool side STW 1) against N.
            let pts: Vec<(f64, f64)> = o
                .tasks
                .iter()
                .filter_map(|&n| {
                    let y = med(get(n, v, "stw"), |x| x.stw1_us);
                    (!y.is_nan()).then_some((n as f64, y))
                })
                .collect();
            if pts.len() >= 2 {
                let k = pts.len() as f64;
                let mx = pts.iter().map(|p| p.0).sum::<f64>() / k;
                let my = pts.iter().map(|p| p.1).sum::<f64>() / k;
                let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
                let sxx: f64 = pts.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
                println!(
                    "* {v}, --mode stw: STW 1 grows {:.0} ns per task (least squares over N)",
                    sxy / sxx * 1e3
                );
            }
            let conc = |n| get(n, v, "concurrent");
            if let (Some(a), Some(b)) = (conc(lo), conc(hi)) {
                let grow = |f: fn(&Sample) -> f64| {
                    (stat(b, f).0 - stat(a, f).0) * 1024.0 / (hi - lo) as f64
                };
                let cpt = (stat(b, |x| x.bytes_copied).0 - stat(a, |x| x.bytes_copied).0)
                    / (hi - lo) as f64;
                println!(
                    "* {v}, concurrent: per task, tool peak RSS grows {:.0} B (of which the target's {} B task slot, mapped shared), peak private memory (RssAnon) {:.0} B; stack bytes copied {cpt:.0} B (read in batches of 128 tasks, not kept)",
                    grow(|x| x.rss_kb),
                    std::mem::size_of::<gprof_abi::TaskSlot>(),
                    grow(|x| x.anon_kb),
                );
            }
        }
    }
    println!("\nLoad during the runs:\n");
    for l in loads {
        println!("* {l}");
    }
}
