//! Where the tool runs relative to the target's threads, and how it keeps out of their
//! way around a stop.
//!
//! On a machine whose CPUs the target's workers keep busy, the tool is one runnable
//! thread more than there are CPUs, and whatever it runs displaces some worker for a
//! scheduler slice (3-4 ms here). Two moments of that slice are part of the pause the
//! target sees, not just of the machine's load:
//!
//! * just before STW 1: a worker the tool's set-up (reading symbols and unwind tables)
//!   displaced has not run since, and its pause goes on through the stop;
//! * just after the last stop: the tool resumes the workers from a CPU it occupies, so
//!   the one that stopped there waits behind it (or behind the other worker, after a
//!   wake-up that moved it) until the tool's slice ends.
//!
//! Sleeping [`GIVE_WAY`] at both moments lets the displaced or resumed worker run at
//! once. 1k tasks, every worker busy, 30 + 30 interleaved runs (BENCHMARKS.md, session
//! 7): the probe's worst gap in the session was 3.2 ms median (20 of 30 above 1 ms)
//! without, 0.23 ms (2 of 30) with. The tool's later work still takes its slices; that
//! shows in the gap over the tool's whole life, which the benchmark reports as well.

use std::sync::OnceLock;
use std::time::Duration;

/// How long the tool sleeps to let a displaced or resumed thread run: long enough for a
/// wake-up and a context switch, short against a scheduler tick (4 ms at HZ=250).
pub const GIVE_WAY: Duration = Duration::from_micros(200);

/// The CPU the calling thread runs on, if the kernel says.
pub fn current_cpu() -> Option<u32> {
    // SAFETY: sched_getcpu has no preconditions.
    u32::try_from(unsafe { libc::sched_getcpu() }).ok()
}

/// Sleep for [`GIVE_WAY`] (module docs). `GPROF_RS_GIVE_WAY=never` in the tool's
/// environment turns it off (the benchmark's `no-give-way` mode compares both ways).
pub fn give_way() {
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var("GPROF_RS_GIVE_WAY").as_deref() != Ok("never")) {
        std::thread::sleep(GIVE_WAY);
    }
}
