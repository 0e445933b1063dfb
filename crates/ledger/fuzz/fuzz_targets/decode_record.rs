//! Fuzz: stored records and genesis configs from hostile bytes never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ledger::Record::from_bytes(data);
    let _ = ledger::Genesis::from_bytes(data);
});
