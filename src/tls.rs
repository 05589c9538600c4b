//! TLS for the gateway: rustls on the ring provider, the certificate chain and private key
//! from PEM files (read with `rustls-pki-types`), optional client-certificate verification
//! against a CA bundle (mTLS). The accept loop, shared with plain HTTP, is `crate::listener`.
//!
//! The certificate and key sit behind a resolver that SIGHUP can swap; the client CA and
//! whether TLS is on at all need a restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroizing;

use crate::config::TlsConfig;

/// Why the TLS files cannot be served. Messages name the setting and the file, never a line
/// of it (a key file's lines are secret).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{setting}: cannot read {}", path.display())]
    Read {
        setting: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A PEM file without a usable block, described by kind only.
    #[error("{setting} {}: {problem}", path.display())]
    Pem {
        setting: &'static str,
        path: PathBuf,
        problem: PemProblem,
    },
    #[error(
        "tls.key_file {}: the key type is not supported (RSA, ECDSA P-256/P-384, Ed25519)",
        .0.display()
    )]
    UnsupportedKey(PathBuf),
    #[error(
        "tls.key_file {} is not the key of the certificate in tls.cert_file {}",
        key_file.display(),
        cert_file.display()
    )]
    KeyMismatch {
        key_file: PathBuf,
        cert_file: PathBuf,
    },
    #[error("tls.cert_file {}", path.display())]
    Certificate {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("tls.client_ca_file {}", path.display())]
    ClientCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("tls.client_ca_file {}", path.display())]
    ClientVerifier {
        path: PathBuf,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    #[error("TLS")]
    Protocol(#[source] rustls::Error),
    #[error("TLS is on and turning it off needs a restart")]
    TurnOffNeedsRestart,
}

/// What is wrong with a PEM file, without quoting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PemProblem {
    #[error("no PEM certificate in the file (expected a CERTIFICATE block)")]
    NoCertificate,
    #[error(
        "no PEM private key in the file (expected a PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE \
         KEY block)"
    )]
    NoPrivateKey,
    #[error("a PEM block's base64 is invalid")]
    BadBase64,
    #[error("malformed PEM (bad BEGIN/END lines)")]
    Malformed,
}

/// The rustls server configuration and the swappable certificate it serves.
pub struct Tls {
    config: Arc<ServerConfig>,
    certificate: Arc<ReloadableCertificate>,
}

impl Tls {
    /// Reads the PEM files and builds the server configuration: TLS 1.2 and 1.3, ALPN
    /// `http/1.1`, and client certificates required when `client_ca_file` is set.
    pub fn load(files: &TlsConfig) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certificate = Arc::new(ReloadableCertificate {
            current: RwLock::new(certified_key(files)?),
            client_ca_file: files.client_ca_file.clone(),
        });
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Protocol)?;
        let builder = match &files.client_ca_file {
            Some(ca_file) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certificates(ca_file, "tls.client_ca_file")? {
                    roots.add(cert).map_err(|source| TlsError::ClientCa {
                        path: ca_file.clone(),
                        source,
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|source| TlsError::ClientVerifier {
                            path: ca_file.clone(),
                            source,
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(certificate.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            config: Arc::new(config),
            certificate,
        })
    }

    /// Whether clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.certificate.client_ca_file.is_some()
    }

    /// Accepts TLS connections with this configuration (`crate::listener` runs the loop).
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }

    /// The handle SIGHUP uses to load the certificate and key again.
    pub fn certificate(&self) -> Arc<ReloadableCertificate> {
        self.certificate.clone()
    }
}

/// The served certificate chain and key; `reload` swaps them for new connections.
pub struct ReloadableCertificate {
    current: RwLock<Arc<CertifiedKey>>,
    client_ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for ReloadableCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadableCertificate")
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadableCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
        )
    }
}

impl ReloadableCertificate {
    /// Reads the certificate and key again (from the paths of a freshly loaded
    /// configuration); on any error the served ones stay. Returns a note on settings that
    /// changed but need a restart.
    pub fn reload(&self, files: Option<&TlsConfig>) -> Result<Option<&'static str>, TlsError> {
        let files = files.ok_or(TlsError::TurnOffNeedsRestart)?;
        let new = certified_key(files)?;
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = new;
        Ok((files.client_ca_file != self.client_ca_file)
            .then_some("tls.client_ca_file changed; the client CA changes with a restart"))
    }
}

/// The certificate chain with its private key, checked to belong together.
fn certified_key(files: &TlsConfig) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = read_certificates(&files.cert_file, "tls.cert_file")?;
    let key = read_private_key(&files.key_file)?;
    // By reference: the key's bytes are not copied out of the wiped buffer.
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|_| TlsError::UnsupportedKey(files.key_file.clone()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::KeyMismatch {
                key_file: files.key_file.clone(),
                cert_file: files.cert_file.clone(),
            })
        }
        Err(source) => {
            return Err(TlsError::Certificate {
                path: files.cert_file.clone(),
                source,
            })
        }
    }
    Ok(Arc::new(certified))
}

/// Every `CERTIFICATE` block of a PEM file, in order (at least one).
fn read_certificates(
    path: &Path,
    setting: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error(setting, path, "certificate", e))?;
    if certs.is_empty() {
        return Err(pem_error(
            setting,
            path,
            "certificate",
            rustls_pki_types::pem::Error::NoItemsFound,
        ));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file. The file's bytes and the
/// decoded key are wiped when dropped (the PEM decoder's own scratch copy of the base64 text
/// is not: `rustls-pki-types` does not zeroize it); errors never quote the file.
fn read_private_key(path: &Path) -> Result<Zeroizing<PrivateKeyDer<'static>>, TlsError> {
    let pem = Zeroizing::new(std::fs::read(path).map_err(|source| TlsError::Read {
        setting: "tls.key_file",
        path: path.to_path_buf(),
        source,
    })?);
    PrivateKeyDer::from_pem_slice(&pem)
        .map(Zeroizing::new)
        .map_err(|e| pem_error("tls.key_file", path, "private key", e))
}

/// Describes a PEM failure by its kind only: the parser's own messages can quote a line of
/// the file, and a key file's lines are secret.
fn pem_error(
    setting: &'static str,
    path: &Path,
    what: &str,
    error: rustls_pki_types::pem::Error,
) -> TlsError {
    use rustls_pki_types::pem::Error;
    let problem = match error {
        Error::Io(source) => {
            return TlsError::Read {
                setting,
                path: path.to_path_buf(),
                source,
            }
        }
        Error::NoItemsFound if what == "private key" => PemProblem::NoPrivateKey,
        Error::NoItemsFound => PemProblem::NoCertificate,
        Error::Base64Decode(_) => PemProblem::BadBase64,
        _ => PemProblem::Malformed,
    };
    TlsError::Pem {
        setting,
        path: path.to_path_buf(),
        problem,
    }
}

/// A refused client certificate is worth a warning; anything else (scanners, plain HTTP to
/// the TLS port, clients that do not trust the server) is logged at debug.
pub(crate) fn handshake_failed(peer: SocketAddr, e: &std::io::Error) {
    let tls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls_error {
        Some(
            err @ (rustls::Error::NoCertificatesPresented | rustls::Error::InvalidCertificate(_)),
        ) => tracing::warn!(%peer, error = %err, "TLS handshake: client certificate refused"),
        _ => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
    }
}
