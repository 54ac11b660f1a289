//! The publishing loop: claims the cases the FHIR outbox says are behind, reads
//! each case as it is now, and writes its whole Task — by identifier the first
//! time, then by id under `If-Match` with the last seen version (a 412 reads the
//! Task's new version and the case again, and writes again). A transient
//! failure retries with exponential backoff, forever; a refusal is logged with
//! its OperationOutcome and, after `park_after_refusals` in a row, parks the
//! case for an admin. Nothing here blocks triage or labeling: those only write
//! the outbox row.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::client::{FhirClient, FhirError, Stored};
use super::task::{self, TaskSettings};
use crate::config::FhirSettings;
use crate::metrics::Metrics;
use crate::store::{FhirDue, Store, StoreError};

/// How often the outbox is polled when nothing was due.
const POLL: Duration = Duration::from_millis(250);
/// Cases claimed per pass.
const BATCH: i64 = 16;
/// Writes of one case per pass when its Task keeps changing under us (412).
const TRIES_PER_CASE: usize = 3;
/// How often the outbox gauges are refreshed.
const GAUGES_EVERY: Duration = Duration::from_secs(1);

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    /// Cases claimed.
    pub claimed: usize,
    /// Tasks written and in step with their case (as of the claim).
    pub written: usize,
    /// Cases that failed and will be retried.
    pub failed: usize,
    /// Cases parked by this pass.
    pub parked: usize,
    /// Cases given back untried because the server was unreachable.
    pub deferred: usize,
}

/// Why a case could not be written this time.
#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error(transparent)]
    Fhir(#[from] FhirError),
    #[error("reading the case: {0}")]
    Store(#[from] StoreError),
}

pub struct Publisher {
    store: Arc<Store>,
    client: FhirClient,
    task: TaskSettings,
    retry_initial: Duration,
    retry_max: Duration,
    park_after: u32,
    /// How long a claim holds a case: more than the slowest write it may need.
    hold: Duration,
    metrics: Metrics,
    /// Passes in a row that found the server unreachable (the backoff of the
    /// cases a pass gives back untried).
    outage: AtomicU32,
}

impl Publisher {
    /// A publisher for `settings` (which must be enabled); `token` is the bearer
    /// token (from the environment variable `settings.token_env`).
    pub fn new(
        store: Arc<Store>,
        settings: &FhirSettings,
        token: Option<&str>,
        metrics: Metrics,
    ) -> anyhow::Result<Publisher> {
        let request_timeout = Duration::from_millis(settings.request_timeout_ms);
        let connect_timeout = Duration::from_millis(settings.connect_timeout_ms);
        let client = FhirClient::new(
            settings.base_url.expose(),
            &settings.identifier_system,
            token,
            connect_timeout,
            request_timeout,
        )
        .context("the [fhir] client")?;
        Ok(Publisher {
            store,
            client,
            task: TaskSettings {
                identifier_system: settings.identifier_system.clone(),
                priority: settings.priority,
                practitioners: settings.practitioners.clone(),
                patient_identifier_system: Some(settings.patient_identifier_system.clone())
                    .filter(|s| !s.is_empty()),
            },
            retry_initial: Duration::from_millis(settings.retry_initial_ms),
            retry_max: Duration::from_secs(settings.retry_max_seconds)
                .max(Duration::from_millis(settings.retry_initial_ms)),
            park_after: settings.park_after_refusals,
            // Each try of a case may read and write: 2 requests per try.
            hold: (connect_timeout + request_timeout) * (2 * TRIES_PER_CASE as u32)
                + Duration::from_secs(5),
            metrics,
            outage: AtomicU32::new(0),
        })
    }

    /// The bearer token named by `settings.token_env`, if that variable is set
    /// and not empty. Read once at start-up; never logged.
    pub fn token_from_env(settings: &FhirSettings) -> Option<String> {
        if settings.token_env.is_empty() {
            return None;
        }
        std::env::var(&settings.token_env)
            .ok()
            .filter(|t| !t.trim().is_empty())
    }

    /// The delay before retry number `attempts + 1`: the initial delay doubled
    /// per attempt, at most the configured maximum.
    pub fn backoff(&self, attempts: i64) -> Duration {
        let factor = 1u32 << attempts.clamp(0, 20);
        self.retry_initial
            .saturating_mul(factor)
            .min(self.retry_max)
    }

    /// Claims the due cases and writes their Tasks, one case at a time.
    pub async fn publish_due(&self) -> Result<Pass, StoreError> {
        // The claim covers the first write; each case's hold is extended
        // before its own write starts.
        let due = self
            .store
            .due_fhir_syncs(BATCH, self.hold.as_millis() as i64)
            .await?;
        let mut pass = Pass {
            claimed: due.len(),
            ..Pass::default()
        };
        let hold_ms = self.hold.as_millis() as i64;
        let mut due = due;
        for i in 0..due.len() {
            if !self.store.fhir_extend_hold(&mut due[i], hold_ms).await? {
                continue;
            }
            let d = &due[i];
            match self.sync(d).await {
                Ok(stored) => {
                    self.outage.store(0, Ordering::Relaxed);
                    self.store
                        .fhir_synced(d, &stored.id, stored.version.as_deref())
                        .await?;
                    pass.written += 1;
                }
                Err(SyncError::Fhir(FhirError::Unreachable(why))) => {
                    // The server is down: the rest of the batch would only wait
                    // for the same error. Back off all of it.
                    let outage = self.outage.fetch_add(1, Ordering::Relaxed);
                    let wait = self.backoff(d.attempts.max(i64::from(outage)));
                    tracing::warn!(case = %d.case_id, error = %why, retry_in = ?wait, "FHIR server unreachable");
                    self.store
                        .fhir_failed(
                            d,
                            &format!("unreachable: {why}"),
                            wait.as_millis() as i64,
                            false,
                            self.park_after,
                        )
                        .await?;
                    pass.failed += 1;
                    let rest = &due[i + 1..];
                    self.store.fhir_defer(rest, wait.as_millis() as i64).await?;
                    pass.deferred = rest.len();
                    break;
                }
                Err(e) => {
                    let refused = matches!(
                        e,
                        SyncError::Fhir(FhirError::Refused { .. } | FhirError::BadAnswer(_))
                    );
                    let wait = self.backoff(d.attempts);
                    let parked = self
                        .store
                        .fhir_failed(
                            d,
                            &e.to_string(),
                            wait.as_millis() as i64,
                            refused,
                            self.park_after,
                        )
                        .await?;
                    if parked {
                        self.metrics.fhir_parked.inc();
                        tracing::error!(case = %d.case_id, error = %e, refusals = self.park_after, "FHIR Task parked after repeated refusals; GET /v1/fhir/outbox lists it");
                        pass.parked += 1;
                    } else {
                        tracing::warn!(case = %d.case_id, attempts = d.attempts + 1, error = %e, retry_in = ?wait, "FHIR Task write failed");
                        pass.failed += 1;
                    }
                }
            }
        }
        Ok(pass)
    }

    /// Writes case `d`'s Task as the case is now.
    async fn sync(&self, d: &FhirDue) -> Result<Stored, SyncError> {
        // An id that is no FHIR id (kept by an older version from a hostile
        // server) is never put in a URL: the Task is found by identifier instead.
        let mut id = d.task_id.clone().filter(|t| super::client::is_fhir_id(t));
        let mut version = d.task_version.clone();
        let mut last = None;
        for _ in 0..TRIES_PER_CASE {
            // Read after learning the version: what is written is never older
            // than what that version showed.
            let snapshot = self.store.fhir_snapshot(&d.case_id).await?;
            let task = task::build(&snapshot, &self.task, id.as_deref());
            let result = match &id {
                Some(tid) => self.client.put_by_id(tid, version.as_deref(), &task).await,
                None => self.client.put_by_identifier(&d.case_id, &task).await,
            };
            self.count(&result);
            match result {
                Ok(stored) => return Ok(stored),
                Err(FhirError::PreconditionFailed(seen)) => {
                    // Someone else wrote the Task: learn its version, then read
                    // the case again and write it again.
                    let tid = id.clone().unwrap_or_default();
                    tracing::info!(case = %d.case_id, task = %tid, seen = %seen, "FHIR Task changed on the server; re-reading");
                    let current = self.client.read(&tid).await;
                    self.count(&current);
                    match current {
                        Ok(stored) => version = stored.version,
                        Err(FhirError::Gone(_)) => (id, version) = (None, None),
                        Err(e) => return Err(e.into()),
                    }
                    last = Some(FhirError::PreconditionFailed(seen));
                }
                Err(FhirError::Gone(gone)) => {
                    // Deleted on the server: find it by identifier, or create it again.
                    tracing::warn!(case = %d.case_id, task = %gone, "FHIR Task gone; writing it by identifier");
                    (id, version) = (None, None);
                    last = Some(FhirError::Gone(gone));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(last
            .unwrap_or_else(|| FhirError::BadAnswer("no try made".into()))
            .into())
    }

    fn count(&self, result: &Result<Stored, FhirError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        self.metrics
            .fhir_requests
            .with_label_values(&[outcome])
            .inc();
    }

    /// Refreshes the outbox gauges (oldest undelivered change, parked cases).
    pub async fn refresh_gauges(&self) {
        match self.store.fhir_outbox_stats().await {
            Ok(stats) => {
                self.metrics
                    .fhir_oldest_undelivered
                    .set(stats.oldest_undelivered_seconds.unwrap_or(0.0));
                self.metrics.fhir_undelivered.set(stats.undelivered);
                self.metrics.fhir_parked_cases.set(stats.parked);
            }
            Err(e) => tracing::warn!(error = %e, "reading the FHIR outbox stats failed"),
        }
    }

    /// Publishes until `shutdown` is cancelled.
    pub async fn run_until(self, shutdown: CancellationToken) {
        let mut gauges_at = Instant::now() - GAUGES_EVERY;
        while !shutdown.is_cancelled() {
            let pass = tokio::select! {
                _ = shutdown.cancelled() => break,
                pass = self.publish_due() => pass,
            };
            if gauges_at.elapsed() >= GAUGES_EVERY {
                self.refresh_gauges().await;
                gauges_at = Instant::now();
            }
            let wait = match pass {
                // More may be due right away.
                Ok(p) if p.claimed > 0 && p.deferred == 0 => continue,
                Ok(_) => POLL,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the FHIR outbox failed");
                    POLL * 4
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
