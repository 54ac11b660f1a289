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

#[derive(Debug)]
pub struct AuditMonitor {
    alpha: f64,
    confidence: f64,
    counts: Mutex<(u64, u64)>,
    fallback: AtomicBool,
}

impl AuditMonitor {
    pub fn new(alpha: f64, confidence: f64) -> Self {
        AuditMonitor {
            alpha,
            confidence,
            counts: Mutex::new((0, 0)),
            fallback: AtomicBool::new(false),
        }
    }

    pub fn in_fallback(&self) -> bool {
        self.fallback.load(Ordering::Acquire)
    }

    /// Adds outcomes and returns the new status; flips to fallback (once, never
    /// back: a human must reload or recalibrate) when the lower bound exceeds α.
    pub fn record(&self, correct: u64, wrong: u64) -> AuditStatus {
        {
            let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            c.0 += correct + wrong;
            c.1 += wrong;
        }
        let status = self.status();
        if status.lower > self.alpha && !self.fallback.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                audited = status.audited,
                errors = status.errors,
                lower = status.lower,
                alpha = self.alpha,
                "audited error rate is above alpha: falling back to review-all"
            );
        }
        self.status()
    }

    pub fn status(&self) -> AuditStatus {
        let (n, e) = *self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let (lower, upper) = clopper_pearson(e, n, 1.0 - self.confidence);
        AuditStatus {
            audited: n,
            errors: e,
            error_rate: (n > 0).then(|| e as f64 / n as f64),
            lower,
            upper,
            alpha: self.alpha,
            confidence: self.confidence,
            fallback: self.in_fallback(),
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
        let s = m.record(9, 1);
        assert!(!s.fallback && s.lower < 0.05, "{s:?}");
        // 30 errors in 110: lower bound ≈ 0.19 > 0.05.
        let s = m.record(80, 20);
        assert!(s.fallback && s.lower > 0.05, "{s:?}");
        assert!(m.in_fallback());
        // Good outcomes later do not silently undo the fallback.
        let s = m.record(10_000, 0);
        assert!(s.fallback);
    }
}
