//! The metadata store: keys, key-material versions, aliases, tags and grants.
//!
//! The store is the source of truth for what keys exist; the HSM holds only material.
//! Write order keeps the two consistent after a crash (see `kms::reconcile`): material is
//! created in the HSM before its row is written, and a row is removed before its material
//! is destroyed, so the only possible leftovers are HSM objects without a row.
//!
//! Methods are synchronous: the service core runs on blocking threads.
//!
//! Two implementations: [`SqliteStore`], the embedded default, and [`PostgresStore`], for
//! replicas that share one database. Both pass the one conformance suite in
//! `tests/gateway/store_suite`.

pub mod members;
mod postgres;
mod sqlite;

pub use members::DomainMember;
pub use postgres::{PostgresSettings, PostgresStore};
pub use sqlite::SqliteStore;

use crate::model::{
    AliasRecord, DomainKeyId, DomainKeyRecord, EpochSeconds, GrantRecord, KeyId, KeyRecord,
    KeyState, MaterialId, MaterialRecord, Tag, TokenKeyRef, WrappedMaterial,
};

/// One change to a key's row, named by its intent. Each sets only the columns it is about.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyChange<'a> {
    /// EnableKey, DisableKey: the state.
    State(KeyState),
    /// ScheduleKeyDeletion: PendingDeletion with its date and window.
    ScheduleDeletion {
        deletion_date: EpochSeconds,
        pending_window_days: u32,
    },
    /// CancelKeyDeletion: back to Disabled, date and window cleared.
    CancelDeletion,
    Description(&'a str),
    Policy(&'a str),
    EnableRotation {
        period_days: u32,
        next_rotation: EpochSeconds,
    },
    DisableRotation,
}

/// What a conditional write found.
#[derive(Debug, Clone, PartialEq)]
pub enum Changed {
    /// The write was made; the row as it is now.
    Applied(KeyRecord),
    /// The key failed the write's condition; the row as it is, unchanged.
    Refused(KeyRecord),
}

/// The condition under which a rotation's new material becomes current.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RotationGuard<'a> {
    /// The key must be in one of these states.
    pub allowed: &'a [KeyState],
    /// Automatic rotation: rotation must still be enabled and due at or before this time,
    /// so that a rotation already made (by another job run or replica) is not made twice.
    pub due_by: Option<EpochSeconds>,
}

/// The cause of a store failure, kept for the log.
pub type StoreErrorSource = Box<dyn std::error::Error + Send + Sync>;

/// How many tags a key holding `existing` has after `tags` are put on it.
pub(crate) fn tag_count_after(existing: &[String], tags: &[Tag]) -> usize {
    let mut keys: std::collections::BTreeSet<&str> = existing.iter().map(String::as_str).collect();
    keys.extend(tags.iter().map(|t| t.key.as_str()));
    keys.len()
}

/// What a conditional `put_tags` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagWrite {
    Written,
    /// Nothing was written: the key would have had more tags than allowed.
    OverQuota,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint was hit (an alias name already in use).
    #[error("already exists")]
    AlreadyExists,
    #[error("not found")]
    NotFound,
    /// The database cannot be reached or did not answer in time: connection refused or
    /// lost, no pooled connection free before the checkout deadline, a statement past its
    /// timeout, SQLite's busy timeout. Nothing was written; the request can be retried.
    #[error("store unavailable: {message}")]
    Unavailable {
        message: String,
        #[source]
        source: Option<StoreErrorSource>,
    },
    /// Anything else: a bug, an unreadable row, a schema the build does not know.
    #[error("store backend: {message}")]
    Backend {
        message: String,
        #[source]
        source: Option<StoreErrorSource>,
    },
}

impl StoreError {
    pub fn backend(message: impl Into<String>) -> Self {
        StoreError::Backend {
            message: message.into(),
            source: None,
        }
    }

    pub fn backend_from(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Backend {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        StoreError::Unavailable {
            message: message.into(),
            source: None,
        }
    }

    pub fn unavailable_from(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Unavailable {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// The message followed by each of its causes (`a: b: c`), for the log.
    pub fn chain(&self) -> String {
        crate::error::display_chain(self)
    }
}

impl From<StoreError> for crate::error::KmsError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable { .. } => crate::error::KmsError::StoreUnavailable(e.into()),
            _ => crate::error::KmsError::Store(e.into()),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Everything the service core asks of a metadata store.
pub trait MetadataStore: Send + Sync + 'static {
    /// Inserts a key with its first material and tags, atomically.
    fn insert_key(
        &self,
        key: &KeyRecord,
        material: &MaterialRecord,
        tags: &[Tag],
    ) -> StoreResult<()>;
    /// Inserts a key whose first material is an adopted token object (not created by
    /// p11kms), recording how to find that object, atomically with the key.
    fn insert_adopted_key(
        &self,
        key: &KeyRecord,
        material: &MaterialRecord,
        tags: &[Tag],
        object: &TokenKeyRef,
    ) -> StoreResult<()>;
    /// Every adopted material and the token object it maps to.
    fn adopted_materials(&self) -> StoreResult<Vec<(MaterialId, TokenKeyRef)>>;
    fn get_key(&self, key_id: &KeyId) -> StoreResult<Option<KeyRecord>>;
    /// Keys of `account` ordered by key id, strictly after `after` when given.
    fn list_keys(
        &self,
        account: &str,
        after: Option<&KeyId>,
        limit: usize,
    ) -> StoreResult<Vec<KeyRecord>>;
    /// Applies one intent-specific change to a key, in one conditional write: only if the
    /// key is then in one of `allowed` states, and touching only the change's own columns.
    /// Concurrent changes therefore never undo each other (no read-modify-write of the row).
    /// `NotFound` if the key is gone.
    fn change_key(
        &self,
        key_id: &KeyId,
        change: &KeyChange<'_>,
        allowed: &[KeyState],
    ) -> StoreResult<Changed>;
    /// Removes the key and its materials, aliases and tags; with `due_by`, only if the key
    /// is then PendingDeletion with a deletion date at or before it (a deletion cancelled
    /// after the sweep listed the key must not go through). Whether a row was removed.
    fn delete_key(&self, key_id: &KeyId, due_by: Option<EpochSeconds>) -> StoreResult<bool>;

    /// Adds a material version and makes it the key's current material, atomically
    /// (also updating the key's `next_rotation_date` to `next_rotation`), if the key passes
    /// `guard` at the time of the write; otherwise nothing is written and the current row
    /// comes back as [`Changed::Refused`].
    fn add_material(
        &self,
        material: &MaterialRecord,
        next_rotation: Option<EpochSeconds>,
        guard: &RotationGuard,
    ) -> StoreResult<Changed>;
    fn get_material(
        &self,
        key_id: &KeyId,
        material_id: &MaterialId,
    ) -> StoreResult<Option<MaterialRecord>>;
    /// Material versions of a key, oldest first.
    fn list_materials(&self, key_id: &KeyId) -> StoreResult<Vec<MaterialRecord>>;
    /// Every material id in the store, for reconciling with the HSM at start-up.
    fn all_material_ids(&self) -> StoreResult<Vec<MaterialId>>;

    /// `AlreadyExists` if the name is taken in the account.
    fn insert_alias(&self, alias: &AliasRecord) -> StoreResult<()>;
    fn get_alias(&self, account: &str, name: &str) -> StoreResult<Option<AliasRecord>>;
    /// Points an existing alias at another key. `NotFound` if there is no such alias.
    fn update_alias(
        &self,
        account: &str,
        name: &str,
        target: &KeyId,
        now: EpochSeconds,
    ) -> StoreResult<()>;
    /// `NotFound` if there is no such alias.
    fn delete_alias(&self, account: &str, name: &str) -> StoreResult<()>;
    /// Aliases of `account` ordered by name, optionally only those targeting `target`,
    /// strictly after the name `after` when given.
    fn list_aliases(
        &self,
        account: &str,
        target: Option<&KeyId>,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<AliasRecord>>;

    /// Sets tags, replacing the value of keys already present, only if the key then has at
    /// most `max_tags` tags; the count and the write are one atomic step, so two concurrent
    /// requests cannot together pass the quota.
    fn put_tags(&self, key_id: &KeyId, tags: &[Tag], max_tags: usize) -> StoreResult<TagWrite>;
    fn remove_tags(&self, key_id: &KeyId, tag_keys: &[String]) -> StoreResult<()>;
    /// Tags of a key ordered by tag key, strictly after `after` when given.
    fn list_tags(&self, key_id: &KeyId, after: Option<&str>, limit: usize)
        -> StoreResult<Vec<Tag>>;

    /// `AlreadyExists` if the grant id is taken; `NotFound` if the key is gone.
    fn insert_grant(&self, grant: &GrantRecord) -> StoreResult<()>;
    fn get_grant(&self, grant_id: &str) -> StoreResult<Option<GrantRecord>>;
    /// Grants of a key ordered by grant id, strictly after `after` when given.
    fn list_grants(
        &self,
        key_id: &KeyId,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<GrantRecord>>;
    /// How many grants a key has (AWS's per-key quota).
    fn count_grants(&self, key_id: &KeyId) -> StoreResult<u64>;
    /// Grants of a key given to `grantee` (what authorization consults).
    fn grants_for_grantee(&self, key_id: &KeyId, grantee: &str) -> StoreResult<Vec<GrantRecord>>;
    /// Grants of a key with the given name (CreateGrant's idempotency).
    fn grants_named(&self, key_id: &KeyId, name: &str) -> StoreResult<Vec<GrantRecord>>;
    /// Grants whose retiring principal is `principal`, ordered by grant id.
    fn list_retirable_grants(
        &self,
        principal: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<GrantRecord>>;
    /// `NotFound` if there is no such grant.
    fn delete_grant(&self, grant_id: &str) -> StoreResult<()>;

    /// Keys in PendingDeletion whose deletion date is at or before `now`.
    fn keys_due_for_deletion(&self, now: EpochSeconds) -> StoreResult<Vec<KeyRecord>>;
    /// Enabled keys with rotation enabled whose next rotation date is at or before `now`.
    fn keys_due_for_rotation(&self, now: EpochSeconds) -> StoreResult<Vec<KeyRecord>>;
    /// How many keys are in each state (for metrics).
    fn count_keys_by_state(&self) -> StoreResult<Vec<(crate::model::KeyState, u64)>>;
    /// Records that a token holds a domain's key (the ceremony's `enrol` and `join`), in
    /// one conditional insert: a token already recorded in that domain keeps its first row.
    /// Whether a row was added.
    fn insert_domain_member(&self, member: &DomainMember) -> StoreResult<bool>;
    /// The members of `domain_id` (of every domain when `None`), by domain, then in
    /// enrolment order.
    fn domain_members(&self, domain_id: Option<&str>) -> StoreResult<Vec<DomainMember>>;
    /// Cheap round trip, for readiness checks.
    fn ping(&self) -> StoreResult<()>;
    /// Takes or renews, for `holder`, the lease on the periodic job `job` for `ttl`, unless
    /// another holder's lease is still running: whether `holder` holds it now. Replicas
    /// sharing a store run each job round on one replica only. A store that only one
    /// process uses (SQLite) always grants it.
    fn acquire_job_lease(
        &self,
        _job: &str,
        _holder: &str,
        _ttl: std::time::Duration,
    ) -> StoreResult<bool> {
        Ok(true)
    }

    // === domain mode (`hsm.key_storage = "domain"`) ===

    /// Records a domain key. An `active` (or `pending`) one is recorded only if no domain
    /// key is active (pending) yet (`false` otherwise): there is at most one of each.
    fn insert_domain_key(&self, key: &DomainKeyRecord) -> StoreResult<bool>;
    /// Every domain key, oldest first.
    fn domain_keys(&self) -> StoreResult<Vec<DomainKeyRecord>>;
    /// Starts a domain-key rotation in one transaction: `old` goes from active to
    /// retiring and `new` is recorded as active; `false` (nothing written) if `old` is not
    /// the active key any more.
    fn begin_domain_rotation(&self, old: &DomainKeyId, new: &DomainKeyRecord) -> StoreResult<bool>;
    /// Starts a prepared rotation in one transaction: `old` goes from active to retiring
    /// and `new` from pending to active; `false` (nothing written) unless `old` is active
    /// and `new` pending at that moment.
    fn activate_domain_key(&self, old: &DomainKeyId, new: &DomainKeyId) -> StoreResult<bool>;
    /// Ends one: `id` goes from retiring to retired, only if no wrapped material names it
    /// any more (`false` otherwise).
    fn retire_domain_key(&self, id: &DomainKeyId) -> StoreResult<bool>;
    /// Stores a wrapped material, only if its domain key is active at the time of the
    /// write (`false`, nothing written, if a rotation began meanwhile). Written before the
    /// material's row, like a token object: a crash in between leaves only an orphan blob.
    fn insert_wrapped_material(&self, wrapped: &WrappedMaterial) -> StoreResult<bool>;
    fn get_wrapped_material(&self, material: &MaterialId) -> StoreResult<Option<WrappedMaterial>>;
    /// Wrapped materials under `domain_key`, by material id, strictly after `after`.
    fn wrapped_under(
        &self,
        domain_key: &DomainKeyId,
        after: Option<&MaterialId>,
        limit: usize,
    ) -> StoreResult<Vec<WrappedMaterial>>;
    /// Replaces a material's blob by one wrapped under `to`, only if it is still wrapped
    /// under `from` (a conditional write per blob); whether it was replaced.
    fn rewrap_material(
        &self,
        material: &MaterialId,
        from: &DomainKeyId,
        to: &DomainKeyId,
        mechanism: u64,
        blob: &[u8],
    ) -> StoreResult<bool>;
    /// Removes a material's blob; absent is not an error.
    fn delete_wrapped_material(&self, material: &MaterialId) -> StoreResult<()>;
    /// The connection pool's occupancy and counters, for stores that pool connections.
    fn pool_stats(&self) -> Option<StorePoolStats> {
        None
    }
}

/// A store's connection pool, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorePoolStats {
    /// The most connections the pool opens.
    pub max_size: usize,
    /// Connections open now.
    pub open: usize,
    /// Connections checked out now.
    pub in_use: usize,
    /// Calls waiting for a connection now.
    pub waiting: usize,
    /// Checkouts so far that found every connection in use and had to wait.
    pub waits: u64,
    /// Checkouts so far that gave up (checkout or connect timeout).
    pub timeouts: u64,
}
