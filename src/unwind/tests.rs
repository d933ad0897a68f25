//! In-process tests: unwind this test thread's own stack from a copy.

use super::*;
use crate::symbolize::Symbolizer;

/// Registers and a copy of the stack, taken inside [`capture_here`].
#[derive(Clone)]
struct Captured {
    ip: u64,
    sp: u64,
    bp: u64,
    stack: Vec<u8>,
    /// The copy reaches the end of the thread's stack mapping.
    whole: bool,
}

/// The end of the mapping in /proc/self/maps that contains `addr`.
fn mapping_end(addr: u64) -> u64 {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    for line in maps.lines() {
        let range = line.split_whitespace().next().unwrap();
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        if a <= addr && addr < b {
            return b;
        }
    }
    panic!("no mapping contains {addr:#x}");
}

#[cfg(target_arch = "x86_64")]
#[inline(never)]
fn capture_here(limit: u64) -> Captured {
    let (ip, sp, bp): (u64, u64, u64);
    // SAFETY: reads rip (via lea), rsp and rbp into registers; touches no memory and
    // leaves the stack as it was.
    unsafe {
        std::arch::asm!(
            "lea {ip}, [rip]",
            "mov {sp}, rsp",
            "mov {bp}, rbp",
            ip = out(reg) ip,
            sp = out(reg) sp,
            bp = out(reg) bp,
            options(nomem, nostack, preserves_flags)
        );
    }
    let end = mapping_end(sp);
    let len = (end - sp).min(limit);
    let mut stack = vec![0u8; len as usize];
    // SAFETY: [sp, sp + len) lies inside this thread's stack mapping (checked against
    // /proc/self/maps above) and above this frame's stack pointer, so it is mapped,
    // readable, and not written while we copy (only frames below sp are active).
    unsafe {
        std::ptr::copy_nonoverlapping(sp as *const u8, stack.as_mut_ptr(), len as usize);
    }
    Captured {
        ip,
        sp,
        bp,
        stack,
        whole: sp + len == end,
    }
}

#[inline(never)]
fn known_level_three(limit: u64) -> Captured {
    std::hint::black_box(capture_here(std::hint::black_box(limit)))
}

#[inline(never)]
fn known_level_two(limit: u64) -> Captured {
    std::hint::black_box(known_level_three(std::hint::black_box(limit)))
}

#[inline(never)]
fn known_level_one(limit: u64) -> Captured {
    std::hint::black_box(known_level_two(std::hint::black_box(limit)))
}

fn own_modules() -> Vec<ModuleInfo> {
    file::parse_proc_maps(&std::fs::read_to_string("/proc/self/maps").unwrap())
}

fn names(sym: &mut Symbolizer, addrs: &[u64]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, &a) in addrs.iter().enumerate() {
        for f in sym.lookup(a, i > 0) {
            out.push(f.function.clone());
        }
    }
    out
}

fn position(names: &[String], suffix: &str) -> usize {
    names
        .iter()
        .position(|n| n.ends_with(suffix))
        .unwrap_or_else(|| panic!("{suffix} not in {names:#?}"))
}

#[cfg(target_arch = "x86_64")]
#[test]
fn unwinds_own_stack_copy() {
    let cap = known_level_one(64 * 1024);
    let mut unwinder = Unwinder::new(LocalFiles);
    let errors = unwinder.set_modules(&own_modules());
    assert!(errors.is_empty(), "{errors:?}");
    let mut out = Vec::new();
    let end = unwinder.unwind(cap.ip, cap.sp, cap.bp, &cap.stack, &mut out);
    let mut sym = Symbolizer::new(LocalFiles);
    sym.set_modules(&own_modules());
    let names = names(&mut sym, &out);
    let c = position(&names, "capture_here");
    let three = position(&names, "known_level_three");
    let two = position(&names, "known_level_two");
    let one = position(&names, "known_level_one");
    let test = position(&names, "unwinds_own_stack_copy");
    assert!(
        c < three && three < two && two < one && one < test,
        "{names:#?}"
    );
    assert_eq!(out[0], cap.ip);
    if cap.whole {
        // A test thread starts in glibc's clone3, whose CFI marks rip undefined.
        assert_eq!(end, UnwindEnd::EndOfStack, "{names:#?}");
    } else {
        assert!(
            matches!(end, UnwindEnd::EndOfStack | UnwindEnd::StackCopyEnded),
            "{end:?} {names:#?}"
        );
    }

    // Second walk over the same copy: same frames (rule cache reused).
    let mut again = Vec::new();
    assert_eq!(
        unwinder.unwind(cap.ip, cap.sp, cap.bp, &cap.stack, &mut again),
        end
    );
    assert_eq!(again, out);

    // set_modules with the same list keeps everything.
    assert!(unwinder.set_modules(&own_modules()).is_empty());
    unwinder.unwind(cap.ip, cap.sp, cap.bp, &cap.stack, &mut again);
    assert_eq!(again, out);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn whole_thread_stack_ends_at_clone() {
    // Copy everything up to the end of the thread's stack mapping.
    let cap = known_level_one(u64::MAX);
    assert!(cap.whole);
    let mut unwinder = Unwinder::new(LocalFiles);
    unwinder.set_modules(&own_modules());
    let mut out = Vec::new();
    let end = unwinder.unwind(cap.ip, cap.sp, cap.bp, &cap.stack, &mut out);
    assert_eq!(end, UnwindEnd::EndOfStack, "{out:x?}");
}

#[cfg(target_arch = "x86_64")]
#[test]
fn truncated_copy_and_cap() {
    let cap = known_level_one(64 * 1024);
    let mut unwinder = Unwinder::new(LocalFiles);
    unwinder.set_modules(&own_modules());
    let mut full = Vec::new();
    unwinder.unwind(cap.ip, cap.sp, cap.bp, &cap.stack, &mut full);
    assert!(full.len() > 4);

    // A copy of just 16 bytes ends the walk cleanly.
    let mut out = Vec::new();
    let end = unwinder.unwind(cap.ip, cap.sp, cap.bp, &cap.stack[..16], &mut out);
    assert_eq!(end, UnwindEnd::StackCopyEnded);
    assert!(out.len() < full.len());
    assert_eq!(out[..], full[..out.len()]);

    // Empty copy.
    let end = unwinder.unwind(cap.ip, cap.sp, cap.bp, &[], &mut out);
    assert_eq!(end, UnwindEnd::StackCopyEnded);
    assert_eq!(out, vec![cap.ip]);

    // Frame cap.
    unwinder.set_max_frames(3);
    let end = unwinder.unwind(cap.ip, cap.sp, cap.bp, &cap.stack, &mut out);
    assert_eq!(end, UnwindEnd::FrameCap);
    assert_eq!(out[..], full[..3]);
}

#[test]
fn unwinder_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Unwinder>();
}

#[test]
fn no_modules_no_unwind_info() {
    let mut unwinder = Unwinder::new(LocalFiles);
    let mut out = Vec::new();
    // No module, frame-pointer fallback with bp == 0: nothing to walk.
    let end = unwinder.unwind(0x1234, 0x1000, 0, &[0u8; 64], &mut out);
    assert_eq!(end, UnwindEnd::NoUnwindInfo);
    assert_eq!(out, vec![0x1234]);

    // Garbage stack with a frame-pointer chain pointing at itself must not loop.
    let mut stack = vec![0u8; 64];
    stack[0..8].copy_from_slice(&0x1000u64.to_le_bytes());
    stack[8..16].copy_from_slice(&0x5555u64.to_le_bytes());
    let end = unwinder.unwind(0x1234, 0x1000, 0x1000, &stack, &mut out);
    assert!(
        matches!(end, UnwindEnd::Error(_) | UnwindEnd::NoUnwindInfo),
        "{end:?}"
    );
    assert!(out.len() <= DEFAULT_MAX_FRAMES);
}

#[test]
fn unreadable_module_is_reported() {
    let mut unwinder = Unwinder::new(LocalFiles);
    let errors = unwinder.set_modules(&[ModuleInfo {
        start: 0x1000,
        end: 0x2000,
        file_offset: 0,
        path: "/nonexistent/gprof-test".into(),
        build_id: None,
    }]);
    assert_eq!(errors.len(), 1);
    let errors = unwinder.set_modules(&[ModuleInfo {
        start: 0x1000,
        end: 0x2000,
        file_offset: 0,
        path: "/proc/self/status".into(),
        build_id: None,
    }]);
    assert_eq!(errors.len(), 1, "not an ELF file");
}

// A task-entry trampoline shaped like target-runtime's: its CFI marks the return
// address undefined (and it zeroes rbp), so an unwind through it must stop there with
// `EndOfStack` instead of walking into the test harness's frames above it.
#[cfg(target_arch = "x86_64")]
std::arch::global_asm!(
    ".text",
    ".p2align 4",
    ".type gprof_unwind_test_trampoline,@function",
    "gprof_unwind_test_trampoline:",
    ".cfi_startproc",
    "push rbp",
    ".cfi_adjust_cfa_offset 8",
    ".cfi_undefined rip",
    "xor ebp, ebp",
    "mov rax, rdi",
    "mov rdi, rsi",
    "call rax",
    "pop rbp",
    ".cfi_adjust_cfa_offset -8",
    "ret",
    ".cfi_endproc",
    ".size gprof_unwind_test_trampoline, .-gprof_unwind_test_trampoline",
);

#[cfg(target_arch = "x86_64")]
extern "C" {
    fn gprof_unwind_test_trampoline(
        f: extern "C" fn(*mut std::ffi::c_void),
        out: *mut std::ffi::c_void,
    );
}

#[cfg(target_arch = "x86_64")]
extern "C" fn task_entry(out: *mut std::ffi::c_void) {
    let cap = known_level_one(u64::MAX);
    // SAFETY: `out` points at the caller's live `Option<Captured>`, passed through
    // the trampoline unchanged.
    unsafe { *out.cast::<Option<Captured>>() = Some(cap) };
}

#[cfg(target_arch = "x86_64")]
#[test]
fn cfi_undefined_rip_trampoline_is_end_of_stack() {
    let mut slot: Option<Captured> = None;
    // SAFETY: the trampoline saves and restores rbp, keeps the stack 16-byte aligned
    // at the call, and calls `task_entry(&mut slot)` with the C ABI.
    unsafe { gprof_unwind_test_trampoline(task_entry, std::ptr::addr_of_mut!(slot).cast()) };
    let cap = slot.expect("captured");
    let mut unwinder = Unwinder::new(LocalFiles);
    unwinder.set_modules(&own_modules());
    let mut out = Vec::new();
    let end = unwinder.unwind(cap.ip, cap.sp, cap.bp, &cap.stack, &mut out);
    let mut sym = Symbolizer::new(LocalFiles);
    sym.set_modules(&own_modules());
    let names = names(&mut sym, &out);
    assert_eq!(end, UnwindEnd::EndOfStack, "{names:#?}");
    assert_eq!(
        names.last().map(String::as_str),
        Some("gprof_unwind_test_trampoline"),
        "{names:#?}"
    );
    let entry = position(&names, "task_entry");
    assert!(position(&names, "known_level_one") < entry);
    assert!(!names
        .iter()
        .any(|n| n.contains("cfi_undefined_rip_trampoline_is_end")));
}

// The same trampoline without any CFI: framehop falls back to frame pointers, finds
// rbp == 0 and stops just as it does for `.cfi_undefined rip`; we must not call that
// a complete stack.
#[cfg(target_arch = "x86_64")]
std::arch::global_asm!(
    ".text",
    ".p2align 4",
    ".type gprof_unwind_test_trampoline_nocfi,@function",
    "gprof_unwind_test_trampoline_nocfi:",
    "push rbp",
    "xor ebp, ebp",
    "mov rax, rdi",
    "mov rdi, rsi",
    "call rax",
    "pop rbp",
    "ret",
    ".size gprof_unwind_test_trampoline_nocfi, .-gprof_unwind_test_trampoline_nocfi",
);

#[cfg(target_arch = "x86_64")]
extern "C" {
    fn gprof_unwind_test_trampoline_nocfi(
        f: extern "C" fn(*mut std::ffi::c_void),
        out: *mut std::ffi::c_void,
    );
}

#[cfg(target_arch = "x86_64")]
#[test]
fn trampoline_without_cfi_is_not_end_of_stack() {
    let mut slot: Option<Captured> = None;
    // SAFETY: as in `cfi_undefined_rip_trampoline_is_end_of_stack`.
    unsafe { gprof_unwind_test_trampoline_nocfi(task_entry, std::ptr::addr_of_mut!(slot).cast()) };
    let cap = slot.expect("captured");
    let mut unwinder = Unwinder::new(LocalFiles);
    unwinder.set_modules(&own_modules());
    let mut out = Vec::new();
    let end = unwinder.unwind(cap.ip, cap.sp, cap.bp, &cap.stack, &mut out);
    let mut sym = Symbolizer::new(LocalFiles);
    sym.set_modules(&own_modules());
    let names = names(&mut sym, &out);
    assert_ne!(end, UnwindEnd::EndOfStack, "{names:#?}");
    eprintln!("no-CFI trampoline: {end:?}, {} frames", out.len());
    position(&names, "task_entry");
}

/// `cap`'s stack as if it lived `d` bytes higher: every word that points into the
/// thread's stack (a saved frame pointer, the address of a local; the copy may end below
/// the stack's top) moves with it.
#[cfg(target_arch = "x86_64")]
fn shifted(cap: &Captured, d: u64) -> Captured {
    let (lo, hi) = (cap.sp.saturating_sub(8 << 20), mapping_end(cap.sp));
    let mut stack = cap.stack.clone();
    for w in stack.chunks_exact_mut(8) {
        let v = u64::from_le_bytes(w.try_into().unwrap());
        if (lo..hi).contains(&v) {
            w.copy_from_slice(&(v + d).to_le_bytes());
        }
    }
    let bp = if (lo..hi).contains(&cap.bp) {
        cap.bp + d
    } else {
        cap.bp
    };
    Captured {
        ip: cap.ip,
        sp: cap.sp + d,
        bp,
        stack,
        whole: cap.whole,
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn a_stack_of_a_known_shape_gets_the_frames_a_full_walk_gives() {
    let cap = known_level_one(64 * 1024);
    let mut warm = Unwinder::new(LocalFiles);
    assert!(warm.set_modules(&own_modules()).is_empty());
    let mut first = Vec::new();
    let first_end = warm.unwind(cap.ip, cap.sp, cap.bp, &cap.stack, &mut first);
    assert_eq!(warm.memo_hits(), 0);

    // The same shape elsewhere: remembered frames, equal to a fresh unwinder's walk.
    let moved = shifted(&cap, 0x10_0000);
    let mut fresh = Unwinder::new(LocalFiles);
    assert!(fresh.set_modules(&own_modules()).is_empty());
    let (mut want, mut got) = (Vec::new(), Vec::new());
    let want_end = fresh.unwind(moved.ip, moved.sp, moved.bp, &moved.stack, &mut want);
    let got_end = warm.unwind(moved.ip, moved.sp, moved.bp, &moved.stack, &mut got);
    assert_eq!((got_end, &got), (want_end, &want));
    assert_eq!((got_end, &got), (first_end, &first));
    assert_eq!(warm.memo_hits(), 1, "the moved stack was walked again");

    // One return address changed: not the remembered walk. Point the frame of
    // known_level_two at the call site in known_level_one instead.
    let mut forged = moved.clone();
    let two = first[2];
    let at = forged
        .stack
        .chunks_exact(8)
        .position(|w| u64::from_le_bytes(w.try_into().unwrap()) == two)
        .expect("the return address is on the stack");
    forged.stack[at * 8..at * 8 + 8].copy_from_slice(&first[3].to_le_bytes());
    let mut fresh = Unwinder::new(LocalFiles);
    assert!(fresh.set_modules(&own_modules()).is_empty());
    let want_end = fresh.unwind(forged.ip, forged.sp, forged.bp, &forged.stack, &mut want);
    let got_end = warm.unwind(forged.ip, forged.sp, forged.bp, &forged.stack, &mut got);
    assert_eq!((got_end, &got), (want_end, &want));
    assert_ne!(got, first, "the forged stack unwound like the original");
    assert_eq!(
        warm.memo_hits(),
        1,
        "the forged stack was served from the memo"
    );
}

/// The memo never changes a result: stacks derived from one real stack (moved, with a
/// word overwritten by a return address, by a stack address, or by noise) unwind with a
/// warm unwinder exactly as with a fresh one.
#[cfg(target_arch = "x86_64")]
#[test]
fn the_memo_gives_what_a_fresh_walk_gives_on_mutated_stacks() {
    let cap = known_level_one(16 * 1024);
    let mut base = Vec::new();
    let mut warm = Unwinder::new(LocalFiles);
    assert!(warm.set_modules(&own_modules()).is_empty());
    warm.unwind(cap.ip, cap.sp, cap.bp, &cap.stack, &mut base);
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let words = cap.stack.len() / 8;
    let mut fresh = Unwinder::new(LocalFiles);
    assert!(fresh.set_modules(&own_modules()).is_empty());
    for i in 0..300 {
        let mut s = shifted(&cap, (next() % 64) * 0x1_0000);
        // Mostly words the walk reads (near return addresses), sometimes any word.
        for _ in 0..1 + next() % 3 {
            let at = (next() % words as u64) as usize;
            let v = match next() % 4 {
                0 => base[(next() % base.len() as u64) as usize],
                1 => s.sp + (next() % (s.stack.len() as u64)),
                2 => next(),
                _ => 0,
            };
            s.stack[at * 8..at * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        if next() % 5 == 0 {
            s.bp = next();
        }
        fresh.forget_walks();
        let (mut want, mut got) = (Vec::new(), Vec::new());
        let want_end = fresh.unwind(s.ip, s.sp, s.bp, &s.stack, &mut want);
        let got_end = warm.unwind(s.ip, s.sp, s.bp, &s.stack, &mut got);
        assert_eq!((got_end, &got), (want_end, &want), "mutation {i}");
    }
    assert!(
        warm.memo_hits() > 0,
        "no mutated stack was served from the memo"
    );
}
