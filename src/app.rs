//! What each command does, on validated settings.

use crate::cli::Command;
use crate::config::{AttachConfig, Output, OutputFormat};
use crate::error::{Error, Result};
use crate::model::Snapshot;
use crate::output::text::format_duration;
use crate::snapshot::Session;
use crate::symbolize::Symbolizer;
use crate::unwind::ProcFiles;
use gprof_abi::TaskState;

/// Run a validated command.
pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Attach(c) => attach(&c),
        Command::Record(c) => crate::record::run(&c),
        Command::Top(c) => crate::top::run(&c),
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
        None => (c.pid, Session::attach_waiting(c.pid, c.wait)?),
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
    if c.format != OutputFormat::Tasks {
        session.set_unordered();
    }
    let mut snap = session.snapshot(c.mode)?;
    drop(session);
    if !c.include_system {
        snap.tasks.retain(|t| !t.system);
    }
    if c.stats {
        print_stats(&snap);
    }
    if let Some(min) = c.blocked_longer_than {
        keep_blocked_longer_than(&mut snap, min);
    }
    let mut sym = Symbolizer::new(ProcFiles { pid });
    sym.set_modules(&snap.modules);
    if !c.all_frames {
        crate::output::trim::hide_runtime_frames(&mut snap, &mut sym);
    }
    write_output(
        &snap,
        &mut sym,
        c.format,
        &c.output,
        c.blocked_longer_than.is_some(),
    )?;
    if c.stats {
        // Read while the snapshot and the symbolizer are still alive: the high-water
        // mark of the tool's own memory, without anyone polling it from outside (a
        // poller's wake-ups disturb the target being measured on a small machine).
        if let Some(kb) = rss_anon_kb() {
            eprintln!("gprof-rs: private memory at the end: {kb} KB (RssAnon)");
        }
    }
    // The process exits next. Freeing the symbolizer (a binary's DWARF, megabytes, and
    // addr2line's parsed units) and the snapshot was 5% of a 1k-task run, on a CPU the
    // target may want; the kernel takes the pages back at exit in one go.
    std::mem::forget(sym);
    std::mem::forget(snap);
    Ok(())
}

/// This process's private resident memory (`RssAnon` in /proc/self/status), KiB.
fn rss_anon_kb() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `--blocked-longer-than`: keep only the tasks waiting for at least `min`; say so on
/// standard error when none is left.
fn keep_blocked_longer_than(snap: &mut Snapshot, min: std::time::Duration) {
    let before = snap.tasks.len();
    let longest = snap
        .tasks
        .iter()
        .filter(|t| t.state == TaskState::WAITING)
        .map(|t| t.wait_ns)
        .max();
    let min_ns = u64::try_from(min.as_nanos()).unwrap_or(u64::MAX);
    snap.tasks
        .retain(|t| t.state == TaskState::WAITING && t.wait_ns >= min_ns);
    if snap.tasks.is_empty() {
        let longest = match longest {
            Some(ns) => format!(
                "the longest wait is {}",
                format_duration(std::time::Duration::from_nanos(ns))
            ),
            None => "none is waiting".to_string(),
        };
        eprintln!(
            "gprof-rs: no task waiting longer than {} ({before} tasks; {longest})",
            format_duration(min)
        );
    }
}

/// Write `snap` in `format` to `output`.
pub fn write_snapshot(
    snap: &Snapshot,
    sym: &mut Symbolizer,
    format: OutputFormat,
    output: &Output,
) -> Result<()> {
    write_output(snap, sym, format, output, false)
}

/// [`write_snapshot`], with each group's oldest wait in the text format.
fn write_output(
    snap: &Snapshot,
    sym: &mut Symbolizer,
    format: OutputFormat,
    output: &Output,
    oldest_wait: bool,
) -> Result<()> {
    crate::output::write_to(output, |w| match format {
        OutputFormat::Pprof => crate::output::pprof::write_pprof(snap, sym, w),
        OutputFormat::Text => crate::output::text::write_text_with(snap, sym, w, oldest_wait),
        OutputFormat::Tasks => crate::output::text::write_tasks(snap, sym, w),
    })
}

fn print_stats(s: &Snapshot) {
    let st = &s.stats;
    eprintln!(
        "gprof-rs: {} tasks; STW1 {:.1} us, STW2 {:.1} us, session {:.2} ms, total {:.2} ms; {} threads; recorded: {} at STW1, {} by the tool, {} by the runtime; {} torn; {} stack bytes copied",
        s.tasks.len(),
        st.stw1_ns as f64 / 1e3,
        st.stw2_ns as f64 / 1e3,
        st.session_ns as f64 / 1e6,
        st.total_ns as f64 / 1e6,
        st.threads,
        st.recorded_stw,
        st.recorded_tool,
        st.recorded_runtime,
        st.torn,
        st.bytes_copied,
    );
    eprintln!(
        "gprof-rs: phases: with the runtime {:.2} ms ({}), walked {:.2} ms ({}), read the rest after STW2 {:.2} ms; {} bytes of runtime records; {} stacks unwound from a remembered walk",
        st.wait_ns as f64 / 1e6,
        match (st.helper_alongside, st.assist_covered) {
            (Some(true), _) => "its helper's records unwound as it wrote them",
            (Some(false), _) => "its helper's records unwound in turns with it",
            (None, Some(true)) => "its workers recorded every parked task between their own",
            (None, Some(false)) =>
                "its workers recorded parked tasks between their own, then stalled or left some",
            (None, None) => "waiting for busy tasks to record themselves; no helper",
        },
        st.walk_ns as f64 / 1e6,
        match (st.helper_leftovers, st.assist_covered) {
            (_, Some(true)) => "no slot".to_string(),
            (Some(n), _) => format!("the {n} slots the helper left"),
            (None, _) => "the whole table".to_string(),
        },
        st.arena_ns as f64 / 1e6,
        st.runtime_bytes,
        st.memo_hits,
    );
}
