//! Binary COPY of the typed rows (device, interface, radio, neighbour and
//! client statistics) that `extract` pulls out of each report.
//!
//! Each table is written by one `COPY .. FROM STDIN BINARY`, either straight
//! into the table or into its staging copy (see [`Target`]); counters go in as
//! binary numeric, so PostgreSQL parses no text.

use super::extract::Extracted;
use super::numeric::SampleNum;
use futures_util::pin_mut;
use std::time::SystemTime;
use tokio_postgres::Transaction;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

/// Where rows go: the tables themselves (a read holding only new keys), or
/// their staging copies, to be merged with `ON CONFLICT DO NOTHING`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Direct,
    Staging,
}

/// The extracted rows of one report: its time and device id.
pub type Row = (SystemTime, i32, Extracted);

/// A binary COPY into `table` (or its staging copy) of the named columns.
pub async fn copy_in(
    tx: &Transaction<'_>,
    target: Target,
    table: &str,
    columns: &[(&str, Type)],
) -> Result<BinaryCopyInWriter, tokio_postgres::Error> {
    let names: Vec<&str> = columns.iter().map(|c| c.0).collect();
    let types: Vec<Type> = columns.iter().map(|c| c.1.clone()).collect();
    let prefix = match target {
        Target::Direct => "",
        Target::Staging => "stage_",
    };
    let sql = format!(
        "COPY {prefix}{table} ({}) FROM STDIN BINARY",
        names.join(", ")
    );
    Ok(BinaryCopyInWriter::new(tx.copy_in(&sql).await?, &types))
}

/// Writes every typed row of `rows`.
pub async fn write(
    tx: &Transaction<'_>,
    target: Target,
    rows: &[Row],
) -> Result<(), tokio_postgres::Error> {
    device_stats(tx, target, rows).await?;
    interface_stats(tx, target, rows).await?;
    radio_stats(tx, target, rows).await?;
    neighbors(tx, target, rows).await?;
    clients(tx, target, rows).await
}

fn count(v: Option<u64>) -> SampleNum {
    v.map_or(SampleNum::Null, SampleNum::from_u64)
}

const KEY: [(&str, Type); 2] = [("time", Type::TIMESTAMPTZ), ("device_id", Type::INT4)];

async fn device_stats(
    tx: &Transaction<'_>,
    target: Target,
    rows: &[Row],
) -> Result<(), tokio_postgres::Error> {
    if !rows.iter().any(|r| r.2.device.is_some()) {
        return Ok(());
    }
    let w = copy_in(
        tx,
        target,
        "device_stats",
        &[
            KEY[0].clone(),
            KEY[1].clone(),
            ("uptime_s", Type::INT8),
            ("memory_total_kib", Type::INT8),
            ("memory_free_kib", Type::INT8),
            ("cpu_percent", Type::INT4),
        ],
    )
    .await?;
    pin_mut!(w);
    for (t, d, x) in rows {
        let Some(s) = &x.device else { continue };
        w.as_mut()
            .write(&[
                t,
                d,
                &s.uptime_s,
                &s.memory_total_kib,
                &s.memory_free_kib,
                &s.cpu_percent,
            ])
            .await?;
    }
    w.finish().await.map(drop)
}

async fn interface_stats(
    tx: &Transaction<'_>,
    target: Target,
    rows: &[Row],
) -> Result<(), tokio_postgres::Error> {
    if rows.iter().all(|r| r.2.interfaces.is_empty()) {
        return Ok(());
    }
    let w = copy_in(
        tx,
        target,
        "interface_stats",
        &[
            KEY[0].clone(),
            KEY[1].clone(),
            ("interface", Type::INT4),
            ("bytes_sent", Type::NUMERIC),
            ("bytes_received", Type::NUMERIC),
            ("packets_sent", Type::NUMERIC),
            ("packets_received", Type::NUMERIC),
            ("errors_sent", Type::NUMERIC),
            ("errors_received", Type::NUMERIC),
            ("discard_packets_sent", Type::NUMERIC),
            ("discard_packets_received", Type::NUMERIC),
        ],
    )
    .await?;
    pin_mut!(w);
    for (t, d, x) in rows {
        for i in &x.interfaces {
            w.as_mut()
                .write(&[
                    t,
                    d,
                    &i.interface,
                    &count(i.bytes_sent),
                    &count(i.bytes_received),
                    &count(i.packets_sent),
                    &count(i.packets_received),
                    &count(i.errors_sent),
                    &count(i.errors_received),
                    &count(i.discard_packets_sent),
                    &count(i.discard_packets_received),
                ])
                .await?;
        }
    }
    w.finish().await.map(drop)
}

async fn radio_stats(
    tx: &Transaction<'_>,
    target: Target,
    rows: &[Row],
) -> Result<(), tokio_postgres::Error> {
    if rows.iter().all(|r| r.2.radios.is_empty()) {
        return Ok(());
    }
    let w = copy_in(
        tx,
        target,
        "radio_stats",
        &[
            KEY[0].clone(),
            KEY[1].clone(),
            ("radio", Type::INT4),
            ("channel", Type::INT4),
            ("band", Type::TEXT),
            ("bandwidth", Type::TEXT),
            ("bytes_sent", Type::NUMERIC),
            ("bytes_received", Type::NUMERIC),
            ("packets_sent", Type::NUMERIC),
            ("packets_received", Type::NUMERIC),
            ("errors_sent", Type::NUMERIC),
            ("errors_received", Type::NUMERIC),
            ("noise_dbm", Type::INT4),
        ],
    )
    .await?;
    pin_mut!(w);
    for (t, d, x) in rows {
        for r in &x.radios {
            w.as_mut()
                .write(&[
                    t,
                    d,
                    &r.radio,
                    &r.channel,
                    &r.band,
                    &r.bandwidth,
                    &count(r.bytes_sent),
                    &count(r.bytes_received),
                    &count(r.packets_sent),
                    &count(r.packets_received),
                    &count(r.errors_sent),
                    &count(r.errors_received),
                    &r.noise_dbm,
                ])
                .await?;
        }
    }
    w.finish().await.map(drop)
}

async fn neighbors(
    tx: &Transaction<'_>,
    target: Target,
    rows: &[Row],
) -> Result<(), tokio_postgres::Error> {
    if rows.iter().all(|r| r.2.neighbors.is_empty()) {
        return Ok(());
    }
    let w = copy_in(
        tx,
        target,
        "wifi_neighbors",
        &[
            KEY[0].clone(),
            KEY[1].clone(),
            ("result", Type::INT4),
            ("bssid", Type::TEXT),
            ("ssid", Type::TEXT),
            ("channel", Type::INT4),
            ("band", Type::TEXT),
            ("bandwidth", Type::TEXT),
            ("signal_dbm", Type::INT4),
            ("noise_dbm", Type::INT4),
            ("security_mode", Type::TEXT),
            ("encryption_mode", Type::TEXT),
            ("mode", Type::TEXT),
            ("standards", Type::TEXT),
            ("radio", Type::TEXT),
        ],
    )
    .await?;
    pin_mut!(w);
    for (t, d, x) in rows {
        for n in &x.neighbors {
            w.as_mut()
                .write(&[
                    t,
                    d,
                    &n.result,
                    &n.bssid,
                    &n.ssid,
                    &n.channel,
                    &n.band,
                    &n.bandwidth,
                    &n.signal_dbm,
                    &n.noise_dbm,
                    &n.security_mode,
                    &n.encryption_mode,
                    &n.mode,
                    &n.standards,
                    &n.radio,
                ])
                .await?;
        }
    }
    w.finish().await.map(drop)
}

async fn clients(
    tx: &Transaction<'_>,
    target: Target,
    rows: &[Row],
) -> Result<(), tokio_postgres::Error> {
    if rows.iter().all(|r| r.2.clients.is_empty()) {
        return Ok(());
    }
    let w = copy_in(
        tx,
        target,
        "wifi_clients",
        &[
            KEY[0].clone(),
            KEY[1].clone(),
            ("mac", Type::TEXT),
            ("source", Type::TEXT),
            ("attached_to", Type::TEXT),
            ("ssid", Type::TEXT),
            ("bssid", Type::TEXT),
            ("band", Type::TEXT),
            ("host_name", Type::TEXT),
            ("signal_dbm", Type::NUMERIC),
            ("bytes_sent", Type::NUMERIC),
            ("bytes_received", Type::NUMERIC),
            ("packets_sent", Type::NUMERIC),
            ("packets_received", Type::NUMERIC),
            ("errors_sent", Type::NUMERIC),
            ("errors_received", Type::NUMERIC),
            ("retrans_count", Type::NUMERIC),
            ("last_downlink_rate_kbps", Type::INT8),
            ("last_uplink_rate_kbps", Type::INT8),
            ("connected_s", Type::INT8),
        ],
    )
    .await?;
    pin_mut!(w);
    for (t, d, x) in rows {
        for c in &x.clients {
            // A dBm value as extract formats it ("-45", "-67.5").
            let signal = c
                .signal_dbm
                .as_deref()
                .map_or(SampleNum::Null, SampleNum::parse);
            w.as_mut()
                .write(&[
                    t,
                    d,
                    &c.mac,
                    &c.source.as_str(),
                    &c.attached_to,
                    &c.ssid,
                    &c.bssid,
                    &c.band,
                    &c.host_name,
                    &signal,
                    &count(c.bytes_sent),
                    &count(c.bytes_received),
                    &count(c.packets_sent),
                    &count(c.packets_received),
                    &count(c.errors_sent),
                    &count(c.errors_received),
                    &count(c.retrans_count),
                    &c.last_downlink_rate_kbps,
                    &c.last_uplink_rate_kbps,
                    &c.connected_s,
                ])
                .await?;
        }
    }
    w.finish().await.map(drop)
}
