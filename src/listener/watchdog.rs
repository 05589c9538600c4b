//! Where a connection is in its life, and since when: the watchdog closes it when the phase
//! it is in has lasted too long.
//!
//! hyper's own header-read timer also runs while a kept-alive connection waits for its next
//! request, so it cannot give the idle wait a longer limit than the header read. The phases
//! here can: a connection waits in [`Phase::Idle`] until the first byte of its next request
//! arrives, and only then does the header-read limit start.
//!
//! Every change of phase happens while the connection's future is polled (bytes read, the
//! service called, the response body dropped), on the connection's own task; the task re-arms
//! its one timer after each poll. So there is one timer per connection and no lock.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use hyper::body::{Body as HttpBody, Bytes, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::config::ConnectionLimits;
use crate::wire::PendingWipes;

/// How long past its deadline a request's answer may take to be handed to the connection.
/// The handler answers at the deadline itself; this only catches a route that does not.
pub const REQUEST_GRACE: Duration = Duration::from_secs(1);

/// The phases of a connection, each with its own limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading a request's line and headers (`limits.header_read_timeout`).
    Header = 0,
    /// From complete headers to the response handed over (`limits.request_timeout`).
    Request = 1,
    /// Kept alive, waiting for the first byte of the next request (`limits.idle_timeout`).
    Idle = 2,
}

impl Phase {
    /// The label of `p11kms_connection_timeouts_total` for a timeout in this phase.
    pub fn timeout_kind(self) -> &'static str {
        match self {
            Phase::Header => "header_read",
            Phase::Request => "request",
            Phase::Idle => "idle",
        }
    }

    fn from_bits(bits: u64) -> Phase {
        match bits & 0b11 {
            0 => Phase::Header,
            1 => Phase::Request,
            _ => Phase::Idle,
        }
    }
}

/// A connection's phase and when it began, in one atomic word (milliseconds since the
/// connection started, shifted left by two, and the phase), plus the connection's
/// [`PendingWipes`].
pub struct ConnectionClock {
    started: Instant,
    state: AtomicU64,
    limits: ConnectionLimits,
    wipes: PendingWipes,
}

impl ConnectionClock {
    /// A connection that starts by reading headers, now.
    pub fn new(limits: ConnectionLimits, wipes: PendingWipes) -> Arc<ConnectionClock> {
        Arc::new(ConnectionClock {
            started: Instant::now(),
            state: AtomicU64::new(Phase::Header as u64),
            limits,
            wipes,
        })
    }

    pub fn enter(&self, phase: Phase) {
        let millis = self.started.elapsed().as_millis() as u64;
        self.state
            .store(millis << 2 | phase as u64, Ordering::Relaxed);
    }

    pub fn phase(&self) -> Phase {
        Phase::from_bits(self.state.load(Ordering::Relaxed))
    }

    pub fn wipes(&self) -> &PendingWipes {
        &self.wipes
    }

    /// When the current phase runs out.
    pub fn deadline(&self) -> Instant {
        let state = self.state.load(Ordering::Relaxed);
        let since = self.started + Duration::from_millis(state >> 2);
        since
            + match Phase::from_bits(state) {
                Phase::Header => self.limits.header_read_timeout,
                Phase::Request => self.limits.request_timeout + REQUEST_GRACE,
                Phase::Idle => self.limits.idle_timeout,
            }
    }

    /// The phase that has run out at `now`, if any.
    pub fn expired(&self, now: Instant) -> Option<Phase> {
        (now >= self.deadline()).then(|| self.phase())
    }

    /// Bytes arrived: a kept-alive connection has begun its next request. The first read
    /// after a response also means hyper has moved on to a fresh read buffer, which unshares
    /// the previous request's body chunks, so they are wiped now.
    fn bytes_read(&self, n: usize) {
        if self.phase() == Phase::Idle {
            self.wipes.retry();
            if n > 0 {
                self.enter(Phase::Header);
            }
        }
    }
}

/// The connection's socket (TCP or TLS), noting each read in the [`ConnectionClock`].
pub struct Watched<IO> {
    io: IO,
    clock: Arc<ConnectionClock>,
}

impl<IO> Watched<IO> {
    pub fn new(io: IO, clock: Arc<ConnectionClock>) -> Self {
        Watched { io, clock }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.clock.bytes_read(buf.filled().len() - before);
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A response body that puts its connection into [`Phase::Idle`] when hyper is done with
/// it (all of it queued for the socket).
pub struct WatchedBody {
    body: Body,
    clock: Arc<ConnectionClock>,
}

impl WatchedBody {
    pub fn new(body: Body, clock: Arc<ConnectionClock>) -> Self {
        WatchedBody { body, clock }
    }
}

impl Drop for WatchedBody {
    fn drop(&mut self) {
        self.clock.enter(Phase::Idle);
    }
}

impl HttpBody for WatchedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(1000),
            request_timeout: Duration::from_millis(300),
            ..ConnectionLimits::default()
        }
    }

    /// `deadline` is `timeout` from now, give or take the clock's millisecond steps.
    fn about(deadline: Instant, timeout: Duration) -> bool {
        let from_now = deadline.saturating_duration_since(Instant::now());
        from_now <= timeout && from_now + Duration::from_millis(20) >= timeout
    }

    #[test]
    fn each_phase_has_its_own_deadline() {
        let limits = limits();
        let clock = ConnectionClock::new(limits, PendingWipes::default());
        assert_eq!(clock.phase(), Phase::Header);
        assert!(about(clock.deadline(), limits.header_read_timeout));
        clock.enter(Phase::Request);
        assert!(about(
            clock.deadline(),
            limits.request_timeout + REQUEST_GRACE
        ));
        clock.enter(Phase::Idle);
        assert!(about(clock.deadline(), limits.idle_timeout));
        // Reads of nothing (EOF) leave an idle connection idle; a byte starts a request.
        std::thread::sleep(Duration::from_millis(30));
        clock.bytes_read(0);
        assert_eq!(clock.phase(), Phase::Idle);
        clock.bytes_read(3);
        assert_eq!(clock.phase(), Phase::Header);
        let deadline = clock.deadline();
        assert!(about(deadline, limits.header_read_timeout));
        assert_eq!(clock.expired(deadline - Duration::from_millis(1)), None);
        assert_eq!(clock.expired(deadline), Some(Phase::Header));
        // Bytes while reading headers do not move the deadline (a trickle gains nothing).
        std::thread::sleep(Duration::from_millis(30));
        clock.bytes_read(5);
        assert_eq!(clock.deadline(), deadline);
    }
}
