//! The run file is content-addressed by its run id: any change to it besides the local dataset path is refused,
//! hostile bytes give typed errors and never a panic, the dataset collection CID is the same wherever the same
//! folder is published, and a joiner fetching over real libp2p TCP on 127.0.0.1 skips a peer that serves a
//! tampered run file and keeps waiting until one serves the file that checks to the run id.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use net::{BlobSource, Identity, MemoryBlobs, NetClient, NetConfig};
use node::run_fetch::{fetch_run_file, publish_dataset, run_file_key, RunFileBlobs};
use node::runspec::{self, RunSpecError};
use node::{Run, RunSpec};
use store::LocalStore;
use types::limits::store::QUOTA_BYTES_DEFAULT;

/// A prepared byte-tokenized dataset of seeded text.
fn prepared_dataset(dir: &Path) -> data::PreparedDataset {
    let text_dir = dir.join("text");
    std::fs::create_dir_all(&text_dir).unwrap();
    let words = ["to", "be", "or", "not", "that", "is", "the", "question"];
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut text = String::new();
    for _ in 0..12_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        text.push_str(words[(state % words.len() as u64) as usize]);
        text.push(if state % 11 == 0 { '\n' } else { ' ' });
    }
    std::fs::write(text_dir.join("a.txt"), text).unwrap();
    let spec = data::TokenizerSpec::parse("bytes").unwrap();
    data::prepare(&[text_dir], spec, &dir.join("prepared"), 0.1, 0).unwrap()
}

fn run_spec(dir: &Path) -> RunSpec {
    let dataset = prepared_dataset(dir);
    let founder = "11".repeat(32);
    let config: node::RunConfig = serde_json::from_value(serde_json::json!({
        "data": dataset.dir,
        "founders": [founder],
        "shards": 8,
        "rounds": 3,
    }))
    .unwrap();
    let store = LocalStore::open(dir.join("store"), QUOTA_BYTES_DEFAULT).unwrap();
    runspec::init(&config, Some(&store)).unwrap()
}

fn bytes_of(spec: &RunSpec) -> Vec<u8> {
    serde_json::to_vec_pretty(spec).unwrap()
}

fn refused_as_altered(result: Result<Run, RunSpecError>) -> bool {
    matches!(
        result,
        Err(RunSpecError::Invalid {
            field: "genesis_hex",
            ..
        })
    )
}

#[test]
fn the_run_id_names_the_whole_run_file() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = run_spec(tmp.path());
    let origin = Path::new("test");
    let run = Run::from_bytes(&bytes_of(&spec), origin).unwrap();
    let cid = spec
        .dataset_collection
        .clone()
        .expect("init names the collection");

    // The same folder published into another store gives the same collection.
    let other = LocalStore::open(tmp.path().join("other-store"), QUOTA_BYTES_DEFAULT).unwrap();
    let dataset = data::PreparedDataset::open(&spec.dataset).unwrap();
    let again = publish_dataset(&other, &dataset, run.genesis.dataset_cid).unwrap();
    assert_eq!(again.to_string(), cid);

    // The dataset path is local: another machine's path is the same run.
    let moved = RunSpec {
        dataset: "/elsewhere/dataset".into(),
        ..spec.clone()
    };
    assert_eq!(
        Run::from_bytes(&bytes_of(&moved), origin).unwrap().run_id,
        run.run_id
    );

    // Anything else changed is refused.
    let lr = RunSpec {
        lr: spec.lr * 2.0,
        ..spec.clone()
    };
    assert!(refused_as_altered(Run::from_bytes(&bytes_of(&lr), origin)));
    let rounds = RunSpec {
        rounds: spec.rounds + 1,
        ..spec.clone()
    };
    assert!(refused_as_altered(Run::from_bytes(
        &bytes_of(&rounds),
        origin
    )));
    let mut other_dataset = spec.clone();
    other_dataset.dataset_collection = Some(again.to_string().replace('a', "b"));
    assert!(Run::from_bytes(&bytes_of(&other_dataset), origin).is_err());
    let none = RunSpec {
        dataset_collection: None,
        ..spec.clone()
    };
    assert!(refused_as_altered(Run::from_bytes(
        &bytes_of(&none),
        origin
    )));
}

#[test]
fn hostile_run_file_bytes_give_typed_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = run_spec(tmp.path());
    let good = bytes_of(&spec);
    let origin = Path::new("peer");
    assert!(matches!(
        Run::from_bytes(b"", origin),
        Err(RunSpecError::Parse { .. })
    ));
    assert!(matches!(
        Run::from_bytes(&good[..good.len() / 2], origin),
        Err(RunSpecError::Parse { .. })
    ));
    let huge = vec![b' '; types::limits::node::RUN_FILE_BYTES_MAX as usize + 1];
    assert!(matches!(
        Run::from_bytes(&huge, origin),
        Err(RunSpecError::TooLarge { .. })
    ));
    let bad_hex = RunSpec {
        genesis_hex: "zz".into(),
        ..spec.clone()
    };
    assert!(Run::from_bytes(&bytes_of(&bad_hex), origin).is_err());
    // Single bit flips anywhere: a typed error or a run that checks, never a panic.
    let run_id = Run::from_bytes(&good, origin).unwrap().run_id;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..300 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut bytes = good.clone();
        let at = (state % bytes.len() as u64) as usize;
        bytes[at] ^= 1 << (state >> 61);
        // A flip inside the genesis can make another valid run with another id; one that keeps the id is this run.
        if let Ok(run) = Run::from_bytes(&bytes, origin) {
            if run.run_id == run_id {
                assert_eq!(runspec::spec_digest(&run.spec), runspec::spec_digest(&spec));
            }
        }
    }
}

/// Counts reads, to see that the joiner asked this peer.
struct CountingReads {
    inner: RunFileBlobs,
    reads: AtomicU64,
}

impl BlobSource for CountingReads {
    fn blob_len(&self, hash: &types::Hash32) -> Option<u64> {
        self.inner.blob_len(hash)
    }
    fn read(&self, hash: &types::Hash32, offset: u64, len: u32) -> Option<Vec<u8>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.read(hash, offset, len)
    }
}

async fn start_net(bootstrap: Option<&str>) -> (NetClient, String) {
    let config = NetConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        bootstrap: bootstrap.into_iter().map(String::from).collect(),
        autonat_only_global_ips: false,
        ..NetConfig::default()
    };
    let (client, mut events, event_loop) = net::new(&Identity::generate(), config).unwrap();
    tokio::spawn(event_loop.run());
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = loop {
        if let Some(addr) = client.listen_addrs().await.unwrap().into_iter().next() {
            break addr;
        }
        assert!(Instant::now() < deadline, "node did not start listening");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    (client, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_skips_a_peer_serving_a_tampered_run_file() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = run_spec(tmp.path());
    let good = bytes_of(&spec);
    let run = Run::from_bytes(&good, Path::new("test")).unwrap();
    let tampered = bytes_of(&RunSpec {
        outer_lr: spec.outer_lr + 1.0,
        ..spec.clone()
    });

    // Only the liar is there at first: the joiner's bootstrap peer, announced in the DHT.
    let (liar, liar_addr) = start_net(None).await;
    let lies = Arc::new(CountingReads {
        inner: RunFileBlobs::new(run.run_id, tampered, Arc::new(MemoryBlobs::default())),
        reads: AtomicU64::new(0),
    });
    liar.set_blob_source(lies.clone()).await.unwrap();
    liar.start_providing(run_file_key(run.run_id))
        .await
        .unwrap();
    let (joiner, joiner_addr) = start_net(Some(&liar_addr)).await;
    let fetch = {
        let joiner = joiner.clone();
        tokio::spawn(async move {
            fetch_run_file(&joiner, run.run_id, Path::new("/joiner/dataset")).await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while lies.reads.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the joiner never asked the liar");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Then an honest member comes up; the joiner must end with its file, not the liar's.
    let (honest, _) = start_net(Some(&joiner_addr)).await;
    let blobs = RunFileBlobs::new(run.run_id, good, Arc::new(MemoryBlobs::default()));
    honest.set_blob_source(Arc::new(blobs)).await.unwrap();
    honest
        .start_providing(run_file_key(run.run_id))
        .await
        .unwrap();
    let fetched = tokio::time::timeout(Duration::from_secs(60), fetch)
        .await
        .expect("the fetch ends")
        .unwrap()
        .unwrap();
    assert_eq!(fetched.run_id, run.run_id);
    // The honest file, with the dataset path (local, unbound by the run id) set to the joiner's own.
    let expected = RunSpec {
        dataset: "/joiner/dataset".into(),
        ..spec
    };
    assert_eq!(fetched.spec, expected);
    assert_eq!(fetched.dataset_dir, Path::new("/joiner/dataset"));
}
