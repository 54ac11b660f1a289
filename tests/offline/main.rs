//! Tests of the offline side, no server: the command line, data import (CSV and
//! images), training and evaluation, and property tests of the parsers and
//! policies. One test binary, a module per subject.

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod data_import;
mod data_import_images;
mod docs;
mod image_model;
mod model_training;
mod parsers_properties;
mod policy_properties;
