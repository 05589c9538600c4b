//! The service's clock: what "now" is for key and grant dates, deletion windows and
//! rotation periods. Injected so that a test can move time forward instead of waiting for it.

use std::sync::Mutex;

use crate::model::{now_epoch, EpochSeconds};

pub trait Clock: Send + Sync {
    fn now(&self) -> EpochSeconds;
}

/// The wall clock: what the service uses unless told otherwise.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> EpochSeconds {
        now_epoch()
    }
}

/// A clock that stands still until it is moved (tests).
#[derive(Debug)]
pub struct ManualClock(Mutex<EpochSeconds>);

impl ManualClock {
    pub fn starting_at(now: EpochSeconds) -> Self {
        ManualClock(Mutex::new(now))
    }

    /// Moves the clock forward by `seconds`.
    pub fn advance(&self, seconds: f64) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) += seconds;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> EpochSeconds {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
