//! Fuzz: transaction and block decoding from hostile bytes never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tx) = ledger::SignedTx::from_bytes(data) {
        let _ = tx.signature_is_valid();
        assert_eq!(ledger::SignedTx::from_bytes(&tx.to_bytes()).as_ref(), Ok(&tx));
    }
    let _ = ledger::Block::from_bytes(data);
});
