//! The CPU the tool works on during a snapshot (and the runtime's helper, in turns with
//! it).
//!
//! Between the two stops the target runs, and the tool's work (the helper's too, when
//! they take turns) should take no CPU from its running threads. Left to the kernel,
//! the tool lands now and then on a CPU running one of them whenever something else (a
//! kernel worker, another process) takes the idle one for a moment, and preempts that
//! thread for a whole time slice: 4 ms pauses of a task that never stopped, seen in
//! sched_switch traces of 1M-task snapshots (BENCHMARKS.md). Kept on a CPU the target
//! does not use, the tool waits there instead.

use std::collections::BTreeSet;
use std::mem::size_of;
use std::time::{Duration, Instant};

/// Looks at where the target's threads run at most this often while the tool is
/// pinned: they move (a worker woken elsewhere, a stop and resume), and a worker that
/// came to our CPU would share it with us while another stands idle.
const LOOK_EVERY: Duration = Duration::from_millis(5);
/// ... and only every this many calls of [`SpareCpu::tick`] (one per task recorded),
/// so that the clock is not read per task.
const TICKS_PER_LOOK: u32 = 1024;

/// The tool kept on a CPU none of the target's threads runs on, for as long as it lives
/// (a snapshot), and looked at again as they move.
#[derive(Debug)]
pub struct SpareCpu {
    pid: u32,
    /// The CPUs we may run on, from before the pin.
    allowed: BTreeSet<u32>,
    pin: Option<(u32, CpuPin)>,
    ticks: u32,
    looked: Instant,
}

impl SpareCpu {
    /// Pin the calling thread to a CPU no thread of `pid` runs on: the one it is on if
    /// that qualifies (the kernel found it free), else the lowest. Unpinned if every
    /// CPU we may use runs a thread of the target, or the kernel does not say.
    pub fn take(pid: u32) -> SpareCpu {
        let mut s = SpareCpu {
            pid,
            allowed: own_cpus().unwrap_or_default(),
            pin: None,
            ticks: 0,
            looked: Instant::now(),
        };
        // SAFETY: sched_getcpu has no preconditions.
        let here = u32::try_from(unsafe { libc::sched_getcpu() }).ok();
        s.repin(here);
        s
    }

    /// The CPU we are kept on, if any.
    pub fn cpu(&self) -> Option<u32> {
        self.pin.as_ref().map(|(c, _)| *c)
    }

    /// Call once per task recorded: now and then, if a thread of the target runs on
    /// our CPU, move to one none runs on, or let the kernel place us if there is none
    /// (and, unpinned, pin again once there is). True when [`Self::cpu`] changed.
    pub fn tick(&mut self) -> bool {
        self.ticks += 1;
        if self.ticks < TICKS_PER_LOOK || self.looked.elapsed() < LOOK_EVERY {
            return false;
        }
        self.ticks = 0;
        self.looked = Instant::now();
        let before = self.cpu();
        self.repin(before);
        self.cpu() != before
    }

    /// Keep `prefer` if no thread of the target runs on it, else take another such CPU.
    fn repin(&mut self, prefer: Option<u32>) {
        let Some(busy) = busy_cpus(self.pid) else {
            return;
        };
        let free = |c: &u32| self.allowed.contains(c) && !busy.contains(c);
        let choice = prefer
            .filter(free)
            .or_else(|| self.allowed.iter().copied().find(free));
        if choice == self.cpu() {
            return;
        }
        // The old pin gives back the whole set before the new one is taken.
        self.pin = None;
        self.pin = choice
            .map(|c| (c, CpuPin::to(c)))
            .filter(|(_, p)| p.pinned());
    }
}

/// The CPUs threads of `pid` are running on (`R` in `/proc/PID/task/*/stat`).
fn busy_cpus(pid: u32) -> Option<BTreeSet<u32>> {
    Some(
        super::stop::list_threads(pid)
            .ok()?
            .into_iter()
            .filter_map(|tid| running_on(pid, tid))
            .collect(),
    )
}

/// The CPU a running thread is on (field 39 of `stat`, proc(5)); `None` if it is not
/// running or gone.
fn running_on(pid: u32, tid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    // "tid (comm) S ...": comm may hold ')' and spaces; fields 3.. follow the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    if fields.next()? != "R" {
        return None;
    }
    fields.nth(35)?.parse().ok()
}

/// The CPUs the calling thread may run on.
fn own_cpus() -> Option<BTreeSet<u32>> {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the calling thread's (0) affinity into a set of the size passed.
    if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return None;
    }
    Some(
        (0..libc::CPU_SETSIZE as usize)
            // SAFETY: reads bit `c` < CPU_SETSIZE of the set.
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .map(|c| c as u32)
            .collect(),
    )
}

/// Keeps the calling thread on one CPU until dropped, then gives it back the CPU set it
/// had. Does nothing if the kernel refuses the CPU.
#[derive(Debug)]
pub struct CpuPin {
    saved: Option<libc::cpu_set_t>,
}

impl CpuPin {
    /// Pin the calling thread to `cpu`.
    pub fn to(cpu: u32) -> CpuPin {
        let unpinned = CpuPin { saved: None };
        if cpu as usize >= libc::CPU_SETSIZE as usize {
            return unpinned;
        }
        // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
        let mut saved: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let mut one = saved;
        let size = size_of::<libc::cpu_set_t>();
        // SAFETY: the calling thread's (0) affinity into / from sets of `size` bytes on
        // this stack; CPU_SET writes bit `cpu` < CPU_SETSIZE of `one`.
        unsafe {
            if libc::sched_getaffinity(0, size, &mut saved) != 0 {
                return unpinned;
            }
            libc::CPU_SET(cpu as usize, &mut one);
            if libc::sched_setaffinity(0, size, &one) != 0 {
                return unpinned;
            }
        }
        CpuPin { saved: Some(saved) }
    }

    /// Whether the thread was pinned.
    pub fn pinned(&self) -> bool {
        self.saved.is_some()
    }
}

impl Drop for CpuPin {
    fn drop(&mut self) {
        if let Some(saved) = self.saved.take() {
            // SAFETY: restores the calling thread's own affinity from a set it read.
            unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &saved) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_keeps_the_thread_on_its_cpu_and_gives_the_set_back() {
        std::thread::spawn(|| {
            let before = own_cpus().expect("affinity");
            let cpu = *before.iter().next_back().expect("a CPU");
            {
                let pin = CpuPin::to(cpu);
                assert!(pin.pinned());
                assert_eq!(own_cpus().expect("affinity"), BTreeSet::from([cpu]));
                // SAFETY: no preconditions.
                assert_eq!(unsafe { libc::sched_getcpu() }, cpu as i32);
            }
            assert_eq!(own_cpus().expect("affinity"), before);
            assert!(!CpuPin::to(libc::CPU_SETSIZE as u32).pinned());
        })
        .join()
        .expect("pin thread");
    }

    #[test]
    fn the_tool_keeps_off_the_cpu_a_thread_of_the_target_runs_on_as_it_moves() {
        let cpus = own_cpus().expect("affinity");
        let (Some(&first), true) = (cpus.iter().next(), cpus.len() >= 2) else {
            return; // nothing to choose from
        };
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("spawn a spinning shell");
        let pid = child.id();
        let on = |cpu: u32| {
            // Until the kernel shows the shell running on `cpu`.
            for _ in 0..1000 {
                if running_on(pid, pid) == Some(cpu) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            false
        };
        let moved = |cpu: u32| {
            // SAFETY: as in own_cpus; CPU_SET writes bit `cpu` < CPU_SETSIZE.
            unsafe {
                let mut one: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu as usize, &mut one);
                libc::sched_setaffinity(pid as i32, size_of::<libc::cpu_set_t>(), &one) == 0
            }
        };
        let result = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    if !(moved(first) && on(first)) {
                        return Err("the shell never ran on its first CPU".to_string());
                    }
                    let mut keeper = SpareCpu::take(pid);
                    let Some(spare) = keeper.cpu() else {
                        return Err("no CPU left beside the shell's".to_string());
                    };
                    if spare == first || own_cpus() != Some(BTreeSet::from([spare])) {
                        return Err(format!("kept on {spare}, beside the shell on {first}"));
                    }
                    // The shell comes to our CPU: the keeper moves off it.
                    if !(moved(spare) && on(spare)) {
                        return Err("the shell never ran on the spare CPU".to_string());
                    }
                    std::thread::sleep(LOOK_EVERY);
                    let changed = (0..TICKS_PER_LOOK).fold(false, |c, _| keeper.tick() || c);
                    if !changed || keeper.cpu() == Some(spare) || keeper.cpu().is_none() {
                        return Err(format!("stayed on {:?} with the shell", keeper.cpu()));
                    }
                    drop(keeper);
                    if own_cpus() != Some(cpus.clone()) {
                        return Err("the pin outlived its keeper".to_string());
                    }
                    Ok(())
                })
                .join()
                .expect("keeper thread")
        });
        let _ = child.kill();
        let _ = child.wait();
        result.unwrap();
    }
}
