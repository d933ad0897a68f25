//! The context switch's CFI is right at every instruction (DESIGN section 5): a worker
//! thread is single-stepped with ptrace through thousands of task switches, and at each
//! step inside `gprof_rt_switch` the thread is unwound from its registers the way STW 1
//! unwinds a running task. Whichever stack `rsp` is in at that instruction, the unwind
//! must be complete: on a task's stack it ends at `gprof_rt_task_entry` after the task's
//! own frames, on the worker's stack it ends at the thread's root after the scheduler's.

use crate::target::Target;
use gprof_rs::locate::locate;
use gprof_rs::process::memory::{LiveMemory, RemoteMemory};
use gprof_rs::symbolize::Symbolizer;
use gprof_rs::unwind::{ProcFiles, Unwinder};
use nix::sys::ptrace;
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering::SeqCst;

#[test]
fn every_instruction_of_the_switch_unwinds_completely() {
    let t = Target::start("switcher", &[]);
    let loc = locate(t.pid).unwrap();
    let modules = loc.modules();
    let region = loc.open_region().unwrap();
    let worker = region.worker(0).unwrap();
    let tid = worker.tid.load(SeqCst);
    assert_ne!(tid, 0);
    let mem = LiveMemory::new(t.pid);
    let mut unwinder = Unwinder::new(ProcFiles { pid: t.pid });
    unwinder.set_modules(&modules);
    let mut sym = Symbolizer::new(ProcFiles { pid: t.pid });
    sym.set_modules(&modules);
    let maps = gprof_rs::process::maps::read_maps(t.pid).unwrap();

    let pid = Pid::from_raw(tid as i32);
    ptrace::seize(pid, ptrace::Options::empty()).unwrap();
    ptrace::interrupt(pid).unwrap();
    waitpid(pid, Some(WaitPidFlag::__WALL)).unwrap();

    let mut on_task = BTreeSet::new();
    let mut on_worker = BTreeSet::new();
    let mut addrs = Vec::new();
    for _ in 0..300_000 {
        ptrace::step(pid, None).unwrap();
        waitpid(pid, Some(WaitPidFlag::__WALL)).unwrap();
        let r = ptrace::getregs(pid).unwrap();
        let f = sym.lookup(r.rip, false)[0].clone();
        if f.function != "gprof_rt_switch" {
            continue;
        }
        let offset = r.rip - f.entry.expect("symbol start");
        let cur = worker.current.load(SeqCst);
        let task_stack = (cur != 0)
            .then(|| region.slot((cur - 1) as u32).unwrap())
            .map(|s| (s.stack_lo.load(SeqCst), s.stack_hi.load(SeqCst)))
            .filter(|&(lo, hi)| r.rsp >= lo && r.rsp < hi);
        let hi = match task_stack {
            Some((_, hi)) => hi,
            None => {
                gprof_rs::process::maps::find(&maps, r.rsp)
                    .expect("rsp is mapped")
                    .end
            }
        };
        let base = r.rsp - 128;
        let mut stack = vec![0u8; (hi - base).min(1 << 20) as usize];
        mem.read(base, &mut stack).unwrap();
        let end = unwinder.unwind_from(r.rip, r.rsp, r.rbp, base, &stack, &mut addrs);
        let names: Vec<String> = addrs
            .iter()
            .enumerate()
            .flat_map(|(i, &a)| {
                sym.lookup(a, i > 0)
                    .iter()
                    .map(|f| f.function.clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(
            end.is_complete(),
            "offset {offset:#x}: unwind ended {end:?}: {names:?}"
        );
        if task_stack.is_some() {
            assert_eq!(
                names.last().map(String::as_str),
                Some("gprof_rt_task_entry"),
                "offset {offset:#x}: {names:?}"
            );
            assert!(
                names.iter().any(|n| n.ends_with("yielder")),
                "offset {offset:#x}: {names:?}"
            );
            on_task.insert(offset);
        } else {
            assert!(
                names.iter().any(|n| n.ends_with("worker_main")),
                "offset {offset:#x}: {names:?}"
            );
            assert!(
                !names.iter().any(|n| n.ends_with("yielder")),
                "offset {offset:#x}: {names:?}"
            );
            on_worker.insert(offset);
        }
        if on_task.union(&on_worker).count() == 27 && on_task.len() >= 20 && on_worker.len() >= 20 {
            break;
        }
    }
    ptrace::detach(pid, None).unwrap();
    // Every instruction of the switch runs on both kinds of stack (a task switching
    // out saves on its stack and restores on the worker's; switching in, the reverse).
    let all: BTreeSet<u64> = on_task.union(&on_worker).copied().collect();
    assert!(
        on_task.len() >= 20 && on_worker.len() >= 20,
        "task {on_task:x?} worker {on_worker:x?}"
    );
    // The switch is 29 instructions; `ldmxcsr` and `fldcw` run only when a task changed
    // its floating-point control words, which these tasks never do.
    assert_eq!(all.len(), 27, "distinct instructions reached: {all:x?}");
}
