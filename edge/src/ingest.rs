//! The CPE-facing HTTP(S) server: one Bulk Data request in, `200` once its
//! reports are committed in the outbox.
//!
//! Order of work per request, cheapest refusal first: method and Basic auth
//! on the head (so `Expect: 100-continue` clients are refused before they
//! upload), `Content-Length` against the body limit, then the body read under
//! the same limit (chunked bodies too), the shared decoder and identity rules
//! (`bulkflow_shared::receive`), and the outbox append. Every failure is
//! confined to its own request: it is answered, counted, and for undecodable
//! input kept in quarantine; nothing else is touched.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::outbox::{Outbox, QuarantineRow, StoreError, StoredEntry, now_ms};
use crate::shutdown::Shutdown;
use bulkflow_shared::config::{ReceiveConfig, TlsFiles};
use bulkflow_shared::receive::{self, RejectKind, Rejection};
use bulkflow_shared::wire::Entry;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;

/// How long a client may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Ingest {
    pub path: String,
    pub receive: ReceiveConfig,
    pub outbox: Outbox,
    pub metrics: Arc<Metrics>,
    /// Wakes the forwarder when new reports are stored.
    pub stored: Arc<Notify>,
    pub retry_after_secs: u32,
    pub zstd_level: i32,
    pub quarantine_body_bytes: usize,
    pub body_timeout: Duration,
    /// Connections served at once (shared by the CPE and admin listeners).
    pub connections: Arc<tokio::sync::Semaphore>,
}

impl Ingest {
    pub fn new(
        config: &Config,
        outbox: Outbox,
        metrics: Arc<Metrics>,
        stored: Arc<Notify>,
    ) -> Self {
        Ingest {
            path: config.ingest.path.clone(),
            receive: config.receive(),
            outbox,
            metrics,
            stored,
            retry_after_secs: config.outbox.retry_after_secs,
            zstd_level: config.outbox.zstd_level,
            quarantine_body_bytes: config.quarantine.max_body_bytes,
            body_timeout: Duration::from_secs(config.ingest.body_timeout_secs.max(1)),
            connections: Arc::new(tokio::sync::Semaphore::new(
                config.ingest.max_connections.max(1),
            )),
        }
    }
}

/// What a listener serves.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Bulk Data plus `/healthz` and `/metrics`.
    All,
    /// Bulk Data only (admin endpoints have their own listener).
    Ingest,
    /// `/healthz` and `/metrics` only.
    Admin,
}

type Body = Full<Bytes>;

fn answer(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(if text.is_empty() {
        String::new()
    } else {
        format!("{text}\n")
    })));
    *r.status_mut() = status;
    if !text.is_empty() {
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    r
}

async fn route(state: Arc<Ingest>, role: Role, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    if role != Role::Admin && path == state.path {
        let response = bulk_data(&state, req).await;
        state.metrics.request(response.status().as_u16());
        return response;
    }
    if role != Role::Ingest {
        match path {
            "/healthz" => return answer(StatusCode::OK, "ok"),
            "/metrics" => {
                let mut r = answer(
                    StatusCode::OK,
                    state.metrics.render(&state.outbox.stats()).trim_end(),
                );
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                return r;
            }
            _ => {}
        }
    }
    answer(StatusCode::NOT_FOUND, "not found")
}

fn refuse(state: &Ingest, r: &Rejection) -> Response<Body> {
    state.metrics.rejected(r.kind.as_str());
    let mut resp = answer(r.status, &r.reason);
    if let Some(c) = r
        .challenge
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, c);
    }
    if r.kind == RejectKind::Method {
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST, PUT"));
    }
    resp
}

fn unavailable(state: &Ingest, reason: &str) -> Response<Body> {
    state.metrics.rejected("unavailable");
    let mut r = answer(StatusCode::SERVICE_UNAVAILABLE, reason);
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(state.retry_after_secs),
    );
    r
}

fn too_large(state: &Ingest, limit: usize) -> Response<Body> {
    state.metrics.rejected(RejectKind::TooLarge.as_str());
    let mut r = answer(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("body is over the {limit}-byte limit"),
    );
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

async fn bulk_data(state: &Ingest, req: Request<Incoming>) -> Response<Body> {
    let _in_flight = state.outbox.begin_request();
    let (head, body) = req.into_parts();
    let basic_user = match receive::check_head(&head.method, &head.headers, &state.receive.auth) {
        Ok(u) => u,
        Err(r) => return refuse(state, &r),
    };
    let limit = state.receive.limits.max_body_bytes;
    let declared = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large(state, limit);
    }
    // A client that trickles its body must not hold a connection (and its
    // partial body) forever.
    let read = tokio::time::timeout(state.body_timeout, Limited::new(body, limit).collect());
    let body = match read.await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return too_large(state, limit);
        }
        Ok(Err(e)) => {
            state.metrics.rejected("body_read");
            return answer(StatusCode::BAD_REQUEST, &format!("cannot read body: {e}"));
        }
        Err(_) => {
            state.metrics.rejected("body_timeout");
            let mut r = answer(
                StatusCode::REQUEST_TIMEOUT,
                &format!("body not received within {:?}", state.body_timeout),
            );
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
    };
    let received_at_ms = now_ms();
    let accepted = match receive::receive(
        &head.uri,
        &head.headers,
        basic_user.as_deref(),
        &body,
        received_at_ms,
        &state.receive,
    ) {
        Ok(a) => a,
        Err(r) => {
            if r.kind.quarantined() {
                keep_in_quarantine(state, &head.method, &head.uri, &head.headers, &body, &r);
            }
            tracing::info!(status = r.status.as_u16(), reason = %r.reason, uri = %head.uri, "request refused");
            return refuse(state, &r);
        }
    };
    if accepted.reports.is_empty() {
        return answer(StatusCode::OK, "");
    }
    let params: usize = accepted.reports.iter().map(|r| r.params.len()).sum();
    let report_count = accepted.reports.len();
    let mut stored = Vec::with_capacity(report_count);
    for report in accepted.reports {
        let entry = Entry {
            device: accepted.device.clone(),
            received_at_ms,
            report,
        };
        match StoredEntry::encode(&entry, state.zstd_level) {
            Ok(e) => stored.push(e),
            Err(e) => return unavailable(state, &e.to_string()),
        }
    }
    match state.outbox.append(stored).await {
        Ok(()) => {
            state.metrics.accepted(report_count, params, body.len());
            state.stored.notify_one();
            answer(StatusCode::OK, "")
        }
        Err(e @ StoreError::Full { .. }) => unavailable(state, &e.to_string()),
        Err(e) => {
            tracing::error!(error = %e, "cannot store reports");
            unavailable(state, &e.to_string())
        }
    }
}

fn keep_in_quarantine(
    state: &Ingest,
    method: &Method,
    uri: &http::Uri,
    headers: &http::HeaderMap,
    body: &[u8],
    r: &Rejection,
) {
    state.metrics.quarantined();
    let mut text = String::new();
    for (name, value) in headers {
        // Credentials are not the operator's business.
        let value = if name == header::AUTHORIZATION {
            "<redacted>"
        } else {
            value.to_str().unwrap_or("<binary>")
        };
        text.push_str(name.as_str());
        text.push_str(": ");
        text.push_str(value);
        text.push('\n');
    }
    let keep = body.len().min(state.quarantine_body_bytes);
    state.outbox.quarantine(QuarantineRow {
        at_ms: now_ms(),
        status: r.status.as_u16(),
        reason: r.reason.clone(),
        method: method.to_string(),
        uri: uri.to_string(),
        headers: text,
        body: body[..keep].to_vec(),
        body_len: body.len(),
    });
}

/// Builds the TLS acceptor from PEM files (ring provider, never aws-lc).
pub fn tls_acceptor(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    Ok(bulkflow_shared::tls::acceptor(files)?)
}

/// Accepts connections until shutdown, then waits (up to `grace`) for the
/// requests in flight.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<Ingest>,
    role: Role,
    mut shutdown: Shutdown,
    grace: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        // At the connection limit, stop accepting until one closes: waiting
        // clients stay in the kernel's queue rather than in our memory.
        // The admin listener is not limited, so /healthz answers under a flood.
        let permit = if role == Role::Admin {
            None
        } else {
            tokio::select! {
                p = state.connections.clone().acquire_owned() => match p {
                    Ok(p) => Some(p),
                    Err(_) => break,
                },
                _ = shutdown.wait() => break,
            }
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: pause, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => break,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let service = hyper::service::service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(route(state, role, req).await) }
        });
        let builder = {
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            b
        };
        match &tls {
            None => {
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let _permit = permit;
                    let stream = match tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
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
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
}

/// Binds a listener and says where, for operators and for tests (`listen = 127.0.0.1:0`).
pub async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<(TcpListener, SocketAddr)> {
    use anyhow::Context;
    let listener =
        bulkflow_shared::net::listen(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!(%local, "{what} listening");
    Ok((listener, local))
}
