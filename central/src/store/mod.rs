//! `bulkflow-central store`: the worker that moves queued batches from Redis
//! into PostgreSQL.
//!
//! Each round it takes, in this order: entries it holds from an earlier failed
//! round, entries a dead worker left pending for longer than
//! `reclaim_idle_ms` (XAUTOCLAIM), then new entries. It writes them in one
//! transaction ([`copy::Writer`]) and only then acknowledges them in Redis, so a
//! crash anywhere leaves the entries pending for a retry that the batch ids and
//! `ON CONFLICT DO NOTHING` make harmless.
//!
//! Failures are sorted by cause. PostgreSQL or Redis unavailable: wait with
//! exponential backoff and retry, entries stay in Redis. An entry that cannot
//! be decoded or that PostgreSQL refuses: counted per entry, and after
//! `max_attempts` moved to the dead-letter stream with its error while the rest
//! flows on.

pub mod copy;
pub mod extract;
pub mod numeric;
pub mod rename;
pub mod typed;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::queue::{Item, Origin, Queue};
use crate::shutdown::Shutdown;
use bulkflow_shared::wire;
use copy::{QueuedBatch, Writer};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Batches decompress to at most this much in the worker (edges are bounded by
/// central's ingest limit already; this guards entries from other writers).
const MAX_DECOMPRESSED: usize = 512 << 20;

pub async fn run(cfg: Config, metrics: Arc<Metrics>, mut shutdown: Shutdown) -> anyhow::Result<()> {
    let queue = Queue::new(&cfg.redis, Duration::from_millis(cfg.store.block_ms))?;
    let consumer = consumer_name();
    info!(%consumer, stream = %cfg.redis.stream, "store worker started");
    let mut worker = Worker {
        queue,
        cfg,
        metrics,
        writer: None,
        consumer,
        backoff: Backoff::new(),
        last_reclaim: None,
        group_ready: false,
    };
    loop {
        if shutdown.is_triggered() {
            break;
        }
        tokio::select! {
            _ = worker.round() => {}
            _ = shutdown.wait() => {}
        }
    }
    info!("store worker stopped");
    Ok(())
}

/// Unique per process, stable for its lifetime, readable in XINFO.
fn consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{host}-{}-{nanos:08x}", std::process::id())
}

struct Worker {
    queue: Queue,
    cfg: Config,
    metrics: Arc<Metrics>,
    writer: Option<Writer>,
    consumer: String,
    backoff: Backoff,
    last_reclaim: Option<Instant>,
    group_ready: bool,
}

/// Why a round stopped early: Redis or PostgreSQL unreachable. Either way
/// the worker backs off and retries the same entries.
enum Failure {
    Redis(redis::RedisError),
    Postgres(String),
}

impl From<redis::RedisError> for Failure {
    fn from(e: redis::RedisError) -> Self {
        Failure::Redis(e)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Redis(e) => write!(f, "Redis: {e}"),
            Failure::Postgres(e) => write!(f, "PostgreSQL: {e}"),
        }
    }
}

impl Worker {
    /// One read-write-ack round. Cancelling it (shutdown) at any await point is
    /// safe: nothing is acknowledged before its transaction has committed.
    async fn round(&mut self) {
        match self.try_round().await {
            Ok(()) => self.backoff.reset(),
            Err(why) => {
                let wait = self.backoff.next(self.cfg.store.max_backoff_ms);
                warn!(%why, wait_ms = wait.as_millis() as u64, "storage unavailable; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }

    async fn try_round(&mut self) -> Result<(), Failure> {
        let result = self.read_and_process().await;
        if let Err(Failure::Redis(_)) = &result {
            // A Redis that restarted without persistence (or was flushed) has
            // lost the consumer group: XREADGROUP then answers NOGROUP until
            // the group is created again, so any Redis failure re-checks it.
            self.group_ready = false;
        }
        result
    }

    async fn read_and_process(&mut self) -> Result<(), Failure> {
        if !self.group_ready {
            self.queue.ensure_group().await?;
            self.group_ready = true;
        }
        let count = self.cfg.store.read_count;
        let mut items = self.queue.read_pending(&self.consumer, count).await?;
        let reclaim_every = Duration::from_millis(self.cfg.store.reclaim_idle_ms / 2)
            .max(Duration::from_millis(100));
        if items.is_empty()
            && self
                .last_reclaim
                .is_none_or(|t| t.elapsed() >= reclaim_every)
        {
            self.last_reclaim = Some(Instant::now());
            let idle = Duration::from_millis(self.cfg.store.reclaim_idle_ms);
            items = self.queue.reclaim(&self.consumer, idle, count).await?;
            if !items.is_empty() {
                info!(
                    entries = items.len(),
                    "reclaimed entries left pending by another worker"
                );
                self.metrics
                    .add(&self.metrics.store_reclaimed, items.len() as u64);
                items = self.count_reclaims(items).await?;
            }
        }
        if items.is_empty() {
            items = self.queue.read_new(&self.consumer, count).await?;
        }
        if items.is_empty() {
            return Ok(());
        }
        self.process(items).await
    }

    async fn writer(&mut self) -> Result<&mut Writer, Failure> {
        if self.writer.as_ref().is_some_and(Writer::is_closed) {
            self.writer = None;
        }
        if self.writer.is_none() {
            let mut w = Writer::connect(&self.cfg.postgres.url)
                .await
                .map_err(|e| Failure::Postgres(e.to_string()))?;
            w.set_names_refresh(Duration::from_secs(
                self.cfg.store.names_refresh_secs.max(1),
            ));
            self.writer = Some(w);
        }
        self.writer
            .as_mut()
            .ok_or_else(|| Failure::Postgres("no connection".into()))
    }

    async fn process(&mut self, items: Vec<Item>) -> Result<(), Failure> {
        let mut good: Vec<(Item, QueuedBatch)> = Vec::new();
        for item in items {
            match decode(&item) {
                Ok(b) => good.push((item, b)),
                Err(why) => self.fail(&item, &why).await?,
            }
        }
        if good.is_empty() {
            return Ok(());
        }
        let (items, batches): (Vec<Item>, Vec<QueuedBatch>) = good.into_iter().unzip();
        match self.write(&batches).await? {
            Ok(()) => self.ack(&items).await,
            // Some entry is refused: write them one by one to find which.
            Err(_) if items.len() > 1 => {
                for (item, batch) in items.iter().zip(batches) {
                    match self.write(std::slice::from_ref(&batch)).await? {
                        Ok(()) => self.ack(std::slice::from_ref(item)).await?,
                        Err(why) => self.fail(item, &why).await?,
                    }
                }
                Ok(())
            }
            Err(why) => self.fail(&items[0], &why).await,
        }
    }

    /// Writes batches; the outer error means "unavailable", the inner one
    /// "refused by PostgreSQL for this data".
    async fn write(&mut self, batches: &[QueuedBatch]) -> Result<Result<(), String>, Failure> {
        let started = Instant::now();
        let w = self.writer().await?;
        match w.write(batches).await {
            Ok(stats) => {
                debug!(
                    ?stats,
                    ms = started.elapsed().as_millis() as u64,
                    "committed"
                );
                self.metrics.record_write(&stats, started.elapsed());
                Ok(Ok(()))
            }
            Err(e) if copy::is_transient(&e) => {
                self.writer = None;
                Err(Failure::Postgres(e.to_string()))
            }
            Err(e) => Ok(Err(format!("PostgreSQL refused the batch: {e}"))),
        }
    }

    async fn ack(&mut self, items: &[Item]) -> Result<(), Failure> {
        let ids: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
        // Committed but not acknowledged (Redis gone now) is safe: the entries
        // come back and their batch ids are already recorded.
        self.queue.ack(&ids).await.map_err(Failure::Redis)
    }

    /// Counts each reclaimed entry as a failed attempt: its worker died or hung
    /// before committing it. An entry that crashes every worker that takes it
    /// (it never reaches [`Worker::fail`]) is thus dead-lettered after
    /// `max_attempts` reclaims instead of taking workers down forever.
    async fn count_reclaims(&mut self, items: Vec<Item>) -> Result<Vec<Item>, Failure> {
        let mut keep = Vec::with_capacity(items.len());
        for item in items {
            let why = |n: u32| {
                format!(
                    "reclaimed {n} times: the workers that took it stopped before committing it"
                )
            };
            if self.count_attempt(&item, why).await?.is_some() {
                keep.push(item);
            }
        }
        Ok(keep)
    }

    /// Counts a failed attempt at `item`; dead-letters it after `max_attempts`.
    async fn fail(&mut self, item: &Item, why: &str) -> Result<(), Failure> {
        if let Some(attempts) = self.count_attempt(item, |_| why.to_string()).await? {
            warn!(id = %item.id, attempts, error = %why, "entry failed; will retry");
            // Spread retries of a failing entry out a little.
            tokio::time::sleep(Duration::from_millis(50 * u64::from(attempts))).await;
        }
        Ok(())
    }

    /// Records one attempt at `item`; at `max_attempts` moves it to the
    /// dead-letter stream with `reason(attempts)` and returns `None`, else the
    /// attempts so far.
    async fn count_attempt(
        &mut self,
        item: &Item,
        reason: impl Fn(u32) -> String,
    ) -> Result<Option<u32>, Failure> {
        let attempts = self.queue.record_failure(&item.id).await?;
        if attempts < self.cfg.store.max_attempts {
            return Ok(Some(attempts));
        }
        let reason = reason(attempts);
        warn!(id = %item.id, attempts, error = %reason, "moving entry to the dead-letter stream");
        self.queue.dead_letter(item, &reason).await?;
        self.metrics.add(&self.metrics.store_dead_lettered, 1);
        Ok(None)
    }
}

fn decode(item: &Item) -> Result<QueuedBatch, String> {
    let content = item
        .content
        .as_ref()
        .ok_or_else(|| "stream entry lacks the origin/edge/seq/data fields".to_string())?;
    let batch = wire::decode(&content.data, MAX_DECOMPRESSED).map_err(|e| e.to_string())?;
    if content.origin == Origin::Edge
        && (batch.edge_id != content.edge || batch.batch_seq != content.seq)
    {
        return Err(format!(
            "entry says batch {}#{} but holds {}#{}",
            content.edge, content.seq, batch.edge_id, batch.batch_seq
        ));
    }
    Ok(QueuedBatch {
        origin: content.origin,
        batch,
    })
}

/// Exponential backoff with jitter, from 100 ms up to a maximum.
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { attempt: 0 }
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }

    fn next(&mut self, max_ms: u64) -> Duration {
        let base = 100u64.saturating_mul(1 << self.attempt.min(16)).min(max_ms);
        self.attempt += 1;
        // Jitter from the clock's low bits: enough to keep workers from retrying in step.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_nanos()));
        Duration::from_millis(base / 2 + nanos % (base / 2 + 1))
    }
}
