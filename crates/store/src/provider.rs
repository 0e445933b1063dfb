//! Providers: the `PieceProvider` trait the node implements over `net`, a local-directory provider, and provider
//! records (who holds which piece), with their wire format and an in-memory table.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use bao_tree::ChunkRanges;
use types::limits::store::{PROVIDER_RECORD_BYTES_MAX, PROVIDER_RECORD_TTL_MS};
use types::{Hash32, PeerId};

use crate::cid::Cid;
use crate::local::{LocalStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("provider does not hold {0}")]
    NotFound(Cid),
    #[error("provider unreachable: {0}")]
    Unreachable(String),
    #[error("provider refused: {0}")]
    Refused(String),
    #[error("provider store error: {0}")]
    Store(#[from] StoreError),
}

/// A peer that serves and accepts blobs. `store` never moves bytes itself: the node implements this over `net`
/// (request-response blob transfer); tests and the CLI use `LocalProvider` over real store directories.
pub trait PieceProvider: Send + Sync {
    fn peer(&self) -> PeerId;

    /// A range response (`bao` module format: size prefix + bao encoding) for `ranges` of blob `cid`, as a stream.
    /// The caller verifies every byte; a provider is never trusted.
    fn read_ranges(
        &self,
        cid: Cid,
        ranges: &ChunkRanges,
    ) -> Result<Box<dyn Read + Send>, ProviderError>;

    /// Asks this provider to take a copy of `cid` (of `size` bytes), pulling it from `source` and verifying it.
    fn replicate(
        &self,
        cid: Cid,
        size: u64,
        source: &dyn PieceProvider,
    ) -> Result<(), ProviderError>;
}

/// A provider backed by a local store directory. Responses stream through an OS pipe from a writer thread, so a large
/// piece is never held in memory and the reader sees back-pressure like a network stream.
pub struct LocalProvider {
    peer: PeerId,
    store: Arc<LocalStore>,
}

impl LocalProvider {
    pub fn new(peer: PeerId, store: Arc<LocalStore>) -> LocalProvider {
        LocalProvider { peer, store }
    }

    pub fn store(&self) -> &Arc<LocalStore> {
        &self.store
    }
}

impl PieceProvider for LocalProvider {
    fn peer(&self) -> PeerId {
        self.peer
    }

    fn read_ranges(
        &self,
        cid: Cid,
        ranges: &ChunkRanges,
    ) -> Result<Box<dyn Read + Send>, ProviderError> {
        if !self.store.contains(cid)? {
            return Err(ProviderError::NotFound(cid));
        }
        let (reader, writer) =
            std::io::pipe().map_err(|e| ProviderError::Unreachable(e.to_string()))?;
        let store = self.store.clone();
        let ranges = ranges.clone();
        // The writer thread ends when the response is written, fails validation (the pipe closes early and the
        // reader sees a truncated response), or the reader goes away.
        std::thread::spawn(move || {
            let _ = store.read_ranges(cid, &ranges, writer);
        });
        Ok(Box::new(reader))
    }

    fn replicate(
        &self,
        cid: Cid,
        size: u64,
        source: &dyn PieceProvider,
    ) -> Result<(), ProviderError> {
        let response = source.read_ranges(cid, &crate::bao::all_chunks())?;
        self.store.put_from_response(cid, Some(size), response)?;
        Ok(())
    }
}

/// "`provider` holds piece `piece_index` (blob `piece`) of collection `root`, until `expires_at_ms`".
/// The node publishes these in the Kademlia DHT under the piece CID (and the root CID for the manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderRecord {
    pub root: Cid,
    /// Index of the piece within the collection, or `MANIFEST_PIECE` for the manifest blob itself.
    pub piece_index: u16,
    pub piece: Cid,
    pub provider: PeerId,
    pub expires_at_ms: u64,
}

pub const MANIFEST_PIECE: u16 = u16::MAX;
const RECORD_VERSION: u8 = 1;
const RECORD_BYTES: usize = 1 + 32 + 2 + 32 + 32 + 8;
const _: () = assert!(RECORD_BYTES <= PROVIDER_RECORD_BYTES_MAX);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("provider record is {0} bytes, expected {RECORD_BYTES}")]
    Length(usize),
    #[error("provider record version {0} is not supported")]
    Version(u8),
}

impl ProviderRecord {
    pub fn new(
        root: Cid,
        piece_index: u16,
        piece: Cid,
        provider: PeerId,
        now_ms: u64,
    ) -> ProviderRecord {
        ProviderRecord {
            root,
            piece_index,
            piece,
            provider,
            expires_at_ms: now_ms + PROVIDER_RECORD_TTL_MS,
        }
    }

    /// Fixed layout: version u8, root [32], piece_index u16 LE, piece [32], provider [32], expires_at_ms u64 LE.
    pub fn encode(&self) -> [u8; RECORD_BYTES] {
        let mut out = [0u8; RECORD_BYTES];
        out[0] = RECORD_VERSION;
        out[1..33].copy_from_slice(&self.root.0 .0);
        out[33..35].copy_from_slice(&self.piece_index.to_le_bytes());
        out[35..67].copy_from_slice(&self.piece.0 .0);
        out[67..99].copy_from_slice(&self.provider.0);
        out[99..107].copy_from_slice(&self.expires_at_ms.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<ProviderRecord, RecordError> {
        if bytes.len() != RECORD_BYTES {
            return Err(RecordError::Length(bytes.len()));
        }
        if bytes[0] != RECORD_VERSION {
            return Err(RecordError::Version(bytes[0]));
        }
        let arr =
            |r: std::ops::Range<usize>| -> [u8; 32] { bytes[r].try_into().expect("32-byte slice") };
        Ok(ProviderRecord {
            root: Cid(Hash32(arr(1..33))),
            piece_index: u16::from_le_bytes([bytes[33], bytes[34]]),
            piece: Cid(Hash32(arr(35..67))),
            provider: PeerId(arr(67..99)),
            expires_at_ms: u64::from_le_bytes(bytes[99..107].try_into().expect("8-byte slice")),
        })
    }
}

/// Provider records by blob CID, with expiry: what the DHT holds, as a plain data structure (used by tests, the
/// simulator, and as the node's local cache of DHT answers).
#[derive(Debug, Default, Clone)]
pub struct ProviderTable {
    by_blob: BTreeMap<Cid, BTreeMap<PeerId, ProviderRecord>>,
}

impl ProviderTable {
    pub fn announce(&mut self, record: ProviderRecord) {
        self.by_blob
            .entry(record.piece)
            .or_default()
            .insert(record.provider, record);
    }

    pub fn withdraw(&mut self, blob: Cid, provider: PeerId) {
        if let Some(map) = self.by_blob.get_mut(&blob) {
            map.remove(&provider);
        }
    }

    /// Live providers of a blob, in PeerId order.
    pub fn providers(&self, blob: Cid, now_ms: u64) -> Vec<PeerId> {
        self.by_blob
            .get(&blob)
            .map(|m| {
                m.values()
                    .filter(|r| r.expires_at_ms > now_ms)
                    .map(|r| r.provider)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn expire(&mut self, now_ms: u64) {
        for map in self.by_blob.values_mut() {
            map.retain(|_, r| r.expires_at_ms > now_ms);
        }
        self.by_blob.retain(|_, m| !m.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_and_bad_bytes() {
        let r = ProviderRecord::new(
            Cid::of(b"root"),
            3,
            Cid::of(b"piece"),
            PeerId([9; 32]),
            1000,
        );
        let bytes = r.encode();
        assert_eq!(ProviderRecord::decode(&bytes), Ok(r));
        assert_eq!(
            ProviderRecord::decode(&bytes[..10]),
            Err(RecordError::Length(10))
        );
        let mut v = bytes;
        v[0] = 7;
        assert_eq!(ProviderRecord::decode(&v), Err(RecordError::Version(7)));
    }

    #[test]
    fn table_expires_records() {
        let mut t = ProviderTable::default();
        let piece = Cid::of(b"p");
        t.announce(ProviderRecord::new(
            Cid::of(b"r"),
            0,
            piece,
            PeerId([1; 32]),
            0,
        ));
        t.announce(ProviderRecord::new(
            Cid::of(b"r"),
            0,
            piece,
            PeerId([2; 32]),
            1000,
        ));
        assert_eq!(t.providers(piece, 10).len(), 2);
        assert_eq!(
            t.providers(piece, PROVIDER_RECORD_TTL_MS + 1),
            vec![PeerId([2; 32])]
        );
        t.expire(PROVIDER_RECORD_TTL_MS + 2000);
        assert!(t.providers(piece, 0).is_empty());
    }
}
