//! aarch64 (AAPCS64) context switch and task entry. Same operations and the same
//! single-CFA-rule discipline as the x86_64 file; see that file for the reasoning.
//!
//! # The switch frame
//!
//! ```text
//!   CFA  ->  +-------------+
//!            | x30 (lr)    |  CFA - 8
//!            | x29 (fp)    |  CFA - 16
//!            | x27 | x28   |  CFA - 32
//!            | x25 | x26   |  CFA - 48
//!            | x23 | x24   |  CFA - 64
//!            | x21 | x22   |  CFA - 80
//!            | x19 | x20   |  CFA - 96
//!            | d14 | d15   |  CFA - 112
//!            | d12 | d13   |  CFA - 128
//!            | d10 | d11   |  CFA - 144
//!            | d8  | d9    |  CFA - 160
//!   sp   ->  +-------------+  (saved sp)
//! ```
//!
//! Return addresses may carry pointer-authentication bits on some systems; an external
//! unwinder must strip them before looking an address up.

use core::arch::global_asm;

/// Bytes of the switch frame.
pub const SWITCH_FRAME: usize = 160;

global_asm!(
    ".text",
    ".globl gprof_rt_switch",
    ".hidden gprof_rt_switch",
    ".type gprof_rt_switch,%function",
    ".p2align 4",
    "gprof_rt_switch:",
    ".cfi_startproc",
    // Allocate the frame; CFA = sp + 160 from here on.
    "sub sp, sp, #160",
    ".cfi_def_cfa_offset 160",
    "stp d8, d9, [sp, #0]",
    "stp d10, d11, [sp, #16]",
    "stp d12, d13, [sp, #32]",
    "stp d14, d15, [sp, #48]",
    "stp x19, x20, [sp, #64]",
    ".cfi_offset x19, -96",
    ".cfi_offset x20, -88",
    "stp x21, x22, [sp, #80]",
    ".cfi_offset x21, -80",
    ".cfi_offset x22, -72",
    "stp x23, x24, [sp, #96]",
    ".cfi_offset x23, -64",
    ".cfi_offset x24, -56",
    "stp x25, x26, [sp, #112]",
    ".cfi_offset x25, -48",
    ".cfi_offset x26, -40",
    "stp x27, x28, [sp, #128]",
    ".cfi_offset x27, -32",
    ".cfi_offset x28, -24",
    "stp x29, x30, [sp, #144]",
    ".cfi_offset x29, -16",
    ".cfi_offset x30, -8",
    // Publish the saved sp, then swap stacks; the new stack has the same frame shape.
    "mov x9, sp",
    "str x9, [x0]",
    "mov sp, x1",
    ".globl gprof_rt_switch_resume",
    ".hidden gprof_rt_switch_resume",
    "gprof_rt_switch_resume:",
    "ldp d8, d9, [sp, #0]",
    "ldp d10, d11, [sp, #16]",
    "ldp d12, d13, [sp, #32]",
    "ldp d14, d15, [sp, #48]",
    "ldp x19, x20, [sp, #64]",
    "ldp x21, x22, [sp, #80]",
    "ldp x23, x24, [sp, #96]",
    "ldp x25, x26, [sp, #112]",
    "ldp x27, x28, [sp, #128]",
    "ldp x29, x30, [sp, #144]",
    "add sp, sp, #160",
    ".cfi_def_cfa_offset 0",
    "br x30",
    ".cfi_endproc",
    ".size gprof_rt_switch, . - gprof_rt_switch",
    "",
    ".globl gprof_rt_task_entry",
    ".hidden gprof_rt_task_entry",
    ".type gprof_rt_task_entry,%function",
    ".p2align 4",
    "gprof_rt_task_entry:",
    ".cfi_startproc",
    // Outermost frame: no caller.
    ".cfi_undefined x30",
    // A fresh task "returns" just past this nop (see init_stack).
    "nop",
    "mov x29, #0",
    "mov x0, x19",
    "blr x20",
    "brk #1",
    ".cfi_endproc",
    ".size gprof_rt_task_entry, . - gprof_rt_task_entry",
);

extern "C" {
    fn gprof_rt_switch(save: *mut u64, load: u64);
    static gprof_rt_switch_resume: u8;
    static gprof_rt_task_entry: u8;
}

/// Address at which every suspended task resumes.
pub fn resume_pc() -> u64 {
    core::ptr::addr_of!(gprof_rt_switch_resume) as u64
}

/// Address of the task entry trampoline.
pub fn task_entry_pc() -> u64 {
    core::ptr::addr_of!(gprof_rt_task_entry) as u64
}

/// Save the running context into `*save` and resume the one saved at `load`.
///
/// # Safety
///
/// As for the x86_64 version: `load` is a live saved context, `save` is writable.
#[inline(always)]
pub unsafe fn switch(save: *mut u64, load: u64) {
    // SAFETY: forwarded contract.
    unsafe { gprof_rt_switch(save, load) }
}

/// Lay out a fresh task frame below `hi`; returns the saved sp.
///
/// # Safety
///
/// `[hi - 176, hi)` must be writable memory owned by the caller; `hi` is 16-aligned.
pub unsafe fn init_stack(hi: u64, entry: extern "C" fn(usize) -> !, arg: usize) -> u64 {
    let sp = hi - 16 - SWITCH_FRAME as u64;
    let mut words = [0u64; 20];
    words[8] = arg as u64; // x19
    words[9] = entry as usize as u64; // x20
    words[18] = 0; // x29
    words[19] = task_entry_pc() + 4; // x30: just past the nop
                                     // SAFETY: the caller guarantees the bytes below `hi` are ours to write.
    unsafe { core::ptr::copy_nonoverlapping(words.as_ptr(), sp as *mut u64, words.len()) };
    sp
}

/// Frame pointer saved in a suspended task's switch frame.
///
/// # Safety
///
/// `sp` must be the saved stack pointer of a suspended task whose stack is mapped.
pub unsafe fn saved_fp(sp: u64) -> u64 {
    // SAFETY: x29 is stored at sp + 144.
    unsafe { *((sp + 144) as *const u64) }
}

/// An address inside the caller's code.
#[inline(always)]
pub fn current_pc() -> u64 {
    let pc: u64;
    // SAFETY: reads the pc into a register; touches no memory.
    unsafe { core::arch::asm!("adr {}, .", out(reg) pc, options(nomem, nostack, preserves_flags)) };
    pc
}
