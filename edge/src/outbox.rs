//! The durable outbox: every accepted report, in SQLite, until central has
//! committed it.
//!
//! Invariants this module keeps:
//! - A report is answered 2xx only after the transaction holding it committed
//!   (WAL; `synchronous=FULL` by default, so even power loss keeps it).
//! - One writer thread owns the connection. Requests send it their entries over
//!   a channel and await a oneshot answered after COMMIT; the writer takes
//!   everything that arrived while it was busy (and, while other requests are
//!   still in flight, up to `commit_window_ms` more) into one transaction, so
//!   concurrent CPEs share one fsync (group commit).
//! - A batch is formed in one transaction that stores its exact encoded bytes
//!   under the next `batch_seq` and deletes its entries, before it is sent.
//!   Resends send those bytes, so `(edge_id, batch_seq)` always means the same
//!   reports, across restarts and `kill -9`.
//! - Stored bytes (entries + batches) are counted in memory, initialised from
//!   the file at open, and checked against the quota on every append.
//!
//! Tables: `entries` (one row per report: zstd(postcard(wire::Entry))),
//! `batches` (encoded batches not yet committed by central), `quarantine`
//! (raw refused requests, bounded), `meta` (next batch seq, counters, last
//! forward result).

use crate::config::{Outbox as OutboxConfig, QuotaPolicy, Synchronous};
use bulkflow_shared::wire::{self, Entry};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Bytes counted per stored row on top of its data (keys, row header).
const ROW_OVERHEAD: u64 = 32;
/// Largest decompressed stored entry accepted when forming batches.
const MAX_ENTRY_BYTES: usize = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("outbox is full (quota {quota} bytes)")]
    Full { quota: u64 },
    #[error("outbox storage failed: {0}")]
    Storage(String),
    #[error("outbox writer has stopped")]
    Closed,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Storage(e.to_string())
    }
}

/// One report ready to store: compressed postcard of a [`wire::Entry`].
#[derive(Debug, Clone)]
pub struct StoredEntry {
    pub device: String,
    pub received_at_ms: i64,
    pub data: Vec<u8>,
}

impl StoredEntry {
    pub fn encode(entry: &Entry, zstd_level: i32) -> Result<StoredEntry, StoreError> {
        let raw = postcard::to_allocvec(entry).map_err(|e| StoreError::Storage(e.to_string()))?;
        // The wire's dictionary: the names that fill a report cost little.
        let data = wire::dictionary::compress(&raw, zstd_level)
            .map_err(|e| StoreError::Storage(e.to_string()))?;
        Ok(StoredEntry {
            device: entry.device.id.clone(),
            received_at_ms: entry.received_at_ms,
            data,
        })
    }

    fn cost(&self) -> u64 {
        self.data.len() as u64 + self.device.len() as u64 + ROW_OVERHEAD
    }
}

/// Decodes a stored entry's bytes.
pub fn decode_entry(data: &[u8]) -> Result<Entry, String> {
    let raw = wire::dictionary::decompress(data, MAX_ENTRY_BYTES).map_err(|e| e.to_string())?;
    postcard::from_bytes(&raw).map_err(|e| e.to_string())
}

/// A refused request kept for operators.
#[derive(Debug, Clone)]
pub struct QuarantineRow {
    pub at_ms: i64,
    pub status: u16,
    pub reason: String,
    pub method: String,
    pub uri: String,
    pub headers: String,
    pub body: Vec<u8>,
    pub body_len: usize,
}

/// A formed batch as the forwarder tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    pub seq: u64,
    pub reports: u64,
    pub bytes: u64,
}

/// What is in the outbox right now; kept current by the writer.
#[derive(Debug, Clone, Default)]
pub struct OutboxStats {
    pub pending_reports: u64,
    pub entry_bytes: u64,
    pub batches: u64,
    pub batch_reports: u64,
    pub batch_bytes: u64,
    /// Receive time of the oldest report not yet committed by central.
    pub oldest_ms: Option<i64>,
    /// Receive time of the oldest report not yet in a batch.
    pub oldest_entry_ms: Option<i64>,
    pub quarantine_rows: u64,
    /// Batches central refused for good (400, 413), kept aside for operators.
    pub rejected_batches: u64,
    pub dropped_reports: u64,
    pub quota_bytes: u64,
}

impl OutboxStats {
    pub fn used_bytes(&self) -> u64 {
        self.entry_bytes + self.batch_bytes
    }
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Command {
    Append {
        entries: Vec<StoredEntry>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Quarantine(QuarantineRow),
    MarkSent {
        seq: u64,
        at_ms: i64,
    },
    Delete {
        seqs: Vec<u64>,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    Park {
        seq: u64,
        status: u16,
        reason: String,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    ForwardResult {
        at_ms: i64,
        ok: bool,
        message: String,
    },
    FormBatch {
        edge_id: String,
        max_reports: usize,
        max_bytes: u64,
        reply: oneshot::Sender<Result<Option<BatchInfo>, StoreError>>,
    },
    LoadBatch {
        seq: u64,
        reply: oneshot::Sender<Result<Option<Vec<u8>>, StoreError>>,
    },
    ListBatches {
        reply: oneshot::Sender<Result<Vec<BatchInfo>, StoreError>>,
    },
}

/// Handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Command>,
    stats: Arc<Mutex<OutboxStats>>,
    in_flight: Arc<AtomicUsize>,
}

/// Held by a request between its head and its answer, so the writer knows
/// whether waiting a little for more requests is worth it.
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Opens (creating if needed) the outbox file and applies the pragmas.
pub fn open_connection(path: &Path, sync: Synchronous) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
    conn.execute_batch(match sync {
        Synchronous::Full => "PRAGMA synchronous=FULL;",
        Synchronous::Normal => "PRAGMA synchronous=NORMAL;",
    })?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS entries (
            id INTEGER PRIMARY KEY,
            received_ms INTEGER NOT NULL,
            device TEXT NOT NULL,
            data BLOB NOT NULL);
         CREATE TABLE IF NOT EXISTS batches (
            seq INTEGER PRIMARY KEY,
            data BLOB NOT NULL,
            reports INTEGER NOT NULL,
            entry_bytes INTEGER NOT NULL,
            oldest_ms INTEGER NOT NULL,
            created_ms INTEGER NOT NULL,
            sent_ms INTEGER);
         CREATE TABLE IF NOT EXISTS quarantine (
            id INTEGER PRIMARY KEY,
            at_ms INTEGER NOT NULL,
            status INTEGER NOT NULL,
            reason TEXT NOT NULL,
            method TEXT NOT NULL,
            uri TEXT NOT NULL,
            headers TEXT NOT NULL,
            body BLOB NOT NULL,
            body_len INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS rejected_batches (
            seq INTEGER PRIMARY KEY,
            data BLOB NOT NULL,
            reports INTEGER NOT NULL,
            status INTEGER NOT NULL,
            reason TEXT NOT NULL,
            at_ms INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);",
    )?;
    Ok(conn)
}

/// Reads the outbox's state from the file (at open, and by `status`).
pub fn read_stats(conn: &Connection, quota_bytes: u64) -> rusqlite::Result<OutboxStats> {
    let (pending_reports, entry_bytes): (i64, i64) = conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(length(data) + length(device)), 0) FROM entries",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let (batches, batch_reports, batch_bytes): (i64, i64, i64) = conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(reports), 0), COALESCE(SUM(length(data)), 0) FROM batches",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let quarantine_rows: i64 =
        conn.query_row("SELECT COUNT(*) FROM quarantine", [], |r| r.get(0))?;
    let rejected_batches: i64 =
        conn.query_row("SELECT COUNT(*) FROM rejected_batches", [], |r| r.get(0))?;
    let mut stats = OutboxStats {
        pending_reports: pending_reports as u64,
        entry_bytes: entry_bytes as u64 + pending_reports as u64 * ROW_OVERHEAD,
        batches: batches as u64,
        batch_reports: batch_reports as u64,
        batch_bytes: batch_bytes as u64 + batches as u64 * ROW_OVERHEAD,
        quarantine_rows: quarantine_rows as u64,
        rejected_batches: rejected_batches as u64,
        dropped_reports: meta_int(conn, "dropped_reports")?.unwrap_or(0) as u64,
        quota_bytes,
        ..Default::default()
    };
    refresh_oldest(conn, &mut stats)?;
    Ok(stats)
}

fn refresh_oldest(conn: &Connection, stats: &mut OutboxStats) -> rusqlite::Result<()> {
    let entry: Option<i64> = conn
        .query_row(
            "SELECT received_ms FROM entries ORDER BY id LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let batch: Option<i64> = conn
        .query_row(
            "SELECT oldest_ms FROM batches ORDER BY seq LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    stats.oldest_entry_ms = entry;
    stats.oldest_ms = match (entry, batch) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(())
}

pub fn meta_int(conn: &Connection, key: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

fn set_meta(conn: &Connection, key: &str, value: impl rusqlite::ToSql) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Outbox {
    /// Opens the file and starts the writer thread. The thread ends once every
    /// handle is dropped and the commands already sent are done.
    pub fn start(
        config: &OutboxConfig,
        quarantine_max_rows: u32,
    ) -> Result<(Outbox, std::thread::JoinHandle<()>), StoreError> {
        let conn = open_connection(&config.path, config.synchronous)?;
        let stats = read_stats(&conn, config.quota_bytes)?;
        let stats = Arc::new(Mutex::new(stats));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        let mut writer = Writer {
            conn,
            rx,
            stats: stats.clone(),
            in_flight: in_flight.clone(),
            window: Duration::from_millis(config.commit_window_ms),
            max_requests: config.commit_max_requests.max(1),
            quota: config.quota_bytes,
            policy: config.quota_policy,
            quarantine_max_rows,
        };
        let handle = std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Storage(e.to_string()))?;
        Ok((
            Outbox {
                tx,
                stats,
                in_flight,
            },
            handle,
        ))
    }

    pub fn stats(&self) -> OutboxStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn begin_request(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.in_flight.clone())
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Stores one request's reports; resolves after COMMIT.
    pub async fn append(&self, entries: Vec<StoredEntry>) -> Result<(), StoreError> {
        self.ask(|reply| Command::Append { entries, reply }).await
    }

    /// Keeps a refused request (committed with the next group; not awaited).
    pub fn quarantine(&self, row: QuarantineRow) {
        let _ = self.tx.send(Command::Quarantine(row));
    }

    pub fn mark_sent(&self, seq: u64) {
        let _ = self.tx.send(Command::MarkSent {
            seq,
            at_ms: now_ms(),
        });
    }

    pub fn forward_result(&self, ok: bool, message: String) {
        let _ = self.tx.send(Command::ForwardResult {
            at_ms: now_ms(),
            ok,
            message,
        });
    }

    /// Deletes batches central committed; returns how many existed.
    pub async fn delete_batches(&self, seqs: Vec<u64>) -> Result<u64, StoreError> {
        self.ask(|reply| Command::Delete { seqs, reply }).await
    }

    /// Sets aside a batch central refused for good (it would be refused again),
    /// so later batches can flow; returns how many batches moved (0 or 1).
    pub async fn park_batch(
        &self,
        seq: u64,
        status: u16,
        reason: String,
    ) -> Result<u64, StoreError> {
        self.ask(|reply| Command::Park {
            seq,
            status,
            reason,
            reply,
        })
        .await
    }

    /// Moves the oldest pending entries into a new batch, if there are any.
    pub async fn form_batch(
        &self,
        edge_id: &str,
        max_reports: usize,
        max_bytes: u64,
    ) -> Result<Option<BatchInfo>, StoreError> {
        let edge_id = edge_id.to_owned();
        self.ask(|reply| Command::FormBatch {
            edge_id,
            max_reports,
            max_bytes,
            reply,
        })
        .await
    }

    pub async fn load_batch(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.ask(|reply| Command::LoadBatch { seq, reply }).await
    }

    pub async fn list_batches(&self) -> Result<Vec<BatchInfo>, StoreError> {
        self.ask(|reply| Command::ListBatches { reply }).await
    }
}

struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<Command>,
    stats: Arc<Mutex<OutboxStats>>,
    in_flight: Arc<AtomicUsize>,
    window: Duration,
    max_requests: usize,
    quota: u64,
    policy: QuotaPolicy,
    quarantine_max_rows: u32,
}

/// What a group's transaction changed, applied to the stats after COMMIT.
#[derive(Default)]
struct Delta {
    reports: i64,
    entry_bytes: i64,
    batches: i64,
    batch_reports: i64,
    batch_bytes: i64,
    dropped: u64,
    quarantined: u64,
    rejected: u64,
}

impl Writer {
    fn run(&mut self) {
        while let Ok(first) = self.rx.recv() {
            let group = self.gather(first);
            let (writes, others): (Vec<_>, Vec<_>) =
                group.into_iter().partition(|c| !is_separate(c));
            if !writes.is_empty() {
                self.commit_group(writes);
            }
            for c in others {
                self.separate(c);
            }
        }
        // Every handle is gone: fold the WAL into the main file for a tidy stop.
        let _ = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    }

    /// Takes what is queued, then waits up to the window for requests that are
    /// in flight, so they share this commit.
    fn gather(&self, first: Command) -> Vec<Command> {
        let mut group = vec![first];
        let deadline = Instant::now() + self.window;
        let appends = |g: &[Command]| {
            g.iter()
                .filter(|c| matches!(c, Command::Append { .. }))
                .count()
        };
        while group.len() < self.max_requests {
            match self.rx.try_recv() {
                Ok(c) => {
                    group.push(c);
                    continue;
                }
                Err(mpsc::TryRecvError::Disconnected) => break,
                Err(mpsc::TryRecvError::Empty) => {}
            }
            let now = Instant::now();
            if appends(&group) == 0
                || appends(&group) >= self.in_flight.load(Ordering::Relaxed)
                || now >= deadline
            {
                break;
            }
            match self.rx.recv_timeout(deadline - now) {
                Ok(c) => group.push(c),
                Err(_) => break,
            }
        }
        group
    }

    /// Appends, quarantine rows, deletes and meta updates: one transaction, then
    /// every caller is answered.
    fn commit_group(&mut self, group: Vec<Command>) {
        let mut delta = Delta::default();
        let mut answers: Vec<(Reply<()>, Result<(), StoreError>)> = Vec::new();
        let mut deleted: Vec<(oneshot::Sender<Result<u64, StoreError>>, u64)> = Vec::new();
        let quota = Quota {
            bytes: self.quota,
            policy: self.policy,
        };
        let (stats, quarantine_max_rows) = (self.stats.clone(), self.quarantine_max_rows);
        let conn = &mut self.conn;
        let result = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            for c in group {
                match c {
                    Command::Append { entries, reply } => {
                        let outcome = append(&tx, &stats, &mut delta, quota, &entries)?;
                        answers.push((reply, outcome));
                    }
                    Command::Quarantine(row) => {
                        quarantine(&tx, &row, quarantine_max_rows)?;
                        delta.quarantined += 1;
                    }
                    Command::MarkSent { seq, at_ms } => {
                        tx.execute(
                            "UPDATE batches SET sent_ms = ?2 WHERE seq = ?1",
                            params![seq as i64, at_ms],
                        )?;
                    }
                    Command::ForwardResult { at_ms, ok, message } => {
                        set_meta(&tx, "last_forward_ms", at_ms)?;
                        set_meta(&tx, "last_forward_ok", ok)?;
                        set_meta(&tx, "last_forward_message", message)?;
                    }
                    Command::Delete { seqs, reply } => {
                        let mut n = 0;
                        for seq in seqs {
                            let row: Option<(i64, i64)> = tx
                                .query_row(
                                    "DELETE FROM batches WHERE seq = ?1 RETURNING reports, length(data)",
                                    [seq as i64],
                                    |r| Ok((r.get(0)?, r.get(1)?)),
                                )
                                .optional()?;
                            if let Some((reports, bytes)) = row {
                                n += 1;
                                delta.batches -= 1;
                                delta.batch_reports -= reports;
                                delta.batch_bytes -= bytes + ROW_OVERHEAD as i64;
                            }
                        }
                        deleted.push((reply, n));
                    }
                    Command::Park {
                        seq,
                        status,
                        reason,
                        reply,
                    } => {
                        tx.execute(
                            "INSERT OR REPLACE INTO rejected_batches (seq, data, reports, status, reason, at_ms)
                             SELECT seq, data, reports, ?2, ?3, ?4 FROM batches WHERE seq = ?1",
                            params![seq as i64, status, reason, now_ms()],
                        )?;
                        let row: Option<(i64, i64)> = tx
                            .query_row(
                                "DELETE FROM batches WHERE seq = ?1 RETURNING reports, length(data)",
                                [seq as i64],
                                |r| Ok((r.get(0)?, r.get(1)?)),
                            )
                            .optional()?;
                        let n = match row {
                            Some((reports, bytes)) => {
                                delta.batches -= 1;
                                delta.batch_reports -= reports;
                                delta.batch_bytes -= bytes + ROW_OVERHEAD as i64;
                                delta.rejected += 1;
                                1
                            }
                            None => 0,
                        };
                        deleted.push((reply, n));
                    }
                    other => {
                        // Separate commands never reach a group.
                        drop(other);
                    }
                }
            }
            if delta.dropped > 0 {
                let total = meta_int(&tx, "dropped_reports")?.unwrap_or(0) + delta.dropped as i64;
                set_meta(&tx, "dropped_reports", total)?;
            }
            tx.commit()
        })();
        match result {
            Ok(()) => {
                if let Ok(mut s) = self.stats.lock() {
                    apply(&mut s, &delta, self.quarantine_max_rows);
                    let _ = refresh_oldest(&self.conn, &mut s);
                }
                if delta.dropped > 0 {
                    tracing::warn!(
                        dropped = delta.dropped,
                        "outbox quota reached: dropped the oldest unsent reports (quota_policy = drop_oldest)"
                    );
                }
                for (reply, outcome) in answers {
                    let _ = reply.send(outcome);
                }
                for (reply, n) in deleted {
                    let _ = reply.send(Ok(n));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "outbox commit failed");
                for (reply, _) in answers {
                    let _ = reply.send(Err(StoreError::Storage(e.to_string())));
                }
                for (reply, _) in deleted {
                    let _ = reply.send(Err(StoreError::Storage(e.to_string())));
                }
                self.reload_stats();
            }
        }
    }

    fn reload_stats(&self) {
        if let Ok(fresh) = read_stats(&self.conn, self.quota)
            && let Ok(mut s) = self.stats.lock()
        {
            *s = fresh;
        }
    }

    fn separate(&mut self, c: Command) {
        match c {
            Command::FormBatch {
                edge_id,
                max_reports,
                max_bytes,
                reply,
            } => {
                let r = self.form_batch(&edge_id, max_reports, max_bytes);
                if r.is_err() {
                    self.reload_stats();
                }
                let _ = reply.send(r);
            }
            Command::LoadBatch { seq, reply } => {
                let r = self
                    .conn
                    .query_row(
                        "SELECT data FROM batches WHERE seq = ?1",
                        [seq as i64],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(StoreError::from);
                let _ = reply.send(r);
            }
            Command::ListBatches { reply } => {
                let _ = reply.send(self.list_batches());
            }
            _ => {}
        }
    }

    fn list_batches(&self) -> Result<Vec<BatchInfo>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, reports, length(data) FROM batches ORDER BY seq")?;
        let rows = stmt.query_map([], |r| {
            Ok(BatchInfo {
                seq: r.get::<_, i64>(0)? as u64,
                reports: r.get::<_, i64>(1)? as u64,
                bytes: r.get::<_, i64>(2)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn form_batch(
        &mut self,
        edge_id: &str,
        max_reports: usize,
        max_bytes: u64,
    ) -> Result<Option<BatchInfo>, StoreError> {
        let tx = self.conn.transaction()?;
        let seq = meta_int(&tx, "next_batch_seq")?.unwrap_or(1);
        // Each row is decoded and added to the encoder as it is read, so only
        // one report is held decoded at a time.
        let mut encoder = wire::BatchEncoder::new(edge_id, seq as u64);
        let mut rows = 0u64;
        let mut last_id = None;
        let mut entry_bytes = 0u64;
        let mut oldest = i64::MAX;
        {
            let mut stmt = tx.prepare(
                "SELECT id, received_ms, data, length(device) FROM entries ORDER BY id LIMIT ?1",
            )?;
            let mut q = stmt.query([max_reports.max(1) as i64])?;
            while let Some(r) = q.next()? {
                let data = r.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?;
                let cost = data.len() as u64 + r.get::<_, i64>(3)? as u64 + ROW_OVERHEAD;
                if rows > 0 && entry_bytes + cost > max_bytes {
                    break;
                }
                let id: i64 = r.get(0)?;
                match decode_entry(data) {
                    Ok(e) => encoder
                        .push(&e)
                        .map_err(|e| StoreError::Storage(e.to_string()))?,
                    // Cannot happen short of disk corruption; keep going without it.
                    Err(e) => tracing::error!(id, error = %e, "unreadable outbox entry skipped"),
                }
                entry_bytes += cost;
                oldest = oldest.min(r.get(1)?);
                rows += 1;
                last_id = Some(id);
            }
        }
        let Some(last_id) = last_id else {
            return Ok(None);
        };
        let reports = encoder.len() as i64;
        let data = encoder
            .finish()
            .map_err(|e| StoreError::Storage(e.to_string()))?;
        tx.execute(
            "INSERT INTO batches (seq, data, reports, entry_bytes, oldest_ms, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![seq, data, reports, entry_bytes as i64, oldest, now_ms()],
        )?;
        tx.execute("DELETE FROM entries WHERE id <= ?1", [last_id])?;
        set_meta(&tx, "next_batch_seq", seq + 1)?;
        tx.commit()?;
        let info = BatchInfo {
            seq: seq as u64,
            reports: reports as u64,
            bytes: data.len() as u64,
        };
        if let Ok(mut s) = self.stats.lock() {
            s.pending_reports = s.pending_reports.saturating_sub(rows);
            s.entry_bytes = s.entry_bytes.saturating_sub(entry_bytes);
            s.batches += 1;
            s.batch_reports += info.reports;
            s.batch_bytes += info.bytes + ROW_OVERHEAD;
            let _ = refresh_oldest(&self.conn, &mut s);
        }
        Ok(Some(info))
    }
}

fn is_separate(c: &Command) -> bool {
    matches!(
        c,
        Command::FormBatch { .. } | Command::LoadBatch { .. } | Command::ListBatches { .. }
    )
}

fn apply(s: &mut OutboxStats, d: &Delta, quarantine_max_rows: u32) {
    let add = |v: u64, by: i64| (v as i64 + by).max(0) as u64;
    s.pending_reports = add(s.pending_reports, d.reports);
    s.entry_bytes = add(s.entry_bytes, d.entry_bytes);
    s.batches = add(s.batches, d.batches);
    s.batch_reports = add(s.batch_reports, d.batch_reports);
    s.batch_bytes = add(s.batch_bytes, d.batch_bytes);
    s.dropped_reports += d.dropped;
    s.quarantine_rows = (s.quarantine_rows + d.quarantined).min(u64::from(quarantine_max_rows));
    s.rejected_batches += d.rejected;
}

#[derive(Clone, Copy)]
struct Quota {
    bytes: u64,
    policy: QuotaPolicy,
}

/// Inserts one request's entries if the quota allows (making room under
/// `drop_oldest`). The outer `Result` is a storage failure of the whole group.
fn append(
    tx: &rusqlite::Transaction<'_>,
    stats: &Mutex<OutboxStats>,
    delta: &mut Delta,
    w: Quota,
    entries: &[StoredEntry],
) -> rusqlite::Result<Result<(), StoreError>> {
    let need: u64 = entries.iter().map(StoredEntry::cost).sum();
    let used = {
        let s = stats.lock().map(|s| s.used_bytes()).unwrap_or(0);
        (s as i64 + delta.entry_bytes + delta.batch_bytes).max(0) as u64
    };
    if used + need > w.bytes {
        if w.policy == QuotaPolicy::Reject || need > w.bytes {
            return Ok(Err(StoreError::Full { quota: w.bytes }));
        }
        let freed = drop_oldest(tx, delta, used + need - w.bytes)?;
        if (used + need).saturating_sub(freed) > w.bytes {
            return Ok(Err(StoreError::Full { quota: w.bytes }));
        }
    }
    let mut stmt =
        tx.prepare_cached("INSERT INTO entries (received_ms, device, data) VALUES (?1, ?2, ?3)")?;
    for e in entries {
        stmt.execute(params![e.received_at_ms, e.device, e.data])?;
    }
    delta.reports += entries.len() as i64;
    delta.entry_bytes += need as i64;
    Ok(Ok(()))
}

/// Frees at least `want` bytes: the oldest batches never sent first (they hold
/// the oldest reports), then the oldest entries. Batches already sent are kept:
/// central may have them queued, and its acknowledgement will remove them.
fn drop_oldest(
    tx: &rusqlite::Transaction<'_>,
    delta: &mut Delta,
    want: u64,
) -> rusqlite::Result<u64> {
    let mut freed = 0u64;
    while freed < want {
        let row: Option<(i64, i64, i64)> = tx
            .query_row(
                "SELECT seq, reports, length(data) FROM batches WHERE sent_ms IS NULL ORDER BY seq LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((seq, reports, bytes)) = row else {
            break;
        };
        tx.execute("DELETE FROM batches WHERE seq = ?1", [seq])?;
        let cost = bytes as u64 + ROW_OVERHEAD;
        freed += cost;
        delta.batches -= 1;
        delta.batch_reports -= reports;
        delta.batch_bytes -= cost as i64;
        delta.dropped += reports as u64;
    }
    while freed < want {
        let row: Option<(i64, i64)> = tx
            .query_row(
                "SELECT id, length(data) + length(device) FROM entries ORDER BY id LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((id, bytes)) = row else {
            break;
        };
        tx.execute("DELETE FROM entries WHERE id = ?1", [id])?;
        let cost = bytes as u64 + ROW_OVERHEAD;
        freed += cost;
        delta.reports -= 1;
        delta.entry_bytes -= cost as i64;
        delta.dropped += 1;
    }
    Ok(freed)
}

fn quarantine(
    tx: &rusqlite::Transaction<'_>,
    row: &QuarantineRow,
    max_rows: u32,
) -> rusqlite::Result<()> {
    if max_rows == 0 {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO quarantine (at_ms, status, reason, method, uri, headers, body, body_len)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            row.at_ms,
            row.status,
            row.reason,
            row.method,
            row.uri,
            row.headers,
            row.body,
            row.body_len as i64
        ],
    )?;
    tx.execute(
        "DELETE FROM quarantine WHERE id <= (SELECT MAX(id) FROM quarantine) - ?1",
        [i64::from(max_rows)],
    )?;
    Ok(())
}
