//! The local blob store: files on disk, an index in redb, pins, garbage collection and a size quota.
//!
//! Layout under the store directory: `blobs/<2 hex>/<64 hex>` (data), `blobs/<2 hex>/<64 hex>.obao` (post-order bao
//! outboard), `tmp/` (writes in progress), `index.redb`.
//!
//! Crash safety: a put writes data and outboard to `tmp/`, fsyncs both, renames them into `blobs/`, fsyncs the
//! directory, and only then commits the index entry (redb, immediate durability). A removal commits the index first and
//! deletes files after. So every indexed blob is complete on disk; `open` deletes whatever is on disk but not indexed.
//! A blob is served only if it is indexed, and its bytes are hashed again on every read (paired with the check on put).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bao_tree::io::outboard::PostOrderOutboard;
use bao_tree::ChunkRanges;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use types::limits::store::BLOB_BYTES_MAX;
use types::Hash32;

use crate::bao::{self, VerifyError};
use crate::cid::Cid;

/// Blob hash -> data size in bytes.
const BLOBS: TableDefinition<[u8; 32], u64> = TableDefinition::new("blobs");
/// Blob hash -> pin count (absent means unpinned).
const PINS: TableDefinition<[u8; 32], u64> = TableDefinition::new("pins");
/// Named counters: bytes used, audits, repairs, corruption found.
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// Collection root -> label, for the collections this node published or fetched (`data ls`).
const COLLECTIONS: TableDefinition<[u8; 32], &str> = TableDefinition::new("collections");

pub const COUNTER_BYTES_USED: &str = "bytes_used";
pub const COUNTER_CORRUPT_FOUND: &str = "corrupt_found";
/// Counters the node's audit and repair loops add to, shown by `store status`.
pub const COUNTER_AUDIT_CHALLENGES: &str = "audit_challenges";
pub const COUNTER_AUDIT_PASSED: &str = "audit_passed";
pub const COUNTER_AUDIT_FAILED: &str = "audit_failed";
pub const COUNTER_AUDIT_BANNED: &str = "audit_banned";
pub const COUNTER_REPAIR_STARTED: &str = "repair_started";
pub const COUNTER_REPAIR_SUCCEEDED: &str = "repair_succeeded";
pub const COUNTER_REPAIR_FAILED: &str = "repair_failed";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("blob {0} is not in the store")]
    NotFound(Cid),
    #[error("content hash mismatch: expected {expected}, got {actual}")]
    HashMismatch { expected: Cid, actual: Cid },
    #[error("blob {0} failed verification on read and was removed: {1}")]
    Corrupt(Cid, String),
    #[error("blob is truncated: expected {expected} bytes, got {actual}")]
    Truncated { expected: u64, actual: u64 },
    #[error("blob is {size} bytes or more, over the limit of {max}")]
    Oversized { size: u64, max: u64 },
    #[error("store quota exceeded: {used} used + {needed} needed > {quota}")]
    QuotaExceeded { used: u64, needed: u64, quota: u64 },
    #[error("verification failed: {0}")]
    Verify(#[from] VerifyError),
    #[error("index (redb): {0}")]
    Index(String),
    #[error("i/o on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn index_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Index(e.into().to_string())
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub cid: Cid,
    pub size: u64,
    pub pins: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreStatus {
    pub blobs: u64,
    pub pinned: u64,
    pub bytes_used: u64,
    pub quota_bytes: u64,
    pub counters: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GcReport {
    pub removed: u64,
    pub bytes_freed: u64,
}

/// What `open` found and fixed on disk.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecoveryReport {
    pub temp_files_removed: u64,
    pub orphan_files_removed: u64,
    pub broken_entries_removed: u64,
}

pub struct LocalStore {
    dir: PathBuf,
    db: Database,
    quota_bytes: u64,
    temp_counter: AtomicU64,
    recovery: RecoveryReport,
}

impl LocalStore {
    /// Opens (or creates) a store in `dir`, then repairs what a crash may have left: temp files, files not in the
    /// index, and index entries whose files are missing or the wrong length.
    pub fn open(dir: impl AsRef<Path>, quota_bytes: u64) -> Result<LocalStore, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        for sub in ["blobs", "tmp"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(io_err(&path))?;
        }
        let db_path = dir.join("index.redb");
        let db = Database::create(&db_path).map_err(index_err)?;
        let mut store = LocalStore {
            dir,
            db,
            quota_bytes,
            temp_counter: AtomicU64::new(0),
            recovery: Default::default(),
        };
        store.init_tables()?;
        store.recovery = store.recover()?;
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn quota_bytes(&self) -> u64 {
        self.quota_bytes
    }

    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    fn init_tables(&self) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        {
            txn.open_table(BLOBS).map_err(index_err)?;
            txn.open_table(PINS).map_err(index_err)?;
            txn.open_table(COUNTERS).map_err(index_err)?;
            txn.open_table(COLLECTIONS).map_err(index_err)?;
        }
        txn.commit().map_err(index_err)
    }

    fn begin_write(&self) -> Result<redb::WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write().map_err(index_err)?;
        txn.set_durability(Durability::Immediate)
            .map_err(index_err)?;
        Ok(txn)
    }

    fn recover(&self) -> Result<RecoveryReport, StoreError> {
        let mut report = RecoveryReport::default();
        let tmp = self.dir.join("tmp");
        for entry in fs::read_dir(&tmp).map_err(io_err(&tmp))? {
            let path = entry.map_err(io_err(&tmp))?.path();
            fs::remove_file(&path).map_err(io_err(&path))?;
            report.temp_files_removed += 1;
        }
        let indexed = self.indexed_sizes()?;
        // Index entries whose files are gone or short cannot be served: drop them.
        let mut broken = Vec::new();
        for (hash, size) in &indexed {
            let data_len = fs::metadata(self.data_path(*hash)).map(|m| m.len()).ok();
            let obao_len = fs::metadata(self.outboard_path(*hash))
                .map(|m| m.len())
                .ok();
            if data_len != Some(*size) || obao_len != Some(bao::tree(*size).outboard_size()) {
                broken.push(*hash);
            }
        }
        for hash in &broken {
            self.remove_index_entry(*hash)?;
            self.remove_files(*hash)?;
            report.broken_entries_removed += 1;
        }
        // Files on disk that never reached the index (a crash between rename and commit): delete.
        let blobs = self.dir.join("blobs");
        for shard in fs::read_dir(&blobs).map_err(io_err(&blobs))? {
            let shard = shard.map_err(io_err(&blobs))?.path();
            for entry in fs::read_dir(&shard).map_err(io_err(&shard))? {
                let path = entry.map_err(io_err(&shard))?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                let hex = name.strip_suffix(".obao").unwrap_or(name);
                let known =
                    Hash32::from_hex(hex).map(|h| indexed.contains_key(&h) && !broken.contains(&h));
                if known != Ok(true) {
                    fs::remove_file(&path).map_err(io_err(&path))?;
                    report.orphan_files_removed += 1;
                }
            }
        }
        Ok(report)
    }

    fn indexed_sizes(&self) -> Result<BTreeMap<Hash32, u64>, StoreError> {
        let txn = self.db.begin_read().map_err(index_err)?;
        let table = txn.open_table(BLOBS).map_err(index_err)?;
        let mut out = BTreeMap::new();
        for item in table.iter().map_err(index_err)? {
            let (k, v) = item.map_err(index_err)?;
            out.insert(Hash32(k.value()), v.value());
        }
        Ok(out)
    }

    pub fn data_path(&self, hash: Hash32) -> PathBuf {
        let hex = hash.to_hex();
        self.dir.join("blobs").join(&hex[..2]).join(hex)
    }

    pub fn outboard_path(&self, hash: Hash32) -> PathBuf {
        let hex = hash.to_hex();
        self.dir
            .join("blobs")
            .join(&hex[..2])
            .join(format!("{hex}.obao"))
    }

    fn temp_path(&self, suffix: &str) -> PathBuf {
        let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join("tmp")
            .join(format!("{}-{n}.{suffix}", std::process::id()))
    }

    /// Puts bytes; returns their CID.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Cid, StoreError> {
        self.put_reader(bytes, bytes.len() as u64, None)
    }

    /// Puts bytes that must hash to `expected`; anything else is rejected and nothing is stored.
    pub fn put_bytes_expecting(&self, expected: Cid, bytes: &[u8]) -> Result<Cid, StoreError> {
        self.put_reader(bytes, bytes.len() as u64, Some(expected))
    }

    /// Puts exactly `size` bytes from `reader`, hashing them as they are written. A short reader is `Truncated`,
    /// a long one `Oversized`, a different hash `HashMismatch`; in every error case nothing is indexed.
    pub fn put_reader(
        &self,
        reader: impl Read,
        size: u64,
        expected: Option<Cid>,
    ) -> Result<Cid, StoreError> {
        if size > BLOB_BYTES_MAX {
            return Err(StoreError::Oversized {
                size,
                max: BLOB_BYTES_MAX,
            });
        }
        let data_tmp = self.temp_path("data");
        let obao_tmp = self.temp_path("obao");
        let result = self.put_reader_inner(reader, size, expected, &data_tmp, &obao_tmp);
        let _ = fs::remove_file(&data_tmp);
        let _ = fs::remove_file(&obao_tmp);
        result
    }

    fn put_reader_inner(
        &self,
        reader: impl Read,
        size: u64,
        expected: Option<Cid>,
        data_tmp: &Path,
        obao_tmp: &Path,
    ) -> Result<Cid, StoreError> {
        let data_file = File::create(data_tmp).map_err(io_err(data_tmp))?;
        let obao_file = File::create(obao_tmp).map_err(io_err(obao_tmp))?;
        let mut tee = TeeReader {
            inner: reader,
            copy: BufWriter::with_capacity(1 << 20, data_file),
            read: 0,
        };
        let mut obao_writer = BufWriter::with_capacity(1 << 16, obao_file);
        let root =
            bao_tree::io::sync::outboard_post_order(&mut tee, bao::tree(size), &mut obao_writer);
        let root = match root {
            Ok(root) => root,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(StoreError::Truncated {
                    expected: size,
                    actual: tee.read,
                });
            }
            Err(e) => {
                return Err(StoreError::Io {
                    path: data_tmp.to_path_buf(),
                    source: e,
                })
            }
        };
        let mut probe = [0u8; 1];
        if tee.inner.read(&mut probe).map_err(io_err(data_tmp))? != 0 {
            return Err(StoreError::Oversized {
                size: size + 1,
                max: size,
            });
        }
        let cid = Cid(Hash32(*root.as_bytes()));
        if let Some(expected) = expected {
            if expected != cid {
                return Err(StoreError::HashMismatch {
                    expected,
                    actual: cid,
                });
            }
        }
        let data_file = tee.copy.into_inner().map_err(|e| StoreError::Io {
            path: data_tmp.into(),
            source: e.into_error(),
        })?;
        let obao_file = obao_writer.into_inner().map_err(|e| StoreError::Io {
            path: obao_tmp.into(),
            source: e.into_error(),
        })?;
        self.commit_files(cid.0, size, data_file, data_tmp, obao_file, obao_tmp)?;
        Ok(cid)
    }

    /// Indexes a blob the caller wrote to `data_tmp` (a file under this store's directory) while it built the hash and
    /// outboard from the same bytes (`bao::OutboardWriter`), so the data is renamed into place instead of being read
    /// and written again. The file's length and the outboard's size are checked; `data_tmp` is gone on success.
    pub fn put_written_file(
        &self,
        data_tmp: &Path,
        size: u64,
        hash: Hash32,
        outboard: &[u8],
    ) -> Result<Cid, StoreError> {
        if size > BLOB_BYTES_MAX {
            return Err(StoreError::Oversized {
                size,
                max: BLOB_BYTES_MAX,
            });
        }
        let actual = fs::metadata(data_tmp).map_err(io_err(data_tmp))?.len();
        if actual < size {
            return Err(StoreError::Truncated {
                expected: size,
                actual,
            });
        }
        if actual > size {
            return Err(StoreError::Oversized {
                size: actual,
                max: size,
            });
        }
        assert_eq!(
            outboard.len() as u64,
            bao::tree(size).outboard_size(),
            "outboard built for a different size"
        );
        let obao_tmp = self.temp_path("obao");
        let result = self.put_written_inner(data_tmp, size, hash, outboard, &obao_tmp);
        let _ = fs::remove_file(&obao_tmp);
        result
    }

    fn put_written_inner(
        &self,
        data_tmp: &Path,
        size: u64,
        hash: Hash32,
        outboard: &[u8],
        obao_tmp: &Path,
    ) -> Result<Cid, StoreError> {
        let data_file = OpenOptions::new()
            .write(true)
            .open(data_tmp)
            .map_err(io_err(data_tmp))?;
        let mut obao_file = File::create(obao_tmp).map_err(io_err(obao_tmp))?;
        obao_file.write_all(outboard).map_err(io_err(obao_tmp))?;
        self.commit_files(hash, size, data_file, data_tmp, obao_file, obao_tmp)?;
        Ok(Cid(hash))
    }

    /// Stores a blob fetched from a peer: reads a whole-blob range response, verifying every group as it streams, and
    /// writes data and outboard in the same pass. Nothing is indexed unless all of it verified.
    pub fn put_from_response(
        &self,
        cid: Cid,
        expected_size: Option<u64>,
        response: impl Read,
    ) -> Result<u64, StoreError> {
        let data_tmp = self.temp_path("data");
        let result = self.put_from_response_inner(cid, expected_size, response, &data_tmp);
        let _ = fs::remove_file(&data_tmp);
        result
    }

    fn put_from_response_inner(
        &self,
        cid: Cid,
        expected_size: Option<u64>,
        response: impl Read,
        data_tmp: &Path,
    ) -> Result<u64, StoreError> {
        if self.contains(cid)? {
            // Still consume and verify, so callers see the same result either way.
            let size = bao::decode_range_response(
                cid.0,
                expected_size,
                &bao::all_chunks(),
                response,
                |_, _| Ok(()),
            )?;
            return Ok(size);
        }
        let data_file = File::create(data_tmp).map_err(io_err(data_tmp))?;
        let size = bao::decode_full_into(cid.0, expected_size, response, data_file)?;
        // The outboard is recomputed from the verified file rather than trusted from the response.
        self.put_reader(
            File::open(data_tmp).map_err(io_err(data_tmp))?,
            size,
            Some(cid),
        )?;
        Ok(size)
    }

    fn commit_files(
        &self,
        hash: Hash32,
        size: u64,
        data_file: File,
        data_tmp: &Path,
        obao_file: File,
        obao_tmp: &Path,
    ) -> Result<(), StoreError> {
        if self.contains(Cid(hash))? {
            return Ok(());
        }
        let needed = size + bao::tree(size).outboard_size();
        let used = self.counter(COUNTER_BYTES_USED)?;
        if used + needed > self.quota_bytes {
            return Err(StoreError::QuotaExceeded {
                used,
                needed,
                quota: self.quota_bytes,
            });
        }
        data_file.sync_all().map_err(io_err(data_tmp))?;
        obao_file.sync_all().map_err(io_err(obao_tmp))?;
        drop(data_file);
        drop(obao_file);
        let data_path = self.data_path(hash);
        let obao_path = self.outboard_path(hash);
        let shard_dir = data_path
            .parent()
            .expect("blob paths have a parent")
            .to_path_buf();
        fs::create_dir_all(&shard_dir).map_err(io_err(&shard_dir))?;
        fs::rename(obao_tmp, &obao_path).map_err(io_err(&obao_path))?;
        fs::rename(data_tmp, &data_path).map_err(io_err(&data_path))?;
        sync_dir(&shard_dir)?;
        let txn = self.begin_write()?;
        {
            let mut blobs = txn.open_table(BLOBS).map_err(index_err)?;
            blobs.insert(hash.0, size).map_err(index_err)?;
            let mut counters = txn.open_table(COUNTERS).map_err(index_err)?;
            let used = counters
                .get(COUNTER_BYTES_USED)
                .map_err(index_err)?
                .map(|v| v.value())
                .unwrap_or(0);
            counters
                .insert(COUNTER_BYTES_USED, used + needed)
                .map_err(index_err)?;
        }
        txn.commit().map_err(index_err)
    }

    pub fn contains(&self, cid: Cid) -> Result<bool, StoreError> {
        Ok(self.size(cid)?.is_some())
    }

    pub fn size(&self, cid: Cid) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read().map_err(index_err)?;
        let table = txn.open_table(BLOBS).map_err(index_err)?;
        Ok(table.get(cid.0 .0).map_err(index_err)?.map(|v| v.value()))
    }

    fn require_size(&self, cid: Cid) -> Result<u64, StoreError> {
        self.size(cid)?.ok_or(StoreError::NotFound(cid))
    }

    /// Reads a whole blob and hashes it again; a mismatch removes the blob and returns `Corrupt`.
    pub fn get(&self, cid: Cid) -> Result<Vec<u8>, StoreError> {
        let size = self.require_size(cid)?;
        let path = self.data_path(cid.0);
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        if bytes.len() as u64 != size || Hash32::of(&bytes) != cid.0 {
            return Err(self.quarantine(cid, "content does not hash to its address"));
        }
        Ok(bytes)
    }

    /// Hashes a held blob again (streaming, for scrubbing). A blob whose bytes no longer hash to its address is
    /// removed and `Corrupt` returned, so a bad copy is never served and placement can rebuild it.
    pub fn verify(&self, cid: Cid) -> Result<(), StoreError> {
        let size = self.require_size(cid)?;
        let path = self.data_path(cid.0);
        let mut reader = File::open(&path).map_err(io_err(&path))?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = reader.read(&mut buf).map_err(io_err(&path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            total += n as u64;
        }
        if total != size || Hash32(*hasher.finalize().as_bytes()) != cid.0 {
            return Err(self.quarantine(cid, "content does not hash to its address"));
        }
        Ok(())
    }

    /// Writes a verified copy of a blob to `out` (via a temp file and rename, so `out` is never half-written).
    pub fn export(&self, cid: Cid, out: &Path) -> Result<u64, StoreError> {
        let size = self.require_size(cid)?;
        let tmp = out.with_extension("partial");
        let result = (|| {
            let file = File::create(&tmp).map_err(io_err(&tmp))?;
            let mut writer = BufWriter::with_capacity(1 << 20, file);
            let mut hasher = blake3::Hasher::new();
            let path = self.data_path(cid.0);
            let mut reader = File::open(&path).map_err(io_err(&path))?;
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            loop {
                let n = reader.read(&mut buf).map_err(io_err(&path))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                writer.write_all(&buf[..n]).map_err(io_err(&tmp))?;
                total += n as u64;
            }
            if total != size || Hash32(*hasher.finalize().as_bytes()) != cid.0 {
                return Err(self.quarantine(cid, "content does not hash to its address"));
            }
            let file = writer.into_inner().map_err(|e| StoreError::Io {
                path: tmp.clone(),
                source: e.into_error(),
            })?;
            file.sync_all().map_err(io_err(&tmp))?;
            fs::rename(&tmp, out).map_err(io_err(out))?;
            Ok(total)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Serves `ranges` of a blob as a range response (size prefix + bao encoding), validating each group against the
    /// outboard before it is written. A blob that fails validation is removed and `Corrupt` returned.
    pub fn read_ranges(
        &self,
        cid: Cid,
        ranges: &ChunkRanges,
        out: impl Write,
    ) -> Result<(), StoreError> {
        let size = self.require_size(cid)?;
        let data_path = self.data_path(cid.0);
        let obao_path = self.outboard_path(cid.0);
        let data = File::open(&data_path).map_err(io_err(&data_path))?;
        let obao = File::open(&obao_path).map_err(io_err(&obao_path))?;
        let outboard = PostOrderOutboard {
            root: blake3::Hash::from_bytes(cid.0 .0),
            tree: bao::tree(size),
            data: obao,
        };
        match bao::encode_range_response(&data, &outboard, ranges, out) {
            Ok(()) => Ok(()),
            Err(bao_tree::io::EncodeError::Io(e)) if e.kind() != io::ErrorKind::UnexpectedEof => {
                Err(StoreError::Io {
                    path: data_path,
                    source: e,
                })
            }
            Err(e) => Err(self.quarantine(cid, &e.to_string())),
        }
    }

    /// Range response in memory (for small ranges, e.g. audit challenges).
    pub fn read_ranges_vec(&self, cid: Cid, ranges: &ChunkRanges) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        self.read_ranges(cid, ranges, &mut out)?;
        Ok(out)
    }

    /// Drops a blob that failed verification (so it is never served again) and counts it.
    fn quarantine(&self, cid: Cid, why: &str) -> StoreError {
        let removed = self
            .remove(cid)
            .and_then(|_| self.add_counter(COUNTER_CORRUPT_FOUND, 1));
        match removed {
            Ok(()) => StoreError::Corrupt(cid, why.to_string()),
            Err(e) => e,
        }
    }

    /// Removes a blob regardless of pins (index first, then files).
    pub fn remove(&self, cid: Cid) -> Result<bool, StoreError> {
        let removed = self.remove_index_entry(cid.0)?;
        if removed {
            self.remove_files(cid.0)?;
        }
        Ok(removed)
    }

    fn remove_index_entry(&self, hash: Hash32) -> Result<bool, StoreError> {
        let txn = self.begin_write()?;
        let removed;
        {
            let mut blobs = txn.open_table(BLOBS).map_err(index_err)?;
            let size = blobs.remove(hash.0).map_err(index_err)?.map(|v| v.value());
            removed = size.is_some();
            if let Some(size) = size {
                let freed = size + bao::tree(size).outboard_size();
                let mut counters = txn.open_table(COUNTERS).map_err(index_err)?;
                let used = counters
                    .get(COUNTER_BYTES_USED)
                    .map_err(index_err)?
                    .map(|v| v.value())
                    .unwrap_or(0);
                counters
                    .insert(COUNTER_BYTES_USED, used.saturating_sub(freed))
                    .map_err(index_err)?;
            }
        }
        txn.commit().map_err(index_err)?;
        Ok(removed)
    }

    fn remove_files(&self, hash: Hash32) -> Result<(), StoreError> {
        for path in [self.data_path(hash), self.outboard_path(hash)] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::Io { path, source: e }),
            }
        }
        Ok(())
    }

    /// Pins a blob (pins count, so several collections may share one blob). The blob must be present.
    pub fn pin(&self, cid: Cid) -> Result<u64, StoreError> {
        self.require_size(cid)?;
        self.update_pins(cid, |n| n + 1)
    }

    pub fn unpin(&self, cid: Cid) -> Result<u64, StoreError> {
        self.update_pins(cid, |n| n.saturating_sub(1))
    }

    fn update_pins(&self, cid: Cid, f: impl Fn(u64) -> u64) -> Result<u64, StoreError> {
        let txn = self.begin_write()?;
        let pins;
        {
            let mut table = txn.open_table(PINS).map_err(index_err)?;
            let current = table
                .get(cid.0 .0)
                .map_err(index_err)?
                .map(|v| v.value())
                .unwrap_or(0);
            pins = f(current);
            if pins == 0 {
                table.remove(cid.0 .0).map_err(index_err)?;
            } else {
                table.insert(cid.0 .0, pins).map_err(index_err)?;
            }
        }
        txn.commit().map_err(index_err)?;
        Ok(pins)
    }

    pub fn pins(&self, cid: Cid) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(index_err)?;
        let table = txn.open_table(PINS).map_err(index_err)?;
        Ok(table
            .get(cid.0 .0)
            .map_err(index_err)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// Removes every unpinned blob.
    pub fn gc(&self) -> Result<GcReport, StoreError> {
        let mut report = GcReport::default();
        for info in self.list()? {
            if info.pins == 0 && self.remove(info.cid)? {
                report.removed += 1;
                report.bytes_freed += info.size + bao::tree(info.size).outboard_size();
            }
        }
        Ok(report)
    }

    pub fn list(&self) -> Result<Vec<BlobInfo>, StoreError> {
        let txn = self.db.begin_read().map_err(index_err)?;
        let blobs = txn.open_table(BLOBS).map_err(index_err)?;
        let pins = txn.open_table(PINS).map_err(index_err)?;
        let mut out = Vec::new();
        for item in blobs.iter().map_err(index_err)? {
            let (k, v) = item.map_err(index_err)?;
            let hash = k.value();
            let pin_count = pins
                .get(hash)
                .map_err(index_err)?
                .map(|p| p.value())
                .unwrap_or(0);
            out.push(BlobInfo {
                cid: Cid(Hash32(hash)),
                size: v.value(),
                pins: pin_count,
            });
        }
        Ok(out)
    }

    pub fn counter(&self, name: &str) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(index_err)?;
        let table = txn.open_table(COUNTERS).map_err(index_err)?;
        Ok(table
            .get(name)
            .map_err(index_err)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// Adds to a named counter (audit and repair loops record their outcomes here for `store status`).
    pub fn add_counter(&self, name: &str, by: u64) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        {
            let mut table = txn.open_table(COUNTERS).map_err(index_err)?;
            let current = table
                .get(name)
                .map_err(index_err)?
                .map(|v| v.value())
                .unwrap_or(0);
            table
                .insert(name, current.saturating_add(by))
                .map_err(index_err)?;
        }
        txn.commit().map_err(index_err)
    }

    /// Remembers a collection root (with a label) for listing.
    pub fn register_collection(&self, root: Cid, label: &str) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        {
            let mut table = txn.open_table(COLLECTIONS).map_err(index_err)?;
            table.insert(root.0 .0, label).map_err(index_err)?;
        }
        txn.commit().map_err(index_err)
    }

    pub fn collections(&self) -> Result<Vec<(Cid, String)>, StoreError> {
        let txn = self.db.begin_read().map_err(index_err)?;
        let table = txn.open_table(COLLECTIONS).map_err(index_err)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(index_err)? {
            let (k, v) = item.map_err(index_err)?;
            out.push((Cid(Hash32(k.value())), v.value().to_string()));
        }
        Ok(out)
    }

    pub fn status(&self) -> Result<StoreStatus, StoreError> {
        let txn = self.db.begin_read().map_err(index_err)?;
        let blobs = txn
            .open_table(BLOBS)
            .map_err(index_err)?
            .len()
            .map_err(index_err)?;
        let pinned = txn
            .open_table(PINS)
            .map_err(index_err)?
            .len()
            .map_err(index_err)?;
        let table = txn.open_table(COUNTERS).map_err(index_err)?;
        let mut counters = BTreeMap::new();
        for item in table.iter().map_err(index_err)? {
            let (k, v) = item.map_err(index_err)?;
            counters.insert(k.value().to_string(), v.value());
        }
        let bytes_used = counters.get(COUNTER_BYTES_USED).copied().unwrap_or(0);
        Ok(StoreStatus {
            blobs,
            pinned,
            bytes_used,
            quota_bytes: self.quota_bytes,
            counters,
        })
    }
}

/// Copies everything read through it into `copy`, counting bytes.
struct TeeReader<R, W> {
    inner: R,
    copy: W,
    read: u64,
}

impl<R: Read, W: Write> Read for TeeReader<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        self.read += n as u64;
        Ok(n)
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    let handle = OpenOptions::new()
        .read(true)
        .open(dir)
        .map_err(io_err(dir))?;
    handle.sync_all().map_err(io_err(dir))
}
