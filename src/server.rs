//! Start-up and the server loop: configuration → token → store → service → HTTP.

use std::net::SocketAddr;
use std::sync::Arc;

use secrecy::SecretString;

use crate::auth::SigV4Verifier;
use crate::config::{read_secret_file, Config, LogFormat, PinSource};
use crate::hsm::{find_softhsm_module, CallObserver, EmbeddedSoftHsm, Hsm, HsmConfig};
use crate::kms::{reconcile, run_due_jobs, KmsService, ServiceConfig};
use crate::store::SqliteStore;
use crate::telemetry::{AuditLog, Metrics};
use crate::wire::{router, AppState};

/// Sets up logging to stderr. Plaintext, keys and secrets are never passed to `tracing`.
pub fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// Everything built before the runtime starts (PKCS#11 set-up is synchronous).
pub struct Prepared {
    config: Config,
    service: Arc<KmsService>,
    metrics: Arc<Metrics>,
}

/// Prepares the data directory, the token, the store and the service core.
///
/// Runs before any thread is started, because the embedded default exports
/// `SOFTHSM2_CONF` for the module to read.
pub fn prepare(config: Config) -> Result<Prepared, String> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", config.data_dir.display()))?;
    let module = match (&config.module, config.embedded_softhsm) {
        (Some(m), _) => m.clone(),
        (None, _) => find_softhsm_module().ok_or(
            "SoftHSM2 is not installed (apt-get install softhsm2), and hsm.module is not set",
        )?,
    };
    let embedded = if config.embedded_softhsm {
        let embedded = EmbeddedSoftHsm::prepare(&config.data_dir)?;
        std::env::set_var("SOFTHSM2_CONF", &embedded.conf_path);
        if embedded.ensure_token(&module, &config.token_label)? {
            tracing::info!(label = %config.token_label, "initialised a new SoftHSM2 token");
        }
        Some(embedded)
    } else {
        None
    };
    let user_pin = match &config.pin {
        PinSource::Env(var) => SecretString::from(
            std::env::var(var).map_err(|_| format!("the PIN variable {var} is not set"))?,
        ),
        PinSource::File(path) => SecretString::from(read_secret_file(path)?),
        PinSource::Embedded => match &embedded {
            Some(e) => e.user_pin()?,
            None => return Err("no PIN configured".into()),
        },
    };
    let metrics = Arc::new(Metrics::new().map_err(|e| format!("metrics: {e}"))?);
    let observer: Arc<dyn CallObserver> = metrics.clone();
    let hsm = Hsm::open(
        HsmConfig {
            module: module.clone(),
            token_label: config.token_label.clone(),
            user_pin,
            pool_size: config.session_pool_size,
            session_wait: config.session_wait,
        },
        Some(observer),
    )?;
    if let Some(parent) = config.sqlite_path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let store = SqliteStore::open(&config.sqlite_path)
        .map_err(|e| format!("cannot open {}: {e}", config.sqlite_path.display()))?;
    let service = Arc::new(KmsService::new(
        ServiceConfig {
            region: config.region.clone(),
            day_seconds: config.day_seconds,
        },
        Arc::new(store),
        Arc::new(hsm),
    ));
    // Only the embedded token is ours alone; on a shared HSM, orphans are reported by
    // `reconcile` only when an operator runs it.
    if config.embedded_softhsm {
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
    })
}

/// Serves until SIGTERM or Ctrl-C, finishing requests in flight.
pub async fn serve(prepared: Prepared) -> Result<(), String> {
    let Prepared {
        config,
        service,
        metrics,
    } = prepared;
    let verifier = Arc::new(SigV4Verifier::new(
        config.region.clone(),
        "kms",
        config.credentials.clone(),
    ));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;

    let jobs_service = service.clone();
    let interval = config.job_interval;
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let service = jobs_service.clone();
            let _ = tokio::task::spawn_blocking(move || run_due_jobs(&service)).await;
        }
    });

    let audit = match &config.audit_path {
        Some(path) => Some(Arc::new(AuditLog::open(
            path.clone(),
            config.audit_max_bytes,
        )?)),
        None => None,
    };
    let app = router(AppState {
        service,
        verifier,
        metrics,
        audit,
    });
    println!("p11kms listening on http://{address}");
    if config.dev_credentials {
        println!(
            "dev credentials: AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} AWS_DEFAULT_REGION={} (account {})",
            crate::config::DEV_ACCESS_KEY_ID,
            crate::config::DEV_SECRET_ACCESS_KEY,
            config.region,
            config.account
        );
    }
    tracing::info!(%address, region = %config.region, "serving");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .map_err(|e| format!("server error: {e}"))
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
