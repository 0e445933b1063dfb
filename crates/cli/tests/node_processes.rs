//! Four `commonweight node` processes on 127.0.0.1 over real QUIC and TCP: they find each other
//! through one bootstrap node, gossip to all, fetch a 64 MiB blob from 3 providers, list peers with
//! `commonweight peers`, and stop cleanly on SIGTERM.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/process.rs"]
mod process;

use process::{get_json as json, http, wait_until, NodeProcess, BIN};

fn start(dir: &Path, listen: &[&str], bootstrap: &[String]) -> NodeProcess {
    let mut cmd = Command::new(BIN);
    cmd.arg("node").arg("--data-dir").arg(dir);
    for l in listen {
        cmd.arg("--listen").arg(l);
    }
    for b in bootstrap {
        cmd.arg("--bootstrap").arg(b);
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    NodeProcess::spawn(cmd, dir, None, Duration::from_secs(30))
}

fn addr_with(node: &NodeProcess, transport: &str) -> String {
    let status = json(&node.control, "/status");
    status["listen_addrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .find(|a| a.contains(transport))
        .unwrap_or_else(|| panic!("no {transport} address in {status}"))
}

fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[test]
fn four_node_processes_over_quic_and_tcp() {
    let root = tempfile::tempdir().unwrap();
    // Built without the `quic` feature (a slow machine's first pass), every node uses TCP.
    let quic_on = cfg!(feature = "quic");
    let tcp = "/ip4/127.0.0.1/tcp/0";
    let quic = if quic_on {
        "/ip4/127.0.0.1/udp/0/quic-v1"
    } else {
        tcp
    };
    let both: &[&str] = if quic_on { &[quic, tcp] } else { &[tcp] };
    let boot = start(&root.path().join("n0"), both, &[]);
    let boot_quic = addr_with(&boot, if quic_on { "/quic-v1" } else { "/tcp/" });
    let boot_tcp = addr_with(&boot, "/tcp/");
    let mut nodes = vec![boot];
    nodes.push(start(
        &root.path().join("n1"),
        &[quic],
        &[boot_quic.clone()],
    ));
    nodes.push(start(&root.path().join("n2"), &[tcp], &[boot_tcp.clone()]));
    nodes.push(start(&root.path().join("n3"), both, &[boot_tcp]));

    // Discovery through the bootstrap node alone.
    wait_until("every node to see 3 peers", Duration::from_secs(60), || {
        nodes
            .iter()
            .all(|n| json(&n.control, "/peers").as_array().unwrap().len() >= 3)
    });
    let all_addrs: Vec<String> = nodes
        .iter()
        .flat_map(|n| json(&n.control, "/peers").as_array().unwrap().clone())
        .map(|p| p["addr"].as_str().unwrap().to_owned())
        .collect();
    if quic_on {
        assert!(
            all_addrs.iter().any(|a| a.contains("/quic-v1")),
            "no QUIC connection: {all_addrs:?}"
        );
    } else {
        eprintln!("built without the quic feature: TCP only");
    }
    assert!(
        all_addrs.iter().any(|a| a.contains("/tcp/")),
        "no TCP connection: {all_addrs:?}"
    );

    // `commonweight peers` prints the table.
    let out = Command::new(BIN)
        .arg("peers")
        .arg("--data-dir")
        .arg(&nodes[3].dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "peers failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("3 peers") && text.contains("direct"),
        "{text}"
    );

    // Gossip from node 2 reaches the three others.
    let message = b"hello from node 2";
    wait_until("gossip to publish", Duration::from_secs(30), || {
        http(&nodes[2].control, "POST", "/gossip", message).0 == 200
    });
    let want_hex: String = message.iter().map(|b| format!("{b:02x}")).collect();
    for node in [&nodes[0], &nodes[1], &nodes[3]] {
        wait_until("gossip delivery", Duration::from_secs(20), || {
            json(&node.control, "/gossip")
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["data_hex"] == want_hex.as_str())
        });
    }

    // A 64 MiB blob put on nodes 0, 1, 2 and fetched by node 3 from all three.
    let blob = pseudo_random_bytes(64 << 20, 11);
    let mut hash = String::new();
    for node in &nodes[..3] {
        let (code, body) = http(&node.control, "POST", "/blobs", &blob);
        assert_eq!(code, 200);
        hash = serde_json::from_slice::<String>(&body).unwrap();
    }
    let mut fetched = serde_json::Value::Null;
    wait_until("the blob fetch", Duration::from_secs(60), || {
        let (code, body) = http(&nodes[3].control, "POST", &format!("/fetch/{hash}"), b"");
        if code == 200 {
            fetched = serde_json::from_slice(&body).unwrap();
            return fetched["providers"].as_u64() == Some(3);
        }
        false
    });
    assert_eq!(fetched["bytes"].as_u64(), Some(blob.len() as u64));
    let stored = std::fs::read(nodes[3].dir.join("blobs").join(&hash)).unwrap();
    assert!(stored == blob, "fetched blob differs");

    // SIGTERM stops every node cleanly: exit status 0, control address file removed.
    for node in &mut nodes {
        let pid = node.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
    }
    for node in &mut nodes {
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = node.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "node did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "node exited with {status}");
        assert!(!node.dir.join("control.addr").exists());
    }
}
