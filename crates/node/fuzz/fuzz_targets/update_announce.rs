//! Fuzz target: an update announcement or a fraud notice from the run topic never panics its decoder or the gossip
//! judge, and what decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node::roles::{judge_gossip, FraudNotice, UpdateAnnounce};

fuzz_target!(|data: &[u8]| {
    let _ = judge_gossip(data);
    if let Ok(announce) = UpdateAnnounce::decode(data) {
        assert_eq!(announce.encode(), data);
    }
    if let Ok(notice) = FraudNotice::decode(data) {
        assert_eq!(notice.encode(), data);
    }
});
