//! Rotating the domain key of a domain that spans two tokens while both gateways serve.
//!
//! Two gateways (real `p11kms serve` processes on 127.0.0.1), each on its own embedded
//! SoftHSM2 token, enrolled in one domain by the ceremony, share one store: PostgreSQL (a
//! private server, `tests/pg_server`) or one SQLite file. Keys and ciphertexts are made on
//! both; then, while client tasks keep calling Encrypt, Decrypt, ReEncrypt, Sign and
//! CreateKey on both gateways, the rotation runs: `rotate --prepare` on the first token,
//! `rotate --activate` (refused, naming the second token), the ceremony moves the new key
//! into the second token, `rotate --activate` again. No request may fail, old ciphertexts
//! must decrypt, keys made afterwards must be wrapped under the new key, and no gateway is
//! restarted. The domain cache holds two objects only, so that keys are unwrapped again and
//! again, under whichever domain key their blob names at the time.
//!
//! `P11KMS_ROTATION_KEYS` sets how many extra keys exist before the rotation (default 40);
//! the activation's time is printed (`--nocapture`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::pg_server::PgServer;
use aws_sdk_kms::error::DisplayErrorContext;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyUsageType, MessageType, SigningAlgorithmSpec};
use aws_sdk_kms::Client;
use p11kms::model::{DomainKeyId, DomainKeyState, MaterialId};
use p11kms::store::{MetadataStore, PostgresSettings, PostgresStore, SqliteStore};
use secrecy::SecretString;
use serde_json::Value;

/// The store both gateways and every command share.
enum SharedStore {
    Sqlite(PathBuf),
    Postgres(String),
}

impl SharedStore {
    fn env(&self) -> Vec<(String, String)> {
        match self {
            SharedStore::Sqlite(path) => vec![
                ("P11KMS_STORE_BACKEND".into(), "sqlite".into()),
                ("P11KMS_SQLITE_PATH".into(), path.display().to_string()),
            ],
            SharedStore::Postgres(url) => vec![
                ("P11KMS_STORE_BACKEND".into(), "postgres".into()),
                ("P11KMS_DATABASE_URL".into(), url.clone()),
            ],
        }
    }

    fn open(&self) -> Box<dyn MetadataStore> {
        match self {
            SharedStore::Sqlite(path) => Box::new(SqliteStore::open(path).unwrap()),
            SharedStore::Postgres(url) => Box::new(
                PostgresStore::connect(&PostgresSettings {
                    url: SecretString::from(url.clone()),
                    pool_size: 2,
                    connect_timeout: Duration::from_secs(5),
                    checkout_timeout: Duration::from_secs(5),
                    statement_timeout: Duration::from_secs(10),
                    ca_file: None,
                })
                .unwrap(),
            ),
        }
    }
}

/// `p11kms domain <args>` on the replica whose data directory is `dir`.
fn domain(dir: &Path, store: &SharedStore, args: &[&str]) -> Output {
    let bin = std::env::var_os("P11KMS_TEST_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_p11kms-under-test").into());
    let mut cmd = Command::new(bin);
    cmd.arg("domain").args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("P11KMS_") {
            cmd.env_remove(&name);
        }
    }
    let out = cmd
        .env_remove("SOFTHSM2_CONF")
        .envs(store.env())
        .env("P11KMS_DATA_DIR", dir)
        .env("P11KMS_LOG", "warn")
        .output()
        .expect("run p11kms domain");
    eprintln!(
        "$ p11kms domain {} ({}) -> {:?}\n{}{}",
        args.join(" "),
        dir.display(),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn domain_ok(dir: &Path, store: &SharedStore, args: &[&str]) -> String {
    let out = domain(dir, store, args);
    assert!(out.status.success(), "p11kms domain {args:?} failed");
    String::from_utf8(out.stdout).unwrap()
}

/// The ceremony: `join-request` on `joiner`, `enrol` on `holder`, `join` on `joiner`.
fn enrol(
    holder: &Path,
    joiner: &Path,
    store: &SharedStore,
    work: &Path,
    name: &str,
    domain_id: Option<&str>,
) {
    let request = work.join(format!("{name}-request.json"));
    let package = work.join(format!("{name}-package.json"));
    domain_ok(
        joiner,
        store,
        &["join-request", "--out", request.to_str().unwrap()],
    );
    let parsed: Value = serde_json::from_str(&std::fs::read_to_string(&request).unwrap()).unwrap();
    let fingerprint = parsed["fingerprint"].as_str().unwrap().to_string();
    let mut args = vec![
        "enrol",
        "--request",
        request.to_str().unwrap(),
        "--fingerprint",
        &fingerprint,
        "--out",
        package.to_str().unwrap(),
    ];
    if let Some(id) = domain_id {
        args.extend(["--domain", id]);
    }
    domain_ok(holder, store, &args);
    domain_ok(
        joiner,
        store,
        &["join", "--package", package.to_str().unwrap()],
    );
}

/// A domain-mode gateway on the embedded token under `dir`, sharing `store`. No planned
/// recycle (a domain key another process added is then found only by the refind), and a
/// cache of two objects (keys are unwrapped again all the time).
fn gateway(dir: &Path, store: &SharedStore) -> TestServer {
    let mut env = store.env();
    env.extend([
        ("P11KMS_DATA_DIR".into(), dir.display().to_string()),
        ("P11KMS_KEY_STORAGE".into(), "domain".into()),
        ("P11KMS_HSM_RECYCLE_AFTER".into(), "0".into()),
        ("P11KMS_DOMAIN_CACHE_CAPACITY".into(), "2".into()),
    ]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    TestServer::start_with(&env)
}

async fn metric(srv: &TestServer, series: &str) -> u64 {
    let text = plain_http::get(&format!("{}/metrics", srv.endpoint()))
        .await
        .expect("GET /metrics")
        .text();
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(series)?;
            rest.starts_with(' ').then(|| rest.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no sample {series}"))
}

async fn create(kms: &Client, spec: KeySpec, usage: KeyUsageType) -> Result<String, String> {
    kms.create_key()
        .key_spec(spec)
        .key_usage(usage)
        .send()
        .await
        .map(|out| out.key_metadata.expect("KeyMetadata").key_id)
        .map_err(|e| format!("CreateKey: {}", DisplayErrorContext(e)))
}

async fn encrypt_with(kms: &Client, key: &str, message: &[u8]) -> Result<Vec<u8>, String> {
    kms.encrypt()
        .key_id(key)
        .plaintext(Blob::new(message))
        .send()
        .await
        .map(|out| out.ciphertext_blob.expect("CiphertextBlob").into_inner())
        .map_err(|e| format!("Encrypt: {}", DisplayErrorContext(e)))
}

async fn decrypt_to(kms: &Client, blob: &[u8], expected: &[u8]) -> Result<(), String> {
    let out = kms
        .decrypt()
        .ciphertext_blob(Blob::new(blob))
        .send()
        .await
        .map_err(|e| format!("Decrypt: {}", DisplayErrorContext(e)))?;
    match out.plaintext {
        Some(p) if p.as_ref() == expected => Ok(()),
        _ => Err("Decrypt: wrong plaintext".into()),
    }
}

async fn reencrypt_to(kms: &Client, blob: &[u8], destination: &str) -> Result<Vec<u8>, String> {
    kms.re_encrypt()
        .ciphertext_blob(Blob::new(blob))
        .destination_key_id(destination)
        .send()
        .await
        .map(|out| out.ciphertext_blob.expect("CiphertextBlob").into_inner())
        .map_err(|e| format!("ReEncrypt: {}", DisplayErrorContext(e)))
}

async fn sign(kms: &Client, key: &str) -> Result<(), String> {
    kms.sign()
        .key_id(key)
        .message(Blob::new(b"rotation".as_slice()))
        .message_type(MessageType::Raw)
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("Sign: {}", DisplayErrorContext(e)))
}

/// Keys and ciphertexts made on both gateways before the rotation.
#[derive(Clone)]
struct Fixture {
    symmetric: [String; 2],
    ec: [String; 2],
    old_ciphertexts: [Vec<u8>; 2],
}

const MESSAGE: &[u8] = b"domain keys rotate under load";

/// Counts requests and keeps every failure's text.
#[derive(Default)]
struct Load {
    requests: AtomicU64,
    failures: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Load {
    fn record<T>(&self, gateway: usize, result: Result<T, String>) -> Option<T> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.failures
                    .lock()
                    .unwrap()
                    .push(format!("gateway {gateway}: {e}"));
                None
            }
        }
    }
}

/// One client: round after round on both gateways, every operation the test names, and a
/// new key every few rounds.
async fn client(clients: [Client; 2], f: Fixture, load: Arc<Load>, worker: usize) {
    let mut round = worker;
    while !load.stop.load(Ordering::Relaxed) {
        round += 1;
        let g = round % 2;
        let kms = &clients[g];
        let (own, other) = (&f.symmetric[g], &f.symmetric[1 - g]);
        if let Some(ct) = load.record(g, encrypt_with(kms, own, MESSAGE).await) {
            load.record(g, decrypt_to(kms, &ct, MESSAGE).await);
            if let Some(moved) = load.record(g, reencrypt_to(kms, &ct, other).await) {
                // On the other gateway: a key made there, a ciphertext made here.
                load.record(1 - g, decrypt_to(&clients[1 - g], &moved, MESSAGE).await);
            }
        }
        load.record(g, sign(kms, &f.ec[g]).await);
        load.record(g, decrypt_to(kms, &f.old_ciphertexts[1 - g], MESSAGE).await);
        if round % 8 == 0 {
            if let Some(key) = load.record(
                g,
                create(kms, KeySpec::SymmetricDefault, KeyUsageType::EncryptDecrypt).await,
            ) {
                if let Some(ct) = load.record(g, encrypt_with(kms, &key, MESSAGE).await) {
                    load.record(1 - g, decrypt_to(&clients[1 - g], &ct, MESSAGE).await);
                }
            }
        }
    }
}

/// The domain key that wraps `key`'s current material now, per the store.
async fn wrapping_key(kms: &Client, store: &dyn MetadataStore, key: &str) -> DomainKeyId {
    let material: MaterialId = current_material(kms, key).await.parse().unwrap();
    store
        .get_wrapped_material(&material)
        .unwrap()
        .expect("a blob for the key's material")
        .domain_key_id
}

fn line_value<'a>(report: &'a str, prefix: &str) -> &'a str {
    report
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in {report:?}"))
        .trim()
}

async fn rotate_two_tokens_under_load(store: SharedStore, work: &Path) {
    let extra_keys: usize = std::env::var("P11KMS_ROTATION_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let dirs = [work.join("first"), work.join("second")];
    for dir in &dirs {
        std::fs::create_dir_all(dir).unwrap();
    }
    // The first gateway makes the domain key in its token; the ceremony brings it into the
    // second token (which `join-request` creates) before that gateway starts.
    let first = gateway(&dirs[0], &store);
    enrol(&dirs[0], &dirs[1], &store, work, "second", None);
    let second = gateway(&dirs[1], &store);
    let clients = [first.client(), second.client()];
    let shared = store.open();
    let old_key = shared
        .domain_keys()
        .unwrap()
        .into_iter()
        .find(|k| k.state == DomainKeyState::Active)
        .unwrap()
        .id;

    let mut symmetric = Vec::new();
    let mut ec = Vec::new();
    let mut old_ciphertexts = Vec::new();
    for kms in &clients {
        let key = create(kms, KeySpec::SymmetricDefault, KeyUsageType::EncryptDecrypt)
            .await
            .unwrap();
        old_ciphertexts.push(encrypt_with(kms, &key, MESSAGE).await.unwrap());
        symmetric.push(key);
        ec.push(
            create(kms, KeySpec::EccNistP256, KeyUsageType::SignVerify)
                .await
                .unwrap(),
        );
    }
    for n in 0..extra_keys {
        create(
            &clients[n % 2],
            KeySpec::SymmetricDefault,
            KeyUsageType::EncryptDecrypt,
        )
        .await
        .unwrap();
    }
    let fixture = Fixture {
        symmetric: symmetric.try_into().unwrap(),
        ec: ec.try_into().unwrap(),
        old_ciphertexts: old_ciphertexts.try_into().unwrap(),
    };

    let load = Arc::new(Load::default());
    let workers: Vec<_> = (0..2)
        .map(|w| tokio::spawn(client(clients.clone(), fixture.clone(), load.clone(), w)))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Stage one on the first token: the new key is pending, and the second token must get it.
    let (d0, d1) = (dirs[0].clone(), dirs[1].clone());
    let store = Arc::new(store);
    let s = store.clone();
    let prepared =
        tokio::task::spawn_blocking(move || domain_ok(&d0, &s, &["rotate", "--prepare"]))
            .await
            .unwrap();
    let new_key = line_value(&prepared, "pending ").to_string();
    assert_eq!(line_value(&prepared, "active "), old_key.to_hex());
    let second_serial = shared
        .domain_members(Some(&old_key.to_hex()))
        .unwrap()
        .into_iter()
        .find(|m| m.transport_fingerprint.is_some())
        .expect("the second token is a recorded member")
        .token_serial;
    assert!(
        prepared.contains(&format!("enrol {new_key} into 'p11kms'"))
            && prepared.contains(&format!("serial {second_serial})")),
        "{prepared}"
    );

    // Activation before the second token holds the new key is refused, naming it.
    let (d0b, s) = (dirs[0].clone(), store.clone());
    let refused = tokio::task::spawn_blocking(move || domain(&d0b, &s, &["rotate", "--activate"]))
        .await
        .unwrap();
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("refusing to activate") && why.contains(&format!("serial {second_serial}")),
        "{why}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The ceremony moves the pending key into the second token while its gateway serves.
    let (d0c, d1c, s, w, id) = (
        dirs[0].clone(),
        d1.clone(),
        store.clone(),
        work.to_path_buf(),
        new_key.clone(),
    );
    tokio::task::spawn_blocking(move || enrol(&d0c, &d1c, &s, &w, "rotation", Some(&id)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (d0d, s) = (dirs[0].clone(), store.clone());
    let started = Instant::now();
    let activated =
        tokio::task::spawn_blocking(move || domain_ok(&d0d, &s, &["rotate", "--activate"]))
            .await
            .unwrap();
    let took = started.elapsed();
    assert_eq!(line_value(&activated, "active "), new_key);
    assert_eq!(line_value(&activated, "retired "), old_key.to_hex());
    let rewrapped: u64 = line_value(&activated, "rewrapped ").parse().unwrap();
    eprintln!(
        "activation: {rewrapped} blobs rewrapped in {:.2} s (process start included)",
        took.as_secs_f64()
    );
    // Keys made before the rotation: the fixture's four, the extra ones, and those the
    // clients made (some of which may already have been made under the new key).
    assert!(rewrapped >= 4 + extra_keys as u64, "{activated}");

    // Both gateways go on serving under the new key, without a restart.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut after = Vec::new();
    for kms in &clients {
        after.push(
            create(kms, KeySpec::SymmetricDefault, KeyUsageType::EncryptDecrypt)
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    load.stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let failures = load.failures.lock().unwrap().clone();
    let requests = load.requests.load(Ordering::Relaxed);
    eprintln!(
        "{requests} requests during the rotation, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {requests} requests failed: {:#?}",
        failures.len(),
        &failures[..failures.len().min(20)]
    );
    assert!(requests > 50, "the load ran: {requests} requests");

    let new_id: DomainKeyId = new_key.parse().unwrap();
    for (g, kms) in clients.iter().enumerate() {
        // Old ciphertexts of both gateways decrypt on each.
        for ct in &fixture.old_ciphertexts {
            decrypt_to(kms, ct, MESSAGE).await.unwrap();
        }
        // Keys made after the activation, and those made before, are under the new key.
        assert_eq!(wrapping_key(kms, shared.as_ref(), &after[g]).await, new_id);
        assert_eq!(
            wrapping_key(kms, shared.as_ref(), &fixture.symmetric[g]).await,
            new_id
        );
        let ct = encrypt_with(kms, &after[g], MESSAGE).await.unwrap();
        decrypt_to(&clients[1 - g], &ct, MESSAGE).await.unwrap();
    }
    let states: Vec<(DomainKeyId, DomainKeyState)> = shared
        .domain_keys()
        .unwrap()
        .into_iter()
        .map(|k| (k.id, k.state))
        .collect();
    assert_eq!(
        states,
        vec![
            (old_key, DomainKeyState::Retired),
            (new_id, DomainKeyState::Active)
        ]
    );
    assert_eq!(shared.domain_members(Some(&new_key)).unwrap().len(), 2);
    for (name, srv) in [("first", &first), ("second", &second)] {
        eprintln!(
            "{name} gateway: {} library reinitialisation(s) to find a domain key",
            metric(srv, "p11kms_domain_key_refinds_total").await
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_tokens_rotate_the_domain_key_under_load_on_postgres() {
    let work = tempfile::Builder::new()
        .prefix("p11kms-domain-rotation-")
        .tempdir()
        .unwrap();
    let server = PgServer::shared();
    let url = server.url(&server.create_database());
    rotate_two_tokens_under_load(SharedStore::Postgres(url), work.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_tokens_rotate_the_domain_key_under_load_on_one_sqlite_file() {
    let work = tempfile::Builder::new()
        .prefix("p11kms-domain-rotation-")
        .tempdir()
        .unwrap();
    let path = work.path().join("shared.sqlite");
    rotate_two_tokens_under_load(SharedStore::Sqlite(path), work.path()).await;
}

/// A blob that names a domain key the token does not hold: one reinitialisation of the
/// library to look for it, then `KMSInvalidStateException` naming the key; within the
/// refind interval the next request fails at once, without another reinitialisation.
#[tokio::test]
async fn a_domain_key_missing_from_the_token_is_a_typed_error_after_one_refind() {
    let work = tempfile::Builder::new()
        .prefix("p11kms-domain-missing-")
        .tempdir()
        .unwrap();
    let dir = work.path().join("only");
    std::fs::create_dir_all(&dir).unwrap();
    let store = SharedStore::Sqlite(work.path().join("shared.sqlite"));
    let srv = gateway(&dir, &store);
    let kms = srv.client();
    let before = create(
        &kms,
        KeySpec::SymmetricDefault,
        KeyUsageType::EncryptDecrypt,
    )
    .await
    .unwrap();
    let ct = encrypt_with(&kms, &before, MESSAGE).await.unwrap();

    // Activate, in the store only, a domain key no token holds.
    let shared = store.open();
    let active = shared
        .domain_keys()
        .unwrap()
        .into_iter()
        .find(|k| k.state == DomainKeyState::Active)
        .unwrap()
        .id;
    let absent = DomainKeyId::new_random();
    assert!(shared
        .insert_domain_key(&p11kms::model::DomainKeyRecord {
            id: absent,
            state: DomainKeyState::Pending,
            created: 1.0,
        })
        .unwrap());
    assert!(shared.activate_domain_key(&active, &absent).unwrap());

    let err = expect_error(kms.create_key().send().await, "KMSInvalidStateException");
    err.assert_message_contains(&absent.to_hex());
    assert_eq!(metric(&srv, "p11kms_domain_key_refinds_total").await, 1);
    expect_error(kms.create_key().send().await, "KMSInvalidStateException");
    assert_eq!(metric(&srv, "p11kms_domain_key_refinds_total").await, 1);
    // Keys under the old (still held) domain key keep working.
    decrypt_to(&kms, &ct, MESSAGE).await.unwrap();

    // Once the token holds the key (made here by another process than the gateway), the
    // same gateway makes keys under it: no restart.
    put_domain_key_in_embedded_token(&dir, &absent.0);
    let client = &kms;
    let made = poll_until(
        Duration::from_secs(15),
        Duration::from_millis(500),
        || async move {
            create(
                client,
                KeySpec::SymmetricDefault,
                KeyUsageType::EncryptDecrypt,
            )
            .await
            .ok()
        },
    )
    .await
    .expect("CreateKey works once the token holds the domain key");
    assert_eq!(wrapping_key(&kms, shared.as_ref(), &made).await, absent);
    let ct = encrypt_with(&kms, &made, MESSAGE).await.unwrap();
    decrypt_to(&kms, &ct, MESSAGE).await.unwrap();
    eprintln!(
        "library reinitialisations to find a domain key: {}",
        metric(&srv, "p11kms_domain_key_refinds_total").await
    );
}
