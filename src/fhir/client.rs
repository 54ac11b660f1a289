//! The FHIR REST calls the publisher makes, and how their answers are read:
//! the conditional update by identifier (creates the Task the first time, finds
//! it again after a lost answer), the update by id under `If-Match`, and a read
//! of the current version after a 412. A refusal's OperationOutcome is reduced to
//! its issues (severity, code, diagnostics, location) — never our payload.
//!
//! The server is not trusted: redirects are never followed (a 3xx is a
//! refusal), answers are read up to [`crate::outgoing::MAX_ANSWER_BYTES`] only,
//! and a Task id is used in a URL only when it is a FHIR id
//! (`[A-Za-z0-9\-.]{1,64}`).

use std::time::Duration;

use anyhow::Context;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, IF_MATCH};
use reqwest::StatusCode;
use serde_json::Value;

use crate::outgoing::{error_chain, ReadError};

const FHIR_JSON: &str = "application/fhir+json";
/// Longest OperationOutcome summary kept for logs and the outbox.
const MAX_OUTCOME_CHARS: usize = 500;

/// Why a write did not land.
#[derive(Debug, thiserror::Error)]
pub enum FhirError {
    /// No answer: connection refused, timed out, reset.
    #[error("the FHIR server is unreachable: {0}")]
    Unreachable(String),
    /// A transient failure (5xx, 429, 408): retried forever with backoff.
    #[error("the FHIR server answered {status}: {outcome}")]
    Unavailable { status: u16, outcome: String },
    /// The server refused the request (4xx): counted toward parking.
    #[error("the FHIR server refused the Task with {status}: {outcome}")]
    Refused { status: u16, outcome: String },
    /// `If-Match` failed: someone else wrote the Task since we last saw it.
    #[error("the Task changed on the FHIR server since version {0} (412)")]
    PreconditionFailed(String),
    /// The Task we knew by id is no longer there (404/410).
    #[error("the Task {0} is gone from the FHIR server")]
    Gone(String),
    /// A success whose body is no Task with an id.
    #[error("the FHIR server's answer is not a Task with an id ({0})")]
    BadAnswer(String),
}

impl FhirError {
    /// The `outcome` label of `triaged_fhir_requests_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            FhirError::Unreachable(_) => "unreachable",
            FhirError::Unavailable { .. } => "unavailable",
            FhirError::Refused { .. } => "refused",
            FhirError::PreconditionFailed(_) => "precondition_failed",
            FhirError::Gone(_) => "not_found",
            FhirError::BadAnswer(_) => "bad_answer",
        }
    }
}

/// A Task as the server holds it after a write or read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub id: String,
    /// `meta.versionId` (or the `ETag`), for the next `If-Match`.
    pub version: Option<String>,
    pub status: Option<String>,
}

/// An HTTP client for one FHIR base URL. Its `Debug` shows neither the token
/// nor a password in the URL.
#[derive(Clone)]
pub struct FhirClient {
    http: reqwest::Client,
    base: String,
    identifier_system: String,
}

impl std::fmt::Debug for FhirClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FhirClient")
            .field("base", &crate::store::redact_url(&self.base))
            .finish_non_exhaustive()
    }
}

impl FhirClient {
    /// `token`: the bearer token, sent on every request (marked sensitive, so
    /// reqwest never prints it).
    pub fn new(
        base_url: &str,
        identifier_system: &str,
        token: Option<&str>,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> anyhow::Result<FhirClient> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(FHIR_JSON));
        if let Some(token) = token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the FHIR bearer token is not a valid header value")?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = crate::outgoing::client_builder(connect_timeout, request_timeout)
            .default_headers(headers)
            .build()
            .context("building the FHIR HTTP client")?;
        Ok(FhirClient {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            identifier_system: identifier_system.to_string(),
        })
    }

    /// `PUT {base}/Task?identifier={system}|{case_id}`: creates the Task when
    /// none carries the identifier, else updates the one that does — so a
    /// retried first write never makes a second Task.
    pub async fn put_by_identifier(
        &self,
        case_id: &str,
        task: &Value,
    ) -> Result<Stored, FhirError> {
        let identifier = format!("{}|{case_id}", self.identifier_system);
        let request = self
            .http
            .put(format!("{}/Task", self.base))
            .query(&[("identifier", identifier.as_str())])
            .header(CONTENT_TYPE, FHIR_JSON)
            .body(task.to_string());
        self.answer(request, None).await
    }

    /// `PUT {base}/Task/{id}` with `If-Match: W/"{version}"` when a version is known.
    pub async fn put_by_id(
        &self,
        id: &str,
        version: Option<&str>,
        task: &Value,
    ) -> Result<Stored, FhirError> {
        let id = valid_task_id(id)?;
        let mut request = self
            .http
            .put(format!("{}/Task/{id}", self.base))
            .header(CONTENT_TYPE, FHIR_JSON)
            .body(task.to_string());
        if let Some(v) = version {
            request = request.header(IF_MATCH, format!("W/\"{v}\""));
        }
        self.answer(request, Some((id, version))).await
    }

    /// `GET {base}/Task/{id}`: its current version.
    pub async fn read(&self, id: &str) -> Result<Stored, FhirError> {
        let id = valid_task_id(id)?;
        let request = self.http.get(format!("{}/Task/{id}", self.base));
        self.answer(request, Some((id, None))).await
    }

    /// Sends and reads the answer; `known` is the id (and version) the request
    /// was about, for the 404 and 412 errors.
    async fn answer(
        &self,
        request: reqwest::RequestBuilder,
        known: Option<(&str, Option<&str>)>,
    ) -> Result<Stored, FhirError> {
        // `without_url`: the URL may carry credentials (and the query an identifier).
        let response = request
            .send()
            .await
            .map_err(|e| FhirError::Unreachable(error_chain(&e.without_url())))?;
        let status = response.status();
        let etag = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(version_of_etag);
        let body: Value = match crate::outgoing::read_bounded(
            response,
            crate::outgoing::MAX_ANSWER_BYTES,
        )
        .await
        {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            Err(e @ ReadError::TooLarge { .. }) => {
                return Err(FhirError::BadAnswer(format!("HTTP {status}: {e}")))
            }
            Err(ReadError::Transport(e)) => return Err(FhirError::Unreachable(e)),
        };
        if status.is_success() {
            let id = body["id"].as_str().map(str::to_string);
            return match (body["resourceType"].as_str(), id) {
                (Some("Task"), Some(id)) if is_fhir_id(&id) => Ok(Stored {
                    id,
                    version: body["meta"]["versionId"]
                        .as_str()
                        .map(str::to_string)
                        .or(etag),
                    status: body["status"].as_str().map(str::to_string),
                }),
                (Some("Task"), Some(_)) => Err(FhirError::BadAnswer(format!(
                    "HTTP {status}: the Task id is not a FHIR id ([A-Za-z0-9-.]{{1,64}})"
                ))),
                _ => Err(FhirError::BadAnswer(format!("HTTP {status}"))),
            };
        }
        let outcome = if status.is_redirection() {
            "a redirect, not followed (the Task stays with the configured server)".to_string()
        } else {
            outcome_summary(&body)
        };
        match (status, known) {
            // 409: servers that report a version conflict that way (HAPI).
            (StatusCode::PRECONDITION_FAILED | StatusCode::CONFLICT, Some((_, v))) => {
                Err(FhirError::PreconditionFailed(v.unwrap_or("?").to_string()))
            }
            (StatusCode::NOT_FOUND | StatusCode::GONE, Some((id, _))) => {
                Err(FhirError::Gone(id.to_string()))
            }
            (s, _)
                if s.is_server_error()
                    || s == StatusCode::TOO_MANY_REQUESTS
                    || s == StatusCode::REQUEST_TIMEOUT =>
            {
                Err(FhirError::Unavailable {
                    status: s.as_u16(),
                    outcome,
                })
            }
            (s, _) => Err(FhirError::Refused {
                status: s.as_u16(),
                outcome,
            }),
        }
    }
}

/// Whether `id` is a FHIR resource id: `[A-Za-z0-9\-.]{1,64}` (FHIR R4 §2.24.0.1),
/// so it cannot climb out of `Task/` or add a query when put in a URL.
pub fn is_fhir_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        // `.` and `..` are ids by the pattern but path segments by URL rules.
        && id != "."
        && id != ".."
}

/// `id` when it is a FHIR id, else the refusal that parks the case.
fn valid_task_id(id: &str) -> Result<&str, FhirError> {
    if is_fhir_id(id) {
        Ok(id)
    } else {
        Err(FhirError::BadAnswer(
            "the stored Task id is not a FHIR id ([A-Za-z0-9-.]{1,64}); not used in a URL".into(),
        ))
    }
}

/// `W/"3"` -> `3`.
fn version_of_etag(etag: &str) -> String {
    etag.trim_start_matches("W/").trim_matches('"').to_string()
}

/// An OperationOutcome's issues on one line: `error invalid: <diagnostics> at
/// Task.status; …` (at most 500 characters), or "no OperationOutcome".
pub fn outcome_summary(body: &Value) -> String {
    if body["resourceType"] != "OperationOutcome" {
        return "no OperationOutcome".into();
    }
    let issues: Vec<String> = body["issue"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|issue| {
            let mut line = format!(
                "{} {}",
                issue["severity"].as_str().unwrap_or("?"),
                issue["code"].as_str().unwrap_or("?")
            );
            let text = issue["diagnostics"]
                .as_str()
                .or_else(|| issue["details"]["text"].as_str());
            if let Some(text) = text {
                line.push_str(": ");
                line.push_str(text);
            }
            if let Some(at) = issue["expression"].as_array().filter(|a| !a.is_empty()) {
                let at: Vec<&str> = at.iter().filter_map(Value::as_str).collect();
                line.push_str(" at ");
                line.push_str(&at.join(", "));
            }
            line
        })
        .collect();
    let mut text = issues.join("; ");
    if text.chars().count() > MAX_OUTCOME_CHARS {
        text = text.chars().take(MAX_OUTCOME_CHARS).collect::<String>() + "…";
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn operation_outcomes_are_summarised_without_payload() {
        let body = json!({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "invalid", "details": {"text": "Invalid value"}, "expression": ["Task.status"]},
            {"severity": "warning", "code": "transient", "diagnostics": "injected fault"}
        ]});
        assert_eq!(
            outcome_summary(&body),
            "error invalid: Invalid value at Task.status; warning transient: injected fault"
        );
        assert_eq!(outcome_summary(&json!({"x": 1})), "no OperationOutcome");
    }

    #[test]
    fn only_fhir_ids_are_task_ids() {
        for good in ["t-1", "abc.DEF-09", &"a".repeat(64)] {
            assert!(is_fhir_id(good), "{good}");
        }
        for bad in [
            "",
            "..",
            ".",
            "../../../evil/x?steal=",
            "a/b",
            "a b",
            "a%2F",
            &"a".repeat(65),
        ] {
            assert!(!is_fhir_id(bad), "{bad}");
        }
    }

    #[test]
    fn etags_give_the_version() {
        assert_eq!(version_of_etag("W/\"3\""), "3");
        assert_eq!(version_of_etag("\"abc\""), "abc");
    }

    #[test]
    fn debug_hides_credentials() {
        let c = FhirClient::new(
            "http://u:pw@127.0.0.1:1/fhir/R4",
            "urn:triaged:case",
            Some("sekret"),
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("pw") && !shown.contains("sekret"),
            "{shown}"
        );
    }
}
