//! Fuzz target: decoding a signed verdict from arbitrary bytes never panics, and what decodes re-encodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verify::SignedVerdict;

fuzz_target!(|data: &[u8]| {
    if let Ok(verdict) = SignedVerdict::decode(data) {
        let _ = verdict.signature_valid();
        assert_eq!(verdict.encode(), data);
    }
});
