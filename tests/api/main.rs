//! HTTP API tests against a real server on port 0 (one test binary, modules by
//! resource).

#[path = "../common/mod.rs"]
mod common;
mod helpers;

mod bench_routes;
mod consensus;
mod console;
mod errors;
mod hardening;
mod hardening2;
mod images;
mod lifecycle;
mod metrics;
mod models;
mod oip;
mod openapi;
mod policy;
mod reload;
mod request_ids;
mod reviews;
mod triage;
