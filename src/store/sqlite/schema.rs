//! The SQLite store's schema: its migrations, applied in order at open.

use rusqlite::{Connection, TransactionBehavior};

use super::{db_err, domain, members};
use crate::store::{StoreError, StoreResult};

/// Schema migrations; entry `i` takes `user_version` from `i` to `i + 1`.
/// Append only: a released entry must never change.
pub(super) const MIGRATIONS: &[&str] = &[
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

/// Applies the migrations the file has not seen yet, each in its own transaction together
/// with its `user_version` bump, so a crash leaves the file at a whole version. `IMMEDIATE`
/// makes two processes opening a fresh file at once run the migration exactly once.
pub(super) fn migrate(conn: &mut Connection) -> StoreResult<()> {
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
