//! Audit sampling's monitor: outcomes of audited automated cases (was the model
//! right, judged by the reviewers' consensus?), and the fall-back to review-all
//! when the automated error rate is shown to exceed α.
//!
//! The monitor is re-checked after every report, so its guarantees must hold
//! under continuous monitoring (a fixed-n interval re-tested after every outcome
//! falsely trips far more often than its nominal level). Two anytime-valid tests
//! of "error ≤ α", each given half of δ = 1 − confidence:
//!
//! - **cumulative**: a mixture, over a grid of alternatives q ∈ {1.25, 1.5, 2, 3,
//!   5}·α, of the likelihood-ratio martingales `Π (q/α)^x ((1−q)/(1−α))^(1−x)`.
//!   Under error ≤ α the mixture is a nonnegative supermartingale with mean ≤ 1, so
//!   by Ville's inequality it ever reaches 2/δ with probability ≤ δ/2 — however
//!   often it is checked, forever.
//! - **recent**: a CUSUM of the same likelihood ratios (reset at 0), which catches
//!   a rise after a long good run that cumulative counts would hide. It falls back
//!   at `h = ln(2·K·horizon/δ)`: by a union bound over the K alternatives and the
//!   restart points, the chance of a false fall-back within `horizon` outcomes is
//!   ≤ δ/2.
//!
//! No fall-back before `min_outcomes` outcomes. Bounds on the error rate are a
//! confidence sequence (Clopper–Pearson at level δ/(n(n+1)) for n outcomes, valid
//! simultaneously for every n). Each report is O(K) work whatever its counts;
//! counts are checked. The state is plain data: the store keeps it, so it survives
//! restarts and is shared by daemons on one queue.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::stats::clopper_pearson;

/// Alternatives of the likelihood-ratio tests, as multiples of α.
const GRID: [f64; 5] = [1.25, 1.5, 2.0, 3.0, 5.0];
/// Outcomes the CUSUM's false-alarm bound is stated over.
pub const HORIZON: u64 = 1_000_000;
/// No fall-back before this many outcomes.
pub const MIN_OUTCOMES: u64 = 50;
/// Most outcomes one monitor holds (its bounds stay cheap to compute); past it
/// an admin clears it.
pub const MAX_AUDITED: u64 = 1_000_000_000;

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditStatus {
    /// Audited cases whose outcome is known.
    pub audited: u64,
    /// Of those, cases where the model was wrong.
    pub errors: u64,
    pub error_rate: Option<f64>,
    /// Anytime-valid bounds on the automated error rate (a confidence sequence
    /// at `confidence`).
    pub lower: f64,
    pub upper: f64,
    pub alpha: f64,
    pub confidence: f64,
    /// ln of the cumulative test's evidence against "error ≤ α"; falls back at
    /// `ln(2/δ)`.
    pub evidence: f64,
    pub evidence_threshold: f64,
    /// The largest CUSUM statistic (a recent rise); falls back at its threshold.
    pub recent: f64,
    pub recent_threshold: f64,
    pub min_outcomes: u64,
    /// True once a test fell back: every case now goes to review until an admin
    /// clears it.
    pub fallback: bool,
    /// Why it fell back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
}

/// Why outcomes were not recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("the audit counts would overflow; nothing was recorded")]
    Overflow,
    #[error(
        "the monitor would hold more than {MAX_AUDITED} outcomes; an admin must clear it first"
    )]
    Capped,
    #[error("the stored audit monitor state is unreadable: {0}")]
    Corrupt(String),
}

/// The monitor's parameters: α and δ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MonitorConfig {
    pub alpha: f64,
    pub confidence: f64,
}

impl MonitorConfig {
    fn delta(&self) -> f64 {
        (1.0 - self.confidence).clamp(1e-12, 0.5)
    }

    fn grid(&self) -> Vec<f64> {
        GRID.iter()
            .map(|f| (f * self.alpha).min(0.999))
            .filter(|q| *q > self.alpha)
            .collect()
    }

    fn evidence_threshold(&self) -> f64 {
        (2.0 / self.delta()).ln()
    }

    fn recent_threshold(&self) -> f64 {
        (2.0 * GRID.len() as f64 * HORIZON as f64 / self.delta()).ln()
    }
}

/// The monitor's state: plain data, stored as JSON with the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorState {
    pub audited: u64,
    pub errors: u64,
    /// ln of each alternative's likelihood-ratio martingale.
    pub log_lr: Vec<f64>,
    /// Each alternative's CUSUM statistic.
    pub cusum: Vec<f64>,
    pub fallback_reason: Option<String>,
}

impl MonitorState {
    pub fn new(cfg: &MonitorConfig) -> MonitorState {
        let k = cfg.grid().len();
        MonitorState {
            audited: 0,
            errors: 0,
            log_lr: vec![0.0; k],
            cusum: vec![0.0; k],
            fallback_reason: None,
        }
    }

    pub fn from_json(text: &str) -> Result<MonitorState, AuditError> {
        serde_json::from_str(text).map_err(|e| AuditError::Corrupt(e.to_string()))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Adds `correct` and `wrong` outcomes: O(K) work. Counts that would
    /// overflow are refused whole.
    pub fn record(
        &mut self,
        cfg: &MonitorConfig,
        correct: u64,
        wrong: u64,
    ) -> Result<(), AuditError> {
        let audited = correct
            .checked_add(wrong)
            .and_then(|n| n.checked_add(self.audited))
            .ok_or(AuditError::Overflow)?;
        if audited > MAX_AUDITED {
            return Err(AuditError::Capped);
        }
        let grid = cfg.grid();
        if self.log_lr.len() != grid.len() || self.cusum.len() != grid.len() {
            // Stored under another α: start the statistics afresh, keep counts.
            self.log_lr = vec![0.0; grid.len()];
            self.cusum = vec![0.0; grid.len()];
        }
        let a = cfg.alpha;
        for (i, q) in grid.iter().enumerate() {
            let step = wrong as f64 * (q / a).ln() + correct as f64 * ((1.0 - q) / (1.0 - a)).ln();
            self.log_lr[i] += step;
            self.cusum[i] = (self.cusum[i] + step).max(0.0);
        }
        self.audited = audited;
        self.errors += wrong; // ≤ audited, so it cannot overflow
        let n = self.audited;
        if self.fallback_reason.is_none() && n >= MIN_OUTCOMES {
            let evidence = self.evidence();
            let recent = self.recent();
            if evidence >= cfg.evidence_threshold() {
                self.fallback_reason = Some(format!(
                    "cumulative test: {} errors in {n} audited cases; evidence ln E = {evidence:.2} ≥ {:.2} that the automated error exceeds alpha {a} (anytime-valid, false fall-back ≤ {:.3})",
                    self.errors,
                    cfg.evidence_threshold(),
                    cfg.delta() / 2.0
                ));
            } else if recent >= cfg.recent_threshold() {
                self.fallback_reason = Some(format!(
                    "recent rise: CUSUM {recent:.2} ≥ {:.2} after {n} audited cases ({} errors): the automated error has risen above alpha {a}",
                    cfg.recent_threshold(),
                    self.errors
                ));
            }
        }
        Ok(())
    }

    /// An admin acted on a fall-back (recalibrated, retrained, reviewed the
    /// drift): the tests start afresh; the counts stay for the record.
    pub fn clear(&mut self, cfg: &MonitorConfig) {
        *self = MonitorState {
            audited: self.audited.min(MAX_AUDITED / 2),
            errors: self.errors.min(self.audited.min(MAX_AUDITED / 2)),
            ..MonitorState::new(cfg)
        };
    }

    /// ln of the mixture (equal weights) of the likelihood-ratio martingales.
    fn evidence(&self) -> f64 {
        if self.log_lr.is_empty() {
            return f64::NEG_INFINITY;
        }
        let max = self
            .log_lr
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = self.log_lr.iter().map(|l| (l - max).exp()).sum();
        max + (sum / self.log_lr.len() as f64).ln()
    }

    fn recent(&self) -> f64 {
        self.cusum.iter().copied().fold(0.0, f64::max)
    }

    /// The status, with the confidence-sequence bounds (the one costly part:
    /// O(√n) per call, so callers cache it).
    pub fn status(&self, cfg: &MonitorConfig) -> AuditStatus {
        let n = self.audited;
        let level = cfg.delta() / (n as f64 * (n as f64 + 1.0)).max(1.0);
        let (lower, upper) = clopper_pearson(self.errors, n, level);
        AuditStatus {
            audited: n,
            errors: self.errors,
            error_rate: (n > 0).then(|| self.errors as f64 / n as f64),
            lower,
            upper,
            alpha: cfg.alpha,
            confidence: cfg.confidence,
            evidence: self.evidence(),
            evidence_threshold: cfg.evidence_threshold(),
            recent: self.recent(),
            recent_threshold: cfg.recent_threshold(),
            min_outcomes: MIN_OUTCOMES,
            fallback: self.fallback_reason.is_some(),
            fallback_reason: self.fallback_reason.clone(),
        }
    }
}

/// The served policy's view of its monitor: the last state the store returned
/// (reports update it at once; a periodic sync brings in other daemons').
#[derive(Debug)]
pub struct AuditMonitor {
    cfg: MonitorConfig,
    /// The state and its status, computed once when adopted.
    state: Mutex<(MonitorState, AuditStatus)>,
    fallback: AtomicBool,
}

impl AuditMonitor {
    pub fn new(alpha: f64, confidence: f64) -> Self {
        let cfg = MonitorConfig { alpha, confidence };
        let state = MonitorState::new(&cfg);
        let status = state.status(&cfg);
        AuditMonitor {
            cfg,
            state: Mutex::new((state, status)),
            fallback: AtomicBool::new(false),
        }
    }

    pub fn config(&self) -> MonitorConfig {
        self.cfg
    }

    pub fn in_fallback(&self) -> bool {
        self.fallback.load(Ordering::Acquire)
    }

    /// Adopts `state` (from the store) and returns its status.
    pub fn replace(&self, state: MonitorState) -> AuditStatus {
        let status = state.status(&self.cfg);
        let was = self.fallback.swap(status.fallback, Ordering::AcqRel);
        if status.fallback && !was {
            tracing::warn!(
                audited = status.audited,
                errors = status.errors,
                reason = status.fallback_reason.as_deref().unwrap_or_default(),
                "audited error rate is above alpha: falling back to review-all"
            );
        }
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = (state, status.clone());
        status
    }

    /// Adds outcomes to the in-memory state only (evaluation and tests; the
    /// server records through the store so the state persists).
    pub fn record(&self, correct: u64, wrong: u64) -> Result<AuditStatus, AuditError> {
        let mut next = self.state();
        next.record(&self.cfg, correct, wrong)?;
        Ok(self.replace(next))
    }

    /// A copy of the state last adopted.
    pub fn state(&self) -> MonitorState {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// The status computed when the state was adopted (never recomputed here).
    pub fn status(&self) -> AuditStatus {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Binomial, Distribution};

    const CFG: MonitorConfig = MonitorConfig {
        alpha: 0.05,
        confidence: 0.95,
    };

    /// Feeds `n` outcomes at error `p` in reports of `chunk`; the outcome index
    /// of the fall-back, if any.
    fn run(
        state: &mut MonitorState,
        rng: &mut impl rand::Rng,
        p: f64,
        n: u64,
        chunk: u64,
    ) -> Option<u64> {
        let draws = Binomial::new(chunk, p).unwrap();
        let mut seen = 0;
        while seen < n {
            let wrong = draws.sample(rng);
            state.record(&CFG, chunk - wrong, wrong).unwrap();
            seen += chunk;
            if state.fallback_reason.is_some() {
                return Some(seen);
            }
        }
        None
    }

    #[test]
    fn false_fallbacks_at_0_8_alpha_stay_below_delta_over_100000_outcomes() {
        let seeds = 60;
        let mut fell = 0;
        for seed in 0..seeds {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut s = MonitorState::new(&CFG);
            fell += usize::from(run(&mut s, &mut rng, 0.8 * CFG.alpha, 100_000, 10).is_some());
        }
        // δ = 0.05: at most 3 of 60 expected in the worst case (error exactly α).
        assert!(
            fell <= 3,
            "{fell} of {seeds} streams fell back at 0.8·alpha"
        );
    }

    #[test]
    fn a_rise_to_3_alpha_after_50000_good_outcomes_is_caught_within_2000() {
        for seed in 0..8 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(100 + seed);
            let mut s = MonitorState::new(&CFG);
            assert_eq!(run(&mut s, &mut rng, 0.8 * CFG.alpha, 50_000, 10), None);
            let caught = run(&mut s, &mut rng, 3.0 * CFG.alpha, 2_000, 10);
            assert!(caught.is_some(), "seed {seed}: the rise was not caught");
            assert!(s
                .fallback_reason
                .as_deref()
                .unwrap()
                .contains("recent rise"));
        }
    }

    #[test]
    fn early_errors_alone_never_trip_it() {
        let mut s = MonitorState::new(&CFG);
        s.record(&CFG, 1, 2).unwrap();
        assert!(
            s.fallback_reason.is_none(),
            "two errors in the first three audits"
        );
        s.record(&CFG, 0, 40).unwrap();
        assert!(
            s.fallback_reason.is_none(),
            "not before {MIN_OUTCOMES} outcomes"
        );
        s.record(&CFG, 7, 0).unwrap();
        assert!(
            s.fallback_reason.is_some(),
            "42 errors in 50 is evidence enough"
        );
    }

    #[test]
    fn counts_that_would_overflow_are_refused_whole_and_clear_restarts_the_tests() {
        let m = AuditMonitor::new(0.05, 0.95);
        m.record(10, 0).unwrap();
        assert_eq!(m.record(u64::MAX, 1), Err(AuditError::Overflow));
        assert_eq!(m.record(MAX_AUDITED, 0), Err(AuditError::Capped));
        assert_eq!(m.status().audited, 10, "nothing was recorded");
        let s = m.record(10, 60).unwrap();
        assert!(s.fallback && m.in_fallback(), "{s:?}");
        let mut state = MonitorState::from_json(&m.state().to_json()).unwrap();
        state.clear(&m.config());
        let s = m.replace(state);
        assert!(!s.fallback && !m.in_fallback());
        assert_eq!(s.audited, 80, "the counts stay for the record");
    }

    #[test]
    fn the_bounds_are_a_confidence_sequence_around_the_rate() {
        let mut s = MonitorState::new(&CFG);
        s.record(&CFG, 9_500, 500).unwrap();
        let st = s.status(&CFG);
        assert!(
            st.lower < 0.05 && st.upper > 0.05 && st.upper < 0.07,
            "{st:?}"
        );
    }
}
