//! No lost updates: every key change is a conditional write, so an acknowledged state change
//! is never undone by a concurrent write of another field.
//!
//! The race the reliability issue found: with two HSM sessions (two core threads), a
//! DisableKey acknowledged while other clients were updating the key's description came back
//! as Enabled, because every update rewrote the whole row it had read.
//!
//! Each test runs on the embedded SQLite store and on PostgreSQL (a fresh database in a
//! private server, `tests/pg_server`), with the same body.
//!
//! `P11KMS_LOST_UPDATE_TRIALS` sets the number of trials (default 200).

use crate::common::*;
use crate::pg_server::PgServer;
use aws_sdk_kms::types::KeyState;

fn trials() -> usize {
    std::env::var("P11KMS_LOST_UPDATE_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// Three clients rewrite a key's description (and policy) while a fourth disables it; once
/// all are answered, the key must be Disabled. Repeated `trials()` times, each on a fresh key.
async fn disable_key_survives_concurrent_updates(srv: &TestServer) {
    let kms = srv.client();
    let trials = trials();
    let mut lost = Vec::new();
    for trial in 0..trials {
        let key_id = create_key(&kms).await.key_id().to_string();
        let mut writers = Vec::new();
        for writer in 0..3 {
            let kms = kms.clone();
            let key_id = key_id.clone();
            writers.push(tokio::spawn(async move {
                for round in 0..4 {
                    kms.update_key_description()
                        .key_id(&key_id)
                        .description(format!("trial {trial} writer {writer} round {round}"))
                        .send()
                        .await
                        .expect("UpdateKeyDescription");
                }
            }));
        }
        let disabler = {
            let kms = kms.clone();
            let key_id = key_id.clone();
            tokio::spawn(async move {
                kms.disable_key()
                    .key_id(&key_id)
                    .send()
                    .await
                    .expect("DisableKey")
            })
        };
        disabler.await.expect("disabler task");
        for writer in writers {
            writer.await.expect("writer task");
        }
        let state = describe(&kms, &key_id).await.key_state().cloned();
        if state != Some(KeyState::Disabled) {
            lost.push((trial, state));
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {trials} acknowledged DisableKey calls were undone: {lost:?}",
        lost.len()
    );
}

/// The same with a scheduled deletion: UpdateKeyDescription racing ScheduleKeyDeletion must
/// never bring a key back from PendingDeletion. A writer that loses the race is refused with
/// AWS's KMSInvalidStateException, never acknowledged after the deletion was.
async fn deletion_schedule_survives_concurrent_updates(srv: &TestServer) {
    let kms = srv.client();
    let trials = trials() / 4;
    for trial in 0..trials {
        let key_id = create_key(&kms).await.key_id().to_string();
        let mut writers = Vec::new();
        for writer in 0..3 {
            let kms = kms.clone();
            let key_id = key_id.clone();
            writers.push(tokio::spawn(async move {
                for round in 0..4 {
                    let result = kms
                        .update_key_description()
                        .key_id(&key_id)
                        .description(format!("trial {trial} writer {writer} round {round}"))
                        .send()
                        .await;
                    if let Err(e) = result {
                        let err = api_error::<(), _>(Err(e));
                        assert_eq!(
                            err.code.as_deref(),
                            Some("KMSInvalidStateException"),
                            "{}",
                            err.display
                        );
                    }
                }
            }));
        }
        kms.schedule_key_deletion()
            .key_id(&key_id)
            .pending_window_in_days(7)
            .send()
            .await
            .expect("ScheduleKeyDeletion");
        for writer in writers {
            writer.await.expect("writer task");
        }
        let state = describe(&kms, &key_id).await.key_state().cloned();
        assert_eq!(state, Some(KeyState::PendingDeletion), "trial {trial}");
    }
}

/// A gateway with two HSM sessions (two core threads) on the embedded SQLite store.
fn sqlite_gateway() -> TestServer {
    TestServer::start_with(&[("P11KMS_SESSION_POOL_SIZE", "2")])
}

/// The same on a fresh PostgreSQL database.
fn postgres_gateway() -> TestServer {
    let server = PgServer::shared();
    let url = server.url(&server.create_database());
    TestServer::start_with(&[
        ("P11KMS_SESSION_POOL_SIZE", "2"),
        ("P11KMS_STORE_BACKEND", "postgres"),
        ("P11KMS_DATABASE_URL", &url),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_acknowledged_disable_key_is_never_undone_by_concurrent_updates() {
    disable_key_survives_concurrent_updates(&sqlite_gateway()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_acknowledged_deletion_schedule_is_never_undone_by_concurrent_updates() {
    deletion_schedule_survives_concurrent_updates(&sqlite_gateway()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres_an_acknowledged_disable_key_is_never_undone_by_concurrent_updates() {
    disable_key_survives_concurrent_updates(&postgres_gateway()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres_an_acknowledged_deletion_schedule_is_never_undone_by_concurrent_updates() {
    deletion_schedule_survives_concurrent_updates(&postgres_gateway()).await;
}
