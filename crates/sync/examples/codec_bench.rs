//! Codec throughput benchmark: encode and decode GB/s of fp32 input for a 125M-value vector,
//! against a plain memcpy and an f32→bf16 cast loop measured in the same run.
//!
//! Run: `cargo run --release -p commonweight-sync --example codec_bench [-- VALUES [REPS]]`.
//!
//! Each measurement is the best of REPS runs, timed two ways: wall clock, and this thread's CPU
//! time (`/proc/thread-self/schedstat`), which stays meaningful on a machine shared with other jobs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use sync::codec::{decode, CodecKind, ErrorFeedback};

fn main() {
    let mut args = std::env::args().skip(1);
    let values: usize = args
        .next()
        .map_or(125_000_000, |a| a.parse().expect("VALUES is a number"));
    let reps: usize = args
        .next()
        .map_or(3, |a| a.parse().expect("REPS is a number"));
    let input = pseudo_gradient(values, 0x5EED);
    let input_bytes = (values * 4) as f64;
    let gbps = |t: Duration| input_bytes / t.as_secs_f64() / 1e9;
    println!(
        "values: {values}, fp32 input: {:.1} MB, best of {reps}, GB/s of thread CPU time",
        input_bytes / 1e6
    );

    let mut copy = vec![0.0f32; values];
    let memcpy = best_of(reps, || {
        copy.copy_from_slice(black_box(&input));
        black_box(&copy);
    });
    let mut halves = vec![0u16; values];
    let cast = best_of(reps, || {
        for (h, x) in halves.iter_mut().zip(black_box(&input)) {
            *h = half::bf16::from_f32(*x).to_bits();
        }
        black_box(&halves);
    });
    drop((copy, halves));
    println!("reference memcpy:         {:7.3} GB/s", gbps(memcpy));
    println!("reference f32->bf16 cast: {:7.3} GB/s", gbps(cast));
    println!();
    println!(
        "{:<34} {:>12} {:>9} {:>10} {:>10} {:>10} {:>10}",
        "codec", "bytes", "x smaller", "enc GB/s", "dec GB/s", "enc/memcpy", "dec/memcpy"
    );
    for spec in ["fp32", "bf16", "fp16", "int8", "topk", "topk+ef0.95", "dct"] {
        let (name, feedback) = match spec.split_once("+ef") {
            Some((name, decay)) => (name, Some(decay.parse::<f32>().unwrap())),
            None => (spec, None),
        };
        let kind: CodecKind = name.parse().unwrap();
        let codec = kind.codec();
        // DCT is ~100 multiply-adds per value: one repetition is plenty.
        let reps = if name == "dct" { 1 } else { reps };
        let mut bytes = Vec::new();
        let encode = best_of(reps, || {
            let mut state = feedback.map_or_else(ErrorFeedback::off, ErrorFeedback::new);
            bytes = codec.encode(black_box(&input), &mut state);
        });
        let mut decoded = Vec::new();
        let decode_time = best_of(reps, || {
            decoded = decode(black_box(&bytes), values).expect("own encoding decodes");
        });
        assert_eq!(decoded.len(), values);
        println!(
            "{:<34} {:>12} {:>9.1} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
            format!(
                "{kind}{}",
                feedback.map_or(String::new(), |d| format!(" +ef {d}"))
            ),
            bytes.len(),
            input_bytes / bytes.len() as f64,
            gbps(encode),
            gbps(decode_time),
            memcpy.as_secs_f64() / encode.as_secs_f64(),
            memcpy.as_secs_f64() / decode_time.as_secs_f64(),
        );
    }
}

/// Best CPU time of `reps` runs (wall time is printed alongside for reference).
fn best_of(reps: usize, mut run: impl FnMut()) -> Duration {
    let mut best_cpu = Duration::MAX;
    let mut best_wall = Duration::MAX;
    for _ in 0..reps.max(1) {
        let (cpu_start, wall_start) = (thread_cpu_time(), Instant::now());
        run();
        best_wall = best_wall.min(wall_start.elapsed());
        best_cpu = best_cpu.min(thread_cpu_time().saturating_sub(cpu_start));
    }
    eprintln!(
        "    (cpu {:.3}s, wall {:.3}s)",
        best_cpu.as_secs_f64(),
        best_wall.as_secs_f64()
    );
    best_cpu
}

/// This thread's time on a CPU, from the kernel's scheduler statistics (Linux).
fn thread_cpu_time() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").expect("Linux schedstat");
    let nanos: u64 = text
        .split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .expect("schedstat field");
    Duration::from_nanos(nanos)
}

/// Roughly normal values with σ ≈ 1e-3 (a pseudo-gradient's scale), from a seeded xorshift.
fn pseudo_gradient(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..len)
        .map(|_| (next() + next() + next() + next() - 2.0) * 1.7e-3)
        .collect()
}
