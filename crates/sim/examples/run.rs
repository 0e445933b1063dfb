//! The simulator without the CLI's tensor and network dependencies, for scaling measurements in release mode:
//! `cargo run --release -p commonweight-sim --example run -- SCENARIO.toml SEED [NODES] [ROUNDS]`.
//! It runs `sim::run` exactly as `commonweight sim` does and prints the summary as JSON.

use std::time::Instant;

fn main() {
    if let Err(message) = run() {
        eprintln!("error: {message}");
        std::process::exit(2);
    }
}

fn number<T: std::str::FromStr>(
    args: &[String],
    index: usize,
    name: &str,
) -> Result<Option<T>, String> {
    args.get(index)
        .map(|v| {
            v.parse()
                .map_err(|_| format!("{name} must be a number, got {v:?}"))
        })
        .transpose()
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: run SCENARIO.toml SEED [NODES] [ROUNDS]".into());
    }
    let text =
        std::fs::read_to_string(&args[1]).map_err(|e| format!("reading {}: {e}", args[1]))?;
    let mut scenario =
        sim::Scenario::from_toml(&text).map_err(|e| format!("scenario {}: {e}", args[1]))?;
    let seed: u64 = number(&args, 2, "SEED")?.expect("checked length");
    if let Some(nodes) = number(&args, 3, "NODES")? {
        scenario.nodes = nodes;
    }
    if let Some(rounds) = number(&args, 4, "ROUNDS")? {
        scenario.rounds = rounds;
    }
    scenario
        .validate()
        .map_err(|e| format!("scenario after overrides: {e}"))?;
    let started = Instant::now();
    match sim::run(&scenario, seed) {
        Ok(summary) => {
            let mut value = serde_json::to_value(&summary).map_err(|e| e.to_string())?;
            value["wall_s"] = serde_json::json!(started.elapsed().as_secs_f64());
            println!(
                "{}",
                serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?
            );
            Ok(())
        }
        Err(failure) => {
            println!("{failure}");
            std::process::exit(1);
        }
    }
}
