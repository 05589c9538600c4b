//! TLS to PostgreSQL: rustls on the ring provider (as the gateway's own TLS), behind
//! tokio-postgres's connector traits.
//!
//! With `store.postgres_ca_file` set, every connection must be TLS and the server's
//! certificate must chain to that CA and name the host of the connection string (libpq's
//! `verify-full`); nothing falls back to plain text.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, InvalidDnsNameError, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use crate::store::{StoreError, StoreResult};

/// Makes a verified TLS connector per connection, for the host being connected to.
#[derive(Clone)]
pub(super) struct MakeRustlsConnect(Arc<ClientConfig>);

impl MakeRustlsConnect {
    /// Trusts the certificates of the PEM file `ca_file`, and nothing else.
    pub(super) fn from_ca_file(ca_file: &Path) -> StoreResult<Self> {
        let shown = ca_file.display();
        let certs = CertificateDer::pem_file_iter(ca_file)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|e| StoreError::backend_from(format!("store.postgres_ca_file {shown}"), e))?;
        if certs.is_empty() {
            return Err(StoreError::backend(format!(
                "store.postgres_ca_file {shown}: no certificate"
            )));
        }
        let mut roots = RootCertStore::empty();
        for cert in certs {
            roots.add(cert).map_err(|e| {
                StoreError::backend_from(format!("store.postgres_ca_file {shown}"), e)
            })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::backend_from("TLS to PostgreSQL", e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(MakeRustlsConnect(Arc::new(config)))
    }
}

impl<S> MakeTlsConnect<S> for MakeRustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = InvalidDnsNameError;

    fn make_tls_connect(&mut self, host: &str) -> Result<RustlsConnect, InvalidDnsNameError> {
        Ok(RustlsConnect {
            config: self.0.clone(),
            server: ServerName::try_from(host)?.to_owned(),
        })
    }
}

pub(super) struct RustlsConnect {
    config: Arc<ClientConfig>,
    server: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let connector = tokio_rustls::TlsConnector::from(self.config);
            let tls = connector.connect(self.server, stream).await?;
            Ok(RustlsStream(tls))
        })
    }
}

pub(super) struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    /// No SCRAM channel binding: authentication does not depend on it (the server's
    /// certificate is verified), and `channel_binding=require` is refused by tokio-postgres.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
