//! Fuzz target `packet`: One arbitrary packet into a host with listeners, live connections and TIME_WAIT entries.
//! The body and its invariants: `fourtuple_stack::fuzzing::packet`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fourtuple_stack::fuzzing::packet::run(data));
