//! Random registers and stack bytes unwound against this binary's own CFI; see
//! `gprof_rs::fuzzing::UnwindTarget`.
#![no_main]

use gprof_rs::fuzzing::UnwindTarget;
use libfuzzer_sys::fuzz_target;
use std::sync::{Mutex, OnceLock};

static TARGET: OnceLock<Mutex<UnwindTarget>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let t = TARGET.get_or_init(|| Mutex::new(UnwindTarget::new()));
    t.lock().unwrap_or_else(|e| e.into_inner()).run(data);
});
