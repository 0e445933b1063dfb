//! `commonweight ledger ...`: read, verify, transfer and export the ownership ledger.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ed25519_dalek::SigningKey;
use ledger::{
    export, verify_chain, Effect, Genesis, NoFraudProofs, Replica, Sequencer, SignedTx, Store,
    TxBody,
};
use types::{Hash32, PeerId, RunId};

use crate::data_dir::DataDirArgs;

#[derive(clap::Args, Debug)]
pub struct LedgerArgs {
    #[command(flatten)]
    pub data_dir: DataDirArgs,
    #[command(subcommand)]
    pub command: LedgerCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum LedgerCommand {
    /// Create a ledger. Without --validators/--verifiers this node's key is the only validator
    /// and verifier (the local sequencer).
    Init {
        /// Run id (64 hex characters).
        #[arg(long)]
        run: String,
        /// Comma-separated validator public keys (hex).
        #[arg(long, value_delimiter = ',')]
        validators: Vec<String>,
        /// Comma-separated verifier public keys (hex).
        #[arg(long, value_delimiter = ',')]
        verifiers: Vec<String>,
        /// Distinct accepting verifiers needed to mint.
        #[arg(long, default_value_t = 1)]
        quorum: u32,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Share balances of every account.
    Balances,
    /// Every transaction and what it did, oldest first.
    History {
        /// Only transactions signed by, or affecting, this peer (hex public key).
        #[arg(long)]
        peer: Option<String>,
    },
    /// Replay from genesis: check every signature, certificate, link and state root.
    Verify,
    /// Transfer shares from this node's key to another peer.
    Transfer {
        #[arg(long)]
        to: String,
        #[arg(long)]
        amount: u64,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Who owns how much of checkpoint CID.
    Model {
        cid: String,
        /// Write a signed ownership statement (docs/ledger-export.md) to this file.
        #[arg(long, value_name = "FILE")]
        export: Option<PathBuf>,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Check a signed ownership statement file.
    CheckExport { file: PathBuf },
    /// Sign a verdict on PEER's work in ROUND with this node's (verifier) key and submit it.
    RecordVerdict {
        #[arg(long)]
        peer: String,
        #[arg(long)]
        round: u64,
        #[arg(long)]
        tokens: u64,
        /// Score weight in parts per million (1000000 = full score).
        #[arg(long, default_value_t = 1_000_000)]
        score_ppm: u32,
        /// Reject the work with this reason instead of accepting it.
        #[arg(long)]
        reject: Option<String>,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Register checkpoint CID for ROUND (verifiers only), freezing its ownership table.
    RegisterCheckpoint {
        cid: String,
        #[arg(long)]
        round: u64,
        #[command(flatten)]
        key: KeyArgs,
    },
}

#[derive(clap::Args, Debug)]
pub struct KeyArgs {
    /// This node's ed25519 secret key (64 hex characters). Default: DATA_DIR/identity.key.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
}

pub fn run(args: LedgerArgs) -> Result<()> {
    let home = args.data_dir.resolve()?;
    let dir = home.join("ledger");
    match args.command {
        LedgerCommand::Init {
            run,
            validators,
            verifiers,
            quorum,
            key,
        } => init(&home, &dir, &run, &validators, &verifiers, quorum, &key),
        LedgerCommand::Balances => balances(&dir),
        LedgerCommand::History { peer } => history(&dir, peer.as_deref()),
        LedgerCommand::Verify => verify(&dir),
        LedgerCommand::Transfer { to, amount, key } => transfer(&home, &dir, &to, amount, &key),
        LedgerCommand::Model { cid, export, key } => {
            model(&home, &dir, &cid, export.as_deref(), &key)
        }
        LedgerCommand::CheckExport { file } => check_export(&file),
        LedgerCommand::RecordVerdict {
            peer,
            round,
            tokens,
            score_ppm,
            reject,
            key,
        } => {
            let signing = load_key(&home, &key, false)?;
            let accepted = reject.is_none();
            let verdict = ledger::Verdict::sign(
                &signing,
                open_replica(&dir)?.state().run,
                types::RoundNumber(round),
                parse_peer(&peer)?,
                accepted,
                score_ppm,
                reject.as_deref().unwrap_or(""),
                tokens,
            );
            submit(
                &home,
                &dir,
                &key,
                TxBody::RecordVerdicts {
                    verdicts: vec![verdict],
                },
            )
        }
        LedgerCommand::RegisterCheckpoint { cid, round, key } => {
            let cid = Hash32::from_hex(&cid).context("CID must be 64 hex characters")?;
            let run = open_replica(&dir)?.state().run;
            submit(
                &home,
                &dir,
                &key,
                TxBody::RegisterCheckpoint {
                    run,
                    round: types::RoundNumber(round),
                    cid,
                },
            )
        }
    }
}

fn parse_peer(s: &str) -> Result<PeerId> {
    let hash = Hash32::from_hex(s.trim())
        .with_context(|| format!("{s:?} is not a peer id (64 hex characters)"))?;
    Ok(PeerId(hash.0))
}

fn key_path(home: &Path, key: &KeyArgs) -> PathBuf {
    key.key.clone().unwrap_or_else(|| home.join("identity.key"))
}

/// Reads the key file, or creates one from the OS's randomness if it is the default and missing.
fn load_key(home: &Path, key: &KeyArgs, create: bool) -> Result<SigningKey> {
    let path = key_path(home, key);
    if !path.exists() && create && key.key.is_none() {
        let mut secret = [0u8; 32];
        use std::io::Read;
        std::fs::File::open("/dev/urandom")?.read_exact(&mut secret)?;
        std::fs::create_dir_all(home)?;
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&path, hex).with_context(|| format!("writing {}", path.display()))?;
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading key file {}", path.display()))?;
    let secret = Hash32::from_hex(text.trim())
        .with_context(|| format!("key file {} must hold 64 hex characters", path.display()))?;
    Ok(SigningKey::from_bytes(&secret.0))
}

fn open_replica(dir: &Path) -> Result<Replica> {
    let store =
        Store::open(dir).with_context(|| format!("opening the ledger in {}", dir.display()))?;
    let genesis = store.genesis().clone();
    drop(store);
    Replica::open(dir, &genesis, Box::new(NoFraudProofs))
        .with_context(|| format!("replaying the ledger in {}", dir.display()))
}

fn init(
    home: &Path,
    dir: &Path,
    run: &str,
    validators: &[String],
    verifiers: &[String],
    quorum: u32,
    key: &KeyArgs,
) -> Result<()> {
    let me = ledger::peer_of(&load_key(home, key, true)?);
    let run = RunId(Hash32::from_hex(run).context("--run must be 64 hex characters")?);
    let parse_all = |list: &[String]| -> Result<Vec<PeerId>> {
        if list.is_empty() {
            return Ok(vec![me]);
        }
        list.iter().map(|s| parse_peer(s)).collect()
    };
    let genesis = Genesis {
        version: ledger::WIRE_VERSION,
        run,
        validators: parse_all(validators)?,
        verifiers: parse_all(verifiers)?,
        verifier_quorum: quorum,
        namespace: format!("commonweight-ledger-{}", &run.0.to_hex()[..16]),
    };
    genesis.check().context("invalid genesis")?;
    Store::create(dir, &genesis)
        .with_context(|| format!("creating the ledger in {}", dir.display()))?;
    println!("ledger {} created in {}", genesis.chain_id(), dir.display());
    println!("this node: {me}");
    Ok(())
}

fn balances(dir: &Path) -> Result<()> {
    let replica = open_replica(dir)?;
    let state = replica.state();
    let mut rows: Vec<_> = state
        .accounts
        .iter()
        .filter(|(_, a)| a.balance > 0)
        .collect();
    rows.sort_by(|a, b| b.1.balance.cmp(&a.1.balance).then(a.0.cmp(b.0)));
    println!(
        "height {}  total minted {}  total slashed {}",
        replica.height(),
        state.total_minted,
        state.total_slashed
    );
    println!("{:<64}  {:>16}", "peer", "shares");
    for (peer, account) in rows {
        println!("{peer}  {:>16}", account.balance);
    }
    Ok(())
}

fn describe(tx: &SignedTx) -> String {
    match &tx.body {
        TxBody::RecordVerdicts { verdicts } => format!("record {} verdict(s)", verdicts.len()),
        TxBody::Slash { proof } => format!("slash {} for round {}", proof.accused, proof.round.0),
        TxBody::Transfer { to, amount } => format!("transfer {amount} to {to}"),
        TxBody::RegisterCheckpoint { round, cid, .. } => {
            format!("register checkpoint {cid} (round {})", round.0)
        }
    }
}

fn touches(tx: &SignedTx, outcome: &ledger::Outcome, peer: &PeerId) -> bool {
    if tx.signer == *peer {
        return true;
    }
    match (&tx.body, outcome) {
        (TxBody::Transfer { to, .. }, _) => to == peer,
        (TxBody::RecordVerdicts { verdicts }, _) => verdicts
            .iter()
            .any(|v| v.peer == *peer || v.verifier == *peer),
        (TxBody::Slash { proof }, _) => proof.accused == *peer,
        (TxBody::RegisterCheckpoint { .. }, Ok(Effect::CheckpointRegistered { .. })) => false,
        _ => false,
    }
}

fn history(dir: &Path, peer: Option<&str>) -> Result<()> {
    let filter = peer.map(parse_peer).transpose()?;
    let replica = open_replica(dir)?;
    for record in replica.records()? {
        let block = ledger::Block::from_bytes(&record.block)?;
        for (i, (tx, outcome)) in block.txs.iter().zip(&record.outcomes).enumerate() {
            if filter.is_some_and(|p| !touches(tx, outcome, &p)) {
                continue;
            }
            let result = match outcome {
                Ok(effect) => format!("ok {effect:?}"),
                Err(rejection) => format!("REJECTED: {rejection}"),
            };
            println!(
                "{:>8}.{i:<3} {} nonce {}  {}  -> {result}",
                record.height,
                tx.signer,
                tx.nonce,
                describe(tx)
            );
        }
    }
    Ok(())
}

fn verify(dir: &Path) -> Result<()> {
    let store =
        Store::open(dir).with_context(|| format!("opening the ledger in {}", dir.display()))?;
    let started = std::time::Instant::now();
    let report = verify_chain(&store, &NoFraudProofs).context("LEDGER VERIFICATION FAILED")?;
    println!(
        "ok: {} blocks, {} transactions, {} finality proofs checked, state root {} ({:.3} s)",
        report.blocks,
        report.transactions,
        report.certificates,
        report.state_root,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn transfer(home: &Path, dir: &Path, to: &str, amount: u64, key: &KeyArgs) -> Result<()> {
    let to = parse_peer(to)?;
    submit(home, dir, key, TxBody::Transfer { to, amount })
}

/// Signs `body` with this node's key and orders it: directly through the local sequencer when
/// this node is the ledger's only validator, else into `DATA_DIR/ledger/outbox/` for the
/// running validator node's mempool.
fn submit(home: &Path, dir: &Path, key: &KeyArgs, body: TxBody) -> Result<()> {
    let key = load_key(home, key, false)?;
    let mut replica = open_replica(dir)?;
    let me = ledger::peer_of(&key);
    let chain = replica.genesis().chain_id();
    let tx = SignedTx::sign(&key, chain, replica.state().nonce(&me), body);
    // Refuse up front what the ledger would reject, rather than ordering a doomed transaction.
    let mut trial = replica.state().clone();
    if let Err(rejection) = trial.apply(&tx, replica.checker()) {
        bail!("{} rejected: {rejection}", describe(&tx));
    }
    let single_validator = replica.genesis().validators == [me];
    if !single_validator {
        let outbox = dir.join("outbox");
        std::fs::create_dir_all(&outbox)?;
        let path = outbox.join(format!("{}.tx", tx.id()));
        std::fs::write(&path, tx.to_bytes())?;
        println!(
            "signed transaction {} written to {}; a running validator node submits it",
            tx.id(),
            path.display()
        );
        return Ok(());
    }
    let mut sequencer = Sequencer::new(&mut replica, key)?;
    let height = sequencer.sequence(vec![tx.clone()])?;
    let record = replica
        .records()?
        .pop()
        .context("no record after sequencing")?;
    match &record.outcomes[0] {
        Ok(effect) => println!("ok at height {height}: {} -> {effect:?}", describe(&tx)),
        Err(rejection) => bail!("{} rejected: {rejection}", describe(&tx)),
    }
    Ok(())
}

fn model(
    home: &Path,
    dir: &Path,
    cid: &str,
    export_to: Option<&Path>,
    key: &KeyArgs,
) -> Result<()> {
    let cid = Hash32::from_hex(cid).context("CID must be 64 hex characters")?;
    let replica = open_replica(dir)?;
    let mut statement = export::statement(replica.state(), replica.height(), cid)?;
    println!(
        "checkpoint {cid} (round {}), {} shares",
        statement.round, statement.total_shares
    );
    for owner in &statement.owners {
        let percent = 100.0 * owner.shares as f64 / statement.total_shares.max(1) as f64;
        println!("{}  {:>16}  {percent:>7.3}%", owner.peer, owner.shares);
    }
    if let Some(path) = export_to {
        export::sign(&mut statement, &load_key(home, key, false)?)?;
        std::fs::write(path, serde_json::to_string_pretty(&statement)?)?;
        println!("signed statement written to {}", path.display());
    }
    Ok(())
}

fn check_export(file: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let statement = export::from_json(&text)?;
    let signers = export::verify_statement(&statement)?;
    println!(
        "ok: checkpoint {} with {} owners, signed by:",
        statement.checkpoint,
        statement.owners.len()
    );
    for signer in signers {
        println!("  {signer}");
    }
    Ok(())
}
