//! The daemon's background loops (webhook delivery, FHIR publishing, queue
//! maintenance, SIGHUP reload), supervised: each runs until the lifecycle's
//! cancellation token says stop. One that ends before that — it returned, or
//! it panicked — is logged as an error, counted in
//! `triaged_background_task_failures_total{task}`, and makes the daemon not
//! ready (`/v2/health/ready` answers 503), so an orchestrator replaces it
//! instead of letting routed cases silently stop reaching the worklists.
//! Stopping waits for every loop at once, within one budget.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Which loops died, shared with the readiness check.
#[derive(Debug, Default)]
pub struct Health {
    dead: Mutex<Vec<&'static str>>,
}

impl Health {
    /// True while every supervised loop runs.
    pub fn all_running(&self) -> bool {
        self.dead.lock().map(|d| d.is_empty()).unwrap_or(false)
    }

    /// The loops that ended early, by name.
    pub fn dead(&self) -> Vec<&'static str> {
        self.dead.lock().map(|d| d.clone()).unwrap_or_default()
    }
}

/// Starts and stops the supervised loops.
pub struct Supervisor {
    health: Arc<Health>,
    shutdown: CancellationToken,
    metrics: Metrics,
    tasks: Vec<JoinHandle<()>>,
}

impl Supervisor {
    pub fn new(metrics: Metrics) -> Supervisor {
        Supervisor {
            health: Arc::default(),
            shutdown: CancellationToken::new(),
            metrics,
            tasks: Vec::new(),
        }
    }

    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// The token the loops watch.
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs `task` (named `name`, a metric label) under supervision.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.metrics.background_failures.with_label_values(&[name]);
        let inner = tokio::spawn(task);
        let (health, shutdown, metrics) = (
            self.health.clone(),
            self.shutdown.clone(),
            self.metrics.clone(),
        );
        self.tasks.push(tokio::spawn(async move {
            let ended = inner.await;
            if shutdown.is_cancelled() {
                return;
            }
            match ended {
                Ok(()) => tracing::error!(task = name, "background loop ended before shutdown; the daemon is no longer ready"),
                Err(e) => tracing::error!(task = name, error = %e, "background loop died; the daemon is no longer ready"),
            }
            metrics.background_failures.with_label_values(&[name]).inc();
            if let Ok(mut dead) = health.dead.lock() {
                dead.push(name);
            }
        }));
    }

    /// Cancels every loop and waits for all of them together, at most `budget`
    /// in all; a loop still running then is abandoned (and logged).
    pub async fn stop(self, budget: Duration) {
        self.shutdown.cancel();
        // Every loop saw the cancellation at once; waiting for them one after
        // another takes as long as the slowest.
        let all = async {
            for task in self.tasks {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(budget, all).await.is_err() {
            tracing::warn!(budget = ?budget, "background loops did not stop within the shutdown budget; abandoned");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_loop_that_dies_is_counted_and_unreadies_the_daemon() {
        let metrics = Metrics::new();
        let mut s = Supervisor::new(metrics.clone());
        let stop = s.shutdown();
        s.spawn("steady", async move { stop.cancelled().await });
        s.spawn("fragile", async { panic!("boom") });
        let health = s.health();
        for _ in 0..100 {
            if !health.all_running() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(health.dead(), vec!["fragile"]);
        assert_eq!(
            metrics
                .background_failures
                .with_label_values(&["fragile"])
                .get(),
            1
        );
        // Stopping cancels the rest; a loop that ends then is no failure.
        s.stop(Duration::from_secs(1)).await;
        assert_eq!(health.dead(), vec!["fragile"]);
    }
}
