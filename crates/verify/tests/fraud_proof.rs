//! Fraud proofs across processes: `verify-fraud-proof make` writes a proof in one process, a fresh process checks
//! it, and tampering with any field (or any byte) makes the check fail. The step function is the stand-in
//! (`verify::standin::QuadraticStep`).

use std::path::{Path, PathBuf};
use std::process::Command;

use types::{Hash32, RoundNumber, RunId};
use verify::standin::QuadraticStep;
use verify::{FraudCheckError, FraudProof, NodeKey};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_verify-fraud-proof"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cw-verify-fraud-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn make(dir: &Path, extra: &[&str]) -> PathBuf {
    let path = dir.join("proof.bin");
    let out = bin().arg("make").arg(&path).args(extra).output().unwrap();
    assert!(
        out.status.success(),
        "make failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// Exit code of a fresh checker process.
fn check_code(path: &Path, extra: &[&str]) -> i32 {
    let out = bin().arg(path).args(extra).output().unwrap();
    out.status.code().expect("exited")
}

fn write_check(dir: &Path, name: &str, bytes: &[u8]) -> i32 {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    check_code(&path, &[])
}

#[test]
fn proof_made_in_one_process_is_checked_in_another() {
    let dir = scratch("roundtrip");
    let path = make(&dir, &["--steps", "16", "--cheat-step", "11"]);
    assert_eq!(
        check_code(&path, &[]),
        0,
        "a real proof is valid (bit-exact class)"
    );
    assert_eq!(
        check_code(&path, &["--class-threads", "8"]),
        0,
        "and valid across classes, by tolerance"
    );
    let proof = FraudProof::decode(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(proof.body.step, 11, "bisection finds the first wrong step");
    assert_eq!(
        check_code(&dir.join("missing.bin"), &[]),
        2,
        "an unreadable file is a usage error"
    );
}

#[test]
fn bisection_finds_every_cheat_step() {
    let dir = scratch("every-step");
    for cheat in 0..8u32 {
        let path = make(&dir, &["--steps", "8", "--cheat-step", &cheat.to_string()]);
        let proof = FraudProof::decode(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(proof.body.step, cheat);
        assert!(proof.check(&mut QuadraticStep::new()).is_ok());
    }
}

#[test]
fn a_signed_accusation_of_an_honest_step_fails() {
    let dir = scratch("forged");
    let path = make(&dir, &["--forge-honest"]);
    assert_eq!(check_code(&path, &[]), 1);
    assert_eq!(check_code(&path, &["--class-threads", "8"]), 1);
    let proof = FraudProof::decode(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        proof.check(&mut QuadraticStep::new()),
        Err(FraudCheckError::NotFraudExact)
    );
}

/// Every field of the proof, changed one at a time without re-signing: each must fail in a fresh process.
#[test]
fn tampering_any_field_fails_in_a_fresh_process() {
    let dir = scratch("fields");
    let original = FraudProof::decode(&std::fs::read(make(&dir, &[])).unwrap()).unwrap();
    type Tamper = (&'static str, fn(&mut FraudProof));
    let tampers: Vec<Tamper> = vec![
        ("commitment.run", |p| {
            p.body.commitment.commitment.run = RunId(Hash32::of(b"x"))
        }),
        ("commitment.round", |p| {
            p.body.commitment.commitment.round = RoundNumber(99)
        }),
        ("commitment.peer", |p| {
            p.body.commitment.commitment.peer = NodeKey::from_secret([5; 32]).peer_id()
        }),
        ("commitment.base_model_hash", |p| {
            p.body.commitment.commitment.base_model_hash = Hash32::of(b"x")
        }),
        ("commitment.data_ids", |p| {
            p.body.commitment.commitment.data_ids.push(1)
        }),
        ("commitment.update_cid", |p| {
            p.body.commitment.commitment.update_cid = Hash32::of(b"x")
        }),
        ("commitment.update_bytes", |p| {
            p.body.commitment.commitment.update_bytes += 1
        }),
        ("commitment.codec", |p| {
            p.body.commitment.commitment.codec = 3
        }),
        ("commitment.claimed_loss", |p| {
            p.body.commitment.commitment.claimed_loss = 0.1
        }),
        ("commitment.repro.backend", |p| {
            p.body.commitment.commitment.repro.backend.push('x')
        }),
        ("commitment.repro.isa", |p| {
            p.body.commitment.commitment.repro.isa.push('x')
        }),
        ("commitment.repro.threads", |p| {
            p.body.commitment.commitment.repro.threads = 2
        }),
        ("commitment.inner_steps", |p| {
            p.body.commitment.commitment.inner_steps += 1
        }),
        ("commitment.step_root", |p| {
            p.body.commitment.commitment.step_root = Hash32::of(b"x")
        }),
        ("commitment.signature", |p| {
            p.body.commitment.signature.0[7] ^= 1
        }),
        ("round_seed", |p| p.body.round_seed = Hash32::of(b"x")),
        ("step", |p| p.body.step += 1),
        ("state_before", |p| p.body.state_before[0] ^= 1),
        ("path_before", |p| {
            p.body.path_before.siblings[0] = Hash32::ZERO
        }),
        ("state_after", |p| p.body.state_after[0] ^= 1),
        ("path_after", |p| {
            p.body.path_after.siblings[0] = Hash32::ZERO
        }),
        ("verifier", |p| {
            p.body.verifier = NodeKey::from_secret([6; 32]).peer_id()
        }),
        ("verifier_repro", |p| p.body.verifier_repro.threads = 9),
        ("replayed_after_hash", |p| {
            p.body.replayed_after_hash = Hash32::ZERO
        }),
        ("signature", |p| p.signature.0[0] ^= 1),
    ];
    for (field, tamper) in tampers {
        let mut proof = original.clone();
        tamper(&mut proof);
        assert_ne!(proof, original, "{field} changed");
        assert_eq!(
            write_check(&dir, "tampered.bin", &proof.encode()),
            1,
            "tampered {field} must fail"
        );
    }
}

/// A verifier that re-signs after tampering still fails: the states are bound by the trainer's own commitment.
#[test]
fn re_signed_tampering_fails_on_the_commitment() {
    let dir = scratch("resigned");
    let original = FraudProof::decode(&std::fs::read(make(&dir, &[])).unwrap()).unwrap();
    let verifier = NodeKey::from_secret([22; 32]);
    let mut body = original.body.clone();
    body.state_after[5] ^= 1;
    assert_eq!(
        body.clone()
            .sign(&verifier)
            .check(&mut QuadraticStep::new()),
        Err(FraudCheckError::StateAfterNotCommitted(body.step + 1))
    );
    let mut body = original.body.clone();
    body.commitment.commitment.step_root = Hash32::of(b"made up");
    assert_eq!(
        body.sign(&verifier).check(&mut QuadraticStep::new()),
        Err(FraudCheckError::BadCommitmentSignature)
    );
    let mut body = original.body.clone();
    body.step = body.commitment.commitment.inner_steps;
    assert!(matches!(
        body.sign(&verifier).check(&mut QuadraticStep::new()),
        Err(FraudCheckError::StepOutOfRange { .. })
    ));
}

/// Flipping any single bit of any byte of the file makes it fail (in process: one check per byte).
#[test]
fn flipping_any_byte_fails() {
    let dir = scratch("bytes");
    let bytes = std::fs::read(make(&dir, &["--steps", "4", "--cheat-step", "1"])).unwrap();
    let mut executor = QuadraticStep::new();
    assert!(FraudProof::decode(&bytes)
        .unwrap()
        .check(&mut executor)
        .is_ok());
    for i in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut b = bytes.clone();
            b[i] ^= bit;
            let ok = FraudProof::decode(&b)
                .map(|p| p.check(&mut executor).is_ok())
                .unwrap_or(false);
            assert!(!ok, "flipping bit {bit:#x} of byte {i} still checks");
        }
    }
    // Truncation and trailing bytes fail too.
    assert!(FraudProof::decode(&bytes[..bytes.len() - 1]).is_err());
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(FraudProof::decode(&longer).is_err());
}
