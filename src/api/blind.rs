//! Blind review, enforced by the API rather than the page: a reviewer who has
//! not answered a case sees only what the case is — its input, the classes to
//! choose from — never the model's class, probabilities, uncertainty or the
//! policy's reason, nor the counts (labels so far, reviewers needed, the cap,
//! escalation, priority) that would tell them that earlier reviewers
//! disagreed. Once they answered, or with `console.show_suggestion` on, they
//! see the whole case; admins and adjudicators always do.

use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{Caller, Role};
use crate::store::{Case, CaseStatus, Claim, Lease};

/// A case as a reviewer who has not answered it sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BlindCase {
    pub id: String,
    pub model: String,
    pub model_version: String,
    /// The caller's request id, when the case came with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub instance_index: i64,
    /// Feature values in the model's order (empty for an image case: its
    /// pixels are at `GET /v1/reviews/{case_id}/image`).
    pub input: Vec<f32>,
    pub feature_names: Vec<String>,
    pub class_names: Vec<String>,
    pub status: CaseStatus,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Always true: the model's suggestion and the queue's counts are withheld
    /// until you answer.
    pub blind: bool,
}

impl From<&Case> for BlindCase {
    fn from(c: &Case) -> BlindCase {
        BlindCase {
            id: c.id.clone(),
            model: c.model.clone(),
            model_version: c.model_version.clone(),
            request_id: c.request_id.clone(),
            instance_index: c.instance_index,
            input: c.input.clone(),
            feature_names: c.feature_names.clone(),
            class_names: c.class_names.clone(),
            status: c.status,
            created_at: c.created_at,
            blind: true,
        }
    }
}

/// A case as the caller may see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum CaseView {
    Full(Box<Case>),
    Blind(BlindCase),
}

/// A claim as the caller may see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClaimView {
    pub case: CaseView,
    pub lease: Lease,
}

/// Whether `caller` must not yet see the model's suggestion on a case they
/// have (`answered`) or have not answered.
pub fn must_be_blind(caller: &Caller, show_suggestion: bool, answered: bool) -> bool {
    caller.role == Role::Reviewer && !show_suggestion && !answered
}

impl CaseView {
    pub fn of(case: Case, blind: bool) -> CaseView {
        if blind {
            CaseView::Blind(BlindCase::from(&case))
        } else {
            CaseView::Full(Box::new(case))
        }
    }
}

impl ClaimView {
    pub fn of(claim: Claim, blind: bool) -> ClaimView {
        ClaimView {
            case: CaseView::of(claim.case, blind),
            lease: claim.lease,
        }
    }
}
