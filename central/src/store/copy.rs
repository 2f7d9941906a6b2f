//! Writes decoded batches to PostgreSQL in one transaction per read.
//!
//! Parameters (`samples`) and typed rows go in with one binary COPY per table,
//! straight into the tables inside a savepoint; only a read that holds a key
//! already stored (a resent report) is redone through per-connection staging
//! tables and merged with `INSERT .. SELECT .. ON CONFLICT DO NOTHING`, so
//! resent reports never duplicate rows. The edge batch ids are claimed in
//! `ingested_batches` in the same transaction: a batch another worker already
//! committed is skipped whole, and a concurrent worker on the same batch blocks
//! on the key until the first commits. Parameter names and devices are
//! upserted before it, in their own statements. No statement is issued per row.

use super::extract;
use super::numeric::SampleNum;
use super::rename::NameCache;
use super::typed::{self, Target};
use crate::migrate::TIME_SERIES_TABLES;
use crate::queue::Origin;
use bulkflow_shared::report::Value;
use bulkflow_shared::wire::{Batch, Entry};
use futures_util::pin_mut;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, Transaction};
use tracing::warn;

/// A batch read from the queue, ready to write.
#[derive(Debug)]
pub struct QueuedBatch {
    pub origin: Origin,
    pub batch: Batch,
}

/// What one write did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    pub batches: usize,
    /// Edge batches already committed earlier (a resend): skipped whole.
    pub duplicate_batches: usize,
    pub reports: usize,
    pub params: usize,
    /// Rows new in `samples` (resent reports add none).
    pub samples_inserted: u64,
}

pub struct Writer {
    client: Client,
    /// Parameter name -> id; names are never deleted, so the cache stays valid.
    params: HashMap<String, i32>,
    /// Renamed report keys -> full paths, for the typed tables.
    names: NameCache,
}

impl Writer {
    pub async fn connect(url: &str) -> Result<Writer, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                warn!(error = %e, "PostgreSQL connection ended");
            }
        });
        client
            .batch_execute(
                // One staging table per time-series table, `LIKE` it: the
                // same columns in the same order.
                &TIME_SERIES_TABLES
                    .iter()
                    .map(|t| {
                        format!(
                            "CREATE TEMP TABLE IF NOT EXISTS stage_{t} (LIKE {t}) ON COMMIT DELETE ROWS;"
                        )
                    })
                    .collect::<String>(),
            )
            .await?;
        Ok(Writer {
            client,
            params: HashMap::new(),
            names: NameCache::new(Duration::from_secs(30)),
        })
    }

    /// How often the renamed-key mapping is re-read (default 30 s).
    pub fn set_names_refresh(&mut self, every: Duration) {
        self.names = NameCache::new(every);
    }

    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Writes `batches` in one transaction.
    pub async fn write(
        &mut self,
        batches: &[QueuedBatch],
    ) -> Result<WriteStats, tokio_postgres::Error> {
        // A batch queued twice in one read is written once.
        let mut seen = HashSet::new();
        let batches: Vec<&QueuedBatch> = batches
            .iter()
            .filter(|b| {
                b.origin == Origin::Direct || seen.insert((&b.batch.edge_id, b.batch.batch_seq))
            })
            .collect();
        self.ensure_params(&batches).await?;
        self.names.refresh(&self.client).await;

        // Devices are upserted in their own statement, before the data
        // transaction: inside it, their row locks would be held until commit
        // and concurrent workers writing the same devices would queue behind
        // one another. Upserting a resent batch's devices again changes nothing.
        let all: Vec<(&str, &Entry)> = batches
            .iter()
            .flat_map(|b| b.batch.entries.iter().map(move |e| (edge_name(b), e)))
            .collect();
        let devices = upsert_devices(&self.client, &all).await?;
        let mut tx = self.client.transaction().await?;
        let claimed = claim_batches(&tx, &batches).await?;
        let mut stats = WriteStats::default();
        let mut entries: Vec<(&str, &Entry)> = Vec::new();
        for b in &batches {
            let new = b.origin == Origin::Direct
                || claimed.contains(&(b.batch.edge_id.clone(), b.batch.batch_seq as i64));
            if !new {
                stats.duplicate_batches += 1;
                continue;
            }
            stats.batches += 1;
            let edge = edge_name(b);
            for e in &b.batch.entries {
                stats.reports += 1;
                stats.params += e.report.params.len();
                entries.push((edge, e));
            }
        }
        if entries.is_empty() {
            tx.commit().await?;
            return Ok(stats);
        }
        let names = &self.names.map;
        let mut typed_rows: Vec<typed::Row> = entries
            .iter()
            .filter_map(|(_, e)| {
                let device = *devices.get(&e.device.id)?;
                let x = extract::extract(&names.map_params(&e.report.params));
                (!x.is_empty()).then(|| (system_time(e.report.time_ms), device, x))
            })
            .collect();
        // In the unique keys' order (device, then time), as for samples.
        typed_rows.sort_by_key(|r| (r.1, r.0));
        stats.samples_inserted =
            copy_rows(&mut tx, &entries, &devices, &self.params, &typed_rows).await?;
        tx.commit().await?;
        Ok(stats)
    }

    /// Makes sure every parameter name has an id. Runs outside the data
    /// transaction so that cached ids always refer to committed rows.
    async fn ensure_params(
        &mut self,
        batches: &[&QueuedBatch],
    ) -> Result<(), tokio_postgres::Error> {
        let mut missing: Vec<&str> = batches
            .iter()
            .flat_map(|b| &b.batch.entries)
            .flat_map(|e| &e.report.params)
            .map(|p| p.path.as_str())
            .filter(|n| !self.params.contains_key(*n))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        // Sorted, so concurrent workers take the unique-index locks in one order.
        missing.sort_unstable();
        missing.dedup();
        self.client
            .execute(
                "INSERT INTO parameters (name) SELECT unnest($1::text[]) ORDER BY 1 ON CONFLICT DO NOTHING",
                &[&missing],
            )
            .await?;
        for row in self
            .client
            .query(
                "SELECT id, name FROM parameters WHERE name = ANY($1)",
                &[&missing],
            )
            .await?
        {
            self.params.insert(row.get(1), row.get(0));
        }
        Ok(())
    }
}

/// The edge a batch came through, as recorded in `devices.last_edge`.
fn edge_name(b: &QueuedBatch) -> &str {
    match b.origin {
        Origin::Direct => "direct",
        Origin::Edge => b.batch.edge_id.as_str(),
    }
}

fn system_time(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

async fn claim_batches(
    tx: &Transaction<'_>,
    batches: &[&QueuedBatch],
) -> Result<HashSet<(String, i64)>, tokio_postgres::Error> {
    let edge: Vec<&&QueuedBatch> = batches
        .iter()
        .filter(|b| b.origin == Origin::Edge)
        .collect();
    if edge.is_empty() {
        return Ok(HashSet::new());
    }
    let ids: Vec<&str> = edge.iter().map(|b| b.batch.edge_id.as_str()).collect();
    let seqs: Vec<i64> = edge.iter().map(|b| b.batch.batch_seq as i64).collect();
    let reports: Vec<i32> = edge.iter().map(|b| b.batch.entries.len() as i32).collect();
    let params: Vec<i32> = edge
        .iter()
        .map(|b| {
            b.batch
                .entries
                .iter()
                .map(|e| e.report.params.len())
                .sum::<usize>() as i32
        })
        .collect();
    let rows = tx
        .query(
            "INSERT INTO ingested_batches (edge_id, batch_seq, reports, parameters)
             SELECT * FROM unnest($1::text[], $2::int8[], $3::int4[], $4::int4[]) ORDER BY 1, 2
             ON CONFLICT DO NOTHING
             RETURNING edge_id, batch_seq",
            &[&ids, &seqs, &reports, &params],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Upserts the devices of `entries`; returns device key -> id.
async fn upsert_devices(
    client: &Client,
    entries: &[(&str, &Entry)],
) -> Result<HashMap<String, i32>, tokio_postgres::Error> {
    // key -> (entry holding the identity, first seen, last seen, edge of the last)
    let mut by_key: BTreeMap<&str, (&Entry, i64, i64, &str)> = BTreeMap::new();
    for &(edge, e) in entries {
        let t = e.received_at_ms;
        by_key
            .entry(e.device.id.as_str())
            .and_modify(|d| {
                d.1 = d.1.min(t);
                if t >= d.2 {
                    d.2 = t;
                    d.3 = edge;
                }
            })
            .or_insert((e, t, t, edge));
    }
    let keys: Vec<&str> = by_key.keys().copied().collect();
    let oui: Vec<Option<&str>> = by_key.values().map(|d| d.0.device.oui.as_deref()).collect();
    let pc: Vec<Option<&str>> = by_key
        .values()
        .map(|d| d.0.device.product_class.as_deref())
        .collect();
    let sn: Vec<Option<&str>> = by_key
        .values()
        .map(|d| d.0.device.serial.as_deref())
        .collect();
    let source: Vec<&str> = by_key
        .values()
        .map(|d| d.0.device.source.as_str())
        .collect();
    let first: Vec<SystemTime> = by_key.values().map(|d| system_time(d.1)).collect();
    let last: Vec<SystemTime> = by_key.values().map(|d| system_time(d.2)).collect();
    let edge: Vec<&str> = by_key.values().map(|d| d.3).collect();
    let rows = client
        .query(
            "INSERT INTO devices AS d (device_key, oui, product_class, serial, identified_by, first_seen, last_seen, last_edge)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::timestamptz[], $7::timestamptz[], $8::text[])
             ON CONFLICT (device_key) DO UPDATE SET
                 oui = coalesce(excluded.oui, d.oui),
                 product_class = coalesce(excluded.product_class, d.product_class),
                 serial = coalesce(excluded.serial, d.serial),
                 first_seen = least(d.first_seen, excluded.first_seen),
                 last_edge = CASE WHEN excluded.last_seen >= d.last_seen THEN excluded.last_edge ELSE d.last_edge END,
                 last_seen = greatest(d.last_seen, excluded.last_seen)
             RETURNING id, device_key",
            &[&keys, &oui, &pc, &sn, &source, &first, &last, &edge],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(1), r.get(0))).collect())
}

/// `(value_num, value_text)` of a parameter value: numbers and booleans as
/// numbers, text exactly as sent plus its number when it reads as one.
/// `value_num` is already in numeric's binary form and the text is borrowed:
/// no allocation for the usual parameter.
pub fn sample_columns(v: &Value) -> (SampleNum, Option<Cow<'_, str>>) {
    match v {
        Value::Null => (SampleNum::Null, None),
        Value::Bool(b) => (
            SampleNum::from_u64(u64::from(*b)),
            Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        ),
        Value::Int(i) => (SampleNum::from_i64(*i), None),
        Value::UInt(u) => (SampleNum::from_u64(*u), None),
        Value::Float(f) if f.is_finite() => (SampleNum::parse(&format!("{f:e}")), None),
        Value::Float(f) => (SampleNum::Null, Some(Cow::Owned(f.to_string()))),
        Value::Text(s) => {
            let num = if is_numeric_text(s) {
                SampleNum::parse(s)
            } else {
                SampleNum::Null
            };
            (num, Some(Cow::Borrowed(s.as_str())))
        }
    }
}

/// Whether `s`, trimmed, is a decimal number PostgreSQL's numeric accepts
/// (sign, digits, one point, exponent; no NaN or Infinity).
fn is_numeric_text(s: &str) -> bool {
    let t = s.trim();
    if t.is_empty() || t.len() > 64 {
        return false;
    }
    let body = t.strip_prefix(['+', '-']).unwrap_or(t);
    let (mantissa, exponent) = match body.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (body, None),
    };
    let digits_ok = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some((a, b)) => {
            (digits_ok(a) || a.is_empty())
                && (digits_ok(b) || b.is_empty())
                && !(a.is_empty() && b.is_empty())
        }
        None => digits_ok(mantissa),
    };
    let exponent_ok =
        exponent.is_none_or(|e| digits_ok(e.strip_prefix(['+', '-']).unwrap_or(e)) && e.len() <= 5);
    mantissa_ok && exponent_ok
}

/// Writes the samples and typed rows of `entries`; returns the rows new in
/// `samples`.
///
/// Fast path: binary COPY straight into the tables, in a savepoint. Most reads
/// hold only new keys; a key already stored (a resent report) or repeated
/// within the read fails a COPY with a unique violation, and only then is the
/// read redone through the staging tables and merged with `ON CONFLICT DO
/// NOTHING`, which costs PostgreSQL about twice the index work.
async fn copy_rows(
    tx: &mut Transaction<'_>,
    entries: &[(&str, &Entry)],
    devices: &HashMap<String, i32>,
    params: &HashMap<String, i32>,
    typed_rows: &[typed::Row],
) -> Result<u64, tokio_postgres::Error> {
    let direct = tx.savepoint("direct_copy").await?;
    let copied = copy_to(
        &direct,
        Target::Direct,
        entries,
        devices,
        params,
        typed_rows,
    )
    .await;
    match copied {
        Ok(n) => {
            direct.commit().await?;
            return Ok(n);
        }
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => direct.rollback().await?,
        Err(e) => return Err(e),
    }
    copy_to(tx, Target::Staging, entries, devices, params, typed_rows).await?;
    let mut inserted = 0;
    for &table in TIME_SERIES_TABLES {
        // The staging tables are `LIKE` their table: same columns, same order.
        let n = tx
            .execute(
                &format!("INSERT INTO {table} SELECT * FROM stage_{table} ON CONFLICT DO NOTHING"),
                &[],
            )
            .await?;
        if table == "samples" {
            inserted = n;
        }
    }
    Ok(inserted)
}

/// One binary COPY per table into `target`; returns the sample rows copied.
async fn copy_to(
    tx: &Transaction<'_>,
    target: Target,
    entries: &[(&str, &Entry)],
    devices: &HashMap<String, i32>,
    params: &HashMap<String, i32>,
    typed_rows: &[typed::Row],
) -> Result<u64, tokio_postgres::Error> {
    let n = copy_samples(tx, target, entries, devices, params).await?;
    typed::write(tx, target, typed_rows).await?;
    Ok(n)
}

/// Binary COPY of every parameter row into `samples` (or its staging copy).
async fn copy_samples(
    tx: &Transaction<'_>,
    target: Target,
    entries: &[(&str, &Entry)],
    devices: &HashMap<String, i32>,
    params: &HashMap<String, i32>,
) -> Result<u64, tokio_postgres::Error> {
    // In the unique key's order: consecutive rows then land in neighbouring
    // index pages, which PostgreSQL finds in cache.
    let mut rows: Vec<(i32, i32, i64, &Value)> = Vec::new();
    for (_, e) in entries {
        let Some(&device) = devices.get(&e.device.id) else {
            continue;
        };
        for p in &e.report.params {
            let Some(&param) = params.get(&p.path) else {
                continue;
            };
            rows.push((device, param, e.report.time_ms, &p.value));
        }
    }
    rows.sort_unstable_by_key(|r| (r.0, r.1, r.2));
    let writer = typed::copy_in(
        tx,
        target,
        "samples",
        &[
            ("time", Type::TIMESTAMPTZ),
            ("device_id", Type::INT4),
            ("parameter_id", Type::INT4),
            ("value_num", Type::NUMERIC),
            ("value_text", Type::TEXT),
        ],
    )
    .await?;
    pin_mut!(writer);
    for (device, param, time_ms, value) in rows {
        let (num, text) = sample_columns(value);
        writer
            .as_mut()
            .write(&[&system_time(time_ms), &device, &param, &num, &text])
            .await?;
    }
    writer.finish().await
}

/// Whether an error is about the connection or the server's state (wait and
/// retry) rather than about the data (count an attempt against the entry).
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        let c = code.code();
        return c.starts_with("08") // connection exception
            || c.starts_with("53") // insufficient resources (disk full, out of memory)
            || c.starts_with("57") // operator intervention (shutdown, crash recovery)
            || c == "40001" // serialization failure
            || c == "40P01" // deadlock
            || c == "55P03"; // lock not available
    }
    // No SQLSTATE: an I/O error talking to the server.
    std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::types::ToSql;

    /// `value_num` as the bytes PostgreSQL receives.
    fn encoded(n: &SampleNum) -> Option<Vec<u8>> {
        let mut out = bytes::BytesMut::new();
        match n.to_sql(&Type::NUMERIC, &mut out).unwrap() {
            tokio_postgres::types::IsNull::Yes => None,
            tokio_postgres::types::IsNull::No => Some(out.to_vec()),
        }
    }

    /// The columns of `v`, `value_num` as the numeric that `decimal` encodes.
    fn columns(v: &Value) -> (Option<Vec<u8>>, Option<String>) {
        let (num, text) = sample_columns(v);
        (encoded(&num), text.map(Cow::into_owned))
    }

    fn num(decimal: &str) -> Option<Vec<u8>> {
        super::super::numeric::Numeric::parse(decimal).and_then(|n| encoded(&SampleNum::Decimal(n)))
    }

    #[test]
    fn sample_columns_encode_numbers_as_their_decimal_text() {
        for (v, decimal, text) in [
            (Value::UInt(u64::MAX), Some("18446744073709551615"), None),
            (Value::Int(i64::MIN), Some("-9223372036854775808"), None),
            (Value::Int(0), Some("0"), None),
            (Value::Bool(true), Some("1"), Some("true")),
            (Value::Bool(false), Some("0"), Some("false")),
            (Value::Float(1.5), Some("1.5e0"), None),
            (Value::Float(-0.000125), Some("-1.25e-4"), None),
            (Value::Float(f64::NAN), None, Some("NaN")),
            (
                Value::Text(" 86213 ".into()),
                Some("86213"),
                Some(" 86213 "),
            ),
            (Value::Text("-12.50".into()), Some("-12.50"), Some("-12.50")),
            (Value::Text("1e3".into()), Some("1e3"), Some("1e3")),
            (Value::Text("00042".into()), Some("00042"), Some("00042")),
            (Value::Text("  ".into()), None, Some("  ")),
            (Value::Text("NaN".into()), None, Some("NaN")),
            (Value::Text("Cafe;2nd".into()), None, Some("Cafe;2nd")),
            (Value::Null, None, None),
        ] {
            assert_eq!(
                columns(&v),
                (decimal.and_then(num), text.map(String::from)),
                "{v:?}"
            );
        }
    }

    #[test]
    fn sample_columns_keep_text_exact_and_numbers_numeric() {
        assert_eq!(
            columns(&Value::UInt(u64::MAX)),
            (num("18446744073709551615"), None)
        );
        assert_eq!(columns(&Value::Bool(true)), (num("1"), Some("true".into())));
        assert_eq!(columns(&Value::Float(1.5)), (num("1.5e0"), None));
        assert_eq!(
            columns(&Value::Text(" 86213 ".into())),
            (num("86213"), Some(" 86213 ".into()))
        );
        assert_eq!(
            columns(&Value::Text("  ".into())),
            (None, Some("  ".into()))
        );
        assert_eq!(
            columns(&Value::Text("NaN".into())),
            (None, Some("NaN".into()))
        );
        assert_eq!(columns(&Value::Null), (None, None));
    }

    #[test]
    fn numeric_text_accepts_decimals_only() {
        for ok in ["0", "-5", "+7", "1.5", ".5", "5.", "1e9", "-2.5E-3"] {
            assert!(is_numeric_text(ok), "{ok}");
        }
        for bad in [
            "", ".", "e5", "1e", "1.2.3", "0x10", "Infinity", "12abc", "1e999999",
        ] {
            assert!(!is_numeric_text(bad), "{bad}");
        }
    }
}
