//! Replay spot checks in a running swarm, on 127.0.0.1: four founder nodes train the `tiny` model with every
//! update drawn for a check (`spot_check_ppm = 1000000`), and one of them (`--misbehave wrong-data`) trains on the
//! shards after its assigned ones while committing to the assigned ones. Its update looks useful, so the score
//! need not catch it; the drawn verifier fetches its replay record and states, re-executes the drawn steps on the
//! assigned data, bisects to the first wrong step and writes a signed fraud proof, bans it and gossips a fraud
//! notice; every other honest node fetches the proof, checks it itself and bans the liar too, so the last rounds
//! settle without it. A fresh process (`commonweight run check-proof`) confirms the proof, and rejects it once any
//! field is altered. Honest trainers' checks pass bit for bit.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[path = "support/process.rs"]
mod process;

use process::{
    get_json, init_founder_run, node_log, start_run_node, wait_until, FounderRun, NodeProcess, BIN,
};

const ROUNDS: u64 = 6;

fn core(node: &NodeProcess) -> serde_json::Value {
    get_json(&node.control, "/status")["core"].clone()
}

fn count(node: &NodeProcess, field: &str) -> u64 {
    core(node)[field].as_u64().unwrap_or(0)
}

#[test]
fn a_spot_check_proves_a_wrong_data_trainer_and_a_fresh_process_checks_the_proof() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let FounderRun {
        dirs,
        peer_ids,
        run_file,
        ..
    } = init_founder_run(
        root,
        "replay-test",
        4,
        &format!(
            "inner_steps = 8\nrounds = {ROUNDS}\nshards = 16\ncommittee_size = 4\nquorum_permille = 1000\n\
             phase_max_ms = 20000\neval_windows = 4\nspot_check_ppm = 1000000\n"
        ),
    );
    let run = run_file.to_str().unwrap();
    let first = start_run_node(&dirs[0], run, None, &[]);
    let boot = get_json(&first.control, "/status")["listen_addrs"][0]
        .as_str()
        .expect("founder 0 listens")
        .to_owned();
    let mut nodes = vec![first];
    for dir in &dirs[1..3] {
        nodes.push(start_run_node(dir, run, Some(&boot), &[]));
    }
    let liar = start_run_node(&dirs[3], run, Some(&boot), &["--misbehave", "wrong-data"]);
    let liar_id = peer_ids[3].as_str();
    let finished = |n: &NodeProcess| get_json(&n.control, "/status")["finished"] == true;
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(
            "the honest nodes' last round",
            Duration::from_secs(400),
            || nodes.iter().all(finished),
        );
        check_swarm(&nodes, liar_id);
        check_proofs(&nodes, &run_file, liar_id);
    }));
    if let Err(panic) = checked {
        for node in nodes.iter().chain([&liar]) {
            eprintln!("--- {}:\n{}", node.dir.display(), node_log(node));
        }
        std::panic::resume_unwind(panic);
    }
}

fn check_swarm(nodes: &[NodeProcess], liar: &str) {
    let mut frauds = 0;
    let mut passed = 0;
    for node in nodes {
        let core = core(node);
        eprintln!("{}: {core}", node.dir.display());
        frauds += count(node, "frauds_proven");
        passed += count(node, "spot_checks_passed");
        // An honest trainer always serves its states, and each check runs to a verdict.
        assert_eq!(count(node, "spot_checks_withheld"), 0, "{core}");
        assert_eq!(count(node, "spot_checks_failed"), 0, "{core}");
        for line in node_log(node)
            .lines()
            .filter(|l| l.contains("fraud proven"))
        {
            assert!(
                line.contains(liar),
                "an honest trainer proven a fraud: {line}"
            );
        }
    }
    assert!(
        frauds >= 1,
        "no fraud proven against the wrong-data trainer"
    );
    assert!(passed >= 1, "no honest trainer's spot check passed");
    // Every honest node made a proof or checked a peer's, so every verifier refuses the liar's updates; the first
    // proof comes from round 0's check, seconds after it settles, so at least the last two rounds leave it out.
    for node in nodes {
        let banned = count(node, "frauds_proven") + count(node, "frauds_learned");
        assert!(banned >= 1, "{}: never banned the liar", node.dir.display());
    }
    let history = get_json(&nodes[0].control, "/history");
    let lines = history.as_array().unwrap();
    for line in lines {
        eprintln!("round {} included {}", line["round"], line["included"]);
    }
    for line in lines.iter().rev().take(2) {
        let included = line["included"].as_array().unwrap();
        assert!(
            !included.iter().any(|p| p == liar),
            "round {}: the proven liar is still included",
            line["round"]
        );
    }
}

/// The first proof any honest node wrote, checked by a fresh process; then altered in each region (commitment,
/// states, signature), each of which the checker must refuse.
fn check_proofs(nodes: &[NodeProcess], run_file: &Path, liar: &str) {
    let proof = nodes
        .iter()
        .flat_map(|n| proof_files(&n.dir))
        .next()
        .expect("a fraud proof file");
    let out = check_proof(run_file, &proof);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("fraud proven") && stdout.contains(liar),
        "{stdout}"
    );
    let bytes = std::fs::read(&proof).unwrap();
    let tampered = proof.with_extension("tampered");
    for at in [
        20,
        bytes.len() / 3,
        bytes.len() / 2,
        bytes.len() * 3 / 4,
        bytes.len() - 10,
    ] {
        let mut altered = bytes.clone();
        altered[at] ^= 0x40;
        std::fs::write(&tampered, &altered).unwrap();
        let out = check_proof(run_file, &tampered);
        assert!(
            !out.status.success(),
            "a proof altered at byte {at} of {} still checks: {}",
            bytes.len(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

fn proof_files(data_dir: &Path) -> Vec<PathBuf> {
    let Ok(runs) = std::fs::read_dir(data_dir.join("runs")) else {
        return Vec::new();
    };
    runs.flatten()
        .filter_map(|run| std::fs::read_dir(run.path().join("fraud-proofs")).ok())
        .flat_map(|files| files.flatten().map(|f| f.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect()
}

fn check_proof(run_file: &Path, proof: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["run", "check-proof", "--run"])
        .arg(run_file)
        .arg(proof)
        .output()
        .unwrap()
}
