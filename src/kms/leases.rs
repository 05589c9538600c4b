//! One replica at a time per periodic job: each round of a job first takes (or renews) its
//! lease in the shared store. A replica that dies stops renewing, and another takes the job
//! over once the lease runs out. The jobs' own writes stay conditional, so even two runs at
//! once (a holder slower than its lease) never delete or rotate a key twice.

use std::time::Duration;

use crate::store::{MetadataStore, StoreError};

/// The shortest lease, whatever the job interval.
const MIN_LEASE: Duration = Duration::from_secs(1);
/// A lease lasts this many job intervals: a holder that misses one round keeps its job.
const LEASE_INTERVALS: u32 = 3;

/// The periodic jobs, each under its own lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// Deleting keys whose waiting period ended.
    Deletion,
    /// Automatic rotation.
    Rotation,
}

impl Job {
    pub const ALL: [Job; 2] = [Job::Deletion, Job::Rotation];

    pub fn as_str(self) -> &'static str {
        match self {
            Job::Deletion => "deletion",
            Job::Rotation => "rotation",
        }
    }
}

/// What one round of a job did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// This replica held the lease and ran the job.
    Ran,
    /// Another replica holds the lease.
    Skipped,
    /// The lease could not be taken (the store is unavailable): nothing ran.
    Failed,
}

impl Round {
    pub fn as_str(self) -> &'static str {
        match self {
            Round::Ran => "ran",
            Round::Skipped => "skipped",
            Round::Failed => "failed",
        }
    }
}

/// This process's identity as a lease holder, and how long its leases last.
#[derive(Debug, Clone)]
pub struct JobLeases {
    holder: String,
    ttl: Duration,
}

impl JobLeases {
    /// Leases for jobs run every `interval`; the holder id is new for every process, so a
    /// restarted replica does not inherit the lease of its previous life.
    pub fn new(interval: Duration) -> Self {
        JobLeases {
            holder: format!("pid-{}-{}", std::process::id(), uuid::Uuid::new_v4()),
            ttl: (interval * LEASE_INTERVALS).max(MIN_LEASE),
        }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether this process holds `job`'s lease now (taken or renewed).
    pub fn hold(&self, store: &dyn MetadataStore, job: Job) -> Result<bool, StoreError> {
        store.acquire_job_lease(job.as_str(), &self.holder, self.ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_lasts_three_intervals_and_at_least_a_second() {
        assert_eq!(
            JobLeases::new(Duration::from_secs(60)).ttl(),
            Duration::from_secs(180)
        );
        assert_eq!(
            JobLeases::new(Duration::from_millis(100)).ttl(),
            Duration::from_secs(1)
        );
        assert_ne!(
            JobLeases::new(Duration::from_secs(1)).holder(),
            JobLeases::new(Duration::from_secs(1)).holder()
        );
    }
}
