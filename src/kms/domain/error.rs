//! Why domain mode cannot start, or a `p11kms domain create|rotate` step is refused. The
//! refusals tell the operator what to run instead.

use crate::error::KmsError;
use crate::hsm::ceremony::CeremonyError;
use crate::hsm::DomainModeError;
use crate::model::DomainKeyId;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum DomainSetupError {
    /// A store call failed; `doing` says what was being done.
    #[error("{doing}")]
    Store {
        doing: String,
        #[source]
        source: StoreError,
    },
    /// A token (or store-through-service) call failed; `doing` says what was being done.
    #[error("{doing}")]
    Kms {
        doing: String,
        #[source]
        source: KmsError,
    },
    #[error("cannot read the token's identity")]
    TokenIdentity(#[source] CeremonyError),
    #[error(transparent)]
    DomainMode(#[from] DomainModeError),
    #[error(
        "hsm.key_storage is \"domain\" but the store names no active domain key; run `p11kms \
         domain create` first"
    )]
    NoActiveKeyToServe,
    #[error("the store names no active domain key; run `p11kms domain create`")]
    NoActiveKey,
    #[error(
        "the store already has an active domain key ({0}); use `p11kms domain rotate` to \
         replace it"
    )]
    AlreadyActive(DomainKeyId),
    #[error("another domain key became active meanwhile; the new key in the token is unused")]
    ActivatedMeanwhile,
    #[error(
        "domain key {0} is already pending: enrol it into every member token (`p11kms domain \
         enrol --domain {0}`), then run `p11kms domain rotate --activate`"
    )]
    AlreadyPending(DomainKeyId),
    #[error(
        "domain key {0} is pending (a prepared rotation); enrol it into every member and run \
         `p11kms domain rotate --activate`"
    )]
    PendingRotation(DomainKeyId),
    #[error(
        "a rotation is unfinished (retiring: {}); finish it with `p11kms domain rotate \
         --activate` first",
        hex_list(.0)
    )]
    RotationUnfinished(Vec<DomainKeyId>),
    #[error(
        "this token does not hold the active domain key {0}; prepare the rotation on a member \
         of the domain"
    )]
    ActiveKeyNotHere(DomainKeyId),
    #[error("another rotation was prepared meanwhile; the new key {0} in this token is unused")]
    PreparedMeanwhile(DomainKeyId),
    #[error("no rotation is prepared; run `p11kms domain rotate --prepare` first")]
    NothingPrepared,
    #[error(
        "refusing to activate domain key {pending}: {count} member(s) of the active domain key \
         {active} do not hold it yet: {members}; enrol it into each (`p11kms domain enrol \
         --domain {pending}` on a holder, `join` on the member), then activate again"
    )]
    MembersLacking {
        pending: DomainKeyId,
        active: DomainKeyId,
        count: usize,
        members: String,
    },
    #[error("this token does not hold the pending domain key {0}; activate on a member that does")]
    PendingKeyNotHere(DomainKeyId),
    #[error("the domain keys changed meanwhile (another activation?); run again")]
    ChangedMeanwhile,
    #[error(
        "domain key {active} has other members ({members}): a one-step rotation would leave \
         them unable to open any key. Run `p11kms domain rotate --prepare`, enrol the new key \
         into each member, then `p11kms domain rotate --activate`"
    )]
    OtherMembers {
        active: DomainKeyId,
        members: String,
    },
    #[error("another rotation started meanwhile")]
    RotationStartedMeanwhile,
}

impl DomainSetupError {
    /// A failed store call, saying what it was for.
    pub(super) fn store(doing: impl Into<String>) -> impl FnOnce(StoreError) -> Self {
        let doing = doing.into();
        move |source| DomainSetupError::Store { doing, source }
    }

    /// A failed token call, saying what it was for.
    /// For `map_err` on a core or provider call (a provider error is read as the core reads
    /// it, through its one mapping to `KmsError`).
    pub(super) fn kms<E: Into<KmsError>>(doing: impl Into<String>) -> impl FnOnce(E) -> Self {
        let doing = doing.into();
        move |source| DomainSetupError::Kms {
            doing,
            source: source.into(),
        }
    }
}

fn hex_list(keys: &[DomainKeyId]) -> String {
    keys.iter()
        .map(|k| k.to_hex())
        .collect::<Vec<_>>()
        .join(", ")
}
