//! Clinical worklists speak FHIR (docs/fhir.md): every routed case of a
//! published model is an HL7 FHIR R4 `Task` on the hospital's FHIR server,
//! identified by `{identifier_system}|{case id}` and kept in step with the case
//! until it resolves — `ready`, `in-progress` while a reviewer holds a lease,
//! back to `ready` when the lease lapses, `completed` with the reviewers'
//! labels, or `failed` in the dead letter.
//!
//! - [`task`]: the Task a case is published as (no HTTP);
//! - [`client`]: the FHIR REST calls and how their answers are read;
//! - [`publisher`]: the loop that drains the store's FHIR outbox
//!   (`crate::store::fhir_outbox`), with backoff, parking and metrics.

pub mod client;
pub mod publisher;
pub mod task;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::FhirSettings;
use crate::metrics::Metrics;
use crate::store::{FhirScope, Store};

pub use publisher::{Pass, Publisher};

/// Whose cases the store notes for publishing under `settings`.
pub fn scope(settings: &FhirSettings) -> FhirScope {
    match (settings.enabled(), settings.models.is_empty()) {
        (false, _) => FhirScope::Off,
        (true, true) => FhirScope::AllModels,
        (true, false) => FhirScope::Models(settings.models.clone()),
    }
}

/// Publishes Tasks until `shutdown`; returns at once when FHIR is off.
pub async fn publish_until(
    store: Arc<Store>,
    settings: FhirSettings,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    if !settings.enabled() {
        return;
    }
    let token = Publisher::token_from_env(&settings);
    match Publisher::new(store, &settings, token.as_deref(), metrics) {
        Ok(publisher) => {
            tracing::info!(
                base_url = %settings.base_url,
                identifier_system = %settings.identifier_system,
                bearer_token = token.is_some(),
                "publishing routed cases as FHIR R4 Tasks"
            );
            publisher.run_until(shutdown).await;
        }
        Err(e) => tracing::error!(error = format!("{e:#}"), "FHIR publishing disabled"),
    }
}
