//! Fuzz target: the fp16 codec's body decoder on hostile bytes (framed by a valid header).
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use sync::codec::DenseFp16;

fuzz_target!(|data: &[u8]| {
    common::check(&DenseFp16, data);
});
