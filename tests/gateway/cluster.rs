//! Replicas on one PostgreSQL database, each with its own SoftHSM2 token enrolled in one
//! domain (domain-key mode, as `scripts/cluster.sh` starts them): a key made on one replica
//! works on the others, a change through one replica takes effect on the others within a
//! second, periodic jobs run once across replicas, a replica killed under load loses nothing
//! acknowledged, PostgreSQL outages (at start or mid-load) give typed errors and recovery
//! without a restart, and each token holds its domain key and nothing else.
//!
//! Replicas are real `p11kms serve` processes on the embedded default (a SoftHSM2 token under
//! their own data directory): the first token makes the domain key (`p11kms domain create`),
//! each further one joins by the ceremony (`join-request`, `enrol` on the first, `join`), as
//! `scripts/cluster.sh` does; one test runs the script itself. Longer variants:
//! `P11KMS_CLUSTER_TRIALS=50` (DisableKey propagation trials, default 10).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cluster_script::ScriptCluster;
use crate::common::*;
use crate::pg_server::PgServer;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{
    EncryptionAlgorithmSpec, KeySpec, KeyUsageType, MacAlgorithmSpec, MessageType,
    SigningAlgorithmSpec,
};
use aws_sdk_kms::Client;

/// Runs `p11kms ARGS` on the embedded token under `data_dir` with the store at `url`;
/// asserts success and returns stdout.
fn on_token(data_dir: &Path, url: &str, args: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_p11kms"));
    cmd.args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("P11KMS_") {
            cmd.env_remove(&name);
        }
    }
    let out = cmd
        .env_remove("SOFTHSM2_CONF")
        .env("P11KMS_DATA_DIR", data_dir)
        .env("P11KMS_STORE_BACKEND", "postgres")
        .env("P11KMS_DATABASE_URL", url)
        .env("P11KMS_LOG", "warn")
        .output()
        .expect("run p11kms");
    assert!(
        out.status.success(),
        "p11kms {} on {} failed:\n{}{}",
        args.join(" "),
        data_dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One embedded SoftHSM2 token per replica, under `replica-<i>` of one directory, all in one
/// domain: the first makes the domain key, each further one joins with the first as holder
/// (before any replica on it serves: the ceremony never runs inside a serving gateway).
struct DomainTokens {
    dir: tempfile::TempDir,
    domain_id: String,
    count: usize,
}

impl DomainTokens {
    fn make(url: &str) -> DomainTokens {
        let dir = tempfile::Builder::new()
            .prefix("p11kms-cluster-tokens-")
            .tempdir()
            .unwrap();
        let first = dir.path().join("replica-0");
        std::fs::create_dir_all(&first).unwrap();
        let domain_id = on_token(&first, url, &["domain", "create"])
            .trim()
            .to_string();
        assert_eq!(domain_id.len(), 32, "{domain_id}");
        DomainTokens {
            dir,
            domain_id,
            count: 1,
        }
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("replica-{i}"))
    }

    /// Enrols tokens until there are `n`.
    fn ensure(&mut self, n: usize, url: &str) {
        while self.count < n {
            let (holder, joiner) = (self.data_dir(0), self.data_dir(self.count));
            std::fs::create_dir_all(&joiner).unwrap();
            let request = joiner.join("join-request.json");
            let package = joiner.join("join-package.json");
            on_token(
                &joiner,
                url,
                &["domain", "join-request", "--out", request.to_str().unwrap()],
            );
            let parsed: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&request).unwrap()).unwrap();
            let fingerprint = parsed["fingerprint"].as_str().unwrap();
            on_token(
                &holder,
                url,
                &[
                    "domain",
                    "enrol",
                    "--request",
                    request.to_str().unwrap(),
                    "--fingerprint",
                    fingerprint,
                    "--out",
                    package.to_str().unwrap(),
                ],
            );
            let joined = on_token(
                &joiner,
                url,
                &["domain", "join", "--package", package.to_str().unwrap()],
            );
            assert!(joined.contains(&self.domain_id), "{joined}");
            self.count += 1;
        }
    }
}

/// One token made the way the embedded default makes it (`p11kms doctor` on a data
/// directory), used by every replica as an external token (token-resident key storage).
struct SharedToken {
    dir: tempfile::TempDir,
}

impl SharedToken {
    fn make() -> SharedToken {
        let dir = tempfile::Builder::new()
            .prefix("p11kms-cluster-hsm-")
            .tempdir()
            .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_p11kms"))
            .arg("doctor")
            .env("P11KMS_DATA_DIR", dir.path())
            .env("P11KMS_LOG", "error")
            .env_remove("SOFTHSM2_CONF")
            .output()
            .expect("run p11kms doctor");
        assert!(
            dir.path().join("user.pin").exists(),
            "doctor made no token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SharedToken { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

enum Tokens {
    /// A token per replica, one domain (what `scripts/cluster.sh` starts).
    Domain(DomainTokens),
    /// One token for all (`P11KMS_CLUSTER_KEY_STORAGE=token`).
    Shared(SharedToken),
}

/// PostgreSQL, the tokens and the replicas.
struct Cluster {
    pg: PgServer,
    url: String,
    tokens: Tokens,
    extra: Vec<(String, String)>,
    replicas: Vec<TestServer>,
}

impl Cluster {
    /// `n` replicas, each on its own token, in one domain.
    fn start(n: usize, extra: &[(&str, &str)]) -> Cluster {
        let pg = PgServer::start();
        let url = pg.url(&pg.create_database());
        let mut tokens = DomainTokens::make(&url);
        tokens.ensure(n, &url);
        Cluster::with_tokens(pg, url, Tokens::Domain(tokens), n, extra)
    }

    /// `n` replicas on one shared token in token-resident mode.
    fn start_token_mode(n: usize, extra: &[(&str, &str)]) -> Cluster {
        let pg = PgServer::start();
        let url = pg.url(&pg.create_database());
        Cluster::with_tokens(pg, url, Tokens::Shared(SharedToken::make()), n, extra)
    }

    fn with_tokens(
        pg: PgServer,
        url: String,
        tokens: Tokens,
        n: usize,
        extra: &[(&str, &str)],
    ) -> Cluster {
        let mut cluster = Cluster {
            pg,
            url,
            tokens,
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            replicas: Vec::new(),
        };
        for _ in 0..n {
            let replica = cluster.start_replica();
            cluster.replicas.push(replica);
        }
        cluster
    }

    /// The environment of replica `i`.
    fn replica_env(&self, i: usize) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = match &self.tokens {
            Tokens::Domain(tokens) => {
                assert!(i < tokens.count, "replica {i} has no enrolled token");
                vec![
                    (
                        "P11KMS_DATA_DIR".into(),
                        tokens.data_dir(i).display().to_string(),
                    ),
                    ("P11KMS_KEY_STORAGE".into(), "domain".into()),
                ]
            }
            Tokens::Shared(token) => vec![
                ("SOFTHSM2_CONF".into(), token.path("softhsm2.conf")),
                ("P11KMS_EMBEDDED_SOFTHSM".into(), "false".into()),
                ("P11KMS_PIN_FILE".into(), token.path("user.pin")),
            ],
        };
        env.extend([
            ("P11KMS_STORE_BACKEND".into(), "postgres".into()),
            ("P11KMS_DATABASE_URL".into(), self.url.clone()),
            ("P11KMS_POSTGRES_CONNECT_TIMEOUT_MS".into(), "1000".into()),
            ("P11KMS_POSTGRES_CHECKOUT_TIMEOUT_MS".into(), "1000".into()),
        ]);
        env.extend(self.extra.iter().cloned());
        env
    }

    /// Starts the next replica (index `replicas.len()`).
    fn start_replica(&self) -> TestServer {
        let env = self.replica_env(self.replicas.len());
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        TestServer::start_with(&env)
    }

    fn client(&self, i: usize) -> Client {
        self.replicas[i].client()
    }

    /// Everything every replica has logged so far.
    fn logs(&self) -> String {
        self.replicas.iter().map(|r| r.log_text()).collect()
    }
}

fn sigkill(pid: u32) {
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn http_status(url: &str) -> u16 {
    match reqwest::get(url).await {
        Ok(resp) => resp.status().as_u16(),
        Err(_) => 0,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Keys of every kind made on A after B started, used on B for every cryptographic
/// operation (B unwraps each material from the store with its own token's copy of the domain
/// key); a rotation and an alias made on A are in force on B at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_made_on_one_replica_works_on_the_other_for_every_operation() {
    let cluster = Cluster::start(2, &[]);
    let (a, b) = (cluster.client(0), cluster.client(1));

    let key = create_key(&a).await.key_id().to_string();
    let blob = encrypt(&a, &key, b"made on A").await;
    assert_eq!(decrypt(&b, &blob).await, b"made on A");
    let on_b = encrypt(&b, &key, b"made on B").await;
    assert_eq!(decrypt(&a, &on_b).await, b"made on B");
    let other = create_key(&a).await.key_id().to_string();
    let moved = b
        .re_encrypt()
        .ciphertext_blob(Blob::new(blob.clone()))
        .destination_key_id(&other)
        .send()
        .await
        .expect("ReEncrypt on B")
        .ciphertext_blob
        .unwrap()
        .into_inner();
    assert_eq!(decrypt(&a, &moved).await, b"made on A");
    let data_key = b
        .generate_data_key()
        .key_id(&key)
        .number_of_bytes(32)
        .send()
        .await
        .expect("GenerateDataKey on B");
    let wrapped = data_key.ciphertext_blob.unwrap().into_inner();
    assert_eq!(
        decrypt(&a, &wrapped).await,
        data_key.plaintext.unwrap().into_inner()
    );

    // A new material made on A (rotation) is current on B at once.
    a.rotate_key_on_demand().key_id(&key).send().await.unwrap();
    let material_a = current_material(&a, &key).await;
    assert_eq!(current_material(&b, &key).await, material_a);
    let rotated = encrypt(&b, &key, b"after rotation").await;
    assert_eq!(decrypt(&a, &rotated).await, b"after rotation");
    assert_eq!(decrypt(&b, &blob).await, b"made on A");

    // An alias made on A names the key on B.
    let alias = unique_alias();
    a.create_alias()
        .alias_name(&alias)
        .target_key_id(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(decrypt(&b, &encrypt(&b, &alias, b"x").await).await, b"x");

    let signing = a
        .create_key()
        .key_spec(KeySpec::Rsa2048)
        .key_usage(KeyUsageType::SignVerify)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id()
        .to_string();
    let signature = b
        .sign()
        .key_id(&signing)
        .message(Blob::new(b"message".to_vec()))
        .message_type(MessageType::Raw)
        .signing_algorithm(SigningAlgorithmSpec::RsassaPssSha256)
        .send()
        .await
        .expect("Sign on B")
        .signature
        .unwrap();
    let valid = a
        .verify()
        .key_id(&signing)
        .message(Blob::new(b"message".to_vec()))
        .message_type(MessageType::Raw)
        .signing_algorithm(SigningAlgorithmSpec::RsassaPssSha256)
        .signature(signature)
        .send()
        .await
        .expect("Verify on A")
        .signature_valid;
    assert!(valid);

    // EC: signed on B, verified on A.
    let ec = a
        .create_key()
        .key_spec(KeySpec::EccNistP256)
        .key_usage(KeyUsageType::SignVerify)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id()
        .to_string();
    let signature = b
        .sign()
        .key_id(&ec)
        .message(Blob::new(b"message".to_vec()))
        .message_type(MessageType::Raw)
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
        .expect("ECDSA Sign on B")
        .signature
        .unwrap();
    assert!(
        a.verify()
            .key_id(&ec)
            .message(Blob::new(b"message".to_vec()))
            .message_type(MessageType::Raw)
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
            .signature(signature)
            .send()
            .await
            .expect("ECDSA Verify on A")
            .signature_valid
    );

    // RSA encryption: encrypted on A, decrypted on B (B unwraps the private half).
    let rsa = a
        .create_key()
        .key_spec(KeySpec::Rsa2048)
        .key_usage(KeyUsageType::EncryptDecrypt)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id()
        .to_string();
    let sealed = a
        .encrypt()
        .key_id(&rsa)
        .plaintext(Blob::new(b"rsa on A".to_vec()))
        .encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha1)
        .send()
        .await
        .expect("RSA Encrypt on A")
        .ciphertext_blob
        .unwrap();
    let opened = b
        .decrypt()
        .key_id(&rsa)
        .ciphertext_blob(sealed)
        .encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha1)
        .send()
        .await
        .expect("RSA Decrypt on B")
        .plaintext
        .unwrap()
        .into_inner();
    assert_eq!(opened, b"rsa on A");

    let mac_key = a
        .create_key()
        .key_spec(KeySpec::Hmac256)
        .key_usage(KeyUsageType::GenerateVerifyMac)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id()
        .to_string();
    let mac = b
        .generate_mac()
        .key_id(&mac_key)
        .message(Blob::new(b"message".to_vec()))
        .mac_algorithm(MacAlgorithmSpec::HmacSha256)
        .send()
        .await
        .expect("GenerateMac on B")
        .mac
        .unwrap();
    let mac_valid = a
        .verify_mac()
        .key_id(&mac_key)
        .message(Blob::new(b"message".to_vec()))
        .mac_algorithm(MacAlgorithmSpec::HmacSha256)
        .mac(mac)
        .send()
        .await
        .expect("VerifyMac on A")
        .mac_valid;
    assert!(mac_valid);
}

/// Polls `refused` on B from the moment a change through A was acknowledged; the delay until
/// B refuses.
async fn refusal_delay<F, Fut>(mut refused: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let acknowledged = Instant::now();
    loop {
        if refused().await {
            return acknowledged.elapsed();
        }
        assert!(
            acknowledged.elapsed() < Duration::from_secs(5),
            "the change never took effect on the other replica"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// DisableKey, ScheduleKeyDeletion, PutKeyPolicy, RevokeGrant and DeleteAlias through A:
/// B refuses within a second. Prints the DisableKey delay distribution over the trials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_replica_is_in_force_on_the_other_within_a_second() {
    let trials: usize = std::env::var("P11KMS_CLUSTER_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let cluster = Cluster::start(2, &[]);
    let (a, b) = (cluster.client(0), cluster.client(1));
    let key = create_key(&a).await.key_id().to_string();
    let mut delays = Vec::new();
    for _ in 0..trials {
        encrypt(&b, &key, b"x").await;
        a.disable_key().key_id(&key).send().await.unwrap();
        delays.push(
            refusal_delay(|| async {
                b.encrypt()
                    .key_id(&key)
                    .plaintext(Blob::new(b"x".to_vec()))
                    .send()
                    .await
                    .is_err()
            })
            .await,
        );
        a.enable_key().key_id(&key).send().await.unwrap();
        // Enabled again on B too before the next trial.
        poll_until(Duration::from_secs(5), Duration::from_millis(2), || async {
            b.encrypt()
                .key_id(&key)
                .plaintext(Blob::new(b"x".to_vec()))
                .send()
                .await
                .ok()
        })
        .await
        .expect("EnableKey took effect on B");
    }
    delays.sort();
    println!(
        "DisableKey on A -> Encrypt refused on B, {} trials: min {:?} p50 {:?} p90 {:?} max {:?}",
        delays.len(),
        delays[0],
        percentile(&delays, 0.5),
        percentile(&delays, 0.9),
        delays[delays.len() - 1]
    );
    assert!(
        delays[delays.len() - 1] < Duration::from_secs(1),
        "{delays:?}"
    );

    // The other changes the issue names, once each.
    let err = b
        .encrypt()
        .key_id(&key)
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await;
    assert!(err.is_ok());
    let deny_all = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":{"AWS":"*"},"Action":"kms:Encrypt","Resource":"*"},{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}"#;
    a.put_key_policy()
        .key_id(&key)
        .policy_name("default")
        .policy(deny_all)
        .send()
        .await
        .unwrap();
    let delay = refusal_delay(|| async {
        b.encrypt()
            .key_id(&key)
            .plaintext(Blob::new(b"x".to_vec()))
            .send()
            .await
            .is_err()
    })
    .await;
    assert!(delay < Duration::from_secs(1), "PutKeyPolicy: {delay:?}");

    let alias = unique_alias();
    let target = create_key(&a).await.key_id().to_string();
    a.create_alias()
        .alias_name(&alias)
        .target_key_id(&target)
        .send()
        .await
        .unwrap();
    encrypt(&b, &alias, b"x").await;
    a.delete_alias().alias_name(&alias).send().await.unwrap();
    let delay = refusal_delay(|| async {
        b.encrypt()
            .key_id(&alias)
            .plaintext(Blob::new(b"x".to_vec()))
            .send()
            .await
            .is_err()
    })
    .await;
    assert!(delay < Duration::from_secs(1), "DeleteAlias: {delay:?}");

    let grant = a
        .create_grant()
        .key_id(&target)
        .grantee_principal("arn:aws:iam::111122223333:user/other")
        .operations(aws_sdk_kms::types::GrantOperation::Decrypt)
        .send()
        .await
        .unwrap()
        .grant_id
        .unwrap();
    let listed = |client: Client, target: String, grant: String| async move {
        client
            .list_grants()
            .key_id(&target)
            .send()
            .await
            .map(|r| r.grants().iter().any(|g| g.grant_id() == Some(&grant)))
            .unwrap_or(true)
    };
    assert!(listed(b.clone(), target.clone(), grant.clone()).await);
    a.revoke_grant()
        .key_id(&target)
        .grant_id(&grant)
        .send()
        .await
        .unwrap();
    let delay = refusal_delay(|| {
        let still_listed = listed(b.clone(), target.clone(), grant.clone());
        async move { !still_listed.await }
    })
    .await;
    assert!(delay < Duration::from_secs(1), "RevokeGrant: {delay:?}");

    a.schedule_key_deletion()
        .key_id(&target)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let delay = refusal_delay(|| async {
        b.encrypt()
            .key_id(&target)
            .plaintext(Blob::new(b"x".to_vec()))
            .send()
            .await
            .is_err()
    })
    .await;
    assert!(
        delay < Duration::from_secs(1),
        "ScheduleKeyDeletion: {delay:?}"
    );
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

/// Three replicas, jobs every 200 ms, a day of 50 ms: keys scheduled for deletion are
/// deleted exactly once, and due rotations happen once each (one log line and one material
/// per rotation across all replicas, never a round that found the work already done).
/// Then the lease holder is killed: another replica takes the jobs over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_exactly_once_with_three_replicas_and_survive_the_holder() {
    let mut cluster = Cluster::start(
        3,
        &[
            ("P11KMS_JOB_INTERVAL_MS", "200"),
            ("P11KMS_DAY_SECONDS", "0.05"),
        ],
    );
    let a = cluster.client(0);
    let mut doomed = Vec::new();
    for _ in 0..6 {
        let key = create_key(&a).await.key_id().to_string();
        a.schedule_key_deletion()
            .key_id(&key)
            .pending_window_in_days(7)
            .send()
            .await
            .unwrap();
        doomed.push(key);
    }
    let rotating = create_key(&a).await.key_id().to_string();
    a.enable_key_rotation()
        .key_id(&rotating)
        .rotation_period_in_days(90)
        .send()
        .await
        .unwrap();
    // 7 days = 0.35 s; 90 days = 4.5 s: wait for two rotations.
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    for key in &doomed {
        let err = api_error(a.describe_key().key_id(key).send().await);
        assert_eq!(err.code.as_deref(), Some("NotFoundException"), "{key}");
    }
    let logs = cluster.logs();
    for key in &doomed {
        assert_eq!(
            count_lines(&logs, key, "key deleted after its waiting period"),
            1,
            "{key}"
        );
    }
    assert_eq!(count(&logs, "key no longer due for deletion"), 0);
    assert_eq!(count(&logs, "rotation no longer due; skipped"), 0);
    let rotations = a
        .list_key_rotations()
        .key_id(&rotating)
        .send()
        .await
        .unwrap()
        .rotations()
        .len();
    let logged = count_lines(&logs, &rotating, "key rotated automatically");
    println!(
        "{rotations} automatic rotations in 10.5 s with a 4.5 s period, logged {logged} times"
    );
    assert!((2..=3).contains(&rotations), "{rotations}");
    assert_eq!(logged, rotations);

    // Kill whichever replica ran the deletions (the lease holder), then schedule more.
    let holder = cluster
        .replicas
        .iter()
        .position(|r| {
            r.log_text()
                .contains("key deleted after its waiting period")
        })
        .expect("one replica ran the deletions");
    sigkill(cluster.replicas[holder].pid());
    assert!(cluster.replicas[holder].wait_exit(Duration::from_secs(5)));
    let survivor = (holder + 1) % 3;
    let s = cluster.client(survivor);
    let key = create_key(&s).await.key_id().to_string();
    s.schedule_key_deletion()
        .key_id(&key)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let scheduled = Instant::now();
    let gone = poll_until(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let r = s.describe_key().key_id(&key).send().await;
            r.is_err().then_some(())
        },
    )
    .await;
    assert!(gone.is_some(), "no replica took the deletion job over");
    println!(
        "deletion job taken over after the holder's SIGKILL: key gone {} ms after scheduling",
        scheduled.elapsed().as_millis()
    );
    // The killed replica is restarted for Drop to reap; nothing else.
    cluster.replicas[holder].restart();
}

/// Lines of the log that mention `key` and `what`.
fn count_lines(logs: &str, key: &str, what: &str) -> usize {
    logs.lines()
        .filter(|l| l.contains(key) && l.contains(what))
        .count()
}

/// What the load recorded: keys whose CreateKey was acknowledged, ciphertexts whose
/// Encrypt was acknowledged.
#[derive(Default)]
struct Acknowledged {
    keys: Vec<String>,
    ciphertexts: Vec<(Vec<u8>, Vec<u8>)>,
    failures_after_kill: usize,
}

/// 16 clients spread over two replicas (CreateKey and Encrypt); replica A is SIGKILLed
/// mid-load. Clients of A move to B. The survivor serves every request after the kill;
/// every acknowledged key exists and every acknowledged ciphertext decrypts, on B and on A
/// once restarted (it catches up with what B did meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_loses_nothing_acknowledged() {
    // All 16 clients on one replica after the kill: requests queue for an HSM session
    // rather than being throttled after the default wait (the SDK clients here do not
    // retry, and this 2-core machine runs other builds too).
    let mut cluster = Cluster::start(2, &[("P11KMS_SESSION_WAIT_MS", "20000")]);
    let key = create_key(&cluster.client(0)).await.key_id().to_string();
    let endpoints = [cluster.client(0), cluster.client(1)];
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Acknowledged::default()));
    let stop_at = Instant::now() + Duration::from_secs(4);
    let mut clients = Vec::new();
    for c in 0..16usize {
        let (a, b) = (endpoints[0].clone(), endpoints[1].clone());
        let (key, killed, acked) = (key.clone(), killed.clone(), acked.clone());
        clients.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < stop_at {
                n += 1;
                let dead = killed.load(std::sync::atomic::Ordering::SeqCst);
                // Half the clients use A until it dies (a load balancer's health check then
                // takes A out); requests to A that fail around the kill are not acknowledged.
                let client = if c % 2 == 0 && !dead { &a } else { &b };
                let on_survivor = c % 2 == 1 || dead;
                if n % 4 == 0 {
                    match client.create_key().send().await {
                        Ok(r) => acked
                            .lock()
                            .unwrap()
                            .keys
                            .push(r.key_metadata.unwrap().key_id().to_string()),
                        Err(_) if !on_survivor => {}
                        Err(e) => {
                            eprintln!("CreateKey on the survivor failed: {e:?}");
                            acked.lock().unwrap().failures_after_kill += 1;
                        }
                    }
                } else {
                    let plaintext = format!("client {c} request {n}").into_bytes();
                    match client
                        .encrypt()
                        .key_id(&key)
                        .plaintext(Blob::new(plaintext.clone()))
                        .send()
                        .await
                    {
                        Ok(r) => acked
                            .lock()
                            .unwrap()
                            .ciphertexts
                            .push((r.ciphertext_blob.unwrap().into_inner(), plaintext)),
                        Err(_) if !on_survivor => {}
                        Err(e) => {
                            eprintln!("Encrypt on the survivor failed: {e:?}");
                            acked.lock().unwrap().failures_after_kill += 1;
                        }
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sigkill(cluster.replicas[0].pid());
    killed.store(true, std::sync::atomic::Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert_eq!(
        acked.failures_after_kill, 0,
        "the survivor refused requests"
    );
    println!(
        "acknowledged: {} keys, {} ciphertexts",
        acked.keys.len(),
        acked.ciphertexts.len()
    );
    assert!(acked.keys.len() > 5 && acked.ciphertexts.len() > 50);
    let b = cluster.client(1);
    for key in &acked.keys {
        // Keys made on A before the kill: B unwraps their material from the store.
        assert_eq!(describe(&b, key).await.key_id(), key);
        encrypt(&b, key, b"on the survivor").await;
    }
    for (blob, plaintext) in &acked.ciphertexts {
        assert_eq!(&decrypt(&b, blob).await, plaintext);
    }
    // A restarts and serves everything, including what B did while A was down.
    cluster.replicas[0].restart();
    let a = cluster.client(0);
    for key in &acked.keys {
        assert_eq!(describe(&a, key).await.key_id(), key);
        encrypt(&a, key, b"after the restart").await;
    }
    for (blob, plaintext) in acked.ciphertexts.iter().step_by(7) {
        assert_eq!(&decrypt(&a, blob).await, plaintext);
    }
}

/// PostgreSQL stopped (immediate) and started again under load on two replicas: requests
/// in between get DependencyTimeoutException (never a 4xx, never a lost connection), and
/// both replicas serve again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_load_gives_typed_errors_then_recovery() {
    let cluster = Cluster::start(2, &[]);
    let key = create_key(&cluster.client(0)).await.key_id().to_string();
    let clients = [cluster.client(0), cluster.client(1)];
    let codes = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let stop_at = Instant::now() + Duration::from_secs(6);
    let mut load = Vec::new();
    for c in 0..8usize {
        let client = clients[c % 2].clone();
        let (key, codes) = (key.clone(), codes.clone());
        load.push(tokio::spawn(async move {
            while Instant::now() < stop_at {
                let outcome = client
                    .encrypt()
                    .key_id(&key)
                    .plaintext(Blob::new(b"x".to_vec()))
                    .send()
                    .await;
                let code = match outcome {
                    Ok(_) => "OK".to_string(),
                    Err(e) => api_error::<(), _>(Err(e))
                        .code
                        .unwrap_or_else(|| "none".into()),
                };
                *codes.lock().unwrap().entry(code).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    cluster.pg.stop_immediate();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.pg.start_again();
    let restarted = Instant::now();
    // Each replica serves again, while the load goes on, without a restart.
    for (i, client) in clients.iter().enumerate() {
        let back = poll_until(
            Duration::from_secs(10),
            Duration::from_millis(10),
            || async {
                client
                    .encrypt()
                    .key_id(&key)
                    .plaintext(Blob::new(b"y".to_vec()))
                    .send()
                    .await
                    .ok()
            },
        )
        .await;
        assert!(back.is_some(), "replica {i} did not recover");
        println!(
            "replica {i} serving {} ms after pg_ctl start -w returned",
            restarted.elapsed().as_millis()
        );
    }
    for task in load {
        task.await.unwrap();
    }
    let codes = codes.lock().unwrap().clone();
    println!("outcomes during a PostgreSQL restart: {codes:?}");
    for code in codes.keys() {
        assert!(
            code == "OK" || code == "DependencyTimeoutException",
            "unexpected outcome {code}: {codes:?}"
        );
    }
    assert!(
        codes
            .get("DependencyTimeoutException")
            .copied()
            .unwrap_or(0)
            > 0
    );
    for replica in &cluster.replicas {
        assert_eq!(
            http_status(&format!("{}/readyz", replica.endpoint())).await,
            200
        );
    }
}

/// A replica started while PostgreSQL is down starts anyway: /readyz is 503, requests get
/// DependencyTimeoutException; once PostgreSQL is up it migrates the schema and serves,
/// without a restart.
///
/// Token mode, because that is the mode in which it holds: a domain-mode replica must read
/// the active domain key from the store before it serves, so while PostgreSQL is down it
/// refuses to start (checked first here) and its supervisor starts it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_while_postgres_is_down_serves_once_it_is_up() {
    let domain = Cluster::start(0, &[]);
    domain.pg.stop_immediate();
    let env = domain.replica_env(0);
    let mut serve = Command::new(env!("CARGO_BIN_EXE_p11kms"));
    serve.arg("serve").env_remove("SOFTHSM2_CONF");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("P11KMS_") {
            serve.env_remove(&name);
        }
    }
    let mut child = serve
        .envs(env)
        .env("P11KMS_LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let refused_at = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if refused_at.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("a domain-mode replica kept running with PostgreSQL down");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("cannot read the domain keys from the store"),
        "{stderr}"
    );

    let mut cluster = Cluster::start_token_mode(0, &[("P11KMS_JOB_INTERVAL_MS", "200")]);
    cluster.pg.stop_immediate();
    cluster.replicas.push(cluster.start_replica());
    let srv = &cluster.replicas[0];
    let kms = srv.client();
    assert_eq!(
        http_status(&format!("{}/readyz", srv.endpoint())).await,
        503
    );
    let err = api_error(kms.create_key().send().await);
    assert_eq!(err.code.as_deref(), Some("DependencyTimeoutException"));
    let pid = srv.pid();
    cluster.pg.start_again();
    let key = poll_until(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async { kms.create_key().send().await.ok() },
    )
    .await
    .expect("serves once PostgreSQL is up");
    let key = key.key_metadata.unwrap().key_id().to_string();
    assert_eq!(decrypt(&kms, &encrypt(&kms, &key, b"z").await).await, b"z");
    assert_eq!(
        http_status(&format!("{}/readyz", srv.endpoint())).await,
        200
    );
    assert_eq!(srv.pid(), pid);
    // The job loop runs under its lease once the store answers.
    let ran = poll_until(
        Duration::from_secs(5),
        Duration::from_millis(100),
        || async {
            let text = reqwest::get(format!("{}/metrics", srv.endpoint()))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            text.contains("p11kms_job_rounds_total{job=\"deletion\",outcome=\"ran\"}")
                .then_some(())
        },
    )
    .await;
    assert!(ran.is_some(), "no job round ran");
}

/// `scripts/cluster.sh start DIR 2` prints one line per replica; each replica has a token of
/// its own in one domain; a key made on replica 1 works on replica 2; `stop` ends every
/// process it started, PostgreSQL too; `start` again on the same DIR reuses the database and
/// tokens (no second domain key, no ceremony again), so the key still works, and a third
/// replica asked for is enrolled then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_script_starts_and_stops_a_working_cluster() {
    let dir = tempfile::Builder::new()
        .prefix("p11kms-cluster-")
        .tempdir()
        .unwrap();
    let started = Instant::now();
    let mut cluster = ScriptCluster::start(dir.path(), &["2"]);
    println!(
        "cluster.sh start DIR 2 (new DIR): {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(cluster.replicas.len(), 2);
    let domain = |i: usize| {
        std::fs::read_to_string(dir.path().join(format!("replica-{i}/domain-member"))).unwrap()
    };
    assert_eq!(domain(1), domain(2));
    let serial = |i: usize| {
        std::fs::read_dir(dir.path().join(format!("replica-{i}/tokens")))
            .unwrap()
            .count()
    };
    assert_eq!((serial(1), serial(2)), (1, 1), "one token directory each");
    let (one, two) = (cluster.client(0), cluster.client(1));
    let key = create_key(&one).await.key_id().to_string();
    let blob = encrypt(&one, &key, b"s").await;
    assert_eq!(decrypt(&two, &blob).await, b"s");
    let pids: Vec<u32> = cluster.replicas.iter().map(|r| r.1).collect();
    cluster.stop();
    for pid in &pids {
        assert!(
            !PathBuf::from(format!("/proc/{pid}")).exists(),
            "replica {pid} still runs"
        );
    }
    assert!(
        !dir.path().join("pg/data/postmaster.pid").exists(),
        "PostgreSQL still runs"
    );

    let before = domain(1);
    let started = Instant::now();
    let cluster = ScriptCluster::start(dir.path(), &["3"]);
    println!(
        "cluster.sh start DIR 3 (stopped DIR of 2): {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(domain(1), before);
    assert_eq!(domain(3), before);
    let log = std::fs::read_to_string(dir.path().join("ceremony/ceremony.log")).unwrap();
    assert_eq!(log.matches("== domain create").count(), 1, "{log}");
    assert_eq!(log.matches("== join on").count(), 2, "{log}");
    for i in 0..3 {
        assert_eq!(
            decrypt(&cluster.client(i), &blob).await,
            b"s",
            "replica {i}"
        );
    }
}

/// `P11KMS_CLUSTER_KEY_STORAGE=token`: the former layout, one token under DIR/hsm shared by
/// every replica in token mode; a key made on replica 1 works on replica 2, before and after a
/// stop and start (the mode is kept; the replicas start one at a time on the shared token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_script_keeps_token_mode_behind_a_switch() {
    let dir = tempfile::Builder::new()
        .prefix("p11kms-cluster-token-")
        .tempdir()
        .unwrap();
    let token_mode = [("P11KMS_CLUSTER_KEY_STORAGE", "token")];
    let mut cluster = ScriptCluster::start_with(dir.path(), &["2"], &token_mode);
    assert!(dir.path().join("hsm/user.pin").exists());
    assert!(!dir.path().join("replica-1/tokens").exists());
    let key = create_key(&cluster.client(0)).await.key_id().to_string();
    let blob = encrypt(&cluster.client(0), &key, b"t").await;
    assert_eq!(decrypt(&cluster.client(1), &blob).await, b"t");
    cluster.stop();
    // No switch this time: the DIR's mode is kept.
    let cluster = ScriptCluster::start(dir.path(), &["2"]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("key-storage")).unwrap(),
        "token\n"
    );
    for i in 0..2 {
        assert_eq!(
            decrypt(&cluster.client(i), &blob).await,
            b"t",
            "replica {i}"
        );
    }
    assert!(!dir.path().join("replica-1/tokens").exists());
}

/// Keys of every kind made and used through both replicas: each replica's token still holds
/// one object, its copy of the domain key, with the domain's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_token_holds_only_its_domain_key_whatever_the_keys() {
    let mut cluster = Cluster::start(2, &[]);
    let (a, b) = (cluster.client(0), cluster.client(1));
    let specs = [
        (KeySpec::SymmetricDefault, KeyUsageType::EncryptDecrypt),
        (KeySpec::Rsa2048, KeyUsageType::EncryptDecrypt),
        (KeySpec::Rsa2048, KeyUsageType::SignVerify),
        (KeySpec::EccNistP256, KeyUsageType::SignVerify),
        (KeySpec::Hmac256, KeyUsageType::GenerateVerifyMac),
    ];
    let mut made = 0;
    for round in 0..6 {
        for (spec, usage) in &specs {
            let (maker, user) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
            let key = maker
                .create_key()
                .key_spec(spec.clone())
                .key_usage(usage.clone())
                .send()
                .await
                .unwrap()
                .key_metadata
                .unwrap()
                .key_id()
                .to_string();
            made += 1;
            // Used on the other replica, which unwraps it into a session object.
            match usage {
                KeyUsageType::EncryptDecrypt if *spec == KeySpec::SymmetricDefault => {
                    assert_eq!(decrypt(user, &encrypt(maker, &key, b"k").await).await, b"k");
                }
                KeyUsageType::EncryptDecrypt => {
                    user.get_public_key().key_id(&key).send().await.unwrap();
                }
                KeyUsageType::SignVerify => {
                    let algorithm = if *spec == KeySpec::Rsa2048 {
                        SigningAlgorithmSpec::RsassaPssSha256
                    } else {
                        SigningAlgorithmSpec::EcdsaSha256
                    };
                    user.sign()
                        .key_id(&key)
                        .message(Blob::new(b"m".to_vec()))
                        .signing_algorithm(algorithm)
                        .send()
                        .await
                        .unwrap();
                }
                _ => {
                    user.generate_mac()
                        .key_id(&key)
                        .message(Blob::new(b"m".to_vec()))
                        .mac_algorithm(MacAlgorithmSpec::HmacSha256)
                        .send()
                        .await
                        .unwrap();
                }
            }
            if round == 5 {
                maker.rotate_key_on_demand().key_id(&key).send().await.ok();
            }
        }
    }
    // The replicas stop first: a login from another process rewrites SoftHSM2's token file.
    cluster.replicas.clear();
    let Tokens::Domain(tokens) = &cluster.tokens else {
        unreachable!()
    };
    for i in 0..2 {
        let objects = token_objects(&tokens.data_dir(i));
        println!("after {made} keys, token {i}: {objects:?}");
        assert_eq!(
            objects,
            vec![(
                "p11kms-domain".to_string(),
                hex::decode(&tokens.domain_id).unwrap()
            )],
            "token {i}"
        );
    }
}

/// The label and id of every token object in the embedded token under `data_dir`, logged
/// in as the user (private objects count too).
fn token_objects(data_dir: &Path) -> Vec<(String, Vec<u8>)> {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::object::{Attribute, AttributeType};
    use cryptoki::session::UserType;
    use secrecy::ExposeSecret;
    let embedded = p11kms::hsm::EmbeddedSoftHsm::prepare(data_dir).unwrap();
    std::env::set_var("SOFTHSM2_CONF", &embedded.conf_path);
    let module = p11kms::hsm::find_softhsm_module().expect("SoftHSM2 is installed");
    let pkcs11 = Pkcs11::new(module).unwrap();
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = pkcs11.get_slots_with_initialized_token().unwrap()[0];
    let session = pkcs11.open_ro_session(slot).unwrap();
    let pin = embedded.user_pin().unwrap();
    session
        .login(
            UserType::User,
            Some(&cryptoki::types::AuthPin::new(pin.expose_secret().into())),
        )
        .unwrap();
    let mut objects = Vec::new();
    for handle in session.find_objects(&[Attribute::Token(true)]).unwrap() {
        let mut label = String::new();
        let mut id = Vec::new();
        for attribute in session
            .get_attributes(handle, &[AttributeType::Label, AttributeType::Id])
            .unwrap()
        {
            match attribute {
                Attribute::Label(l) => label = String::from_utf8_lossy(&l).into_owned(),
                Attribute::Id(i) => id = i,
                _ => {}
            }
        }
        objects.push((label, id));
    }
    drop(session);
    pkcs11.finalize().unwrap();
    objects
}
