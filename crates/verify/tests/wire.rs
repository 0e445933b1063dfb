//! Wire decoding of commitments and verdicts: round trips and every typed error.

use types::limits::verify as limits;
use types::{Hash32, RoundNumber, RunId};
use verify::{
    Commitment, NodeKey, Outcome, Reason, SignedCommitment, SignedVerdict, Verdict, WireError,
};

fn commitment() -> SignedCommitment {
    let key = NodeKey::from_secret([3; 32]);
    Commitment {
        run: RunId(Hash32::of(b"run")),
        round: RoundNumber(7),
        peer: key.peer_id(),
        base_model_hash: Hash32::of(b"base"),
        data_ids: vec![1, 2, 3],
        update_cid: Hash32::of(b"blob"),
        update_bytes: 4,
        codec: 0,
        claimed_loss: 2.5,
        repro: verify::standin::standin_class(),
        inner_steps: 10,
        step_root: Hash32::of(b"root"),
    }
    .sign(&key)
}

fn verdict(outcome: Outcome) -> SignedVerdict {
    let key = NodeKey::from_secret([4; 32]);
    Verdict {
        run: RunId(Hash32::of(b"run")),
        round: RoundNumber(7),
        peer: NodeKey::from_secret([3; 32]).peer_id(),
        update_cid: Hash32::of(b"blob"),
        verifier: key.peer_id(),
        outcome,
    }
    .sign(&key)
}

#[test]
fn round_trips_and_signatures() {
    let c = commitment();
    let bytes = c.encode();
    assert_eq!(bytes[0], 1, "version byte");
    let back = SignedCommitment::decode(&bytes).unwrap();
    assert_eq!(back, c);
    assert!(back.signature_valid());
    let v = verdict(Outcome::Rejected(Reason::NormOutlier {
        norm: 100.0,
        median_norm: 1.0,
        robust_z: 60.0,
    }));
    let back = SignedVerdict::decode(&v.encode()).unwrap();
    assert_eq!(back, v);
    assert!(back.signature_valid());
    let mut forged = back.clone();
    forged.verdict.outcome = Outcome::Accepted {
        included: true,
        rating_mean: 0.5,
    };
    assert!(!forged.signature_valid());
}

#[test]
fn typed_errors() {
    let bytes = commitment().encode();
    assert_eq!(SignedCommitment::decode(&[]), Err(WireError::Empty));
    let mut v2 = bytes.clone();
    v2[0] = 2;
    assert_eq!(
        SignedCommitment::decode(&v2),
        Err(WireError::UnknownVersion(2))
    );
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        SignedCommitment::decode(&longer),
        Err(WireError::TrailingBytes(1))
    );
    assert!(matches!(
        SignedCommitment::decode(&bytes[..bytes.len() - 3]),
        Err(WireError::Body(_))
    ));
    let huge = vec![1u8; limits::COMMITMENT_BYTES_MAX + 1];
    assert!(matches!(
        SignedCommitment::decode(&huge),
        Err(WireError::TooLarge { .. })
    ));
    let too_many_ids = {
        let mut c = commitment();
        c.commitment.data_ids = vec![0; limits::ASSIGNED_DATA_IDS_MAX + 1];
        c.encode()
    };
    assert!(matches!(
        SignedCommitment::decode(&too_many_ids),
        Err(WireError::OutOfBounds {
            field: "data_ids",
            ..
        })
    ));
    let nan = verdict(Outcome::Scored {
        score: f64::NAN,
        observation: 0.0,
        rating_mean: 0.0,
        rating_sd: 0.0,
        included: false,
    });
    assert!(matches!(
        SignedVerdict::decode(&nan.encode()),
        Err(WireError::Invalid { .. })
    ));
    let long_text = verdict(Outcome::Rejected(Reason::Malformed {
        error: "x".repeat(limits::EVIDENCE_TEXT_BYTES_MAX + 1),
    }));
    assert!(matches!(
        SignedVerdict::decode(&long_text.encode()),
        Err(WireError::OutOfBounds { .. })
    ));
}

#[test]
fn non_canonical_varint_is_rejected() {
    // The round number 7 is one varint byte; spelled as two bytes (0x87 0x00) it decodes to the same value but is
    // not canonical, so it must be refused (a signature covers the canonical bytes only).
    let c = commitment();
    let bytes = c.encode();
    let round_at = 1 + 32; // version byte, then the run id (32 bytes), then the round varint
    assert_eq!(bytes[round_at], 7);
    let mut spelled = bytes[..round_at].to_vec();
    spelled.extend_from_slice(&[0x87, 0x00]);
    spelled.extend_from_slice(&bytes[round_at + 1..]);
    assert_eq!(
        SignedCommitment::decode(&spelled),
        Err(WireError::NotCanonical)
    );
}
