//! The forwarder: oldest pending reports -> batches -> central, deleted only
//! once central says they are committed.
//!
//! One batch is sent at a time, in `batch_seq` order, so batches (formed from
//! entries in arrival order) keep every device's reports in order. Up to
//! `max_unacked` batches may be sent and awaiting central's commit; an Ack
//! arrives with each `POST /v1/batches` answer or from `GET /v1/acks` while
//! idle. A batch not acknowledged within `ack_timeout_secs` is sent again,
//! byte for byte. Failures back off exponentially with jitter. After a long
//! outage the backlog drains as fast as central answers, in full batches;
//! new reports are unaffected because forming a batch is one short
//! transaction on the writer, between group commits.

use crate::config::{Config, Forward as ForwardConfig};
use crate::metrics::Metrics;
use crate::outbox::{BatchInfo, Outbox, now_ms};
use crate::shutdown::Shutdown;
use anyhow::Context;
use bulkflow_shared::wire::{self, Ack};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A batch the forwarder is responsible for.
struct Tracked {
    info: BatchInfo,
    sent_at: Option<Instant>,
}

pub struct Forwarder {
    config: ForwardConfig,
    edge_id: String,
    batches_url: String,
    acks_url: String,
    client: reqwest::Client,
    outbox: Outbox,
    metrics: Arc<Metrics>,
    stored: Arc<Notify>,
    shutdown: Shutdown,
}

/// Exponential backoff with jitter: each delay is drawn from [d/2, d].
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    fn delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = d.as_millis() as u64 / 2;
        Duration::from_millis(half + fastrand::u64(0..=half))
    }
}

/// The HTTP client for central: rustls with ring, an optional private CA and
/// an optional client certificate.
pub fn client(config: &ForwardConfig) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(config.request_timeout_secs))
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(30))
        .no_proxy();
    if let Some(ca) = &config.ca_cert {
        let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("bad CA PEM in {}", ca.display()))?;
        b = b.tls_certs_merge(certs);
    }
    if let (Some(cert), Some(key)) = (&config.client_cert, &config.client_key) {
        let mut pem =
            std::fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?;
        pem.push(b'\n');
        pem.extend(std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?);
        let identity =
            reqwest::Identity::from_pem(&pem).context("bad client certificate or key")?;
        b = b.identity(identity);
    }
    b.build().context("cannot build the HTTP client")
}

impl Forwarder {
    pub fn new(
        config: &Config,
        outbox: Outbox,
        metrics: Arc<Metrics>,
        stored: Arc<Notify>,
        shutdown: Shutdown,
    ) -> anyhow::Result<Self> {
        let base = config.central_url.trim_end_matches('/');
        Ok(Forwarder {
            config: config.forward.clone(),
            edge_id: config.edge_id.clone(),
            batches_url: format!("{base}/v1/batches"),
            acks_url: format!("{base}/v1/acks"),
            client: client(&config.forward)?,
            outbox,
            metrics,
            stored,
            shutdown,
        })
    }

    pub async fn run(mut self) {
        let mut queue: VecDeque<Tracked> = VecDeque::new();
        // Batches left from the last run: central may or may not have them;
        // sending them again (same bytes) is harmless.
        match self.outbox.list_batches().await {
            Ok(list) => queue.extend(list.into_iter().map(|info| Tracked {
                info,
                sent_at: None,
            })),
            Err(e) => tracing::error!(error = %e, "cannot list stored batches"),
        }
        let mut backoff = Backoff::new(
            Duration::from_millis(self.config.backoff_min_ms),
            Duration::from_millis(self.config.backoff_max_ms.max(self.config.backoff_min_ms)),
        );
        let mut last_poll = Instant::now();
        let ack_timeout = Duration::from_secs(self.config.ack_timeout_secs);
        let ack_poll = Duration::from_millis(self.config.ack_poll_ms);
        while !self.shutdown.requested() {
            if queue.len() < self.config.max_unacked && self.batch_due() {
                match self
                    .outbox
                    .form_batch(
                        &self.edge_id,
                        self.config.batch_max_reports,
                        self.config.batch_max_bytes as u64,
                    )
                    .await
                {
                    Ok(Some(info)) => {
                        tracing::debug!(seq = info.seq, reports = info.reports, "batch formed");
                        queue.push_back(Tracked {
                            info,
                            sent_at: None,
                        });
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "cannot form a batch");
                        self.pause(backoff.delay()).await;
                        continue;
                    }
                }
            }
            let due = queue
                .iter()
                .position(|t| t.sent_at.is_none_or(|at| at.elapsed() >= ack_timeout));
            let result = if let Some(i) = due {
                self.send(&mut queue, i).await
            } else if !queue.is_empty() && last_poll.elapsed() >= ack_poll {
                last_poll = Instant::now();
                self.poll_acks(&mut queue).await
            } else {
                let wait = self.idle_wait(&queue, last_poll, ack_poll, ack_timeout);
                tokio::select! {
                    _ = self.stored.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.shutdown.wait() => {}
                }
                continue;
            };
            match result {
                Ok(()) => backoff.reset(),
                Err(e) => {
                    self.metrics.forward_error();
                    let message = format!("{e:#}");
                    tracing::warn!(error = %message, "forwarding to central failed");
                    self.outbox.forward_result(false, message);
                    self.pause(backoff.delay()).await;
                }
            }
        }
    }

    async fn pause(&mut self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.shutdown.wait() => {}
        }
    }

    /// A batch is due when a full one is pending or the oldest pending report
    /// has waited `batch_max_age_ms`.
    fn batch_due(&self) -> bool {
        let s = self.outbox.stats();
        if s.pending_reports == 0 {
            return false;
        }
        s.pending_reports >= self.config.batch_max_reports as u64
            || s.entry_bytes >= self.config.batch_max_bytes as u64
            || s.oldest_entry_ms
                .is_some_and(|t| now_ms() - t >= self.config.batch_max_age_ms as i64)
    }

    fn idle_wait(
        &self,
        queue: &VecDeque<Tracked>,
        last_poll: Instant,
        ack_poll: Duration,
        ack_timeout: Duration,
    ) -> Duration {
        let mut wait = Duration::from_secs(5);
        let s = self.outbox.stats();
        if queue.len() < self.config.max_unacked
            && let Some(t) = s.oldest_entry_ms
        {
            let left = self.config.batch_max_age_ms as i64 - (now_ms() - t);
            wait = wait.min(Duration::from_millis(left.max(1) as u64));
        }
        if !queue.is_empty() {
            wait = wait.min(ack_poll.saturating_sub(last_poll.elapsed()));
        }
        for t in queue {
            if let Some(at) = t.sent_at {
                wait = wait.min(ack_timeout.saturating_sub(at.elapsed()));
            }
        }
        wait.max(Duration::from_millis(1))
    }

    fn request(&self, builder: reqwest::RequestBuilder, from: u64) -> reqwest::RequestBuilder {
        let b = builder.header(wire::PENDING_FROM_HEADER, from.to_string());
        match &self.config.token {
            Some(t) => b.bearer_auth(t),
            None => b,
        }
    }

    async fn send(&self, queue: &mut VecDeque<Tracked>, i: usize) -> anyhow::Result<()> {
        let seq = queue[i].info.seq;
        let Some(bytes) = self.outbox.load_batch(seq).await? else {
            // Dropped under quota_policy = drop_oldest, or already committed.
            queue.remove(i);
            return Ok(());
        };
        let from = queue.front().map_or(seq, |t| t.info.seq);
        let len = bytes.len();
        let response = self
            .request(self.client.post(&self.batches_url), from)
            .header(http::header::CONTENT_TYPE, wire::CONTENT_TYPE)
            .body(bytes)
            .send()
            .await
            .with_context(|| format!("sending batch {seq}"))?;
        // 400 and 413 say this batch will never be accepted: set it aside (kept
        // in `rejected_batches` for an operator) instead of blocking the rest.
        // Anything else (401/403 config, 5xx, 429) is retried.
        let status = response.status();
        if status == reqwest::StatusCode::BAD_REQUEST
            || status == reqwest::StatusCode::PAYLOAD_TOO_LARGE
        {
            let text = response.text().await.unwrap_or_default();
            let reason = text.lines().next().unwrap_or("").trim().to_string();
            tracing::error!(seq, status = status.as_u16(), %reason, "central refused the batch; set aside in rejected_batches");
            self.outbox
                .park_batch(seq, status.as_u16(), reason.clone())
                .await?;
            queue.retain(|t| t.info.seq != seq);
            self.metrics.batch_rejected();
            self.outbox.forward_result(
                false,
                format!("batch {seq} refused by central ({status}): {reason}"),
            );
            return Ok(());
        }
        let ack = read_ack(response)
            .await
            .with_context(|| format!("batch {seq}"))?;
        if let Some(t) = queue.iter_mut().find(|t| t.info.seq == seq) {
            if t.sent_at.is_some() {
                tracing::info!(seq, "batch sent again (no acknowledgement in time)");
            }
            t.sent_at = Some(Instant::now());
        }
        self.outbox.mark_sent(seq);
        self.metrics.batch_sent(len);
        self.outbox
            .forward_result(true, format!("batch {seq} accepted"));
        self.apply_ack(queue, &ack).await
    }

    async fn poll_acks(&self, queue: &mut VecDeque<Tracked>) -> anyhow::Result<()> {
        let from = queue.front().map_or(0, |t| t.info.seq);
        let response = self
            .request(
                self.client.get(format!("{}?from={from}", self.acks_url)),
                from,
            )
            .send()
            .await
            .context("asking for acknowledgements")?;
        let ack = read_ack(response).await?;
        self.apply_ack(queue, &ack).await
    }

    async fn apply_ack(&self, queue: &mut VecDeque<Tracked>, ack: &Ack) -> anyhow::Result<()> {
        let committed: Vec<u64> = queue
            .iter()
            .map(|t| t.info.seq)
            .filter(|s| ack.committed.binary_search(s).is_ok() || ack.committed.contains(s))
            .collect();
        if committed.is_empty() {
            return Ok(());
        }
        let n = self.outbox.delete_batches(committed.clone()).await?;
        queue.retain(|t| !committed.contains(&t.info.seq));
        self.metrics.batches_committed(n);
        Ok(())
    }
}

/// Largest answer read from central: an Ack lists at most a few thousand
/// batch numbers; anything bigger is not central talking.
const MAX_ANSWER_BYTES: usize = 1 << 20;

async fn read_ack(mut response: reqwest::Response) -> anyhow::Result<Ack> {
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.context("reading central's answer")? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            anyhow::bail!("central's answer is over {MAX_ANSWER_BYTES} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    if status != reqwest::StatusCode::OK {
        let text = String::from_utf8_lossy(&body);
        anyhow::bail!(
            "central answered {status}: {}",
            text.lines().next().unwrap_or("").trim()
        );
    }
    serde_json::from_slice(&body).context("central's answer is not an Ack")
}
