//! Fuzz target: a replay record fetched from a trainer never panics the decoder or the binding check, and what
//! decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node::spot_check::{RecordExpectation, ReplayRecord};
use types::{Hash32, PeerId, RoundNumber, RunId};

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = ReplayRecord::decode(data) {
        assert_eq!(record.encode(), data);
        let expect = RecordExpectation {
            run: RunId(Hash32([1; 32])),
            round: RoundNumber(1),
            trainer: PeerId([2; 32]),
            base_model_hash: Hash32([3; 32]),
            data_ids: vec![0, 1],
            update_cid: Hash32([4; 32]),
            inner_steps: record.commitment.commitment.inner_steps,
        };
        let _ = record.check(&expect);
    }
});
