//! `gprof-rs record`: periodic snapshots of one target, aggregated into one profile.
//!
//! One [`Session`] is attached for the whole recording, so the target's ELF/DWARF is
//! parsed once and one [`Symbolizer`] serves every snapshot. Each tick takes a snapshot
//! (two short pauses of the target) and folds it into a [`Recording`]; the addresses of
//! stacks not seen before are symbolized right away (each distinct address once), so
//! the output can still be symbolized after the target has exited.
//!
//! The recording ends when the sample count or duration is reached, on SIGINT/SIGTERM
//! (Ctrl-C), or when the target exits; in every case what was taken is written. A
//! snapshot that fails while the target is still alive is retried at the next tick;
//! after [`MAX_FAILURES`] failures in a row the recording stops, writes what it has and
//! reports the error.
//!
//! Each sample's wall time is the nominal interval. When a snapshot takes longer than
//! the interval, ticks are skipped rather than bunched up; the summary line then shows
//! the achieved rate.

pub mod agg;
pub mod launch;

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::config::{Output, RecordConfig, RecordFormat, Target};
use crate::error::{Error, Result};
use crate::snapshot::{interrupted, Mode, Session};
use crate::symbolize::Symbolizer;
use crate::unwind::ProcFiles;
pub use agg::Recording;

/// Consecutive failed snapshots (target still alive) after which the recording stops.
pub const MAX_FAILURES: u32 = 3;

/// Longest single sleep between checks for Ctrl-C (a signal normally wakes the sleep
/// at once; this bounds the case where it lands on another thread).
const SLEEP_SLICE: Duration = Duration::from_millis(100);

/// How a recording is taken.
#[derive(Debug, Clone)]
pub struct Options {
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
    /// Show a progress bar on standard error.
    pub progress: bool,
}

/// Why a recording ended.
#[derive(Debug)]
pub enum Ended {
    /// `--samples` or `--duration` reached.
    Limit,
    /// SIGINT or SIGTERM.
    Interrupted,
    /// The target exited.
    TargetExited,
    /// Snapshots kept failing with this error while the target was alive.
    Failed(Error),
}

/// Take snapshots of `session`'s target until a limit, Ctrl-C, the target's exit
/// (`gone` says whether it has exited) or repeated failures. `on_first` runs once after
/// the first snapshot.
pub fn record(
    session: &mut Session,
    opts: &Options,
    sym: &mut Symbolizer,
    gone: &mut dyn FnMut() -> bool,
    on_first: &mut dyn FnMut(&Recording),
) -> (Recording, Ended) {
    let mut rec = Recording::new(session.pid(), session.modules().to_vec(), opts.interval);
    session.set_periodic(opts.interval);
    retain_freed_memory();
    sym.set_modules(session.modules());
    let bar = progress_bar(opts);
    let start = Instant::now();
    let end_at = opts.duration.map(|d| start + d);
    let mut next = start;
    let mut failures = 0;
    let ended = loop {
        if interrupted() {
            break Ended::Interrupted;
        }
        if opts.samples.is_some_and(|n| rec.snapshots >= n) || end_at.is_some_and(|e| next >= e) {
            break Ended::Limit;
        }
        if gone() {
            break Ended::TargetExited;
        }
        match session.snapshot(opts.mode) {
            Ok(snap) => {
                failures = 0;
                let added = rec.add(&snap, opts.include_system);
                rec.symbolize(sym, added);
                rec.duration_ns = start.elapsed().as_nanos() as u64;
                if rec.snapshots == 1 {
                    on_first(&rec);
                }
                if let Some(bar) = &bar {
                    bar.set_position(rec.snapshots);
                    bar.set_message(format!(
                        "{} tasks now, {} seen | pause {:.0}+{:.0} us",
                        rec.tasks_last,
                        rec.tasks_seen(),
                        snap.stats.stw1_ns as f64 / 1e3,
                        snap.stats.stw2_ns as f64 / 1e3,
                    ));
                }
            }
            Err(Error::Interrupted) => break Ended::Interrupted,
            Err(_) if gone() => break Ended::TargetExited,
            Err(e) => {
                failures += 1;
                if failures >= MAX_FAILURES {
                    break Ended::Failed(e);
                }
            }
        }
        next += opts.interval;
        let now = Instant::now();
        if next < now {
            // Late (the snapshot took longer than the interval): skip the missed ticks.
            let behind = (now - next).as_nanos() / opts.interval.as_nanos().max(1) + 1;
            next += opts.interval * u32::try_from(behind).unwrap_or(u32::MAX);
        }
        if let Some(e) = end_at {
            if next >= e {
                continue;
            }
        }
        sleep_until(next);
    };
    if rec.snapshots > 0 {
        rec.duration_ns = start.elapsed().as_nanos() as u64;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    (rec, ended)
}

/// Keep memory freed by one snapshot for the next. glibc hands large blocks back to the
/// kernel on free (above the mmap and trim thresholds), so each snapshot of 10k tasks
/// page-faulted its megabyte-sized tables in again: ~300 faults per snapshot, a few
/// percent of the tool's time at 10 Hz (measured with `perf stat -e page-faults`).
pub(crate) fn retain_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tunables; called before the sampling loop
    // and with no allocation in progress on another thread (the tool is single-threaded).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

/// Sleep until `deadline`, returning early on SIGINT/SIGTERM.
pub(crate) fn sleep_until(deadline: Instant) {
    loop {
        if interrupted() {
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let d = (deadline - now).min(SLEEP_SLICE);
        let ts = libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        };
        // SAFETY: valid timespec; nanosleep returns EINTR when a handler ran (it is
        // never restarted, whatever SA_RESTART says), which is what we want.
        unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
    }
}

fn progress_bar(opts: &Options) -> Option<ProgressBar> {
    if !opts.progress {
        return None;
    }
    let (bar, template) = match opts.samples {
        Some(n) => (
            ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
            "{spinner} recording [{bar:25}] {pos}/{len} snapshots, {elapsed} | {msg}",
        ),
        None => (
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            "{spinner} recording: {pos} snapshots, {elapsed} | {msg} (Ctrl-C to stop)",
        ),
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
}

/// Is the (non-child) process `pid` gone? A zombie whose every thread has exited counts.
pub(crate) fn process_gone(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.trim().chars().next());
    match state {
        Some('Z' | 'X') => {
            // A zombie leader with live threads is still running.
            std::fs::read_dir(format!("/proc/{pid}/task")).map_or(true, |d| d.count() <= 1)
        }
        _ => false,
    }
}

/// `gprof-rs record`.
pub fn run(c: &RecordConfig) -> Result<()> {
    crate::snapshot::install_interrupt_handler();
    let mut launched = match &c.target {
        Target::Launch(cmd) => Some(launch::spawn(cmd)?),
        Target::Pid(_) => None,
    };
    let attached = match (&c.target, &launched) {
        (_, Some(l)) => launch::attach_when_started(l, launch::START_TIMEOUT),
        (Target::Pid(pid), None) => Session::attach_waiting(*pid, c.wait),
        (Target::Launch(_), None) => unreachable!("launched above"),
    };
    let mut session = match attached {
        Ok(s) => s,
        Err(e) => {
            if let Some(l) = &mut launched {
                finish_launched(l, &e);
            }
            return Err(e);
        }
    };
    let pid = session.pid();
    let opts = Options {
        interval: c.interval,
        duration: c.duration,
        samples: c.samples,
        mode: c.mode,
        include_system: c.include_system,
        progress: std::io::stderr().is_terminal(),
    };
    let mut sym = Symbolizer::new(ProcFiles { pid });
    let child_pid = launched.as_ref().map(|l| l.pid);
    let mut gone = move || match child_pid {
        Some(p) => launch::exited(p),
        None => process_gone(pid),
    };
    let hz = 1e9 / c.interval.as_nanos().max(1) as f64;
    let mut on_first = |r: &Recording| {
        // One line even without a terminal: scripts (and tests) can wait for it.
        eprintln!(
            "gprof-rs: recording PID {pid} at {hz:.1} Hz ({} tasks); Ctrl-C to stop",
            r.tasks_last
        );
    };
    let (mut rec, ended) = record(&mut session, &opts, &mut sym, &mut gone, &mut on_first);
    drop(session);
    if !c.all_frames {
        rec.hide_runtime_frames(&mut sym);
    }
    let written = write_recording(&rec, &mut sym, c.format, &c.output);
    let secs = rec.duration_ns as f64 / 1e9;
    let why = match &ended {
        Ended::Limit => String::new(),
        Ended::Interrupted => " (interrupted)".to_string(),
        Ended::TargetExited => format!("; PID {pid} exited, recording ended"),
        Ended::Failed(e) => format!("; stopped early: {e}"),
    };
    let dest = match &c.output {
        Output::File(p) => p.display().to_string(),
        Output::Stdout => "standard output".to_string(),
    };
    let achieved = if secs > 0.0 && rec.snapshots > 1 {
        format!(", {:.1} Hz achieved", (rec.snapshots - 1) as f64 / secs)
    } else {
        String::new()
    };
    eprintln!(
        "gprof-rs: {} snapshots in {secs:.2} s{achieved}, {} task samples, {} tasks seen; pause max {:.0} us, mean {:.0} us{why}",
        rec.snapshots,
        rec.total_samples(),
        rec.tasks_seen(),
        rec.pause_max_ns as f64 / 1e3,
        rec.pause_total_ns as f64 / 1e3 / rec.snapshots.max(1) as f64,
    );
    if written.is_ok() {
        eprintln!("gprof-rs: wrote {dest}");
    }
    if let Some(l) = &mut launched {
        if written.is_ok() && !launch::exited(l.pid) {
            eprintln!(
                "gprof-rs: waiting for `{}` (PID {}) to exit",
                l.display, l.pid
            );
        }
        match l.child.wait() {
            Ok(st) if !st.success() => eprintln!("gprof-rs: `{}` ended with {st}", l.display),
            _ => {}
        }
        launch::stop_forwarding();
    }
    written?;
    match ended {
        Ended::Failed(e) => Err(e),
        _ => Ok(()),
    }
}

/// After a failed attach in launch mode: a command that was not (yet) profiled is
/// stopped, except when it exited on its own or the user interrupted (it got the signal).
fn finish_launched(l: &mut launch::Launched, e: &Error) {
    match e {
        Error::ProcessExited { .. } | Error::Interrupted => {
            let _ = l.child.wait();
        }
        _ => launch::terminate(l),
    }
    launch::stop_forwarding();
}

/// Write a recording in `format` to `output`.
pub fn write_recording(
    rec: &Recording,
    sym: &mut Symbolizer,
    format: RecordFormat,
    output: &Output,
) -> Result<()> {
    use crate::output::sampled;
    crate::output::write_to(output, |w| match format {
        RecordFormat::Pprof => sampled::write_pprof(rec, sym, w),
        RecordFormat::Folded => sampled::write_folded(rec, sym, w),
        RecordFormat::Flamegraph => sampled::write_flamegraph(rec, sym, w),
        RecordFormat::Speedscope => sampled::write_speedscope(rec, sym, w),
    })
}
