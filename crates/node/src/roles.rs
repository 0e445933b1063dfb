//! The node's roles as one sans-IO core: it owns the `RoundMachine`, turns its actions into effects for the
//! shell (gossip, train, fetch, verify, aggregate, persist), and takes the shell's results back as a closed
//! `Input` enum. No tokio, socket, clock, file or RNG in here: time comes in with every input.
//!
//! Payloads on the run's gossip topic start with a tag byte: `TAG_ROUND` (a round message, decoded and
//! signature-checked by the machine), `TAG_UPDATE` (an [`UpdateAnnounce`]: "my update for round r is blob
//! CID, fetch it from me") or `TAG_FRAUD` (a [`FraudNotice`]: "I proved trainer T cheated; the proof is blob
//! CID, fetch it from me"). Update blobs and proofs themselves travel by the blob protocol, not by gossip.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use round::{Action, GenesisConfig, RoundMachine, Settled, Snapshot, Status, Verdict};
use types::limits::node as limits;
use types::limits::verify as verify_limits;
use types::{Hash32, PeerId, RoundNumber};
use verify::rating::{RatingParams, RatingTable};

/// Tag of a round message on the run topic.
pub const TAG_ROUND: u8 = 0;
/// Tag of an update announcement on the run topic.
pub const TAG_UPDATE: u8 = 1;
/// Tag of a fraud notice on the run topic.
pub const TAG_FRAUD: u8 = 2;
/// Version byte of a fraud notice.
pub const FRAUD_NOTICE_VERSION: u8 = 1;
/// Encoded size of a fraud notice, tag included.
pub const FRAUD_NOTICE_BYTES: usize = 1 + 1 + 8 + 32 + 32 + 8;
/// Version byte of an update announcement.
pub const ANNOUNCE_VERSION: u8 = 2;
/// Encoded size of an update announcement, tag included.
pub const ANNOUNCE_BYTES: usize = 1 + 1 + 8 + 32 + 32 + 8 + 32;

/// A verifier node's statistical score of one update (the maths is `verify::score`'s).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UpdateScore {
    /// Fails the harm test: removes less than `SCORE_GAIN_RATIO_MIN_MILLI`/1000 of the loss the reference removes
    /// (or, without a reference, raises the loss).
    pub harmful: bool,
    /// The own-data t statistic: the rating's observation.
    pub own_data_t: f64,
    /// The gain ratio h; `None` when the reference removes no loss.
    pub gain_ratio: Option<f64>,
}

/// Which work this node does. A node may hold several roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Roles {
    /// Trains when drawn into a round's committee.
    pub trainer: bool,
    /// Runs the sanity gates on every update before it votes on an aggregate.
    pub verifier: bool,
    /// Keeps recent models, updates and snapshot records on disk for peers that catch up.
    pub storage: bool,
}

impl Roles {
    pub const ALL: Roles = Roles {
        trainer: true,
        verifier: true,
        storage: true,
    };
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}; expected trainer, verifier or storage")]
pub struct RoleParseError(pub String);

impl FromStr for Roles {
    type Err = RoleParseError;
    fn from_str(text: &str) -> Result<Roles, RoleParseError> {
        let mut roles = Roles {
            trainer: false,
            verifier: false,
            storage: false,
        };
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "trainer" => roles.trainer = true,
                "verifier" => roles.verifier = true,
                "storage" => roles.storage = true,
                other => return Err(RoleParseError(other.into())),
            }
        }
        Ok(roles)
    }
}

/// "My update for `round` is blob `cid` of `bytes` bytes." Signed by gossip (strict mode): the author must be
/// the trainer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpdateAnnounce {
    pub round: RoundNumber,
    pub trainer: PeerId,
    pub cid: Hash32,
    pub bytes: u64,
    /// The trainer's replay record (`spot_check::ReplayRecord`: its signed commitment to every inner step's
    /// state), for spot checks; `Hash32::ZERO` when it keeps none.
    pub replay: Hash32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnounceError {
    #[error("update announcement is {0} bytes, expected {ANNOUNCE_BYTES}")]
    Length(usize),
    #[error("not an update announcement (tag {0})")]
    Tag(u8),
    #[error("update announcement version {0} is not supported")]
    Version(u8),
    #[error("update of {0} bytes is over the limit")]
    TooLarge(u64),
}

impl UpdateAnnounce {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ANNOUNCE_BYTES);
        out.push(TAG_UPDATE);
        out.push(ANNOUNCE_VERSION);
        out.extend_from_slice(&self.round.0.to_le_bytes());
        out.extend_from_slice(&self.trainer.0);
        out.extend_from_slice(&self.cid.0);
        out.extend_from_slice(&self.bytes.to_le_bytes());
        out.extend_from_slice(&self.replay.0);
        out
    }

    pub fn decode(data: &[u8]) -> Result<UpdateAnnounce, AnnounceError> {
        if data.len() != ANNOUNCE_BYTES {
            return Err(AnnounceError::Length(data.len()));
        }
        if data[0] != TAG_UPDATE {
            return Err(AnnounceError::Tag(data[0]));
        }
        if data[1] != ANNOUNCE_VERSION {
            return Err(AnnounceError::Version(data[1]));
        }
        let u64_at = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"));
        let b32_at = |at: usize| -> [u8; 32] { data[at..at + 32].try_into().expect("32 bytes") };
        let bytes = u64_at(74);
        if bytes == 0 || bytes > limits::UPDATE_BLOB_BYTES_MAX {
            return Err(AnnounceError::TooLarge(bytes));
        }
        Ok(UpdateAnnounce {
            round: RoundNumber(u64_at(2)),
            trainer: PeerId(b32_at(10)),
            cid: Hash32(b32_at(42)),
            bytes,
            replay: Hash32(b32_at(82)),
        })
    }
}

/// "Trainer `trainer`'s round `round` is proven wrong: the signed fraud proof is blob `proof` of `bytes` bytes,
/// fetch it from me." Anyone may send one; every node checks the proof itself before it believes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FraudNotice {
    pub round: RoundNumber,
    pub trainer: PeerId,
    pub proof: Hash32,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FraudNoticeError {
    #[error("fraud notice is {0} bytes, expected {FRAUD_NOTICE_BYTES}")]
    Length(usize),
    #[error("not a fraud notice (tag {0})")]
    Tag(u8),
    #[error("fraud notice version {0} is not supported")]
    Version(u8),
    #[error("fraud proof of {0} bytes is over the limit")]
    TooLarge(u64),
}

impl FraudNotice {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FRAUD_NOTICE_BYTES);
        out.push(TAG_FRAUD);
        out.push(FRAUD_NOTICE_VERSION);
        out.extend_from_slice(&self.round.0.to_le_bytes());
        out.extend_from_slice(&self.trainer.0);
        out.extend_from_slice(&self.proof.0);
        out.extend_from_slice(&self.bytes.to_le_bytes());
        out
    }

    pub fn decode(data: &[u8]) -> Result<FraudNotice, FraudNoticeError> {
        if data.len() != FRAUD_NOTICE_BYTES {
            return Err(FraudNoticeError::Length(data.len()));
        }
        if data[0] != TAG_FRAUD {
            return Err(FraudNoticeError::Tag(data[0]));
        }
        if data[1] != FRAUD_NOTICE_VERSION {
            return Err(FraudNoticeError::Version(data[1]));
        }
        let u64_at = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"));
        let b32_at = |at: usize| -> [u8; 32] { data[at..at + 32].try_into().expect("32 bytes") };
        let bytes = u64_at(74);
        if bytes == 0 || bytes > verify_limits::FRAUD_PROOF_BYTES_MAX as u64 {
            return Err(FraudNoticeError::TooLarge(bytes));
        }
        Ok(FraudNotice {
            round: RoundNumber(u64_at(2)),
            trainer: PeerId(b32_at(10)),
            proof: Hash32(b32_at(42)),
            bytes,
        })
    }
}

/// How the shell should judge a gossip payload for forwarding, before the core sees it.
pub fn judge_gossip(data: &[u8]) -> net::Verdict {
    match data.first() {
        Some(&TAG_ROUND) if round::Message::decode(&data[1..]).is_ok() => net::Verdict::Accept,
        Some(&TAG_UPDATE) if UpdateAnnounce::decode(data).is_ok() => net::Verdict::Accept,
        Some(&TAG_FRAUD) if FraudNotice::decode(data).is_ok() => net::Verdict::Accept,
        _ => net::Verdict::Reject,
    }
}

#[derive(Clone, Debug)]
pub enum Input {
    /// Time passed; deadlines may fire.
    Tick,
    /// A payload on the run topic, authored (signed) by `source`.
    Gossip { source: PeerId, data: Vec<u8> },
    /// Our training for `round` finished; the encoded update is stored locally as blob `update_cid`.
    Trained {
        round: RoundNumber,
        base_model_hash: Hash32,
        update_cid: Hash32,
        update_bytes: u64,
        claimed_loss: f32,
        /// This node's replay record of the round (`Hash32::ZERO`: none).
        replay: Hash32,
    },
    /// Our training for `round` failed (logged by the shell); we simply do not commit this round.
    TrainFailed { round: RoundNumber },
    /// An update blob is stored locally and its hash checked.
    BlobFetched {
        round: RoundNumber,
        trainer: PeerId,
        cid: Hash32,
        bytes: u64,
    },
    /// No provider delivered the blob, or this node could not read back the copy it held to verify it. Either
    /// way the trainer is not rated for it, and a later announcement or `FetchUpdates` fetches it again.
    BlobFetchFailed {
        round: RoundNumber,
        trainer: PeerId,
        cid: Hash32,
    },
    /// The shell ran the gates on an update (`accepted`: it passed them) and, on a verifier that holds a
    /// base model, scored it.
    Verified {
        round: RoundNumber,
        trainer: PeerId,
        cid: Hash32,
        bytes: u64,
        accepted: bool,
        score: Option<UpdateScore>,
    },
    /// The shell aggregated the agreed updates onto the base model (the result is staged, not yet current).
    Aggregated {
        round: RoundNumber,
        proposal_digest: Hash32,
        model_hash: Hash32,
    },
    /// A fraud proof announced by a peer was fetched and checked (`valid`: it proves `trainer` cheated).
    FraudChecked {
        trainer: PeerId,
        proof: Hash32,
        valid: bool,
    },
    /// A spot check of `trainer`'s `round` finished.
    SpotChecked {
        round: RoundNumber,
        trainer: PeerId,
        outcome: SpotOutcome,
    },
    /// A snapshot fetched after `Effect::FetchSnapshot`; its model parameters are staged in the shell.
    SnapshotFetched(Snapshot),
    /// Leave the run gracefully.
    Leave,
}

#[derive(Clone, Debug)]
pub enum Effect {
    /// Gossip these bytes on the run topic.
    Publish(Vec<u8>),
    /// Train H inner steps from the current model on these shards, then answer `Input::Trained`.
    Train {
        round: RoundNumber,
        base_model_hash: Hash32,
        seed: Hash32,
        data_ids: Vec<u32>,
    },
    /// Fetch update blob `cid` from these providers, check its hash, store it, answer `Input::BlobFetched`.
    Fetch {
        round: RoundNumber,
        trainer: PeerId,
        cid: Hash32,
        bytes: u64,
        providers: Vec<PeerId>,
    },
    /// Run the gates on a stored update blob, answer `Input::Verified`.
    Verify {
        round: RoundNumber,
        trainer: PeerId,
        cid: Hash32,
        bytes: u64,
        base_model_hash: Hash32,
        data_ids: Vec<u32>,
        /// The trainer's announced replay record (`Hash32::ZERO`: none), for a spot check after the round.
        replay: Hash32,
    },
    /// Aggregate these updates (sorted by trainer) onto the current model, answer `Input::Aggregated`.
    Aggregate {
        round: RoundNumber,
        proposal_digest: Hash32,
        base_model_hash: Hash32,
        updates: Vec<(PeerId, Hash32)>,
    },
    /// Fetch fraud proof blob `proof` from `provider`, check it (its run, its trainer, its one step), answer
    /// `Input::FraudChecked`.
    CheckFraud {
        trainer: PeerId,
        proof: Hash32,
        bytes: u64,
        provider: PeerId,
    },
    /// The round is final: make the staged model current, persist, and serve `snapshot` to peers.
    Settled {
        settled: Settled,
        snapshot: Snapshot,
    },
    /// Fetch the snapshot with this digest (record, then model) from these peers; answer `SnapshotFetched`.
    FetchSnapshot {
        next_round: RoundNumber,
        state_digest: Hash32,
        peers: Vec<PeerId>,
    },
    /// The fetched snapshot was adopted: make its staged model current, persist, serve it.
    Adopted(Snapshot),
    /// Call `handle(Input::Tick)` at this time or earlier.
    WakeAt(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UpdateState {
    Fetching,
    Held,
    Verifying,
    Done(Verdict),
}

#[derive(Clone, Debug)]
struct UpdateEntry {
    cid: Hash32,
    bytes: u64,
    replay: Hash32,
    state: UpdateState,
}

/// Counters for the status API and metrics (dropped peer input is counted, never a panic).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CoreStats {
    pub announces_accepted: u64,
    pub announces_ignored: u64,
    pub fetches_requested: u64,
    pub fetches_failed: u64,
    pub updates_accepted: u64,
    pub updates_rejected: u64,
    /// Updates this verifier scored (loss before and after).
    pub updates_scored: u64,
    /// Scored updates rejected by the harm test.
    pub updates_harmful: u64,
    /// Updates rejected because their trainer's rating is below the inclusion threshold.
    pub updates_rating_excluded: u64,
    pub rounds_settled: u64,
    pub snapshots_adopted: u64,
    pub trainings: u64,
    /// Replay spot checks this verifier ran whose replayed steps matched the trainer's.
    pub spot_checks_passed: u64,
    /// Spot checks that ended in a signed fraud proof (the trainer is banned here).
    pub frauds_proven: u64,
    /// Spot checks the trainer did not serve states for (rated as a gate rejection).
    pub spot_checks_withheld: u64,
    /// Spot checks that could not run here (this node's own failure: no verdict on the trainer).
    pub spot_checks_failed: u64,
    /// Peers' fraud proofs this node checked and accepted (the trainer is banned here too).
    pub frauds_learned: u64,
    /// Fraud notices whose proof did not check, or could not be fetched.
    pub fraud_notices_refused: u64,
    /// Fraud notices ignored: seen before, about a banned trainer, or over the bound of open checks.
    pub fraud_notices_ignored: u64,
}

/// How a replay spot check of one trainer's round ended (`spot_check`, run by the shell off the loop).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpotOutcome {
    /// The replayed steps reproduced the trainer's committed states.
    Honest { steps_replayed: u64 },
    /// A step did not: the signed fraud proof is blob `proof` (its encoding's CID) of `bytes` bytes, stored in
    /// the run folder and served to peers.
    Fraud { proof: Hash32, bytes: u64 },
    /// The trainer did not serve a committed state (or its record) in time.
    Withheld { step: Option<u32> },
    /// This node could not run the check (no blame).
    Failed,
}

/// The roles' core. One per node process.
pub struct Core {
    machine: RoundMachine,
    genesis: Arc<GenesisConfig>,
    roles: Roles,
    /// Rounds the run lasts: no training is started for a later round.
    rounds: u64,
    updates: BTreeMap<(u64, PeerId), UpdateEntry>,
    my_update: Option<(RoundNumber, Hash32, u64, Hash32)>,
    /// Fraud proofs this node made or was told of (bounded by `FRAUD_NOTICES_SEEN_MAX`).
    fraud_notices_seen: std::collections::BTreeSet<Hash32>,
    entered_round: RoundNumber,
    phase: &'static str,
    stats: CoreStats,
    /// The verifier role's ratings of trainers (`verify::rating`); in memory, so a restart starts from the prior.
    ratings: RatingTable,
}

impl Core {
    /// Wraps a started machine; `boot_actions` are the actions `RoundMachine::new` returned.
    pub fn new(
        machine: RoundMachine,
        genesis: Arc<GenesisConfig>,
        roles: Roles,
        rounds: u64,
        boot_actions: Vec<Action>,
    ) -> (Core, Vec<Effect>) {
        let entered_round = machine.round();
        let mut core = Core {
            machine,
            genesis,
            roles,
            rounds,
            updates: BTreeMap::new(),
            my_update: None,
            fraud_notices_seen: std::collections::BTreeSet::new(),
            entered_round,
            phase: "sync",
            stats: CoreStats::default(),
            ratings: RatingTable::new(RatingParams::default()),
        };
        let mut out = Vec::new();
        core.perform(boot_actions, &mut out);
        (core, out)
    }

    pub fn machine(&self) -> &RoundMachine {
        &self.machine
    }
    pub fn roles(&self) -> Roles {
        self.roles
    }
    pub fn phase(&self) -> &'static str {
        self.phase
    }
    pub fn stats(&self) -> &CoreStats {
        &self.stats
    }
    pub fn ratings(&self) -> &RatingTable {
        &self.ratings
    }
    /// Whether the run is over for this node: it settled the last round.
    pub fn finished(&self) -> bool {
        self.machine.status() == Status::Synced && self.machine.round().0 >= self.rounds
    }

    pub fn handle(&mut self, now_ms: u64, input: Input) -> Vec<Effect> {
        let mut out = Vec::new();
        match input {
            Input::Tick => self.feed(now_ms, round::Input::Tick, &mut out),
            Input::Gossip { source, data } => self.on_gossip(now_ms, source, data, &mut out),
            Input::Trained {
                round,
                base_model_hash,
                update_cid,
                update_bytes,
                claimed_loss,
                replay,
            } => {
                self.my_update = Some((round, update_cid, update_bytes, replay));
                if round == self.machine.round() {
                    self.phase = "commit";
                }
                let input = round::Input::Trained {
                    round,
                    base_model_hash,
                    update_cid,
                    update_bytes,
                    claimed_loss,
                };
                self.feed(now_ms, input, &mut out);
            }
            Input::TrainFailed { round } => {
                if round == self.machine.round() {
                    self.phase = "wait";
                }
            }
            Input::BlobFetched {
                round,
                trainer,
                cid,
                bytes,
            } => self.on_blob(round, trainer, cid, bytes, &mut out),
            Input::BlobFetchFailed {
                round,
                trainer,
                cid,
            } => {
                self.stats.fetches_failed += 1;
                // Forget it, so a later announcement or FetchUpdates tries again.
                if self.updates.get(&(round.0, trainer)).is_some_and(|e| {
                    e.cid == cid
                        && matches!(e.state, UpdateState::Fetching | UpdateState::Verifying)
                }) {
                    self.updates.remove(&(round.0, trainer));
                }
            }
            Input::Verified {
                round,
                trainer,
                cid,
                bytes,
                accepted,
                score,
            } => {
                let accepted = self.judge(round, trainer, accepted, score);
                self.on_verified(now_ms, round, trainer, cid, bytes, accepted, &mut out)
            }
            Input::Aggregated {
                round,
                proposal_digest,
                model_hash,
            } => {
                if round == self.machine.round() {
                    self.phase = "finalize";
                }
                let input = round::Input::Aggregated {
                    round,
                    proposal_digest,
                    model_hash,
                };
                self.feed(now_ms, input, &mut out);
            }
            Input::SpotChecked {
                round,
                trainer,
                outcome,
            } => self.on_spot_checked(round, trainer, outcome, &mut out),
            Input::FraudChecked {
                trainer,
                proof,
                valid,
            } => {
                if valid {
                    self.stats.frauds_learned += 1;
                    self.ratings.ban(trainer);
                } else {
                    // Whoever sent it proved nothing: the trainer stands as it was.
                    let _ = proof;
                    self.stats.fraud_notices_refused += 1;
                }
            }
            Input::SnapshotFetched(snapshot) => self.on_snapshot(now_ms, snapshot, &mut out),
            Input::Leave => self.feed(now_ms, round::Input::Leave, &mut out),
        }
        out
    }

    /// A proven fraud bans the trainer here for good; a withheld state is rated like a gate rejection.
    fn on_spot_checked(
        &mut self,
        round: RoundNumber,
        trainer: PeerId,
        outcome: SpotOutcome,
        out: &mut Vec<Effect>,
    ) {
        match outcome {
            SpotOutcome::Honest { .. } => self.stats.spot_checks_passed += 1,
            SpotOutcome::Fraud { proof, bytes } => {
                self.stats.frauds_proven += 1;
                self.ratings.ban(trainer);
                let notice = FraudNotice {
                    round,
                    trainer,
                    proof,
                    bytes,
                };
                self.fraud_notices_seen.insert(proof);
                out.push(Effect::Publish(notice.encode()));
            }
            SpotOutcome::Withheld { .. } => {
                self.stats.spot_checks_withheld += 1;
                self.ratings
                    .observe(trainer, round, -verify_limits::SCORE_OBSERVATION_ABS_MAX);
            }
            SpotOutcome::Failed => self.stats.spot_checks_failed += 1,
        }
    }

    fn on_gossip(&mut self, now_ms: u64, source: PeerId, data: Vec<u8>, out: &mut Vec<Effect>) {
        match data.first() {
            Some(&TAG_ROUND) => {
                let mut data = data;
                data.remove(0);
                self.feed(now_ms, round::Input::Message(data), out);
            }
            Some(&TAG_UPDATE) => match UpdateAnnounce::decode(&data) {
                Ok(announce) if announce.trainer == source => self.on_announce(announce, out),
                _ => self.stats.announces_ignored += 1,
            },
            Some(&TAG_FRAUD) => match FraudNotice::decode(&data) {
                Ok(notice) => self.on_fraud_notice(source, notice, out),
                Err(_) => self.stats.fraud_notices_ignored += 1,
            },
            _ => self.stats.announces_ignored += 1,
        }
    }

    /// A verifier node checks every new fraud proof it hears of, once; the proof is served by whoever sent it.
    fn on_fraud_notice(&mut self, source: PeerId, notice: FraudNotice, out: &mut Vec<Effect>) {
        if !self.roles.verifier
            || self.ratings.banned(&notice.trainer)
            || self.fraud_notices_seen.contains(&notice.proof)
            || self.fraud_notices_seen.len() >= limits::FRAUD_NOTICES_SEEN_MAX
        {
            self.stats.fraud_notices_ignored += 1;
            return;
        }
        self.fraud_notices_seen.insert(notice.proof);
        out.push(Effect::CheckFraud {
            trainer: notice.trainer,
            proof: notice.proof,
            bytes: notice.bytes,
            provider: source,
        });
    }

    fn on_announce(&mut self, announce: UpdateAnnounce, out: &mut Vec<Effect>) {
        let current = self.machine.round().0;
        let round = announce.round.0;
        let key = (round, announce.trainer);
        if round < current
            || round > current + 1
            || self.updates.contains_key(&key)
            || self.updates.len() >= limits::UPDATE_BLOBS_MAX
        {
            self.stats.announces_ignored += 1;
            return;
        }
        self.stats.announces_accepted += 1;
        self.start_fetch(
            announce.round,
            announce.trainer,
            announce.cid,
            announce.bytes,
            announce.replay,
            vec![announce.trainer],
            out,
        );
    }

    fn start_fetch(
        &mut self,
        round: RoundNumber,
        trainer: PeerId,
        cid: Hash32,
        bytes: u64,
        replay: Hash32,
        providers: Vec<PeerId>,
        out: &mut Vec<Effect>,
    ) {
        self.updates.insert(
            (round.0, trainer),
            UpdateEntry {
                cid,
                bytes,
                replay,
                state: UpdateState::Fetching,
            },
        );
        self.stats.fetches_requested += 1;
        out.push(Effect::Fetch {
            round,
            trainer,
            cid,
            bytes,
            providers,
        });
    }

    fn on_blob(
        &mut self,
        round: RoundNumber,
        trainer: PeerId,
        cid: Hash32,
        bytes: u64,
        out: &mut Vec<Effect>,
    ) {
        let Some(entry) = self.updates.get_mut(&(round.0, trainer)) else {
            return;
        };
        if entry.cid != cid || entry.state != UpdateState::Fetching {
            return;
        }
        entry.state = UpdateState::Held;
        entry.bytes = bytes;
        self.verify_ready(out);
    }

    /// Starts the gates on every held update of the current round (blobs that came early wait here).
    fn verify_ready(&mut self, out: &mut Vec<Effect>) {
        if self.machine.status() != Status::Synced {
            return;
        }
        let round = self.machine.round();
        let base = self.machine.model_hash();
        let seed = round::round_seed(self.machine.run_id(), round, base);
        for ((r, trainer), entry) in self.updates.range_mut((round.0, PeerId([0; 32]))..) {
            if *r != round.0 {
                break;
            }
            if entry.state != UpdateState::Held {
                continue;
            }
            entry.state = UpdateState::Verifying;
            let data_ids = round::assign_data(
                seed,
                *trainer,
                self.genesis.dataset_cid,
                self.genesis.dataset_shards,
                self.genesis.shards_per_trainer,
            );
            out.push(Effect::Verify {
                round,
                trainer: *trainer,
                cid: entry.cid,
                bytes: entry.bytes,
                base_model_hash: base,
                data_ids,
                replay: entry.replay,
            });
        }
    }

    fn judge(
        &mut self,
        round: RoundNumber,
        trainer: PeerId,
        accepted: bool,
        score: Option<UpdateScore>,
    ) -> bool {
        if !self.roles.verifier {
            return accepted;
        }
        judge_update(
            &mut self.ratings,
            &mut self.stats,
            round,
            trainer,
            accepted,
            score,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn on_verified(
        &mut self,
        now_ms: u64,
        round: RoundNumber,
        trainer: PeerId,
        cid: Hash32,
        bytes: u64,
        accepted: bool,
        out: &mut Vec<Effect>,
    ) {
        let Some(entry) = self.updates.get_mut(&(round.0, trainer)) else {
            return;
        };
        if entry.cid != cid {
            return;
        }
        let verdict = if accepted {
            self.stats.updates_accepted += 1;
            Verdict::Accepted
        } else {
            self.stats.updates_rejected += 1;
            Verdict::Rejected
        };
        entry.state = UpdateState::Done(verdict);
        let input = round::Input::UpdateReceived {
            round,
            trainer,
            update_cid: cid,
            update_bytes: bytes,
            verdict,
        };
        self.feed(now_ms, input, out);
    }

    fn on_snapshot(&mut self, now_ms: u64, snapshot: Snapshot, out: &mut Vec<Effect>) {
        let actions = self
            .machine
            .handle(now_ms, round::Input::Snapshot(snapshot.clone()));
        let adopted = self.machine.status() == Status::Synced
            && self.machine.round() == snapshot.next_round
            && self.machine.model_hash() == snapshot.model_hash;
        if adopted {
            self.stats.snapshots_adopted += 1;
            out.push(Effect::Adopted(snapshot));
        }
        self.perform(actions, out);
    }

    fn feed(&mut self, now_ms: u64, input: round::Input, out: &mut Vec<Effect>) {
        let actions = self.machine.handle(now_ms, input);
        self.perform(actions, out);
    }

    fn perform(&mut self, actions: Vec<Action>, out: &mut Vec<Effect>) {
        for action in actions {
            self.perform_one(action, out);
        }
        if self.machine.round() != self.entered_round {
            self.entered_round = self.machine.round();
            let current = self.entered_round.0;
            self.updates.retain(|(r, _), _| *r >= current);
            if self.machine.status() == Status::Synced {
                self.phase = "wait";
            }
        }
        self.verify_ready(out);
    }

    fn perform_one(&mut self, action: Action, out: &mut Vec<Effect>) {
        match action {
            Action::Broadcast { bytes, .. } | Action::SendTo { bytes, .. } => {
                // Direct sends go over gossip too: the run topic reaches every member, and the machine
                // ignores what is not meant for it.
                let mut data = Vec::with_capacity(bytes.len() + 1);
                data.push(TAG_ROUND);
                data.extend_from_slice(&bytes);
                out.push(Effect::Publish(data));
            }
            Action::Train {
                round,
                base_model_hash,
                seed,
                data_ids,
            } => {
                if self.roles.trainer && round.0 < self.rounds {
                    self.stats.trainings += 1;
                    self.phase = "train";
                    out.push(Effect::Train {
                        round,
                        base_model_hash,
                        seed,
                        data_ids,
                    });
                }
            }
            Action::PublishUpdate { round, update_cid } => {
                let Some((my_round, cid, bytes, replay)) = self.my_update else {
                    return;
                };
                if my_round != round || cid != update_cid {
                    return;
                }
                self.phase = "reveal";
                let me = self.machine.peer_id();
                let announce = UpdateAnnounce {
                    round,
                    trainer: me,
                    cid,
                    bytes,
                    replay,
                };
                out.push(Effect::Publish(announce.encode()));
                // Our own update goes through the same gates as everyone else's.
                self.updates.insert(
                    (round.0, me),
                    UpdateEntry {
                        cid,
                        bytes,
                        replay,
                        state: UpdateState::Held,
                    },
                );
            }
            Action::Aggregate {
                round,
                proposal_digest,
                base_model_hash,
                updates,
            } => {
                self.phase = "aggregate";
                out.push(Effect::Aggregate {
                    round,
                    proposal_digest,
                    base_model_hash,
                    updates,
                });
            }
            Action::FetchUpdates {
                round,
                updates,
                peers,
            } => {
                for (trainer, cid) in updates {
                    let known = self.updates.get(&(round.0, trainer));
                    let held =
                        known.is_some_and(|e| e.cid == cid && e.state != UpdateState::Fetching);
                    // A record announced with this very update is kept; otherwise none is known.
                    let replay = known
                        .filter(|e| e.cid == cid)
                        .map_or(Hash32::ZERO, |e| e.replay);
                    if held || self.updates.len() >= limits::UPDATE_BLOBS_MAX {
                        continue;
                    }
                    let mut providers = vec![trainer];
                    providers.extend(peers.iter().copied().filter(|p| *p != trainer));
                    // The size is unknown here; the shell bounds the fetch by the update size limit.
                    self.start_fetch(round, trainer, cid, 0, replay, providers, out);
                }
            }
            Action::Settled(settled) => {
                self.stats.rounds_settled += 1;
                let snapshot = self
                    .machine
                    .snapshot()
                    .expect("a machine that settles a round is synced");
                out.push(Effect::Settled { settled, snapshot });
            }
            Action::Resync {
                next_round,
                state_digest,
                peers,
            } => {
                self.phase = "resync";
                out.push(Effect::FetchSnapshot {
                    next_round,
                    state_digest,
                    peers,
                });
            }
            Action::WakeAt(at) => out.push(Effect::WakeAt(at)),
        }
    }
}

/// The verifier role's decision on a gated update. A gate rejection is the worst observation of the trainer's
/// rating; a scored update observes its own-data t, or the worst when it raises the loss; an update that fails the
/// harm test is rejected this round; then a trainer rated below the inclusion threshold is left out.
fn judge_update(
    ratings: &mut RatingTable,
    stats: &mut CoreStats,
    round: RoundNumber,
    trainer: PeerId,
    accepted: bool,
    score: Option<UpdateScore>,
) -> bool {
    let worst = -verify_limits::SCORE_OBSERVATION_ABS_MAX;
    let Some(score) = score.filter(|_| accepted) else {
        if !accepted {
            ratings.observe(trainer, round, worst);
        }
        return accepted;
    };
    stats.updates_scored += 1;
    // Only an update that raises the loss (h < 0, or no yardstick) is evidence of malice: a weak one (0 ≤ h < 0.6)
    // is left out this round but rated on its own-data t, because an honest newcomer's first updates (fresh AdamW
    // moments) can be weak too: measured h 0.03–0.54 for a joiner's first 4 rounds (when it also warmed up its
    // learning rate again, before `Workload::schedule_step`).
    let raises_loss = score.gain_ratio.is_none_or(|h| h < 0.0);
    let observation = verify::rating::observation(score.harmful && raises_loss, score.own_data_t);
    ratings.observe(trainer, round, observation);
    if score.harmful {
        stats.updates_harmful += 1;
        return false;
    }
    if !ratings.included(&trainer) {
        stats.updates_rating_excluded += 1;
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fraud_notice_round_trips_and_rejects_bad_bytes() {
        let n = FraudNotice {
            round: RoundNumber(4),
            trainer: PeerId([3; 32]),
            proof: Hash32([9; 32]),
            bytes: 5_000,
        };
        let bytes = n.encode();
        assert_eq!(bytes.len(), FRAUD_NOTICE_BYTES);
        assert_eq!(FraudNotice::decode(&bytes), Ok(n));
        assert_eq!(judge_gossip(&bytes), net::Verdict::Accept);
        assert_eq!(
            FraudNotice::decode(&bytes[..10]),
            Err(FraudNoticeError::Length(10))
        );
        let mut version = bytes.clone();
        version[1] = 7;
        assert_eq!(
            FraudNotice::decode(&version),
            Err(FraudNoticeError::Version(7))
        );
        let mut huge = bytes.clone();
        huge[74..82].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            FraudNotice::decode(&huge),
            Err(FraudNoticeError::TooLarge(u64::MAX))
        );
        assert_eq!(judge_gossip(&huge), net::Verdict::Reject);
    }

    #[test]
    fn announce_round_trips_and_rejects_bad_bytes() {
        let a = UpdateAnnounce {
            round: RoundNumber(7),
            trainer: PeerId([3; 32]),
            cid: Hash32([9; 32]),
            bytes: 1234,
            replay: Hash32([5; 32]),
        };
        let bytes = a.encode();
        assert_eq!(bytes.len(), ANNOUNCE_BYTES);
        assert_eq!(UpdateAnnounce::decode(&bytes), Ok(a));
        assert_eq!(judge_gossip(&bytes), net::Verdict::Accept);
        assert!(UpdateAnnounce::decode(&bytes[..10]).is_err());
        let mut bad = bytes.clone();
        bad[1] = 9;
        assert_eq!(UpdateAnnounce::decode(&bad), Err(AnnounceError::Version(9)));
        let mut zero = bytes.clone();
        zero[74..82].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(
            UpdateAnnounce::decode(&zero),
            Err(AnnounceError::TooLarge(0))
        );
        assert_eq!(judge_gossip(&[]), net::Verdict::Reject);
        assert_eq!(judge_gossip(&[TAG_ROUND, 1, 2, 3]), net::Verdict::Reject);
        assert_eq!(judge_gossip(&[7]), net::Verdict::Reject);
    }

    #[test]
    fn harm_rejects_at_once_and_a_missing_own_data_signal_excludes_over_rounds() {
        let mut ratings = RatingTable::new(RatingParams::default());
        let mut stats = CoreStats::default();
        let (honest, harmful, idle) = (PeerId([1; 32]), PeerId([2; 32]), PeerId([3; 32]));
        let score = |harmful: bool, own_data_t: f64| {
            Some(UpdateScore {
                harmful,
                own_data_t,
                gain_ratio: None,
            })
        };
        let mut judge = |round: u64, peer: PeerId, accepted: bool, s: Option<UpdateScore>| {
            let verdict = judge_update(
                &mut ratings,
                &mut stats,
                RoundNumber(round),
                peer,
                accepted,
                s,
            );
            (verdict, stats.updates_scored)
        };
        assert!(judge(0, honest, true, score(false, 2.5)).0);
        assert!(!judge(0, harmful, true, score(true, 3.0)).0);
        // An update with no own-data signal passes a round or two, then its trainer's rating excludes it.
        let idle_rounds: Vec<bool> = (0..8)
            .map(|r| judge(r, idle, true, score(false, -1.5)).0)
            .collect();
        assert!(idle_rounds[0], "one weak round excludes nobody");
        assert!(!idle_rounds[7], "{idle_rounds:?}");
        // An honest trainer survives one bad round among good ones; a gate rejection costs rating.
        assert!(judge(1, honest, true, score(false, -1.8)).0);
        assert!(judge(2, honest, true, score(false, 1.5)).0);
        assert!(!judge(3, harmful, false, None).0);
        // Without a score (no base model here) the gates' verdict stands, and it is not counted as scored.
        let (_, scored) = judge(3, honest, true, score(false, 1.0));
        assert_eq!(judge(4, honest, true, None), (true, scored));
        assert!(!ratings.included(&harmful));
        assert_eq!(stats.updates_harmful, 1);
        assert!(stats.updates_rating_excluded >= 1);
    }

    #[test]
    fn roles_parse() {
        assert_eq!("trainer,verifier,storage".parse::<Roles>(), Ok(Roles::ALL));
        let v: Roles = "verifier".parse().unwrap();
        assert!(v.verifier && !v.trainer && !v.storage);
        assert!("miner".parse::<Roles>().is_err());
    }
}
