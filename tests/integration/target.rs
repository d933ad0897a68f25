//! Live target processes for the tests: the `target-runtime` example programs, started
//! with a READY handshake (never a sleep) and killed when the handle drops.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;

/// Build target-runtime's examples once per test run and return their directory.
pub fn examples_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let profile_dir = std::env::current_exe()
            .unwrap()
            .parent() // deps
            .and_then(|p| p.parent())
            .unwrap()
            .to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-q", "-p", "target-runtime", "--examples"]);
        if release {
            cmd.arg("--release");
        }
        let st = cmd
            .status()
            .expect("cargo build of target-runtime examples");
        assert!(st.success(), "building target-runtime examples failed");
        profile_dir.join("examples")
    })
    .clone()
}

/// A running target.
pub struct Target {
    pub child: Child,
    pub pid: u32,
    stdin: Option<ChildStdin>,
    pub lines: BufReader<std::process::ChildStdout>,
}

impl Target {
    /// Start example `name` with `args` and wait for its `READY <pid>` line.
    pub fn start(name: &str, args: &[&str]) -> Target {
        Target::start_with_env(name, args, &[])
    }

    /// [`Target::start`] with extra environment variables.
    pub fn start_with_env(name: &str, args: &[&str], env: &[(&str, &str)]) -> Target {
        let exe = examples_dir().join(name);
        let mut child = Command::new(&exe)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", exe.display()));
        let mut lines = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        lines.read_line(&mut line).unwrap();
        assert!(
            line.starts_with("READY "),
            "{name} said {line:?} instead of READY"
        );
        let pid = child.id();
        let stdin = child.stdin.take();
        Target {
            child,
            pid,
            stdin,
            lines,
        }
    }

    /// Send a line to the target's stdin.
    pub fn send(&mut self, line: &str) {
        let s = self.stdin.as_mut().expect("stdin open");
        writeln!(s, "{line}").unwrap();
        s.flush().unwrap();
    }

    /// Read one line the target printed.
    pub fn read_line(&mut self) -> String {
        let mut l = String::new();
        self.lines.read_line(&mut l).unwrap();
        l
    }

    /// Close stdin (the fixtures exit on it) and wait for the exit status.
    pub fn finish(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        self.child.wait().unwrap()
    }

    /// The process state letter from /proc (R, S, T, Z, ...).
    pub fn state(&self) -> char {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        s.rsplit(')')
            .next()
            .and_then(|r| r.trim().chars().next())
            .unwrap_or('?')
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The gprof-rs binary under test.
pub fn gprof_rs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gprof-rs"))
}

/// The small fixture population several tests share: 20 receivers, 10 sleepers, 5 tasks
/// on a mutex, 4 labelled receivers and main (in a blocking read of its stdin): 40 tasks,
/// none of which changes state while the fixture waits for its input.
pub const SMALL_FIXTURE: &[&str] = &[
    "--workers",
    "2",
    "--recv",
    "20",
    "--sleep",
    "10",
    "--mutex",
    "5",
    "--labeled",
    "4",
];
