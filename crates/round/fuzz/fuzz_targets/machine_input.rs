//! Fuzz target: a founder's round machine fed hostile messages never panics and keeps its bounds.
#![no_main]

use std::sync::Arc;

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use round::{Boot, GenesisConfig, Input, RoundMachine};
use types::Hash32;

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::from_bytes(&[7; 32]);
    let config = GenesisConfig {
        run_name: "fuzz".into(),
        model_preset: "standin".into(),
        genesis_model_hash: Hash32::ZERO,
        dataset_cid: Hash32::ZERO,
        dataset_shards: 8,
        shards_per_trainer: 1,
        codec_id: 0,
        inner_steps: 1,
        committee_size: 4,
        quorum_permille: 500,
        phase_min_ms: 10,
        phase_max_ms: 100,
        deadline_mad_k_millis: 1000,
        founders: vec![round::wire::peer_id_of(&key)],
        spec_digest: Hash32::ZERO,
    };
    let (mut machine, _) = RoundMachine::new(Arc::new(config), key, 0, Boot::Genesis).expect("valid config");
    for (i, chunk) in data.split(|&b| b == 0xff).enumerate() {
        let _ = machine.handle(i as u64 * 10, Input::Message(chunk.to_vec()));
        assert!(machine.bound_violations().is_empty());
    }
});
