//! Fuzz target: decoding and checking a fraud proof from arbitrary bytes never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verify::standin::QuadraticStep;
use verify::FraudProof;

fuzz_target!(|data: &[u8]| {
    if let Ok(proof) = FraudProof::decode(data) {
        let _ = proof.check(&mut QuadraticStep::new());
        assert_eq!(FraudProof::decode(&proof.encode()).as_ref(), Ok(&proof));
    }
});
