//! Fuzz: provider record decoding never panics and round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use store::ProviderRecord;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = ProviderRecord::decode(data) {
        assert_eq!(&record.encode()[..], data);
    }
});
