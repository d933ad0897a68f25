//! `gprof-rs top`: a live view of what the tasks of one process are doing.
//!
//! One [`Session`] is attached for the whole run (as `record` does); every interval it
//! takes a snapshot, hides the runtime's switch and entry frames, and groups the tasks
//! by (stack, state). Each group is shown by its two most informative frames: the
//! *leaf* (the function the task is in, or, when the task is inside the runtime, the
//! runtime call it made: `Receiver<T>::recv`, `sleep`, `Mutex<T>::lock`) and the *first
//! caller outside the runtime* (`fixture::recv_leaf`).
//!
//! With a terminal on standard output the view is drawn with ratatui in the alternate
//! screen, one line per row, truncated to the terminal's width (never wrapped), and
//! updated in place; `q`, Esc or Ctrl-C quit and restore the terminal. When the target
//! exits, the last view stays up with a notice until a key is pressed. Without a
//! terminal (a pipe, a file, a script) each refresh is printed as plain text and the
//! command ends at once when the target exits.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use gprof_abi::{TaskState, WaitReason};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;

use crate::config::TopConfig;
use crate::error::{Error, Result};
use crate::model::{Snapshot, StackId};
use crate::output::text::format_duration;
use crate::record::{process_gone, sleep_until, MAX_FAILURES};
use crate::snapshot::{interrupted, Session};
use crate::symbolize::Symbolizer;
use crate::unwind::ProcFiles;

/// Longest wait for a key before checking for signals and the next refresh.
const POLL_SLICE: Duration = Duration::from_millis(100);

/// Lines above the rows: title, states, pauses, blank, column header.
const HEADER_LINES: usize = 5;

/// Tasks sharing one stack and one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// How many tasks.
    pub count: u64,
    /// `running`, `runnable`, or the wait reason (`chan receive`, `sleep`, ...).
    pub state: String,
    /// The innermost informative frame.
    pub leaf: String,
    /// The first caller outside the runtime, if there is one besides the leaf.
    pub caller: Option<String>,
}

/// What one refresh shows.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Target pid.
    pub pid: u32,
    /// The target's command name.
    pub comm: String,
    /// Refresh interval.
    pub interval: Duration,
    /// Snapshots taken so far.
    pub snapshots: u64,
    /// Tasks in the last snapshot.
    pub tasks: u64,
    /// Tasks by state: `running`, `runnable` first, then each wait reason, most first.
    pub states: Vec<(String, u64)>,
    /// Pauses and duration of the last snapshot, nanoseconds.
    pub stw1_ns: u64,
    /// Second pause.
    pub stw2_ns: u64,
    /// The whole last snapshot.
    pub total_ns: u64,
    /// CLOCK_REALTIME of the last snapshot's STW 1, nanoseconds.
    pub time_unix_ns: u64,
    /// Groups, most tasks first.
    pub rows: Vec<Row>,
    /// The last snapshot failed with this (the rows are the previous snapshot's).
    pub error: Option<String>,
    /// The target has exited.
    pub exited: bool,
}

/// The state a task is shown under.
fn state_name(state: u32, wait_reason: u32) -> &'static str {
    if state == TaskState::WAITING && wait_reason != WaitReason::NONE {
        WaitReason::name(wait_reason)
    } else {
        TaskState::name(state)
    }
}

/// Runtime and standard-library frames: what the first-caller column looks past.
pub fn is_runtime_frame(f: &str) -> bool {
    let f = f.trim_start_matches('<');
    [
        "target_runtime::",
        "gprof_abi::",
        "gprof_rt_",
        "std::",
        "core::",
        "alloc::",
        "__rust",
    ]
    .iter()
    .any(|p| f.starts_with(p))
}

/// A function name made shorter for a narrow column: the runtime's crate path goes.
fn short(f: &str) -> String {
    f.replace("target_runtime::", "")
}

/// (leaf, first caller outside the runtime) of a stack's function names, innermost
/// first: a task inside the runtime is shown by the runtime call it made and its caller;
/// a task in its own code by that function and its nearest non-runtime caller.
pub fn leaf_and_caller(names: &[String]) -> (String, Option<String>) {
    match names.iter().position(|n| !is_runtime_frame(n)) {
        Some(0) => (
            short(&names[0]),
            names[1..]
                .iter()
                .find(|n| !is_runtime_frame(n))
                .map(|n| short(n)),
        ),
        Some(u) => (short(&names[u - 1]), Some(short(&names[u]))),
        None => (
            names.first().map_or_else(|| "?".to_string(), |n| short(n)),
            None,
        ),
    }
}

impl View {
    /// Fill the task counts and rows from a snapshot whose runtime frames are hidden.
    pub fn update(&mut self, snap: &Snapshot, sym: &mut Symbolizer) {
        self.snapshots += 1;
        self.tasks = snap.tasks.len() as u64;
        self.stw1_ns = snap.stats.stw1_ns;
        self.stw2_ns = snap.stats.stw2_ns;
        self.total_ns = snap.stats.total_ns;
        self.time_unix_ns = snap.time_unix_ns;
        self.error = None;
        let mut states: HashMap<&'static str, u64> = HashMap::new();
        let mut groups: HashMap<(StackId, &'static str), u64> = HashMap::new();
        for t in &snap.tasks {
            let s = state_name(t.state, t.wait_reason);
            *states.entry(s).or_default() += 1;
            *groups.entry((t.stack, s)).or_default() += 1;
        }
        let mut st: Vec<(String, u64)> = Vec::new();
        for fixed in ["running", "runnable"] {
            st.push((fixed.to_string(), states.remove(fixed).unwrap_or(0)));
        }
        let mut rest: Vec<(&str, u64)> = states.into_iter().collect();
        rest.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        st.extend(rest.into_iter().map(|(s, n)| (s.to_string(), n)));
        self.states = st;
        let mut rows: Vec<(Row, StackId)> = groups
            .into_iter()
            .map(|((stack, state), count)| {
                let names = stack_names(snap, stack, sym);
                let (leaf, caller) = leaf_and_caller(&names);
                (
                    Row {
                        count,
                        state: state.to_string(),
                        leaf,
                        caller,
                    },
                    stack,
                )
            })
            .collect();
        rows.sort_by(|(a, sa), (b, sb)| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.caller.cmp(&b.caller))
                .then_with(|| a.leaf.cmp(&b.leaf))
                .then_with(|| a.state.cmp(&b.state))
                .then_with(|| sa.cmp(sb))
        });
        self.rows = rows.into_iter().map(|(r, _)| r).collect();
    }

    /// The view as lines of at most `height` (None: all rows), with their styles.
    pub fn lines(&self, height: Option<usize>) -> Vec<(String, Style)> {
        let bold = Style::default().add_modifier(Modifier::BOLD);
        let reversed = Style::default().add_modifier(Modifier::REVERSED);
        let plain = Style::default();
        let mut out = Vec::new();
        let comm = if self.comm.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.comm)
        };
        out.push((
            format!(
                "gprof-rs top  PID {}{comm}  {} tasks  every {}  q: quit",
                self.pid,
                self.tasks,
                format_duration(self.interval)
            ),
            bold,
        ));
        out.push((
            self.states
                .iter()
                .map(|(s, n)| format!("{s} {n}"))
                .collect::<Vec<_>>()
                .join("  "),
            plain,
        ));
        let third = if self.exited {
            (
                format!("PID {} exited: press any key to quit", self.pid),
                reversed,
            )
        } else if let Some(e) = &self.error {
            (format!("snapshot failed, retrying: {e}"), reversed)
        } else {
            (
                format!(
                    "snapshot #{} at {}  STW1 {}  STW2 {}  took {}",
                    self.snapshots,
                    clock(self.time_unix_ns),
                    pause(self.stw1_ns),
                    pause(self.stw2_ns),
                    pause(self.total_ns),
                ),
                plain,
            )
        };
        out.push(third);
        out.push((String::new(), plain));
        out.push((
            format!(
                "{:>6} {:>6}  {:<16} LEAF <- FIRST CALLER OUTSIDE THE RUNTIME",
                "TASKS", "SHARE", "STATE"
            ),
            reversed,
        ));
        let room = height.map_or(usize::MAX, |h| h.saturating_sub(HEADER_LINES));
        let fits = self.rows.len() <= room;
        let shown = if fits {
            self.rows.len()
        } else {
            room.saturating_sub(1)
        };
        let total = self.tasks.max(1) as f64;
        for r in &self.rows[..shown] {
            let mut line = format!(
                "{:>6} {:>5.1}%  {:<16} {}",
                r.count,
                r.count as f64 * 100.0 / total,
                r.state,
                r.leaf
            );
            if let Some(c) = &r.caller {
                line.push_str(" <- ");
                line.push_str(c);
            }
            out.push((line, plain));
        }
        if !fits && room > 0 {
            let hidden = &self.rows[shown..];
            let tasks: u64 = hidden.iter().map(|r| r.count).sum();
            out.push((
                format!("  ... {} more stacks ({tasks} tasks)", hidden.len()),
                plain,
            ));
        }
        out
    }
}

/// Function names of a stack, innermost first, inlined frames included.
fn stack_names(snap: &Snapshot, stack: StackId, sym: &mut Symbolizer) -> Vec<String> {
    let mut names = Vec::new();
    for (i, &addr) in snap.stacks.get(stack).addrs.iter().enumerate() {
        for f in sym.lookup(addr, i > 0) {
            names.push(f.function.clone());
        }
    }
    names
}

/// A pause as `45.2us` or `2.31ms`.
fn pause(ns: u64) -> String {
    if ns < 1_000_000 {
        format!("{:.1}us", ns as f64 / 1e3)
    } else {
        format!("{:.2}ms", ns as f64 / 1e6)
    }
}

/// Local wall-clock time `HH:MM:SS` of a CLOCK_REALTIME value.
fn clock(unix_ns: u64) -> String {
    let t = (unix_ns / 1_000_000_000) as libc::time_t;
    // SAFETY: `tm` is plain data; localtime_r writes it and reads only `t`.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return "?".into();
        }
        tm
    };
    format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}

/// Takes the snapshots and keeps the view.
struct Refresher {
    session: Session,
    sym: Symbolizer,
    cfg: TopConfig,
    view: View,
    failures: u32,
}

impl Refresher {
    /// One refresh: a snapshot folded into the view, or the target's exit noted.
    /// Err only for Ctrl-C/SIGTERM, or for [`MAX_FAILURES`] failures in a row.
    fn refresh(&mut self) -> Result<()> {
        if self.view.exited {
            return Ok(());
        }
        if process_gone(self.cfg.pid) {
            self.view.exited = true;
            return Ok(());
        }
        match self.session.snapshot(self.cfg.mode) {
            Ok(mut snap) => {
                self.failures = 0;
                if !self.cfg.include_system {
                    snap.tasks.retain(|t| !t.system);
                }
                self.sym.set_modules(&snap.modules);
                crate::output::trim::hide_runtime_frames(&mut snap, &mut self.sym);
                self.view.update(&snap, &mut self.sym);
                Ok(())
            }
            Err(Error::Interrupted) => Err(Error::Interrupted),
            Err(_) if process_gone(self.cfg.pid) => {
                self.view.exited = true;
                Ok(())
            }
            Err(e) => {
                self.failures += 1;
                self.view.error = Some(e.to_string());
                if self.failures >= MAX_FAILURES && self.view.snapshots == 0 {
                    return Err(e);
                }
                Ok(())
            }
        }
    }
}

/// `gprof-rs top`.
pub fn run(c: &TopConfig) -> Result<()> {
    crate::snapshot::install_interrupt_handler();
    let mut session = Session::attach(c.pid)?;
    session.set_periodic(c.interval);
    crate::record::retain_freed_memory();
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", c.pid)).unwrap_or_default();
    let mut r = Refresher {
        session,
        sym: Symbolizer::new(ProcFiles { pid: c.pid }),
        cfg: c.clone(),
        view: View {
            pid: c.pid,
            comm: comm.trim().to_string(),
            interval: c.interval,
            ..View::default()
        },
        failures: 0,
    };
    if std::io::stdout().is_terminal() {
        interactive(&mut r)
    } else {
        batch(&mut r)
    }
}

/// Plain text, one view per interval, until `--iterations`, the target's exit or a
/// signal.
fn batch(r: &mut Refresher) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let mut next = Instant::now();
    let mut shown = 0u64;
    loop {
        if interrupted() {
            return Err(Error::Interrupted);
        }
        r.refresh()?;
        if r.view.exited {
            let _ = writeln!(out, "PID {} exited", r.cfg.pid);
            return Ok(());
        }
        if r.view.error.is_some() && r.failures >= MAX_FAILURES {
            return Err(Error::Io(std::io::Error::other(
                r.view.error.clone().unwrap_or_default(),
            )));
        }
        let mut text = String::new();
        if shown > 0 {
            text.push('\n');
        }
        for (l, _) in r.view.lines(None) {
            text.push_str(&l);
            text.push('\n');
        }
        match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
            Ok(()) => {}
            // `gprof-rs top PID | head` is fine.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(Error::Io(e)),
        }
        shown += 1;
        if r.cfg.iterations.is_some_and(|n| shown >= n) {
            return Ok(());
        }
        next += r.cfg.interval;
        let now = Instant::now();
        if next < now {
            next = now;
        }
        sleep_until(next);
    }
}

/// Restores the terminal however the view ends (error, signal, panic unwinding).
struct RestoreTerminal;

impl Drop for RestoreTerminal {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// The live view in the alternate screen.
fn interactive(r: &mut Refresher) -> Result<()> {
    let mut term = ratatui::try_init()?;
    let _restore = RestoreTerminal;
    let mut next = Instant::now();
    loop {
        if interrupted() {
            return Err(Error::Interrupted);
        }
        if !r.view.exited && Instant::now() >= next {
            r.refresh()?;
            next += r.cfg.interval;
            let now = Instant::now();
            if next < now {
                next = now + r.cfg.interval;
            }
        }
        term.draw(|f| {
            let area = f.area();
            let lines: Vec<Line> = r
                .view
                .lines(Some(area.height as usize))
                .into_iter()
                .map(|(s, style)| Line::styled(s, style))
                .collect();
            f.render_widget(Paragraph::new(lines), area);
        })?;
        // Wait for a key until the next refresh (or for ever once the target exited).
        loop {
            if interrupted() {
                return Err(Error::Interrupted);
            }
            let now = Instant::now();
            if !r.view.exited && now >= next {
                break;
            }
            let wait = if r.view.exited {
                POLL_SLICE
            } else {
                (next - now).min(POLL_SLICE)
            };
            let ev = match event::poll(wait) {
                Ok(true) => event::read(),
                Ok(false) => {
                    if !r.view.exited && process_gone(r.cfg.pid) {
                        // Show the exit at once rather than at the next refresh.
                        r.view.exited = true;
                        break;
                    }
                    continue;
                }
                Err(e) => Err(e),
            };
            match ev {
                Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => {
                    let quit = matches!(k.code, KeyCode::Char('q' | 'Q') | KeyCode::Esc)
                        || (k.code == KeyCode::Char('c')
                            && k.modifiers.contains(KeyModifiers::CONTROL));
                    if quit || r.view.exited {
                        return Ok(());
                    }
                }
                Ok(Event::Resize(..)) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Io(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn leaf_is_the_runtime_call_and_caller_the_first_user_frame() {
        let n = names(&[
            "target_runtime::park::park",
            "target_runtime::chan::Receiver<T>::recv",
            "fixture::recv_leaf",
            "fixture::recv_middle",
            "gprof_rt_task_entry",
        ]);
        assert_eq!(
            leaf_and_caller(&n),
            (
                "chan::Receiver<T>::recv".to_string(),
                Some("fixture::recv_leaf".to_string())
            )
        );
        let n = names(&[
            "fixture::busy_leaf",
            "<alloc::boxed::Box<F,A> as core::ops::function::FnOnce<Args>>::call_once",
            "fixture::serve::{{closure}}",
        ]);
        assert_eq!(
            leaf_and_caller(&n),
            (
                "fixture::busy_leaf".to_string(),
                Some("fixture::serve::{{closure}}".to_string())
            )
        );
        let n = names(&["target_runtime::park::park"]);
        assert_eq!(leaf_and_caller(&n), ("park::park".to_string(), None));
        assert_eq!(leaf_and_caller(&[]), ("?".to_string(), None));
    }

    fn view(rows: usize) -> View {
        View {
            pid: 42,
            comm: "svc".into(),
            interval: Duration::from_secs(1),
            snapshots: 3,
            tasks: rows as u64 * 2,
            states: vec![("running".into(), 0), ("sleep".into(), rows as u64 * 2)],
            rows: (0..rows)
                .map(|i| Row {
                    count: 2,
                    state: "sleep".into(),
                    leaf: "sleep".into(),
                    caller: Some(format!("svc::task{i}")),
                })
                .collect(),
            ..View::default()
        }
    }

    #[test]
    fn rows_that_do_not_fit_are_summarised() {
        let v = view(30);
        let all = v.lines(None);
        assert_eq!(all.len(), HEADER_LINES + 30);
        assert!(all[0].0.contains("PID 42 (svc)  60 tasks  every 1s"));
        assert_eq!(all[1].0, "running 0  sleep 60");
        assert_eq!(
            all[5].0,
            "     2   3.3%  sleep            sleep <- svc::task0"
        );
        let small = v.lines(Some(24));
        assert_eq!(small.len(), 24);
        assert_eq!(small[23].0, "  ... 12 more stacks (24 tasks)");
        assert_eq!(view(19).lines(Some(24)).len(), 24);
        let mut gone = view(1);
        gone.exited = true;
        assert!(gone.lines(None)[2].0.contains("PID 42 exited"));
    }
}
