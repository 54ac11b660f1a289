//! Every Prometheus metric the service exports, defined once with help text and a
//! unit suffix, registered in one registry, and used through this handle.

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::policy::audit::AuditStatus;
use crate::policy::REASON_CODES;

/// Routes whose request counters exist before the first request.
const KNOWN_ROUTES: &[&str] = &[
    "/v1/triage",
    "/v1/models/{model}/triage",
    "/v2/models/{model}/infer",
];

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_request_duration: HistogramVec,
    pub queue_wait: HistogramVec,
    pub inference_duration: HistogramVec,
    pub batch_size: HistogramVec,
    pub queue_depth: IntGaugeVec,
    pub rejected: IntCounterVec,
    pub decisions: IntCounterVec,
    pub instances: IntCounterVec,
    pub model_info: IntGaugeVec,
    pub reloads: IntCounterVec,
    pub ready: Gauge,
    pub audit_outcomes: IntCounterVec,
    pub audit_error_bound: GaugeVec,
    pub policy_fallback: IntGaugeVec,
    pub review_cases: IntGaugeVec,
    pub review_oldest_pending: Gauge,
    pub review_labels: prometheus::IntCounter,
    pub review_resolution: prometheus::Histogram,
    pub review_model_agreement: IntCounterVec,
    pub review_disagreement: prometheus::Histogram,
    pub review_lease_expiries: prometheus::IntCounter,
    pub background_failures: IntCounterVec,
    pub webhook_deliveries: IntCounterVec,
    pub fhir_requests: IntCounterVec,
    pub fhir_oldest_undelivered: Gauge,
    pub fhir_undelivered: prometheus::IntGauge,
    pub fhir_parked_cases: prometheus::IntGauge,
    pub fhir_parked: prometheus::IntCounter,
}

fn latency_buckets() -> Vec<f64> {
    vec![
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0,
    ]
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        macro_rules! register {
            ($metric:expr) => {{
                let m = $metric.expect("metric definition is valid");
                registry
                    .register(Box::new(m.clone()))
                    .expect("metric registered once");
                m
            }};
        }
        let m = Metrics {
            http_requests: register!(IntCounterVec::new(
                Opts::new("triaged_http_requests_total", "HTTP requests answered, by route pattern, method and status."),
                &["route", "method", "status"]
            )),
            http_request_duration: register!(HistogramVec::new(
                HistogramOpts::new("triaged_http_request_duration_seconds", "Time from request to response, by route pattern.")
                    .buckets(latency_buckets()),
                &["route"]
            )),
            queue_wait: register!(HistogramVec::new(
                HistogramOpts::new("triaged_queue_wait_seconds", "Time a request waited for the inference thread.")
                    .buckets(latency_buckets()),
                &["model"]
            )),
            inference_duration: register!(HistogramVec::new(
                HistogramOpts::new("triaged_inference_duration_seconds", "Time to run one batch through the network.")
                    .buckets(latency_buckets()),
                &["model"]
            )),
            batch_size: register!(HistogramVec::new(
                HistogramOpts::new("triaged_batch_size", "Cases per batch run by the inference thread.")
                    .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]),
                &["model"]
            )),
            queue_depth: register!(IntGaugeVec::new(
                Opts::new("triaged_queue_depth", "Requests waiting for the inference thread."),
                &["model"]
            )),
            rejected: register!(IntCounterVec::new(
                Opts::new(
                    "triaged_rejected_requests_total",
                    "Requests refused or abandoned: queue_full (503), deadline (503), client_gone (dropped before compute)."
                ),
                &["model", "reason"]
            )),
            decisions: register!(IntCounterVec::new(
                Opts::new("triaged_decisions_total", "Triage decisions, by model, route and reason."),
                &["model", "route", "reason"]
            )),
            instances: register!(IntCounterVec::new(
                Opts::new("triaged_instances_total", "Cases run through a model."),
                &["model"]
            )),
            model_info: register!(IntGaugeVec::new(
                Opts::new("triaged_model_info", "1 for the model version and policy currently served."),
                &["model", "version", "policy", "policy_version"]
            )),
            reloads: register!(IntCounterVec::new(
                Opts::new("triaged_model_reloads_total", "Model (re)loads, by outcome (ok, refused)."),
                &["model", "outcome"]
            )),
            ready: register!(Gauge::new("triaged_ready", "1 when the default model is loaded and the server is ready.")),
            audit_outcomes: register!(IntCounterVec::new(
                Opts::new("triaged_audit_outcomes_total", "Audited automated cases with a known outcome, by whether the model was right."),
                &["model", "outcome"]
            )),
            audit_error_bound: register!(GaugeVec::new(
                Opts::new(
                    "triaged_audit_error_rate",
                    "Anytime-valid bounds (a confidence sequence at the audit monitor confidence) on the error rate of automated cases, from audits; absent until the first outcome."
                ),
                &["model", "bound"]
            )),
            policy_fallback: register!(IntGaugeVec::new(
                Opts::new("triaged_policy_fallback", "1 when audits showed the automated error above alpha and every case goes to review."),
                &["model"]
            )),
            review_cases: register!(IntGaugeVec::new(
                Opts::new("triaged_review_queue_cases", "Cases in the review queue, by status."),
                &["status"]
            )),
            review_oldest_pending: register!(Gauge::new(
                "triaged_review_oldest_pending_seconds",
                "Age of the oldest pending case in the review queue."
            )),
            review_labels: register!(prometheus::IntCounter::new("triaged_review_labels_total", "Labels submitted by reviewers.")),
            review_resolution: register!(prometheus::Histogram::with_opts(
                HistogramOpts::new("triaged_review_resolution_seconds", "Time from routing a case to its k-th label.")
                    .buckets(vec![1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 4.0 * 3600.0, 24.0 * 3600.0, 7.0 * 24.0 * 3600.0])
            )),
            review_model_agreement: register!(IntCounterVec::new(
                Opts::new(
                    "triaged_review_model_agreement_total",
                    "Resolved cases by whether the reviewers' consensus agreed with the model."
                ),
                &["model", "agrees"]
            )),
            review_disagreement: register!(prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "triaged_review_reviewer_disagreement",
                    "Pairwise disagreement D among the reviewers of each resolved case with 2 or more labels."
                )
                .buckets(vec![0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
            )),
            background_failures: register!(IntCounterVec::new(
                Opts::new(
                    "triaged_background_task_failures_total",
                    "Background loops (webhooks, fhir, queue, sighup) that ended or died before shutdown; any makes the daemon not ready."
                ),
                &["task"]
            )),
            review_lease_expiries: register!(prometheus::IntCounter::new(
                "triaged_review_lease_expiries_total",
                "Review leases that expired before a label and were rescued."
            )),
            webhook_deliveries: register!(IntCounterVec::new(
                Opts::new("triaged_webhook_deliveries_total", "Webhook delivery attempts, by outcome (delivered, failed)."),
                &["outcome"]
            )),
            fhir_requests: register!(IntCounterVec::new(
                Opts::new(
                    "triaged_fhir_requests_total",
                    "Requests to the FHIR server, by outcome (ok, precondition_failed, not_found, refused, unavailable, unreachable, bad_answer)."
                ),
                &["outcome"]
            )),
            fhir_oldest_undelivered: register!(Gauge::new(
                "triaged_fhir_oldest_undelivered_seconds",
                "Age of the oldest case change not yet on the FHIR server (0 when every Task is in step)."
            )),
            fhir_undelivered: register!(prometheus::IntGauge::new(
                "triaged_fhir_undelivered_cases",
                "Cases whose FHIR Task is behind and due for a write."
            )),
            fhir_parked_cases: register!(prometheus::IntGauge::new(
                "triaged_fhir_parked_cases",
                "Cases parked after the FHIR server refused their Task repeatedly (GET /v1/fhir/outbox)."
            )),
            fhir_parked: register!(prometheus::IntCounter::new(
                "triaged_fhir_parked_total",
                "Cases parked after repeated refusals of their FHIR Task."
            )),
            registry,
        };
        for status in ["pending", "resolved", "dead_letter"] {
            m.review_cases.with_label_values(&[status]);
        }
        for outcome in ["delivered", "failed"] {
            m.webhook_deliveries.with_label_values(&[outcome]);
        }
        for outcome in [
            "ok",
            "precondition_failed",
            "not_found",
            "refused",
            "unavailable",
            "unreachable",
            "bad_answer",
        ] {
            m.fhir_requests.with_label_values(&[outcome]);
        }
        for route in KNOWN_ROUTES {
            m.http_requests.with_label_values(&[route, "POST", "200"]);
            m.http_request_duration.with_label_values(&[route]);
        }
        m
    }

    /// Creates the per-model series at zero, so they are scrapeable before the
    /// model's first request.
    pub fn init_model(&self, model: &str) {
        self.queue_wait.with_label_values(&[model]);
        self.inference_duration.with_label_values(&[model]);
        self.batch_size.with_label_values(&[model]);
        self.queue_depth.with_label_values(&[model]);
        self.instances.with_label_values(&[model]);
        for reason in ["queue_full", "deadline", "client_gone"] {
            self.rejected.with_label_values(&[model, reason]);
        }
        for route in ["automate", "review"] {
            for reason in REASON_CODES {
                self.decisions.with_label_values(&[model, route, reason]);
            }
        }
        self.policy_fallback.with_label_values(&[model]).set(0);
        for outcome in ["correct", "wrong"] {
            self.audit_outcomes.with_label_values(&[model, outcome]);
        }
    }

    /// Counts reported outcomes of `model`'s audited automated cases.
    pub fn count_audit_outcomes(&self, model: &str, correct: u64, wrong: u64) {
        self.audit_outcomes
            .with_label_values(&[model, "correct"])
            .inc_by(correct);
        self.audit_outcomes
            .with_label_values(&[model, "wrong"])
            .inc_by(wrong);
    }

    /// The audit gauges of `model` after its monitor changed.
    pub fn set_audit_status(&self, model: &str, status: &AuditStatus) {
        self.audit_error_bound
            .with_label_values(&[model, "lower"])
            .set(status.lower);
        self.audit_error_bound
            .with_label_values(&[model, "upper"])
            .set(status.upper);
        self.policy_fallback
            .with_label_values(&[model])
            .set(i64::from(status.fallback));
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding of gathered metrics");
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
