//! The append-only audit log: who did what to which case, and when. The
//! database refuses UPDATE and DELETE on it (triggers in both backends); writes
//! that change a case log inside their own transaction.

use serde::Serialize;
use sqlx::{AnyConnection, Row};

use super::{Store, StoreResult};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    /// Unix milliseconds.
    pub at: i64,
    pub actor: String,
    pub role: String,
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub case_id: Option<String>,
    pub detail: String,
}

/// Appends one audit row inside the caller's transaction; `(actor, role)` is
/// who acted, with the role they acted in.
pub(crate) async fn append_audit(
    conn: &mut AnyConnection,
    at: i64,
    (actor, role): (&str, &str),
    action: &str,
    case_id: Option<&str>,
    detail: &str,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO audit_log (at, actor, role, action, case_id, detail) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(at)
        .bind(actor)
        .bind(role)
        .bind(action)
        .bind(case_id)
        .bind(detail)
        .execute(conn)
        .await?;
    Ok(())
}

impl Store {
    /// Records who did what (reads and exports; writes log inside their own transaction).
    pub async fn audit(
        &self,
        actor: &str,
        role: &str,
        action: &str,
        case_id: Option<&str>,
        detail: &str,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let now = self.now_in(&mut tx).await?;
        append_audit(&mut tx, now, (actor, role), action, case_id, detail).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Entries in order, optionally of one case, after the entry id `after`
    /// (a cursor: pass the last id of a page to read the next one).
    pub async fn audit_entries(
        &self,
        case_id: Option<&str>,
        after: i64,
        limit: i64,
    ) -> StoreResult<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT id, at, actor, role, action, case_id, detail FROM audit_log \
             WHERE ($1 IS NULL OR case_id = $1) AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(case_id)
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    role: r.try_get("role")?,
                    action: r.try_get("action")?,
                    case_id: r.try_get("case_id")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }
}
