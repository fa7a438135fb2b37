//! Scoring off the async runtime, and the micro-batcher.
//!
//! Single requests go into a channel read by a few scorer threads (a
//! dedicated rayon pool whose workers each run the loop below, so the
//! parallel code inside `Recommender::recommend` runs inline on them, with
//! no hand-off to another pool and no idle workers spinning). With the
//! micro-batcher off (`window` zero) a scorer takes one request at a time.
//! With it on, a scorer takes the first request, then every request already
//! queued and whatever else arrives until `window` after the first one was
//! queued (a request that already waited that long goes at once), up to
//! `max`; and scores them in one `recommend` call per (model, exclude_seen,
//! parity), each answer cut to its own `k` from the largest `k` asked (the
//! ranking is a total order: score descending, id ascending). Answers go
//! back by oneshot channels.
//!
//! Batch requests (`/v1/recommend/batch`) run on rayon's global pool via
//! `on_pool`, spread over every core.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::model::Loaded;
use crate::retrieval::Scored;

/// What went wrong while scoring (a panic in the scoring code, or the
/// scorer gone): the request gets a 500, the service goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScoreError {
    /// The scoring code panicked; the panic's message.
    #[error("scoring failed: {0}")]
    Panicked(String),
    #[error("the scoring task ended without an answer")]
    NoAnswer,
    #[error("the scorer has stopped")]
    Stopped,
    #[error("the scorer dropped the request")]
    Dropped,
    /// This many requests were waiting already, the most allowed.
    #[error("{0} requests are waiting to be scored already")]
    Overloaded(usize),
}

pub type ScoreResult = Result<Vec<Scored>, ScoreError>;

/// One history to score.
pub struct ScoreRequest {
    pub model: Arc<Loaded>,
    pub history: Vec<u32>,
    pub k: usize,
    pub exclude_seen: bool,
    pub parity: bool,
}

struct Job {
    req: ScoreRequest,
    queued: Instant,
    reply: oneshot::Sender<ScoreResult>,
}

/// Runs `f` on rayon's global pool and hands back its result; a panic
/// becomes an error instead of aborting the process.
pub async fn on_pool<T, F>(f: F) -> Result<T, ScoreError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    rayon::spawn(move || {
        let r = catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_message(&p));
        let _ = tx.send(r);
    });
    rx.await.unwrap_or(Err(ScoreError::NoAnswer))
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> ScoreError {
    let what = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".into());
    ScoreError::Panicked(what)
}

/// Counts of what the scorers did, for the logs and the load test.
#[derive(Debug, Default)]
pub struct Stats {
    pub calls: std::sync::atomic::AtomicU64,
    pub requests: std::sync::atomic::AtomicU64,
}

/// The scorers' handle; cheap to share.
pub struct Scorer {
    tx: mpsc::Sender<Job>,
    /// Requests queued and not yet taken by a scorer.
    queued: Arc<AtomicUsize>,
    max_queued: usize,
    pub stats: Arc<Stats>,
    /// Keeps the scorer threads' pool alive.
    _pool: rayon::ThreadPool,
}

impl Scorer {
    /// Starts `threads` scorer threads. `window`: how long a request may
    /// wait for others to be scored with it (zero: never batched); `max`:
    /// the most requests in one call; `max_queued`: the most requests
    /// waiting for a scorer (more are refused, not queued without bound).
    pub fn start(
        threads: usize,
        window: Duration,
        max: usize,
        max_queued: usize,
    ) -> std::io::Result<Scorer> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let (pool, threads) =
            crate::workers::named_pool("score_threads", threads.max(1), Some("seqrec-score"))
                .map_err(std::io::Error::other)?;
        let max = if window.is_zero() { 1 } else { max.max(1) };
        let stats = Arc::new(Stats::default());
        let queued = Arc::new(AtomicUsize::new(0));
        for _ in 0..threads {
            let (rx, stats, queued) = (rx.clone(), stats.clone(), queued.clone());
            pool.spawn(move || scorer_loop(&rx, window, max, &stats, &queued));
        }
        Ok(Scorer {
            tx,
            queued,
            max_queued,
            stats,
            _pool: pool,
        })
    }

    /// Queues one history; the answer comes back on the receiver.
    pub fn submit(&self, req: ScoreRequest) -> oneshot::Receiver<ScoreResult> {
        let (tx, rx) = oneshot::channel();
        let waiting = self.queued.fetch_add(1, Ordering::AcqRel);
        if waiting >= self.max_queued {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            let _ = tx.send(Err(ScoreError::Overloaded(waiting)));
            return rx;
        }
        let job = Job {
            req,
            queued: Instant::now(),
            reply: tx,
        };
        if let Err(mpsc::SendError(job)) = self.tx.send(job) {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            let _ = job.reply.send(Err(ScoreError::Stopped));
        }
        rx
    }
}

/// Takes one batch off the channel; `None` once every sender is gone.
fn next_batch(rx: &Mutex<mpsc::Receiver<Job>>, window: Duration, max: usize) -> Option<Vec<Job>> {
    // One scorer collects at a time, so batches do not split each other.
    let rx = match rx.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    let first = rx.recv().ok()?;
    let deadline = first.queued + window;
    let mut batch = vec![first];
    while batch.len() < max {
        match rx.try_recv() {
            Ok(j) => {
                batch.push(j);
                continue;
            }
            Err(mpsc::TryRecvError::Disconnected) => break,
            Err(mpsc::TryRecvError::Empty) => {}
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match rx.recv_timeout(deadline - now) {
            Ok(j) => batch.push(j),
            Err(_) => break,
        }
    }
    Some(batch)
}

fn scorer_loop(
    rx: &Mutex<mpsc::Receiver<Job>>,
    window: Duration,
    max: usize,
    stats: &Stats,
    queued: &AtomicUsize,
) {
    use std::sync::atomic::Ordering::Relaxed;
    while let Some(batch) = next_batch(rx, window, max) {
        queued.fetch_sub(batch.len(), Ordering::AcqRel);
        stats.requests.fetch_add(batch.len() as u64, Relaxed);
        stats.calls.fetch_add(score(batch), Relaxed);
    }
}

/// Scores a batch: one `recommend` call per group of jobs that share a
/// model, `exclude_seen` and `parity`. Returns the number of calls.
fn score(mut batch: Vec<Job>) -> u64 {
    let mut calls = 0;
    while !batch.is_empty() {
        calls += 1;
        let head = &batch[0].req;
        let (model, ex, parity) = (head.model.clone(), head.exclude_seen, head.parity);
        let (group, rest): (Vec<Job>, Vec<Job>) = batch.into_iter().partition(|j| {
            Arc::ptr_eq(&j.req.model, &model) && j.req.exclude_seen == ex && j.req.parity == parity
        });
        batch = rest;
        let k = group.iter().map(|j| j.req.k).max().unwrap_or(1);
        let found = catch_unwind(AssertUnwindSafe(|| {
            let hs: Vec<&[u32]> = group.iter().map(|j| j.req.history.as_slice()).collect();
            model.rec.recommend(&hs, k, ex, parity)
        }));
        match found {
            Ok(found) => {
                for (job, mut f) in group.into_iter().zip(found) {
                    f.truncate(job.req.k);
                    let _ = job.reply.send(Ok(f));
                }
            }
            Err(p) => {
                let err = panic_message(&p);
                for job in group {
                    let _ = job.reply.send(Err(err.clone()));
                }
            }
        }
    }
    calls
}
