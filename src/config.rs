//! Validated settings, free of clap types.

use crate::snapshot::Mode;
use std::path::PathBuf;

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
}
