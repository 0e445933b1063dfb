//! The `commonweight` command line: one binary for every role and tool.

mod cmd_node;
mod cmd_peers;
mod data_dir;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "commonweight", version, about = "Train one model together, with no one in charge.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print where this node keeps its state.
    Home(data_dir::DataDirArgs),
    /// Run a node until Ctrl-C or SIGTERM.
    Node(cmd_node::NodeArgs),
    /// List the peers of a running node.
    Peers(cmd_peers::PeersArgs),
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
        Command::Node(args) => cmd_node::run(args),
        Command::Peers(args) => cmd_peers::run(args),
    }
}
