//! A pool of logged-in PKCS#11 sessions.
//!
//! A `cryptoki::Session` is `Send` but not `Sync`: the pool hands out owned sessions, each
//! used by one blocking thread at a time and returned on drop. A request waits for a session
//! up to its deadline and is then throttled, never failed with a 5xx.
//!
//! A session the pool opens is logged in before it is lent out when the token shows the
//! application logged out: PKCS#11 login is per application, and a token that lost all of
//! its sessions (an HSM restart or fail-over, or the last one closed) has logged out.

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
    state: Mutex<PoolState>,
    freed: Condvar,
}

struct PoolState {
    idle: Vec<Session>,
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
}

impl SessionPool {
    pub(super) fn new(
        pkcs11: Pkcs11,
        slot: Slot,
        user_pin: SecretString,
        size: usize,
        operation_timeout: Option<Duration>,
    ) -> Self {
        SessionPool {
            pkcs11,
            slot,
            user_pin,
            size: size.max(1),
            operation_timeout,
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
                waiters: 0,
            }),
            freed: Condvar::new(),
        }
    }

    /// Takes an idle session, opens a new one while below the pool size, or waits.
    pub(super) fn acquire(&self, deadline: Instant) -> Result<Session, AcquireError> {
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
    fn open_logged_in(&self) -> Result<Session, HsmError> {
        let session = self.pkcs11.open_rw_session(self.slot)?;
        if !super::token::is_logged_in(&session)? {
            super::token::log_in(&session, &self.user_pin)?;
        }
        Ok(session)
    }

    /// The most sessions this pool opens.
    pub(super) fn size(&self) -> usize {
        self.size
    }

    /// How long an operation on these sessions may go on making calls.
    pub(super) fn operation_timeout(&self) -> Option<Duration> {
        self.operation_timeout
    }

    /// Returns a healthy session.
    pub(super) fn release(&self, session: Session) {
        let mut state = self.lock();
        state.idle.push(session);
        self.wake_a_waiter(state);
    }

    /// Closes a broken session; its slot in the pool becomes free for a fresh one.
    pub(super) fn discard(&self, session: Session) {
        // A lost session cannot be closed either; that is expected, not worth an error line.
        if let Err(e) = session.close() {
            tracing::debug!(error = %HsmError::from(e), "closing a broken session failed");
        }
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
