//! The triage core, shared by `/v1` and `/v2` and knowing nothing of HTTP:
//! replay an idempotency key, predict, refuse non-finite outputs, decide, and
//! commit the routed cases (with the rendered answer) before the answer leaves.
//! The protocols only parse their requests into rows and render the outcome.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::batch::InferError;
use crate::metrics::Metrics;
use crate::model::{InputSchema, Prediction};
use crate::policy::{Decision, Route, ThresholdScore};
use crate::registry::LoadedModel;
use crate::store::{IdempotencyKey, NewCase, Recorded, Store, StoreError};

/// Why a triage produced no answer.
#[derive(Debug, thiserror::Error)]
pub enum TriageError {
    /// The request itself is unusable (a permanent error: retrying cannot help).
    #[error("{0}")]
    Invalid(String),
    /// The model's outputs for this instance are not finite numbers (inputs far
    /// outside anything it was trained on). Never automated, never queued.
    #[error("instance {index}: the model's outputs are not finite numbers (inputs far outside the range the model was trained on); nothing was triaged")]
    NonFinite { index: usize },
    #[error(transparent)]
    Infer(#[from] InferError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Uncertainty estimates of one case.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Uncertainty {
    /// Predicted probability that two human experts disagree (DUP head;
    /// recalibrated against observed disagreement when the bundle has calibrators).
    pub disagreement: f32,
    /// Predicted error of one reviewer `ĥ`, when the model has that head or
    /// calibrators.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub human_error: Option<f32>,
    /// Calibrated chance `â` that the predicted class is wrong against the
    /// reference, when the bundle has calibrators.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_error: Option<f32>,
    /// `1 − Σ p²` of the class probabilities.
    pub uvc: f32,
    /// Entropy of the class probabilities, in nats.
    pub entropy: f32,
}

impl Uncertainty {
    pub fn of(p: &Prediction) -> Uncertainty {
        Uncertainty {
            disagreement: p.disagreement,
            human_error: p.human_error,
            model_error: p.model_error,
            uvc: p.uvc(),
            entropy: p.entropy(),
        }
    }
}

/// One triaged case: what the model said and what the policy decided (with the
/// review-queue case id when routed).
#[derive(Debug, Clone)]
pub struct Triaged {
    pub prediction: Prediction,
    pub uncertainty: Uncertainty,
    pub decision: Decision,
}

/// What the protocol layer hands the core: parsed, checked model inputs.
pub struct TriageRequest {
    pub model: Arc<LoadedModel>,
    /// Row-major model inputs, `cases × input_dim` values.
    pub rows: Vec<f32>,
    pub cases: usize,
    /// The client's idempotency key, if it sent one.
    pub key: Option<IdempotencyKey>,
    /// When the request must be answered by (set when it arrived, so decoding
    /// and queueing count against it).
    pub deadline: Instant,
    /// Each case's patient identifier, if the caller sent one (empty: none).
    pub patients: Vec<Option<String>>,
}

/// The per-request limit on cases (`server.max_instances`), checked here and
/// nowhere else: `/v1` and `/v2` call it as soon as they know the count, before
/// anything is decoded, and the core again before it predicts.
pub fn check_batch(cases: usize, max: usize) -> Result<(), TriageError> {
    if cases == 0 {
        return Err(TriageError::Invalid(
            "the request is empty: send at least one case".into(),
        ));
    }
    if cases > max {
        return Err(TriageError::Invalid(format!(
            "{cases} cases in one request; at most {max} are accepted"
        )));
    }
    Ok(())
}

pub struct TriageCore {
    store: Arc<Store>,
    metrics: Metrics,
    request_timeout: Duration,
    max_instances: usize,
}

/// Longest accepted client request id, in bytes.
pub const MAX_REQUEST_ID_LEN: usize = 200;

impl TriageCore {
    pub fn new(
        store: Arc<Store>,
        metrics: Metrics,
        request_timeout: Duration,
        max_instances: usize,
    ) -> TriageCore {
        TriageCore {
            store,
            metrics,
            request_timeout,
            max_instances,
        }
    }

    /// The deadline of a request arriving now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.request_timeout
    }

    pub fn max_instances(&self) -> usize {
        self.max_instances
    }

    /// Checks the number of cases against the per-request limit
    /// (`server.max_instances`): the one place it is checked. Each protocol
    /// calls it as soon as it knows the count, before anything is decoded.
    pub fn check_batch(&self, cases: usize) -> Result<(), TriageError> {
        check_batch(cases, self.max_instances)
    }

    /// A key for `request_id` (checked: 1 to 200 characters) scoped to the
    /// caller, the model and the protocol, over the canonical request `body`.
    pub fn key(
        subject: &str,
        model: &str,
        protocol: &'static str,
        request_id: &str,
        body: &[u8],
    ) -> Result<IdempotencyKey, TriageError> {
        if request_id.is_empty() || request_id.len() > MAX_REQUEST_ID_LEN {
            return Err(TriageError::Invalid(format!(
                "request_id must have 1 to {MAX_REQUEST_ID_LEN} characters"
            )));
        }
        // Stored as text: a NUL cannot be (PostgreSQL), nor should any control.
        if request_id.chars().any(char::is_control) {
            return Err(TriageError::Invalid(
                "request_id holds a control character".into(),
            ));
        }
        Ok(IdempotencyKey {
            subject: subject.to_string(),
            model: model.to_string(),
            protocol,
            request_id: request_id.to_string(),
            body_sha256: hex::encode(Sha256::digest(body)),
        })
    }

    /// The answer already given under `key`, if any (a conflict when the key
    /// was used with another body). Call before parsing, so a replay costs no
    /// decoding and no inference.
    pub async fn replay(
        &self,
        key: Option<&IdempotencyKey>,
    ) -> Result<Option<String>, TriageError> {
        match key {
            Some(k) => Ok(self.store.find_response(k).await?),
            None => Ok(None),
        }
    }

    /// Predicts, decides and commits. `render` turns the outcome into the
    /// protocol's answer; the answer is committed with the routed cases (and
    /// remembered under the key) before it is returned, so a client only ever
    /// hears of committed cases. A concurrent request with the same key gets the
    /// first answer instead.
    pub async fn triage(
        &self,
        req: TriageRequest,
        render: impl FnOnce(&LoadedModel, &[Triaged]) -> String,
    ) -> Result<String, TriageError> {
        let TriageRequest {
            model,
            rows,
            cases,
            key,
            deadline,
            patients,
        } = req;
        self.check_batch(cases)?;
        let dim = model.manifest.input_dim();
        if rows.len() != cases * dim {
            return Err(TriageError::Invalid(format!(
                "{} input values for {cases} cases of {dim}",
                rows.len()
            )));
        }
        let predictions = model.batcher.infer(rows.clone(), cases, deadline).await?;
        if let Some(index) = predictions.iter().position(|p| !p.is_finite()) {
            return Err(TriageError::NonFinite { index });
        }
        let mut new_cases = Vec::new();
        let mut triaged = Vec::with_capacity(cases);
        for (i, prediction) in predictions.into_iter().enumerate() {
            let mut decision = model.policy.decide(&prediction);
            self.metrics
                .decisions
                .with_label_values(&[model.name(), decision.route.name(), decision.reason_code])
                .inc();
            let uncertainty = Uncertainty::of(&prediction);
            if decision.route == Route::Review {
                let mut case = routed_case(
                    &model,
                    i,
                    &rows[i * dim..(i + 1) * dim],
                    &prediction,
                    &decision,
                    &uncertainty,
                );
                case.patient = patients.get(i).cloned().flatten();
                decision.case_id = Some(case.id.clone());
                new_cases.push(case);
            }
            triaged.push(Triaged {
                prediction,
                uncertainty,
                decision,
            });
        }
        let body = render(&model, &triaged);
        if new_cases.is_empty() && key.is_none() {
            return Ok(body);
        }
        match self.store.record(key, new_cases, body.clone()).await? {
            Recorded::New => Ok(body),
            Recorded::Existing(first) => Ok(first),
        }
    }
}

/// The queue's record of a case routed to review.
fn routed_case(
    model: &LoadedModel,
    index: usize,
    input: &[f32],
    p: &Prediction,
    d: &Decision,
    u: &Uncertainty,
) -> NewCase {
    let features = match &model.manifest.input {
        InputSchema::Features { features } => features.clone(),
        InputSchema::Image { .. } => Vec::new(),
    };
    NewCase {
        // Time-ordered (v7: 48 bits of milliseconds, then 74 random bits), so
        // new cases append to the primary-key index instead of dirtying a
        // random page of it per case: fewer pages per group commit.
        id: uuid::Uuid::now_v7().to_string(),
        model: model.name().to_string(),
        model_version: model.version().to_string(),
        policy_version: model.policy.info().version.clone(),
        instance_index: index,
        input: input.to_vec(),
        feature_names: features,
        class_names: model.manifest.classes.clone(),
        model_class: p.class(),
        probabilities: p.probabilities.clone(),
        uncertainty: serde_json::to_value(u).unwrap_or_default(),
        reason: d.reason.clone(),
        reason_code: d.reason_code.to_string(),
        audit: d.audit,
        policy_route: d.policy_route.map(|r| r.name().to_string()),
        reviewers_needed: d.reviewers.max(1),
        escalate_on_disagreement: d.escalate_on_disagreement,
        max_labels: model.policy.max_labels(),
        // Review first where the model is expected to do worst relative to a human.
        priority: ThresholdScore::Triage.of(p),
        patient: None,
    }
}
