//! Fuzz target: the fp32 codec's body decoder on hostile bytes (framed by a valid header).
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use sync::codec::DenseFp32;

fuzz_target!(|data: &[u8]| {
    common::check(&DenseFp32, data);
});
