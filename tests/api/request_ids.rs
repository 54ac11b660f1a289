//! Every request traceable (`api/request_log.rs`): the caller's `X-Request-Id`
//! comes back as sent, a request without one (or with an unusable one) gets a
//! fresh id.

use crate::helpers::*;

#[tokio::test]
async fn request_ids_are_echoed_or_made() {
    let app = spawn_app().await;
    let sent = app
        .client
        .get(app.url("/v1/models"))
        .header("x-request-id", "ops-check-7f3a")
        .send()
        .await
        .unwrap();
    assert_eq!(sent.headers()["x-request-id"], "ops-check-7f3a");
    let made = app.get("/v1/models").await;
    let id = made.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(
        id.len() >= 16 && id.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{id}"
    );
    // A forged log line is not an id: a fresh one replaces it.
    let forged = app
        .client
        .get(app.url("/v1/models"))
        .header("x-request-id", "a\" injected=\"x")
        .send()
        .await
        .unwrap();
    assert_ne!(forged.headers()["x-request-id"], "a\" injected=\"x");
    // Refusals carry it too.
    let refused = app
        .client
        .get(app.url("/v1/nope"))
        .header("x-request-id", "r-404")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
    assert_eq!(refused.headers()["x-request-id"], "r-404");
}
