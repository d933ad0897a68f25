//! Hiding the runtime's own frames, as Go's tracebacks hide `runtime.goexit` plumbing.
//!
//! Every parked task's stack starts with the context switch (`gprof_rt_switch` and the
//! scheduler's `switch_out`) and ends with the entry plumbing (`task_main`, boxed
//! closure shims, `catch_unwind`) above `gprof_rt_task_entry`. Those frames are the
//! same for every task and say nothing about what it waits for; `park` (the leaf that
//! names the wait) and the entry trampoline (the root) are kept.

use crate::model::{Snapshot, Stack, StackId, StackTable};
use crate::symbolize::Symbolizer;

/// Functions of the context switch: dropped from the leaf end.
const SWITCH: &[&str] = &[
    "gprof_rt_switch",
    "target_runtime::arch::x86_64::switch",
    "target_runtime::arch::aarch64::switch",
    "target_runtime::sched::switch_out",
];

/// Functions of the task entry path: dropped from the root end (above the trampoline).
fn is_entry_plumbing(f: &str) -> bool {
    f == "target_runtime::sched::task_main"
        || f == "target_runtime::task::spawn_on::{{closure}}"
        || f == "__rust_try"
        || f.starts_with("std::panicking::")
        || f.starts_with("std::panic::catch_unwind")
        || f.starts_with("<core::panic::unwind_safe::AssertUnwindSafe<F>")
        || f.starts_with("<alloc::boxed::Box<F,A> as core::ops::function::FnOnce")
        || f.starts_with("core::ops::function::FnOnce::call_once")
}

/// Rewrite the snapshot's stacks without the switch and entry plumbing.
pub fn hide_runtime_frames(snap: &mut Snapshot, sym: &mut Symbolizer) {
    let (table, remap) = trim_stacks(&snap.stacks, sym);
    for t in &mut snap.tasks {
        t.stack = remap[t.stack as usize];
    }
    snap.stacks = table;
}

/// `stacks` without the switch and entry plumbing: the new table, and for each old
/// stack id its new id (stacks that become equal share one).
pub fn trim_stacks(stacks: &StackTable, sym: &mut Symbolizer) -> (StackTable, Vec<StackId>) {
    let mut table = StackTable::default();
    let mut remap = Vec::with_capacity(stacks.all().len());
    for st in stacks.all() {
        remap.push(table.intern(trim(st, sym)));
    }
    (table, remap)
}

fn trim(st: &Stack, sym: &mut Symbolizer) -> Stack {
    let n = st.addrs.len();
    let all = |sym: &mut Symbolizer, i: usize, pred: &dyn Fn(&str) -> bool| {
        sym.lookup(st.addrs[i], i > 0)
            .iter()
            .all(|f| pred(&f.function))
    };
    let mut first = 0;
    while first + 1 < n && all(sym, first, &|f| SWITCH.contains(&f)) {
        first += 1;
    }
    // Keep the last frame (the trampoline) when the stack reached it.
    let root = n.saturating_sub(1);
    let ends_at_entry = !st.incomplete && n > 0;
    let mut last = root;
    if ends_at_entry {
        while last > first + 1 && all(sym, last - 1, &is_entry_plumbing) {
            last -= 1;
        }
    }
    let mut addrs: Vec<u64> = Vec::with_capacity(n);
    for (k, i) in (first..last).enumerate() {
        // A return address that becomes the first entry is stored as `addr - 1`, so
        // that looking it up as an instruction pointer finds the call site.
        let a = st.addrs[i];
        addrs.push(if k == 0 && i > 0 { a - 1 } else { a });
    }
    if ends_at_entry || last == root {
        addrs.push(st.addrs[root]);
    }
    // An address whose inline chain mixes plumbing with user code (the task's closure
    // inlined into `catch_unwind` inlined into the entry shim, the leaf wait inlined into
    // the switch) keeps only the user frames.
    for (k, &a) in addrs.iter().enumerate() {
        let is_ra = k > 0;
        let frames = sym.lookup(a, is_ra);
        let hidden = |f: &str| SWITCH.contains(&f) || is_entry_plumbing(f);
        if frames.iter().any(|f| hidden(&f.function)) && frames.iter().any(|f| !hidden(&f.function))
        {
            let mine: Vec<_> = frames
                .iter()
                .filter(|f| !hidden(&f.function))
                .cloned()
                .collect();
            sym.insert(a, is_ra, mine);
        }
    }
    Stack {
        addrs,
        incomplete: st.incomplete,
    }
}
