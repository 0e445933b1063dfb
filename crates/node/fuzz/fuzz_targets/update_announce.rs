//! Fuzz target: an update announcement from the run topic never panics the decoder or the gossip judge, and
//! what decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node::roles::{judge_gossip, UpdateAnnounce};

fuzz_target!(|data: &[u8]| {
    let _ = judge_gossip(data);
    if let Ok(announce) = UpdateAnnounce::decode(data) {
        assert_eq!(announce.encode(), data);
    }
});
