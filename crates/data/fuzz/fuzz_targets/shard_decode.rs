//! Fuzz target: the token shard decoder must never panic, and whatever it accepts re-encodes to
//! the same bytes (the format is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = data::shard::ShardHeader::parse(bytes);
    if let Ok(shard) = data::decode_shard(bytes) {
        assert_eq!(data::encode_shard(&shard.tokens, shard.vocab_size), bytes);
    }
});
