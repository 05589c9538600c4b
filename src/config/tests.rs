use super::*;

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

#[test]
fn tls_section_parses_and_refuses_unknown_keys() {
    let file: FileConfig = toml::from_str(
        r#"
        listen = "0.0.0.0:8443"
        allow_plain_http = false
        [tls]
        cert_file = "/etc/p11kms/tls/server.pem"
        key_file = "/etc/p11kms/tls/server.key"
        client_ca_file = "/etc/p11kms/tls/clients-ca.pem"
        "#,
    )
    .unwrap();
    assert_eq!(file.allow_plain_http, Some(false));
    assert_eq!(
        file.tls.cert_file.as_deref(),
        Some(Path::new("/etc/p11kms/tls/server.pem"))
    );
    assert_eq!(
        file.tls.key_file.as_deref(),
        Some(Path::new("/etc/p11kms/tls/server.key"))
    );
    assert_eq!(
        file.tls.client_ca_file.as_deref(),
        Some(Path::new("/etc/p11kms/tls/clients-ca.pem"))
    );
    let err = toml::from_str::<FileConfig>("[tls]\ncert = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.to_string().contains("unknown field"), "{err}");
    let empty: FileConfig = toml::from_str("").unwrap();
    assert!(empty.tls.cert_file.is_none() && empty.allow_plain_http.is_none());
}

#[test]
fn the_audit_trail_fails_closed_unless_told_otherwise() {
    let resolve = |text: &str| Config::resolve(toml::from_str::<FileConfig>(text).unwrap());
    let default = resolve("").unwrap();
    assert_eq!(default.audit_on_failure, OnFailure::Refuse);
    assert_eq!(default.audit_queue_capacity, 8192);
    assert_eq!(default.audit_sync_wait, None);
    let open = resolve("[audit]\non_failure = \"log\"\nqueue_capacity = 64\n").unwrap();
    assert_eq!(open.audit_on_failure, OnFailure::Log);
    assert_eq!(open.audit_queue_capacity, 64);
    let synced = resolve("[audit]\nwait_for_sync = true\nsync_wait_ms = 50\n").unwrap();
    assert_eq!(synced.audit_sync_wait, Some(Duration::from_millis(50)));
    let err = resolve("[audit]\non_failure = \"ignore\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("audit.on_failure") && err.contains("refuse or log"),
        "{err}"
    );
    let err = resolve("[audit]\nqueue_capacity = 0\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("audit.queue_capacity"), "{err}");
    let err = resolve("[audit]\non_failure = \"log\"\nwait_for_sync = true\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("audit.wait_for_sync"), "{err}");
}

#[test]
fn tls_needs_certificate_and_key_together() {
    let some = |p: &str| Some(PathBuf::from(p));
    let tls = resolve_tls(some("c.pem"), some("k.pem"), None).unwrap();
    assert_eq!(
        tls,
        Some(TlsConfig {
            cert_file: "c.pem".into(),
            key_file: "k.pem".into(),
            client_ca_file: None,
        })
    );
    let mtls = resolve_tls(some("c.pem"), some("k.pem"), some("ca.pem"))
        .unwrap()
        .unwrap();
    assert_eq!(mtls.client_ca_file, some("ca.pem"));
    assert_eq!(resolve_tls(None, None, None).unwrap(), None);

    let err = resolve_tls(some("c.pem"), None, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tls.key_file") && err.contains("P11KMS_TLS_KEY_FILE"),
        "{err}"
    );
    let err = resolve_tls(None, some("k.pem"), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tls.cert_file") && err.contains("P11KMS_TLS_CERT_FILE"),
        "{err}"
    );
    let err = resolve_tls(None, None, some("ca.pem"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("tls.client_ca_file"), "{err}");
}

#[test]
fn plain_http_only_on_loopback_unless_allowed() {
    for loopback in [
        "127.0.0.1:8080",
        "127.3.2.1:0",
        "[::1]:8080",
        "[::ffff:127.0.0.1]:8080",
    ] {
        check_plain_http(addr(loopback), false, false)
            .unwrap_or_else(|e| panic!("{loopback}: {e}"));
    }
    for exposed in [
        "0.0.0.0:8080",
        "10.1.2.3:8080",
        "[::]:8080",
        "[2001:db8::1]:443",
    ] {
        let err = check_plain_http(addr(exposed), false, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(exposed)
                && err.contains("allow_plain_http")
                && err.contains("P11KMS_ALLOW_PLAIN_HTTP")
                && err.contains("tls.cert_file"),
            "{err}"
        );
        // TLS, or saying explicitly that plain HTTP is wanted, makes it valid.
        check_plain_http(addr(exposed), true, false).unwrap();
        check_plain_http(addr(exposed), false, true).unwrap();
    }
}

/// Only the TOML side: the tests never set `P11KMS_*` variables (they are process-wide).
#[test]
fn store_section_selects_the_backend_and_reads_the_connection_string_from_a_file() {
    let data = Path::new("/var/lib/p11kms");
    match resolve_store(StoreSection::default(), data).unwrap() {
        StoreConfig::Sqlite { path } => assert_eq!(path, data.join("p11kms.sqlite")),
        other => panic!("{other:?}"),
    }
    let err = resolve_store(
        StoreSection {
            backend: Some("postgres".into()),
            ..StoreSection::default()
        },
        data,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("P11KMS_DATABASE_URL") && err.contains("store.postgres_url_file"),
        "{err}"
    );
    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("url");
    std::fs::write(&file, "postgresql://kms:hunter2@db/kms\n").unwrap();
    let section: FileConfig = toml::from_str(&format!(
        "[store]\nbackend = \"postgres\"\npostgres_url_file = {:?}\n\
         postgres_pool_size = 4\npostgres_checkout_timeout_ms = 250\n",
        file.display().to_string()
    ))
    .unwrap();
    match resolve_store(section.store, data).unwrap() {
        StoreConfig::Postgres(settings) => {
            assert_eq!(
                secrecy::ExposeSecret::expose_secret(&settings.url),
                "postgresql://kms:hunter2@db/kms"
            );
            assert_eq!(settings.pool_size, 4);
            assert_eq!(settings.checkout_timeout, Duration::from_millis(250));
            assert_eq!(settings.connect_timeout, Duration::from_secs(5));
            assert_eq!(settings.statement_timeout, Duration::from_secs(5));
            assert!(!format!("{settings:?}").contains("hunter2"));
        }
        other => panic!("{other:?}"),
    }
    let err = resolve_store(
        StoreSection {
            backend: Some("mysql".into()),
            ..StoreSection::default()
        },
        data,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("sqlite or postgres"), "{err}");
    // The connection string is not a TOML key: it carries the password.
    assert!(toml::from_str::<FileConfig>("[store]\npostgres_url = \"x\"\n").is_err());
}

#[test]
fn errors_name_the_setting_and_keep_their_cause() {
    let chain = |e: &ConfigError| crate::error::display_chain(e);
    let err = resolve_limits(&LimitsSection {
        idle_timeout_ms: Some(0),
        ..LimitsSection::default()
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "limits.idle_timeout_ms (P11KMS_IDLE_TIMEOUT_MS) must be at least 1 ms"
    );

    let missing = Path::new("/nonexistent/p11kms.toml");
    let err = Config::load(Some(missing)).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Read(file) if file.path == missing),
        "{err:?}"
    );
    assert!(
        chain(&err).starts_with("cannot read /nonexistent/p11kms.toml: "),
        "{}",
        chain(&err)
    );
    assert!(std::error::Error::source(&err).is_some());

    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("p11kms.toml");
    std::fs::write(&file, "listen = [\n").unwrap();
    let err = Config::load(Some(&file)).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    assert!(chain(&err).starts_with(&format!("{}: ", file.display())));

    let entry: CredentialEntry = toml::from_str(
        "access_key_id = \"AKID\"\nsecret_access_key_env = \"P11KMS_TEST_NEVER_SET\"\n",
    )
    .unwrap();
    let err = resolve_credential(entry, DEFAULT_ACCOUNT).unwrap_err();
    assert_eq!(
        chain(&err),
        "credential AKID: environment variable P11KMS_TEST_NEVER_SET is not set"
    );
    let entry: CredentialEntry = toml::from_str(
        "access_key_id = \"AKID\"\nsecret_access_key = \"s\"\npolicy_files = [\"/nonexistent/p.json\"]\n",
    )
    .unwrap();
    let err = identity_policies_of(&entry).unwrap_err();
    assert!(
        chain(&err).starts_with("credential AKID: cannot read /nonexistent/p.json: "),
        "{}",
        chain(&err)
    );
}
