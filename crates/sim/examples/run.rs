//! The simulator without the CLI's tensor and network dependencies, for scaling measurements in release mode:
//! `cargo run --release -p commonweight-sim --example run -- SCENARIO.toml SEED [NODES] [ROUNDS]`.
//! It runs `sim::run` exactly as `commonweight sim` does and prints the summary as JSON.

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: run SCENARIO.toml SEED [NODES] [ROUNDS]");
        std::process::exit(2);
    }
    let text = std::fs::read_to_string(&args[1]).expect("reading the scenario file");
    let mut scenario = sim::Scenario::from_toml(&text).expect("a valid scenario");
    let seed: u64 = args[2].parse().expect("SEED is a number");
    if let Some(nodes) = args.get(3) {
        scenario.nodes = nodes.parse().expect("NODES is a number");
    }
    if let Some(rounds) = args.get(4) {
        scenario.rounds = rounds.parse().expect("ROUNDS is a number");
    }
    scenario
        .validate()
        .expect("a valid scenario after overrides");
    let started = Instant::now();
    match sim::run(&scenario, seed) {
        Ok(summary) => {
            let mut value = serde_json::to_value(&summary).expect("summary serializes");
            value["wall_s"] = serde_json::json!(started.elapsed().as_secs_f64());
            println!("{}", serde_json::to_string_pretty(&value).expect("json"));
        }
        Err(failure) => {
            println!("{failure}");
            std::process::exit(1);
        }
    }
}
