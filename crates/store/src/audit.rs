//! The audit loop as a sans-IO state machine: challenge providers for a random chunk group of a piece they claim to
//! hold, check the bao proof they return, record failures, and stop using providers that fail.
//!
//! Time and randomness come in with the inputs (`now_ms`, `seed`); the same inputs give the same actions. A bad proof
//! bans at once; `AUDIT_TIMEOUTS_MAX` consecutive timeouts ban too (a peer that is only slow gets a few chances).

use std::collections::{BTreeMap, BTreeSet};

use bao_tree::ChunkRanges;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use types::limits::store::{
    AUDIT_CHALLENGE_GROUPS, AUDIT_INTERVAL_MS, AUDIT_IN_FLIGHT_MAX, AUDIT_TIMEOUTS_MAX,
    AUDIT_TIMEOUT_MS, TRACKED_PIECES_MAX,
};
use types::PeerId;

use crate::bao;
use crate::cid::Cid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditInput {
    /// `provider` claims to hold `piece` (from a provider record, or because repair placed it there).
    Track {
        piece: Cid,
        size: u64,
        provider: PeerId,
    },
    /// Stop auditing this copy (the provider withdrew it, or the collection was dropped).
    Untrack { piece: Cid, provider: PeerId },
    /// Time passes; `seed` is fresh randomness for this tick (the caller's seeded RNG, never a global one).
    Tick { now_ms: u64, seed: u64 },
    /// The provider answered a challenge with a range response.
    Response {
        challenge_id: u64,
        response: Vec<u8>,
    },
    /// The provider could not be asked or refused (counts like a timeout).
    NoResponse { challenge_id: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditAction {
    /// Ask `provider` for `ranges` (bytes `start..end`) of `piece` as a range response; answer with `Response`.
    Challenge {
        challenge_id: u64,
        provider: PeerId,
        piece: Cid,
        start: u64,
        end: u64,
    },
    /// A challenge failed; recorded in the counters.
    Failed {
        provider: PeerId,
        piece: Cid,
        reason: AuditFailure,
    },
    /// The provider failed too often or sent a bad proof: stop using it (the repair loop moves its pieces).
    Banned { provider: PeerId },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditFailure {
    BadProof(String),
    Timeout,
    NoResponse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuditCounters {
    pub challenges: u64,
    pub passed: u64,
    pub bad_proofs: u64,
    pub timeouts: u64,
    pub banned: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tracked {
    size: u64,
    next_due_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Outstanding {
    provider: PeerId,
    piece: Cid,
    size: u64,
    start: u64,
    end: u64,
    deadline_ms: u64,
}

#[derive(Debug, Default)]
pub struct AuditMachine {
    tracked: BTreeMap<(PeerId, Cid), Tracked>,
    outstanding: BTreeMap<u64, Outstanding>,
    consecutive_timeouts: BTreeMap<PeerId, u32>,
    banned: BTreeSet<PeerId>,
    next_challenge_id: u64,
    counters: AuditCounters,
}

impl AuditMachine {
    pub fn new() -> AuditMachine {
        AuditMachine::default()
    }

    pub fn counters(&self) -> AuditCounters {
        self.counters
    }

    pub fn is_banned(&self, provider: &PeerId) -> bool {
        self.banned.contains(provider)
    }

    pub fn banned(&self) -> impl Iterator<Item = &PeerId> {
        self.banned.iter()
    }

    pub fn handle(&mut self, input: AuditInput) -> Vec<AuditAction> {
        match input {
            AuditInput::Track {
                piece,
                size,
                provider,
            } => {
                if self.tracked.len() < TRACKED_PIECES_MAX && !self.banned.contains(&provider) {
                    // Due at once: a new copy is checked on the next tick.
                    self.tracked.entry((provider, piece)).or_insert(Tracked {
                        size,
                        next_due_ms: 0,
                    });
                }
                Vec::new()
            }
            AuditInput::Untrack { piece, provider } => {
                self.tracked.remove(&(provider, piece));
                Vec::new()
            }
            AuditInput::Tick { now_ms, seed } => self.tick(now_ms, seed),
            AuditInput::Response {
                challenge_id,
                response,
            } => self.on_response(challenge_id, &response),
            AuditInput::NoResponse { challenge_id } => match self.outstanding.remove(&challenge_id)
            {
                Some(c) => self.on_timeout_like(c, AuditFailure::NoResponse),
                None => Vec::new(),
            },
        }
    }

    fn tick(&mut self, now_ms: u64, seed: u64) -> Vec<AuditAction> {
        let mut actions = Vec::new();
        let expired: Vec<u64> = self
            .outstanding
            .iter()
            .filter(|(_, c)| c.deadline_ms <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let c = self.outstanding.remove(&id).expect("listed above");
            actions.extend(self.on_timeout_like(c, AuditFailure::Timeout));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let busy: BTreeSet<(PeerId, Cid)> = self
            .outstanding
            .values()
            .map(|c| (c.provider, c.piece))
            .collect();
        let due: Vec<(PeerId, Cid)> = self
            .tracked
            .iter()
            .filter(|(key, t)| t.next_due_ms <= now_ms && t.size > 0 && !busy.contains(key))
            .map(|(key, _)| *key)
            .collect();
        for (provider, piece) in due {
            if self.outstanding.len() >= AUDIT_IN_FLIGHT_MAX {
                break;
            }
            let tracked = self
                .tracked
                .get_mut(&(provider, piece))
                .expect("listed above");
            // Jitter the next audit over [interval/2, 3*interval/2) so audits do not fall into lockstep.
            tracked.next_due_ms =
                now_ms + AUDIT_INTERVAL_MS / 2 + rng.random_range(0..AUDIT_INTERVAL_MS);
            let size = tracked.size;
            let groups = size.div_ceil(bao::group_bytes());
            let first = rng.random_range(0..groups);
            let start = first * bao::group_bytes();
            let end = ((first + AUDIT_CHALLENGE_GROUPS) * bao::group_bytes()).min(size);
            let challenge_id = self.next_challenge_id;
            self.next_challenge_id += 1;
            self.outstanding.insert(
                challenge_id,
                Outstanding {
                    provider,
                    piece,
                    size,
                    start,
                    end,
                    deadline_ms: now_ms + AUDIT_TIMEOUT_MS,
                },
            );
            self.counters.challenges += 1;
            actions.push(AuditAction::Challenge {
                challenge_id,
                provider,
                piece,
                start,
                end,
            });
        }
        actions
    }

    fn on_response(&mut self, challenge_id: u64, response: &[u8]) -> Vec<AuditAction> {
        let Some(c) = self.outstanding.remove(&challenge_id) else {
            return Vec::new();
        };
        let ranges: ChunkRanges = bao::byte_range_to_chunks(c.start, c.end);
        match bao::verify_range_response(c.piece.0, c.size, &ranges, response) {
            Ok(leaves) if covers(&leaves, c.start, c.end) => {
                self.counters.passed += 1;
                self.consecutive_timeouts.remove(&c.provider);
                Vec::new()
            }
            Ok(_) => self.on_bad_proof(c, "response does not cover the challenged range".into()),
            Err(e) => self.on_bad_proof(c, e.to_string()),
        }
    }

    fn on_bad_proof(&mut self, c: Outstanding, why: String) -> Vec<AuditAction> {
        self.counters.bad_proofs += 1;
        let mut actions = vec![AuditAction::Failed {
            provider: c.provider,
            piece: c.piece,
            reason: AuditFailure::BadProof(why),
        }];
        actions.extend(self.ban(c.provider));
        actions
    }

    fn on_timeout_like(&mut self, c: Outstanding, reason: AuditFailure) -> Vec<AuditAction> {
        self.counters.timeouts += 1;
        let count = self.consecutive_timeouts.entry(c.provider).or_insert(0);
        *count += 1;
        let ban = *count >= AUDIT_TIMEOUTS_MAX;
        let mut actions = vec![AuditAction::Failed {
            provider: c.provider,
            piece: c.piece,
            reason,
        }];
        if ban {
            actions.extend(self.ban(c.provider));
        }
        actions
    }

    fn ban(&mut self, provider: PeerId) -> Vec<AuditAction> {
        if !self.banned.insert(provider) {
            return Vec::new();
        }
        self.counters.banned += 1;
        self.tracked.retain(|(p, _), _| *p != provider);
        self.outstanding.retain(|_, c| c.provider != provider);
        vec![AuditAction::Banned { provider }]
    }
}

/// True when the verified leaves include every byte of `start..end`.
fn covers(leaves: &[(u64, Vec<u8>)], start: u64, end: u64) -> bool {
    let mut next = start;
    for (offset, bytes) in leaves {
        let leaf_end = offset + bytes.len() as u64;
        if *offset <= next && leaf_end > next {
            next = leaf_end;
        }
    }
    next >= end
}

#[cfg(test)]
mod tests {
    use super::*;
    use bao_tree::io::outboard::PostOrderMemOutboard;

    fn data() -> Vec<u8> {
        (0..100_000u32).map(|i| (i % 251) as u8).collect()
    }

    fn answer(data: &[u8], start: u64, end: u64) -> Vec<u8> {
        let ob = PostOrderMemOutboard::create(data, bao::block_size());
        let mut out = Vec::new();
        bao::encode_range_response(data, &ob, &bao::byte_range_to_chunks(start, end), &mut out)
            .unwrap();
        out
    }

    fn challenge(actions: &[AuditAction]) -> (u64, u64, u64) {
        match actions
            .iter()
            .find(|a| matches!(a, AuditAction::Challenge { .. }))
        {
            Some(AuditAction::Challenge {
                challenge_id,
                start,
                end,
                ..
            }) => (*challenge_id, *start, *end),
            _ => panic!("no challenge in {actions:?}"),
        }
    }

    #[test]
    fn honest_provider_passes_and_liar_is_banned() {
        let data = data();
        let piece = Cid::of(&data);
        let (honest, liar) = (PeerId([1; 32]), PeerId([2; 32]));
        let mut m = AuditMachine::new();
        m.handle(AuditInput::Track {
            piece,
            size: data.len() as u64,
            provider: honest,
        });
        m.handle(AuditInput::Track {
            piece,
            size: data.len() as u64,
            provider: liar,
        });
        let actions = m.handle(AuditInput::Tick { now_ms: 1, seed: 7 });
        assert_eq!(actions.len(), 2);
        for action in actions {
            let AuditAction::Challenge {
                challenge_id,
                provider,
                start,
                end,
                ..
            } = action
            else {
                panic!()
            };
            let mut response = answer(&data, start, end);
            if provider == liar {
                let last = response.len() - 1;
                response[last] ^= 0x40;
            }
            let out = m.handle(AuditInput::Response {
                challenge_id,
                response,
            });
            if provider == liar {
                assert!(
                    out.contains(&AuditAction::Banned { provider: liar }),
                    "{out:?}"
                );
            } else {
                assert!(out.is_empty());
            }
        }
        assert!(m.is_banned(&liar) && !m.is_banned(&honest));
        assert_eq!(m.counters().passed, 1);
        assert_eq!(m.counters().bad_proofs, 1);
        // The liar is never challenged again.
        let later = m.handle(AuditInput::Tick {
            now_ms: 10 * AUDIT_INTERVAL_MS,
            seed: 8,
        });
        assert!(later
            .iter()
            .all(|a| !matches!(a, AuditAction::Challenge { provider, .. } if *provider == liar)));
    }

    #[test]
    fn timeouts_ban_after_the_limit_and_same_inputs_same_actions() {
        let piece = Cid::of(&data());
        let slow = PeerId([3; 32]);
        let run = || {
            let mut m = AuditMachine::new();
            m.handle(AuditInput::Track {
                piece,
                size: 100_000,
                provider: slow,
            });
            let mut log = Vec::new();
            let mut now = 0;
            for round in 0..AUDIT_TIMEOUTS_MAX as u64 + 1 {
                log.extend(m.handle(AuditInput::Tick {
                    now_ms: now,
                    seed: round,
                }));
                now += 2 * AUDIT_INTERVAL_MS;
            }
            log.extend(m.handle(AuditInput::Tick {
                now_ms: now,
                seed: 99,
            }));
            (m.is_banned(&slow), log)
        };
        let (banned, log) = run();
        assert!(banned);
        assert_eq!(run().1, log, "deterministic");
        let _ = challenge(&log);
    }

    #[test]
    fn response_for_the_wrong_range_fails() {
        let data = data();
        let piece = Cid::of(&data);
        let p = PeerId([4; 32]);
        let mut m = AuditMachine::new();
        m.handle(AuditInput::Track {
            piece,
            size: data.len() as u64,
            provider: p,
        });
        let (id, start, _) = challenge(&m.handle(AuditInput::Tick { now_ms: 0, seed: 1 }));
        let other = if start == 0 {
            (32_768, 49_152)
        } else {
            (0, 16_384)
        };
        let out = m.handle(AuditInput::Response {
            challenge_id: id,
            response: answer(&data, other.0, other.1),
        });
        assert!(
            out.contains(&AuditAction::Banned { provider: p }),
            "{out:?}"
        );
    }
}
