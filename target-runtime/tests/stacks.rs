//! Task stacks: unwinding ends at the task entry, overflow is reported and aborts.

use std::process::Command;
use target_runtime::{spawn, task, Builder};

#[inline(never)]
fn capture_in_task() -> String {
    format!("{}", std::backtrace::Backtrace::force_capture())
}

/// The system unwinder (libgcc, driven by the same `.eh_frame` CFI an external profiler
/// reads) walks a task's stack up to the entry trampoline and stops there: it never
/// wanders into the worker thread's own stack.
#[test]
fn in_task_backtrace_ends_at_the_task_entry() {
    let bt = Builder::new()
        .workers(1)
        .run(|| spawn(capture_in_task).join().unwrap())
        .unwrap();
    assert!(bt.contains("capture_in_task"), "{bt}");
    let last = bt
        .lines()
        .rfind(|l| {
            l.trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        .unwrap_or_default()
        .to_string();
    assert!(
        last.contains("gprof_rt_task_entry"),
        "last frame is {last:?} in\n{bt}"
    );
    for scheduler_frame in ["worker_main", "run_task", "std::thread"] {
        assert!(
            !bt.contains(scheduler_frame),
            "{scheduler_frame} leaked into\n{bt}"
        );
    }
}

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let buf = [depth as u8; 512];
    std::hint::black_box(&buf);
    if depth == u64::MAX {
        return 0;
    }
    recurse(depth + 1) + u64::from(std::hint::black_box(buf[7]))
}

/// Runs in a child process (this test binary re-executed), which must abort.
#[test]
fn overflow_child() {
    if std::env::var_os("TR_OVERFLOW_CHILD").is_none() {
        return;
    }
    Builder::new()
        .workers(1)
        .run(|| {
            task::Builder::new()
                .name("deep-recursion")
                .stack_size(64 * 1024)
                .spawn(|| recurse(0))
                .unwrap()
                .join()
                .ok();
        })
        .unwrap();
}

#[test]
fn stack_overflow_is_reported_with_task_and_size_then_aborts() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "overflow_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TR_OVERFLOW_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "child survived an overflow: {stderr}"
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc_sigabrt()),
        "stderr: {stderr}"
    );
    let re_ok = stderr.lines().any(|l| {
        l.starts_with("fatal error: task ")
            && l.contains("(deep-recursion) overflowed its 65536-byte stack")
    });
    assert!(re_ok, "stderr: {stderr}");
}

fn libc_sigabrt() -> i32 {
    6
}
