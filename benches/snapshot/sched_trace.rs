//! `--sched-trace`: where the probe's time went while the tool ran, from the kernel's
//! `sched:sched_switch` events (tracefs; root). The probe's worst gap mixes what the
//! tool costs it with what the machine does anyway (on a VM, the hypervisor's steal,
//! invisible to the guest); the trace names who ran on the probe's CPU instead of it
//! each time the kernel preempted it: the tool or the runtime's helper, or anyone else.

const TRACEFS: &str = "/sys/kernel/tracing";

/// Time the probe spent preempted (switched out while runnable) during one run, µs.
#[derive(Debug, Default, Clone, Copy)]
pub struct Lost {
    /// In total, to the tool (`gprof-rs`) or the runtime's helper (`gprof-rt-helper`).
    pub to_tool_us: f64,
    /// The longest single preemption by them.
    pub to_tool_max_us: f64,
    /// In total, to anything else (kernel workers, other processes).
    pub to_others_us: f64,
    /// The longest single preemption by anything else.
    pub to_others_max_us: f64,
}

fn write(file: &str, value: &str) {
    let path = format!("{TRACEFS}/{file}");
    std::fs::write(&path, value).unwrap_or_else(|e| {
        panic!("--sched-trace: cannot write {path}: {e} (run as root with tracefs mounted: mount -t tracefs nodev {TRACEFS})")
    });
}

/// Clear the trace buffer and start recording context switches.
pub fn start() {
    write("tracing_on", "0");
    write("buffer_size_kb", "16384");
    write("events/sched/sched_switch/enable", "1");
    write("trace", "");
    write("tracing_on", "1");
}

/// Stop recording, and tally the preemptions of thread `probe`.
pub fn stop(probe: u32) -> Lost {
    write("tracing_on", "0");
    let text = std::fs::read_to_string(format!("{TRACEFS}/trace")).expect("read the trace");
    write("events/sched/sched_switch/enable", "0");
    tally(&text, probe)
}

/// One `sched_switch` line: `... 123.456789: sched_switch: prev_comm=a prev_pid=1
/// prev_prio=120 prev_state=R ==> next_comm=b next_pid=2 next_prio=120`. Comms may
/// hold spaces, so fields are found by their `key=`.
fn tally(text: &str, probe: u32) -> Lost {
    let mut lost = Lost::default();
    // When the probe was preempted, and by whom.
    let mut out: Option<(f64, bool)> = None;
    for line in text.lines() {
        let Some((head, ev)) = line.split_once(": sched_switch: ") else {
            continue;
        };
        let Some(ts) = head.rsplit(' ').next().and_then(|t| t.parse::<f64>().ok()) else {
            continue;
        };
        let num = |key: &str| -> Option<u32> {
            let at = ev.find(key)? + key.len();
            ev[at..].split_whitespace().next()?.parse().ok()
        };
        let (Some(prev), Some(next)) = (num(" prev_pid="), num(" next_pid=")) else {
            continue;
        };
        let state = ev
            .split(" prev_state=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("");
        if prev == probe && state.starts_with('R') {
            let by = ev
                .split_once("==> next_comm=")
                .and_then(|(_, r)| r.rsplit_once(" next_pid="))
                .map_or("", |(comm, _)| comm);
            out = Some((ts, by.starts_with("gprof-r")));
        }
        if next == probe {
            if let Some((t0, by_tool)) = out.take() {
                let us = (ts - t0) * 1e6;
                let (total, max) = if by_tool {
                    (&mut lost.to_tool_us, &mut lost.to_tool_max_us)
                } else {
                    (&mut lost.to_others_us, &mut lost.to_others_max_us)
                };
                *total += us;
                *max = max.max(us);
            }
        }
    }
    lost
}
