//! `commonweight ledger ...` end to end on a single-validator (local sequencer) ledger:
//! init, record verdicts, transfer, register a checkpoint, balances, history, export, verify,
//! and a byte flipped in the database file failing `verify`.

use std::path::Path;
use std::process::{Command, Output};

fn cw(home: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_commonweight"))
        .arg("ledger")
        .arg("--data-dir")
        .arg(home)
        .args(args)
        .output()
        .expect("run commonweight");
    out
}

fn ok(home: &Path, args: &[&str]) -> String {
    let out = cw(home, args);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn ledger_cli_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let run = "11".repeat(32);
    let init = ok(home, &["init", "--run", &run]);
    let me = init
        .lines()
        .find_map(|l| l.strip_prefix("this node: "))
        .unwrap()
        .trim()
        .to_owned();
    let trainer = "ab".repeat(32);
    ok(
        home,
        &[
            "record-verdict",
            "--peer",
            &trainer,
            "--round",
            "0",
            "--tokens",
            "1000",
            "--score-ppm",
            "500000",
        ],
    );
    ok(
        home,
        &[
            "record-verdict",
            "--peer",
            &me,
            "--round",
            "0",
            "--tokens",
            "2000",
        ],
    );
    // A second verdict from the same verifier on the same work is refused with a reason.
    let dup = cw(
        home,
        &[
            "record-verdict",
            "--peer",
            &me,
            "--round",
            "0",
            "--tokens",
            "2000",
        ],
    );
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already recorded"));
    ok(home, &["transfer", "--to", &trainer, "--amount", "300"]);
    let over = cw(home, &["transfer", "--to", &trainer, "--amount", "1000000"]);
    assert!(!over.status.success());
    let cid = "cd".repeat(32);
    ok(home, &["register-checkpoint", &cid, "--round", "0"]);

    let balances = ok(home, &["balances"]);
    let balance_of = |peer: &str| -> u64 {
        let line = balances
            .lines()
            .find(|l| l.starts_with(peer))
            .unwrap_or_else(|| panic!("{peer} missing: {balances}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    assert_eq!(balance_of(&trainer), 800);
    assert_eq!(balance_of(&me), 1700);
    let history = ok(home, &["history", "--peer", &trainer]);
    assert_eq!(history.lines().count(), 2, "{history}");

    let statement = home.join("statement.json");
    let model = ok(
        home,
        &["model", &cid, "--export", statement.to_str().unwrap()],
    );
    assert!(model.contains("2500 shares"), "{model}");
    ok(home, &["check-export", statement.to_str().unwrap()]);
    let text = std::fs::read_to_string(&statement).unwrap();
    std::fs::write(
        &statement,
        text.replace("\"shares\": 800", "\"shares\": 900"),
    )
    .unwrap();
    assert!(!cw(home, &["check-export", statement.to_str().unwrap()])
        .status
        .success());

    let verify = ok(home, &["verify"]);
    assert!(verify.starts_with("ok: 4 blocks"), "{verify}");

    // Flip one byte of every copy of the trainer's key in the database file.
    let db = home.join("ledger").join("ledger.redb");
    let mut bytes = std::fs::read(&db).unwrap();
    let needle = hex(&trainer);
    let mut flipped = 0;
    let mut i = 0;
    while i + 32 <= bytes.len() {
        if bytes[i..i + 32] == needle[..] {
            bytes[i + 5] ^= 0x40;
            flipped += 1;
        }
        i += 1;
    }
    assert!(flipped > 0);
    std::fs::write(&db, bytes).unwrap();
    let tampered = cw(home, &["verify"]);
    assert!(
        !tampered.status.success(),
        "verify passed a tampered ledger: {}",
        String::from_utf8_lossy(&tampered.stdout)
    );
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
