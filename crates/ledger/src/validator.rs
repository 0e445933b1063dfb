//! One ledger validator: the simplex engine wired to the ledger [`App`].
//!
//! Generic over the commonware runtime (deterministic in tests, tokio in the embedded default)
//! and the p2p network (simulated or authenticated): the caller registers four channels
//! (`CHANNEL_VOTES`, `CHANNEL_CERTIFICATES`, `CHANNEL_RESOLVER`, `CHANNEL_BLOCKS`) and passes them in.

use std::num::{NonZeroU16, NonZeroUsize};
use std::time::Duration;

use commonware_consensus::simplex::config::{Config, Floor, ForwardPolicy, SkipBudget, SkipPolicy};
use commonware_consensus::simplex::elector::RoundRobin;
use commonware_consensus::simplex::Engine;
use commonware_consensus::types::{Epoch, ViewDelta};
use commonware_cryptography::ed25519::PublicKey;
use commonware_p2p::{Blocker, Receiver, Sender};
use commonware_runtime::buffer::paged::CacheRef;
use commonware_runtime::{Clock, Handle, Metrics, Spawner, Storage};
use commonware_utils::NonZeroDuration;
use rand_core::CryptoRng;
use types::limits::ledger as limits;

use crate::consensus::{participants, private_key, App, AppConfig, AppError, Scheme};

/// Channel pairs a validator needs, in `CHANNEL_*` order.
pub struct Channels<S, R> {
    pub votes: (S, R),
    pub certificates: (S, R),
    pub resolver: (S, R),
    pub blocks: (S, R),
}

#[derive(Debug, thiserror::Error)]
pub enum ValidatorError {
    #[error("validator key: {0}")]
    Key(String),
    #[error("this key is not a validator of the ledger genesis")]
    NotAValidator,
    #[error(transparent)]
    App(#[from] AppError),
}

/// Handles of a running validator.
pub struct Running {
    pub engine: Handle<()>,
    pub app: Handle<()>,
}

impl Running {
    /// Stops both tasks, as a crash would.
    pub fn abort(self) {
        self.engine.abort();
        self.app.abort();
    }
}

/// Starts the app and the simplex engine for the validator holding `secret`.
pub fn start<E, S, R, B>(
    context: E,
    secret: &[u8; 32],
    app: AppConfig,
    blocker: B,
    channels: Channels<S, R>,
) -> Result<Running, ValidatorError>
where
    E: Clock + Spawner + Storage + Metrics + CryptoRng + commonware_runtime::Supervisor,
    S: Sender<PublicKey = PublicKey>,
    R: Receiver<PublicKey = PublicKey>,
    B: Blocker<PublicKey = PublicKey>,
{
    let genesis = app.genesis.clone();
    let key = private_key(secret).map_err(ValidatorError::Key)?;
    let set = participants(&genesis).map_err(ValidatorError::Key)?;
    let scheme = Scheme::signer(genesis.namespace.as_bytes(), set, key)
        .ok_or(ValidatorError::NotAValidator)?;
    let (actor, mailbox, reporter) = App::new(context.child("ledger_app"), app)?;
    let app_handle = actor.start(channels.blocks);
    let genesis_digest = crate::chain::genesis_digest(genesis.chain_id());
    let me = commonware_cryptography::Signer::public_key(
        &private_key(secret).map_err(ValidatorError::Key)?,
    );
    let cfg = Config {
        scheme,
        elector: RoundRobin::<commonware_cryptography::Sha256>::default(),
        blocker,
        automaton: mailbox.clone(),
        relay: mailbox,
        reporter,
        track_historical_votes: false,
        strategy: commonware_parallel::Sequential,
        partition: format!("ledger-{me}"),
        mailbox_size: NonZeroUsize::new(limits::CONSENSUS_MAILBOX_MAX).expect("nonzero"),
        epoch: Epoch::new(0),
        floor: Floor::Genesis(crate::consensus::to_digest_pub(&genesis_digest)),
        replay_buffer: NonZeroUsize::new(1024 * 1024).expect("nonzero"),
        write_buffer: NonZeroUsize::new(1024 * 1024).expect("nonzero"),
        page_cache: CacheRef::new(
            NonZeroU16::new(1024).expect("nonzero"),
            NonZeroUsize::new(10).expect("nonzero"),
        ),
        leader_timeout: Duration::from_millis(limits::LEADER_TIMEOUT_MS),
        certification_timeout: Duration::from_millis(limits::CERTIFICATION_TIMEOUT_MS),
        timeout_retry: Duration::from_millis(limits::TIMEOUT_RETRY_MS),
        view_retention: ViewDelta::new(limits::VIEW_RETENTION_VIEWS),
        skip: SkipPolicy::Enabled {
            timeout: Duration::from_millis(limits::SKIP_TIMEOUT_MS),
            budget: SkipBudget::Participants,
        },
        fetch_timeout: NonZeroDuration::new(Duration::from_millis(limits::FETCH_TIMEOUT_MS))
            .expect("nonzero"),
        fetch_retry_delay: Duration::from_millis(100),
        forward: ForwardPolicy::Disabled,
    };
    let engine = Engine::new(context.child("ledger_engine"), cfg);
    let engine_handle = engine.start(channels.votes, channels.certificates, channels.resolver);
    Ok(Running {
        engine: engine_handle,
        app: app_handle,
    })
}
