//! TLS and mTLS (issue 4): the plain-HTTP rule, the `[tls]` settings' errors, the key formats
//! the PEM loader accepts, HTTPS with a certificate chaining to a test CA, client
//! certificates, and reloading the certificate on SIGHUP.
//!
//! Certificates are made at test time with the `openssl` command (`apt-get install openssl`);
//! the clients here are rustls on the ring provider, blocking.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::TestServer;
use p11kms::config::TlsConfig;
use p11kms::tls::Tls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

// -------------------------------------------------------------------------------------------
// A throwaway PKI
// -------------------------------------------------------------------------------------------

/// Two CAs (`ca`, `rogue-ca`) and leaf certificates under them, in a temporary directory:
/// `server` (localhost, 127.0.0.1), `server2` (the same names, for the reload),
/// `client` under `ca` and `rogue-client` under `rogue-ca`. Keys are P-256, PKCS#8.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::Builder::new()
                .prefix("p11kms-pki-")
                .tempdir()
                .expect("temporary directory"),
        };
        pki.ca("ca");
        pki.ca("rogue-ca");
        pki.leaf("ca", "server", "serverAuth", EC);
        pki.leaf("ca", "server2", "serverAuth", EC);
        pki.leaf("ca", "client", "clientAuth", EC);
        pki.leaf("rogue-ca", "rogue-client", "clientAuth", EC);
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }

    /// Runs `openssl` in the directory; `command` is split at whitespace.
    fn openssl(&self, command: &str) {
        let args: Vec<&str> = command.split_whitespace().collect();
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(self.dir.path())
            .output()
            .expect("the openssl command (apt-get install openssl) makes the test certificates");
        assert!(
            out.status.success(),
            "openssl {command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ca(&self, name: &str) {
        self.openssl(&format!(
            "req -x509 -newkey {EC} -nodes -keyout {name}.key -out {name}.pem -days 2 \
             -subj /CN=p11kms-test-{name} -addext basicConstraints=critical,CA:TRUE \
             -addext keyUsage=critical,keyCertSign,cRLSign"
        ));
    }

    /// `<name>.pem` and `<name>.key` (`-newkey` argument `key`), signed by `ca`, for `usage`
    /// (serverAuth, clientAuth).
    fn leaf(&self, ca: &str, name: &str, usage: &str, key: &str) {
        let ext = format!(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage={usage}\nsubjectKeyIdentifier=hash\n\
             authorityKeyIdentifier=keyid\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
        );
        std::fs::write(self.path(&format!("{name}.ext")), ext).expect("write extensions");
        self.openssl(&format!(
            "req -new -newkey {key} -nodes -keyout {name}.key -out {name}.csr -subj /CN={name}"
        ));
        self.openssl(&format!(
            "x509 -req -in {name}.csr -CA {ca}.pem -CAkey {ca}.key -CAcreateserial -days 2 \
             -out {name}.pem -extfile {name}.ext"
        ));
    }

    fn files(&self, cert: &str, key: &str, client_ca: Option<&str>) -> TlsConfig {
        TlsConfig {
            cert_file: self.path(cert),
            key_file: self.path(key),
            client_ca_file: client_ca.map(|ca| self.path(ca)),
        }
    }

    fn der(&self, cert: &str) -> Vec<u8> {
        CertificateDer::from_pem_file(self.path(cert))
            .expect("certificate")
            .to_vec()
    }
}

const EC: &str = "ec -pkeyopt ec_paramgen_curve:prime256v1";
const RSA: &str = "rsa:2048";

// -------------------------------------------------------------------------------------------
// Clients
// -------------------------------------------------------------------------------------------

/// A client trusting `ca`, presenting `identity` (certificate and key files) if given.
fn client(pki: &Pki, ca: &str, identity: Option<&str>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.path(ca)).expect("CA"))
        .expect("add CA");
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
    let config = match identity {
        Some(name) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(pki.path(&format!("{name}.pem"))).unwrap()],
                PrivateKeyDer::from_pem_file(pki.path(&format!("{name}.key"))).unwrap(),
            )
            .expect("client identity"),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

fn port(server: &TestServer) -> u16 {
    server
        .endpoint()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port in the endpoint")
}

/// `GET /healthz` over TLS as `localhost`: the status line and the server's certificate.
fn healthz(port: u16, config: Arc<ClientConfig>) -> Result<(String, Vec<u8>), String> {
    let name = ServerName::try_from("localhost").expect("server name");
    let mut conn = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    {
        let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .map_err(|e| e.to_string())?;
        if let Err(e) = tls.read_to_end(&mut response) {
            // A peer that closes without close_notify after a full response is fine.
            if response.is_empty() || e.kind() != std::io::ErrorKind::UnexpectedEof {
                return Err(e.to_string());
            }
        }
    }
    let status = String::from_utf8_lossy(&response)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    if status.is_empty() {
        return Err("no response".into());
    }
    let leaf = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    Ok((status, leaf))
}

fn wait_for_log(server: &TestServer, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let log = server.log_text();
        if log.contains(needle) || Instant::now() > deadline {
            return log;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends the signal `name` and waits for `says` in the server's log.
fn signal(server: &TestServer, name: &str, says: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(server.pid().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name}");
    let log = wait_for_log(server, says);
    assert!(log.contains(says), "no {says:?} after SIG{name}:\n{log}");
}

/// Runs `p11kms serve` with `env` (and nothing else from the caller's P11KMS_*), expecting it
/// to exit by itself; returns its status and stderr.
fn serve_exits(env: &[(&str, &str)]) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let stderr_path = dir.path().join("stderr.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_p11kms-under-test"));
    cmd.arg("serve");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("P11KMS_") {
            cmd.env_remove(&name);
        }
    }
    cmd.env("P11KMS_DATA_DIR", dir.path().join("data"))
        .envs(env.iter().copied())
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"));
    let mut child = cmd.spawn().expect("spawn p11kms serve");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "p11kms serve kept running with {env:?}:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status,
        std::fs::read_to_string(&stderr_path).unwrap_or_default(),
    )
}

// -------------------------------------------------------------------------------------------
// Configuration
// -------------------------------------------------------------------------------------------

#[test]
fn plain_http_on_all_interfaces_needs_allow_plain_http() {
    let (status, stderr) = serve_exits(&[("P11KMS_LISTEN", "0.0.0.0:0")]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    for needle in [
        "configuration error",
        "0.0.0.0:0 is not a loopback address",
        "tls.cert_file",
        "P11KMS_TLS_CERT_FILE",
        "allow_plain_http = true",
        "P11KMS_ALLOW_PLAIN_HTTP",
    ] {
        assert!(stderr.contains(needle), "no {needle:?} in: {stderr}");
    }
}

#[test]
fn allow_plain_http_serves_on_all_interfaces() {
    let server = TestServer::start_with(&[
        ("P11KMS_LISTEN", "0.0.0.0:0"),
        ("P11KMS_ALLOW_PLAIN_HTTP", "true"),
    ]);
    assert!(
        server.endpoint().starts_with("http://0.0.0.0:"),
        "{}",
        server.endpoint()
    );
    let mut tcp = TcpStream::connect(("127.0.0.1", port(&server))).expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut response = String::new();
    tcp.read_to_string(&mut response).expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let log = wait_for_log(&server, "plain HTTP on a non-loopback address");
    assert!(
        log.contains("plain HTTP on a non-loopback address"),
        "{log}"
    );
}

#[test]
fn certificate_without_key_is_a_configuration_error() {
    let pki = Pki::new();
    let cert = pki.arg("server.pem");
    let (status, stderr) = serve_exits(&[("P11KMS_TLS_CERT_FILE", cert.as_str())]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("tls.key_file") && stderr.contains("P11KMS_TLS_KEY_FILE"),
        "{stderr}"
    );
    let key = pki.arg("server.key");
    let (status, stderr) = serve_exits(&[("P11KMS_TLS_KEY_FILE", key.as_str())]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("tls.cert_file"), "{stderr}");
}

#[test]
fn key_file_that_is_not_pem_is_refused_without_quoting_it() {
    let pki = Pki::new();
    let secret = "TOPSECRET-d41d8cd98f00b204e9800998ecf8427e";
    let not_pem = pki.path("not-pem.key");
    std::fs::write(&not_pem, format!("password = {secret}\n")).unwrap();
    let cert = pki.arg("server.pem");
    let key = not_pem.to_string_lossy().into_owned();
    let (status, stderr) = serve_exits(&[
        ("P11KMS_TLS_CERT_FILE", cert.as_str()),
        ("P11KMS_TLS_KEY_FILE", key.as_str()),
    ]);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("tls.key_file") && stderr.contains("no PEM private key"),
        "{stderr}"
    );
    assert!(!stderr.contains(secret), "the key file is quoted: {stderr}");

    // Broken PEM: the parser's own messages would quote the offending line.
    for (name, text) in [
        (
            "bad-begin.key",
            format!("-----BEGIN {secret} PRIVATE KEY\nAAAA\n"),
        ),
        (
            "no-end.key",
            format!("-----BEGIN PRIVATE KEY-----\n{secret}\n"),
        ),
        (
            "bad-base64.key",
            format!("-----BEGIN PRIVATE KEY-----\n{secret}!!\n-----END PRIVATE KEY-----\n"),
        ),
    ] {
        std::fs::write(pki.path(name), text).unwrap();
        let err = Tls::load(&pki.files("server.pem", name, None))
            .err()
            .map(|e| p11kms::error::display_chain(&e))
            .unwrap_or_else(|| panic!("{name} loaded"));
        assert!(err.contains("tls.key_file"), "{name}: {err}");
        assert!(!err.contains("TOPSECRET"), "{name} is quoted: {err}");
    }
}

#[test]
fn pem_loader_takes_pkcs8_pkcs1_and_sec1_keys_and_checks_they_match() {
    let pki = Pki::new();
    pki.leaf("ca", "rsa", "serverAuth", RSA);
    pki.openssl("ec -in server.key -out server.sec1.key");
    pki.openssl("rsa -in rsa.key -traditional -out rsa.pkcs1.key");
    for (cert, key, header) in [
        ("server.pem", "server.key", "-----BEGIN PRIVATE KEY-----"),
        (
            "server.pem",
            "server.sec1.key",
            "-----BEGIN EC PRIVATE KEY-----",
        ),
        ("rsa.pem", "rsa.key", "-----BEGIN PRIVATE KEY-----"),
        (
            "rsa.pem",
            "rsa.pkcs1.key",
            "-----BEGIN RSA PRIVATE KEY-----",
        ),
    ] {
        let text = std::fs::read_to_string(pki.path(key)).unwrap();
        assert!(text.starts_with(header), "{key} is not {header}");
        Tls::load(&pki.files(cert, key, None)).unwrap_or_else(|e| panic!("{key}: {e}"));
    }
    Tls::load(&pki.files("server.pem", "server.key", Some("ca.pem"))).expect("with a client CA");

    // (certificate, key, client CA, what the error must say)
    for (cert, key, ca, says) in [
        (
            "server.pem",
            "rsa.key",
            None,
            &["is not the key of the certificate"][..],
        ),
        (
            "server.key",
            "server.key",
            None,
            &["tls.cert_file", "no PEM certificate"],
        ),
        (
            "server.pem",
            "server.key",
            Some("server.key"),
            &["tls.client_ca_file", "no PEM certificate"],
        ),
        (
            "missing.pem",
            "server.key",
            None,
            &["tls.cert_file: cannot read", "missing.pem"],
        ),
    ] {
        let err = Tls::load(&pki.files(cert, key, ca))
            .err()
            .map(|e| p11kms::error::display_chain(&e))
            .unwrap_or_else(|| panic!("{cert} {key} {ca:?} loaded"));
        for needle in says {
            assert!(err.contains(needle), "{cert} {key} {ca:?}: {err}");
        }
    }
}

// -------------------------------------------------------------------------------------------
// Serving
// -------------------------------------------------------------------------------------------

/// A server with `server.pem`/`server.key`, the client CA `client_ca` if given, and `extra`
/// settings.
fn start_tls(pki: &Pki, client_ca: Option<&str>, extra: &[(&str, &str)]) -> TestServer {
    let (cert, key) = (pki.arg("server.pem"), pki.arg("server.key"));
    let ca = client_ca.map(|ca| pki.arg(ca));
    let mut env = vec![
        ("P11KMS_TLS_CERT_FILE", cert.as_str()),
        ("P11KMS_TLS_KEY_FILE", key.as_str()),
    ];
    if let Some(ca) = &ca {
        env.push(("P11KMS_TLS_CLIENT_CA_FILE", ca.as_str()));
    }
    env.extend_from_slice(extra);
    TestServer::start_with(&env)
}

#[test]
fn https_with_the_configured_certificate_and_bad_handshakes_harm_no_one() {
    let pki = Pki::new();
    let server = start_tls(&pki, None, &[]);
    assert!(
        server.endpoint().starts_with("https://127.0.0.1:"),
        "{}",
        server.endpoint()
    );
    let port = port(&server);
    let trusting = client(&pki, "ca.pem", None);

    // A connection that never says anything, and one that speaks plain HTTP, stay their own
    // problem: the accept loop does not wait on handshakes.
    let _silent = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut plain = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("write");
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("HTTP/1.1 200"),
        "plain HTTP was served on the TLS port"
    );

    let (status, leaf) = healthz(port, trusting.clone()).expect("HTTPS request");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(leaf, pki.der("server.pem"), "the configured certificate");

    // A client that does not trust the CA gives up; the server goes on.
    let err = healthz(port, client(&pki, "rogue-ca.pem", None)).expect_err("untrusted server");
    assert!(
        err.contains("invalid peer certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );
    let (status, _) = healthz(port, trusting).expect("HTTPS request after the failures");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
}

#[test]
fn mtls_refuses_clients_without_a_certificate_from_the_client_ca() {
    let pki = Pki::new();
    let server = start_tls(&pki, Some("ca.pem"), &[]);
    let port = port(&server);

    let (status, _) =
        healthz(port, client(&pki, "ca.pem", Some("client"))).expect("client certificate");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");

    let err = healthz(port, client(&pki, "ca.pem", None)).expect_err("no client certificate");
    assert!(!err.contains("HTTP/1.1"), "{err}");
    let err = healthz(port, client(&pki, "ca.pem", Some("rogue-client")))
        .expect_err("client certificate from another CA");
    assert!(!err.contains("HTTP/1.1"), "{err}");

    let log = wait_for_log(&server, "client certificate refused");
    assert!(log.contains("client certificate refused"), "{log}");
    let (status, _) = healthz(port, client(&pki, "ca.pem", Some("client"))).expect("still served");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
}

#[test]
fn sighup_reloads_the_certificate_and_keeps_it_when_the_new_one_is_broken() {
    let pki = Pki::new();
    let server = start_tls(&pki, None, &[]);
    let port = port(&server);
    // A new client each time: a resumed session would report the certificate it began with.
    let trusting = || client(&pki, "ca.pem", None);
    let (_, leaf) = healthz(port, trusting()).expect("HTTPS request");
    assert_eq!(leaf, pki.der("server.pem"));

    // Rotate the files in place, as certificate renewal does.
    std::fs::copy(pki.path("server2.pem"), pki.path("server.pem")).unwrap();
    std::fs::copy(pki.path("server2.key"), pki.path("server.key")).unwrap();
    signal(&server, "HUP", "SIGHUP: TLS certificate and key reloaded");
    let (status, leaf) = healthz(port, trusting()).expect("HTTPS request after SIGHUP");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(leaf, pki.der("server2.pem"), "the new certificate");

    // A key that does not load leaves the served certificate as it was.
    std::fs::write(pki.path("server.key"), "not a key\n").unwrap();
    signal(
        &server,
        "HUP",
        "SIGHUP: TLS certificate and key not reloaded",
    );
    let (_, leaf) = healthz(port, trusting()).expect("HTTPS request after a failed reload");
    assert_eq!(leaf, pki.der("server2.pem"));
}

/// A TLS connection that has sent the headers and half the body of a KMS request.
fn half_sent_tls_request(
    port: u16,
    config: Arc<ClientConfig>,
) -> rustls::StreamOwned<ClientConnection, TcpStream> {
    let name = ServerName::try_from("localhost").expect("server name");
    let conn = ClientConnection::new(config, name).expect("client connection");
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "POST / HTTP/1.1\r\nHost: localhost\r\nX-Amz-Target: TrentService.ListKeys\r\n\
         Content-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{}",
        HALF_BODY.len() * 2,
        HALF_BODY
    )
    .expect("send headers and half the body");
    tls.flush().expect("flush");
    tls
}

const HALF_BODY: &str = "{\"Limit\": 10}  ";

#[test]
fn sigterm_over_tls_finishes_requests_in_flight_and_keeps_the_drain_deadline() {
    let pki = Pki::new();
    let mut server = start_tls(&pki, None, &[("P11KMS_DRAIN_MS", "3000")]);
    let port = port(&server);
    let trusting = client(&pki, "ca.pem", None);
    let mut in_flight = half_sent_tls_request(port, trusting.clone());
    let _stuck = half_sent_tls_request(port, trusting.clone());
    std::thread::sleep(Duration::from_millis(200));

    let started = Instant::now();
    signal(&server, "TERM", "shutting down");
    // New connections are no longer accepted.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        healthz(port, trusting).is_err(),
        "a new connection was served after SIGTERM"
    );
    // The accepted request gets its whole answer (an AWS error for the missing signature).
    in_flight
        .write_all(HALF_BODY.as_bytes())
        .expect("send the rest of the body");
    let mut response = Vec::new();
    let _ = in_flight.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.starts_with("HTTP/1.1 ") && response.contains("x-amzn-requestid"),
        "no response: {response:?}"
    );
    // The stuck one holds the server until the deadline; then it exits anyway, with 0.
    assert!(
        server.wait_exit(Duration::from_secs(15)),
        "no exit after the drain deadline"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "exited before the deadline"
    );
    let log = server.log_text();
    assert!(log.contains("drain deadline passed"), "{log}");
}

#[test]
fn sigterm_over_tls_does_not_wait_for_idle_or_handshaking_connections() {
    let pki = Pki::new();
    let mut server = start_tls(&pki, None, &[("P11KMS_DRAIN_MS", "20000")]);
    let port = port(&server);
    // Handshake done, no request yet; and a TCP connection that never starts its handshake.
    let name = ServerName::try_from("localhost").expect("server name");
    let mut idle = ClientConnection::new(client(&pki, "ca.pem", None), name).expect("client");
    let mut idle_tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    while idle.is_handshaking() {
        idle.complete_io(&mut idle_tcp).expect("handshake");
    }
    let _silent = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    std::thread::sleep(Duration::from_millis(200));

    let started = Instant::now();
    signal(&server, "TERM", "shutting down");
    assert!(
        server.wait_exit(Duration::from_secs(10)),
        "idle connections held the shutdown up"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let log = server.log_text();
    assert!(!log.contains("drain deadline passed"), "{log}");
    assert!(log.contains("HSM sessions closed"), "{log}");
}

/// How long until the server closes `tcp` (EOF or reset), up to `limit`.
fn closed_after(tcp: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    tcp.set_read_timeout(Some(limit)).expect("timeout");
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            Err(_) => return Some(started.elapsed()),
        }
    }
}

#[test]
fn tls_handshakes_and_request_headers_that_stall_are_cut_off() {
    let pki = Pki::new();
    let server = start_tls(
        &pki,
        None,
        &[
            ("P11KMS_TLS_HANDSHAKE_TIMEOUT_MS", "600"),
            ("P11KMS_HEADER_READ_TIMEOUT_MS", "900"),
        ],
    );
    let port = port(&server);

    // Connected, but no ClientHello: closed after the handshake timeout.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let took = closed_after(&mut silent, Duration::from_secs(5)).expect("closed within 5 s");
    assert!(
        took >= Duration::from_millis(550) && took <= Duration::from_millis(2500),
        "silent connection closed after {took:?} (handshake timeout 600 ms)"
    );

    // Handshake done, half a request header: closed after the header-read timeout.
    let name = ServerName::try_from("localhost").expect("server name");
    let mut conn = ClientConnection::new(client(&pki, "ca.pem", None), name).expect("client");
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).expect("handshake");
    }
    {
        let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
        tls.write_all(b"POST / HTTP/1.1\r\nHost: localhost\r\nX-Amz-Tar")
            .expect("half a header");
        tls.flush().expect("flush");
    }
    let took = closed_after(&mut tcp, Duration::from_secs(5)).expect("closed within 5 s");
    assert!(
        took >= Duration::from_millis(800) && took <= Duration::from_millis(2800),
        "half a header over TLS closed after {took:?} (header-read timeout 900 ms)"
    );

    // Whoever finishes in time is served.
    let (status, _) = healthz(port, client(&pki, "ca.pem", None)).expect("HTTPS request");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let log = server.log_text();
    assert!(log.contains("TLS handshake timed out"), "{log}");
    assert!(
        log.contains("timeout=\"header_read\"") || log.contains("header_read"),
        "{log}"
    );
}
