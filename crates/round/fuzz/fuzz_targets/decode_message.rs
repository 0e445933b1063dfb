//! Fuzz target: decoding hostile bytes as a round message or a genesis config never panics, and what decodes
//! re-encodes to bytes that decode to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use round::{GenesisConfig, Message};

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::decode(data) {
        assert_eq!(Message::decode(&message.encode()).as_ref(), Ok(&message));
    }
    let _ = GenesisConfig::decode(data);
});
