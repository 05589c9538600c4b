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

use super::{Changed, KeyChange, MetadataStore, RotationGuard, StoreError, StoreResult};
use crate::model::{
    AliasRecord, EpochSeconds, GrantRecord, KeyId, KeyRecord, KeyState, MaterialId, MaterialOrigin,
    MaterialRecord, Tag, TokenKeyRef,
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
            return Err(StoreError::Backend(format!(
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
            .map_err(|_| StoreError::Backend(format!("invalid schema version {current}")))?;
        if current > latest {
            return Err(StoreError::Backend(format!(
                "database schema version {current} is newer than this build supports ({latest})"
            )));
        }
        let Some(sql) = MIGRATIONS.get(current) else {
            return Ok(());
        };
        tx.execute_batch(sql)
            .map_err(|e| StoreError::Backend(format!("schema migration {}: {e}", current + 1)))?;
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
    }
    StoreError::Backend(e.to_string())
}

fn unreadable(column: &str, value: &str) -> StoreError {
    StoreError::Backend(format!("unreadable value {value:?} in column {column}"))
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
            return Err(StoreError::Backend(
                "insert_key: the material must belong to the key and be its current material"
                    .into(),
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
    fn put_tags(&self, key_id: &KeyId, tags: &[Tag]) -> StoreResult<()> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        upsert_tags(&tx, key_id, tags)?;
        tx.commit().map_err(db_err)
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
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let constraints = serde_json::to_string(&grant.constraints)
            .map_err(|e| StoreError::Backend(e.to_string()))?;
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
                StoreError::Backend(format!("keys.state: unknown value '{state}'"))
            })?;
            out.push((state, u64::try_from(count).unwrap_or(0)));
        }
        Ok(out)
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
    use super::*;
    use tempfile::TempDir;

    const ACCOUNT: &str = "111122223333";
    const OTHER_ACCOUNT: &str = "444455556666";

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

    const ALL_STATES: &[KeyState] = &[
        KeyState::Creating,
        KeyState::Enabled,
        KeyState::Disabled,
        KeyState::PendingDeletion,
        KeyState::PendingImport,
        KeyState::Unavailable,
    ];
    const ANY_STATE: RotationGuard<'static> = RotationGuard {
        allowed: ALL_STATES,
        due_by: None,
    };

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

    /// Runs `check` against an in-memory store and a file-backed one.
    fn both(check: impl Fn(&SqliteStore)) {
        check(&SqliteStore::open_in_memory().unwrap());
        let dir = TempDir::new().unwrap();
        check(&SqliteStore::open(&dir.path().join("meta.db")).unwrap());
    }

    #[test]
    fn a_cached_key_row_follows_every_write_to_the_key() {
        both(|store| {
            let key = minimal_key(ACCOUNT, key_id(7), material_id(7));
            insert(store, &key);
            // Read once so the row is cached, then change it each way a key changes.
            assert_eq!(store.get_key(&key.key_id).unwrap(), Some(key.clone()));
            let disabled = KeyRecord {
                state: KeyState::Disabled,
                policy: r#"{"Statement":[]}"#.into(),
                ..key.clone()
            };
            store
                .change_key(
                    &key.key_id,
                    &KeyChange::State(KeyState::Disabled),
                    ALL_STATES,
                )
                .unwrap();
            store
                .change_key(
                    &key.key_id,
                    &KeyChange::Policy(&disabled.policy),
                    ALL_STATES,
                )
                .unwrap();
            assert_eq!(store.get_key(&key.key_id).unwrap(), Some(disabled.clone()));

            let rotated = MaterialRecord {
                key_id: key.key_id,
                material_id: material_id(8),
                created: key.creation_date + 1.0,
                origin: MaterialOrigin::OnDemand,
            };
            store.add_material(&rotated, None, &ANY_STATE).unwrap();
            let got = store.get_key(&key.key_id).unwrap().unwrap();
            assert_eq!(got.current_material, rotated.material_id);

            store.delete_key(&key.key_id, None).unwrap();
            assert_eq!(store.get_key(&key.key_id).unwrap(), None);
        });
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
        assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    }

    #[test]
    fn key_round_trip_with_optional_fields_set_and_unset() {
        both(|store| {
            let minimal = minimal_key(ACCOUNT, key_id(1), material_id(1));
            let full = full_key(ACCOUNT, key_id(2), material_id(2));
            insert(store, &minimal);
            store
                .insert_key(
                    &full,
                    &initial_material(&full),
                    &[tag("a", "1"), tag("b", "")],
                )
                .unwrap();
            assert_eq!(
                store.get_key(&minimal.key_id).unwrap(),
                Some(minimal.clone())
            );
            assert_eq!(store.get_key(&full.key_id).unwrap(), Some(full.clone()));
            assert_eq!(store.get_key(&key_id(3)).unwrap(), None);
            assert_eq!(
                store.list_tags(&full.key_id, None, 10).unwrap(),
                vec![tag("a", "1"), tag("b", "")]
            );
            assert!(store
                .list_tags(&minimal.key_id, None, 10)
                .unwrap()
                .is_empty());
        });
    }

    #[test]
    fn insert_key_is_atomic_and_rejects_duplicates() {
        both(|store| {
            let key = minimal_key(ACCOUNT, key_id(1), material_id(1));
            insert(store, &key);
            // Same key id again.
            let again = minimal_key(ACCOUNT, key_id(1), material_id(2));
            let err = store
                .insert_key(&again, &initial_material(&again), &[])
                .unwrap_err();
            assert!(matches!(err, StoreError::AlreadyExists), "{err:?}");
            // New key id but a material id already used: nothing of the new key may remain.
            let clash = minimal_key(ACCOUNT, key_id(2), material_id(1));
            let err = store
                .insert_key(&clash, &initial_material(&clash), &[tag("t", "v")])
                .unwrap_err();
            assert!(matches!(err, StoreError::AlreadyExists), "{err:?}");
            assert_eq!(store.get_key(&key_id(2)).unwrap(), None);
            assert!(store.list_tags(&key_id(2), None, 10).unwrap().is_empty());
            // A material that is not the key's current one is refused.
            let key3 = minimal_key(ACCOUNT, key_id(3), material_id(3));
            let mut wrong = initial_material(&key3);
            wrong.material_id = material_id(4);
            assert!(matches!(
                store.insert_key(&key3, &wrong, &[]),
                Err(StoreError::Backend(_))
            ));
            assert_eq!(store.get_key(&key_id(3)).unwrap(), None);
            assert_eq!(store.all_material_ids().unwrap(), vec![material_id(1)]);
        });
    }

    #[test]
    fn each_key_change_sets_only_its_own_columns() {
        both(|store| {
            let key = minimal_key(ACCOUNT, key_id(1), material_id(1));
            insert(store, &key);
            let applied = |change: KeyChange<'_>| match store
                .change_key(&key.key_id, &change, ALL_STATES)
                .unwrap()
            {
                Changed::Applied(now) => {
                    assert_eq!(store.get_key(&key.key_id).unwrap().as_ref(), Some(&now));
                    now
                }
                Changed::Refused(now) => panic!("refused: {now:?}"),
            };
            let mut want = key.clone();
            want.description = "new".into();
            assert_eq!(applied(KeyChange::Description("new")), want);
            want.policy = "{}".into();
            assert_eq!(applied(KeyChange::Policy("{}")), want);
            want.rotation_enabled = true;
            want.rotation_period_days = Some(90);
            want.next_rotation_date = Some(5.5);
            let enable = KeyChange::EnableRotation {
                period_days: 90,
                next_rotation: 5.5,
            };
            assert_eq!(applied(enable), want);
            want.rotation_enabled = false;
            want.next_rotation_date = None;
            assert_eq!(applied(KeyChange::DisableRotation), want);
            want.state = KeyState::PendingDeletion;
            want.deletion_date = Some(9.25);
            want.pending_window_days = Some(7);
            let schedule = KeyChange::ScheduleDeletion {
                deletion_date: 9.25,
                pending_window_days: 7,
            };
            assert_eq!(applied(schedule), want);
            want.state = KeyState::Disabled;
            want.deletion_date = None;
            want.pending_window_days = None;
            assert_eq!(applied(KeyChange::CancelDeletion), want);
            want.state = KeyState::Enabled;
            assert_eq!(applied(KeyChange::State(KeyState::Enabled)), want);

            let missing = KeyChange::State(KeyState::Disabled);
            assert!(matches!(
                store.change_key(&key_id(9), &missing, ALL_STATES),
                Err(StoreError::NotFound)
            ));
        });
    }

    #[test]
    fn a_key_change_is_refused_unless_the_key_is_in_an_allowed_state() {
        both(|store| {
            let key = minimal_key(ACCOUNT, key_id(1), material_id(1));
            insert(store, &key);
            let schedule = KeyChange::ScheduleDeletion {
                deletion_date: 9.0,
                pending_window_days: 7,
            };
            let manageable = &[KeyState::Enabled, KeyState::Disabled];
            let Changed::Applied(pending) = store
                .change_key(&key.key_id, &schedule, manageable)
                .unwrap()
            else {
                panic!("an Enabled key can be scheduled for deletion");
            };
            // Re-enabling a key pending deletion is refused, and nothing changes.
            let enable = KeyChange::State(KeyState::Enabled);
            assert_eq!(
                store.change_key(&key.key_id, &enable, manageable).unwrap(),
                Changed::Refused(pending.clone())
            );
            assert_eq!(store.get_key(&key.key_id).unwrap(), Some(pending));
        });
    }

    #[test]
    fn a_rotation_is_refused_when_the_key_fails_its_guard() {
        both(|store| {
            let key = minimal_key(ACCOUNT, key_id(1), material_id(1));
            insert(store, &key);
            let rotated = MaterialRecord {
                key_id: key.key_id,
                material_id: material_id(2),
                created: 10.0,
                origin: MaterialOrigin::Automatic,
            };
            // Not due: rotation is not enabled on the key.
            let due = RotationGuard {
                allowed: ALL_STATES,
                due_by: Some(100.0),
            };
            let outcome = store.add_material(&rotated, Some(200.0), &due).unwrap();
            assert_eq!(outcome, Changed::Refused(key.clone()));
            // Not in an allowed state.
            let enabled_only = RotationGuard {
                allowed: &[KeyState::Disabled],
                due_by: None,
            };
            let outcome = store.add_material(&rotated, None, &enabled_only).unwrap();
            assert_eq!(outcome, Changed::Refused(key.clone()));
            // Neither attempt left a material row behind.
            assert_eq!(store.list_materials(&key.key_id).unwrap().len(), 1);
            assert_eq!(store.get_key(&key.key_id).unwrap(), Some(key));
        });
    }

    #[test]
    fn a_due_deletion_skips_a_key_no_longer_pending_deletion() {
        both(|store| {
            let key = minimal_key(ACCOUNT, key_id(1), material_id(1));
            insert(store, &key);
            assert!(!store.delete_key(&key.key_id, Some(100.0)).unwrap());
            let schedule = KeyChange::ScheduleDeletion {
                deletion_date: 50.0,
                pending_window_days: 7,
            };
            store
                .change_key(&key.key_id, &schedule, ALL_STATES)
                .unwrap();
            assert!(!store.delete_key(&key.key_id, Some(49.0)).unwrap());
            assert!(store.delete_key(&key.key_id, Some(50.0)).unwrap());
            assert_eq!(store.get_key(&key.key_id).unwrap(), None);
        });
    }

    #[test]
    fn material_round_trip_and_add_material() {
        both(|store| {
            let key = full_key(ACCOUNT, key_id(1), material_id(1));
            insert(store, &key);
            let first = initial_material(&key);
            assert_eq!(
                store.get_material(&key.key_id, &first.material_id).unwrap(),
                Some(first.clone())
            );

            let second = MaterialRecord {
                key_id: key.key_id,
                material_id: material_id(2),
                created: key.creation_date + 10.0,
                origin: MaterialOrigin::OnDemand,
            };
            store
                .add_material(&second, Some(2_000_000_000.0), &ANY_STATE)
                .unwrap();
            let got = store.get_key(&key.key_id).unwrap().unwrap();
            assert_eq!(got.current_material, second.material_id);
            assert_eq!(got.next_rotation_date, Some(2_000_000_000.0));

            // Same creation time as the second: insertion order decides.
            let third = MaterialRecord {
                material_id: material_id(0),
                origin: MaterialOrigin::Automatic,
                ..second.clone()
            };
            store.add_material(&third, None, &ANY_STATE).unwrap();
            let got = store.get_key(&key.key_id).unwrap().unwrap();
            assert_eq!(got.current_material, third.material_id);
            assert_eq!(got.next_rotation_date, None);

            assert_eq!(
                store.list_materials(&key.key_id).unwrap(),
                vec![first.clone(), second.clone(), third.clone()]
            );
            assert_eq!(
                store.get_material(&key.key_id, &material_id(2)).unwrap(),
                Some(second.clone())
            );
            // A material is only found under its own key.
            assert_eq!(
                store.get_material(&key_id(2), &material_id(2)).unwrap(),
                None
            );
            let mut ids = store.all_material_ids().unwrap();
            ids.sort();
            assert_eq!(ids, vec![material_id(0), material_id(1), material_id(2)]);

            // Duplicate material id, and a material for a key that does not exist.
            assert!(matches!(
                store.add_material(&second, None, &ANY_STATE),
                Err(StoreError::AlreadyExists)
            ));
            let orphan = MaterialRecord {
                key_id: key_id(7),
                material_id: material_id(7),
                ..second.clone()
            };
            assert!(matches!(
                store.add_material(&orphan, None, &ANY_STATE),
                Err(StoreError::NotFound)
            ));
            assert_eq!(
                store
                    .get_key(&key.key_id)
                    .unwrap()
                    .unwrap()
                    .current_material,
                material_id(0)
            );
        });
    }

    #[test]
    fn alias_round_trip_update_and_delete() {
        both(|store| {
            insert(store, &minimal_key(ACCOUNT, key_id(1), material_id(1)));
            insert(store, &minimal_key(ACCOUNT, key_id(2), material_id(2)));
            let alias = AliasRecord {
                account: ACCOUNT.into(),
                name: "alias/app".into(),
                target: key_id(1),
                creation_date: 1_700_000_000.5,
                last_updated: 1_700_000_000.5,
            };
            store.insert_alias(&alias).unwrap();
            assert_eq!(
                store.get_alias(ACCOUNT, "alias/app").unwrap(),
                Some(alias.clone())
            );
            assert_eq!(store.get_alias(OTHER_ACCOUNT, "alias/app").unwrap(), None);

            store
                .update_alias(ACCOUNT, "alias/app", &key_id(2), 1_800_000_000.0)
                .unwrap();
            let updated = AliasRecord {
                target: key_id(2),
                last_updated: 1_800_000_000.0,
                ..alias.clone()
            };
            assert_eq!(
                store.get_alias(ACCOUNT, "alias/app").unwrap(),
                Some(updated)
            );

            let err = store
                .update_alias(ACCOUNT, "alias/none", &key_id(1), 0.0)
                .unwrap_err();
            assert!(matches!(err, StoreError::NotFound), "{err:?}");
            // Target that does not exist.
            let err = store
                .update_alias(ACCOUNT, "alias/app", &key_id(9), 0.0)
                .unwrap_err();
            assert!(matches!(err, StoreError::NotFound), "{err:?}");

            store.delete_alias(ACCOUNT, "alias/app").unwrap();
            assert_eq!(store.get_alias(ACCOUNT, "alias/app").unwrap(), None);
            assert!(matches!(
                store.delete_alias(ACCOUNT, "alias/app"),
                Err(StoreError::NotFound)
            ));
        });
    }

    #[test]
    fn alias_names_are_unique_per_account() {
        both(|store| {
            insert(store, &minimal_key(ACCOUNT, key_id(1), material_id(1)));
            insert(store, &minimal_key(ACCOUNT, key_id(2), material_id(2)));
            insert(
                store,
                &minimal_key(OTHER_ACCOUNT, key_id(3), material_id(3)),
            );
            let alias = |account: &str, target: KeyId| AliasRecord {
                account: account.into(),
                name: "alias/shared".into(),
                target,
                creation_date: 1.0,
                last_updated: 1.0,
            };
            store.insert_alias(&alias(ACCOUNT, key_id(1))).unwrap();
            let err = store.insert_alias(&alias(ACCOUNT, key_id(2))).unwrap_err();
            assert!(matches!(err, StoreError::AlreadyExists), "{err:?}");
            store
                .insert_alias(&alias(OTHER_ACCOUNT, key_id(3)))
                .unwrap();
            assert_eq!(
                store
                    .get_alias(ACCOUNT, "alias/shared")
                    .unwrap()
                    .unwrap()
                    .target,
                key_id(1)
            );
            assert_eq!(
                store
                    .get_alias(OTHER_ACCOUNT, "alias/shared")
                    .unwrap()
                    .unwrap()
                    .target,
                key_id(3)
            );
        });
    }

    #[test]
    fn alias_cannot_target_a_missing_key_or_another_accounts_key() {
        both(|store| {
            insert(
                store,
                &minimal_key(OTHER_ACCOUNT, key_id(3), material_id(3)),
            );
            let alias = |target: KeyId| AliasRecord {
                account: ACCOUNT.into(),
                name: "alias/x".into(),
                target,
                creation_date: 1.0,
                last_updated: 1.0,
            };
            assert!(matches!(
                store.insert_alias(&alias(key_id(9))),
                Err(StoreError::NotFound)
            ));
            assert!(matches!(
                store.insert_alias(&alias(key_id(3))),
                Err(StoreError::NotFound)
            ));
        });
    }

    #[test]
    fn keys_paginate_per_account() {
        both(|store| {
            for n in (1..=7u8).rev() {
                insert(store, &minimal_key(ACCOUNT, key_id(n), material_id(n)));
            }
            insert(
                store,
                &minimal_key(OTHER_ACCOUNT, key_id(100), material_id(100)),
            );

            let mut seen = Vec::new();
            let mut after = None;
            let mut pages = 0;
            loop {
                let page = store.list_keys(ACCOUNT, after.as_ref(), 3).unwrap();
                pages += 1;
                assert!(page.len() <= 3);
                if page.is_empty() {
                    break;
                }
                after = page.last().map(|k| k.key_id);
                seen.extend(page.into_iter().map(|k| k.key_id));
            }
            assert_eq!(pages, 4, "3 + 3 + 1 + empty");
            assert_eq!(seen, (1..=7u8).map(key_id).collect::<Vec<_>>());
            assert_eq!(store.list_keys(OTHER_ACCOUNT, None, 100).unwrap().len(), 1);
            assert!(store.list_keys(ACCOUNT, None, 0).unwrap().is_empty());
            assert_eq!(store.list_keys(ACCOUNT, None, usize::MAX).unwrap().len(), 7);
        });
    }

    #[test]
    fn aliases_paginate_and_filter_by_target() {
        both(|store| {
            insert(store, &minimal_key(ACCOUNT, key_id(1), material_id(1)));
            insert(store, &minimal_key(ACCOUNT, key_id(2), material_id(2)));
            insert(
                store,
                &minimal_key(OTHER_ACCOUNT, key_id(3), material_id(3)),
            );
            for n in 0..8u8 {
                let target = if n % 2 == 0 { key_id(1) } else { key_id(2) };
                let alias = AliasRecord {
                    account: ACCOUNT.into(),
                    name: format!("alias/a{n}"),
                    target,
                    creation_date: 1.0,
                    last_updated: 1.0,
                };
                store.insert_alias(&alias).unwrap();
            }
            store
                .insert_alias(&AliasRecord {
                    account: OTHER_ACCOUNT.into(),
                    name: "alias/a0".into(),
                    target: key_id(3),
                    creation_date: 1.0,
                    last_updated: 1.0,
                })
                .unwrap();

            let collect = |target: Option<&KeyId>, limit: usize| {
                let mut names = Vec::new();
                let mut after: Option<String> = None;
                loop {
                    let page = store
                        .list_aliases(ACCOUNT, target, after.as_deref(), limit)
                        .unwrap();
                    assert!(page.len() <= limit);
                    if page.is_empty() {
                        return names;
                    }
                    assert!(page.iter().all(|a| a.account == ACCOUNT));
                    after = page.last().map(|a| a.name.clone());
                    names.extend(page.into_iter().map(|a| a.name));
                }
            };
            let all: Vec<String> = (0..8).map(|n| format!("alias/a{n}")).collect();
            assert_eq!(collect(None, 3), all);
            let even: Vec<String> = (0..8).step_by(2).map(|n| format!("alias/a{n}")).collect();
            assert_eq!(collect(Some(&key_id(1)), 3), even);
            assert!(collect(Some(&key_id(3)), 3).is_empty());
        });
    }

    #[test]
    fn tags_put_replace_remove_and_paginate() {
        both(|store| {
            let key = minimal_key(ACCOUNT, key_id(1), material_id(1));
            store
                .insert_key(&key, &initial_material(&key), &[tag("k0", "old")])
                .unwrap();
            let tags: Vec<Tag> = (0..7)
                .map(|n| tag(&format!("k{n}"), &format!("v{n}")))
                .collect();
            store.put_tags(&key.key_id, &tags).unwrap();

            let mut seen = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = store.list_tags(&key.key_id, after.as_deref(), 2).unwrap();
                assert!(page.len() <= 2);
                if page.is_empty() {
                    break;
                }
                after = page.last().map(|t| t.key.clone());
                seen.extend(page);
            }
            assert_eq!(seen, tags, "k0 replaced, all in order");

            store
                .remove_tags(&key.key_id, &["k1".into(), "k3".into(), "absent".into()])
                .unwrap();
            let keys: Vec<String> = store
                .list_tags(&key.key_id, None, 100)
                .unwrap()
                .into_iter()
                .map(|t| t.key)
                .collect();
            assert_eq!(keys, ["k0", "k2", "k4", "k5", "k6"]);

            assert!(matches!(
                store.put_tags(&key_id(9), &tags),
                Err(StoreError::NotFound)
            ));
            // A failed put leaves nothing behind, even partially.
            assert!(store.list_tags(&key_id(9), None, 100).unwrap().is_empty());
        });
    }

    #[test]
    fn delete_key_cascades_to_everything_of_the_key() {
        both(|store| {
            let doomed = full_key(ACCOUNT, key_id(1), material_id(1));
            let kept = minimal_key(ACCOUNT, key_id(2), material_id(2));
            store
                .insert_key(&doomed, &initial_material(&doomed), &[tag("a", "1")])
                .unwrap();
            store
                .insert_key(&kept, &initial_material(&kept), &[tag("a", "1")])
                .unwrap();
            store
                .add_material(
                    &MaterialRecord {
                        key_id: doomed.key_id,
                        material_id: material_id(3),
                        created: 5.0,
                        origin: MaterialOrigin::OnDemand,
                    },
                    None,
                    &ANY_STATE,
                )
                .unwrap();
            for (name, target) in [("alias/doomed", doomed.key_id), ("alias/kept", kept.key_id)] {
                store
                    .insert_alias(&AliasRecord {
                        account: ACCOUNT.into(),
                        name: name.into(),
                        target,
                        creation_date: 1.0,
                        last_updated: 1.0,
                    })
                    .unwrap();
            }

            store.delete_key(&doomed.key_id, None).unwrap();
            assert_eq!(store.get_key(&doomed.key_id).unwrap(), None);
            assert!(store.list_materials(&doomed.key_id).unwrap().is_empty());
            assert!(store
                .list_tags(&doomed.key_id, None, 10)
                .unwrap()
                .is_empty());
            assert_eq!(store.get_alias(ACCOUNT, "alias/doomed").unwrap(), None);
            assert_eq!(store.all_material_ids().unwrap(), vec![material_id(2)]);

            // The other key is untouched.
            assert_eq!(store.get_key(&kept.key_id).unwrap(), Some(kept.clone()));
            assert_eq!(
                store.list_tags(&kept.key_id, None, 10).unwrap(),
                vec![tag("a", "1")]
            );
            assert!(store.get_alias(ACCOUNT, "alias/kept").unwrap().is_some());

            // Idempotent.
            store.delete_key(&doomed.key_id, None).unwrap();
        });
    }

    #[test]
    fn due_for_deletion() {
        both(|store| {
            let pending = |n: u8, date: f64| KeyRecord {
                state: KeyState::PendingDeletion,
                deletion_date: Some(date),
                pending_window_days: Some(7),
                ..minimal_key(ACCOUNT, key_id(n), material_id(n))
            };
            insert(store, &pending(1, 100.0));
            insert(store, &pending(2, 50.0));
            insert(store, &pending(3, 100.5)); // not yet
            insert(
                store,
                &KeyRecord {
                    state: KeyState::Disabled,
                    ..pending(4, 10.0)
                },
            ); // cancelled
            insert(store, &minimal_key(ACCOUNT, key_id(5), material_id(5)));

            let due: Vec<KeyId> = store
                .keys_due_for_deletion(100.0)
                .unwrap()
                .into_iter()
                .map(|k| k.key_id)
                .collect();
            assert_eq!(
                due,
                vec![key_id(2), key_id(1)],
                "date <= now, earliest first"
            );
            assert!(store.keys_due_for_deletion(49.0).unwrap().is_empty());
        });
    }

    #[test]
    fn due_for_rotation() {
        both(|store| {
            let rotating = |n: u8, next: Option<f64>| KeyRecord {
                rotation_enabled: true,
                rotation_period_days: Some(90),
                next_rotation_date: next,
                ..minimal_key(ACCOUNT, key_id(n), material_id(n))
            };
            insert(store, &rotating(1, Some(200.0)));
            insert(store, &rotating(2, Some(100.0)));
            insert(store, &rotating(3, Some(200.5))); // not yet
            insert(store, &rotating(4, None)); // no date
            insert(
                store,
                &KeyRecord {
                    rotation_enabled: false,
                    ..rotating(5, Some(1.0))
                },
            );
            insert(
                store,
                &KeyRecord {
                    state: KeyState::Disabled,
                    ..rotating(6, Some(1.0))
                },
            );
            insert(
                store,
                &KeyRecord {
                    state: KeyState::PendingDeletion,
                    ..rotating(7, Some(1.0))
                },
            );

            let due: Vec<KeyId> = store
                .keys_due_for_rotation(200.0)
                .unwrap()
                .into_iter()
                .map(|k| k.key_id)
                .collect();
            assert_eq!(due, vec![key_id(2), key_id(1)]);

            // Rotating key 2 moves its next date past now.
            store
                .add_material(
                    &MaterialRecord {
                        key_id: key_id(2),
                        material_id: material_id(20),
                        created: 200.0,
                        origin: MaterialOrigin::Automatic,
                    },
                    Some(300.0),
                    &ANY_STATE,
                )
                .unwrap();
            let due: Vec<KeyId> = store
                .keys_due_for_rotation(200.0)
                .unwrap()
                .into_iter()
                .map(|k| k.key_id)
                .collect();
            assert_eq!(due, vec![key_id(1)]);
        });
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

    #[test]
    fn adopted_keys_record_their_token_object_and_cascade() {
        both(|store| {
            let by_id = minimal_key(ACCOUNT, key_id(1), material_id(1));
            let by_label = minimal_key(ACCOUNT, key_id(2), material_id(2));
            store
                .insert_adopted_key(
                    &by_id,
                    &initial_material(&by_id),
                    &[],
                    &TokenKeyRef::Id(vec![1, 2, 3]),
                )
                .unwrap();
            store
                .insert_adopted_key(
                    &by_label,
                    &initial_material(&by_label),
                    &[],
                    &TokenKeyRef::Label("legacy".into()),
                )
                .unwrap();
            // One token object cannot stand for two materials.
            let again = minimal_key(ACCOUNT, key_id(3), material_id(3));
            assert!(store
                .insert_adopted_key(
                    &again,
                    &initial_material(&again),
                    &[],
                    &TokenKeyRef::Label("legacy".into()),
                )
                .is_err());
            assert_eq!(
                store.get_key(&key_id(3)).unwrap(),
                None,
                "atomic with the key"
            );
            assert_eq!(
                store.adopted_materials().unwrap(),
                vec![
                    (material_id(1), TokenKeyRef::Id(vec![1, 2, 3])),
                    (material_id(2), TokenKeyRef::Label("legacy".into())),
                ]
            );
            store.delete_key(&key_id(1), None).unwrap();
            assert_eq!(
                store.adopted_materials().unwrap(),
                vec![(material_id(2), TokenKeyRef::Label("legacy".into()))]
            );
        });
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
            matches!(&err, StoreError::Backend(m) if m.contains("newer")),
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
            Err(StoreError::Backend(message)) => assert!(message.contains(column), "{message}"),
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

    #[test]
    fn two_stores_on_one_file_write_concurrently() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("meta.db");
        let stores = [
            SqliteStore::open(&path).unwrap(),
            SqliteStore::open(&path).unwrap(),
        ];
        std::thread::scope(|scope| {
            // Each store writes every other id, interleaved with the other store's writes.
            for (first, store) in [0u8, 1].into_iter().zip(&stores) {
                scope.spawn(move || {
                    for n in (first..100).step_by(2) {
                        let key = minimal_key(ACCOUNT, key_id(n), material_id(n));
                        store
                            .insert_key(&key, &initial_material(&key), &[tag("n", "v")])
                            .unwrap();
                    }
                });
            }
        });
        for store in &stores {
            assert_eq!(store.list_keys(ACCOUNT, None, 1000).unwrap().len(), 100);
        }
    }

    fn grant(key: &KeyRecord, n: u8, grantee: &str, retiring: Option<&str>) -> GrantRecord {
        GrantRecord {
            grant_id: hex::encode([n; 32]),
            key_id: key.key_id,
            name: Some(format!("g{n}")),
            grantee_principal: grantee.into(),
            retiring_principal: retiring.map(Into::into),
            issuing_account: key.account.clone(),
            operations: vec!["Decrypt".into(), "Encrypt".into()],
            constraints: crate::model::GrantConstraints {
                equals: None,
                subset: Some([("tenant".to_string(), "1".to_string())].into()),
            },
            creation_date: 1.5,
            token_secret: [n; 16],
        }
    }

    #[test]
    fn grants_round_trip_list_filter_and_cascade() {
        both(|store| {
            let key = full_key(ACCOUNT, key_id(1), material_id(1));
            insert(store, &key);
            let alice = "arn:aws:iam::111122223333:user/alice";
            let g1 = grant(&key, 1, alice, Some("arn:aws:iam::111122223333:role/r"));
            let g2 = grant(&key, 2, "arn:aws:iam::111122223333:user/bob", None);
            store.insert_grant(&g2).unwrap();
            store.insert_grant(&g1).unwrap();
            assert!(matches!(
                store.insert_grant(&g1),
                Err(StoreError::AlreadyExists)
            ));
            assert_eq!(store.get_grant(&g1.grant_id).unwrap().as_ref(), Some(&g1));
            let all = store.list_grants(&key.key_id, None, 10).unwrap();
            assert_eq!(all, vec![g1.clone(), g2.clone()]);
            assert_eq!(store.count_grants(&key.key_id).unwrap(), 2);
            let page = store
                .list_grants(&key.key_id, Some(&g1.grant_id), 10)
                .unwrap();
            assert_eq!(page, vec![g2.clone()]);
            assert_eq!(
                store.grants_for_grantee(&key.key_id, alice).unwrap(),
                vec![g1.clone()]
            );
            assert_eq!(
                store.grants_named(&key.key_id, "g2").unwrap(),
                vec![g2.clone()]
            );
            assert_eq!(
                store
                    .list_retirable_grants("arn:aws:iam::111122223333:role/r", None, 10)
                    .unwrap(),
                vec![g1.clone()]
            );
            store.delete_grant(&g1.grant_id).unwrap();
            assert!(matches!(
                store.delete_grant(&g1.grant_id),
                Err(StoreError::NotFound)
            ));
            let mut orphan = grant(&key, 3, alice, None);
            orphan.key_id = key_id(9);
            assert!(matches!(
                store.insert_grant(&orphan),
                Err(StoreError::NotFound)
            ));
            store.delete_key(&key.key_id, None).unwrap();
            assert_eq!(store.get_grant(&g2.grant_id).unwrap(), None);
        });
    }

    #[test]
    fn ping_answers() {
        both(|store| store.ping().unwrap());
    }
}
