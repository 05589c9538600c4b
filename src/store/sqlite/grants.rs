//! Grants in the SQLite store.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{db_err, parse_key_id, query_all, sql_limit, unreadable};
use crate::model::{GrantRecord, KeyId};
use crate::store::{StoreError, StoreResult};

/// Column list of every `SELECT` that yields a [`GrantRecord`]; order matches [`GrantRow::read`].
macro_rules! grant_columns {
    () => {
        "grant_id, key_id, name, grantee_principal, retiring_principal, issuing_account, \
         operations, constraints, creation_date, token_secret"
    };
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

pub(super) fn insert_grant(conn: &Connection, grant: &GrantRecord) -> StoreResult<()> {
    let operations = serde_json::to_string(&grant.operations)
        .map_err(|e| StoreError::backend_from("grants.operations", e))?;
    let constraints = serde_json::to_string(&grant.constraints)
        .map_err(|e| StoreError::backend_from("grants.constraints", e))?;
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

pub(super) fn get_grant(conn: &Connection, grant_id: &str) -> StoreResult<Option<GrantRecord>> {
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

pub(super) fn list_grants(
    conn: &Connection,
    key_id: &KeyId,
    after: Option<&str>,
    limit: usize,
) -> StoreResult<Vec<GrantRecord>> {
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

pub(super) fn count_grants(conn: &Connection, key_id: &KeyId) -> StoreResult<u64> {
    let count: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM grants WHERE key_id = ?1")
        .and_then(|mut stmt| stmt.query_row(params![key_id.to_string()], |row| row.get(0)))
        .map_err(db_err)?;
    Ok(u64::try_from(count).unwrap_or(0))
}

pub(super) fn grants_for_grantee(
    conn: &Connection,
    key_id: &KeyId,
    grantee: &str,
) -> StoreResult<Vec<GrantRecord>> {
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

pub(super) fn grants_named(
    conn: &Connection,
    key_id: &KeyId,
    name: &str,
) -> StoreResult<Vec<GrantRecord>> {
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

pub(super) fn list_retirable_grants(
    conn: &Connection,
    principal: &str,
    after: Option<&str>,
    limit: usize,
) -> StoreResult<Vec<GrantRecord>> {
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

pub(super) fn delete_grant(conn: &Connection, grant_id: &str) -> StoreResult<()> {
    let changed = conn
        .prepare_cached("DELETE FROM grants WHERE grant_id = ?1")
        .and_then(|mut stmt| stmt.execute(params![grant_id]))
        .map_err(db_err)?;
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}
