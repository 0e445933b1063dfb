//! The `commonweight` command line: one binary for every role and tool.

mod cmd_sim;
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
    /// Run the deterministic whole-network simulator.
    Sim(cmd_sim::SimArgs),
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
        Command::Sim(args) => cmd_sim::run(args),
    }
}
