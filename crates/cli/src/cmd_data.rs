//! `commonweight data add|get|ls`: publish a dataset as an erasure-coded collection, fetch one back, list them.
//!
//! `data add` stores the input files as they are (raw bytes, not tokenized): the tokenizing path through
//! `data::prepare` is written but was not compiled in time (see the store report). The tokenizer spec is recorded in
//! the manifest.
//!
//! Until the node runs storage over `net`, `data get` fetches from this node's store plus any `--from DIR` store
//! directories (other nodes' stores on this machine), through the same verified `PieceProvider` path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use store::collection::{self, InputFile};
use store::erasure::ErasureParams;
use store::fetch::{self, ProviderLookup};
use store::{Cid, CollectionKind, FileRole, LocalProvider, LocalStore, PieceProvider};
use types::limits::store::{
    ERASURE_DATA_PIECES_DEFAULT, ERASURE_TOTAL_PIECES_DEFAULT, QUOTA_BYTES_DEFAULT,
};
use types::PeerId;

use crate::data_dir::DataDirArgs;

#[derive(clap::Args, Debug)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(clap::Subcommand, Debug)]
enum DataCommand {
    /// Ingest a file or folder as a dataset collection; prints its root CID.
    Add {
        path: PathBuf,
        /// Tokenizer spec recorded in the manifest: "bytes" | "gpt2" | "bpe:N".
        #[arg(long)]
        tokenizer: String,
        /// Pieces needed to decode.
        #[arg(long, default_value_t = ERASURE_DATA_PIECES_DEFAULT)]
        k: u16,
        /// Pieces in all.
        #[arg(long, default_value_t = ERASURE_TOTAL_PIECES_DEFAULT)]
        n: u16,
        /// Reed-Solomon shard size (a multiple of 64); default: fitted to the payload, at most
        /// ERASURE_SHARD_BYTES_DEFAULT.
        #[arg(long)]
        shard_bytes: Option<u32>,
        #[command(flatten)]
        dir: DataDirArgs,
    },
    /// Fetch a collection by root CID, verify it, and decode its files into DIR.
    Get {
        cid: String,
        #[arg(long)]
        out: PathBuf,
        /// Another node's data directory to fetch from (repeatable).
        #[arg(long = "from", value_name = "DIR")]
        from: Vec<PathBuf>,
        #[command(flatten)]
        dir: DataDirArgs,
    },
    /// List the collections this node published or fetched.
    Ls {
        #[command(flatten)]
        dir: DataDirArgs,
    },
}

pub fn open_store(data_dir: &Path) -> Result<LocalStore> {
    let path = data_dir.join("store");
    LocalStore::open(&path, QUOTA_BYTES_DEFAULT)
        .with_context(|| format!("opening store at {}", path.display()))
}

pub fn run(args: DataArgs) -> Result<()> {
    match args.command {
        DataCommand::Add {
            path,
            tokenizer,
            k,
            n,
            shard_bytes,
            dir,
        } => add(&dir.resolve()?, &path, &tokenizer, k, n, shard_bytes),
        DataCommand::Get {
            cid,
            out,
            from,
            dir,
        } => get(&dir.resolve()?, &cid, &out, &from),
        DataCommand::Ls { dir } => ls(&dir.resolve()?),
    }
}

fn add(
    data_dir: &Path,
    path: &Path,
    tokenizer: &str,
    k: u16,
    n: u16,
    shard_bytes: Option<u32>,
) -> Result<()> {
    let files = input_files(path)?;
    if files.is_empty() {
        bail!("{} holds no files", path.display());
    }
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(&f.path).map(|m| m.len()).unwrap_or(0))
        .sum();
    let params = match shard_bytes {
        Some(shard) => ErasureParams::new(k, n, shard),
        None => ErasureParams::for_payload(k, n, total),
    }
    .context("bad --k/--n/--shard-bytes")?;
    let store = open_store(data_dir)?;
    let stats = vec![
        ("files".to_string(), files.len() as u64),
        ("bytes".to_string(), total),
    ];
    let kind = CollectionKind::Dataset {
        tokenizer: tokenizer.to_string(),
        stats,
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("dataset")
        .to_string();
    let manifest = collection::publish(&store, kind, &name, &files, params)?;
    eprintln!(
        "{} files, {} bytes, coded {}-of-{} into pieces of {} bytes (files stored as raw bytes, not tokenized)",
        files.len(),
        total,
        k,
        n,
        manifest.erasure.piece_bytes
    );
    println!("{}", manifest.cid());
    Ok(())
}

/// The files under `path` (or `path` itself), sorted by relative name so the same folder gives the same manifest.
fn input_files(path: &Path) -> Result<Vec<InputFile>> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.is_file() {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .context("file name is not UTF-8")?
            .to_string();
        let role = role_of(&name);
        return Ok(vec![InputFile {
            path: path.to_path_buf(),
            name,
            role,
        }]);
    }
    let mut out = Vec::new();
    walk(path, path, &mut out)?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<InputFile>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            walk(root, &path, out)?;
        } else if path.is_file() {
            let rel = path.strip_prefix(root).expect("under root");
            let name = rel
                .to_str()
                .with_context(|| format!("{} is not UTF-8", rel.display()))?
                .replace('\\', "/");
            let role = role_of(&name);
            out.push(InputFile { path, name, role });
        }
    }
    Ok(())
}

fn role_of(name: &str) -> FileRole {
    if name.ends_with("tokenizer.json") {
        FileRole::Tokenizer
    } else {
        FileRole::Raw
    }
}

/// This node's store and each `--from` store, as providers of everything they hold.
struct LocalDirs {
    providers: Vec<Arc<LocalProvider>>,
}

impl ProviderLookup for LocalDirs {
    fn providers(&self, blob: Cid) -> Vec<Arc<dyn PieceProvider>> {
        self.providers
            .iter()
            .filter(|p| p.store().contains(blob).unwrap_or(false))
            .map(|p| p.clone() as Arc<dyn PieceProvider>)
            .collect()
    }
}

fn get(data_dir: &Path, cid: &str, out: &Path, from: &[PathBuf]) -> Result<()> {
    let root: Cid = cid.parse().with_context(|| format!("bad CID {cid:?}"))?;
    let store = open_store(data_dir)?;
    let mut providers = Vec::new();
    for (i, dir) in from.iter().enumerate() {
        let peer = LocalStore::open(dir.join("store"), QUOTA_BYTES_DEFAULT)
            .with_context(|| format!("opening peer store in {}", dir.display()))?;
        providers.push(Arc::new(LocalProvider::new(
            PeerId([i as u8 + 1; 32]),
            Arc::new(peer),
        )));
    }
    let lookup = LocalDirs { providers };
    let (manifest, report) = fetch::get_collection(&store, root, &lookup, out, 4)?;
    for failure in &report.failures {
        eprintln!(
            "provider {} failed for {}: {}",
            &failure.peer.to_string()[..12],
            failure.blob,
            failure.error
        );
    }
    eprintln!(
        "{} files, {} bytes decoded into {} ({} pieces fetched, {} already held)",
        manifest.files.len(),
        manifest.payload_bytes(),
        out.display(),
        report.fetched.len(),
        report.already_held.len()
    );
    println!("{root}");
    Ok(())
}

fn ls(data_dir: &Path) -> Result<()> {
    let store = open_store(data_dir)?;
    for (root, label) in store.collections()? {
        match collection::load_manifest(&store, root) {
            Ok(m) => {
                let held = m
                    .erasure
                    .pieces
                    .iter()
                    .filter(|p| store.contains(**p).unwrap_or(false))
                    .count();
                let kind = match &m.kind {
                    CollectionKind::Dataset { tokenizer, .. } => format!("dataset({tokenizer})"),
                    CollectionKind::Checkpoint { step, .. } => format!("checkpoint(step {step})"),
                    CollectionKind::Raw => "raw".to_string(),
                };
                println!(
                    "{root}  {label}  {kind}  {} files  {} bytes  {}-of-{}  {held} pieces held",
                    m.files.len(),
                    m.payload_bytes(),
                    m.erasure.data_pieces,
                    m.erasure.total_pieces
                );
            }
            Err(e) => println!("{root}  {label}  (manifest unavailable: {e})"),
        }
    }
    Ok(())
}
