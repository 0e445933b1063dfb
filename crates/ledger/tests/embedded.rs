//! Four embedded validators (simplex on commonware's tokio runtime, commonware-p2p's
//! authenticated network on 127.0.0.1) finalize verdict transactions from three verifiers:
//! every replica mints the same shares, and every stored chain passes `verify_chain`.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use ledger::embedded::{self, EmbeddedConfig};
use ledger::{peer_of, verify_chain, Genesis, NoFraudProofs, SignedTx, Store, TxBody, Verdict};
use types::{PeerId, RoundNumber, RunId};

const N: usize = 4;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn four_embedded_validators_agree_on_minted_shares() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<SigningKey> = (0..N)
        .map(|i| SigningKey::from_bytes(&[40 + i as u8; 32]))
        .collect();
    let peers: Vec<PeerId> = keys.iter().map(peer_of).collect();
    let run = RunId(types::Hash32([7; 32]));
    let genesis = Genesis {
        version: ledger::WIRE_VERSION,
        run,
        validators: peers.clone(),
        verifiers: peers.clone(),
        verifier_quorum: 3,
        namespace: "commonweight-ledger-embedded-test".into(),
    };
    let addrs: Vec<(PeerId, SocketAddr)> = peers
        .iter()
        .map(|p| (*p, SocketAddr::from(([127, 0, 0, 1], free_port()))))
        .collect();
    let validators: Vec<_> = (0..N)
        .map(|i| {
            embedded::start(EmbeddedConfig {
                genesis: genesis.clone(),
                secret: keys[i].to_bytes(),
                ledger_dir: dir.path().join(format!("v{i}/ledger")),
                consensus_dir: dir.path().join(format!("v{i}/consensus")),
                listen: addrs[i].1,
                peers: addrs.clone(),
                checker: Box::new(NoFraudProofs),
            })
            .unwrap()
        })
        .collect();
    let trainer = peers[3];
    // Verifiers 0..3 each record an accepted verdict for the trainer, through their own mempool.
    for i in 0..3 {
        let verdict = Verdict::sign(
            &keys[i],
            run,
            RoundNumber(0),
            trainer,
            true,
            1_000_000,
            "",
            4096,
        );
        let body = TxBody::RecordVerdicts {
            verdicts: vec![verdict],
        };
        let tx = SignedTx::sign(&keys[i], genesis.chain_id(), 0, body);
        validators[i].mempool.submit(&genesis, tx).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let snaps: Vec<_> = validators.iter().map(|v| v.observer.get()).collect();
        let minted = snaps.iter().all(|s| {
            s.state
                .as_ref()
                .is_some_and(|st| st.balance(&trainer) == 4096)
        });
        let roots_agree = snaps
            .windows(2)
            .all(|w| w[0].state_root == w[1].state_root && w[0].height == w[1].height);
        if minted && roots_agree {
            break;
        }
        assert!(
            validators.iter().all(|v| !v.is_finished()),
            "a validator thread ended"
        );
        assert!(
            Instant::now() < deadline,
            "no agreement on the mint: {:?}",
            snaps.iter().map(|s| s.height).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for v in validators {
        v.stop();
    }
    for i in 0..N {
        let store = Store::open(&dir.path().join(format!("v{i}/ledger"))).unwrap();
        let report = verify_chain(&store, &NoFraudProofs).unwrap();
        assert!(report.blocks >= 1);
    }
}
