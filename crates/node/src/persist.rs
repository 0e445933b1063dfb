//! What a node keeps on disk to restart where it stopped, and what it serves to peers that catch up.
//!
//! Layout under `DATA_DIR/runs/<run id prefix>/`:
//! - `blobs/<hex>`: content served to peers by the blob protocol: model parameters (named by the model hash,
//!   which is BLAKE3 of their LE bytes), update blobs (named by their CID) and snapshot records (named by the
//!   state digest they hash to; the fetcher checks the digest after decoding).
//! - `outer-<next round>.bin`: the outer optimizer's state at that round boundary.
//! - `state.json`: the agreed state to restart from (`next_round`, model hash, members). Written last, through
//!   a temporary file and a rename, after the model blob and outer state are fsynced: after a crash it
//!   always names files that are whole.
//! - `inner.bin`: the trainer's AdamW moments and error feedback (optional: a missing or bad file restarts
//!   the inner optimizer fresh).
//! - `history.jsonl`: one line per settled round (round, model hash, included trainers, losses).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use round::Snapshot;
use serde::{Deserialize, Serialize};
use types::limits::node as limits;
use types::limits::round as round_limits;
use types::{Hash32, PeerId, RoundNumber, RunId};

/// Version byte of a snapshot record.
pub const RECORD_VERSION: u8 = 1;
/// Version of `state.json`.
pub const STATE_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("snapshot record is {0} bytes, over the limit")]
    TooLarge(usize),
    #[error("snapshot record is truncated")]
    Truncated,
    #[error("snapshot record version {0} is not supported")]
    Version(u8),
    #[error("snapshot record lists {0} members, over the limit")]
    TooManyMembers(u64),
    #[error("snapshot record members are not sorted and unique")]
    Unsorted,
    #[error("snapshot record has {0} trailing bytes")]
    Trailing(usize),
    #[error("snapshot record does not hash to the requested state digest")]
    Digest,
}

/// A snapshot plus the outer optimizer state at that boundary: what a catching-up peer needs besides the
/// model parameters (fetched separately by their hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub snapshot: Snapshot,
    pub outer_state: Vec<u8>,
}

impl SnapshotRecord {
    pub fn encode(&self) -> Vec<u8> {
        let s = &self.snapshot;
        let mut out =
            Vec::with_capacity(1 + 8 + 32 + 8 + 32 * s.members.len() + 8 + self.outer_state.len());
        out.push(RECORD_VERSION);
        out.extend_from_slice(&s.next_round.0.to_le_bytes());
        out.extend_from_slice(&s.model_hash.0);
        out.extend_from_slice(&(s.members.len() as u64).to_le_bytes());
        for m in s.members.iter() {
            out.extend_from_slice(&m.0);
        }
        out.extend_from_slice(&(self.outer_state.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.outer_state);
        out
    }

    /// Decodes hostile bytes: sizes are checked before allocating; members must be sorted and unique.
    pub fn decode(bytes: &[u8]) -> Result<SnapshotRecord, RecordError> {
        if bytes.len() as u64 > limits::SNAPSHOT_RECORD_BYTES_MAX + limits::OUTER_STATE_BYTES_MAX {
            return Err(RecordError::TooLarge(bytes.len()));
        }
        let mut reader = Reader { bytes, at: 0 };
        let version = reader.take(1)?[0];
        if version != RECORD_VERSION {
            return Err(RecordError::Version(version));
        }
        let next_round = RoundNumber(reader.u64()?);
        let model_hash = Hash32(reader.take(32)?.try_into().expect("32 bytes"));
        let count = reader.u64()?;
        if count > round_limits::MEMBERS_MAX as u64 {
            return Err(RecordError::TooManyMembers(count));
        }
        let raw = reader.take(count as usize * 32)?;
        let members: Vec<PeerId> = raw
            .chunks_exact(32)
            .map(|c| PeerId(c.try_into().expect("32 bytes")))
            .collect();
        if !members.windows(2).all(|w| w[0] < w[1]) {
            return Err(RecordError::Unsorted);
        }
        let outer_len = reader.u64()?;
        if outer_len > limits::OUTER_STATE_BYTES_MAX {
            return Err(RecordError::TooLarge(outer_len as usize));
        }
        let outer_state = reader.take(outer_len as usize)?.to_vec();
        if reader.at != bytes.len() {
            return Err(RecordError::Trailing(bytes.len() - reader.at));
        }
        Ok(SnapshotRecord {
            snapshot: Snapshot {
                next_round,
                model_hash,
                members: Arc::new(members),
            },
            outer_state,
        })
    }

    /// Decodes and checks that the snapshot is the one with `digest` in run `run_id`.
    pub fn decode_checked(
        bytes: &[u8],
        run_id: RunId,
        digest: Hash32,
    ) -> Result<SnapshotRecord, RecordError> {
        let record = SnapshotRecord::decode(bytes)?;
        if record.snapshot.digest(run_id) != digest {
            return Err(RecordError::Digest);
        }
        Ok(record)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let end = self.at.checked_add(n).ok_or(RecordError::Truncated)?;
        let out = self.bytes.get(self.at..end).ok_or(RecordError::Truncated)?;
        self.at = end;
        Ok(out)
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

/// `state.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    pub version: u32,
    pub next_round: u64,
    pub model_hash: String,
    pub members: Vec<String>,
}

/// One line of `history.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HistoryLine {
    pub round: u64,
    pub model_hash: String,
    /// The round seed (hex): with the included trainers it fixes which tokens were trained.
    pub seed: String,
    pub included: Vec<String>,
    pub excluded: usize,
    pub proposer: String,
    /// This node's mean inner training loss in this round, if it trained.
    pub train_loss: Option<f32>,
    /// Validation loss of the settled model.
    pub val_loss: Option<f32>,
    pub unix_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PersistError + '_ {
    move |source| PersistError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` to `path` through a fsynced temporary file and a rename. The temporary name is unique per
/// write, so two tasks storing the same content-addressed blob at once do not pull each other's file away.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("part{n}"));
    let mut file = fs::File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

pub fn f32s_to_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub fn bytes_to_f32s(bytes: &[u8]) -> Option<Vec<f32>> {
    (bytes.len() % 4 == 0).then(|| {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect()
    })
}

/// The run's directory in a node's data dir.
#[derive(Clone, Debug)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn open(data_dir: &Path, run_id: RunId) -> Result<RunDir, PersistError> {
        let root = data_dir.join("runs").join(&run_id.0.to_hex()[..16]);
        fs::create_dir_all(root.join("blobs")).map_err(io(&root))?;
        // Leftovers of a write interrupted by a crash.
        if let Ok(entries) = fs::read_dir(root.join("blobs")) {
            for entry in entries.flatten() {
                let part = entry.path().extension().and_then(|e| e.to_str()).map(|e| {
                    e.strip_prefix("part")
                        .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
                });
                if part == Some(true) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok(RunDir { root })
    }

    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }

    pub fn blob_path(&self, name: &Hash32) -> PathBuf {
        self.blobs().join(name.to_hex())
    }

    pub fn put_blob(&self, name: &Hash32, bytes: &[u8]) -> Result<(), PersistError> {
        let path = self.blob_path(name);
        if path.exists() {
            return Ok(());
        }
        write_atomic(&path, bytes)
    }

    pub fn read_blob(&self, name: &Hash32) -> Option<Vec<u8>> {
        fs::read(self.blob_path(name)).ok()
    }

    /// Reads model parameters by their hash and checks it.
    pub fn read_params(&self, model_hash: &Hash32) -> Option<Vec<f32>> {
        let params = bytes_to_f32s(&self.read_blob(model_hash)?)?;
        (Hash32::of_f32s(&params) == *model_hash).then_some(params)
    }

    fn outer_path(&self, next_round: RoundNumber) -> PathBuf {
        self.root.join(format!("outer-{}.bin", next_round.0))
    }

    /// Persists an agreed state: model blob, outer state, then `state.json` last. Also writes the snapshot
    /// record served to peers, and drops files older than `ROUNDS_KEPT` rounds.
    pub fn save_state(
        &self,
        run_id: RunId,
        snapshot: &Snapshot,
        params: &[f32],
        outer_state: &[u8],
    ) -> Result<(), PersistError> {
        self.put_blob(&snapshot.model_hash, &f32s_to_bytes(params))?;
        write_atomic(&self.outer_path(snapshot.next_round), outer_state)?;
        let record = SnapshotRecord {
            snapshot: snapshot.clone(),
            outer_state: outer_state.to_vec(),
        };
        self.put_blob(&snapshot.digest(run_id), &record.encode())?;
        let state = StateFile {
            version: STATE_VERSION,
            next_round: snapshot.next_round.0,
            model_hash: snapshot.model_hash.to_hex(),
            members: snapshot.members.iter().map(|m| m.to_string()).collect(),
        };
        let path = self.root.join("state.json");
        write_atomic(
            &path,
            serde_json::to_string(&state)
                .expect("serializes")
                .as_bytes(),
        )?;
        if let Some(old) = snapshot.next_round.0.checked_sub(limits::ROUNDS_KEPT) {
            let _ = fs::remove_file(self.outer_path(RoundNumber(old)));
        }
        Ok(())
    }

    /// The last agreed state, its parameters and outer state; `None` if there is none yet.
    pub fn load_state(&self) -> Result<Option<(Snapshot, Vec<f32>, Vec<u8>)>, PersistError> {
        let path = self.root.join("state.json");
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let corrupt = |reason: String| PersistError::Corrupt {
            path: path.clone(),
            reason,
        };
        let state: StateFile = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        if state.version != STATE_VERSION {
            return Err(corrupt(format!(
                "version {} is not supported",
                state.version
            )));
        }
        let model_hash = Hash32::from_hex(&state.model_hash).map_err(|e| corrupt(e.to_string()))?;
        let mut members = Vec::with_capacity(state.members.len().min(round_limits::MEMBERS_MAX));
        for m in &state.members {
            members.push(
                crate::runspec::parse_peer(m)
                    .ok_or_else(|| corrupt(format!("bad member {m:?}")))?,
            );
        }
        if !members.windows(2).all(|w| w[0] < w[1]) {
            return Err(corrupt("members are not sorted and unique".into()));
        }
        let params = self
            .read_params(&model_hash)
            .ok_or_else(|| corrupt(format!("model blob {model_hash} is missing or damaged")))?;
        let next_round = RoundNumber(state.next_round);
        let outer_path = self.outer_path(next_round);
        let outer = fs::read(&outer_path).map_err(io(&outer_path))?;
        Ok(Some((
            Snapshot {
                next_round,
                model_hash,
                members: Arc::new(members),
            },
            params,
            outer,
        )))
    }

    pub fn append_history(&self, line: &HistoryLine) -> Result<(), PersistError> {
        let path = self.root.join("history.jsonl");
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let mut text = serde_json::to_string(line).expect("serializes");
        text.push('\n');
        file.write_all(text.as_bytes()).map_err(io(&path))
    }

    pub fn read_history(&self) -> Vec<HistoryLine> {
        let Ok(text) = fs::read_to_string(self.root.join("history.jsonl")) else {
            return Vec::new();
        };
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Removes blobs not named in `keep` and older than the retention (by modification order is not
    /// reliable, so callers pass what to keep explicitly).
    pub fn prune_blobs(&self, keep: &std::collections::BTreeSet<Hash32>) {
        let Ok(entries) = fs::read_dir(self.blobs()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(hash) = name.to_str().and_then(|n| Hash32::from_hex(n).ok()) else {
                continue;
            };
            if !keep.contains(&hash) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Saves the inner optimizer and error feedback for `next_round`.
    pub fn save_inner(
        &self,
        next_round: RoundNumber,
        state: &model::OptimizerState,
        feedback: &sync::codec::ErrorFeedback,
    ) -> Result<(), PersistError> {
        let feedback = sync::outer::encode_feedback(feedback);
        let mut out = Vec::with_capacity(32 + 8 * state.exp_avg.len() + feedback.len());
        out.extend_from_slice(&next_round.0.to_le_bytes());
        out.extend_from_slice(&state.step.to_le_bytes());
        out.extend_from_slice(&(state.exp_avg.len() as u64).to_le_bytes());
        out.extend_from_slice(&f32s_to_bytes(&state.exp_avg));
        out.extend_from_slice(&f32s_to_bytes(&state.exp_avg_sq));
        out.extend_from_slice(&feedback);
        write_atomic(&self.root.join("inner.bin"), &out)
    }

    /// The inner state saved for `next_round`, if it is there, whole, and for `params` values.
    pub fn load_inner(
        &self,
        next_round: RoundNumber,
        params: usize,
    ) -> Option<(model::OptimizerState, sync::codec::ErrorFeedback)> {
        let bytes = fs::read(self.root.join("inner.bin")).ok()?;
        let mut reader = Reader {
            bytes: &bytes,
            at: 0,
        };
        if reader.u64().ok()? != next_round.0 {
            return None;
        }
        let step = reader.u64().ok()?;
        if reader.u64().ok()? != params as u64 {
            return None;
        }
        let exp_avg = bytes_to_f32s(reader.take(params * 4).ok()?)?;
        let exp_avg_sq = bytes_to_f32s(reader.take(params * 4).ok()?)?;
        let feedback = sync::outer::decode_feedback(&bytes[reader.at..], params).ok()?;
        Some((
            model::OptimizerState {
                step,
                exp_avg,
                exp_avg_sq,
            },
            feedback,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> SnapshotRecord {
        SnapshotRecord {
            snapshot: Snapshot {
                next_round: RoundNumber(5),
                model_hash: Hash32([7; 32]),
                members: Arc::new(vec![PeerId([1; 32]), PeerId([2; 32])]),
            },
            outer_state: vec![1, 2, 3],
        }
    }

    #[test]
    fn record_round_trips_and_every_truncation_fails() {
        let r = record();
        let bytes = r.encode();
        assert_eq!(SnapshotRecord::decode(&bytes).unwrap(), r);
        for cut in 0..bytes.len() {
            assert!(SnapshotRecord::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            SnapshotRecord::decode(&longer),
            Err(RecordError::Trailing(1))
        ));
        let run = RunId(Hash32([4; 32]));
        let digest = r.snapshot.digest(run);
        assert!(SnapshotRecord::decode_checked(&bytes, run, digest).is_ok());
        assert!(matches!(
            SnapshotRecord::decode_checked(&bytes, run, Hash32([0; 32])),
            Err(RecordError::Digest)
        ));
    }

    #[test]
    fn record_rejects_unsorted_members_and_huge_counts() {
        let mut r = record();
        r.snapshot.members = Arc::new(vec![PeerId([2; 32]), PeerId([1; 32])]);
        assert!(matches!(
            SnapshotRecord::decode(&r.encode()),
            Err(RecordError::Unsorted)
        ));
        let mut bytes = record().encode();
        bytes[41..49].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            SnapshotRecord::decode(&bytes),
            Err(RecordError::TooManyMembers(_))
        ));
    }

    #[test]
    fn state_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunId(Hash32([4; 32]));
        let rd = RunDir::open(dir.path(), run).unwrap();
        assert!(rd.load_state().unwrap().is_none());
        let params = vec![0.5f32, -1.0, 2.0];
        let mut snapshot = record().snapshot;
        snapshot.model_hash = Hash32::of_f32s(&params);
        rd.save_state(run, &snapshot, &params, &[9, 9]).unwrap();
        let (s, p, o) = rd.load_state().unwrap().unwrap();
        assert_eq!((s, p, o), (snapshot.clone(), params, vec![9, 9]));
        let served = rd.read_blob(&snapshot.digest(run)).unwrap();
        assert_eq!(
            SnapshotRecord::decode_checked(&served, run, snapshot.digest(run))
                .unwrap()
                .snapshot,
            snapshot
        );
        // A damaged model blob is reported, not trusted.
        fs::write(rd.blob_path(&snapshot.model_hash), [0u8; 12]).unwrap();
        assert!(rd.load_state().is_err());
    }
}
