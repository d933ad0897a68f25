//! The command line: clap types stop here. [`Cli::into_command`] turns them into a
//! validated, clap-free [`crate::config`] value; the man page and the shell completions
//! are rendered from the same definition (`gprof-rs generate`).

use crate::config::{
    AttachConfig, Output, OutputFormat, RecordConfig, RecordFormat, Target, TopConfig,
};
use crate::error::{Error, Result};
use crate::snapshot::Mode;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

const AFTER_HELP: &str = "\
Examples:
  gprof-rs demo                          run the bundled demo service and profile it
  gprof-rs attach 4242                   what every task of PID 4242 is doing (text)
  gprof-rs attach 4242 --format tasks    one block per task, like Go's debug=2 dump
  gprof-rs attach 4242 -o tasks.pb.gz    a pprof file: go tool pprof -top tasks.pb.gz
  gprof-rs record 4242 -d 10s -o out.svg sample every task for 10 s: a flame graph
  gprof-rs record -o out.pb.gz -- ./server --port 8080
                                         run a program and record it until it exits
  gprof-rs top 4242                      live view of the top stacks
  gprof-rs attach 4242 --blocked-longer-than 10m
                                         tasks waiting over 10 min

Permissions: attaching uses ptrace. You need the same uid as the target and a Yama
ptrace_scope (/proc/sys/kernel/yama/ptrace_scope) of 0, or CAP_SYS_PTRACE (root).

Exit status:
  0    success
  1    any other error (I/O, an unexpected ptrace failure)
  2    usage error (bad option or argument)
  3    no such process
  4    permission denied (ptrace refused: see Permissions)
  5    not a target-runtime process, or its runtime not started yet
  6    ABI mismatch: the target uses another gprof ABI version
  7    another profiler is active on the target
  8    the target exited or exec'ed while being profiled
  9    the target published invalid data
  130  interrupted by SIGINT/SIGTERM (the target runs on)";

/// Snapshot every green thread of a running target-runtime program, pausing it only
/// for two short stop-the-world phases.
#[derive(Debug, Parser)]
#[command(name = "gprof-rs", version, about, long_about = None, after_help = AFTER_HELP)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: CommandArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum CommandArgs {
    /// Take one consistent snapshot of every task of a running process.
    ///
    /// The target is stopped twice, for a fraction of a millisecond each time, whatever its
    /// number of tasks; the tasks are recorded while it runs.
    #[command(after_help = "\
Examples:
  gprof-rs attach 4242
  gprof-rs attach 4242 --format tasks | less
  gprof-rs attach 4242 -o snap.pb.gz && go tool pprof -traces snap.pb.gz
  gprof-rs attach 4242 --mode stw --stats
  gprof-rs attach 4242 --blocked-longer-than 10m   leak hunting: who has waited 10 minutes?
  gprof-rs attach -- ./server --port 8080   start it, snapshot it once started, leave it running")]
    Attach(AttachArgs),
    /// Sample every task of a process periodically and write one aggregated profile.
    ///
    /// Attaches once and takes a snapshot every interval (two short pauses of the
    /// target each time). Every task in a snapshot counts one sample and one interval
    /// of wall time for its stack, labelled with its state (`running`, `runnable`, or
    /// what it waits on: `chan receive`, `sleep`, `sync.Mutex.Lock`, ...) and its own
    /// labels. Recording ends after --duration or --samples, on Ctrl-C, or when the
    /// target exits; what was taken is always written, and the target runs on untouched.
    #[command(after_help = RECORD_HELP)]
    Record(RecordArgs),
    /// A live view of what the tasks of a process are doing, refreshed every second.
    ///
    /// The header shows the task count, the tasks by state (running, runnable, and
    /// what each waits on) and the last snapshot's two pauses; below, the stacks with
    /// the most tasks, each by its leaf (the function the task is in, or the runtime
    /// call it waits in) and its first caller outside the runtime. Keys: `q`, Esc or
    /// Ctrl-C quit. Without a terminal on standard output it prints one plain-text
    /// view per interval instead (`-n` to stop after N).
    #[command(after_help = TOP_HELP)]
    Top(TopArgs),
    /// Run the bundled demo service (thousands of tasks), snapshot it (demo.pb.gz) and
    /// record it for 3 s (demo.svg, a flame graph).
    Demo(DemoArgs),
    /// Write the man page and shell completions (for packagers; `man/` and
    /// `completions/` in the repository are generated with this).
    #[command(hide = true)]
    Generate(GenerateArgs),
    /// The demo's target service (started by `gprof-rs demo`).
    #[command(hide = true)]
    DemoService,
}

const RECORD_HELP: &str = "\
Examples:
  gprof-rs record 4242 -o profile.pb.gz          until Ctrl-C, at 20 Hz
  gprof-rs record 4242 -d 30s -o flame.svg       30 s, flame graph (format from the extension)
  gprof-rs record 4242 -r 50 -n 500 -o p.json    500 snapshots at 50 Hz, speedscope JSON
  gprof-rs record 4242 -i 1s -d 5m -o p.pb.gz    one snapshot a second for five minutes
  gprof-rs record 4242 -d 5s -o - --format folded | grep chan
  gprof-rs record -o out.svg -- ./server --port 8080
                                    run ./server and record it from start to exit

Reading the output:
  go tool pprof -top -sample_index=samples profile.pb.gz   task samples per function
  go tool pprof -tags profile.pb.gz                        the split by state and label
  go tool pprof -tagfocus 'state=chan receive' -traces profile.pb.gz
  open flame.svg in a browser; load p.json at https://www.speedscope.app

Launch mode (-- CMD): CMD inherits gprof-rs's standard input, output and error, so it
runs as it would without gprof-rs. Recording starts as soon as its runtime is up and
ends when it exits (or at --duration/--samples, after which gprof-rs writes the
profile and waits for CMD). Ctrl-C reaches both; a SIGINT/SIGTERM sent to gprof-rs
alone is forwarded to CMD.";

const TOP_HELP: &str = "\
Examples:
  gprof-rs top 4242                  refresh every second; q to quit
  gprof-rs top 4242 -i 250ms         refresh four times a second
  gprof-rs top 4242 -n 1 | less      one plain-text view

Each refresh takes one snapshot: two pauses of the target, each a fraction of a millisecond.";

/// `gprof-rs top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Process id of a running program built on target-runtime.
    #[arg(value_name = "PID")]
    pub pid: u32,

    /// Time between refreshes, e.g. `1s`, `500ms`, `5s`.
    #[arg(short = 'i', long, value_name = "DUR", value_parser = parse_duration, default_value = "1s")]
    pub interval: Duration,

    /// Without a terminal: stop after N views (with a terminal, q quits).
    #[arg(short = 'n', long, value_name = "N")]
    pub iterations: Option<u64>,

    /// `concurrent` (default) or `stw`, as for `attach`.
    #[arg(long, value_enum, default_value_t = ModeArg::Concurrent, value_name = "MODE")]
    pub mode: ModeArg,

    /// Include the runtime's own system tasks.
    #[arg(long)]
    pub system: bool,
}

impl TopArgs {
    fn into_config(self) -> Result<TopConfig> {
        if self.pid == 0 {
            return Err(Error::Usage("PID must be a positive process id".into()));
        }
        if self.interval < Duration::from_millis(10) {
            return Err(Error::Usage("--interval must be at least 10ms".into()));
        }
        if self.iterations == Some(0) {
            return Err(Error::Usage("--iterations must be above zero".into()));
        }
        Ok(TopConfig {
            pid: self.pid,
            interval: self.interval,
            iterations: self.iterations,
            mode: match self.mode {
                ModeArg::Concurrent => Mode::Concurrent,
                ModeArg::Stw => Mode::StopTheWorld,
            },
            include_system: self.system,
        })
    }
}

/// `gprof-rs attach`.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Process id of a running program built on target-runtime (or give `-- CMD`).
    #[arg(value_name = "PID", required_unless_present = "command")]
    pub pid: Option<u32>,

    /// Write the profile to FILE instead of standard output. With -o the default format
    /// is pprof (gzip'd profile.proto that `go tool pprof` reads).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Output format: `pprof` (binary, needs -o), `text` (counts per distinct stack with
    /// labels, like Go's debug=1) or `tasks` (one block per task with its state, wait
    /// time and creator, like Go's debug=2). Default: text, or pprof with -o.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<FormatArg>,

    /// `concurrent`: two short stops, tasks recorded while the target runs (default).
    /// `stw`: everything inside one stop, like Go's old synchronous profile; the pause
    /// then grows with the number of tasks.
    #[arg(long, value_enum, default_value_t = ModeArg::Concurrent, value_name = "MODE")]
    pub mode: ModeArg,

    /// Print the pause lengths, how long the session between them lasted, task counts,
    /// bytes copied and the tool's own memory to standard error.
    #[arg(long)]
    pub stats: bool,

    /// Include the runtime's own system tasks.
    #[arg(long)]
    pub system: bool,

    /// Keep the runtime's context-switch and task-entry frames, which are hidden by
    /// default because every task has them.
    #[arg(long)]
    pub all_frames: bool,

    /// Leak hunting: keep only the tasks that have been waiting (on a channel, a lock,
    /// a sleep, I/O, ...) for longer than DUR, e.g. `10m`, `1h`, `0s` for every waiting
    /// task. The text format then shows each group's oldest wait, as
    /// `# oldest wait: 3m12s (task 42)`.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub blocked_longer_than: Option<Duration>,

    /// If another profiler is attached to the target, wait for it to finish (at most
    /// DUR; 10s if no DUR is given) instead of failing with exit status 7. Give it
    /// after the PID, or as `--wait=DUR`.
    #[arg(long, value_name = "DUR", num_args = 0..=1, default_missing_value = "10s", value_parser = parse_duration)]
    pub wait: Option<Duration>,

    /// Instead of a PID: run CMD with its ARGS, wait until its runtime has started,
    /// snapshot it once and leave it running.
    #[arg(last = true, value_name = "CMD", conflicts_with = "pid")]
    pub command: Vec<OsString>,
}

/// `gprof-rs record`.
#[derive(Debug, Args)]
pub struct RecordArgs {
    /// Process id of a running program built on target-runtime (or give `-- CMD`).
    #[arg(value_name = "PID", required_unless_present = "command")]
    pub pid: Option<u32>,

    /// Write the profile to FILE (`-` for standard output).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,

    /// Output format: `pprof` (gzip'd profile.proto for `go tool pprof`, with sample
    /// values samples/count and wall/nanoseconds and a `state` label), `flamegraph`
    /// (SVG), `folded` (collapsed stacks `root;...;leaf count`, for flamegraph.pl or
    /// inferno) or `speedscope` (JSON: one profile for all tasks, then one per state).
    /// Default: from FILE's extension (.svg, .folded/.txt, .json), else pprof; folded
    /// for `-o -`.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<RecordFormatArg>,

    /// Snapshots per second [default: 20]. Each snapshot pauses the target twice for
    /// a fraction of a millisecond; walking thousands of tasks takes milliseconds, so rates
    /// above ~100 Hz rarely pay off.
    #[arg(short = 'r', long, value_name = "HZ", conflicts_with = "interval")]
    pub rate: Option<f64>,

    /// Time between snapshots instead of --rate, e.g. `50ms`, `1s`, `2m`.
    #[arg(short = 'i', long, value_name = "DUR", value_parser = parse_duration)]
    pub interval: Option<Duration>,

    /// Stop after this long, e.g. `10s`, `500ms`, `2m`, `1h` (a bare number is seconds).
    /// Without --duration or --samples, record until Ctrl-C or until the target exits.
    #[arg(short = 'd', long, value_name = "DUR", value_parser = parse_duration, conflicts_with = "samples")]
    pub duration: Option<Duration>,

    /// Stop after N snapshots.
    #[arg(short = 'n', long, value_name = "N")]
    pub samples: Option<u64>,

    /// `concurrent`: two short stops per snapshot, tasks recorded while the target runs
    /// (default). `stw`: each snapshot inside one stop that grows with the task count.
    #[arg(long, value_enum, default_value_t = ModeArg::Concurrent, value_name = "MODE")]
    pub mode: ModeArg,

    /// Include the runtime's own system tasks.
    #[arg(long)]
    pub system: bool,

    /// Keep the runtime's context-switch and task-entry frames (hidden by default).
    #[arg(long)]
    pub all_frames: bool,

    /// If another profiler is attached to the target, wait for it to finish (at most
    /// DUR; 10s if no DUR is given) instead of failing with exit status 7. Give it
    /// after the PID, or as `--wait=DUR`.
    #[arg(long, value_name = "DUR", num_args = 0..=1, default_missing_value = "10s", value_parser = parse_duration)]
    pub wait: Option<Duration>,

    /// Instead of a PID: run CMD with its ARGS and record it from the moment its runtime
    /// starts until it exits (or a limit, or Ctrl-C).
    #[arg(last = true, value_name = "CMD", conflicts_with = "pid")]
    pub command: Vec<OsString>,
}

/// Output formats of `record`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecordFormatArg {
    /// gzip'd pprof profile.proto.
    Pprof,
    /// Flame graph SVG.
    Flamegraph,
    /// Collapsed stacks, one `root;...;leaf count` line each.
    Folded,
    /// speedscope JSON.
    Speedscope,
}

/// Parse a duration: a number and a unit (`ns`, `us`, `ms`, `s`, `m`, `h`), fractions
/// allowed (`1.5s`); a bare number is seconds.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration: use e.g. 10s, 500ms, 2m"))?;
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        u => {
            return Err(format!(
                "unknown unit `{u}` in `{s}`: use ns, us, ms, s, m or h"
            ))
        }
    };
    let secs = n * scale;
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("`{s}` is too long"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `gprof-rs demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory to write demo.pb.gz and demo.svg into.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out_dir: PathBuf,
}

/// `gprof-rs generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Directory for the man page.
    #[arg(long, value_name = "DIR", default_value = "man")]
    pub man_dir: PathBuf,
    /// Directory for the completions.
    #[arg(long, value_name = "DIR", default_value = "completions")]
    pub completions_dir: PathBuf,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// gzip'd pprof profile.proto.
    Pprof,
    /// Counts per distinct stack (Go's debug=1).
    Text,
    /// One block per task (Go's debug=2).
    Tasks,
}

/// Snapshot modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Two short stops; tasks recorded while the target runs.
    Concurrent,
    /// One stop for the whole snapshot.
    Stw,
}

/// A validated command.
#[derive(Debug)]
pub enum Command {
    /// `attach`.
    Attach(AttachConfig),
    /// `record`.
    Record(RecordConfig),
    /// `top`.
    Top(TopConfig),
    /// `demo`.
    Demo {
        /// Where to write the files.
        out_dir: PathBuf,
    },
    /// `demo-service`.
    DemoService,
    /// `generate`.
    Generate {
        /// Man page directory.
        man_dir: PathBuf,
        /// Completions directory.
        completions_dir: PathBuf,
    },
}

impl Cli {
    /// Validate into a [`Command`].
    pub fn into_command(self, stdout_is_terminal: bool) -> Result<Command> {
        Ok(match self.command {
            CommandArgs::Attach(a) => Command::Attach(a.into_config(stdout_is_terminal)?),
            CommandArgs::Record(r) => Command::Record(r.into_config(stdout_is_terminal)?),
            CommandArgs::Top(t) => Command::Top(t.into_config()?),
            CommandArgs::Demo(d) => Command::Demo { out_dir: d.out_dir },
            CommandArgs::DemoService => Command::DemoService,
            CommandArgs::Generate(g) => Command::Generate {
                man_dir: g.man_dir,
                completions_dir: g.completions_dir,
            },
        })
    }
}

impl AttachArgs {
    fn into_config(self, stdout_is_terminal: bool) -> Result<AttachConfig> {
        let format = match (self.format, &self.output) {
            (Some(FormatArg::Pprof), _) | (None, Some(_)) => OutputFormat::Pprof,
            (Some(FormatArg::Text), _) | (None, None) => OutputFormat::Text,
            (Some(FormatArg::Tasks), _) => OutputFormat::Tasks,
        };
        if format == OutputFormat::Pprof && self.output.is_none() && stdout_is_terminal {
            return Err(Error::Usage(
                "--format pprof writes binary data: add -o FILE (or pipe standard output)".into(),
            ));
        }
        let launch = launch_command(self.pid, self.command)?;
        Ok(AttachConfig {
            pid: self.pid.unwrap_or(0),
            output: self.output.map_or(Output::Stdout, Output::File),
            format,
            mode: match self.mode {
                ModeArg::Concurrent => Mode::Concurrent,
                ModeArg::Stw => Mode::StopTheWorld,
            },
            stats: self.stats,
            include_system: self.system,
            all_frames: self.all_frames,
            blocked_longer_than: self.blocked_longer_than,
            wait: self.wait,
            launch,
        })
    }
}

/// Exactly one of a PID and `-- CMD`: the command, if that is what was given.
fn launch_command(pid: Option<u32>, command: Vec<OsString>) -> Result<Option<Vec<OsString>>> {
    match (pid, command.is_empty()) {
        (Some(_), false) => Err(Error::Usage(
            "give either a PID or `-- CMD [ARGS...]`, not both".into(),
        )),
        (None, true) => Err(Error::Usage(
            "give the PID of a running program, or `-- CMD [ARGS...]` to start one".into(),
        )),
        (Some(0), true) => Err(Error::Usage("PID must be a positive process id".into())),
        (Some(_), true) => Ok(None),
        (None, false) => Ok(Some(command)),
    }
}

/// The format a file name asks for.
fn format_from_path(p: &Path) -> RecordFormat {
    let name = p.to_string_lossy().to_ascii_lowercase();
    if name.ends_with(".svg") {
        RecordFormat::Flamegraph
    } else if name.ends_with(".json") {
        RecordFormat::Speedscope
    } else if [".folded", ".collapsed", ".txt"]
        .iter()
        .any(|e| name.ends_with(e))
    {
        RecordFormat::Folded
    } else {
        RecordFormat::Pprof
    }
}

/// Default sampling rate of `record`.
pub const DEFAULT_RATE_HZ: f64 = 20.0;

impl RecordArgs {
    fn into_config(self, stdout_is_terminal: bool) -> Result<RecordConfig> {
        let output = if self.output.as_os_str() == "-" {
            Output::Stdout
        } else {
            Output::File(self.output.clone())
        };
        let format = match (self.format, &output) {
            (Some(f), _) => match f {
                RecordFormatArg::Pprof => RecordFormat::Pprof,
                RecordFormatArg::Flamegraph => RecordFormat::Flamegraph,
                RecordFormatArg::Folded => RecordFormat::Folded,
                RecordFormatArg::Speedscope => RecordFormat::Speedscope,
            },
            (None, Output::Stdout) => RecordFormat::Folded,
            (None, Output::File(p)) => format_from_path(p),
        };
        if format == RecordFormat::Pprof && output == Output::Stdout && stdout_is_terminal {
            return Err(Error::Usage(
                "--format pprof writes binary data: give -o FILE (or pipe standard output)".into(),
            ));
        }
        let interval = match (self.rate, self.interval) {
            (Some(hz), _) if !(hz > 0.0 && hz <= 1000.0) => {
                return Err(Error::Usage(format!(
                    "--rate {hz}: give a rate above 0 and at most 1000 snapshots per second"
                )))
            }
            (Some(hz), _) => Duration::from_secs_f64(1.0 / hz),
            (None, Some(d)) if d < Duration::from_millis(1) => {
                return Err(Error::Usage("--interval must be at least 1ms".into()))
            }
            (None, Some(d)) => d,
            (None, None) => Duration::from_secs_f64(1.0 / DEFAULT_RATE_HZ),
        };
        if self.duration == Some(Duration::ZERO) || self.samples == Some(0) {
            return Err(Error::Usage(
                "--duration and --samples must be above zero".into(),
            ));
        }
        let target = match launch_command(self.pid, self.command)? {
            Some(cmd) => Target::Launch(cmd),
            None => Target::Pid(self.pid.unwrap_or(0)),
        };
        Ok(RecordConfig {
            target,
            output,
            format,
            interval,
            duration: self.duration,
            samples: self.samples,
            mode: match self.mode {
                ModeArg::Concurrent => Mode::Concurrent,
                ModeArg::Stw => Mode::StopTheWorld,
            },
            include_system: self.system,
            all_frames: self.all_frames,
            wait: self.wait,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Command> {
        let cli = Cli::try_parse_from(args).map_err(|e| Error::Usage(e.to_string()))?;
        cli.into_command(true)
    }

    #[test]
    fn output_file_defaults_to_pprof_and_stdout_to_text() {
        let Command::Attach(c) = parse(&["gprof-rs", "attach", "7", "-o", "x.pb.gz"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(c.format, OutputFormat::Pprof);
        let Command::Attach(c) = parse(&["gprof-rs", "attach", "7"]).unwrap() else {
            panic!()
        };
        assert_eq!(c.format, OutputFormat::Text);
        assert_eq!(c.mode, Mode::Concurrent);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("").is_err());
    }

    fn record(args: &[&str]) -> Result<RecordConfig> {
        let mut v = vec!["gprof-rs", "record"];
        v.extend_from_slice(args);
        match parse(&v)? {
            Command::Record(c) => Ok(c),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn record_options() {
        let c = record(&["7", "-o", "x.svg", "--rate", "50", "--samples", "100"]).unwrap();
        assert_eq!(c.target, Target::Pid(7));
        assert_eq!(c.format, RecordFormat::Flamegraph);
        assert_eq!(c.interval, Duration::from_millis(20));
        assert_eq!(c.samples, Some(100));
        let c = record(&["7", "-o", "x.pb.gz", "-i", "1s", "-d", "2m"]).unwrap();
        assert_eq!(c.format, RecordFormat::Pprof);
        assert_eq!(c.interval, Duration::from_secs(1));
        assert_eq!(c.duration, Some(Duration::from_secs(120)));
        assert_eq!(
            record(&["7", "-o", "p.json"]).unwrap().format,
            RecordFormat::Speedscope
        );
        let c = record(&["7", "-o", "-"]).unwrap();
        assert_eq!((c.output, c.format), (Output::Stdout, RecordFormat::Folded));
        assert_eq!(
            record(&["7", "-o", "x", "--format", "folded"])
                .unwrap()
                .format,
            RecordFormat::Folded
        );
        let c = record(&["-o", "x.svg", "--", "prog", "--flag", "v"]).unwrap();
        assert_eq!(
            c.target,
            Target::Launch(vec!["prog".into(), "--flag".into(), "v".into()])
        );
    }

    #[test]
    fn record_usage_errors_are_clear() {
        let msg = |args: &[&str]| record(args).unwrap_err().to_string();
        assert!(msg(&["-o", "x"]).contains("PID"), "{}", msg(&["-o", "x"]));
        assert!(msg(&["7", "-o", "x", "--", "prog"]).contains("cannot be used with"));
        assert!(msg(&["7", "-o", "x", "-r", "0"]).contains("above 0"));
        assert!(msg(&["7", "-o", "x", "-r", "5", "-i", "1s"]).contains("cannot be used with"));
        assert!(msg(&["7", "-o", "x", "-d", "1s", "-n", "5"]).contains("cannot be used with"));
        assert!(msg(&["7", "-o", "x", "-d", "soon"]).contains("not a duration"));
        assert!(msg(&["7", "-o", "-", "--format", "pprof"]).contains("give -o FILE"));
        assert!(msg(&["7"]).contains("--output"));
    }

    #[test]
    fn attach_launch_mode() {
        let Command::Attach(c) = parse(&["gprof-rs", "attach", "--", "prog", "a"]).unwrap() else {
            panic!()
        };
        assert_eq!(c.launch, Some(vec!["prog".into(), "a".into()]));
        assert!(parse(&["gprof-rs", "attach"]).is_err());
        assert!(parse(&["gprof-rs", "attach", "0"]).is_err());
    }

    /// `(code, meaning)` rows of the exit-status table in `--help` (and the man page).
    fn help_exit_table() -> Vec<(String, String)> {
        let table = AFTER_HELP.split("Exit status:\n").nth(1).expect("table");
        table
            .lines()
            .map(|l| {
                let (code, text) = l.trim().split_once(' ').expect("code and text");
                (code.to_string(), text.trim().to_string())
            })
            .collect()
    }

    #[test]
    fn exit_status_table_matches_the_readme_and_the_error_codes() {
        let readme = include_str!("../README.md");
        let section = readme
            .split("### Exit status")
            .nth(1)
            .expect("README section");
        let rows: Vec<(String, String)> = section
            .lines()
            .filter_map(|l| l.strip_prefix("| "))
            .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
            .map(|l| {
                let mut cols = l.trim_end_matches(" |").split(" | ");
                (
                    cols.next().unwrap().to_string(),
                    cols.next().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            help_exit_table(),
            "README's table and --help's differ"
        );
        let codes: Vec<u8> = help_exit_table()
            .iter()
            .map(|(c, _)| c.parse().unwrap())
            .collect();
        let errors = [
            Error::Io(std::io::Error::other("x")),
            Error::Usage("x".into()),
            Error::ProcessNotFound { pid: 1 },
            Error::permission(1),
            Error::NotATarget { pid: 1 },
            Error::AbiMismatch {
                found: 1,
                expected: 2,
            },
            Error::ProfilerBusy { owner_pid: 1 },
            Error::ProcessExited { pid: 1 },
            Error::bad("x"),
            Error::Interrupted,
        ];
        let mut expected: Vec<u8> = errors.iter().map(Error::exit_code).collect();
        expected.insert(0, 0);
        assert_eq!(codes, expected);
    }

    #[test]
    fn wait_takes_an_optional_duration() {
        let wait = |args: &[&str]| match parse(args).unwrap() {
            Command::Attach(c) => c.wait,
            Command::Record(c) => c.wait,
            _ => panic!(),
        };
        assert_eq!(wait(&["gprof-rs", "attach", "7"]), None);
        assert_eq!(
            wait(&["gprof-rs", "attach", "7", "--wait"]),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            wait(&["gprof-rs", "attach", "7", "--wait", "30s"]),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            wait(&["gprof-rs", "record", "7", "-o", "x.svg", "--wait=250ms"]),
            Some(Duration::from_millis(250))
        );
        assert!(parse(&["gprof-rs", "attach", "7", "--wait", "soon"]).is_err());
    }

    #[test]
    fn top_and_blocked_options() {
        let Command::Top(c) = parse(&["gprof-rs", "top", "7"]).unwrap() else {
            panic!()
        };
        assert_eq!((c.pid, c.interval), (7, Duration::from_secs(1)));
        let Command::Top(c) = parse(&["gprof-rs", "top", "7", "-i", "250ms", "-n", "3"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(c.interval, Duration::from_millis(250));
        assert_eq!(c.iterations, Some(3));
        assert!(parse(&["gprof-rs", "top", "7", "-i", "1ms"]).is_err());
        assert!(parse(&["gprof-rs", "top", "0"]).is_err());
        let Command::Attach(c) =
            parse(&["gprof-rs", "attach", "7", "--blocked-longer-than", "10m"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(c.blocked_longer_than, Some(Duration::from_secs(600)));
    }

    #[test]
    fn binary_to_a_terminal_is_refused_with_a_fix() {
        let e = parse(&["gprof-rs", "attach", "7", "--format", "pprof"]).unwrap_err();
        assert!(e.to_string().contains("add -o FILE"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }
}
