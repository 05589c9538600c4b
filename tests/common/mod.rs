//! Test harness: runs a real `p11kms serve` on 127.0.0.1 with a fresh SoftHSM2 token and a
//! fresh SQLite file (both under a new temporary data directory), and talks to it through the
//! real `aws-sdk-kms` client or through hand-signed raw HTTP requests.
//!
//! Every test starts its own server, so tests never see each other's keys.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt::Debug;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_kms::config::http::HttpResponse;
use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::KeyMetadata;
use aws_sdk_kms::Client;
use base64::Engine as _;

pub mod plain_http;

/// `GET url`: the status and the body as text; panics when there is no answer.
pub async fn http_get(url: &str) -> (u16, String) {
    let reply = plain_http::get(url).await.expect("GET");
    (reply.status, reply.text())
}

/// Region the gateway runs in by default.
pub const REGION: &str = "us-east-1";
/// Account of the built-in dev credential.
pub const ACCOUNT: &str = "111122223333";
/// Access key id and secret of the built-in dev credential.
pub const DEV_AKID: &str = "test";
pub const DEV_SECRET: &str = "test";

/// AWS's fixed message for DryRunOperationException.
pub const DRY_RUN_MESSAGE: &str = "The request would have succeeded, but the DryRun option is set.";
/// AWS's fixed message for IncorrectKeyException.
pub const INCORRECT_KEY_MESSAGE: &str =
    "The key ID in the request does not identify a CMK that can perform this operation.";
/// A well-formed key id that no test ever creates.
pub const UNKNOWN_KEY_ID: &str = "134f2428-cec1-4b25-a1ae-9048164dba47";

/// The repository's root (this test package's manifest is `tests/Cargo.toml`).
pub fn repository_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests folder is inside the repository")
}

const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Followed by `http://` or, with TLS, `https://`, then the address.
const READY_PREFIX: &str = "p11kms listening on ";

// -------------------------------------------------------------------------------------------
// The server under test
// -------------------------------------------------------------------------------------------

/// A running `p11kms serve` child process with its own data directory.
pub struct TestServer {
    child: Child,
    endpoint: String,
    log_path: PathBuf,
    env: Vec<(String, String)>,
    args: Vec<String>,
    // Removed after the child has been killed (Drop kills the child first).
    data_dir: tempfile::TempDir,
}

/// Spawns `p11kms serve` on `data_dir` and waits for its ready line; stderr is appended to
/// `log_path`. Returns the child and its endpoint.
fn spawn_server(
    data_dir: &Path,
    log_path: &Path,
    env: &[(String, String)],
    args: &[String],
) -> (Child, String) {
    let log_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .expect("open server log file");

    // P11KMS_TEST_BIN runs the tests against another build, e.g. to show a test fails on
    // the code before a fix.
    let bin = std::env::var_os("P11KMS_TEST_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_p11kms-under-test").into());
    let mut cmd = Command::new(bin);
    cmd.arg("serve").args(args);
    // Nothing from the developer's environment may steer the server under test.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("P11KMS_") {
            cmd.env_remove(&name);
        }
    }
    cmd.env("P11KMS_DATA_DIR", data_dir)
        .env("P11KMS_LISTEN", "127.0.0.1:0")
        .env("P11KMS_LOG", "debug")
        .current_dir(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn p11kms serve");

    // Read stdout on a thread: forward lines until the ready line, then keep draining so the
    // child never blocks on a full pipe.
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });

    let deadline = Instant::now() + START_TIMEOUT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(url) = line.trim_end().strip_prefix(READY_PREFIX) {
                    return (child, url.to_string());
                }
                seen.push(line);
            }
            Err(err) => {
                let status = child.try_wait().ok().flatten();
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(log_path).unwrap_or_default();
                panic!(
                    "p11kms did not print its ready line ({err:?}; exit status {status:?}).\n\
                     stdout so far: {seen:#?}\n--- stderr ---\n{log}"
                );
            }
        }
    }
}

impl TestServer {
    /// Starts a server with the default settings (fresh token, fresh SQLite file).
    pub fn start() -> TestServer {
        TestServer::start_with(&[])
    }

    /// Starts a server with extra environment variables (e.g. `P11KMS_DAY_SECONDS`).
    pub fn start_with(env: &[(&str, &str)]) -> TestServer {
        TestServer::start_configured(env, None)
    }

    /// Starts a server with a configuration file of the given TOML text (`serve --config`).
    pub fn start_with_config(toml: &str) -> TestServer {
        TestServer::start_configured(&[], Some(toml))
    }

    /// Starts a server on a data directory that `prepare` fills first (e.g. with a copy of
    /// a fixture's token and store).
    pub fn start_prepared(env: &[(&str, &str)], prepare: impl FnOnce(&Path)) -> TestServer {
        TestServer::start_in(TestServer::new_data_dir(prepare), env, None)
    }

    fn start_configured(env: &[(&str, &str)], toml: Option<&str>) -> TestServer {
        TestServer::start_in(TestServer::new_data_dir(|_| {}), env, toml)
    }

    fn new_data_dir(prepare: impl FnOnce(&Path)) -> tempfile::TempDir {
        let data_dir = tempfile::Builder::new()
            .prefix("p11kms-test-")
            .tempdir()
            .expect("create temporary data directory");
        prepare(data_dir.path());
        data_dir
    }

    fn start_in(
        data_dir: tempfile::TempDir,
        env: &[(&str, &str)],
        toml: Option<&str>,
    ) -> TestServer {
        let log_path = data_dir.path().join("server-stderr.log");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut args = Vec::new();
        if let Some(toml) = toml {
            let path = data_dir.path().join("p11kms.toml");
            std::fs::write(&path, toml).expect("write configuration file");
            args = vec!["--config".to_string(), path.display().to_string()];
        }
        let (child, endpoint) = spawn_server(data_dir.path(), &log_path, &env, &args);
        TestServer {
            child,
            endpoint,
            log_path,
            env,
            args,
            data_dir,
        }
    }

    /// Stops the server and starts it again on the same data directory (same token, same
    /// SQLite file, same environment). The port changes: build new clients afterwards.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, endpoint) =
            spawn_server(self.data_dir.path(), &self.log_path, &self.env, &self.args);
        self.child = child;
        self.endpoint = endpoint;
    }

    /// `http://127.0.0.1:<port>` (`https://` when the server was given TLS settings)
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The server's data directory (token, SQLite file, PIN).
    /// The server's process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the server to exit by itself, up to `timeout`; returns whether it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// Everything the server has written to stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// An SDK client with the dev credential, region us-east-1 and retries disabled.
    pub fn client(&self) -> Client {
        self.client_with(DEV_AKID, DEV_SECRET)
    }

    /// An SDK client signing with the given credential.
    pub fn client_with(&self, akid: &str, secret: &str) -> Client {
        client_of(&self.endpoint, akid, secret)
    }

    /// A hand-built request to this server (see [`RawRequest`]).
    pub fn raw(&self, target: &str, body: impl Into<Vec<u8>>) -> RawRequest {
        RawRequest {
            endpoint: self.endpoint.clone(),
            target: Some(target.to_string()),
            body: body.into(),
            content_type: "application/x-amz-json-1.1".to_string(),
            credential: Some((DEV_AKID.to_string(), DEV_SECRET.to_string())),
            time: SystemTime::now(),
            sent_body: None,
        }
    }

    /// `arn:aws:kms:us-east-1:111122223333:key/<id>`
    pub fn key_arn(&self, key_id: &str) -> String {
        key_arn(key_id)
    }

    /// `arn:aws:kms:us-east-1:111122223333:alias/...` for `alias/...`
    pub fn alias_arn(&self, alias_name: &str) -> String {
        alias_arn(alias_name)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Whether the server had already stopped on its own (crash, or a signal from outside).
        let exited = self.child.try_wait().ok().flatten();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            if let Some(status) = exited {
                eprintln!(
                    "p11kms ({}) had already exited before the test ended: {status}",
                    self.endpoint
                );
            }
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!(
                "--- last lines of the p11kms log ({}) ---\n{}",
                self.endpoint,
                tail.join("\n")
            );
        }
    }
}

/// An SDK client of `endpoint` signing with the given credential: region us-east-1, retries
/// disabled, a 60 s operation timeout.
pub fn client_of(endpoint: &str, akid: &str, secret: &str) -> Client {
    let config = aws_sdk_kms::Config::builder()
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(akid, secret, None, None, "test"))
        .behavior_version(BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(60))
                .build(),
        )
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    Client::from_conf(config)
}

/// The Kryoptic library the tests use: `P11KMS_KRYOPTIC_MODULE`, else next to the p11kms
/// binary under test. When it was not built: `None` with a SKIPPED line, except in CI (`CI`
/// set), which builds it, where that is a failure.
pub fn kryoptic_module_or_skip() -> Option<PathBuf> {
    let module = std::env::var_os("P11KMS_KRYOPTIC_MODULE")
        .map(PathBuf::from)
        .or_else(|| {
            let bin = PathBuf::from(env!("CARGO_BIN_EXE_p11kms-under-test"));
            Some(bin.parent()?.join("libkryoptic_pkcs11.so"))
        })
        .filter(|m| m.is_file());
    if module.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must build the Kryoptic library (tokens/kryoptic) before these tests"
        );
        eprintln!(
            "SKIPPED: no libkryoptic_pkcs11.so next to the p11kms binary; build it with \
             `cargo build --release --manifest-path tokens/kryoptic/Cargo.toml --target-dir target`"
        );
    }
    module
}

pub fn key_arn(key_id: &str) -> String {
    format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}")
}

pub fn alias_arn(alias_name: &str) -> String {
    format!("arn:aws:kms:{REGION}:{ACCOUNT}:{alias_name}")
}

/// A fresh, unique alias name (`alias/test-<random>`).
pub fn unique_alias() -> String {
    format!(
        "alias/test-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

// -------------------------------------------------------------------------------------------
// SDK helpers
// -------------------------------------------------------------------------------------------

/// Creates a default symmetric key and returns its metadata.
pub async fn create_key(kms: &Client) -> KeyMetadata {
    kms.create_key()
        .send()
        .await
        .expect("CreateKey")
        .key_metadata
        .expect("KeyMetadata in CreateKey response")
}

/// DescribeKey, returning the metadata.
pub async fn describe(kms: &Client, key_id: &str) -> KeyMetadata {
    kms.describe_key()
        .key_id(key_id)
        .send()
        .await
        .expect("DescribeKey")
        .key_metadata
        .expect("KeyMetadata in DescribeKey response")
}

/// The key's CurrentKeyMaterialId (panics when absent).
pub async fn current_material(kms: &Client, key_id: &str) -> String {
    describe(kms, key_id)
        .await
        .current_key_material_id
        .expect("CurrentKeyMaterialId")
}

/// Encrypt without encryption context; returns the ciphertext blob.
pub async fn encrypt(kms: &Client, key_id: &str, plaintext: &[u8]) -> Vec<u8> {
    kms.encrypt()
        .key_id(key_id)
        .plaintext(Blob::new(plaintext))
        .send()
        .await
        .expect("Encrypt")
        .ciphertext_blob
        .expect("CiphertextBlob")
        .into_inner()
}

/// Encrypt with an encryption context; returns the ciphertext blob.
pub async fn encrypt_ctx(
    kms: &Client,
    key_id: &str,
    plaintext: &[u8],
    ctx: &[(&str, &str)],
) -> Vec<u8> {
    kms.encrypt()
        .key_id(key_id)
        .plaintext(Blob::new(plaintext))
        .set_encryption_context(Some(context(ctx)))
        .send()
        .await
        .expect("Encrypt with context")
        .ciphertext_blob
        .expect("CiphertextBlob")
        .into_inner()
}

/// Decrypt without KeyId or context; returns the plaintext.
pub async fn decrypt(kms: &Client, blob: &[u8]) -> Vec<u8> {
    kms.decrypt()
        .ciphertext_blob(Blob::new(blob))
        .send()
        .await
        .expect("Decrypt")
        .plaintext
        .expect("Plaintext")
        .into_inner()
}

/// An encryption context map from pairs.
pub fn context(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A 64-digit lower-case hex key-material id.
pub fn is_material_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A canonical lower-case hyphenated UUID.
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => matches!(b, b'0'..=b'9' | b'a'..=b'f'),
        })
}

/// Random bytes (from a UUID v4 generator; quality is irrelevant for test data).
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 16);
    while out.len() < n {
        out.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    out.truncate(n);
    out
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// What an SDK call's failure looked like on the wire.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status of the error response.
    pub status: u16,
    /// AWS error code (`NotFoundException`, ...).
    pub code: Option<String>,
    /// The error message, if the body had one.
    pub message: Option<String>,
    /// `x-amzn-RequestId` of the error response.
    pub request_id: Option<String>,
    /// The whole SDK error, for assertion messages.
    pub display: String,
}

impl ApiError {
    /// Asserts the exact message.
    #[track_caller]
    pub fn assert_message(&self, expected: &str) -> &Self {
        assert_eq!(
            self.message.as_deref(),
            Some(expected),
            "unexpected error message; full error: {}",
            self.display
        );
        self
    }

    /// Asserts that the message contains `needle`.
    #[track_caller]
    pub fn assert_message_contains(&self, needle: &str) -> &Self {
        let msg = self.message.as_deref().unwrap_or("");
        assert!(
            msg.contains(needle),
            "error message {msg:?} does not contain {needle:?}; full error: {}",
            self.display
        );
        self
    }

    /// Asserts that the error has no message, or an empty one (InvalidCiphertextException).
    #[track_caller]
    pub fn assert_no_message(&self) -> &Self {
        assert!(
            self.message.as_deref().unwrap_or("").is_empty(),
            "expected no error message, got {:?}; full error: {}",
            self.message,
            self.display
        );
        self
    }
}

/// Turns a failed SDK call into an [`ApiError`]; panics if the call succeeded or never got an
/// HTTP response.
#[track_caller]
pub fn api_error<T, E>(result: Result<T, SdkError<E, HttpResponse>>) -> ApiError
where
    T: Debug,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let err = match result {
        Ok(value) => panic!("expected an error, but the call succeeded: {value:?}"),
        Err(err) => err,
    };
    let display = format!("{}", DisplayErrorContext(&err));
    let Some(raw) = err.raw_response() else {
        panic!("the call failed without an HTTP response: {display}");
    };
    let status = raw.status().as_u16();
    let request_id = raw.headers().get("x-amzn-RequestId").map(|v| v.to_string());
    ApiError {
        status,
        code: err.code().map(str::to_string),
        message: err.message().map(str::to_string),
        request_id,
        display,
    }
}

/// Asserts that an SDK call failed with HTTP 400 and the given AWS error code.
#[track_caller]
pub fn expect_error<T, E>(result: Result<T, SdkError<E, HttpResponse>>, code: &str) -> ApiError
where
    T: Debug,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let err = api_error(result);
    assert_eq!(
        err.code.as_deref(),
        Some(code),
        "unexpected error code; full error: {}",
        err.display
    );
    assert_eq!(
        err.status, 400,
        "unexpected HTTP status for {code}; full error: {}",
        err.display
    );
    err
}

/// Asserts that an SDK call failed with HTTP 400 and one of the given AWS error codes.
#[track_caller]
pub fn expect_error_in<T, E>(
    result: Result<T, SdkError<E, HttpResponse>>,
    codes: &[&str],
) -> ApiError
where
    T: Debug,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let err = api_error(result);
    let code = err.code.as_deref().unwrap_or("<none>");
    assert!(
        codes.contains(&code),
        "error code {code} is not one of {codes:?}; full error: {}",
        err.display
    );
    assert_eq!(
        err.status, 400,
        "unexpected HTTP status; full error: {}",
        err.display
    );
    err
}

/// Polls `probe` every `every` until it returns `Some`, or gives up after `timeout`.
pub async fn poll_until<T, F, Fut>(timeout: Duration, every: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

// -------------------------------------------------------------------------------------------
// Raw HTTP (hand-signed with aws-sigv4)
// -------------------------------------------------------------------------------------------

/// A raw AWS JSON 1.1 request, signed with SigV4 unless told otherwise.
pub struct RawRequest {
    endpoint: String,
    target: Option<String>,
    body: Vec<u8>,
    content_type: String,
    credential: Option<(String, String)>,
    time: SystemTime,
    /// Body actually sent, when it should differ from the signed one.
    sent_body: Option<Vec<u8>>,
}

impl RawRequest {
    /// Sends the request unsigned.
    pub fn unsigned(mut self) -> Self {
        self.credential = None;
        self
    }

    /// Signs with this access key id and secret.
    pub fn credential(mut self, akid: &str, secret: &str) -> Self {
        self.credential = Some((akid.to_string(), secret.to_string()));
        self
    }

    /// Signs as if it were `time` (sets X-Amz-Date accordingly).
    pub fn signed_at(mut self, time: SystemTime) -> Self {
        self.time = time;
        self
    }

    pub fn content_type(mut self, content_type: &str) -> Self {
        self.content_type = content_type.to_string();
        self
    }

    /// Leaves out the X-Amz-Target header.
    pub fn without_target(mut self) -> Self {
        self.target = None;
        self
    }

    /// Signs the request's body but sends `body` instead (a tampered payload).
    pub fn send_other_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.sent_body = Some(body.into());
        self
    }

    /// Sends the request; panics on a transport error.
    pub async fn send(self) -> RawResponse {
        match self.try_send().await {
            Ok(resp) => resp,
            Err(e) => panic!("HTTP request to p11kms failed: {e:?}"),
        }
    }

    /// Sends the request, returning transport errors.
    pub async fn try_send(self) -> Result<RawResponse, plain_http::HttpError> {
        let url = format!("{}/", self.endpoint);
        let host = self
            .endpoint
            .strip_prefix("http://")
            .expect("http endpoint")
            .to_string();
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), host),
            ("content-type".into(), self.content_type.clone()),
        ];
        if let Some(target) = &self.target {
            headers.push(("x-amz-target".into(), target.clone()));
        }
        if let Some((akid, secret)) = &self.credential {
            let identity = Credentials::new(akid, secret, None, None, "raw").into();
            let params = aws_sigv4::sign::v4::SigningParams::builder()
                .identity(&identity)
                .region(REGION)
                .name("kms")
                .time(self.time)
                .settings(aws_sigv4::http_request::SigningSettings::default())
                .build()
                .expect("signing params")
                .into();
            let signable = aws_sigv4::http_request::SignableRequest::new(
                "POST",
                url.as_str(),
                headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                aws_sigv4::http_request::SignableBody::Bytes(&self.body),
            )
            .expect("signable request");
            let (instructions, _signature) = aws_sigv4::http_request::sign(signable, &params)
                .expect("sign request")
                .into_parts();
            let extra: Vec<(String, String)> = instructions
                .headers()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            headers.extend(extra);
        }

        let body = self.sent_body.unwrap_or(self.body);
        tokio::time::timeout(
            Duration::from_secs(60),
            plain_http::send("POST", &url, &headers, body),
        )
        .await
        .unwrap_or_else(|_| panic!("no answer from {url} within 60 s"))
    }
}

/// A raw HTTP response: status, lower-case headers, body.
pub use plain_http::HttpReply as RawResponse;

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The body parsed as JSON (panics if it is not JSON).
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The error code as the SDKs derive it: `__type` (after any `#`), else
    /// `x-amzn-ErrorType` (before any `:`).
    pub fn error_code(&self) -> Option<String> {
        let from_body = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("__type").and_then(|t| t.as_str()).map(str::to_string));
        let raw = from_body.or_else(|| {
            self.header("x-amzn-errortype")
                .map(|h| h.split(':').next().unwrap_or("").to_string())
        })?;
        let code = raw.rsplit('#').next().unwrap_or("").to_string();
        (!code.is_empty()).then_some(code)
    }
}

/// Standard base64 of `data`.
pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Decodes standard base64 (panics when invalid).
#[track_caller]
pub fn unb64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_else(|e| panic!("invalid base64 {text:?}: {e}"))
}

/// The library's `Hsm`, in-process, on a fresh embedded SoftHSM2 token under `dir`, with
/// session copies of keys as the embedded default has them. One per test binary: SoftHSM2
/// reads `SOFTHSM2_CONF` once per process.
pub fn open_fresh_hsm(
    dir: &Path,
    pool_size: usize,
    recycle_after_operations: u64,
) -> p11kms::hsm::Hsm {
    use p11kms::hsm::{find_softhsm_module, EmbeddedSoftHsm, Hsm, HsmConfig};
    let embedded = EmbeddedSoftHsm::prepare(dir).unwrap();
    std::env::set_var("SOFTHSM2_CONF", &embedded.conf_path);
    let module = find_softhsm_module().expect("SoftHSM2 is installed");
    embedded.ensure_token(&module, "p11kms").unwrap();
    Hsm::open(
        HsmConfig {
            module,
            token_label: "p11kms".into(),
            user_pin: embedded.user_pin().unwrap(),
            pool_size,
            session_wait: Duration::from_secs(5),
            operation_timeout: None,
            recycle_after_operations,
            session_key_copies: true,
            context_key_cache: p11kms::hsm::DEFAULT_CONTEXT_KEY_CACHE,
            transient_objects_per_session: p11kms::hsm::DEFAULT_TRANSIENT_OBJECTS_PER_SESSION,
            ciphertext_scheme: None,
        },
        None,
    )
    .unwrap()
}

// -------------------------------------------------------------------------------------------
// The network-HSM emulator
// -------------------------------------------------------------------------------------------

/// Builds `tools/pkcs11-delay` into `out` with its script; `None` when this machine cannot
/// (no C compiler or no pkcs11.h). Its `P11DELAY_*` variables reach it through the server's
/// environment.
pub fn build_delay_module(out: &Path) -> Option<PathBuf> {
    let script = repository_root().join("tools/pkcs11-delay/build.sh");
    let result = Command::new("sh").arg(script).arg(out).output().ok()?;
    if !result.status.success() {
        eprintln!(
            "cannot build tools/pkcs11-delay: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        return None;
    }
    let path = PathBuf::from(String::from_utf8_lossy(&result.stdout).trim());
    path.exists().then_some(path)
}

/// An embedded SoftHSM2 token `label` under `data_dir` (made first if missing), opened in
/// this process: the library initialised for it, the token's slot and a logged-in R/W
/// session (login is per application, so every later session of the library is logged in).
/// SoftHSM2 reads `SOFTHSM2_CONF` once per process: one such token per test binary at a time.
pub fn open_embedded_softhsm(
    data_dir: &Path,
    label: &str,
) -> (
    cryptoki::context::Pkcs11,
    cryptoki::slot::Slot,
    cryptoki::session::Session,
) {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;
    use secrecy::ExposeSecret;

    let embedded = p11kms::hsm::EmbeddedSoftHsm::prepare(data_dir).unwrap();
    // Gateways export their own SOFTHSM2_CONF; the library loaded here needs this token's.
    std::env::set_var("SOFTHSM2_CONF", &embedded.conf_path);
    let module = p11kms::hsm::find_softhsm_module().expect("SoftHSM2 is installed");
    embedded.ensure_token(&module, label).unwrap();
    let pkcs11 = Pkcs11::new(&module).unwrap();
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| {
            let info = pkcs11.get_token_info(*s).unwrap();
            info.token_initialized() && info.label().trim_end() == label
        })
        .unwrap();
    let session = pkcs11.open_rw_session(slot).unwrap();
    let pin = embedded.user_pin().unwrap();
    session
        .login(
            UserType::User,
            Some(&AuthPin::new(pin.expose_secret().into())),
        )
        .unwrap();
    (pkcs11, slot, session)
}

/// Generates the domain key `domain_id` in the embedded SoftHSM2 token under `data_dir` (made
/// first if missing), in this process rather than a gateway's, as `domain create` or `join`
/// would put it there.
pub fn put_domain_key_in_embedded_token(data_dir: &Path, domain_id: &[u8; 16]) {
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::Attribute;

    let (pkcs11, _, session) = open_embedded_softhsm(data_dir, "p11kms");
    let mut template = p11kms::hsm::domain::domain_key_template(domain_id);
    template.push(Attribute::ValueLen(32.into()));
    session
        .generate_key(&Mechanism::AesKeyGen, &template)
        .unwrap();
    drop(session);
    pkcs11.finalize().unwrap();
}

/// Closing a session destroys the session objects it made (PKCS#11 v3.0 §5.6), which the
/// pool's sweep relies on (`hsm.transient_objects_per_session`): a data key made on one
/// session is usable from another until its session closes, and gone after.
pub fn assert_closing_a_session_destroys_its_objects(
    pkcs11: &cryptoki::context::Pkcs11,
    slot: cryptoki::slot::Slot,
) {
    use cryptoki::error::{Error, RvError};
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};

    let maker = pkcs11.open_rw_session(slot).unwrap();
    let other = pkcs11.open_rw_session(slot).unwrap();
    let keys: Vec<_> = (0..4)
        .map(|_| {
            maker
                .generate_key(
                    &Mechanism::AesKeyGen,
                    &[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::AES),
                        Attribute::ValueLen(32.into()),
                        Attribute::Token(false),
                        Attribute::Private(false),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(true),
                    ],
                )
                .unwrap()
        })
        .collect();
    for key in &keys {
        other
            .get_attributes(*key, &[AttributeType::Class])
            .expect("another session of the application sees a session object");
    }
    maker.close().unwrap();
    for key in &keys {
        match other.get_attributes(*key, &[AttributeType::Class]) {
            Err(Error::Pkcs11(rv, _)) => assert_eq!(rv, RvError::ObjectHandleInvalid),
            other => panic!("a session object outlived its session: {other:?}"),
        }
    }
}
