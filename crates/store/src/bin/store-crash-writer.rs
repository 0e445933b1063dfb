//! Crash-test helper: writes (and sometimes removes) blobs in a local store in a loop until it is killed.
//!
//! Usage: `store-crash-writer DIR SEED`. Prints `put HEX` after each put returns (so it is durable), `removing HEX`
//! before a removal starts and `removed HEX` after it returns. The crash test SIGKILLs it at random moments.

use std::io::Write;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use store::LocalStore;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(seed)) = (args.next(), args.next()) else {
        eprintln!("usage: store-crash-writer DIR SEED");
        std::process::exit(2);
    };
    let seed: u64 = seed.parse().expect("SEED is a number");
    let store = match LocalStore::open(&dir, 1 << 40) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("open failed: {e}");
            std::process::exit(1);
        }
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut stdout = std::io::stdout().lock();
    loop {
        let blobs = store.list().expect("list");
        if blobs.len() > 30 || (rng.random_bool(0.2) && !blobs.is_empty()) {
            let victim = blobs[rng.random_range(0..blobs.len())].cid;
            writeln!(stdout, "removing {}", victim.0.to_hex()).expect("stdout");
            stdout.flush().expect("stdout");
            store.remove(victim).expect("remove");
            writeln!(stdout, "removed {}", victim.0.to_hex()).expect("stdout");
            stdout.flush().expect("stdout");
            continue;
        }
        let len = rng.random_range(0..600_000usize);
        let mut data = vec![0u8; len];
        rng.fill_bytes(&mut data);
        let cid = store.put_bytes(&data).expect("put");
        writeln!(stdout, "put {}", cid.0.to_hex()).expect("stdout");
        stdout.flush().expect("stdout");
    }
}
