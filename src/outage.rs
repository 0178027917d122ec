//! Passing faults of the object storage or the database, as the background loops (the
//! batch worker, webhook deliveries, usage writes) meet them. A restart of either, a
//! network blip or a full connection pool should cost a job a few seconds, not its run:
//! the batch worker retries from the last checkpoint with exponential backoff and
//! jitter, every loop logs an outage once when it begins and once when it ends (not
//! once per failed call), and a job is given up only when the storage stays away longer
//! than its budget (`--storage-retry-secs`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;

/// What failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    Storage,
    Database,
}

impl Dependency {
    /// The name in logs, metrics and job errors.
    pub fn name(self) -> &'static str {
        match self {
            Dependency::Storage => "storage",
            Dependency::Database => "database",
        }
    }
}

/// A failed call to a dependency that may work if tried again.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} unavailable: {message}", dependency.name())]
pub struct Fault {
    pub dependency: Dependency,
    pub message: String,
}

/// First wait after a fault; each further one doubles, up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(250);
/// Longest wait between two tries, so a dependency that comes back is used within
/// seconds.
const MAX_DELAY: Duration = Duration::from_secs(5);

/// One outage of one dependency: since when it fails, and how often it was tried since.
#[derive(Debug, Clone, Copy)]
pub struct Outage {
    pub began: Instant,
    pub retries: u32,
}

impl Outage {
    /// How long the dependency has been away.
    pub fn down_for(&self) -> Duration {
        self.began.elapsed()
    }

    /// The wait before the next try.
    pub fn backoff(&self) -> Duration {
        backoff(self.retries)
    }
}

/// The outages under way, one per dependency at most.
#[derive(Debug, Default)]
pub struct Outages {
    storage: Option<Outage>,
    database: Option<Outage>,
}

impl Outages {
    fn slot(&mut self, dependency: Dependency) -> &mut Option<Outage> {
        match dependency {
            Dependency::Storage => &mut self.storage,
            Dependency::Database => &mut self.database,
        }
    }

    /// Records a fault, logging it when it begins an outage; returns the outage.
    pub fn fault(&mut self, fault: &Fault) -> Outage {
        let name = fault.dependency.name();
        let outage = self.slot(fault.dependency).get_or_insert_with(|| {
            tracing::warn!(
                dependency = name,
                cause = %fault.message,
                "{name} unavailable; retrying with backoff (logged again when it is back)"
            );
            Outage {
                began: Instant::now(),
                retries: 0,
            }
        });
        outage.retries += 1;
        crate::metrics::dependency_retry(name);
        tracing::debug!(dependency = name, cause = %fault.message, retries = outage.retries, "retrying");
        *outage
    }

    /// A call to `dependency` worked: ends its outage, if any, logging how long it
    /// lasted.
    pub fn recovered(&mut self, dependency: Dependency) {
        if let Some(outage) = self.slot(dependency).take() {
            let name = dependency.name();
            tracing::info!(
                dependency = name,
                down_secs = outage.down_for().as_secs_f64(),
                retries = outage.retries,
                "{name} available again"
            );
        }
    }
}

/// This process's outages: every loop that meets one reports it here, so it is logged
/// once however many loops (batch worker, webhook deliveries, usage writes) meet it.
static OUTAGES: Mutex<Outages> = Mutex::new(Outages {
    storage: None,
    database: None,
});

fn outages() -> std::sync::MutexGuard<'static, Outages> {
    OUTAGES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Records a fault in this process's outages (see [`Outages::fault`]).
pub fn fault(fault: &Fault) -> Outage {
    outages().fault(fault)
}

/// A call to `dependency` worked (see [`Outages::recovered`]).
pub fn recovered(dependency: Dependency) {
    outages().recovered(dependency)
}

/// The wait before try `retry` (1-based): exponential, capped, with "equal jitter"
/// (half fixed, half random) so that instances that met the same outage do not all
/// come back in the same millisecond.
fn backoff(retry: u32) -> Duration {
    let ceiling = FIRST_DELAY
        .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
        .min(MAX_DELAY);
    let half = ceiling / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage_fault() -> Fault {
        Fault {
            dependency: Dependency::Storage,
            message: "connection refused".into(),
        }
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        for retry in 1..40 {
            let ceiling = FIRST_DELAY
                .saturating_mul(1 << (retry - 1).min(16))
                .min(MAX_DELAY);
            let delay = backoff(retry);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{retry}: {delay:?}"
            );
        }
        let delays: std::collections::HashSet<_> = (0..20).map(|_| backoff(10)).collect();
        assert!(delays.len() > 1, "no jitter");
    }

    #[test]
    fn an_outage_lasts_until_its_own_dependency_recovers() {
        let mut outages = Outages::default();
        let first = outages.fault(&storage_fault());
        std::thread::sleep(Duration::from_millis(20));
        let database = Fault {
            dependency: Dependency::Database,
            message: "pool timed out".into(),
        };
        outages.fault(&database);
        outages.recovered(Dependency::Database);
        let again = outages.fault(&storage_fault());
        assert_eq!(again.began, first.began, "the storage outage goes on");
        assert_eq!(again.retries, 2);
        assert!(again.down_for() >= Duration::from_millis(20));
        outages.recovered(Dependency::Storage);
        let next = outages.fault(&storage_fault());
        assert_eq!(next.retries, 1, "a new outage");
        assert!(next.began > first.began);
    }
}
