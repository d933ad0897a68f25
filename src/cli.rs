//! The command line: clap types stop here. [`Cli::into_command`] turns them into a
//! validated, clap-free [`crate::config`] value; the man page and the shell completions
//! are rendered from the same definition (`gprof-rs generate`).

use crate::config::{AttachConfig, Output, OutputFormat};
use crate::error::{Error, Result};
use crate::snapshot::Mode;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

const AFTER_HELP: &str = "\
Examples:
  gprof-rs demo                          run the bundled demo service and profile it
  gprof-rs attach 4242                   what every task of PID 4242 is doing (text)
  gprof-rs attach 4242 --format tasks    one block per task, like Go's debug=2 dump
  gprof-rs attach 4242 -o tasks.pb.gz    a pprof file: go tool pprof -top tasks.pb.gz

Permissions: attaching uses ptrace. You need the same uid as the target and a Yama
ptrace_scope (/proc/sys/kernel/yama/ptrace_scope) of 0, or CAP_SYS_PTRACE (root).";

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
    /// The target is stopped twice, for tens of microseconds each time, whatever its
    /// number of tasks; the tasks are recorded while it runs.
    #[command(after_help = "\
Examples:
  gprof-rs attach 4242
  gprof-rs attach 4242 --format tasks | less
  gprof-rs attach 4242 -o snap.pb.gz && go tool pprof -traces snap.pb.gz
  gprof-rs attach 4242 --mode stw --stats")]
    Attach(AttachArgs),
    /// Run the bundled demo service (thousands of tasks), snapshot it, write demo.pb.gz.
    Demo(DemoArgs),
    /// Write the man page and shell completions (for packagers; `man/` and
    /// `completions/` in the repository are generated with this).
    #[command(hide = true)]
    Generate(GenerateArgs),
    /// The demo's target service (started by `gprof-rs demo`).
    #[command(hide = true)]
    DemoService,
}

/// `gprof-rs attach`.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Process id of a running program built on target-runtime.
    #[arg(value_name = "PID")]
    pub pid: u32,

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

    /// Print the pause lengths, task counts and bytes copied to standard error.
    #[arg(long)]
    pub stats: bool,

    /// Include the runtime's own system tasks.
    #[arg(long)]
    pub system: bool,

    /// Keep the runtime's context-switch and task-entry frames, which are hidden by
    /// default because every task has them.
    #[arg(long)]
    pub all_frames: bool,
}

/// `gprof-rs demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory to write demo.pb.gz into.
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
        if self.pid == 0 {
            return Err(Error::Usage("PID must be a positive process id".into()));
        }
        Ok(AttachConfig {
            pid: self.pid,
            output: self.output.map_or(Output::Stdout, Output::File),
            format,
            mode: match self.mode {
                ModeArg::Concurrent => Mode::Concurrent,
                ModeArg::Stw => Mode::StopTheWorld,
            },
            stats: self.stats,
            include_system: self.system,
            all_frames: self.all_frames,
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
    fn binary_to_a_terminal_is_refused_with_a_fix() {
        let e = parse(&["gprof-rs", "attach", "7", "--format", "pprof"]).unwrap_err();
        assert!(e.to_string().contains("add -o FILE"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }
}
