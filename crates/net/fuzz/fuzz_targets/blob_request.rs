//! Fuzz target: the blob request decoder never panics, and what it accepts re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use net::wire::BlobRequest;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = BlobRequest::decode(data) {
        assert_eq!(request.encode(), data);
    }
});
