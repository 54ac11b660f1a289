//! Webhook delivery for labeling tools and worklists: events wait in the store's
//! outbox (written in the same transaction as the change they announce) and one
//! background loop per target POSTs them, signed with HMAC-SHA256 over a
//! timestamp, the delivery id and the body (`X-Triaged-Signature:
//! t=<unix seconds>,v1=<hex>`, the MAC of `"<t>.<id>.<body>"`: a receiver that
//! rejects old timestamps cannot be fed a captured delivery again, and one that
//! de-duplicates by `X-Triaged-Delivery` cannot be fed it under a new id),
//! retrying with exponential backoff — delivered at least once, across restarts
//! and daemons, until the lifecycle stops the loops.
//!
//! Each target has its own loop and its own backoff, so a target that hangs or
//! fails delays only its own events. Redirects are never followed: a 3xx is a
//! failed delivery (the signed body, and any credentials, stay with the target
//! the operator configured). Errors are logged without the URL, which may carry
//! credentials; the target is named by its redacted URL.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::config::WebhookTarget;
use crate::metrics::Metrics;
use crate::store::Store;

/// How often a target's outbox rows are polled when there is nothing due.
const POLL: Duration = Duration::from_millis(250);
/// One delivery attempt's deadline (connect, send, answer).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Events claimed at once for one target.
const BATCH: i64 = 4;
/// How long claimed events are held by this daemon while it delivers them:
/// longer than a whole batch can take (BATCH attempts at ATTEMPT_TIMEOUT), so
/// no other daemon claims an event this one is still going to send.
const HOLD_MS: i64 = 60_000;
const _: () = assert!(HOLD_MS > BATCH * ATTEMPT_TIMEOUT.as_millis() as i64 + 10_000);

/// Hex HMAC-SHA256 of `message` under `secret`.
fn hmac_hex(secret: &str, message: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// The `X-Triaged-Signature` value for delivery `delivery_id` of `body` sent at
/// `timestamp` (unix seconds):
/// `t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<timestamp>.<delivery_id>.<body>")>`.
/// Receivers recompute it, refuse timestamps older than a few minutes and
/// de-duplicate by the (signed) delivery id.
pub fn signature(secret: &str, timestamp: i64, delivery_id: i64, body: &[u8]) -> String {
    let mut message = format!("{timestamp}.{delivery_id}.").into_bytes();
    message.extend_from_slice(body);
    format!("t={timestamp},v1={}", hmac_hex(secret, &message))
}

/// The HTTP client every target shares: no redirects, a deadline per attempt.
fn http_client() -> reqwest::Result<reqwest::Client> {
    crate::outgoing::client_builder(Duration::from_secs(5), ATTEMPT_TIMEOUT).build()
}

/// Delivers events, one loop per target, until `shutdown` is cancelled.
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
    let client = match http_client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhooks disabled: cannot build an HTTP client");
            return;
        }
    };
    let mut loops = tokio::task::JoinSet::new();
    for target in targets {
        loops.spawn(deliver_to(
            store.clone(),
            client.clone(),
            target,
            max_backoff,
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    // A target's loop that ends before shutdown (it panicked) ends delivery,
    // so the supervisor (crate::background) reports it and the daemon turns
    // not ready, rather than one target silently never hearing again.
    while let Some(ended) = loops.join_next().await {
        if !shutdown.is_cancelled() {
            if let Err(e) = ended {
                tracing::error!(error = %e, "a webhook target's delivery loop died");
            }
            return;
        }
    }
}

/// Delivers one target's events until `shutdown`. After a failed attempt the
/// target rests (1 s doubling per consecutive failure, at most `max_backoff`)
/// and the events it had claimed go back to the outbox for later.
async fn deliver_to(
    store: Arc<Store>,
    client: reqwest::Client,
    target: WebhookTarget,
    max_backoff: Duration,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let mut failures: u32 = 0;
    while !shutdown.is_cancelled() {
        let events = match store
            .due_events_for(target.url.expose(), BATCH, HOLD_MS)
            .await
        {
            Ok(events) if events.is_empty() => {
                pause(POLL, &shutdown).await;
                continue;
            }
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(target = %target.url, error = %e, "reading the webhook outbox failed");
                pause(POLL * 4, &shutdown).await;
                continue;
            }
        };
        let mut rest = events.iter().map(|e| e.id).collect::<Vec<_>>();
        let mut rest_after_failure = None;
        for ev in &events {
            rest.retain(|id| *id != ev.id);
            if shutdown.is_cancelled() {
                rest_after_failure = Some(Duration::ZERO);
                rest.push(ev.id);
                break;
            }
            if !target.events.contains(&ev.event) {
                let _ = store.event_delivered(ev.id).await;
                continue;
            }
            match attempt(&client, &target, ev).await {
                Ok(()) => {
                    failures = 0;
                    metrics
                        .webhook_deliveries
                        .with_label_values(&["delivered"])
                        .inc();
                    let _ = store.event_delivered(ev.id).await;
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    metrics
                        .webhook_deliveries
                        .with_label_values(&["failed"])
                        .inc();
                    let retry_in = backoff(ev.attempts, max_backoff);
                    tracing::warn!(target = %target.url, event = %ev.event, id = ev.id, attempts = ev.attempts + 1, error = %err, retry_in = ?retry_in, "webhook delivery failed");
                    let _ = store
                        .event_failed(ev.id, &err, retry_in.as_millis() as i64)
                        .await;
                    rest_after_failure = Some(backoff(i64::from(failures) - 1, max_backoff));
                    break;
                }
            }
        }
        if let Some(rest_for) = rest_after_failure {
            // The target is failing: what it had claimed waits for its rest.
            let _ = store
                .event_postponed(&rest, rest_for.as_millis() as i64)
                .await;
            pause(rest_for, &shutdown).await;
        }
    }
}

/// 1 s doubling per earlier attempt, at most `max`.
fn backoff(attempts: i64, max: Duration) -> Duration {
    Duration::from_secs(1u64 << attempts.clamp(0, 20)).min(max)
}

/// One signed POST; `Err` says why it did not count as delivered (never the URL).
async fn attempt(
    client: &reqwest::Client,
    target: &WebhookTarget,
    ev: &crate::store::OutboxEvent,
) -> Result<(), String> {
    let timestamp = chrono::Utc::now().timestamp();
    let result = client
        .post(target.url.expose())
        .header("content-type", "application/json")
        .header("x-triaged-event", &ev.event)
        .header("x-triaged-delivery", ev.id.to_string())
        .header("x-triaged-timestamp", timestamp.to_string())
        .header(
            "x-triaged-signature",
            signature(
                target.secret.expose(),
                timestamp,
                ev.id,
                ev.payload.as_bytes(),
            ),
        )
        .body(ev.payload.clone())
        .send()
        .await;
    match result {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) if r.status().is_redirection() => Err(format!(
            "HTTP {} (a redirect: not followed, the delivery stays with the configured target)",
            r.status()
        )),
        Ok(r) => Err(format!("HTTP {}", r.status())),
        Err(e) => Err(crate::outgoing::error_chain(&e.without_url())),
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
    fn webhook_signatures_carry_their_timestamp_and_delivery_id() {
        let a = super::signature("s", 1_700_000_000, 7, b"{}");
        assert!(a.starts_with("t=1700000000,v1="), "{a}");
        assert_eq!(a, super::signature("s", 1_700_000_000, 7, b"{}"));
        // The same body later signs differently: an old capture does not verify.
        assert_ne!(a, super::signature("s", 1_700_000_301, 7, b"{}"));
        // Nor under another delivery id: a replay cannot escape de-duplication.
        assert_ne!(a, super::signature("s", 1_700_000_000, 8, b"{}"));
        assert_eq!(
            a.split_once(",v1=").unwrap().1,
            super::hmac_hex("s", b"1700000000.7.{}")
        );
    }
}
