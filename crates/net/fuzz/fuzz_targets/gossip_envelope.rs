//! Fuzz target: the gossip envelope decoder never panics, and what it accepts re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use net::wire::{decode_gossip, encode_gossip};

fuzz_target!(|data: &[u8]| {
    if let Ok(payload) = decode_gossip(data) {
        assert_eq!(encode_gossip(payload), data);
    }
});
