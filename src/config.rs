//! Validated settings, free of clap types.

use crate::snapshot::Mode;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// Where output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Standard output.
    Stdout,
    /// A file, created or truncated.
    File(PathBuf),
}

/// What the output looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// gzip'd pprof.
    Pprof,
    /// Go's debug=1 text.
    Text,
    /// Go's debug=2 text.
    Tasks,
}

/// `gprof-rs attach`.
#[derive(Debug, Clone)]
pub struct AttachConfig {
    /// Target pid.
    pub pid: u32,
    /// Destination.
    pub output: Output,
    /// Format.
    pub format: OutputFormat,
    /// Snapshot mode.
    pub mode: Mode,
    /// Print `--stats` to stderr.
    pub stats: bool,
    /// Keep system tasks.
    pub include_system: bool,
    /// Keep the runtime's switch and task-entry frames.
    pub all_frames: bool,
    /// Keep only tasks waiting at least this long (`--blocked-longer-than`).
    pub blocked_longer_than: Option<Duration>,
    /// Wait at most this long for another profiler to finish (`--wait`).
    pub wait: Option<Duration>,
    /// Run this command (program and arguments) and snapshot it once its runtime has
    /// started, instead of attaching to `pid` (which is then 0).
    pub launch: Option<Vec<OsString>>,
}

/// What `record` profiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A running process.
    Pid(u32),
    /// A command to start (program and arguments), profiled from its start to its exit.
    Launch(Vec<OsString>),
}

/// Output formats of `gprof-rs record`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFormat {
    /// gzip'd pprof with `samples/count` and `wall/nanoseconds` values and a `state` label.
    Pprof,
    /// Flame graph SVG (inferno).
    Flamegraph,
    /// Collapsed stacks, `root;...;leaf count`.
    Folded,
    /// speedscope JSON (sampled profiles, one per task state).
    Speedscope,
}

/// `gprof-rs record`.
#[derive(Debug, Clone)]
pub struct RecordConfig {
    /// What to profile.
    pub target: Target,
    /// Destination.
    pub output: Output,
    /// Format.
    pub format: RecordFormat,
    /// Time between snapshots.
    pub interval: Duration,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after this many snapshots.
    pub samples: Option<u64>,
    /// Snapshot mode.
    pub mode: Mode,
    /// Keep system tasks.
    pub include_system: bool,
    /// Keep the runtime's switch and task-entry frames.
    pub all_frames: bool,
    /// Wait at most this long for another profiler to finish (`--wait`).
    pub wait: Option<Duration>,
}

/// `gprof-rs top`.
#[derive(Debug, Clone)]
pub struct TopConfig {
    /// Target pid.
    pub pid: u32,
    /// Time between refreshes.
    pub interval: Duration,
    /// Snapshot mode.
    pub mode: Mode,
    /// Keep system tasks.
    pub include_system: bool,
    /// Without a terminal: print this many refreshes, then stop (None: until the
    /// target exits or a signal).
    pub iterations: Option<u64>,
}
