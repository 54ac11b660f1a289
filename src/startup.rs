//! Building and running the server: `Application::build(settings)` binds its own
//! listener (port 0 works, for tests), starts loading models in the background
//! (readiness flips when the default model serves), and listens for SIGHUP to
//! reload. actix handles SIGTERM/SIGINT: stop accepting, finish in-flight. Then
//! the lifecycle's cancellation token stops every background loop (webhook
//! delivery, FHIR Task publishing, queue maintenance, SIGHUP), each of which
//! selects on it, and `run_until_stopped` waits for them before it returns.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use anyhow::Context;

use crate::api::{self, AppState};
use crate::auth::Auth;
use crate::background::Supervisor;
use crate::batch::BatchConfig;
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::model::device;
use crate::registry::Registry;
use crate::store::{Clock, Store, StoreOptions, Subscription};
use crate::triage::TriageCore;
use tokio_util::sync::CancellationToken;

/// How long the background loops have, all together, to stop after the HTTP
/// server has drained.
pub const BACKGROUND_STOP_BUDGET: Duration = Duration::from_secs(5);

pub struct Application {
    port: u16,
    server: Server,
    registry: Arc<Registry>,
    metrics: Metrics,
    /// The background loops, stopped when the HTTP server has stopped.
    background: Supervisor,
}

impl Application {
    /// Binds `settings.server.bind` and prepares the server; models load in the
    /// background once the server runs. Must be called inside an actix/tokio runtime.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let metrics = Metrics::new();
        let auth = Auth::new(&settings.auth.tokens, settings.server.bind)?;
        let store = Arc::new(
            Store::connect(
                settings.store.url.expose(),
                StoreOptions {
                    lease: Duration::from_secs(settings.store.lease_seconds),
                    max_lease_failures: settings.store.max_lease_failures,
                    max_leases_per_reviewer: settings.store.max_leases_per_reviewer,
                    webhook_targets: settings
                        .webhooks
                        .targets
                        .iter()
                        .map(|t| Subscription {
                            url: t.url.clone(),
                            events: t.events.clone(),
                        })
                        .collect(),
                    write_timeout: Duration::from_millis(settings.store.write_timeout_ms),
                    fhir: crate::fhir::scope(&settings.fhir),
                    clock: Clock::Database,
                },
            )
            .await
            .with_context(|| format!("opening the review queue at {}", settings.store.url))?,
        );
        let device = device::select(settings.batch.device)?;
        let registry = Arc::new(Registry::new(
            settings.models.dir.clone(),
            settings.models.default.clone(),
            BatchConfig {
                max_batch_size: settings.batch.max_batch_size,
                max_wait: settings.batch.max_wait(),
                queue_capacity: settings.batch.queue_capacity,
            },
            settings.triage.clone(),
            device,
            metrics.clone(),
        ));
        let listener = TcpListener::bind(settings.server.bind)
            .with_context(|| format!("binding {}", settings.server.bind))?;
        let port = listener.local_addr()?.port();
        let max_body = settings.server.max_body_bytes;
        let bench_routes = settings.server.bench_routes;
        if bench_routes {
            tracing::warn!("server.bench_routes is on: POST /bench/parse and /bench/predict answer without a policy (for benches/run; never in production)");
        }
        let workers = match settings.server.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let shutdown_timeout = settings.server.shutdown_timeout_seconds;
        let mut background = Supervisor::new(metrics.clone());
        let shutdown = background.shutdown();
        if !settings.webhooks.targets.is_empty() {
            background.spawn(
                "webhooks",
                crate::webhooks::deliver_until(
                    store.clone(),
                    settings.webhooks.targets.clone(),
                    Duration::from_secs(settings.webhooks.max_backoff_seconds),
                    metrics.clone(),
                    shutdown.clone(),
                ),
            );
        }
        if settings.fhir.enabled() {
            background.spawn(
                "fhir",
                crate::fhir::publish_until(
                    store.clone(),
                    settings.fhir.clone(),
                    metrics.clone(),
                    shutdown.clone(),
                ),
            );
        }
        background.spawn(
            "queue",
            maintain_queue(
                store.clone(),
                registry.clone(),
                metrics.clone(),
                Duration::from_secs(settings.store.rescue_interval_seconds),
                shutdown.clone(),
            ),
        );
        background.spawn("sighup", sighup_reload(registry.clone(), shutdown.clone()));
        let decoders = match settings.server.image_decoders {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let state_store = store.clone();
        let state = web::Data::new(AppState {
            registry: registry.clone(),
            metrics: metrics.clone(),
            triage: TriageCore::new(
                store.clone(),
                metrics.clone(),
                settings.batch.request_timeout(),
                settings.server.max_instances,
            ),
            images: api::image_input::ImageBudget::new(decoders, settings.server.max_image_pixels),
            settings: Arc::new(settings),
            auth,
            store,
            background: background.health(),
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(from_fn(api::guards::bounded_body))
                .wrap(from_fn(api::guards::same_origin_json))
                .wrap(from_fn(api::ensure_problem_json))
                .wrap(from_fn(api::record_metrics))
                .wrap(from_fn(api::request_log::trace_requests))
                .configure(|cfg| api::configure(cfg, max_body, bench_routes))
        })
        .listen(listener)?
        .workers(workers)
        .shutdown_timeout(shutdown_timeout)
        .run();

        let (loader, monitors, monitor_metrics) =
            (registry.clone(), state_store.clone(), metrics.clone());
        tokio::spawn(async move {
            let registry = loader.clone();
            let _ = tokio::task::spawn_blocking(move || loader.load_all()).await;
            // A restarted daemon resumes its monitors (a fall-back included) at once.
            crate::audit_monitor::sync(&monitors, &monitor_metrics, &registry).await;
        });
        Ok(Application {
            port,
            server,
            registry,
            metrics,
            background,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Stops the server: `graceful` finishes in-flight requests first.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Runs until the server is stopped (SIGTERM, SIGINT or the handle), then
    /// stops the background loops and waits for them, all together, within
    /// [`BACKGROUND_STOP_BUDGET`]: with the HTTP drain
    /// (`server.shutdown_timeout_seconds`, 30 by default) that fits the 40–45 s
    /// grace periods of deploy/ (systemd, compose, Kubernetes).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        self.background.stop(BACKGROUND_STOP_BUDGET).await;
        result
    }
}

/// Rescues expired leases, refreshes the queue gauges and adopts the audit
/// monitors' stored state (other daemons' outcomes), every `interval`, until
/// `shutdown`.
async fn maintain_queue(
    store: Arc<Store>,
    registry: Arc<Registry>,
    metrics: Metrics,
    interval: Duration,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        match store.rescue_expired().await {
            Ok(n) if n > 0 => {
                metrics.review_lease_expiries.inc_by(n);
                tracing::info!(expired = n, "rescued expired review leases");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "rescuing expired leases failed"),
        }
        if let Ok(stats) = store.stats().await {
            for (status, n) in &stats.by_status {
                metrics.review_cases.with_label_values(&[status]).set(*n);
            }
            metrics
                .review_oldest_pending
                .set(stats.oldest_pending_seconds.unwrap_or(0.0));
        }
        crate::audit_monitor::sync(&store, &metrics, &registry).await;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Reloads every model on SIGHUP, until `shutdown`.
#[cfg(unix)]
async fn sighup_reload(registry: Arc<Registry>, shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    {
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload through the admin API");
            // Not a failure of the daemon: wait for the end like the others.
            shutdown.cancelled().await;
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                got = hangups.recv() => if got.is_none() { break },
            }
            tracing::info!("SIGHUP: reloading every model");
            let r = registry.clone();
            let _ = tokio::task::spawn_blocking(move || r.reload_all()).await;
            // Coalesce a burst of signals into one reload.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(not(unix))]
async fn sighup_reload(_registry: Arc<Registry>, shutdown: CancellationToken) {
    shutdown.cancelled().await
}
