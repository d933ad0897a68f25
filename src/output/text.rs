//! Go's text goroutine dumps, for tasks.
//!
//! [`write_text`] is `debug=1` (runtime/pprof `printCountProfile`): stacks grouped with
//! a count, most frequent first:
//!
//! ```text
//! goroutine profile: total 3
//! 2 @ 0x401a2b 0x401c3d
//! # labels: {"k":"v"}
//! #    0x401a2a    app::worker+0x1a    /src/app.rs:12
//! #    0x401c3c    app::main+0x2c    /src/app.rs:30
//!
//! ```
//!
//! (The separators are tabs.) The header lists the raw stack addresses; each `#` line shows the address the frame
//! was looked up at (a return address minus one, as Go's `Frame.PC`), the function with
//! its offset from the function's entry, and file:line. Inlined frames get one line
//! each, innermost first.
//!
//! [`write_tasks`] is `debug=2` (Go's traceback): one block per task.
//!
//! ```text
//! task 5 ("worker") [chan receive, 3 minutes]:
//! app::inlined_helper(...)
//!     /src/app.rs:40
//! app::worker(...)
//!     /src/app.rs:12 +0x1b
//! created by app::main in task 1
//!     /src/app.rs:30
//!
//! ```
//!
//! As in Go, the `+0x..` offset (from the raw frame address) is shown on the frame
//! that is the machine-code function, not on the functions inlined into it, and the
//! wait time only when it is at least one minute.

use std::collections::HashMap;
use std::io::{self, Write};

use gprof_abi::{TaskState, WaitReason};

use super::{frames_at, go_quote, group_tasks, symbolize_stacks, LabelSet};
use crate::model::{Snapshot, StackId, TaskRecord};
use crate::symbolize::{SymFrame, Symbolizer};
use crate::unwind::lookup_address;

/// Write Go's `debug=1` form: stacks grouped by (stack, labels), counts, labels.
pub fn write_text(snapshot: &Snapshot, sym: &mut Symbolizer, w: impl Write) -> io::Result<()> {
    write_text_with(snapshot, sym, w, false)
}

/// [`write_text`], and with `oldest_wait` a line `# oldest wait: 3m12s (task 42)` per
/// group (after its labels): the longest-waiting task of the group, for leak hunting.
pub fn write_text_with(
    snapshot: &Snapshot,
    sym: &mut Symbolizer,
    mut w: impl Write,
    oldest_wait: bool,
) -> io::Result<()> {
    let groups = group_tasks(snapshot);
    let oldest = if oldest_wait {
        oldest_per_group(snapshot)
    } else {
        HashMap::new()
    };
    symbolize_stacks(snapshot, sym, groups.iter().map(|g| g.stack));
    let sym: &Symbolizer = sym;
    writeln!(w, "goroutine profile: total {}", snapshot.tasks.len())?;
    for g in &groups {
        let stack = snapshot.stacks.get(g.stack);
        write!(w, "{} @", g.count)?;
        for a in &stack.addrs {
            write!(w, " {a:#x}")?;
        }
        writeln!(w)?;
        if !g.labels.is_empty() {
            let mut kv: Vec<String> = g
                .labels
                .iter()
                .map(|(k, v)| format!("{}:{}", go_quote(k), go_quote(v)))
                .collect();
            kv.sort();
            writeln!(w, "# labels: {{{}}}", kv.join(", "))?;
        }
        if oldest_wait {
            if let Some(t) = oldest.get(&(g.stack, g.labels.clone())) {
                writeln!(
                    w,
                    "# oldest wait: {} (task {})",
                    format_duration(std::time::Duration::from_nanos(t.wait_ns)),
                    t.id
                )?;
            }
        }
        for (i, &addr) in stack.addrs.iter().enumerate() {
            let pc = lookup_address(addr, i > 0);
            for f in frames_at(sym, addr, i).iter() {
                write!(w, "#\t{pc:#x}\t{}", f.function)?;
                if let Some(entry) = f.entry.filter(|&e| e <= pc) {
                    write!(w, "+{:#x}", pc - entry)?;
                }
                if let Some(file) = &f.file {
                    write!(w, "\t{file}:{}", f.line)?;
                }
                writeln!(w)?;
            }
        }
        writeln!(w)?;
    }
    Ok(())
}

/// For each (stack, sorted labels) group, the task that has waited longest (lowest id
/// on a tie); one pass over the tasks.
fn oldest_per_group(snapshot: &Snapshot) -> HashMap<(StackId, LabelSet<'_>), &TaskRecord> {
    let mut out: HashMap<(StackId, LabelSet<'_>), &TaskRecord> = HashMap::new();
    for t in &snapshot.tasks {
        let e = out.entry((t.stack, super::label_set(t))).or_insert(t);
        if (t.wait_ns, std::cmp::Reverse(t.id)) > (e.wait_ns, std::cmp::Reverse(e.id)) {
            *e = t;
        }
    }
    out
}

/// A duration as people read it, rounded down: `750ns`, `12us`, `850ms`, `12.345s`,
/// `3m12s`, `1h`, `2h5m`, `1h0m7s`.
pub fn format_duration(d: std::time::Duration) -> String {
    let ns = d.as_nanos();
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}us", ns / 1_000);
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", ns / 1_000_000);
    }
    let secs = d.as_secs();
    if secs < 60 {
        let ms = d.subsec_millis();
        if ms == 0 {
            return format!("{secs}s");
        }
        let frac = format!("{ms:03}");
        return format!("{secs}.{}s", frac.trim_end_matches('0'));
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 || (h > 0 && s > 0) {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// The `[...]` part of a task header: wait reason (or state), and the wait in minutes
/// when at least one minute.
pub fn task_status(t: &TaskRecord) -> String {
    let mut s = if t.state == TaskState::WAITING && t.wait_reason != WaitReason::NONE {
        WaitReason::name(t.wait_reason).to_string()
    } else {
        TaskState::name(t.state).to_string()
    };
    let minutes = t.wait_ns / 60_000_000_000;
    if minutes >= 1 {
        s.push_str(&format!(", {minutes} minutes"));
    }
    s
}

/// Write Go's `debug=2` form: one block per task, in task id order.
pub fn write_tasks(snapshot: &Snapshot, sym: &mut Symbolizer, mut w: impl Write) -> io::Result<()> {
    let mut stacks: Vec<_> = snapshot.tasks.iter().map(|t| t.stack).collect();
    stacks.sort_unstable();
    stacks.dedup();
    symbolize_stacks(snapshot, sym, stacks);
    for t in &snapshot.tasks {
        if t.spawn.pc != 0 {
            sym.lookup(t.spawn.pc, false);
        }
    }
    let sym: &Symbolizer = sym;
    for t in &snapshot.tasks {
        write!(w, "task {}", t.id)?;
        if let Some(name) = t.name() {
            write!(w, " ({})", go_quote(name))?;
        }
        writeln!(w, " [{}]:", task_status(t))?;
        let stack = snapshot.stacks.get(t.stack);
        for (i, &addr) in stack.addrs.iter().enumerate() {
            let frames = frames_at(sym, addr, i);
            let last = frames.len().saturating_sub(1);
            for (j, f) in frames.iter().enumerate() {
                writeln!(w, "{}(...)", f.function)?;
                write!(w, "\t{}", file_line(f))?;
                if j == last {
                    if let Some(entry) = f.entry.filter(|&e| e <= addr) {
                        write!(w, " +{:#x}", addr - entry)?;
                    }
                }
                writeln!(w)?;
            }
        }
        if stack.incomplete {
            writeln!(w, "...additional frames elided...")?;
        }
        // The runtime's main task has no creator (Go prints none for main either).
        if t.parent_id != 0 && (t.spawn.pc != 0 || t.spawn.file.is_some()) {
            // The spawn pc lies in `spawn`, inlined into its caller: name the first frame
            // of the inline chain that is not the runtime's own.
            let creator = if t.spawn.pc != 0 {
                let frames = frames_at(sym, t.spawn.pc, 0);
                frames
                    .iter()
                    .find(|f| !f.function.starts_with("target_runtime::"))
                    .or(frames.last())
                    .map(|f| f.function.clone())
                    .unwrap_or_else(|| "?".into())
            } else {
                "?".into()
            };
            write!(w, "created by {creator}")?;
            if t.parent_id != 0 {
                write!(w, " in task {}", t.parent_id)?;
            }
            writeln!(w)?;
            match &t.spawn.file {
                Some(file) => writeln!(w, "\t{file}:{}", t.spawn.line)?,
                None => {
                    let frames = frames_at(sym, t.spawn.pc, 0);
                    match frames.first() {
                        Some(f) => writeln!(w, "\t{}", file_line(f))?,
                        None => writeln!(w, "\t?:0")?,
                    }
                }
            }
        }
        // A blank line ends every block, as in Go.
        writeln!(w)?;
    }
    Ok(())
}

fn file_line(f: &SymFrame) -> String {
    match &f.file {
        Some(file) => format!("{file}:{}", f.line),
        None => "?:0".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::format_duration;
    use std::time::Duration;

    #[test]
    fn durations_read_like_go() {
        let f = |ns: u64| format_duration(Duration::from_nanos(ns));
        assert_eq!(f(750), "750ns");
        assert_eq!(f(12_345), "12us");
        assert_eq!(f(850_999_999), "850ms");
        assert_eq!(f(12_345_678_901), "12.345s");
        assert_eq!(f(12_300_000_000), "12.3s");
        assert_eq!(f(5_000_000_000), "5s");
        assert_eq!(f(192_999_000_000), "3m12s");
        assert_eq!(f(120_000_000_000), "2m");
        assert_eq!(f(3_600_000_000_000), "1h");
        assert_eq!(f(3_900_000_000_000), "1h5m");
        assert_eq!(f(3_607_000_000_000), "1h0m7s");
    }
}
