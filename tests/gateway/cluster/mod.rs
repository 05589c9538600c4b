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

mod failures;
mod replicas;
mod script;

/// Runs `p11kms ARGS` on the embedded token under `data_dir` with the store at `url`;
/// asserts success and returns stdout.
fn on_token(data_dir: &Path, url: &str, args: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_p11kms-under-test"));
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
        let out = Command::new(env!("CARGO_BIN_EXE_p11kms-under-test"))
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
    match plain_http::get(url).await {
        Ok(reply) => reply.status,
        Err(_) => 0,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Lines of the log that mention `key` and `what`.
fn count_lines(logs: &str, key: &str, what: &str) -> usize {
    logs.lines()
        .filter(|l| l.contains(key) && l.contains(what))
        .count()
}
