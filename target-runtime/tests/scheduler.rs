//! Scheduler, tasks, timers, labels: behaviour through the public API.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use target_runtime::{labels, spawn, task, yield_now, Builder};

#[test]
fn run_returns_the_main_result() {
    assert_eq!(target_runtime::run(|| 6 * 7), 42);
}

#[test]
fn spawn_and_join_many() {
    let total = Builder::new()
        .workers(2)
        .run(|| {
            let hs: Vec<_> = (0..1000u64).map(|i| spawn(move || i * 2)).collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
        })
        .unwrap();
    assert_eq!(total, 999 * 1000);
}

#[test]
fn yield_interleaves_tasks_on_one_worker() {
    let order = Builder::new()
        .workers(1)
        .run(|| {
            let log = Arc::new(std::sync::Mutex::new(Vec::new()));
            let hs: Vec<_> = (0..3)
                .map(|i| {
                    let log = log.clone();
                    spawn(move || {
                        for round in 0..3 {
                            log.lock().unwrap().push((round, i));
                            yield_now();
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
            let v = log.lock().unwrap().clone();
            v
        })
        .unwrap();
    // Round-robin: every task finishes round r before any task starts round r + 1.
    let rounds: Vec<u32> = order.iter().map(|(r, _)| *r).collect();
    let mut sorted = rounds.clone();
    sorted.sort();
    assert_eq!(rounds, sorted, "order was {order:?}");
}

#[test]
fn a_panicking_task_gives_err_and_the_runtime_survives() {
    let ok = Builder::new()
        .workers(2)
        .run(|| {
            let h = spawn(|| -> u32 { panic!("boom in a task") });
            let e = h.join().unwrap_err();
            assert_eq!(e.downcast_ref::<&str>(), Some(&"boom in a task"));
            spawn(|| 5).join().unwrap()
        })
        .unwrap();
    assert_eq!(ok, 5);
}

#[test]
fn sleeps_wake_in_deadline_order_and_never_early() {
    let order = Builder::new()
        .workers(2)
        .run(|| {
            let log = Arc::new(std::sync::Mutex::new(Vec::new()));
            let hs: Vec<_> = [50u64, 10, 30, 20, 40]
                .into_iter()
                .map(|ms| {
                    let log = log.clone();
                    spawn(move || {
                        let start = Instant::now();
                        target_runtime::sleep(Duration::from_millis(ms));
                        assert!(start.elapsed() >= Duration::from_millis(ms), "woke early");
                        log.lock().unwrap().push(ms);
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
            let v = log.lock().unwrap().clone();
            v
        })
        .unwrap();
    assert_eq!(order, vec![10, 20, 30, 40, 50]);
}

#[test]
fn hundred_thousand_tasks() {
    let n = 100_000u64;
    let done = Arc::new(AtomicU64::new(0));
    let d = done.clone();
    Builder::new()
        .workers(2)
        .run(move || {
            let hs: Vec<_> = (0..n)
                .map(|_| {
                    let d = d.clone();
                    spawn(move || {
                        yield_now();
                        d.fetch_add(1, Ordering::Relaxed);
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
        })
        .unwrap();
    assert_eq!(done.load(Ordering::Relaxed), n);
}

#[test]
fn labels_are_scoped_and_inherited() {
    Builder::new()
        .workers(2)
        .run(|| {
            labels::set(&[("service", "api")]);
            labels::with(&[("handler", "login")], || {
                let child = spawn(labels::get).join().unwrap();
                assert_eq!(
                    child,
                    vec![
                        ("service".into(), "api".into()),
                        ("handler".into(), "login".into())
                    ]
                );
            });
            assert_eq!(
                labels::get(),
                vec![("service".to_string(), "api".to_string())]
            );
        })
        .unwrap();
}

#[test]
fn task_ids_names_and_builder_errors() {
    Builder::new()
        .workers(1)
        .run(|| {
            let me = task::current_id();
            let h = task::Builder::new()
                .name("worker-a")
                .stack_size(64 * 1024)
                .spawn(move || (task::current_id(), task::current_name()))
                .unwrap();
            let (id, name) = h.join().unwrap();
            assert_ne!(id, me);
            assert_eq!(name.as_deref(), Some("worker-a"));
            let e = task::Builder::new()
                .stack_size(1024)
                .spawn(|| ())
                .unwrap_err();
            assert!(e.to_string().contains("below the minimum"), "{e}");
        })
        .unwrap();
    let e = Builder::new().workers(0).run(|| ()).unwrap_err();
    assert!(e.to_string().contains("at least one worker"), "{e}");
    let e = Builder::new().stack_size(10).run(|| ()).unwrap_err();
    assert!(e.to_string().contains("below the minimum"), "{e}");
}

#[test]
#[should_panic(expected = "called outside a task")]
fn runtime_functions_outside_a_runtime_panic() {
    yield_now();
}

target_runtime::task_local! {
    static COUNTER: std::cell::Cell<u32> = std::cell::Cell::new(0);
}

#[test]
fn task_locals_are_per_task_across_migration() {
    Builder::new()
        .workers(2)
        .run(|| {
            let hs: Vec<_> = (0..8u32)
                .map(|i| {
                    spawn(move || {
                        for _ in 0..100 {
                            COUNTER.with(|c| c.set(c.get() + i));
                            yield_now();
                        }
                        COUNTER.with(|c| c.get())
                    })
                })
                .collect();
            for (i, h) in hs.into_iter().enumerate() {
                assert_eq!(h.join().unwrap(), 100 * i as u32);
            }
        })
        .unwrap();
}

#[test]
fn blocking_calls_park_only_the_task() {
    let v = Builder::new()
        .workers(1)
        .run(|| {
            let ticker = spawn(|| {
                for _ in 0..10 {
                    yield_now();
                }
                1
            });
            let r = target_runtime::blocking(|| {
                std::thread::sleep(Duration::from_millis(20));
                2
            });
            ticker.join().unwrap() + r
        })
        .unwrap();
    assert_eq!(v, 3);
}
