//! Fuzz target: the bf16 codec's body decoder on hostile bytes (framed by a valid header).
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use sync::codec::DenseBf16;

fuzz_target!(|data: &[u8]| {
    common::check(&DenseBf16, data);
});
