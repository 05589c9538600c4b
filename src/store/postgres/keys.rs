//! Keys and their material versions: inserts, the conditional key changes, rotation,
//! deletion and the job queries.
//!
//! Every change to a key is one conditional `UPDATE ... WHERE state = ANY($allowed)
//! RETURNING ...`. Under READ COMMITTED, PostgreSQL re-checks the `WHERE` clause against the
//! newest committed version of a row that a concurrent transaction changed, so the condition
//! holds at the moment of the write, across connections and processes. A refused change is
//! followed by a separate read (a new snapshot), which sees the write that refused it.

use deadpool_postgres::ClientWrapper;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::errors::pg_err;
use super::rows::{
    col, days_param, parse_days, parse_key_id, parse_material_id, sql_limit, unreadable,
};
use crate::model::{
    EpochSeconds, KeyId, KeyOrigin, KeyRecord, KeySpec, KeyState, KeyUsage, MaterialId,
    MaterialOrigin, MaterialRecord, Tag, TokenKeyRef,
};
use crate::store::{Changed, KeyChange, RotationGuard, StoreError, StoreResult};

/// Column list of every query that yields a [`KeyRecord`]; order matches [`key_record`].
macro_rules! key_columns {
    () => {
        "key_id, account, description, key_spec, key_usage, origin, state, creation_date, \
         deletion_date, pending_window_days, rotation_enabled, rotation_period_days, \
         next_rotation_date, current_material, policy"
    };
}

type Param<'a> = &'a (dyn ToSql + Sync);

pub(super) fn key_record(row: &Row) -> StoreResult<KeyRecord> {
    let key_id: String = col(row, 0)?;
    let state: String = col(row, 6)?;
    let current_material: String = col(row, 13)?;
    let key_spec: String = col(row, 3)?;
    let key_usage: String = col(row, 4)?;
    let origin: String = col(row, 5)?;
    Ok(KeyRecord {
        key_id: parse_key_id("keys.key_id", &key_id)?,
        account: col(row, 1)?,
        description: col(row, 2)?,
        key_spec: KeySpec::parse(&key_spec)
            .ok_or_else(|| unreadable("keys.key_spec", &key_spec))?,
        key_usage: KeyUsage::parse(&key_usage)
            .ok_or_else(|| unreadable("keys.key_usage", &key_usage))?,
        origin: KeyOrigin::parse(&origin).ok_or_else(|| unreadable("keys.origin", &origin))?,
        state: KeyState::parse(&state).ok_or_else(|| unreadable("keys.state", &state))?,
        creation_date: col(row, 7)?,
        deletion_date: col(row, 8)?,
        pending_window_days: parse_days("keys.pending_window_days", col(row, 9)?)?,
        rotation_enabled: col(row, 10)?,
        rotation_period_days: parse_days("keys.rotation_period_days", col(row, 11)?)?,
        next_rotation_date: col(row, 12)?,
        current_material: parse_material_id("keys.current_material", &current_material)?,
        policy: col(row, 14)?,
    })
}

fn material_record(row: &Row) -> StoreResult<MaterialRecord> {
    let key_id: String = col(row, 0)?;
    let material_id: String = col(row, 1)?;
    let origin: String = col(row, 3)?;
    Ok(MaterialRecord {
        key_id: parse_key_id("key_materials.key_id", &key_id)?,
        material_id: parse_material_id("key_materials.material_id", &material_id)?,
        created: col(row, 2)?,
        origin: MaterialOrigin::parse(&origin)
            .ok_or_else(|| unreadable("key_materials.origin", &origin))?,
    })
}

fn key_records(rows: &[Row]) -> StoreResult<Vec<KeyRecord>> {
    rows.iter().map(key_record).collect()
}

/// `allowed` as a text array for `state = ANY($n)`.
fn state_names(allowed: &[KeyState]) -> Vec<&'static str> {
    allowed.iter().map(|s| s.as_str()).collect()
}

/// The key's row as it is now.
pub(super) async fn read_key(
    client: &ClientWrapper,
    key_id: &KeyId,
) -> StoreResult<Option<KeyRecord>> {
    let stmt = client
        .prepare_cached(concat!(
            "SELECT ",
            key_columns!(),
            " FROM keys WHERE key_id = $1"
        ))
        .await
        .map_err(pg_err)?;
    let row = client
        .query_opt(&stmt, &[&key_id.to_string()])
        .await
        .map_err(pg_err)?;
    row.as_ref().map(key_record).transpose()
}

/// Tags deduplicated by key, the last value winning (one `INSERT ... ON CONFLICT` may not
/// touch a row twice).
fn last_value_per_tag(tags: &[Tag]) -> (Vec<&str>, Vec<&str>) {
    let mut keys: Vec<&str> = Vec::with_capacity(tags.len());
    let mut values: Vec<&str> = Vec::with_capacity(tags.len());
    for tag in tags {
        match keys.iter().position(|k| *k == tag.key) {
            Some(i) => values[i] = &tag.value,
            None => {
                keys.push(&tag.key);
                values.push(&tag.value);
            }
        }
    }
    (keys, values)
}

/// Upserts tags in one statement. `NotFound` if the key does not exist.
pub(super) async fn upsert_tags(
    client: &impl tokio_postgres::GenericClient,
    key_id: &KeyId,
    tags: &[Tag],
) -> StoreResult<()> {
    if tags.is_empty() {
        return Ok(());
    }
    let (keys, values) = last_value_per_tag(tags);
    client
        .execute(
            "INSERT INTO tags (key_id, tag_key, value) \
             SELECT $1, tag_key, value FROM unnest($2::text[], $3::text[]) AS t (tag_key, value) \
             ON CONFLICT (key_id, tag_key) DO UPDATE SET value = excluded.value",
            &[&key_id.to_string(), &keys, &values],
        )
        .await
        .map_err(pg_err)?;
    Ok(())
}

/// A key, its first material, its tags and (for adopted keys) its token object, in one
/// transaction.
pub(super) async fn insert_key(
    client: &mut ClientWrapper,
    key: KeyRecord,
    material: MaterialRecord,
    tags: Vec<Tag>,
    object: Option<TokenKeyRef>,
) -> StoreResult<()> {
    // Caught here for a clear message; the schema would also reject both at commit.
    if material.key_id != key.key_id || material.material_id != key.current_material {
        return Err(StoreError::backend(
            "insert_key: the material must belong to the key and be its current material",
        ));
    }
    let key_id = key.key_id.to_string();
    let material_id = material.material_id.to_hex();
    let pending_window_days = days_param("keys.pending_window_days", key.pending_window_days)?;
    let rotation_period_days = days_param("keys.rotation_period_days", key.rotation_period_days)?;
    let tx = client.transaction().await.map_err(pg_err)?;
    let insert_key = tx
        .prepare_cached(concat!(
            "INSERT INTO keys (",
            key_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        ))
        .await
        .map_err(pg_err)?;
    let params: [Param<'_>; 15] = [
        &key_id,
        &key.account,
        &key.description,
        &key.key_spec.as_str(),
        &key.key_usage.as_str(),
        &key.origin.as_str(),
        &key.state.as_str(),
        &key.creation_date,
        &key.deletion_date,
        &pending_window_days,
        &key.rotation_enabled,
        &rotation_period_days,
        &key.next_rotation_date,
        &material_id,
        &key.policy,
    ];
    tx.execute(&insert_key, &params).await.map_err(pg_err)?;
    insert_material_row(&tx, &material).await?;
    upsert_tags(&*tx, &key.key_id, &tags).await?;
    if let Some(object) = object {
        let (id, label) = match &object {
            TokenKeyRef::Id(id) => (Some(id.as_slice()), None),
            TokenKeyRef::Label(label) => (None, Some(label.as_str())),
        };
        tx.execute(
            "INSERT INTO adopted_materials (material_id, object_id, object_label) \
             VALUES ($1, $2, $3)",
            &[&material_id, &id, &label],
        )
        .await
        .map_err(pg_err)?;
    }
    // The deferred foreign key (current material) is checked here.
    tx.commit().await.map_err(pg_err)
}

async fn insert_material_row(
    client: &deadpool_postgres::Transaction<'_>,
    material: &MaterialRecord,
) -> StoreResult<()> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO key_materials (key_id, material_id, created, origin) \
             VALUES ($1, $2, $3, $4)",
        )
        .await
        .map_err(pg_err)?;
    client
        .execute(
            &stmt,
            &[
                &material.key_id.to_string(),
                &material.material_id.to_hex(),
                &material.created,
                &material.origin.as_str(),
            ],
        )
        .await
        .map_err(pg_err)?;
    Ok(())
}

pub(super) async fn adopted_materials(
    client: &ClientWrapper,
) -> StoreResult<Vec<(MaterialId, TokenKeyRef)>> {
    let rows = client
        .query(
            "SELECT material_id, object_id, object_label FROM adopted_materials \
             ORDER BY material_id",
            &[],
        )
        .await
        .map_err(pg_err)?;
    rows.iter()
        .map(|row| {
            let material: String = col(row, 0)?;
            let material = parse_material_id("adopted_materials.material_id", &material)?;
            let object = match (
                col::<Option<Vec<u8>>>(row, 1)?,
                col::<Option<String>>(row, 2)?,
            ) {
                (Some(id), None) => TokenKeyRef::Id(id),
                (None, Some(label)) => TokenKeyRef::Label(label),
                _ => return Err(unreadable("adopted_materials", &material.to_hex())),
            };
            Ok((material, object))
        })
        .collect()
}

pub(super) async fn list_keys(
    client: &ClientWrapper,
    account: String,
    after: Option<KeyId>,
    limit: usize,
) -> StoreResult<Vec<KeyRecord>> {
    let stmt = client
        .prepare_cached(concat!(
            "SELECT ",
            key_columns!(),
            " FROM keys WHERE account = $1 AND ($2::text IS NULL OR key_id > $2) \
             ORDER BY key_id LIMIT $3"
        ))
        .await
        .map_err(pg_err)?;
    let after = after.map(|k| k.to_string());
    let rows = client
        .query(&stmt, &[&account, &after, &sql_limit(limit)])
        .await
        .map_err(pg_err)?;
    key_records(&rows)
}

/// The `SET` clause of a change and its values (parameters from `$3` on).
fn change_clause(
    change: &KeyChange<'_>,
) -> StoreResult<(&'static str, Vec<Box<dyn ToSql + Sync + Send>>)> {
    Ok(match *change {
        KeyChange::State(state) => ("state = $3", vec![Box::new(state.as_str())]),
        KeyChange::ScheduleDeletion {
            deletion_date,
            pending_window_days,
        } => (
            "state = 'PendingDeletion', deletion_date = $3, pending_window_days = $4",
            vec![
                Box::new(deletion_date),
                Box::new(days_param(
                    "keys.pending_window_days",
                    Some(pending_window_days),
                )?),
            ],
        ),
        KeyChange::CancelDeletion => (
            "state = 'Disabled', deletion_date = NULL, pending_window_days = NULL",
            vec![],
        ),
        KeyChange::Description(text) => ("description = $3", vec![Box::new(text.to_string())]),
        KeyChange::Policy(text) => ("policy = $3", vec![Box::new(text.to_string())]),
        KeyChange::EnableRotation {
            period_days,
            next_rotation,
        } => (
            "rotation_enabled = TRUE, rotation_period_days = $3, next_rotation_date = $4",
            vec![
                Box::new(days_param("keys.rotation_period_days", Some(period_days))?),
                Box::new(next_rotation),
            ],
        ),
        KeyChange::DisableRotation => (
            "rotation_enabled = FALSE, next_rotation_date = NULL",
            vec![],
        ),
    })
}

/// A change prepared for the store's runtime: the SQL and owned values.
pub(super) struct PreparedChange {
    sql: String,
    values: Vec<Box<dyn ToSql + Sync + Send>>,
    allowed: Vec<&'static str>,
}

pub(super) fn prepare_change(
    change: &KeyChange<'_>,
    allowed: &[KeyState],
) -> StoreResult<PreparedChange> {
    let (set, values) = change_clause(change)?;
    Ok(PreparedChange {
        sql: format!(
            "UPDATE keys SET {set} WHERE key_id = $1 AND state = ANY($2) RETURNING {}",
            key_columns!()
        ),
        values,
        allowed: state_names(allowed),
    })
}

pub(super) async fn change_key(
    client: &ClientWrapper,
    key_id: KeyId,
    change: PreparedChange,
) -> StoreResult<Changed> {
    let id = key_id.to_string();
    let stmt = client.prepare_cached(&change.sql).await.map_err(pg_err)?;
    let mut params: Vec<Param<'_>> = vec![&id, &change.allowed];
    params.extend(change.values.iter().map(|v| &**v as Param<'_>));
    let updated = client.query_opt(&stmt, &params).await.map_err(pg_err)?;
    match updated {
        Some(row) => Ok(Changed::Applied(key_record(&row)?)),
        None => Ok(Changed::Refused(
            read_key(client, &key_id)
                .await?
                .ok_or(StoreError::NotFound)?,
        )),
    }
}

pub(super) async fn delete_key(
    client: &ClientWrapper,
    key_id: KeyId,
    due_by: Option<EpochSeconds>,
) -> StoreResult<bool> {
    let stmt = client
        .prepare_cached(
            "DELETE FROM keys WHERE key_id = $1 AND ($2::float8 IS NULL OR \
             (state = 'PendingDeletion' AND deletion_date <= $2))",
        )
        .await
        .map_err(pg_err)?;
    let removed = client
        .execute(&stmt, &[&key_id.to_string(), &due_by])
        .await
        .map_err(pg_err)?;
    Ok(removed > 0)
}

pub(super) async fn add_material(
    client: &mut ClientWrapper,
    material: MaterialRecord,
    next_rotation: Option<EpochSeconds>,
    allowed: Vec<&'static str>,
    due_by: Option<EpochSeconds>,
) -> StoreResult<Changed> {
    let tx = client.transaction().await.map_err(pg_err)?;
    // Fails with NotFound (foreign key) when the key does not exist.
    insert_material_row(&tx, &material).await?;
    let stmt = tx
        .prepare_cached(concat!(
            "UPDATE keys SET current_material = $2, next_rotation_date = $3 \
             WHERE key_id = $1 AND state = ANY($4) \
             AND ($5::float8 IS NULL OR (rotation_enabled AND next_rotation_date <= $5)) \
             RETURNING ",
            key_columns!()
        ))
        .await
        .map_err(pg_err)?;
    let key_id = material.key_id.to_string();
    let updated = tx
        .query_opt(
            &stmt,
            &[
                &key_id,
                &material.material_id.to_hex(),
                &next_rotation,
                &allowed,
                &due_by,
            ],
        )
        .await
        .map_err(pg_err)?;
    match updated {
        Some(row) => {
            let key = key_record(&row)?;
            tx.commit().await.map_err(pg_err)?;
            Ok(Changed::Applied(key))
        }
        None => {
            let stmt = tx
                .prepare_cached(concat!(
                    "SELECT ",
                    key_columns!(),
                    " FROM keys WHERE key_id = $1"
                ))
                .await
                .map_err(pg_err)?;
            let current = tx.query_opt(&stmt, &[&key_id]).await.map_err(pg_err)?;
            let current = current.as_ref().map(key_record).transpose()?;
            tx.rollback().await.map_err(pg_err)?;
            Ok(Changed::Refused(current.ok_or(StoreError::NotFound)?))
        }
    }
}

pub(super) fn guard_states(guard: &RotationGuard<'_>) -> Vec<&'static str> {
    state_names(guard.allowed)
}

pub(super) async fn get_material(
    client: &ClientWrapper,
    key_id: KeyId,
    material_id: MaterialId,
) -> StoreResult<Option<MaterialRecord>> {
    let stmt = client
        .prepare_cached(
            "SELECT key_id, material_id, created, origin FROM key_materials \
             WHERE key_id = $1 AND material_id = $2",
        )
        .await
        .map_err(pg_err)?;
    let row = client
        .query_opt(&stmt, &[&key_id.to_string(), &material_id.to_hex()])
        .await
        .map_err(pg_err)?;
    row.as_ref().map(material_record).transpose()
}

pub(super) async fn list_materials(
    client: &ClientWrapper,
    key_id: KeyId,
) -> StoreResult<Vec<MaterialRecord>> {
    let stmt = client
        .prepare_cached(
            "SELECT key_id, material_id, created, origin FROM key_materials \
             WHERE key_id = $1 ORDER BY created, seq",
        )
        .await
        .map_err(pg_err)?;
    let rows = client
        .query(&stmt, &[&key_id.to_string()])
        .await
        .map_err(pg_err)?;
    rows.iter().map(material_record).collect()
}

pub(super) async fn all_material_ids(client: &ClientWrapper) -> StoreResult<Vec<MaterialId>> {
    let rows = client
        .query(
            "SELECT material_id FROM key_materials ORDER BY material_id",
            &[],
        )
        .await
        .map_err(pg_err)?;
    rows.iter()
        .map(|row| {
            let text: String = col(row, 0)?;
            parse_material_id("key_materials.material_id", &text)
        })
        .collect()
}

pub(super) async fn keys_due_for_deletion(
    client: &ClientWrapper,
    now: EpochSeconds,
) -> StoreResult<Vec<KeyRecord>> {
    let stmt = client
        .prepare_cached(concat!(
            "SELECT ",
            key_columns!(),
            " FROM keys WHERE state = 'PendingDeletion' AND deletion_date <= $1 \
             ORDER BY deletion_date, key_id"
        ))
        .await
        .map_err(pg_err)?;
    let rows = client.query(&stmt, &[&now]).await.map_err(pg_err)?;
    key_records(&rows)
}

pub(super) async fn keys_due_for_rotation(
    client: &ClientWrapper,
    now: EpochSeconds,
) -> StoreResult<Vec<KeyRecord>> {
    let stmt = client
        .prepare_cached(concat!(
            "SELECT ",
            key_columns!(),
            " FROM keys WHERE state = 'Enabled' AND rotation_enabled \
             AND next_rotation_date <= $1 ORDER BY next_rotation_date, key_id"
        ))
        .await
        .map_err(pg_err)?;
    let rows = client.query(&stmt, &[&now]).await.map_err(pg_err)?;
    key_records(&rows)
}

pub(super) async fn count_keys_by_state(
    client: &ClientWrapper,
) -> StoreResult<Vec<(KeyState, u64)>> {
    let rows = client
        .query("SELECT state, COUNT(*) FROM keys GROUP BY state", &[])
        .await
        .map_err(pg_err)?;
    rows.iter()
        .map(|row| {
            let state: String = col(row, 0)?;
            let count: i64 = col(row, 1)?;
            let state = KeyState::parse(&state).ok_or_else(|| unreadable("keys.state", &state))?;
            Ok((state, u64::try_from(count).unwrap_or(0)))
        })
        .collect()
}
