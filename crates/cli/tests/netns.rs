//! Network-namespace tests (root only, behind `COMMONWEIGHT_NETNS_TESTS=1`):
//! 1. a blob fetched across a veth pair shaped to 100 Mbit/s and a 100 ms round trip must reach
//!    at least 80% of the shaped rate, over QUIC and over TCP;
//! 2. a node behind a namespace NAT (iptables MASQUERADE) is reached through a relay node, over a
//!    link shaped the same way.
//!
//! Shaping: the rate is `tc tbf` (or netem's `rate`). The delay is `tc netem` when the kernel has
//! `sch_netem`; otherwise (this dev VM's kernel has neither netem nor fq/etf) each side's
//! PREROUTING hook sends packets to an iptables NFQUEUE whose packets are released after the delay
//! by a thread of this test (`support/nfqueue_delay.rs`): the packets stay in the kernel, only
//! their release time is decided in userspace. `COMMONWEIGHT_NETNS_DELAY_MS` sets the one-way
//! delay (default 50, so a 100 ms round trip); the measured ping round trip is printed and checked.
//!
//! Every node is a real `commonweight node` process run with `ip netns exec`; the control API is
//! reached with `curl` inside the same namespace.

#[path = "support/nfqueue_delay.rs"]
mod nfqueue_delay;
#[path = "support/plain_tcp.rs"]
mod plain_tcp;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_commonweight");
const SHAPED_MBIT: f64 = 100.0;

/// The tests run one at a time: a throughput measurement must not share the CPU with the other.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn enabled() -> bool {
    std::env::var("COMMONWEIGHT_NETNS_TESTS").as_deref() == Ok("1")
}

fn sh(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn must(cmd: &str) {
    assert!(sh(cmd), "command failed: {cmd}");
}

/// Namespaces made by a test, deleted on drop (which also removes their veths).
struct Namespaces(Vec<String>);

impl Namespaces {
    fn new(names: &[&str]) -> Namespaces {
        for n in names {
            let _ = sh(&format!("ip netns del {n} 2>/dev/null"));
            must(&format!("ip netns add {n} && ip -n {n} link set lo up"));
        }
        Namespaces(names.iter().map(|s| s.to_string()).collect())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = sh(&format!("ip netns del {n}"));
        }
    }
}

fn veth(a_ns: &str, a_dev: &str, a_ip: &str, b_ns: &str, b_dev: &str, b_ip: &str) {
    must(&format!("ip link add {a_dev} type veth peer name {b_dev}"));
    must(&format!(
        "ip link set {a_dev} netns {a_ns} && ip link set {b_dev} netns {b_ns}"
    ));
    must(&format!(
        "ip -n {a_ns} addr add {a_ip} dev {a_dev} && ip -n {a_ns} link set {a_dev} up"
    ));
    must(&format!(
        "ip -n {b_ns} addr add {b_ip} dev {b_dev} && ip -n {b_ns} link set {b_dev} up"
    ));
}

/// Size of the blob sent across the shaped link (`COMMONWEIGHT_NETNS_BLOB_MIB`, default 256:
/// about 21 s at 100 Mbit/s, so slow start and the DHT lookup weigh little in the rate).
fn blob_mib() -> u32 {
    std::env::var("COMMONWEIGHT_NETNS_BLOB_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn one_way_delay_ms() -> u64 {
    std::env::var("COMMONWEIGHT_NETNS_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

/// The shaping of one veth pair; dropping it stops the delay threads (after the nodes stop).
struct Shaping {
    description: String,
    delays: Vec<nfqueue_delay::NfqueueDelay>,
}

impl Shaping {
    fn report(self) {
        for delay in self.delays {
            let stats = delay.finish();
            eprintln!(
                "nfqueue delay: {} packets held, released in {} batches",
                stats.packets, stats.verdict_batches
            );
        }
    }
}

/// Shapes both directions of the veth pair (`ns`, `dev`) x 2: `SHAPED_MBIT` each way, and
/// `one_way_delay_ms()` each way. Uses netem when the kernel has it, else tbf + NFQUEUE delay.
fn shape(ends: [(&str, &str); 2]) -> Shaping {
    let delay_ms = one_way_delay_ms();
    let netem = |ns: &str, dev: &str| {
        format!(
            "ip netns exec {ns} tc qdisc add dev {dev} root netem delay {delay_ms}ms \
             rate {SHAPED_MBIT}mbit limit 100000 2>/dev/null"
        )
    };
    if sh(&netem(ends[0].0, ends[0].1)) {
        must(&netem(ends[1].0, ends[1].1));
        return Shaping {
            description: format!(
                "netem delay {delay_ms} ms each way, rate {SHAPED_MBIT} Mbit/s each way"
            ),
            delays: Vec::new(),
        };
    }
    let mut delays = Vec::new();
    for (ns, dev) in ends {
        must(&format!(
            "ip netns exec {ns} tc qdisc add dev {dev} root tbf rate {SHAPED_MBIT}mbit \
             burst 128kb latency 100ms"
        ));
        // Packets arriving on `dev` wait in queue 0 of this namespace until the thread lets them in.
        delays.push(nfqueue_delay::NfqueueDelay::start(
            ns,
            0,
            Duration::from_millis(delay_ms),
        ));
        must(&format!(
            "ip netns exec {ns} iptables -t mangle -A PREROUTING -i {dev} -j NFQUEUE --queue-num 0"
        ));
    }
    Shaping {
        description: format!(
            "tbf rate {SHAPED_MBIT} Mbit/s each way + NFQUEUE delay {delay_ms} ms each way \
             (no sch_netem in this kernel)"
        ),
        delays,
    }
}

/// The TCP congestion control algorithm of namespace `ns` (for the report).
fn congestion_control(ns: &str) -> String {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "sysctl",
            "-n",
            "net.ipv4.tcp_congestion_control",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Checks that the round trip across a shaped link is what the shaping promises, measured as
/// the fastest of 5 TCP handshakes from `ns` to `addr` (a node's TCP listen address).
fn check_rtt(ns: &str, addr: &str) -> f64 {
    let rtt = nfqueue_delay::tcp_connect_ms(ns, addr.parse().unwrap(), 5);
    let want = 2.0 * one_way_delay_ms() as f64;
    eprintln!("TCP handshake {ns} -> {addr}: {rtt:.1} ms round trip (shaped: {want} ms)");
    assert!(
        rtt >= want * 0.95 && rtt <= want + 50.0,
        "round trip {rtt} ms, want about {want} ms"
    );
    rtt
}

struct NodeProcess {
    child: Child,
    ns: String,
    control: String,
    log: PathBuf,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "--- log of the node in {} (last 40 lines, newest first):",
                self.ns
            );
            for line in tail {
                eprintln!("    {line}");
            }
        }
    }
}

/// CPU time of a process, summed over its threads, from `/proc/PID/task/*/schedstat`.
#[derive(Debug, Clone, Copy, Default)]
struct CpuTimes {
    /// Seconds spent running on a CPU.
    run_s: f64,
    /// Seconds spent runnable but waiting for a CPU (the sign of a starved process).
    wait_s: f64,
}

impl NodeProcess {
    fn cpu(&self) -> CpuTimes {
        let tasks = format!("/proc/{}/task", self.child.id());
        let mut times = CpuTimes::default();
        for task in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            let fields: Vec<f64> = stat
                .split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect();
            if let [run_ns, wait_ns, ..] = fields[..] {
                times.run_s += run_ns / 1e9;
                times.wait_s += wait_ns / 1e9;
            }
        }
        times
    }
}

/// What a node used and waited for between two `cpu()` readings, for the report.
fn cpu_used(before: CpuTimes, after: CpuTimes, wall_s: f64) -> String {
    format!(
        "ran {:.1} s ({:.2} cores), waited for a CPU {:.1} s",
        after.run_s - before.run_s,
        (after.run_s - before.run_s) / wall_s,
        after.wait_s - before.wait_s
    )
}

fn start(ns: &str, dir: &Path, args: &[String]) -> NodeProcess {
    let log = std::fs::File::create(dir.with_extension("log")).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", ns, BIN, "node", "--data-dir"])
        .arg(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut node = NodeProcess {
        child,
        ns: ns.to_owned(),
        control: String::new(),
        log: dir.with_extension("log"),
    };
    let file = dir.join("control.addr");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !file.exists() {
        assert!(
            Instant::now() < deadline && node.child.try_wait().unwrap().is_none(),
            "node in {ns} did not start: {}",
            std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    node.control = std::fs::read_to_string(file).unwrap().trim().to_owned();
    node
}

/// curl inside the node's namespace: (HTTP code, body).
fn curl(node: &NodeProcess, method: &str, path: &str, body_file: Option<&Path>) -> (u16, String) {
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &node.ns,
        "curl",
        "-s",
        "-m",
        "300",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
    ]);
    if let Some(f) = body_file {
        cmd.arg("--data-binary").arg(format!("@{}", f.display()));
    }
    cmd.arg(format!("http://{}{}", node.control, path));
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn json(node: &NodeProcess, path: &str) -> serde_json::Value {
    let (code, body) = curl(node, "GET", path, None);
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn peer_id(node: &NodeProcess) -> String {
    json(node, "/status")["peer_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The node's listen address containing `needle`, ending in `/p2p/<libp2p peer id>`.
fn listen_addr(node: &NodeProcess, needle: &str) -> String {
    let status = json(node, "/status");
    status["listen_addrs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .find(|a| a.contains(needle))
        .unwrap_or_else(|| panic!("no address with {needle} in {status}"))
        .to_owned()
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn shaped_link_blob_transfer_reaches_80_percent() {
    if !enabled() {
        eprintln!("skipped: set COMMONWEIGHT_NETNS_TESTS=1 (needs root, ip, tc, curl)");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _ns = Namespaces::new(&["cwt_a", "cwt_b"]);
    veth(
        "cwt_a",
        "cwta0",
        "10.99.1.1/24",
        "cwt_b",
        "cwtb0",
        "10.99.1.2/24",
    );
    let shaping = shape([("cwt_a", "cwta0"), ("cwt_b", "cwtb0")]);
    eprintln!("link shaping: {}", shaping.description);
    let root = tempfile::tempdir().unwrap();
    let a_args = [
        "--listen",
        "/ip4/10.99.1.1/udp/4001/quic-v1",
        "--listen",
        "/ip4/10.99.1.1/tcp/4001",
    ];
    let a = start("cwt_a", &root.path().join("a"), &a_args.map(String::from));
    check_rtt("cwt_b", "10.99.1.1:4001");
    let blob_path = root.path().join("blob");
    let blob: Vec<u8> = (0..blob_mib() << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&blob_path, &blob).unwrap();
    let (code, hash) = curl(&a, "POST", "/blobs", Some(&blob_path));
    assert_eq!(code, 200, "{hash}");
    let hash: String = serde_json::from_str(&hash).unwrap();
    // The reference: one plain TCP flow carrying as many bytes across the same link, now.
    let plain_mbit = plain_tcp::bulk_copy_mbit(
        "cwt_a",
        "10.99.1.1:5001".parse().unwrap(),
        "cwt_b",
        blob.len() as u64,
    );
    eprintln!(
        "NETNS plain TCP: {} MiB at {plain_mbit:.1} Mbit/s = {:.0}% of {SHAPED_MBIT} Mbit/s \
         (one std TCP flow, congestion control {})",
        blob.len() >> 20,
        plain_mbit / SHAPED_MBIT * 100.0,
        congestion_control("cwt_a")
    );

    let mut failures = Vec::new();
    for (name, listen, boot) in [
        (
            "QUIC",
            "/ip4/10.99.1.2/udp/0/quic-v1",
            listen_addr(&a, "/udp/4001/quic-v1/"),
        ),
        ("TCP", "/ip4/10.99.1.2/tcp/0", listen_addr(&a, "/tcp/4001/")),
    ] {
        let dir = root.path().join(format!("b-{name}"));
        let args = [
            "--listen".to_owned(),
            listen.to_owned(),
            "--bootstrap".to_owned(),
            boot,
        ];
        let b = start("cwt_b", &dir, &args);
        wait_until("b to connect", Duration::from_secs(30), || {
            json(&b, "/peers").as_array().unwrap().len() == 1
        });
        eprintln!("NETNS {name}: b's peers: {}", json(&b, "/peers"));
        let mut fetched = serde_json::Value::Null;
        let (a_cpu, b_cpu, fetch_started) = (a.cpu(), b.cpu(), Instant::now());
        wait_until("the fetch", Duration::from_secs(120), || {
            let (code, body) = curl(&b, "POST", &format!("/fetch/{hash}"), None);
            if code == 200 {
                fetched = serde_json::from_str(&body).unwrap();
            }
            code == 200
        });
        let wall_s = fetch_started.elapsed().as_secs_f64();
        eprintln!(
            "NETNS {name}: during the fetch ({wall_s:.1} s), provider a {}; fetcher b {}",
            cpu_used(a_cpu, a.cpu(), wall_s),
            cpu_used(b_cpu, b.cpu(), wall_s)
        );
        let secs = fetched["secs"].as_f64().unwrap();
        let mbit = blob.len() as f64 * 8.0 / secs / 1e6;
        let share = mbit / SHAPED_MBIT;
        eprintln!(
            "NETNS {name}: {} MiB in {secs:.2} s = {mbit:.1} Mbit/s = {:.0}% of {SHAPED_MBIT} Mbit/s \
             = {:.0}% of plain TCP ({})",
            blob.len() >> 20,
            share * 100.0,
            mbit / plain_mbit * 100.0,
            shaping.description
        );
        assert_eq!(std::fs::read(dir.join("blobs").join(&hash)).unwrap(), blob);
        if share < 0.8 {
            failures.push(format!("{name}: {:.0}%", share * 100.0));
        }
    }
    drop(a);
    shaping.report();
    assert!(
        failures.is_empty(),
        "below 80% of the shaped rate: {failures:?}"
    );
}

#[test]
fn node_behind_nat_is_reached_through_a_relay() {
    if !enabled() {
        eprintln!("skipped: set COMMONWEIGHT_NETNS_TESTS=1 (needs root, ip, iptables, curl)");
        return;
    }
    // cwt_pub: relay R and client C (public side, 10.99.2.0/24).
    // cwt_gw: NAT gateway (10.99.2.2 public, 192.168.77.1 private), MASQUERADE.
    // cwt_priv: node N (192.168.77.2), default route through the gateway; nobody can dial it.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _ns = Namespaces::new(&["cwt_pub", "cwt_gw", "cwt_priv"]);
    veth(
        "cwt_pub",
        "cwtp0",
        "10.99.2.1/24",
        "cwt_gw",
        "cwtg0",
        "10.99.2.2/24",
    );
    veth(
        "cwt_priv",
        "cwtn0",
        "192.168.77.2/24",
        "cwt_gw",
        "cwtg1",
        "192.168.77.1/24",
    );
    let shaping = shape([("cwt_pub", "cwtp0"), ("cwt_gw", "cwtg0")]);
    eprintln!("public link shaping: {}", shaping.description);
    must("ip -n cwt_priv route add default via 192.168.77.1");
    must("ip netns exec cwt_gw sysctl -qw net.ipv4.ip_forward=1");
    must("ip netns exec cwt_gw iptables -t nat -A POSTROUTING -o cwtg0 -j MASQUERADE");
    // A strict NAT: from the private side, only the relay's port may be dialed. So N cannot dial
    // C itself once the DHT tells it about C, and C can reach N only through the relay.
    must(
        "ip netns exec cwt_gw iptables -A FORWARD -i cwtg1 -o cwtg0 -p tcp --dport 4002 -j ACCEPT \
         && ip netns exec cwt_gw iptables -A FORWARD -i cwtg1 -o cwtg0 -m conntrack --ctstate NEW -j DROP",
    );
    // The private node cannot be reached from the public side.
    assert!(!sh(
        "ip netns exec cwt_pub curl -s -m 2 http://192.168.77.2:1 2>/dev/null"
    ));

    let root = tempfile::tempdir().unwrap();
    let r_args = ["--listen", "/ip4/10.99.2.1/tcp/4002", "--relay-server"].map(String::from);
    let r = start("cwt_pub", &root.path().join("r"), &r_args);
    check_rtt("cwt_gw", "10.99.2.1:4002");
    let relay = listen_addr(&r, "/tcp/4002/");
    let n_args = [
        "--listen".to_owned(),
        "/ip4/192.168.77.2/tcp/0".to_owned(),
        "--listen".to_owned(),
        format!("{relay}/p2p-circuit"),
        "--bootstrap".to_owned(),
        relay.clone(),
    ];
    let n = start("cwt_priv", &root.path().join("n"), &n_args);
    let n_id = peer_id(&n);
    wait_until("the relay reservation", Duration::from_secs(30), || {
        json(&n, "/status")["listen_addrs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap().contains("p2p-circuit"))
    });
    let c_args = [
        "--listen".to_owned(),
        "/ip4/10.99.2.1/tcp/0".to_owned(),
        "--bootstrap".to_owned(),
        relay,
    ];
    let c = start("cwt_pub", &root.path().join("c"), &c_args);
    // C learns N from the DHT (via R) and can only reach it through the relay.
    wait_until("C to connect to N", Duration::from_secs(60), || {
        json(&c, "/peers")
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["peer"] == n_id.as_str())
    });
    let row = json(&c, "/peers")
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer"] == n_id.as_str())
        .cloned()
        .unwrap();
    eprintln!("NETNS relay: C sees N as {row}");
    // The first connection from C to N must have gone through the relay (DCUtR may add a direct
    // one through the NAT's mapping afterwards, which is the point of DCUtR).
    let c_log = std::fs::read_to_string(&c.log).unwrap();
    let first = c_log
        .lines()
        .find(|l| l.contains("peer connected") && l.contains(n_id.as_str()))
        .unwrap_or_else(|| panic!("no connection to N in C's log:\n{c_log}"));
    eprintln!("NETNS relay: C's log: {first}");
    assert!(first.contains("relayed=true"), "{first}");
    // Gossip crosses the relayed connection.
    let msg = root.path().join("msg");
    std::fs::write(&msg, b"through the relay").unwrap();
    wait_until("gossip publish", Duration::from_secs(30), || {
        curl(&c, "POST", "/gossip", Some(&msg)).0 == 200
    });
    let want: String = b"through the relay"
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    wait_until("gossip at N", Duration::from_secs(30), || {
        json(&n, "/gossip")
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["data_hex"] == want.as_str())
    });
    eprintln!("NETNS relay: gossip from C reached N through the relay");
    drop((c, n, r));
    shaping.report();
}
