//! What each command does, on validated settings.

use crate::cli::Command;
use crate::config::{AttachConfig, Output, OutputFormat};
use crate::error::{Error, Result};
use crate::model::Snapshot;
use crate::snapshot::Session;
use crate::symbolize::Symbolizer;
use crate::unwind::ProcFiles;
use std::io::{BufWriter, Write};

/// Run a validated command.
pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Attach(c) => attach(&c),
        Command::Record(c) => crate::record::run(&c),
        Command::Demo { out_dir } => crate::demo::run(&out_dir),
        Command::DemoService => crate::demo::service(),
        Command::Generate {
            man_dir,
            completions_dir,
        } => crate::generate::write_all(&man_dir, &completions_dir),
    }
}

/// `gprof-rs attach`.
pub fn attach(c: &AttachConfig) -> Result<()> {
    crate::snapshot::install_interrupt_handler();
    let (pid, mut session) = match &c.launch {
        None => (c.pid, Session::attach(c.pid)?),
        Some(cmd) => {
            use crate::record::launch;
            let mut l = launch::spawn(cmd)?;
            match launch::attach_when_started(&l, launch::START_TIMEOUT) {
                Ok(s) => {
                    eprintln!(
                        "gprof-rs: started `{}` as PID {}; it runs on after this snapshot",
                        l.display, l.pid
                    );
                    (l.pid, s)
                }
                Err(e) => {
                    if !matches!(e, Error::ProcessExited { .. } | Error::Interrupted) {
                        launch::terminate(&mut l);
                    }
                    return Err(e);
                }
            }
        }
    };
    let mut snap = session.snapshot(c.mode)?;
    drop(session);
    if !c.include_system {
        snap.tasks.retain(|t| !t.system);
    }
    if c.stats {
        print_stats(&snap);
    }
    let mut sym = Symbolizer::new(ProcFiles { pid });
    sym.set_modules(&snap.modules);
    if !c.all_frames {
        crate::output::trim::hide_runtime_frames(&mut snap, &mut sym);
    }
    write_snapshot(&snap, &mut sym, c.format, &c.output)
}

/// Write `snap` in `format` to `output`.
pub fn write_snapshot(
    snap: &Snapshot,
    sym: &mut Symbolizer,
    format: OutputFormat,
    output: &Output,
) -> Result<()> {
    let mut w: Box<dyn Write> = match output {
        Output::Stdout => Box::new(BufWriter::new(std::io::stdout().lock())),
        Output::File(p) => Box::new(BufWriter::new(std::fs::File::create(p).map_err(|e| {
            Error::Io(std::io::Error::new(
                e.kind(),
                format!("cannot create {}: {e}", p.display()),
            ))
        })?)),
    };
    let r = match format {
        OutputFormat::Pprof => crate::output::pprof::write_pprof(snap, sym, &mut w),
        OutputFormat::Text => crate::output::text::write_text(snap, sym, &mut w),
        OutputFormat::Tasks => crate::output::text::write_tasks(snap, sym, &mut w),
    };
    match r.and_then(|_| w.flush()) {
        Ok(()) => Ok(()),
        // `gprof-rs attach N | head` is fine.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::Io(e)),
    }
}

fn print_stats(s: &Snapshot) {
    let st = &s.stats;
    eprintln!(
        "gprof-rs: {} tasks; STW1 {:.1} us, STW2 {:.1} us, total {:.2} ms; {} threads; recorded: {} at STW1, {} by the tool, {} by the runtime; {} torn; {} stack bytes copied",
        s.tasks.len(),
        st.stw1_ns as f64 / 1e3,
        st.stw2_ns as f64 / 1e3,
        st.total_ns as f64 / 1e6,
        st.threads,
        st.recorded_stw,
        st.recorded_tool,
        st.recorded_runtime,
        st.torn,
        st.bytes_copied,
    );
}
