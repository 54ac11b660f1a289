//! Docs that cannot drift: every key of `config/default.toml` is named in
//! docs/cli.md's settings table, and every metric defined in `src/metrics.rs`
//! in docs/metrics.md. A new key or metric without its line fails here.

use std::path::Path;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `section.key` for every key set in the defaults file (sub-tables as
/// `section.sub.key`).
fn default_keys() -> Vec<String> {
    let mut section = String::new();
    let mut keys = Vec::new();
    for line in read("config/default.toml").lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
        } else if let Some((key, _)) = line.split_once('=') {
            if !line.starts_with('#') {
                keys.push(format!("{section}.{}", key.trim()));
            }
        }
    }
    keys
}

#[test]
fn every_setting_is_documented() {
    let cli = read("docs/cli.md");
    let keys = default_keys();
    assert!(keys.len() > 40, "read {} keys", keys.len());
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| {
            let name = k.rsplit('.').next().unwrap();
            !cli.contains(&format!("`{name}`"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "settings of config/default.toml not in docs/cli.md: {missing:?}"
    );
}

#[test]
fn every_metric_is_documented() {
    let source = read("src/metrics.rs");
    let doc = read("docs/metrics.md");
    let names: Vec<&str> = source
        .split('"')
        .filter(|s| {
            s.starts_with("triaged_") && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
        .collect();
    assert!(names.len() > 25, "read {} metric names", names.len());
    let missing: Vec<&&str> = names
        .iter()
        .filter(|n| !doc.contains(&format!("`{n}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics of src/metrics.rs not in docs/metrics.md: {missing:?}"
    );
}
