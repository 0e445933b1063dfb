//! Collections: publish files as a manifest plus k-of-n erasure-coded pieces in a local store, and decode them back
//! into a directory, every file checked against its hash before it appears under its name.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use types::Hash32;

use crate::bao::OutboardWriter;
use crate::cid::Cid;
use crate::erasure::{self, ErasureError, ErasureParams};
use crate::local::{LocalStore, StoreError};
use crate::manifest::{
    CollectionKind, ErasureLayout, FileEntry, FileRole, Manifest, ManifestError,
};

#[derive(Debug, thiserror::Error)]
pub enum CollectionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Erasure(#[from] ErasureError),
    #[error("input file {path} changed while it was read")]
    InputChanged { path: PathBuf },
    #[error("file {name} decoded to the wrong hash: the pieces do not match the manifest")]
    FileHashMismatch { name: String },
    #[error("piece {index} does not hash to its address")]
    PieceHashMismatch { index: usize },
    #[error("only {have} of the {needed} pieces needed are held locally")]
    NotEnoughPieces { needed: usize, have: usize },
    #[error("i/o on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CollectionError + '_ {
    move |source| CollectionError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One file to publish: where it is, the name it gets in the collection, and its role.
#[derive(Debug, Clone)]
pub struct InputFile {
    pub path: PathBuf,
    pub name: String,
    pub role: FileRole,
}

/// Encodes `files` into pieces, stores pieces and manifest in `store`, pins them all, and returns the manifest
/// (its `cid()` is the collection root). Files are read once: hashed and erasure-coded in the same pass.
pub fn publish(
    store: &LocalStore,
    kind: CollectionKind,
    name: &str,
    files: &[InputFile],
    params: ErasureParams,
) -> Result<Manifest, CollectionError> {
    let mut sizes = Vec::with_capacity(files.len());
    for file in files {
        sizes.push(fs::metadata(&file.path).map_err(io_err(&file.path))?.len());
    }
    let payload_bytes: u64 = sizes.iter().sum();
    let piece_bytes =
        ErasureLayout::piece_bytes_for(payload_bytes, params.data_pieces, params.shard_bytes);
    let work = store
        .dir()
        .join("tmp")
        .join(format!("publish-{}-{}", std::process::id(), unique()));
    fs::create_dir_all(&work).map_err(io_err(&work))?;
    let result = publish_in(store, kind, name, files, &sizes, params, piece_bytes, &work);
    let _ = fs::remove_dir_all(&work);
    result
}

#[allow(clippy::too_many_arguments)]
fn publish_in(
    store: &LocalStore,
    kind: CollectionKind,
    name: &str,
    files: &[InputFile],
    sizes: &[u64],
    params: ErasureParams,
    piece_bytes: u64,
    work: &Path,
) -> Result<Manifest, CollectionError> {
    let piece_paths: Vec<PathBuf> = (0..params.total_pieces)
        .map(|i| work.join(format!("piece-{i}")))
        .collect();
    // Each piece is hashed (CID and outboard) as the encoder writes it, and later renamed into the store.
    let mut writers = Vec::with_capacity(piece_paths.len());
    for path in &piece_paths {
        let file = File::create(path).map_err(io_err(path))?;
        // A buffer of one shard: whole-shard writes go straight to the file instead of through the buffer.
        writers.push(OutboardWriter::new(
            BufWriter::with_capacity(params.shard_bytes as usize, file),
            piece_bytes,
        ));
    }
    let mut payload = HashingChain::new(files, sizes, params.shard_bytes as usize);
    let payload_bytes: u64 = sizes.iter().sum();
    let mut encoded = erasure::encode(params, &mut payload, payload_bytes, &mut writers);
    if encoded.is_ok() {
        // The encoder stops at the last payload byte; one more read closes the last file(s) and checks nothing
        // was appended to them meanwhile.
        let mut probe = [0u8; 1];
        encoded = match payload.read(&mut probe) {
            Ok(0) => Ok(()),
            Ok(_) => Err(ErasureError::Truncated(
                "input grew while it was read".into(),
            )),
            Err(e) => Err(ErasureError::Io(e)),
        };
    }
    if let Some(err) = payload.error.take() {
        return Err(err);
    }
    encoded?;
    assert_eq!(payload.hashes.len(), files.len(), "every file hashed");
    let mut built = Vec::with_capacity(writers.len());
    for (writer, path) in writers.into_iter().zip(&piece_paths) {
        let (buffered, hash, outboard) = writer.finish();
        buffered.into_inner().map_err(|e| CollectionError::Io {
            path: path.clone(),
            source: e.into_error(),
        })?;
        built.push((hash, outboard));
    }
    let entries: Vec<FileEntry> = files
        .iter()
        .zip(sizes)
        .zip(&payload.hashes)
        .map(|((f, size), hash)| FileEntry {
            name: f.name.clone(),
            role: f.role,
            size: *size,
            hash: *hash,
        })
        .collect();
    let mut pieces = Vec::with_capacity(piece_paths.len());
    for (path, (hash, outboard)) in piece_paths.iter().zip(&built) {
        pieces.push(store.put_written_file(path, piece_bytes, *hash, outboard)?);
    }
    let manifest = Manifest {
        kind,
        name: name.to_string(),
        files: entries,
        erasure: ErasureLayout {
            data_pieces: params.data_pieces,
            total_pieces: params.total_pieces,
            shard_bytes: params.shard_bytes,
            piece_bytes,
            pieces,
        },
    };
    manifest.validate()?;
    let root = store.put_bytes(&manifest.encode())?;
    pin_collection(store, root, &manifest)?;
    store.register_collection(root, name)?;
    Ok(manifest)
}

/// Pins the manifest and whichever of its pieces are held here.
pub fn pin_collection(
    store: &LocalStore,
    root: Cid,
    manifest: &Manifest,
) -> Result<(), StoreError> {
    store.pin(root)?;
    for piece in &manifest.erasure.pieces {
        if store.contains(*piece)? {
            store.pin(*piece)?;
        }
    }
    Ok(())
}

pub fn unpin_collection(
    store: &LocalStore,
    root: Cid,
    manifest: &Manifest,
) -> Result<(), StoreError> {
    store.unpin(root)?;
    for piece in &manifest.erasure.pieces {
        store.unpin(*piece)?;
    }
    Ok(())
}

/// Reads a manifest from the local store (hash checked by `get`, then decoded and validated).
pub fn load_manifest(store: &LocalStore, root: Cid) -> Result<Manifest, CollectionError> {
    Ok(Manifest::decode(&store.get(root)?)?)
}

/// Writes the collection's files into `out_dir` from any k pieces held in `store`. Each file is written to a
/// `.partial` name and renamed only after its hash matched the manifest; each piece is hashed again while it is read.
pub fn decode_to_dir(
    store: &LocalStore,
    manifest: &Manifest,
    out_dir: &Path,
) -> Result<(), CollectionError> {
    let layout = &manifest.erasure;
    let params = ErasureParams::new(layout.data_pieces, layout.total_pieces, layout.shard_bytes)?;
    let k = layout.data_pieces as usize;
    let mut held = Vec::new();
    for (index, piece) in layout.pieces.iter().enumerate() {
        if held.len() < k && store.contains(*piece)? {
            held.push(index);
        }
    }
    if held.len() < k {
        return Err(CollectionError::NotEnoughPieces {
            needed: k,
            have: held.len(),
        });
    }
    let mut readers = Vec::with_capacity(k);
    for &index in &held {
        let path = store.data_path(layout.pieces[index].0);
        let file = File::open(&path).map_err(io_err(&path))?;
        readers.push((
            index,
            HashingReader::new(BufReader::with_capacity(1 << 20, file)),
        ));
    }
    fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    let mut sink = FileSplitter::new(out_dir, &manifest.files);
    let decoded = erasure::decode(params, &mut readers, manifest.payload_bytes(), &mut sink);
    if let Some(err) = sink.error.take() {
        sink.discard();
        return Err(err);
    }
    if let Err(err) = decoded {
        sink.discard();
        return Err(err.into());
    }
    // Pieces are read only up to the last stripe that holds payload: a full check needs the whole piece.
    for (index, reader) in &mut readers {
        io::copy(reader, &mut io::sink()).map_err(io_err(out_dir))?;
        if reader.finish() != layout.pieces[*index].0 {
            sink.discard();
            return Err(CollectionError::PieceHashMismatch { index: *index });
        }
    }
    sink.finish()
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Reads input files one after another as one payload, hashing each and checking it has the size it had at start.
struct HashingChain<'a> {
    files: &'a [InputFile],
    sizes: &'a [u64],
    index: usize,
    current: Option<(BufReader<File>, blake3::Hasher, u64)>,
    buffer_bytes: usize,
    hashes: Vec<Hash32>,
    error: Option<CollectionError>,
}

impl<'a> HashingChain<'a> {
    /// `read_bytes` is the size of the reads to expect: reads that large bypass the buffer (no extra copy).
    fn new(files: &'a [InputFile], sizes: &'a [u64], read_bytes: usize) -> HashingChain<'a> {
        HashingChain {
            files,
            sizes,
            buffer_bytes: read_bytes.clamp(64 << 10, 1 << 20),
            index: 0,
            current: None,
            hashes: Vec::new(),
            error: None,
        }
    }

    fn fail(&mut self, err: CollectionError) -> io::Error {
        let msg = err.to_string();
        self.error = Some(err);
        io::Error::other(msg)
    }
}

impl Read for HashingChain<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.current.is_none() {
                let Some(file) = self.files.get(self.index) else {
                    return Ok(0);
                };
                match File::open(&file.path) {
                    Ok(f) => {
                        self.current = Some((
                            BufReader::with_capacity(self.buffer_bytes, f),
                            blake3::Hasher::new(),
                            0,
                        ))
                    }
                    Err(e) => {
                        return Err(self.fail(CollectionError::Io {
                            path: file.path.clone(),
                            source: e,
                        }))
                    }
                }
            }
            let (reader, hasher, read) = self.current.as_mut().expect("opened above");
            let expected = self.sizes[self.index];
            let want = buf.len().min((expected - *read) as usize);
            let n = if want == 0 {
                0
            } else {
                reader.read(&mut buf[..want])?
            };
            if n > 0 {
                hasher.update(&buf[..n]);
                *read += n as u64;
                return Ok(n);
            }
            // End of this file: it must be exactly as long as it was, then move on.
            let mut probe = [0u8; 1];
            let longer = reader.read(&mut probe)? > 0;
            if *read != expected || longer {
                let path = self.files[self.index].path.clone();
                return Err(self.fail(CollectionError::InputChanged { path }));
            }
            self.hashes.push(Hash32(*hasher.finalize().as_bytes()));
            self.current = None;
            self.index += 1;
        }
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> HashingReader<R> {
        HashingReader {
            inner,
            hasher: blake3::Hasher::new(),
        }
    }

    fn finish(&self) -> Hash32 {
        Hash32(*self.hasher.finalize().as_bytes())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Splits the decoded payload into the manifest's files (`name.partial` until verified).
struct FileSplitter<'a> {
    out_dir: &'a Path,
    files: &'a [FileEntry],
    index: usize,
    current: Option<(BufWriter<File>, blake3::Hasher, u64)>,
    written: Vec<PathBuf>,
    partial: Vec<PathBuf>,
    error: Option<CollectionError>,
}

impl<'a> FileSplitter<'a> {
    fn new(out_dir: &'a Path, files: &'a [FileEntry]) -> FileSplitter<'a> {
        FileSplitter {
            out_dir,
            files,
            index: 0,
            current: None,
            written: Vec::new(),
            partial: Vec::new(),
            error: None,
        }
    }

    fn partial_path(&self, index: usize) -> PathBuf {
        self.out_dir
            .join(format!("{}.partial", self.files[index].name))
    }

    fn fail(&mut self, err: CollectionError) -> io::Error {
        let msg = err.to_string();
        self.error = Some(err);
        io::Error::other(msg)
    }

    fn open_current(&mut self) -> io::Result<()> {
        let path = self.partial_path(self.index);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| {
                self.fail(CollectionError::Io {
                    path: parent.into(),
                    source: e,
                })
            })?;
        }
        let file = File::create(&path).map_err(|e| {
            self.fail(CollectionError::Io {
                path: path.clone(),
                source: e,
            })
        })?;
        self.partial.push(path);
        self.current = Some((
            BufWriter::with_capacity(1 << 20, file),
            blake3::Hasher::new(),
            0,
        ));
        Ok(())
    }

    /// Closes the current file if it is complete: verify its hash, then rename it to its name.
    fn close_if_complete(&mut self) -> io::Result<()> {
        let entry = &self.files[self.index];
        let Some((_, _, written)) = &self.current else {
            return Ok(());
        };
        if *written < entry.size {
            return Ok(());
        }
        let (writer, hasher, _) = self.current.take().expect("checked above");
        let partial = self.partial_path(self.index);
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        if Hash32(*hasher.finalize().as_bytes()) != entry.hash {
            return Err(self.fail(CollectionError::FileHashMismatch {
                name: entry.name.clone(),
            }));
        }
        let final_path = self.out_dir.join(&entry.name);
        fs::rename(&partial, &final_path)?;
        self.partial.retain(|p| *p != partial);
        self.written.push(final_path);
        self.index += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<(), CollectionError> {
        // Zero-length files at the end never receive a write.
        while self.index < self.files.len() {
            if self.current.is_none() {
                self.open_current()
                    .map_err(|e| self.error.take().unwrap_or_else(|| io_err(self.out_dir)(e)))?;
            }
            self.close_if_complete()
                .map_err(|e| self.error.take().unwrap_or_else(|| io_err(self.out_dir)(e)))?;
        }
        Ok(())
    }

    fn discard(&mut self) {
        self.current = None;
        for path in self.partial.iter().chain(&self.written) {
            let _ = fs::remove_file(path);
        }
    }
}

impl Write for FileSplitter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            if self.index >= self.files.len() {
                return Err(io::Error::other("payload longer than its files"));
            }
            if self.current.is_none() {
                self.open_current()?;
            }
            let entry_size = self.files[self.index].size;
            let (writer, hasher, written) = self.current.as_mut().expect("opened above");
            let take = rest.len().min((entry_size - *written) as usize);
            writer.write_all(&rest[..take])?;
            hasher.update(&rest[..take]);
            *written += take as u64;
            rest = &rest[take..];
            self.close_if_complete()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_and_decode_locally() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().join("s"), 1 << 30).unwrap();
        let specs: [(&str, usize); 4] = [
            ("a.bin", 100_000),
            ("empty", 0),
            ("sub/b.bin", 30_013),
            ("c.json", 4321),
        ];
        let mut files = Vec::new();
        for (name, len) in specs {
            let path = dir.path().join(name.replace('/', "_"));
            fs::write(
                &path,
                (0..len).map(|i| (i * 13 % 256) as u8).collect::<Vec<_>>(),
            )
            .unwrap();
            files.push(InputFile {
                path,
                name: name.into(),
                role: FileRole::Raw,
            });
        }
        let params = ErasureParams::new(4, 6, 1024).unwrap();
        let manifest = publish(&store, CollectionKind::Raw, "t", &files, params).unwrap();
        let out = dir.path().join("out");
        decode_to_dir(&store, &manifest, &out).unwrap();
        for f in &files {
            assert_eq!(
                fs::read(out.join(&f.name)).unwrap(),
                fs::read(&f.path).unwrap(),
                "{}",
                f.name
            );
        }
        // Pieces were hashed while they were encoded; what the store holds must equal a fresh hash of each piece.
        for piece in &manifest.erasure.pieces {
            let bytes = fs::read(store.data_path(piece.0)).unwrap();
            let (hash, outboard) = crate::bao::outboard_of(&bytes);
            assert_eq!(hash, piece.0);
            assert_eq!(fs::read(store.outboard_path(piece.0)).unwrap(), outboard);
            assert_eq!(store.get(*piece).unwrap(), bytes);
        }
        // Without two originals, recovery pieces are used.
        store.remove(manifest.erasure.pieces[0]).unwrap();
        store.remove(manifest.erasure.pieces[2]).unwrap();
        let out2 = dir.path().join("out2");
        decode_to_dir(&store, &manifest, &out2).unwrap();
        for f in &files {
            assert_eq!(
                fs::read(out2.join(&f.name)).unwrap(),
                fs::read(&f.path).unwrap(),
                "{}",
                f.name
            );
        }
        store.remove(manifest.erasure.pieces[1]).unwrap();
        assert!(matches!(
            decode_to_dir(&store, &manifest, &dir.path().join("out3")),
            Err(CollectionError::NotEnoughPieces { needed: 4, have: 3 })
        ));
    }
}
