//! Network configuration: listen and bootstrap addresses (as multiaddr strings) and switches.

use types::limits::net as limits;

/// How a node joins the network. Addresses are multiaddr strings, so no libp2p type leaves `net`.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Addresses to listen on, e.g. `/ip4/0.0.0.0/udp/0/quic-v1`, `/ip4/0.0.0.0/tcp/0`, `/memory/7`.
    pub listen: Vec<String>,
    /// Peers to join through. With a `/p2p/<id>` suffix they go straight into the DHT; without
    /// one they are dialed and added once their id is known.
    pub bootstrap: Vec<String>,
    /// Discover peers on the local network with mDNS. Off in tests (it would find other tests).
    pub mdns: bool,
    /// Serve as a relay (circuit relay v2) for peers behind NAT. For publicly reachable nodes.
    pub relay_server: bool,
    /// Answer DHT queries (Kademlia server mode). Nodes behind NAT may turn this off.
    pub dht_server: bool,
    /// AutoNAT only believes dial-backs to global IPs. Off for loopback and namespace tests.
    pub autonat_only_global_ips: bool,
}

impl Default for NetConfig {
    fn default() -> NetConfig {
        NetConfig {
            listen: with_quic("/ip4/0.0.0.0/udp/0/quic-v1", "/ip4/0.0.0.0/tcp/0"),
            bootstrap: Vec::new(),
            mdns: false,
            relay_server: false,
            dht_server: true,
            autonat_only_global_ips: true,
        }
    }
}

impl NetConfig {
    /// A config for in-process tests over libp2p's memory transport.
    pub fn memory(port: u64) -> NetConfig {
        NetConfig {
            listen: vec![format!("/memory/{port}")],
            autonat_only_global_ips: false,
            ..NetConfig::default()
        }
    }

    /// A config that listens on 127.0.0.1 with QUIC and TCP on free ports.
    pub fn loopback() -> NetConfig {
        NetConfig {
            listen: with_quic("/ip4/127.0.0.1/udp/0/quic-v1", "/ip4/127.0.0.1/tcp/0"),
            autonat_only_global_ips: false,
            ..NetConfig::default()
        }
    }

    pub(crate) fn check(&self) -> Result<(), crate::NetError> {
        if self.listen.len() > limits::LISTEN_ADDRS_MAX {
            return Err(crate::NetError::TooMany {
                what: "listen addresses",
                max: limits::LISTEN_ADDRS_MAX,
            });
        }
        if self.bootstrap.len() > limits::BOOTSTRAP_ADDRS_MAX {
            return Err(crate::NetError::TooMany {
                what: "bootstrap addresses",
                max: limits::BOOTSTRAP_ADDRS_MAX,
            });
        }
        Ok(())
    }
}

/// The QUIC and TCP listen addresses, or TCP alone when built without the `quic` feature.
fn with_quic(quic: &str, tcp: &str) -> Vec<String> {
    if cfg!(feature = "quic") {
        vec![quic.to_owned(), tcp.to_owned()]
    } else {
        vec![tcp.to_owned()]
    }
}
