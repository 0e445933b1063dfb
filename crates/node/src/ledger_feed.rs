//! Sans-IO: turns settled rounds into this verifier's signed `RecordVerdicts` transactions, one
//! in flight at a time (account nonces are sequential), resubmitted if not applied in time.

use std::collections::VecDeque;

use ed25519_dalek::SigningKey;
use ledger::{LedgerState, SignedTx, TxBody, Verdict};
use types::limits::{ledger as ledger_limits, node as limits};
use types::{Hash32, PeerId, RoundNumber, RunId};

/// Full score: the round protocol's gates are pass/fail, so an included update scores 10^6 ppm.
pub const SCORE_ACCEPTED_PPM: u32 = ledger_limits::SCORE_PPM_MAX;

struct InFlight {
    nonce: u64,
    verdicts: Vec<Verdict>,
    sent_ms: u64,
}

pub struct VerdictFeed {
    key: SigningKey,
    me: PeerId,
    run: RunId,
    chain: Hash32,
    pending: VecDeque<Verdict>,
    in_flight: Option<InFlight>,
}

impl VerdictFeed {
    pub fn new(key: SigningKey, run: RunId, chain: Hash32) -> VerdictFeed {
        VerdictFeed {
            me: ledger::peer_of(&key),
            key,
            run,
            chain,
            pending: VecDeque::new(),
            in_flight: None,
        }
    }

    /// Signs an accepted verdict for each trainer included in a settled round. `tokens_trained`
    /// is what H inner steps consumed (H × batch × seq_len).
    pub fn on_settled(&mut self, round: RoundNumber, included: &[PeerId], tokens_trained: u64) {
        for peer in included {
            if self.pending.len() >= limits::LEDGER_PENDING_VERDICTS_MAX {
                return;
            }
            self.pending.push_back(Verdict::sign(
                &self.key,
                self.run,
                round,
                *peer,
                true,
                SCORE_ACCEPTED_PPM,
                "",
                tokens_trained,
            ));
        }
    }

    /// The next transaction to submit, given the replica's current state, if any is due.
    pub fn next_tx(&mut self, now_ms: u64, state: &LedgerState) -> Option<SignedTx> {
        let nonce = state.nonce(&self.me);
        if let Some(flight) = &self.in_flight {
            if nonce > flight.nonce {
                self.in_flight = None;
            } else if now_ms.saturating_sub(flight.sent_ms) >= limits::LEDGER_TX_RESUBMIT_MS {
                // Not applied in time (dropped mempool, restart): sign it again, same nonce.
                let flight = self.in_flight.take().expect("checked");
                for v in flight.verdicts.into_iter().rev() {
                    self.pending.push_front(v);
                }
            } else {
                return None;
            }
        }
        // Verdicts the ledger already holds (from before a restart) are not sent again.
        let me = self.me;
        self.pending.retain(|v| {
            state
                .work
                .get(&(v.round, v.peer))
                .is_none_or(|w| !w.accepts.contains_key(&me) && !w.rejects.contains(&me))
        });
        if self.pending.is_empty() {
            return None;
        }
        let take = self.pending.len().min(ledger_limits::VERDICTS_PER_TX_MAX);
        let verdicts: Vec<Verdict> = self.pending.drain(..take).collect();
        let tx = SignedTx::sign(
            &self.key,
            self.chain,
            nonce,
            TxBody::RecordVerdicts {
                verdicts: verdicts.clone(),
            },
        );
        self.in_flight = Some(InFlight {
            nonce,
            verdicts,
            sent_ms: now_ms,
        });
        Some(tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn genesis(keys: &[SigningKey]) -> ledger::Genesis {
        let peers: Vec<PeerId> = keys.iter().map(ledger::peer_of).collect();
        ledger::Genesis {
            version: ledger::WIRE_VERSION,
            run: RunId(Hash32([1; 32])),
            validators: vec![peers[0]],
            verifiers: peers,
            verifier_quorum: 2,
            namespace: "t".into(),
        }
    }

    #[test]
    fn two_verifier_feeds_mint_each_included_trainer_once() {
        let keys: Vec<SigningKey> = (0..3)
            .map(|i| SigningKey::from_bytes(&[i + 1; 32]))
            .collect();
        let g = genesis(&keys);
        let mut state = LedgerState::new(&g);
        let trainers = [ledger::peer_of(&keys[1]), ledger::peer_of(&keys[2])];
        let mut feeds: Vec<_> = (0..2)
            .map(|i| VerdictFeed::new(keys[i].clone(), g.run, g.chain_id()))
            .collect();
        for round in 0..3 {
            for (i, feed) in feeds.iter_mut().enumerate() {
                feed.on_settled(RoundNumber(round), &trainers, 100);
                let tx = feed.next_tx(round * 10, &state).expect("a tx is due");
                state.apply(&tx, &ledger::NoFraudProofs).unwrap();
                assert!(
                    feed.next_tx(round * 10, &state).is_none(),
                    "feed {i} resent"
                );
            }
        }
        for t in trainers {
            assert_eq!(state.balance(&t), 300);
        }
        assert!(state.conservation_holds());
    }

    #[test]
    fn an_unapplied_tx_is_resubmitted_with_the_same_nonce() {
        let keys: Vec<SigningKey> = (0..2)
            .map(|i| SigningKey::from_bytes(&[i + 9; 32]))
            .collect();
        let g = genesis(&keys);
        let state = LedgerState::new(&g);
        let mut feed = VerdictFeed::new(keys[0].clone(), g.run, g.chain_id());
        feed.on_settled(RoundNumber(0), &[ledger::peer_of(&keys[1])], 5);
        let first = feed.next_tx(0, &state).unwrap();
        assert!(feed.next_tx(1, &state).is_none());
        let again = feed.next_tx(limits::LEDGER_TX_RESUBMIT_MS, &state).unwrap();
        assert_eq!(first.nonce, again.nonce);
        assert_eq!(first.body, again.body);
    }
}
