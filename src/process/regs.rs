//! Registers of a ptrace-stopped thread.

use nix::unistd::Pid;

/// Number of DWARF registers kept in [`Regs::dwarf`] (x86_64: rax..r15 = 0..15, rip = 16).
#[cfg(target_arch = "x86_64")]
pub const DWARF_REGS: usize = 17;
/// Number of DWARF registers kept in [`Regs::dwarf`] (aarch64: x0..x30 = 0..30, sp = 31, pc = 32).
#[cfg(target_arch = "aarch64")]
pub const DWARF_REGS: usize = 33;

/// The registers an unwinder needs, read with `PTRACE_GETREGS` (x86_64) or
/// `PTRACE_GETREGSET NT_PRSTATUS` (aarch64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Regs {
    /// Instruction pointer.
    pub ip: u64,
    /// Stack pointer.
    pub sp: u64,
    /// Frame pointer (rbp / x29).
    pub bp: u64,
    /// Every general register, indexed by DWARF register number.
    pub dwarf: [u64; DWARF_REGS],
}

impl Regs {
    /// The value of DWARF register `n`, if this architecture has it.
    pub fn get(&self, n: u16) -> Option<u64> {
        self.dwarf.get(n as usize).copied()
    }
}

/// Read the registers of a ptrace-stopped thread.
#[cfg(target_arch = "x86_64")]
pub fn read(tid: Pid) -> nix::Result<Regs> {
    let r = nix::sys::ptrace::getregs(tid)?;
    // DWARF numbering for x86_64 (System V psABI, figure 3.36).
    let dwarf = [
        r.rax, r.rdx, r.rcx, r.rbx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11, r.r12,
        r.r13, r.r14, r.r15, r.rip,
    ];
    Ok(Regs {
        ip: r.rip,
        sp: r.rsp,
        bp: r.rbp,
        dwarf,
    })
}

/// Read the registers of a ptrace-stopped thread.
#[cfg(target_arch = "aarch64")]
pub fn read(tid: Pid) -> nix::Result<Regs> {
    let r = nix::sys::ptrace::getregs(tid)?;
    let mut dwarf = [0u64; DWARF_REGS];
    dwarf[..31].copy_from_slice(&r.regs);
    dwarf[31] = r.sp;
    dwarf[32] = r.pc;
    Ok(Regs {
        ip: r.pc,
        sp: r.sp,
        bp: r.regs[29],
        dwarf,
    })
}
