//! `bulkflow-edge status`: what the outbox holds, read straight from the
//! SQLite file (WAL lets it read while `run` writes).

use crate::config::Config;
use crate::outbox::{meta_int, now_ms, read_stats};
use anyhow::Context;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

pub fn run(config: &Config) -> anyhow::Result<()> {
    let path = &config.outbox.path;
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("cannot open outbox {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let s = read_stats(&conn, config.outbox.quota_bytes)
        .with_context(|| format!("cannot read outbox {}", path.display()))?;
    let text = |key: &str| -> rusqlite::Result<Option<String>> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
    };
    let now = now_ms();
    println!("outbox:            {}", path.display());
    println!(
        "pending reports:   {} ({} not yet batched, {} in {} batches awaiting central)",
        s.pending_reports + s.batch_reports,
        s.pending_reports,
        s.batch_reports,
        s.batches
    );
    println!(
        "pending bytes:     {} ({} reports, {} batches)",
        s.used_bytes(),
        s.entry_bytes,
        s.batch_bytes
    );
    match s.oldest_ms {
        Some(t) => println!("oldest pending:    {:.1} s ago", (now - t) as f64 / 1000.0),
        None => println!("oldest pending:    -"),
    }
    println!(
        "quota:             {} of {} bytes ({:.1}%, policy {:?})",
        s.used_bytes(),
        s.quota_bytes,
        if s.quota_bytes == 0 {
            0.0
        } else {
            s.used_bytes() as f64 * 100.0 / s.quota_bytes as f64
        },
        config.outbox.quota_policy
    );
    println!("dropped reports:   {}", s.dropped_reports);
    println!("quarantine rows:   {}", s.quarantine_rows);
    println!("rejected batches:  {}", s.rejected_batches);
    match meta_int(&conn, "last_forward_ms")? {
        Some(t) => {
            let ok = meta_int(&conn, "last_forward_ok")?.unwrap_or(0) != 0;
            println!(
                "last forward:      {} {:.1} s ago: {}",
                if ok { "ok" } else { "FAILED" },
                (now - t) as f64 / 1000.0,
                text("last_forward_message")?.unwrap_or_default()
            );
        }
        None => println!("last forward:      never"),
    }
    println!(
        "next batch seq:    {}",
        meta_int(&conn, "next_batch_seq")?.unwrap_or(1)
    );
    Ok(())
}
