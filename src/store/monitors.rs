//! Audit monitors' state, kept with the queue: one row per model and policy
//! version (a recalibrated policy starts afresh), so a monitor survives
//! restarts and every daemon on one PostgreSQL queue reads and updates the same
//! one. The store keeps the state as opaque JSON; the policy owns its meaning.

use super::audit::append_audit;
use super::{Backend, Store, StoreError, StoreResult};

impl Store {
    /// The stored state of `model`'s monitor under `policy_version`, if any.
    pub async fn monitor_state(
        &self,
        model: &str,
        policy_version: &str,
    ) -> StoreResult<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT state FROM audit_monitors WHERE model = $1 AND policy_version = $2",
        )
        .bind(model)
        .bind(policy_version)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| r.0))
    }

    /// Updates the monitor's state in one transaction (serialised across
    /// daemons): `update` gets the stored state (`None` at first) and returns the
    /// new one, or a reason to change nothing. `audit` names an admin action to
    /// record in the audit log with it, as `(actor, role, action, detail)`.
    pub async fn update_monitor(
        &self,
        model: &str,
        policy_version: &str,
        audit: Option<(&str, &str, &str, &str)>,
        update: impl FnOnce(Option<&str>) -> Result<String, String>,
    ) -> StoreResult<String> {
        let mut tx = self.begin_write().await?;
        let now = self.now_in(&mut tx).await?;
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let stored: Option<(String,)> = sqlx::query_as(&format!(
            "SELECT state FROM audit_monitors WHERE model = $1 AND policy_version = $2{lock}"
        ))
        .bind(model)
        .bind(policy_version)
        .fetch_optional(&mut *tx)
        .await?;
        let next = match update(stored.as_ref().map(|s| s.0.as_str())) {
            Ok(next) => next,
            Err(reason) => return tx.finish(Err(StoreError::Invalid(reason))).await,
        };
        // Two daemons inserting the first state at once: the second one's insert
        // does nothing, and its update below wins in order.
        sqlx::query(
            "INSERT INTO audit_monitors (model, policy_version, state, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (model, policy_version) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
        )
        .bind(model)
        .bind(policy_version)
        .bind(&next)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if let Some((actor, role, action, detail)) = audit {
            append_audit(&mut tx, now, (actor, role), action, None, detail).await?;
        }
        tx.commit().await?;
        Ok(next)
    }
}
