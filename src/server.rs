//! Start-up and the server loop: configuration → token → store → service → HTTP.

use std::path::PathBuf;
use std::sync::Arc;

use secrecy::SecretString;

use crate::auth::SigV4Verifier;
use crate::config::StoreConfig;
use crate::config::{read_secret_file, Config, LogFormat, PinSource};
use crate::error::FileError;
use crate::hsm::{
    find_kryoptic_module, find_softhsm_module, CallObserver, EmbeddedToken, EmbeddedTokenKind, Hsm,
    HsmConfig, KeyProvider,
};
use crate::kms::leases::JobLeases;
use crate::kms::{reconcile, run_leased_jobs, IdentityPolicies, KmsService, ServiceConfig};
use crate::store::{MetadataStore, PostgresStore, SqliteStore};
use crate::telemetry::audit::AuditSettings;
use crate::telemetry::{AuditLog, Metrics};
use crate::wire::{router, AppState};

mod error;
pub use error::{LogReloadError, StartError};

/// How long the gateway waits at exit for accepted audit records to reach the disk.
const AUDIT_FLUSH_AT_EXIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Changes the log filter of the installed subscriber (SIGHUP).
type LogReload = Box<dyn Fn(&str) -> Result<(), LogReloadError> + Send + Sync>;

/// The reload handle of the process's one tracing subscriber. The subscriber is
/// process-global by nature (`try_init`), so its handle is too; it is set once, here.
static LOG_RELOAD: std::sync::OnceLock<LogReload> = std::sync::OnceLock::new();

/// Sets up logging to stderr. Plaintext, keys and secrets are never passed to `tracing`.
/// The level filter sits behind a `reload` layer so SIGHUP can change it.
pub fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    fn reloader<L, S>(handle: tracing_subscriber::reload::Handle<L, S>) -> LogReload
    where
        L: From<tracing_subscriber::EnvFilter> + Send + Sync + 'static,
        S: 'static,
    {
        Box::new(move |level: &str| {
            let filter = tracing_subscriber::EnvFilter::try_new(level).map_err(|source| {
                LogReloadError::Filter {
                    level: level.into(),
                    source,
                }
            })?;
            handle
                .reload(L::from(filter))
                .map_err(LogReloadError::Reload)
        })
    }
    match config.log_format {
        LogFormat::Json => {
            let builder = tracing_subscriber::fmt()
                .json()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            if builder.try_init().is_ok() {
                let _ = LOG_RELOAD.set(reloader(handle));
            }
        }
        LogFormat::Pretty => {
            // Colours only on a terminal: log files and journald get plain text.
            let builder = tracing_subscriber::fmt()
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            if builder.try_init().is_ok() {
                let _ = LOG_RELOAD.set(reloader(handle));
            }
        }
    }
}

/// Sets the log filter (e.g. `debug`, `p11kms=trace`) of the running process.
pub fn reload_log_level(level: &str) -> Result<(), LogReloadError> {
    match LOG_RELOAD.get() {
        Some(reload) => reload(level),
        None => Err(LogReloadError::NotInitialised),
    }
}

/// Everything built before the runtime starts (PKCS#11 set-up is synchronous).
pub struct Prepared {
    config: Config,
    service: Arc<KmsService>,
    metrics: Arc<Metrics>,
    tls: Option<crate::tls::Tls>,
    /// The adopted token keys could not be read at start (PostgreSQL down): the job loop
    /// reads them once the store answers.
    adoptions_pending: bool,
}

impl Prepared {
    /// Threads the async runtime should have (`Config::async_threads`).
    pub fn async_threads(&self) -> usize {
        self.config.async_threads
    }
}

/// Prepares the data directory, the token, the store and the service core.
///
/// Runs before any thread is started, because the embedded default exports
/// `SOFTHSM2_CONF` for the module to read.
pub fn prepare(config: Config) -> Result<Prepared, StartError> {
    // The TLS files first: a wrong path or key fails before the token is touched.
    let tls = config.tls.as_ref().map(crate::tls::Tls::load).transpose()?;
    let HsmTarget {
        module,
        user_pin,
        embedded,
    } = resolve_hsm(&config)?;
    let metrics = Arc::new(Metrics::new().map_err(StartError::Metrics)?);
    let observer: Arc<dyn CallObserver> = metrics.clone();
    let hsm = Hsm::open(
        HsmConfig {
            module: module.clone(),
            token_label: config.token_label.clone(),
            user_pin,
            pool_size: config.session_pool_size,
            session_wait: config.session_wait,
            operation_timeout: config.operation_timeout,
            recycle_after_operations: config.recycle_after_operations,
            session_key_copies: config.session_key_copies,
            context_key_cache: config.context_key_cache,
            transient_objects_per_session: config.transient_objects_per_session,
            ciphertext_scheme: config.ciphertext_scheme,
        },
        Some(observer),
    )?;
    // Logged in now, and nothing else will log in before the next recycle: the token files
    // are whole, and their copy lets the next start repair one torn by a crash.
    if let Some(embedded) = &embedded {
        if let Err(e) = embedded.keep_token_files() {
            let error = crate::error::display_chain(&e);
            tracing::warn!(%error, "cannot keep a copy of the token files");
        }
    }
    let store = open_store(&config.store)?;
    // The provider is chosen once: materials as token objects, or wrapped in the store.
    let provider: Arc<dyn KeyProvider> = match config.key_storage {
        crate::config::KeyStorage::Domain => Arc::new(crate::kms::domain::start(
            store.clone(),
            hsm,
            config.embedded_softhsm,
            config.domain_cache_capacity,
        )?),
        crate::config::KeyStorage::Token => Arc::new(hsm),
    };
    let service = Arc::new(
        KmsService::new(
            ServiceConfig {
                region: config.region.clone(),
                day_seconds: config.day_seconds,
            },
            store,
            provider,
        )
        .with_identity_policies(Arc::new(IdentityPolicies::new(
            config.identity_policies.clone(),
        ))),
    );
    // Adopted token keys first: reconciliation and the seed must know which objects are
    // not p11kms's own.
    let adoptions_pending = match crate::kms::seed::load_adoptions(&service) {
        Ok(adopted) => {
            if adopted > 0 {
                tracing::info!(adopted, "adopted token keys registered");
            }
            false
        }
        // A replica starts while PostgreSQL is down: it serves typed errors meanwhile.
        Err(e @ crate::error::KmsError::StoreUnavailable(_)) => {
            tracing::warn!(error = %e, "the store is unavailable: adopted token keys will be read once it answers");
            true
        }
        Err(e) => return Err(StartError::Adoptions(e)),
    };
    if let Some(path) = &config.seed_file {
        let seed = crate::kms::seed::read_seed_file(path)?;
        let outcome = crate::kms::seed::apply_seed(&service, &seed, &config.account)?;
        tracing::info!(
            created = outcome.created.len(),
            adopted = outcome.adopted.len(),
            existing = outcome.existing.len(),
            aliases_created = outcome.aliases_created.len(),
            seed_file = %path.display(),
            "seed file applied"
        );
    }
    // Only the embedded token with the embedded store is ours alone. On a shared HSM, or
    // with replicas sharing PostgreSQL (and so perhaps the token), an object without a row
    // may be material another replica is creating right now (material is made before its
    // row is written): it is never destroyed here.
    let sole_owner = config.embedded_softhsm && matches!(config.store, StoreConfig::Sqlite { .. });
    if sole_owner && !adoptions_pending {
        match reconcile(&service) {
            Ok(0) => {}
            Ok(n) => tracing::warn!(destroyed = n, "removed orphan key objects from the token"),
            Err(e) => tracing::warn!(error = %e, "reconciliation with the token failed"),
        }
    }
    tracing::info!(module = %module.display(), token = %config.token_label, "HSM ready");
    Ok(Prepared {
        config,
        service,
        metrics,
        tls,
        adoptions_pending,
    })
}

/// Opens the configured metadata store and brings its schema up to date.
pub(crate) fn open_store(config: &StoreConfig) -> Result<Arc<dyn MetadataStore>, StartError> {
    match config {
        StoreConfig::Sqlite { path } => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(FileError::on("create", parent))?;
            }
            let store = SqliteStore::open(path).map_err(|source| StartError::Sqlite {
                path: path.clone(),
                source,
            })?;
            Ok(Arc::new(store))
        }
        StoreConfig::Postgres(settings) => {
            let (store, unavailable) =
                PostgresStore::open(settings).map_err(StartError::Postgres)?;
            match unavailable {
                None => tracing::info!(
                    pool_size = settings.pool_size,
                    schema_version = PostgresStore::latest_schema_version(),
                    "PostgreSQL store ready"
                ),
                // Not fatal: /readyz says 503 and requests get DependencyTimeoutException
                // until PostgreSQL answers; the schema is migrated then.
                Some(e) => tracing::warn!(
                    error = %e.chain(),
                    "PostgreSQL is unavailable; serving typed errors until it answers"
                ),
            }
            Ok(Arc::new(store))
        }
    }
}

/// The module, token and PIN a configuration names, after preparing the embedded token
/// when the configuration asks for it (shared by `serve`, `doctor` and the ceremony).
pub(crate) struct HsmTarget {
    pub(crate) module: PathBuf,
    pub(crate) user_pin: SecretString,
    pub(crate) embedded: Option<EmbeddedToken>,
}

pub(crate) fn resolve_hsm(config: &Config) -> Result<HsmTarget, StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(FileError::on("create", &config.data_dir))?;
    // `hsm.module` wins even with an embedded token: it may be a shim (pkcs11-spy) in front
    // of the token's library.
    let module = match (
        &config.module,
        config.embedded_softhsm,
        config.embedded_token,
    ) {
        (Some(m), _, _) => m.clone(),
        (None, true, EmbeddedTokenKind::Kryoptic) => match &config.kryoptic_module {
            Some(m) => m.clone(),
            None => find_kryoptic_module().ok_or(StartError::NoKryoptic)?,
        },
        (None, _, _) => find_softhsm_module().ok_or(StartError::NoSoftHsm)?,
    };
    let embedded = if config.embedded_softhsm {
        let embedded = EmbeddedToken::prepare(config.embedded_token, &config.data_dir)?;
        if embedded.ensure_token(&module, &config.token_label)? {
            tracing::info!(
                label = %config.token_label,
                token = config.embedded_token.name(),
                "initialised a new embedded token"
            );
        }
        Some(embedded)
    } else {
        None
    };
    let user_pin = match &config.pin {
        PinSource::Env(var) => SecretString::from(
            std::env::var(var).map_err(|_| StartError::PinVariableUnset(var.clone()))?,
        ),
        PinSource::File(path) => SecretString::from(read_secret_file(path)?),
        PinSource::Embedded => match &embedded {
            Some(e) => e.user_pin()?,
            None => return Err(StartError::NoPin),
        },
    };
    Ok(HsmTarget {
        module,
        user_pin,
        embedded,
    })
}

/// What `p11kms domain` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainAction {
    Create,
    /// The one-step rotation (a domain whose only member is this token).
    Rotate,
    /// Stage one of a rotation: a new key in this token, recorded `pending`.
    PrepareRotation,
    /// Stage two: switch to the pending key once every member holds it, rewrap, retire.
    ActivateRotation,
}

/// `p11kms domain create|rotate [--prepare|--activate]`: opens the configured token and store (as `serve` does)
/// and creates or rotates the domain key. Returns what to print.
///
/// Runs before any thread is started, like `prepare` (it may export `SOFTHSM2_CONF`).
pub fn domain_admin(config: &Config, action: DomainAction) -> Result<String, StartError> {
    let HsmTarget {
        module, user_pin, ..
    } = resolve_hsm(config)?;
    let hsm = Hsm::open(
        HsmConfig {
            module,
            token_label: config.token_label.clone(),
            user_pin,
            pool_size: 1,
            session_wait: config.session_wait,
            operation_timeout: None,
            recycle_after_operations: 0,
            session_key_copies: false,
            context_key_cache: 0,
            transient_objects_per_session: 0,
            ciphertext_scheme: None,
        },
        None,
    )?;
    let store = open_store(&config.store)?;
    let outcome = match action {
        DomainAction::Create => {
            let created = crate::kms::domain::create_domain_key(store.as_ref(), &hsm);
            hsm.shutdown();
            created.map(|id| format!("{id}\n"))
        }
        DomainAction::PrepareRotation => {
            let prepared = crate::kms::domain::prepare_rotation(store.as_ref(), &hsm);
            hsm.shutdown();
            prepared.map(|prepared| {
                let mut out = format!("pending {}\nactive {}\n", prepared.pending, prepared.active);
                for member in &prepared.to_enrol {
                    out.push_str(&format!(
                        "enrol {} into {}\n",
                        prepared.pending,
                        crate::kms::domain::describe_member(member)
                    ));
                }
                out
            })
        }
        DomainAction::Rotate | DomainAction::ActivateRotation => {
            // Rewrapping needs the domain-wrapped provider's handle cache.
            let materials = crate::kms::domain::StoreMaterials(store.clone());
            let hsm = hsm.into_domain_wrapped(Arc::new(materials), 2)?;
            let report = match action {
                DomainAction::Rotate => crate::kms::domain::rotate_domain_key(store.as_ref(), &hsm),
                _ => crate::kms::domain::activate_rotation(store.as_ref(), &hsm),
            };
            hsm.shutdown();
            report.map(|report| {
                let retired: Vec<String> = report.retired.iter().map(|k| k.to_hex()).collect();
                format!(
                    "active {}\nretired {}\nrewrapped {}\n",
                    report.new_key,
                    retired.join(","),
                    report.rewrapped
                )
            })
        }
    };
    Ok(outcome?)
}

/// `p11kms doctor`: examines the configured module and token with trial operations on
/// session keys and renders the report. Returns the text and whether the gateway can run.
///
/// Runs before any thread is started, like `prepare` (it may export `SOFTHSM2_CONF`).
pub fn doctor(config: &Config) -> Result<(String, bool), StartError> {
    let target = resolve_hsm(config)?;
    let report = crate::hsm::doctor::examine(&crate::hsm::doctor::DoctorTarget {
        module: target.module,
        token_label: config.token_label.clone(),
        user_pin: target.user_pin,
    })?;
    Ok((
        crate::hsm::doctor::render(&report),
        report.gateway_can_run(),
    ))
}

/// Serves until SIGTERM or Ctrl-C, finishing requests in flight.
pub async fn serve(prepared: Prepared) -> Result<(), StartError> {
    let Prepared {
        config,
        service,
        metrics,
        tls,
        adoptions_pending,
    } = prepared;
    let verifier = Arc::new(SigV4Verifier::new(
        config.region.clone(),
        "kms",
        config.credentials.clone(),
    ));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartError::Listen(config.listen, e))?;
    let address = listener.local_addr().map_err(StartError::ListenAddress)?;

    let jobs_service = service.clone();
    let jobs_metrics = metrics.clone();
    let interval = config.job_interval;
    let leases = Arc::new(JobLeases::new(interval));
    tracing::info!(holder = %leases.holder(), lease_ms = leases.ttl().as_millis() as u64, "periodic jobs run under leases");
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut adoptions_pending = adoptions_pending;
        loop {
            ticker.tick().await;
            let service = jobs_service.clone();
            let leases = leases.clone();
            let load_adoptions = adoptions_pending;
            let done = tokio::task::spawn_blocking(move || {
                let adopted = load_adoptions.then(|| crate::kms::seed::load_adoptions(&service));
                let rounds = run_leased_jobs(&service, &leases);
                (adopted, rounds)
            })
            .await;
            let Ok((adopted, rounds)) = done else {
                continue;
            };
            match adopted {
                Some(Ok(n)) => {
                    tracing::info!(adopted = n, "adopted token keys registered");
                    adoptions_pending = false;
                }
                Some(Err(e)) => tracing::warn!(error = %e, "adopted token keys still unreadable"),
                None => {}
            }
            for (job, round) in rounds {
                jobs_metrics
                    .job_rounds
                    .with_label_values(&[job.as_str(), round.as_str()])
                    .inc();
            }
        }
    });

    let audit = match &config.audit_path {
        Some(path) => Some(Arc::new(AuditLog::open(
            path.clone(),
            AuditSettings {
                max_bytes: config.audit_max_bytes,
                on_failure: config.audit_on_failure,
                queue_capacity: config.audit_queue_capacity,
                sync_wait: config.audit_sync_wait,
            },
            metrics.clone(),
        )?)),
        None => None,
    };
    let lanes = Arc::new(crate::wire::Lanes::start(
        config.session_pool_size,
        config.session_wait,
        if config.batch_scheduling {
            crate::wire::Scheduling::Batch
        } else {
            crate::wire::Scheduling::Normal
        },
    )?);
    let core = service.clone();
    let audit_at_exit = audit.clone();
    #[cfg(unix)]
    spawn_reload_on_sighup(
        config.config_file.clone(),
        verifier.clone(),
        service.identity_policies(),
        tls.as_ref().map(crate::tls::Tls::certificate),
    );
    let metrics_for_listener = metrics.clone();
    let app = router(AppState {
        service,
        verifier,
        metrics,
        audit,
        lanes,
        secure_transport: tls.is_some(),
    });
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("p11kms listening on {scheme}://{address}");
    if config.dev_credentials {
        println!(
            "dev credentials: AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} AWS_DEFAULT_REGION={} (account {})",
            crate::config::DEV_ACCESS_KEY_ID,
            crate::config::DEV_SECRET_ACCESS_KEY,
            config.region,
            config.account
        );
    }
    tracing::info!(
        %address,
        region = %config.region,
        tls = tls.is_some(),
        client_certificates = tls.as_ref().is_some_and(crate::tls::Tls::mutual),
        "serving"
    );
    if tls.is_none() && !address.ip().to_canonical().is_loopback() {
        tracing::warn!(%address, "plain HTTP on a non-loopback address (allow_plain_http): TLS must terminate in front of the gateway");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let mut limits = config.limits;
    limits.max_connections = crate::listener::fit_open_files(limits.max_connections);
    tracing::info!(
        max_connections = limits.max_connections,
        max_connections_per_address = limits.max_connections_per_address.unwrap_or(0),
        header_read_timeout_ms = limits.header_read_timeout.as_millis() as u64,
        idle_timeout_ms = limits.idle_timeout.as_millis() as u64,
        request_timeout_ms = limits.request_timeout.as_millis() as u64,
        "connection limits"
    );
    let listening = crate::listener::Listening {
        app,
        tls: tls.as_ref().map(crate::tls::Tls::acceptor),
        limits,
        metrics: Some(metrics_for_listener),
    };
    let server = crate::listener::serve(listener, listening, stop_rx.clone());
    // After the signal, requests in flight get `drain` to finish; then the gateway exits
    // anyway (an orchestrator's kill deadline is better met by us than by SIGKILL).
    let drain = config.drain;
    let mut deadline = stop_rx;
    let result = tokio::select! {
        () = server => Ok(()),
        _ = async move {
            let _ = deadline.wait_for(|stop| *stop).await;
            tokio::time::sleep(drain).await;
        } => {
            tracing::warn!(drain_ms = drain.as_millis() as u64, "drain deadline passed; exiting with requests still in flight");
            Ok(())
        }
    };
    // Every request that was accepted has its audit record on disk before the process ends.
    // (Bounded: with a failing trail the records cannot be written, and exiting is then the
    // only way to hand the problem to whoever restarts the gateway.)
    if let Some(audit) = audit_at_exit {
        if !audit.flush(AUDIT_FLUSH_AT_EXIT).await {
            tracing::error!(
                within_ms = AUDIT_FLUSH_AT_EXIT.as_millis() as u64,
                "audit records accepted before exit could not all be written"
            );
        }
    }
    // Close the pooled sessions (logging them out) and finalise the library.
    let clean = tokio::task::spawn_blocking(move || core.hsm().shutdown())
        .await
        .unwrap_or(false);
    if clean {
        tracing::info!("HSM sessions closed; library finalised");
    } else {
        tracing::warn!("HSM sessions still in use at exit; they close with the process");
    }
    result
}

/// SIGHUP: read the configuration again and apply what can change without a restart, the
/// credential table, identity policies, the log level and the TLS certificate and key (read
/// from their files again). Anything else in the file needs a restart. A file that no longer
/// parses leaves everything as it was; a certificate or key that does not load leaves the
/// served one.
#[cfg(unix)]
fn spawn_reload_on_sighup(
    config_file: Option<std::path::PathBuf>,
    verifier: Arc<SigV4Verifier>,
    identity: Arc<IdentityPolicies>,
    certificate: Option<Arc<crate::tls::ReloadableCertificate>>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reloading is off");
            return;
        }
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let path = config_file.clone();
            let certificate = certificate.clone();
            let loaded = tokio::task::spawn_blocking(move || {
                let new = Config::load(path.as_deref())?;
                if let Some(certificate) = certificate {
                    match certificate.reload(new.tls.as_ref()) {
                        Ok(note) => {
                            tracing::info!("SIGHUP: TLS certificate and key reloaded");
                            if let Some(note) = note {
                                tracing::warn!("SIGHUP: {note}");
                            }
                        }
                        Err(e) => {
                            let error = crate::error::display_chain(&e);
                            tracing::error!(%error, "SIGHUP: TLS certificate and key not reloaded")
                        }
                    }
                }
                Ok::<_, crate::config::ConfigError>(new)
            })
            .await;
            match loaded {
                Ok(Ok(new)) => {
                    verifier.replace_credentials(new.credentials);
                    identity.replace(new.identity_policies);
                    match reload_log_level(&new.log_level) {
                        Ok(()) => {
                            tracing::info!(level = %new.log_level, "SIGHUP: credentials and log level reloaded")
                        }
                        Err(e) => {
                            let error = crate::error::display_chain(&e);
                            tracing::warn!(%error, "SIGHUP: credentials reloaded; log level unchanged")
                        }
                    }
                }
                Ok(Err(e)) => {
                    let error = crate::error::display_chain(&e);
                    tracing::error!(%error, "SIGHUP: configuration not reloaded")
                }
                Err(e) => tracing::error!(error = %e, "SIGHUP: reload task failed"),
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
