//! Versioned, idempotent schema migrations, and the TimescaleDB layer on top.
//!
//! Migrations are SQL files compiled into the binary and applied in order, each
//! in its own transaction, under an advisory lock so that several processes
//! starting at once do not race. Running `migrate` again is a no-op.
//!
//! TimescaleDB is optional. When the extension can be created, the time-series
//! tables become hypertables; compression and retention policies are added
//! where the installed edition allows (the Apache-2 edition refuses them with
//! SQLSTATE 0A000, which is logged and skipped). Without the extension the same
//! tables work on plain PostgreSQL with time indexes.

use crate::config::TimescaleConfig;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, GenericClient};
use tracing::{info, warn};

const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "schema", include_str!("../migrations/0001_schema.sql")),
    (
        2,
        "rate views",
        include_str!("../migrations/0002_views.sql"),
    ),
    (
        3,
        "profile parameter names",
        include_str!("../migrations/0003_profile_names.sql"),
    ),
    (
        4,
        "rates across reboots",
        include_str!("../migrations/0004_rates_across_reboots.sql"),
    ),
];

/// The time-series tables (hypertables under TimescaleDB).
pub const TIME_SERIES_TABLES: &[&str] = &[
    "samples",
    "device_stats",
    "interface_stats",
    "radio_stats",
    "wifi_neighbors",
    "wifi_clients",
];

/// What a migration run did and which storage mode is in effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub applied: Vec<i32>,
    pub mode: Mode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Plain PostgreSQL: regular tables with time indexes.
    Plain { reason: String },
    /// TimescaleDB hypertables, with whichever policies the edition allows.
    Timescale { compression: bool, retention: bool },
}

/// Applies pending migrations and sets up (or skips) TimescaleDB.
pub async fn run(
    client: &mut Client,
    ts: &TimescaleConfig,
) -> Result<Outcome, tokio_postgres::Error> {
    client
        .execute("SELECT pg_advisory_lock(hashtext('bulkflow_migrate'))", &[])
        .await?;
    let result = migrate_locked(client, ts).await;
    // The lock is per session; release it even when a step failed.
    let unlock = client
        .execute(
            "SELECT pg_advisory_unlock(hashtext('bulkflow_migrate'))",
            &[],
        )
        .await;
    let outcome = result?;
    unlock?;
    Ok(outcome)
}

async fn migrate_locked(
    client: &mut Client,
    ts: &TimescaleConfig,
) -> Result<Outcome, tokio_postgres::Error> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS bulkflow_migrations (
                 version     integer PRIMARY KEY,
                 name        text NOT NULL,
                 applied_at  timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
    let done: Vec<i32> = client
        .query("SELECT version FROM bulkflow_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut applied = Vec::new();
    for &(version, name, sql) in MIGRATIONS {
        if done.contains(&version) {
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO bulkflow_migrations (version, name) VALUES ($1, $2)",
            &[&version, &name],
        )
        .await?;
        tx.commit().await?;
        info!(version, name, "applied migration");
        applied.push(version);
    }
    let mode = timescale(client, ts).await?;
    match &mode {
        Mode::Plain { reason } => info!(%reason, "storage mode: plain PostgreSQL (time indexes)"),
        Mode::Timescale {
            compression,
            retention,
        } => info!(
            compression,
            retention, "storage mode: TimescaleDB hypertables"
        ),
    }
    Ok(Outcome { applied, mode })
}

async fn timescale(client: &Client, ts: &TimescaleConfig) -> Result<Mode, tokio_postgres::Error> {
    let mode = hypertables(client, ts).await?;
    if let Mode::Plain { .. } = mode {
        // Plain PostgreSQL: a BRIN index on time. Rows arrive in roughly time
        // order, so block ranges map to time ranges, and BRIN costs next to
        // nothing per insert, where a second B-tree beside the unique key
        // doubled the index work of every stored parameter. (TimescaleDB
        // makes its own B-tree per chunk, which stays small.) The name is the
        // one create_hypertable uses, so each table has one time index.
        for table in TIME_SERIES_TABLES {
            client
                .batch_execute(&format!(
                    "CREATE INDEX IF NOT EXISTS {table}_time_idx ON {table} USING brin (time)"
                ))
                .await?;
        }
    }
    Ok(mode)
}

async fn hypertables(client: &Client, ts: &TimescaleConfig) -> Result<Mode, tokio_postgres::Error> {
    if !ts.enabled {
        return Ok(Mode::Plain {
            reason: "disabled in configuration".into(),
        });
    }
    let available = client
        .query_opt(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'",
            &[],
        )
        .await?
        .is_some();
    if !available {
        return Ok(Mode::Plain {
            reason: "the timescaledb extension is not installed".into(),
        });
    }
    if let Err(e) = client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        .await
    {
        // Typically: not in shared_preload_libraries.
        warn!(error = %e, "cannot create the timescaledb extension");
        return Ok(Mode::Plain {
            reason: format!("CREATE EXTENSION timescaledb failed: {e}"),
        });
    }
    for table in TIME_SERIES_TABLES {
        client
            .query(
                "SELECT create_hypertable($1::text::regclass, 'time', \
                 chunk_time_interval => $2::text::interval, \
                 if_not_exists => TRUE, migrate_data => TRUE)",
                &[table, &ts.chunk_interval],
            )
            .await?;
    }
    let compression = if ts.compress_after.trim().is_empty() {
        false
    } else {
        // Changing compression settings of a table that already has compressed
        // chunks fails, so only tables not yet set up get the ALTER.
        let enabled: Vec<String> = client
            .query(
                "SELECT hypertable_name::text FROM timescaledb_information.hypertables \
                 WHERE compression_enabled",
                &[],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let sql = compression_sql(&ts.compress_after, &enabled);
        optional_feature(client, "compression", sql).await?
    };
    let retention = if ts.retain_for.trim().is_empty() {
        false
    } else {
        let sql = TIME_SERIES_TABLES
            .iter()
            .map(|t| {
                format!(
                    "SELECT add_retention_policy('{t}', {}::interval, if_not_exists => TRUE);",
                    quote(&ts.retain_for)
                )
            })
            .collect();
        optional_feature(client, "retention", sql).await?
    };
    Ok(Mode::Timescale {
        compression,
        retention,
    })
}

fn compression_sql(after: &str, already_enabled: &[String]) -> String {
    // Segments by every column of the table's unique key but `time` (which
    // orders): TimescaleDB refuses compression of a table whose unique
    // index has a column that neither segments nor orders.
    let segment = |t: &str| match t {
        "samples" => "device_id, parameter_id",
        "interface_stats" => "device_id, interface",
        "radio_stats" => "device_id, radio",
        "wifi_neighbors" => "device_id, result",
        "wifi_clients" => "device_id, mac",
        _ => "device_id",
    };
    let mut sql = String::new();
    for t in TIME_SERIES_TABLES {
        if !already_enabled.iter().any(|e| e == t) {
            sql += &format!(
                "ALTER TABLE {t} SET (timescaledb.compress, timescaledb.compress_segmentby = '{}');",
                segment(t)
            );
        }
        sql += &format!(
            "SELECT add_compression_policy('{t}', {}::interval, if_not_exists => TRUE);",
            quote(after)
        );
    }
    sql
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Runs SQL for a feature the edition may not have; `false` when it refuses
/// with SQLSTATE 0A000 (feature not supported).
async fn optional_feature(
    client: &impl GenericClient,
    what: &str,
    sql: String,
) -> Result<bool, tokio_postgres::Error> {
    match client.batch_execute(&sql).await {
        Ok(()) => Ok(true),
        Err(e) if e.code() == Some(&SqlState::FEATURE_NOT_SUPPORTED) => {
            warn!(feature = what, error = %e, "TimescaleDB edition does not offer this; carrying on without it");
            Ok(false)
        }
        Err(e) => Err(e),
    }
}
