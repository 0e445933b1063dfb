//! Four real `commonweight node` processes on 127.0.0.1 train the `tiny` model together through
//! `commonweight swarm`; one is SIGKILLed in the middle of a round and restarted from its data dir. The run
//! must finish, the restarted node must restore its persisted state and catch up, and every node must end on
//! the same model hash. The model must also have learned (final validation loss below the initial one).

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_commonweight");

/// The swarms of this file run one at a time: two at once on a 2-core machine make trainers miss phase
/// deadlines, and a trainer that trained but missed its round makes the replay differ by design.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A few hundred KB of text with structure a tiny model can learn (seeded, no external corpus needed).
fn write_corpus(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let words = [
        "the", "king", "shall", "speak", "of", "love", "and", "war", "to", "his", "lords", "in",
        "the", "hall", "where", "night", "falls", "upon", "our", "house", "my", "lady", "sweet",
        "good",
    ];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for file in 0..4 {
        let mut text = String::new();
        for line in 0..1500 {
            text.push_str(if line % 2 == 0 { "KING:\n" } else { "LADY:\n" });
            for _ in 0..10 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                text.push_str(words[(state % words.len() as u64) as usize]);
                text.push(' ');
            }
            text.push_str(".\n");
        }
        std::fs::write(dir.join(format!("part{file}.txt")), text).unwrap();
    }
}

#[test]
fn four_nodes_survive_a_sigkill_and_agree() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    write_corpus(&corpus);
    let out = tmp.path().join("swarm");
    let output = Command::new(BIN)
        .args([
            "swarm",
            "--nodes",
            "4",
            "--preset",
            "tiny",
            "--rounds",
            "6",
            "--inner-steps",
            "5",
        ])
        .args([
            "--eval-windows",
            "16",
            "--samples",
            "0",
            "--kill",
            "3@2",
            "--timeout-s",
            "400",
            "--phase-max-ms",
            "20000",
        ])
        .arg("--data")
        .arg(&corpus)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run commonweight swarm");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        for i in 0..4 {
            let log =
                std::fs::read_to_string(out.join(format!("node-{i}/node.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!(
                "--- node {i} log (last lines, newest first) ---\n{}",
                tail.join("\n")
            );
        }
        panic!("swarm failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    }
    assert!(
        stdout.contains("fault: SIGKILL node 3"),
        "the fault was not injected:\n{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["nodes"], 4);
    assert_eq!(report["rounds"], 6);
    assert_eq!(report["all_nodes_agree"], true, "{report:#}");
    let per_node = report["per_node"].as_array().unwrap();
    let hash = report["model_hash"].as_str().unwrap();
    for node in per_node {
        assert_eq!(node["model_hash"].as_str().unwrap(), hash, "{report:#}");
    }
    assert_eq!(per_node[3]["restarts"], 1);
    // The restarted node came back from its own persisted state, not from genesis.
    let log3 = std::fs::read_to_string(out.join("node-3/node.log")).unwrap();
    assert!(
        log3.contains("restoring round"),
        "node 3 did not restore its state:\n{log3}"
    );
    // Every node contributed updates; learning happened.
    let contributions: u64 = per_node
        .iter()
        .map(|n| n["contributions"].as_u64().unwrap())
        .sum();
    assert!(contributions >= 6, "too few included updates: {report:#}");
    let curve = report["curve"].as_array().unwrap();
    let first = curve.first().unwrap()["val_loss"].as_f64().unwrap();
    let last = report["final_val_loss"].as_f64().unwrap();
    assert!(last < first && last < 5.0, "no learning: {first} -> {last}");
    assert!(report["single_node_val_loss"].as_f64().unwrap().is_finite());
    assert!(
        report["bytes_ratio_vs_ddp"].as_f64().unwrap() > 1.0,
        "{report:#}"
    );
    assert!(out.join("report.md").is_file() && out.join("loss.svg").is_file());
    // Ownership: every node's `ledger balances` printed the same table, and every node whose
    // update was included in some round holds shares (the swarm computed both from the nodes).
    let ledger = &report["ledger"];
    assert_eq!(ledger["all_nodes_agree"], true, "{report:#}");
    assert_eq!(ledger["every_contributor_holds_shares"], true, "{report:#}");
    let balances = ledger["balances"].as_object().unwrap();
    let sum: u64 = balances.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(sum, ledger["total_minted"].as_u64().unwrap(), "{report:#}");
    assert!(sum > 0, "{report:#}");
}

/// The network loses nothing against the math: a fault-free swarm ends on exactly the parameters that the
/// same rounds give when replayed in one process without the network (same seeds, data assignment, codec,
/// H, inner optimizer states and aggregation order), and `experiment sync --swarm DIR` (the experiment harness's
/// round loop on the swarm's schedule) ends on the same bits.
#[test]
fn fault_free_swarm_equals_the_network_free_replay_bit_for_bit() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    write_corpus(&corpus);
    let out = tmp.path().join("swarm");
    let output = Command::new(BIN)
        .args(["swarm", "--nodes", "3", "--preset", "tiny", "--rounds", "4"])
        .args([
            "--inner-steps",
            "5",
            "--eval-windows",
            "8",
            "--samples",
            "0",
        ])
        .args([
            "--skip-single",
            "--timeout-s",
            "300",
            "--phase-max-ms",
            "20000",
        ])
        .arg("--data")
        .arg(&corpus)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run commonweight swarm");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "swarm failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["all_nodes_agree"], true, "{report:#}");
    let replay = &report["replay"];
    assert_eq!(replay["model_hash"], report["model_hash"], "{report:#}");
    assert_eq!(replay["bit_identical"], true, "{report:#}");
    assert!(replay["first_divergent_round"].is_null(), "{report:#}");
    assert!(
        replay["gap_pct"].as_f64().unwrap().abs() <= 0.5,
        "{report:#}"
    );

    // The same through the experiment harness's command, on the run folder the swarm left.
    let compared = tmp.path().join("experiment");
    let output = Command::new(BIN)
        .args(["experiment", "sync", "--threads", "1", "--swarm"])
        .arg(&out)
        .arg("--out")
        .arg(&compared)
        .output()
        .expect("run commonweight experiment sync --swarm");
    assert!(
        output.status.success(),
        "experiment sync --swarm failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let comparison: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(compared.join("swarm_comparison.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(comparison["bit_identical"], true, "{comparison:#}");
    assert_eq!(
        comparison["experiment_model_hash"], report["model_hash"],
        "{comparison:#}"
    );
    assert!(
        comparison["gap_pct"].as_f64().unwrap().abs() <= 0.5,
        "{comparison:#}"
    );
}
