//! Channels, select, Mutex and WaitGroup, on real runtimes.
//!
//! No sleeps are used for synchronisation and nothing asserts on timing. Where a test
//! wants tasks parked before the next step it yields until `blocked()` reports them, or
//! yields on a one-worker runtime; the assertions hold for any interleaving.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use target_runtime::chan::{
    self, Receiver, RecvError, Select, SendError, TryRecvError, TrySendError,
};
use target_runtime::sync::{Mutex, WaitGroup};
use target_runtime::{select, spawn, yield_now, Builder};

fn rt<T: Send + 'static>(workers: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
    Builder::new().workers(workers).run(f).unwrap()
}

// ------------------------------------------------------------------------------------
// Channels
// ------------------------------------------------------------------------------------

fn fan_in(cap: Option<usize>) {
    const SENDERS: u64 = 8;
    const PER: u64 = 5_000;
    let (sum, count) = rt(2, move || {
        let (tx, rx) = match cap {
            Some(c) => chan::bounded::<u64>(c),
            None => chan::unbounded(),
        };
        for s in 0..SENDERS {
            let tx = tx.clone();
            spawn(move || {
                for i in 0..PER {
                    tx.send(s * PER + i).unwrap();
                }
            });
        }
        drop(tx);
        // Ends when the last sender task finishes and drops its Sender.
        let (mut sum, mut count) = (0u64, 0u64);
        for v in rx.iter() {
            sum += v;
            count += 1;
        }
        (sum, count)
    });
    let n = SENDERS * PER;
    assert_eq!(count, n);
    assert_eq!(sum, n * (n - 1) / 2);
}

#[test]
fn fan_in_unbuffered() {
    fan_in(Some(0));
}

#[test]
fn fan_in_buffered() {
    fan_in(Some(16));
}

#[test]
fn fan_in_unbounded() {
    fan_in(None);
}

fn fan_out(cap: usize) {
    const N: u64 = 40_000;
    const RECEIVERS: usize = 8;
    let all = rt(2, move || {
        let (tx, rx) = chan::bounded::<u64>(cap);
        let hs: Vec<_> = (0..RECEIVERS)
            .map(|_| {
                let rx = rx.clone();
                spawn(move || rx.iter().collect::<Vec<u64>>())
            })
            .collect();
        drop(rx);
        for i in 0..N {
            tx.send(i).unwrap();
        }
        drop(tx);
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    let mut seen = vec![false; N as usize];
    for part in &all {
        // Each receiver sees its values in send order (one sender, FIFO channel).
        assert!(part.windows(2).all(|w| w[0] < w[1]), "out of order");
        for &v in part {
            assert!(!seen[v as usize], "{v} received twice");
            seen[v as usize] = true;
        }
    }
    assert!(seen.iter().all(|&s| s), "a value was lost");
}

#[test]
fn fan_out_unbuffered() {
    fan_out(0);
}

#[test]
fn fan_out_buffered() {
    fan_out(3);
}

/// On an unbuffered channel `send(i)` cannot complete before a receiver took `i`, so the
/// sender can never be more than one completed send ahead of the receiver. A channel
/// that buffered even one value fails this: on one worker, the receiver yields after
/// each receive, which lets the sender complete the next send into the buffer.
fn rendezvous(workers: usize) {
    const N: u64 = 2_000;
    rt(workers, || {
        let (tx, rx) = chan::bounded::<u64>(0);
        let completed = Arc::new(AtomicU64::new(0));
        let c2 = completed.clone();
        let sender = spawn(move || {
            for i in 0..N {
                tx.send(i).unwrap();
                c2.store(i + 1, Ordering::SeqCst);
            }
        });
        for i in 0..N {
            let v = rx.recv().unwrap();
            assert_eq!(v, i, "values arrive in order");
            yield_now();
            yield_now();
            let c = completed.load(Ordering::SeqCst);
            assert!(
                c <= v + 1,
                "sender completed {c} sends but only {} were received",
                v + 1
            );
        }
        sender.join().unwrap();
        assert_eq!(rx.recv(), Err(RecvError));
    });
}

#[test]
fn rendezvous_one_worker() {
    rendezvous(1);
}

#[test]
fn rendezvous_two_workers() {
    rendezvous(2);
}

#[test]
fn unbuffered_try_ops_need_a_waiting_partner() {
    rt(1, || {
        let (tx, rx) = chan::bounded::<u32>(0);
        assert_eq!(tx.try_send(1), Err(TrySendError::Full(1)));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(tx.capacity(), Some(0));
        // A parked receiver takes a try_send directly.
        let r = spawn(move || rx.recv());
        let mut v = 7;
        loop {
            match tx.try_send(v) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) => {
                    v = back;
                    yield_now();
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(r.join().unwrap(), Ok(7));
        // And a parked sender is taken by try_recv.
        let (tx, rx) = chan::bounded::<u32>(0);
        let s = spawn(move || tx.send(9));
        let got = loop {
            match rx.try_recv() {
                Ok(v) => break v,
                Err(TryRecvError::Empty) => yield_now(),
                Err(e) => panic!("{e:?}"),
            }
        };
        assert_eq!(got, 9);
        assert_eq!(s.join().unwrap(), Ok(()));
    });
}

#[test]
fn buffered_try_ops() {
    rt(1, || {
        let (tx, rx) = chan::bounded::<u32>(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert!(tx.try_send(3).unwrap_err().is_full());
        assert_eq!(rx.len(), 2);
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        drop(tx);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    });
}

#[test]
fn receivers_drain_after_senders_are_gone() {
    rt(2, || {
        let (tx, rx) = chan::bounded::<u32>(4);
        let tx2 = tx.clone();
        tx.send(1).unwrap();
        tx2.send(2).unwrap();
        drop(tx);
        // One sender left: not disconnected.
        assert_eq!(rx.try_recv(), Ok(1));
        tx2.send(3).unwrap();
        drop(tx2);
        assert_eq!(rx.recv(), Ok(2));
        assert_eq!(rx.recv(), Ok(3));
        assert_eq!(rx.recv(), Err(RecvError));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    });
}

#[test]
fn blocked_receivers_wake_when_the_last_sender_goes() {
    rt(2, || {
        let (tx, rx) = chan::bounded::<u32>(0);
        let hs: Vec<_> = (0..10)
            .map(|_| {
                let rx = rx.clone();
                spawn(move || rx.recv())
            })
            .collect();
        while tx.blocked() != (0, 10) {
            yield_now();
        }
        let tx2 = tx.clone();
        drop(tx);
        tx2.send(5).unwrap(); // still connected: one receiver gets it
        drop(tx2);
        let results: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(results.iter().filter(|r| **r == Ok(5)).count(), 1);
        assert_eq!(results.iter().filter(|r| **r == Err(RecvError)).count(), 9);
    });
}

#[test]
fn sends_fail_with_the_value_when_receivers_are_gone() {
    rt(2, || {
        // A value that counts its clones.
        let token = Arc::new(());
        let (tx, rx) = chan::bounded::<Arc<()>>(2);
        tx.send(token.clone()).unwrap();
        tx.send(token.clone()).unwrap();
        // Blocked senders (buffer full) get their values back.
        let blocked: Vec<_> = (0..3)
            .map(|_| {
                let (tx, t) = (tx.clone(), token.clone());
                spawn(move || tx.send(t).map_err(|e| e.into_inner()))
            })
            .collect();
        while rx.blocked() != (3, 0) {
            yield_now();
        }
        assert_eq!(Arc::strong_count(&token), 6);
        let rx2 = rx.clone();
        drop(rx);
        assert_eq!(rx2.blocked(), (3, 0), "one receiver is left");
        drop(rx2);
        for h in blocked {
            let back = h.join().unwrap().expect_err("receivers are gone");
            assert!(Arc::ptr_eq(&back, &token));
        }
        // The two buffered values were dropped with the last receiver.
        assert_eq!(Arc::strong_count(&token), 1);
        let err = tx.send(token.clone()).unwrap_err();
        assert!(Arc::ptr_eq(&err.0, &token));
        assert!(tx.try_send(token.clone()).unwrap_err().is_disconnected());
    });
}

#[test]
fn channels_connect_tasks_with_plain_threads() {
    let (tx, rx) = chan::bounded::<u64>(0);
    let (back_tx, back_rx) = chan::unbounded::<u64>();
    // A plain OS thread feeds the runtime and reads its answers: it blocks itself, not a
    // task.
    let feeder = std::thread::spawn(move || {
        for i in 0..1000 {
            tx.send(i).unwrap();
        }
        drop(tx);
        back_rx.iter().sum::<u64>()
    });
    rt(2, move || {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let (rx, back_tx) = (rx.clone(), back_tx.clone());
                spawn(move || {
                    for v in rx.iter() {
                        back_tx.send(v * 2).unwrap();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
    assert_eq!(feeder.join().unwrap(), 999 * 1000);
}

/// 100k tasks each parked on a channel receive at the same time, then released with one
/// value each.
#[test]
fn stress_100k_parked_tasks() {
    const N: u64 = 100_000;
    let (sum, count) = rt(2, || {
        let (tx, rx) = chan::bounded::<u64>(0);
        let (res_tx, res_rx) = chan::unbounded::<u64>();
        for _ in 0..N {
            let (rx, res_tx) = (rx.clone(), res_tx.clone());
            target_runtime::task::Builder::new()
                .stack_size(target_runtime::MIN_STACK_SIZE)
                .spawn(move || {
                    let v = rx.recv().unwrap();
                    res_tx.send(v).unwrap();
                })
                .unwrap();
        }
        drop((rx, res_tx));
        // Wait (without sleeping) until every task is parked in recv.
        while tx.blocked() != (0, N as usize) {
            yield_now();
        }
        for i in 0..N {
            tx.send(i).unwrap();
        }
        let (mut sum, mut count) = (0u64, 0u64);
        for v in res_rx.iter() {
            sum += v;
            count += 1;
        }
        (sum, count)
    });
    assert_eq!(count, N);
    assert_eq!(sum, N * (N - 1) / 2);
}

// ------------------------------------------------------------------------------------
// Select
// ------------------------------------------------------------------------------------

#[test]
fn select_is_fair_between_ready_cases() {
    const N: usize = 10_000;
    let (a, b) = rt(1, || {
        let (tx1, rx1) = chan::unbounded::<u8>();
        let (tx2, rx2) = chan::unbounded::<u8>();
        for _ in 0..N {
            tx1.send(1).unwrap();
            tx2.send(2).unwrap();
        }
        let (mut a, mut b) = (0, 0);
        for _ in 0..N {
            select! {
                recv(rx1) -> v => { assert_eq!(v, Ok(1)); a += 1 }
                recv(rx2) -> v => { assert_eq!(v, Ok(2)); b += 1 }
            }
        }
        (a, b)
    });
    // A fixed order gives 10000/0; uniform choice gives ~5000 each (sd 50).
    assert!(a > N * 2 / 5 && b > N * 2 / 5, "unfair: {a} vs {b}");
}

#[test]
fn select_recv_from_several_producers_exactly_once() {
    const PER: u64 = 20_000;
    let (sa, sb, na, nb) = rt(2, || {
        let (tx1, rx1) = chan::bounded::<u64>(0);
        let (tx2, rx2) = chan::bounded::<u64>(5);
        spawn(move || (0..PER).for_each(|i| tx1.send(i).unwrap()));
        spawn(move || (0..PER).for_each(|i| tx2.send(i * 3).unwrap()));
        let (mut sa, mut sb, mut na, mut nb) = (0, 0, 0, 0);
        let (mut a_open, mut b_open) = (true, true);
        // Go's idiom of setting a closed channel to nil: stop selecting on it. (Polling
        // a disconnected channel forever would never park, and on a cooperative
        // scheduler a task that never parks can starve the others.)
        while a_open || b_open {
            let mut sel = Select::new();
            if a_open {
                sel = sel.recv(&rx1, |v| (0, v));
            }
            if b_open {
                sel = sel.recv(&rx2, |v| (1, v));
            }
            match sel.wait() {
                (0, Ok(v)) => {
                    sa += v;
                    na += 1
                }
                (0, Err(RecvError)) => a_open = false,
                (_, Ok(v)) => {
                    sb += v;
                    nb += 1
                }
                (_, Err(RecvError)) => b_open = false,
            }
        }
        (sa, sb, na, nb)
    });
    assert_eq!((na, nb), (PER, PER));
    assert_eq!(sa, PER * (PER - 1) / 2);
    assert_eq!(sb, 3 * PER * (PER - 1) / 2);
}

#[test]
fn select_send_delivers_each_value_once() {
    const TASKS: u64 = 200;
    const PER: u64 = 100;
    let got = rt(2, || {
        let (tx1, rx1) = chan::bounded::<u64>(0);
        let (tx2, rx2) = chan::bounded::<u64>(1);
        for t in 0..TASKS {
            let (tx1, tx2) = (tx1.clone(), tx2.clone());
            spawn(move || {
                for i in 0..PER {
                    let v = t * PER + i;
                    select! {
                        send(tx1, v) -> r => r.unwrap(),
                        send(tx2, v) -> r => r.unwrap(),
                    }
                }
            });
        }
        drop((tx1, tx2));
        let c1 = spawn(move || rx1.iter().collect::<Vec<_>>());
        let c2 = spawn(move || rx2.iter().collect::<Vec<_>>());
        let mut all = c1.join().unwrap();
        let other = c2.join().unwrap();
        assert!(
            !all.is_empty() && !other.is_empty(),
            "both cases should fire"
        );
        all.extend(other);
        all
    });
    assert_eq!(
        got.len() as u64,
        TASKS * PER,
        "a value was lost or duplicated"
    );
    let set: HashSet<u64> = got.into_iter().collect();
    assert_eq!(set.len() as u64, TASKS * PER, "a value was duplicated");
}

/// Both sides select on unbuffered channels, so values pass between a select and the
/// other select's parked waits; every value arrives once, in order.
#[test]
fn select_meets_select() {
    const N: u64 = 20_000;
    let got = rt(2, || {
        let (a_tx, a_rx) = chan::bounded::<u64>(0);
        let (b_tx, b_rx) = chan::bounded::<u64>(0);
        let producer = spawn(move || {
            for i in 0..N {
                select! {
                    send(a_tx, i) -> r => r.unwrap(),
                    send(b_tx, i) -> r => r.unwrap(),
                }
            }
        });
        let mut got = Vec::with_capacity(N as usize);
        for _ in 0..N {
            let v = select! {
                recv(a_rx) -> v => v.unwrap(),
                recv(b_rx) -> v => v.unwrap(),
            };
            got.push(v);
        }
        producer.join().unwrap();
        got
    });
    assert_eq!(got, (0..N).collect::<Vec<_>>());
}

#[test]
fn select_default() {
    rt(1, || {
        let (tx, rx) = chan::bounded::<u32>(1);
        let r = select! {
            recv(rx) -> v => Some(v),
            default => None,
        };
        assert_eq!(r, None, "nothing is ready: default runs");
        let r = select! {
            send(tx, 3) -> r => r.is_ok(),
            default => false,
        };
        assert!(r);
        let r = select! {
            send(tx, 4) -> _r => "sent",
            default => "full",
        };
        assert_eq!(r, "full");
        let r = select! {
            default => 0,
            recv(rx) -> v => v.unwrap(),
        };
        assert_eq!(r, 3);
        // Only a default.
        assert_eq!(select! { default => 42 }, 42);
        // Builder form.
        assert_eq!(Select::<()>::new().recv(&rx, |_| ()).try_wait(), None);
    });
}

#[test]
fn select_sees_disconnection() {
    rt(2, || {
        let (tx, rx) = chan::bounded::<u32>(0);
        let (_keep, idle_rx) = chan::bounded::<u32>(0);
        let probe = rx.clone();
        let h = spawn(move || {
            select! {
                recv(idle_rx) -> _v => unreachable!("nobody sends here"),
                recv(rx) -> v => v,
            }
        });
        while probe.blocked() != (0, 1) {
            yield_now();
        }
        drop(tx);
        assert_eq!(h.join().unwrap(), Err(RecvError));

        let (tx, rx) = chan::bounded::<String>(0);
        drop(rx);
        let r = Select::new()
            .send(&tx, "x".to_string(), |r: Result<(), SendError<String>>| r)
            .wait();
        assert_eq!(r.unwrap_err().into_inner(), "x");
    });
}

/// A select that keeps losing on one channel must not leave its waits behind there:
/// that channel never has more than the one live wait of the select.
#[test]
fn select_cleans_up_its_waits() {
    rt(2, || {
        let (work_tx, work_rx) = chan::bounded::<u32>(0);
        let (idle_tx, idle_rx) = chan::bounded::<u32>(0);
        let idle_rx2 = idle_rx.clone();
        let h = spawn(move || {
            let idle_rx = idle_rx2;
            let mut n = 0;
            loop {
                select! {
                    recv(work_rx) -> v => match v { Ok(_) => n += 1, Err(_) => break },
                    recv(idle_rx) -> _v => unreachable!("idle never delivers"),
                }
            }
            n
        });
        for i in 0..10_000 {
            work_tx.send(i).unwrap();
            assert!(idle_tx.blocked().1 <= 1, "stale select waits pile up");
        }
        drop(work_tx);
        assert_eq!(h.join().unwrap(), 10_000);
        assert_eq!(idle_tx.blocked(), (0, 0));
        assert_eq!(idle_tx.try_send(1), Err(TrySendError::Full(1)));
        drop(idle_rx);
    });
}

#[test]
fn select_macro_control_flow() {
    rt(1, || {
        let (tx, rx) = chan::unbounded::<u32>();
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        drop(tx);
        let mut seen = vec![];
        let f = |rx: &Receiver<u32>| -> Option<u32> {
            select! {
                recv(rx) -> v => {
                    let v = v.ok()?; // `?` works in a body
                    Some(v)
                }
            }
        };
        while let Some(v) = f(&rx) {
            if v == 3 {
                continue;
            }
            seen.push(v);
        }
        assert_eq!(seen, [0, 1, 2, 4]);
    });
}

// ------------------------------------------------------------------------------------
// Mutex
// ------------------------------------------------------------------------------------

/// 1000 tasks x 1000 increments on two workers. The read-modify-write is split by a
/// yield every 100 steps, so any failure of mutual exclusion loses updates.
#[test]
fn mutex_counter_under_contention() {
    const TASKS: u64 = 1000;
    const PER: u64 = 1000;
    let total = rt(2, || {
        let m = Arc::new(Mutex::new(0u64));
        let hs: Vec<_> = (0..TASKS)
            .map(|_| {
                let m = m.clone();
                spawn(move || {
                    for i in 0..PER {
                        let mut g = m.lock();
                        let v = *g;
                        if i % 100 == 0 {
                            yield_now();
                        }
                        *g = v + 1;
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let v = *m.lock();
        v
    });
    assert_eq!(total, TASKS * PER);
}

#[test]
fn mutex_try_lock_and_guard_across_park() {
    rt(2, || {
        let m = Arc::new(Mutex::new(vec![1]));
        let g = m.lock();
        assert!(m.try_lock().is_none());
        assert!(m.is_locked());
        let m2 = m.clone();
        let h = spawn(move || {
            let mut g = m2.lock(); // parks until the guard below is dropped
            g.push(3);
            g.len()
        });
        // Hold the guard across a park (a channel round trip through another task).
        let (tx, rx) = chan::bounded::<u32>(0);
        spawn(move || tx.send(1).unwrap());
        assert_eq!(rx.recv(), Ok(1));
        drop(g);
        assert_eq!(h.join().unwrap(), 2);
        assert_eq!(*m.try_lock().expect("unlocked"), vec![1, 3]);
    });
}

/// No poisoning: a task that panics holding the guard unlocks the mutex while unwinding;
/// its writes before the panic stay.
#[test]
fn mutex_unlocks_when_a_holder_panics() {
    rt(2, || {
        let m = Arc::new(Mutex::new(0u32));
        let m2 = m.clone();
        let h = spawn(move || {
            let mut g = m2.lock();
            *g = 7;
            panic!("boom while holding the guard");
        });
        assert!(h.join().is_err());
        assert!(!m.is_locked());
        assert_eq!(*m.lock(), 7);
    });
}

#[test]
fn mutex_from_plain_threads_and_tasks() {
    let m = Arc::new(Mutex::new(0u64));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || {
                for _ in 0..20_000 {
                    *m.lock() += 1;
                }
            })
        })
        .collect();
    let m2 = m.clone();
    rt(2, move || {
        let hs: Vec<_> = (0..20)
            .map(|_| {
                let m = m2.clone();
                spawn(move || {
                    for _ in 0..2_000 {
                        *m.lock() += 1;
                    }
                })
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
    });
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(*m.lock(), 80_000);
}

// ------------------------------------------------------------------------------------
// WaitGroup
// ------------------------------------------------------------------------------------

#[test]
fn wait_group_10k_tasks() {
    const N: usize = 10_000;
    rt(2, || {
        let wg = WaitGroup::new();
        let n = Arc::new(AtomicUsize::new(0));
        for i in 0..N {
            let n = n.clone();
            wg.spawn(move || {
                if i % 2 == 0 {
                    yield_now(); // finish late
                }
                n.fetch_add(1, Ordering::SeqCst);
            });
        }
        // Several waiters, all released together.
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let (wg, n) = (wg.clone(), n.clone());
                spawn(move || {
                    wg.wait();
                    n.load(Ordering::SeqCst)
                })
            })
            .collect();
        wg.wait();
        assert_eq!(n.load(Ordering::SeqCst), N);
        for w in waiters {
            assert_eq!(w.join().unwrap(), N);
        }
        // Reusable.
        wg.add(2);
        assert_eq!(wg.count(), 2);
        let w2 = wg.clone();
        spawn(move || {
            w2.done();
            w2.done();
        });
        wg.wait();
        assert_eq!(wg.count(), 0);
    });
}

#[test]
#[should_panic(expected = "negative WaitGroup counter")]
fn wait_group_negative_counter_panics() {
    let wg = WaitGroup::new();
    wg.add(1);
    wg.done();
    wg.done();
}

#[test]
fn wait_group_counts_down_for_panicking_tasks() {
    rt(2, || {
        let wg = WaitGroup::new();
        let h = wg.spawn(|| panic!("task fails"));
        wg.wait();
        assert!(h.join().is_err());
    });
}
