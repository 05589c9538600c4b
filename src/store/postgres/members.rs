//! The `domain_members` table on PostgreSQL (see [`crate::store::members`]).

use deadpool_postgres::ClientWrapper;

use super::errors::pg_err;
use super::rows::col;
use crate::store::members::DomainMember;
use crate::store::StoreResult;

/// Migration step "domain members" (renumbered at merge with the domain-key tables).
pub(super) const MIGRATION: &str = r#"
    CREATE TABLE domain_members (
        domain_id             TEXT COLLATE "C" NOT NULL,
        token_manufacturer    TEXT             NOT NULL,
        token_model           TEXT             NOT NULL,
        token_serial          TEXT             NOT NULL,
        token_label           TEXT             NOT NULL,
        transport_fingerprint TEXT,
        enrolled_at           DOUBLE PRECISION NOT NULL,
        enrolled_by           TEXT             NOT NULL,
        -- Enrolment order between rows of the same clock tick.
        seq                   BIGINT GENERATED ALWAYS AS IDENTITY,
        PRIMARY KEY (domain_id, token_manufacturer, token_model, token_serial)
    );
    "#;

/// One conditional insert: a token already recorded in the domain keeps its first row.
pub(super) async fn insert(client: &ClientWrapper, member: DomainMember) -> StoreResult<bool> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO domain_members (domain_id, token_manufacturer, token_model, \
             token_serial, token_label, transport_fingerprint, enrolled_at, enrolled_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .await
        .map_err(pg_err)?;
    let added = client
        .execute(
            &stmt,
            &[
                &member.domain_id,
                &member.token_manufacturer,
                &member.token_model,
                &member.token_serial,
                &member.token_label,
                &member.transport_fingerprint,
                &member.enrolled_at,
                &member.enrolled_by,
            ],
        )
        .await
        .map_err(pg_err)?;
    Ok(added == 1)
}

pub(super) async fn list(
    client: &ClientWrapper,
    domain_id: Option<String>,
) -> StoreResult<Vec<DomainMember>> {
    let stmt = client
        .prepare_cached(
            "SELECT domain_id, token_label, token_manufacturer, token_model, token_serial, \
             transport_fingerprint, enrolled_at, enrolled_by FROM domain_members \
             WHERE $1::text IS NULL OR domain_id = $1 ORDER BY domain_id, enrolled_at, seq",
        )
        .await
        .map_err(pg_err)?;
    let rows = client.query(&stmt, &[&domain_id]).await.map_err(pg_err)?;
    rows.iter()
        .map(|row| {
            Ok(DomainMember {
                domain_id: col(row, 0)?,
                token_label: col(row, 1)?,
                token_manufacturer: col(row, 2)?,
                token_model: col(row, 3)?,
                token_serial: col(row, 4)?,
                transport_fingerprint: col(row, 5)?,
                enrolled_at: col(row, 6)?,
                enrolled_by: col(row, 7)?,
            })
        })
        .collect()
}
