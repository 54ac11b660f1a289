//! The webhook outbox: events written in the same transaction as the change they
//! announce, one row per subscribed target, claimed by a delivering daemon for a
//! while, and marked delivered or retried later.

use sqlx::{AnyConnection, Row};

use super::{Backend, Store, StoreResult, Subscription};

/// A webhook event due for delivery.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub id: i64,
    pub event: String,
    /// The target's URL (may carry credentials: printed only redacted).
    pub target: crate::secret::SecretUrl,
    pub payload: String,
    pub attempts: i64,
}

/// Queues `event` for every target subscribed to it, inside the caller's transaction.
/// Whether any target subscribes to `event` (so its payload is worth building).
pub(crate) fn subscribed(targets: &[Subscription], event: &str) -> bool {
    targets.iter().any(|t| t.events.iter().any(|e| e == event))
}

pub(crate) async fn enqueue_event(
    conn: &mut AnyConnection,
    targets: &[Subscription],
    event: &str,
    payload: &str,
    now: i64,
) -> StoreResult<()> {
    for target in targets
        .iter()
        .filter(|t| t.events.iter().any(|e| e == event))
    {
        sqlx::query("INSERT INTO outbox (event, target, payload, created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $4)")
            .bind(event)
            .bind(target.url.expose())
            .bind(payload)
            .bind(now)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

impl Store {
    /// Claims up to `limit` due webhook events of any target for `hold_ms` (so
    /// several daemons do not deliver the same event at once).
    pub async fn due_events(&self, limit: i64, hold_ms: i64) -> StoreResult<Vec<OutboxEvent>> {
        self.claim_due(None, limit, hold_ms).await
    }

    /// Claims up to `limit` due events of one target for `hold_ms`: each target
    /// is delivered by a loop of its own, so a hanging one delays only itself.
    pub async fn due_events_for(
        &self,
        target: &str,
        limit: i64,
        hold_ms: i64,
    ) -> StoreResult<Vec<OutboxEvent>> {
        self.claim_due(Some(target), limit, hold_ms).await
    }

    async fn claim_due(
        &self,
        target: Option<&str>,
        limit: i64,
        hold_ms: i64,
    ) -> StoreResult<Vec<OutboxEvent>> {
        let mut tx = self.begin_write().await?;
        let now = self.now_in(&mut tx).await?;
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let rows = sqlx::query(&format!(
            "SELECT id, event, target, payload, attempts FROM outbox \
             WHERE delivered_at IS NULL AND next_attempt_at <= $1 AND locked_until <= $1 \
             AND ($3 IS NULL OR target = $3) ORDER BY id LIMIT $2{lock}"
        ))
        .bind(now)
        .bind(limit)
        .bind(target)
        .fetch_all(&mut *tx)
        .await?;
        let mut events = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: i64 = r.try_get("id")?;
            sqlx::query("UPDATE outbox SET locked_until = $1 WHERE id = $2")
                .bind(now + hold_ms)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            events.push(OutboxEvent {
                id,
                event: r.try_get("event")?,
                target: crate::secret::SecretUrl::new(r.try_get::<String, _>("target")?),
                payload: r.try_get("payload")?,
                attempts: r.try_get("attempts")?,
            });
        }
        tx.commit().await?;
        Ok(events)
    }

    pub async fn event_delivered(&self, id: i64) -> StoreResult<()> {
        sqlx::query("UPDATE outbox SET delivered_at = $1, attempts = attempts + 1, last_error = NULL WHERE id = $2")
            .bind(self.now().await?)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn event_failed(&self, id: i64, error: &str, retry_in_ms: i64) -> StoreResult<()> {
        let now = self.now().await?;
        sqlx::query("UPDATE outbox SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2, locked_until = 0 WHERE id = $3")
            .bind(error)
            .bind(now + retry_in_ms)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Gives claimed events back, due again in `retry_in_ms` (their target is
    /// failing: they wait for its rest), without counting an attempt.
    pub async fn event_postponed(&self, ids: &[i64], retry_in_ms: i64) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let now = self.now().await?;
        for id in ids {
            sqlx::query("UPDATE outbox SET next_attempt_at = $1, locked_until = 0 WHERE id = $2 AND delivered_at IS NULL")
                .bind(now + retry_in_ms)
                .bind(id)
                .execute(self.pool())
                .await?;
        }
        Ok(())
    }

    /// Undelivered webhook events.
    pub async fn pending_events(&self) -> StoreResult<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL")
            .fetch_one(self.pool())
            .await?;
        Ok(n)
    }
}
