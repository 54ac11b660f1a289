//! triaged: serve models that predict a label and how much human experts would
//! disagree, and decide case by case whether to automate or send to review.
//!
//! Module map:
//! - [`data`]: data sets with several human labels per case — format, CSV import,
//!   synthetic generator, targets (`D`, `H`, majority), describe.
//! - [`model`]: the candle network (class / disagreement / human-error heads),
//!   preprocessing, the on-disk bundle, device selection, the loaded predictor.
//! - [`train`]: AdamW training, early stopping, temperature scaling.
//! - [`eval`]: metrics, the triage curve, reports and plots; [`calibrate`]:
//!   fitting a bundle's `policy.json` on its calibration split.
//! - [`audit_monitor`]: the policy's audit monitor, kept in the store.
//! - [`policy`]: triage decisions (automate / review, why, how many reviewers),
//!   calibrated policies and certificates; [`stats`]: exact binomial statistics.
//! - [`config`]: layered settings; [`startup`]: `Application::build`;
//!   [`background`]: the supervised background loops;
//!   [`registry`]: served models and atomic reload; [`batch`]: the batching queue
//!   and inference thread; [`api`]: HTTP routes and problem+json errors;
//!   [`metrics`]: every Prometheus metric.
//! - [`triage`]: the triage core shared by `/v1` and `/v2` — replay, predict,
//!   decide, commit — knowing no HTTP.
//! - [`outgoing`]: what every outgoing HTTP call shares (no redirects, bounded
//!   answers, errors without URLs).
//! - [`store`]: the durable review queue (SQLite or PostgreSQL); [`auth`]:
//!   bearer tokens and roles; [`webhooks`]: signed event delivery;
//!   [`fhir`]: routed cases as FHIR R4 Tasks on the hospital's FHIR server.
//! - [`cli`]: the command line; `main.rs` only parses and dispatches.
//! - [`telemetry`]: tracing setup; [`secret`]: secrets and credentialed URLs that
//!   print only redacted.

pub mod api;
pub mod audit_monitor;
pub mod auth;
pub mod background;
pub mod batch;
pub mod calibrate;
pub mod cli;
pub mod config;
pub mod data;
pub mod eval;
pub mod fhir;
pub mod metrics;
pub mod model;
pub mod outgoing;
pub mod policy;
pub mod registry;
pub mod secret;
pub mod startup;
pub mod stats;
pub mod store;
pub mod telemetry;
pub mod train;
pub mod triage;
pub mod webhooks;
