//! Real deployment, on 127.0.0.1: `commonweight run init --config run.toml` creates a run of three founder
//! nodes (a fresh node catches up to a state only on CATCH_UP_VOTES_MIN = 3 matching votes); once they run, the prepared dataset folder is moved away (as if on another machine), and a node with a
//! fresh data dir joins knowing only a bootstrap address and the run id. It must fetch the run file (checked
//! against the run id) and the dataset (checked against its collection CID and the genesis dataset hash) from
//! the founders, settle rounds with them on the same model hash, and contribute an update that they include; restarted
//! with the same command, it uses its own copies and takes part again.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "support/process.rs"]
mod process;

use process::{
    get_json, init_founder_run, line_after, node_log, start_run_node, wait_until, FounderRun,
    NodeProcess,
};

fn start(dir: &Path, run: &str, bootstrap: Option<&str>) -> NodeProcess {
    start_run_node(dir, run, bootstrap, &[])
}

fn status(node: &NodeProcess) -> serde_json::Value {
    get(node, "/status")
}

/// Settled rounds, oldest first (written only when the node aggregated the round itself).
fn history(node: &NodeProcess) -> Vec<serde_json::Value> {
    get(node, "/history").as_array().unwrap().clone()
}

fn get(node: &NodeProcess, path: &str) -> serde_json::Value {
    get_json(&node.control, path)
}

#[test]
fn a_fresh_node_joins_with_only_a_bootstrap_address_and_the_run_id() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let FounderRun {
        dirs: founders,
        run_file,
        init,
        ..
    } = init_founder_run(
        root,
        "join-test",
        3,
        "inner_steps = 2\nrounds = 400\nshards = 16\ncommittee_size = 4\nquorum_permille = 1000\n\
         phase_max_ms = 15000\neval_windows = 4\n",
    );
    let run_id = line_after(&init, "run id ").to_owned();
    let collection = line_after(&init, "dataset collection ").to_owned();

    let f0 = start(&founders[0], run_file.to_str().unwrap(), None);
    let boot = status(&f0)["listen_addrs"][0]
        .as_str()
        .expect("founder 0 listens")
        .to_owned();
    let f1 = start(&founders[1], run_file.to_str().unwrap(), Some(&boot));
    let f2 = start(&founders[2], run_file.to_str().unwrap(), Some(&boot));
    // A run under way: the founders settle a few rounds before anyone joins.
    wait_until(
        "the founders' first rounds",
        Duration::from_secs(120),
        || history(&f0).len() >= 3,
    );
    // The founders hold the dataset in memory now; take the folder away so the joiner cannot read it.
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&run_file).unwrap()).unwrap();
    let dataset = PathBuf::from(spec["dataset"].as_str().unwrap());
    assert_eq!(
        spec["dataset_collection"].as_str(),
        Some(collection.as_str())
    );
    std::fs::rename(&dataset, root.join("dataset-elsewhere")).unwrap();

    let joiner_dir = root.join("joiner");
    let started = Instant::now();
    let joiner = start(&joiner_dir, &run_id, Some(&boot));
    let log = node_log(&joiner);
    assert!(log.contains("run file verified"), "{log}");
    assert!(
        log.contains(&format!("dataset {collection} verified")),
        "{log}"
    );
    let copy = joiner_dir.join("runs").join(&run_id[..16]).join("run.json");
    let fetched: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&copy).unwrap()).unwrap();
    // The founders' run file, but for the dataset path (local to each machine, not bound by the run id).
    let dataset_copy = copy.parent().unwrap().join("dataset");
    let mut expected = spec.clone();
    expected["dataset"] = serde_json::Value::from(dataset_copy.to_str().unwrap());
    assert_eq!(fetched, expected, "the joiner holds another run file");
    assert!(dataset_copy.join("dataset.json").is_file());
    assert_eq!(status(&joiner)["run_id"].as_str(), Some(run_id.as_str()));
    eprintln!(
        "joiner fetched run file and dataset in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // It takes part: it settles a round itself (history written only on a settled aggregate) on the model hash
    // the founders hold for that round.
    let dump = || {
        for node in [&f0, &f1, &f2, &joiner] {
            let log = node_log(node);
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let rejected: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("update rejected"))
                .take(10)
                .collect();
            eprintln!(
                "--- {} status: {}\nrejections:\n{}\nlog (newest first):\n{}",
                node.dir.display(),
                status(node),
                rejected.join("\n"),
                tail.join("\n")
            );
        }
    };
    let mut settled = serde_json::Value::Null;
    let deadline = Instant::now() + Duration::from_secs(240);
    while settled.is_null() {
        if Instant::now() > deadline {
            dump();
            panic!("timed out waiting for the joiner to settle a round");
        }
        if let Some(last) = history(&joiner).last() {
            settled = last.clone();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let round = settled["round"].as_u64().unwrap();
    assert!(
        round >= 3,
        "the joiner settled round {round}, before it joined"
    );
    let hash = settled["model_hash"].as_str().unwrap().to_owned();
    // A founder writes a round's history line only when it aggregated that round itself (one that caught up by
    // snapshot skips it), so every founder that has the round must agree, and at least one must have it.
    let mut agreeing = 0;
    for founder in [&f0, &f1, &f2] {
        // Past the round either way: settled by itself (a history line) or by a snapshot (its round counter).
        let past = || {
            status(founder)["round"].as_u64() > Some(round)
                || history(founder)
                    .iter()
                    .any(|l| l["round"].as_u64() >= Some(round))
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        while !past() {
            if Instant::now() > deadline {
                dump();
                panic!(
                    "founder {} did not get past round {round}",
                    founder.dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let Some(theirs) = history(founder)
            .into_iter()
            .find(|l| l["round"].as_u64() == Some(round))
        else {
            continue;
        };
        assert_eq!(
            theirs["model_hash"].as_str(),
            Some(hash.as_str()),
            "round {round}: the joiner and founder {} disagree",
            founder.dir.display()
        );
        agreeing += 1;
    }
    assert!(agreeing >= 1, "no founder settled round {round} itself");
    eprintln!(
        "joiner settled round {round} on model {} after {:.1} s",
        &hash[..16],
        started.elapsed().as_secs_f64()
    );

    // And it trains: the founders admit it and include its update in a settled round. A node writes a history line
    // only for a round it settled itself, and any node may have caught up past that round, so look in all of them.
    let me = status(&joiner)["peer_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(300);
    let includes_me = |node: &NodeProcess| {
        history(node)
            .iter()
            .any(|l| l["included"].as_array().unwrap().iter().any(|p| p == &me))
    };
    while ![&f0, &f1, &f2, &joiner].into_iter().any(includes_me) {
        if Instant::now() > deadline {
            dump();
            panic!("timed out waiting for a round that includes the joiner's update");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "joiner's update included after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for line in history(&joiner) {
        eprintln!(
            "joiner history: round {} model {} included {}",
            line["round"],
            &line["model_hash"].as_str().unwrap()[..16],
            line["included"].as_array().unwrap().len()
        );
    }

    // Restarted with the same command, it uses its own copies (no fetch) and takes part again.
    let last = history(&joiner).last().unwrap()["round"].as_u64().unwrap();
    let mut joiner = joiner;
    stop(&mut joiner);
    let restarted = Instant::now();
    let joiner = start(&joiner_dir, &run_id, Some(&boot));
    let log = node_log(&joiner);
    assert!(!log.contains("fetching"), "{log}");
    wait_until(
        "the restarted joiner to settle a round",
        Duration::from_secs(120),
        || {
            history(&joiner)
                .last()
                .is_some_and(|l| l["round"].as_u64().unwrap() > last)
        },
    );
    eprintln!(
        "restarted joiner settled a round {:.1} s after its restart",
        restarted.elapsed().as_secs_f64()
    );
}

/// SIGTERM, then wait for a clean exit.
fn stop(node: &mut NodeProcess) {
    let pid = node.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = node.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "node did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "node exited with {status}");
}
