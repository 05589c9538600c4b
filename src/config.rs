//! Configuration: a TOML file, then environment overrides, then the embedded defaults.
//!
//! Secrets (PINs, secret access keys) are read from environment variables or files and kept
//! in `SecretString`; they never come from command-line arguments.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::auth::Credential;
use crate::hsm::EmbeddedTokenKind;
use crate::policy::{PolicyDocument, PolicyKind};
use crate::store::PostgresSettings;
use crate::telemetry::audit::OnFailure;

mod error;
pub use error::{ConfigError, CredentialError};

use crate::error::FileError;

pub const DEV_ACCESS_KEY_ID: &str = "test";
pub const DEV_SECRET_ACCESS_KEY: &str = "test";
pub const DEFAULT_ACCOUNT: &str = "111122223333";
pub const DEFAULT_REGION: &str = "us-east-1";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_TOKEN_LABEL: &str = "p11kms";

/// The file format. Every member is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    /// Threads of the async runtime (HTTP, SigV4, JSON); see `Config::async_threads`.
    pub async_threads: Option<usize>,
    /// Core threads under `SCHED_BATCH` (see `Config::batch_scheduling`).
    pub batch_scheduling: Option<bool>,
    /// Plain HTTP on an address that is not loopback (TLS terminates in front of the gateway).
    pub allow_plain_http: Option<bool>,
    pub region: Option<String>,
    pub account: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// Keys with known identity, created at start-up if missing (see `kms::seed`).
    pub seed_file: Option<PathBuf>,
    #[serde(default)]
    pub hsm: HsmSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub credentials: Vec<CredentialEntry>,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub jobs: JobsSection,
    #[serde(default)]
    pub test: TestSection,
    #[serde(default)]
    pub audit: AuditSection,
    #[serde(default)]
    pub shutdown: ShutdownSection,
    #[serde(default)]
    pub tls: TlsSection,
    #[serde(default)]
    pub limits: LimitsSection,
}

/// What one client can hold: connections and how long they may take (see [`ConnectionLimits`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub max_connections: Option<usize>,
    /// 0: no per-address limit (behind a proxy every client has the proxy's address).
    pub max_connections_per_address: Option<usize>,
    pub tls_handshake_timeout_ms: Option<u64>,
    pub header_read_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub max_header_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The certificate chain, PEM, leaf first.
    pub cert_file: Option<PathBuf>,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// CA bundle, PEM: when set, clients must present a certificate chaining to it (mTLS).
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownSection {
    /// How long SIGTERM waits for requests in flight before exiting anyway.
    pub drain_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// `false` turns the audit trail off.
    pub enabled: Option<bool>,
    pub path: Option<PathBuf>,
    pub max_bytes: Option<u64>,
    /// `refuse` (fail closed) or `log` (fail open); see `Config::audit_on_failure`.
    pub on_failure: Option<String>,
    pub queue_capacity: Option<usize>,
    /// With `refuse`: answer a request only once its record is synced to disk.
    pub wait_for_sync: Option<bool>,
    pub sync_wait_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmSection {
    pub module: Option<PathBuf>,
    pub embedded_softhsm: Option<bool>,
    /// `softhsm2` (the default) or `kryoptic`.
    pub embedded_token: Option<String>,
    /// The Kryoptic library, when `embedded_token = "kryoptic"` and it is not found.
    pub kryoptic_module: Option<PathBuf>,
    pub token_label: Option<String>,
    /// Name of the environment variable holding the user PIN.
    pub pin_env: Option<String>,
    pub pin_file: Option<PathBuf>,
    pub session_pool_size: Option<usize>,
    pub session_wait_ms: Option<u64>,
    /// An HSM operation makes no further PKCS#11 call after this long (0: no limit).
    pub operation_timeout_ms: Option<u64>,
    /// Reinitialise the PKCS#11 library after this many operations (0: never).
    pub recycle_after_operations: Option<u64>,
    /// Use session copies of key materials' secret keys (see `HsmConfig::session_key_copies`).
    pub session_key_copies: Option<bool>,
    /// `token` (each key's material is a token object) or `domain` (wrapped under the
    /// domain key, kept in the store); see `KeyStorage`.
    pub key_storage: Option<String>,
    /// Unwrapped materials kept as session objects in domain mode.
    pub domain_cache_capacity: Option<usize>,
    /// Context keys of ciphertext schemes 2 and 3 cached per library initialisation.
    pub context_key_cache: Option<usize>,
    /// Transient objects a pooled session holds before it is closed (0: destroy each).
    pub transient_objects_per_session: Option<u32>,
    /// `auto` (the best the token runs) or a scheme number to write new ciphertexts with.
    pub ciphertext_scheme: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `sqlite` (the default) or `postgres`.
    pub backend: Option<String>,
    pub sqlite_path: Option<PathBuf>,
    /// A file holding the PostgreSQL connection string (URL or key/value, with the
    /// password); `P11KMS_DATABASE_URL` in the environment takes precedence.
    pub postgres_url_file: Option<PathBuf>,
    pub postgres_pool_size: Option<usize>,
    pub postgres_connect_timeout_ms: Option<u64>,
    pub postgres_checkout_timeout_ms: Option<u64>,
    pub postgres_statement_timeout_ms: Option<u64>,
    /// PEM CA bundle: TLS to PostgreSQL, verifying its certificate against this CA.
    pub postgres_ca_file: Option<PathBuf>,
}

/// Which metadata store the gateway uses.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// The embedded default: one SQLite file.
    Sqlite { path: PathBuf },
    /// A PostgreSQL database shared by replicas.
    Postgres(PostgresSettings),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub level: Option<String>,
    pub format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsSection {
    pub interval_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSection {
    pub day_seconds: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialEntry {
    pub access_key_id: String,
    pub secret_access_key: Option<String>,
    pub secret_access_key_env: Option<String>,
    pub secret_access_key_file: Option<PathBuf>,
    pub account: Option<String>,
    pub principal_arn: Option<String>,
    /// Identity (IAM) policies of the principal, as JSON text. As in AWS they count only
    /// where a key policy delegates to the principal's account.
    #[serde(default)]
    pub policies: Vec<String>,
    /// Identity policies read from files (one JSON document each).
    #[serde(default)]
    pub policy_files: Vec<PathBuf>,
}

impl std::fmt::Debug for CredentialEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialEntry")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Where key material lives (`hsm.key_storage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStorage {
    /// Each key's material is a sensitive, non-extractable token object (the default).
    Token,
    /// Each key's material leaves the token only wrapped under the domain key, is kept in
    /// the store, and is unwrapped on demand into a cached session object.
    Domain,
}

/// Default capacity of the domain-mode cache of unwrapped materials: SoftHSM2 holds about
/// 8.4 KB per session object (design §8), so 10,000 is about 84 MB at most.
pub const DEFAULT_DOMAIN_CACHE_CAPACITY: usize = 10_000;

/// Where the user PIN comes from.
#[derive(Debug, Clone)]
pub enum PinSource {
    Env(String),
    File(PathBuf),
    /// The embedded SoftHSM2 token's generated PIN file.
    Embedded,
}

/// The gateway's TLS settings: where the PEM files are. Their contents are read at start-up
/// (and the certificate and key again on SIGHUP) by `crate::tls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// When set, clients must present a certificate chaining to this CA bundle (mTLS).
    pub client_ca_file: Option<PathBuf>,
}

/// Limits on what a client can hold: how many connections, and for how long. A connection
/// over a count limit is closed as it is accepted; a timeout closes the connection (or, for a
/// request past its deadline, answers it first when an answer can still be sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections of the whole process.
    pub max_connections: usize,
    /// Open connections per client address (IPv4 address, or IPv6 /64); `None`: no limit.
    pub max_connections_per_address: Option<usize>,
    /// From accept to a finished TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// From the start of a request (a new connection, or the first byte of the next request
    /// on a kept-alive one) to its complete header section.
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// From a request's complete headers to its response: reading the body, the work, and
    /// handing the answer to the connection.
    pub request_timeout: Duration,
    /// The largest request line and header section accepted (431 beyond).
    pub max_header_bytes: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 4096,
            max_connections_per_address: Some(1024),
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            max_header_bytes: 8 * 1024,
        }
    }
}

/// The smallest `limits.max_header_bytes`: a SigV4-signed request's headers need about 1 KiB.
pub const MIN_HEADER_BYTES: usize = 4096;

/// The resolved configuration the gateway runs with.
#[derive(Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// Threads of the async runtime. With the embedded SoftHSM2 the core threads keep CPUs
    /// busy with the token's own work, so by default the runtime gets the CPUs they leave
    /// (at least one); elsewhere the HSM works on its own hardware and the runtime gets all.
    pub async_threads: usize,
    /// Run the core threads (the ones that call the HSM) under Linux's `SCHED_BATCH`, so that
    /// one waking from an HSM call does not preempt another inside the PKCS#11 library.
    pub batch_scheduling: bool,
    /// `None`: plain HTTP, on loopback only unless `allow_plain_http` is set.
    pub tls: Option<TlsConfig>,
    pub allow_plain_http: bool,
    pub region: String,
    pub account: String,
    pub data_dir: PathBuf,
    pub seed_file: Option<PathBuf>,
    pub module: Option<PathBuf>,
    /// Whether the gateway runs its own embedded token (under the data directory), of kind
    /// `embedded_token`. (The name predates the second embedded token.)
    pub embedded_softhsm: bool,
    pub embedded_token: EmbeddedTokenKind,
    /// The Kryoptic library (`P11KMS_KRYOPTIC_MODULE`); `None`: looked for.
    pub kryoptic_module: Option<PathBuf>,
    pub token_label: String,
    pub pin: PinSource,
    pub session_pool_size: usize,
    pub session_wait: Duration,
    /// `None`: no limit.
    pub operation_timeout: Option<Duration>,
    pub recycle_after_operations: u64,
    pub session_key_copies: bool,
    pub context_key_cache: usize,
    /// See `HsmConfig::transient_objects_per_session`.
    pub transient_objects_per_session: u32,
    /// `None`: the best scheme the token runs.
    pub ciphertext_scheme: Option<u8>,
    pub key_storage: KeyStorage,
    pub domain_cache_capacity: usize,
    pub store: StoreConfig,
    pub credentials: Vec<Credential>,
    /// Identity policies per principal ARN, parsed.
    pub identity_policies: HashMap<String, Vec<PolicyDocument>>,
    /// Whether the built-in `test`/`test` credential is in use.
    pub dev_credentials: bool,
    pub log_level: String,
    pub log_format: LogFormat,
    pub job_interval: Duration,
    pub day_seconds: f64,
    /// Where the audit trail goes; `None` when it is off.
    pub audit_path: Option<PathBuf>,
    pub audit_max_bytes: u64,
    /// What happens while audit records cannot be written. `Refuse` unless set: a trail that
    /// can silently miss requests is not an audit trail (README, Failure model).
    pub audit_on_failure: OnFailure,
    /// Records queued for the audit writer (and places held by running requests).
    pub audit_queue_capacity: usize,
    /// With `Refuse`: answer a request only once its record is synced, waiting at most this
    /// long (`audit.wait_for_sync`, `audit.sync_wait_ms`); `None` answers once it is queued.
    pub audit_sync_wait: Option<Duration>,
    /// The file this configuration was read from (SIGHUP reads it again).
    pub config_file: Option<PathBuf>,
    /// Deadline for requests in flight after SIGTERM.
    pub drain: Duration,
    pub limits: ConnectionLimits,
}

/// Reads an environment variable, treating empty as unset.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn parse_env<T: std::str::FromStr>(name: &str) -> Result<Option<T>, ConfigError> {
    match env(name) {
        Some(v) => v.parse().map(Some).map_err(|_| ConfigError::EnvNotParsed {
            variable: name.into(),
            value: v,
        }),
        None => Ok(None),
    }
}

fn parse_bool(name: &str) -> Result<Option<bool>, ConfigError> {
    match env(name).as_deref() {
        None => Ok(None),
        Some("1" | "true" | "yes" | "on") => Ok(Some(true)),
        Some("0" | "false" | "no" | "off") => Ok(Some(false)),
        Some(other) => Err(ConfigError::EnvNotBool {
            variable: name.into(),
            value: other.into(),
        }),
    }
}

impl Config {
    /// Loads the file (if any), applies `P11KMS_*` overrides and fills in defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let file = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(FileError::on("read", p))?;
                toml::from_str::<FileConfig>(&text).map_err(|source| ConfigError::Parse {
                    path: p.to_path_buf(),
                    source,
                })?
            }
            None => FileConfig::default(),
        };
        let mut config = Config::resolve(file)?;
        config.config_file = path.map(Path::to_path_buf);
        Ok(config)
    }

    pub fn resolve(file: FileConfig) -> Result<Config, ConfigError> {
        let listen_text = env("P11KMS_LISTEN")
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen: SocketAddr = listen_text
            .parse()
            .map_err(|_| ConfigError::Listen(listen_text.clone()))?;
        let tls = resolve_tls(
            env("P11KMS_TLS_CERT_FILE")
                .map(PathBuf::from)
                .or(file.tls.cert_file),
            env("P11KMS_TLS_KEY_FILE")
                .map(PathBuf::from)
                .or(file.tls.key_file),
            env("P11KMS_TLS_CLIENT_CA_FILE")
                .map(PathBuf::from)
                .or(file.tls.client_ca_file),
        )?;
        let allow_plain_http = parse_bool("P11KMS_ALLOW_PLAIN_HTTP")?
            .or(file.allow_plain_http)
            .unwrap_or(false);
        check_plain_http(listen, tls.is_some(), allow_plain_http)?;
        let region = env("P11KMS_REGION")
            .or(file.region)
            .unwrap_or_else(|| DEFAULT_REGION.into());
        let account = env("P11KMS_ACCOUNT")
            .or(file.account)
            .unwrap_or_else(|| DEFAULT_ACCOUNT.into());
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ConfigError::Account(account));
        }
        let data_dir = env("P11KMS_DATA_DIR")
            .map(PathBuf::from)
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("p11kms-data"));
        let seed_file = env("P11KMS_SEED_FILE")
            .map(PathBuf::from)
            .or(file.seed_file);
        let module = env("P11KMS_PKCS11_MODULE")
            .map(PathBuf::from)
            .or(file.hsm.module);
        let embedded_softhsm = parse_bool("P11KMS_EMBEDDED_SOFTHSM")?
            .or(file.hsm.embedded_softhsm)
            .unwrap_or(module.is_none());
        let embedded_token = match env("P11KMS_EMBEDDED_TOKEN").or(file.hsm.embedded_token) {
            Some(name) => EmbeddedTokenKind::parse(&name)?,
            None => EmbeddedTokenKind::default(),
        };
        let kryoptic_module = env("P11KMS_KRYOPTIC_MODULE")
            .map(PathBuf::from)
            .or(file.hsm.kryoptic_module);
        let token_label = env("P11KMS_TOKEN_LABEL")
            .or(file.hsm.token_label)
            .unwrap_or_else(|| DEFAULT_TOKEN_LABEL.into());
        let pin = if env("P11KMS_PIN").is_some() {
            PinSource::Env("P11KMS_PIN".into())
        } else if let Some(path) = env("P11KMS_PIN_FILE").map(PathBuf::from) {
            PinSource::File(path)
        } else if let Some(var) = file.hsm.pin_env {
            PinSource::Env(var)
        } else if let Some(path) = file.hsm.pin_file {
            PinSource::File(path)
        } else if embedded_softhsm {
            PinSource::Embedded
        } else {
            return Err(ConfigError::Rule(
                "hsm: no PIN configured; set P11KMS_PIN, P11KMS_PIN_FILE, hsm.pin_env or hsm.pin_file",
            ));
        };
        // SoftHSM2 runs one session's calls no slower alone than two sessions' together,
        // and costs less CPU per call that way (README, Benchmarks).
        let session_pool_size = parse_env("P11KMS_SESSION_POOL_SIZE")?
            .or(file.hsm.session_pool_size)
            .unwrap_or(if embedded_softhsm { 1 } else { 2 })
            .max(1);
        let session_wait = Duration::from_millis(
            parse_env("P11KMS_SESSION_WAIT_MS")?
                .or(file.hsm.session_wait_ms)
                .unwrap_or(2000),
        );
        // A network HSM that stops answering must not hold a request for a call per call
        // of its operation; 0 turns the limit off.
        let operation_timeout = match parse_env("P11KMS_HSM_OPERATION_TIMEOUT_MS")?
            .or(file.hsm.operation_timeout_ms)
            .unwrap_or(5000)
        {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        };
        // SoftHSM2 frees session objects only at C_Finalize (see `HsmConfig`); other modules,
        // Kryoptic among them, free them on C_DestroyObject (README, Embedded tokens).
        let recycle_after_operations = parse_env("P11KMS_HSM_RECYCLE_AFTER")?
            .or(file.hsm.recycle_after_operations)
            .unwrap_or(
                if embedded_softhsm && embedded_token == EmbeddedTokenKind::SoftHsm2 {
                    20_000
                } else {
                    0
                },
            );
        // Only SoftHSM2 re-reads a token object's file on every use; other HSMs keep token
        // objects in memory, and their copies would take up object slots for nothing.
        let session_key_copies = parse_bool("P11KMS_HSM_SESSION_KEY_COPIES")?
            .or(file.hsm.session_key_copies)
            .unwrap_or(embedded_softhsm);
        let context_key_cache = parse_env("P11KMS_CONTEXT_KEY_CACHE")?
            .or(file.hsm.context_key_cache)
            .unwrap_or(crate::hsm::DEFAULT_CONTEXT_KEY_CACHE);
        let transient_objects_per_session = parse_env("P11KMS_TRANSIENT_OBJECTS_PER_SESSION")?
            .or(file.hsm.transient_objects_per_session)
            .unwrap_or(crate::hsm::DEFAULT_TRANSIENT_OBJECTS_PER_SESSION);
        let ciphertext_scheme = match env("P11KMS_CIPHERTEXT_SCHEME")
            .or(file.hsm.ciphertext_scheme.clone())
            .as_deref()
        {
            None | Some("auto") => None,
            Some(n @ ("1" | "2" | "3")) => n.parse().ok(),
            Some(other) => {
                return Err(ConfigError::NotOneOf {
                    setting: "hsm.ciphertext_scheme",
                    expected: "auto, 1, 2 or 3",
                    got: other.into(),
                })
            }
        };
        let key_storage = match env("P11KMS_KEY_STORAGE")
            .or(file.hsm.key_storage.clone())
            .as_deref()
        {
            None | Some("token") => KeyStorage::Token,
            Some("domain") => KeyStorage::Domain,
            Some(other) => {
                return Err(ConfigError::NotOneOf {
                    setting: "hsm.key_storage",
                    expected: "\"token\" or \"domain\"",
                    got: other.into(),
                })
            }
        };
        let domain_cache_capacity = parse_env("P11KMS_DOMAIN_CACHE_CAPACITY")?
            .or(file.hsm.domain_cache_capacity)
            .unwrap_or(DEFAULT_DOMAIN_CACHE_CAPACITY);
        // An operation can hold two materials' objects at once (ReEncrypt between keys).
        if domain_cache_capacity < 2 {
            return Err(ConfigError::TooSmall {
                setting: "hsm.domain_cache_capacity",
                min: 2,
            });
        }
        let store = resolve_store(file.store, &data_dir)?;
        let mut identity_policies: HashMap<String, Vec<PolicyDocument>> = HashMap::new();
        let (credentials, dev_credentials) = if file.credentials.is_empty() {
            (vec![dev_credential(&account)], true)
        } else {
            let mut creds = Vec::with_capacity(file.credentials.len());
            for entry in file.credentials {
                let policies = identity_policies_of(&entry)?;
                let credential = resolve_credential(entry, &account)?;
                identity_policies
                    .entry(credential.principal_arn.clone())
                    .or_default()
                    .extend(policies);
                creds.push(credential);
            }
            (creds, false)
        };
        let log_level = env("P11KMS_LOG")
            .or(file.log.level)
            .unwrap_or_else(|| "info".into());
        let log_format = match env("P11KMS_LOG_FORMAT").or(file.log.format).as_deref() {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::NotOneOf {
                    setting: "log.format",
                    expected: "pretty or json",
                    got: other.into(),
                })
            }
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let async_threads = parse_env("P11KMS_ASYNC_THREADS")?
            .or(file.async_threads)
            .unwrap_or(if embedded_softhsm {
                cpus.saturating_sub(session_pool_size)
            } else {
                cpus
            })
            .max(1);
        let batch_scheduling = parse_bool("P11KMS_BATCH_SCHEDULING")?
            .or(file.batch_scheduling)
            .unwrap_or(true);
        let job_interval = Duration::from_millis(
            parse_env("P11KMS_JOB_INTERVAL_MS")?
                .or(file.jobs.interval_ms)
                .unwrap_or(60_000)
                .max(100),
        );
        let day_seconds: f64 = parse_env("P11KMS_DAY_SECONDS")?
            .or(file.test.day_seconds)
            .unwrap_or(86_400.0);
        if day_seconds.is_nan() || day_seconds <= 0.0 {
            return Err(ConfigError::Rule("test.day_seconds must be positive"));
        }
        let audit_enabled = parse_bool("P11KMS_AUDIT")?
            .or(file.audit.enabled)
            .unwrap_or(true);
        let audit_path = audit_enabled.then(|| {
            env("P11KMS_AUDIT_LOG")
                .map(PathBuf::from)
                .or(file.audit.path)
                .unwrap_or_else(|| data_dir.join("audit.log"))
        });
        let audit_max_bytes = parse_env("P11KMS_AUDIT_MAX_BYTES")?
            .or(file.audit.max_bytes)
            .unwrap_or(64 * 1024 * 1024);
        let audit_on_failure = match env("P11KMS_AUDIT_ON_FAILURE").or(file.audit.on_failure) {
            Some(text) => text.parse()?,
            None => OnFailure::Refuse,
        };
        let audit_queue_capacity = parse_env("P11KMS_AUDIT_QUEUE_CAPACITY")?
            .or(file.audit.queue_capacity)
            .unwrap_or(8192);
        if audit_queue_capacity == 0 {
            return Err(ConfigError::TooSmall {
                setting: "audit.queue_capacity",
                min: 1,
            });
        }
        let audit_wait_for_sync = parse_bool("P11KMS_AUDIT_WAIT_FOR_SYNC")?
            .or(file.audit.wait_for_sync)
            .unwrap_or(false);
        if audit_wait_for_sync && audit_on_failure != OnFailure::Refuse {
            return Err(ConfigError::Rule(
                "audit.wait_for_sync needs audit.on_failure = \"refuse\"",
            ));
        }
        let audit_sync_wait = Duration::from_millis(
            parse_env("P11KMS_AUDIT_SYNC_WAIT_MS")?
                .or(file.audit.sync_wait_ms)
                .unwrap_or(2000),
        );
        let audit_sync_wait = audit_wait_for_sync.then_some(audit_sync_wait);
        let drain = Duration::from_millis(
            parse_env("P11KMS_DRAIN_MS")?
                .or(file.shutdown.drain_ms)
                .unwrap_or(20_000),
        );
        let limits = resolve_limits(&file.limits)?;
        Ok(Config {
            listen,
            tls,
            allow_plain_http,
            region,
            account,
            async_threads,
            batch_scheduling,
            data_dir,
            seed_file,
            module,
            embedded_softhsm,
            embedded_token,
            kryoptic_module,
            token_label,
            pin,
            session_pool_size,
            recycle_after_operations,
            session_key_copies,
            context_key_cache,
            transient_objects_per_session,
            ciphertext_scheme,
            key_storage,
            domain_cache_capacity,
            session_wait,
            store,
            operation_timeout,
            credentials,
            identity_policies,
            dev_credentials,
            log_level,
            log_format,
            job_interval,
            day_seconds,
            audit_path,
            audit_max_bytes,
            audit_on_failure,
            audit_queue_capacity,
            audit_sync_wait,
            config_file: None,
            drain,
            limits,
        })
    }
}

/// The store section and its `P11KMS_*` overrides. The PostgreSQL connection string comes
/// only from the environment or a file, never from the command line or the TOML file itself,
/// because it carries the password.
fn resolve_store(section: StoreSection, data_dir: &Path) -> Result<StoreConfig, ConfigError> {
    let backend = env("P11KMS_STORE_BACKEND")
        .or(section.backend)
        .unwrap_or_else(|| "sqlite".into());
    match backend.as_str() {
        "sqlite" => Ok(StoreConfig::Sqlite {
            path: env("P11KMS_SQLITE_PATH")
                .map(PathBuf::from)
                .or(section.sqlite_path)
                .unwrap_or_else(|| data_dir.join("p11kms.sqlite")),
        }),
        "postgres" => {
            let url = if let Some(url) = env("P11KMS_DATABASE_URL") {
                url
            } else if let Some(path) = env("P11KMS_DATABASE_URL_FILE")
                .map(PathBuf::from)
                .or(section.postgres_url_file)
            {
                read_secret_file(&path)?
            } else {
                return Err(ConfigError::Rule(
                    "store.backend = \"postgres\" needs a connection string: set \
                     P11KMS_DATABASE_URL, P11KMS_DATABASE_URL_FILE or store.postgres_url_file",
                ));
            };
            let millis =
                |var: &str, value: Option<u64>, default: u64| -> Result<Duration, ConfigError> {
                    Ok(Duration::from_millis(
                        parse_env(var)?.or(value).unwrap_or(default).max(1),
                    ))
                };
            let pool_size: usize = parse_env("P11KMS_POSTGRES_POOL_SIZE")?
                .or(section.postgres_pool_size)
                .unwrap_or(16);
            if pool_size == 0 {
                return Err(ConfigError::TooSmall {
                    setting: "store.postgres_pool_size",
                    min: 1,
                });
            }
            Ok(StoreConfig::Postgres(PostgresSettings {
                url: SecretString::from(url),
                pool_size,
                connect_timeout: millis(
                    "P11KMS_POSTGRES_CONNECT_TIMEOUT_MS",
                    section.postgres_connect_timeout_ms,
                    5_000,
                )?,
                checkout_timeout: millis(
                    "P11KMS_POSTGRES_CHECKOUT_TIMEOUT_MS",
                    section.postgres_checkout_timeout_ms,
                    2_000,
                )?,
                statement_timeout: millis(
                    "P11KMS_POSTGRES_STATEMENT_TIMEOUT_MS",
                    section.postgres_statement_timeout_ms,
                    5_000,
                )?,
                ca_file: env("P11KMS_POSTGRES_CA_FILE")
                    .map(PathBuf::from)
                    .or(section.postgres_ca_file),
            }))
        }
        other => Err(ConfigError::NotOneOf {
            setting: "store.backend",
            expected: "sqlite or postgres",
            got: other.into(),
        }),
    }
}

/// `[limits]` and its `P11KMS_*` overrides. Timeouts are whole milliseconds, at least 1.
fn resolve_limits(file: &LimitsSection) -> Result<ConnectionLimits, ConfigError> {
    let default = ConnectionLimits::default();
    let millis = |name: &str, setting: &'static str, value: Option<u64>, default: Duration| {
        match parse_env::<u64>(name)?.or(value) {
            None => Ok(default),
            Some(0) => Err(ConfigError::ZeroTimeout {
                setting,
                variable: name.into(),
            }),
            Some(ms) => Ok(Duration::from_millis(ms)),
        }
    };
    let max_connections = parse_env("P11KMS_MAX_CONNECTIONS")?
        .or(file.max_connections)
        .unwrap_or(default.max_connections);
    if max_connections == 0 {
        return Err(ConfigError::TooSmall {
            setting: "limits.max_connections (P11KMS_MAX_CONNECTIONS)",
            min: 1,
        });
    }
    let max_connections_per_address = match parse_env("P11KMS_MAX_CONNECTIONS_PER_ADDRESS")?
        .or(file.max_connections_per_address)
    {
        None => default.max_connections_per_address,
        Some(0) => None,
        Some(n) => Some(n),
    };
    let max_header_bytes = parse_env("P11KMS_MAX_HEADER_BYTES")?
        .or(file.max_header_bytes)
        .unwrap_or(default.max_header_bytes);
    if max_header_bytes < MIN_HEADER_BYTES {
        return Err(ConfigError::TooSmall {
            setting: "limits.max_header_bytes (P11KMS_MAX_HEADER_BYTES)",
            min: MIN_HEADER_BYTES as u64,
        });
    }
    Ok(ConnectionLimits {
        max_connections,
        max_connections_per_address,
        tls_handshake_timeout: millis(
            "P11KMS_TLS_HANDSHAKE_TIMEOUT_MS",
            "tls_handshake_timeout_ms",
            file.tls_handshake_timeout_ms,
            default.tls_handshake_timeout,
        )?,
        header_read_timeout: millis(
            "P11KMS_HEADER_READ_TIMEOUT_MS",
            "header_read_timeout_ms",
            file.header_read_timeout_ms,
            default.header_read_timeout,
        )?,
        idle_timeout: millis(
            "P11KMS_IDLE_TIMEOUT_MS",
            "idle_timeout_ms",
            file.idle_timeout_ms,
            default.idle_timeout,
        )?,
        request_timeout: millis(
            "P11KMS_REQUEST_TIMEOUT_MS",
            "request_timeout_ms",
            file.request_timeout_ms,
            default.request_timeout,
        )?,
        max_header_bytes,
    })
}

/// The TLS files: a certificate needs its key and the other way round, and a client CA
/// (mTLS) needs TLS.
fn resolve_tls(
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_ca_file: Option<PathBuf>,
) -> Result<Option<TlsConfig>, ConfigError> {
    match (cert_file, key_file) {
        (Some(cert_file), Some(key_file)) => Ok(Some(TlsConfig {
            cert_file,
            key_file,
            client_ca_file,
        })),
        (Some(_), None) => Err(ConfigError::Rule(
            "tls.cert_file is set but tls.key_file is not (P11KMS_TLS_KEY_FILE): TLS needs both",
        )),
        (None, Some(_)) => Err(ConfigError::Rule(
            "tls.key_file is set but tls.cert_file is not (P11KMS_TLS_CERT_FILE): TLS needs both",
        )),
        (None, None) if client_ca_file.is_some() => Err(ConfigError::Rule(
            "tls.client_ca_file (P11KMS_TLS_CLIENT_CA_FILE) needs TLS: set tls.cert_file and \
             tls.key_file too",
        )),
        (None, None) => Ok(None),
    }
}

/// Plain HTTP is for loopback (127.0.0.0/8, ::1) unless the configuration says otherwise.
fn check_plain_http(
    listen: SocketAddr,
    tls: bool,
    allow_plain_http: bool,
) -> Result<(), ConfigError> {
    if tls || allow_plain_http || listen.ip().to_canonical().is_loopback() {
        return Ok(());
    }
    Err(ConfigError::PlainHttpExposed(listen))
}

fn dev_credential(account: &str) -> Credential {
    Credential {
        access_key_id: DEV_ACCESS_KEY_ID.into(),
        secret_access_key: SecretString::from(DEV_SECRET_ACCESS_KEY.to_string()),
        account: account.to_string(),
        principal_arn: format!("arn:aws:iam::{account}:root"),
    }
}

fn resolve_credential(
    entry: CredentialEntry,
    default_account: &str,
) -> Result<Credential, ConfigError> {
    let refused = |source: CredentialError| ConfigError::Credential {
        access_key_id: entry.access_key_id.clone(),
        source,
    };
    let secret = if let Some(var) = &entry.secret_access_key_env {
        env(var).ok_or_else(|| refused(CredentialError::EnvUnset(var.clone())))?
    } else if let Some(path) = &entry.secret_access_key_file {
        read_secret_file(path).map_err(|e| refused(e.into()))?
    } else if let Some(secret) = entry.secret_access_key.clone() {
        secret
    } else {
        return Err(refused(CredentialError::NoSecret));
    };
    let account = entry.account.unwrap_or_else(|| default_account.to_string());
    let principal_arn = entry
        .principal_arn
        .unwrap_or_else(|| format!("arn:aws:iam::{account}:root"));
    Ok(Credential {
        access_key_id: entry.access_key_id,
        secret_access_key: SecretString::from(secret),
        account,
        principal_arn,
    })
}

/// The identity policies a credential entry gives its principal, parsed and checked.
fn identity_policies_of(entry: &CredentialEntry) -> Result<Vec<PolicyDocument>, ConfigError> {
    let refused = |source: CredentialError| ConfigError::Credential {
        access_key_id: entry.access_key_id.clone(),
        source,
    };
    let mut texts: Vec<(String, String)> = entry
        .policies
        .iter()
        .enumerate()
        .map(|(i, text)| (format!("policies[{i}]"), text.clone()))
        .collect();
    for path in &entry.policy_files {
        let text = std::fs::read_to_string(path)
            .map_err(|e| refused(FileError::on("read", path)(e).into()))?;
        texts.push((path.display().to_string(), text));
    }
    texts
        .iter()
        .map(|(origin, text)| {
            PolicyDocument::parse(text, PolicyKind::Identity).map_err(|source| {
                refused(CredentialError::Policy {
                    origin: origin.clone(),
                    source,
                })
            })
        })
        .collect()
}

/// Reads a secret from a file, trimming the trailing newline editors add.
pub fn read_secret_file(path: &Path) -> Result<String, FileError> {
    let text = std::fs::read_to_string(path).map_err(FileError::on("read", path))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

#[cfg(test)]
mod tests;
