//! x86_64 (System V) context switch and task entry.
//!
//! Two symbols, both in `global_asm!` so that every instruction carries hand-written CFI:
//!
//! * `gprof_rt_switch(save: *mut u64 /* rdi */, load: u64 /* rsi */)`: pushes the
//!   callee-saved state on the current stack, stores the stack pointer to `*save`,
//!   loads `load` into `rsp` and pops the same shape of frame off the new stack.
//!   `gprof_rt_switch_resume` labels the first instruction that runs on the new stack:
//!   it is the program counter of every suspended task.
//! * `gprof_rt_task_entry`: the outermost frame of every task. Its CFI marks the return
//!   address undefined and it runs with `rbp = 0`, so DWARF and frame-pointer unwinders
//!   both stop there and never walk into the scheduler's stack (a goroutine's stack ends
//!   at `goexit` in the same way).
//!
//! # The switch frame (one shape on every stack)
//!
//! ```text
//!            higher addresses
//!   CFA  ->  +----------------------+
//!            | return address       |  CFA - 8   (pushed by the `call`)
//!            | rbp                  |  CFA - 16
//!            | rbx                  |  CFA - 24
//!            | r12                  |  CFA - 32
//!            | r13                  |  CFA - 40
//!            | r14                  |  CFA - 48
//!            | r15                  |  CFA - 56
//!   sp   ->  | mxcsr | x87 cw | pad |  CFA - 64   (saved sp points here)
//!            +----------------------+
//!            lower addresses
//! ```
//!
//! Because the frame popped off the new stack has exactly the shape of the frame pushed
//! onto the old one, a single rule `CFA = rsp + K` is true at every instruction, before
//! and after `rsp` changes hands: a thread stopped anywhere in the switch unwinds the
//! stack that `rsp` is in, with the saved registers of *that* stack's owner.
//!
//! # A fresh task's stack
//!
//! ```text
//!   stack top (16-aligned)
//!            | 0 (padding)          |  top - 8
//!            | 0 (padding)          |  top - 16   <- rsp when the trampoline calls
//!            | gprof_rt_task_entry  |  "return address" the restore path jumps to
//!            | rbp = 0              |
//!            | rbx = 0              |
//!            | r12 = argument       |
//!            | r13 = entry function |
//!            | r14 = 0              |
//!            | r15 = 0              |
//!   sp   ->  | default mxcsr/x87 cw |  top - 80
//! ```
//!
//! The restore path leaves with `jmp` through the popped return address rather than
//! `ret`: after a stack swap a `ret` always mispredicts the return stack buffer
//! (research/runtime.md). The return address stays in memory at `rsp - 8`, inside the
//! 128-byte red zone that signal delivery skips, so the default "return address at
//! CFA - 8" rule stays true through the final `jmp`.

use core::arch::global_asm;

/// Bytes of the switch frame.
pub const SWITCH_FRAME: usize = 64;
/// MXCSR at process start: all exceptions masked, round to nearest.
const DEFAULT_MXCSR: u64 = 0x1F80;
/// x87 control word at process start: all exceptions masked, 64-bit precision.
const DEFAULT_FPUCW: u64 = 0x037F;

global_asm!(
    ".text",
    ".globl gprof_rt_switch",
    ".hidden gprof_rt_switch",
    ".type gprof_rt_switch,@function",
    ".p2align 4",
    "gprof_rt_switch:",
    // CFA = rsp + 8, return address at CFA - 8: the state right after a `call`.
    ".cfi_startproc",
    "push rbp",
    // Each push moves rsp down 8, so the CFA is 8 further from rsp ...
    ".cfi_adjust_cfa_offset 8",
    // ... and the caller's value of the pushed register now lives at a fixed CFA offset.
    ".cfi_offset rbp, -16",
    "push rbx",
    ".cfi_adjust_cfa_offset 8",
    ".cfi_offset rbx, -24",
    "push r12",
    ".cfi_adjust_cfa_offset 8",
    ".cfi_offset r12, -32",
    "push r13",
    ".cfi_adjust_cfa_offset 8",
    ".cfi_offset r13, -40",
    "push r14",
    ".cfi_adjust_cfa_offset 8",
    ".cfi_offset r14, -48",
    "push r15",
    ".cfi_adjust_cfa_offset 8",
    ".cfi_offset r15, -56",
    // Room for the two control words (callee-saved by the ABI).
    "sub rsp, 8",
    ".cfi_adjust_cfa_offset 8",
    "stmxcsr [rsp]",
    "fnstcw [rsp + 4]",
    // Remember our own frame to compare control words after the swap.
    "mov rax, rsp",
    // Publish the saved stack pointer: from here the frame is complete.
    "mov [rdi], rsp",
    // The swap. The new stack holds a frame of the same shape, so the CFA rule in force
    // (rsp + 64, registers at the offsets above) now describes the new stack's owner.
    "mov rsp, rsi",
    ".globl gprof_rt_switch_resume",
    ".hidden gprof_rt_switch_resume",
    "gprof_rt_switch_resume:",
    // ldmxcsr/fldcw are slow and the words rarely differ: restore only on change.
    "mov ecx, [rsp]",
    "cmp ecx, [rax]",
    "je 2f",
    "ldmxcsr [rsp]",
    "2:",
    "mov cx, [rsp + 4]",
    "cmp cx, [rax + 4]",
    "je 3f",
    "fldcw [rsp + 4]",
    "3:",
    "add rsp, 8",
    ".cfi_adjust_cfa_offset -8",
    "pop r15",
    // A popped register holds its caller's value again: no rule needed any more.
    ".cfi_adjust_cfa_offset -8",
    ".cfi_restore r15",
    "pop r14",
    ".cfi_adjust_cfa_offset -8",
    ".cfi_restore r14",
    "pop r13",
    ".cfi_adjust_cfa_offset -8",
    ".cfi_restore r13",
    "pop r12",
    ".cfi_adjust_cfa_offset -8",
    ".cfi_restore r12",
    "pop rbx",
    ".cfi_adjust_cfa_offset -8",
    ".cfi_restore rbx",
    "pop rbp",
    ".cfi_adjust_cfa_offset -8",
    ".cfi_restore rbp",
    // Step over the return address but leave it in memory (red zone): CFA = rsp and the
    // return address is still at CFA - 8, so the default rule holds through the jump.
    "add rsp, 8",
    ".cfi_adjust_cfa_offset -8",
    "jmp qword ptr [rsp - 8]",
    ".cfi_endproc",
    ".size gprof_rt_switch, . - gprof_rt_switch",
    "",
    ".globl gprof_rt_task_entry",
    ".hidden gprof_rt_task_entry",
    ".type gprof_rt_task_entry,@function",
    ".p2align 4",
    "gprof_rt_task_entry:",
    ".cfi_startproc",
    // Outermost frame: there is no caller. Unwinders stop here.
    ".cfi_undefined rip",
    // A fresh task "returns" to the instruction after this nop (see `init_stack`), so an
    // unwinder that looks return addresses up at `address - 1` lands on the nop: inside
    // this symbol and this FDE, never in the function placed before it.
    "nop",
    // Frame-pointer walkers stop at a zero rbp (it was also restored as 0).
    "xor ebp, ebp",
    // r12 = argument, r13 = entry function, both from the fresh frame. rsp is 16-byte
    // aligned here (see the diagram), as the call requires.
    "mov rdi, r12",
    "call r13",
    // The entry function never returns: it switches away for good.
    "ud2",
    ".cfi_endproc",
    ".size gprof_rt_task_entry, . - gprof_rt_task_entry",
);

extern "C" {
    /// Save the current context to `*save`, resume the one at `load`.
    fn gprof_rt_switch(save: *mut u64, load: u64);
    static gprof_rt_switch_resume: u8;
    static gprof_rt_task_entry: u8;
}

/// Address at which every suspended task resumes (its saved `pc`).
pub fn resume_pc() -> u64 {
    core::ptr::addr_of!(gprof_rt_switch_resume) as u64
}

/// Address of the task entry trampoline.
pub fn task_entry_pc() -> u64 {
    core::ptr::addr_of!(gprof_rt_task_entry) as u64
}

/// Save the running context into `*save` and resume the context saved at `load`.
///
/// # Safety
///
/// `load` must be a stack pointer produced by [`init_stack`] or by an earlier switch
/// that saved into a location nobody has resumed since, and the stack it points into
/// must stay mapped. `save` must be valid for a write of 8 bytes and stay so until the
/// saved context is resumed.
#[inline(always)]
pub unsafe fn switch(save: *mut u64, load: u64) {
    // SAFETY: forwarded contract; the callee is a C-ABI function that preserves every
    // callee-saved register and the control words.
    unsafe { gprof_rt_switch(save, load) }
}

/// Lay out a fresh task frame at the top of `[lo, hi)` so that switching to the returned
/// stack pointer calls `entry(arg)` on that stack. Returns the saved sp.
///
/// # Safety
///
/// `[hi - 80, hi)` must be writable memory owned by the caller; `hi` is 16-byte aligned.
pub unsafe fn init_stack(hi: u64, entry: extern "C" fn(usize) -> !, arg: usize) -> u64 {
    debug_assert_eq!(hi % 16, 0);
    let sp = hi - 16 - SWITCH_FRAME as u64;
    let words: [u64; 10] = [
        DEFAULT_MXCSR | (DEFAULT_FPUCW << 32),
        0,                     // r15
        0,                     // r14
        entry as usize as u64, // r13
        arg as u64,            // r12
        0,                     // rbx
        0,                     // rbp
        task_entry_pc() + 1,   // where the restore path jumps: just past the nop
        0,                     // padding
        0,                     // padding
    ];
    // SAFETY: the caller guarantees the 80 bytes below `hi` are ours to write.
    unsafe { core::ptr::copy_nonoverlapping(words.as_ptr(), sp as *mut u64, words.len()) };
    sp
}

/// Frame pointer saved in a suspended task's switch frame.
///
/// # Safety
///
/// `sp` must be the saved stack pointer of a suspended task whose stack is mapped.
pub unsafe fn saved_fp(sp: u64) -> u64 {
    // SAFETY: the switch frame holds rbp at sp + 48 (see the diagram).
    unsafe { *((sp + 48) as *const u64) }
}

/// An address inside the caller's code: used to attribute a spawn to its caller.
#[inline(always)]
pub fn current_pc() -> u64 {
    let pc: u64;
    // SAFETY: reads rip into a register; no memory or flags are touched.
    unsafe {
        core::arch::asm!("lea {}, [rip]", out(reg) pc, options(nomem, nostack, preserves_flags))
    };
    pc
}
