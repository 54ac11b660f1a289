//! Settings in layers (docs/cli.md): the compiled-in `config/default.toml`, then the
//! file given by `--config`, then `TRIAGED__SECTION__KEY` environment variables,
//! then command-line flags. Parsed once into typed settings that cannot be wrong.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::model::device::DeviceChoice;
pub use crate::policy::{TriageMode, TriageSettings};
use crate::secret::{Secret, SecretUrl};

const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub models: ModelSettings,
    pub batch: BatchSettings,
    pub triage: TriageSettings,
    pub log: LogSettings,
    pub store: StoreSettings,
    pub auth: AuthSettings,
    pub webhooks: WebhookSettings,
    pub fhir: FhirSettings,
    pub console: ConsoleSettings,
}

/// The reviewer console (`/console/`, docs/console.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSettings {
    /// Show the model's suggestion before the reviewer labels. Off by default:
    /// a reviewer who sees the model's answer first anchors on it, and the
    /// labels stop being an independent check of the model.
    pub show_suggestion: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// May carry the database password: printed only redacted.
    pub url: SecretUrl,
    pub lease_seconds: u64,
    pub max_lease_failures: u32,
    /// Live leases one reviewer may hold at once.
    pub max_leases_per_reviewer: u32,
    pub rescue_interval_seconds: u64,
    /// How long a write may wait for the database before it fails with 503.
    pub write_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub tokens: Vec<crate::auth::TokenSpec>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    pub targets: Vec<WebhookTarget>,
    pub max_backoff_seconds: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookTarget {
    /// May carry credentials (`user:pass@`, `?token=`): printed only redacted.
    pub url: SecretUrl,
    /// The HMAC key: printed as `***`.
    pub secret: Secret,
    #[serde(default = "all_events")]
    pub events: Vec<String>,
}

fn all_events() -> Vec<String> {
    vec!["case.created".into(), "case.resolved".into()]
}

/// Publishing routed cases as HL7 FHIR R4 Tasks (docs/fhir.md). Off while
/// `base_url` is empty; `base_url` alone publishes every model's cases.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FhirSettings {
    /// The FHIR server's base, e.g. `http://fhir-proxy.local/R4`; empty = off.
    /// Printed only redacted.
    pub base_url: SecretUrl,
    /// Name of the environment variable holding the bearer token (empty = no
    /// `Authorization`). The token itself is never part of the settings, so it
    /// cannot reach the start-up log.
    pub token_env: String,
    /// `Task.identifier.system`; the value is the case id.
    pub identifier_system: String,
    /// The system of the patient identifiers callers send with instances
    /// (`patient`); empty = `Task.for` is never set.
    pub patient_identifier_system: String,
    /// Models whose cases are published; empty = every model.
    pub models: Vec<String>,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    /// First retry delay; it doubles per failed attempt up to `retry_max_seconds`.
    pub retry_initial_ms: u64,
    pub retry_max_seconds: u64,
    /// A case whose Task the server refused (4xx) this many times in a row is
    /// parked until it changes again or an admin retries it.
    pub park_after_refusals: u32,
    /// Cut-offs of the case's priority (the triage score) for `Task.priority`.
    pub priority: FhirPriorityCutoffs,
    /// Reviewer subject -> `Practitioner/…` reference, for `Task.owner`.
    #[serde(default)]
    pub practitioners: std::collections::BTreeMap<String, String>,
}

/// A case's priority `p` maps to `stat` when `p >= stat`, else `asap` when
/// `p >= asap`, else `urgent` when `p >= urgent`, else `routine`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FhirPriorityCutoffs {
    pub urgent: f64,
    pub asap: f64,
    pub stat: f64,
}

impl FhirSettings {
    pub fn enabled(&self) -> bool {
        !self.base_url.expose().trim().is_empty()
    }

    fn validate(&self) -> anyhow::Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        // Outgoing connections are plain HTTP (the build links no TLS library),
        // as for webhooks: an https server sits behind a TLS-terminating proxy.
        anyhow::ensure!(
            self.base_url.expose().starts_with("http://"),
            "fhir.base_url must start with http:// (this build has no TLS: put a TLS-terminating proxy in front of an https FHIR server), got '{}'",
            self.base_url
        );
        anyhow::ensure!(
            !self.identifier_system.is_empty() && !self.identifier_system.contains('|'),
            "fhir.identifier_system must be a non-empty URI without '|'"
        );
        anyhow::ensure!(
            !self.patient_identifier_system.contains('|'),
            "fhir.patient_identifier_system must be a URI without '|'"
        );
        let p = self.priority;
        anyhow::ensure!(
            p.urgent.is_finite() && p.asap.is_finite() && p.stat.is_finite(),
            "fhir.priority cut-offs must be numbers"
        );
        anyhow::ensure!(
            p.urgent <= p.asap && p.asap <= p.stat,
            "fhir.priority cut-offs must satisfy urgent <= asap <= stat"
        );
        anyhow::ensure!(
            self.park_after_refusals >= 1,
            "fhir.park_after_refusals must be at least 1"
        );
        anyhow::ensure!(
            self.request_timeout_ms > 0 && self.connect_timeout_ms > 0,
            "fhir timeouts must be positive"
        );
        anyhow::ensure!(
            self.retry_initial_ms > 0,
            "fhir.retry_initial_ms must be positive"
        );
        for (subject, reference) in &self.practitioners {
            anyhow::ensure!(
                reference.starts_with("Practitioner/"),
                "fhir.practitioners.{subject} must be a Practitioner/<id> reference"
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub bind: SocketAddr,
    pub workers: usize,
    pub max_body_bytes: usize,
    pub max_instances: usize,
    /// Decoded pixels of all the images of one request, at most.
    pub max_image_pixels: u64,
    /// Images decoded at once across all requests, at most; 0 = one per CPU core.
    pub image_decoders: usize,
    pub shutdown_timeout_seconds: u64,
    /// Serve the bench-only routes `POST /bench/parse` and `/bench/predict`
    /// (`src/api/bench.rs`), for `benches/run`; off in production.
    pub bench_routes: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    pub dir: PathBuf,
    pub default: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSettings {
    pub max_batch_size: usize,
    pub max_wait_us: u64,
    pub queue_capacity: usize,
    pub request_timeout_ms: u64,
    pub threads: usize,
    pub device: DeviceChoice,
}

impl BatchSettings {
    pub fn max_wait(&self) -> Duration {
        Duration::from_micros(self.max_wait_us)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: crate::telemetry::LogFormat,
}

/// Command-line values that override the layered settings.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub bind: Option<SocketAddr>,
    pub models_dir: Option<PathBuf>,
    pub default_model: Option<String>,
}

impl Settings {
    /// Builds the settings from all layers. `env` is the process environment (a
    /// parameter so tests can pass their own).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> anyhow::Result<Settings> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(path) = file {
            anyhow::ensure!(
                path.exists(),
                "config file {} does not exist",
                path.display()
            );
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        let env_map: std::collections::HashMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("TRIAGED__"))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("TRIAGED")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(env_map)),
        );
        let mut settings: Settings = builder
            .build()
            .context("reading the configuration")?
            .try_deserialize()
            .context("invalid configuration")?;
        if let Some(bind) = overrides.bind {
            settings.server.bind = bind;
        }
        if let Some(dir) = &overrides.models_dir {
            settings.models.dir = dir.clone();
        }
        if let Some(name) = &overrides.default_model {
            settings.models.default = name.clone();
        }
        settings.validate()?;
        Ok(settings)
    }

    /// The defaults alone (tests start from these).
    pub fn defaults() -> Settings {
        Settings::load(None, Vec::new(), &Overrides::default())
            .expect("config/default.toml is valid")
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.batch.max_batch_size > 0,
            "batch.max_batch_size must be positive"
        );
        anyhow::ensure!(
            self.batch.queue_capacity > 0,
            "batch.queue_capacity must be positive"
        );
        anyhow::ensure!(
            self.batch.request_timeout_ms > 0,
            "batch.request_timeout_ms must be positive"
        );
        // The outbox keys a target by its URL: two targets with one URL would
        // share (and steal) each other's events, signed with the wrong secret.
        let mut urls = std::collections::BTreeSet::new();
        for (i, t) in self.webhooks.targets.iter().enumerate() {
            anyhow::ensure!(
                urls.insert(t.url.expose()),
                "webhooks.targets[{i}] repeats the url of an earlier target ({}): give each target its own url",
                t.url
            );
        }
        anyhow::ensure!(
            self.store.max_leases_per_reviewer >= 1 && self.store.max_lease_failures >= 1,
            "store.max_leases_per_reviewer and store.max_lease_failures must be at least 1"
        );
        anyhow::ensure!(
            self.server.max_instances > 0,
            "server.max_instances must be positive"
        );
        anyhow::ensure!(
            self.server.max_image_pixels > 0,
            "server.max_image_pixels must be positive"
        );
        anyhow::ensure!(
            self.store.write_timeout_ms > 0,
            "store.write_timeout_ms must be positive"
        );
        anyhow::ensure!(
            self.server.max_body_bytes >= 1024,
            "server.max_body_bytes must be at least 1024"
        );
        anyhow::ensure!(
            self.triage.reviewers >= 1,
            "triage.reviewers must be at least 1"
        );
        anyhow::ensure!(
            self.triage.threshold.is_finite(),
            "triage.threshold must be a number"
        );
        self.fhir.validate()?;
        Ok(())
    }

    /// The effective settings as JSON for the start-up log line: webhook secrets,
    /// token hashes and the database password are replaced.
    pub fn redacted(&self) -> serde_json::Value {
        // URLs and secrets are types that serialise redacted (crate::secret);
        // the FHIR bearer token is never in the settings (only its variable's
        // name). Token hashes are not secrets, but no reader needs them.
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(tokens) = v["auth"]["tokens"].as_array_mut() {
            for t in tokens {
                t["sha256"] = "***".into();
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ones() {
        let s = Settings::defaults();
        assert_eq!(s.server.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(s.models.dir, PathBuf::from("models"));
        assert_eq!(s.models.default, "lidc-malignancy");
        assert_eq!(s.triage.mode, TriageMode::Policy);
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[batch]\nmax_batch_size = 8\nthreads = 2\n[triage]\nmode = \"shadow\"\n",
        )
        .unwrap();
        let env = vec![
            (
                "TRIAGED__BATCH__MAX_BATCH_SIZE".to_string(),
                "16".to_string(),
            ),
            (
                "TRIAGED__SERVER__BIND".to_string(),
                "127.0.0.1:9000".to_string(),
            ),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let s = Settings::load(Some(&file), env.clone(), &Overrides::default()).unwrap();
        assert_eq!(s.batch.max_batch_size, 16, "env beats file");
        assert_eq!(s.batch.threads, 2, "file beats defaults");
        assert_eq!(s.triage.mode, TriageMode::Shadow);
        assert_eq!(s.server.bind.port(), 9000);
        let flags = Overrides {
            bind: Some("127.0.0.1:9100".parse().unwrap()),
            ..Overrides::default()
        };
        let s = Settings::load(Some(&file), env, &flags).unwrap();
        assert_eq!(s.server.bind.port(), 9100, "flags beat env");
    }

    #[test]
    fn fhir_is_off_by_default_and_base_url_alone_publishes_every_model() {
        let s = Settings::defaults();
        assert!(!s.fhir.enabled());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[fhir]\nbase_url = \"http://u:pw@127.0.0.1:8103/fhir/R4\"\n",
        )
        .unwrap();
        let s = Settings::load(Some(&file), Vec::new(), &Overrides::default()).unwrap();
        assert!(s.fhir.enabled());
        assert!(s.fhir.models.is_empty(), "every model publishes");
        assert_eq!(s.fhir.identifier_system, "urn:triaged:case");
        let logged = s.redacted().to_string();
        assert!(!logged.contains("pw@"), "{logged}");
        std::fs::write(
            &file,
            "[fhir]\nbase_url = \"http://h/R4\"\n[fhir.priority]\nurgent = 0.5\nasap = 0.2\nstat = 0.9\n",
        )
        .unwrap();
        let e = format!(
            "{:#}",
            Settings::load(Some(&file), Vec::new(), &Overrides::default()).unwrap_err()
        );
        assert!(e.contains("urgent <= asap"), "{e}");
    }

    #[test]
    fn bad_values_and_unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[batch]\nmax_batch_sise = 8\n").unwrap();
        let e = format!(
            "{:#}",
            Settings::load(Some(&file), Vec::new(), &Overrides::default()).unwrap_err()
        );
        assert!(e.contains("max_batch_sise"), "{e}");
        let env = vec![("TRIAGED__TRIAGE__MODE".to_string(), "sometimes".to_string())];
        assert!(Settings::load(None, env, &Overrides::default()).is_err());
        let e = Settings::load(
            Some(Path::new("/nope.toml")),
            Vec::new(),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nope.toml"));
    }
}
