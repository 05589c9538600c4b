//! The listener: one accept loop for plain HTTP and HTTPS, and the limits on what a client can
//! hold (`[limits]` in the configuration).
//!
//! - **Counts.** A connection over `limits.max_connections` or
//!   `limits.max_connections_per_address` is closed as it is accepted (a reset; no TLS, no
//!   HTTP, no task), see [`admission`].
//! - **Time.** Each connection has one timer, re-armed as it moves through its phases
//!   ([`watchdog`]): TLS handshake, request headers, request (body, work, answer), idle
//!   between kept-alive requests. A connection whose phase runs out is closed. The request
//!   phase is also enforced by the KMS handler itself, which answers at the deadline while
//!   an answer can still be sent (`crate::wire`).
//!
//! Each connection is HTTP/1.1 through hyper with vectored writes, so a response body is
//! written from the buffer it was encoded into and that buffer is wiped afterwards
//! (`crate::wire::body`).

pub mod admission;
pub mod watchdog;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::config::ConnectionLimits;
use crate::telemetry::Metrics;
use crate::wire::{PendingWipes, RequestDeadline};
use admission::{Admission, Permit};
use watchdog::{ConnectionClock, Phase, Watched, WatchedBody};

/// What the listener serves, and how.
pub struct Listening {
    pub app: Router,
    /// `None`: plain HTTP.
    pub tls: Option<TlsAcceptor>,
    pub limits: ConnectionLimits,
    pub metrics: Option<Arc<Metrics>>,
}

impl Listening {
    fn count_timeout(&self, kind: &str) {
        if let Some(m) = &self.metrics {
            m.connection_timeout(kind);
        }
    }
}

/// Serves until `stop` turns true; then stops accepting, asks open connections to close
/// after their request in flight (idle ones close at once), and returns when all have
/// closed. The caller bounds how long that may take (`shutdown.drain_ms`).
pub async fn serve(listener: TcpListener, listening: Listening, stop: watch::Receiver<bool>) {
    let admission = Admission::new(
        listening.limits.max_connections,
        listening.limits.max_connections_per_address,
        listening.metrics.clone(),
    );
    let listening = Arc::new(listening);
    // Every connection task holds a sender; `recv` returns `None` once all are gone.
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    let mut stopping = pin!(stopped(stop.clone()));
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            _ = &mut stopping => break,
        };
        let permit = match admission.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(refusal) => {
                // A reset rather than a FIN: nothing lingers in TIME_WAIT on our side.
                let _ = tcp.set_zero_linger();
                tracing::debug!(%peer, limit = refusal.label(), "connection refused: limit reached");
                continue;
            }
        };
        let listening = listening.clone();
        let stop = stop.clone();
        let open = open_tx.clone();
        tokio::spawn(async move {
            connection(tcp, peer, permit, &listening, stop).await;
            drop(open);
        });
    }
    drop(listener);
    drop(open_tx);
    let _ = open_rx.recv().await;
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Per-connection errors (the peer reset before `accept` returned) are nothing; others
/// (out of file descriptors) get a pause so the loop does not spin.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One admitted connection: the TLS handshake if any, then HTTP.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    permit: Permit,
    listening: &Listening,
    stop: watch::Receiver<bool>,
) {
    let _permit = permit;
    let _ = tcp.set_nodelay(true);
    let Some(acceptor) = &listening.tls else {
        return serve_http(tcp, peer, listening, stop).await;
    };
    let handshake =
        tokio::time::timeout(listening.limits.tls_handshake_timeout, acceptor.accept(tcp));
    let stream = tokio::select! {
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                crate::tls::handshake_failed(peer, &e);
                return;
            }
            Err(_) => {
                listening.count_timeout("tls_handshake");
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
        _ = stopped(stop.clone()) => return,
    };
    serve_http(stream, peer, listening, stop).await
}

/// How a connection's HTTP ended.
enum Ended {
    Closed(Result<(), hyper::Error>),
    TimedOut(Phase),
}

/// HTTP/1.1 on `io` under the watchdog, with graceful shutdown when `stop` turns true.
async fn serve_http<IO>(
    io: IO,
    peer: SocketAddr,
    listening: &Listening,
    stop: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = listening.limits;
    let wipes = match &listening.metrics {
        Some(m) => PendingWipes::new(m.wipe_counters()),
        None => PendingWipes::default(),
    };
    let clock = ConnectionClock::new(limits, wipes.clone());
    let ended = {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            // hyper's header timer also runs while a connection is idle; the watchdog
            // times the two apart.
            .header_read_timeout(None)
            .max_header_size(limits.max_header_bytes)
            // The read buffer no larger than the headers need: hyper grows it by doubling
            // when a read leaves less than 8 KiB free, which a half-sent header section would
            // otherwise do for every slow client (8 KiB → 16 KiB).
            .max_buf_size(limits.max_header_bytes.max(HYPER_MIN_BUF))
            // A response body is written from its own (wiped) buffer, never copied into
            // hyper's write buffer.
            .writev(true);
        let service = ConnectionService {
            router: listening.app.clone(),
            peer,
            clock: clock.clone(),
            request_timeout: limits.request_timeout,
        };
        let connection =
            builder.serve_connection(TokioIo::new(Watched::new(io, clock.clone())), service);
        let mut connection = pin!(connection);
        let mut stopping = pin!(stopped(stop));
        let mut draining = false;
        let mut armed = clock.deadline();
        let mut timer = pin!(tokio::time::sleep_until(armed));
        std::future::poll_fn(|cx| {
            if !draining && stopping.as_mut().poll(cx).is_ready() {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                return Poll::Ready(Ended::Closed(result));
            }
            // The poll may have moved the connection to another phase: follow its deadline.
            loop {
                let deadline = clock.deadline();
                if deadline != armed {
                    armed = deadline;
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                if let Some(phase) = clock.expired(Instant::now()) {
                    return Poll::Ready(Ended::TimedOut(phase));
                }
                armed = clock.deadline();
                timer.as_mut().reset(armed);
            }
        })
        .await
        // The connection, its socket and its read buffer are dropped here.
    };
    // Nothing shares the request bodies' chunks any more: wipe what is left.
    wipes.retry();
    match ended {
        Ended::Closed(Ok(())) => {}
        Ended::Closed(Err(e)) => {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
        Ended::TimedOut(phase) => {
            listening.count_timeout(phase.timeout_kind());
            tracing::debug!(%peer, timeout = phase.timeout_kind(), "connection closed: timeout");
        }
    }
}

/// The router as hyper calls it for one connection: marks the request phase, gives the
/// handlers the peer's address, the request's deadline and the connection's pending wipes,
/// and watches the response body.
#[derive(Clone)]
struct ConnectionService {
    router: Router,
    peer: SocketAddr,
    clock: Arc<ConnectionClock>,
    request_timeout: Duration,
}

impl hyper::service::Service<http::Request<Incoming>> for ConnectionService {
    type Response = http::Response<WatchedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut request: http::Request<Incoming>) -> Self::Future {
        self.clock.enter(Phase::Request);
        let extensions = request.extensions_mut();
        extensions.insert(ConnectInfo(self.peer));
        extensions.insert(RequestDeadline(Instant::now() + self.request_timeout));
        extensions.insert(self.clock.wipes().clone());
        let mut router = self.router.clone();
        let clock = self.clock.clone();
        Box::pin(async move {
            use tower_service::Service as _;
            // Router is always ready; asking keeps to the tower contract.
            let ready = std::future::poll_fn(|cx| {
                tower_service::Service::<http::Request<Incoming>>::poll_ready(&mut router, cx)
            })
            .await;
            let response = match ready {
                Ok(()) => match router.call(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                },
                Err(never) => match never {},
            };
            Ok(response.map(|body| WatchedBody::new(body, clock)))
        })
    }
}

/// hyper's smallest read buffer limit (`max_buf_size` panics below it).
const HYPER_MIN_BUF: usize = 8192;

/// Descriptors kept free for everything that is not a client connection: the store, the
/// audit trail, the token's files or sockets, the runtime.
pub const DESCRIPTORS_RESERVED: u64 = 256;

/// Raises the soft limit on open files as far as `limits.max_connections` needs (never past
/// the hard limit), and returns the connection limit the descriptors then allow: the
/// configured one, or less with a warning when the hard limit is too low for it.
///
/// Only as far as needed: a PKCS#11 library that still used `select()` could not handle
/// descriptors past 1024, so the gateway takes no more than its connections need.
pub fn fit_open_files(max_connections: usize) -> usize {
    let needed = max_connections as u64 + DESCRIPTORS_RESERVED;
    let available = raise_open_files_limit(needed);
    if available >= needed {
        return max_connections;
    }
    let fitted = available.saturating_sub(DESCRIPTORS_RESERVED).max(16) as usize;
    tracing::warn!(
        configured = max_connections,
        open_files_limit = available,
        max_connections = fitted,
        "the open-files limit (ulimit -n, LimitNOFILE) is too low for limits.max_connections; \
         serving at most {fitted} connections"
    );
    fitted.min(max_connections)
}

/// The soft `RLIMIT_NOFILE` after trying to raise it to `wanted` (capped by the hard limit).
#[cfg(unix)]
fn raise_open_files_limit(wanted: u64) -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= wanted {
        return current;
    }
    let target = limit.maximum.map_or(wanted, |hard| wanted.min(hard));
    if target <= current {
        return current;
    }
    match setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum: limit.maximum,
        },
    ) {
        Ok(()) => {
            tracing::info!(from = current, to = target, "raised the open-files limit");
            target
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-files limit");
            current
        }
    }
}

#[cfg(not(unix))]
fn raise_open_files_limit(_wanted: u64) -> u64 {
    u64::MAX
}
