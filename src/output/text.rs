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

use std::io::{self, Write};

use gprof_abi::{TaskState, WaitReason};

use super::{frames_at, go_quote, group_tasks, symbolize_stacks};
use crate::model::{Snapshot, TaskRecord};
use crate::symbolize::{SymFrame, Symbolizer};
use crate::unwind::lookup_address;

/// Write Go's `debug=1` form: stacks grouped by (stack, labels), counts, labels.
pub fn write_text(snapshot: &Snapshot, sym: &mut Symbolizer, mut w: impl Write) -> io::Result<()> {
    let groups = group_tasks(snapshot);
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
        if let Some(name) = &t.name {
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
        if t.spawn.pc != 0 || t.spawn.file.is_some() {
            let creator = if t.spawn.pc != 0 {
                frames_at(sym, t.spawn.pc, 0)
                    .first()
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
