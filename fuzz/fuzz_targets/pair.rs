//! Fuzz target `pair`: Two stacks through a link whose loss, reordering and duplication come from the input.
//! The body and its invariants: `fourtuple_stack::fuzzing::pair`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fourtuple_stack::fuzzing::pair::run(data));
