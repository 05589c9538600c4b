//! Why a seed file is refused, or one of its keys cannot be put in place.

use std::path::PathBuf;

use crate::error::{FileError, KmsError};
use crate::hsm::Unadoptable;
use crate::model::{KeyId, MaterialId, TokenKeyRef};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(transparent)]
    Read(#[from] FileError),
    #[error("seed file {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    /// Entry `number` (from 1) of the file is refused.
    #[error("seed key #{number}")]
    Entry {
        number: usize,
        #[source]
        source: EntryError,
    },
    #[error("seed: key {0} is declared twice")]
    DeclaredTwice(KeyId),
    #[error("seed key {key_id}")]
    Apply {
        key_id: KeyId,
        #[source]
        source: ApplyError,
    },
}

/// What is wrong with one declared key, found before anything is created.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("key_id '{0}' is not a lower-case UUID")]
    KeyId(String),
    #[error("account '{0}' is not a 12-digit account id")]
    Account(String),
    #[error("key_spec {spec} is not supported yet (only {supported})")]
    KeySpec {
        spec: String,
        supported: &'static str,
    },
    #[error("key_usage {usage} is not valid for {spec}")]
    KeyUsage { usage: String, spec: String },
    #[error("description is longer than 8192 characters")]
    Description,
    #[error("alias '{0}' must start with alias/")]
    AliasPrefix(String),
    #[error("alias '{0}' is not a valid alias name (alias/ then [a-zA-Z0-9/_-], not alias/aws/)")]
    AliasName(String),
    #[error("more than 50 tags")]
    TooManyTags,
    #[error("tag '{0}': keys are 1-128 characters, values at most 256")]
    Tag(String),
    #[error("rotation_period_days {0} is outside 90..=2560")]
    RotationPeriod(u32),
    #[error("adopt.id '{0}' is not a non-empty hex string")]
    AdoptId(String),
    #[error("adopt needs exactly one of label or id")]
    AdoptChoice,
}

/// Why one declared key (or one of its aliases) could not be put in place.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("a key with this id exists in account {existing}, not {declared}")]
    OtherAccount { existing: String, declared: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Kms(#[from] KmsError),
    #[error("cannot adopt: {0}")]
    NotAdoptable(Unadoptable),
    #[error("{object} is already the material of another key (material {material})")]
    AlreadyAdopted {
        object: TokenKeyRef,
        material: MaterialId,
    },
    #[error("alias {name}")]
    Alias {
        name: String,
        #[source]
        source: StoreError,
    },
}

/// A provider failure reads as the core reads it, through its one mapping.
impl From<crate::hsm::ProviderError> for ApplyError {
    fn from(e: crate::hsm::ProviderError) -> Self {
        ApplyError::Kms(e.into())
    }
}
