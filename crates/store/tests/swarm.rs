//! Sixteen storage peers, each a real store directory, holding a 10-of-16 coded dataset: losing any 6 still decodes
//! bit for bit; corruption is detected, routed around and repaired; audits ban liars.

use std::collections::BTreeSet;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bao_tree::ChunkRanges;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use store::audit::{AuditAction, AuditInput, AuditMachine};
use store::collection::{self, InputFile};
use store::erasure::ErasureParams;
use store::fetch::{self, FetchError, ProviderLookup};
use store::placement;
use store::provider::{ProviderTable, MANIFEST_PIECE};
use store::repair::{self, RepairAction, RepairInput, RepairMachine};
use store::{
    Cid, CollectionKind, FileRole, LocalProvider, LocalStore, Manifest, PieceProvider,
    ProviderError, ProviderRecord,
};
use types::PeerId;

const PEERS: usize = 16;

struct Swarm {
    _dirs: Vec<tempfile::TempDir>,
    inputs: tempfile::TempDir,
    files: Vec<InputFile>,
    publisher: Arc<LocalStore>,
    peers: Vec<Arc<LocalProvider>>,
    table: Mutex<ProviderTable>,
    manifest: Manifest,
    root: Cid,
    /// placement[i] = the peer that holds piece i.
    placement: Vec<PeerId>,
    excluded: Mutex<BTreeSet<PeerId>>,
    liars: Mutex<BTreeSet<PeerId>>,
}

fn peer_id(i: usize) -> PeerId {
    PeerId([i as u8 + 1; 32])
}

fn write_inputs(dir: &Path) -> Vec<InputFile> {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let mut make = |name: &str, len: usize, role| {
        let mut bytes = vec![0u8; len];
        rand::RngCore::fill_bytes(&mut rng, &mut bytes);
        let path = dir.join(name);
        std::fs::write(&path, &bytes).unwrap();
        InputFile {
            path,
            name: name.into(),
            role,
        }
    };
    vec![
        make("train-000.bin", 1_000_000, FileRole::TrainShard),
        make("stats.json", 0, FileRole::Stats),
        make("val-000.bin", 300_013, FileRole::ValShard),
        make("tokenizer.json", 4_321, FileRole::Tokenizer),
    ]
}

impl Swarm {
    fn new() -> Swarm {
        let inputs = tempfile::tempdir().unwrap();
        let files = write_inputs(inputs.path());
        let pub_dir = tempfile::tempdir().unwrap();
        let publisher = Arc::new(LocalStore::open(pub_dir.path(), 1 << 30).unwrap());
        let params = ErasureParams::new(10, 16, 16 * 1024).unwrap();
        let kind = CollectionKind::Dataset {
            tokenizer: "bytes".into(),
            stats: vec![("tokens".into(), 1_304_334)],
        };
        let manifest = collection::publish(&publisher, kind, "swarm-test", &files, params).unwrap();
        let root = manifest.cid();
        let mut dirs = vec![pub_dir];
        let mut peers = Vec::new();
        for i in 0..PEERS {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(LocalStore::open(dir.path(), 1 << 30).unwrap());
            peers.push(Arc::new(LocalProvider::new(peer_id(i), store)));
            dirs.push(dir);
        }
        let ids: Vec<PeerId> = peers.iter().map(|p| p.peer()).collect();
        let placement = placement::place(root, 16, &ids);
        let source = LocalProvider::new(PeerId([0xee; 32]), publisher.clone());
        let mut table = ProviderTable::default();
        for (index, holder) in placement.iter().enumerate() {
            let piece = manifest.erasure.pieces[index];
            let peer = &peers[ids.iter().position(|p| p == holder).unwrap()];
            peer.replicate(piece, manifest.erasure.piece_bytes, &source)
                .unwrap();
            table.announce(ProviderRecord::new(root, index as u16, piece, *holder, 0));
        }
        let manifest_size = manifest.encode().len() as u64;
        for peer in &peers {
            peer.replicate(root, manifest_size, &source).unwrap();
            table.announce(ProviderRecord::new(
                root,
                MANIFEST_PIECE,
                root,
                peer.peer(),
                0,
            ));
        }
        Swarm {
            _dirs: dirs,
            inputs,
            files,
            publisher,
            peers,
            table: Mutex::new(table),
            manifest,
            root,
            placement,
            excluded: Mutex::new(BTreeSet::new()),
            liars: Mutex::new(BTreeSet::new()),
        }
    }

    fn provider(&self, peer: PeerId) -> Arc<LocalProvider> {
        self.peers
            .iter()
            .find(|p| p.peer() == peer)
            .unwrap()
            .clone()
    }

    fn holder_of(&self, index: usize) -> Arc<LocalProvider> {
        self.provider(self.placement[index])
    }

    fn exclude_pieces(&self, indices: &[usize]) {
        let mut excluded = self.excluded.lock().unwrap();
        excluded.clear();
        excluded.extend(indices.iter().map(|i| self.placement[*i]));
    }

    /// A fresh client fetches and decodes the collection into a new directory; returns the directory and report.
    fn fetch_fresh(&self) -> Result<(tempfile::TempDir, fetch::FetchReport), FetchError> {
        let client_dir = tempfile::tempdir().unwrap();
        let client = LocalStore::open(client_dir.path().join("store"), 1 << 30).unwrap();
        let out = client_dir.path().join("out");
        let (_, report) = fetch::get_collection(&client, self.root, self, &out, 4)?;
        Ok((client_dir, report))
    }

    fn assert_decoded(&self, client_dir: &Path) {
        for file in &self.files {
            let listing: Vec<_> = std::fs::read_dir(client_dir.join("out"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            let got = std::fs::read(client_dir.join("out").join(&file.name))
                .unwrap_or_else(|e| panic!("{}: {e} in {listing:?}", file.name));
            let want = std::fs::read(self.inputs.path().join(&file.name)).unwrap();
            assert!(got == want, "{} differs", file.name);
        }
    }
}

/// A hostile peer: serves what its store holds, with one byte flipped in every response.
struct Lying(Arc<LocalProvider>);

impl PieceProvider for Lying {
    fn peer(&self) -> PeerId {
        self.0.peer()
    }

    fn read_ranges(
        &self,
        cid: Cid,
        ranges: &ChunkRanges,
    ) -> Result<Box<dyn Read + Send>, ProviderError> {
        let mut bytes = Vec::new();
        self.0
            .read_ranges(cid, ranges)?
            .read_to_end(&mut bytes)
            .map_err(|e| ProviderError::Unreachable(e.to_string()))?;
        let middle = 8 + (bytes.len() - 8) / 2;
        bytes[middle] ^= 0x01;
        Ok(Box::new(Cursor::new(bytes)))
    }

    fn replicate(
        &self,
        cid: Cid,
        size: u64,
        source: &dyn PieceProvider,
    ) -> Result<(), ProviderError> {
        self.0.replicate(cid, size, source)
    }
}

impl ProviderLookup for Swarm {
    fn providers(&self, blob: Cid) -> Vec<Arc<dyn PieceProvider>> {
        let excluded = self.excluded.lock().unwrap().clone();
        let liars = self.liars.lock().unwrap().clone();
        let peers = self.table.lock().unwrap().providers(blob, 1);
        peers
            .into_iter()
            .filter(|p| !excluded.contains(p))
            .map(|p| -> Arc<dyn PieceProvider> {
                let provider = self.provider(p);
                if liars.contains(&p) {
                    Arc::new(Lying(provider))
                } else {
                    provider
                }
            })
            .collect()
    }
}

#[test]
fn any_six_of_sixteen_peers_can_go() {
    let swarm = Swarm::new();
    let mut subsets: Vec<Vec<usize>> = vec![
        (0..6).collect(),            // six originals: the most algebra
        (4..10).collect(),           // the last six originals
        (10..16).collect(),          // every recovery piece
        vec![0, 2, 4, 6, 8, 15],     // mixed
        vec![9, 10, 11, 12, 13, 14], // boundary
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..6 {
        let mut all: Vec<usize> = (0..16).collect();
        all.shuffle(&mut rng);
        subsets.push(all[..6].to_vec());
    }
    for subset in &subsets {
        swarm.exclude_pieces(subset);
        let (dir, report) = swarm
            .fetch_fresh()
            .unwrap_or_else(|e| panic!("subset {subset:?}: {e}"));
        swarm.assert_decoded(dir.path());
        assert!(report.fetched.iter().all(|(i, _)| !subset.contains(i)));
    }
    // Seven gone is one too many: a typed error, and nothing decoded.
    swarm.exclude_pieces(&[0, 1, 2, 3, 4, 5, 6]);
    match swarm.fetch_fresh() {
        Err(FetchError::NotEnoughPieces {
            needed: 10,
            have: 9,
            ..
        }) => {}
        other => panic!("expected NotEnoughPieces, got {:?}", other.map(|(_, r)| r)),
    }
}

#[test]
fn six_peer_directories_deleted_for_real() {
    let swarm = Swarm::new();
    for index in [1, 3, 5, 7, 9, 11] {
        let holder = swarm.holder_of(index);
        let dir: PathBuf = holder.store().dir().to_path_buf();
        std::fs::remove_dir_all(&dir).unwrap();
    }
    let (dir, report) = swarm.fetch_fresh().unwrap();
    swarm.assert_decoded(dir.path());
    assert!(
        report
            .failures
            .iter()
            .all(|f| [1, 3, 5, 7, 9, 11].contains(&f.piece_index.unwrap())),
        "{report:?}"
    );
}

#[test]
fn flipped_byte_is_detected_fetched_elsewhere_and_repaired() {
    let swarm = Swarm::new();
    let index = 2;
    let piece = swarm.manifest.erasure.pieces[index];
    let original = swarm.publisher.get(piece).unwrap();
    let victim = swarm.holder_of(index);
    let path = victim.store().data_path(piece.0);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[77_777] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();

    // Detected while serving (the victim validates before it sends) and taken from another piece.
    let (dir, report) = swarm.fetch_fresh().unwrap();
    swarm.assert_decoded(dir.path());
    let failure = report
        .failures
        .iter()
        .find(|f| f.piece_index == Some(index))
        .expect("failure recorded");
    assert_eq!(failure.peer, victim.peer());
    assert!(
        !victim.store().contains(piece).unwrap(),
        "bad copy quarantined"
    );

    // The repair loop hears about it and rebuilds the piece onto its placement peer (the victim again).
    let mut repair = RepairMachine::new();
    repair.handle(RepairInput::Collection {
        root: swarm.root,
        layout: swarm.manifest.erasure.clone(),
    });
    for p in &swarm.peers {
        repair.handle(RepairInput::PeerUp(p.peer()));
    }
    for (i, holder) in swarm.placement.iter().enumerate() {
        let piece = swarm.manifest.erasure.pieces[i];
        repair.handle(RepairInput::Holding {
            piece,
            provider: *holder,
            holds: true,
        });
    }
    for f in &report.failures {
        repair.handle(RepairInput::Holding {
            piece: f.blob,
            provider: f.peer,
            holds: false,
        });
    }
    let actions = repair.handle(RepairInput::Tick { now_ms: 1_000 });
    assert_eq!(actions.len(), 1, "{actions:?}");
    run_rebuilds(&swarm, &mut repair, actions);
    assert_eq!(repair.counters().succeeded, 1);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        original,
        "bad copy repaired bit for bit"
    );
    assert_eq!(victim.store().get(piece).unwrap(), original);

    // The repaired piece is needed and served: six others gone, piece 2 must be used.
    swarm.exclude_pieces(&[0, 1, 3, 4, 5, 6]);
    let (dir, report) = swarm.fetch_fresh().unwrap();
    swarm.assert_decoded(dir.path());
    assert!(report.fetched.contains(&(index, victim.peer())));
}

fn run_rebuilds(swarm: &Swarm, repair: &mut RepairMachine, actions: Vec<RepairAction>) {
    let work_dir = tempfile::tempdir().unwrap();
    let work = Arc::new(LocalStore::open(work_dir.path(), 1 << 30).unwrap());
    let connect = |p: PeerId| -> Option<Arc<dyn PieceProvider>> { Some(swarm.provider(p)) };
    for action in actions {
        let RepairAction::Rebuild {
            root,
            piece_index,
            target,
            sources,
        } = action
        else {
            panic!("{action:?}")
        };
        let target_provider = swarm.provider(target);
        let result = repair::rebuild_piece(
            &work,
            PeerId([0xaa; 32]),
            &swarm.manifest.erasure,
            piece_index,
            &sources,
            target_provider.as_ref(),
            &connect,
        );
        let ok = result.is_ok();
        result.unwrap();
        let piece = swarm.manifest.erasure.pieces[piece_index as usize];
        swarm.table.lock().unwrap().announce(ProviderRecord::new(
            root,
            piece_index,
            piece,
            target,
            0,
        ));
        repair.handle(RepairInput::Rebuilt {
            root,
            piece_index,
            target,
            ok,
        });
    }
}

#[test]
fn lying_peer_is_routed_around_then_banned_by_audit_and_its_pieces_moved() {
    let swarm = Swarm::new();
    let liar = swarm.holder_of(0).peer();
    swarm.liars.lock().unwrap().insert(liar);

    let (dir, report) = swarm.fetch_fresh().unwrap();
    swarm.assert_decoded(dir.path());
    let failure = report
        .failures
        .iter()
        .find(|f| f.peer == liar)
        .expect("liar's bytes rejected");
    assert!(failure.bad_bytes, "{failure:?}");

    // Audit every copy once, over real stores; the liar's proof fails.
    let mut audit = AuditMachine::new();
    for (i, holder) in swarm.placement.iter().enumerate() {
        let piece = swarm.manifest.erasure.pieces[i];
        audit.handle(AuditInput::Track {
            piece,
            size: swarm.manifest.erasure.piece_bytes,
            provider: *holder,
        });
    }
    let mut banned = Vec::new();
    let challenges = audit.handle(AuditInput::Tick {
        now_ms: 5,
        seed: 1234,
    });
    assert_eq!(challenges.len(), 16);
    for action in challenges {
        let AuditAction::Challenge {
            challenge_id,
            provider,
            piece,
            start,
            end,
        } = action
        else {
            panic!()
        };
        let ranges = store::bao::byte_range_to_chunks(start, end);
        let served = swarm
            .providers(piece)
            .into_iter()
            .find(|p| p.peer() == provider)
            .unwrap();
        let mut response = Vec::new();
        served
            .read_ranges(piece, &ranges)
            .unwrap()
            .read_to_end(&mut response)
            .unwrap();
        for out in audit.handle(AuditInput::Response {
            challenge_id,
            response,
        }) {
            if let AuditAction::Banned { provider } = out {
                banned.push(provider);
            }
        }
    }
    assert_eq!(banned, vec![liar]);
    assert_eq!(audit.counters().passed, 15);

    // Repair moves the liar's piece to a trusted peer.
    let mut repair = RepairMachine::new();
    repair.handle(RepairInput::Collection {
        root: swarm.root,
        layout: swarm.manifest.erasure.clone(),
    });
    for p in &swarm.peers {
        repair.handle(RepairInput::PeerUp(p.peer()));
    }
    for (i, holder) in swarm.placement.iter().enumerate() {
        repair.handle(RepairInput::Holding {
            piece: swarm.manifest.erasure.pieces[i],
            provider: *holder,
            holds: true,
        });
    }
    repair.handle(RepairInput::Banned(liar));
    let actions = repair.handle(RepairInput::Tick { now_ms: 10 });
    let RepairAction::Rebuild {
        target,
        piece_index: 0,
        ..
    } = &actions[0]
    else {
        panic!("{actions:?}")
    };
    assert_ne!(*target, liar);
    let target = *target;
    run_rebuilds(&swarm, &mut repair, actions);
    assert_eq!(repair.holders(swarm.root)[0], vec![target]);
    assert!(swarm
        .provider(target)
        .store()
        .contains(swarm.manifest.erasure.pieces[0])
        .unwrap());
}

#[test]
fn malformed_manifest_from_a_peer_is_refused() {
    let swarm = Swarm::new();
    // A peer publishes a blob that hashes right but is not a manifest; fetching it as a root must fail typed.
    let junk = b"CWMF\x01 definitely not postcard".to_vec();
    let junk_cid = swarm.peers[0].store().put_bytes(&junk).unwrap();
    swarm.table.lock().unwrap().announce(ProviderRecord::new(
        junk_cid,
        MANIFEST_PIECE,
        junk_cid,
        swarm.peers[0].peer(),
        0,
    ));
    let client_dir = tempfile::tempdir().unwrap();
    let client = LocalStore::open(client_dir.path(), 1 << 30).unwrap();
    let err = fetch::get_collection(&client, junk_cid, &swarm, &client_dir.path().join("out"), 2)
        .unwrap_err();
    assert!(matches!(err, FetchError::Collection(_)), "{err}");
    assert!(!client.contains(junk_cid).unwrap());
    assert!(!client_dir.path().join("out").exists());
}
