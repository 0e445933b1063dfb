//! Blobs kept as plain files named by their hash, served to peers. A stand-in for the store crate.

use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use net::BlobSource;
use types::Hash32;

#[derive(Debug, Clone)]
pub(crate) struct DirBlobs {
    dir: PathBuf,
}

impl DirBlobs {
    pub(crate) fn open(dir: &Path) -> std::io::Result<DirBlobs> {
        fs::create_dir_all(dir)?;
        Ok(DirBlobs {
            dir: dir.to_owned(),
        })
    }

    pub(crate) fn path(&self, hash: &Hash32) -> PathBuf {
        self.dir.join(hash.to_hex())
    }

    /// Writes `bytes` under their hash (through a temporary file, so no half blob is ever served).
    pub(crate) fn put(&self, bytes: &[u8]) -> std::io::Result<Hash32> {
        let hash = Hash32::of(bytes);
        let tmp = self.dir.join(format!("{}.part", hash.to_hex()));
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, self.path(&hash))?;
        Ok(hash)
    }

    /// A writer for a blob being fetched; `commit` checks the hash and makes it visible.
    pub(crate) fn partial(&self, hash: &Hash32) -> std::io::Result<(PathBuf, fs::File)> {
        let tmp = self.dir.join(format!("{}.part", hash.to_hex()));
        let file = fs::File::create(&tmp)?;
        Ok((tmp, file))
    }

    pub(crate) fn commit(&self, tmp: &Path, hash: &Hash32) -> std::io::Result<()> {
        fs::rename(tmp, self.path(hash))
    }
}

impl BlobSource for DirBlobs {
    fn blob_len(&self, hash: &Hash32) -> Option<u64> {
        fs::metadata(self.path(hash)).ok().map(|m| m.len())
    }

    fn read(&self, hash: &Hash32, offset: u64, len: u32) -> Option<Vec<u8>> {
        let file = fs::File::open(self.path(hash)).ok()?;
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset).ok()?;
        Some(buf)
    }
}
