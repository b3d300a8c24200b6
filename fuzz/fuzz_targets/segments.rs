//! Fuzz target `segments`: An arbitrary sequence of packets, clock steps and application calls.
//! The body and its invariants: `fourtuple_stack::fuzzing::segments`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fourtuple_stack::fuzzing::segments::run(data));
