//! Counters for `/metrics`, rendered as Prometheus text by hand.
//!
//! Counters are `u64` behind a mutex rather than atomics: MIPS routers have no
//! 64-bit atomics, and a few increments per request cost nothing next to the
//! decode and the commit. Outbox gauges come from the outbox's own stats.

use crate::outbox::{OutboxStats, now_ms};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

#[derive(Default)]
struct Counters {
    requests: BTreeMap<u16, u64>,
    rejected: BTreeMap<&'static str, u64>,
    reports_accepted: u64,
    params_accepted: u64,
    body_bytes: u64,
    quarantined: u64,
    batches_sent: u64,
    batches_committed: u64,
    batch_bytes_sent: u64,
    forward_errors: u64,
    batches_rejected: u64,
    last_forward_ok_ms: Option<i64>,
}

#[derive(Default)]
pub struct Metrics {
    c: Mutex<Counters>,
}

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut Counters)) {
        if let Ok(mut c) = self.c.lock() {
            f(&mut c);
        }
    }

    pub fn request(&self, status: u16) {
        self.with(|c| *c.requests.entry(status).or_default() += 1);
    }

    pub fn rejected(&self, kind: &'static str) {
        self.with(|c| *c.rejected.entry(kind).or_default() += 1);
    }

    pub fn accepted(&self, reports: usize, params: usize, body_bytes: usize) {
        self.with(|c| {
            c.reports_accepted += reports as u64;
            c.params_accepted += params as u64;
            c.body_bytes += body_bytes as u64;
        });
    }

    pub fn quarantined(&self) {
        self.with(|c| c.quarantined += 1);
    }

    pub fn batch_sent(&self, bytes: usize) {
        self.with(|c| {
            c.batches_sent += 1;
            c.batch_bytes_sent += bytes as u64;
            c.last_forward_ok_ms = Some(now_ms());
        });
    }

    pub fn batches_committed(&self, n: u64) {
        self.with(|c| c.batches_committed += n);
    }

    pub fn batch_rejected(&self) {
        self.with(|c| c.batches_rejected += 1);
    }

    pub fn forward_error(&self) {
        self.with(|c| c.forward_errors += 1);
    }

    pub fn render(&self, s: &OutboxStats) -> String {
        let mut out = String::new();
        let Ok(c) = self.c.lock() else {
            return out;
        };
        let mut metric = |name: &str, kind: &str, help: &str, lines: Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in lines {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let one = |v: u64| vec![(String::new(), v as f64)];
        metric(
            "bulkflow_edge_requests_total",
            "counter",
            "Bulk Data requests answered, by status.",
            c.requests
                .iter()
                .map(|(k, v)| (format!("{{status=\"{k}\"}}"), *v as f64))
                .collect(),
        );
        metric(
            "bulkflow_edge_rejected_total",
            "counter",
            "Bulk Data requests refused, by reason.",
            c.rejected
                .iter()
                .map(|(k, v)| (format!("{{reason=\"{k}\"}}"), *v as f64))
                .collect(),
        );
        metric(
            "bulkflow_edge_reports_accepted_total",
            "counter",
            "Reports stored durably.",
            one(c.reports_accepted),
        );
        metric(
            "bulkflow_edge_params_accepted_total",
            "counter",
            "Parameters in stored reports.",
            one(c.params_accepted),
        );
        metric(
            "bulkflow_edge_body_bytes_total",
            "counter",
            "Bytes of accepted request bodies as sent.",
            one(c.body_bytes),
        );
        metric(
            "bulkflow_edge_quarantined_total",
            "counter",
            "Refused requests kept in quarantine.",
            one(c.quarantined),
        );
        metric(
            "bulkflow_edge_batches_sent_total",
            "counter",
            "Batch sends central accepted (resends included).",
            one(c.batches_sent),
        );
        metric(
            "bulkflow_edge_batch_bytes_sent_total",
            "counter",
            "Bytes of batches sent.",
            one(c.batch_bytes_sent),
        );
        metric(
            "bulkflow_edge_batches_committed_total",
            "counter",
            "Batches central reported committed (deleted here).",
            one(c.batches_committed),
        );
        metric(
            "bulkflow_edge_forward_errors_total",
            "counter",
            "Failed requests to central.",
            one(c.forward_errors),
        );
        metric(
            "bulkflow_edge_batches_rejected_total",
            "counter",
            "Batches central refused for good (400/413), set aside in rejected_batches.",
            one(c.batches_rejected),
        );
        metric(
            "bulkflow_edge_rejected_batches",
            "gauge",
            "Batches set aside in rejected_batches.",
            one(s.rejected_batches),
        );
        metric(
            "bulkflow_edge_dropped_reports_total",
            "counter",
            "Reports dropped by quota_policy = drop_oldest.",
            one(s.dropped_reports),
        );
        metric(
            "bulkflow_edge_outbox_reports",
            "gauge",
            "Reports not yet committed by central (pending and in batches).",
            one(s.pending_reports + s.batch_reports),
        );
        metric(
            "bulkflow_edge_outbox_batches",
            "gauge",
            "Batches not yet committed by central.",
            one(s.batches),
        );
        metric(
            "bulkflow_edge_outbox_bytes",
            "gauge",
            "Bytes counted against the quota.",
            one(s.used_bytes()),
        );
        metric(
            "bulkflow_edge_outbox_quota_bytes",
            "gauge",
            "The outbox quota.",
            one(s.quota_bytes),
        );
        metric(
            "bulkflow_edge_outbox_oldest_age_seconds",
            "gauge",
            "Age of the oldest report not yet committed by central.",
            vec![(
                String::new(),
                s.oldest_ms
                    .map_or(0.0, |t| (now_ms() - t).max(0) as f64 / 1000.0),
            )],
        );
        metric(
            "bulkflow_edge_quarantine_rows",
            "gauge",
            "Rows in the quarantine table.",
            one(s.quarantine_rows),
        );
        if let Some(t) = c.last_forward_ok_ms {
            metric(
                "bulkflow_edge_last_forward_success_timestamp_seconds",
                "gauge",
                "When central last accepted a batch.",
                vec![(String::new(), t as f64 / 1000.0)],
            );
        }
        out
    }
}
