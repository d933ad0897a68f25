//! Real-time priority for the stop-the-world phases.
//!
//! When the target has more runnable threads than there are CPUs, a normal-priority
//! tracer is preempted in the middle of a stop and the pause becomes scheduler time
//! slices: measured on this kind of machine (research/perf.md section 2.2), 16 spinning
//! threads on 2 vCPUs turn a 0.1 ms stop into 4 ms, 64 into 32 ms; with the tracer at
//! SCHED_FIFO the same stops take 0.1 and 0.3 ms. The guard raises the calling thread
//! to SCHED_FIFO for the stop and restores its policy on drop. Without permission
//! (no CAP_SYS_NICE) it does nothing: the stop still works, only slower under load.

/// Raises the calling thread to SCHED_FIFO until dropped.
#[derive(Debug)]
pub struct RealtimeGuard {
    saved: Option<(libc::c_int, libc::sched_param)>,
}

impl RealtimeGuard {
    /// Try to raise the calling thread's priority.
    pub fn raise() -> RealtimeGuard {
        // SAFETY: sched_getscheduler/getparam/setscheduler on our own thread (pid 0)
        // with valid pointers to local values.
        unsafe {
            let policy = libc::sched_getscheduler(0);
            let mut old = libc::sched_param { sched_priority: 0 };
            if policy < 0 || libc::sched_getparam(0, &mut old) != 0 {
                return RealtimeGuard { saved: None };
            }
            let p = libc::sched_param { sched_priority: 1 };
            if libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) != 0 {
                return RealtimeGuard { saved: None };
            }
            RealtimeGuard {
                saved: Some((policy, old)),
            }
        }
    }

    /// Whether the priority was raised.
    pub fn raised(&self) -> bool {
        self.saved.is_some()
    }
}

impl Drop for RealtimeGuard {
    fn drop(&mut self) {
        if let Some((policy, old)) = self.saved.take() {
            // SAFETY: restores our own thread's previous policy and parameters.
            unsafe { libc::sched_setscheduler(0, policy, &old) };
        }
    }
}
