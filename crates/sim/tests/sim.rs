//! Simulator tests: the production round machines under drops, delays, crashes, churn, partitions and attackers.

use sim::{run, Scenario, Summary};

fn heavy() -> bool {
    std::env::var("COMMONWEIGHT_HEAVY_TESTS").is_ok_and(|v| v == "1")
}

fn checks(summary: &Summary, name: &str) -> u64 {
    summary
        .checkers
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.checks)
        .expect("checker reported")
}

fn count(summary: &Summary, name: &str) -> u64 {
    summary.counts.get(name).copied().unwrap_or(0)
}

/// Issue 6: 16 nodes, real round machines, seeded drops and delays, crash and restart. The agreement checker
/// compares every honest node's model hash after every round; the no-lost-update checker audits every proposer.
#[test]
fn sixteen_nodes_agree_every_round_through_drops_delays_and_crashes() {
    let scenario = Scenario {
        nodes: 16,
        committee_size: 16,
        rounds: 12,
        churn_permille: 0,
        crash_permille: 60,
        restart_after_ms: 3_000,
        corrupt_store_permille: 0,
        partition_every_rounds: 0,
        byzantine_permille: 0,
        link: sim::Link {
            loss_permille: 50,
            latency_extra_ms_mean: 80,
            ..sim::Link::default()
        },
        ..Scenario::default()
    };
    let summary = run(&scenario, 16).unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(summary.rounds_completed, 12);
    assert!(
        count(&summary, "crashes") >= 2 && count(&summary, "restarts") >= 1,
        "{:?}",
        summary.counts
    );
    // Every round, every other honest settler matched the first one's hash: at least 12 rounds x several nodes.
    assert!(
        checks(&summary, "agreement") >= 12 * 8,
        "agreement checks {}",
        checks(&summary, "agreement")
    );
    assert!(checks(&summary, "no_lost_update") >= 2 * 12);
    assert!(summary.global_loss_end < summary.global_loss_start / 10.0);
}

/// Issue 9: a 50-node scenario with churn, partitions and 20% Byzantine peers; every checker holds.
/// 100 seeds with COMMONWEIGHT_HEAVY_TESTS=1, 3 by default (each seed is a full run with all faults);
/// `SIM_SEED=<n>` replays one seed.
#[test]
fn fifty_nodes_with_churn_partitions_and_byzantine_peers_hold_every_checker() {
    let scenario = Scenario {
        nodes: 50,
        rounds: 8,
        partition_every_rounds: 3,
        ..Scenario::default()
    };
    assert_eq!(
        (scenario.byzantine_permille, scenario.churn_permille),
        (200, 50)
    );
    let seeds: Vec<u64> = match std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None if heavy() => (0..100).collect(),
        None => (0..3).collect(),
    };
    let mut partitions = 0;
    let mut attackers_offered = 0;
    let mut failures = Vec::new();
    for &seed in &seeds {
        let summary = match run(&scenario, seed) {
            Ok(summary) => summary,
            Err(failure) => {
                eprintln!("{failure}");
                failures.push(failure.to_string());
                continue;
            }
        };
        eprintln!(
            "seed {seed}: {} rounds in {} virtual ms",
            summary.rounds_completed, summary.virtual_ms
        );
        assert_eq!(summary.rounds_completed, 8);
        partitions += count(&summary, "partitions");
        attackers_offered += count(&summary, "byzantine_updates_offered");
    }
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed:\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n")
    );
    let runs = seeds.len() as u64;
    assert!(partitions >= runs, "every run sees a partition");
    assert!(attackers_offered > runs, "attackers were drawn as trainers");
}

/// A failure is replayed from its seed: the same seed gives the same run, a different seed a different one.
#[test]
fn same_seed_replays_the_same_run() {
    let scenario = Scenario {
        nodes: 30,
        rounds: 6,
        ..Scenario::default()
    };
    let a = run(&scenario, 7).unwrap_or_else(|failure| panic!("{failure}"));
    let b = run(&scenario, 7).unwrap_or_else(|failure| panic!("{failure}"));
    let c = run(&scenario, 8).unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(a.trace_digest, b.trace_digest);
    assert_eq!(a.counts, b.counts);
    assert_eq!(a.virtual_ms, b.virtual_ms);
    assert_ne!(a.trace_digest, c.trace_digest);
}

/// The checker self-test: with `--features inject-arrival-order-bug` nodes fold updates in arrival order, and a
/// checker must catch it within 100 seeds; rerunning the failing seed reproduces the failure exactly.
/// Run: `cargo test -p commonweight-sim --features inject-arrival-order-bug --test sim injected`
#[cfg(feature = "inject-arrival-order-bug")]
#[test]
fn injected_arrival_order_bug_is_caught_and_replayed() {
    let scenario = Scenario {
        nodes: 50,
        rounds: 8,
        ..Scenario::default()
    };
    let failure = (0..100)
        .find_map(|seed| run(&scenario, seed).err())
        .expect("a checker catches the arrival-order bug within 100 seeds");
    println!("{failure}");
    assert!(failure
        .to_string()
        .starts_with(&format!("SIM_SEED={}", failure.seed)));
    assert!(
        ["determinism", "agreement"].contains(&failure.checker.as_str()),
        "{failure}"
    );
    let replay = run(&scenario, failure.seed).expect_err("the failing seed fails again");
    assert_eq!(replay, failure);
}
