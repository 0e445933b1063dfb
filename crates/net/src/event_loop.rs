//! The event loop: owns the libp2p `Swarm`, runs the app's `Command`s, and turns swarm events
//! into `NetEvent`s. One task; everything it holds is bounded by `types::limits::net`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use libp2p::core::transport::MemoryTransport;
use libp2p::core::upgrade;
use libp2p::core::Transport;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageId, TopicHash};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{
    autonat, dcutr, identify, kad, mdns, noise, ping, relay, tcp, yamux, Multiaddr, Swarm,
};
use tokio::sync::{mpsc, oneshot};
use types::limits::net as limits;
use types::PeerId;

use crate::behaviour::{topic_score_params, Behaviour, BehaviourEvent, KAD_PROTOCOL};
use crate::blob::{serve_chunk, BlobSource};
use crate::client::{Command, GossipId, GossipMessage, NetClient, NetEvent, PeerInfo, Verdict};
use crate::config::NetConfig;
use crate::identity::{from_libp2p, to_libp2p, Identity};
use crate::rate::RateLimiter;
use crate::wire::{self, BlobRequest, BlobResponse};
use crate::NetError;

type ChunkReply = oneshot::Sender<Result<BlobResponse, NetError>>;
type ProvidersReply = oneshot::Sender<Result<Vec<PeerId>, NetError>>;

/// Owns the swarm. Run it with `tokio::spawn(event_loop.run())`.
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetEvent>,
    blob_source: Option<Arc<dyn BlobSource>>,
    served_tx: mpsc::Sender<(ResponseChannel<BlobResponse>, BlobResponse)>,
    served_rx: mpsc::Receiver<(ResponseChannel<BlobResponse>, BlobResponse)>,
    serving: usize,
    pending_chunks: HashMap<OutboundRequestId, ChunkReply>,
    pending_providers: HashMap<kad::QueryId, (ProvidersReply, HashSet<PeerId>)>,
    /// Provider queries that found some providers, each due to be answered after a grace period.
    providers_due: FuturesUnordered<BoxFuture<'static, kad::QueryId>>,
    connections: HashMap<libp2p::PeerId, Vec<(ConnectionId, Multiaddr)>>,
    rtts: HashMap<libp2p::PeerId, Duration>,
    gossip_limiter: RateLimiter<libp2p::PeerId>,
    blob_limiter: RateLimiter<libp2p::PeerId>,
    /// Gossip handed to the app and not yet judged, oldest first.
    pending_validations: VecDeque<(MessageId, libp2p::PeerId)>,
    topics: HashSet<TopicHash>,
    bootstrapped: bool,
    events_dropped: u64,
    /// Serving as a relay: the operator says this node is publicly reachable, so its listen
    /// addresses are its external addresses (a relay hands them out in reservations, and
    /// libp2p's relay server stays off until it has one; AutoNAT cannot confirm private ones).
    relay_server: bool,
    /// Every configured listen address is loopback (tests): loopback may then be external too.
    loopback_only: bool,
    /// Relayed listen addresses not yet opened: each waits for a direct connection to its relay.
    relayed_listen: Vec<Multiaddr>,
}

/// Builds the swarm, starts listening and dials the bootstrap peers. Call inside a tokio runtime.
pub fn new(
    identity: &Identity,
    config: NetConfig,
) -> Result<(NetClient, mpsc::Receiver<NetEvent>, EventLoop), NetError> {
    config.check()?;
    let listen = parse_addrs(&config.listen)?;
    let loopback_only = listen.iter().all(is_loopback);
    let bootstrap = parse_addrs(&config.bootstrap)?;
    let mut swarm = build_swarm(identity, &config)?;
    // A relayed listen address (`<relay>/p2p/<id>/p2p-circuit`) is opened once the relay is
    // connected: opened now, the relay client's own dial would race the bootstrap dial to the same
    // peer and be refused ("already dialing"), and the reservation would never be made.
    let (relayed_listen, listen): (Vec<Multiaddr>, Vec<Multiaddr>) =
        listen.into_iter().partition(is_relayed);
    let mut dial_first = bootstrap;
    for addr in &relayed_listen {
        let relay = relay_of(addr)?;
        if !dial_first.contains(&relay) {
            dial_first.push(relay);
        }
    }
    for addr in listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Listen {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
    }
    let (command_tx, command_rx) = mpsc::channel(limits::COMMAND_QUEUE_LEN_MAX);
    let (event_tx, event_rx) = mpsc::channel(limits::EVENT_QUEUE_LEN_MAX);
    let (served_tx, served_rx) = mpsc::channel(limits::BLOB_SERVING_MAX);
    let mut event_loop = EventLoop {
        swarm,
        commands: command_rx,
        events: event_tx,
        blob_source: None,
        served_tx,
        served_rx,
        serving: 0,
        pending_chunks: HashMap::new(),
        pending_providers: HashMap::new(),
        providers_due: FuturesUnordered::new(),
        connections: HashMap::new(),
        rtts: HashMap::new(),
        gossip_limiter: RateLimiter::new(limits::GOSSIP_MESSAGES_PER_PEER_PER_S_MAX),
        blob_limiter: RateLimiter::new(limits::BLOB_REQUESTS_PER_PEER_PER_S_MAX),
        pending_validations: VecDeque::new(),
        topics: HashSet::new(),
        bootstrapped: false,
        events_dropped: 0,
        relay_server: config.relay_server,
        loopback_only,
        relayed_listen,
    };
    for addr in dial_first {
        event_loop.dial(addr)?;
    }
    let client = NetClient {
        commands: command_tx,
        local_peer: identity.peer_id(),
    };
    Ok((client, event_rx, event_loop))
}

fn parse_addrs(addrs: &[String]) -> Result<Vec<Multiaddr>, NetError> {
    addrs.iter().map(|a| parse_addr(a)).collect()
}

fn parse_addr(addr: &str) -> Result<Multiaddr, NetError> {
    addr.parse()
        .map_err(|e: libp2p::multiaddr::Error| NetError::Addr {
            addr: addr.to_owned(),
            reason: e.to_string(),
        })
}

fn transport_error(e: impl std::fmt::Display) -> NetError {
    NetError::Transport(e.to_string())
}

/// TCP (noise + yamux), QUIC, the in-process memory transport (tests), and relayed circuits.
fn build_swarm(identity: &Identity, config: &NetConfig) -> Result<Swarm<Behaviour>, NetError> {
    let builder = libp2p::SwarmBuilder::with_existing_identity(identity.keypair.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(transport_error)?;
    #[cfg(feature = "quic")]
    let builder = builder.with_quic();
    let swarm = builder
        .with_other_transport(
            |key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                Ok(MemoryTransport::default()
                    .upgrade(upgrade::Version::V1)
                    .authenticate(noise::Config::new(key)?)
                    .multiplex(yamux::Config::default()))
            },
        )
        .map_err(transport_error)?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(transport_error)?
        .with_behaviour(|key, relay_client| {
            Behaviour::new(key, relay_client, config)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })
        .map_err(transport_error)?
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(Duration::from_millis(
                limits::CONNECTION_IDLE_TIMEOUT_MS,
            ))
        })
        .build();
    Ok(swarm)
}

fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

/// The relay's own address in a relayed listen address: everything before `/p2p-circuit`, which
/// must end in the relay's `/p2p/<id>`.
fn relay_of(addr: &Multiaddr) -> Result<Multiaddr, NetError> {
    let relay: Multiaddr = addr
        .iter()
        .take_while(|p| !matches!(p, Protocol::P2pCircuit))
        .collect();
    match relay.iter().last() {
        Some(Protocol::P2p(_)) => Ok(relay),
        _ => Err(NetError::Addr {
            addr: addr.to_string(),
            reason: "a relayed listen address needs the relay's /p2p/<id> before /p2p-circuit"
                .into(),
        }),
    }
}

fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

impl EventLoop {
    pub async fn run(mut self) {
        let shutdown_reply = loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    None => break None,
                    Some(Command::Shutdown { reply }) => break Some(reply),
                    Some(command) => self.on_command(command),
                },
                Some(id) = self.providers_due.next() => self.answer_providers(id),
                Some((channel, response)) = self.served_rx.recv() => {
                    self.serving -= 1;
                    // The requester may have gone; nothing to do then.
                    let _ = self.swarm.behaviour_mut().blobs.send_response(channel, response);
                }
            }
        };
        if self.events_dropped > 0 {
            tracing::warn!(
                dropped = self.events_dropped,
                "network events dropped: the app fell behind"
            );
        }
        drop(self.swarm);
        if let Some(reply) = shutdown_reply {
            let _ = reply.send(());
        }
    }

    fn emit(&mut self, event: NetEvent) -> bool {
        match self.events.try_send(event) {
            Ok(()) => true,
            Err(_) => {
                self.events_dropped += 1;
                false
            }
        }
    }

    fn dial(&mut self, addr: Multiaddr) -> Result<(), NetError> {
        if let Some(Protocol::P2p(peer)) = addr.iter().last() {
            let without_peer: Multiaddr = addr
                .iter()
                .filter(|p| !matches!(p, Protocol::P2p(_)))
                .collect();
            if !is_relayed(&addr) {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, without_peer);
            }
        }
        self.swarm.dial(addr.clone()).map_err(|e| NetError::Dial {
            addr: addr.to_string(),
            reason: e.to_string(),
        })
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Listen { addr, reply } => {
                let result = parse_addr(&addr).and_then(|a| {
                    self.swarm
                        .listen_on(a)
                        .map(|_| ())
                        .map_err(|e| NetError::Listen {
                            addr,
                            reason: e.to_string(),
                        })
                });
                let _ = reply.send(result);
            }
            Command::Dial { addr, reply } => {
                let result = parse_addr(&addr).and_then(|a| self.dial(a));
                let _ = reply.send(result);
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.peer_infos());
            }
            Command::ListenAddrs { reply } => {
                let local = *self.swarm.local_peer_id();
                let addrs = self
                    .swarm
                    .listeners()
                    .map(|a| a.clone().with(Protocol::P2p(local)).to_string())
                    .collect();
                let _ = reply.send(addrs);
            }
            Command::Subscribe { topic, reply } => {
                let _ = reply.send(self.subscribe(&topic));
            }
            Command::Publish { topic, data, reply } => {
                let _ = reply.send(self.publish(&topic, &data));
            }
            Command::ReportValidation { id, verdict } => self.report_validation(id, verdict),
            Command::SetBlobSource { source } => self.blob_source = Some(source),
            Command::StartProviding { hash, reply } => {
                let key = kad::RecordKey::new(&hash.0);
                let result = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .start_providing(key)
                    .map(|_| ())
                    .map_err(|e| NetError::Dht(e.to_string()));
                let _ = reply.send(result);
            }
            Command::GetProviders { hash, reply } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_providers(kad::RecordKey::new(&hash.0));
                self.pending_providers.insert(id, (reply, HashSet::new()));
            }
            Command::RequestChunk {
                peer,
                request,
                reply,
            } => self.request_chunk(peer, request, reply),
            Command::Shutdown { .. } => unreachable!("handled in run"),
        }
    }

    fn peer_infos(&self) -> Vec<PeerInfo> {
        let mut out: Vec<PeerInfo> = self
            .connections
            .iter()
            .filter_map(|(peer, conns)| {
                let (_, addr) = conns.first()?;
                Some(PeerInfo {
                    peer: from_libp2p(peer)?,
                    addr: addr.to_string(),
                    relayed: conns.iter().all(|(_, a)| is_relayed(a)),
                    rtt_ms: self.rtts.get(peer).map(|d| d.as_secs_f64() * 1000.0),
                })
            })
            .collect();
        out.sort_by_key(|p| p.peer);
        out
    }

    fn subscribe(&mut self, topic: &str) -> Result<(), NetError> {
        if topic.len() > limits::GOSSIP_TOPIC_BYTES_MAX {
            return Err(NetError::TooLarge {
                what: "topic name",
                len: topic.len(),
                max: limits::GOSSIP_TOPIC_BYTES_MAX,
            });
        }
        let topic = IdentTopic::new(topic);
        if !self.topics.contains(&topic.hash()) && self.topics.len() >= limits::GOSSIP_TOPICS_MAX {
            return Err(NetError::TooMany {
                what: "topics",
                max: limits::GOSSIP_TOPICS_MAX,
            });
        }
        let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
        gossipsub
            .subscribe(&topic)
            .map_err(|e| NetError::Gossip(e.to_string()))?;
        gossipsub
            .set_topic_params(topic.clone(), topic_score_params())
            .map_err(|e| NetError::Gossip(e.to_owned()))?;
        self.topics.insert(topic.hash());
        Ok(())
    }

    fn publish(&mut self, topic: &str, data: &[u8]) -> Result<(), NetError> {
        let max = limits::GOSSIP_MESSAGE_BYTES_MAX - 1;
        if data.len() > max {
            return Err(NetError::TooLarge {
                what: "gossip payload",
                len: data.len(),
                max,
            });
        }
        let result = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(IdentTopic::new(topic), wire::encode_gossip(data));
        match result {
            Ok(_) => Ok(()),
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => Err(NetError::NoPeers),
            Err(e) => Err(NetError::Gossip(e.to_string())),
        }
    }

    fn report_validation(&mut self, id: GossipId, verdict: Verdict) {
        let Some(source) = to_libp2p(id.propagation_source) else {
            return;
        };
        let message_id = MessageId(id.message_id);
        self.pending_validations
            .retain(|(m, p)| !(m == &message_id && p == &source));
        let acceptance = match verdict {
            Verdict::Accept => MessageAcceptance::Accept,
            Verdict::Reject => MessageAcceptance::Reject,
            Verdict::Ignore => MessageAcceptance::Ignore,
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&message_id, &source, acceptance);
    }

    fn request_chunk(&mut self, peer: PeerId, request: BlobRequest, reply: ChunkReply) {
        let Some(peer) = to_libp2p(peer) else {
            let _ = reply.send(Err(NetError::BadPeer));
            return;
        };
        let id = self
            .swarm
            .behaviour_mut()
            .blobs
            .send_request(&peer, request);
        self.pending_chunks.insert(id, reply);
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                let local = *self.swarm.local_peer_id();
                if self.relay_server
                    && !is_relayed(&address)
                    && (self.loopback_only || !is_loopback(&address))
                {
                    self.swarm.add_external_address(address.clone());
                }
                self.emit(NetEvent::Listening {
                    addr: address.with(Protocol::P2p(local)).to_string(),
                });
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let addr = endpoint.get_remote_address().clone();
                if endpoint.is_dialer() && !is_relayed(&addr) {
                    // A dialed address that worked: good DHT material (covers bootstrap without /p2p).
                    let plain: Multiaddr = addr
                        .iter()
                        .filter(|p| !matches!(p, Protocol::P2p(_)))
                        .collect();
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, plain);
                }
                if !is_relayed(&addr) {
                    self.listen_through_relay(peer_id);
                }
                let conns = self.connections.entry(peer_id).or_default();
                conns.push((connection_id, addr.clone()));
                if conns.len() == 1 {
                    if let Some(peer) = from_libp2p(&peer_id) {
                        self.emit(NetEvent::PeerConnected {
                            peer,
                            addr: addr.to_string(),
                            relayed: is_relayed(&addr),
                        });
                    }
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                if let Some(conns) = self.connections.get_mut(&peer_id) {
                    conns.retain(|(id, _)| *id != connection_id);
                }
                if num_established == 0 {
                    self.connections.remove(&peer_id);
                    self.rtts.remove(&peer_id);
                    self.gossip_limiter.remove(&peer_id);
                    self.blob_limiter.remove(&peer_id);
                    if let Some(peer) = from_libp2p(&peer_id) {
                        self.emit(NetEvent::PeerDisconnected { peer });
                    }
                }
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    /// Opens the relayed listen addresses whose relay is `peer`, now directly connected.
    fn listen_through_relay(&mut self, peer: libp2p::PeerId) {
        let (ready, waiting): (Vec<Multiaddr>, Vec<Multiaddr>) =
            std::mem::take(&mut self.relayed_listen)
                .into_iter()
                .partition(|addr| {
                    relay_of(addr)
                        .ok()
                        .and_then(|r| r.iter().last().map(|p| p == Protocol::P2p(peer)))
                        .unwrap_or(false)
                });
        self.relayed_listen = waiting;
        for addr in ready {
            if let Err(e) = self.swarm.listen_on(addr.clone()) {
                tracing::warn!(%addr, error = %e, "cannot listen through the relay");
            }
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                self.on_identify(peer_id, info)
            }
            BehaviourEvent::Kad(event) => self.on_kad(event),
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                    self.maybe_dial(peer);
                }
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => self.on_gossip(propagation_source, message_id, message),
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                self.rtts.insert(peer, rtt);
            }
            BehaviourEvent::Autonat(autonat::Event::StatusChanged { new, .. }) => {
                self.emit(NetEvent::Reachability {
                    public: matches!(new, autonat::NatStatus::Public(_)),
                });
            }
            BehaviourEvent::RelayClient(relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                ..
            }) => {
                if let Some(relay) = from_libp2p(&relay_peer_id) {
                    self.emit(NetEvent::RelayReservation { relay });
                }
            }
            BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result: Ok(_),
            }) => {
                if let Some(peer) = from_libp2p(&remote_peer_id) {
                    self.emit(NetEvent::HolePunched { peer });
                }
            }
            BehaviourEvent::Blobs(event) => self.on_blobs(event),
            _ => {}
        }
    }

    fn on_identify(&mut self, peer_id: libp2p::PeerId, info: identify::Info) {
        if !info.protocols.contains(&KAD_PROTOCOL) {
            return;
        }
        for addr in info.listen_addrs.into_iter().take(limits::LISTEN_ADDRS_MAX) {
            self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
        }
        if !self.bootstrapped {
            // The first DHT peer: find our neighbours now instead of at the next periodic bootstrap.
            self.bootstrapped = self.swarm.behaviour_mut().kad.bootstrap().is_ok();
        }
    }

    fn maybe_dial(&mut self, peer: libp2p::PeerId) {
        if peer == *self.swarm.local_peer_id() || self.connections.contains_key(&peer) {
            return;
        }
        if self.connections.len() >= limits::PEERS_DIAL_TARGET {
            return;
        }
        // Uses the addresses kad (or mdns) knows; a failure is just a peer we do not reach.
        let _ = self.swarm.dial(peer);
    }

    fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::RoutingUpdated { peer, .. } => self.maybe_dial(peer),
            kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetProviders(result),
                step,
                ..
            } => self.on_providers(id, result, step.last),
            _ => {}
        }
    }

    fn on_providers(&mut self, id: kad::QueryId, result: kad::GetProvidersResult, last: bool) {
        let Some((_, found)) = self.pending_providers.get_mut(&id) else {
            return;
        };
        let had_providers = !found.is_empty();
        let finished = match result {
            Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) => {
                found.extend(providers.iter().filter_map(from_libp2p));
                last || found.len() >= limits::KAD_PROVIDERS_MAX
            }
            Ok(kad::GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) => true,
            Err(_) => true,
        };
        let first_found = !had_providers && !found.is_empty();
        if finished {
            self.answer_providers(id);
        } else if first_found {
            // Once some providers are known, wait only a short while for more: the rest of the
            // query may be stuck dialing departed peers (a QUIC dial gives up only after 5 s),
            // and a fetch needs one provider to start.
            let grace = Duration::from_millis(limits::KAD_PROVIDERS_GRACE_MS);
            self.providers_due
                .push(Box::pin(tokio::time::sleep(grace).map(move |()| id)));
        }
    }

    /// Ends provider query `id` and replies with the providers found so far (if not done yet).
    fn answer_providers(&mut self, id: kad::QueryId) {
        let Some((reply, found)) = self.pending_providers.remove(&id) else {
            return;
        };
        if let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id) {
            query.finish();
        }
        let mut providers: Vec<PeerId> = found.into_iter().collect();
        providers.sort();
        providers.truncate(limits::KAD_PROVIDERS_MAX);
        let _ = reply.send(Ok(providers));
    }

    fn on_gossip(
        &mut self,
        forwarded_by: libp2p::PeerId,
        message_id: MessageId,
        message: gossipsub::Message,
    ) {
        let verdict = self.judge_gossip(forwarded_by, &message);
        if let Some(acceptance) = verdict {
            self.swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(&message_id, &forwarded_by, acceptance);
            return;
        }
        let (Some(source), Some(forwarder)) = (
            message.source.as_ref().and_then(from_libp2p),
            from_libp2p(&forwarded_by),
        ) else {
            return;
        };
        let data = match wire::decode_gossip(&message.data) {
            Ok(payload) => payload.to_vec(),
            Err(_) => return,
        };
        if self.pending_validations.len() >= limits::GOSSIP_PENDING_VALIDATIONS_MAX {
            // The app is not judging fast enough: give up on the oldest (gossipsub drops it too).
            if let Some((old_id, old_peer)) = self.pending_validations.pop_front() {
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(
                        &old_id,
                        &old_peer,
                        MessageAcceptance::Ignore,
                    );
            }
        }
        let id = GossipId {
            message_id: message_id.0.clone(),
            propagation_source: forwarder,
        };
        let event = NetEvent::Gossip(GossipMessage {
            id,
            topic: message.topic.to_string(),
            source,
            forwarded_by: forwarder,
            data,
        });
        if self.emit(event) {
            self.pending_validations
                .push_back((message_id, forwarded_by));
        } else {
            self.swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(
                    &message_id,
                    &forwarded_by,
                    MessageAcceptance::Ignore,
                );
        }
    }

    /// A verdict net gives by itself, before the app sees the message; `None` means "ask the app".
    fn judge_gossip(
        &mut self,
        forwarded_by: libp2p::PeerId,
        message: &gossipsub::Message,
    ) -> Option<MessageAcceptance> {
        if !self.gossip_limiter.allow(&forwarded_by, Instant::now()) {
            return Some(MessageAcceptance::Ignore);
        }
        let source_ok = message.source.as_ref().and_then(from_libp2p).is_some();
        if !source_ok
            || from_libp2p(&forwarded_by).is_none()
            || wire::decode_gossip(&message.data).is_err()
        {
            return Some(MessageAcceptance::Reject);
        }
        None
    }

    fn on_blobs(&mut self, event: request_response::Event<BlobRequest, BlobResponse>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => self.serve(peer, request, channel),
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(reply) = self.pending_chunks.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(reply) = self.pending_chunks.remove(&request_id) {
                    let _ = reply.send(Err(NetError::Request(error.to_string())));
                }
            }
            _ => {}
        }
    }

    fn serve(
        &mut self,
        peer: libp2p::PeerId,
        request: BlobRequest,
        channel: ResponseChannel<BlobResponse>,
    ) {
        let over_limit = !self.blob_limiter.allow(&peer, Instant::now())
            || self.serving >= limits::BLOB_SERVING_MAX;
        let source = match (&self.blob_source, over_limit) {
            (_, true) => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .blobs
                    .send_response(channel, BlobResponse::Busy);
                return;
            }
            (None, false) => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .blobs
                    .send_response(channel, BlobResponse::NotFound);
                return;
            }
            (Some(source), false) => source.clone(),
        };
        self.serving += 1;
        let served = self.served_tx.clone();
        tokio::spawn(async move {
            let response = tokio::task::spawn_blocking(move || serve_chunk(&*source, &request))
                .await
                .unwrap_or(BlobResponse::NotFound);
            // Capacity is BLOB_SERVING_MAX and `serving` never exceeds it, so this never waits long.
            let _ = served.send((channel, response)).await;
        });
    }
}
