//! The model registry: every bundle under `models.dir`, the version served for
//! each model, and atomic reload. A [`LoadedModel`] holds the manifest, the policy
//! and the batching handle together, so a reload swaps model and policy as one;
//! requests already holding the old `Arc` finish on the old version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use anyhow::Context;
use candle_core::Device;

use crate::batch::{BatchConfig, BatchHandle};
use crate::metrics::Metrics;
use crate::model::{Manifest, Predictor};
use crate::policy::Policy;
use crate::policy::TriageSettings;

/// One served model version with its policy and inference thread.
pub struct LoadedModel {
    pub manifest: Manifest,
    pub dir: PathBuf,
    pub policy: Policy,
    pub batcher: BatchHandle,
    pub loaded_at: SystemTime,
}

impl LoadedModel {
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    pub fn version(&self) -> &str {
        &self.manifest.version
    }
}

/// What a reload did.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ReloadOutcome {
    pub model: String,
    pub version: String,
    pub previous_version: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("no model named '{0}' under the models folder")]
    UnknownModel(String),
    /// Not a model name at all; the name is not echoed (it may be a path).
    #[error("no such model: model names are 1 to 128 letters, digits, '.', '_' or '-'")]
    BadName,
    #[error("model '{model}' was not reloaded, the previous version keeps serving: {reason}")]
    Refused { model: String, reason: String },
}

pub struct Registry {
    dir: PathBuf,
    default_model: String,
    batch: BatchConfig,
    triage: TriageSettings,
    device: Device,
    metrics: Metrics,
    models: RwLock<BTreeMap<String, Arc<LoadedModel>>>,
    ready: AtomicBool,
}

impl Registry {
    pub fn new(
        dir: PathBuf,
        default_model: String,
        batch: BatchConfig,
        triage: TriageSettings,
        device: Device,
        metrics: Metrics,
    ) -> Registry {
        Registry {
            dir,
            default_model,
            batch,
            triage,
            device,
            metrics,
            models: RwLock::new(BTreeMap::new()),
            ready: AtomicBool::new(false),
        }
    }

    pub fn default_model(&self) -> &str {
        &self.default_model
    }

    /// Ready once the default model serves.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn get(&self, name: &str) -> Option<Arc<LoadedModel>> {
        self.models.read().ok()?.get(name).cloned()
    }

    pub fn list(&self) -> Vec<Arc<LoadedModel>> {
        self.models
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Names of the model folders on disk.
    pub fn names_on_disk(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.path().is_dir())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| valid_model_name(n))
                    .filter(|n| !latest_versions(&self.dir.join(n)).is_empty())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Versions of `name` on disk, oldest first (none for a name that is not a
    /// valid model name: it is never joined onto the models folder).
    pub fn versions_on_disk(&self, name: &str) -> Vec<String> {
        if !valid_model_name(name) {
            return Vec::new();
        }
        latest_versions(&self.dir.join(name))
    }

    /// Loads every model on disk (blocking). Returns the failures; each is also logged.
    pub fn load_all(&self) -> Vec<(String, RegistryError)> {
        let mut failures = Vec::new();
        let names = self.names_on_disk();
        if names.is_empty() {
            tracing::error!(dir = %self.dir.display(), "no model bundles found");
        }
        for name in names {
            if let Err(e) = self.reload(&name) {
                tracing::error!(model = %name, error = %e, "model not loaded");
                failures.push((name, e));
            }
        }
        if !self.is_ready() {
            tracing::error!(model = %self.default_model, "the default model is not loaded: not ready");
        }
        failures
    }

    /// Loads the newest version of `name` from disk and swaps it in. Blocking: call
    /// from a blocking thread. A bundle that fails to load is refused and the
    /// version in service stays.
    pub fn reload(&self, name: &str) -> Result<ReloadOutcome, RegistryError> {
        if !valid_model_name(name) {
            return Err(RegistryError::BadName);
        }
        let versions = self.versions_on_disk(name);
        let Some(version) = versions.last() else {
            return Err(RegistryError::UnknownModel(name.to_string()));
        };
        let dir = self.dir.join(name).join(version);
        let loaded = self.load_bundle(name, &dir).map_err(|e| {
            self.metrics
                .reloads
                .with_label_values(&[name, "refused"])
                .inc();
            // Callers see paths relative to the models folder, never where it is.
            let reason = format!("{e:#}").replace(&self.dir.display().to_string(), "<models.dir>");
            tracing::warn!(model = %name, error = %format!("{e:#}"), "bundle refused");
            RegistryError::Refused {
                model: name.to_string(),
                reason,
            }
        })?;
        let loaded = Arc::new(loaded);
        let previous = {
            let mut models = self.models.write().map_err(|_| RegistryError::Refused {
                model: name.into(),
                reason: "registry lock poisoned".into(),
            })?;
            models.insert(name.to_string(), loaded.clone())
        };
        if let Some(old) = &previous {
            let p = old.policy.info();
            let _ = self.metrics.model_info.remove_label_values(&[
                name,
                old.version(),
                &p.name,
                &p.version,
            ]);
        }
        let p = loaded.policy.info();
        self.metrics
            .model_info
            .with_label_values(&[name, loaded.version(), &p.name, &p.version])
            .set(1);
        self.metrics.reloads.with_label_values(&[name, "ok"]).inc();
        if name == self.default_model {
            self.ready.store(true, Ordering::Release);
            self.metrics.ready.set(1.0);
        }
        tracing::info!(model = %name, version = %loaded.version(), previous = ?previous.as_ref().map(|p| p.version().to_string()), "model serving");
        Ok(ReloadOutcome {
            model: name.to_string(),
            version: loaded.version().to_string(),
            previous_version: previous.map(|p| p.version().to_string()),
        })
    }

    /// Reloads every model that is served or on disk (SIGHUP).
    pub fn reload_all(&self) {
        let mut names = self.names_on_disk();
        for m in self.list() {
            if !names.iter().any(|n| n == m.name()) {
                names.push(m.name().to_string());
            }
        }
        for name in names {
            if let Err(e) = self.reload(&name) {
                tracing::error!(model = %name, error = %e, "reload refused");
            }
        }
    }

    fn load_bundle(&self, name: &str, dir: &Path) -> anyhow::Result<LoadedModel> {
        let mut predictor = Predictor::load(dir, &self.device)?;
        let manifest = predictor.manifest().clone();
        anyhow::ensure!(
            manifest.name == name,
            "{}: model.json says name '{}', but the bundle is in folder '{name}'",
            dir.display(),
            manifest.name
        );
        // The folder is the version in service, whatever model.json was trained as.
        let version = dir
            .file_name()
            .and_then(|v| v.to_str())
            .unwrap_or_default()
            .to_string();
        if manifest.version != version {
            tracing::warn!(model = %name, folder = %version, manifest = %manifest.version, "model.json version differs from its folder; serving the folder's");
        }
        let mut manifest = manifest;
        manifest.version = version;
        predictor.set_version(&manifest.version);
        // Warm-up: one forward pass proves the weights run before the swap.
        let probe = vec![0.0f32; manifest.input_dim()];
        predictor.predict(&probe).context("warm-up forward pass")?;
        // Model and policy load together: a broken policy.json refuses the bundle.
        let policy = Policy::for_bundle(dir, &self.triage)?;
        self.metrics.init_model(name);
        let batcher = BatchHandle::spawn(predictor, self.batch, &self.metrics, name)
            .context("starting the inference thread")?;
        Ok(LoadedModel {
            manifest,
            dir: dir.to_path_buf(),
            policy,
            batcher,
            loaded_at: SystemTime::now(),
        })
    }
}

/// A model name as the API accepts it: 1 to 128 of `[A-Za-z0-9._-]`, not `.` or
/// `..`. Anything else (a `/`, a `%2F` decoded by the router) is refused before
/// it is joined onto a path.
pub fn valid_model_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Version folders of a model (those holding a `model.json`), oldest first:
/// numeric versions by value, after any non-numeric ones in name order.
fn latest_versions(model_dir: &Path) -> Vec<String> {
    let mut versions: Vec<String> = std::fs::read_dir(model_dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().join(crate::model::bundle::MANIFEST_FILE).is_file())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    versions.sort_by_key(|v| (v.parse::<u64>().ok(), v.clone()));
    versions
}

#[cfg(test)]
mod tests {
    use super::valid_model_name;

    #[test]
    fn model_names_are_plain_folder_names() {
        for ok in ["lidc-malignancy", "cifar10-cnn", "m_1.2"] {
            assert!(valid_model_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "/tmp/x",
            "a/b",
            "a\\b",
            "a b",
            "é",
            &"x".repeat(129),
        ] {
            assert!(!valid_model_name(bad), "{bad}");
        }
    }
}
