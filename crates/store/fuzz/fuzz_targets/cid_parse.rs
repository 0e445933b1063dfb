//! Fuzz: CID parsing (string and binary) never panics, and what parses prints back to a CID that parses the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use store::Cid;

fuzz_target!(|data: &[u8]| {
    if let Ok(cid) = Cid::from_bytes(data) {
        assert_eq!(Cid::from_bytes(&cid.to_bytes()), Ok(cid));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cid) = text.parse::<Cid>() {
            assert_eq!(cid.to_string().parse::<Cid>(), Ok(cid));
        }
    }
});
