//! Unbuffered channel ping-pong between two tasks: the round-trip time that Go 1.19
//! takes 285 ns for on the reference machine.
//!
//! `cargo run --release -p target-runtime --example chan_pingpong [ROUND_TRIPS] [WORKERS]`

use std::time::Instant;
use target_runtime::{chan, spawn, Builder};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .map_or(1_000_000, |s| s.parse().expect("round trips"));
    let workers: usize = args.next().map_or(1, |s| s.parse().expect("workers"));
    let ns = Builder::new()
        .workers(workers)
        .run(move || {
            let (ping_tx, ping_rx) = chan::bounded::<u64>(0);
            let (pong_tx, pong_rx) = chan::bounded::<u64>(0);
            let echo = spawn(move || {
                for v in ping_rx.iter() {
                    pong_tx.send(v).unwrap();
                }
            });
            // Warm up.
            for i in 0..n / 10 {
                ping_tx.send(i).unwrap();
                pong_rx.recv().unwrap();
            }
            let t = Instant::now();
            for i in 0..n {
                ping_tx.send(i).unwrap();
                assert_eq!(pong_rx.recv().unwrap(), i);
            }
            let ns = t.elapsed().as_nanos() as f64 / n as f64;
            drop(ping_tx);
            echo.join().unwrap();
            ns
        })
        .unwrap();
    println!("unbuffered ping-pong, {workers} worker(s): {ns:.1} ns per round trip");
}
