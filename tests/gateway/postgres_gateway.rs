//! The gateway on the PostgreSQL store: what a client sees while PostgreSQL is down, and
//! recovery without a restart once it is back; the store's metrics; the password kept out
//! of the log.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::pg_server::PgServer;

fn gateway_on(server: &PgServer, extra: &[(&str, &str)]) -> TestServer {
    let url = server.url(&server.create_database());
    let mut env = vec![
        ("P11KMS_STORE_BACKEND", "postgres"),
        ("P11KMS_DATABASE_URL", url.as_str()),
    ];
    env.extend_from_slice(extra);
    TestServer::start_with(&env)
}

/// `pg_ctl stop -m immediate` under a running gateway: every request that needs the store
/// gets AWS's DependencyTimeoutException (a 5xx the SDKs retry), requests that do not need
/// it still work, `/readyz` is 503; after PostgreSQL starts again on the same port, the
/// same gateway process serves again, and `/readyz` is 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgres_is_down_requests_get_typed_errors_and_the_gateway_recovers_without_restart()
{
    let server = PgServer::start();
    let srv = gateway_on(
        &server,
        &[
            ("P11KMS_POSTGRES_CONNECT_TIMEOUT_MS", "1000"),
            ("P11KMS_POSTGRES_CHECKOUT_TIMEOUT_MS", "1000"),
        ],
    );
    let kms = srv.client();
    let pid = srv.pid();
    let key = create_key(&kms).await;
    let key_id = key.key_id().to_string();
    let blob = encrypt(&kms, &key_id, b"before the outage").await;
    let (status, _) = http_get(&format!("{}/readyz", srv.endpoint())).await;
    assert_eq!(status, 200);

    server.stop_immediate();
    let down_at = Instant::now();
    for _ in 0..3 {
        let err = api_error(kms.describe_key().key_id(&key_id).send().await);
        assert_eq!(
            err.code.as_deref(),
            Some("DependencyTimeoutException"),
            "{}",
            err.display
        );
        assert_eq!(
            err.status, 500,
            "botocore: a server fault with no status of its own"
        );
    }
    let err = api_error(
        kms.decrypt()
            .ciphertext_blob(blob.clone().into())
            .send()
            .await,
    );
    assert_eq!(
        err.code.as_deref(),
        Some("DependencyTimeoutException"),
        "{}",
        err.display
    );
    let err = api_error(kms.create_key().send().await);
    assert_eq!(
        err.code.as_deref(),
        Some("DependencyTimeoutException"),
        "{}",
        err.display
    );
    // No store needed: still served.
    kms.generate_random()
        .number_of_bytes(16)
        .send()
        .await
        .expect("GenerateRandom needs no store");
    let (status, body) = http_get(&format!("{}/readyz", srv.endpoint())).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("DependencyTimeoutException"), "{body}");
    let answered_in = down_at.elapsed();
    assert!(
        answered_in < Duration::from_secs(10),
        "errors must come promptly, not after long waits: {answered_in:?}"
    );

    server.start_again();
    let restarted = Instant::now();
    let recovered = poll_until(
        Duration::from_secs(15),
        Duration::from_millis(50),
        || async {
            kms.decrypt()
                .ciphertext_blob(blob.clone().into())
                .send()
                .await
                .ok()
                .and_then(|r| r.plaintext().map(|p| p.as_ref().to_vec()))
        },
    )
    .await;
    let recovery = restarted.elapsed();
    assert_eq!(recovered.as_deref(), Some(b"before the outage".as_slice()));
    println!(
        "recovered {} ms after PostgreSQL was ready again (pg_ctl start -w returned)",
        recovery.as_millis()
    );
    assert!(recovery < Duration::from_secs(5), "{recovery:?}");
    let (status, _) = http_get(&format!("{}/readyz", srv.endpoint())).await;
    assert_eq!(status, 200);
    assert_eq!(describe(&kms, &key_id).await.key_id(), key_id);
    create_key(&kms).await;
    assert_eq!(srv.pid(), pid, "the same process, never restarted");

    let log = srv.log_text();
    assert!(
        !log.contains(server.password()),
        "the database password reached the log"
    );
}

/// `/metrics` shows the store's pool: its maximum and occupancy, and the counters of waits
/// and timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_store_pool() {
    let srv = gateway_on(PgServer::shared(), &[("P11KMS_POSTGRES_POOL_SIZE", "3")]);
    let kms = srv.client();
    create_key(&kms).await;
    let (status, text) = http_get(&format!("{}/metrics", srv.endpoint())).await;
    assert_eq!(status, 200);
    for line in [
        "p11kms_store_pool_connections{state=\"max\"} 3",
        "p11kms_store_pool_waits_total 0",
        "p11kms_store_pool_timeouts_total 0",
        "p11kms_store_pool_waiters 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    let open = text
        .lines()
        .find_map(|l| l.strip_prefix("p11kms_store_pool_connections{state=\"open\"} "))
        .and_then(|v| v.parse::<u32>().ok())
        .expect("open connections");
    assert!((1..=3).contains(&open), "{open}");
}

/// A connection string from a file (`P11KMS_DATABASE_URL_FILE`) works like one from the
/// environment, and neither the string nor its password reaches the log, even at debug
/// level and when the password is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_string_comes_from_a_file_and_never_reaches_the_log() {
    let server = PgServer::shared();
    let database = server.create_database();
    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("database-url");
    std::fs::write(&file, format!("{}\n", server.url(&database))).unwrap();
    let srv = TestServer::start_with(&[
        ("P11KMS_STORE_BACKEND", "postgres"),
        ("P11KMS_DATABASE_URL_FILE", file.to_str().unwrap()),
    ]);
    create_key(&srv.client()).await;
    assert!(!srv.log_text().contains(server.password()));

    // A wrong password: the gateway does not start, and says why without the secret.
    let wrong = server
        .url(&database)
        .replace(server.password(), "wrong-secret-4711");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_p11kms-under-test"))
        .arg("serve")
        .env("P11KMS_DATA_DIR", dir.path().join("data"))
        .env("P11KMS_LISTEN", "127.0.0.1:0")
        .env("P11KMS_LOG", "debug")
        .env("P11KMS_STORE_BACKEND", "postgres")
        .env("P11KMS_DATABASE_URL", &wrong)
        .env_remove("SOFTHSM2_CONF")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("PostgreSQL"), "{stderr}");
    assert!(!stderr.contains("wrong-secret-4711"), "{stderr}");
}
