//! `gprof-rs demo`: a bundled service built on target-runtime, profiled end to end.
//!
//! The service runs in a child process (this same executable, hidden subcommand
//! `demo-service`), so the demo exercises exactly what `attach` does to any target.

use crate::config::{Output, OutputFormat, RecordFormat};
use crate::error::{Error, Result};
use crate::snapshot::{Mode, Session};
use crate::symbolize::Symbolizer;
use crate::unwind::ProcFiles;
use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use target_runtime::{chan, labels, spawn, sync::Mutex, task};

/// Connections with a handler waiting for their next request.
const CONNECTIONS: usize = 2000;
/// Worker pool size.
const POOL: usize = 32;
/// Periodic refreshers asleep between runs.
const REFRESHERS: usize = 500;
/// Tasks queued on the contended stats mutex.
const STATS_WRITERS: usize = 200;
/// Busy tasks.
const BUSY: usize = 2;
/// Length and rate of the demo's recording (`demo.svg`).
const RECORD_FOR: Duration = Duration::from_secs(3);
const RECORD_HZ: f64 = 20.0;

/// Run the demo: start the service, snapshot it, write `demo.pb.gz`, record it for 3 s
/// and write `demo.svg` (a flame graph), print a summary and how to open both.
pub fn run(out_dir: &Path) -> Result<()> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("demo-service")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    out.read_line(&mut line)?;
    let result = (|| {
        let pid: u32 = line
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| Error::bad(format!("demo service did not start: {line:?}")))?;
        println!(
            "gprof-rs demo: service running as PID {pid} with {} tasks",
            CONNECTIONS + POOL + REFRESHERS + 1 + STATS_WRITERS + BUSY + 1
        );
        let mut session = Session::attach(pid)?;
        let mut snap = session.snapshot(Mode::Concurrent)?;
        let mut sym = Symbolizer::new(ProcFiles { pid });
        sym.set_modules(&snap.modules);
        crate::output::trim::hide_runtime_frames(&mut snap, &mut sym);
        std::fs::create_dir_all(out_dir)?;
        let pb = out_dir.join("demo.pb.gz");
        crate::app::write_snapshot(
            &snap,
            &mut sym,
            OutputFormat::Pprof,
            &Output::File(pb.clone()),
        )?;
        crate::app::write_snapshot(&snap, &mut sym, OutputFormat::Text, &Output::Stdout)?;
        let st = &snap.stats;
        println!(
            "\nsnapshot of {} tasks: pauses {:.0} us + {:.0} us, {:.1} ms in all",
            snap.tasks.len(),
            st.stw1_ns as f64 / 1e3,
            st.stw2_ns as f64 / 1e3,
            st.total_ns as f64 / 1e6
        );
        println!("wrote {}", pb.display());
        println!(
            "open it with:  go tool pprof -top {}   (or -traces, -tags, -http=:8080)",
            pb.display()
        );

        // A short recording with the same session: every task sampled at 20 Hz.
        println!(
            "\nrecording the service for {} s at {RECORD_HZ} Hz ...",
            RECORD_FOR.as_secs()
        );
        let opts = crate::record::Options {
            interval: Duration::from_secs_f64(1.0 / RECORD_HZ),
            duration: Some(RECORD_FOR),
            samples: None,
            mode: Mode::Concurrent,
            include_system: false,
            progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        };
        let (mut rec, ended) =
            crate::record::record(&mut session, &opts, &mut sym, &mut || false, &mut |_| {});
        drop(session);
        if let crate::record::Ended::Failed(e) = ended {
            return Err(e);
        }
        rec.hide_runtime_frames(&mut sym);
        let svg = out_dir.join("demo.svg");
        crate::record::write_recording(
            &rec,
            &mut sym,
            RecordFormat::Flamegraph,
            &Output::File(svg.clone()),
        )?;
        println!(
            "{} snapshots, {} task samples, longest pause {:.0} us",
            rec.snapshots,
            rec.total_samples(),
            rec.pause_max_ns as f64 / 1e3
        );
        println!("wrote {}", svg.display());
        println!(
            "open it with:  a web browser (e.g. xdg-open {}); click a frame to zoom, Ctrl-F to search",
            svg.display()
        );
        println!("every task:    gprof-rs attach <PID> --format tasks");
        println!("your program:  gprof-rs record <PID> -d 10s -o profile.svg");
        Ok(())
    })();
    // Closing stdin ends the service.
    drop(child.stdin.take());
    let _ = child.wait();
    result
}

#[inline(never)]
fn handle_request(req: u64) -> u64 {
    black_box(req.wrapping_mul(31))
}

#[inline(never)]
fn read_request(conn: &chan::Receiver<u64>) -> Option<u64> {
    conn.recv().ok()
}

#[inline(never)]
fn connection_handler(conn: chan::Receiver<u64>) {
    while let Some(req) = read_request(&conn) {
        handle_request(req);
    }
}

#[inline(never)]
fn pool_worker(jobs: chan::Receiver<u64>, done: Arc<AtomicU64>) {
    while let Ok(j) = jobs.recv() {
        done.fetch_add(handle_request(j), Ordering::Relaxed);
    }
}

#[inline(never)]
fn cache_refresher(i: u64) {
    loop {
        target_runtime::sleep(Duration::from_secs(30 + i % 30));
        black_box(i);
    }
}

#[inline(never)]
fn record_stats(stats: &Mutex<u64>) {
    let mut g = stats.lock();
    *g += 1;
}

#[inline(never)]
fn compute_digest(stop: &AtomicBool) {
    let mut x = 1u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..20_000 {
            x = black_box(x.rotate_left(5) ^ 0x9E37_79B9_7F4A_7C15);
        }
        target_runtime::yield_now();
    }
}

#[inline(never)]
fn stats_holder(stats: Arc<Mutex<u64>>, release: chan::Receiver<()>) {
    let g = stats.lock();
    let _ = release.recv();
    drop(g);
}

/// The service itself (the hidden `demo-service` subcommand). Prints `READY <pid>` once
/// every task is in place; exits when standard input closes.
pub fn service() -> Result<()> {
    target_runtime::Builder::new()
        .workers(2)
        .run(|| {
            let mut conns = Vec::new();
            for i in 0..CONNECTIONS {
                let (tx, rx) = chan::bounded(0);
                let route = if i % 4 == 0 {
                    "/api/orders"
                } else {
                    "/api/users"
                };
                labels::with(&[("route", route)], || {
                    task::Builder::new()
                        .name("conn")
                        .spawn(move || connection_handler(rx))
                        .expect("spawn");
                });
                conns.push(tx);
            }
            let (jobs_tx, jobs_rx) = chan::bounded::<u64>(64);
            let done = Arc::new(AtomicU64::new(0));
            labels::with(&[("pool", "jobs")], || {
                for _ in 0..POOL {
                    let (rx, d) = (jobs_rx.clone(), done.clone());
                    spawn(move || pool_worker(rx, d));
                }
            });
            for i in 0..REFRESHERS as u64 {
                spawn(move || cache_refresher(i));
            }
            let stats = Arc::new(Mutex::new(0u64));
            let (release_tx, release_rx) = chan::bounded::<()>(1);
            {
                let s = stats.clone();
                spawn(move || stats_holder(s, release_rx));
            }
            while target_runtime::__private::waiting_tasks() < CONNECTIONS + POOL + REFRESHERS + 1 {
                target_runtime::sleep(Duration::from_millis(1));
            }
            for _ in 0..STATS_WRITERS {
                let s = stats.clone();
                spawn(move || record_stats(&s));
            }
            let stop = Arc::new(AtomicBool::new(false));
            for _ in 0..BUSY {
                let s = stop.clone();
                task::Builder::new()
                    .name("digest")
                    .spawn(move || compute_digest(&s))
                    .expect("spawn");
            }
            while target_runtime::__private::waiting_tasks()
                < CONNECTIONS + POOL + REFRESHERS + 1 + STATS_WRITERS
            {
                target_runtime::sleep(Duration::from_millis(1));
            }
            println!("READY {}", std::process::id());
            let _ = std::io::stdout().flush();
            target_runtime::blocking(|| {
                let mut s = String::new();
                while std::io::stdin()
                    .lock()
                    .read_line(&mut s)
                    .map(|n| n > 0)
                    .unwrap_or(false)
                {
                    s.clear();
                }
            });
            stop.store(true, Ordering::Relaxed);
            let _ = release_tx.send(());
            drop(conns);
            drop(jobs_tx);
        })
        .map_err(|e| Error::Usage(e.to_string()))?;
    std::process::exit(0)
}
