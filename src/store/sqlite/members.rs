//! The `domain_members` table on SQLite (see [`crate::store::members`]).

use rusqlite::{params, Connection};

use super::db_err;
use crate::store::members::DomainMember;
use crate::store::StoreResult;

/// Migration step "domain members" (renumbered at merge with the domain-key tables).
pub(super) const MIGRATION: &str = "
    CREATE TABLE domain_members (
        domain_id             TEXT NOT NULL,
        token_manufacturer    TEXT NOT NULL,
        token_model           TEXT NOT NULL,
        token_serial          TEXT NOT NULL,
        token_label           TEXT NOT NULL,
        transport_fingerprint TEXT,
        enrolled_at           REAL NOT NULL,
        enrolled_by           TEXT NOT NULL,
        PRIMARY KEY (domain_id, token_manufacturer, token_model, token_serial)
    );
    ";

/// One conditional insert: a token already recorded in the domain keeps its first row.
pub(super) fn insert(conn: &Connection, member: &DomainMember) -> StoreResult<bool> {
    let added = conn
        .prepare_cached(
            "INSERT INTO domain_members (domain_id, token_manufacturer, token_model, \
             token_serial, token_label, transport_fingerprint, enrolled_at, enrolled_by) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                member.domain_id,
                member.token_manufacturer,
                member.token_model,
                member.token_serial,
                member.token_label,
                member.transport_fingerprint,
                member.enrolled_at,
                member.enrolled_by,
            ])
        })
        .map_err(db_err)?;
    Ok(added == 1)
}

pub(super) fn list(conn: &Connection, domain_id: Option<&str>) -> StoreResult<Vec<DomainMember>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT domain_id, token_label, token_manufacturer, token_model, token_serial, \
             transport_fingerprint, enrolled_at, enrolled_by FROM domain_members \
             WHERE ?1 IS NULL OR domain_id = ?1 ORDER BY domain_id, enrolled_at, rowid",
        )
        .map_err(db_err)?;
    let rows = stmt
        .query_map(params![domain_id], |row| {
            Ok(DomainMember {
                domain_id: row.get(0)?,
                token_label: row.get(1)?,
                token_manufacturer: row.get(2)?,
                token_model: row.get(3)?,
                token_serial: row.get(4)?,
                transport_fingerprint: row.get(5)?,
                enrolled_at: row.get(6)?,
                enrolled_by: row.get(7)?,
            })
        })
        .map_err(db_err)?;
    rows.map(|row| row.map_err(db_err)).collect()
}
