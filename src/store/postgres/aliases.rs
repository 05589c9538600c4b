//! Aliases and tags.

use deadpool_postgres::ClientWrapper;
use tokio_postgres::Row;

use super::errors::pg_err;
use super::keys::upsert_tags;
use super::rows::{col, parse_key_id, sql_limit};
use crate::model::{AliasRecord, EpochSeconds, KeyId, Tag};
use crate::store::{tag_count_after, StoreError, StoreResult, TagWrite};

/// Column list of every query that yields an [`AliasRecord`]; order matches [`alias_record`].
macro_rules! alias_columns {
    () => {
        "account, name, target_key_id, creation_date, last_updated"
    };
}

fn alias_record(row: &Row) -> StoreResult<AliasRecord> {
    let target: String = col(row, 2)?;
    Ok(AliasRecord {
        account: col(row, 0)?,
        name: col(row, 1)?,
        target: parse_key_id("aliases.target_key_id", &target)?,
        creation_date: col(row, 3)?,
        last_updated: col(row, 4)?,
    })
}

/// `AlreadyExists` if the name is taken in the account; `NotFound` if the target key does
/// not exist in the alias's account.
pub(super) async fn insert_alias(client: &ClientWrapper, alias: AliasRecord) -> StoreResult<()> {
    let stmt = client
        .prepare_cached(concat!(
            "INSERT INTO aliases (",
            alias_columns!(),
            ") VALUES ($1, $2, $3, $4, $5)"
        ))
        .await
        .map_err(pg_err)?;
    client
        .execute(
            &stmt,
            &[
                &alias.account,
                &alias.name,
                &alias.target.to_string(),
                &alias.creation_date,
                &alias.last_updated,
            ],
        )
        .await
        .map_err(pg_err)?;
    Ok(())
}

pub(super) async fn get_alias(
    client: &ClientWrapper,
    account: String,
    name: String,
) -> StoreResult<Option<AliasRecord>> {
    let stmt = client
        .prepare_cached(concat!(
            "SELECT ",
            alias_columns!(),
            " FROM aliases WHERE account = $1 AND name = $2"
        ))
        .await
        .map_err(pg_err)?;
    let row = client
        .query_opt(&stmt, &[&account, &name])
        .await
        .map_err(pg_err)?;
    row.as_ref().map(alias_record).transpose()
}

/// `NotFound` if there is no such alias, or if `target` does not exist in the account.
pub(super) async fn update_alias(
    client: &ClientWrapper,
    account: String,
    name: String,
    target: KeyId,
    now: EpochSeconds,
) -> StoreResult<()> {
    let stmt = client
        .prepare_cached(
            "UPDATE aliases SET target_key_id = $3, last_updated = $4 \
             WHERE account = $1 AND name = $2",
        )
        .await
        .map_err(pg_err)?;
    let changed = client
        .execute(&stmt, &[&account, &name, &target.to_string(), &now])
        .await
        .map_err(pg_err)?;
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub(super) async fn delete_alias(
    client: &ClientWrapper,
    account: String,
    name: String,
) -> StoreResult<()> {
    let stmt = client
        .prepare_cached("DELETE FROM aliases WHERE account = $1 AND name = $2")
        .await
        .map_err(pg_err)?;
    let changed = client
        .execute(&stmt, &[&account, &name])
        .await
        .map_err(pg_err)?;
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub(super) async fn list_aliases(
    client: &ClientWrapper,
    account: String,
    target: Option<KeyId>,
    after: Option<String>,
    limit: usize,
) -> StoreResult<Vec<AliasRecord>> {
    let stmt = client
        .prepare_cached(concat!(
            "SELECT ",
            alias_columns!(),
            " FROM aliases WHERE account = $1 \
             AND ($2::text IS NULL OR target_key_id = $2) \
             AND ($3::text IS NULL OR name > $3) \
             ORDER BY name LIMIT $4"
        ))
        .await
        .map_err(pg_err)?;
    let target = target.map(|k| k.to_string());
    let rows = client
        .query(&stmt, &[&account, &target, &after, &sql_limit(limit)])
        .await
        .map_err(pg_err)?;
    rows.iter().map(alias_record).collect()
}

/// `NotFound` if the key does not exist; one statement, so a failed put leaves nothing.
/// The key's row is locked first (`FOR UPDATE`), so concurrent taggers of one key, on any
/// replica, count and write one after another and cannot together pass the quota.
pub(super) async fn put_tags(
    client: &mut ClientWrapper,
    key_id: KeyId,
    tags: Vec<Tag>,
    max_tags: usize,
) -> StoreResult<TagWrite> {
    let tx = client.transaction().await.map_err(pg_err)?;
    let id = key_id.to_string();
    let locked = tx
        .query_opt("SELECT 1 FROM keys WHERE key_id = $1 FOR UPDATE", &[&id])
        .await
        .map_err(pg_err)?;
    if locked.is_none() {
        return Err(StoreError::NotFound);
    }
    let existing: Vec<String> = tx
        .query("SELECT tag_key FROM tags WHERE key_id = $1", &[&id])
        .await
        .map_err(pg_err)?
        .iter()
        .map(|row| col(row, 0))
        .collect::<StoreResult<_>>()?;
    if tag_count_after(&existing, &tags) > max_tags {
        return Ok(TagWrite::OverQuota);
    }
    upsert_tags(&*tx, &key_id, &tags).await?;
    tx.commit().await.map_err(pg_err)?;
    Ok(TagWrite::Written)
}

/// Tag keys that are not present are ignored, as AWS `UntagResource` does.
pub(super) async fn remove_tags(
    client: &ClientWrapper,
    key_id: KeyId,
    tag_keys: Vec<String>,
) -> StoreResult<()> {
    let stmt = client
        .prepare_cached("DELETE FROM tags WHERE key_id = $1 AND tag_key = ANY($2)")
        .await
        .map_err(pg_err)?;
    client
        .execute(&stmt, &[&key_id.to_string(), &tag_keys])
        .await
        .map_err(pg_err)?;
    Ok(())
}

pub(super) async fn list_tags(
    client: &ClientWrapper,
    key_id: KeyId,
    after: Option<String>,
    limit: usize,
) -> StoreResult<Vec<Tag>> {
    let stmt = client
        .prepare_cached(
            "SELECT tag_key, value FROM tags WHERE key_id = $1 \
             AND ($2::text IS NULL OR tag_key > $2) ORDER BY tag_key LIMIT $3",
        )
        .await
        .map_err(pg_err)?;
    let rows = client
        .query(&stmt, &[&key_id.to_string(), &after, &sql_limit(limit)])
        .await
        .map_err(pg_err)?;
    rows.iter()
        .map(|row| {
            Ok(Tag {
                key: col(row, 0)?,
                value: col(row, 1)?,
            })
        })
        .collect()
}
