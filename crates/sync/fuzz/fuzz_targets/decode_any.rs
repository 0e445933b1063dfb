//! Fuzz target: the generic update decoder on raw hostile bytes, header included.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let values = usize::from(u16::from_le_bytes([data[0], data[1]]));
    if let Ok(decoded) = sync::codec::decode(&data[2..], values) {
        assert_eq!(decoded.len(), values);
    }
});
