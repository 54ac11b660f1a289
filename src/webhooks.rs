//! Webhook delivery for labeling tools and worklists: events wait in the store's
//! outbox (written in the same transaction as the change they announce) and a
//! background loop POSTs them, signed with HMAC-SHA256 over a timestamp and the
//! body (`X-Triaged-Signature: t=<unix seconds>,v1=<hex>`, the MAC of
//! `"<t>.<body>"`: a receiver that rejects old timestamps cannot be fed a
//! captured delivery again), retrying with exponential backoff — delivered at
//! least once, across restarts and daemons, until the lifecycle stops the loop.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::config::WebhookTarget;
use crate::metrics::Metrics;
use crate::store::Store;

/// How often the outbox is polled.
const POLL: Duration = Duration::from_millis(250);
/// How long a claimed event is held by this daemon while it delivers.
const HOLD_MS: i64 = 30_000;

/// Hex HMAC-SHA256 of `message` under `secret`.
fn hmac_hex(secret: &str, message: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// The `X-Triaged-Signature` value for `body` sent at `timestamp` (unix
/// seconds): `t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
/// Receivers recompute it and refuse timestamps older than a few minutes.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut message = format!("{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    format!("t={timestamp},v1={}", hmac_hex(secret, &message))
}

/// Delivers events until `shutdown` is cancelled.
pub async fn deliver_until(
    store: Arc<Store>,
    targets: Vec<WebhookTarget>,
    max_backoff: Duration,
    metrics: Metrics,
    shutdown: CancellationToken,
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
    while !shutdown.is_cancelled() {
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
                    let timestamp = chrono::Utc::now().timestamp();
                    let result = client
                        .post(&target.url)
                        .header("content-type", "application/json")
                        .header("x-triaged-event", &ev.event)
                        .header("x-triaged-delivery", ev.id.to_string())
                        .header("x-triaged-timestamp", timestamp.to_string())
                        .header(
                            "x-triaged-signature",
                            signature(&target.secret, timestamp, ev.payload.as_bytes()),
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
            Ok(_) => pause(POLL, &shutdown).await,
            Err(e) => {
                tracing::warn!(error = %e, "reading the webhook outbox failed");
                pause(POLL * 4, &shutdown).await;
            }
        }
    }
}

/// Sleeps for `d`, or less when `shutdown` comes first.
async fn pause(d: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hmac_is_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            super::hmac_hex("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn webhook_signatures_carry_their_timestamp() {
        let a = super::signature("s", 1_700_000_000, b"{}");
        assert!(a.starts_with("t=1700000000,v1="), "{a}");
        assert_eq!(a, super::signature("s", 1_700_000_000, b"{}"));
        // The same body later signs differently: an old capture does not verify.
        assert_ne!(a, super::signature("s", 1_700_000_301, b"{}"));
        assert_eq!(
            a.split_once(",v1=").unwrap().1,
            super::hmac_hex("s", b"1700000000.{}")
        );
    }
}
