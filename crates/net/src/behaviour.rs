//! The composed libp2p behaviour: every protocol a node speaks, and how each is configured.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    autonat, connection_limits, dcutr, gossipsub, identify, kad, mdns, ping, relay,
    request_response, StreamProtocol,
};
use types::limits::net as limits;

use crate::codec::{BlobCodec, BLOB_PROTOCOL};
use crate::config::NetConfig;

pub(crate) const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/commonweight/kad/1");
pub(crate) const IDENTIFY_PROTOCOL: &str = "/commonweight/id/1";
/// Room for the gossipsub frame around a payload: signature, key, topic, sequence number.
const GOSSIP_FRAME_OVERHEAD_BYTES: usize = 1024;

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub limits: connection_limits::Behaviour,
    pub relay_client: relay::client::Behaviour,
    pub relay_server: Toggle<relay::Behaviour>,
    pub dcutr: dcutr::Behaviour,
    pub autonat: autonat::Behaviour,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    pub gossipsub: gossipsub::Behaviour,
    pub blobs: request_response::Behaviour<BlobCodec>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum BehaviourError {
    #[error("gossipsub config: {0}")]
    Gossipsub(String),
    #[error("mdns: {0}")]
    Mdns(#[from] std::io::Error),
}

impl Behaviour {
    pub(crate) fn new(
        key: &Keypair,
        relay_client: relay::client::Behaviour,
        config: &NetConfig,
    ) -> Result<Behaviour, BehaviourError> {
        let peer_id = key.public().to_peer_id();
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(limits::CONNECTIONS_ESTABLISHED_MAX))
            .with_max_established_per_peer(Some(limits::CONNECTIONS_PER_PEER_MAX))
            .with_max_pending_incoming(Some(limits::CONNECTIONS_PENDING_INCOMING_MAX))
            .with_max_pending_outgoing(Some(limits::CONNECTIONS_PENDING_OUTGOING_MAX));
        // A relay server is configured only on publicly reachable nodes, so it serves from the
        // start rather than waiting for AutoNAT to confirm an external address (which it never
        // does for private address ranges).
        let relay_server = config.relay_server.then(|| {
            let mut relay = relay::Behaviour::new(peer_id, relay_config());
            relay.set_status(Some(relay::Status::Enable));
            relay
        });
        let autonat_config = autonat::Config {
            only_global_ips: config.autonat_only_global_ips,
            ..autonat::Config::default()
        };
        let mdns = if config.mdns {
            Some(mdns::tokio::Behaviour::new(
                mdns::Config::default(),
                peer_id,
            )?)
        } else {
            None
        };
        let blobs = request_response::Behaviour::new(
            [(BLOB_PROTOCOL, request_response::ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(Duration::from_millis(limits::BLOB_REQUEST_TIMEOUT_MS))
                .with_max_concurrent_streams(limits::BLOB_STREAMS_PER_CONNECTION_MAX),
        );
        Ok(Behaviour {
            limits: connection_limits::Behaviour::new(limits),
            relay_client,
            relay_server: relay_server.into(),
            dcutr: dcutr::Behaviour::new(peer_id),
            autonat: autonat::Behaviour::new(peer_id, autonat_config),
            // Push new listen addresses (a relay reservation's circuit address appears only after
            // connecting), so peers' DHT entries learn how to reach a node behind NAT.
            identify: identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                    .with_push_listen_addr_updates(true),
            ),
            ping: ping::Behaviour::new(ping::Config::new()),
            kad: new_kad(peer_id, config),
            mdns: mdns.into(),
            gossipsub: new_gossipsub(key)?,
            blobs,
        })
    }
}

fn relay_config() -> relay::Config {
    relay::Config {
        max_reservations: limits::RELAY_RESERVATIONS_MAX,
        max_circuits: limits::RELAY_CIRCUITS_MAX,
        max_circuit_bytes: limits::RELAY_CIRCUIT_BYTES_MAX,
        max_circuit_duration: Duration::from_millis(limits::RELAY_CIRCUIT_DURATION_MS),
        ..relay::Config::default()
    }
}

fn new_kad(peer_id: libp2p::PeerId, config: &NetConfig) -> kad::Behaviour<kad::store::MemoryStore> {
    let mut kad_config = kad::Config::new(KAD_PROTOCOL);
    kad_config
        .set_query_timeout(Duration::from_millis(limits::KAD_QUERY_TIMEOUT_MS))
        .set_max_packet_size(limits::KAD_PACKET_BYTES_MAX)
        .set_periodic_bootstrap_interval(Some(Duration::from_millis(
            limits::KAD_BOOTSTRAP_INTERVAL_MS,
        )));
    let mut kad =
        kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
    // Without a confirmed external address kad stays a client; set the mode from config instead.
    kad.set_mode(Some(if config.dht_server {
        kad::Mode::Server
    } else {
        kad::Mode::Client
    }));
    kad
}

fn new_gossipsub(key: &Keypair) -> Result<gossipsub::Behaviour, BehaviourError> {
    let config = gossipsub::ConfigBuilder::default()
        .heartbeat_interval(Duration::from_millis(limits::GOSSIP_HEARTBEAT_MS))
        // Strict: only signed messages with a source and sequence number are accepted.
        .validation_mode(gossipsub::ValidationMode::Strict)
        // Messages are forwarded only after the app's verdict.
        .validate_messages()
        .max_transmit_size(limits::GOSSIP_MESSAGE_BYTES_MAX + GOSSIP_FRAME_OVERHEAD_BYTES)
        .build()
        .map_err(|e| BehaviourError::Gossipsub(e.to_string()))?;
    let mut gossipsub =
        gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), config)
            .map_err(|e| BehaviourError::Gossipsub(e.to_string()))?;
    // The IP colocation penalty (more than 10 peers on one IP) is meant for distinct hosts behind
    // one address; nodes on one host's loopback (tests, benchmarks, a local cluster) are exempt,
    // and no remote peer can appear on a loopback address.
    let score_params = gossipsub::PeerScoreParams {
        ip_colocation_factor_whitelist: [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]
        .into(),
        ..gossipsub::PeerScoreParams::default()
    };
    gossipsub
        .with_peer_score(score_params, gossipsub::PeerScoreThresholds::default())
        .map_err(BehaviourError::Gossipsub)?;
    Ok(gossipsub)
}

/// Score parameters for one topic. Rejected messages cost a peer heavily (one puts it at the
/// publish threshold). Mesh delivery-rate penalties (P3, P3b) are off: round traffic is bursty, and
/// a quiet topic between rounds would otherwise graylist honest peers.
pub(crate) fn topic_score_params() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        topic_weight: 0.5,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 100.0,
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_cap: 100.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -100.0,
        invalid_message_deliveries_decay: 0.5,
        ..gossipsub::TopicScoreParams::default()
    }
}
