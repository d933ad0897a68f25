//! Hostile shared-region bytes (descriptor, control block, task slot, arena) through
//! the tool's validators and decoders; see `gprof_rs::fuzzing::abi_parse`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gprof_rs::fuzzing::abi_parse(data);
});
