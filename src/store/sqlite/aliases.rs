//! Aliases and tags in the SQLite store.

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::{db_err, parse_key_id, query_all, sql_limit, upsert_tags};
use crate::model::{AliasRecord, EpochSeconds, KeyId, Tag};
use crate::store::{tag_count_after, StoreError, StoreResult, TagWrite};

/// Column list of every `SELECT` that yields an [`AliasRecord`]; order matches [`read_alias`].
macro_rules! alias_columns {
    () => {
        "account, name, target_key_id, creation_date, last_updated"
    };
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

/// `NotFound` if the target key does not exist in the alias's account.
pub(super) fn insert_alias(conn: &Connection, alias: &AliasRecord) -> StoreResult<()> {
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

pub(super) fn get_alias(
    conn: &Connection,
    account: &str,
    name: &str,
) -> StoreResult<Option<AliasRecord>> {
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
pub(super) fn update_alias(
    conn: &Connection,
    account: &str,
    name: &str,
    target: &KeyId,
    now: EpochSeconds,
) -> StoreResult<()> {
    let changed = conn
        .prepare_cached("UPDATE aliases SET target_key_id = ?3, last_updated = ?4 WHERE account = ?1 AND name = ?2")
        .and_then(|mut stmt| stmt.execute(params![account, name, target.to_string(), now]))
        .map_err(db_err)?;
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub(super) fn delete_alias(conn: &Connection, account: &str, name: &str) -> StoreResult<()> {
    let changed = conn
        .prepare_cached("DELETE FROM aliases WHERE account = ?1 AND name = ?2")
        .and_then(|mut stmt| stmt.execute(params![account, name]))
        .map_err(db_err)?;
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub(super) fn list_aliases(
    conn: &Connection,
    account: &str,
    target: Option<&KeyId>,
    after: Option<&str>,
    limit: usize,
) -> StoreResult<Vec<AliasRecord>> {
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
pub(super) fn put_tags(
    conn: &mut Connection,
    key_id: &KeyId,
    tags: &[Tag],
    max_tags: usize,
) -> StoreResult<TagWrite> {
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
pub(super) fn remove_tags(
    conn: &mut Connection,
    key_id: &KeyId,
    tag_keys: &[String],
) -> StoreResult<()> {
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

pub(super) fn list_tags(
    conn: &Connection,
    key_id: &KeyId,
    after: Option<&str>,
    limit: usize,
) -> StoreResult<Vec<Tag>> {
    let limit = sql_limit(limit);
    let key_id = key_id.to_string();
    match after {
        None => {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT tag_key, value FROM tags WHERE key_id = ?1 ORDER BY tag_key LIMIT ?2",
                )
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
