//! Fuzz: ownership statements from hostile JSON never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(statement) = ledger::export::from_json(text) {
            let _ = ledger::export::verify_statement(&statement);
        }
    }
});
