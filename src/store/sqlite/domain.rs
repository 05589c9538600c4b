//! Domain mode's tables in the SQLite store: the domain keys and the wrapped materials.
//! Every write is one conditional statement (or one `IMMEDIATE` transaction).

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::{db_err, unreadable};
use crate::model::{
    DomainKeyId, DomainKeyRecord, DomainKeyState, MaterialId, WrappedKind, WrappedMaterial,
};
use crate::store::{StoreError, StoreResult};

/// Migration 4: the domain keys and the wrapped materials.
pub(super) const MIGRATION: &str = "
    CREATE TABLE domain_keys (
        id         TEXT NOT NULL PRIMARY KEY,
        state      TEXT NOT NULL CHECK (state IN ('active', 'retiring', 'retired')),
        created_at REAL NOT NULL
    ) STRICT;
    -- At most one active domain key.
    CREATE UNIQUE INDEX domain_keys_one_active ON domain_keys (state) WHERE state = 'active';

    -- Written before the material's row (see MetadataStore::insert_wrapped_material), so
    -- no foreign key to key_materials; removed when the material is destroyed.
    CREATE TABLE wrapped_materials (
        material_id   TEXT    NOT NULL PRIMARY KEY,
        key_id        TEXT    NOT NULL,
        kind          TEXT    NOT NULL,
        domain_key_id TEXT    NOT NULL REFERENCES domain_keys (id),
        mechanism     INTEGER NOT NULL,
        blob          BLOB    NOT NULL,
        public        BLOB    NOT NULL
    ) STRICT;
    CREATE INDEX wrapped_by_domain_key ON wrapped_materials (domain_key_id, material_id);
";

/// Migration 6: a domain key may be `pending`, at most one at a time. SQLite cannot alter
/// a CHECK constraint, so the table is rebuilt; foreign-key checks are deferred to the
/// commit, when `wrapped_materials` references the rebuilt table's same rows.
pub(super) const PENDING_MIGRATION: &str = "
    PRAGMA defer_foreign_keys = ON;
    CREATE TABLE domain_keys_previous AS SELECT id, state, created_at FROM domain_keys;
    DROP TABLE domain_keys;
    CREATE TABLE domain_keys (
        id         TEXT NOT NULL PRIMARY KEY,
        state      TEXT NOT NULL
                   CHECK (state IN ('pending', 'active', 'retiring', 'retired')),
        created_at REAL NOT NULL
    ) STRICT;
    INSERT INTO domain_keys (id, state, created_at)
        SELECT id, state, created_at FROM domain_keys_previous;
    DROP TABLE domain_keys_previous;
    CREATE UNIQUE INDEX domain_keys_one_active ON domain_keys (state) WHERE state = 'active';
    CREATE UNIQUE INDEX domain_keys_one_pending ON domain_keys (state) WHERE state = 'pending';
";

const WRAPPED_COLUMNS: &str = "material_id, key_id, kind, domain_key_id, mechanism, blob, public";

type WrappedRow = (String, String, String, String, i64, Vec<u8>, Vec<u8>);

fn read_wrapped_row(row: &Row<'_>) -> rusqlite::Result<WrappedRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
    ))
}

fn wrapped_record(row: WrappedRow) -> StoreResult<WrappedMaterial> {
    let (material, key, kind, domain, mechanism, blob, public) = row;
    Ok(WrappedMaterial {
        material_id: material
            .parse()
            .map_err(|()| unreadable("wrapped_materials.material_id", &material))?,
        key_id: key
            .parse()
            .map_err(|()| unreadable("wrapped_materials.key_id", &key))?,
        kind: WrappedKind::parse(&kind)
            .ok_or_else(|| unreadable("wrapped_materials.kind", &kind))?,
        domain_key_id: domain
            .parse()
            .map_err(|()| unreadable("wrapped_materials.domain_key_id", &domain))?,
        mechanism: u64::try_from(mechanism)
            .map_err(|_| unreadable("wrapped_materials.mechanism", &mechanism.to_string()))?,
        blob,
        public,
    })
}

fn mechanism_param(mechanism: u64) -> StoreResult<i64> {
    i64::try_from(mechanism)
        .map_err(|_| StoreError::backend(format!("mechanism {mechanism:#x} is out of range")))
}

pub(super) fn insert_domain_key(conn: &Connection, key: &DomainKeyRecord) -> StoreResult<bool> {
    let inserted = conn
        .prepare_cached("INSERT INTO domain_keys (id, state, created_at) VALUES (?1, ?2, ?3)")
        .and_then(|mut stmt| {
            stmt.execute(params![key.id.to_hex(), key.state.as_str(), key.created])
        })
        .map_err(db_err);
    match inserted {
        Ok(_) => Ok(true),
        // Another active key (the partial unique index) or the same id.
        Err(StoreError::AlreadyExists) => Ok(false),
        Err(e) => Err(e),
    }
}

pub(super) fn domain_keys(conn: &Connection) -> StoreResult<Vec<DomainKeyRecord>> {
    let mut stmt = conn
        .prepare_cached("SELECT id, state, created_at FROM domain_keys ORDER BY created_at, rowid")
        .map_err(db_err)?;
    let rows = stmt
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, f64>(2)?,
            ))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db_err)?;
    rows.into_iter()
        .map(|(id, state, created)| {
            Ok(DomainKeyRecord {
                id: id.parse().map_err(|()| unreadable("domain_keys.id", &id))?,
                state: DomainKeyState::parse(&state)
                    .ok_or_else(|| unreadable("domain_keys.state", &state))?,
                created,
            })
        })
        .collect()
}

pub(super) fn begin_domain_rotation(
    conn: &mut Connection,
    old: &DomainKeyId,
    new: &DomainKeyRecord,
) -> StoreResult<bool> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    let demoted = tx
        .execute(
            "UPDATE domain_keys SET state = 'retiring' WHERE id = ?1 AND state = 'active'",
            params![old.to_hex()],
        )
        .map_err(db_err)?;
    if demoted == 0 {
        tx.rollback().map_err(db_err)?;
        return Ok(false);
    }
    tx.execute(
        "INSERT INTO domain_keys (id, state, created_at) VALUES (?1, 'active', ?2)",
        params![new.id.to_hex(), new.created],
    )
    .map_err(db_err)?;
    tx.commit().map_err(db_err)?;
    Ok(true)
}

pub(super) fn activate_domain_key(
    conn: &mut Connection,
    old: &DomainKeyId,
    new: &DomainKeyId,
) -> StoreResult<bool> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    let demoted = tx
        .execute(
            "UPDATE domain_keys SET state = 'retiring' WHERE id = ?1 AND state = 'active'",
            params![old.to_hex()],
        )
        .map_err(db_err)?;
    let promoted = tx
        .execute(
            "UPDATE domain_keys SET state = 'active' WHERE id = ?1 AND state = 'pending'",
            params![new.to_hex()],
        )
        .map_err(db_err)?;
    if demoted == 0 || promoted == 0 {
        tx.rollback().map_err(db_err)?;
        return Ok(false);
    }
    tx.commit().map_err(db_err)?;
    Ok(true)
}

pub(super) fn retire_domain_key(conn: &Connection, id: &DomainKeyId) -> StoreResult<bool> {
    let changed = conn
        .execute(
            "UPDATE domain_keys SET state = 'retired' WHERE id = ?1 AND state = 'retiring' \
             AND NOT EXISTS (SELECT 1 FROM wrapped_materials WHERE domain_key_id = ?1)",
            params![id.to_hex()],
        )
        .map_err(db_err)?;
    Ok(changed > 0)
}

pub(super) fn insert_wrapped_material(conn: &Connection, w: &WrappedMaterial) -> StoreResult<bool> {
    let mechanism = mechanism_param(w.mechanism)?;
    let inserted = conn
        .prepare_cached(
            "INSERT INTO wrapped_materials \
             (material_id, key_id, kind, domain_key_id, mechanism, blob, public) \
             SELECT ?1, ?2, ?3, id, ?5, ?6, ?7 FROM domain_keys \
             WHERE id = ?4 AND state = 'active'",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                w.material_id.to_hex(),
                w.key_id.to_string(),
                w.kind.as_str(),
                w.domain_key_id.to_hex(),
                mechanism,
                w.blob,
                w.public,
            ])
        })
        .map_err(db_err)?;
    Ok(inserted > 0)
}

pub(super) fn get_wrapped_material(
    conn: &Connection,
    material: &MaterialId,
) -> StoreResult<Option<WrappedMaterial>> {
    let sql = format!("SELECT {WRAPPED_COLUMNS} FROM wrapped_materials WHERE material_id = ?1");
    let row = conn
        .prepare_cached(&sql)
        .and_then(|mut stmt| {
            stmt.query_row(params![material.to_hex()], read_wrapped_row)
                .optional()
        })
        .map_err(db_err)?;
    row.map(wrapped_record).transpose()
}

pub(super) fn wrapped_under(
    conn: &Connection,
    domain_key: &DomainKeyId,
    after: Option<&MaterialId>,
    limit: usize,
) -> StoreResult<Vec<WrappedMaterial>> {
    let sql = format!(
        "SELECT {WRAPPED_COLUMNS} FROM wrapped_materials \
         WHERE domain_key_id = ?1 AND material_id > ?2 ORDER BY material_id LIMIT ?3"
    );
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = conn
        .prepare_cached(&sql)
        .and_then(|mut stmt| {
            stmt.query_map(
                params![
                    domain_key.to_hex(),
                    after.map(|m| m.to_hex()).unwrap_or_default(),
                    limit
                ],
                read_wrapped_row,
            )
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        })
        .map_err(db_err)?;
    rows.into_iter().map(wrapped_record).collect()
}

pub(super) fn rewrap_material(
    conn: &Connection,
    material: &MaterialId,
    from: &DomainKeyId,
    to: &DomainKeyId,
    mechanism: u64,
    blob: &[u8],
) -> StoreResult<bool> {
    let mechanism = mechanism_param(mechanism)?;
    let changed = conn
        .prepare_cached(
            "UPDATE wrapped_materials SET domain_key_id = ?3, mechanism = ?4, blob = ?5 \
             WHERE material_id = ?1 AND domain_key_id = ?2",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                material.to_hex(),
                from.to_hex(),
                to.to_hex(),
                mechanism,
                blob,
            ])
        })
        .map_err(db_err)?;
    Ok(changed > 0)
}

pub(super) fn delete_wrapped_material(conn: &Connection, material: &MaterialId) -> StoreResult<()> {
    conn.prepare_cached("DELETE FROM wrapped_materials WHERE material_id = ?1")
        .and_then(|mut stmt| stmt.execute(params![material.to_hex()]))
        .map_err(db_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, OptionalExtension};

    #[test]
    fn the_pending_migration_keeps_the_rows_and_the_foreign_key() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        for sql in &super::super::schema::MIGRATIONS[..5] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 5).unwrap();
        conn.execute_batch(
            "INSERT INTO domain_keys VALUES ('aa', 'active', 1.0), ('bb', 'retired', 0.5);
             INSERT INTO wrapped_materials VALUES ('m1', 'k1', 'aes', 'aa', 8458, x'00', x'');",
        )
        .unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        let kept: i64 = conn
            .query_row("SELECT count(*) FROM domain_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, 2);
        conn.execute("INSERT INTO domain_keys VALUES ('cc', 'pending', 2.0)", [])
            .unwrap();
        // One pending key at most; no unknown state.
        assert!(conn
            .execute("INSERT INTO domain_keys VALUES ('dd', 'pending', 2.0)", [])
            .is_err());
        assert!(conn
            .execute("INSERT INTO domain_keys VALUES ('ee', 'bogus', 2.0)", [])
            .is_err());
        // wrapped_materials still references the rebuilt table.
        assert!(conn
            .execute(
                "INSERT INTO wrapped_materials VALUES ('m2', 'k1', 'aes', 'zz', 8458, x'00', x'')",
                [],
            )
            .is_err());
        let violation = conn
            .query_row("PRAGMA foreign_key_check", [], |_| Ok(()))
            .optional()
            .unwrap();
        assert!(violation.is_none());
    }
}
