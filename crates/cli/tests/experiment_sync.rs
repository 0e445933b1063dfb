//! `commonweight experiment sync` end to end at toy scale: real training of the tiny preset on a small text file,
//! data-parallel and single-worker baselines, a SparseLoCo and a DiLoCo run from one `--runs` list, and the results it must write.

use std::process::Command;

#[test]
fn experiment_sync_writes_results_and_compresses_against_data_parallel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text: String = (0..400)
        .map(|i| {
            format!(
                "Line {i}: to be, or not to be, that is the question of the {}th day.\n",
                i % 17
            )
        })
        .collect();
    let input = dir.path().join("corpus.txt");
    std::fs::write(&input, text).expect("write corpus");
    let out = dir.path().join("out");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_commonweight"))
            .args([
                "experiment",
                "sync",
                "--preset",
                "tiny",
                "--workers",
                "2",
                "--inner-steps",
                "4",
            ])
            .args([
                "--runs",
                "codec=topk; codec=fp32/h=2",
                "--tokens",
                "8192",
                "--batch",
                "2",
                "--seq-len",
                "32",
                "--threads",
                "1",
            ])
            .args(["--eval-seqs", "4"])
            .arg("--data")
            .arg(&input)
            .arg("--out")
            .arg(&out)
            .output()
            .expect("run commonweight")
    };
    let first = run();
    assert!(
        first.status.success(),
        "experiment sync failed: {}",
        String::from_utf8_lossy(&first.stderr)
    );

    let rows: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).expect("results.json"))
            .expect("json");
    let rows = rows.as_array().expect("an array of rows");
    let low_comm = rows
        .iter()
        .find(|r| r["run"] == "low-comm")
        .expect("a low-comm row");
    for field in [
        "codec",
        "inner_steps",
        "workers",
        "tokens",
        "bytes_per_worker",
        "ratio_vs_ddp",
        "val_loss",
    ] {
        assert!(
            !low_comm[field].is_null(),
            "field {field} missing in {low_comm}"
        );
    }
    for field in ["ddp_val_loss", "gap_pct"] {
        assert!(
            !low_comm[field].is_null(),
            "field {field} missing in {low_comm}"
        );
    }
    let ratio = low_comm["ratio_vs_ddp"]
        .as_f64()
        .expect("ratio is a number");
    assert!(
        ratio > 100.0,
        "top-k with H=4 must send far fewer bytes than data-parallel, got {ratio}x"
    );
    let dense = rows
        .iter()
        .find(|r| r["run"] == "low-comm" && r["codec"] == "fp32")
        .expect("the second run of --runs has its row");
    let dense_ratio = dense["ratio_vs_ddp"].as_f64().expect("a number");
    assert!(
        (dense_ratio - 2.0).abs() < 0.01,
        "fp32 every 2 steps sends half the data-parallel bytes, got {dense_ratio}x"
    );
    assert_eq!(dense["inner_steps"], 2);
    let val = low_comm["val_loss"].as_f64().expect("val_loss is a number");
    assert!(
        val.is_finite() && val < (256f64).ln(),
        "training must beat a uniform byte model, got {val}"
    );
    assert!(out.join("loss_vs_tokens.svg").exists() && out.join("loss_vs_bytes.svg").exists());

    // The same invocation again trains nothing: both baselines and both runs are reused.
    let second = run();
    assert!(second.status.success(), "second invocation failed");
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert_eq!(stdout.matches("reusing").count(), 4, "{stdout}");
}
