//! `bulkflow-central serve`: the HTTP endpoints.
//!
//! - `POST /v1/batches`: an edge's batch (contract in `bulkflow_shared::wire`).
//!   The edge is authenticated by its bearer token, the batch is decompressed
//!   under a size bound and decoded to validate it, then queued in Redis as
//!   received (one stream entry per batch). The answer lists which of the
//!   edge's batches are committed in PostgreSQL: the end-to-end acknowledgement
//!   the edge waits for before deleting. A batch already committed is not
//!   queued again.
//! - `GET /v1/acks?from=N`: that acknowledgement alone.
//! - `POST|PUT /bulkdata` (configurable path): reports straight from CPEs at
//!   sites without an edge, with the edge's rules (`bulkflow_shared::receive`):
//!   Basic auth, limits, decoding, identity. `200` only once queued in Redis,
//!   one stream entry per request; `503` + `Retry-After` when Redis is down.
//! - `/healthz`, `/metrics`.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::queue::{Origin, Queue};
use crate::shutdown::Shutdown;
use bulkflow_shared::config::ReceiveConfig;
use bulkflow_shared::receive::{self, Rejection};
use bulkflow_shared::wire::{self, Ack, Batch, Entry};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};
use tracing::{info, warn};

/// How many committed batch numbers one answer lists at most.
const MAX_ACKS: i64 = 10_000;
/// How long a client may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

pub struct State {
    cfg: Config,
    queue: Queue,
    pg: Mutex<Option<Arc<Client>>>,
    metrics: Arc<Metrics>,
    /// Bearer token -> edge id.
    tokens: HashMap<String, String>,
    receive: ReceiveConfig,
}

type Answer = Response<Full<Bytes>>;

fn text(status: StatusCode, msg: impl Into<String>) -> Answer {
    let mut body = msg.into();
    body.push('\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn unavailable(msg: &str) -> Answer {
    let mut r = text(StatusCode::SERVICE_UNAVAILABLE, msg);
    r.headers_mut()
        .insert(RETRY_AFTER, hyper::header::HeaderValue::from_static("5"));
    r
}

fn json(value: &impl serde::Serialize) -> Answer {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

impl State {
    pub fn new(cfg: Config, metrics: Arc<Metrics>) -> anyhow::Result<State> {
        let queue = Queue::new(&cfg.redis, Duration::from_millis(cfg.store.block_ms))?;
        let tokens = cfg
            .edges
            .iter()
            .map(|e| (e.token.clone(), e.id.clone()))
            .collect();
        Ok(State {
            receive: cfg.bulkdata.receive(),
            cfg,
            queue,
            pg: Mutex::new(None),
            metrics,
            tokens,
        })
    }

    fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.ingest.body_timeout_secs.max(1))
    }

    /// A PostgreSQL client, (re)connected on demand.
    async fn pg(&self) -> Result<Arc<Client>, tokio_postgres::Error> {
        let mut slot = self.pg.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let (client, connection) = tokio_postgres::connect(&self.cfg.postgres.url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                warn!(error = %e, "PostgreSQL connection ended");
            }
        });
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Committed batch numbers of `edge` from `from` on, ascending. Bounded in
    /// time: a PostgreSQL that hangs (rather than refusing) gives an error
    /// here, and the connection is dropped so the next call reconnects.
    async fn committed(&self, edge: &str, from: u64) -> Result<Vec<u64>, String> {
        let limit = Duration::from_millis(self.cfg.ingest.ack_query_timeout_ms.max(1));
        match tokio::time::timeout(limit, self.query_committed(edge, from)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => {
                if let Ok(mut slot) = self.pg.try_lock() {
                    *slot = None;
                }
                Err(format!("PostgreSQL did not answer within {limit:?}"))
            }
        }
    }

    async fn query_committed(
        &self,
        edge: &str,
        from: u64,
    ) -> Result<Vec<u64>, tokio_postgres::Error> {
        let client = self.pg().await?;
        let rows = client
            .query(
                "SELECT batch_seq FROM ingested_batches WHERE edge_id = $1 AND batch_seq >= $2
                 ORDER BY batch_seq LIMIT $3",
                &[&edge, &(from.min(i64::MAX as u64) as i64), &MAX_ACKS],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect())
    }

    fn count(&self, c: &AtomicU64) {
        self.metrics.add(c, 1);
    }

    /// The edge a request's bearer token belongs to.
    fn authenticate(&self, req: &Request<Incoming>) -> Option<&str> {
        let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))?;
        // Compare every configured token in constant time per byte.
        self.tokens
            .iter()
            .find(|(t, _)| constant_time_eq(t.as_bytes(), token.trim().as_bytes()))
            .map(|(_, edge)| edge.as_str())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves until shutdown; `on_bound` learns the bound address (tests use port 0).
pub async fn serve(state: Arc<State>, mut shutdown: Shutdown) -> anyhow::Result<()> {
    let listener = bulkflow_shared::net::listen(state.cfg.listen)?;
    let addr = listener.local_addr()?;
    info!(%addr, "listening");
    // Tests and scripts wait for this line to learn the port.
    println!("listening on {addr}");
    let tls = match &state.cfg.tls {
        Some(files) => Some(bulkflow_shared::tls::acceptor(files)?),
        None => None,
    };
    bulkflow_shared::notify::ready(&format!("listening on {addr}"));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let connections = Arc::new(tokio::sync::Semaphore::new(
        state.cfg.ingest.max_connections.max(1),
    ));
    loop {
        // At the limit, stop accepting until a connection closes: waiting
        // clients stay in the kernel's queue, not in memory.
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.wait() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => break,
        };
        let state = state.clone();
        let service = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, std::convert::Infallible>(route(&state, req, peer).await) }
        });
        let builder = {
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            b
        };
        match &tls {
            None => {
                let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let _permit = permit;
                    // The handshake runs in the connection's task, so a slow
                    // client cannot hold up the accept loop.
                    let stream = match tokio::time::timeout(
                        Duration::from_secs(10),
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let conn =
                        watcher.watch(builder.serve_connection(TokioIo::new(stream), service));
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    // Let requests in flight finish (their data may already be queued).
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => warn!("connections still open after 10 s; closing"),
    }
    Ok(())
}

async fn route(state: &State, req: Request<Incoming>, _peer: SocketAddr) -> Answer {
    if req.uri().path() == state.cfg.bulkdata.path {
        return direct(state, req).await;
    }
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/batches") => batches(state, req).await,
        (&Method::GET, "/v1/acks") => acks(state, req).await,
        (&Method::GET, "/healthz") => health(state).await,
        (&Method::GET, "/metrics") => {
            let len = state.queue.len().await.ok();
            text(StatusCode::OK, state.metrics.render(len))
        }
        (_, "/v1/batches" | "/v1/acks" | "/healthz" | "/metrics") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

async fn health(state: &State) -> Answer {
    if let Err(e) = state.queue.ping().await {
        return unavailable(&format!("redis: {e}"));
    }
    match state.pg().await {
        Ok(_) => text(StatusCode::OK, "ok"),
        // Ingest still queues while PostgreSQL is down; say so, but stay healthy.
        Err(e) => text(StatusCode::OK, format!("ok (postgresql unavailable: {e})")),
    }
}

/// Reads a body of at most `limit` bytes; `Err` is the answer to send.
async fn read_body(
    req: Request<Incoming>,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, Answer> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body over the {limit}-byte limit"),
        )
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    // A client that trickles its body must not hold a connection forever.
    match tokio::time::timeout(timeout, Limited::new(req.into_body(), limit).collect()).await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(text(StatusCode::BAD_REQUEST, format!("reading body: {e}"))),
        Err(_) => {
            let mut r = text(
                StatusCode::REQUEST_TIMEOUT,
                format!("body not received within {timeout:?}"),
            );
            r.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
            Err(r)
        }
    }
}

fn query_param<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.uri()
        .query()?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

async fn batches(state: &State, req: Request<Incoming>) -> Answer {
    let Some(edge) = state.authenticate(&req).map(str::to_owned) else {
        state.count(&state.metrics.batches_rejected);
        return text(StatusCode::UNAUTHORIZED, "unknown or missing bearer token");
    };
    let pending_from = req
        .headers()
        .get(wire::PENDING_FROM_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = match read_body(req, state.cfg.ingest.max_batch_bytes, state.body_timeout()).await {
        Ok(b) => b,
        Err(answer) => {
            state.count(&state.metrics.batches_rejected);
            return answer;
        }
    };
    // Decompressing and decoding a large batch is CPU work: off the I/O threads.
    let limit = state.cfg.ingest.max_batch_decompressed_bytes;
    let data = body.clone();
    let decoded = tokio::task::spawn_blocking(move || wire::decode(&data, limit)).await;
    let batch = match decoded {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            state.count(&state.metrics.batches_rejected);
            let status = match e {
                wire::WireError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::BAD_REQUEST,
            };
            return text(status, e.to_string());
        }
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("decoder failed: {e}"),
            );
        }
    };
    // A token of one edge on another edge's batches is a configuration error:
    // 403 makes the edge keep the batch and retry (a 400 would set it aside).
    if batch.edge_id != edge {
        state.count(&state.metrics.batches_rejected);
        return text(
            StatusCode::FORBIDDEN,
            format!(
                "batch is from edge {:?} but the token is edge {edge:?}",
                batch.edge_id
            ),
        );
    }
    let seq = batch.batch_seq;
    let from = pending_from.unwrap_or(seq).min(seq);
    // PostgreSQL down must not stop queueing: answer without acknowledgements.
    let committed = match state.committed(&edge, from).await {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "cannot read committed batches");
            Vec::new()
        }
    };
    if committed.binary_search(&seq).is_ok() {
        state.count(&state.metrics.batches_duplicate);
    } else {
        if let Err(e) = state.queue.push(Origin::Edge, &edge, seq, &body).await {
            state.count(&state.metrics.queue_unavailable);
            warn!(error = %e, "cannot queue batch");
            return unavailable("queue unavailable; retry later");
        }
        state.count(&state.metrics.batches_received);
    }
    json(&Ack {
        queued: Some(seq),
        committed,
    })
}

async fn acks(state: &State, req: Request<Incoming>) -> Answer {
    let Some(edge) = state.authenticate(&req).map(str::to_owned) else {
        return text(StatusCode::UNAUTHORIZED, "unknown or missing bearer token");
    };
    let Some(from) = query_param(&req, "from").and_then(|v| v.parse::<u64>().ok()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "missing or invalid ?from=<batch seq>",
        );
    };
    match state.committed(&edge, from).await {
        Ok(committed) => json(&Ack {
            queued: None,
            committed,
        }),
        Err(e) => unavailable(&format!("postgresql unavailable: {e}")),
    }
}

fn refuse(r: &Rejection) -> Answer {
    let mut answer = text(r.status, r.reason.clone());
    if let Some(challenge) = r
        .challenge
        .as_deref()
        .and_then(|c| hyper::header::HeaderValue::from_str(c).ok())
    {
        answer
            .headers_mut()
            .insert(hyper::header::WWW_AUTHENTICATE, challenge);
    }
    answer
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A CPE's own Bulk Data request: decoded and identified like at an edge, then
/// queued as one entry; answered 200 only once Redis has it.
async fn direct(state: &State, req: Request<Incoming>) -> Answer {
    let (head, body) = req.into_parts();
    let user = match receive::check_head(&head.method, &head.headers, &state.receive.auth) {
        Ok(u) => u,
        Err(r) => {
            state.count(&state.metrics.direct_rejected);
            return refuse(&r);
        }
    };
    let body = match read_body(
        Request::from_parts(head.clone(), body),
        state.receive.limits.max_body_bytes,
        state.body_timeout(),
    )
    .await
    {
        Ok(b) => b,
        Err(answer) => {
            state.count(&state.metrics.direct_rejected);
            return answer;
        }
    };
    let received_at_ms = now_ms();
    let receive_cfg = state.receive.clone();
    let (uri, headers) = (head.uri.clone(), head.headers.clone());
    // Decoding a large report is CPU work: off the I/O threads.
    let work = tokio::task::spawn_blocking(move || {
        let accepted = receive::receive(
            &uri,
            &headers,
            user.as_deref(),
            &body,
            received_at_ms,
            &receive_cfg,
        )?;
        let count = accepted.reports.len();
        let batch = Batch {
            edge_id: "direct".into(),
            batch_seq: 0,
            entries: accepted
                .reports
                .into_iter()
                .map(|report| Entry {
                    device: accepted.device.clone(),
                    received_at_ms,
                    report,
                })
                .collect(),
        };
        Ok::<_, Rejection>((count, wire::encode(&batch)))
    })
    .await;
    let (count, encoded) = match work {
        Ok(Ok(done)) => done,
        Ok(Err(r)) => {
            state.count(&state.metrics.direct_rejected);
            tracing::info!(status = r.status.as_u16(), reason = %r.reason, uri = %head.uri, "request refused");
            return refuse(&r);
        }
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("decoder failed: {e}"),
            );
        }
    };
    if count == 0 {
        return text(StatusCode::OK, "");
    }
    let data = match encoded {
        Ok(d) => d,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    if let Err(e) = state.queue.push(Origin::Direct, "direct", 0, &data).await {
        state.count(&state.metrics.queue_unavailable);
        warn!(error = %e, "cannot queue a direct report");
        return unavailable("queue unavailable; retry later");
    }
    state
        .metrics
        .add(&state.metrics.direct_reports_received, count as u64);
    text(StatusCode::OK, "")
}
