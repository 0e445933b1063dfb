//! Fuzz target: a snapshot record served by a peer never panics the decoder, and what decodes re-encodes to the
//! same bytes (members sorted, no trailing bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use node::persist::SnapshotRecord;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = SnapshotRecord::decode(data) {
        assert_eq!(record.encode(), data);
    }
});
