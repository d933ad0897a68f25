//! Per-architecture context switch. Each file exports the same functions:
//! `switch`, `init_stack`, `resume_pc`, `task_entry_pc`, `saved_fp`, `current_pc` and
//! the constant `SWITCH_FRAME`.

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::*;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
pub use self::aarch64::*;

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("target-runtime supports x86_64 and aarch64 only");
