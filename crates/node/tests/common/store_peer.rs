//! A storage node on real libp2p TCP at 127.0.0.1, shared by the store-over-libp2p test and its benchmark.

use std::sync::Arc;
use std::time::{Duration, Instant};

use net::{Identity, NetClient, NetConfig};
use node::storage::StoreNode;
use store::LocalStore;
use types::limits::store::QUOTA_BYTES_DEFAULT;
use types::PeerId;

pub struct Peer {
    pub client: NetClient,
    pub addr: String,
    pub node: StoreNode,
    _dir: tempfile::TempDir,
}

impl Peer {
    #[allow(dead_code)] // The benchmark does not need it.
    pub fn id(&self) -> PeerId {
        self.client.local_peer()
    }
}

pub async fn start_peer(bootstrap: Option<&str>) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let config = NetConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        bootstrap: bootstrap.into_iter().map(String::from).collect(),
        autonat_only_global_ips: false,
        ..NetConfig::default()
    };
    let (client, mut events, event_loop) = net::new(&Identity::generate(), config).unwrap();
    tokio::spawn(event_loop.run());
    // Drain events so the bounded channel never stalls the event loop; gossip is not used here.
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = loop {
        if let Some(addr) = client.listen_addrs().await.unwrap().into_iter().next() {
            break addr;
        }
        assert!(Instant::now() < deadline, "node did not start listening");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let store = Arc::new(LocalStore::open(dir.path().join("store"), QUOTA_BYTES_DEFAULT).unwrap());
    let node = StoreNode::start(client.clone(), store, None).await.unwrap();
    Peer {
        client,
        addr,
        node,
        _dir: dir,
    }
}

/// Waits until every peer in `peers` has at least `want` connections.
pub async fn wait_for_peers(peers: &[&Peer], want: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let mut counts = Vec::new();
        for peer in peers {
            counts.push(peer.client.peers().await.map(|p| p.len()).unwrap_or(0));
        }
        if counts.iter().all(|&c| c >= want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "peer counts {counts:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
