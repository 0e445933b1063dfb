//! Fuzz: verifying a peer's range response never panics and never accepts bytes that are not the blob's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use store::bao;
use types::Hash32;

fuzz_target!(|data: &[u8]| {
    // A fixed blob the fuzzer cannot forge proofs for; the input is the (hostile) response.
    let blob: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    let hash = Hash32::of(&blob);
    let selector = data.first().copied().unwrap_or(0) as u64;
    let start = (selector * 997) % 40_000;
    let ranges = bao::byte_range_to_chunks(start, (start + 5000).min(40_000));
    let response = data.get(1..).unwrap_or(&[]);
    if let Ok(leaves) = bao::verify_range_response(hash, 40_000, &ranges, response) {
        for (offset, bytes) in leaves {
            assert_eq!(&blob[offset as usize..offset as usize + bytes.len()], &bytes[..]);
        }
    }
    let _ = bao::decode_range_response(hash, None, &bao::all_chunks(), response, |_, _| Ok(()));
});
