//! Writers for a [`Snapshot`]: pprof (`pprof`), and Go's
//! `debug=1` / `debug=2` text forms (`text`); for a recording of many snapshots
//! (`gprof-rs record`): pprof, collapsed stacks, flame graph and speedscope (`sampled`).
//!
//! Every writer first groups tasks by interned stack (and labels), resolves each
//! distinct address once through the [`Symbolizer`], then writes from the cache.

pub mod pprof;
pub mod pprof_proto;
pub mod sampled;
pub mod text;
pub mod trim;

use std::collections::BTreeSet;

use rustc_hash::FxHashMap;

use crate::model::{Snapshot, StackId};
use crate::symbolize::{SymFrame, Symbolizer};

pub use pprof::{build_profile, write_pprof};
pub use text::{write_tasks, write_text};

/// Tasks sharing one stack and one label set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group<'a> {
    /// The shared stack.
    pub stack: StackId,
    /// The shared labels, sorted by key (then value).
    pub labels: LabelSet<'a>,
    /// How many tasks.
    pub count: u64,
}

/// Sorted label pairs of one task.
pub type LabelSet<'a> = Vec<(&'a str, &'a str)>;

/// Create `output` (stdout, or a file created or truncated), let `write` fill it, and
/// flush it. A reader that closed the pipe early (`gprof-rs attach N | head`) is not an
/// error.
pub fn write_to(
    output: &crate::config::Output,
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> crate::error::Result<()> {
    use crate::config::Output;
    use crate::error::Error;
    use std::io::{BufWriter, Write};
    let mut w: Box<dyn Write> = match output {
        Output::Stdout => Box::new(BufWriter::new(std::io::stdout().lock())),
        Output::File(p) => Box::new(BufWriter::new(std::fs::File::create(p).map_err(|e| {
            Error::Io(std::io::Error::new(
                e.kind(),
                format!("cannot create {}: {e}", p.display()),
            ))
        })?)),
    };
    match write(&mut w).and_then(|_| w.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::Io(e)),
    }
}

/// A task's labels as sorted borrowed pairs, the key its group is found by.
pub(crate) fn label_set(t: &crate::model::TaskRecord) -> LabelSet<'_> {
    let mut labels: LabelSet<'_> = t
        .labels()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    labels.sort();
    labels
}

/// Group the snapshot's tasks by (stack, labels), most frequent first; ties are
/// broken by the stack's addresses, then the labels, so the order is deterministic.
pub fn group_tasks(snapshot: &Snapshot) -> Vec<Group<'_>> {
    let mut counts: FxHashMap<(StackId, LabelSet<'_>), u64> = FxHashMap::default();
    for t in &snapshot.tasks {
        *counts.entry((t.stack, label_set(t))).or_default() += 1;
    }
    let mut groups: Vec<Group<'_>> = counts
        .into_iter()
        .map(|((stack, labels), count)| Group {
            stack,
            labels,
            count,
        })
        .collect();
    groups.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| {
                let sa = &snapshot.stacks.get(a.stack).addrs;
                let sb = &snapshot.stacks.get(b.stack).addrs;
                sa.cmp(sb)
            })
            .then_with(|| a.stack.cmp(&b.stack))
            .then_with(|| a.labels.cmp(&b.labels))
    });
    groups
}

/// Resolve every address of the given stacks (each distinct address once).
pub fn symbolize_stacks(
    snapshot: &Snapshot,
    sym: &mut Symbolizer,
    stacks: impl IntoIterator<Item = StackId>,
) {
    let mut seen = BTreeSet::new();
    for id in stacks {
        for (i, &addr) in snapshot.stacks.get(id).addrs.iter().enumerate() {
            if seen.insert((addr, i > 0)) {
                sym.lookup(addr, i > 0);
            }
        }
    }
}

/// The frames of stack entry `index` (0 = instruction pointer), from the cache filled
/// by [`symbolize_stacks`]; a placeholder if it was not resolved.
pub(crate) fn frames_at(
    sym: &Symbolizer,
    addr: u64,
    index: usize,
) -> std::borrow::Cow<'_, [SymFrame]> {
    match sym.cached(addr, index > 0) {
        Some(f) => std::borrow::Cow::Borrowed(f),
        None => std::borrow::Cow::Owned(vec![SymFrame {
            function: format!("0x{addr:x}"),
            file: None,
            line: 0,
            entry: None,
        }]),
    }
}

/// Quote like Go's `%q` (`strconv.Quote`): double quotes, `\"`, `\\`, the usual C
/// escapes, `\xNN` for other control bytes, `\u`/`\U` for non-printable code points.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_like_go() {
        assert_eq!(go_quote("plain"), "\"plain\"");
        assert_eq!(go_quote("a\"b\\c\nd\x01"), "\"a\\\"b\\\\c\\nd\\x01\"");
        assert_eq!(go_quote("héllo"), "\"héllo\"");
        assert_eq!(go_quote("\u{85}"), "\"\\u0085\"");
    }
}
