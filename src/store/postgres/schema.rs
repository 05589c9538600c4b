//! The PostgreSQL schema and its versioned migrations.
//!
//! The same tables and integrity rules as the SQLite store's schema: a key's
//! `current_material` must be one of its own materials (composite foreign key, deferred to
//! commit because a key and its first material are inserted together), an alias can only
//! target a key of its own account (composite foreign key on `(account, key_id)`), and
//! deleting a key cascades to its materials, aliases, tags, grants and adoption rows.
//!
//! Identifier and name columns use the `"C"` collation, so that ordering and pagination
//! compare bytes, as SQLite's default collation does, whatever the database's locale.

use deadpool_postgres::ClientWrapper;

use super::errors::pg_err;
use crate::store::{StoreError, StoreResult};

/// `pg_advisory_xact_lock` key that serialises migrations: replicas starting at once take
/// turns, and each sees the version the previous one left. ("p11kms" in ASCII.)
const MIGRATION_LOCK: i64 = 0x7031_316b_6d73;

/// Schema migrations; entry `i` takes the version from `i` to `i + 1`.
/// Append only: a released entry must never change.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: keys, materials, aliases, tags, adopted token objects and grants.
    r#"
    CREATE TABLE keys (
        key_id               TEXT COLLATE "C" NOT NULL PRIMARY KEY,
        account              TEXT COLLATE "C" NOT NULL,
        description          TEXT             NOT NULL,
        key_spec             TEXT             NOT NULL,
        key_usage            TEXT             NOT NULL,
        origin               TEXT             NOT NULL,
        state                TEXT             NOT NULL,
        creation_date        DOUBLE PRECISION NOT NULL,
        deletion_date        DOUBLE PRECISION,
        pending_window_days  INTEGER,
        rotation_enabled     BOOLEAN          NOT NULL,
        rotation_period_days INTEGER,
        next_rotation_date   DOUBLE PRECISION,
        current_material     TEXT COLLATE "C" NOT NULL,
        policy               TEXT             NOT NULL,
        -- Lets aliases reference (account, key_id); also serves list_keys.
        CONSTRAINT keys_by_account UNIQUE (account, key_id)
    );
    CREATE INDEX keys_by_deletion ON keys (state, deletion_date, key_id);
    CREATE INDEX keys_by_rotation ON keys (state, rotation_enabled, next_rotation_date, key_id);

    CREATE TABLE key_materials (
        key_id      TEXT COLLATE "C" NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
        material_id TEXT COLLATE "C" NOT NULL UNIQUE,
        created     DOUBLE PRECISION NOT NULL,
        origin      TEXT             NOT NULL,
        -- Insertion order, to break ties between versions created in the same clock tick
        -- (SQLite's rowid).
        seq         BIGINT GENERATED ALWAYS AS IDENTITY,
        PRIMARY KEY (key_id, material_id)
    );
    CREATE INDEX key_materials_by_created ON key_materials (key_id, created, seq);

    ALTER TABLE keys ADD CONSTRAINT keys_current_material
        FOREIGN KEY (key_id, current_material)
        REFERENCES key_materials (key_id, material_id)
        DEFERRABLE INITIALLY DEFERRED;

    CREATE TABLE aliases (
        account       TEXT COLLATE "C" NOT NULL,
        name          TEXT COLLATE "C" NOT NULL,
        target_key_id TEXT COLLATE "C" NOT NULL,
        creation_date DOUBLE PRECISION NOT NULL,
        last_updated  DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (account, name),
        FOREIGN KEY (account, target_key_id)
            REFERENCES keys (account, key_id) ON DELETE CASCADE
    );
    -- Serves list_aliases by target and the cascade from keys.
    CREATE INDEX aliases_by_target ON aliases (account, target_key_id, name);

    CREATE TABLE tags (
        key_id  TEXT COLLATE "C" NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
        tag_key TEXT COLLATE "C" NOT NULL,
        value   TEXT             NOT NULL,
        PRIMARY KEY (key_id, tag_key)
    );

    -- Adopted token keys (seed files): the HSM object a material id stands for, when
    -- p11kms did not create it. Exactly one of CKA_ID or CKA_LABEL locates it.
    CREATE TABLE adopted_materials (
        material_id  TEXT COLLATE "C" NOT NULL PRIMARY KEY
                     REFERENCES key_materials (material_id) ON DELETE CASCADE,
        object_id    BYTEA UNIQUE,
        object_label TEXT UNIQUE,
        CHECK ((object_id IS NULL) <> (object_label IS NULL))
    );

    -- Operations and constraints are JSON text; they are only ever read whole.
    CREATE TABLE grants (
        grant_id           TEXT COLLATE "C" NOT NULL PRIMARY KEY,
        key_id             TEXT COLLATE "C" NOT NULL REFERENCES keys (key_id) ON DELETE CASCADE,
        name               TEXT,
        grantee_principal  TEXT             NOT NULL,
        retiring_principal TEXT,
        issuing_account    TEXT             NOT NULL,
        operations         TEXT             NOT NULL,
        constraints        TEXT             NOT NULL,
        creation_date      DOUBLE PRECISION NOT NULL,
        token_secret       BYTEA            NOT NULL
    );
    CREATE INDEX grants_by_key ON grants (key_id, grant_id);
    CREATE INDEX grants_by_grantee ON grants (key_id, grantee_principal);
    CREATE INDEX grants_by_retiring ON grants (retiring_principal, grant_id);
    "#,
    // 2: leases on the periodic jobs, so that one replica at a time runs each.
    r#"
    CREATE TABLE job_leases (
        job     TEXT COLLATE "C" NOT NULL PRIMARY KEY,
        holder  TEXT             NOT NULL,
        expires TIMESTAMPTZ      NOT NULL
    );
    "#,
    // 3: domain mode: domain keys and wrapped materials.
    super::domain::MIGRATION,
    // 4: domain members (the ceremony's record).
    super::members::MIGRATION,
    // 5: domain keys may be `pending` (a prepared rotation).
    super::domain::PENDING_MIGRATION,
];

/// Brings the schema up to date in one transaction under [`MIGRATION_LOCK`]: PostgreSQL's
/// DDL is transactional, so a crash leaves the database at the old version, and replicas
/// starting at once run each migration exactly once. A database newer than this build is
/// refused. Returns the version now in force.
pub(super) async fn migrate(client: &mut ClientWrapper) -> StoreResult<u32> {
    let latest = MIGRATIONS.len();
    let tx = client.transaction().await.map_err(pg_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS p11kms_schema_version (
             singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
             version   INTEGER NOT NULL
         );
         INSERT INTO p11kms_schema_version (version) VALUES (0) ON CONFLICT DO NOTHING;",
    )
    .await
    .map_err(pg_err)?;
    let row = tx
        .query_one("SELECT version FROM p11kms_schema_version", &[])
        .await
        .map_err(pg_err)?;
    let current: i32 = row.try_get(0).map_err(pg_err)?;
    let current = usize::try_from(current)
        .map_err(|_| StoreError::backend(format!("invalid schema version {current}")))?;
    if current > latest {
        return Err(StoreError::backend(format!(
            "database schema version {current} is newer than this build supports ({latest})"
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        tx.batch_execute(sql)
            .await
            .map_err(|e| StoreError::backend_from(format!("schema migration {}", index + 1), e))?;
    }
    let version =
        i32::try_from(latest).map_err(|_| StoreError::backend("too many schema migrations"))?;
    tx.execute("UPDATE p11kms_schema_version SET version = $1", &[&version])
        .await
        .map_err(pg_err)?;
    tx.commit().await.map_err(pg_err)?;
    u32::try_from(latest).map_err(|_| StoreError::backend("too many schema migrations"))
}

/// The schema version the database is at.
pub(super) async fn version(client: &mut ClientWrapper) -> StoreResult<u32> {
    let row = client
        .query_one("SELECT version FROM p11kms_schema_version", &[])
        .await
        .map_err(pg_err)?;
    let version: i32 = row.try_get(0).map_err(pg_err)?;
    u32::try_from(version)
        .map_err(|_| StoreError::backend(format!("invalid schema version {version}")))
}
