//! The batching queue (docs/architecture.md): a cheap `Clone` handle over a bounded channel,
//! and a dedicated OS thread per loaded model that greedily gathers queued requests
//! into one batch (up to `max_batch_size` cases, waiting at most `max_wait` for
//! more), runs the network once, and answers each request through its oneshot.
//! Candle never runs on an actix worker.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use prometheus::{Histogram, IntCounter, IntGauge};
use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::model::{Prediction, Predictor};

/// Why a request got no predictions.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InferError {
    #[error("the inference queue is full ({0} requests waiting)")]
    QueueFull(usize),
    #[error("the request deadline of {0:?} passed before the model answered")]
    DeadlineExceeded(Duration),
    #[error("inference failed: {0}")]
    Failed(String),
}

#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    pub max_batch_size: usize,
    pub max_wait: Duration,
    pub queue_capacity: usize,
}

struct Job {
    rows: Vec<f32>,
    cases: usize,
    enqueued: Instant,
    deadline: Instant,
    reply: oneshot::Sender<Result<Vec<Prediction>, InferError>>,
}

/// Per-model metric handles, resolved once.
#[derive(Clone)]
struct BatchMetrics {
    depth: IntGauge,
    queue_wait: Histogram,
    inference: Histogram,
    batch_size: Histogram,
    instances: IntCounter,
    queue_full: IntCounter,
    deadline: IntCounter,
    client_gone: IntCounter,
}

impl BatchMetrics {
    fn new(m: &Metrics, model: &str) -> Self {
        BatchMetrics {
            depth: m.queue_depth.with_label_values(&[model]),
            queue_wait: m.queue_wait.with_label_values(&[model]),
            inference: m.inference_duration.with_label_values(&[model]),
            batch_size: m.batch_size.with_label_values(&[model]),
            instances: m.instances.with_label_values(&[model]),
            queue_full: m.rejected.with_label_values(&[model, "queue_full"]),
            deadline: m.rejected.with_label_values(&[model, "deadline"]),
            client_gone: m.rejected.with_label_values(&[model, "client_gone"]),
        }
    }
}

/// Submits work to one model's inference thread. The thread ends when the last
/// handle is dropped and the queue is drained, so a replaced model version
/// finishes its in-flight requests and then goes away.
#[derive(Clone)]
pub struct BatchHandle {
    tx: Sender<Job>,
    capacity: usize,
    metrics: BatchMetrics,
}

impl BatchHandle {
    /// Starts the inference thread for `predictor`. `label` names the model in
    /// metrics and in the thread name.
    pub fn spawn(
        predictor: Predictor,
        cfg: BatchConfig,
        metrics: &Metrics,
        label: &str,
    ) -> std::io::Result<BatchHandle> {
        let (tx, rx) = crossbeam_channel::bounded(cfg.queue_capacity);
        let bm = BatchMetrics::new(metrics, label);
        let thread_metrics = bm.clone();
        std::thread::Builder::new()
            .name(format!("infer-{label}"))
            .spawn(move || run(predictor, rx, cfg, thread_metrics))?;
        Ok(BatchHandle {
            tx,
            capacity: cfg.queue_capacity,
            metrics: bm,
        })
    }

    /// Queues `rows` (whole cases, concatenated) and waits for the predictions, at
    /// most until `deadline`.
    pub async fn infer(
        &self,
        rows: Vec<f32>,
        cases: usize,
        deadline: Instant,
    ) -> Result<Vec<Prediction>, InferError> {
        let (reply, rx) = oneshot::channel();
        let now = Instant::now();
        let job = Job {
            rows,
            cases,
            enqueued: now,
            deadline,
            reply,
        };
        self.metrics.depth.inc();
        if let Err(e) = self.tx.try_send(job) {
            self.metrics.depth.dec();
            return Err(match e {
                TrySendError::Full(_) => {
                    self.metrics.queue_full.inc();
                    InferError::QueueFull(self.capacity)
                }
                TrySendError::Disconnected(_) => {
                    InferError::Failed("the inference thread has stopped".into())
                }
            });
        }
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(InferError::Failed(
                "the inference thread dropped the request".into(),
            )),
            Err(_) => {
                self.metrics.deadline.inc();
                Err(InferError::DeadlineExceeded(
                    deadline.saturating_duration_since(now),
                ))
            }
        }
    }
}

fn run(predictor: Predictor, rx: Receiver<Job>, cfg: BatchConfig, m: BatchMetrics) {
    let mut carry: Option<Job> = None;
    loop {
        let first = match carry.take() {
            Some(job) => job,
            None => match rx.recv() {
                Ok(job) => {
                    m.depth.dec();
                    job
                }
                Err(_) => break, // every handle dropped and the queue is empty
            },
        };
        let mut total = first.cases;
        let mut jobs = vec![first];
        let fill_until = Instant::now() + cfg.max_wait;
        while total < cfg.max_batch_size {
            let next = if cfg.max_wait.is_zero() {
                rx.try_recv().ok()
            } else {
                rx.recv_deadline(fill_until).ok()
            };
            let Some(job) = next else { break };
            m.depth.dec();
            if total + job.cases > cfg.max_batch_size {
                carry = Some(job);
                break;
            }
            total += job.cases;
            jobs.push(job);
        }
        run_batch(&predictor, jobs, &m);
    }
    tracing::debug!(model = %predictor.manifest().name, version = %predictor.manifest().version, "inference thread stopped");
}

fn run_batch(predictor: &Predictor, jobs: Vec<Job>, m: &BatchMetrics) {
    let now = Instant::now();
    // Drop work nobody waits for any more, before spending compute on it.
    let mut live = Vec::with_capacity(jobs.len());
    for job in jobs {
        m.queue_wait
            .observe(now.duration_since(job.enqueued).as_secs_f64());
        if job.reply.is_closed() {
            m.client_gone.inc();
        } else if now >= job.deadline {
            m.deadline.inc();
            let _ = job.reply.send(Err(InferError::DeadlineExceeded(
                job.deadline.saturating_duration_since(job.enqueued),
            )));
        } else {
            live.push(job);
        }
    }
    if live.is_empty() {
        return;
    }
    let cases: usize = live.iter().map(|j| j.cases).sum();
    let mut rows = Vec::with_capacity(live.iter().map(|j| j.rows.len()).sum());
    for job in &live {
        rows.extend_from_slice(&job.rows);
    }
    let started = Instant::now();
    // A panic inside candle must not take the thread (and the model) down.
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| predictor.predict(&rows)))
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the model panicked")));
    m.inference.observe(started.elapsed().as_secs_f64());
    m.batch_size.observe(cases as f64);
    m.instances.inc_by(cases as u64);
    match outcome {
        Ok(predictions) if predictions.len() == cases => {
            let mut it = predictions.into_iter();
            for job in live {
                let mine: Vec<Prediction> = it.by_ref().take(job.cases).collect();
                let _ = job.reply.send(Ok(mine));
            }
        }
        Ok(predictions) => {
            let msg = format!(
                "the model returned {} predictions for {cases} cases",
                predictions.len()
            );
            for job in live {
                let _ = job.reply.send(Err(InferError::Failed(msg.clone())));
            }
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "inference failed");
            let msg = format!("{e:#}");
            for job in live {
                let _ = job.reply.send(Err(InferError::Failed(msg.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Predictor;

    fn shipped_predictor() -> Predictor {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/lidc-malignancy/1");
        Predictor::load(&dir, &candle_core::Device::Cpu).unwrap()
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        // A queue of one with no inference thread draining it.
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let metrics = Metrics::new();
        let handle = BatchHandle {
            tx,
            capacity: 1,
            metrics: BatchMetrics::new(&metrics, "t"),
        };
        let first = {
            let h = handle.clone();
            tokio::spawn(async move {
                h.infer(vec![0.0; 8], 1, Instant::now() + Duration::from_millis(100))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let second = handle
            .infer(vec![0.0; 8], 1, Instant::now() + Duration::from_secs(1))
            .await;
        assert_eq!(second, Err(InferError::QueueFull(1)));
        assert!(matches!(
            first.await.unwrap(),
            Err(InferError::DeadlineExceeded(_))
        ));
        assert_eq!(
            metrics
                .rejected
                .with_label_values(&["t", "queue_full"])
                .get(),
            1
        );
        assert_eq!(
            metrics.rejected.with_label_values(&["t", "deadline"]).get(),
            1
        );
    }

    #[tokio::test]
    async fn requests_whose_client_left_are_dropped_before_compute() {
        let metrics = Metrics::new();
        let cfg = BatchConfig {
            max_batch_size: 64,
            max_wait: Duration::from_millis(150),
            queue_capacity: 16,
        };
        let handle = BatchHandle::spawn(shipped_predictor(), cfg, &metrics, "t").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let gone = {
            let h = handle.clone();
            tokio::spawn(async move { h.infer(vec![1.0; 8], 1, deadline).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        gone.abort();
        let kept = handle.infer(vec![2.0; 16], 2, deadline).await.unwrap();
        assert_eq!(kept.len(), 2);
        assert_eq!(
            metrics
                .rejected
                .with_label_values(&["t", "client_gone"])
                .get(),
            1
        );
        assert_eq!(
            metrics.instances.with_label_values(&["t"]).get(),
            2,
            "only the live request ran"
        );
    }

    #[tokio::test]
    async fn queued_requests_share_one_batch_and_get_their_own_answers() {
        let metrics = Metrics::new();
        let cfg = BatchConfig {
            max_batch_size: 64,
            max_wait: Duration::from_millis(100),
            queue_capacity: 16,
        };
        let predictor = shipped_predictor();
        let rows: Vec<Vec<f32>> = (0..5)
            .map(|i| (0..8).map(|j| (i * 8 + j) as f32).collect())
            .collect();
        let expected: Vec<Prediction> = rows
            .iter()
            .map(|r| predictor.predict(r).unwrap().remove(0))
            .collect();
        let handle = BatchHandle::spawn(predictor, cfg, &metrics, "t").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let answers = futures_util::future::join_all(
            rows.iter().map(|r| handle.infer(r.clone(), 1, deadline)),
        )
        .await;
        for (got, want) in answers.into_iter().zip(&expected) {
            let got = got.unwrap().remove(0);
            for (a, b) in got.probabilities.iter().zip(&want.probabilities) {
                assert!((a - b).abs() < 1e-5);
            }
        }
        let batches = metrics
            .batch_size
            .with_label_values(&["t"])
            .get_sample_count();
        assert!(batches < 5, "{batches} batches for 5 queued requests");
    }
}
