//! Reading columns and parsing them into the domain types, naming the column when a value
//! does not parse (a damaged or foreign database is a `Backend` error, never a panic).

use tokio_postgres::types::FromSql;
use tokio_postgres::Row;

use super::errors::pg_err;
use crate::model::{KeyId, MaterialId};
use crate::store::{StoreError, StoreResult};

pub(super) fn col<'a, T: FromSql<'a>>(row: &'a Row, index: usize) -> StoreResult<T> {
    row.try_get(index).map_err(pg_err)
}

pub(super) fn unreadable(column: &str, value: &str) -> StoreError {
    StoreError::backend(format!("unreadable value {value:?} in column {column}"))
}

pub(super) fn parse_key_id(column: &str, text: &str) -> StoreResult<KeyId> {
    // Only the lower-case form is canonical; the store never writes another.
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(unreadable(column, text));
    }
    text.parse().map_err(|()| unreadable(column, text))
}

pub(super) fn parse_material_id(column: &str, text: &str) -> StoreResult<MaterialId> {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(unreadable(column, text));
    }
    text.parse().map_err(|()| unreadable(column, text))
}

pub(super) fn parse_days(column: &str, value: Option<i32>) -> StoreResult<Option<u32>> {
    value
        .map(|v| u32::try_from(v).map_err(|_| unreadable(column, &v.to_string())))
        .transpose()
}

pub(super) fn days_param(column: &str, days: Option<u32>) -> StoreResult<Option<i32>> {
    days.map(|d| {
        i32::try_from(d).map_err(|_| StoreError::backend(format!("{column}: {d} is out of range")))
    })
    .transpose()
}

/// PostgreSQL's `LIMIT` takes a bigint; anything larger is "no limit" in practice.
pub(super) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}
