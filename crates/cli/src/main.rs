//! The `commonweight` command line: one binary for every role and tool.

mod cmd_attacks;
mod cmd_bench;
mod cmd_data;
mod cmd_experiment;
mod cmd_generate;
mod cmd_ledger;
mod cmd_node;
mod cmd_peers;
mod cmd_run;
mod cmd_sim;
mod cmd_store;
mod cmd_swarm;
mod cmd_train;
mod data_dir;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "commonweight",
    version,
    about = "Train one model together, with no one in charge."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print where this node keeps its state.
    Home(data_dir::DataDirArgs),
    /// Train a model on text and write HF-layout checkpoints.
    Train(cmd_train::TrainArgs),
    /// Sample text from a checkpoint.
    Generate(cmd_generate::GenerateArgs),
    /// Benchmarks against reference implementations.
    #[command(subcommand)]
    Bench(cmd_bench::BenchCommand),
    /// The ownership ledger: balances, history, verify, transfer, model.
    Ledger(cmd_ledger::LedgerArgs),
    /// Research experiments (`experiment sync`: low-communication training vs data-parallel).
    #[command(subcommand)]
    Experiment(cmd_experiment::ExperimentCommand),
    /// Datasets as content-addressed, erasure-coded collections.
    Data(cmd_data::DataArgs),
    /// The local content-addressed store.
    Store(cmd_store::StoreArgs),
    /// Run a node until Ctrl-C or SIGTERM.
    Node(cmd_node::NodeArgs),
    /// List the peers of a running node.
    Peers(cmd_peers::PeersArgs),
    /// Run the deterministic whole-network simulator.
    Sim(cmd_sim::SimArgs),
    /// Training runs: `run init` writes a run's genesis.
    #[command(subcommand)]
    Run(cmd_run::RunCommand),
    /// Start N node processes on 127.0.0.1 that train one model together, and report.
    Swarm(cmd_swarm::SwarmArgs),
}

fn main() {
    if let Err(err) = run(Cli::parse()) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Home(args) => {
            println!("{}", args.resolve()?.display());
            Ok(())
        }
        Command::Train(args) => cmd_train::run(args),
        Command::Generate(args) => cmd_generate::run(args),
        Command::Bench(command) => cmd_bench::run(command),
        Command::Ledger(args) => cmd_ledger::run(args),
        Command::Experiment(command) => cmd_experiment::run(command),
        Command::Data(args) => cmd_data::run(args),
        Command::Store(args) => cmd_store::run(args),
        Command::Node(args) => cmd_node::run(args),
        Command::Peers(args) => cmd_peers::run(args),
        Command::Sim(args) => cmd_sim::run(args),
        Command::Run(command) => cmd_run::run(command),
        Command::Swarm(args) => cmd_swarm::run(args),
    }
}
