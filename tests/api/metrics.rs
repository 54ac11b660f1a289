use crate::helpers::*;

#[actix_web::test]
async fn metrics_exist_at_zero_and_move_after_requests() {
    let app = spawn_app().await;
    let before = app.metrics().await;
    let help: Vec<&str> = before
        .lines()
        .filter(|l| l.starts_with("# HELP triaged_"))
        .collect();
    for name in [
        "triaged_http_requests_total",
        "triaged_http_request_duration_seconds",
        "triaged_queue_wait_seconds",
        "triaged_inference_duration_seconds",
        "triaged_batch_size",
        "triaged_queue_depth",
        "triaged_decisions_total",
        "triaged_model_info",
        "triaged_rejected_requests_total",
        "triaged_ready",
    ] {
        assert!(
            help.iter().any(|l| l.split(' ').nth(2) == Some(name)),
            "{name} missing before any request"
        );
    }
    let decisions = |text: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("triaged_decisions_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(decisions(&before), 0.0);
    let requests = r#"triaged_http_requests_total{method="POST",route="/v1/triage",status="200"}"#;
    assert_eq!(metric_value(&before, requests), Some(0.0));
    assert_eq!(metric_value(&before, "triaged_ready"), Some(1.0));
    assert!(before.contains(&format!(
        "triaged_model_info{{model=\"{MODEL}\",policy=\"threshold\""
    )));

    let rows: Vec<Vec<f64>> = (0..3).map(nodule).collect();
    for _ in 0..2 {
        assert_eq!(
            app.post_json("/v1/triage", &triage_body(&rows))
                .await
                .status(),
            200
        );
    }
    let _ = app
        .post_json("/v1/triage", &serde_json::json!({"instances": []}))
        .await;
    let after = app.metrics().await;
    assert_eq!(metric_value(&after, requests), Some(2.0));
    assert_eq!(
        metric_value(
            &after,
            r#"triaged_http_requests_total{method="POST",route="/v1/triage",status="422"}"#
        ),
        Some(1.0)
    );
    assert_eq!(decisions(&after), 6.0);
    assert_eq!(
        metric_value(
            &after,
            &format!("triaged_instances_total{{model=\"{MODEL}\"}}")
        ),
        Some(6.0)
    );
    assert!(
        metric_value(
            &after,
            &format!("triaged_inference_duration_seconds_count{{model=\"{MODEL}\"}}")
        )
        .unwrap()
            >= 1.0
    );
}
