//! `gprof-rs top` against the live fixture: in a detached 80x24 tmux session (what a
//! user sees over ssh), and in its plain-text form without a terminal.
//!
//! Synchronisation is by polling what the pane shows (bounded by a deadline), by the
//! fixture's `READY` and by the tool's own output, never by sleeping for a fixed time;
//! no assertion depends on timing. The tmux tests are skipped, with a printed reason,
//! when tmux is not installed.

use crate::target::{gprof_rs, Target};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The shared 40-task fixture population (see `target::SMALL_FIXTURE`).
const FIXTURE: &[&str] = crate::target::SMALL_FIXTURE;

/// The fixture's tasks by state, as top's second line shows them.
const STATES: &str =
    "running 0  runnable 0  chan receive 24  sleep 10  sync.Mutex.Lock 5  IO wait 1";

/// Rows top must show for the fixture: (count, share, state, leaf <- caller).
const ROWS: &[(&str, &str, &str, &str)] = &[
    (
        "20",
        "50.0%",
        "chan receive",
        "chan::Receiver<T>::recv <- fixture::recv_leaf",
    ),
    (
        "10",
        "25.0%",
        "sleep",
        "timer::sleep <- fixture::sleep_leaf",
    ),
    (
        "5",
        "12.5%",
        "sync.Mutex.Lock",
        "sync::Mutex<T>::lock <- fixture::mutex_leaf",
    ),
    (
        "4",
        "10.0%",
        "chan receive",
        "chan::Receiver<T>::recv <- fixture::labeled_leaf",
    ),
    (
        "1",
        "2.5%",
        "IO wait",
        "blocking::blocking <- fixture::serve",
    ),
];

/// How long any one thing may take before the test gives up.
const DEADLINE: Duration = Duration::from_secs(60);
/// Pause between two looks at the pane (polling, not synchronisation).
const POLL: Duration = Duration::from_millis(50);

fn tmux_available() -> bool {
    match Command::new("tmux").arg("-V").output() {
        Ok(o) if o.status.success() => true,
        _ => {
            eprintln!("skipping: tmux is not installed (apt-get install tmux)");
            false
        }
    }
}

/// A detached tmux server of its own (`-L`), with one 80x24 session running a command;
/// killed on drop.
struct Tmux {
    socket: String,
    rc_file: PathBuf,
}

impl Tmux {
    /// Run `gprof-rs top PID` in a fresh 80x24 session; its exit status goes to a file.
    fn top(pid: u32, tag: &str) -> Tmux {
        let socket = format!("gprof-top-{}-{tag}", std::process::id());
        let rc_file = std::env::temp_dir().join(format!("{socket}.rc"));
        let _ = std::fs::remove_file(&rc_file);
        let bin = env!("CARGO_BIN_EXE_gprof-rs");
        let script = format!(
            "'{bin}' top {pid} 2>'{rc}.err'; echo $? > '{rc}.tmp' && mv '{rc}.tmp' '{rc}'",
            rc = rc_file.display()
        );
        let st = Command::new("tmux")
            .args(["-L", &socket, "-f", "/dev/null", "new-session", "-d"])
            .args(["-x", "80", "-y", "24", "-s", "top", "sh", "-c", &script])
            .status()
            .expect("run tmux");
        assert!(st.success(), "tmux new-session failed");
        Tmux { socket, rc_file }
    }

    fn tmux(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    /// What the pane shows now, one string per line.
    fn capture(&self) -> Vec<String> {
        let out = self
            .tmux()
            .args(["capture-pane", "-p", "-t", "top"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Poll the pane until `ready` holds for it; panic with the pane at the deadline.
    fn wait_for(&self, what: &str, ready: impl Fn(&[String]) -> bool) -> Vec<String> {
        let start = Instant::now();
        loop {
            let pane = self.capture();
            if ready(&pane) {
                return pane;
            }
            if let Some(rc) = self.exit_status() {
                panic!(
                    "top exited ({rc}) before showing {what}:\n{}\nstderr: {}",
                    pane.join("\n"),
                    self.stderr()
                );
            }
            assert!(
                start.elapsed() < DEADLINE,
                "top did not show {what} within {DEADLINE:?}:\n{}",
                pane.join("\n")
            );
            std::thread::sleep(POLL);
        }
    }

    fn send_keys(&self, keys: &str) {
        let st = self
            .tmux()
            .args(["send-keys", "-t", "top", keys])
            .status()
            .expect("tmux send-keys");
        assert!(st.success());
    }

    fn exit_status(&self) -> Option<String> {
        std::fs::read_to_string(&self.rc_file)
            .ok()
            .map(|s| s.trim().to_string())
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(format!("{}.err", self.rc_file.display())).unwrap_or_default()
    }

    /// Poll until the tool has exited; its exit status.
    fn wait_exit(&self) -> String {
        let start = Instant::now();
        loop {
            if let Some(rc) = self.exit_status() {
                return rc;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "top did not exit within {DEADLINE:?}:\n{}",
                self.capture().join("\n")
            );
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // The server is usually gone already (its only session ended with the tool).
        let _ = self
            .tmux()
            .arg("kill-server")
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_file(&self.rc_file);
        let _ = std::fs::remove_file(format!("{}.err", self.rc_file.display()));
    }
}

/// The pane shows every expected row.
fn shows_rows(pane: &[String]) -> bool {
    ROWS.iter().all(|r| find_row(pane, r).is_some())
}

/// The line of `pane` that is row `r` (columns separated by runs of spaces).
fn find_row<'a>(pane: &'a [String], r: &(&str, &str, &str, &str)) -> Option<&'a String> {
    pane.iter().find(|l| {
        let mut cols = l.split_whitespace();
        let (count, share) = (cols.next(), cols.next());
        let rest = cols.collect::<Vec<_>>().join(" ");
        count == Some(r.0) && share == Some(r.1) && rest == format!("{} {}", r.2, r.3)
    })
}

fn assert_view(pane: &[String], pid: u32) {
    let text = pane.join("\n");
    assert_eq!(pane.len(), 24, "the pane is 80x24:\n{text}");
    assert!(
        pane.iter().all(|l| l.chars().count() <= 80),
        "a line is wider than the terminal:\n{text}"
    );
    assert!(
        pane[0].starts_with(&format!(
            "gprof-rs top  PID {pid} (fixture)  40 tasks  every 1s"
        )),
        "title:\n{text}"
    );
    assert_eq!(pane[1].trim_end(), STATES, "states:\n{text}");
    assert!(
        pane[2].contains("STW1 ") && pane[2].contains("STW2 ") && pane[2].contains("took "),
        "pauses:\n{text}"
    );
    // Most tasks first: the rows follow the header in this order, and nothing else.
    for (i, r) in ROWS.iter().enumerate() {
        let line = find_row(pane, r).unwrap_or_else(|| panic!("no row {r:?}:\n{text}"));
        assert_eq!(&pane[5 + i], line, "row order:\n{text}");
    }
    assert!(
        pane[5 + ROWS.len()..].iter().all(|l| l.trim().is_empty()),
        "unexpected rows:\n{text}"
    );
}

#[test]
fn top_in_an_80x24_terminal_shows_the_fixture_and_quits_on_q() {
    if !tmux_available() {
        return;
    }
    let mut t = Target::start("fixture", FIXTURE);
    let tmux = Tmux::top(t.pid, "q");
    let pane = tmux.wait_for("the fixture's rows", shows_rows);
    assert_view(&pane, t.pid);
    // It refreshes in place: the snapshot counter moves on, the rows stay.
    let pane = tmux.wait_for("a later snapshot", |p| {
        p.get(2).is_some_and(|l| !l.contains("snapshot #1 ")) && shows_rows(p)
    });
    assert_view(&pane, t.pid);
    tmux.send_keys("q");
    assert_eq!(tmux.wait_exit(), "0", "stderr: {}", tmux.stderr());
    // The target runs on: alive, not stopped, and it still answers its input.
    assert!(matches!(t.state(), 'S' | 'R'), "target state {}", t.state());
    t.send("exit");
    assert!(t.finish().success());
}

#[test]
fn top_shows_the_target_exiting_and_ends_on_a_key() {
    if !tmux_available() {
        return;
    }
    let mut t = Target::start("fixture", FIXTURE);
    let pid = t.pid;
    let tmux = Tmux::top(pid, "exit");
    tmux.wait_for("the fixture's rows", shows_rows);
    t.send("exit");
    let _ = t.child.wait();
    let pane = tmux.wait_for("the exit notice", |p| {
        p.iter()
            .any(|l| l.contains(&format!("PID {pid} exited: press any key")))
    });
    // The last view stays up.
    assert!(shows_rows(&pane), "{}", pane.join("\n"));
    assert_eq!(tmux.exit_status(), None, "top waits for a key");
    tmux.send_keys("x");
    assert_eq!(tmux.wait_exit(), "0", "stderr: {}", tmux.stderr());
}

#[test]
fn top_without_a_terminal_prints_plain_views() {
    let t = Target::start("fixture", FIXTURE);
    let out = gprof_rs()
        .args(["top", &t.pid.to_string(), "-n", "2", "-i", "10ms"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains('\x1b'), "no escape codes in plain output");
    let views: Vec<Vec<String>> = text
        .split("\n\ngprof-rs top")
        .map(|v| v.lines().map(str::to_string).collect())
        .collect();
    assert_eq!(views.len(), 2, "{text}");
    for v in &views {
        assert_eq!(v[1], STATES, "{text}");
        for r in ROWS {
            assert!(find_row(v, r).is_some(), "no row {r:?}:\n{text}");
        }
    }
    assert_eq!(t.state(), 'S');
}

#[test]
fn top_without_a_terminal_ends_when_the_target_exits() {
    let mut t = Target::start("fixture", FIXTURE);
    let pid = t.pid;
    let mut top = gprof_rs()
        .args(["top", &pid.to_string(), "-i", "20ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(top.stdout.take().unwrap());
    let mut seen = String::new();
    // The first view is out: its rows end with main's.
    loop {
        let mut l = String::new();
        assert!(lines.read_line(&mut l).unwrap() > 0, "top ended:\n{seen}");
        seen.push_str(&l);
        if l.contains("fixture::serve") {
            break;
        }
    }
    t.send("exit");
    let _ = t.child.wait();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut lines, &mut rest).unwrap();
    let st = top.wait().unwrap();
    assert!(st.success(), "{st}");
    assert!(
        rest.trim_end().ends_with(&format!("PID {pid} exited")),
        "{rest}"
    );
}

#[test]
fn top_refuses_what_is_not_a_target() {
    let mut other = Command::new("sleep").arg("600").spawn().unwrap();
    let out = gprof_rs()
        .args(["top", &other.id().to_string(), "-n", "1"])
        .output()
        .unwrap();
    let _ = other.kill();
    let _ = other.wait();
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let out = gprof_rs().args(["top", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
