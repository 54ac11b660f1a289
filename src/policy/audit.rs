//! Audit sampling's monitor: outcomes of audited automated cases (was the model
//! right?), the audited error rate with an exact Clopper–Pearson interval, and the
//! fall-back to review-all when the interval's lower bound exceeds α.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use crate::stats::clopper_pearson;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditStatus {
    /// Audited cases whose outcome is known.
    pub audited: u64,
    /// Of those, cases where the model was wrong.
    pub errors: u64,
    pub error_rate: Option<f64>,
    pub lower: f64,
    pub upper: f64,
    pub alpha: f64,
    pub confidence: f64,
    /// True once the lower bound exceeded α: every case now goes to review.
    pub fallback: bool,
}

/// Why outcomes were not recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("the audit counts would overflow; nothing was recorded")]
    Overflow,
}

/// The monitor keeps its interval up to date when outcomes arrive, so reading
/// the status (every model description, every decision in fallback) never
/// recomputes it.
#[derive(Debug)]
pub struct AuditMonitor {
    alpha: f64,
    confidence: f64,
    state: Mutex<AuditStatus>,
    fallback: AtomicBool,
}

impl AuditMonitor {
    pub fn new(alpha: f64, confidence: f64) -> Self {
        AuditMonitor {
            alpha,
            confidence,
            state: Mutex::new(Self::compute(alpha, confidence, 0, 0, false)),
            fallback: AtomicBool::new(false),
        }
    }

    pub fn in_fallback(&self) -> bool {
        self.fallback.load(Ordering::Acquire)
    }

    /// Adds outcomes and returns the new status; flips to fallback (once, never
    /// back: a human must reload or recalibrate) when the lower bound exceeds α.
    /// Counts that would overflow are refused whole.
    pub fn record(&self, correct: u64, wrong: u64) -> Result<AuditStatus, AuditError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let audited = correct
            .checked_add(wrong)
            .and_then(|n| n.checked_add(state.audited))
            .ok_or(AuditError::Overflow)?;
        let errors = state.errors + wrong; // ≤ audited, so it cannot overflow
        let mut status = Self::compute(
            self.alpha,
            self.confidence,
            audited,
            errors,
            self.in_fallback(),
        );
        if status.lower > self.alpha && !self.fallback.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                audited = status.audited,
                errors = status.errors,
                lower = status.lower,
                alpha = self.alpha,
                "audited error rate is above alpha: falling back to review-all"
            );
        }
        status.fallback = self.in_fallback();
        *state = status;
        Ok(status)
    }

    pub fn status(&self) -> AuditStatus {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn compute(alpha: f64, confidence: f64, n: u64, e: u64, fallback: bool) -> AuditStatus {
        let (lower, upper) = clopper_pearson(e, n, 1.0 - confidence);
        AuditStatus {
            audited: n,
            errors: e,
            error_rate: (n > 0).then(|| e as f64 / n as f64),
            lower,
            upper,
            alpha,
            confidence,
            fallback,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_back_only_when_the_lower_bound_exceeds_alpha() {
        let m = AuditMonitor::new(0.05, 0.95);
        // 1 error in 10: rate 0.1 but the interval still includes 0.05.
        let s = m.record(9, 1).unwrap();
        assert!(!s.fallback && s.lower < 0.05, "{s:?}");
        // 30 errors in 110: lower bound ≈ 0.19 > 0.05.
        let s = m.record(80, 20).unwrap();
        assert!(s.fallback && s.lower > 0.05, "{s:?}");
        assert!(m.in_fallback());
        assert_eq!(m.status(), s, "the status is the one last computed");
        // Good outcomes later do not silently undo the fallback.
        let s = m.record(10_000, 0).unwrap();
        assert!(s.fallback);
    }

    #[test]
    fn audit_counts_that_would_overflow_are_refused_whole() {
        let m = AuditMonitor::new(0.05, 0.95);
        m.record(10, 0).unwrap();
        assert_eq!(m.record(u64::MAX, 1), Err(AuditError::Overflow));
        assert_eq!(m.record(u64::MAX - 5, 0), Err(AuditError::Overflow));
        assert_eq!(m.status().audited, 10, "nothing was recorded");
    }
}
