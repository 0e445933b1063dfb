//! `commonweight experiment attacks` at toy scale: the tiny model trained by 4 workers (one attacking) for 3 DiLoCo
//! rounds, every update through the production verifier with the tch loss evaluator, a few attack classes; checks
//! detection, honest false positives, and what attacks.json must hold.
//!
//! The corpus is pseudo-random letters: every window is unique, so what a peer learns from its own windows shows in
//! the score's peer-specific term even after 2 inner steps. (On a repetitive toy text that term is pure noise at this
//! size and honest peers get scored out; the real-scale numbers are in bench/RESULTS.md.)

use std::process::Command;

const ATTACKS: [&str; 9] = [
    "sign-flip",
    "wrong-data",
    "scale-100",
    "zero",
    "copy",
    "stale-base",
    "nan",
    "malformed",
    "oversized",
];

#[test]
fn experiment_attacks_detects_attackers_and_keeps_honest_peers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = 12345u64;
    let text: String = (0..24_000)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            match (state >> 33) % 32 {
                r @ 0..=25 => char::from(b'a' + r as u8),
                26..=30 => ' ',
                _ => '\n',
            }
        })
        .collect();
    let input = dir.path().join("corpus.txt");
    std::fs::write(&input, text).expect("write corpus");
    let out = dir.path().join("out");
    let attacks = |out: &std::path::Path| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_commonweight"));
        cmd.args(["experiment", "attacks", "--preset", "tiny"])
            .args([
                "--workers",
                "4",
                "--attackers",
                "0.25",
                "--inner-steps",
                "2",
            ])
            .args(["--tokens", "1536", "--batch", "2", "--seq-len", "32"])
            .args(["--threads", "1", "--final-eval-seqs", "16"])
            .args(["--verifiers", "3", "--committee", "1"])
            .args(["--attacks", &ATTACKS.join(",")])
            .arg("--data")
            .arg(&input)
            .arg("--out")
            .arg(out);
        cmd
    };
    let output = attacks(&out).output().expect("run commonweight");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "experiment attacks failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("attacks.json")).expect("attacks.json"))
            .expect("json");
    let rows = rows.as_array().expect("an array of rows");
    assert_eq!(
        rows.len(),
        ATTACKS.len() + 1,
        "one honest-only row and one per attack"
    );
    let honest = &rows[0];
    assert_eq!(honest["attack"], "none");
    assert_eq!(honest["rounds"], 3);
    assert_eq!(honest["honest_updates"], 12, "4 honest workers x 3 rounds");
    assert_eq!(honest["gap_pct"], 0.0);
    let honest_loss = honest["val_loss"].as_f64().expect("val_loss");
    assert!(
        honest_loss.is_finite() && honest_loss < (256f64).ln(),
        "training must beat a uniform byte model, got {honest_loss}"
    );
    for row in rows {
        // No honest update is excluded, whatever the attack (the harm test is relative to the mean update of the
        // peers in good standing, so attackers caught once do not move the yardstick).
        assert_eq!(
            row["honest_excluded"], 0,
            "honest updates were excluded: {row}"
        );
        assert_eq!(row["verifiers"], 3, "{row}");
        let ratio = row["verify_to_train_ratio"].as_f64().expect("a ratio");
        let max = row["verify_max_s_per_round"].as_f64().expect("seconds");
        let mean = row["verify_s_per_round"].as_f64().expect("seconds");
        assert!(ratio > 0.0 && ratio.is_finite(), "{row}");
        // Every update the committees include is replayed on one sampled step; honest steps replay bit for bit.
        assert!(row["spot_checks"].as_u64().expect("a count") > 0, "{row}");
        if row["attack"] != "wrong-data" {
            assert_eq!(row["spot_check_frauds"], 0, "{row}");
        }
        assert!(
            max >= mean,
            "the slowest verifier round is at least the mean one: {row}"
        );
    }
    for (attack, row) in ATTACKS.iter().zip(&rows[1..]) {
        assert_eq!(row["attack"], *attack);
        let updates = row["attack_updates"].as_u64().expect("a count");
        // Stale-base attackers have no older base in round 0.
        let expected = if *attack == "stale-base" { 2 } else { 3 };
        assert_eq!(updates, expected, "{row}");
        assert_eq!(
            row["attack_detected"], updates,
            "{attack} got through: {row}"
        );
        assert_eq!(row["detection_rate"], 1.0);
        assert_eq!(
            row["honest_only_val_loss"].as_f64(),
            Some(honest_loss),
            "{row}"
        );
    }
    let reason = |attack: &str| {
        let row = rows.iter().find(|r| r["attack"] == attack).expect("row");
        row["attack_outcomes"]
            .as_object()
            .expect("outcomes")
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(reason("scale-100"), ["Rejected:NormOutlier"]);
    // Trained on someone else's items: the replay of its own assignment disagrees, a fraud proof bans it.
    assert!(
        reason("wrong-data").contains(&"Rejected:Fraud".to_string()),
        "{:?}",
        reason("wrong-data")
    );
    // The same zero blob every round: its CID is remembered after round 0.
    assert_eq!(reason("zero"), ["Rejected:Replayed", "Rejected:ZeroUpdate"]);
    assert_eq!(reason("copy"), ["Rejected:Copy"]);
    assert_eq!(reason("stale-base"), ["Rejected:StaleBase"]);
    assert_eq!(reason("oversized"), ["Rejected:Oversized"]);
    assert_eq!(reason("malformed"), ["Rejected:Malformed"]);
    assert!(
        stdout.contains("| sign-flip"),
        "the table lists every attack: {stdout}"
    );
    check_fraud_proofs_in_fresh_processes(&out, attacks);
}

/// Every wrong-data fraud proof the run wrote checks in a fresh process on the real model; the same proof with a
/// byte of its disputed state or of its signature changed does not.
fn check_fraud_proofs_in_fresh_processes(
    out: &std::path::Path,
    attacks: impl Fn(&std::path::Path) -> Command,
) {
    let mut proofs: Vec<_> = std::fs::read_dir(out.join("fraud-proofs"))
        .expect("the run wrote fraud proofs")
        .map(|e| e.expect("entry").path())
        .collect();
    proofs.sort();
    assert!(
        !proofs.is_empty()
            && proofs
                .iter()
                .all(|p| p.to_string_lossy().contains("wrong-data")),
        "{proofs:?}"
    );
    let check = |proof: &std::path::Path| {
        attacks(out)
            .arg("--check-proof")
            .arg(proof)
            .output()
            .expect("run commonweight")
    };
    let honest = check(&proofs[0]);
    assert!(
        honest.status.success(),
        "a proof the run wrote must check: {}",
        String::from_utf8_lossy(&honest.stderr)
    );
    assert!(String::from_utf8_lossy(&honest.stdout).contains("fraud proven"));
    let bytes = std::fs::read(&proofs[0]).expect("read proof");
    // Byte offsets: the middle of the proof is inside a state; the last 64 bytes are the verifier's signature.
    for (what, at) in [
        ("a state", bytes.len() / 2),
        ("the signature", bytes.len() - 10),
    ] {
        let mut tampered = bytes.clone();
        tampered[at] ^= 0x40;
        let path = out.join("tampered.proof");
        std::fs::write(&path, &tampered).expect("write tampered proof");
        let output = check(&path);
        assert!(
            !output.status.success(),
            "a proof with {what} changed must not check: {}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
}
