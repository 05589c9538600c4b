//! A pool of logged-in PKCS#11 sessions.
//!
//! A `cryptoki::Session` is `Send` but not `Sync`: the pool hands out owned sessions, each
//! used by one blocking thread at a time and returned on drop. A request waits for a session
//! up to its deadline and is then throttled, never failed with a 5xx.
//!
//! A session the pool opens is logged in before it is lent out when the token shows the
//! application logged out: PKCS#11 login is per application, and a token that lost all of
//! its sessions (an HSM restart or fail-over, or the last one closed) has logged out.
//!
//! A pool may *sweep*: an operation leaves its transient session objects (data keys,
//! per-message wrapping keys) to its session instead of destroying each one with a
//! `C_DestroyObject`, and a session holding `sweep_after` of them is replaced by a fresh one
//! when it comes back, then closed, which destroys them all in one `C_CloseSession`
//! (PKCS#11 v3.0 §5.6: closing a session destroys its session objects). On a network HSM that is a round trip less per
//! request, for three calls (close, open, session info) per `sweep_after` operations.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use secrecy::SecretString;

use super::error::HsmError;

pub(super) struct SessionPool {
    pkcs11: Pkcs11,
    slot: Slot,
    user_pin: SecretString,
    size: usize,
    /// How long an operation on one of these sessions may go on making calls.
    operation_timeout: Option<Duration>,
    /// Transient objects a session may hold before it is closed (0: none, every transient
    /// object is destroyed when its operation is done with it).
    sweep_after: u32,
    sweeps: AtomicU64,
    state: Mutex<PoolState>,
    freed: Condvar,
}

/// A session lent out by the pool, with the transient objects left to it.
pub(super) struct PooledSession {
    pub(super) session: Session,
    /// Transient objects this session holds, destroyed when it is closed.
    pub(super) left: Cell<u32>,
}

struct PoolState {
    idle: Vec<PooledSession>,
    /// Sessions open, idle or lent out.
    open: usize,
    waiters: usize,
}

/// Why a session could not be had.
pub(super) enum AcquireError {
    Timeout,
    Open(HsmError),
}

/// Pool occupancy, for metrics and readiness.
#[derive(Debug, Clone, Copy)]
pub struct PoolStats {
    pub size: usize,
    pub open: usize,
    pub idle: usize,
    pub waiters: usize,
    /// Sessions closed to destroy the transient objects left to them.
    pub sweeps: u64,
    /// Transient objects the idle sessions hold, waiting for their sweep.
    pub left_objects: u64,
    /// Transient objects a session holds before it is swept (0: none are left).
    pub sweep_after: u32,
}

impl SessionPool {
    pub(super) fn new(
        pkcs11: Pkcs11,
        slot: Slot,
        user_pin: SecretString,
        size: usize,
        operation_timeout: Option<Duration>,
        sweep_after: u32,
    ) -> Self {
        SessionPool {
            pkcs11,
            slot,
            user_pin,
            size: size.max(1),
            operation_timeout,
            sweep_after,
            sweeps: AtomicU64::new(0),
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
                waiters: 0,
            }),
            freed: Condvar::new(),
        }
    }

    /// Takes an idle session, opens a new one while below the pool size, or waits.
    pub(super) fn acquire(&self, deadline: Instant) -> Result<PooledSession, AcquireError> {
        let mut state = self.lock();
        loop {
            if let Some(session) = state.idle.pop() {
                return Ok(session);
            }
            if state.open < self.size {
                state.open += 1;
                drop(state);
                return self.open_logged_in().map_err(|e| {
                    self.lock().open -= 1;
                    self.freed.notify_one();
                    AcquireError::Open(e)
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(AcquireError::Timeout);
            }
            state.waiters += 1;
            let (guard, _) = self
                .freed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state = guard;
            state.waiters -= 1;
        }
    }

    /// Opens a session, logging the application in when the token shows it logged out.
    fn open_logged_in(&self) -> Result<PooledSession, HsmError> {
        let session = self.pkcs11.open_rw_session(self.slot)?;
        if !super::token::is_logged_in(&session)? {
            super::token::log_in(&session, &self.user_pin)?;
        }
        Ok(PooledSession {
            session,
            left: Cell::new(0),
        })
    }

    /// Whether operations on these sessions leave their transient objects to the session.
    pub(super) fn sweeping(&self) -> bool {
        self.sweep_after > 0
    }

    /// The most sessions this pool opens.
    pub(super) fn size(&self) -> usize {
        self.size
    }

    /// How long an operation on these sessions may go on making calls.
    pub(super) fn operation_timeout(&self) -> Option<Duration> {
        self.operation_timeout
    }

    /// Returns a healthy session. One that holds `sweep_after` transient objects is swept: a
    /// fresh session takes its place, then it is closed, which destroys them. The fresh one
    /// is opened first so that the sweep never closes the application's last session, which
    /// would log it out (and a logout destroys the cached session keys).
    pub(super) fn release(&self, session: PooledSession) {
        let session = if self.sweeping() && session.left.get() >= self.sweep_after {
            self.sweeps.fetch_add(1, Ordering::Relaxed);
            match self.open_logged_in() {
                Ok(fresh) => {
                    close_quietly(session);
                    fresh
                }
                // The next acquire opens one, or reports why it cannot.
                Err(_) => return self.discard(session),
            }
        } else {
            session
        };
        let mut state = self.lock();
        state.idle.push(session);
        self.wake_a_waiter(state);
    }

    /// Closes a session (a broken one, or one due for its sweep); its slot in the pool
    /// becomes free for a fresh one.
    pub(super) fn discard(&self, session: PooledSession) {
        close_quietly(session);
        let mut state = self.lock();
        state.open -= 1;
        self.wake_a_waiter(state);
    }

    /// Wakes one waiter, if any. A waiter counts itself under the lock before it sleeps,
    /// so none can be missed; skipping the wake when nobody waits saves a `futex` system
    /// call per operation, since the core threads never outnumber the sessions.
    fn wake_a_waiter(&self, state: std::sync::MutexGuard<'_, PoolState>) {
        let waiting = state.waiters > 0;
        drop(state);
        if waiting {
            self.freed.notify_one();
        }
    }

    pub(super) fn stats(&self) -> PoolStats {
        let state = self.lock();
        PoolStats {
            size: self.size,
            open: state.open,
            idle: state.idle.len(),
            waiters: state.waiters,
            sweeps: self.sweeps.load(Ordering::Relaxed),
            left_objects: state.idle.iter().map(|s| u64::from(s.left.get())).sum(),
            sweep_after: self.sweep_after,
        }
    }

    /// Closes every idle session (before C_Finalize).
    pub(super) fn close_idle(&self) {
        let idle = std::mem::take(&mut self.lock().idle);
        let mut state = self.lock();
        state.open -= idle.len();
        drop(state);
        drop(idle);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // A panic while holding this lock cannot leave the counters half-updated in a way
        // that matters more than refusing service, so recover the guard.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Closes a session. A lost session cannot be closed either; that is expected, not worth an
/// error line.
fn close_quietly(session: PooledSession) {
    if let Err(e) = session.session.close() {
        tracing::debug!(error = %HsmError::from(e), "closing a session failed");
    }
}
