//! Tests that run the daemon or its store against real services: the review
//! queue store on SQLite and PostgreSQL, crash and disk-full recovery, two
//! daemons on one PostgreSQL queue, and FHIR Task publishing against a real FHIR
//! R4 server. One test binary (each links candle, sqlx and actix: fewer binaries
//! link faster), a module per subject.

#[path = "../common/mod.rs"]
mod common;

mod crash;
mod disk_full;
mod fhir;
mod store;
mod two_daemons;
