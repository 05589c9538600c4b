//! Grants.

use deadpool_postgres::ClientWrapper;
use tokio_postgres::Row;

use super::errors::pg_err;
use super::rows::{col, parse_key_id, sql_limit, unreadable};
use crate::model::{GrantRecord, KeyId};
use crate::store::{StoreError, StoreResult};

/// Column list of every query that yields a [`GrantRecord`]; order matches [`grant_record`].
macro_rules! grant_columns {
    () => {
        "grant_id, key_id, name, grantee_principal, retiring_principal, issuing_account, \
         operations, constraints, creation_date, token_secret"
    };
}

fn grant_record(row: &Row) -> StoreResult<GrantRecord> {
    let key_id: String = col(row, 1)?;
    let operations: String = col(row, 6)?;
    let constraints: String = col(row, 7)?;
    let secret: Vec<u8> = col(row, 9)?;
    let token_secret: [u8; 16] = secret
        .as_slice()
        .try_into()
        .map_err(|_| unreadable("grants.token_secret", "(not shown)"))?;
    Ok(GrantRecord {
        grant_id: col(row, 0)?,
        key_id: parse_key_id("grants.key_id", &key_id)?,
        name: col(row, 2)?,
        grantee_principal: col(row, 3)?,
        retiring_principal: col(row, 4)?,
        issuing_account: col(row, 5)?,
        operations: serde_json::from_str(&operations)
            .map_err(|_| unreadable("grants.operations", &operations))?,
        constraints: serde_json::from_str(&constraints)
            .map_err(|_| unreadable("grants.constraints", &constraints))?,
        creation_date: col(row, 8)?,
        token_secret,
    })
}

fn grant_records(rows: &[Row]) -> StoreResult<Vec<GrantRecord>> {
    rows.iter().map(grant_record).collect()
}

/// `AlreadyExists` if the grant id is taken; `NotFound` if the key is gone.
pub(super) async fn insert_grant(client: &ClientWrapper, grant: GrantRecord) -> StoreResult<()> {
    let operations = serde_json::to_string(&grant.operations)
        .map_err(|e| StoreError::backend_from("grants.operations", e))?;
    let constraints = serde_json::to_string(&grant.constraints)
        .map_err(|e| StoreError::backend_from("grants.constraints", e))?;
    let stmt = client
        .prepare_cached(concat!(
            "INSERT INTO grants (",
            grant_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .await
        .map_err(pg_err)?;
    client
        .execute(
            &stmt,
            &[
                &grant.grant_id,
                &grant.key_id.to_string(),
                &grant.name,
                &grant.grantee_principal,
                &grant.retiring_principal,
                &grant.issuing_account,
                &operations,
                &constraints,
                &grant.creation_date,
                &grant.token_secret.as_slice(),
            ],
        )
        .await
        .map_err(pg_err)?;
    Ok(())
}

pub(super) async fn get_grant(
    client: &ClientWrapper,
    grant_id: String,
) -> StoreResult<Option<GrantRecord>> {
    let stmt = client
        .prepare_cached(concat!(
            "SELECT ",
            grant_columns!(),
            " FROM grants WHERE grant_id = $1"
        ))
        .await
        .map_err(pg_err)?;
    let row = client
        .query_opt(&stmt, &[&grant_id])
        .await
        .map_err(pg_err)?;
    row.as_ref().map(grant_record).transpose()
}

pub(super) async fn list_grants(
    client: &ClientWrapper,
    key_id: KeyId,
    after: Option<String>,
    limit: usize,
) -> StoreResult<Vec<GrantRecord>> {
    let stmt = client
        .prepare_cached(concat!(
            "SELECT ",
            grant_columns!(),
            " FROM grants WHERE key_id = $1 AND grant_id > $2 ORDER BY grant_id LIMIT $3"
        ))
        .await
        .map_err(pg_err)?;
    let after = after.unwrap_or_default();
    let rows = client
        .query(&stmt, &[&key_id.to_string(), &after, &sql_limit(limit)])
        .await
        .map_err(pg_err)?;
    grant_records(&rows)
}

pub(super) async fn count_grants(client: &ClientWrapper, key_id: KeyId) -> StoreResult<u64> {
    let stmt = client
        .prepare_cached("SELECT COUNT(*) FROM grants WHERE key_id = $1")
        .await
        .map_err(pg_err)?;
    let row = client
        .query_one(&stmt, &[&key_id.to_string()])
        .await
        .map_err(pg_err)?;
    let count: i64 = col(&row, 0)?;
    Ok(u64::try_from(count).unwrap_or(0))
}

pub(super) async fn grants_for_grantee(
    client: &ClientWrapper,
    key_id: KeyId,
    grantee: String,
) -> StoreResult<Vec<GrantRecord>> {
    let stmt = client
        .prepare_cached(concat!(
            "SELECT ",
            grant_columns!(),
            " FROM grants WHERE key_id = $1 AND grantee_principal = $2 ORDER BY grant_id"
        ))
        .await
        .map_err(pg_err)?;
    let rows = client
        .query(&stmt, &[&key_id.to_string(), &grantee])
        .await
        .map_err(pg_err)?;
    grant_records(&rows)
}

pub(super) async fn grants_named(
    client: &ClientWrapper,
    key_id: KeyId,
    name: String,
) -> StoreResult<Vec<GrantRecord>> {
    let stmt = client
        .prepare_cached(concat!(
            "SELECT ",
            grant_columns!(),
            " FROM grants WHERE key_id = $1 AND name = $2 ORDER BY grant_id"
        ))
        .await
        .map_err(pg_err)?;
    let rows = client
        .query(&stmt, &[&key_id.to_string(), &name])
        .await
        .map_err(pg_err)?;
    grant_records(&rows)
}

pub(super) async fn list_retirable_grants(
    client: &ClientWrapper,
    principal: String,
    after: Option<String>,
    limit: usize,
) -> StoreResult<Vec<GrantRecord>> {
    let stmt = client
        .prepare_cached(concat!(
            "SELECT ",
            grant_columns!(),
            " FROM grants WHERE retiring_principal = $1 AND grant_id > $2 \
             ORDER BY grant_id LIMIT $3"
        ))
        .await
        .map_err(pg_err)?;
    let after = after.unwrap_or_default();
    let rows = client
        .query(&stmt, &[&principal, &after, &sql_limit(limit)])
        .await
        .map_err(pg_err)?;
    grant_records(&rows)
}

/// `NotFound` if there is no such grant.
pub(super) async fn delete_grant(client: &ClientWrapper, grant_id: String) -> StoreResult<()> {
    let stmt = client
        .prepare_cached("DELETE FROM grants WHERE grant_id = $1")
        .await
        .map_err(pg_err)?;
    let changed = client.execute(&stmt, &[&grant_id]).await.map_err(pg_err)?;
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}
