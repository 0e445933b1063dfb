//! Fuzz target: decoding a signed commitment from arbitrary bytes never panics, and what decodes re-encodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verify::SignedCommitment;

fuzz_target!(|data: &[u8]| {
    if let Ok(commitment) = SignedCommitment::decode(data) {
        let _ = commitment.signature_valid();
        assert_eq!(commitment.encode(), data);
    }
});
