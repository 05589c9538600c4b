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

mod aliases;
mod domain;
mod grants;
mod members;
mod schema;

use super::members::DomainMember;
use super::{Changed, KeyChange, MetadataStore, RotationGuard, StoreError, StoreResult, TagWrite};
use crate::model::{
    AliasRecord, DomainKeyId, DomainKeyRecord, EpochSeconds, GrantRecord, KeyId, KeyOrigin,
    KeyRecord, KeySpec, KeyState, KeyUsage, MaterialId, MaterialOrigin, MaterialRecord, Tag,
    TokenKeyRef, WrappedMaterial,
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

/// Column list of every `SELECT` that yields a [`KeyRecord`]; order matches [`KeyRow::read`].
macro_rules! key_columns {
    () => {
        "key_id, account, description, key_spec, key_usage, origin, state, creation_date, \
         deletion_date, pending_window_days, rotation_enabled, rotation_period_days, \
         next_rotation_date, current_material, policy"
    };
}

/// Column list of every `SELECT` that yields a [`MaterialRecord`]; order matches
/// [`read_material`].
macro_rules! material_columns {
    () => {
        "key_id, material_id, created, origin"
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
        schema::migrate(&mut conn)?;
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
            key_spec: KeySpec::parse(&self.key_spec)
                .ok_or_else(|| unreadable("keys.key_spec", &self.key_spec))?,
            key_usage: KeyUsage::parse(&self.key_usage)
                .ok_or_else(|| unreadable("keys.key_usage", &self.key_usage))?,
            origin: KeyOrigin::parse(&self.origin)
                .ok_or_else(|| unreadable("keys.origin", &self.origin))?,
            creation_date: self.creation_date,
            deletion_date: self.deletion_date,
            rotation_enabled: self.rotation_enabled,
            next_rotation_date: self.next_rotation_date,
            policy: self.policy,
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
                key.key_spec.as_str(),
                key.key_usage.as_str(),
                key.origin.as_str(),
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

    fn insert_alias(&self, alias: &AliasRecord) -> StoreResult<()> {
        aliases::insert_alias(&self.conn(), alias)
    }

    fn get_alias(&self, account: &str, name: &str) -> StoreResult<Option<AliasRecord>> {
        aliases::get_alias(&self.conn(), account, name)
    }

    fn update_alias(
        &self,
        account: &str,
        name: &str,
        target: &KeyId,
        now: EpochSeconds,
    ) -> StoreResult<()> {
        aliases::update_alias(&self.conn(), account, name, target, now)
    }

    fn delete_alias(&self, account: &str, name: &str) -> StoreResult<()> {
        aliases::delete_alias(&self.conn(), account, name)
    }

    fn list_aliases(
        &self,
        account: &str,
        target: Option<&KeyId>,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<AliasRecord>> {
        aliases::list_aliases(&self.conn(), account, target, after, limit)
    }

    fn put_tags(&self, key_id: &KeyId, tags: &[Tag], max_tags: usize) -> StoreResult<TagWrite> {
        aliases::put_tags(&mut self.conn(), key_id, tags, max_tags)
    }

    fn remove_tags(&self, key_id: &KeyId, tag_keys: &[String]) -> StoreResult<()> {
        aliases::remove_tags(&mut self.conn(), key_id, tag_keys)
    }

    fn list_tags(
        &self,
        key_id: &KeyId,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Tag>> {
        aliases::list_tags(&self.conn(), key_id, after, limit)
    }

    fn insert_grant(&self, grant: &GrantRecord) -> StoreResult<()> {
        grants::insert_grant(&self.conn(), grant)
    }

    fn get_grant(&self, grant_id: &str) -> StoreResult<Option<GrantRecord>> {
        grants::get_grant(&self.conn(), grant_id)
    }

    fn list_grants(
        &self,
        key_id: &KeyId,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<GrantRecord>> {
        grants::list_grants(&self.conn(), key_id, after, limit)
    }

    fn count_grants(&self, key_id: &KeyId) -> StoreResult<u64> {
        grants::count_grants(&self.conn(), key_id)
    }

    fn grants_for_grantee(&self, key_id: &KeyId, grantee: &str) -> StoreResult<Vec<GrantRecord>> {
        grants::grants_for_grantee(&self.conn(), key_id, grantee)
    }

    fn grants_named(&self, key_id: &KeyId, name: &str) -> StoreResult<Vec<GrantRecord>> {
        grants::grants_named(&self.conn(), key_id, name)
    }

    fn list_retirable_grants(
        &self,
        principal: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<GrantRecord>> {
        grants::list_retirable_grants(&self.conn(), principal, after, limit)
    }

    fn delete_grant(&self, grant_id: &str) -> StoreResult<()> {
        grants::delete_grant(&self.conn(), grant_id)
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
mod tests;
