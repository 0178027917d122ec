//! Passing faults of the object storage or the database, as the background loops (the
//! batch worker, webhook deliveries, usage writes) meet them. A restart of either, a
//! network blip or a full connection pool should cost a job a few seconds, not its run:
//! the batch worker retries from the last checkpoint with exponential backoff and
//! jitter, every loop logs an outage once when it begins and once when it ends (not
//! once per failed call), and a job is given up only when the storage stays away longer
//! than its budget (`--storage-retry-secs`).

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

impl From<crate::db::DbError> for Fault {
    fn from(err: crate::db::DbError) -> Self {
        Fault {
            dependency: Dependency::Database,
            message: err.to_string(),
        }
    }
}

/// First wait after a fault; each further one doubles, up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(250);
/// Longest wait between two tries, so a dependency that comes back is used within
/// seconds.
const MAX_DELAY: Duration = Duration::from_secs(5);

/// One outage: since when a dependency fails, and how often it was tried since.
#[derive(Debug)]
struct Outage {
    dependency: Dependency,
    began: Instant,
    retries: u32,
}

/// The outage the worker is in, if any.
#[derive(Debug)]
pub struct Outages {
    /// How long the storage may stay away before a job is given up.
    storage_budget: Duration,
    current: Option<Outage>,
}

/// What to do after a fault.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Try again after this long.
    RetryAfter(Duration),
    /// The storage stayed away past its budget: give the job up with this message.
    GiveUp(String),
}

impl Default for Outages {
    /// For loops that never give anything up: they only log and retry.
    fn default() -> Self {
        Self::new(Duration::MAX)
    }
}

impl Outages {
    pub fn new(storage_budget: Duration) -> Self {
        Self {
            storage_budget,
            current: None,
        }
    }

    /// Records a fault (logging it when it begins an outage) and says what to do next.
    /// The database has no budget: without it a job can be neither continued nor
    /// failed, so it is waited for.
    pub fn fault(&mut self, fault: &Fault) -> Next {
        let outage = match &mut self.current {
            Some(outage) if outage.dependency == fault.dependency => outage,
            current => {
                tracing::warn!(
                    dependency = fault.dependency.name(),
                    cause = %fault.message,
                    "{} unavailable; retrying with backoff (logged again when it is back)",
                    fault.dependency.name()
                );
                current.insert(Outage {
                    dependency: fault.dependency,
                    began: Instant::now(),
                    retries: 0,
                })
            }
        };
        outage.retries += 1;
        crate::metrics::dependency_retry(fault.dependency.name());
        tracing::debug!(dependency = fault.dependency.name(), cause = %fault.message, retries = outage.retries, "retrying");
        let down_for = outage.began.elapsed();
        if fault.dependency == Dependency::Storage && down_for >= self.storage_budget {
            let message = format!(
                "storage unavailable for {} s (more than --storage-retry-secs, {} s): {}",
                down_for.as_secs(),
                self.storage_budget.as_secs(),
                fault.message
            );
            // A job given up ends the outage as far as the next job is concerned.
            self.current = None;
            return Next::GiveUp(message);
        }
        Next::RetryAfter(backoff(outage.retries))
    }

    /// Something worked again: ends the outage, if any, logging how long it lasted.
    pub fn recovered(&mut self) {
        if let Some(outage) = self.current.take() {
            tracing::info!(
                dependency = outage.dependency.name(),
                down_secs = outage.began.elapsed().as_secs_f64(),
                retries = outage.retries,
                "{} available again",
                outage.dependency.name()
            );
        }
    }
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
    fn storage_is_given_up_after_its_budget_and_the_database_never() {
        let mut outages = Outages::new(Duration::from_millis(50));
        assert!(matches!(
            outages.fault(&storage_fault()),
            Next::RetryAfter(_)
        ));
        std::thread::sleep(Duration::from_millis(60));
        match outages.fault(&storage_fault()) {
            Next::GiveUp(message) => {
                assert!(message.contains("connection refused"), "{message}");
                assert!(message.contains("--storage-retry-secs"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let database = Fault {
            dependency: Dependency::Database,
            message: "pool timed out".into(),
        };
        assert!(matches!(outages.fault(&database), Next::RetryAfter(_)));
        std::thread::sleep(Duration::from_millis(60));
        assert!(matches!(outages.fault(&database), Next::RetryAfter(_)));
    }

    #[test]
    fn recovery_starts_the_budget_over() {
        let mut outages = Outages::new(Duration::from_millis(50));
        outages.fault(&storage_fault());
        std::thread::sleep(Duration::from_millis(60));
        outages.recovered();
        assert!(matches!(
            outages.fault(&storage_fault()),
            Next::RetryAfter(_)
        ));
    }
}
