//! Collection manifests: the versioned, hashed, typed description of a dataset or checkpoint; its CID is the root.
//!
//! Encoding: `b"CWMF"`, a version byte (1), then the postcard encoding of `Manifest`. Decoding checks the size before
//! anything is parsed, checks every count, length and name against `types::limits::store`, and requires the bytes to be
//! canonical (re-encoding gives the same bytes), so one manifest has exactly one CID.

use serde::{Deserialize, Serialize};
use types::limits::store::{
    COLLECTION_BYTES_MAX, ERASURE_SHARD_BYTES_MAX, ERASURE_TOTAL_PIECES_MAX, MANIFEST_BYTES_MAX,
    MANIFEST_FILES_MAX, MANIFEST_NAME_BYTES_MAX, MANIFEST_STATS_MAX, MANIFEST_TEXT_BYTES_MAX,
};
use types::Hash32;

use crate::cid::Cid;

pub const MANIFEST_MAGIC: [u8; 4] = *b"CWMF";
pub const MANIFEST_VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub kind: CollectionKind,
    /// Free text chosen by the publisher (e.g. the input folder's name).
    pub name: String,
    /// Files in payload order: the payload is their concatenation.
    pub files: Vec<FileEntry>,
    pub erasure: ErasureLayout,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CollectionKind {
    /// Token shards, a tokenizer and statistics.
    Dataset {
        tokenizer: String,
        stats: Vec<(String, u64)>,
    },
    /// Tensors in chunks, a config and a tokenizer.
    Checkpoint { step: u64, model_hash: Hash32 },
    /// Files stored as they are, not tokenized.
    Raw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileRole {
    TrainShard,
    ValShard,
    Tokenizer,
    Stats,
    TensorChunk,
    Config,
    Raw,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative path, '/'-separated, no `..`, no leading '/'.
    pub name: String,
    pub role: FileRole,
    pub size: u64,
    /// BLAKE3 of the file's bytes.
    pub hash: Hash32,
}

/// How the payload is coded: stripes of `data_pieces` shards of `shard_bytes` each; piece i holds shard i of every
/// stripe. Pieces 0..k are the payload itself (zero-padded at the end), k..n are Reed-Solomon recovery pieces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureLayout {
    pub data_pieces: u16,
    pub total_pieces: u16,
    pub shard_bytes: u32,
    pub piece_bytes: u64,
    pub pieces: Vec<Cid>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is {0} bytes, over the limit of {MANIFEST_BYTES_MAX}")]
    TooLarge(usize),
    #[error("not a manifest (bad magic)")]
    BadMagic,
    #[error("manifest version {0} is not supported (only {MANIFEST_VERSION})")]
    Version(u8),
    #[error("manifest body does not parse: {0}")]
    Malformed(String),
    #[error("manifest is not canonically encoded")]
    NotCanonical,
    #[error("manifest names {0} files, over the limit of {MANIFEST_FILES_MAX}")]
    TooManyFiles(usize),
    #[error("manifest has {0} statistics, over the limit of {MANIFEST_STATS_MAX}")]
    TooManyStats(usize),
    #[error("manifest text field is {0} bytes, over the limit of {MANIFEST_TEXT_BYTES_MAX}")]
    TextTooLong(usize),
    #[error("bad file name {0:?}: {1}")]
    BadName(String, &'static str),
    #[error("file name {0:?} appears twice")]
    DuplicateName(String),
    #[error("collection payload is over the limit of {COLLECTION_BYTES_MAX} bytes")]
    PayloadTooLarge,
    #[error("bad erasure layout: {0}")]
    BadErasure(String),
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        let body = postcard::to_allocvec(self).expect("manifest serialization cannot fail");
        let mut out = Vec::with_capacity(5 + body.len());
        out.extend_from_slice(&MANIFEST_MAGIC);
        out.push(MANIFEST_VERSION);
        out.extend_from_slice(&body);
        out
    }

    /// The collection root.
    pub fn cid(&self) -> Cid {
        Cid::of(&self.encode())
    }

    pub fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() > MANIFEST_BYTES_MAX {
            return Err(ManifestError::TooLarge(bytes.len()));
        }
        if bytes.len() < 5 || bytes[..4] != MANIFEST_MAGIC {
            return Err(ManifestError::BadMagic);
        }
        if bytes[4] != MANIFEST_VERSION {
            return Err(ManifestError::Version(bytes[4]));
        }
        let manifest: Manifest = postcard::from_bytes(&bytes[5..])
            .map_err(|e| ManifestError::Malformed(e.to_string()))?;
        manifest.validate()?;
        if manifest.encode() != bytes {
            return Err(ManifestError::NotCanonical);
        }
        Ok(manifest)
    }

    pub fn payload_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    pub fn validate(&self) -> Result<(), ManifestError> {
        check_text(&self.name)?;
        match &self.kind {
            CollectionKind::Dataset { tokenizer, stats } => {
                check_text(tokenizer)?;
                if stats.len() > MANIFEST_STATS_MAX {
                    return Err(ManifestError::TooManyStats(stats.len()));
                }
                for (key, _) in stats {
                    check_text(key)?;
                }
            }
            CollectionKind::Checkpoint { .. } | CollectionKind::Raw => {}
        }
        if self.files.len() > MANIFEST_FILES_MAX {
            return Err(ManifestError::TooManyFiles(self.files.len()));
        }
        let mut names = std::collections::BTreeSet::new();
        let mut payload: u64 = 0;
        for file in &self.files {
            check_name(&file.name)?;
            if !names.insert(file.name.as_str()) {
                return Err(ManifestError::DuplicateName(file.name.clone()));
            }
            payload = payload
                .checked_add(file.size)
                .ok_or(ManifestError::PayloadTooLarge)?;
        }
        if payload > COLLECTION_BYTES_MAX {
            return Err(ManifestError::PayloadTooLarge);
        }
        self.erasure.validate(payload)
    }
}

impl ErasureLayout {
    /// Piece size for a payload: whole stripes of `shard_bytes`, enough to hold it.
    pub fn piece_bytes_for(payload_bytes: u64, data_pieces: u16, shard_bytes: u32) -> u64 {
        let stripe = data_pieces as u64 * shard_bytes as u64;
        payload_bytes.div_ceil(stripe) * shard_bytes as u64
    }

    pub fn stripes(&self) -> u64 {
        self.piece_bytes / self.shard_bytes as u64
    }

    pub fn validate(&self, payload_bytes: u64) -> Result<(), ManifestError> {
        check_erasure_params(self.data_pieces, self.total_pieces, self.shard_bytes)
            .map_err(ManifestError::BadErasure)?;
        if self.pieces.len() != self.total_pieces as usize {
            return Err(ManifestError::BadErasure(format!(
                "{} piece CIDs for {} pieces",
                self.pieces.len(),
                self.total_pieces
            )));
        }
        let expected =
            ErasureLayout::piece_bytes_for(payload_bytes, self.data_pieces, self.shard_bytes);
        if self.piece_bytes != expected {
            return Err(ManifestError::BadErasure(format!(
                "piece size {} but {expected} expected",
                self.piece_bytes
            )));
        }
        Ok(())
    }
}

/// Checks k-of-n parameters: 1 <= k < n <= ERASURE_TOTAL_PIECES_MAX, shard size a non-zero multiple of 64 within limits.
pub fn check_erasure_params(k: u16, n: u16, shard_bytes: u32) -> Result<(), String> {
    if k == 0 || k >= n {
        return Err(format!("need 1 <= k < n, got k={k} n={n}"));
    }
    if n > ERASURE_TOTAL_PIECES_MAX {
        return Err(format!(
            "n={n} is over the limit of {ERASURE_TOTAL_PIECES_MAX}"
        ));
    }
    if shard_bytes == 0 || shard_bytes % 64 != 0 || shard_bytes > ERASURE_SHARD_BYTES_MAX {
        return Err(format!(
            "shard size {shard_bytes} must be a multiple of 64 in 64..={ERASURE_SHARD_BYTES_MAX}"
        ));
    }
    Ok(())
}

fn check_text(text: &str) -> Result<(), ManifestError> {
    if text.len() > MANIFEST_TEXT_BYTES_MAX {
        return Err(ManifestError::TextTooLong(text.len()));
    }
    Ok(())
}

/// A file name must be safe to join under an output directory.
fn check_name(name: &str) -> Result<(), ManifestError> {
    let bad = |why| Err(ManifestError::BadName(name.chars().take(64).collect(), why));
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MANIFEST_NAME_BYTES_MAX {
        return bad("too long");
    }
    if name.starts_with('/') {
        return bad("absolute");
    }
    if name.contains('\\') || name.contains('\0') || name.contains(':') {
        return bad("contains '\\', ':' or NUL");
    }
    if name
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return bad("empty, '.' or '..' component");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let files = vec![
            FileEntry {
                name: "train-0.bin".into(),
                role: FileRole::TrainShard,
                size: 1000,
                hash: Hash32::of(b"a"),
            },
            FileEntry {
                name: "tokenizer.json".into(),
                role: FileRole::Tokenizer,
                size: 24,
                hash: Hash32::of(b"b"),
            },
        ];
        let piece_bytes = ErasureLayout::piece_bytes_for(1024, 10, 64);
        Manifest {
            kind: CollectionKind::Dataset {
                tokenizer: "bytes".into(),
                stats: vec![("tokens".into(), 1000)],
            },
            name: "demo".into(),
            files,
            erasure: ErasureLayout {
                data_pieces: 10,
                total_pieces: 16,
                shard_bytes: 64,
                piece_bytes,
                pieces: (0..16u8).map(|i| Cid::of(&[i])).collect(),
            },
        }
    }

    #[test]
    fn round_trip_and_cid_is_hash_of_bytes() {
        let m = sample();
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes), Ok(m.clone()));
        assert_eq!(m.cid(), Cid::of(&bytes));
        assert_eq!(m.erasure.piece_bytes, 128);
    }

    #[test]
    fn malformed_manifests_are_typed_errors() {
        let bytes = sample().encode();
        assert_eq!(Manifest::decode(b"CWM"), Err(ManifestError::BadMagic));
        assert_eq!(Manifest::decode(b"XXXX\x01"), Err(ManifestError::BadMagic));
        let mut v2 = bytes.clone();
        v2[4] = 2;
        assert_eq!(Manifest::decode(&v2), Err(ManifestError::Version(2)));
        for cut in [5, 6, bytes.len() / 2, bytes.len() - 1] {
            assert!(Manifest::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            Manifest::decode(&trailing),
            Err(ManifestError::NotCanonical)
        );
        assert!(matches!(
            Manifest::decode(&vec![0u8; MANIFEST_BYTES_MAX + 1]),
            Err(ManifestError::TooLarge(_))
        ));
    }

    #[test]
    fn validation_rejects_unsafe_names_and_bad_layouts() {
        for name in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "a\\b",
            "c:x",
            "./a",
        ] {
            let mut m = sample();
            m.files[0].name = name.into();
            assert!(
                matches!(
                    Manifest::decode(&m.encode()),
                    Err(ManifestError::BadName(..))
                ),
                "{name:?}"
            );
        }
        let mut m = sample();
        m.files[1].name = m.files[0].name.clone();
        assert!(matches!(
            Manifest::decode(&m.encode()),
            Err(ManifestError::DuplicateName(_))
        ));
        let mut m = sample();
        m.erasure.pieces.pop();
        assert!(matches!(
            Manifest::decode(&m.encode()),
            Err(ManifestError::BadErasure(_))
        ));
        let mut m = sample();
        m.erasure.data_pieces = 16;
        assert!(matches!(
            Manifest::decode(&m.encode()),
            Err(ManifestError::BadErasure(_))
        ));
        let mut m = sample();
        m.erasure.piece_bytes += 64;
        assert!(matches!(
            Manifest::decode(&m.encode()),
            Err(ManifestError::BadErasure(_))
        ));
        let mut m = sample();
        m.files[0].size = u64::MAX;
        assert!(matches!(
            Manifest::decode(&m.encode()),
            Err(ManifestError::PayloadTooLarge)
        ));
    }
}
