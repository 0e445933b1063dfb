//! `commonweight sim`: run the deterministic simulator and print its summary (or the failing seed).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

#[derive(Args)]
pub struct SimArgs {
    /// Scenario file (TOML); without it the documented default scenario (`sim::Scenario::default()`) runs.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Seed: the same seed and scenario replay the same run exactly.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Override the scenario's founding node count.
    #[arg(long)]
    nodes: Option<usize>,
    /// Override the scenario's round count.
    #[arg(long)]
    rounds: Option<u64>,
    /// Override churn: share of live nodes (in thousandths) that leave, and as many that join, each round.
    #[arg(long)]
    churn_permille: Option<u32>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: SimArgs) -> Result<()> {
    let mut scenario = match &args.scenario {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading scenario {}", path.display()))?;
            sim::Scenario::from_toml(&text)
                .with_context(|| format!("scenario {}", path.display()))?
        }
        None => sim::Scenario::default(),
    };
    scenario.nodes = args.nodes.unwrap_or(scenario.nodes);
    scenario.rounds = args.rounds.unwrap_or(scenario.rounds);
    scenario.churn_permille = args.churn_permille.unwrap_or(scenario.churn_permille);
    scenario
        .validate()
        .context("scenario after command-line overrides")?;
    let started = Instant::now();
    let summary = match sim::run(&scenario, args.seed) {
        Ok(summary) => summary,
        Err(failure) => {
            println!("{failure}");
            bail!(
                "simulation failed; rerun with --seed {} to replay it",
                failure.seed
            );
        }
    };
    let wall_s = started.elapsed().as_secs_f64();
    if args.json {
        let mut value = serde_json::to_value(&summary)?;
        value["wall_s"] = serde_json::json!(wall_s);
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    print_summary(&summary, wall_s);
    Ok(())
}

fn print_summary(s: &sim::Summary, wall_s: f64) {
    println!(
        "seed {}: {} rounds completed in {:.1} s virtual ({:.0} ms per round), {:.1} s wall",
        s.seed,
        s.rounds_completed,
        s.virtual_ms as f64 / 1000.0,
        s.virtual_ms_per_round,
        wall_s
    );
    println!(
        "nodes: {} at start, {} ever, {} online at end, {} Byzantine",
        s.nodes_start, s.nodes_ever, s.nodes_online_end, s.byzantine_nodes
    );
    println!(
        "per node per round ({} steady nodes): {:.0} messages (max {:.0}), {:.0} bytes (max {:.0})",
        s.steady_nodes,
        s.messages_per_node_per_round_mean,
        s.messages_per_node_per_round_max,
        s.bytes_per_node_per_round_mean,
        s.bytes_per_node_per_round_max
    );
    println!(
        "memory per node (estimate): {:.0} bytes mean, {} max",
        s.memory_per_node_bytes_mean, s.memory_per_node_bytes_max
    );
    println!(
        "global loss: {:.4} -> {:.4}",
        s.global_loss_start, s.global_loss_end
    );
    for c in &s.checkers {
        println!(
            "checker {:<15} {} ({} checks)",
            c.name,
            if c.passed { "held" } else { "FAILED" },
            c.checks
        );
    }
    let counts: Vec<String> = s.counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("events: {}", counts.join(" "));
    println!("trace digest: {}", s.trace_digest);
}
