//! The tool's error type, classified by what the caller (or the user) should do next.
//!
//! Every message is one line that says what happened and what to do about it. The
//! process exit status of `gprof-rs` comes from [`Error::exit_code`]:
//!
//! | code | meaning                                   | variants |
//! |------|-------------------------------------------|----------|
//! | 0    | success                                   | — |
//! | 1    | anything else (I/O, unexpected errno)     | [`Error::Io`], [`Error::Ptrace`], [`Error::ThreadGone`] |
//! | 2    | usage error                               | [`Error::Usage`] |
//! | 3    | no such process                           | [`Error::ProcessNotFound`] |
//! | 4    | permission denied                         | [`Error::PermissionDenied`] |
//! | 5    | not a target-runtime process / not started| [`Error::NotATarget`], [`Error::RuntimeNotStarted`] |
//! | 6    | ABI version mismatch                      | [`Error::AbiMismatch`] |
//! | 7    | another profiler holds the target         | [`Error::ProfilerBusy`] |
//! | 8    | the target exited or exec'ed mid-operation| [`Error::ProcessExited`], [`Error::TargetExeced`] |
//! | 9    | the target published invalid data         | [`Error::BadTargetData`] |
//! | 130  | interrupted by SIGINT/SIGTERM (target released) | [`Error::Interrupted`] |

use std::io;

/// Result alias for the tool.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while attaching to and reading a target.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad command line.
    #[error("{0} (see gprof-rs --help)")]
    Usage(String),

    /// No process with this PID exists (or it vanished before we looked).
    #[error("no process with PID {pid}: check the PID; is the program still running?")]
    ProcessNotFound {
        /// The PID asked for.
        pid: u32,
    },

    /// The kernel refused ptrace / `/proc` access.
    #[error("not permitted to inspect PID {pid}: {hint}")]
    PermissionDenied {
        /// The PID asked for.
        pid: u32,
        /// What to change (Yama scope, capability, uid), tailored to this machine.
        hint: String,
    },

    /// The process does not export the runtime descriptor.
    #[error("no target-runtime found in PID {pid}: profile a program linked with target-runtime (and not stripped of its `GPROF_RT_DESCRIPTOR` symbol)")]
    NotATarget {
        /// The PID asked for.
        pid: u32,
    },

    /// The runtime is linked in but has not published its shared region yet.
    #[error("the target's runtime has not started yet (no shared region published): retry once the program is running its scheduler")]
    RuntimeNotStarted,

    /// The target speaks another version of the shared-memory ABI.
    #[error("ABI mismatch: the target uses gprof ABI v{found}, this gprof-rs uses v{expected}: use a gprof-rs built against ABI v{found}")]
    AbiMismatch {
        /// Version found in the target.
        found: u32,
        /// Version this tool was built with.
        expected: u32,
    },

    /// Another profiler holds the target's lease.
    #[error("another profiler ({}) is active on this target: wait for it to finish, or stop it", owner_text(*owner_pid))]
    ProfilerBusy {
        /// Pid the other profiler wrote into the control block (0 if it has not yet).
        owner_pid: u64,
    },

    /// The target exited while we were working on it.
    #[error(
        "PID {pid} exited while being profiled: nothing was changed; re-run against a live process"
    )]
    ProcessExited {
        /// The target PID.
        pid: u32,
    },

    /// The target called `execve` while we were working on it.
    #[error("PID {pid} executed a new program while being profiled: re-run the profile")]
    TargetExeced {
        /// The target PID.
        pid: u32,
    },

    /// A thread we were operating on exited.
    #[error("a thread of the target exited during the operation: retry")]
    ThreadGone,

    /// SIGINT or SIGTERM arrived; the target was restored before exiting.
    #[error("interrupted: the target was released and runs on; nothing was written")]
    Interrupted,

    /// Something read from the target failed validation (untrusted input).
    #[error(
        "the target published invalid data ({0}): it is corrupted or hostile; not profiling it"
    )]
    BadTargetData(String),

    /// An unexpected ptrace failure.
    #[error("ptrace {op} on thread {tid} failed: {source}; please report this")]
    Ptrace {
        /// The request, e.g. `"SEIZE"`.
        op: &'static str,
        /// The thread.
        tid: u32,
        /// The errno.
        source: io::Error,
    },

    /// Other I/O failure.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

fn owner_text(pid: u64) -> String {
    if pid == 0 {
        "pid unknown".to_string()
    } else {
        format!("pid {pid}")
    }
}

impl Error {
    /// Process exit status for this error; see the table in the module docs.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            Error::ProcessNotFound { .. } => 3,
            Error::PermissionDenied { .. } => 4,
            Error::NotATarget { .. } | Error::RuntimeNotStarted => 5,
            Error::AbiMismatch { .. } => 6,
            Error::ProfilerBusy { .. } => 7,
            Error::ProcessExited { .. } | Error::TargetExeced { .. } => 8,
            Error::BadTargetData(_) => 9,
            Error::ThreadGone | Error::Ptrace { .. } | Error::Io(_) => 1,
            Error::Interrupted => 130,
        }
    }

    /// Shorthand for [`Error::BadTargetData`].
    pub fn bad(msg: impl Into<String>) -> Self {
        Error::BadTargetData(msg.into())
    }

    /// A [`Error::PermissionDenied`] with a hint tailored to this machine and target.
    pub fn permission(pid: u32) -> Self {
        Error::PermissionDenied {
            pid,
            hint: permission_hint(pid),
        }
    }
}

/// Explain why the kernel may have refused access to `pid`, from what this machine shows:
/// the Yama `ptrace_scope`, our `CAP_SYS_PTRACE`, the target's uid and current tracer.
///
/// The order follows reliability.md §2.1 ("Our handling"): an existing tracer first,
/// then Yama, then capabilities and uids.
pub fn permission_hint(pid: u32) -> String {
    let mut parts: Vec<String> = Vec::new();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> Option<String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    if let Some(tracer) = field("TracerPid:").and_then(|v| v.parse::<u32>().ok()) {
        if tracer != 0 && tracer != std::process::id() {
            let comm = std::fs::read_to_string(format!("/proc/{tracer}/comm")).unwrap_or_default();
            parts.push(format!(
                "it is already traced by PID {tracer} ({}); detach that debugger/tracer first",
                comm.trim()
            ));
        }
    }
    let has_cap = has_cap_sys_ptrace();
    match std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    {
        Some(0) | None => {}
        Some(1) if !has_cap => parts.push(
            "Yama ptrace_scope is 1 (only ancestors may trace): run as root / with CAP_SYS_PTRACE, \
             or set /proc/sys/kernel/yama/ptrace_scope to 0"
                .to_string(),
        ),
        Some(1) => {}
        Some(2) if !has_cap => parts.push(
            "Yama ptrace_scope is 2 (admin only): run with CAP_SYS_PTRACE (e.g. as root)".to_string(),
        ),
        Some(2) => {}
        Some(n) => parts.push(format!(
            "Yama ptrace_scope is {n} (ptrace disabled until reboot): no tool can attach on this machine"
        )),
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if let Some(uid) = field("Uid:") {
        // "Uid: real effective saved fs"
        let target_uids: Vec<u32> = uid
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if !has_cap && !target_uids.is_empty() && target_uids.iter().any(|&u| u != euid) {
            parts.push(format!(
                "the target runs as uid {} and you are uid {euid}: run as that user, or with CAP_SYS_PTRACE (e.g. sudo)",
                target_uids[0]
            ));
        }
    }
    if parts.is_empty() {
        if has_cap {
            parts.push(
                "the kernel refused although you have CAP_SYS_PTRACE: an LSM (SELinux/AppArmor) or a seccomp \
                 filter may forbid ptrace; check the audit log"
                    .to_string(),
            );
        } else {
            parts.push(
                "the target may be non-dumpable (setuid, prctl(PR_SET_DUMPABLE, 0)) or in a container: \
                 run with CAP_SYS_PTRACE (docker: --cap-add SYS_PTRACE)"
                    .to_string(),
            );
        }
    }
    parts.join("; ")
}

/// Does this process have `CAP_SYS_PTRACE` in its effective set?
fn has_cap_sys_ptrace() -> bool {
    const CAP_SYS_PTRACE: u32 = 19;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_PTRACE) != 0)
}

/// Map an errno from an operation on `pid` into the right [`Error`]: `ESRCH`/`ENOENT`
/// become [`Error::ProcessNotFound`], `EPERM`/`EACCES` become [`Error::PermissionDenied`].
pub fn from_proc_io(pid: u32, e: io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::ESRCH) | Some(libc::ENOENT) => Error::ProcessNotFound { pid },
        Some(libc::EPERM) | Some(libc::EACCES) => Error::permission(pid),
        _ => Error::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_per_class() {
        let cases = [
            (Error::Usage("x".into()), 2),
            (Error::ProcessNotFound { pid: 1 }, 3),
            (
                Error::PermissionDenied {
                    pid: 1,
                    hint: "h".into(),
                },
                4,
            ),
            (Error::NotATarget { pid: 1 }, 5),
            (
                Error::AbiMismatch {
                    found: 3,
                    expected: 2,
                },
                6,
            ),
            (Error::ProfilerBusy { owner_pid: 7 }, 7),
            (Error::ProcessExited { pid: 1 }, 8),
            (Error::bad("x"), 9),
            (Error::ThreadGone, 1),
        ];
        for (e, code) in cases {
            assert_eq!(e.exit_code(), code, "{e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }

    #[test]
    fn messages_name_what_matters() {
        assert!(Error::ProfilerBusy { owner_pid: 42 }
            .to_string()
            .contains("another profiler (pid 42) is active"));
        let m = Error::AbiMismatch {
            found: 3,
            expected: 2,
        }
        .to_string();
        assert!(m.contains("v3") && m.contains("v2"), "{m}");
        assert!(Error::NotATarget { pid: 9 }
            .to_string()
            .contains("no target-runtime found in PID 9"));
    }
}
