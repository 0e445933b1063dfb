//! The redb store, replay and `verify_chain` under the local sequencer: a replay reproduces
//! the state exactly, and changing any one stored byte is caught.

mod common;

use common::*;
use ledger::{verify_chain, NoFraudProofs, Replica, Sequencer, Store, TxBody};
use types::{Hash32, RoundNumber};

/// A single-validator ledger (validator seed 200) with `blocks` blocks of mixed transactions.
fn build(dir: &std::path::Path, blocks: u64) -> (ledger::Genesis, Hash32) {
    let g = genesis(1, 2, 1);
    let mut replica = Replica::open(dir, &g, Box::new(NoFraudProofs)).unwrap();
    {
        let mut seq = Sequencer::new(&mut replica, key(200)).unwrap();
        for round in 0..blocks {
            let verdicts = vec![
                verdict(100, round, 1, true, 750_000, 400),
                verdict(100, round, 2, true, 1_000_000, 100),
            ];
            let mut txs = vec![tx(100, &g, round, TxBody::RecordVerdicts { verdicts })];
            txs.push(tx(
                1,
                &g,
                round,
                TxBody::Transfer {
                    to: peer(3),
                    amount: 10,
                },
            ));
            txs.push(tx(
                101,
                &g,
                round,
                TxBody::RegisterCheckpoint {
                    run: RUN,
                    round: RoundNumber(round),
                    cid: Hash32([round as u8; 32]),
                },
            ));
            // An invalid one: it is ordered and stored with its rejection.
            txs.push(tx(
                4,
                &g,
                99,
                TxBody::Transfer {
                    to: peer(3),
                    amount: 10,
                },
            ));
            seq.sequence(txs).unwrap();
        }
    }
    (g, replica.state().root())
}

#[test]
fn replay_reproduces_the_state_and_verify_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (g, root) = build(dir.path(), 20);
    let reopened = Replica::open(dir.path(), &g, Box::new(NoFraudProofs)).unwrap();
    assert_eq!(reopened.state().root(), root);
    assert_eq!(reopened.height(), 20);
    assert_eq!(reopened.state().balance(&peer(1)), 20 * 300 - 20 * 10);
    assert!(reopened.state().conservation_holds());
    drop(reopened);
    let store = Store::open(dir.path()).unwrap();
    let report = verify_chain(&store, &NoFraudProofs).unwrap();
    assert_eq!(report.blocks, 20);
    assert_eq!(report.transactions, 80);
    assert_eq!(report.certificates, 20);
    assert_eq!(report.state_root, root);
}

/// Flips one byte inside the stored record bytes (through redb, so the database stays
/// well-formed) at many positions; `verify_chain` must fail every time.
#[test]
fn tampering_any_stored_byte_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let (g, _) = build(dir.path(), 3);
    let path = dir.path().join(ledger::store::DB_FILE);
    let pristine = std::fs::read(&path).unwrap();
    let record_len = {
        let store = Store::open(dir.path()).unwrap();
        store.record_bytes(2).unwrap().unwrap().len()
    };
    let mut checked = 0;
    for position in (0..record_len)
        .step_by(record_len / 40 + 1)
        .chain([record_len - 1])
    {
        std::fs::write(&path, &pristine).unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let mut bytes = store.record_bytes(2).unwrap().unwrap();
            bytes[position] ^= 0x01;
            ledger::store::testing_overwrite(&store, 2, &bytes).unwrap();
            let result = verify_chain(&store, &NoFraudProofs);
            assert!(
                result.is_err(),
                "flipping byte {position} of record 2 went unnoticed"
            );
        }
        checked += 1;
    }
    assert!(checked > 10);
    let _ = g;
}

/// Flips bytes of the raw database file. redb's own checksums or our replay must catch each
/// flip that lands in live data; a flip in free space changes nothing and must still verify.
#[test]
fn raw_file_byte_flip_never_verifies_wrong_data() {
    let dir = tempfile::tempdir().unwrap();
    let (_, root) = build(dir.path(), 3);
    let path = dir.path().join(ledger::store::DB_FILE);
    let pristine = std::fs::read(&path).unwrap();
    let mut caught = 0;
    for position in (0..pristine.len()).step_by(pristine.len() / 48 + 1) {
        let mut bytes = pristine.clone();
        bytes[position] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let outcome = std::panic::catch_unwind(|| {
            Store::open(dir.path())
                .map_err(|e| e.to_string())
                .and_then(|s| verify_chain(&s, &NoFraudProofs).map_err(|e| e.to_string()))
        });
        match outcome {
            Ok(Ok(report)) => assert_eq!(
                report.state_root, root,
                "flip at {position} verified a different state"
            ),
            _ => caught += 1,
        }
    }
    std::fs::write(&path, &pristine).unwrap();
    eprintln!("raw flips caught: {caught}");
}
