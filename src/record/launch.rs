//! Launch mode (`gprof-rs record|attach [opts] -- CMD [ARGS...]`): start the command,
//! wait until its runtime has published its shared region, attach.
//!
//! The command inherits gprof-rs's standard input, output and error, its environment
//! and working directory, like `time CMD` or `py-spy record -- CMD`: an interactive
//! program stays interactive, and a program that reads its input from a pipe gets it.
//! Ctrl-C in a terminal reaches both processes (one process group); a SIGINT or SIGTERM
//! sent to gprof-rs alone (`kill -INT`) is forwarded to the command.

use std::ffi::OsString;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicI32, Ordering::SeqCst};
use std::time::{Duration, Instant};

use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::snapshot::{interrupted, Session};

/// How long to wait for the command's runtime to start.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A command started by gprof-rs.
#[derive(Debug)]
pub struct Launched {
    /// The process.
    pub child: Child,
    /// Its pid.
    pub pid: u32,
    /// The command as typed, for messages.
    pub display: String,
}

/// Start `cmd` (program and arguments) with inherited standard streams.
pub fn spawn(cmd: &[OsString]) -> Result<Launched> {
    let (prog, args) = cmd
        .split_first()
        .ok_or_else(|| Error::Usage("nothing to run after `--`".into()))?;
    let display = cmd
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let child = Command::new(prog).args(args).spawn().map_err(|e| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("cannot run {}: {e}", prog.to_string_lossy()),
        ))
    })?;
    let pid = child.id();
    forward_signals_to(pid);
    Ok(Launched {
        child,
        pid,
        display,
    })
}

/// Has the process exited? Does not reap it (`WNOWAIT`), and ignores ptrace stops, so
/// it is safe to call while the tracer owns some of its threads.
pub fn exited(pid: u32) -> bool {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    match waitid(Id::Pid(Pid::from_raw(pid as i32)), flags) {
        Ok(WaitStatus::StillAlive) => false,
        Ok(_) => true,
        // ECHILD: already reaped (or not our child).
        Err(_) => true,
    }
}

/// Attach to the launched command as soon as its runtime has started: retry while the
/// runtime has not published its region (or, right after `exec`, the descriptor is not
/// found yet, e.g. a wrapper that execs the real program), for at most `timeout`.
pub fn attach_when_started(l: &Launched, timeout: Duration) -> Result<Session> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if interrupted() {
            return Err(Error::Interrupted);
        }
        if exited(l.pid) {
            return Err(Error::ProcessExited { pid: l.pid });
        }
        match Session::attach(l.pid) {
            Ok(s) => return Ok(s),
            Err(Error::RuntimeNotStarted | Error::NotATarget { .. })
                if Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e @ Error::NotATarget { .. }) => {
                return Err(Error::Usage(format!(
                    "{} (PID {}) did not start a target-runtime within {} s: {e}",
                    l.display,
                    l.pid,
                    timeout.as_secs()
                )))
            }
            Err(e) => return Err(e),
        }
    }
}

/// Stop a command we could not profile: SIGTERM, a bounded wait, then SIGKILL; reaped.
pub fn terminate(l: &mut Launched) {
    // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
    unsafe { libc::kill(l.pid as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(2);
    while !exited(l.pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = l.child.kill();
    let _ = l.child.wait();
}

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // A signal from the terminal (Ctrl-C) has si_code SI_KERNEL and reached the child's
    // process group already; one sent to us alone (kill, si_code <= 0) is passed on.
    // SAFETY: the kernel hands a valid siginfo to an SA_SIGINFO handler.
    let from_process = !info.is_null() && unsafe { (*info).si_code } <= 0;
    let child = CHILD.load(SeqCst);
    if from_process && child > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe { libc::kill(child, sig) };
    }
    crate::snapshot::set_interrupted();
}

/// From now on SIGINT/SIGTERM end the recording (as [`crate::snapshot::install_interrupt_handler`])
/// and, when sent to this process alone, are forwarded to `pid`.
pub fn forward_signals_to(pid: u32) {
    CHILD.store(pid as i32, SeqCst);
    // SAFETY: installs a handler that only loads/stores atomics and calls kill(2).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal
            as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
            as usize;
        sa.sa_flags = libc::SA_RESTART | libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
    }
}

/// Stop forwarding (the child was reaped: its pid may be reused).
pub fn stop_forwarding() {
    CHILD.store(0, SeqCst);
}
