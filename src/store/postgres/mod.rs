//! [`MetadataStore`] on PostgreSQL, for replicas that share one database.
//!
//! **Sync over async, safely.** The trait is synchronous: core threads (plain std threads),
//! `spawn_blocking` tasks (readiness, metrics, jobs) and start-up code call it. The store
//! owns a small tokio runtime of its own, on its own threads, that runs the connection pool
//! and every connection. A call hands its work to that runtime with `Handle::spawn` and
//! waits for the answer on a plain channel; it never enters a runtime itself (no
//! `block_on`), so it cannot panic whatever context it is called from, a tokio worker
//! included. Dropping the store shuts the runtime down in the background, which is also
//! allowed anywhere.
//!
//! **Limits.** The pool holds at most `pool_size` connections; a call waits at most
//! `checkout_timeout` for one, opening a connection takes at most `connect_timeout`, and
//! every statement is bounded by the server's `statement_timeout` plus, on the client, a
//! deadline after which the connection is dropped rather than reused. Each of these ends as
//! [`StoreError::Unavailable`] (`DependencyTimeoutException` on the wire). A server that
//! went away is noticed by the pool (closed connections are not reused) and reconnected on
//! the next call: recovery needs no restart.
//!
//! **No row cache.** The SQLite store keeps key rows for up to a second; several replicas
//! on one database cannot do that without invalidation, so every read here goes to
//! PostgreSQL, and a change made through one replica is seen by the next request on every
//! other (README, Cluster: measured, and why no cache was added).
//!
//! **Start-up without PostgreSQL.** [`PostgresStore::open`] does not need the server: the
//! schema is brought up to date before the first statement that reaches it, so a replica
//! started while PostgreSQL is down serves typed errors and recovers without a restart.

mod aliases;
mod domain;
mod errors;
mod grants;
mod keys;
mod leases;
mod members;
mod rows;
mod schema;
mod tls;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{
    ClientWrapper, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime, Timeouts,
};
use secrecy::{ExposeSecret, SecretString};

use super::members::DomainMember;
use super::{
    Changed, KeyChange, MetadataStore, RotationGuard, StoreError, StorePoolStats, StoreResult,
    TagWrite,
};
use crate::model::{
    AliasRecord, DomainKeyId, DomainKeyRecord, EpochSeconds, GrantRecord, KeyId, KeyRecord,
    KeyState, MaterialId, MaterialRecord, Tag, TokenKeyRef, WrappedMaterial,
};
use errors::{pg_err, pool_err};

/// Threads of the store's own runtime. They only move bytes between sockets and waiting
/// callers; PostgreSQL does the work.
const RUNTIME_THREADS: usize = 2;
/// How long past the statement timeout the client waits before giving a connection up.
const CLIENT_DEADLINE_GRACE: Duration = Duration::from_secs(1);

/// How to reach PostgreSQL, and the pool's limits.
#[derive(Clone)]
pub struct PostgresSettings {
    /// A libpq-style URL (`postgresql://user:password@host:port/db`) or key/value string
    /// (`host=... user=... password=... dbname=...`). Holds the password: never logged.
    pub url: SecretString,
    /// The most connections the pool opens.
    pub pool_size: usize,
    /// Opening one connection (TCP, TLS-less handshake, authentication).
    pub connect_timeout: Duration,
    /// How long a call waits for a free pooled connection.
    pub checkout_timeout: Duration,
    /// The server's `statement_timeout` for every statement of the store.
    pub statement_timeout: Duration,
    /// PEM CA bundle: connect only over TLS, to a server whose certificate chains to it and
    /// names the host. `None`: no TLS (a local socket or a private network).
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("url", &"(not shown)")
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("checkout_timeout", &self.checkout_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// Checkouts that found the pool full and had to wait, and those that gave up.
#[derive(Default)]
struct PoolCounters {
    waits: AtomicU64,
    timeouts: AtomicU64,
}

/// The store's runtime, shut down without blocking when the store goes.
struct StoreRuntime(Option<tokio::runtime::Runtime>);

impl Drop for StoreRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            // Unlike a plain drop, allowed from inside another runtime.
            runtime.shutdown_background();
        }
    }
}

/// Work to run on a pooled connection.
type Work<'c, T> = Pin<Box<dyn Future<Output = StoreResult<T>> + Send + 'c>>;

/// The PostgreSQL metadata store. Cheap to share behind an `Arc`.
pub struct PostgresStore {
    // Dropped before the runtime that serves its connections.
    pool: Pool,
    counters: Arc<PoolCounters>,
    statement_timeout: Duration,
    checkout_timeout: Duration,
    connect_timeout: Duration,
    /// The schema is known to be up to date (migrations ran on this process's behalf).
    migrated: Arc<AtomicBool>,
    runtime: StoreRuntime,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects, and brings the schema up to date (refusing a database newer than this
    /// build). Fails if PostgreSQL cannot be reached now.
    pub fn connect(settings: &PostgresSettings) -> StoreResult<Self> {
        let store = Self::with_pool(settings)?;
        store.ping()?;
        Ok(store)
    }

    /// Like [`PostgresStore::connect`], but PostgreSQL being unreachable now is no error:
    /// the store is returned (with the cause) and migrates the schema on its first call
    /// that reaches the server. Other failures (a bad connection string, credentials the
    /// server refuses, a database newer than this build) still fail.
    pub fn open(settings: &PostgresSettings) -> StoreResult<(Self, Option<StoreError>)> {
        let store = Self::with_pool(settings)?;
        match store.ping() {
            Ok(()) => Ok((store, None)),
            Err(e @ StoreError::Unavailable { .. }) if !errors::is_credentials_refused(&e) => {
                Ok((store, Some(e)))
            }
            Err(e) => Err(e),
        }
    }

    /// The pool and runtime, without touching the database.
    fn with_pool(settings: &PostgresSettings) -> StoreResult<Self> {
        if settings.pool_size == 0 {
            return Err(StoreError::backend(
                "store.postgres_pool_size must be at least 1",
            ));
        }
        let pg_config = connection_config(settings)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .thread_name("p11kms-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::backend_from("cannot start the PostgreSQL runtime", e))?;
        let manager_config = ManagerConfig {
            // Closed connections are dropped at checkout; a connection that broke unnoticed
            // fails its one statement, and is then dropped too.
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &settings.ca_file {
            Some(ca_file) => Manager::from_config(
                pg_config,
                tls::MakeRustlsConnect::from_ca_file(ca_file)?,
                manager_config,
            ),
            None => Manager::from_config(pg_config, tokio_postgres::NoTls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .runtime(Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(settings.checkout_timeout),
                create: Some(settings.connect_timeout),
                recycle: Some(settings.connect_timeout),
            })
            .build()
            .map_err(|e| StoreError::backend_from("cannot build the PostgreSQL pool", e))?;
        Ok(PostgresStore {
            pool,
            counters: Arc::default(),
            statement_timeout: settings.statement_timeout,
            checkout_timeout: settings.checkout_timeout,
            connect_timeout: settings.connect_timeout,
            migrated: Arc::new(AtomicBool::new(false)),
            runtime: StoreRuntime(Some(runtime)),
        })
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> StoreResult<u32> {
        self.run(|client| Box::pin(schema::version(client)))
    }

    /// The schema version this build brings a database to.
    pub fn latest_schema_version() -> u32 {
        u32::try_from(schema::MIGRATIONS.len()).unwrap_or(u32::MAX)
    }

    /// Runs `work` on a pooled connection on the store's runtime and waits for its answer.
    fn run<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut ClientWrapper) -> Work<'c, T> + Send + 'static,
    {
        let Some(runtime) = &self.runtime.0 else {
            return Err(StoreError::backend("the PostgreSQL store is shut down"));
        };
        let (answer, answered) = crossbeam_channel::bounded(1);
        let pool = self.pool.clone();
        let counters = self.counters.clone();
        let deadline = self.statement_timeout + CLIENT_DEADLINE_GRACE;
        let migrated = self.migrated.clone();
        runtime.spawn(async move {
            let outcome = async {
                let mut client = checkout(&pool, &counters).await?;
                let work = async {
                    // Idempotent and serialised across replicas (an advisory lock), so
                    // callers racing here before the first success are harmless.
                    if !migrated.load(Ordering::Acquire) {
                        schema::migrate(&mut client).await?;
                        migrated.store(true, Ordering::Release);
                    }
                    work(&mut client).await
                };
                match tokio::time::timeout(deadline, work).await {
                    Ok(outcome) => {
                        if client.is_closed() {
                            // Not back into the pool: the next call opens a new one.
                            drop(Object::take(client));
                        }
                        outcome
                    }
                    Err(_) => {
                        // A statement may still be running on it: never reuse it.
                        drop(Object::take(client));
                        Err(StoreError::unavailable(format!(
                            "PostgreSQL did not answer within {} ms",
                            deadline.as_millis()
                        )))
                    }
                }
            }
            .await;
            let _ = answer.send(outcome);
        });
        // The task always answers within these bounds; the wait is bounded anyway, so a
        // caller can never hang on the store.
        let bound = self.checkout_timeout + self.connect_timeout + deadline + CLIENT_DEADLINE_GRACE;
        match answered.recv_timeout(bound) {
            Ok(outcome) => outcome,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                Err(StoreError::unavailable(format!(
                    "no answer from the PostgreSQL store within {} ms",
                    bound.as_millis()
                )))
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(StoreError::backend(
                "the PostgreSQL store's task ended without an answer",
            )),
        }
    }
}

async fn checkout(pool: &Pool, counters: &PoolCounters) -> StoreResult<Object> {
    let status = pool.status();
    if status.available == 0 && status.size >= status.max_size {
        counters.waits.fetch_add(1, Ordering::Relaxed);
    }
    pool.get().await.map_err(|e| {
        if matches!(e, deadpool_postgres::PoolError::Timeout(_)) {
            counters.timeouts.fetch_add(1, Ordering::Relaxed);
        }
        pool_err(e)
    })
}

/// The connection string parsed, with the store's defaults where it sets none:
/// `connect_timeout`, `application_name`, and the server-side `statement_timeout` (appended
/// to `options`). The string itself never reaches an error message.
fn connection_config(settings: &PostgresSettings) -> StoreResult<tokio_postgres::Config> {
    let mut config =
        tokio_postgres::Config::from_str(settings.url.expose_secret()).map_err(|e| {
            StoreError::backend_from(
                "the PostgreSQL connection string does not parse (not shown)",
                e,
            )
        })?;
    use tokio_postgres::config::SslMode;
    match (&settings.ca_file, config.get_ssl_mode()) {
        (Some(_), SslMode::Disable) => {
            return Err(StoreError::backend(
                "sslmode=disable contradicts store.postgres_ca_file (TLS with that CA)",
            ))
        }
        // TLS or nothing: never a silent fall-back to plain text (sslmode=prefer).
        (Some(_), _) => {
            config.ssl_mode(SslMode::Require);
        }
        (None, SslMode::Require) => {
            return Err(StoreError::backend(
                "sslmode=require needs store.postgres_ca_file (P11KMS_POSTGRES_CA_FILE), the CA \
                 that PostgreSQL's certificate must chain to",
            ))
        }
        // prefer: the no-TLS connector only ever talks plain text.
        (None, _) => {}
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(settings.connect_timeout);
    }
    if config.get_application_name().is_none() {
        config.application_name("p11kms");
    }
    let timeout = format!(
        "-c statement_timeout={}",
        settings.statement_timeout.as_millis()
    );
    let options = match config.get_options() {
        Some(existing) if !existing.is_empty() => format!("{existing} {timeout}"),
        _ => timeout,
    };
    config.options(options);
    Ok(config)
}

impl MetadataStore for PostgresStore {
    fn insert_key(
        &self,
        key: &KeyRecord,
        material: &MaterialRecord,
        tags: &[Tag],
    ) -> StoreResult<()> {
        let (key, material, tags) = (key.clone(), material.clone(), tags.to_vec());
        self.run(move |c| Box::pin(keys::insert_key(c, key, material, tags, None)))
    }

    fn insert_adopted_key(
        &self,
        key: &KeyRecord,
        material: &MaterialRecord,
        tags: &[Tag],
        object: &TokenKeyRef,
    ) -> StoreResult<()> {
        let (key, material, tags) = (key.clone(), material.clone(), tags.to_vec());
        let object = object.clone();
        self.run(move |c| Box::pin(keys::insert_key(c, key, material, tags, Some(object))))
    }

    fn adopted_materials(&self) -> StoreResult<Vec<(MaterialId, TokenKeyRef)>> {
        self.run(|c| Box::pin(keys::adopted_materials(c)))
    }

    fn get_key(&self, key_id: &KeyId) -> StoreResult<Option<KeyRecord>> {
        let key_id = *key_id;
        self.run(move |c| Box::pin(async move { keys::read_key(c, &key_id).await }))
    }

    fn list_keys(
        &self,
        account: &str,
        after: Option<&KeyId>,
        limit: usize,
    ) -> StoreResult<Vec<KeyRecord>> {
        let (account, after) = (account.to_string(), after.copied());
        self.run(move |c| Box::pin(keys::list_keys(c, account, after, limit)))
    }

    fn change_key(
        &self,
        key_id: &KeyId,
        change: &KeyChange<'_>,
        allowed: &[KeyState],
    ) -> StoreResult<Changed> {
        let key_id = *key_id;
        let change = keys::prepare_change(change, allowed)?;
        self.run(move |c| Box::pin(keys::change_key(c, key_id, change)))
    }

    /// Idempotent: deleting a key that is already gone succeeds (returns `false`).
    fn delete_key(&self, key_id: &KeyId, due_by: Option<EpochSeconds>) -> StoreResult<bool> {
        let key_id = *key_id;
        self.run(move |c| Box::pin(keys::delete_key(c, key_id, due_by)))
    }

    fn add_material(
        &self,
        material: &MaterialRecord,
        next_rotation: Option<EpochSeconds>,
        guard: &RotationGuard<'_>,
    ) -> StoreResult<Changed> {
        let material = material.clone();
        let allowed = keys::guard_states(guard);
        let due_by = guard.due_by;
        self.run(move |c| {
            Box::pin(keys::add_material(
                c,
                material,
                next_rotation,
                allowed,
                due_by,
            ))
        })
    }

    fn get_material(
        &self,
        key_id: &KeyId,
        material_id: &MaterialId,
    ) -> StoreResult<Option<MaterialRecord>> {
        let (key_id, material_id) = (*key_id, *material_id);
        self.run(move |c| Box::pin(keys::get_material(c, key_id, material_id)))
    }

    fn list_materials(&self, key_id: &KeyId) -> StoreResult<Vec<MaterialRecord>> {
        let key_id = *key_id;
        self.run(move |c| Box::pin(keys::list_materials(c, key_id)))
    }

    fn all_material_ids(&self) -> StoreResult<Vec<MaterialId>> {
        self.run(|c| Box::pin(keys::all_material_ids(c)))
    }

    fn insert_alias(&self, alias: &AliasRecord) -> StoreResult<()> {
        let alias = alias.clone();
        self.run(move |c| Box::pin(aliases::insert_alias(c, alias)))
    }

    fn get_alias(&self, account: &str, name: &str) -> StoreResult<Option<AliasRecord>> {
        let (account, name) = (account.to_string(), name.to_string());
        self.run(move |c| Box::pin(aliases::get_alias(c, account, name)))
    }

    fn update_alias(
        &self,
        account: &str,
        name: &str,
        target: &KeyId,
        now: EpochSeconds,
    ) -> StoreResult<()> {
        let (account, name, target) = (account.to_string(), name.to_string(), *target);
        self.run(move |c| Box::pin(aliases::update_alias(c, account, name, target, now)))
    }

    fn delete_alias(&self, account: &str, name: &str) -> StoreResult<()> {
        let (account, name) = (account.to_string(), name.to_string());
        self.run(move |c| Box::pin(aliases::delete_alias(c, account, name)))
    }

    fn list_aliases(
        &self,
        account: &str,
        target: Option<&KeyId>,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<AliasRecord>> {
        let (account, target, after) = (
            account.to_string(),
            target.copied(),
            after.map(str::to_string),
        );
        self.run(move |c| Box::pin(aliases::list_aliases(c, account, target, after, limit)))
    }

    fn put_tags(&self, key_id: &KeyId, tags: &[Tag], max_tags: usize) -> StoreResult<TagWrite> {
        let (key_id, tags) = (*key_id, tags.to_vec());
        self.run(move |c| Box::pin(aliases::put_tags(c, key_id, tags, max_tags)))
    }

    fn remove_tags(&self, key_id: &KeyId, tag_keys: &[String]) -> StoreResult<()> {
        let (key_id, tag_keys) = (*key_id, tag_keys.to_vec());
        self.run(move |c| Box::pin(aliases::remove_tags(c, key_id, tag_keys)))
    }

    fn list_tags(
        &self,
        key_id: &KeyId,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Tag>> {
        let (key_id, after) = (*key_id, after.map(str::to_string));
        self.run(move |c| Box::pin(aliases::list_tags(c, key_id, after, limit)))
    }

    fn insert_grant(&self, grant: &GrantRecord) -> StoreResult<()> {
        let grant = grant.clone();
        self.run(move |c| Box::pin(grants::insert_grant(c, grant)))
    }

    fn get_grant(&self, grant_id: &str) -> StoreResult<Option<GrantRecord>> {
        let grant_id = grant_id.to_string();
        self.run(move |c| Box::pin(grants::get_grant(c, grant_id)))
    }

    fn list_grants(
        &self,
        key_id: &KeyId,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<GrantRecord>> {
        let (key_id, after) = (*key_id, after.map(str::to_string));
        self.run(move |c| Box::pin(grants::list_grants(c, key_id, after, limit)))
    }

    fn count_grants(&self, key_id: &KeyId) -> StoreResult<u64> {
        let key_id = *key_id;
        self.run(move |c| Box::pin(grants::count_grants(c, key_id)))
    }

    fn grants_for_grantee(&self, key_id: &KeyId, grantee: &str) -> StoreResult<Vec<GrantRecord>> {
        let (key_id, grantee) = (*key_id, grantee.to_string());
        self.run(move |c| Box::pin(grants::grants_for_grantee(c, key_id, grantee)))
    }

    fn grants_named(&self, key_id: &KeyId, name: &str) -> StoreResult<Vec<GrantRecord>> {
        let (key_id, name) = (*key_id, name.to_string());
        self.run(move |c| Box::pin(grants::grants_named(c, key_id, name)))
    }

    fn list_retirable_grants(
        &self,
        principal: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<GrantRecord>> {
        let (principal, after) = (principal.to_string(), after.map(str::to_string));
        self.run(move |c| Box::pin(grants::list_retirable_grants(c, principal, after, limit)))
    }

    fn delete_grant(&self, grant_id: &str) -> StoreResult<()> {
        let grant_id = grant_id.to_string();
        self.run(move |c| Box::pin(grants::delete_grant(c, grant_id)))
    }

    fn keys_due_for_deletion(&self, now: EpochSeconds) -> StoreResult<Vec<KeyRecord>> {
        self.run(move |c| Box::pin(keys::keys_due_for_deletion(c, now)))
    }

    fn keys_due_for_rotation(&self, now: EpochSeconds) -> StoreResult<Vec<KeyRecord>> {
        self.run(move |c| Box::pin(keys::keys_due_for_rotation(c, now)))
    }

    fn count_keys_by_state(&self) -> StoreResult<Vec<(KeyState, u64)>> {
        self.run(|c| Box::pin(keys::count_keys_by_state(c)))
    }

    fn insert_domain_key(&self, key: &DomainKeyRecord) -> StoreResult<bool> {
        let key = key.clone();
        self.run(move |c| Box::pin(domain::insert_domain_key(c, key)))
    }

    fn domain_keys(&self) -> StoreResult<Vec<DomainKeyRecord>> {
        self.run(|c| Box::pin(domain::domain_keys(c)))
    }

    fn begin_domain_rotation(&self, old: &DomainKeyId, new: &DomainKeyRecord) -> StoreResult<bool> {
        let (old, new) = (*old, new.clone());
        self.run(move |c| Box::pin(domain::begin_domain_rotation(c, old, new)))
    }

    fn activate_domain_key(&self, old: &DomainKeyId, new: &DomainKeyId) -> StoreResult<bool> {
        let (old, new) = (*old, *new);
        self.run(move |c| Box::pin(domain::activate_domain_key(c, old, new)))
    }

    fn retire_domain_key(&self, id: &DomainKeyId) -> StoreResult<bool> {
        let id = *id;
        self.run(move |c| Box::pin(domain::retire_domain_key(c, id)))
    }

    fn insert_wrapped_material(&self, wrapped: &WrappedMaterial) -> StoreResult<bool> {
        let wrapped = wrapped.clone();
        self.run(move |c| Box::pin(domain::insert_wrapped_material(c, wrapped)))
    }

    fn get_wrapped_material(&self, material: &MaterialId) -> StoreResult<Option<WrappedMaterial>> {
        let material = *material;
        self.run(move |c| Box::pin(domain::get_wrapped_material(c, material)))
    }

    fn wrapped_under(
        &self,
        domain_key: &DomainKeyId,
        after: Option<&MaterialId>,
        limit: usize,
    ) -> StoreResult<Vec<WrappedMaterial>> {
        let (domain_key, after) = (*domain_key, after.copied());
        self.run(move |c| Box::pin(domain::wrapped_under(c, domain_key, after, limit)))
    }

    fn rewrap_material(
        &self,
        material: &MaterialId,
        from: &DomainKeyId,
        to: &DomainKeyId,
        mechanism: u64,
        blob: &[u8],
    ) -> StoreResult<bool> {
        let (material, from, to, blob) = (*material, *from, *to, blob.to_vec());
        self.run(move |c| {
            Box::pin(domain::rewrap_material(
                c, material, from, to, mechanism, blob,
            ))
        })
    }

    fn delete_wrapped_material(&self, material: &MaterialId) -> StoreResult<()> {
        let material = *material;
        self.run(move |c| Box::pin(domain::delete_wrapped_material(c, material)))
    }

    fn insert_domain_member(&self, member: &DomainMember) -> StoreResult<bool> {
        let member = member.clone();
        self.run(move |c| Box::pin(members::insert(c, member)))
    }

    fn domain_members(&self, domain_id: Option<&str>) -> StoreResult<Vec<DomainMember>> {
        let domain_id = domain_id.map(str::to_owned);
        self.run(move |c| Box::pin(members::list(c, domain_id)))
    }

    fn ping(&self) -> StoreResult<()> {
        self.run(|c| {
            Box::pin(async move {
                c.simple_query("SELECT 1").await.map_err(pg_err)?;
                Ok(())
            })
        })
    }

    fn acquire_job_lease(&self, job: &str, holder: &str, ttl: Duration) -> StoreResult<bool> {
        let (job, holder) = (job.to_string(), holder.to_string());
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        self.run(move |c| Box::pin(leases::acquire(c, job, holder, ttl_ms)))
    }

    fn pool_stats(&self) -> Option<StorePoolStats> {
        let status = self.pool.status();
        Some(StorePoolStats {
            max_size: status.max_size,
            open: status.size,
            in_use: status.size.saturating_sub(status.available),
            waiting: status.waiting,
            waits: self.counters.waits.load(Ordering::Relaxed),
            timeouts: self.counters.timeouts.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> PostgresSettings {
        PostgresSettings {
            url: SecretString::from(url.to_string()),
            pool_size: 2,
            connect_timeout: Duration::from_millis(500),
            checkout_timeout: Duration::from_millis(500),
            statement_timeout: Duration::from_millis(1500),
            ca_file: None,
        }
    }

    #[test]
    fn the_connection_string_gets_the_store_defaults_and_keeps_its_own() {
        let config = connection_config(&settings(
            "postgresql://p11kms:s3cret@127.0.0.1:5433/kms?options=-c%20search_path%3Dkms",
        ))
        .unwrap();
        assert_eq!(
            config.get_connect_timeout(),
            Some(&Duration::from_millis(500))
        );
        assert_eq!(config.get_application_name(), Some("p11kms"));
        assert_eq!(
            config.get_options(),
            Some("-c search_path=kms -c statement_timeout=1500")
        );
        let config = connection_config(&settings(
            "host=/run/postgresql dbname=kms connect_timeout=3 application_name=replica-a",
        ))
        .unwrap();
        assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(3)));
        assert_eq!(config.get_application_name(), Some("replica-a"));
    }

    #[test]
    fn a_bad_connection_string_never_shows_the_password() {
        for url in [
            "postgresql://p11kms:hunter2-secret@127.0.0.1:notaport/kms",
            "host=127.0.0.1 password=hunter2-secret port=notaport",
            "host=127.0.0.1 password=hunter2-secret sslmode=require",
        ] {
            let err = PostgresStore::with_pool(&settings(url)).unwrap_err();
            let text = format!("{} / {err:?}", err.chain());
            assert!(!text.contains("hunter2"), "{text}");
            assert!(matches!(err, StoreError::Backend { .. }), "{text}");
        }
        let debug = format!("{:?}", settings("postgresql://u:hunter2-secret@h/d"));
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn an_unreachable_server_is_unavailable_not_a_backend_error() {
        // A port nothing listens on: bind one, note it, close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("postgresql://p11kms:hunter2-secret@127.0.0.1:{port}/kms");
        let err = PostgresStore::connect(&settings(&url)).unwrap_err();
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
        assert!(!err.chain().contains("hunter2"), "{}", err.chain());
        let kms: crate::error::KmsError = err.into();
        assert_eq!(kms.wire().code, "DependencyTimeoutException");
    }

    /// The store is called from tokio workers too: it must neither panic there (no nested
    /// `block_on`) nor when dropped there.
    #[tokio::test(flavor = "current_thread")]
    async fn calls_and_drop_inside_a_tokio_runtime_do_not_panic() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store =
            PostgresStore::with_pool(&settings(&format!("postgresql://u@127.0.0.1:{port}/d")))
                .unwrap();
        let err = store.ping().unwrap_err();
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
        drop(store);
    }
}
