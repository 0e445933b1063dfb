//! Shared by the process tests: a `commonweight node` child killed on drop, the wait for its control API,
//! a bounded wait loop, and HTTP/1.0 against the loopback control API.

#![allow(dead_code)] // Each test uses its own subset.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_commonweight");

/// A node process, killed on drop if the test did not stop it.
pub struct NodeProcess {
    pub child: Child,
    pub dir: PathBuf,
    /// The control API's `127.0.0.1:PORT`.
    pub control: String,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NodeProcess {
    /// Spawns `cmd` (a `commonweight node --data-dir DIR ...`) and waits up to `limit` for `DIR/control.addr`,
    /// the node's readiness signal. `log` names the node's log file, shown if it exits early.
    pub fn spawn(mut cmd: Command, dir: &Path, log: Option<&Path>, limit: Duration) -> NodeProcess {
        let child = cmd.spawn().expect("spawn commonweight node");
        let mut node = NodeProcess {
            child,
            dir: dir.to_owned(),
            control: String::new(),
        };
        let addr_file = dir.join("control.addr");
        wait_until("the node's control API", limit, || {
            if let Some(status) = node.child.try_wait().unwrap() {
                let log = log
                    .and_then(|l| std::fs::read_to_string(l).ok())
                    .unwrap_or_default();
                panic!("node in {} exited with {status}:\n{log}", dir.display());
            }
            addr_file.exists()
        });
        node.control = std::fs::read_to_string(addr_file)
            .unwrap()
            .trim()
            .to_owned();
        node
    }
}

pub fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A minimal HTTP/1.0 request to a loopback control API: (status code, body).
pub fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("connect control api");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("http head");
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (code, response[split + 4..].to_vec())
}

/// `GET path` that must answer 200 with JSON.
pub fn get_json(addr: &str, path: &str) -> serde_json::Value {
    let (code, body) = http(addr, "GET", path, b"");
    assert_eq!(code, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// `commonweight node --run RUN` with all roles on 127.0.0.1, logging to `DIR/node.log`, plus `extra` arguments.
/// Returns once the control API is up (the node then holds the run file, the dataset and the workload).
pub fn start_run_node(
    dir: &Path,
    run: &str,
    bootstrap: Option<&str>,
    extra: &[&str],
) -> NodeProcess {
    std::fs::create_dir_all(dir).unwrap();
    let log = std::fs::File::create(dir.join("node.log")).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("node")
        .arg("--data-dir")
        .arg(dir)
        .args(["--run", run, "--roles", "trainer,verifier,storage"])
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--wait-peers", "1"])
        .args(extra);
    if let Some(addr) = bootstrap {
        cmd.args(["--bootstrap", addr]);
    }
    cmd.stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log));
    NodeProcess::spawn(
        cmd,
        dir,
        Some(&dir.join("node.log")),
        Duration::from_secs(180),
    )
}

/// The node's log so far.
pub fn node_log(node: &NodeProcess) -> String {
    std::fs::read_to_string(node.dir.join("node.log")).unwrap_or_default()
}

/// `commonweight ARGS`, which must succeed; its stdout.
pub fn commonweight(args: &[&str]) -> String {
    let output = Command::new(BIN).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "commonweight {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The rest of the first line of `text` that starts with `prefix`, trimmed.
pub fn line_after<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in:\n{text}"))
        .trim()
}

/// `files` files of seeded random words in lines of play dialogue (about 90 KB each): text a tiny model can
/// learn from, with no external corpus.
pub fn write_corpus(dir: &Path, files: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let words = [
        "the", "king", "shall", "speak", "of", "love", "and", "war", "to", "his", "lords", "in",
        "hall", "where", "night", "falls", "upon", "our", "house", "my", "lady", "sweet",
    ];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for file in 0..files {
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

/// A `tiny` run of `founders` founders under `root`, ready to start: the corpus, each founder's identity
/// (`founder-i`), a `run.toml` with `settings` (TOML lines: H, rounds, committee, phase limits, ...) and the run
/// file from `run init` with founder 0's data dir.
pub struct FounderRun {
    pub dirs: Vec<PathBuf>,
    pub peer_ids: Vec<String>,
    pub run_file: PathBuf,
    /// What `run init` printed.
    pub init: String,
}

pub fn init_founder_run(root: &Path, name: &str, founders: usize, settings: &str) -> FounderRun {
    write_corpus(&root.join("corpus"), 2);
    let dirs: Vec<PathBuf> = (0..founders)
        .map(|i| root.join(format!("founder-{i}")))
        .collect();
    let peer_ids: Vec<String> = dirs
        .iter()
        .map(|dir| {
            commonweight(&["run", "peer-id", "--data-dir", dir.to_str().unwrap()])
                .trim()
                .to_owned()
        })
        .collect();
    let config = format!(
        "name = \"{name}\"\npreset = \"tiny\"\ndata = \"corpus\"\n{settings}founders = [\"{}\"]\n",
        peer_ids.join("\", \"")
    );
    std::fs::write(root.join("run.toml"), config).unwrap();
    let run_file = root.join("run.json");
    let init = commonweight(&[
        "run",
        "init",
        "--config",
        root.join("run.toml").to_str().unwrap(),
        "--out",
        run_file.to_str().unwrap(),
        "--data-dir",
        dirs[0].to_str().unwrap(),
    ]);
    line_after(&init, "run id ");
    FounderRun {
        dirs,
        peer_ids,
        run_file,
        init,
    }
}
