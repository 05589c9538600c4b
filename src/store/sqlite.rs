//! [`MetadataStore`] on a single SQLite file.
//!
//! One connection behind a mutex: every call is a few microseconds of indexed work, so a
//! pool would add nothing but contention on SQLite's own write lock. Write transactions
//! begin `IMMEDIATE` so that a second process on the same file waits on `busy_timeout`
//! instead of failing with `SQLITE_BUSY` when upgrading a read lock.
//!
//! Integrity the service relies on is enforced by the schema, not only by callers:
//! a key's `current_material` must be one of its own material rows (deferred composite
//! foreign key, since the key and its first material are inserted together), and an alias
//! can only target a key of its own account (composite foreign key on `(account, key_id)`).
//!
//! Error mapping: a uniqueness violation is `AlreadyExists`; a foreign-key violation (the
//! referenced key or material does not exist) is `NotFound`; anything else is `Backend`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use rusqlite::{
    ffi, params, Connection, OptionalExtension, Params, Row, Statement, TransactionBehavior,
};

mod domain;

mod members;

use super::members::DomainMember;
use super::{
    tag_count_after, Changed, KeyChange, MetadataStore, RotationGuard, StoreError, StoreResult,
    TagWrite,
};
use crate::model::{
    AliasRecord, DomainKeyId, DomainKeyRecord, EpochSeconds, GrantRecord, KeyId, KeyRecord,
    KeyState, MaterialId, MaterialOrigin, MaterialRecord, Tag, TokenKeyRef, WrappedMaterial,
};

/// How long a call waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Large enough to hold every statement this file prepares, so none is ever re-prepared.
const STATEMENT_CACHE_CAPACITY: usize = 64;
/// Key rows kept by `get_key`; when full the cache starts over (a working set beyond this
/// many keys only costs the query it would have cost anyway).
const KEY_CACHE_CAPACITY: usize = 4096;
/// How long a cached key row is used before it is read again.
const KEY_CACHE_TTL: Duration = Duration::from_secs(1);

/// Schema migrations; entry `i` takes `user_version` from `i` to `i + 1`.
/// Append only: a released entry must never change.
const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    "
    CREATE TABLE keys (
        key_id               TEXT    NOT NULL PRIMARY KEY,
        account              TEXT    NOT NULL,
        description          TEXT    NOT NULL,
        key_spec             TEXT    NOT NULL,
        key_usage            TEXT    NOT NULL,
        origin               TEXT    NOT NULL,
        state                TEXT    NOT NULL,
        creation_date        REAL    NOT NULL,
        deletion_date        REAL,
        pending_window_days  INTEGER,
        rotation_enabled     INTEGER NOT NULL CHECK (rotation_enabled IN (0, 1)),
        rotation_period_days INTEGER,
        next_rotation_date   REAL,
        current_material     TEXT    NOT NULL,
        policy               TEXT    NOT NULL,
        FOREIGN KEY (key_id, current_material)
            REFERENCES key_materials (key_id, material_id)
            DEFERRABLE INITIALLY DEFERRED
    ) STRICT;

    -- Unique so that aliases can reference (account, key_id); also serves list_keys.
    CREATE UNIQUE INDEX keys_by_account ON keys (account, key_id);
    CREATE INDEX keys_by_deletion ON keys (state, deletion_date, key_id);
    CREATE INDEX keys_by_rotation ON keys (state, rotation_enabled, next_rotation_date, key_id);

    CREATE TABLE key_materials (
        key_id      TEXT NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
        material_id TEXT NOT NULL UNIQUE,
        created     REAL NOT NULL,
        origin      TEXT NOT NULL,
        PRIMARY KEY (key_id, material_id)
    ) STRICT;

    CREATE INDEX key_materials_by_created ON key_materials (key_id, created);

    CREATE TABLE aliases (
        account       TEXT NOT NULL,
        name          TEXT NOT NULL,
        target_key_id TEXT NOT NULL,
        creation_date REAL NOT NULL,
        last_updated  REAL NOT NULL,
        PRIMARY KEY (account, name),
        FOREIGN KEY (account, target_key_id)
            REFERENCES keys (account, key_id) ON DELETE CASCADE
    ) STRICT;

    -- Serves list_aliases by target and the cascade from keys.
    CREATE INDEX aliases_by_target ON aliases (account, target_key_id, name);

    CREATE TABLE tags (
        key_id  TEXT NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
        tag_key TEXT NOT NULL,
        value   TEXT NOT NULL,
        PRIMARY KEY (key_id, tag_key)
    ) STRICT;
    ",
    // 2: adopted token keys (seed files): the HSM object a material id stands for, when
    // p11kms did not create it. Exactly one of CKA_ID (hex) or CKA_LABEL locates it.
    "
    CREATE TABLE adopted_materials (
        material_id  TEXT NOT NULL PRIMARY KEY
                     REFERENCES key_materials (material_id) ON DELETE CASCADE,
        object_id    TEXT UNIQUE,
        object_label TEXT UNIQUE,
        CHECK ((object_id IS NULL) <> (object_label IS NULL))
    ) STRICT;
    ",
    // 3: grants. Operations and constraints are JSON; they are only ever read whole.
    "
    CREATE TABLE grants (
        grant_id           TEXT NOT NULL PRIMARY KEY,
        key_id             TEXT NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
        name               TEXT,
        grantee_principal  TEXT NOT NULL,
        retiring_principal TEXT,
        issuing_account    TEXT NOT NULL,
        operations         TEXT NOT NULL,
        constraints        TEXT NOT NULL,
        creation_date      REAL NOT NULL,
        token_secret       TEXT NOT NULL
    ) STRICT;

    CREATE INDEX grants_by_key ON grants (key_id, grant_id);
    CREATE INDEX grants_by_grantee ON grants (key_id, grantee_principal);
    CREATE INDEX grants_by_retiring ON grants (retiring_principal, grant_id);
    ",
    // 4: domain mode: domain keys and wrapped materials.
    domain::MIGRATION,
    // 5: domain members (the ceremony's record).
    members::MIGRATION,
    // 6: domain keys may be `pending` (a prepared rotation).
    domain::PENDING_MIGRATION,
];

/// Column list of every `SELECT` that yields a [`KeyRecord`]; order matches [`KeyRow::read`].
macro_rules! key_columns {
    () => {
        "key_id, account, description, key_spec, key_usage, origin, state, creation_date, \
         deletion_date, pending_window_days, rotation_enabled, rotation_period_days, \
         next_rotation_date, current_material, policy"
    };
}

/// Column list of every `SELECT` that yields an [`AliasRecord`]; order matches [`read_alias`].
macro_rules! alias_columns {
    () => {
        "account, name, target_key_id, creation_date, last_updated"
    };
}

/// Column list of every `SELECT` that yields a [`MaterialRecord`]; order matches
/// [`read_material`].
macro_rules! material_columns {
    () => {
        "key_id, material_id, created, origin"
    };
}

/// Column list of every `SELECT` that yields a [`GrantRecord`]; order matches [`GrantRow::read`].
macro_rules! grant_columns {
    () => {
        "grant_id, key_id, name, grantee_principal, retiring_principal, issuing_account, \
         operations, constraints, creation_date, token_secret"
    };
}

/// The SQLite metadata store. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// Key rows by id, with when they were read. Every cryptographic request reads its
    /// key; this spares it the query. Writes through this store are seen at once: entries
    /// are filled and dropped only while `conn` is locked, by `get_key` and by every write
    /// to a key. A write by another process on the same file is seen within
    /// [`KEY_CACHE_TTL`].
    keys: RwLock<HashMap<KeyId, (Instant, KeyRecord)>>,
    /// `None` for an in-memory store; kept for `Debug` only.
    path: Option<PathBuf>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path` and brings its schema up to
    /// date. The parent directory must exist.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let conn = Connection::open(path).map_err(db_err)?;
        // WAL lets readers proceed during a write; NORMAL is durable across process crashes
        // and loses at most the last commits on power loss, never corrupts.
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(db_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::backend(format!(
                "cannot enable WAL journal mode on {} (got {mode})",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db_err)?;
        Self::init(conn, Some(path.to_path_buf()))
    }

    /// A private, empty in-memory database, for tests.
    pub fn open_in_memory() -> StoreResult<Self> {
        let conn = Connection::open_in_memory().map_err(db_err)?;
        Self::init(conn, None)
    }

    fn init(mut conn: Connection, path: Option<PathBuf>) -> StoreResult<Self> {
        // Must be set outside a transaction, on every connection: it is not persistent.
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(db_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
        migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            keys: RwLock::new(HashMap::new()),
            path,
        })
    }

    /// The schema version of the open database (`PRAGMA user_version`).
    pub fn schema_version(&self) -> StoreResult<u32> {
        self.conn()
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(db_err)
    }

    /// Drops the cached row of `key_id`; called with `conn` locked, after the write.
    fn forget_key(&self, key_id: &KeyId) {
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key_id);
    }

    /// A panic while the lock was held cannot leave a transaction open (rusqlite rolls back
    /// on drop during unwinding), so a poisoned lock is safe to keep using.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Applies the migrations the file has not seen yet, each in its own transaction together
/// with its `user_version` bump, so a crash leaves the file at a whole version. `IMMEDIATE`
/// makes two processes opening a fresh file at once run the migration exactly once.
fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let latest = MIGRATIONS.len();
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let current: i64 = tx
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(db_err)?;
        let current = usize::try_from(current)
            .map_err(|_| StoreError::backend(format!("invalid schema version {current}")))?;
        if current > latest {
            return Err(StoreError::backend(format!(
                "database schema version {current} is newer than this build supports ({latest})"
            )));
        }
        let Some(sql) = MIGRATIONS.get(current) else {
            return Ok(());
        };
        tx.execute_batch(sql).map_err(|e| {
            StoreError::backend_from(format!("schema migration {}", current + 1), e)
        })?;
        tx.pragma_update(None, "user_version", current + 1)
            .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
    }
}

fn db_err(e: rusqlite::Error) -> StoreError {
    if let Some(failure) = e.sqlite_error() {
        match failure.extended_code {
            ffi::SQLITE_CONSTRAINT_PRIMARYKEY | ffi::SQLITE_CONSTRAINT_UNIQUE => {
                return StoreError::AlreadyExists
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => return StoreError::NotFound,
            _ => {}
        }
        // Another process held the write lock past `BUSY_TIMEOUT`: a dependency that did
        // not answer in time, as a PostgreSQL store's checkout timeout is.
        if failure.code == ffi::ErrorCode::DatabaseBusy {
            return StoreError::unavailable_from("SQLite busy timeout", e);
        }
    }
    StoreError::backend_from("SQLite", e)
}

fn unreadable(column: &str, value: &str) -> StoreError {
    StoreError::backend(format!("unreadable value {value:?} in column {column}"))
}

fn parse_key_id(column: &str, text: &str) -> StoreResult<KeyId> {
    text.parse().map_err(|()| unreadable(column, text))
}

fn parse_material_id(column: &str, text: &str) -> StoreResult<MaterialId> {
    // `MaterialId::from_str` also takes upper case; the store only ever writes lower case.
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(unreadable(column, text));
    }
    text.parse().map_err(|()| unreadable(column, text))
}

fn parse_days(column: &str, value: Option<i64>) -> StoreResult<Option<u32>> {
    value
        .map(|v| u32::try_from(v).map_err(|_| unreadable(column, &v.to_string())))
        .transpose()
}

/// SQLite's `LIMIT` takes an i64; anything larger is "no limit" in practice.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Runs a query, reading each row with `read` (SQL types only, so SQL errors stay rusqlite
/// errors) and then converting it with `convert` (domain parsing, which names the column).
fn query_all<R, T>(
    stmt: &mut Statement<'_>,
    params: impl Params,
    read: fn(&Row<'_>) -> rusqlite::Result<R>,
    convert: fn(R) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let rows = stmt.query_map(params, read).map_err(db_err)?;
    rows.map(|row| row.map_err(db_err).and_then(convert))
        .collect()
}

/// A `keys` row as SQLite hands it back, before domain parsing.
struct KeyRow {
    key_id: String,
    account: String,
    description: String,
    key_spec: String,
    key_usage: String,
    origin: String,
    state: String,
    creation_date: f64,
    deletion_date: Option<f64>,
    pending_window_days: Option<i64>,
    rotation_enabled: bool,
    rotation_period_days: Option<i64>,
    next_rotation_date: Option<f64>,
    current_material: String,
    policy: String,
}

impl KeyRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(KeyRow {
            key_id: row.get(0)?,
            account: row.get(1)?,
            description: row.get(2)?,
            key_spec: row.get(3)?,
            key_usage: row.get(4)?,
            origin: row.get(5)?,
            state: row.get(6)?,
            creation_date: row.get(7)?,
            deletion_date: row.get(8)?,
            pending_window_days: row.get(9)?,
            rotation_enabled: row.get(10)?,
            rotation_period_days: row.get(11)?,
            next_rotation_date: row.get(12)?,
            current_material: row.get(13)?,
            policy: row.get(14)?,
        })
    }

    fn into_record(self) -> StoreResult<KeyRecord> {
        Ok(KeyRecord {
            key_id: parse_key_id("keys.key_id", &self.key_id)?,
            state: KeyState::parse(&self.state)
                .ok_or_else(|| unreadable("keys.state", &self.state))?,
            pending_window_days: parse_days("keys.pending_window_days", self.pending_window_days)?,
            rotation_period_days: parse_days(
                "keys.rotation_period_days",
                self.rotation_period_days,
            )?,
            current_material: parse_material_id("keys.current_material", &self.current_material)?,
            account: self.account,
            description: self.description,
            key_spec: self.key_spec,
            key_usage: self.key_usage,
            origin: self.origin,
            creation_date: self.creation_date,
            deletion_date: self.deletion_date,
            rotation_enabled: self.rotation_enabled,
            next_rotation_date: self.next_rotation_date,
            policy: self.policy,
        })
    }
}

/// A `grants` row as SQLite hands it back, before domain parsing.
struct GrantRow {
    grant_id: String,
    key_id: String,
    name: Option<String>,
    grantee_principal: String,
    retiring_principal: Option<String>,
    issuing_account: String,
    operations: String,
    constraints: String,
    creation_date: f64,
    token_secret: String,
}

impl GrantRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(GrantRow {
            grant_id: row.get(0)?,
            key_id: row.get(1)?,
            name: row.get(2)?,
            grantee_principal: row.get(3)?,
            retiring_principal: row.get(4)?,
            issuing_account: row.get(5)?,
            operations: row.get(6)?,
            constraints: row.get(7)?,
            creation_date: row.get(8)?,
            token_secret: row.get(9)?,
        })
    }

    fn into_record(self) -> StoreResult<GrantRecord> {
        let mut token_secret = [0u8; 16];
        hex::decode_to_slice(&self.token_secret, &mut token_secret)
            .map_err(|_| unreadable("grants.token_secret", "(not shown)"))?;
        Ok(GrantRecord {
            key_id: parse_key_id("grants.key_id", &self.key_id)?,
            operations: serde_json::from_str(&self.operations)
                .map_err(|_| unreadable("grants.operations", &self.operations))?,
            constraints: serde_json::from_str(&self.constraints)
                .map_err(|_| unreadable("grants.constraints", &self.constraints))?,
            grant_id: self.grant_id,
            name: self.name,
            grantee_principal: self.grantee_principal,
            retiring_principal: self.retiring_principal,
            issuing_account: self.issuing_account,
            creation_date: self.creation_date,
            token_secret,
        })
    }
}

/// The key's row as stored now, bypassing the cache.
fn read_key(conn: &Connection, key_id: &KeyId) -> StoreResult<Option<KeyRecord>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        key_columns!(),
        " FROM keys WHERE key_id = ?1"
    ))
    .and_then(|mut stmt| {
        stmt.query_row([key_id.to_string()], KeyRow::read)
            .optional()
    })
    .map_err(db_err)?
    .map(KeyRow::into_record)
    .transpose()
}

/// `allowed` as `,A,B,`: a state matches when `,<state>,` occurs in it.
fn state_list(allowed: &[KeyState]) -> String {
    let mut list = String::from(",");
    for state in allowed {
        list.push_str(state.as_str());
        list.push(',');
    }
    list
}

fn read_material(row: &Row<'_>) -> rusqlite::Result<(String, String, f64, String)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

fn material_record(
    (key_id, material_id, created, origin): (String, String, f64, String),
) -> StoreResult<MaterialRecord> {
    Ok(MaterialRecord {
        key_id: parse_key_id("key_materials.key_id", &key_id)?,
        material_id: parse_material_id("key_materials.material_id", &material_id)?,
        created,
        origin: MaterialOrigin::parse(&origin)
            .ok_or_else(|| unreadable("key_materials.origin", &origin))?,
    })
}

fn read_alias(row: &Row<'_>) -> rusqlite::Result<(String, String, String, f64, f64)> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

fn alias_record(
    (account, name, target, creation_date, last_updated): (String, String, String, f64, f64),
) -> StoreResult<AliasRecord> {
    Ok(AliasRecord {
        target: parse_key_id("aliases.target_key_id", &target)?,
        account,
        name,
        creation_date,
        last_updated,
    })
}

fn read_tag(row: &Row<'_>) -> rusqlite::Result<Tag> {
    Ok(Tag {
        key: row.get(0)?,
        value: row.get(1)?,
    })
}

fn insert_material_row(conn: &Connection, material: &MaterialRecord) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO key_materials (key_id, material_id, created, origin) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            material.key_id.to_string(),
            material.material_id.to_hex(),
            material.created,
            material.origin.as_str(),
        ])
    })
    .map_err(db_err)?;
    Ok(())
}

/// Upserts tags; a repeated tag key in `tags` ends with its last value.
fn upsert_tags(conn: &Connection, key_id: &KeyId, tags: &[Tag]) -> StoreResult<()> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO tags (key_id, tag_key, value) VALUES (?1, ?2, ?3) \
             ON CONFLICT (key_id, tag_key) DO UPDATE SET value = excluded.value",
        )
        .map_err(db_err)?;
    let key_id = key_id.to_string();
    for tag in tags {
        stmt.execute(params![key_id, tag.key, tag.value])
            .map_err(db_err)?;
    }
    Ok(())
}

impl SqliteStore {
    /// `insert_key`, plus an adoption row when `object` is given, in one transaction.
    fn insert_key_with(
        &self,
        key: &KeyRecord,
        material: &MaterialRecord,
        tags: &[Tag],
        object: Option<&TokenKeyRef>,
    ) -> StoreResult<()> {
        // Caught here for a clear message; the schema would also reject both at commit.
        if material.key_id != key.key_id || material.material_id != key.current_material {
            return Err(StoreError::backend(
                "insert_key: the material must belong to the key and be its current material",
            ));
        }
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        tx.prepare_cached(concat!(
            "INSERT INTO keys (",
            key_columns!(),
            ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
        ))
        .and_then(|mut stmt| {
            stmt.execute(params![
                key.key_id.to_string(),
                key.account,
                key.description,
                key.key_spec,
                key.key_usage,
                key.origin,
                key.state.as_str(),
                key.creation_date,
                key.deletion_date,
                key.pending_window_days,
                key.rotation_enabled,
                key.rotation_period_days,
                key.next_rotation_date,
                key.current_material.to_hex(),
                key.policy,
            ])
        })
        .map_err(db_err)?;
        insert_material_row(&tx, material)?;
        upsert_tags(&tx, &key.key_id, tags)?;
        if let Some(object) = object {
            let (id, label) = match object {
                TokenKeyRef::Id(id) => (Some(hex::encode(id)), None),
                TokenKeyRef::Label(label) => (None, Some(label.as_str())),
            };
            tx.prepare_cached(
                "INSERT INTO adopted_materials (material_id, object_id, object_label) \
                 VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut stmt| stmt.execute(params![material.material_id.to_hex(), id, label]))
            .map_err(db_err)?;
        }
        let committed = tx.commit().map_err(db_err);
        self.forget_key(&key.key_id);
        committed
    }
}

impl MetadataStore for SqliteStore {
    fn insert_key(
        &self,
        key: &KeyRecord,
        material: &MaterialRecord,
        tags: &[Tag],
    ) -> StoreResult<()> {
        self.insert_key_with(key, material, tags, None)
    }

    fn insert_adopted_key(
        &self,
        key: &KeyRecord,
        material: &MaterialRecord,
        tags: &[Tag],
        object: &TokenKeyRef,
    ) -> StoreResult<()> {
        self.insert_key_with(key, material, tags, Some(object))
    }

    fn adopted_materials(&self) -> StoreResult<Vec<(MaterialId, TokenKeyRef)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT material_id, object_id, object_label FROM adopted_materials \
                 ORDER BY material_id",
            )
            .map_err(db_err)?;
        query_all(
            &mut stmt,
            [],
            |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Option<String>>(1)?,
                    row.get::<_, Option<String>>(2)?,
                ))
            },
            |(material, id, label)| {
                let material = parse_material_id("adopted_materials.material_id", &material)?;
                let object = match (id, label) {
                    (Some(id), None) => TokenKeyRef::Id(
                        hex::decode(&id)
                            .map_err(|_| unreadable("adopted_materials.object_id", &id))?,
                    ),
                    (None, Some(label)) => TokenKeyRef::Label(label),
                    _ => return Err(unreadable("adopted_materials", &material.to_hex())),
                };
                Ok((material, object))
            },
        )
    }

    fn get_key(&self, key_id: &KeyId) -> StoreResult<Option<KeyRecord>> {
        if let Some((read, key)) = self
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key_id)
        {
            if read.elapsed() < KEY_CACHE_TTL {
                return Ok(Some(key.clone()));
            }
        }
        let conn = self.conn();
        let key = read_key(&conn, key_id)?;
        if let Some(key) = &key {
            let mut cache = self.keys.write().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= KEY_CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(*key_id, (Instant::now(), key.clone()));
        }
        Ok(key)
    }

    fn list_keys(
        &self,
        account: &str,
        after: Option<&KeyId>,
        limit: usize,
    ) -> StoreResult<Vec<KeyRecord>> {
        let conn = self.conn();
        let limit = sql_limit(limit);
        match after {
            None => {
                let mut stmt = conn
                    .prepare_cached(concat!(
                        "SELECT ",
                        key_columns!(),
                        " FROM keys WHERE account = ?1 ORDER BY key_id LIMIT ?2"
                    ))
                    .map_err(db_err)?;
                query_all(
                    &mut stmt,
                    params![account, limit],
                    KeyRow::read,
                    KeyRow::into_record,
                )
            }
            Some(after) => {
                let mut stmt = conn
                    .prepare_cached(concat!(
                        "SELECT ",
                        key_columns!(),
                        " FROM keys WHERE account = ?1 AND key_id > ?2 ORDER BY key_id LIMIT ?3"
                    ))
                    .map_err(db_err)?;
                query_all(
                    &mut stmt,
                    params![account, after.to_string(), limit],
                    KeyRow::read,
                    KeyRow::into_record,
                )
            }
        }
    }

    fn change_key(
        &self,
        key_id: &KeyId,
        change: &KeyChange<'_>,
        allowed: &[KeyState],
    ) -> StoreResult<Changed> {
        use rusqlite::types::Value;
        let (set, values): (&str, Vec<Value>) = match *change {
            KeyChange::State(state) => ("state = ?3", vec![Value::Text(state.as_str().into())]),
            KeyChange::ScheduleDeletion {
                deletion_date,
                pending_window_days,
            } => (
                "state = 'PendingDeletion', deletion_date = ?3, pending_window_days = ?4",
                vec![deletion_date.into(), i64::from(pending_window_days).into()],
            ),
            KeyChange::CancelDeletion => (
                "state = 'Disabled', deletion_date = NULL, pending_window_days = NULL",
                vec![],
            ),
            KeyChange::Description(text) => ("description = ?3", vec![Value::Text(text.into())]),
            KeyChange::Policy(text) => ("policy = ?3", vec![Value::Text(text.into())]),
            KeyChange::EnableRotation {
                period_days,
                next_rotation,
            } => (
                "rotation_enabled = 1, rotation_period_days = ?3, next_rotation_date = ?4",
                vec![i64::from(period_days).into(), next_rotation.into()],
            ),
            KeyChange::DisableRotation => {
                ("rotation_enabled = 0, next_rotation_date = NULL", vec![])
            }
        };
        let sql = format!(
            "UPDATE keys SET {set} WHERE key_id = ?1 AND instr(?2, ',' || state || ',') > 0 \
             RETURNING {}",
            key_columns!()
        );
        let mut params: Vec<Value> = vec![key_id.to_string().into(), state_list(allowed).into()];
        params.extend(values);
        let conn = self.conn();
        let updated = conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| {
                stmt.query_row(rusqlite::params_from_iter(params), KeyRow::read)
                    .optional()
            })
            .map_err(db_err)?;
        self.forget_key(key_id);
        match updated {
            Some(row) => Ok(Changed::Applied(row.into_record()?)),
            None => Ok(Changed::Refused(
                read_key(&conn, key_id)?.ok_or(StoreError::NotFound)?,
            )),
        }
    }

    /// Idempotent: deleting a key that is already gone succeeds, so a deletion sweep
    /// interrupted between this call and destroying the material can simply run again.
    fn delete_key(&self, key_id: &KeyId, due_by: Option<EpochSeconds>) -> StoreResult<bool> {
        let conn = self.conn();
        let removed = conn
            .prepare_cached(
                "DELETE FROM keys WHERE key_id = ?1 AND (?2 IS NULL OR \
                 (state = 'PendingDeletion' AND deletion_date <= ?2))",
            )
            .and_then(|mut stmt| stmt.execute(params![key_id.to_string(), due_by]))
            .map_err(db_err)?;
        self.forget_key(key_id);
        Ok(removed > 0)
    }

    fn add_material(
        &self,
        material: &MaterialRecord,
        next_rotation: Option<EpochSeconds>,
        guard: &RotationGuard<'_>,
    ) -> StoreResult<Changed> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        // Fails with NotFound (foreign key) when the key does not exist.
        insert_material_row(&tx, material)?;
        let updated = tx
            .prepare_cached(concat!(
                "UPDATE keys SET current_material = ?2, next_rotation_date = ?3 \
                 WHERE key_id = ?1 AND instr(?4, ',' || state || ',') > 0 \
                 AND (?5 IS NULL OR (rotation_enabled = 1 AND next_rotation_date <= ?5)) \
                 RETURNING ",
                key_columns!()
            ))
            .and_then(|mut stmt| {
                stmt.query_row(
                    params![
                        material.key_id.to_string(),
                        material.material_id.to_hex(),
                        next_rotation,
                        state_list(guard.allowed),
                        guard.due_by,
                    ],
                    KeyRow::read,
                )
                .optional()
            })
            .map_err(db_err)?;
        let outcome = match updated {
            Some(row) => {
                let key = row.into_record()?;
                tx.commit().map_err(db_err)?;
                Changed::Applied(key)
            }
            None => {
                let current = read_key(&tx, &material.key_id)?.ok_or(StoreError::NotFound)?;
                tx.rollback().map_err(db_err)?;
                Changed::Refused(current)
            }
        };
        self.forget_key(&material.key_id);
        Ok(outcome)
    }

    fn get_material(
        &self,
        key_id: &KeyId,
        material_id: &MaterialId,
    ) -> StoreResult<Option<MaterialRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(concat!(
                "SELECT ",
                material_columns!(),
                " FROM key_materials WHERE key_id = ?1 AND material_id = ?2"
            ))
            .map_err(db_err)?;
        let row = stmt
            .query_row(
                params![key_id.to_string(), material_id.to_hex()],
                read_material,
            )
            .optional()
            .map_err(db_err)?;
        row.map(material_record).transpose()
    }

    fn list_materials(&self, key_id: &KeyId) -> StoreResult<Vec<MaterialRecord>> {
        let conn = self.conn();
        // rowid breaks ties between versions created within the same clock tick.
        let mut stmt = conn
            .prepare_cached(concat!(
                "SELECT ",
                material_columns!(),
                " FROM key_materials WHERE key_id = ?1 ORDER BY created, rowid"
            ))
            .map_err(db_err)?;
        query_all(
            &mut stmt,
            [key_id.to_string()],
            read_material,
            material_record,
        )
    }

    fn all_material_ids(&self) -> StoreResult<Vec<MaterialId>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT material_id FROM key_materials ORDER BY material_id")
            .map_err(db_err)?;
        query_all(
            &mut stmt,
            [],
            |row| row.get::<_, String>(0),
            |text| parse_material_id("key_materials.material_id", &text),
        )
    }

    /// `NotFound` if the target key does not exist in the alias's account.
    fn insert_alias(&self, alias: &AliasRecord) -> StoreResult<()> {
        let conn = self.conn();
        conn.prepare_cached(concat!(
            "INSERT INTO aliases (",
            alias_columns!(),
            ") VALUES (?1, ?2, ?3, ?4, ?5)"
        ))
        .and_then(|mut stmt| {
            stmt.execute(params![
                alias.account,
                alias.name,
                alias.target.to_string(),
                alias.creation_date,
                alias.last_updated,
            ])
        })
        .map_err(db_err)?;
        Ok(())
    }

    fn get_alias(&self, account: &str, name: &str) -> StoreResult<Option<AliasRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(concat!(
                "SELECT ",
                alias_columns!(),
                " FROM aliases WHERE account = ?1 AND name = ?2"
            ))
            .map_err(db_err)?;
        let row = stmt
            .query_row(params![account, name], read_alias)
            .optional()
            .map_err(db_err)?;
        row.map(alias_record).transpose()
    }

    /// Also `NotFound` if `target` does not exist in the account.
    fn update_alias(
        &self,
        account: &str,
        name: &str,
        target: &KeyId,
        now: EpochSeconds,
    ) -> StoreResult<()> {
        let conn = self.conn();
        let changed = conn
            .prepare_cached("UPDATE aliases SET target_key_id = ?3, last_updated = ?4 WHERE account = ?1 AND name = ?2")
            .and_then(|mut stmt| stmt.execute(params![account, name, target.to_string(), now]))
            .map_err(db_err)?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    fn delete_alias(&self, account: &str, name: &str) -> StoreResult<()> {
        let conn = self.conn();
        let changed = conn
            .prepare_cached("DELETE FROM aliases WHERE account = ?1 AND name = ?2")
            .and_then(|mut stmt| stmt.execute(params![account, name]))
            .map_err(db_err)?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    fn list_aliases(
        &self,
        account: &str,
        target: Option<&KeyId>,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<AliasRecord>> {
        let conn = self.conn();
        let limit = sql_limit(limit);
        let target = target.map(KeyId::to_string);
        let (sql, params): (&str, Vec<&dyn rusqlite::ToSql>) = match (&target, &after) {
            (None, None) => (
                concat!(
                    "SELECT ",
                    alias_columns!(),
                    " FROM aliases WHERE account = ?1 ORDER BY name LIMIT ?2"
                ),
                vec![&account, &limit],
            ),
            (None, Some(after)) => (
                concat!(
                    "SELECT ",
                    alias_columns!(),
                    " FROM aliases WHERE account = ?1 AND name > ?2 ORDER BY name LIMIT ?3"
                ),
                vec![&account, after, &limit],
            ),
            (Some(target), None) => (
                concat!(
                    "SELECT ",
                    alias_columns!(),
                    " FROM aliases WHERE account = ?1 AND target_key_id = ?2 ORDER BY name LIMIT ?3"
                ),
                vec![&account, target, &limit],
            ),
            (Some(target), Some(after)) => (
                concat!(
                    "SELECT ",
                    alias_columns!(),
                    " FROM aliases WHERE account = ?1 AND target_key_id = ?2 AND name > ?3 \
                     ORDER BY name LIMIT ?4"
                ),
                vec![&account, target, after, &limit],
            ),
        };
        let mut stmt = conn.prepare_cached(sql).map_err(db_err)?;
        query_all(&mut stmt, params.as_slice(), read_alias, alias_record)
    }

    /// `NotFound` if the key does not exist.
    fn put_tags(&self, key_id: &KeyId, tags: &[Tag], max_tags: usize) -> StoreResult<TagWrite> {
        let mut conn = self.conn();
        // IMMEDIATE takes the write lock first, so no other writer changes the count between
        // the read below and the upsert.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let existing: Vec<String> = {
            let mut stmt = tx
                .prepare_cached("SELECT tag_key FROM tags WHERE key_id = ?1")
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![key_id.to_string()], |row| row.get(0))
                .map_err(db_err)?;
            rows.collect::<Result<_, _>>().map_err(db_err)?
        };
        if tag_count_after(&existing, tags) > max_tags {
            return Ok(TagWrite::OverQuota);
        }
        upsert_tags(&tx, key_id, tags)?;
        tx.commit().map_err(db_err)?;
        Ok(TagWrite::Written)
    }

    /// Tag keys that are not present are ignored, as AWS `UntagResource` does.
    fn remove_tags(&self, key_id: &KeyId, tag_keys: &[String]) -> StoreResult<()> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        {
            let mut stmt = tx
                .prepare_cached("DELETE FROM tags WHERE key_id = ?1 AND tag_key = ?2")
                .map_err(db_err)?;
            let key_id = key_id.to_string();
            for tag_key in tag_keys {
                stmt.execute(params![key_id, tag_key]).map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)
    }

    fn list_tags(
        &self,
        key_id: &KeyId,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Tag>> {
        let conn = self.conn();
        let limit = sql_limit(limit);
        let key_id = key_id.to_string();
        match after {
            None => {
                let mut stmt = conn
                    .prepare_cached("SELECT tag_key, value FROM tags WHERE key_id = ?1 ORDER BY tag_key LIMIT ?2")
                    .map_err(db_err)?;
                query_all(&mut stmt, params![key_id, limit], read_tag, Ok)
            }
            Some(after) => {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT tag_key, value FROM tags WHERE key_id = ?1 AND tag_key > ?2 \
                         ORDER BY tag_key LIMIT ?3",
                    )
                    .map_err(db_err)?;
                query_all(&mut stmt, params![key_id, after, limit], read_tag, Ok)
            }
        }
    }

    fn insert_grant(&self, grant: &GrantRecord) -> StoreResult<()> {
        let operations = serde_json::to_string(&grant.operations)
            .map_err(|e| StoreError::backend_from("grants.operations", e))?;
        let constraints = serde_json::to_string(&grant.constraints)
            .map_err(|e| StoreError::backend_from("grants.constraints", e))?;
        let conn = self.conn();
        conn.prepare_cached(concat!(
            "INSERT INTO grants (",
            grant_columns!(),
            ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
        ))
        .and_then(|mut stmt| {
            stmt.execute(params![
                grant.grant_id,
                grant.key_id.to_string(),
                grant.name,
                grant.grantee_principal,
                grant.retiring_principal,
                grant.issuing_account,
                operations,
                constraints,
                grant.creation_date,
                hex::encode(grant.token_secret),
            ])
        })
        .map_err(db_err)?;
        Ok(())
    }

    fn get_grant(&self, grant_id: &str) -> StoreResult<Option<GrantRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(concat!(
                "SELECT ",
                grant_columns!(),
                " FROM grants WHERE grant_id = ?1"
            ))
            .map_err(db_err)?;
        let row = stmt
            .query_row(params![grant_id], GrantRow::read)
            .optional()
            .map_err(db_err)?;
        row.map(GrantRow::into_record).transpose()
    }

    fn list_grants(
        &self,
        key_id: &KeyId,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<GrantRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(concat!(
                "SELECT ",
                grant_columns!(),
                " FROM grants WHERE key_id = ?1 AND grant_id > ?2 ORDER BY grant_id LIMIT ?3"
            ))
            .map_err(db_err)?;
        query_all(
            &mut stmt,
            params![key_id.to_string(), after.unwrap_or(""), sql_limit(limit)],
            GrantRow::read,
            GrantRow::into_record,
        )
    }

    fn count_grants(&self, key_id: &KeyId) -> StoreResult<u64> {
        let conn = self.conn();
        let count: i64 = conn
            .prepare_cached("SELECT COUNT(*) FROM grants WHERE key_id = ?1")
            .and_then(|mut stmt| stmt.query_row(params![key_id.to_string()], |row| row.get(0)))
            .map_err(db_err)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    fn grants_for_grantee(&self, key_id: &KeyId, grantee: &str) -> StoreResult<Vec<GrantRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(concat!(
                "SELECT ",
                grant_columns!(),
                " FROM grants WHERE key_id = ?1 AND grantee_principal = ?2 ORDER BY grant_id"
            ))
            .map_err(db_err)?;
        query_all(
            &mut stmt,
            params![key_id.to_string(), grantee],
            GrantRow::read,
            GrantRow::into_record,
        )
    }

    fn grants_named(&self, key_id: &KeyId, name: &str) -> StoreResult<Vec<GrantRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(concat!(
                "SELECT ",
                grant_columns!(),
                " FROM grants WHERE key_id = ?1 AND name = ?2 ORDER BY grant_id"
            ))
            .map_err(db_err)?;
        query_all(
            &mut stmt,
            params![key_id.to_string(), name],
            GrantRow::read,
            GrantRow::into_record,
        )
    }

    fn list_retirable_grants(
        &self,
        principal: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<GrantRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(concat!(
                "SELECT ",
                grant_columns!(),
                " FROM grants WHERE retiring_principal = ?1 AND grant_id > ?2 \
                 ORDER BY grant_id LIMIT ?3"
            ))
            .map_err(db_err)?;
        query_all(
            &mut stmt,
            params![principal, after.unwrap_or(""), sql_limit(limit)],
            GrantRow::read,
            GrantRow::into_record,
        )
    }

    fn delete_grant(&self, grant_id: &str) -> StoreResult<()> {
        let conn = self.conn();
        let changed = conn
            .prepare_cached("DELETE FROM grants WHERE grant_id = ?1")
            .and_then(|mut stmt| stmt.execute(params![grant_id]))
            .map_err(db_err)?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    fn keys_due_for_deletion(&self, now: EpochSeconds) -> StoreResult<Vec<KeyRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(concat!(
                "SELECT ",
                key_columns!(),
                " FROM keys WHERE state = ?1 AND deletion_date <= ?2 ORDER BY deletion_date, key_id"
            ))
            .map_err(db_err)?;
        query_all(
            &mut stmt,
            params![KeyState::PendingDeletion.as_str(), now],
            KeyRow::read,
            KeyRow::into_record,
        )
    }

    fn keys_due_for_rotation(&self, now: EpochSeconds) -> StoreResult<Vec<KeyRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(concat!(
                "SELECT ",
                key_columns!(),
                " FROM keys WHERE state = ?1 AND rotation_enabled = 1 AND next_rotation_date <= ?2 \
                 ORDER BY next_rotation_date, key_id"
            ))
            .map_err(db_err)?;
        query_all(
            &mut stmt,
            params![KeyState::Enabled.as_str(), now],
            KeyRow::read,
            KeyRow::into_record,
        )
    }

    fn count_keys_by_state(&self) -> StoreResult<Vec<(KeyState, u64)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT state, COUNT(*) FROM keys GROUP BY state")
            .map_err(db_err)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })
            .map_err(db_err)?;
        let mut out = Vec::new();
        for row in rows {
            let (state, count) = row.map_err(db_err)?;
            let state = KeyState::parse(&state).ok_or_else(|| {
                StoreError::backend(format!("keys.state: unknown value '{state}'"))
            })?;
            out.push((state, u64::try_from(count).unwrap_or(0)));
        }
        Ok(out)
    }

    fn insert_domain_key(&self, key: &DomainKeyRecord) -> StoreResult<bool> {
        domain::insert_domain_key(&self.conn(), key)
    }

    fn domain_keys(&self) -> StoreResult<Vec<DomainKeyRecord>> {
        domain::domain_keys(&self.conn())
    }

    fn begin_domain_rotation(&self, old: &DomainKeyId, new: &DomainKeyRecord) -> StoreResult<bool> {
        domain::begin_domain_rotation(&mut self.conn(), old, new)
    }

    fn activate_domain_key(&self, old: &DomainKeyId, new: &DomainKeyId) -> StoreResult<bool> {
        domain::activate_domain_key(&mut self.conn(), old, new)
    }

    fn retire_domain_key(&self, id: &DomainKeyId) -> StoreResult<bool> {
        domain::retire_domain_key(&self.conn(), id)
    }

    fn insert_wrapped_material(&self, wrapped: &WrappedMaterial) -> StoreResult<bool> {
        domain::insert_wrapped_material(&self.conn(), wrapped)
    }

    fn get_wrapped_material(&self, material: &MaterialId) -> StoreResult<Option<WrappedMaterial>> {
        domain::get_wrapped_material(&self.conn(), material)
    }

    fn wrapped_under(
        &self,
        domain_key: &DomainKeyId,
        after: Option<&MaterialId>,
        limit: usize,
    ) -> StoreResult<Vec<WrappedMaterial>> {
        domain::wrapped_under(&self.conn(), domain_key, after, limit)
    }

    fn rewrap_material(
        &self,
        material: &MaterialId,
        from: &DomainKeyId,
        to: &DomainKeyId,
        mechanism: u64,
        blob: &[u8],
    ) -> StoreResult<bool> {
        domain::rewrap_material(&self.conn(), material, from, to, mechanism, blob)
    }

    fn delete_wrapped_material(&self, material: &MaterialId) -> StoreResult<()> {
        domain::delete_wrapped_material(&self.conn(), material)
    }

    fn insert_domain_member(&self, member: &DomainMember) -> StoreResult<bool> {
        members::insert(&self.conn(), member)
    }

    fn domain_members(&self, domain_id: Option<&str>) -> StoreResult<Vec<DomainMember>> {
        members::list(&self.conn(), domain_id)
    }

    fn ping(&self) -> StoreResult<()> {
        let conn = self.conn();
        conn.prepare_cached("SELECT 1")
            .and_then(|mut stmt| stmt.query_row([], |row| row.get::<_, i64>(0)))
            .map_err(db_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! What only the SQLite store has: its file, pragmas and migrations. What every store
    //! must do is the shared suite in `tests/store_suite` (run against SQLite and PostgreSQL).

    use super::*;
    use tempfile::TempDir;

    const ACCOUNT: &str = "111122223333";

    fn key_id(n: u8) -> KeyId {
        KeyId::from_bytes([n; 16])
    }

    fn material_id(n: u8) -> MaterialId {
        MaterialId([n; 32])
    }

    /// A key with every optional field unset.
    fn minimal_key(account: &str, id: KeyId, material: MaterialId) -> KeyRecord {
        KeyRecord {
            key_id: id,
            account: account.to_string(),
            description: String::new(),
            key_spec: "SYMMETRIC_DEFAULT".into(),
            key_usage: "ENCRYPT_DECRYPT".into(),
            origin: "AWS_KMS".into(),
            state: KeyState::Enabled,
            creation_date: 1_700_000_000.0,
            deletion_date: None,
            pending_window_days: None,
            rotation_enabled: false,
            rotation_period_days: None,
            next_rotation_date: None,
            current_material: material,
            policy: "{}".into(),
        }
    }

    /// A key with every optional field set.
    fn full_key(account: &str, id: KeyId, material: MaterialId) -> KeyRecord {
        KeyRecord {
            description: "full key – ünïcode".into(),
            state: KeyState::PendingDeletion,
            creation_date: 1_700_000_000.125,
            deletion_date: Some(1_700_600_000.5),
            pending_window_days: Some(7),
            rotation_enabled: true,
            rotation_period_days: Some(365),
            next_rotation_date: Some(1_731_536_000.25),
            policy: r#"{"Version":"2012-10-17","Statement":[]}"#.into(),
            ..minimal_key(account, id, material)
        }
    }

    fn initial_material(key: &KeyRecord) -> MaterialRecord {
        MaterialRecord {
            key_id: key.key_id,
            material_id: key.current_material,
            created: key.creation_date,
            origin: MaterialOrigin::Initial,
        }
    }

    fn tag(k: &str, v: &str) -> Tag {
        Tag {
            key: k.into(),
            value: v.into(),
        }
    }

    fn insert(store: &SqliteStore, key: &KeyRecord) {
        store.insert_key(key, &initial_material(key), &[]).unwrap();
    }

    #[test]
    fn store_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<SqliteStore>();
    }

    #[test]
    fn open_sets_pragmas_and_schema_version() {
        let dir = TempDir::new().unwrap();
        let store = SqliteStore::open(&dir.path().join("meta.db")).unwrap();
        assert_eq!(store.schema_version().unwrap() as usize, MIGRATIONS.len());
        let conn = store.conn();
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 1, "synchronous=NORMAL");
        let fk: bool = conn
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .unwrap();
        assert!(fk);
        let timeout: i64 = conn
            .pragma_query_value(None, "busy_timeout", |r| r.get(0))
            .unwrap();
        assert_eq!(timeout, 5000);
    }

    #[test]
    fn open_fails_when_parent_dir_is_missing() {
        let dir = TempDir::new().unwrap();
        let err = SqliteStore::open(&dir.path().join("missing").join("meta.db")).unwrap_err();
        assert!(matches!(err, StoreError::Backend { .. }), "{err:?}");
    }

    #[test]
    fn reopening_keeps_data_and_does_not_rerun_migration() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("meta.db");
        let key = full_key(ACCOUNT, key_id(1), material_id(1));
        {
            let store = SqliteStore::open(&path).unwrap();
            store
                .insert_key(&key, &initial_material(&key), &[tag("a", "1")])
                .unwrap();
            store
                .insert_alias(&AliasRecord {
                    account: ACCOUNT.into(),
                    name: "alias/keep".into(),
                    target: key.key_id,
                    creation_date: 1.0,
                    last_updated: 2.0,
                })
                .unwrap();
        }
        // The migrations have no IF NOT EXISTS: re-running one would fail the open.
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap() as usize, MIGRATIONS.len());
        assert_eq!(store.get_key(&key.key_id).unwrap(), Some(key.clone()));
        assert_eq!(
            store.list_tags(&key.key_id, None, 10).unwrap(),
            vec![tag("a", "1")]
        );
        assert_eq!(
            store
                .get_alias(ACCOUNT, "alias/keep")
                .unwrap()
                .unwrap()
                .last_updated,
            2.0
        );
        assert_eq!(
            store.list_materials(&key.key_id).unwrap(),
            vec![initial_material(&key)]
        );
    }

    /// Another process holding the write lock past `BUSY_TIMEOUT` is a dependency that did
    /// not answer in time (DependencyTimeoutException), not an internal error.
    #[test]
    fn a_write_lock_held_past_the_busy_timeout_is_unavailable() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("meta.db");
        let store = SqliteStore::open(&path).unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let key = minimal_key(ACCOUNT, key_id(1), material_id(1));
        let started = Instant::now();
        let err = store
            .insert_key(&key, &initial_material(&key), &[])
            .unwrap_err();
        assert!(started.elapsed() >= BUSY_TIMEOUT, "{:?}", started.elapsed());
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
        let kms: crate::error::KmsError = err.into();
        assert_eq!(kms.wire().code, "DependencyTimeoutException");
        other.execute_batch("ROLLBACK").unwrap();
        insert(&store, &key);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("meta.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", 99).unwrap();
        }
        let err = SqliteStore::open(&path).unwrap_err();
        assert!(
            matches!(&err, StoreError::Backend { message, .. } if message.contains("newer")),
            "{err:?}"
        );
    }

    /// Writes bypassing the schema's checks, to simulate a damaged or foreign file.
    fn corrupt(store: &SqliteStore, sql: &str) {
        let conn = store.conn();
        conn.pragma_update(None, "foreign_keys", false).unwrap();
        conn.execute_batch(sql).unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
    }

    fn assert_names_column(result: StoreResult<impl std::fmt::Debug>, column: &str) {
        match result {
            Err(StoreError::Backend { message, .. }) => {
                assert!(message.contains(column), "{message}")
            }
            other => panic!("expected a Backend error naming {column}, got {other:?}"),
        }
    }

    #[test]
    fn unreadable_rows_are_backend_errors_naming_the_column() {
        let store = SqliteStore::open_in_memory().unwrap();
        // Hex letters in the id, so that upper-casing it below changes it.
        let key = minimal_key(ACCOUNT, key_id(0xab), material_id(0xab));
        insert(&store, &key);
        let id = key.key_id.to_string();

        corrupt(
            &store,
            &format!("UPDATE keys SET state = 'Melted' WHERE key_id = '{id}'"),
        );
        assert_names_column(store.get_key(&key.key_id), "keys.state");
        assert_names_column(store.list_keys(ACCOUNT, None, 10), "keys.state");
        corrupt(
            &store,
            &format!("UPDATE keys SET state = 'Enabled' WHERE key_id = '{id}'"),
        );

        corrupt(
            &store,
            &format!("UPDATE keys SET pending_window_days = -1 WHERE key_id = '{id}'"),
        );
        assert_names_column(store.get_key(&key.key_id), "keys.pending_window_days");
        corrupt(
            &store,
            &format!("UPDATE keys SET pending_window_days = NULL WHERE key_id = '{id}'"),
        );

        corrupt(
            &store,
            &format!("UPDATE key_materials SET origin = 'STOLEN' WHERE key_id = '{id}'"),
        );
        assert_names_column(store.list_materials(&key.key_id), "key_materials.origin");

        corrupt(&store, "UPDATE key_materials SET material_id = 'zz'");
        assert_names_column(store.all_material_ids(), "key_materials.material_id");

        corrupt(
            &store,
            "INSERT INTO aliases VALUES ('111122223333', 'alias/bad', 'not-a-uuid', 1.0, 1.0)",
        );
        assert_names_column(
            store.get_alias(ACCOUNT, "alias/bad"),
            "aliases.target_key_id",
        );

        // Upper-case ids are not canonical: the store never writes them.
        let upper = id.to_uppercase();
        corrupt(
            &store,
            &format!("UPDATE keys SET key_id = '{upper}' WHERE key_id = '{id}'"),
        );
        assert_names_column(store.list_keys(ACCOUNT, None, 10), "keys.key_id");
    }
}
