//! Webhook delivery for labeling tools and worklists: events wait in the store's
//! outbox (written in the same transaction as the change they announce) and a
//! background loop POSTs them, signed with HMAC-SHA256, retrying with exponential
//! backoff — delivered at least once, across restarts and daemons.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::WebhookTarget;
use crate::metrics::Metrics;
use crate::store::Store;

/// How often the outbox is polled.
const POLL: Duration = Duration::from_millis(250);
/// How long a claimed event is held by this daemon while it delivers.
const HOLD_MS: i64 = 30_000;

/// `sha256=<hex>` of the body under the target's secret: receivers recompute it.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Delivers events until the process ends.
pub async fn deliver_forever(
    store: Arc<Store>,
    targets: Vec<WebhookTarget>,
    max_backoff: Duration,
    metrics: Metrics,
) {
    if targets.is_empty() {
        return;
    }
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhooks disabled: cannot build an HTTP client");
            return;
        }
    };
    loop {
        match store.due_events(32, HOLD_MS).await {
            Ok(events) if !events.is_empty() => {
                for ev in events {
                    let Some(target) = targets.iter().find(|t| t.url == ev.target) else {
                        // A target removed from config: nothing will deliver it.
                        let _ = store
                            .event_failed(ev.id, "target no longer configured", 3_600_000)
                            .await;
                        continue;
                    };
                    if !target.events.contains(&ev.event) {
                        let _ = store.event_delivered(ev.id).await;
                        continue;
                    }
                    let result = client
                        .post(&target.url)
                        .header("content-type", "application/json")
                        .header("x-triaged-event", &ev.event)
                        .header("x-triaged-delivery", ev.id.to_string())
                        .header(
                            "x-triaged-signature",
                            signature(&target.secret, ev.payload.as_bytes()),
                        )
                        .body(ev.payload.clone())
                        .send()
                        .await;
                    let failure = match result {
                        Ok(r) if r.status().is_success() => None,
                        Ok(r) => Some(format!("HTTP {}", r.status())),
                        Err(e) => Some(e.to_string()),
                    };
                    match failure {
                        None => {
                            metrics
                                .webhook_deliveries
                                .with_label_values(&["delivered"])
                                .inc();
                            let _ = store.event_delivered(ev.id).await;
                        }
                        Some(err) => {
                            metrics
                                .webhook_deliveries
                                .with_label_values(&["failed"])
                                .inc();
                            let backoff = Duration::from_secs(1u64 << ev.attempts.clamp(0, 20))
                                .min(max_backoff);
                            tracing::warn!(event = %ev.event, id = ev.id, attempts = ev.attempts + 1, error = %err, retry_in = ?backoff, "webhook delivery failed");
                            let _ = store
                                .event_failed(ev.id, &err, backoff.as_millis() as i64)
                                .await;
                        }
                    }
                }
            }
            Ok(_) => tokio::time::sleep(POLL).await,
            Err(e) => {
                tracing::warn!(error = %e, "reading the webhook outbox failed");
                tokio::time::sleep(POLL * 4).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        let s = super::signature("Jefe", b"what do ya want for nothing?");
        assert_eq!(
            s,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
