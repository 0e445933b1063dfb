//! Durable storage of the finalized chain in redb (immediate durability: a commit returns
//! only after fsync). One table maps height → record bytes; a meta table holds the genesis
//! and the head (height, record hash).

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use types::Hash32;

use crate::chain::Record;
use crate::state::Genesis;

const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const GENESIS_KEY: &str = "genesis";
const HEAD_KEY: &str = "head";

/// File name of the ledger database inside a data directory.
pub const DB_FILE: &str = "ledger.redb";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("ledger database {path}: {source}")]
    Open {
        path: PathBuf,
        source: Box<redb::DatabaseError>,
    },
    #[error("ledger database: {0}")]
    Redb(String),
    #[error("no ledger at {0} (expected {DB_FILE}; create one with a genesis first)")]
    Missing(PathBuf),
    #[error("the ledger database has no genesis")]
    NoGenesis,
    #[error("bad genesis in the ledger database: {0}")]
    Genesis(#[from] crate::state::GenesisError),
    #[error("the ledger already has a different genesis")]
    GenesisMismatch,
    #[error("record height {got}, expected {expected}")]
    Height { expected: u64, got: u64 },
    #[error("record at height {height} does not link to the stored head")]
    Link { height: u64 },
    #[error("the stored head is malformed")]
    Head,
}

fn redb_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Redb(e.to_string())
}

/// The finalized chain on disk.
pub struct Store {
    db: Database,
    genesis: Genesis,
}

impl Store {
    /// Opens the ledger in `dir`, creating it with `genesis` if it does not exist.
    pub fn create(dir: &Path, genesis: &Genesis) -> Result<Store, StoreError> {
        genesis.check()?;
        std::fs::create_dir_all(dir).map_err(redb_err)?;
        let path = dir.join(DB_FILE);
        let db = Database::create(&path).map_err(|e| StoreError::Open {
            path,
            source: Box::new(e),
        })?;
        let existing = read_genesis(&db)?;
        match existing {
            Some(found) if &found != genesis => return Err(StoreError::GenesisMismatch),
            Some(_) => {}
            None => {
                let tx = db.begin_write().map_err(redb_err)?;
                {
                    let mut meta = tx.open_table(META).map_err(redb_err)?;
                    meta.insert(GENESIS_KEY, genesis.to_bytes().as_slice())
                        .map_err(redb_err)?;
                    tx.open_table(RECORDS).map_err(redb_err)?;
                }
                tx.commit().map_err(redb_err)?;
            }
        }
        Ok(Store {
            db,
            genesis: genesis.clone(),
        })
    }

    /// Opens an existing ledger in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join(DB_FILE);
        if !path.exists() {
            return Err(StoreError::Missing(dir.to_owned()));
        }
        let db = Database::create(&path).map_err(|e| StoreError::Open {
            path,
            source: Box::new(e),
        })?;
        let genesis = read_genesis(&db)?.ok_or(StoreError::NoGenesis)?;
        Ok(Store { db, genesis })
    }

    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// The last stored (height, record hash); `None` when only genesis exists.
    pub fn head(&self) -> Result<Option<(u64, Hash32)>, StoreError> {
        let tx = self.db.begin_read().map_err(redb_err)?;
        let meta = tx.open_table(META).map_err(redb_err)?;
        let Some(value) = meta.get(HEAD_KEY).map_err(redb_err)? else {
            return Ok(None);
        };
        let bytes = value.value();
        if bytes.len() != 40 {
            return Err(StoreError::Head);
        }
        let height = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        let hash = Hash32(bytes[8..].try_into().expect("32 bytes"));
        Ok(Some((height, hash)))
    }

    /// Height of the last stored record (0 when empty).
    pub fn height(&self) -> Result<u64, StoreError> {
        Ok(self.head()?.map_or(0, |(h, _)| h))
    }

    /// Appends records in one durable write transaction. Each must extend the head.
    pub fn append(&self, records: &[Record]) -> Result<(), StoreError> {
        let (mut height, mut hash) = self.head()?.unwrap_or((0, self.genesis.chain_id()));
        let tx = self.db.begin_write().map_err(redb_err)?;
        {
            let mut table = tx.open_table(RECORDS).map_err(redb_err)?;
            for record in records {
                if record.height != height + 1 {
                    return Err(StoreError::Height {
                        expected: height + 1,
                        got: record.height,
                    });
                }
                if record.prev_hash != hash {
                    return Err(StoreError::Link {
                        height: record.height,
                    });
                }
                let bytes = record.to_bytes();
                table
                    .insert(record.height, bytes.as_slice())
                    .map_err(redb_err)?;
                height = record.height;
                hash = Hash32::of(&bytes);
            }
            let mut meta = tx.open_table(META).map_err(redb_err)?;
            let mut head = height.to_le_bytes().to_vec();
            head.extend_from_slice(&hash.0);
            meta.insert(HEAD_KEY, head.as_slice()).map_err(redb_err)?;
        }
        tx.commit().map_err(redb_err)?;
        Ok(())
    }

    /// The stored bytes of the record at `height`.
    pub fn record_bytes(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(redb_err)?;
        let table = tx.open_table(RECORDS).map_err(redb_err)?;
        Ok(table
            .get(height)
            .map_err(redb_err)?
            .map(|v| v.value().to_vec()))
    }

    /// Number of stored records.
    pub fn len(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(redb_err)?;
        let table = tx.open_table(RECORDS).map_err(redb_err)?;
        table.len().map_err(redb_err)
    }

    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }

    /// Calls `f` on every stored record's bytes, in height order, in one read transaction.
    pub fn for_each_record(
        &self,
        mut f: impl FnMut(u64, &[u8]) -> Result<(), crate::VerifyError>,
    ) -> Result<(), crate::VerifyError> {
        let tx = self.db.begin_read().map_err(redb_err)?;
        let table = tx.open_table(RECORDS).map_err(redb_err)?;
        for entry in table.iter().map_err(redb_err)? {
            let (key, value) = entry.map_err(redb_err)?;
            f(key.value(), value.value())?;
        }
        Ok(())
    }
}

fn read_genesis(db: &Database) -> Result<Option<Genesis>, StoreError> {
    let tx = db.begin_read().map_err(redb_err)?;
    let meta = match tx.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(redb_err(e)),
    };
    let Some(value) = meta.get(GENESIS_KEY).map_err(redb_err)? else {
        return Ok(None);
    };
    Ok(Some(Genesis::from_bytes(value.value())?))
}

/// Overwrites one stored record without any check, as an attacker with disk access could.
/// Exists only so tests can show that `verify_chain` catches it.
#[doc(hidden)]
pub fn testing_overwrite(store: &Store, height: u64, bytes: &[u8]) -> Result<(), StoreError> {
    let tx = store.db.begin_write().map_err(redb_err)?;
    {
        let mut table = tx.open_table(RECORDS).map_err(redb_err)?;
        table.insert(height, bytes).map_err(redb_err)?;
    }
    tx.commit().map_err(redb_err)
}
