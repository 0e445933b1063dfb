//! The store as `commonweight` processes on 127.0.0.1: `data add` publishes a dataset 10-of-16, four
//! `node --serve-store --keep ROOT` processes pull their placement share, the publisher is SIGKILLed, the keepers
//! rebuild its share, a rotten piece on a keeper is found by its scrub and repaired, `store status` reads a
//! running node, and a fresh `data get --bootstrap` decodes the dataset bit for bit from the keepers; a
//! checkpoint published with `data add-checkpoint` is pulled by a late joiner from several keepers in parallel.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

#[path = "support/process.rs"]
mod process;

use process::{get_json, wait_until, NodeProcess, BIN};

/// Maintenance passes this often, so the test sees repairs within seconds.
const MAINTENANCE_MS: &str = "300";
const LIMIT: Duration = Duration::from_secs(90);

fn cw(args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run commonweight");
    assert!(
        out.status.success(),
        "commonweight {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn start(dir: &Path, extra: &[String]) -> NodeProcess {
    let log = dir.with_extension("log");
    let mut cmd = Command::new(BIN);
    cmd.arg("node")
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--serve-store"])
        .args(["--maintenance-ms", MAINTENANCE_MS])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    NodeProcess::spawn(cmd, dir, Some(&log), Duration::from_secs(30))
}

fn listen_addr(node: &NodeProcess) -> String {
    let mut addr = None;
    wait_until("a listen address", Duration::from_secs(10), || {
        let status = get_json(&node.control, "/status");
        addr = status["listen_addrs"]
            .as_array()
            .unwrap()
            .first()
            .map(|a| a.as_str().unwrap().to_owned());
        addr.is_some()
    });
    addr.unwrap()
}

/// The (collection root, piece index) pairs a node holds, from its running control API.
fn held(node: &NodeProcess) -> BTreeSet<(String, u64)> {
    let view = get_json(&node.control, "/store");
    let mut held = BTreeSet::new();
    for c in view["collections"].as_array().unwrap() {
        let root = c["root"].as_str().unwrap().to_owned();
        for index in c["held"].as_array().unwrap() {
            held.insert((root.clone(), index.as_u64().unwrap()));
        }
    }
    held
}

fn counter(node: &NodeProcess, name: &str) -> u64 {
    get_json(&node.control, "/store")["counters"][name]
        .as_u64()
        .unwrap_or(0)
}

fn held_by_all(nodes: &[&NodeProcess]) -> BTreeSet<(String, u64)> {
    nodes.iter().flat_map(|n| held(n)).collect()
}

fn write_corpus(path: &Path) {
    let words = [
        "thou",
        "art",
        "more",
        "lovely",
        "and",
        "temperate",
        "rough",
        "winds",
        "do",
        "shake",
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut text = String::new();
    for doc in 0..400 {
        text.push_str(&format!("document {doc}\n"));
        for _ in 0..400 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            text.push_str(words[(state % words.len() as u64) as usize]);
            text.push(' ');
        }
        text.push_str("\n\n");
    }
    std::fs::write(path, text).unwrap();
}

/// Every file under `dir` (recursively), by relative path, with its bytes.
fn files_in(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                files.push((path.strip_prefix(dir).unwrap().to_owned(), bytes));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn keepers_repair_a_lost_publisher_and_a_rotten_piece() {
    let tmp = tempfile::tempdir().unwrap();
    let path = |name: &str| tmp.path().join(name).to_str().unwrap().to_owned();
    write_corpus(Path::new(&path("corpus.txt")));
    let publisher_dir = path("publisher");
    let added = cw(&[
        "data",
        "add",
        &path("corpus.txt"),
        "--tokenizer",
        "bytes",
        "--k",
        "10",
        "--n",
        "16",
        "--data-dir",
        &publisher_dir,
    ]);
    let root = String::from_utf8(added.stdout).unwrap().trim().to_owned();
    // The reference copy, decoded from the publisher's own store before anything runs.
    cw(&[
        "data",
        "get",
        &root,
        "--out",
        &path("reference"),
        "--data-dir",
        &publisher_dir,
    ]);
    // A checkpoint (two steps of the tiny model), published the same way.
    cw(&[
        "train",
        "--data",
        &path("corpus.txt"),
        "--preset",
        "tiny",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--seq-len",
        "32",
        "--threads",
        "1",
        "--val-tokens",
        "1024",
        "--out",
        &path("checkpoint"),
        "--data-dir",
        &path("trainer"),
    ]);
    let added = cw(&[
        "data",
        "add-checkpoint",
        &path("checkpoint"),
        "--step",
        "2",
        "--data-dir",
        &publisher_dir,
    ]);
    let checkpoint_root = String::from_utf8(added.stdout).unwrap().trim().to_owned();

    let mut publisher = start(Path::new(&publisher_dir), &[]);
    let boot = listen_addr(&publisher);
    let keep: Vec<String> = [
        "--bootstrap",
        &boot,
        "--keep",
        &root,
        "--keep",
        &checkpoint_root,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let keepers: Vec<NodeProcess> = (0..4)
        .map(|i| start(&tmp.path().join(format!("keeper{i}")), &keep))
        .collect();
    let keeper_refs: Vec<&NodeProcess> = keepers.iter().collect();

    // Every keeper pulls a share; together (with the publisher's share) they cover both collections.
    wait_until("every keeper to hold a share", LIMIT, || {
        keepers.iter().all(|k| !held(k).is_empty()) && held_by_all(&keeper_refs).len() >= 20
    });
    assert_eq!(held(&publisher).len(), 32);

    // The publisher dies: the keepers see it gone, and placement over the 4 left moves its share onto them.
    publisher.child.kill().unwrap();
    publisher.child.wait().unwrap();
    wait_until(
        "the keepers to rebuild the publisher's share",
        LIMIT,
        || held_by_all(&keeper_refs).len() == 32,
    );

    // Rot one piece on keeper 0: its scrub finds it and drops it, and repair brings the piece back.
    let keeper0_store = keepers[0].dir.join("store").join("blobs");
    let rotten = piece_files(&keeper0_store)
        .into_iter()
        .next()
        .expect("keeper 0 holds a piece");
    let mut bytes = std::fs::read(&rotten).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&rotten, &bytes).unwrap();
    wait_until("keeper 0's scrub to find the rotten piece", LIMIT, || {
        counter(&keepers[0], "corrupt_found") >= 1
    });
    // Placement puts the piece on keeper 0 (it rebuilds it) unless it held it only because its view of the
    // keepers was partial for a while; either way every piece has a sound holder again.
    wait_until("all 32 pieces held again", LIMIT, || {
        held_by_all(&keeper_refs).len() == 32
            && std::fs::read(&rotten).map(|b| b != bytes).unwrap_or(true)
    });

    // `store status` reads a running node's store through its control API.
    let status = cw(&[
        "store",
        "status",
        "--data-dir",
        keepers[0].dir.to_str().unwrap(),
    ]);
    let status = String::from_utf8(status.stdout).unwrap();
    assert!(status.contains("corrupt_found:    1"), "{status}");
    assert!(status.contains("last pass:"), "{status}");

    // A fresh node that knows only one keeper fetches the whole dataset, bit for bit.
    let keeper_addr = listen_addr(&keepers[1]);
    cw(&[
        "data",
        "get",
        &root,
        "--out",
        &path("fetched"),
        "--bootstrap",
        &keeper_addr,
        "--data-dir",
        &path("fresh"),
    ]);
    let reference = files_in(Path::new(&path("reference")));
    assert!(!reference.is_empty());
    assert_eq!(files_in(Path::new(&path("fetched"))), reference);

    // A node that joins late pulls the checkpoint from several keepers in parallel, bit for bit.
    let got = cw(&[
        "data",
        "get",
        &checkpoint_root,
        "--out",
        &path("fetched-checkpoint"),
        "--bootstrap",
        &keeper_addr,
        "--data-dir",
        &path("late"),
    ]);
    let log = String::from_utf8_lossy(&got.stderr);
    let providers: usize = log
        .lines()
        .find_map(|l| {
            l.strip_prefix("fetched from ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no provider count in {log}"));
    assert!(
        providers >= 2,
        "pulled from {providers} keeper(s) only: {log}"
    );
    let fetched = files_in(Path::new(&path("fetched-checkpoint")));
    assert!(fetched
        .iter()
        .any(|(name, _)| name == Path::new("model.safetensors")));
    for (name, bytes) in fetched {
        assert_eq!(
            std::fs::read(tmp.path().join("checkpoint").join(&name)).unwrap(),
            bytes
        );
    }
}

/// The data files (not outboards) under a store's `blobs/` folder whose size is a piece's, largest first.
fn piece_files(blobs: &Path) -> Vec<PathBuf> {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(blobs)
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_none())
        .map(|p| (std::fs::metadata(&p).unwrap().len(), p))
        .collect();
    files.sort_by(|a, b| b.0.cmp(&a.0));
    files.into_iter().map(|(_, p)| p).collect()
}
