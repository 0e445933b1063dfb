//! `commonweight data add|add-checkpoint|get|ls`: publish a dataset or a checkpoint as an erasure-coded collection,
//! fetch one back, list them.
//!
//! `data add` tokenizes the input with `data::prepare` (train and val token shards, `tokenizer.json`, `dataset.json`
//! in `<data-dir>/prepared/<name>`), then publishes that folder as a dataset collection.
//! `data get --bootstrap MULTIADDR` starts a short-lived node that joins through that address and fetches the pieces
//! from their DHT providers (`commonweight node --serve-store` nodes) in parallel; without it, `data get` fetches from
//! this node's store plus any `--from DIR` store directories (other stores on this machine), through the same
//! verified `PieceProvider` path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
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
        /// Tokenizer: "bytes" | "gpt2" | "bpe:N".
        #[arg(long)]
        tokenizer: String,
        /// Fraction of documents held out for validation.
        #[arg(long, default_value_t = 0.1)]
        val_fraction: f64,
        /// Seed for the train/val split (and BPE training).
        #[arg(long, default_value_t = 0)]
        seed: u64,
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
    /// Publish a checkpoint folder (model.safetensors, config.json, tokenizer.json, ...) as an erasure-coded
    /// checkpoint collection, and print its root CID. Peers fetch it with `data get CID --bootstrap`.
    AddCheckpoint {
        path: PathBuf,
        /// The training step the checkpoint was taken at.
        #[arg(long, default_value_t = 0)]
        step: u64,
        /// Pieces needed to decode.
        #[arg(long, default_value_t = ERASURE_DATA_PIECES_DEFAULT)]
        k: u16,
        /// Pieces in all.
        #[arg(long, default_value_t = ERASURE_TOTAL_PIECES_DEFAULT)]
        n: u16,
        /// Reed-Solomon shard size (a multiple of 64); default: fitted to the payload.
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
        /// Fetch from peers over the network, joining through this peer (repeatable).
        #[arg(long, value_name = "MULTIADDR")]
        bootstrap: Vec<String>,
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
            val_fraction,
            seed,
            k,
            n,
            shard_bytes,
            dir,
        } => {
            let prep = Prep {
                tokenizer,
                val_fraction,
                seed,
            };
            add(&dir.resolve()?, &path, &prep, (k, n, shard_bytes))
        }
        DataCommand::AddCheckpoint {
            path,
            step,
            k,
            n,
            shard_bytes,
            dir,
        } => add_checkpoint(&dir.resolve()?, &path, step, (k, n, shard_bytes)),
        DataCommand::Get {
            cid,
            out,
            from,
            bootstrap,
            dir,
        } => match bootstrap.is_empty() {
            true => get(&dir.resolve()?, &cid, &out, &from),
            false => get_from_peers(&dir.resolve()?, &cid, &out, bootstrap),
        },
        DataCommand::Ls { dir } => ls(&dir.resolve()?),
    }
}

struct Prep {
    tokenizer: String,
    val_fraction: f64,
    seed: u64,
}

fn add(
    data_dir: &Path,
    path: &Path,
    prep: &Prep,
    (k, n, shard_bytes): (u16, u16, Option<u32>),
) -> Result<()> {
    let spec: data::TokenizerSpec = prep
        .tokenizer
        .parse()
        .with_context(|| format!("bad --tokenizer {:?}", prep.tokenizer))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("dataset")
        .to_string();
    let prepared_dir = data_dir.join("prepared").join(&name);
    let prepared = data::prepare(
        &[path.to_path_buf()],
        spec,
        &prepared_dir,
        prep.val_fraction,
        prep.seed,
    )
    .with_context(|| format!("preparing {}", path.display()))?;
    let m = &prepared.manifest;
    let files = node::run_fetch::dataset_files(&prepared);
    let kind = node::run_fetch::dataset_kind(m);
    eprintln!(
        "{} train + {} val tokens (vocab {})",
        m.train.tokens, m.val.tokens, m.vocab_size
    );
    publish_files(data_dir, kind, &name, &files, (k, n, shard_bytes))
}

/// `data add-checkpoint`: every file of the checkpoint folder, with the model hash of its parameters.
fn add_checkpoint(
    data_dir: &Path,
    path: &Path,
    step: u64,
    coding: (u16, u16, Option<u32>),
) -> Result<()> {
    let (_, params) = model::checkpoint::load_params(path)
        .with_context(|| format!("reading the checkpoint in {}", path.display()))?;
    let model_hash = types::Hash32::of_f32s(&params);
    drop(params);
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).with_context(|| format!("listing {}", path.display()))? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let role = match name.as_str() {
            "model.safetensors" => FileRole::TensorChunk,
            "config.json" => FileRole::Config,
            "tokenizer.json" => FileRole::Tokenizer,
            _ => FileRole::Raw,
        };
        files.push(InputFile {
            path: entry.path(),
            name,
            role,
        });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("checkpoint")
        .to_string();
    eprintln!("checkpoint at step {step}, model {}", model_hash.to_hex());
    let kind = CollectionKind::Checkpoint { step, model_hash };
    publish_files(data_dir, kind, &name, &files, coding)
}

/// Codes `files` k-of-n into this node's store as one collection and prints its root CID.
fn publish_files(
    data_dir: &Path,
    kind: CollectionKind,
    name: &str,
    files: &[InputFile],
    (k, n, shard_bytes): (u16, u16, Option<u32>),
) -> Result<()> {
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
    let manifest = collection::publish(&store, kind, name, files, params)?;
    eprintln!(
        "{} files, {} bytes, coded {}-of-{} into pieces of {} bytes",
        files.len(),
        total,
        k,
        n,
        manifest.erasure.piece_bytes
    );
    println!("{}", manifest.cid());
    Ok(())
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
    print_report(&manifest, &report, out);
    println!("{root}");
    Ok(())
}

fn get_from_peers(data_dir: &Path, cid: &str, out: &Path, bootstrap: Vec<String>) -> Result<()> {
    let root: Cid = cid.parse().with_context(|| format!("bad CID {cid:?}"))?;
    let store = Arc::new(open_store(data_dir)?);
    let mut net = node::shell::default_net_config();
    net.bootstrap = bootstrap;
    let started = std::time::Instant::now();
    let (manifest, report) = node::storage::get_collection_ephemeral(store, net, root, out)
        .with_context(|| format!("fetching {root} from peers"))?;
    print_report(&manifest, &report, out);
    let providers: std::collections::BTreeSet<PeerId> =
        report.fetched.iter().map(|(_, p)| *p).collect();
    eprintln!(
        "fetched from {} providers in {:.2} s",
        providers.len(),
        started.elapsed().as_secs_f64()
    );
    println!("{root}");
    Ok(())
}

fn print_report(manifest: &store::Manifest, report: &fetch::FetchReport, out: &Path) {
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
