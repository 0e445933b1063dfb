//! The simulated world: nodes running the production `RoundMachine`, a virtual clock and network, faults,
//! and the checkers that run after every step.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use ledger::{LedgerState, NoFraudProofs, SignedTx, TxBody};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use round::wire::{Message, Signed};
use round::{
    Action, Boot, GenesisConfig, Input, MessageKind, RoundMachine, Settled, Snapshot, Status,
    Verdict,
};
use types::limits::{ledger as ledger_limits, round as round_limits, sim as limits};
use types::{Hash32, PeerId, RoundNumber, RunId};

use crate::report::{CheckerResult, Meter, SimFailure, Summary};
use crate::scenario::Scenario;
use crate::standin::{blob_cid, StandIn};

/// The attacks a Byzantine node mounts whenever it is drawn as a trainer (from the verification issue).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Attack {
    Noise,
    SignFlip,
    Scale,
    FreeRide,
    Copy,
    StaleBase,
    NaN,
}

const ATTACKS: [Attack; 7] = [
    Attack::Noise,
    Attack::SignFlip,
    Attack::Scale,
    Attack::FreeRide,
    Attack::Copy,
    Attack::StaleBase,
    Attack::NaN,
];

/// Checker names, in the order they are reported.
pub const CHECKERS: [&str; 6] = [
    "agreement",
    "determinism",
    "verification",
    "no_lost_update",
    "ledger",
    "limits",
];
const PROGRESS: &str = "progress";

#[derive(Clone)]
struct Served {
    digest: Hash32,
    snapshot: Snapshot,
    theta: Arc<Vec<f32>>,
    ledger: Arc<LedgerState>,
}

struct Disk {
    served: Served,
    corrupted: bool,
}

struct Node {
    key: SigningKey,
    peer: PeerId,
    region: u32,
    drift_ppm: i64,
    attack: Option<Attack>,
    incarnation: u64,
    online: bool,
    departed: bool,
    /// Never crashed, left or joined late: the nodes whose traffic is reported per round.
    steady: bool,
    machine: Option<RoundMachine>,
    theta: Arc<Vec<f32>>,
    ledger: Arc<LedgerState>,
    pending: Option<(Hash32, Arc<Vec<f32>>)>,
    my_blob: Option<(RoundNumber, Arc<Vec<u8>>)>,
    blobs: BTreeMap<(u64, PeerId), (Arc<Vec<u8>>, bool)>,
    arrival: Vec<(u64, PeerId)>,
    delivered_commits: BTreeSet<(u64, PeerId)>,
    commit_sets: BTreeMap<(u64, u32), Vec<PeerId>>,
    served: VecDeque<Served>,
    disk: Option<Disk>,
    neighbors: Vec<u32>,
    seen: HashSet<u64>,
    seen_order: VecDeque<u64>,
    resync_try: usize,
    meter: Meter,
}

#[derive(Clone)]
enum Gossip {
    Round {
        bytes: Arc<Vec<u8>>,
    },
    Blob {
        round: RoundNumber,
        trainer: PeerId,
        bytes: Arc<Vec<u8>>,
    },
}

enum Wire {
    Gossip {
        id: u64,
        body: Gossip,
    },
    Direct {
        bytes: Arc<Vec<u8>>,
    },
    SnapshotRequest {
        digest: Hash32,
    },
    BlobRequest {
        round: RoundNumber,
        trainers: Vec<PeerId>,
    },
    BlobResponse {
        round: RoundNumber,
        trainer: PeerId,
        bytes: Arc<Vec<u8>>,
    },
    SnapshotResponse {
        served: Served,
    },
}

impl Wire {
    fn bytes(&self) -> u64 {
        match self {
            Wire::Gossip {
                body: Gossip::Round { bytes, .. },
                ..
            }
            | Wire::Direct { bytes, .. } => bytes.len() as u64,
            Wire::Gossip {
                body: Gossip::Blob { bytes, .. },
                ..
            } => bytes.len() as u64 + 48,
            Wire::SnapshotRequest { .. } => 40,
            Wire::BlobRequest { trainers, .. } => 16 + 32 * trainers.len() as u64,
            Wire::BlobResponse { bytes, .. } => bytes.len() as u64 + 48,
            Wire::SnapshotResponse { served } => {
                (served.snapshot.members.len() * 32
                    + served.theta.len() * 4
                    + served.ledger.accounts.len() * 64
                    + 80) as u64
            }
        }
    }
}

enum Event {
    Deliver {
        to: u32,
        from: u32,
        wire: Arc<Wire>,
    },
    Wake {
        node: u32,
        incarnation: u64,
    },
    TrainDone {
        node: u32,
        incarnation: u64,
        round: RoundNumber,
        data_ids: Vec<u32>,
    },
    Restart {
        node: u32,
    },
    PartitionEnd,
}

struct Queued {
    time: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.seq) == (other.time, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    // Min-heap on (time, seq): ties resolve by insertion order, which is what keeps runs reproducible.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.time, other.seq).cmp(&(self.time, self.seq))
    }
}

/// Agreed facts per round, filled by the first honest node to settle it.
struct RoundRecord {
    model_hash: Hash32,
    state_digest: Hash32,
    ledger_digest: Hash32,
}

pub struct World {
    scenario: Scenario,
    seed: u64,
    rng: ChaCha8Rng,
    config: Arc<GenesisConfig>,
    run_id: RunId,
    model: StandIn,
    nodes: Vec<Node>,
    index: HashMap<PeerId, u32>,
    queue: BinaryHeap<Queued>,
    seq: u64,
    now: u64,
    next_gossip_id: u64,
    partition: Option<Vec<bool>>,
    healthy_since_ms: u64,
    last_progress_ms: u64,
    /// (node, round, rank) of every proposal the no-lost-update checker judged, so re-broadcasts are not re-judged.
    proposals_checked: BTreeSet<(u32, u64, u32)>,
    max_round: u64,
    records: BTreeMap<u64, RoundRecord>,
    aggregates: HashMap<(u64, Hash32), Hash32>,
    checks: BTreeMap<&'static str, u64>,
    trace: blake3::Hasher,
    counts: BTreeMap<&'static str, u64>,
    kind_messages: BTreeMap<String, u64>,
    genesis_theta: Arc<Vec<f32>>,
    genesis_ledger: Arc<LedgerState>,
    /// Nodes online, and nodes not departed: recounted whenever a fault changes them.
    online_count: usize,
    alive_count: usize,
}

fn peer_key(seed: u64, index: u64) -> SigningKey {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&index.to_le_bytes());
    bytes[16..24].copy_from_slice(b"cw-simky");
    SigningKey::from_bytes(blake3::hash(&bytes).as_bytes())
}

/// Tokens credited per accepted update in the simulated ledger (the stand-in trains no real tokens).
const TOKENS_PER_UPDATE: u64 = 1_000;

/// The run's verifier for the production ledger state machine: one key signs the verdicts of every settled round
/// (in the node, each verifier signs its own; the sim only needs the ledger's rules and its agreement).
fn ledger_key(seed: u64) -> SigningKey {
    peer_key(seed, u64::MAX)
}

impl World {
    pub fn new(scenario: &Scenario, seed: u64) -> World {
        scenario
            .validate()
            .expect("scenario validated by the caller");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let model = StandIn::new(scenario, seed);
        let genesis_theta = Arc::new(model.genesis());
        let keys: Vec<SigningKey> = (0..scenario.nodes as u64)
            .map(|i| peer_key(seed, i))
            .collect();
        let mut founders: Vec<PeerId> = keys.iter().map(round::wire::peer_id_of).collect();
        founders.sort_unstable();
        let config = Arc::new(GenesisConfig {
            run_name: format!("sim-{seed}"),
            model_preset: "standin".into(),
            genesis_model_hash: Hash32::of_f32s(&genesis_theta),
            dataset_cid: Hash32::of(&seed.to_le_bytes()),
            dataset_shards: scenario.shards,
            shards_per_trainer: scenario.shards_per_trainer,
            codec_id: 0,
            inner_steps: scenario.inner_steps,
            committee_size: scenario.committee_size,
            quorum_permille: scenario.quorum_permille,
            phase_min_ms: scenario.phase_min_ms,
            phase_max_ms: scenario.phase_max_ms,
            deadline_mad_k_millis: scenario.deadline_mad_k_millis,
            founders: founders.clone(),
            spec_digest: Hash32::ZERO,
        });
        let run_id = config.run_id();
        let verifier = round::wire::peer_id_of(&ledger_key(seed));
        let genesis_ledger = Arc::new(LedgerState::new(&ledger::Genesis {
            version: ledger::WIRE_VERSION,
            run: run_id,
            validators: vec![verifier],
            verifiers: vec![verifier],
            verifier_quorum: 1,
            namespace: "commonweight-sim".to_owned(),
        }));
        let mut world = World {
            scenario: scenario.clone(),
            seed,
            rng: ChaCha8Rng::seed_from_u64(rng.gen()),
            config,
            run_id,
            model,
            nodes: Vec::new(),
            index: HashMap::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            now: 0,
            next_gossip_id: 0,
            partition: None,
            healthy_since_ms: 0,
            last_progress_ms: 0,
            proposals_checked: BTreeSet::new(),
            max_round: 0,
            records: BTreeMap::new(),
            aggregates: HashMap::new(),
            checks: CHECKERS.iter().map(|c| (*c, 0)).collect(),
            trace: blake3::Hasher::new(),
            counts: BTreeMap::new(),
            kind_messages: BTreeMap::new(),
            genesis_theta,
            genesis_ledger,
            online_count: 0,
            alive_count: 0,
        };
        let shared_members = Arc::new(founders);
        let genesis = Snapshot {
            next_round: RoundNumber(0),
            model_hash: world.config.genesis_model_hash,
            members: shared_members,
        };
        for key in keys {
            // Founders boot from one shared genesis snapshot, so 10,000 nodes hold one member list.
            world.add_node(key, Boot::Restore(genesis.clone()), true);
        }
        world
    }

    fn count(&mut self, what: &'static str, n: u64) {
        *self.counts.entry(what).or_default() += n;
    }

    fn schedule(&mut self, time: u64, event: Event) -> Result<(), SimFailure> {
        if self.queue.len() >= limits::EVENTS_QUEUE_MAX {
            return Err(self.fail(
                "limits",
                format!("event queue over {}", limits::EVENTS_QUEUE_MAX),
            ));
        }
        self.seq += 1;
        self.queue.push(Queued {
            time,
            seq: self.seq,
            event,
        });
        Ok(())
    }

    fn fail(&self, checker: &str, detail: String) -> SimFailure {
        if std::env::var("SIM_DIAGNOSE").is_ok() {
            if let Some(m) = self.nodes.iter().find_map(|n| n.machine.as_ref()) {
                let dead: Vec<u32> = m
                    .members()
                    .iter()
                    .filter_map(|p| self.index.get(p).copied())
                    .filter(|&j| !self.nodes[j as usize].online)
                    .collect();
                let departed = dead
                    .iter()
                    .filter(|&&j| self.nodes[j as usize].departed)
                    .count();
                eprintln!(
                    "members offline: {} ({departed} departed): {dead:?}",
                    dead.len()
                );
            }
            for (i, n) in self.nodes.iter().enumerate().filter(|(_, n)| n.online) {
                let line = n.machine.as_ref().map(|m| m.describe()).unwrap_or_default();
                eprintln!("node {i} byz {:?}: {line}", n.attack);
            }
        }
        SimFailure {
            seed: self.seed,
            checker: checker.to_string(),
            detail,
            virtual_ms: self.now,
        }
    }

    fn pass(&mut self, checker: &'static str) {
        *self.checks.entry(checker).or_default() += 1;
    }

    // ---- nodes -------------------------------------------------------------------------------------------

    fn add_node(&mut self, key: SigningKey, boot: Boot, founder: bool) -> u32 {
        let peer = round::wire::peer_id_of(&key);
        let id = self.nodes.len() as u32;
        let byzantine = self.rng.gen_range(0..1000) < self.scenario.byzantine_permille;
        let attack = byzantine.then(|| ATTACKS[self.rng.gen_range(0..ATTACKS.len())]);
        let drift_max = i64::from(self.scenario.clock_drift_ppm_max);
        let node = Node {
            key,
            peer,
            region: self.rng.gen_range(0..self.scenario.link.regions),
            drift_ppm: if drift_max == 0 {
                0
            } else {
                self.rng.gen_range(-drift_max..=drift_max)
            },
            attack,
            incarnation: 0,
            online: true,
            departed: false,
            steady: founder,
            machine: None,
            theta: Arc::clone(&self.genesis_theta),
            ledger: Arc::clone(&self.genesis_ledger),
            pending: None,
            my_blob: None,
            blobs: BTreeMap::new(),
            arrival: Vec::new(),
            delivered_commits: BTreeSet::new(),
            commit_sets: BTreeMap::new(),
            served: VecDeque::new(),
            disk: None,
            neighbors: Vec::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            resync_try: 0,
            meter: Meter::default(),
        };
        self.nodes.push(node);
        self.index.insert(peer, id);
        self.connect(id);
        self.boot(id, boot);
        id
    }

    fn boot(&mut self, id: u32, boot: Boot) {
        let node = &mut self.nodes[id as usize];
        let key = node.key.clone();
        let local = local_time(self.now, node.drift_ppm);
        let (machine, actions) = RoundMachine::new(Arc::clone(&self.config), key, local, boot)
            .expect("simulator builds valid configs");
        node.machine = Some(machine);
        // A booted node serves its starting state too.
        self.remember_state(id);
        let mut work = VecDeque::new();
        self.process(id, actions, &mut work)
            .expect("boot actions never fail a checker");
        let _ = self.drain(&mut work);
    }

    /// Links a node to `gossip_degree` random online nodes (both directions).
    fn connect(&mut self, id: u32) {
        let online: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|&j| j != id && self.nodes[j as usize].online)
            .collect();
        if online.is_empty() {
            return;
        }
        let want = self.scenario.gossip_degree.min(online.len());
        let mut picked = 0;
        let mut attempts = 0;
        while picked < want && attempts < want * 8 {
            attempts += 1;
            let j = online[self.rng.gen_range(0..online.len())];
            if self.nodes[id as usize].neighbors.contains(&j) {
                continue;
            }
            self.nodes[id as usize].neighbors.push(j);
            self.nodes[j as usize].neighbors.push(id);
            picked += 1;
        }
    }

    /// Keeps the overlay connected under churn: nodes that lost most neighbours pick new ones.
    fn repair_overlay(&mut self) {
        for id in 0..self.nodes.len() as u32 {
            let node = &self.nodes[id as usize];
            if !node.online {
                continue;
            }
            let alive = node
                .neighbors
                .iter()
                .filter(|&&j| self.nodes[j as usize].online)
                .count();
            if alive * 2 < self.scenario.gossip_degree * 2 {
                let keep: Vec<u32> = node
                    .neighbors
                    .iter()
                    .copied()
                    .filter(|&j| !self.nodes[j as usize].departed)
                    .collect();
                self.nodes[id as usize].neighbors = keep;
                self.connect(id);
            }
        }
    }

    fn honest(&self, id: u32) -> bool {
        self.nodes[id as usize].attack.is_none()
    }

    fn remember_state(&mut self, id: u32) {
        let node = &mut self.nodes[id as usize];
        let Some(snapshot) = node.machine.as_ref().and_then(|m| m.snapshot()) else {
            return;
        };
        let served = Served {
            digest: snapshot.digest(self.run_id),
            snapshot,
            theta: Arc::clone(&node.theta),
            ledger: Arc::clone(&node.ledger),
        };
        if node.served.len() >= limits::SERVED_STATES_PER_NODE_MAX {
            node.served.pop_front();
        }
        node.served.push_back(served.clone());
        let corrupted = node.disk.as_ref().is_some_and(|d| d.corrupted);
        node.disk = Some(Disk { served, corrupted });
    }

    // ---- the loop ----------------------------------------------------------------------------------------

    /// Runs until an honest node settles `scenario.rounds` rounds, or a checker fails.
    pub fn run(mut self) -> Result<Summary, SimFailure> {
        self.recount();
        for id in 0..self.nodes.len() as u32 {
            self.schedule(
                0,
                Event::Wake {
                    node: id,
                    incarnation: 0,
                },
            )?;
        }
        let time_cap = (self.scenario.rounds + 10)
            .saturating_mul(20 * self.scenario.phase_max_ms)
            .min(limits::VIRTUAL_TIME_MS_MAX);
        let stall_ms = 12 * self.scenario.phase_max_ms;
        while let Some(queued) = self.queue.pop() {
            self.now = queued.time;
            if self.now > time_cap {
                return Err(self.fail(
                    PROGRESS,
                    format!(
                        "virtual time cap {time_cap} ms reached at round {}",
                        self.max_round
                    ),
                ));
            }
            self.step(queued.event)?;
            self.check_progress(stall_ms)?;
            if self.max_round >= self.scenario.rounds {
                return Ok(self.summary());
            }
        }
        Err(self.fail(PROGRESS, "event queue ran dry".into()))
    }

    fn check_progress(&mut self, stall_ms: u64) -> Result<(), SimFailure> {
        let quorum_connected =
            self.partition.is_none() && self.online_count * 10 >= self.alive_count * 7;
        if !quorum_connected {
            self.healthy_since_ms = self.now;
            return Ok(());
        }
        let since = self.last_progress_ms.max(self.healthy_since_ms);
        if self.now > since + stall_ms {
            return Err(self.fail(
                PROGRESS,
                format!(
                    "no round settled for {} ms with a quorum connected (at round {})",
                    self.now - since,
                    self.max_round
                ),
            ));
        }
        Ok(())
    }

    fn step(&mut self, event: Event) -> Result<(), SimFailure> {
        let mut work = VecDeque::new();
        match event {
            Event::Deliver { to, from, wire } => self.deliver(to, from, wire, &mut work)?,
            Event::Wake { node, incarnation } => {
                if self.nodes[node as usize].online
                    && self.nodes[node as usize].incarnation == incarnation
                {
                    work.push_back((node, Input::Tick));
                }
            }
            Event::TrainDone {
                node,
                incarnation,
                round,
                data_ids,
            } => self.train_done(node, incarnation, round, &data_ids, &mut work),
            Event::Restart { node } => self.restart(node)?,
            Event::PartitionEnd => {
                self.partition = None;
                self.healthy_since_ms = self.now;
                self.count("partitions_healed", 1);
            }
        }
        self.drain(&mut work)
    }

    fn drain(&mut self, work: &mut VecDeque<(u32, Input)>) -> Result<(), SimFailure> {
        while let Some((id, input)) = work.pop_front() {
            let node = &mut self.nodes[id as usize];
            if !node.online {
                continue;
            }
            let Some(machine) = node.machine.as_mut() else {
                continue;
            };
            let actions = machine.handle(local_time(self.now, node.drift_ppm), input);
            let violations = machine.bound_violations();
            if let Some(v) = violations.first() {
                return Err(self.fail(
                    "limits",
                    format!("node {id}: {} = {} > {}", v.what, v.value, v.max),
                ));
            }
            self.pass("limits");
            self.process(id, actions, work)?;
        }
        Ok(())
    }

    fn process(
        &mut self,
        id: u32,
        actions: Vec<Action>,
        work: &mut VecDeque<(u32, Input)>,
    ) -> Result<(), SimFailure> {
        for action in actions {
            match action {
                Action::Broadcast { kind, bytes } => self.on_broadcast(id, kind, bytes)?,
                Action::SendTo { peers, bytes, .. } => {
                    let bytes = Arc::new(bytes);
                    for peer in peers {
                        if let Some(&to) = self.index.get(&peer) {
                            self.send(
                                id,
                                to,
                                Wire::Direct {
                                    bytes: Arc::clone(&bytes),
                                },
                            )?;
                        }
                    }
                }
                Action::Train {
                    round, data_ids, ..
                } => {
                    let node = &self.nodes[id as usize];
                    let train_ms = self
                        .rng
                        .gen_range(self.scenario.train_ms_min..=self.scenario.train_ms_max);
                    let event = Event::TrainDone {
                        node: id,
                        incarnation: node.incarnation,
                        round,
                        data_ids,
                    };
                    self.schedule(self.now + train_ms, event)?;
                }
                Action::PublishUpdate { round, update_cid } => {
                    self.publish(id, round, update_cid, work)?
                }
                Action::Aggregate {
                    round,
                    proposal_digest,
                    base_model_hash,
                    updates,
                } => self.aggregate(id, round, proposal_digest, base_model_hash, &updates, work)?,
                Action::Settled(settled) => self.on_settled(id, settled, work)?,
                Action::FetchUpdates {
                    round,
                    updates,
                    peers,
                } => {
                    let trainers: Vec<PeerId> = updates.iter().map(|(t, _)| *t).collect();
                    for peer in peers.iter().take(3) {
                        if let Some(&to) = self.index.get(peer) {
                            self.send(
                                id,
                                to,
                                Wire::BlobRequest {
                                    round,
                                    trainers: trainers.clone(),
                                },
                            )?;
                        }
                    }
                }
                Action::Resync {
                    state_digest,
                    peers,
                    ..
                } => {
                    let node = &mut self.nodes[id as usize];
                    let candidates: Vec<u32> = peers
                        .iter()
                        .filter_map(|p| self.index.get(p).copied())
                        .collect();
                    if !candidates.is_empty() {
                        let to = candidates[node.resync_try % candidates.len()];
                        node.resync_try += 1;
                        self.send(
                            id,
                            to,
                            Wire::SnapshotRequest {
                                digest: state_digest,
                            },
                        )?;
                    }
                }
                Action::WakeAt(local) => {
                    let node = &self.nodes[id as usize];
                    let global = global_time(local, node.drift_ppm).max(self.now);
                    self.schedule(
                        global,
                        Event::Wake {
                            node: id,
                            incarnation: node.incarnation,
                        },
                    )?;
                }
            }
        }
        Ok(())
    }

    // ---- network -----------------------------------------------------------------------------------------

    fn link_delay_ms(&mut self, from: u32, to: u32, bytes: u64) -> u64 {
        let link = &self.scenario.link;
        let extra_mean = link.latency_extra_ms_mean as f64;
        let u: f64 = self.rng.gen_range(1e-9..1.0);
        let mut delay = link.latency_ms_min + (-u.ln() * extra_mean) as u64;
        if self.nodes[from as usize].region != self.nodes[to as usize].region {
            delay += link.cross_region_ms;
        }
        delay + bytes / link.bandwidth_bytes_per_ms
    }

    /// One transmission over one link: metered at both ends, then lost, cut by a partition, or delivered.
    fn send(&mut self, from: u32, to: u32, wire: Wire) -> Result<(), SimFailure> {
        self.transmit(from, to, Arc::new(wire))
    }

    fn transmit(&mut self, from: u32, to: u32, wire: Arc<Wire>) -> Result<(), SimFailure> {
        let bytes = wire.bytes();
        self.nodes[from as usize].meter.sent(bytes);
        if !self.nodes[to as usize].online {
            return Ok(());
        }
        if let Some(groups) = &self.partition {
            // Nodes that joined during the partition are on the majority side.
            let side = |i: u32| groups.get(i as usize).copied().unwrap_or(false);
            if side(from) != side(to) {
                return Ok(());
            }
        }
        if self.rng.gen_range(0..1000) < self.scenario.link.loss_permille {
            return Ok(());
        }
        let delay = self.link_delay_ms(from, to, bytes);
        self.schedule(self.now + delay.max(1), Event::Deliver { to, from, wire })
    }

    fn gossip(&mut self, origin: u32, body: Gossip) -> Result<(), SimFailure> {
        self.next_gossip_id += 1;
        let id = self.next_gossip_id;
        self.mark_seen(origin, id);
        let wire = Arc::new(Wire::Gossip { id, body });
        for to in self.nodes[origin as usize].neighbors.clone() {
            self.transmit(origin, to, Arc::clone(&wire))?;
        }
        Ok(())
    }

    /// Returns false if the node had already seen this gossip id.
    fn mark_seen(&mut self, node: u32, id: u64) -> bool {
        let node = &mut self.nodes[node as usize];
        if !node.seen.insert(id) {
            return false;
        }
        node.seen_order.push_back(id);
        if node.seen_order.len() > limits::SEEN_IDS_PER_NODE_MAX {
            let old = node.seen_order.pop_front().expect("non-empty");
            node.seen.remove(&old);
        }
        true
    }

    fn deliver(
        &mut self,
        to: u32,
        from: u32,
        wire: Arc<Wire>,
        work: &mut VecDeque<(u32, Input)>,
    ) -> Result<(), SimFailure> {
        if !self.nodes[to as usize].online {
            return Ok(());
        }
        self.nodes[to as usize].meter.received(wire.bytes());
        match &*wire {
            Wire::Gossip { id, body } => {
                if !self.mark_seen(to, *id) {
                    return Ok(());
                }
                for next in self.nodes[to as usize].neighbors.clone() {
                    if next != from {
                        self.transmit(to, next, Arc::clone(&wire))?;
                    }
                }
                match body {
                    Gossip::Round { bytes, .. } => self.deliver_round(to, bytes, work),
                    Gossip::Blob {
                        round,
                        trainer,
                        bytes,
                    } => self.on_blob(to, *round, *trainer, Arc::clone(bytes), work),
                }
            }
            Wire::Direct { bytes, .. } => self.deliver_round(to, bytes, work),
            Wire::SnapshotRequest { digest } => {
                let found = self.nodes[to as usize]
                    .served
                    .iter()
                    .rev()
                    .find(|s| s.digest == *digest)
                    .cloned();
                if let Some(served) = found {
                    self.send(to, from, Wire::SnapshotResponse { served })?;
                }
            }
            Wire::SnapshotResponse { served } => self.on_snapshot(to, served.clone(), work)?,
            Wire::BlobRequest { round, trainers } => {
                let found: Vec<(PeerId, Arc<Vec<u8>>)> = trainers
                    .iter()
                    .filter_map(|t| {
                        self.nodes[to as usize]
                            .blobs
                            .get(&(round.0, *t))
                            .map(|(b, _)| (*t, Arc::clone(b)))
                    })
                    .collect();
                for (trainer, bytes) in found {
                    self.send(
                        to,
                        from,
                        Wire::BlobResponse {
                            round: *round,
                            trainer,
                            bytes,
                        },
                    )?;
                }
            }
            Wire::BlobResponse {
                round,
                trainer,
                bytes,
            } => {
                self.count("blobs_fetched", 1);
                self.on_blob(to, *round, *trainer, Arc::clone(bytes), work)
            }
        }
        Ok(())
    }

    fn deliver_round(&mut self, to: u32, bytes: &Arc<Vec<u8>>, work: &mut VecDeque<(u32, Input)>) {
        let node = &mut self.nodes[to as usize];
        let Some(machine) = node.machine.as_ref() else {
            return;
        };
        // Bookkeeping for the no-lost-update checker: which commitments reached this node in time to count.
        if let Ok(Message::Commit(c)) = Message::decode(bytes) {
            let round = c.body.round.0;
            let current = machine.round().0;
            if machine.status() == Status::Synced && (round == current || round == current + 1) {
                node.delivered_commits.insert((round, c.signer));
            }
        }
        work.push_back((to, Input::Message(bytes.to_vec())));
    }

    fn on_broadcast(
        &mut self,
        id: u32,
        kind: MessageKind,
        bytes: Vec<u8>,
    ) -> Result<(), SimFailure> {
        if bytes.len() > round_limits::MESSAGE_BYTES_MAX {
            return Err(self.fail(
                "limits",
                format!("node {id} emitted a {}-byte {kind:?}", bytes.len()),
            ));
        }
        *self.kind_messages.entry(format!("{kind:?}")).or_default() += 1;
        match Message::decode(&bytes) {
            Ok(Message::CommitSet(set)) => self.check_commit_set(id, &set)?,
            Ok(Message::Proposal(p)) => self.check_proposal(id, &p)?,
            Ok(_) => {}
            Err(e) => {
                return Err(self.fail(
                    "limits",
                    format!("node {id} emitted an undecodable {kind:?}: {e}"),
                ))
            }
        }
        self.gossip(
            id,
            Gossip::Round {
                bytes: Arc::new(bytes),
            },
        )
    }

    // ---- training, updates, aggregation ------------------------------------------------------------------

    fn train_done(
        &mut self,
        id: u32,
        incarnation: u64,
        round: RoundNumber,
        data_ids: &[u32],
        work: &mut VecDeque<(u32, Input)>,
    ) {
        let node = &self.nodes[id as usize];
        if !node.online || node.incarnation != incarnation {
            return;
        }
        let Some(machine) = node.machine.as_ref() else {
            return;
        };
        if machine.round() != round || machine.status() != Status::Synced {
            return;
        }
        let base = machine.model_hash();
        let theta = Arc::clone(&node.theta);
        let (honest_delta, loss) = self.model.train(&theta, data_ids);
        let attack = node.attack;
        let mut committed_base = base;
        let delta: Vec<f32> = match attack {
            None => honest_delta,
            // A copier does no work: it commits to an empty update and reveals someone else's if it can.
            Some(Attack::Copy) => vec![0.0; honest_delta.len()],
            Some(Attack::Noise) => {
                let norm = honest_delta.iter().map(|v| v * v).sum::<f32>().sqrt()
                    / (honest_delta.len() as f32).sqrt();
                (0..honest_delta.len())
                    .map(|_| self.rng.gen_range(-2.0f32..2.0) * norm)
                    .collect()
            }
            Some(Attack::SignFlip) => honest_delta.iter().map(|v| -v).collect(),
            Some(Attack::Scale) => honest_delta.iter().map(|v| v * 100.0).collect(),
            Some(Attack::FreeRide) => vec![0.0; honest_delta.len()],
            Some(Attack::NaN) => honest_delta
                .iter()
                .enumerate()
                .map(|(i, v)| if i % 7 == 0 { f32::NAN } else { *v })
                .collect(),
            Some(Attack::StaleBase) => {
                committed_base = Hash32::of(&base.0);
                honest_delta
            }
        };
        if attack.is_some() {
            self.count("byzantine_updates_offered", 1);
        }
        let peer = self.nodes[id as usize].peer;
        let blob = Arc::new(StandIn::encode_blob(round, peer, &delta));
        let cid = blob_cid(&blob);
        let size = blob.len() as u64;
        self.nodes[id as usize].my_blob = Some((round, blob));
        work.push_back((
            id,
            Input::Trained {
                round,
                base_model_hash: committed_base,
                update_cid: cid,
                update_bytes: size,
                claimed_loss: loss,
            },
        ));
    }

    fn publish(
        &mut self,
        id: u32,
        round: RoundNumber,
        cid: Hash32,
        work: &mut VecDeque<(u32, Input)>,
    ) -> Result<(), SimFailure> {
        let node = &self.nodes[id as usize];
        let Some((blob_round, blob)) = node.my_blob.clone() else {
            return Ok(());
        };
        if blob_round != round || blob_cid(&blob) != cid {
            return Ok(());
        }
        let mut blob = blob;
        if node.attack == Some(Attack::Copy) {
            // Commit-reveal is what defeats this: the copy cannot match the commitment made before reveals.
            if let Some(((_, _), (other, _))) = node
                .blobs
                .range((round.0, PeerId([0; 32]))..)
                .find(|((r, _), _)| *r == round.0)
            {
                blob = Arc::clone(other);
            }
        }
        let peer = node.peer;
        self.gossip(
            id,
            Gossip::Blob {
                round,
                trainer: peer,
                bytes: Arc::clone(&blob),
            },
        )?;
        self.on_blob(id, round, peer, blob, work);
        Ok(())
    }

    fn verdict(&self, id: u32, round: RoundNumber, trainer: PeerId, bytes: &[u8]) -> bool {
        let node = &self.nodes[id as usize];
        let Some(machine) = node.machine.as_ref() else {
            return false;
        };
        let seed = round::round_seed(self.run_id, round, machine.model_hash());
        let c = &self.config;
        let ids = round::assign_data(
            seed,
            trainer,
            c.dataset_cid,
            c.dataset_shards,
            c.shards_per_trainer,
        );
        match self.model.decode_blob(bytes, round, trainer) {
            Some(delta) => self.model.verify(&node.theta, &delta, &ids),
            None => false,
        }
    }

    fn on_blob(
        &mut self,
        id: u32,
        round: RoundNumber,
        trainer: PeerId,
        bytes: Arc<Vec<u8>>,
        work: &mut VecDeque<(u32, Input)>,
    ) {
        let node = &self.nodes[id as usize];
        let Some(machine) = node.machine.as_ref() else {
            return;
        };
        let current = machine.round();
        if round < current
            || round.0 > current.0 + 1
            || node.blobs.len() >= limits::BLOBS_PER_NODE_MAX
        {
            return;
        }
        if node.blobs.contains_key(&(round.0, trainer)) {
            return;
        }
        // A blob for the next round is verified against the next base, once this node gets there.
        let ready = round == current && machine.status() == Status::Synced;
        let accepted = ready && self.verdict(id, round, trainer, &bytes);
        let node = &mut self.nodes[id as usize];
        node.blobs
            .insert((round.0, trainer), (Arc::clone(&bytes), accepted));
        node.arrival.push((round.0, trainer));
        if ready {
            work.push_back((id, Self::update_input(round, trainer, &bytes, accepted)));
        }
    }

    fn update_input(round: RoundNumber, trainer: PeerId, bytes: &[u8], accepted: bool) -> Input {
        Input::UpdateReceived {
            round,
            trainer,
            update_cid: blob_cid(bytes),
            update_bytes: bytes.len() as u64,
            verdict: if accepted {
                Verdict::Accepted
            } else {
                Verdict::Rejected
            },
        }
    }

    /// Feeds blobs that arrived early for the round this node just entered.
    fn replay_blobs(&mut self, id: u32, work: &mut VecDeque<(u32, Input)>) {
        let node = &self.nodes[id as usize];
        let Some(machine) = node.machine.as_ref() else {
            return;
        };
        let round = machine.round();
        let early: Vec<(PeerId, Arc<Vec<u8>>)> = node
            .blobs
            .iter()
            .filter(|((r, _), _)| *r == round.0)
            .map(|((_, t), (b, _))| (*t, Arc::clone(b)))
            .collect();
        for (trainer, bytes) in early {
            let accepted = self.verdict(id, round, trainer, &bytes);
            self.nodes[id as usize]
                .blobs
                .insert((round.0, trainer), (Arc::clone(&bytes), accepted));
            work.push_back((id, Self::update_input(round, trainer, &bytes, accepted)));
        }
    }

    fn aggregate(
        &mut self,
        id: u32,
        round: RoundNumber,
        proposal_digest: Hash32,
        base: Hash32,
        updates: &[(PeerId, Hash32)],
        work: &mut VecDeque<(u32, Input)>,
    ) -> Result<(), SimFailure> {
        let node = &self.nodes[id as usize];
        if Hash32::of_f32s(&node.theta) != base {
            return Err(self.fail(
                "determinism",
                format!("node {id} holds parameters that do not hash to its base"),
            ));
        }
        #[allow(unused_mut)]
        let mut order: Vec<PeerId> = updates.iter().map(|(p, _)| *p).collect();
        #[cfg(feature = "inject-arrival-order-bug")]
        {
            // The injected bug: fold updates in the order their blobs arrived here, not by trainer id.
            let arrived: Vec<PeerId> = node
                .arrival
                .iter()
                .filter(|(r, _)| *r == round.0)
                .map(|(_, p)| *p)
                .collect();
            order = arrived
                .into_iter()
                .filter(|p| updates.iter().any(|(q, _)| q == p))
                .collect();
        }
        let mut updates = Vec::with_capacity(order.len());
        for trainer in &order {
            let (bytes, _) = node
                .blobs
                .get(&(round.0, *trainer))
                .expect("machine asks only for updates it has");
            let delta = self
                .model
                .decode_blob(bytes, round, *trainer)
                .expect("aggregated updates were verified");
            updates.push((*trainer, delta));
        }
        let next = Arc::new(self.model.apply(&node.theta, updates));
        let hash = Hash32::of_f32s(&next);
        if self.honest(id) {
            match self.aggregates.get(&(round.0, proposal_digest)) {
                Some(&agreed) if agreed != hash => {
                    return Err(self.fail(
                        "determinism",
                        format!("round {}: node {id} aggregated the agreed set to {hash:?}, another honest node to {agreed:?}", round.0),
                    ))
                }
                Some(_) => self.pass("determinism"),
                None => {
                    self.aggregates.insert((round.0, proposal_digest), hash);
                }
            }
        }
        self.nodes[id as usize].pending = Some((proposal_digest, next));
        work.push_back((
            id,
            Input::Aggregated {
                round,
                proposal_digest,
                model_hash: hash,
            },
        ));
        Ok(())
    }

    // ---- checkers on proposer output ---------------------------------------------------------------------

    fn check_commit_set(
        &mut self,
        id: u32,
        set: &Signed<round::wire::CommitSet>,
    ) -> Result<(), SimFailure> {
        let round = set.body.round.0;
        if self.nodes[id as usize]
            .commit_sets
            .contains_key(&(round, set.body.rank))
        {
            // A re-broadcast after a rank timeout: judged when it was first sent.
            return Ok(());
        }
        let signers: Vec<PeerId> = set.body.commitments.iter().map(|c| c.signer).collect();
        let node = &self.nodes[id as usize];
        let committee = node
            .machine
            .as_ref()
            .map(|m| m.committee().to_vec())
            .unwrap_or_default();
        let missing: Vec<PeerId> = node
            .delivered_commits
            .iter()
            .filter(|(r, p)| {
                *r == round && !signers.contains(p) && committee.binary_search(p).is_ok()
            })
            .map(|(_, p)| *p)
            .filter(|p| self.index.get(p).is_some_and(|&j| self.honest(j)))
            .collect();
        if !missing.is_empty() {
            return Err(self.fail(
                "no_lost_update",
                format!("round {round}: proposer {id} closed the commit phase without delivered commitments of {missing:?}"),
            ));
        }
        self.pass("no_lost_update");
        self.nodes[id as usize]
            .commit_sets
            .insert((round, set.body.rank), signers);
        Ok(())
    }

    fn check_proposal(
        &mut self,
        id: u32,
        p: &Signed<round::wire::Proposal>,
    ) -> Result<(), SimFailure> {
        let round = p.body.round.0;
        if !self.proposals_checked.insert((id, round, p.body.rank)) {
            // A re-broadcast after a rank timeout: judged when it was first sent.
            return Ok(());
        }
        let node = &self.nodes[id as usize];
        let set = node
            .commit_sets
            .get(&(round, p.body.rank))
            .cloned()
            .unwrap_or_default();
        let mut rejected = 0;
        for trainer in set {
            let Some(&j) = self.index.get(&trainer) else {
                continue;
            };
            let delivered_ok = node.blobs.get(&(round, trainer)).is_some_and(|(_, ok)| *ok);
            if self.honest(j) && delivered_ok && !p.body.included.contains(&trainer) {
                return Err(self.fail(
                    "no_lost_update",
                    format!("round {round}: proposer {id} left out the delivered, verified update of node {j}"),
                ));
            }
            if self.honest(j)
                && node
                    .blobs
                    .get(&(round, trainer))
                    .is_some_and(|(_, ok)| !*ok)
            {
                rejected += 1;
            }
        }
        self.count("honest_updates_rejected", rejected);
        self.pass("no_lost_update");
        Ok(())
    }

    // ---- settling, snapshots -----------------------------------------------------------------------------

    fn on_settled(
        &mut self,
        id: u32,
        settled: Settled,
        work: &mut VecDeque<(u32, Input)>,
    ) -> Result<(), SimFailure> {
        let round = settled.round.0;
        let (digest, next) = self.nodes[id as usize].pending.take().ok_or_else(|| {
            self.fail(
                "determinism",
                format!("node {id} settled round {round} without aggregating it"),
            )
        })?;
        if digest != settled.proposal_digest || Hash32::of_f32s(&next) != settled.model_hash {
            return Err(self.fail(
                "determinism",
                format!("node {id} settled round {round} on a result it did not compute"),
            ));
        }
        self.check_included(id, &settled)?;
        // The production ledger state machine: every node applies the verdicts of the agreed record.
        let ledger = self.apply_ledger(id, &settled)?;
        let node = &mut self.nodes[id as usize];
        node.theta = next;
        node.blobs.retain(|(r, _), _| *r > round);
        node.arrival.retain(|(r, _)| *r > round);
        node.delivered_commits.retain(|(r, _)| *r > round);
        node.commit_sets.retain(|(r, _), _| *r > round);
        self.remember_state(id);
        self.check_ledger(id)?;
        if self.honest(id) {
            self.check_agreement(id, &settled, ledger)?;
        }
        if round + 1 > self.max_round {
            self.max_round = round + 1;
            self.last_progress_ms = self.now;
            self.trace.update(&round.to_le_bytes());
            self.trace.update(&settled.model_hash.0);
            self.trace.update(&self.now.to_le_bytes());
            self.count(
                "excluded_not_revealed",
                settled
                    .excluded
                    .iter()
                    .filter(|e| e.1 == round::Exclusion::NotRevealed)
                    .count() as u64,
            );
            self.count(
                "excluded_rejected",
                settled
                    .excluded
                    .iter()
                    .filter(|e| e.1 == round::Exclusion::Rejected)
                    .count() as u64,
            );
            self.count(
                "excluded_binding",
                settled
                    .excluded
                    .iter()
                    .filter(|e| e.1 == round::Exclusion::BindingMismatch)
                    .count() as u64,
            );
            self.count("updates_included", settled.included.len() as u64);
            self.faults_after_round(round + 1)?;
        }
        self.replay_blobs(id, work);
        Ok(())
    }

    fn check_included(&mut self, id: u32, settled: &Settled) -> Result<(), SimFailure> {
        for trainer in &settled.included {
            let Some(&j) = self.index.get(trainer) else {
                continue;
            };
            if !self.honest(j) {
                let attack = self.nodes[j as usize].attack;
                return Err(self.fail(
                    "verification",
                    format!(
                        "round {}: node {id} accepted an update from attacker {j} ({attack:?})",
                        settled.round.0
                    ),
                ));
            }
            let node = &self.nodes[id as usize];
            if !node
                .blobs
                .get(&(settled.round.0, *trainer))
                .is_some_and(|(_, ok)| *ok)
            {
                return Err(self.fail(
                    "verification",
                    format!(
                        "round {}: node {id} accepted an update it did not verify",
                        settled.round.0
                    ),
                ));
            }
        }
        self.pass("verification");
        Ok(())
    }

    /// Applies the settled round's verdicts to this node's `ledger::LedgerState`; returns the new state root.
    fn apply_ledger(&mut self, id: u32, settled: &Settled) -> Result<Hash32, SimFailure> {
        let node = &self.nodes[id as usize];
        if settled.included.is_empty() {
            return Ok(node.ledger.root());
        }
        let key = ledger_key(self.seed);
        let signer = round::wire::peer_id_of(&key);
        let nonce = node.ledger.nonce(&signer);
        let verdicts = settled
            .included
            .iter()
            .map(|trainer| {
                ledger::Verdict::sign(
                    &key,
                    node.ledger.run,
                    settled.round,
                    *trainer,
                    true,
                    ledger_limits::SCORE_PPM_MAX,
                    "",
                    TOKENS_PER_UPDATE,
                )
            })
            .collect();
        let tx = SignedTx::sign(
            &key,
            node.ledger.chain,
            nonce,
            TxBody::RecordVerdicts { verdicts },
        );
        let mut ledger = (*node.ledger).clone();
        if let Err(rejection) = ledger.apply(&tx, &NoFraudProofs) {
            return Err(self.fail(
                "ledger",
                format!(
                    "node {id}: the ledger refused round {}'s verdicts: {rejection}",
                    settled.round.0
                ),
            ));
        }
        let root = ledger.root();
        self.nodes[id as usize].ledger = Arc::new(ledger);
        Ok(root)
    }

    fn check_ledger(&mut self, id: u32) -> Result<(), SimFailure> {
        let node = &self.nodes[id as usize];
        if !node.ledger.conservation_holds() {
            return Err(self.fail(
                "ledger",
                format!("node {id}: balances do not add up to minted minus slashed shares"),
            ));
        }
        let total: u64 = node.ledger.total_minted / TOKENS_PER_UPDATE.max(1);
        let minted: u64 = self
            .records
            .iter()
            .filter(|(&r, _)| r < node.machine.as_ref().map_or(0, |m| m.round().0))
            .count() as u64;
        // Each credit is one included update; the sum can never exceed committee size times rounds settled.
        if total
            > minted.max(1) * u64::from(self.config.committee_size)
                + u64::from(self.config.committee_size)
        {
            return Err(self.fail(
                "ledger",
                format!("node {id} holds {total} updates' worth of shares after {minted} rounds"),
            ));
        }
        self.pass("ledger");
        Ok(())
    }

    fn check_agreement(
        &mut self,
        id: u32,
        settled: &Settled,
        ledger: Hash32,
    ) -> Result<(), SimFailure> {
        let round = settled.round.0;
        match self.records.get(&round) {
            Some(record) => {
                if record.model_hash != settled.model_hash
                    || record.state_digest != settled.state_digest
                {
                    return Err(self.fail(
                        "agreement",
                        format!(
                            "round {round}: node {id} settled {:?}, others {:?}",
                            settled.model_hash, record.model_hash
                        ),
                    ));
                }
                if record.ledger_digest != ledger {
                    return Err(self.fail(
                        "ledger",
                        format!("round {round}: node {id}'s ledger root differs from other nodes'"),
                    ));
                }
                self.pass("agreement");
            }
            None => {
                self.records.insert(
                    round,
                    RoundRecord {
                        model_hash: settled.model_hash,
                        state_digest: settled.state_digest,
                        ledger_digest: ledger,
                    },
                );
            }
        }
        Ok(())
    }

    fn on_snapshot(
        &mut self,
        id: u32,
        served: Served,
        work: &mut VecDeque<(u32, Input)>,
    ) -> Result<(), SimFailure> {
        if Hash32::of_f32s(&served.theta) != served.snapshot.model_hash {
            return Ok(()); // a corrupt download: the machine's retry fetches it again
        }
        let node = &mut self.nodes[id as usize];
        let Some(machine) = node.machine.as_mut() else {
            return Ok(());
        };
        let old = (Arc::clone(&node.theta), Arc::clone(&node.ledger));
        let round_before = machine.round();
        node.theta = Arc::clone(&served.theta);
        node.ledger = Arc::clone(&served.ledger);
        let actions = machine.handle(
            local_time(self.now, node.drift_ppm),
            Input::Snapshot(served.snapshot.clone()),
        );
        // Adopted only if this input moved the machine there: a snapshot that arrives after the machine
        // settled on its own aggregate of the same state (`settle_awaited_if_computed`) is stale, and one
        // that makes it settle on its own aggregate emits `Settled` and keeps the staged aggregate.
        let settled_itself = actions.iter().any(|a| matches!(a, Action::Settled(_)));
        let adopted = !settled_itself
            && round_before != served.snapshot.next_round
            && machine.round() == served.snapshot.next_round
            && machine.model_hash() == served.snapshot.model_hash
            && machine.status() == Status::Synced;
        if !adopted {
            (node.theta, node.ledger) = old;
            return self.process(id, actions, work);
        }
        node.pending = None;
        node.delivered_commits.clear();
        node.commit_sets.clear();
        let next_round = served.snapshot.next_round.0;
        node.blobs.retain(|(r, _), _| *r >= next_round);
        node.arrival.retain(|(r, _)| *r >= next_round);
        self.count("snapshots_adopted", 1);
        if let Some(previous) = next_round.checked_sub(1).and_then(|r| self.records.get(&r)) {
            if self.honest(id) && previous.state_digest != served.digest {
                return Err(self.fail(
                    "agreement",
                    format!("node {id} caught up to a state no honest node settled"),
                ));
            }
        }
        self.remember_state(id);
        self.process(id, actions, work)?;
        self.replay_blobs(id, work);
        Ok(())
    }

    // ---- faults ------------------------------------------------------------------------------------------

    fn faults_after_round(&mut self, round: u64) -> Result<(), SimFailure> {
        let s = self.scenario.clone();
        let online: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|&i| self.nodes[i as usize].online)
            .collect();
        let mut leavers = 0;
        for &id in &online {
            if self.rng.gen_range(0..1000) < s.churn_permille {
                leavers += 1;
                let mut work = VecDeque::from([(id, Input::Leave)]);
                self.drain(&mut work)?;
                let node = &mut self.nodes[id as usize];
                node.online = false;
                node.departed = true;
                node.steady = false;
                node.machine = None;
                self.count("leaves", 1);
            } else if self.rng.gen_range(0..1000) < s.crash_permille {
                let corrupted = self.rng.gen_range(0..1000) < s.corrupt_store_permille;
                let node = &mut self.nodes[id as usize];
                node.online = false;
                node.steady = false;
                node.machine = None;
                node.incarnation += 1;
                if let Some(disk) = &mut node.disk {
                    disk.corrupted = corrupted;
                }
                self.count("crashes", 1);
                self.schedule(self.now + s.restart_after_ms, Event::Restart { node: id })?;
            }
        }
        for _ in 0..leavers {
            let index = self.nodes.len() as u64;
            if self.nodes.len() >= limits::NODES_MAX {
                break;
            }
            let key = peer_key(self.seed, index);
            let id = self.add_node(key, Boot::Join, false);
            self.schedule(
                self.now,
                Event::Wake {
                    node: id,
                    incarnation: 0,
                },
            )?;
            self.count("joins", 1);
        }
        if s.partition_every_rounds > 0
            && round % s.partition_every_rounds == 0
            && self.partition.is_none()
        {
            let groups: Vec<bool> = (0..self.nodes.len())
                .map(|_| self.rng.gen_range(0..1000) < s.partition_minority_permille)
                .collect();
            self.partition = Some(groups);
            self.count("partitions", 1);
            self.schedule(self.now + s.partition_ms, Event::PartitionEnd)?;
        }
        self.repair_overlay();
        self.recount();
        Ok(())
    }

    fn recount(&mut self) {
        self.online_count = self.nodes.iter().filter(|n| n.online).count();
        self.alive_count = self.nodes.iter().filter(|n| !n.departed).count();
    }

    fn restart(&mut self, id: u32) -> Result<(), SimFailure> {
        let node = &mut self.nodes[id as usize];
        node.online = true;
        node.seen.clear();
        node.seen_order.clear();
        node.pending = None;
        node.blobs.clear();
        node.arrival.clear();
        node.delivered_commits.clear();
        node.commit_sets.clear();
        node.served.clear();
        node.my_blob = None;
        let boot = match node.disk.take() {
            // The stand-in for a corrupted store: the checksum fails, the node wipes it and rejoins from peers.
            Some(disk) if !disk.corrupted => {
                node.theta = Arc::clone(&disk.served.theta);
                node.ledger = Arc::clone(&disk.served.ledger);
                Boot::Restore(disk.served.snapshot)
            }
            Some(_) | None => {
                node.theta = Arc::clone(&self.genesis_theta);
                node.ledger = Arc::clone(&self.genesis_ledger);
                Boot::Join
            }
        };
        let incarnation = node.incarnation;
        if matches!(boot, Boot::Join) {
            self.count("store_corruptions", 1);
        }
        self.count("restarts", 1);
        self.boot(id, boot);
        self.repair_overlay();
        self.recount();
        self.schedule(
            self.now,
            Event::Wake {
                node: id,
                incarnation,
            },
        )
    }

    // ---- summary -----------------------------------------------------------------------------------------

    fn summary(&mut self) -> Summary {
        let rounds = self.max_round.max(1);
        let steady: Vec<&Node> = self.nodes.iter().filter(|n| n.steady).collect();
        let per_round = |f: &dyn Fn(&Meter) -> u64| -> (f64, f64) {
            if steady.is_empty() {
                return (0.0, 0.0);
            }
            let values: Vec<f64> = steady
                .iter()
                .map(|n| f(&n.meter) as f64 / rounds as f64)
                .collect();
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            (mean, values.iter().cloned().fold(0.0, f64::max))
        };
        let (msgs_mean, msgs_max) = per_round(&|m| m.messages_in + m.messages_out);
        let (bytes_mean, bytes_max) = per_round(&|m| m.bytes_in + m.bytes_out);
        let memory: Vec<usize> = self
            .nodes
            .iter()
            .filter(|n| n.online)
            .filter_map(|n| {
                let machine = n.machine.as_ref()?;
                let blobs: usize = n.blobs.values().map(|(b, _)| b.len()).sum();
                Some(
                    machine.memory_estimate_bytes()
                        + n.theta.len() * 4
                        + blobs
                        + n.seen.len() * 16
                        + n.neighbors.len() * 4,
                )
            })
            .collect();
        let mut checkers: Vec<CheckerResult> = CHECKERS
            .iter()
            .map(|c| CheckerResult {
                name: c.to_string(),
                checks: self.checks[c],
                passed: true,
            })
            .collect();
        checkers.push(CheckerResult {
            name: PROGRESS.into(),
            checks: self.max_round,
            passed: true,
        });
        let honest_online = self
            .nodes
            .iter()
            .filter(|n| n.online && n.attack.is_none())
            .collect::<Vec<_>>();
        let final_theta = honest_online
            .iter()
            .filter_map(|n| n.machine.as_ref().map(|m| (m.round(), &n.theta)))
            .max_by_key(|(r, _)| *r)
            .map(|(_, t)| Arc::clone(t))
            .unwrap_or_else(|| Arc::clone(&self.genesis_theta));
        self.trace.update(&self.now.to_le_bytes());
        Summary {
            seed: self.seed,
            nodes_start: self.scenario.nodes,
            nodes_ever: self.nodes.len(),
            nodes_online_end: self.nodes.iter().filter(|n| n.online).count(),
            byzantine_nodes: self.nodes.iter().filter(|n| n.attack.is_some()).count(),
            rounds_completed: self.max_round,
            virtual_ms: self.now,
            virtual_ms_per_round: self.now as f64 / rounds as f64,
            steady_nodes: steady.len(),
            messages_per_node_per_round_mean: msgs_mean,
            messages_per_node_per_round_max: msgs_max,
            bytes_per_node_per_round_mean: bytes_mean,
            bytes_per_node_per_round_max: bytes_max,
            memory_per_node_bytes_mean: memory.iter().sum::<usize>() as f64
                / memory.len().max(1) as f64,
            memory_per_node_bytes_max: memory.iter().copied().max().unwrap_or(0),
            checkers,
            counts: self
                .counts
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            broadcasts_by_kind: self.kind_messages.clone(),
            global_loss_start: self.model.global_loss(&self.genesis_theta),
            global_loss_end: self.model.global_loss(&final_theta),
            trace_digest: Hash32(*self.trace.finalize().as_bytes()).to_hex(),
        }
    }
}

fn local_time(global_ms: u64, drift_ppm: i64) -> u64 {
    (global_ms as i128 * (1_000_000 + drift_ppm as i128) / 1_000_000) as u64
}

fn global_time(local_ms: u64, drift_ppm: i64) -> u64 {
    let scale = 1_000_000 + drift_ppm as i128;
    ((local_ms as i128 * 1_000_000 + scale - 1) / scale) as u64
}
