//! PostgreSQL errors in store terms.
//!
//! A uniqueness violation is `AlreadyExists`; a foreign-key violation (the referenced key or
//! material does not exist) is `NotFound`; a server that cannot be reached, has gone away,
//! is shutting down or did not answer within the statement timeout is `Unavailable`;
//! anything else is `Backend`. The connection string never appears in any of them.

use deadpool_postgres::{PoolError, TimeoutType};
use tokio_postgres::error::SqlState;

use crate::store::StoreError;

pub(super) fn pg_err(e: tokio_postgres::Error) -> StoreError {
    if let Some(code) = e.code() {
        if *code == SqlState::UNIQUE_VIOLATION {
            return StoreError::AlreadyExists;
        }
        if *code == SqlState::FOREIGN_KEY_VIOLATION {
            return StoreError::NotFound;
        }
        if is_unavailable_state(code) {
            return StoreError::unavailable_from("PostgreSQL", e);
        }
        return StoreError::backend_from("PostgreSQL", e);
    }
    if is_transport_failure(&e) {
        return StoreError::unavailable_from("PostgreSQL", e);
    }
    StoreError::backend_from("PostgreSQL", e)
}

/// SQLSTATEs that mean "the server cannot serve now", not "this request is wrong".
fn is_unavailable_state(code: &SqlState) -> bool {
    let text = code.code();
    // Class 08: connection exception; class 53: insufficient resources (too many
    // connections, out of memory or disk); class 57P: the server is shutting down or
    // starting; class 28: the credentials were refused (rotated password).
    text.starts_with("08")
        || text.starts_with("53")
        || text.starts_with("57P")
        || text.starts_with("28")
        // statement_timeout, lock_timeout: the server did not answer in time.
        || *code == SqlState::QUERY_CANCELED
        || *code == SqlState::LOCK_NOT_AVAILABLE
}

/// Whether PostgreSQL refused the credentials (SQLSTATE class 28) somewhere in `e`'s causes:
/// unavailable while serving (a password rotated under a running replica), but a
/// configuration error at start-up.
pub(super) fn is_credentials_refused(e: &StoreError) -> bool {
    let mut cause = std::error::Error::source(e);
    while let Some(inner) = cause {
        if let Some(pg) = inner.downcast_ref::<tokio_postgres::Error>() {
            if pg.code().is_some_and(|code| code.code().starts_with("28")) {
                return true;
            }
        }
        cause = inner.source();
    }
    false
}

/// A failure of the connection itself rather than of a statement: tokio-postgres reports
/// these without a SQLSTATE, as I/O errors, a closed connection, a failed connect or a
/// connect timeout (its error kinds are not public; their texts are stable).
fn is_transport_failure(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    let mut cause = std::error::Error::source(e);
    while let Some(inner) = cause {
        if inner.is::<std::io::Error>() {
            return true;
        }
        cause = inner.source();
    }
    matches!(
        e.to_string().as_str(),
        "error connecting to server"
            | "timeout waiting for server"
            | "error communicating with the server"
            | "error performing TLS handshake"
            | "connection closed"
    )
}

/// A failed checkout: the pool had no connection free before the deadline, or could not
/// open one.
pub(super) fn pool_err(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => pg_err(e),
        PoolError::Timeout(TimeoutType::Wait) => StoreError::unavailable(
            "no PostgreSQL connection came free before the checkout timeout \
             (store.postgres_pool_size, store.postgres_checkout_timeout_ms)",
        ),
        PoolError::Timeout(TimeoutType::Create) => StoreError::unavailable(
            "PostgreSQL did not accept a connection before the connect timeout \
             (store.postgres_connect_timeout_ms)",
        ),
        PoolError::Timeout(TimeoutType::Recycle) => {
            StoreError::unavailable("PostgreSQL did not answer a pooled connection's check")
        }
        PoolError::Closed => StoreError::unavailable("the PostgreSQL connection pool is closed"),
        other => StoreError::backend(format!("PostgreSQL connection pool: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_sort_into_unavailable_and_backend() {
        for state in [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::CONNECTION_FAILURE,
            SqlState::QUERY_CANCELED,
            SqlState::INVALID_PASSWORD,
        ] {
            assert!(is_unavailable_state(&state), "{}", state.code());
        }
        for state in [
            SqlState::SYNTAX_ERROR,
            SqlState::UNDEFINED_TABLE,
            SqlState::CHECK_VIOLATION,
            SqlState::NOT_NULL_VIOLATION,
        ] {
            assert!(!is_unavailable_state(&state), "{}", state.code());
        }
    }
}
