//! triaged: serve models that predict a label and how much human experts would
//! disagree, and decide case by case whether to automate or send to review.
//!
//! Module map:
//! - [`data`]: data sets with several human labels per case — format, CSV import,
//!   synthetic generator, targets (`D`, `H`, majority), describe.
//! - [`model`]: the candle network (class / disagreement / human-error heads),
//!   preprocessing, the on-disk bundle, device selection, the loaded predictor.
//! - [`train`]: AdamW training, early stopping, temperature scaling.
//! - [`eval`]: metrics, the triage curve, reports and plots.
//! - [`cli`]: the command line; `main.rs` only parses and dispatches.
//! - [`telemetry`]: tracing setup.

pub mod cli;
pub mod data;
pub mod eval;
pub mod model;
pub mod telemetry;
pub mod train;
