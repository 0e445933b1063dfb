//! The verifier's round: every gate in order, cheapest first, ending in one signed verdict per submission.
//!
//! Order per submission: equivocation → binding (signature, run, round, base, codec, H, data ids, size, CID) →
//! replay of an old CID → decode (malformed, length) → NaN/Inf. Then, over the round: zero update and norm outlier
//! against the round median → copies (against kept updates of this round, first committed first, and against
//! history) → statistical score of the updates whose scoring committee this verifier sits on (`committee`), at most
//! `SCORED_PER_ROUND_MAX` → rating → inclusion; rejections the peer provably caused go to the rating too. Other
//! verifiers' scores come in through `Verifier::absorb`. Memory: one decoded update at a time plus the running sum
//! for the round's reference θ − mean Δ (the kept updates of peers in good standing, summed while the gates decode
//! them; an update rejected after being summed is decoded again to take it out), and each scored update is decoded
//! once more.

use types::limits::verify as limits;
use types::{Hash32, PeerId, RoundNumber};

use crate::binding::{check_binding, DataAssignment, RoundContext};
use crate::commitment::SignedCommitment;
use crate::committee::scoring_committee;
use crate::keys::NodeKey;
use crate::rating::{RatingParams, RatingTable};
use crate::sanity;
use crate::score::{
    gain_ratio, is_harmful, own_data_t, score_samples, EvalError, ItemLosses, LossEvaluator,
    LossProbe,
};
use crate::similarity::{self, History, SeenUpdate, Sketch};
use crate::verdict::{Outcome, Reason, SignedVerdict, Verdict};

/// Decodes an update blob; implemented by the caller over `sync`'s codecs.
pub trait UpdateDecoder {
    /// Decodes `blob` of codec `codec`; must check every length against `param_count` before allocating.
    fn decode(&self, codec: u8, blob: &[u8], param_count: usize) -> Result<Vec<f32>, String>;
}

/// Codec 0: dense little-endian f32 (what `sync`'s dense fp32 codec carries, minus its header).
pub struct DenseF32Decoder;

impl UpdateDecoder for DenseF32Decoder {
    fn decode(&self, codec: u8, blob: &[u8], param_count: usize) -> Result<Vec<f32>, String> {
        if codec != 0 {
            return Err(format!("dense decoder got codec {codec}"));
        }
        if blob.len() != param_count * 4 {
            return Err(format!("{} bytes is not {param_count} f32s", blob.len()));
        }
        Ok(blob
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

pub fn encode_dense_f32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// One revealed update with its commitment. `committed_at_ms` orders copies: the first committed keeps its update.
#[derive(Debug, Clone, Copy)]
pub struct Submission<'a> {
    pub commitment: &'a SignedCommitment,
    pub blob: &'a [u8],
    pub committed_at_ms: u64,
}

/// Caller errors (not peer faults): the round cannot be verified.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VerifyError {
    #[error("{0} submissions, limit is {max}", max = limits::UPDATES_PER_ROUND_MAX)]
    TooManySubmissions(usize),
    #[error("base params have {got} values, round says {expected}")]
    BaseLength { got: usize, expected: usize },
    #[error("param count {0} is above the limit")]
    TooManyParams(usize),
    #[error(transparent)]
    Eval(#[from] EvalError),
}

/// Everything one round's verification reads.
pub struct RoundInputs<'a> {
    pub ctx: &'a RoundContext,
    pub base_params: &'a [f32],
    pub submissions: &'a [Submission<'a>],
    pub assignment: &'a dyn DataAssignment,
    pub decoder: &'a dyn UpdateDecoder,
    /// The run's verifiers this round. Empty: this verifier scores every update itself; otherwise it scores only
    /// the updates whose scoring committee (`committee`) it sits on, and absorbs the others' scores.
    pub verifiers: &'a [PeerId],
}

#[derive(Debug, Clone)]
pub struct RoundReport {
    /// One verdict per submission, in the order of `submissions`.
    pub verdicts: Vec<SignedVerdict>,
    /// Peers whose updates go into aggregation, sorted.
    pub included: Vec<PeerId>,
    /// The losses behind each score (submission index, probe), for diagnostics; not signed.
    pub probes: Vec<(usize, LossProbe)>,
}

/// A verifier's long-lived state: its key, the ratings it keeps, the history it compares against.
pub struct Verifier {
    key: NodeKey,
    pub ratings: RatingTable,
    history: History,
    known_bases: Vec<(RoundNumber, Hash32)>,
    sketch_seed: u64,
    /// Assigned items (and as many random items) evaluated per scored update.
    pub score_items: usize,
    /// Verifiers that score each update when `RoundInputs::verifiers` is not empty.
    pub committee_size: usize,
}

struct Candidate {
    index: usize,
    norm: f64,
    sketch: Sketch,
}

impl Verifier {
    /// `sketch_seed` must be the same on every verifier of a run (derive it from the run id) so sketches compare.
    pub fn new(key: NodeKey, params: RatingParams, sketch_seed: u64) -> Verifier {
        Verifier {
            key,
            ratings: RatingTable::new(params),
            history: History::default(),
            known_bases: Vec::new(),
            sketch_seed,
            score_items: limits::SCORE_SAMPLE_IDS,
            committee_size: 1,
        }
    }

    pub fn peer_id(&self) -> PeerId {
        self.key.peer_id()
    }

    /// Verifies one round. Loss evaluation goes through `evaluator`.
    pub fn verify_round(
        &mut self,
        inputs: &RoundInputs,
        evaluator: &mut dyn LossEvaluator,
    ) -> Result<RoundReport, VerifyError> {
        let ctx = inputs.ctx;
        let subs = inputs.submissions;
        if subs.len() > limits::UPDATES_PER_ROUND_MAX {
            return Err(VerifyError::TooManySubmissions(subs.len()));
        }
        if ctx.param_count > limits::PARAMS_MAX {
            return Err(VerifyError::TooManyParams(ctx.param_count));
        }
        if inputs.base_params.len() != ctx.param_count {
            return Err(VerifyError::BaseLength {
                got: inputs.base_params.len(),
                expected: ctx.param_count,
            });
        }
        let mut outcomes: Vec<Option<Outcome>> = vec![None; subs.len()];
        let mut candidates = Vec::new();
        let mut order: Vec<usize> = (0..subs.len()).collect();
        order.sort_by_key(|&i| (subs[i].committed_at_ms, subs[i].commitment.commitment.peer));
        let mut first_cid_of: Vec<(PeerId, Hash32)> = Vec::new();
        // The running sum of the updates of peers in good standing, for the score's reference (one decode each);
        // only a verifier that scores something this round needs it (committees are known before any gate).
        let scores_any = subs
            .iter()
            .any(|s| self.on_committee(inputs, &s.commitment.commitment.peer));
        let mut reference = ReferenceSum::new(if scores_any { ctx.param_count } else { 0 });
        for &i in &order {
            let sub = &subs[i];
            let peer = sub.commitment.commitment.peer;
            if let Some((_, cid)) = first_cid_of.iter().find(|(p, _)| *p == peer) {
                outcomes[i] = Some(Outcome::Rejected(Reason::Equivocation { first_cid: *cid }));
                continue;
            }
            first_cid_of.push((peer, sub.commitment.commitment.update_cid));
            match self.cheap_gates(inputs, sub) {
                Ok((norm, sketch, update)) => {
                    if scores_any && self.ratings.included(&peer) {
                        reference.add(i, &update);
                    }
                    candidates.push(Candidate {
                        index: i,
                        norm,
                        sketch,
                    })
                }
                Err(reason) => outcomes[i] = Some(Outcome::Rejected(reason)),
            }
        }
        self.norm_gates(&mut candidates, &mut outcomes);
        let kept = self.copy_gates(ctx.round, subs, candidates, &mut outcomes);
        // Updates added to the reference and then rejected by the norm or copy gates come out again.
        for index in reference.members.clone() {
            if outcomes[index].is_some() {
                if let Ok(update) = decode(inputs, &subs[index]) {
                    reference.remove(index, &update);
                }
            }
        }
        let probes = self.score(inputs, &kept, reference, &mut outcomes, evaluator)?;
        let mut report = self.finish(ctx, subs, kept, outcomes);
        report.probes = probes;
        Ok(report)
    }

    /// Per-submission gates up to NaN/Inf; returns the norm and sketch of a decoded, finite update.
    fn cheap_gates(
        &self,
        inputs: &RoundInputs,
        sub: &Submission,
    ) -> Result<(f64, Sketch, Vec<f32>), Reason> {
        let ctx = inputs.ctx;
        check_binding(
            ctx,
            sub.commitment,
            sub.blob,
            inputs.assignment,
            &self.known_bases,
        )?;
        let cid = sub.commitment.commitment.update_cid;
        if let Some((first_round, first_peer)) = self.history.seen_cid(&cid) {
            return Err(Reason::Replayed {
                cid,
                first_round,
                first_peer,
            });
        }
        let update = decode(inputs, sub)?;
        if let Some((index, bits)) = sanity::first_non_finite(&update) {
            return Err(Reason::NonFinite {
                index: index as u64,
                bits,
            });
        }
        Ok((
            sanity::l2_norm(&update),
            similarity::sketch(&update, self.sketch_seed),
            update,
        ))
    }

    fn norm_gates(&self, candidates: &mut Vec<Candidate>, outcomes: &mut [Option<Outcome>]) {
        let norms: Vec<f64> = candidates.iter().map(|c| c.norm).collect();
        let Some(stats) = sanity::norm_stats(&norms) else {
            return;
        };
        candidates.retain(|c| {
            let reason = if sanity::is_zero_update(c.norm, stats.median_norm) {
                Reason::ZeroUpdate {
                    norm: c.norm,
                    median_norm: stats.median_norm,
                }
            } else {
                let robust_z = sanity::robust_z(c.norm, &stats);
                if !sanity::is_norm_outlier(robust_z) {
                    return true;
                }
                Reason::NormOutlier {
                    norm: c.norm,
                    median_norm: stats.median_norm,
                    robust_z,
                }
            };
            outcomes[c.index] = Some(Outcome::Rejected(reason));
            false
        });
    }

    /// Keeps the first committed of each copy cluster; rejects copies of history outright.
    fn copy_gates(
        &self,
        round: RoundNumber,
        subs: &[Submission],
        candidates: Vec<Candidate>,
        outcomes: &mut [Option<Outcome>],
    ) -> Vec<SeenUpdate> {
        let mut kept: Vec<SeenUpdate> = Vec::new();
        for c in candidates {
            let found = self.history.find_copy(&c.sketch).or_else(|| {
                kept.iter()
                    .find_map(|seen| similarity::copy_match(&c.sketch, seen))
            });
            if let Some(m) = found {
                outcomes[c.index] = Some(Outcome::Rejected(Reason::Copy {
                    of_peer: m.of_peer,
                    of_round: m.of_round,
                    cosine: m.cosine,
                    topk_jaccard: m.topk_jaccard,
                }));
                continue;
            }
            let commitment = &subs[c.index].commitment.commitment;
            kept.push(SeenUpdate {
                round,
                peer: commitment.peer,
                cid: commitment.update_cid,
                sketch: c.sketch,
            });
        }
        kept
    }

    /// Scores the kept updates whose committee this verifier sits on (all of them without a committee), at most
    /// `SCORED_PER_ROUND_MAX` (lowest BLAKE3(round seed ‖ verifier ‖ peer) first): harm test and own-data t (see
    /// `score`), the observation into the rating, inclusion.
    fn score(
        &mut self,
        inputs: &RoundInputs,
        kept: &[SeenUpdate],
        reference: ReferenceSum,
        outcomes: &mut [Option<Outcome>],
        evaluator: &mut dyn LossEvaluator,
    ) -> Result<Vec<(usize, LossProbe)>, VerifyError> {
        let ctx = inputs.ctx;
        let me = self.key.peer_id();
        let mut drawn: Vec<&SeenUpdate> = kept
            .iter()
            .filter(|s| self.on_committee(inputs, &s.peer))
            .collect();
        if drawn.is_empty() {
            return Ok(Vec::new());
        }
        drawn.sort_by_key(|s| {
            (
                Hash32::of(&[&ctx.round_seed.0[..], &me.0, &s.peer.0].concat()),
                s.peer,
            )
        });
        drawn.truncate(limits::SCORED_PER_ROUND_MAX);
        // The reference is the mean update of the peers in good standing, so attackers the ratings already excluded
        // cannot drag the yardstick; all kept updates when nobody is in good standing.
        let reference = match reference.params(inputs.base_params) {
            Some(params) => params,
            None => {
                let all: Vec<&SeenUpdate> = kept.iter().collect();
                match reference_params(inputs, &all, outcomes) {
                    Some(params) => params,
                    None => return Ok(Vec::new()),
                }
            }
        };
        let mut probes = Vec::new();
        for seen in drawn {
            let index = submission_index(inputs.submissions, &seen.peer, &seen.cid);
            if outcomes[index].is_some() {
                continue;
            }
            let sub = &inputs.submissions[index];
            // Decoded twice already; a caller's decoder that changes its mind is a malformed blob.
            let update = match decode(inputs, sub) {
                Ok(update) => update,
                Err(reason) => {
                    outcomes[index] = Some(Outcome::Rejected(reason));
                    continue;
                }
            };
            let after: Vec<f32> = inputs
                .base_params
                .iter()
                .zip(&update)
                .map(|(t, d)| t - d)
                .collect();
            let (own, random) = score_samples(
                &ctx.round_seed,
                &me,
                &seen.peer,
                &sub.commitment.commitment.data_ids,
                ctx.dataset_items,
                self.score_items,
            );
            // One evaluation per model over both samples: three parameter loads per scored update.
            let ids: Vec<u64> = own.iter().chain(&random).copied().collect();
            let mut losses = |params: &[f32]| -> Result<(Vec<f32>, Vec<f32>), EvalError> {
                let mut all = evaluator.eval_item_losses(params, &ids)?;
                if all.len() != ids.len() {
                    return Err(EvalError(format!(
                        "{} losses for {} items",
                        all.len(),
                        ids.len()
                    )));
                }
                let random_losses = all.split_off(own.len());
                Ok((all, random_losses))
            };
            let (own_before, random_before) = losses(inputs.base_params)?;
            let (own_after, random_after) = losses(&after)?;
            let (own_reference, random_reference) = losses(&reference)?;
            let probe = LossProbe {
                own: ItemLosses {
                    before: own_before,
                    after: own_after,
                    reference: own_reference,
                },
                random: ItemLosses {
                    before: random_before,
                    after: random_after,
                    reference: random_reference,
                },
            };
            let harmful = is_harmful(&probe);
            let observation = crate::rating::observation(harmful, own_data_t(&probe));
            let score = gain_ratio(&probe).0.unwrap_or(f64::NEG_INFINITY);
            let rating = self.ratings.observe(seen.peer, ctx.round, observation);
            outcomes[index] = Some(Outcome::Scored {
                // The gain ratio h; −∞ when the reference removed no loss.
                score: if score.is_nan() {
                    f64::NEG_INFINITY
                } else {
                    score
                },
                observation,
                rating_mean: rating.mean,
                rating_sd: rating.sd(),
                included: !harmful
                    && !self.ratings.banned(&seen.peer)
                    && rating.mean >= self.ratings.params.include_min,
            });
            probes.push((index, probe));
        }
        Ok(probes)
    }

    fn on_committee(&self, inputs: &RoundInputs, peer: &PeerId) -> bool {
        inputs.verifiers.is_empty()
            || scoring_committee(
                &inputs.ctx.round_seed,
                peer,
                inputs.verifiers,
                self.committee_size,
            )
            .contains(&self.key.peer_id())
    }

    /// Folds other verifiers' scored verdicts of this round into the ratings, so that every verifier rates every
    /// peer while each scores only its share. A verdict counts once, and only when it is for this run and round,
    /// signed, and by a member of the peer's scoring committee. Returns the number of verdicts absorbed.
    pub fn absorb(
        &mut self,
        ctx: &RoundContext,
        verifiers: &[PeerId],
        verdicts: &[SignedVerdict],
    ) -> usize {
        let me = self.key.peer_id();
        let mut seen: Vec<(PeerId, PeerId)> = Vec::new();
        for signed in verdicts {
            let v = &signed.verdict;
            let Outcome::Scored { observation, .. } = v.outcome else {
                continue;
            };
            if v.verifier == me
                || v.run != ctx.run
                || v.round != ctx.round
                || !observation.is_finite()
                || seen.contains(&(v.verifier, v.peer))
                || !scoring_committee(&ctx.round_seed, &v.peer, verifiers, self.committee_size)
                    .contains(&v.verifier)
                || !signed.signature_valid()
            {
                continue;
            }
            seen.push((v.verifier, v.peer));
            self.ratings.observe(v.peer, ctx.round, observation);
        }
        seen.len()
    }

    fn finish(
        &mut self,
        ctx: &RoundContext,
        subs: &[Submission],
        kept: Vec<SeenUpdate>,
        mut outcomes: Vec<Option<Outcome>>,
    ) -> RoundReport {
        self.rate_gate_rejections(ctx.round, subs, &outcomes);
        let mut included = Vec::new();
        let mut verdicts = Vec::with_capacity(subs.len());
        for (i, sub) in subs.iter().enumerate() {
            let c = &sub.commitment.commitment;
            let outcome = outcomes[i].take().unwrap_or_else(|| {
                let rating = self.ratings.get(&c.peer);
                Outcome::Accepted {
                    included: self.ratings.included(&c.peer),
                    rating_mean: rating.mean,
                }
            });
            if outcome.included() {
                included.push(c.peer);
            }
            let verdict = Verdict {
                run: ctx.run,
                round: ctx.round,
                peer: c.peer,
                update_cid: c.update_cid,
                verifier: self.key.peer_id(),
                outcome,
            };
            verdicts.push(verdict.sign(&self.key));
        }
        included.sort();
        // Every blob whose CID matched its commitment is remembered, kept or not, so it cannot come back later.
        let cids: Vec<(Hash32, PeerId)> = subs
            .iter()
            .zip(&verdicts)
            .filter(|(_, v)| !matches!(v.verdict.outcome.reason(), Some(r) if binding_failed(r)))
            .map(|(s, _)| {
                (
                    s.commitment.commitment.update_cid,
                    s.commitment.commitment.peer,
                )
            })
            .collect();
        self.history.push_round(ctx.round, kept, cids);
        self.known_bases.push((ctx.round, ctx.base_model_hash));
        if self.known_bases.len() > limits::KNOWN_BASES_MAX {
            self.known_bases.remove(0);
        }
        RoundReport {
            verdicts,
            included,
            probes: Vec::new(),
        }
    }
}

impl Verifier {
    /// A hard-gate rejection the peer provably caused is the worst observation the rating knows: without it, a
    /// peer caught by a gate would come back at the newcomer prior the next round it passes the gates.
    fn rate_gate_rejections(
        &mut self,
        round: RoundNumber,
        subs: &[Submission],
        outcomes: &[Option<Outcome>],
    ) {
        for (sub, outcome) in subs.iter().zip(outcomes) {
            if let Some(Outcome::Rejected(reason)) = outcome {
                if peer_fault(reason) {
                    let peer = sub.commitment.commitment.peer;
                    self.ratings
                        .observe(peer, round, -limits::SCORE_OBSERVATION_ABS_MAX);
                }
            }
        }
    }
}

/// Rejections that only the signing peer can have caused. Not: a bad signature (anyone can claim any peer id), a
/// wrong run or round (anyone can replay a peer's old signed commitment), and a blob that does not match the
/// commitment's size or CID or is oversized (the blob may have been swapped on the way).
fn peer_fault(reason: &Reason) -> bool {
    !matches!(
        reason,
        Reason::BadSignature
            | Reason::WrongRun { .. }
            | Reason::WrongRound { .. }
            | Reason::Oversized { .. }
            | Reason::SizeMismatch { .. }
            | Reason::CidMismatch { .. }
    )
}

fn decode(inputs: &RoundInputs, sub: &Submission) -> Result<Vec<f32>, Reason> {
    let ctx = inputs.ctx;
    let update = inputs
        .decoder
        .decode(ctx.codec, sub.blob, ctx.param_count)
        .map_err(|e| Reason::Malformed {
            error: truncate(&e, limits::EVIDENCE_TEXT_BYTES_MAX),
        })?;
    if update.len() != ctx.param_count {
        return Err(Reason::WrongLength {
            got: update.len() as u64,
            expected: ctx.param_count as u64,
        });
    }
    Ok(update)
}

/// Σ Δ over the updates of peers in good standing that passed the per-submission gates (f32, in commit order).
struct ReferenceSum {
    sum: Vec<f32>,
    members: Vec<usize>,
}

impl ReferenceSum {
    fn new(param_count: usize) -> ReferenceSum {
        ReferenceSum {
            sum: vec![0.0; param_count],
            members: Vec::new(),
        }
    }

    fn add(&mut self, index: usize, update: &[f32]) {
        self.sum.iter_mut().zip(update).for_each(|(s, d)| *s += d);
        self.members.push(index);
    }

    fn remove(&mut self, index: usize, update: &[f32]) {
        self.sum.iter_mut().zip(update).for_each(|(s, d)| *s -= d);
        self.members.retain(|&m| m != index);
    }

    /// θ − mean Δ; `None` without members.
    fn params(&self, base: &[f32]) -> Option<Vec<f32>> {
        if self.members.is_empty() {
            return None;
        }
        let scale = 1.0 / self.members.len() as f32;
        Some(
            base.iter()
                .zip(&self.sum)
                .map(|(t, s)| t - s * scale)
                .collect(),
        )
    }
}

/// The round's reference model θ − mean Δ over `drawn` (in order, f32 running sum), the yardstick and paired control
/// of the score (see `score`). An update that no longer decodes is rejected as malformed and left out. `None` when
/// nothing decodes.
fn reference_params(
    inputs: &RoundInputs,
    drawn: &[&SeenUpdate],
    outcomes: &mut [Option<Outcome>],
) -> Option<Vec<f32>> {
    let mut sum = vec![0.0f32; inputs.base_params.len()];
    let mut count = 0usize;
    for seen in drawn {
        let index = submission_index(inputs.submissions, &seen.peer, &seen.cid);
        match decode(inputs, &inputs.submissions[index]) {
            Ok(update) => {
                sum.iter_mut().zip(&update).for_each(|(s, d)| *s += d);
                count += 1;
            }
            Err(reason) => outcomes[index] = Some(Outcome::Rejected(reason)),
        }
    }
    if count == 0 {
        return None;
    }
    let scale = 1.0 / count as f32;
    Some(
        inputs
            .base_params
            .iter()
            .zip(&sum)
            .map(|(t, s)| t - s * scale)
            .collect(),
    )
}

fn submission_index(subs: &[Submission], peer: &PeerId, cid: &Hash32) -> usize {
    subs.iter()
        .position(|s| {
            s.commitment.commitment.peer == *peer && s.commitment.commitment.update_cid == *cid
        })
        .expect("kept updates come from the submissions")
}

/// Reasons given before the CID was confirmed to be the blob's (the CID is not remembered then).
fn binding_failed(reason: &Reason) -> bool {
    matches!(
        reason,
        Reason::BadSignature
            | Reason::Equivocation { .. }
            | Reason::WrongRun { .. }
            | Reason::WrongRound { .. }
            | Reason::StaleBase { .. }
            | Reason::WrongData { .. }
            | Reason::WrongCodec { .. }
            | Reason::WrongInnerSteps { .. }
            | Reason::Oversized { .. }
            | Reason::SizeMismatch { .. }
            | Reason::CidMismatch { .. }
            | Reason::Replayed { .. }
    )
}

fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}
