//! Fuzz target: the topk codec's body decoder on hostile bytes (framed by a valid header).
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use sync::codec::TopK;

fuzz_target!(|data: &[u8]| {
    common::check(&TopK::default(), data);
});
