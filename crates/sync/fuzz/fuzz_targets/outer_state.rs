//! Fuzz target: restoring saved outer-optimizer and error-feedback state from hostile bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sync::outer::{decode_feedback, NesterovOuter, OuterOptimizer, SparseLocoOuter};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let values = usize::from(u16::from_le_bytes([data[0], data[1]]));
    let state = &data[2..];
    if let Ok(outer) = NesterovOuter::from_bytes(state, values) {
        // Whatever restores must save back to the same bytes.
        assert_eq!(outer.to_bytes(), state);
    }
    if let Ok(outer) = SparseLocoOuter::from_bytes(state) {
        assert_eq!(outer.to_bytes(), state);
    }
    if let Ok(feedback) = decode_feedback(state, values) {
        assert_eq!(sync::outer::encode_feedback(&feedback), state);
    }
});
