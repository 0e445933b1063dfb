//! The ledger state machine: minting, slashing, transfers, checkpoints, typed rejections, and
//! the conservation property (balances = minted − slashed) under random transaction sequences.

mod common;

use common::*;
use ledger::{Effect, LedgerState, NoFraudProofs, Rejection, TxBody};
use proptest::prelude::*;
use types::{Hash32, RoundNumber};

#[test]
fn quorum_of_accepts_mints_tokens_times_min_score() {
    let g = genesis(1, 3, 2);
    let mut s = LedgerState::new(&g);
    let first = tx(
        100,
        &g,
        0,
        TxBody::RecordVerdicts {
            verdicts: vec![verdict(100, 1, 1, true, 800_000, 1000)],
        },
    );
    assert_eq!(
        s.apply(&first, &NoFraudProofs),
        Ok(Effect::Recorded { mints: vec![] })
    );
    assert_eq!(s.balance(&peer(1)), 0);
    // Second verifier claims fewer tokens and a higher score: the minimum of each counts.
    let second = tx(
        101,
        &g,
        0,
        TxBody::RecordVerdicts {
            verdicts: vec![verdict(101, 1, 1, true, 900_000, 900)],
        },
    );
    assert_eq!(
        s.apply(&second, &NoFraudProofs),
        Ok(Effect::Recorded {
            mints: vec![(peer(1), 720)]
        })
    );
    assert_eq!(s.balance(&peer(1)), 900 * 800_000 / 1_000_000);
    // A third accept after the quorum mints nothing more.
    let third = tx(
        102,
        &g,
        0,
        TxBody::RecordVerdicts {
            verdicts: vec![verdict(102, 1, 1, true, 1_000_000, 5000)],
        },
    );
    assert_eq!(
        s.apply(&third, &NoFraudProofs),
        Ok(Effect::Recorded { mints: vec![] })
    );
    assert_eq!(s.total_minted, 720);
    assert!(s.conservation_holds());
}

#[test]
fn rejection_before_quorum_blocks_the_mint() {
    let g = genesis(1, 2, 2);
    let mut s = LedgerState::new(&g);
    let body = TxBody::RecordVerdicts {
        verdicts: vec![
            verdict(100, 1, 1, false, 0, 1000),
            verdict(101, 1, 1, true, 1_000_000, 1000),
        ],
    };
    assert_eq!(
        s.apply(&tx(5, &g, 0, body), &NoFraudProofs),
        Ok(Effect::Recorded { mints: vec![] })
    );
    assert_eq!(s.total_minted, 0);
}

#[test]
fn invalid_transactions_are_rejected_with_a_reason_and_change_nothing() {
    let g = genesis(1, 1, 1);
    let mut s = LedgerState::new(&g);
    let root = s.root();
    // Verdict from a non-verifier (a forged mint).
    let forged = tx(
        1,
        &g,
        0,
        TxBody::RecordVerdicts {
            verdicts: vec![verdict(1, 1, 1, true, 1_000_000, 1 << 20)],
        },
    );
    assert_eq!(
        s.apply(&forged, &NoFraudProofs),
        Err(Rejection::UnknownVerifier { index: 0 })
    );
    // Tampered verdict.
    let mut v = verdict(100, 1, 1, true, 1_000_000, 10);
    v.tokens_trained = 1 << 30;
    assert_eq!(
        s.apply(
            &tx(1, &g, 0, TxBody::RecordVerdicts { verdicts: vec![v] }),
            &NoFraudProofs
        ),
        Err(Rejection::BadVerdictSignature { index: 0 })
    );
    // Tampered transaction signature.
    let mut t = tx(
        1,
        &g,
        0,
        TxBody::Transfer {
            to: peer(2),
            amount: 1,
        },
    );
    t.nonce = 0;
    t.signature[0] ^= 1;
    assert_eq!(s.apply(&t, &NoFraudProofs), Err(Rejection::BadSignature));
    // Wrong nonce, empty balance, zero amount, self transfer, another chain.
    assert_eq!(
        s.apply(
            &tx(
                1,
                &g,
                3,
                TxBody::Transfer {
                    to: peer(2),
                    amount: 1
                }
            ),
            &NoFraudProofs
        ),
        Err(Rejection::BadNonce {
            expected: 0,
            got: 3
        })
    );
    assert_eq!(
        s.apply(
            &tx(
                1,
                &g,
                0,
                TxBody::Transfer {
                    to: peer(2),
                    amount: 1
                }
            ),
            &NoFraudProofs
        ),
        Err(Rejection::InsufficientBalance {
            balance: 0,
            amount: 1
        })
    );
    assert_eq!(
        s.apply(
            &tx(
                1,
                &g,
                0,
                TxBody::Transfer {
                    to: peer(2),
                    amount: 0
                }
            ),
            &NoFraudProofs
        ),
        Err(Rejection::ZeroAmount)
    );
    assert_eq!(
        s.apply(
            &tx(
                1,
                &g,
                0,
                TxBody::Transfer {
                    to: peer(1),
                    amount: 1
                }
            ),
            &NoFraudProofs
        ),
        Err(Rejection::SelfTransfer)
    );
    let other = genesis(2, 1, 1);
    assert_eq!(
        s.apply(
            &tx(
                1,
                &other,
                0,
                TxBody::Transfer {
                    to: peer(2),
                    amount: 1
                }
            ),
            &NoFraudProofs
        ),
        Err(Rejection::WrongChain)
    );
    // Only verifiers register checkpoints.
    let reg = TxBody::RegisterCheckpoint {
        run: RUN,
        round: RoundNumber(1),
        cid: Hash32([1; 32]),
    };
    assert_eq!(
        s.apply(&tx(1, &g, 0, reg), &NoFraudProofs),
        Err(Rejection::NotAVerifier)
    );
    assert_eq!(s.root(), root, "rejections leave no trace");
}

#[test]
fn slash_needs_an_accepted_proof_and_happens_once() {
    let g = genesis(1, 1, 1);
    let mut s = LedgerState::new(&g);
    let mint = tx(
        100,
        &g,
        0,
        TxBody::RecordVerdicts {
            verdicts: vec![verdict(100, 4, 1, true, 500_000, 2000)],
        },
    );
    s.apply(&mint, &TestChecker).unwrap();
    assert_eq!(s.balance(&peer(1)), 1000);
    let refused = tx(
        9,
        &g,
        0,
        TxBody::Slash {
            proof: proof(4, 1, b"innocent"),
        },
    );
    assert_eq!(
        s.apply(&refused, &TestChecker),
        Err(Rejection::ProofRefused("not guilty".into()))
    );
    let slash = tx(
        9,
        &g,
        0,
        TxBody::Slash {
            proof: proof(4, 1, b"guilty"),
        },
    );
    assert_eq!(
        s.apply(&slash, &TestChecker),
        Ok(Effect::Slashed {
            peer: peer(1),
            amount: 1000
        })
    );
    let again = tx(
        9,
        &g,
        1,
        TxBody::Slash {
            proof: proof(4, 1, b"guilty"),
        },
    );
    assert_eq!(
        s.apply(&again, &TestChecker),
        Err(Rejection::AlreadySlashed)
    );
    // No checker plugged in: every proof is refused.
    let mut fresh = LedgerState::new(&g);
    assert!(matches!(
        fresh.apply(&slash, &NoFraudProofs),
        Err(Rejection::ProofRefused(_))
    ));
    assert_eq!(s.balance(&peer(1)), 0);
    assert!(s.conservation_holds());
}

#[test]
fn checkpoint_freezes_the_ownership_table() {
    let g = genesis(1, 1, 1);
    let mut s = LedgerState::new(&g);
    let verdicts = vec![
        verdict(100, 1, 1, true, 1_000_000, 300),
        verdict(100, 1, 2, true, 1_000_000, 100),
    ];
    s.apply(
        &tx(100, &g, 0, TxBody::RecordVerdicts { verdicts }),
        &NoFraudProofs,
    )
    .unwrap();
    s.apply(
        &tx(
            1,
            &g,
            0,
            TxBody::Transfer {
                to: peer(3),
                amount: 50,
            },
        ),
        &NoFraudProofs,
    )
    .unwrap();
    let cid = Hash32([9; 32]);
    let reg = tx(
        100,
        &g,
        1,
        TxBody::RegisterCheckpoint {
            run: RUN,
            round: RoundNumber(1),
            cid,
        },
    );
    assert_eq!(
        s.apply(&reg, &NoFraudProofs),
        Ok(Effect::CheckpointRegistered { cid })
    );
    let cp = &s.checkpoints[&cid];
    assert_eq!(cp.total, 400);
    let mut owners = cp.owners.clone();
    owners.sort();
    let mut expected = vec![(peer(1), 250), (peer(2), 100), (peer(3), 50)];
    expected.sort();
    assert_eq!(owners, expected);
    let dup = tx(
        100,
        &g,
        2,
        TxBody::RegisterCheckpoint {
            run: RUN,
            round: RoundNumber(2),
            cid,
        },
    );
    assert_eq!(
        s.apply(&dup, &NoFraudProofs),
        Err(Rejection::DuplicateCheckpoint(cid))
    );
}

#[derive(Debug, Clone)]
enum Op {
    Verdict {
        verifier: u8,
        round: u8,
        trainer: u8,
        accepted: bool,
        score: u32,
        tokens: u16,
    },
    Transfer {
        from: u8,
        to: u8,
        amount: u16,
    },
    Slash {
        round: u8,
        trainer: u8,
        guilty: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            0u8..3,
            0u8..4,
            1u8..5,
            any::<bool>(),
            0u32..=1_000_000,
            any::<u16>()
        )
            .prop_map(
                |(verifier, round, trainer, accepted, score, tokens)| Op::Verdict {
                    verifier,
                    round,
                    trainer,
                    accepted,
                    score,
                    tokens
                }
            ),
        (1u8..5, 1u8..6, any::<u16>()).prop_map(|(from, to, amount)| Op::Transfer {
            from,
            to,
            amount
        }),
        (0u8..4, 1u8..5, any::<bool>()).prop_map(|(round, trainer, guilty)| Op::Slash {
            round,
            trainer,
            guilty
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Whatever happens, the balances sum to minted − slashed, every account matches its own
    /// counters, and replaying the same transactions gives the same state root.
    #[test]
    fn balances_equal_minted_minus_slashed(ops in proptest::collection::vec(op(), 1..60)) {
        let g = genesis(1, 3, 2);
        let mut s = LedgerState::new(&g);
        let mut applied = Vec::new();
        for op in ops {
            let t = match op {
                Op::Verdict { verifier, round, trainer, accepted, score, tokens } => {
                    let v = verdict(100 + verifier, round as u64, trainer, accepted, score, tokens as u64);
                    tx(100 + verifier, &g, s.nonce(&peer(100 + verifier)), TxBody::RecordVerdicts { verdicts: vec![v] })
                }
                Op::Transfer { from, to, amount } => {
                    tx(from, &g, s.nonce(&peer(from)), TxBody::Transfer { to: peer(to), amount: amount as u64 })
                }
                Op::Slash { round, trainer, guilty } => {
                    let body: &[u8] = if guilty { b"guilty" } else { b"no" };
                    tx(50, &g, s.nonce(&peer(50)), TxBody::Slash { proof: proof(round as u64, trainer, body) })
                }
            };
            let _ = s.apply(&t, &TestChecker);
            applied.push(t);
            prop_assert!(s.conservation_holds());
            let sum: u64 = s.accounts.values().map(|a| a.balance).sum();
            prop_assert_eq!(sum, s.total_minted - s.total_slashed);
        }
        let mut replay = LedgerState::new(&g);
        for t in &applied {
            let _ = replay.apply(t, &TestChecker);
        }
        prop_assert_eq!(replay.root(), s.root());
    }
}
