//! `commonweight run init --config run.toml [--out run.json]`: creates a run's genesis (model preset,
//! dataset, codec, H, committee, phase limits, founders) and writes the run file nodes join with. It publishes
//! the dataset into the data dir's store as a collection and names its root CID in the run file, so a node that
//! joins with only the run id fetches the dataset from the run's members.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum RunCommand {
    /// Write a run file (genesis + training spec) from a run.toml.
    Init(InitArgs),
    /// Print the peer id of a data dir's identity (creating it if needed), to list it as a founder.
    PeerId(crate::data_dir::DataDirArgs),
    /// Check a fraud proof a node wrote (`RUN_DIR/fraud-proofs/*.bin`) by re-executing its one step with this
    /// run's model and data; exits non-zero when it proves nothing.
    CheckProof(CheckProofArgs),
}

#[derive(Args, Debug)]
pub struct CheckProofArgs {
    /// The run file the proof's round belongs to (its dataset folder must be readable here).
    #[arg(long)]
    pub run: PathBuf,
    /// libtorch threads for the re-executed step (the same count as the trainer's checks bit for bit).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// The proof file.
    pub proof: PathBuf,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// The run config (TOML). Fields: see `node::runspec::RunConfig` and the README.
    #[arg(long)]
    pub config: PathBuf,
    /// Where to write the run file.
    #[arg(long, default_value = "run.json")]
    pub out: PathBuf,
    /// The data dir whose store takes the dataset collection.
    #[command(flatten)]
    pub data_dir: crate::data_dir::DataDirArgs,
}

pub fn run(command: RunCommand) -> Result<()> {
    match command {
        RunCommand::Init(args) => init(&args),
        RunCommand::PeerId(args) => {
            println!(
                "{}",
                node::run_shell::peer_id_of_data_dir(&args.resolve()?)?
            );
            Ok(())
        }
        RunCommand::CheckProof(args) => check_proof(&args),
    }
}

fn check_proof(args: &CheckProofArgs) -> Result<()> {
    let path = &args.proof;
    let proof = read_fraud_proof(path)?;
    let run = node::Run::load(&args.run)?;
    if proof.body.commitment.commitment.run != run.run_id {
        anyhow::bail!("{} is about another run", path.display());
    }
    let work = node::work::Workload::open(&run).context("opening the run's model and data")?;
    let mut executor = node::verifier_model::WorkloadStep::new(&work, args.threads.max(1));
    let finding = proof
        .check(&mut executor)
        .with_context(|| format!("{} does not prove fraud", path.display()))?;
    print_finding(&proof, &finding);
    Ok(())
}

/// Reads and decodes an untrusted fraud proof file, bounded by the wire limit before reading.
pub(crate) fn read_fraud_proof(path: &Path) -> Result<verify::FraudProof> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    let max = types::limits::verify::FRAUD_PROOF_BYTES_MAX as u64;
    if len > max {
        anyhow::bail!(
            "{} holds {len} bytes; a fraud proof is at most {max}",
            path.display()
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    verify::FraudProof::decode(&bytes)
        .with_context(|| format!("{} is not a fraud proof", path.display()))
}

/// The one line a checked proof prints.
pub(crate) fn print_finding(proof: &verify::FraudProof, finding: &verify::FraudFinding) {
    println!(
        "fraud proven: peer {} round {} step {} ({}), proof {}",
        finding.peer,
        proof.body.commitment.commitment.round.0,
        finding.step,
        if finding.exact {
            "bit-exact"
        } else {
            "by tolerance"
        },
        finding.proof_hash.to_hex()
    );
}

fn init(args: &InitArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let mut config: node::RunConfig = toml::from_str(&text)
        .with_context(|| format!("{} is not a valid run config", args.config.display()))?;
    let base = args.config.parent().unwrap_or(Path::new("."));
    if config.data.is_relative() {
        config.data = base.join(&config.data);
    }
    let out_dir = args
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    config.data = prepared_dataset(&config.data, &out_dir.join("dataset"))?;
    let store = crate::cmd_data::open_store(&args.data_dir.resolve()?)?;
    let spec = node::runspec::init(&config, Some(&store)).context("creating the genesis")?;
    node::Run::write_spec(&spec, &args.out)?;
    let run = node::Run::from_spec(spec)?;
    println!("run id {}", run.run_id.0.to_hex());
    if let Some(cid) = &run.spec.dataset_collection {
        println!("dataset collection {cid}");
    }
    println!(
        "{}: preset {}, codec {}, H {}, {} rounds, {} founders, committee {}",
        run.genesis.run_name,
        run.genesis.model_preset,
        run.spec.codec,
        run.genesis.inner_steps,
        run.spec.rounds,
        run.genesis.founders.len(),
        run.genesis.committee_size
    );
    println!("wrote {}", args.out.display());
    Ok(())
}

/// A prepared dataset folder as is, or raw text prepared with the byte tokenizer into `into`.
pub fn prepared_dataset(data: &Path, into: &Path) -> Result<PathBuf> {
    if data.join("dataset.json").is_file() {
        return Ok(data.to_owned());
    }
    let spec = data::TokenizerSpec::parse("bytes")?;
    let prepared = data::prepare(&[data.to_owned()], spec, into, 0.05, 0)
        .with_context(|| format!("preparing {}", data.display()))?;
    Ok(prepared.dir)
}
