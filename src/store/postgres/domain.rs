//! Domain mode's tables in the PostgreSQL store: the domain keys and the wrapped
//! materials. Every write is one conditional statement or one transaction; see
//! `insert_wrapped_material` for how a blob and a rotation that begins meanwhile are
//! ordered across replicas.

use deadpool_postgres::ClientWrapper;
use tokio_postgres::Row;

use super::errors::pg_err;
use super::rows::{col, parse_material_id, sql_limit, unreadable};
use crate::model::{
    DomainKeyId, DomainKeyRecord, DomainKeyState, MaterialId, WrappedKind, WrappedMaterial,
};
use crate::store::{StoreError, StoreResult};

/// Migration 2: the domain keys and the wrapped materials.
pub(super) const MIGRATION: &str = r#"
    CREATE TABLE domain_keys (
        id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
        state      TEXT             NOT NULL CHECK (state IN ('active', 'retiring', 'retired')),
        created_at DOUBLE PRECISION NOT NULL
    );
    -- At most one active domain key.
    CREATE UNIQUE INDEX domain_keys_one_active ON domain_keys (state) WHERE state = 'active';

    -- Written before the material's row, so no foreign key to key_materials; removed when
    -- the material is destroyed.
    CREATE TABLE wrapped_materials (
        material_id   TEXT COLLATE "C" NOT NULL PRIMARY KEY,
        key_id        TEXT COLLATE "C" NOT NULL,
        kind          TEXT             NOT NULL,
        domain_key_id TEXT COLLATE "C" NOT NULL REFERENCES domain_keys (id),
        mechanism     BIGINT           NOT NULL,
        blob          BYTEA            NOT NULL,
        public        BYTEA            NOT NULL
    );
    CREATE INDEX wrapped_by_domain_key ON wrapped_materials (domain_key_id, material_id);
"#;

/// Migration 5: a domain key may be `pending`, at most one at a time.
pub(super) const PENDING_MIGRATION: &str = r#"
    ALTER TABLE domain_keys DROP CONSTRAINT domain_keys_state_check;
    ALTER TABLE domain_keys ADD CONSTRAINT domain_keys_state_check
        CHECK (state IN ('pending', 'active', 'retiring', 'retired'));
    CREATE UNIQUE INDEX domain_keys_one_pending ON domain_keys (state) WHERE state = 'pending';
"#;

const WRAPPED_COLUMNS: &str = "material_id, key_id, kind, domain_key_id, mechanism, blob, public";

fn parse_domain_key_id(column: &str, text: &str) -> StoreResult<DomainKeyId> {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(unreadable(column, text));
    }
    text.parse().map_err(|()| unreadable(column, text))
}

fn wrapped_record(row: &Row) -> StoreResult<WrappedMaterial> {
    let material: String = col(row, 0)?;
    let key: String = col(row, 1)?;
    let kind: String = col(row, 2)?;
    let domain: String = col(row, 3)?;
    let mechanism: i64 = col(row, 4)?;
    Ok(WrappedMaterial {
        material_id: parse_material_id("wrapped_materials.material_id", &material)?,
        key_id: key
            .parse()
            .map_err(|()| unreadable("wrapped_materials.key_id", &key))?,
        kind: WrappedKind::parse(&kind)
            .ok_or_else(|| unreadable("wrapped_materials.kind", &kind))?,
        domain_key_id: parse_domain_key_id("wrapped_materials.domain_key_id", &domain)?,
        mechanism: u64::try_from(mechanism)
            .map_err(|_| unreadable("wrapped_materials.mechanism", &mechanism.to_string()))?,
        blob: col(row, 5)?,
        public: col(row, 6)?,
    })
}

fn mechanism_param(mechanism: u64) -> StoreResult<i64> {
    i64::try_from(mechanism)
        .map_err(|_| StoreError::backend(format!("mechanism {mechanism:#x} is out of range")))
}

pub(super) async fn insert_domain_key(
    client: &ClientWrapper,
    key: DomainKeyRecord,
) -> StoreResult<bool> {
    let stmt = client
        .prepare_cached("INSERT INTO domain_keys (id, state, created_at) VALUES ($1, $2, $3)")
        .await
        .map_err(pg_err)?;
    match client
        .execute(
            &stmt,
            &[&key.id.to_hex(), &key.state.as_str(), &key.created],
        )
        .await
        .map_err(pg_err)
    {
        Ok(_) => Ok(true),
        // Another active key (the partial unique index) or the same id.
        Err(StoreError::AlreadyExists) => Ok(false),
        Err(e) => Err(e),
    }
}

pub(super) async fn domain_keys(client: &ClientWrapper) -> StoreResult<Vec<DomainKeyRecord>> {
    let stmt = client
        .prepare_cached("SELECT id, state, created_at FROM domain_keys ORDER BY created_at, id")
        .await
        .map_err(pg_err)?;
    let rows = client.query(&stmt, &[]).await.map_err(pg_err)?;
    rows.iter()
        .map(|row| {
            let id: String = col(row, 0)?;
            let state: String = col(row, 1)?;
            Ok(DomainKeyRecord {
                id: parse_domain_key_id("domain_keys.id", &id)?,
                state: DomainKeyState::parse(&state)
                    .ok_or_else(|| unreadable("domain_keys.state", &state))?,
                created: col(row, 2)?,
            })
        })
        .collect()
}

pub(super) async fn begin_domain_rotation(
    client: &mut ClientWrapper,
    old: DomainKeyId,
    new: DomainKeyRecord,
) -> StoreResult<bool> {
    let tx = client.transaction().await.map_err(pg_err)?;
    // The row lock this takes waits for blobs being inserted under the old key (they lock
    // it FOR SHARE), so none commits under it after the rotation has listed them.
    let demoted = tx
        .execute(
            "UPDATE domain_keys SET state = 'retiring' WHERE id = $1 AND state = 'active'",
            &[&old.to_hex()],
        )
        .await
        .map_err(pg_err)?;
    if demoted == 0 {
        tx.rollback().await.map_err(pg_err)?;
        return Ok(false);
    }
    tx.execute(
        "INSERT INTO domain_keys (id, state, created_at) VALUES ($1, 'active', $2)",
        &[&new.id.to_hex(), &new.created],
    )
    .await
    .map_err(pg_err)?;
    tx.commit().await.map_err(pg_err)?;
    Ok(true)
}

pub(super) async fn activate_domain_key(
    client: &mut ClientWrapper,
    old: DomainKeyId,
    new: DomainKeyId,
) -> StoreResult<bool> {
    let tx = client.transaction().await.map_err(pg_err)?;
    // As in `begin_domain_rotation`: the demotion's row lock waits for blobs being
    // inserted under the old key, so the rewrap's listing sees every one of them.
    let demoted = tx
        .execute(
            "UPDATE domain_keys SET state = 'retiring' WHERE id = $1 AND state = 'active'",
            &[&old.to_hex()],
        )
        .await
        .map_err(pg_err)?;
    let promoted = tx
        .execute(
            "UPDATE domain_keys SET state = 'active' WHERE id = $1 AND state = 'pending'",
            &[&new.to_hex()],
        )
        .await
        .map_err(pg_err)?;
    if demoted == 0 || promoted == 0 {
        tx.rollback().await.map_err(pg_err)?;
        return Ok(false);
    }
    tx.commit().await.map_err(pg_err)?;
    Ok(true)
}

pub(super) async fn retire_domain_key(
    client: &ClientWrapper,
    id: DomainKeyId,
) -> StoreResult<bool> {
    let changed = client
        .execute(
            "UPDATE domain_keys SET state = 'retired' WHERE id = $1 AND state = 'retiring' \
             AND NOT EXISTS (SELECT 1 FROM wrapped_materials WHERE domain_key_id = $1)",
            &[&id.to_hex()],
        )
        .await
        .map_err(pg_err)?;
    Ok(changed > 0)
}

/// Inserts the blob only while its domain key is active. The key's row is locked
/// `FOR SHARE` for the insert's transaction, so a rotation's demotion of that key waits
/// for the blob to commit, and the rotation's listing (after the demotion) sees it.
pub(super) async fn insert_wrapped_material(
    client: &ClientWrapper,
    w: WrappedMaterial,
) -> StoreResult<bool> {
    let stmt = client
        .prepare_cached(
            "WITH active AS (SELECT id FROM domain_keys WHERE id = $4 AND state = 'active' \
             FOR SHARE) \
             INSERT INTO wrapped_materials \
             (material_id, key_id, kind, domain_key_id, mechanism, blob, public) \
             SELECT $1, $2, $3, id, $5, $6, $7 FROM active",
        )
        .await
        .map_err(pg_err)?;
    let inserted = client
        .execute(
            &stmt,
            &[
                &w.material_id.to_hex(),
                &w.key_id.to_string(),
                &w.kind.as_str(),
                &w.domain_key_id.to_hex(),
                &mechanism_param(w.mechanism)?,
                &w.blob,
                &w.public,
            ],
        )
        .await
        .map_err(pg_err)?;
    Ok(inserted > 0)
}

pub(super) async fn get_wrapped_material(
    client: &ClientWrapper,
    material: MaterialId,
) -> StoreResult<Option<WrappedMaterial>> {
    let sql = format!("SELECT {WRAPPED_COLUMNS} FROM wrapped_materials WHERE material_id = $1");
    let stmt = client.prepare_cached(&sql).await.map_err(pg_err)?;
    let row = client
        .query_opt(&stmt, &[&material.to_hex()])
        .await
        .map_err(pg_err)?;
    row.as_ref().map(wrapped_record).transpose()
}

pub(super) async fn wrapped_under(
    client: &ClientWrapper,
    domain_key: DomainKeyId,
    after: Option<MaterialId>,
    limit: usize,
) -> StoreResult<Vec<WrappedMaterial>> {
    let sql = format!(
        "SELECT {WRAPPED_COLUMNS} FROM wrapped_materials \
         WHERE domain_key_id = $1 AND material_id > $2 ORDER BY material_id LIMIT $3"
    );
    let stmt = client.prepare_cached(&sql).await.map_err(pg_err)?;
    let rows = client
        .query(
            &stmt,
            &[
                &domain_key.to_hex(),
                &after.map(|m| m.to_hex()).unwrap_or_default(),
                &sql_limit(limit),
            ],
        )
        .await
        .map_err(pg_err)?;
    rows.iter().map(wrapped_record).collect()
}

pub(super) async fn rewrap_material(
    client: &ClientWrapper,
    material: MaterialId,
    from: DomainKeyId,
    to: DomainKeyId,
    mechanism: u64,
    blob: Vec<u8>,
) -> StoreResult<bool> {
    let stmt = client
        .prepare_cached(
            "UPDATE wrapped_materials SET domain_key_id = $3, mechanism = $4, blob = $5 \
             WHERE material_id = $1 AND domain_key_id = $2",
        )
        .await
        .map_err(pg_err)?;
    let changed = client
        .execute(
            &stmt,
            &[
                &material.to_hex(),
                &from.to_hex(),
                &to.to_hex(),
                &mechanism_param(mechanism)?,
                &blob,
            ],
        )
        .await
        .map_err(pg_err)?;
    Ok(changed > 0)
}

pub(super) async fn delete_wrapped_material(
    client: &ClientWrapper,
    material: MaterialId,
) -> StoreResult<()> {
    let stmt = client
        .prepare_cached("DELETE FROM wrapped_materials WHERE material_id = $1")
        .await
        .map_err(pg_err)?;
    client
        .execute(&stmt, &[&material.to_hex()])
        .await
        .map_err(pg_err)?;
    Ok(())
}
