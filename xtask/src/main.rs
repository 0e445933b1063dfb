//! `cargo xtask`: the one entry point for setting up, building, testing, benchmarking and demoing.
fn main() {
    eprintln!("xtask: not yet implemented");
    std::process::exit(2);
}
