//! The audit monitor through the store: outcomes (from resolved audit cases, or
//! reported by an admin) update the stored state in one transaction, and the
//! served policy adopts the result; a periodic sync adopts what other daemons
//! recorded; an admin clears a fall-back after acting. The statistics live in
//! `policy::audit`; this module only moves the state, and reports each change to
//! the metrics (the policy knows no metrics).

use crate::metrics::Metrics;
use crate::policy::audit::{AuditStatus, MonitorState};
use crate::registry::{LoadedModel, Registry};
use crate::store::{Store, StoreResult};

/// Parses stored state (or starts one), applies `change`, serialises it.
fn apply(
    model: &LoadedModel,
    stored: Option<&str>,
    change: impl FnOnce(&mut MonitorState) -> Result<(), String>,
) -> Result<String, String> {
    let cfg = model.policy.audit_monitor().config();
    let mut state = match stored {
        Some(text) => MonitorState::from_json(text).map_err(|e| e.to_string())?,
        None => MonitorState::new(&cfg),
    };
    change(&mut state)?;
    Ok(state.to_json())
}

fn adopt(model: &LoadedModel, json: &str, metrics: &Metrics) -> AuditStatus {
    match MonitorState::from_json(json) {
        Ok(state) => {
            let status = model.policy.adopt_audit_state(state);
            metrics.set_audit_status(model.name(), &status);
            status
        }
        Err(e) => {
            tracing::error!(model = %model.name(), error = %e, "stored audit monitor unreadable");
            model.policy.audit_status()
        }
    }
}

/// Records `correct` and `wrong` outcomes of audited automated cases of the
/// version in service.
pub async fn record(
    store: &Store,
    metrics: &Metrics,
    model: &LoadedModel,
    correct: u64,
    wrong: u64,
) -> StoreResult<AuditStatus> {
    let cfg = model.policy.audit_monitor().config();
    let json = store
        .update_monitor(model.name(), &model.policy.info().version, None, |stored| {
            apply(model, stored, |s| {
                s.record(&cfg, correct, wrong).map_err(|e| e.to_string())
            })
        })
        .await?;
    metrics.count_audit_outcomes(model.name(), correct, wrong);
    Ok(adopt(model, &json, metrics))
}

/// Clears a fall-back (the tests start afresh), recorded in the audit log as
/// `(actor, role)`'s action with its `reason`.
pub async fn clear(
    store: &Store,
    metrics: &Metrics,
    model: &LoadedModel,
    (actor, role): (&str, &str),
    reason: &str,
) -> StoreResult<AuditStatus> {
    let cfg = model.policy.audit_monitor().config();
    let detail = format!(
        "model {} policy {}: {reason}",
        model.name(),
        model.policy.info().version
    );
    let json = store
        .update_monitor(
            model.name(),
            &model.policy.info().version,
            Some((actor, role, "audit.clear", &detail)),
            |stored| {
                apply(model, stored, |s| {
                    s.clear(&cfg);
                    Ok(())
                })
            },
        )
        .await?;
    Ok(adopt(model, &json, metrics))
}

/// Adopts the stored state of every served model's monitor (other daemons'
/// outcomes, or the state from before a restart).
pub async fn sync(store: &Store, metrics: &Metrics, registry: &Registry) {
    for model in registry.list() {
        match store
            .monitor_state(model.name(), &model.policy.info().version)
            .await
        {
            Ok(Some(json)) => {
                adopt(&model, &json, metrics);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(model = %model.name(), error = %e, "reading the audit monitor failed")
            }
        }
    }
}
