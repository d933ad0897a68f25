//! A stand-in for a target-runtime program, for testing the tool's process layer
//! without the real runtime: it exports `GPROF_RT_DESCRIPTOR`, creates the shared
//! region the way the ABI docs describe, and parks threads in blocking system calls
//! whose EINTRs it counts.
//!
//! ```text
//! fake_target [--variant NAME] [--churn] [--vfork] [--leader-exit]
//!   variants: ok (default), bad-magic, future-abi, absurd-slot-cap, absurd-offset,
//!             unmapped-region, not-started, unsealed, fd-not-open, hostile-stacks
//!   hostile-stacks: a valid region whose tasks 4..=11 are garbage (see
//!             `hostile_slots`): random stack bytes, a return-address loop, a
//!             frame-pointer cycle, absurd or inverted stack bounds, an unmapped
//!             stack, out-of-range lengths and enum values; slot_hwm and worker_count
//!             far beyond their caps, worker records naming absurd slots
//!   --churn   one more thread creates and joins threads in a loop
//!   --vfork   one more thread spends nearly all its time in uninterruptible sleep
//!             (`D`): a vfork-style child shares its memory and sleeps 1 s, in a loop
//!   --leader-exit  the main thread exits after READY (zombie leader); stdin is
//!             served by another thread
//! ```
//!
//! Prints `READY <pid>` once everything runs. Each stdin line `ping` is answered with
//! `pong <spins>` (spins = a counter a busy thread increments). On stdin EOF it prints
//! `EINTR <n> CHURN <threads created>` and exits.
#![allow(clippy::print_stdout)]

use std::io::Write;
use std::mem::size_of;
use std::ptr::addr_of_mut;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use gprof_abi::{
    ControlBlock, Descriptor, TaskSlot, TaskState, WaitReason, WorkerRecord, ABI_VERSION,
    CONTROL_SIZE, LABELS_CAP, NAME_CAP, WORKER_CAP,
};

/// The exported descriptor. `static mut` so hostile variants can corrupt its plain
/// fields at start-up, before any other thread exists.
#[no_mangle]
#[used]
pub static mut GPROF_RT_DESCRIPTOR: Descriptor = Descriptor::new();

static EINTR: AtomicU64 = AtomicU64::new(0);
static SPINS: AtomicU64 = AtomicU64::new(0);
static CHURNED: AtomicU64 = AtomicU64::new(0);
static FUTEX_WORD: AtomicU32 = AtomicU32::new(0);

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn count_eintr(r: libc::c_long) {
    if r < 0 && errno() == libc::EINTR {
        EINTR.fetch_add(1, Ordering::Relaxed);
    }
}

fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

struct Shared {
    base: *mut u8,
    slot_off: u64,
    worker_off: u64,
}
// SAFETY: the mapping is process-wide and lives until exit; threads only touch atomics.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    fn worker(&self, i: u32) -> &WorkerRecord {
        // SAFETY: i < WORKER_CAP, the worker table lies inside the mapping (laid out in
        // main), aligned, and WorkerRecord is all atomics.
        unsafe {
            &*self
                .base
                .add((self.worker_off + u64::from(i) * size_of::<WorkerRecord>() as u64) as usize)
                .cast()
        }
    }
    fn slot(&self, i: u32) -> *mut TaskSlot {
        // SAFETY: i < slot_cap (callers use small indices), inside the mapping.
        unsafe {
            self.base
                .add((self.slot_off + u64::from(i) * size_of::<TaskSlot>() as u64) as usize)
                .cast()
        }
    }
    fn control(&self) -> &ControlBlock {
        // SAFETY: offset 0 of the page-aligned mapping.
        unsafe { &*self.base.cast::<ControlBlock>() }
    }
    fn register_worker(&self, i: u32) {
        self.worker(i).tid.store(gettid(), Ordering::Release);
        self.worker(i)
            .status
            .store(WorkerRecord::ACTIVE, Ordering::Release);
        self.control()
            .worker_count
            .fetch_max(i + 1, Ordering::AcqRel);
    }
}

/// Body of the vfork-style child: sleep, then exit without touching anything else.
extern "C" fn vfork_child(_: *mut libc::c_void) -> libc::c_int {
    let ts = libc::timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    // SAFETY: raw syscalls only (no allocation, no locks); the parent is suspended
    // until we exit (CLONE_VFORK), so sharing its memory is fine.
    unsafe {
        libc::syscall(
            libc::SYS_nanosleep,
            &ts,
            std::ptr::null_mut::<libc::timespec>(),
        );
        libc::syscall(libc::SYS_exit, 0);
    }
    0
}

/// `clone(CLONE_VM | CLONE_VFORK)`: the calling thread waits in `D` state
/// (`kernel/fork.c:wait_for_vfork_done`) until the child exits, like the vfork parent
/// of reliability.md §2.6 (E10). Done with clone and its own stack rather than
/// `vfork()`, which returns twice and is not sound to call from Rust.
fn vfork_sleep_child() {
    let mut stack = vec![0u8; 64 << 10];
    // SAFETY: the child runs on `stack` (top passed, grows down), which outlives it
    // because CLONE_VFORK suspends us until the child exits; the child only makes raw
    // syscalls.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len());
        libc::clone(
            vfork_child,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::null_mut(),
        )
    };
    assert!(pid > 0, "clone failed");
    let mut status = 0;
    // SAFETY: waiting for our own child.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        count_eintr(-1);
        if errno() != libc::EINTR {
            break;
        }
    }
    drop(stack);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut variant = "ok".to_string();
    let mut churn = false;
    let mut vfork = false;
    let mut leader_exit = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--variant" => variant = it.next().cloned().unwrap_or_default(),
            "--churn" => churn = true,
            "--vfork" => vfork = true,
            "--leader-exit" => leader_exit = true,
            other => {
                eprintln!("fake_target: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }

    let desc = addr_of_mut!(GPROF_RT_DESCRIPTOR);
    // SAFETY: no other thread exists yet; plain fields of our own static.
    unsafe {
        match variant.as_str() {
            "bad-magic" => (*desc).magic = 0xdead_beef,
            "future-abi" => (*desc).abi_version = ABI_VERSION + 1,
            _ => {}
        }
    }

    // Region layout: control block, workers, 64 slots, 64 KiB arena, 64 KiB ring (no
    // helper writes it: this target never starts one).
    let worker_off = CONTROL_SIZE;
    let slot_off = worker_off + u64::from(WORKER_CAP) * size_of::<WorkerRecord>() as u64;
    let slot_cap: u32 = 64;
    let arena_off = slot_off + u64::from(slot_cap) * size_of::<TaskSlot>() as u64;
    let arena_len: u64 = 64 << 10;
    let ring_off = arena_off + arena_len;
    let ring_len: u64 = 64 << 10;
    let region_len = (ring_off + ring_len + 4095) & !4095;

    // memfd_create(MFD_CLOEXEC|MFD_ALLOW_SEALING), 0600, sized, sealed, mapped shared.
    // SAFETY: a valid NUL-terminated name.
    let fd = unsafe {
        libc::memfd_create(
            c"gprof-rt".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    assert!(fd >= 0, "memfd_create failed");
    // SAFETY: fd is our memfd.
    unsafe {
        assert_eq!(libc::fchmod(fd, 0o600), 0);
        assert_eq!(libc::ftruncate(fd, region_len as libc::off_t), 0);
        if variant != "unsealed" {
            let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
            assert_eq!(libc::fcntl(fd, libc::F_ADD_SEALS, seals), 0);
        }
    }
    // SAFETY: a fresh shared mapping of our memfd, length == file size.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            region_len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    assert_ne!(base, libc::MAP_FAILED);
    let base = base.cast::<u8>();
    let shared = Shared {
        base,
        slot_off,
        worker_off,
    };

    let cb = base.cast::<ControlBlock>();
    // SAFETY: the region is zero-filled (fresh memfd), at least CONTROL_SIZE bytes; we
    // write the plain header fields before publishing the region (nobody reads yet).
    unsafe {
        (*cb).magic = gprof_abi::MAGIC;
        (*cb).abi_version = ABI_VERSION;
        (*cb).control_size = size_of::<ControlBlock>() as u32;
        (*cb).region_len = region_len;
        (*cb).worker_off = worker_off;
        (*cb).worker_cap = WORKER_CAP;
        (*cb).worker_record_size = size_of::<WorkerRecord>() as u32;
        (*cb).slot_off = slot_off;
        (*cb).slot_cap = slot_cap;
        (*cb).slot_size = size_of::<TaskSlot>() as u32;
        (*cb).arena_off = arena_off;
        (*cb).arena_len = arena_len;
        (*cb).ring_off = ring_off;
        (*cb).ring_len = ring_len;
        (*cb).runtime_pid = std::process::id();
        match variant.as_str() {
            "absurd-slot-cap" => (*cb).slot_cap = u32::MAX,
            "absurd-offset" => (*cb).slot_off = u64::MAX - 4095,
            _ => {}
        }
    }
    // Three tasks, so a reader can check names.
    for i in 0..3u32 {
        let s = shared.slot(i);
        let name = format!("fake-{i}");
        // SAFETY: slot i < slot_cap lies inside the mapping; no reader yet.
        unsafe {
            (&mut (*s).name)[..name.len()].copy_from_slice(name.as_bytes());
            (*s).name_len.store(name.len() as u32, Ordering::Relaxed);
            (*s).state.store(TaskState::WAITING, Ordering::Relaxed);
            (*s).wait_reason
                .store(WaitReason::CHAN_RECV, Ordering::Relaxed);
            (*s).prof.store(
                gprof_abi::prof::pack(0, gprof_abi::prof::ABSENT),
                Ordering::Relaxed,
            );
            (*s).task_id.store(u64::from(i) + 1, Ordering::SeqCst);
        }
    }
    shared.control().slot_hwm.store(3, Ordering::Release);
    shared.control().next_task_id.store(4, Ordering::Release);
    shared.control().live_tasks.store(3, Ordering::Release);
    shared.register_worker(0);
    if variant == "hostile-stacks" {
        hostile_slots(&shared);
    }
    let shared: &'static Shared = Box::leak(Box::new(shared));

    // Publish: length and fd first, then the address (release), as the ABI docs say.
    let (addr, memfd) = match variant.as_str() {
        "unmapped-region" => (0x1000, fd as u32),
        "fd-not-open" => (base as u64, 999_999),
        _ => (base as u64, fd as u32),
    };
    // SAFETY: shared references to atomic fields of our static.
    unsafe {
        (*desc).region_len.store(region_len, Ordering::Relaxed);
        (*desc).memfd.store(memfd, Ordering::Relaxed);
        if variant != "not-started" {
            (*desc).region_addr.store(addr, Ordering::Release);
        }
    }

    // Blocking threads. Every one counts EINTR from its call and retries.
    let mut pipe = [0i32; 2];
    // SAFETY: `pipe` has room for two fds.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    let read_fd = pipe[0];
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let spawn = |n: u32, f: fn()| {
        let tx = ready_tx.clone();
        std::thread::Builder::new()
            .name(format!("fake-w{n}"))
            .spawn(move || {
                shared.register_worker(n);
                tx.send(()).unwrap();
                f()
            })
            .unwrap();
    };
    static READ_FD: AtomicU32 = AtomicU32::new(0);
    READ_FD.store(read_fd as u32, Ordering::Relaxed);
    spawn(1, || loop {
        let mut b = [0u8; 1];
        // SAFETY: reading into a local buffer of the given length.
        let r = unsafe {
            libc::read(
                READ_FD.load(Ordering::Relaxed) as i32,
                b.as_mut_ptr().cast(),
                1,
            )
        };
        count_eintr(r as libc::c_long);
    });
    spawn(2, || loop {
        // SAFETY: FUTEX_WAIT on a valid, aligned u32 that stays 0; no timeout.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                FUTEX_WORD.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                0u32,
                std::ptr::null::<libc::timespec>(),
            )
        };
        count_eintr(r);
    });
    spawn(3, || loop {
        let ts = libc::timespec {
            tv_sec: 3600,
            tv_nsec: 0,
        };
        // SAFETY: valid timespec; remaining time not needed.
        let r = unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
        count_eintr(r as libc::c_long);
    });
    // A mostly running thread that leaves the (shared, 2-core) machine some CPU.
    spawn(4, || loop {
        for _ in 0..100_000 {
            SPINS.fetch_add(1, Ordering::Relaxed);
            std::hint::spin_loop();
        }
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 1_000_000,
        };
        // SAFETY: valid timespec.
        let r = unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
        count_eintr(r as libc::c_long);
    });
    let mut nthreads = 4;
    if churn {
        spawn(5, || loop {
            let h = std::thread::spawn(|| {
                CHURNED.fetch_add(1, Ordering::Relaxed);
            });
            let _ = h.join();
        });
        nthreads += 1;
    }
    if vfork {
        spawn(6, || loop {
            vfork_sleep_child();
        });
        nthreads += 1;
    }
    for _ in 0..nthreads {
        ready_rx.recv().unwrap();
    }
    if variant == "hostile-stacks" {
        let cb = shared.control();
        // Counts far beyond the caps; worker records naming a slot past the table, a
        // garbage task (with a thread whose registers are elsewhere), and nothing.
        cb.slot_hwm.store(u64::MAX, Ordering::Release);
        cb.worker_count.store(1_000_000_000, Ordering::Release);
        shared.worker(0).current.store(u64::MAX, Ordering::Release);
        shared.worker(1).current.store(4, Ordering::Release);
        shared.worker(2).current.store(7 + 1, Ordering::Release);
    }

    let mut out = std::io::stdout();
    writeln!(out, "READY {}", std::process::id()).unwrap();
    out.flush().unwrap();

    if leader_exit {
        // The leader exits alone (raw exit(2) of this thread only, no unwinding): the
        // process lives on with a zombie leader (reliability.md §2.4, E6/E7).
        std::thread::spawn(serve_stdin);
        // SAFETY: ends only this thread; nothing of it is referenced by the others
        // (the statics live on, and `out` is dropped unflushed-safe: flushed above).
        unsafe { libc::syscall(libc::SYS_exit, 0) };
    }
    serve_stdin();
}

/// Fill slots 3..=10 (task ids 4..=11) with hostile data for the unwinder and the
/// slot decoder. Every stack lives in leaked heap memory of this process.
fn hostile_slots(shared: &Shared) {
    const LEN: usize = 64 << 10;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let stack = |fill: &mut dyn FnMut(usize) -> u64| -> (u64, u64) {
        let words: Vec<u64> = (0..LEN / 8).map(&mut *fill).collect();
        let lo = Box::leak(words.into_boxed_slice()).as_ptr() as u64;
        (lo, lo + LEN as u64)
    };
    // An address inside this program's code, which has CFI.
    let code = main as fn() as usize as u64 + 16;
    // (lo, hi, sp, pc, fp) per hostile task.
    let mut tasks: Vec<(u64, u64, u64, u64, u64)> = Vec::new();
    // 4: random bytes, random registers.
    let (lo, hi) = stack(&mut |_| rand());
    tasks.push((lo, hi, lo + 1024, rand(), rand()));
    // 5: random bytes, a real pc.
    let (lo, hi) = stack(&mut |_| rand());
    tasks.push((lo, hi, lo + 1024, code, rand()));
    // 6: every word a return address into the same function: a CFI walk that repeats
    // one frame until the copy or the frame cap ends it.
    let (lo, hi) = stack(&mut |_| code);
    tasks.push((lo, hi, lo + 64, code, 0));
    // 7: a frame-pointer cycle: [fp] = fp, [fp + 8] = a pc without CFI.
    let mut base = 0u64;
    let (lo, hi) = stack(&mut |i| if i % 2 == 0 { base } else { 0x1234 });
    base = lo + 256;
    // SAFETY: rewriting the even words of the leaked stack just made, in bounds.
    unsafe {
        for i in (0..LEN / 8).step_by(2) {
            *((lo as *mut u64).add(i)) = base;
        }
    }
    tasks.push((lo, hi, base, 0x1234, base));
    // 8: absurd bounds; 9: inverted bounds; 10: an unmapped stack.
    tasks.push((0, u64::MAX, 0x7fff_0000_0000, code, 0));
    tasks.push((0x2000, 0x1000, 0x1800, code, 0));
    tasks.push((0x10000, 0x20000, 0x18000, code, 0x18010));
    // 11: a valid empty stack with out-of-range everything else.
    tasks.push((lo, hi, hi - 8, code, 0));
    for (k, &(lo, hi, sp, pc, fp)) in tasks.iter().enumerate() {
        let i = 3 + k as u32;
        let s = shared.slot(i);
        // SAFETY: slot i < 64 lies inside the mapping; no reader until READY.
        unsafe {
            (*s).stack_lo.store(lo, Ordering::Relaxed);
            (*s).stack_hi.store(hi, Ordering::Relaxed);
            (*s).saved.sp.store(sp, Ordering::Relaxed);
            (*s).saved.pc.store(pc, Ordering::Relaxed);
            (*s).saved.fp.store(fp, Ordering::Relaxed);
            (*s).state.store(TaskState::WAITING, Ordering::Relaxed);
            (*s).wait_reason
                .store(WaitReason::CHAN_RECV, Ordering::Relaxed);
            if k == 7 {
                (*s).name_len.store(u32::MAX, Ordering::Relaxed);
                (*s).labels_len.store(u32::MAX, Ordering::Relaxed);
                std::ptr::write_bytes(addr_of_mut!((*s).name).cast::<u8>(), 0xff, NAME_CAP);
                std::ptr::write_bytes(addr_of_mut!((*s).labels).cast::<u8>(), b'x', LABELS_CAP);
                (*s).spawn_file_addr.store(rand(), Ordering::Relaxed);
                (*s).spawn_file_len.store(u32::MAX, Ordering::Relaxed);
                (*s).spawn_pc.store(rand(), Ordering::Relaxed);
                (*s).state.store(99, Ordering::Relaxed);
                (*s).wait_reason.store(12345, Ordering::Relaxed);
                (*s).wait_since_ns.store(u64::MAX, Ordering::Relaxed);
                (*s).flags.store(u32::MAX, Ordering::Relaxed);
                (*s).parent_id.store(u64::MAX, Ordering::Relaxed);
            }
            (*s).prof.store(
                gprof_abi::prof::pack(0, gprof_abi::prof::ABSENT),
                Ordering::Relaxed,
            );
            (*s).task_id.store(u64::from(i) + 1, Ordering::SeqCst);
        }
    }
}

fn serve_stdin() {
    let mut out = std::io::stdout();
    // stdin: "ping" lines, EOF ends. Raw read(2) so its EINTRs count too.
    let mut line = Vec::new();
    loop {
        let mut b = [0u8; 256];
        // SAFETY: reading into a local buffer of the given length.
        let r = unsafe { libc::read(0, b.as_mut_ptr().cast(), b.len()) };
        if r < 0 {
            count_eintr(r as libc::c_long);
            if errno() == libc::EINTR {
                continue;
            }
            break;
        }
        if r == 0 {
            break;
        }
        line.extend_from_slice(&b[..r as usize]);
        while let Some(nl) = line.iter().position(|&c| c == b'\n') {
            let cmd: Vec<u8> = line.drain(..=nl).collect();
            if cmd.starts_with(b"ping") {
                writeln!(out, "pong {}", SPINS.load(Ordering::Relaxed)).unwrap();
                out.flush().unwrap();
            }
        }
    }
    writeln!(
        out,
        "EINTR {} CHURN {}",
        EINTR.load(Ordering::Relaxed),
        CHURNED.load(Ordering::Relaxed)
    )
    .unwrap();
    out.flush().unwrap();
    std::process::exit(0);
}
