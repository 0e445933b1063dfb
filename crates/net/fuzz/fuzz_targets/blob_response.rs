//! Fuzz target: the blob response decoder never panics, and what it accepts re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use net::wire::BlobResponse;

fuzz_target!(|data: &[u8]| {
    if let Ok(response) = BlobResponse::decode(data) {
        assert_eq!(response.encode(), data);
    }
});
