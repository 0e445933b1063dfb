//! `RoundMachine`: one node's view of the round protocol. Time, messages and results come in as `Input`; what
//! the node must do goes out as `Action`. No clock, socket, thread or RNG inside.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use types::limits::round as limits;
use types::{Hash32, PeerId, RoundNumber, RunId};

use crate::assign::{
    assign_data, attempt_seed, committee, proposer_ranks, round_seed, state_digest,
};
use crate::config::{ConfigError, GenesisConfig};
use crate::deadline::{adaptive_deadline_ms, quorum_count};
use crate::wire::{
    self, sign, sign_announce, verify, verify_leave, Announce, CommitSet, Commitment, Exclusion,
    Message, Proposal, Signed, Vote,
};

/// The agreed state at a round boundary: enough to resume, to serve a catching-up peer, or to restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The round about to run.
    pub next_round: RoundNumber,
    pub model_hash: Hash32,
    /// Sorted, unique. Shared: nodes that agree hold one copy.
    pub members: Arc<Vec<PeerId>>,
}

impl Snapshot {
    pub fn digest(&self, run_id: RunId) -> Hash32 {
        state_digest(run_id, self.next_round, self.model_hash, &self.members)
    }
}

/// How a machine starts.
#[derive(Clone, Debug)]
pub enum Boot {
    /// A founder at round 0.
    Genesis,
    /// Restart from this node's own persisted state (it may then catch up further).
    Restore(Snapshot),
    /// A new peer or one that lost its state: wait for votes, fetch a snapshot, then announce a join.
    Join,
}

/// The caller's verification result for a received update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Rejected,
}

#[derive(Clone, Debug)]
pub enum Input {
    /// Time passed; deadlines may fire.
    Tick,
    /// Bytes of a round message from the network (gossip or direct).
    Message(Vec<u8>),
    /// This node finished training for `round` from `base_model_hash`.
    Trained {
        round: RoundNumber,
        base_model_hash: Hash32,
        update_cid: Hash32,
        update_bytes: u64,
        claimed_loss: f32,
    },
    /// An update blob arrived (or was produced locally) and the caller verified it.
    UpdateReceived {
        round: RoundNumber,
        trainer: PeerId,
        update_cid: Hash32,
        update_bytes: u64,
        verdict: Verdict,
    },
    /// The caller aggregated the updates named by `Action::Aggregate` on top of the base model.
    Aggregated {
        round: RoundNumber,
        proposal_digest: Hash32,
        model_hash: Hash32,
    },
    /// A snapshot fetched after `Action::Resync`.
    Snapshot(Snapshot),
    /// Leave the run gracefully.
    Leave,
}

/// What a round message is, for metering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MessageKind {
    Commit,
    CommitSet,
    Proposal,
    Vote,
    Join,
    Leave,
}

impl MessageKind {
    pub fn of(message: &Message) -> MessageKind {
        match message {
            Message::Commit(_) => MessageKind::Commit,
            Message::CommitSet(_) => MessageKind::CommitSet,
            Message::Proposal(_) => MessageKind::Proposal,
            Message::Vote(_) => MessageKind::Vote,
            Message::Join(_) => MessageKind::Join,
            Message::Leave(_) => MessageKind::Leave,
        }
    }
}

/// A round as this node settled it. Every honest node that settles `round` reports the same record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settled {
    pub round: RoundNumber,
    pub model_hash: Hash32,
    pub state_digest: Hash32,
    pub proposal_digest: Hash32,
    pub proposer: PeerId,
    pub rank: u32,
    pub included: Vec<PeerId>,
    pub excluded: Vec<(PeerId, Exclusion)>,
    pub joins: Vec<PeerId>,
    pub leaves: Vec<PeerId>,
}

#[derive(Clone, Debug)]
pub enum Action {
    /// Gossip to every node of the run.
    Broadcast { kind: MessageKind, bytes: Vec<u8> },
    /// Send to these peers only.
    SendTo {
        peers: Vec<PeerId>,
        kind: MessageKind,
        bytes: Vec<u8>,
    },
    /// Train H inner steps from the base model on these shards, then report `Input::Trained`.
    Train {
        round: RoundNumber,
        base_model_hash: Hash32,
        seed: Hash32,
        data_ids: Vec<u32>,
    },
    /// The commit phase closed with our commitment in it: publish the update blob now.
    PublishUpdate {
        round: RoundNumber,
        update_cid: Hash32,
    },
    /// Aggregate these updates (sorted by trainer) onto the base model, then report `Input::Aggregated`.
    Aggregate {
        round: RoundNumber,
        proposal_digest: Hash32,
        base_model_hash: Hash32,
        updates: Vec<(PeerId, Hash32)>,
    },
    /// An adopted proposal includes updates we never received: fetch these blobs from these peers, then report
    /// each with `Input::UpdateReceived`.
    FetchUpdates {
        round: RoundNumber,
        updates: Vec<(PeerId, Hash32)>,
        peers: Vec<PeerId>,
    },
    /// The round is final: persist it, credit contributors, move the model forward.
    Settled(Settled),
    /// Our state is missing or disagrees with a quorum: fetch the snapshot with this digest from these peers,
    /// then report `Input::Snapshot`.
    Resync {
        next_round: RoundNumber,
        state_digest: Hash32,
        peers: Vec<PeerId>,
    },
    /// Call `handle(Input::Tick)` at this local time (or earlier).
    WakeAt(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Holds an agreed state and takes part.
    Synced,
    /// Has no state yet (a new or wiped node).
    Syncing,
    /// Left the run; ignores everything.
    Left,
}

/// Why inputs were dropped, counted (peer input never panics and never stops the machine).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub messages_accepted: u64,
    pub decode_errors: u64,
    pub wrong_run: u64,
    pub bad_signatures: u64,
    pub not_eligible: u64,
    pub stale_or_far: u64,
    pub invalid: u64,
    pub duplicates: u64,
    pub dropped_over_limit: u64,
    pub resyncs: u64,
    pub rank_timeouts: u64,
}

/// One bound that does not hold, for the simulator's limits checker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundViolation {
    pub what: &'static str,
    pub value: usize,
    pub max: usize,
}

#[derive(Clone, Debug)]
struct Reveal {
    cid: Hash32,
    bytes: u64,
    verdict: Verdict,
    arrived_ms: u64,
}

#[derive(Clone, Debug)]
struct AdoptedProposal {
    digest: Hash32,
    body: Proposal,
    proposer: PeerId,
    aggregate_requested: bool,
    fetch_requested: bool,
}

/// One committee draw of a round. Attempt 0 uses the round seed; a round that stays unsettled for
/// `RANKS_PER_ATTEMPT` proposer ranks re-draws (attempt 1, 2, ...), so dead members cannot stall it forever.
#[derive(Debug)]
struct Attempt {
    committee: Vec<PeerId>,
    ranks: Vec<PeerId>,
}

#[derive(Debug)]
struct RoundState {
    started_ms: u64,
    seed: Hash32,
    /// Committee draws made so far this round (at least attempt 0), at most `attempts_max`.
    attempts: Vec<Attempt>,
    attempts_max: usize,
    /// Sorted union of every drawn committee: who may commit, reveal and vote this round.
    eligible: Vec<PeerId>,
    /// Validly signed commitments from peers on no committee drawn yet: a later attempt may draw them.
    unplaced: BTreeMap<PeerId, (Signed<Commitment>, u64)>,
    train_requested: bool,
    commitments: BTreeMap<PeerId, (Signed<Commitment>, u64)>,
    /// Commit sets seen, by rank: (digest, signers in it).
    commit_sets: BTreeMap<u32, (Hash32, Vec<Signed<Commitment>>)>,
    reveals: BTreeMap<PeerId, Reveal>,
    active_rank: u32,
    rank_started_ms: u64,
    /// When this member last pinged, or entered the round (`ping_if_quiet`).
    quiet_since_ms: u64,
    my_update: Option<(Hash32, u64)>,
    published: bool,
    /// As proposer: when I sent my commit set for the active rank.
    my_commit_set: Option<(u32, u64, Hash32)>,
    my_proposal_rank: Option<u32>,
    proposal: Option<AdoptedProposal>,
    /// Proposals whose commit set we have not seen yet, by rank.
    orphans: BTreeMap<u32, Signed<Proposal>>,
    /// (proposal digest, model hash, state digest, next members).
    computed: Option<(Hash32, Hash32, Hash32, Arc<Vec<PeerId>>)>,
    voted_rank: Option<u32>,
    /// My latest vote, re-broadcast when a rank times out so that votes lost on the way are not lost for good.
    my_vote: Option<Signed<Vote>>,
    votes: BTreeMap<PeerId, (u32, Hash32)>,
    /// The signed votes behind `votes`: what settles this round becomes the certificate laggards are sent.
    vote_messages: BTreeMap<PeerId, Signed<Vote>>,
}

impl RoundState {
    fn attempt_of(&self, rank: u32) -> usize {
        ((rank / limits::RANKS_PER_ATTEMPT) as usize).min(self.attempts_max - 1)
    }

    /// The proposer of `rank`: ranks walk through the proposer order of their attempt's committee.
    fn proposer_at(&self, rank: u32) -> Option<PeerId> {
        let index = self.attempt_of(rank);
        let attempt = self.attempts.get(index)?;
        if attempt.ranks.is_empty() {
            return None;
        }
        let within = rank - index as u32 * limits::RANKS_PER_ATTEMPT;
        Some(attempt.ranks[within as usize % attempt.ranks.len()])
    }

    fn active_ranks(&self) -> &[PeerId] {
        let index = self
            .attempt_of(self.active_rank)
            .min(self.attempts.len() - 1);
        &self.attempts[index].ranks
    }

    fn is_attempt_start(&self, rank: u32) -> bool {
        rank == 0
            || (rank % limits::RANKS_PER_ATTEMPT == 0
                && ((rank / limits::RANKS_PER_ATTEMPT) as usize) < self.attempts_max)
    }

    /// The commit phase of attempt 0 starts with the round; a later attempt's with its first rank.
    fn commit_phase_start_ms(&self) -> u64 {
        if self.active_rank > 0 && self.is_attempt_start(self.active_rank) {
            self.rank_started_ms
        } else {
            self.started_ms
        }
    }

    /// Sorted union of the committees of attempts up to `rank`'s.
    fn eligible_through(&self, rank: u32) -> Vec<PeerId> {
        let last = self.attempt_of(rank).min(self.attempts.len() - 1);
        let mut all: Vec<PeerId> = self.attempts[..=last]
            .iter()
            .flat_map(|a| a.committee.iter().copied())
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }
}

struct Awaiting {
    next_round: RoundNumber,
    digest: Hash32,
    peers: Vec<PeerId>,
    retry_ms: u64,
    retries: u32,
}

pub struct RoundMachine {
    config: Arc<GenesisConfig>,
    run_id: RunId,
    key: SigningKey,
    me: PeerId,
    status: Status,
    round: RoundNumber,
    model_hash: Hash32,
    members: Arc<Vec<PeerId>>,
    /// `state_digest` of (round, model hash, members): what we started this round from.
    base_digest: Hash32,
    state: Option<RoundState>,
    awaiting: Option<Awaiting>,
    future: Vec<Input>,
    ahead: BTreeMap<u64, BTreeMap<PeerId, Hash32>>,
    pending_joins: BTreeMap<PeerId, Signed<Announce>>,
    pending_leaves: BTreeMap<PeerId, Signed<Announce>>,
    /// The votes that settled the last round (a quorum certificate), sent to peers still stuck behind it
    /// (see `help_laggard`).
    settled_certificate: Vec<Signed<Vote>>,
    /// Peers helped since the last settle, and when.
    helped: BTreeMap<PeerId, u64>,
    last_wake_ms: Option<u64>,
    now_ms: u64,
    stats: Stats,
}

impl RoundMachine {
    pub fn new(
        config: Arc<GenesisConfig>,
        key: SigningKey,
        now_ms: u64,
        boot: Boot,
    ) -> Result<(RoundMachine, Vec<Action>), ConfigError> {
        config.validate()?;
        let me = wire::peer_id_of(&key);
        let mut machine = RoundMachine {
            run_id: config.run_id(),
            config,
            key,
            me,
            status: Status::Syncing,
            round: RoundNumber(0),
            model_hash: Hash32::ZERO,
            members: Arc::new(Vec::new()),
            base_digest: Hash32::ZERO,
            state: None,
            awaiting: None,
            future: Vec::new(),
            ahead: BTreeMap::new(),
            pending_joins: BTreeMap::new(),
            pending_leaves: BTreeMap::new(),
            settled_certificate: Vec::new(),
            helped: BTreeMap::new(),
            last_wake_ms: None,
            now_ms,
            stats: Stats::default(),
        };
        let mut out = Vec::new();
        match boot {
            Boot::Genesis => {
                let snapshot = Snapshot {
                    next_round: RoundNumber(0),
                    model_hash: machine.config.genesis_model_hash,
                    members: Arc::new(machine.config.founders.clone()),
                };
                machine.adopt(snapshot, &mut out);
            }
            Boot::Restore(snapshot) => machine.adopt(snapshot, &mut out),
            Boot::Join => {}
        }
        machine.push_wake(&mut out);
        Ok((machine, out))
    }

    pub fn peer_id(&self) -> PeerId {
        self.me
    }
    pub fn run_id(&self) -> RunId {
        self.run_id
    }
    pub fn status(&self) -> Status {
        self.status
    }
    pub fn round(&self) -> RoundNumber {
        self.round
    }
    pub fn model_hash(&self) -> Hash32 {
        self.model_hash
    }
    pub fn members(&self) -> &[PeerId] {
        &self.members
    }
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    /// Everyone drawn onto a committee of this round so far (the union over its attempts).
    pub fn committee(&self) -> &[PeerId] {
        self.state.as_ref().map_or(&[], |s| &s.eligible)
    }
    /// The agreed state at the start of the current round (what a peer may fetch from us).
    pub fn snapshot(&self) -> Option<Snapshot> {
        (self.status == Status::Synced).then(|| Snapshot {
            next_round: self.round,
            model_hash: self.model_hash,
            members: Arc::clone(&self.members),
        })
    }

    /// The one entry point: feed an input at local time `now_ms`, get the actions to perform.
    pub fn handle(&mut self, now_ms: u64, input: Input) -> Vec<Action> {
        self.now_ms = self.now_ms.max(now_ms);
        let mut out = Vec::new();
        if self.status == Status::Left {
            return out;
        }
        match input {
            Input::Tick => {}
            Input::Message(bytes) => self.on_bytes(&bytes, &mut out),
            Input::Trained {
                round,
                base_model_hash,
                update_cid,
                update_bytes,
                claimed_loss,
            } => self.on_trained(
                round,
                base_model_hash,
                update_cid,
                update_bytes,
                claimed_loss,
                &mut out,
            ),
            Input::UpdateReceived {
                round,
                trainer,
                update_cid,
                update_bytes,
                verdict,
            } => self.on_update(round, trainer, update_cid, update_bytes, verdict),
            Input::Aggregated {
                round,
                proposal_digest,
                model_hash,
            } => self.on_aggregated(round, proposal_digest, model_hash, &mut out),
            Input::Snapshot(snapshot) => self.on_snapshot(snapshot, &mut out),
            Input::Leave => {
                self.leave(&mut out);
                return out;
            }
        }
        self.drive(&mut out);
        self.push_wake(&mut out);
        out
    }

    fn leave(&mut self, out: &mut Vec<Action>) {
        let ranks = self
            .state
            .as_ref()
            .map(|s| s.active_ranks().to_vec())
            .unwrap_or_default();
        if self.status == Status::Synced
            && self.members.binary_search(&self.me).is_ok()
            && !ranks.is_empty()
        {
            // Told to this round's committee (bounded), not to everyone, so that churn costs other nodes
            // nothing; every holder forwards it to the next round's first proposers until a proposal applies it.
            // A leave that reached only a few peers got lost with them, leaving dead members that later fill
            // committees (SIM_SEED=33).
            let body = Announce {
                run_id: self.run_id,
                round: self.round,
            };
            let bytes = Message::Leave(sign_announce(&self.key, body, true)).encode();
            let peers = ranks.iter().copied().filter(|p| *p != self.me).collect();
            out.push(Action::SendTo {
                peers,
                kind: MessageKind::Leave,
                bytes,
            });
        }
        self.status = Status::Left;
        self.state = None;
    }

    // ---- state transitions -------------------------------------------------------------------------------

    fn adopt(&mut self, snapshot: Snapshot, out: &mut Vec<Action>) {
        assert!(
            snapshot.members.windows(2).all(|w| w[0] < w[1]),
            "snapshot members must be sorted"
        );
        self.round = snapshot.next_round;
        self.model_hash = snapshot.model_hash;
        self.members = snapshot.members;
        self.base_digest = state_digest(self.run_id, self.round, self.model_hash, &self.members);
        self.status = Status::Synced;
        self.awaiting = None;
        self.ahead.retain(|&r, _| r >= self.round.0);
        self.start_round(out);
    }

    fn start_round(&mut self, out: &mut Vec<Action>) {
        let seed = round_seed(self.run_id, self.round, self.model_hash);
        let committee = committee(seed, &self.members, self.config.committee_size as usize);
        let ranks = proposer_ranks(seed, &committee);
        let now = self.now_ms;
        self.pending_joins
            .retain(|p, _| self.members.binary_search(p).is_err());
        self.pending_leaves
            .retain(|p, _| self.members.binary_search(p).is_ok());
        self.forward_announcements(&ranks, out);
        let train_requested = committee.binary_search(&self.me).is_ok();
        if train_requested {
            out.push(Action::Train {
                round: self.round,
                base_model_hash: self.model_hash,
                seed,
                data_ids: self.my_data_ids(seed),
            });
        }
        if self.members.binary_search(&self.me).is_err() && !ranks.is_empty() {
            // Not a member (new, or removed as a no-show): ask this round's first proposers to admit us.
            let body = Announce {
                run_id: self.run_id,
                round: self.round,
            };
            let bytes = Message::Join(sign_announce(&self.key, body, false)).encode();
            let peers = ranks
                .iter()
                .take(limits::ANNOUNCE_TARGET_PEERS)
                .copied()
                .collect();
            out.push(Action::SendTo {
                peers,
                kind: MessageKind::Join,
                bytes,
            });
        }
        let attempts_max = (limits::COMMITTEE_PEERS_MAX
            / (self.config.committee_size as usize).max(1))
        .clamp(1, limits::ATTEMPTS_PER_ROUND_MAX);
        self.state = Some(RoundState {
            started_ms: now,
            seed,
            eligible: committee.clone(),
            attempts: vec![Attempt { committee, ranks }],
            attempts_max,
            unplaced: BTreeMap::new(),
            train_requested,
            commitments: BTreeMap::new(),
            commit_sets: BTreeMap::new(),
            reveals: BTreeMap::new(),
            active_rank: 0,
            rank_started_ms: now,
            quiet_since_ms: now,
            my_update: None,
            published: false,
            my_commit_set: None,
            my_proposal_rank: None,
            proposal: None,
            orphans: BTreeMap::new(),
            computed: None,
            voted_rank: None,
            my_vote: None,
            votes: BTreeMap::new(),
            vote_messages: BTreeMap::new(),
        });
        for input in std::mem::take(&mut self.future) {
            match input {
                Input::Message(bytes) => self.on_bytes(&bytes, out),
                Input::UpdateReceived {
                    round,
                    trainer,
                    update_cid,
                    update_bytes,
                    verdict,
                } => self.on_update(round, trainer, update_cid, update_bytes, verdict),
                _ => {}
            }
        }
    }

    /// Join and leave announcements not yet applied go on to the new round's first proposers: the ones they were
    /// sent to may never propose again, and a lost leave would keep a dead member on the roll.
    fn forward_announcements(&self, ranks: &[PeerId], out: &mut Vec<Action>) {
        let peers: Vec<PeerId> = ranks
            .iter()
            .take(limits::ANNOUNCE_TARGET_PEERS)
            .copied()
            .filter(|p| *p != self.me)
            .collect();
        if peers.is_empty() {
            return;
        }
        let joins = self
            .pending_joins
            .values()
            .map(|m| (MessageKind::Join, Message::Join(m.clone())));
        let leaves = self
            .pending_leaves
            .values()
            .map(|m| (MessageKind::Leave, Message::Leave(m.clone())));
        for (kind, message) in joins
            .chain(leaves)
            .take(limits::ANNOUNCES_FORWARDED_PER_ROUND_MAX)
        {
            out.push(Action::SendTo {
                peers: peers.clone(),
                kind,
                bytes: message.encode(),
            });
        }
    }

    /// Draws the committees of every attempt up to the one `rank` belongs to (bounded by `attempts_max`).
    fn ensure_attempts(&mut self, rank: u32) {
        let size = self.config.committee_size as usize;
        let members = Arc::clone(&self.members);
        let Some(state) = self.state.as_mut() else {
            return;
        };
        let want = state.attempt_of(rank);
        while state.attempts.len() <= want {
            let seed = attempt_seed(state.seed, state.attempts.len());
            let committee = committee(seed, &members, size);
            let ranks = proposer_ranks(seed, &committee);
            state.eligible.extend(committee.iter().copied());
            state.eligible.sort_unstable();
            state.eligible.dedup();
            state.attempts.push(Attempt { committee, ranks });
        }
        self.place_commitments();
    }

    /// Commitments that arrived before their signer's committee was drawn count once it is.
    fn place_commitments(&mut self) {
        let state = self.state.as_ref().expect("round state");
        let placeable: Vec<PeerId> = state
            .unplaced
            .keys()
            .filter(|p| state.eligible.binary_search(p).is_ok())
            .copied()
            .collect();
        for peer in placeable {
            let state = self.state.as_mut().expect("round state");
            let (m, arrived_ms) = state.unplaced.remove(&peer).expect("listed");
            let state = self.state.as_ref().expect("round state");
            if state.commitments.contains_key(&peer) || !self.commitment_valid(state, &m, false) {
                continue;
            }
            let state = self.state.as_mut().expect("round state");
            state.commitments.insert(peer, (m, arrived_ms));
        }
    }

    /// A node drawn onto a later attempt's committee trains for this round then (once per round).
    fn enter_attempt(&mut self, out: &mut Vec<Action>) {
        let active = self.state.as_ref().expect("round state").active_rank;
        self.ensure_attempts(active);
        let state = self.state.as_ref().expect("round state");
        if state.train_requested || state.eligible.binary_search(&self.me).is_err() {
            return;
        }
        out.push(Action::Train {
            round: self.round,
            base_model_hash: self.model_hash,
            seed: state.seed,
            data_ids: self.my_data_ids(state.seed),
        });
        self.state.as_mut().expect("round state").train_requested = true;
    }

    fn my_data_ids(&self, seed: Hash32) -> Vec<u32> {
        assign_data(
            seed,
            self.me,
            self.config.dataset_cid,
            self.config.dataset_shards,
            self.config.shards_per_trainer,
        )
    }

    fn buffer_future(&mut self, input: Input) {
        if self.future.len() >= limits::FUTURE_MESSAGES_MAX {
            self.stats.dropped_over_limit += 1;
            return;
        }
        self.future.push(input);
    }

    // ---- inputs ------------------------------------------------------------------------------------------

    fn on_bytes(&mut self, bytes: &[u8], out: &mut Vec<Action>) {
        let message = match Message::decode(bytes) {
            Ok(m) => m,
            Err(_) => {
                self.stats.decode_errors += 1;
                return;
            }
        };
        if message.run_id() != self.run_id {
            self.stats.wrong_run += 1;
            return;
        }
        let round = message.round();
        match message {
            Message::Join(m) => {
                // A join for an older round is a laggard's status ping (see `ping_if_quiet`): help it catch up.
                // A non-member is not admitted from there: it announces again from the round it catches up to,
                // and a member that is behind would only stall the committees it is drawn into.
                if round < self.round {
                    // A stranger's ping is checked for its signature, after the cheap checks (`help_laggard`).
                    let member = self.members.binary_search(&m.signer).is_ok();
                    self.help_laggard(round, m.signer, || member || verify(&m), out);
                    return;
                }
                return self.on_join(m);
            }
            Message::Leave(m) => return self.on_leave(m),
            Message::Vote(ref v) if self.status != Status::Synced || round > self.round.next() => {
                return self.on_ahead_vote(v.clone(), out);
            }
            _ => {}
        }
        if self.status != Status::Synced || round < self.round {
            self.stats.stale_or_far += 1;
            self.help_laggard(round, message.signer(), || true, out);
            return;
        }
        if round == self.round.next() {
            if let Message::Vote(v) = &message {
                self.on_ahead_vote(v.clone(), out);
            }
            self.buffer_future(Input::Message(bytes.to_vec()));
            return;
        }
        if round != self.round {
            self.stats.stale_or_far += 1;
            return;
        }
        match message {
            Message::Commit(m) => self.on_commit(m),
            Message::CommitSet(m) => self.on_commit_set(m, out),
            Message::Proposal(m) => self.on_proposal(m),
            Message::Vote(m) => self.on_vote(m),
            Message::Join(_) | Message::Leave(_) => unreachable!("handled above"),
        }
    }

    /// A peer still speaking in an older round missed the votes that moved the run on: send it our vote of the
    /// round we settled last (per peer at most once a phase limit: the help can be lost, or reach it while it is
    /// still fetching a snapshot, and a peer that is still behind pings again). It settles with it, or, behind by more, catches up once
    /// enough members vouch for the same state (`on_ahead_vote`).
    /// `authentic` is asked last, before the help is recorded: it may verify a signature.
    fn help_laggard(
        &mut self,
        round: RoundNumber,
        signer: PeerId,
        authentic: impl FnOnce() -> bool,
        out: &mut Vec<Action>,
    ) {
        let Some(first) = self.settled_certificate.first() else {
            return;
        };
        if first.body.round < round || signer == self.me || !self.can_help(signer) || !authentic() {
            return;
        }
        self.helped.insert(signer, self.now_ms);
        for vote in &self.settled_certificate {
            out.push(Action::SendTo {
                peers: vec![signer],
                kind: MessageKind::Vote,
                bytes: Message::Vote(vote.clone()).encode(),
            });
        }
    }

    /// Whether `peer` may be helped now (the caller records it in `helped`). At most `COMMITTEE_PEERS_MAX` peers
    /// per round.
    fn can_help(&self, peer: PeerId) -> bool {
        match self.helped.get(&peer) {
            Some(&last) => self.now_ms >= last.saturating_add(self.config.phase_max_ms),
            None => self.helped.len() < limits::COMMITTEE_PEERS_MAX,
        }
    }

    fn on_join(&mut self, m: Signed<Announce>) {
        let known = self.members.binary_search(&m.signer).is_ok()
            || self.pending_joins.contains_key(&m.signer);
        if self.status != Status::Synced || known {
            self.stats.duplicates += 1;
            return;
        }
        if self.pending_joins.len() >= limits::PENDING_JOINS_MAX {
            self.stats.dropped_over_limit += 1;
            return;
        }
        if !verify(&m) {
            self.stats.bad_signatures += 1;
            return;
        }
        self.stats.messages_accepted += 1;
        self.pending_joins.insert(m.signer, m);
    }

    fn on_leave(&mut self, m: Signed<Announce>) {
        let member = self.members.binary_search(&m.signer).is_ok();
        if self.status != Status::Synced || !member || self.pending_leaves.contains_key(&m.signer) {
            self.stats.duplicates += 1;
            return;
        }
        if self.pending_leaves.len() >= limits::PENDING_JOINS_MAX {
            self.stats.dropped_over_limit += 1;
            return;
        }
        if !verify_leave(&m) {
            self.stats.bad_signatures += 1;
            return;
        }
        self.stats.messages_accepted += 1;
        self.pending_leaves.insert(m.signer, m);
    }

    /// Checks a commitment's binding to this round: signer on the committee, base model, data, codec, signature.
    fn commitment_valid(
        &self,
        state: &RoundState,
        c: &Signed<Commitment>,
        check_signature: bool,
    ) -> bool {
        let body = &c.body;
        state.eligible.binary_search(&c.signer).is_ok()
            && body.base_model_hash == self.model_hash
            && body.codec_id == self.config.codec_id
            && body.data_ids
                == assign_data(
                    state.seed,
                    c.signer,
                    self.config.dataset_cid,
                    self.config.dataset_shards,
                    self.config.shards_per_trainer,
                )
            && (!check_signature || verify(c))
    }

    fn on_commit(&mut self, m: Signed<Commitment>) {
        let state = self
            .state
            .as_ref()
            .expect("synced machine has a round state");
        if state.commitments.contains_key(&m.signer) {
            self.stats.duplicates += 1;
            return;
        }
        let now = self.now_ms;
        let undrawn = state.eligible.binary_search(&m.signer).is_err()
            && self.members.binary_search(&m.signer).is_ok()
            && state.attempts.len() < state.attempts_max;
        if undrawn {
            // Its committee may be a later attempt's that we have not drawn yet; keep it (bounded) until then.
            if state.unplaced.len() >= limits::COMMITTEE_PEERS_MAX || !verify(&m) {
                self.stats.dropped_over_limit += 1;
                return;
            }
            let state = self.state.as_mut().expect("round state");
            state.unplaced.insert(m.signer, (m, now));
            return;
        }
        if !self.commitment_valid(state, &m, true) {
            self.stats.invalid += 1;
            return;
        }
        self.stats.messages_accepted += 1;
        let state = self.state.as_mut().expect("round state");
        state.commitments.insert(m.signer, (m, now));
    }

    fn proposer_at(state: &RoundState, rank: u32) -> Option<PeerId> {
        state.proposer_at(rank)
    }

    fn rank_acceptable(state: &RoundState, rank: u32, signer: PeerId) -> bool {
        rank <= state.active_rank.saturating_add(2)
            && Self::proposer_at(state, rank) == Some(signer)
    }

    /// Messages may name ranks up to two ahead of ours: draw those ranks' committees before judging them.
    fn ensure_attempts_for_message(&mut self, rank: u32) {
        let Some(state) = self.state.as_ref() else {
            return;
        };
        let rank = rank.min(state.active_rank.saturating_add(2));
        self.ensure_attempts(rank);
    }

    fn on_commit_set(&mut self, m: Signed<CommitSet>, out: &mut Vec<Action>) {
        let digest = Message::CommitSet(m.clone()).digest();
        self.ensure_attempts_for_message(m.body.rank);
        let state = self.state.as_ref().expect("round state");
        if state.commit_sets.contains_key(&m.body.rank) {
            self.stats.duplicates += 1;
            return;
        }
        if !Self::rank_acceptable(state, m.body.rank, m.signer)
            || m.body.base_model_hash != self.model_hash
        {
            self.stats.not_eligible += 1;
            return;
        }
        if !verify(&m) {
            self.stats.invalid += 1;
            return;
        }
        for c in &m.body.commitments {
            // A commitment we already verified as a standalone message need not be verified again.
            let known = state
                .commitments
                .get(&c.signer)
                .is_some_and(|(k, _)| k == c);
            if !self.commitment_valid(state, c, !known) {
                self.stats.invalid += 1;
                return;
            }
        }
        self.stats.messages_accepted += 1;
        let now = self.now_ms;
        let me = self.me;
        let state = self.state.as_mut().expect("round state");
        for c in &m.body.commitments {
            state
                .commitments
                .entry(c.signer)
                .or_insert_with(|| (c.clone(), now));
        }
        if m.body.rank > state.active_rank {
            state.active_rank = m.body.rank;
            state.rank_started_ms = now;
        }
        let mine = m.body.commitments.iter().any(|c| c.signer == me);
        if state.commit_sets.len() >= limits::PROPOSER_RANKS_MAX as usize {
            // A long stall walks through many ranks: forget the oldest set nobody adopted.
            let adopted = state.proposal.as_ref().map(|p| p.body.rank);
            let oldest = state
                .commit_sets
                .keys()
                .copied()
                .find(|r| Some(*r) != adopted);
            if let Some(oldest) = oldest {
                state.commit_sets.remove(&oldest);
            }
        }
        state
            .commit_sets
            .insert(m.body.rank, (digest, m.body.commitments));
        if mine && !state.published {
            if let Some((cid, _)) = state.my_update {
                state.published = true;
                out.push(Action::PublishUpdate {
                    round: self.round,
                    update_cid: cid,
                });
            }
        }
        if let Some(orphan) = state.orphans.remove(&m.body.rank) {
            self.on_proposal(orphan);
        }
    }

    fn on_proposal(&mut self, m: Signed<Proposal>) {
        self.ensure_attempts_for_message(m.body.rank);
        let state = self.state.as_ref().expect("round state");
        let rank = m.body.rank;
        if !Self::rank_acceptable(state, rank, m.signer)
            || m.body.base_model_hash != self.model_hash
        {
            self.stats.not_eligible += 1;
            return;
        }
        let Some((set_digest, set)) = state.commit_sets.get(&rank) else {
            // The commit set may still be on its way; keep one proposal per rank until it arrives.
            if state.orphans.len() < limits::PROPOSER_RANKS_MAX as usize && verify(&m) {
                self.state
                    .as_mut()
                    .expect("round state")
                    .orphans
                    .insert(rank, m);
            } else {
                self.stats.dropped_over_limit += 1;
            }
            return;
        };
        if let Some(adopted) = &state.proposal {
            // A node that has not voted follows the lowest rank, or a later rank once its adopted rank has timed
            // out (its proposal may name updates this node cannot get).
            let adopted_timed_out = state.active_rank > adopted.body.rank;
            let may_switch =
                state.voted_rank.is_none() && (rank < adopted.body.rank || adopted_timed_out);
            let may_revote = state
                .voted_rank
                .is_some_and(|v| rank >= v + limits::REVOTE_AFTER_RANKS);
            if !(may_switch || may_revote) || rank == adopted.body.rank {
                self.stats.duplicates += 1;
                return;
            }
        }
        if m.body.commit_set_digest != *set_digest
            || !self.proposal_consistent(state, &m.body, set)
            || !verify(&m)
        {
            self.stats.invalid += 1;
            return;
        }
        self.stats.messages_accepted += 1;
        let digest = Message::Proposal(m.clone()).digest();
        let state = self.state.as_mut().expect("round state");
        if rank > state.active_rank {
            state.active_rank = rank;
            state.rank_started_ms = self.now_ms;
        }
        state.proposal = Some(AdoptedProposal {
            digest,
            body: m.body,
            proposer: m.signer,
            aggregate_requested: false,
            fetch_requested: false,
        });
        state.computed = None;
    }

    /// A proposal must account for every commitment of its commit set exactly once, only include updates we
    /// have not seen fail, and change membership only in ways the membership allows.
    fn proposal_consistent(
        &self,
        state: &RoundState,
        p: &Proposal,
        set: &[Signed<Commitment>],
    ) -> bool {
        let mut accounted: Vec<PeerId> = p
            .included
            .iter()
            .copied()
            .chain(p.excluded.iter().map(|e| e.0))
            .collect();
        accounted.sort_unstable();
        let signers: Vec<PeerId> = set.iter().map(|c| c.signer).collect();
        if accounted != signers {
            return false;
        }
        for trainer in &p.included {
            if let Some(reveal) = state.reveals.get(trainer) {
                if self.reveal_exclusion(state, *trainer, reveal).is_some() {
                    return false;
                }
            }
        }
        let members_ok = p
            .leaves
            .iter()
            .all(|l| self.members.binary_search(l).is_ok());
        let joins_ok = p
            .joins
            .iter()
            .all(|j| self.members.binary_search(j).is_err());
        let size_ok = self.members.len() + p.joins.len() <= limits::MEMBERS_MAX;
        members_ok && joins_ok && size_ok
    }

    fn reveal_exclusion(
        &self,
        state: &RoundState,
        trainer: PeerId,
        reveal: &Reveal,
    ) -> Option<Exclusion> {
        let (commitment, _) = state.commitments.get(&trainer)?;
        if commitment.body.update_cid != reveal.cid || commitment.body.update_bytes != reveal.bytes
        {
            return Some(Exclusion::BindingMismatch);
        }
        (reveal.verdict == Verdict::Rejected).then_some(Exclusion::Rejected)
    }

    fn on_vote(&mut self, m: Signed<Vote>) {
        self.ensure_attempts_for_message(m.body.rank);
        let state = self.state.as_ref().expect("round state");
        if state.eligible.binary_search(&m.signer).is_err() {
            self.stats.not_eligible += 1;
            return;
        }
        if state
            .votes
            .get(&m.signer)
            .is_some_and(|(rank, _)| *rank >= m.body.rank)
        {
            self.stats.duplicates += 1;
            return;
        }
        if !verify(&m) {
            self.stats.bad_signatures += 1;
            return;
        }
        self.stats.messages_accepted += 1;
        let state = self.state.as_mut().expect("round state");
        state
            .votes
            .insert(m.signer, (m.body.rank, m.body.state_digest));
        state.vote_messages.insert(m.signer, m);
    }

    /// Votes for rounds after ours tell us we fell behind; with enough signers agreeing on the state that round
    /// started from (settled, so peers can serve it) we catch up to it and take part in that round.
    ///
    /// A synced node also tallies signers it does not know as members: its member list can be stale (a joiner
    /// that adopted a snapshot taken while members had dropped each other as no-shows holds `members 1`), and
    /// counting only the members it knows left such a node behind for good (session 7). Strangers only
    /// corroborate: they cannot pick the state, open a round at the cost of a member's tally, or push a member's
    /// vote out (`consider_catch_up`, `make_ahead_room`).
    fn on_ahead_vote(&mut self, v: Signed<Vote>, out: &mut Vec<Action>) {
        let round = v.body.round.0;
        if self.status == Status::Synced && round < self.round.0 {
            self.stats.not_eligible += 1;
            return;
        }
        if self
            .ahead
            .get(&round)
            .is_some_and(|t| t.contains_key(&v.signer))
        {
            self.stats.duplicates += 1;
            return;
        }
        let vouching = self.vouches(v.signer);
        if !self.has_ahead_room(round, vouching) {
            self.stats.dropped_over_limit += 1;
            return;
        }
        if !verify(&v) {
            self.stats.bad_signatures += 1;
            return;
        }
        self.make_ahead_room(round, vouching);
        self.ahead
            .entry(round)
            .or_default()
            .insert(v.signer, v.body.base_digest);
        self.consider_catch_up(round, out);
        // The vote also vouches for the state its round settles into: a node far behind catches up straight to
        // it (one round behind, the round's own votes settle it).
        if round <= self.round.0 + 1 {
            return;
        }
        let next = round + 1;
        let fresh = !self
            .ahead
            .get(&next)
            .is_some_and(|t| t.contains_key(&v.signer));
        if fresh && self.has_ahead_room(next, vouching) {
            self.make_ahead_room(next, vouching);
            self.ahead
                .entry(next)
                .or_default()
                .insert(v.signer, v.body.state_digest);
            self.consider_catch_up(next, out);
        }
    }

    /// Whether a vote of `peer` counts as a member's toward catching up: every signer's does while we are not
    /// synced (we know no members yet), only a known member's once we are.
    fn vouches(&self, peer: PeerId) -> bool {
        self.status != Status::Synced || self.members.binary_search(&peer).is_ok()
    }

    /// Whether a vote for `round` fits in the bounded tally, perhaps by evicting what `make_ahead_room` evicts.
    fn has_ahead_room(&self, round: u64, vouching: bool) -> bool {
        match self.ahead.get(&round) {
            Some(tally) => {
                tally.len() < limits::AHEAD_VOTERS_PER_ROUND_MAX
                    || (vouching && tally.keys().any(|p| !self.vouches(*p)))
            }
            None => {
                self.ahead.len() < limits::AHEAD_ROUNDS_TRACKED_MAX
                    || (vouching && self.ahead_round_to_evict(round).is_some())
            }
        }
    }

    /// Frees one place for a vote for `round` if the tally is full; `has_ahead_room` said there is one.
    fn make_ahead_room(&mut self, round: u64, vouching: bool) {
        if let Some(tally) = self.ahead.get(&round) {
            if tally.len() < limits::AHEAD_VOTERS_PER_ROUND_MAX {
                return;
            }
            assert!(vouching, "only a member's vote evicts");
            let stranger = *tally
                .keys()
                .find(|p| !self.vouches(**p))
                .expect("has_ahead_room found a stranger");
            self.ahead
                .get_mut(&round)
                .expect("tally exists")
                .remove(&stranger);
            return;
        }
        if self.ahead.len() < limits::AHEAD_ROUNDS_TRACKED_MAX {
            return;
        }
        let evicted = self
            .ahead_round_to_evict(round)
            .expect("has_ahead_room found a round to evict");
        self.ahead.remove(&evicted);
    }

    /// The tracked round a member's vote for untracked `round` replaces: one no member we know voted for (the
    /// highest: strangers can name any round), else the lowest if it is lower than `round`.
    fn ahead_round_to_evict(&self, round: u64) -> Option<u64> {
        let unvouched = self
            .ahead
            .iter()
            .rev()
            .find(|(_, tally)| !tally.keys().any(|p| self.vouches(*p)))
            .map(|(r, _)| *r);
        unvouched.or_else(|| {
            let lowest = *self.ahead.keys().next()?;
            (lowest < round).then_some(lowest)
        })
    }

    fn consider_catch_up(&mut self, round: u64, out: &mut Vec<Action>) {
        let Some(tally) = self.ahead.get(&round) else {
            return;
        };
        // Per digest: its voters, and how many of them vouch (are members we know).
        let mut counts: BTreeMap<Hash32, (Vec<PeerId>, usize)> = BTreeMap::new();
        let mut vouching_total = 0;
        for (peer, digest) in tally {
            let entry = counts.entry(*digest).or_default();
            entry.0.push(*peer);
            if self.vouches(*peer) {
                entry.1 += 1;
                vouching_total += 1;
            }
        }
        // Members pick the state; strangers only add to its count.
        let Some((digest, (voters, vouching))) = counts
            .into_iter()
            .max_by_key(|(_, (voters, vouching))| (*vouching, voters.len()))
        else {
            return;
        };
        // A clear two-thirds majority of the members we know that voted, and CATCH_UP_VOTES_MIN of them, or, once
        // synced, a majority of the other members we know if that is fewer (at least one). A run that shrank to
        // two voters must still be able to pull its laggards along (session 8: a founder stuck behind the other
        // two, who finished the run alone), and so must a run that lost a member the laggard still counts
        // (session 9: a joiner whose snapshot named three founders, one of them gone, waited for a third vote).
        let vouching_min = if self.status == Status::Synced {
            let me = usize::from(self.members.binary_search(&self.me).is_ok());
            let others = self.members.len() - me;
            (others / 2 + 1).clamp(1, limits::CATCH_UP_VOTES_MIN)
        } else {
            limits::CATCH_UP_VOTES_MIN
        };
        if vouching < vouching_min || vouching * 3 < vouching_total * 2 {
            return;
        }
        let next_round = RoundNumber(round);
        if self
            .awaiting
            .as_ref()
            .is_some_and(|a| a.next_round >= next_round)
        {
            return;
        }
        if self.status == Status::Synced && self.round >= next_round {
            return;
        }
        self.request_resync(next_round, digest, voters, out);
    }

    /// A quorum voted for the next state before our own aggregation finished, so we asked peers for it
    /// (`request_resync`). If our aggregation has since produced exactly that state, settle on it ourselves:
    /// it is what settling would have done had our result come first, and a snapshot fetch can take a
    /// retry period or fail outright while the run waits for us.
    fn settle_awaited_if_computed(&mut self, out: &mut Vec<Action>) {
        let Some(awaiting) = &self.awaiting else {
            return;
        };
        if self.status != Status::Synced || awaiting.next_round != self.round.next() {
            return;
        }
        let computed = self.state.as_ref().and_then(|s| s.computed.as_ref());
        if !computed.is_some_and(|c| c.2 == awaiting.digest) {
            return;
        }
        self.awaiting = None;
        self.settle(out);
    }

    fn request_resync(
        &mut self,
        next_round: RoundNumber,
        digest: Hash32,
        mut peers: Vec<PeerId>,
        out: &mut Vec<Action>,
    ) {
        peers.truncate(limits::RESYNC_PEERS_MAX);
        self.stats.resyncs += 1;
        out.push(Action::Resync {
            next_round,
            state_digest: digest,
            peers: peers.clone(),
        });
        let retry_ms = self.now_ms + self.config.phase_max_ms;
        self.awaiting = Some(Awaiting {
            next_round,
            digest,
            peers,
            retry_ms,
            retries: 0,
        });
    }

    fn on_snapshot(&mut self, snapshot: Snapshot, out: &mut Vec<Action>) {
        let Some(awaiting) = &self.awaiting else {
            self.stats.stale_or_far += 1;
            return;
        };
        let sorted = snapshot.members.windows(2).all(|w| w[0] < w[1])
            && snapshot.members.len() <= limits::MEMBERS_MAX;
        if !sorted
            || snapshot.next_round != awaiting.next_round
            || snapshot.digest(self.run_id) != awaiting.digest
        {
            self.stats.invalid += 1;
            return;
        }
        self.future.clear();
        self.adopt(snapshot, out);
    }

    fn on_trained(
        &mut self,
        round: RoundNumber,
        base: Hash32,
        cid: Hash32,
        bytes: u64,
        loss: f32,
        out: &mut Vec<Action>,
    ) {
        if self.status != Status::Synced || round != self.round {
            self.stats.stale_or_far += 1;
            return;
        }
        let state = self.state.as_ref().expect("round state");
        if state.my_update.is_some() || state.eligible.binary_search(&self.me).is_err() {
            self.stats.duplicates += 1;
            return;
        }
        let body = Commitment {
            run_id: self.run_id,
            round,
            base_model_hash: base,
            data_ids: self.my_data_ids(state.seed),
            update_cid: cid,
            update_bytes: bytes,
            claimed_loss_bits: loss.to_bits(),
            codec_id: self.config.codec_id,
        };
        let signed = sign(&self.key, body);
        let bytes_out = Message::Commit(signed.clone()).encode();
        out.push(Action::Broadcast {
            kind: MessageKind::Commit,
            bytes: bytes_out,
        });
        self.state.as_mut().expect("round state").my_update = Some((cid, bytes));
        self.on_commit(signed);
    }

    fn on_update(
        &mut self,
        round: RoundNumber,
        trainer: PeerId,
        cid: Hash32,
        bytes: u64,
        verdict: Verdict,
    ) {
        if self.status != Status::Synced || round < self.round {
            self.stats.stale_or_far += 1;
            return;
        }
        if round == self.round.next() {
            self.buffer_future(Input::UpdateReceived {
                round,
                trainer,
                update_cid: cid,
                update_bytes: bytes,
                verdict,
            });
            return;
        }
        if round != self.round {
            self.stats.stale_or_far += 1;
            return;
        }
        let now = self.now_ms;
        let state = self.state.as_mut().expect("round state");
        if state.eligible.binary_search(&trainer).is_err() || state.reveals.contains_key(&trainer) {
            self.stats.duplicates += 1;
            return;
        }
        state.reveals.insert(
            trainer,
            Reveal {
                cid,
                bytes,
                verdict,
                arrived_ms: now,
            },
        );
    }

    fn on_aggregated(
        &mut self,
        round: RoundNumber,
        proposal_digest: Hash32,
        model_hash: Hash32,
        out: &mut Vec<Action>,
    ) {
        if self.status != Status::Synced || round != self.round {
            self.stats.stale_or_far += 1;
            return;
        }
        let state = self.state.as_ref().expect("round state");
        let Some(adopted) = &state.proposal else {
            return;
        };
        if adopted.digest != proposal_digest {
            self.stats.stale_or_far += 1;
            return;
        }
        let next_members = if adopted.body.leaves.is_empty() && adopted.body.joins.is_empty() {
            Arc::clone(&self.members)
        } else {
            let mut next: Vec<PeerId> = self
                .members
                .iter()
                .copied()
                .filter(|m| adopted.body.leaves.binary_search(m).is_err())
                .collect();
            next.extend(adopted.body.joins.iter().copied());
            next.sort_unstable();
            next.dedup();
            Arc::new(next)
        };
        let digest = state_digest(self.run_id, self.round.next(), model_hash, &next_members);
        let rank = adopted.body.rank;
        let vote_allowed = state.eligible.binary_search(&self.me).is_ok()
            && state
                .voted_rank
                .is_none_or(|v| rank >= v + limits::REVOTE_AFTER_RANKS);
        let state = self.state.as_mut().expect("round state");
        state.computed = Some((proposal_digest, model_hash, digest, next_members));
        if vote_allowed {
            state.voted_rank = Some(rank);
            let body = Vote {
                run_id: self.run_id,
                round,
                rank,
                proposal_digest,
                state_digest: digest,
                base_digest: self.base_digest,
            };
            let signed = sign(&self.key, body);
            out.push(Action::Broadcast {
                kind: MessageKind::Vote,
                bytes: Message::Vote(signed.clone()).encode(),
            });
            state.votes.insert(self.me, (rank, digest));
            state.vote_messages.insert(self.me, signed.clone());
            state.my_vote = Some(signed);
        }
    }

    // ---- progress ----------------------------------------------------------------------------------------

    /// Runs everything whose condition may now hold: proposer duties, aggregation, settling, rank timeouts.
    fn drive(&mut self, out: &mut Vec<Action>) {
        self.settle_awaited_if_computed(out);
        let gave_up = self
            .awaiting
            .as_ref()
            .is_some_and(|a| self.now_ms >= a.retry_ms && a.retries >= limits::RESYNC_RETRIES_MAX);
        if gave_up && self.status == Status::Synced {
            // Nobody serves that state (it was vouched for but never settled): go back to our own round.
            let awaiting = self.awaiting.take().expect("checked");
            self.ahead.remove(&awaiting.next_round.0);
        }
        if let Some(awaiting) = &mut self.awaiting {
            if self.now_ms >= awaiting.retry_ms {
                awaiting.retry_ms = self.now_ms + self.config.phase_max_ms;
                awaiting.retries += 1;
                self.stats.resyncs += 1;
                out.push(Action::Resync {
                    next_round: awaiting.next_round,
                    state_digest: awaiting.digest,
                    peers: awaiting.peers.clone(),
                });
            }
        }
        if self.status != Status::Synced || self.awaiting.is_some() {
            return;
        }
        self.check_rank_timeout(out);
        self.ping_if_quiet(out);
        self.enter_attempt(out);
        self.act_as_proposer(out);
        self.request_aggregate(out);
        self.tally(out);
    }

    /// When the active rank gives up. Three phases, even for a proposer that has sent nothing: a shorter
    /// timeout makes voters re-vote before a quorum's votes reach everyone, and two digests can then settle
    /// (the simulator's agreement checker caught this at SIM_SEED=59 with a one-phase timeout).
    fn rank_deadline_ms(&self, state: &RoundState) -> u64 {
        state.rank_started_ms + 3 * self.config.phase_max_ms
    }

    fn check_rank_timeout(&mut self, out: &mut Vec<Action>) {
        let now = self.now_ms;
        let deadline = self.rank_deadline_ms(self.state.as_ref().expect("round state"));
        let state = self.state.as_mut().expect("round state");
        if now < deadline {
            return;
        }
        state.active_rank += 1;
        state.rank_started_ms = now;
        self.stats.rank_timeouts += 1;
        // Re-send my vote, which peers may have missed; receivers drop duplicates. (Re-sending an old proposal
        // here instead revives a rank that voters already left: SIM_SEED=11 then settled two digests.)
        if let Some(vote) = &state.my_vote {
            out.push(Action::Broadcast {
                kind: MessageKind::Vote,
                bytes: Message::Vote(vote.clone()).encode(),
            });
        }
        self.ping_if_stuck(out);
    }

    /// A member stuck in a round for several ranks may be behind a run that moved on while it was cut off:
    /// it tells this round's committee where it is (a signed join announcement for its round); peers that are
    /// ahead answer with their last settled vote (`help_laggard`).
    fn ping_if_stuck(&mut self, out: &mut Vec<Action>) {
        if self.state.as_ref().expect("round state").active_rank == 0 {
            return;
        }
        self.send_ping(out);
    }

    /// A member that spent a whole phase limit in a round without settling may have missed the round while it
    /// caught up: messages of a round it had not entered yet are not kept, and at the end of a run no later
    /// round's votes come to move it on. So it pings once every phase limit, not only when a rank times out
    /// (three phase limits); peers that moved on answer with their settled votes (`help_laggard`, once per peer
    /// and round), peers in the same round ignore it.
    fn ping_if_quiet(&mut self, out: &mut Vec<Action>) {
        let now = self.now_ms;
        let phase_max_ms = self.config.phase_max_ms;
        let state = self.state.as_mut().expect("round state");
        if now < state.quiet_since_ms.saturating_add(phase_max_ms) {
            return;
        }
        state.quiet_since_ms = now;
        self.send_ping(out);
    }

    /// Tells this round's committee where this node is: a signed join announcement for its round. A non-member
    /// pings too: a joiner whose members have moved on without it has nothing else to learn it from (session 8:
    /// a joiner admitted by the founders sat in an older round, the committee it had been drawn into waited for it,
    /// and only its one announcement at the round's start had told anyone where it was). For peers in its round
    /// it doubles as a repeated join announcement.
    fn send_ping(&mut self, out: &mut Vec<Action>) {
        let state = self.state.as_ref().expect("round state");
        let peers: Vec<PeerId> = state
            .active_ranks()
            .iter()
            .copied()
            .filter(|p| *p != self.me)
            .collect();
        if peers.is_empty() {
            return;
        }
        let body = Announce {
            run_id: self.run_id,
            round: self.round,
        };
        out.push(Action::SendTo {
            peers,
            kind: MessageKind::Join,
            bytes: Message::Join(sign_announce(&self.key, body, false)).encode(),
        });
    }

    fn act_as_proposer(&mut self, out: &mut Vec<Action>) {
        let state = self.state.as_ref().expect("round state");
        let rank = state.active_rank;
        if Self::proposer_at(state, rank) != Some(self.me) {
            return;
        }
        match state.my_commit_set {
            Some((r, sent_ms, _)) if r == rank => {
                if state.my_proposal_rank != Some(rank) && self.reveal_phase_closed(state, sent_ms)
                {
                    self.send_proposal(out);
                }
            }
            _ => {
                // The first rank of an attempt waits for the commit phase (the new committee is training);
                // a later rank of the same attempt takes over at once with what has arrived.
                let waits = state.is_attempt_start(rank);
                if !waits || self.commit_phase_closed(state) {
                    self.send_commit_set(out);
                }
            }
        }
    }

    fn phase_closed(&self, start_ms: u64, arrivals: &[u64], expected: usize) -> bool {
        if arrivals.len() >= expected {
            return true;
        }
        let c = &self.config;
        let deadline = adaptive_deadline_ms(
            start_ms,
            arrivals,
            c.phase_min_ms,
            c.phase_max_ms,
            c.deadline_mad_k_millis,
        );
        let quorum = arrivals.len() >= quorum_count(expected, c.quorum_permille);
        self.now_ms >= start_ms + c.phase_max_ms || (quorum && self.now_ms >= deadline)
    }

    fn commit_phase_closed(&self, state: &RoundState) -> bool {
        let start = state.commit_phase_start_ms();
        let arrivals: Vec<u64> = state
            .commitments
            .values()
            .map(|(_, t)| t.saturating_sub(start))
            .collect();
        let expected = state.eligible_through(state.active_rank).len();
        self.phase_closed(start, &arrivals, expected)
    }

    fn reveal_phase_closed(&self, state: &RoundState, sent_ms: u64) -> bool {
        let Some((_, set)) = state.commit_sets.get(&state.active_rank) else {
            return false;
        };
        let arrivals: Vec<u64> = set
            .iter()
            .filter_map(|c| state.reveals.get(&c.signer))
            .map(|r| r.arrived_ms.saturating_sub(sent_ms))
            .collect();
        self.phase_closed(sent_ms, &arrivals, set.len())
    }

    fn send_commit_set(&mut self, out: &mut Vec<Action>) {
        let state = self.state.as_ref().expect("round state");
        let rank = state.active_rank;
        let commitments: Vec<Signed<Commitment>> =
            state.commitments.values().map(|(c, _)| c.clone()).collect();
        let body = CommitSet {
            run_id: self.run_id,
            round: self.round,
            rank,
            base_model_hash: self.model_hash,
            commitments,
        };
        let message = Message::CommitSet(sign(&self.key, body));
        let digest = message.digest();
        out.push(Action::Broadcast {
            kind: MessageKind::CommitSet,
            bytes: message.encode(),
        });
        let now = self.now_ms;
        let state = self.state.as_mut().expect("round state");
        state.my_commit_set = Some((rank, now, digest));
        if let Message::CommitSet(m) = message {
            self.on_commit_set(m, out);
        }
    }

    fn send_proposal(&mut self, out: &mut Vec<Action>) {
        let state = self.state.as_ref().expect("round state");
        let rank = state.active_rank;
        let (set_digest, set) = state
            .commit_sets
            .get(&rank)
            .expect("own commit set recorded");
        let mut included = Vec::new();
        let mut excluded = Vec::new();
        for c in set {
            let exclusion = match state.reveals.get(&c.signer) {
                None => Some(Exclusion::NotRevealed),
                Some(reveal) => self.reveal_exclusion(state, c.signer, reveal),
            };
            match exclusion {
                None => included.push(c.signer),
                Some(reason) => excluded.push((c.signer, reason)),
            }
        }
        let room = limits::MEMBERS_MAX.saturating_sub(self.members.len());
        let joins: Vec<PeerId> = self
            .pending_joins
            .keys()
            .copied()
            .take(limits::JOINS_PER_ROUND_MAX.min(room))
            .collect();
        // Committee members (of every attempt so far) that did not commit are removed; they rejoin with an
        // announcement when back.
        let no_shows: Vec<PeerId> = state
            .eligible_through(rank)
            .into_iter()
            .filter(|p| !set.iter().any(|c| c.signer == *p))
            .collect();
        let mut leaves: BTreeSet<PeerId> = self
            .pending_leaves
            .keys()
            .copied()
            .chain(no_shows)
            .collect();
        leaves.retain(|l| self.members.binary_search(l).is_ok());
        let leaves: Vec<PeerId> = leaves
            .into_iter()
            .take(limits::LEAVES_PER_ROUND_MAX)
            .collect();
        let body = Proposal {
            run_id: self.run_id,
            round: self.round,
            rank,
            base_model_hash: self.model_hash,
            commit_set_digest: *set_digest,
            included,
            excluded,
            joins,
            leaves,
        };
        let signed = sign(&self.key, body);
        out.push(Action::Broadcast {
            kind: MessageKind::Proposal,
            bytes: Message::Proposal(signed.clone()).encode(),
        });
        self.state.as_mut().expect("round state").my_proposal_rank = Some(rank);
        self.on_proposal(signed);
    }

    fn request_aggregate(&mut self, out: &mut Vec<Action>) {
        let state = self.state.as_ref().expect("round state");
        let Some(adopted) = &state.proposal else {
            return;
        };
        if adopted.aggregate_requested {
            return;
        }
        let mut updates = Vec::with_capacity(adopted.body.included.len());
        let mut missing = Vec::new();
        for trainer in &adopted.body.included {
            let Some(reveal) = state.reveals.get(trainer) else {
                if let Some((c, _)) = state.commitments.get(trainer) {
                    missing.push((*trainer, c.body.update_cid));
                }
                continue;
            };
            if self.reveal_exclusion(state, *trainer, reveal).is_some() {
                return;
            }
            updates.push((*trainer, reveal.cid));
        }
        if !missing.is_empty() {
            // Gossip lost them (a partition, a restart): the proposer aggregated them, so it holds them.
            if !adopted.fetch_requested {
                let mut peers = vec![adopted.proposer];
                peers.extend(
                    adopted
                        .body
                        .included
                        .iter()
                        .copied()
                        .take(limits::RESYNC_PEERS_MAX - 1),
                );
                out.push(Action::FetchUpdates {
                    round: self.round,
                    updates: missing,
                    peers,
                });
                let state = self.state.as_mut().expect("round state");
                state.proposal.as_mut().expect("adopted").fetch_requested = true;
            }
            return;
        }
        out.push(Action::Aggregate {
            round: self.round,
            proposal_digest: adopted.digest,
            base_model_hash: self.model_hash,
            updates,
        });
        let state = self.state.as_mut().expect("round state");
        state
            .proposal
            .as_mut()
            .expect("adopted")
            .aggregate_requested = true;
    }

    /// A digest settles with votes from a majority of any one committee drawn this round.
    fn tally(&mut self, out: &mut Vec<Action>) {
        let state = self.state.as_ref().expect("round state");
        let mut counts: BTreeMap<Hash32, Vec<PeerId>> = BTreeMap::new();
        for (peer, (_, digest)) in &state.votes {
            counts.entry(*digest).or_default().push(*peer);
        }
        let settled = state.attempts.iter().find_map(|attempt| {
            let quorum = attempt.committee.len() / 2 + 1;
            counts.iter().find_map(|(digest, voters)| {
                let count = voters
                    .iter()
                    .filter(|v| attempt.committee.binary_search(v).is_ok())
                    .count();
                (count >= quorum).then(|| (*digest, voters.clone()))
            })
        });
        let Some((digest, voters)) = settled else {
            return;
        };
        match &state.computed {
            Some((_, _, mine, _)) if *mine == digest => self.settle(out),
            _ => self.request_resync(self.round.next(), digest, voters, out),
        }
    }

    fn settle(&mut self, out: &mut Vec<Action>) {
        let state = self.state.take().expect("round state");
        let settled_digest = state.computed.as_ref().map(|c| c.2);
        self.settled_certificate = state
            .vote_messages
            .into_values()
            .filter(|v| Some(v.body.state_digest) == settled_digest)
            .collect();
        self.helped.clear();
        let adopted = state.proposal.expect("settling needs a proposal");
        let (_, model_hash, digest, next_members) =
            state.computed.expect("settling needs a result");
        out.push(Action::Settled(Settled {
            round: self.round,
            model_hash,
            state_digest: digest,
            proposal_digest: adopted.digest,
            proposer: adopted.proposer,
            rank: adopted.body.rank,
            included: adopted.body.included,
            excluded: adopted.body.excluded,
            joins: adopted.body.joins,
            leaves: adopted.body.leaves,
        }));
        self.round = self.round.next();
        self.model_hash = model_hash;
        self.members = next_members;
        self.base_digest = digest;
        self.ahead.retain(|&r, _| r >= self.round.0);
        self.start_round(out);
    }

    // ---- timers and bounds -------------------------------------------------------------------------------

    fn next_deadline_ms(&self) -> Option<u64> {
        if let Some(awaiting) = &self.awaiting {
            return Some(awaiting.retry_ms);
        }
        let state = self.state.as_ref()?;
        let c = &self.config;
        let mut next = self.rank_deadline_ms(state);
        if Self::proposer_at(state, state.active_rank) == Some(self.me) {
            let (start, arrivals): (u64, Vec<u64>) = match state.my_commit_set {
                Some((_, sent, _)) => (
                    sent,
                    state
                        .reveals
                        .values()
                        .map(|r| r.arrived_ms.saturating_sub(sent))
                        .collect(),
                ),
                None => {
                    let start = state.commit_phase_start_ms();
                    (
                        start,
                        state
                            .commitments
                            .values()
                            .map(|(_, t)| t.saturating_sub(start))
                            .collect(),
                    )
                }
            };
            let adaptive = adaptive_deadline_ms(
                start,
                &arrivals,
                c.phase_min_ms,
                c.phase_max_ms,
                c.deadline_mad_k_millis,
            );
            next = next.min(adaptive.max(self.now_ms + 1));
        }
        Some(next)
    }

    fn push_wake(&mut self, out: &mut Vec<Action>) {
        let next = self.next_deadline_ms();
        if next.is_some() && next != self.last_wake_ms {
            self.last_wake_ms = next;
            out.push(Action::WakeAt(next.expect("checked")));
        }
    }

    /// Every bound of `limits::round` that this machine's state must respect, checked by the simulator.
    pub fn bound_violations(&self) -> Vec<BoundViolation> {
        let mut checks = vec![
            ("members", self.members.len(), limits::MEMBERS_MAX),
            (
                "future buffer",
                self.future.len(),
                limits::FUTURE_MESSAGES_MAX,
            ),
            (
                "ahead rounds",
                self.ahead.len(),
                limits::AHEAD_ROUNDS_TRACKED_MAX,
            ),
            (
                "pending joins",
                self.pending_joins.len(),
                limits::PENDING_JOINS_MAX,
            ),
            (
                "pending leaves",
                self.pending_leaves.len(),
                limits::PENDING_JOINS_MAX,
            ),
        ];
        for tally in self.ahead.values() {
            checks.push((
                "ahead voters",
                tally.len(),
                limits::AHEAD_VOTERS_PER_ROUND_MAX,
            ));
        }
        if let Some(s) = &self.state {
            checks.push(("committee", s.eligible.len(), limits::COMMITTEE_PEERS_MAX));
            checks.push(("attempts", s.attempts.len(), limits::ATTEMPTS_PER_ROUND_MAX));
            checks.push((
                "commitments",
                s.commitments.len(),
                limits::COMMITTEE_PEERS_MAX,
            ));
            checks.push(("reveals", s.reveals.len(), limits::COMMITTEE_PEERS_MAX));
            checks.push(("helped", self.helped.len(), limits::COMMITTEE_PEERS_MAX));
            checks.push((
                "unplaced commitments",
                s.unplaced.len(),
                limits::COMMITTEE_PEERS_MAX,
            ));
            checks.push(("votes", s.votes.len(), limits::COMMITTEE_PEERS_MAX));
            checks.push((
                "commit sets",
                s.commit_sets.len(),
                limits::PROPOSER_RANKS_MAX as usize,
            ));
            checks.push((
                "orphan proposals",
                s.orphans.len(),
                limits::PROPOSER_RANKS_MAX as usize,
            ));
        }
        checks
            .into_iter()
            .filter(|(_, value, max)| value > max)
            .map(|(what, value, max)| BoundViolation { what, value, max })
            .collect()
    }

    /// One line on where this machine stands, for failure reports.
    pub fn describe(&self) -> String {
        let mut line = format!(
            "me {:?} round {} {:?} members {}",
            self.me,
            self.round.0,
            self.status,
            self.members.len()
        );
        if let Some(a) = &self.awaiting {
            line += &format!(" awaiting r{} {:?}", a.next_round.0, a.digest);
        }
        if let Some(s) = &self.state {
            let mine = s.computed.as_ref().map(|c| c.2);
            let mut tally: BTreeMap<(u32, Hash32), usize> = BTreeMap::new();
            for (rank, d) in s.votes.values() {
                *tally.entry((*rank, *d)).or_default() += 1;
            }
            line += &format!(
                " proposers {:?} committee {} attempts {} rank {} commits {} sets {:?} reveals {} proposal {:?} computed {:?} voted {:?} votes {:?}",
                (0..6).map(|r| s.proposer_at(r)).collect::<Vec<_>>(),
                s.eligible.len(),
                s.attempts.len(),
                s.active_rank,
                s.commitments.len(),
                s.commit_sets.keys().collect::<Vec<_>>(),
                s.reveals.len(),
                s.proposal.as_ref().map(|p| (p.body.rank, p.body.included.len(), p.aggregate_requested)),
                mine,
                s.voted_rank,
                tally,
            );
        }
        line
    }

    /// Rough bytes of state this machine holds (members, buffered messages, round bookkeeping).
    pub fn memory_estimate_bytes(&self) -> usize {
        let peer = std::mem::size_of::<PeerId>();
        let mut bytes = std::mem::size_of::<RoundMachine>() + self.members.len() * peer;
        bytes += self.future.len() * 512;
        bytes += self.ahead.values().map(|t| t.len() * 64).sum::<usize>();
        bytes += (self.pending_joins.len() + self.pending_leaves.len()) * 200;
        if let Some(s) = &self.state {
            bytes += s.eligible.len() * peer;
            bytes += s
                .attempts
                .iter()
                .map(|a| (a.committee.len() + a.ranks.len()) * peer)
                .sum::<usize>();
            bytes += s.commitments.len() * 400
                + s.commit_sets
                    .values()
                    .map(|(_, c)| c.len() * 400)
                    .sum::<usize>();
            bytes += s.reveals.len() * 96 + s.votes.len() * 72;
            bytes += s.computed.as_ref().map_or(0, |c| c.3.len() * peer);
        }
        bytes
    }
}
