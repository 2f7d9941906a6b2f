//! Prometheus metrics, rendered by hand in the text exposition format: a few
//! counters do not justify a metrics framework.

use crate::store::copy::WriteStats;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Default)]
pub struct Metrics {
    pub batches_received: AtomicU64,
    pub batches_duplicate: AtomicU64,
    pub batches_rejected: AtomicU64,
    pub direct_reports_received: AtomicU64,
    pub direct_rejected: AtomicU64,
    pub queue_unavailable: AtomicU64,
    pub store_batches: AtomicU64,
    pub store_duplicate_batches: AtomicU64,
    pub store_reports: AtomicU64,
    pub store_params: AtomicU64,
    pub store_samples_inserted: AtomicU64,
    pub store_write_ms: AtomicU64,
    pub store_reclaimed: AtomicU64,
    pub store_dead_lettered: AtomicU64,
}

impl Metrics {
    pub fn add(&self, counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn record_write(&self, s: &WriteStats, took: Duration) {
        self.add(&self.store_batches, s.batches as u64);
        self.add(&self.store_duplicate_batches, s.duplicate_batches as u64);
        self.add(&self.store_reports, s.reports as u64);
        self.add(&self.store_params, s.params as u64);
        self.add(&self.store_samples_inserted, s.samples_inserted);
        self.add(&self.store_write_ms, took.as_millis() as u64);
    }

    /// The exposition text; `queue_length` is read at scrape time (None when
    /// Redis is unreachable).
    pub fn render(&self, queue_length: Option<u64>) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &AtomicU64); 14] = [
            (
                "bulkflow_central_batches_received_total",
                "Edge batches accepted and queued",
                &self.batches_received,
            ),
            (
                "bulkflow_central_batches_duplicate_total",
                "Edge batches received again after being committed",
                &self.batches_duplicate,
            ),
            (
                "bulkflow_central_batches_rejected_total",
                "Edge batches refused (auth, size, decoding)",
                &self.batches_rejected,
            ),
            (
                "bulkflow_central_direct_reports_received_total",
                "Reports posted straight to central and queued",
                &self.direct_reports_received,
            ),
            (
                "bulkflow_central_direct_rejected_total",
                "Direct CPE requests refused",
                &self.direct_rejected,
            ),
            (
                "bulkflow_central_queue_unavailable_total",
                "Requests answered 503 because Redis was unavailable",
                &self.queue_unavailable,
            ),
            (
                "bulkflow_central_store_batches_total",
                "Batches committed to PostgreSQL",
                &self.store_batches,
            ),
            (
                "bulkflow_central_store_duplicate_batches_total",
                "Queued batches skipped as already committed",
                &self.store_duplicate_batches,
            ),
            (
                "bulkflow_central_store_reports_total",
                "Reports committed to PostgreSQL",
                &self.store_reports,
            ),
            (
                "bulkflow_central_store_parameters_total",
                "Parameters committed to PostgreSQL",
                &self.store_params,
            ),
            (
                "bulkflow_central_store_samples_inserted_total",
                "New rows in samples",
                &self.store_samples_inserted,
            ),
            (
                "bulkflow_central_store_write_milliseconds_total",
                "Time spent in write transactions",
                &self.store_write_ms,
            ),
            (
                "bulkflow_central_store_reclaimed_total",
                "Entries reclaimed from dead workers",
                &self.store_reclaimed,
            ),
            (
                "bulkflow_central_store_dead_lettered_total",
                "Entries moved to the dead-letter stream",
                &self.store_dead_lettered,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        if let Some(len) = queue_length {
            let name = "bulkflow_central_queue_entries";
            let _ = writeln!(
                out,
                "# HELP {name} Entries in the Redis stream (queued or in progress)\n# TYPE {name} gauge\n{name} {len}"
            );
        }
        out
    }
}
