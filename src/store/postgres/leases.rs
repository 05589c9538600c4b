//! Leases on the periodic jobs: one row per job, naming its holder and when its lease
//! ends, by PostgreSQL's clock (replicas' clocks may disagree; the server's is the one
//! reference they share).

use deadpool_postgres::ClientWrapper;

use super::errors::pg_err;
use crate::store::StoreResult;

/// Takes the lease on `job` for `holder` for `ttl_ms`, or renews it, in one conditional
/// write: only if nobody holds it, `holder` does already, or the holder's lease ran out
/// (a replica that died, SIGKILL included, stops renewing). Whether `holder` holds it now.
pub(super) async fn acquire(
    client: &ClientWrapper,
    job: String,
    holder: String,
    ttl_ms: i64,
) -> StoreResult<bool> {
    let rows = client
        .query(
            "INSERT INTO job_leases (job, holder, expires)
                 VALUES ($1, $2, clock_timestamp() + $3::bigint * interval '1 millisecond')
             ON CONFLICT (job) DO UPDATE
                 SET holder = EXCLUDED.holder, expires = EXCLUDED.expires
                 WHERE job_leases.holder = EXCLUDED.holder
                    OR job_leases.expires < clock_timestamp()
             RETURNING holder",
            &[&job, &holder, &ttl_ms],
        )
        .await
        .map_err(pg_err)?;
    Ok(!rows.is_empty())
}
