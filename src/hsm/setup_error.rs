//! Why a token cannot be set up: opened at start-up ([`OpenError`]), put into domain mode
//! ([`DomainModeError`]) or provisioned as the embedded token ([`ProvisionError`]). PINs
//! never appear: the variants hold paths, labels and PKCS#11 failures only.

use std::path::PathBuf;

use super::domain::DOMAIN_KEY_LABEL;
use super::HsmError;
use super::ProviderError;
use crate::file_error::FileError;
use crate::model::DomainKeyId;

/// `Hsm::open`: the token, its mechanisms or the configured ciphertext scheme.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the HSM token: {0}")]
    Token(HsmError),
    #[error("the token went away during start-up")]
    TokenGone,
    #[error("the token cannot run the p11kms symmetric ciphertext scheme; missing: {0}")]
    MissingMechanisms(String),
    /// No session could run the trial.
    #[error("trial run failed")]
    TrialNotRun(#[source] ProviderError),
    #[error("trial run of the ciphertext scheme failed: {0}")]
    TrialFailed(HsmError),
    #[error(
        "ciphertext scheme {configured} was configured, but the token cannot run it (schemes \
         it runs: {runs})"
    )]
    SchemeUnavailable { configured: u8, runs: String },
}

/// `Hsm::into_domain_wrapped`: the token's wrap mechanism or the domain key.
#[derive(Debug, thiserror::Error)]
pub enum DomainModeError {
    #[error("the token went away during start-up")]
    TokenGone,
    #[error(
        "domain mode needs CKM_AES_KEY_WRAP_PAD (0x210A) for wrap and unwrap, which this token \
         lacks (Kryoptic's CKM_AES_KEY_WRAP_KWP, 0x210B, is not yet supported)"
    )]
    NoKeyWrapPad,
    #[error("cannot read the active domain key from the store")]
    ActiveKeyUnread(#[source] super::MaterialSourceError),
    #[error("cannot look for the domain key")]
    LookupNotRun(#[source] ProviderError),
    #[error("cannot look for the domain key: {0}")]
    LookupFailed(HsmError),
    #[error(
        "the store's active domain key {0} is not in the token (label {DOMAIN_KEY_LABEL}); run \
         `p11kms domain create` on a new deployment, or enrol this token in the domain"
    )]
    KeyNotInToken(DomainKeyId),
}

/// The embedded token's files under the data directory, and its initialisation.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(transparent)]
    File(#[from] FileError),
    /// The library cannot be loaded, or the token not found after `C_InitToken`.
    #[error("{0}")]
    Library(HsmError),
    #[error("{function}: {error}")]
    Pkcs11 {
        function: &'static str,
        error: HsmError,
    },
    #[error(
        "{} holds {directories} token directories but SoftHSM2 reads only {readable} tokens, \
         and none labelled '{label}': a token file is damaged (no copy of it was found in {}); \
         not initialising a new token over it",
        token_dir.display(),
        copies_dir.display()
    )]
    DamagedToken {
        token_dir: PathBuf,
        copies_dir: PathBuf,
        directories: usize,
        readable: usize,
        label: String,
    },
    #[error("SoftHSM2 offers no free slot for a new token")]
    NoFreeSlot,
    #[error("the data directory's path {0} cannot be written into kryoptic.conf")]
    UnquotablePath(String),
    #[error("Kryoptic shows no slot; is {} its configuration?", .0.display())]
    NoKryopticSlot(PathBuf),
    #[error(
        "the Kryoptic token in {} is labelled '{found}', not '{label}'; not initialising it \
         again over its keys",
        database.display()
    )]
    LabelledOtherwise {
        database: PathBuf,
        found: String,
        label: String,
    },
}

impl ProvisionError {
    /// A PKCS#11 call made while provisioning, named by the caller (`C_Login(SO)`).
    pub(super) fn call(
        function: &'static str,
    ) -> impl FnOnce(cryptoki::error::Error) -> ProvisionError {
        move |e| ProvisionError::Pkcs11 {
            function,
            error: HsmError::from(e),
        }
    }
}
