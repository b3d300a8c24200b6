//! Fuzz target `time_wait`: The TIME_WAIT table against a plain model.
//! The body and its invariants: `fourtuple_stack::fuzzing::time_wait`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fourtuple_stack::fuzzing::time_wait::run(data));
