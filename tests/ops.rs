//! Operability (issue 5): seeded keys, adopted token keys, `p11kms doctor`.
//!
//! Each test runs the real binary on its own temporary data directory (fresh SoftHSM2 token
//! and SQLite file). The small harness here is self-contained; it can move onto the shared
//! `tests/common` harness once that is on main.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::KeyState;
use aws_sdk_kms::Client;

const BIN: &str = env!("CARGO_BIN_EXE_p11kms-under-test");

/// A running `p11kms serve`.
struct Server {
    child: Child,
    endpoint: String,
}

fn command(data_dir: &Path, sub: &str, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg(sub);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("P11KMS_") {
            cmd.env_remove(&name);
        }
    }
    cmd.env("P11KMS_DATA_DIR", data_dir)
        .env("P11KMS_LISTEN", "127.0.0.1:0")
        .current_dir(data_dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

impl Server {
    fn start(data_dir: &Path, env: &[(&str, &str)]) -> Result<Server, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("stderr.log"))
            .map_err(|e| e.to_string())?;
        let mut child = command(data_dir, "serve", env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("p11kms listening on http://") {
                        return Ok(Server {
                            child,
                            endpoint: format!("http://{}", rest.trim()),
                        });
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    let log =
                        std::fs::read_to_string(data_dir.join("stderr.log")).unwrap_or_default();
                    return Err(format!("server did not start ({status:?}):\n{log}"));
                }
            }
        }
    }

    fn client(&self) -> Client {
        self.client_as("test", "test")
    }

    fn client_as(&self, access_key_id: &str, secret: &str) -> Client {
        let config = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(
                access_key_id,
                secret,
                None,
                None,
                "ops-tests",
            ))
            .endpoint_url(&self.endpoint)
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .build();
        Client::from_conf(config)
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn data_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("p11kms-ops-")
        .tempdir()
        .expect("temporary directory")
}

const SEED_A: &str = "0b3e8a52-6f0c-4c1e-9d55-2f6f3f2d9a10";
const SEED_B: &str = "5d1f0c3a-9a7e-4b52-8c3d-1e2f3a4b5c6d";

fn write_seed(dir: &Path, description: &str) -> PathBuf {
    let path = dir.join("seed.toml");
    let text = format!(
        r#"
[[keys]]
key_id = "{SEED_A}"
description = "{description}"
aliases = ["alias/seed-a"]
tags = {{ team = "payments" }}
rotation_period_days = 90

[[keys]]
key_id = "{SEED_B}"
description = "disabled from the start"
enabled = false
"#
    );
    std::fs::write(&path, text).expect("write seed");
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn seeded_keys_keep_their_ids_across_restarts_and_are_not_overwritten() {
    let dir = data_dir();
    let seed = write_seed(dir.path(), "first");
    let seed_env = seed.to_string_lossy().to_string();
    let env = [("P11KMS_SEED_FILE", seed_env.as_str())];

    let server = Server::start(dir.path(), &env).unwrap_or_else(|e| panic!("{e}"));
    let kms = server.client();
    let meta = kms
        .describe_key()
        .key_id("alias/seed-a")
        .send()
        .await
        .expect("describe by seeded alias")
        .key_metadata
        .expect("metadata");
    assert_eq!(meta.key_id, SEED_A);
    assert_eq!(meta.description.as_deref(), Some("first"));
    assert_eq!(meta.key_state, Some(KeyState::Enabled));
    let material = meta.current_key_material_id.clone().expect("material id");
    let rotation = kms
        .get_key_rotation_status()
        .key_id(SEED_A)
        .send()
        .await
        .expect("rotation status");
    assert!(rotation.key_rotation_enabled);
    assert_eq!(rotation.rotation_period_in_days, Some(90));
    let tags = kms
        .list_resource_tags()
        .key_id(SEED_A)
        .send()
        .await
        .expect("tags")
        .tags
        .unwrap_or_default();
    assert_eq!(tags.len(), 1);
    assert_eq!(tags[0].tag_key, "team");
    let b = kms
        .describe_key()
        .key_id(SEED_B)
        .send()
        .await
        .expect("describe B")
        .key_metadata
        .expect("metadata");
    assert_eq!(b.key_state, Some(KeyState::Disabled));

    let blob = kms
        .encrypt()
        .key_id("alias/seed-a")
        .plaintext(Blob::new(b"seeded secret".to_vec()))
        .send()
        .await
        .expect("encrypt")
        .ciphertext_blob
        .expect("blob");
    // Changed through the API: the seed file must not undo it.
    kms.update_key_description()
        .key_id(SEED_A)
        .description("changed through the API")
        .send()
        .await
        .expect("update description");
    kms.enable_key()
        .key_id(SEED_B)
        .send()
        .await
        .expect("enable B");
    server.stop();

    // The file now says something else; the keys exist, so nothing changes.
    write_seed(dir.path(), "second");
    let server = Server::start(dir.path(), &env).unwrap_or_else(|e| panic!("{e}"));
    let kms = server.client();
    let meta = kms
        .describe_key()
        .key_id("alias/seed-a")
        .send()
        .await
        .expect("describe after restart")
        .key_metadata
        .expect("metadata");
    assert_eq!(meta.key_id, SEED_A);
    assert_eq!(meta.description.as_deref(), Some("changed through the API"));
    assert_eq!(
        meta.current_key_material_id.as_deref(),
        Some(material.as_str())
    );
    let b = kms
        .describe_key()
        .key_id(SEED_B)
        .send()
        .await
        .expect("describe B")
        .key_metadata
        .expect("metadata");
    assert_eq!(
        b.key_state,
        Some(KeyState::Enabled),
        "seed must not re-disable B"
    );
    let plain = kms
        .decrypt()
        .ciphertext_blob(blob)
        .send()
        .await
        .expect("decrypt after restart")
        .plaintext
        .expect("plaintext");
    assert_eq!(plain.as_ref(), b"seeded secret");
    let keys = kms
        .list_keys()
        .send()
        .await
        .expect("list")
        .keys
        .unwrap_or_default();
    assert_eq!(keys.len(), 2, "no duplicates after a restart");
    server.stop();
}

// === adoption ===

/// Creates AES token keys the way an HSM administrator would, with a raw PKCS#11 session
/// on the gateway's (stopped) embedded token.
fn make_token_keys(dir: &Path, keys: &[(&str, &[u8], bool)]) {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::{Attribute, KeyType, ObjectClass};
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;

    let module = [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    ]
    .iter()
    .find(|p| Path::new(p).exists())
    .expect("SoftHSM2 installed");
    // SoftHSM reads its configuration at C_Initialize; only this test loads it in-process.
    std::env::set_var("SOFTHSM2_CONF", dir.join("softhsm2.conf"));
    let pkcs11 = Pkcs11::new(module).expect("load SoftHSM2");
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let slot = pkcs11
        .get_slots_with_token()
        .expect("slots")
        .into_iter()
        .find(|s| {
            pkcs11
                .get_token_info(*s)
                .map(|i| i.label().trim_end() == "p11kms")
                .unwrap_or(false)
        })
        .expect("the gateway's token");
    let pin = std::fs::read_to_string(dir.join("user.pin")).expect("user pin");
    let session = pkcs11.open_rw_session(slot).expect("session");
    session
        .login(UserType::User, Some(&AuthPin::new(pin.trim().into())))
        .expect("login");
    for (label, id, derive) in keys {
        session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(32.into()),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Derive(*derive),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Label(label.as_bytes().to_vec()),
                    Attribute::Id(id.to_vec()),
                ],
            )
            .expect("generate a token key");
    }
    drop(session);
    pkcs11.finalize().expect("C_Finalize");
}

const ADOPT_LABEL: &str = "5a0f9a4e-1d7b-4f0e-8a51-7b6d0e3c2a11";
const ADOPT_ID: &str = "9e6b2c1d-3f4a-4b5c-8d7e-0f1a2b3c4d5e";
const ADOPT_NO_DERIVE: &str = "c2d3e4f5-a6b7-4c8d-9e0f-1a2b3c4d5e6f";

#[tokio::test(flavor = "multi_thread")]
async fn an_adopted_token_key_works_for_encrypt_decrypt_and_reencrypt() {
    let dir = data_dir();
    // First start creates the embedded token; then an administrator adds keys to it.
    Server::start(dir.path(), &[])
        .unwrap_or_else(|e| panic!("{e}"))
        .stop();
    let long_id = [0x42u8; 32];
    make_token_keys(
        dir.path(),
        &[
            ("legacy-master", b"\x01\x02\x03", true),
            ("custody-32", &long_id, true),
            ("no-derive", b"\x07\x07", false),
        ],
    );
    let seed = dir.path().join("seed.toml");
    std::fs::write(
        &seed,
        format!(
            "[[keys]]\nkey_id = \"{ADOPT_LABEL}\"\naliases = [\"alias/legacy\"]\nadopt = {{ label = \"legacy-master\" }}\n\n\
             [[keys]]\nkey_id = \"{ADOPT_ID}\"\nadopt = {{ id = \"{}\" }}\n",
            hex::encode(long_id)
        ),
    )
    .expect("write seed");
    let seed_env = seed.to_string_lossy().to_string();
    let env = [("P11KMS_SEED_FILE", seed_env.as_str())];
    let server = Server::start(dir.path(), &env).unwrap_or_else(|e| panic!("{e}"));
    let kms = server.client();

    let legacy = kms
        .describe_key()
        .key_id("alias/legacy")
        .send()
        .await
        .expect("describe adopted")
        .key_metadata
        .expect("metadata");
    assert_eq!(legacy.key_id, ADOPT_LABEL);
    assert_eq!(legacy.origin.as_ref().map(|o| o.as_str()), Some("EXTERNAL"));
    let custody = kms
        .describe_key()
        .key_id(ADOPT_ID)
        .send()
        .await
        .expect("describe adopted by id")
        .key_metadata
        .expect("metadata");
    // A 32-byte CKA_ID is used as the material id itself.
    assert_eq!(
        custody.current_key_material_id.as_deref(),
        Some(hex::encode(long_id).as_str())
    );

    let context = |v: &str| std::collections::HashMap::from([("app".to_string(), v.to_string())]);
    let blob = kms
        .encrypt()
        .key_id("alias/legacy")
        .plaintext(Blob::new(b"custody secret".to_vec()))
        .set_encryption_context(Some(context("one")))
        .send()
        .await
        .expect("encrypt under the adopted key")
        .ciphertext_blob
        .expect("blob");
    let plain = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .set_encryption_context(Some(context("one")))
        .send()
        .await
        .expect("decrypt")
        .plaintext
        .expect("plaintext");
    assert_eq!(plain.as_ref(), b"custody secret");
    let moved = kms
        .re_encrypt()
        .ciphertext_blob(blob)
        .set_source_encryption_context(Some(context("one")))
        .destination_key_id(ADOPT_ID)
        .set_destination_encryption_context(Some(context("two")))
        .send()
        .await
        .expect("re-encrypt between adopted keys");
    assert!(moved
        .source_key_id
        .as_deref()
        .is_some_and(|k| k.ends_with(ADOPT_LABEL)));
    let moved = moved.ciphertext_blob.expect("blob");
    let back = kms
        .re_encrypt()
        .ciphertext_blob(moved.clone())
        .set_source_encryption_context(Some(context("two")))
        .destination_key_id("alias/legacy")
        .set_destination_encryption_context(Some(context("three")))
        .send()
        .await
        .expect("re-encrypt back")
        .ciphertext_blob
        .expect("blob");
    server.stop();

    // After a restart the mapping from material id to token object is loaded from the store.
    let server = Server::start(dir.path(), &env).unwrap_or_else(|e| panic!("{e}"));
    let kms = server.client();
    for (blob, ctx, key) in [(moved, "two", ADOPT_ID), (back, "three", ADOPT_LABEL)] {
        let out = kms
            .decrypt()
            .ciphertext_blob(blob)
            .set_encryption_context(Some(context(ctx)))
            .send()
            .await
            .expect("decrypt after restart");
        assert_eq!(
            out.plaintext.expect("plaintext").as_ref(),
            b"custody secret"
        );
        assert!(out.key_id.as_deref().is_some_and(|k| k.ends_with(key)));
    }
    server.stop();

    // A key that may not derive cannot be adopted, and the gateway says why.
    std::fs::write(
        &seed,
        format!("[[keys]]\nkey_id = \"{ADOPT_NO_DERIVE}\"\nadopt = {{ label = \"no-derive\" }}\n"),
    )
    .expect("write seed");
    let err = match Server::start(dir.path(), &env) {
        Ok(_) => panic!("adopting a key without CKA_DERIVE must fail"),
        Err(e) => e,
    };
    assert!(err.contains("CKA_DERIVE false"), "{err}");
    assert!(err.contains("CKM_AES_CBC_ENCRYPT_DATA"), "{err}");
}

// === doctor ===

#[test]
fn doctor_against_softhsm_prints_the_feature_table() {
    let dir = data_dir();
    let out = command(dir.path(), "doctor", &[])
        .output()
        .expect("run p11kms doctor");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "doctor failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let row = |first: &str| -> Vec<String> {
        stdout
            .lines()
            .find(|l| l.split('|').nth(1).is_some_and(|cell| cell.trim() == first))
            .unwrap_or_else(|| panic!("no row '{first}' in:\n{stdout}"))
            .split('|')
            .skip(1)
            .map(|c| c.trim().to_string())
            .collect()
    };
    // Mechanisms, as C_GetMechanismInfo reports them.
    assert_eq!(row("CKM_AES_GCM")[1], "encrypt decrypt");
    assert_eq!(row("CKM_AES_KEY_WRAP_PAD")[1], "wrap unwrap");
    assert_eq!(row("CKM_AES_CBC_ENCRYPT_DATA")[1], "derive");
    // Trials.
    assert_eq!(row("gcm")[1], "ok");
    assert_eq!(row("envelope")[1], "ok");
    assert_eq!(row("oaep-sha1")[1], "ok");
    assert_eq!(row("oaep-sha256")[1], "FAILED");
    assert!(row("oaep-sha256")[2].contains("CKR_ARGUMENTS_BAD"));
    // Features: SoftHSM 2.6 serves everything but OAEP with SHA-256.
    let expected = [
        ("symmetric envelope scheme (SYMMETRIC_DEFAULT)", "yes"),
        ("ReEncrypt in token", "yes"),
        ("GenerateRandom", "yes"),
        ("RSAES_OAEP_SHA_1 encrypt/decrypt", "yes"),
        ("RSAES_OAEP_SHA_256 encrypt/decrypt", "no"),
        ("RSA OAEP SHA-256 wrap/unwrap", "no"),
        ("RSASSA_PSS_SHA_256", "yes"),
        ("RSASSA_PKCS1_V1_5_SHA_512", "yes"),
        ("ECDSA_SHA_256 (ECC_NIST_P256)", "yes"),
        ("ECDSA_SHA_512 (ECC_NIST_P521)", "yes"),
        ("ECDSA_SHA_256 (ECC_SECG_P256K1)", "yes"),
        ("HMAC_224 (HMAC_SHA_224)", "yes"),
        ("HMAC_512 (HMAC_SHA_512)", "yes"),
    ];
    for (feature, supported) in expected {
        assert_eq!(row(feature)[1], supported, "{feature}");
    }
    assert!(stdout.contains("verdict: p11kms can serve symmetric keys"));
}

#[test]
fn doctor_fails_cleanly_on_a_missing_token() {
    let dir = data_dir();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir_all(&tokens).expect("token dir");
    let conf = dir.path().join("empty-softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\n",
            tokens.display()
        ),
    )
    .expect("write conf");
    let out = command(dir.path(), "doctor", &[])
        .env("P11KMS_PKCS11_MODULE", "/usr/lib/softhsm/libsofthsm2.so")
        .env("P11KMS_TOKEN_LABEL", "no-such-token-anywhere")
        .env("P11KMS_PIN", "pin-must-not-leak-1234")
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("run p11kms doctor");
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no token labelled 'no-such-token-anywhere'"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("pin-must-not-leak"),
        "the PIN must never be printed"
    );
}

// === signals ===

fn write_config(path: &Path, access_key_id: &str, secret: &str, level: &str) {
    std::fs::write(
        path,
        format!(
            "[log]\nlevel = \"{level}\"\n\n[[credentials]]\naccess_key_id = \"{access_key_id}\"\n\
             secret_access_key = \"{secret}\"\n"
        ),
    )
    .expect("write config");
}

fn wait_for_log(dir: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
        if log.contains(needle) || Instant::now() > deadline {
            return log;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_credentials_and_log_level_and_sigterm_closes_sessions() {
    let dir = data_dir();
    let config = dir.path().join("p11kms.toml");
    write_config(&config, "AKIDFIRST", "first-secret", "info");
    let config_arg = config.to_string_lossy().to_string();
    let server = {
        // `serve --config FILE`: SIGHUP re-reads that file.
        let log = std::fs::File::create(dir.path().join("stderr.log")).expect("log");
        let mut child = command(dir.path(), "serve", &[])
            .arg("--config")
            .arg(&config_arg)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let endpoint = loop {
            let line = lines.next().expect("ready line").expect("read stdout");
            if let Some(rest) = line.strip_prefix("p11kms listening on http://") {
                break format!("http://{}", rest.trim());
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Server { child, endpoint }
    };
    let first = server.client_as("AKIDFIRST", "first-secret");
    first
        .list_keys()
        .send()
        .await
        .expect("first credential works");

    let before = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert!(
        !before.contains("DEBUG"),
        "debug output before the reload:\n{before}"
    );
    write_config(&config, "AKIDSECOND", "second-secret", "debug");
    server.signal("HUP");
    let log = wait_for_log(dir.path(), "SIGHUP: credentials and log level reloaded");
    assert!(
        log.contains("SIGHUP: credentials and log level reloaded"),
        "{log}"
    );
    let second = server.client_as("AKIDSECOND", "second-secret");
    second
        .list_keys()
        .send()
        .await
        .expect("second credential works after SIGHUP");
    let err = first
        .list_keys()
        .send()
        .await
        .expect_err("first credential is gone after SIGHUP");
    assert_eq!(
        aws_sdk_kms::error::ProvideErrorMetadata::code(&err),
        Some("UnrecognizedClientException")
    );
    // The new level is in force: debug events now appear.
    second.list_keys().send().await.expect("list");
    let log = wait_for_log(dir.path(), "DEBUG");
    assert!(
        log.contains("DEBUG"),
        "no debug output after reloading to debug:\n{log}"
    );

    // A broken file leaves everything as it was.
    std::fs::write(&config, "this is = = not toml").expect("write");
    server.signal("HUP");
    let log = wait_for_log(dir.path(), "SIGHUP: configuration not reloaded");
    assert!(log.contains("SIGHUP: configuration not reloaded"), "{log}");
    second
        .list_keys()
        .send()
        .await
        .expect("still the second credential");

    server.signal("TERM");
    let mut server = server;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert!(
        log.contains("HSM sessions closed; library finalised"),
        "{log}"
    );
}

/// Sends the headers and half the body of a KMS request on a fresh connection: a request
/// the server has accepted and is still reading.
fn half_sent_request(endpoint: &str) -> (std::net::TcpStream, &'static [u8]) {
    use std::io::Write;
    let address = endpoint.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let body: &'static [u8] = b"{\"Limit\": 10}";
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: {address}\r\nX-Amz-Target: TrentService.ListKeys\r\n\
         Content-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .expect("send headers");
    stream.write_all(&body[..5]).expect("send half the body");
    stream.flush().expect("flush");
    (stream, &body[5..])
}

#[test]
fn sigterm_finishes_accepted_requests_and_the_drain_deadline_ends_stuck_ones() {
    use std::io::{Read, Write};
    let dir = data_dir();
    let server =
        Server::start(dir.path(), &[("P11KMS_DRAIN_MS", "3000")]).unwrap_or_else(|e| panic!("{e}"));
    let (mut in_flight, rest) = half_sent_request(&server.endpoint);
    let (_stuck, _) = half_sent_request(&server.endpoint);
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    server.signal("TERM");
    wait_for_log(dir.path(), "shutting down");
    // The accepted request still gets its whole answer (an AWS error for the missing
    // signature: what matters is that it is answered, not dropped).
    in_flight
        .write_all(rest)
        .expect("send the rest of the body");
    let mut response = Vec::new();
    let _ = in_flight.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.starts_with("HTTP/1.1 "),
        "no response: {response:?}"
    );
    assert!(response.contains("x-amzn-requestid"), "{response}");
    // The stuck one holds the server until the deadline, then it exits anyway.
    let mut server = server;
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no exit after the drain deadline"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "exited before the deadline"
    );
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert!(log.contains("drain deadline passed"), "{log}");
}
