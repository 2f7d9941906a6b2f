//! `bulkflow-sim wire-size`: bytes on the edge -> central wire per report, for
//! a simulated site, against the JSON bodies its CPEs would have posted.
//!
//! The CPEs are the fleet's models (counters growing with random traffic,
//! hosts, neighbour scans), reporting every `--interval-s` at random phases.
//! Their reports are decoded by the real decoder and grouped into batches the
//! way the edge's forwarder groups them: in arrival order, closed at
//! `--batch-reports` or when the oldest report waited `--batch-age-s`. Two
//! situations bound what a site sees: a live site (batches close on age, so a
//! small site sends a few reports per batch) and a backlog after an outage
//! (batches close on count).

use crate::cpe::{Cpe, Encoding, TimeStyle};
use bulkflow_shared::identity::{DeviceIdentity, IdentitySource};
use bulkflow_shared::report::{self, Limits, Request};
use bulkflow_shared::wire::{self, Batch, Entry};
use chrono::{DateTime, Utc};

#[derive(clap::Args)]
pub struct WireSizeArgs {
    #[arg(long, default_value_t = 50)]
    cpes: usize,
    /// Each CPE's ReportingInterval, seconds.
    #[arg(long, default_value_t = 60)]
    interval_s: u64,
    /// Simulated time, seconds.
    #[arg(long, default_value_t = 3600)]
    duration_s: u64,
    /// The edge's `[forward] batch_max_reports`.
    #[arg(long, default_value_t = 1000)]
    batch_reports: usize,
    /// The edge's `[forward] batch_max_age_ms`, in seconds: a live batch closes
    /// once its oldest report waited this long.
    #[arg(long, default_value_t = 1.0)]
    batch_age_s: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Bytes of one situation: JSON bodies as the CPEs would post them vs the
/// encoded batches that carry the same reports.
struct Tally {
    reports: usize,
    batches: usize,
    json_bytes: usize,
    wire_bytes: usize,
}

impl Tally {
    fn per_report(&self) -> (f64, f64) {
        let n = self.reports.max(1) as f64;
        (self.json_bytes as f64 / n, self.wire_bytes as f64 / n)
    }
    fn ratio(&self) -> f64 {
        self.json_bytes as f64 / self.wire_bytes.max(1) as f64
    }
    fn json(&self, name: &str) -> serde_json::Value {
        let (j, w) = self.per_report();
        serde_json::json!({
            "situation": name,
            "reports": self.reports,
            "batches": self.batches,
            "json_bytes_per_report": j.round(),
            "wire_bytes_per_report": w.round(),
            "ratio": (self.ratio() * 10.0).round() / 10.0,
        })
    }
}

pub fn run(args: WireSizeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.cpes > 0 && args.interval_s > 0 && args.batch_reports > 0,
        "--cpes, --interval-s and --batch-reports must be positive"
    );
    let arrivals = simulate(&args)?;
    let live = tally(&arrivals, args.batch_reports, Some(args.batch_age_s))?;
    let stored = stored_bytes(&arrivals)?;
    let backlog = tally(&arrivals, args.batch_reports, None)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "cpes": args.cpes,
                "interval_s": args.interval_s,
                "duration_s": args.duration_s,
                "batch_reports": args.batch_reports,
                "batch_age_s": args.batch_age_s,
                "live": live.json("live"),
                "backlog": backlog.json("backlog"),
                "outbox_bytes_per_report": stored.round(),
            })
        );
        return Ok(());
    }
    println!(
        "{} CPEs every {} s for {} s: {} reports",
        args.cpes, args.interval_s, args.duration_s, live.reports
    );
    for (name, t) in [
        (
            format!("live (batches close after {} s)", args.batch_age_s),
            &live,
        ),
        (
            format!("backlog (batches of {})", args.batch_reports),
            &backlog,
        ),
    ] {
        let (j, w) = t.per_report();
        println!(
            "{name}: {} batches, JSON {j:.0} B/report, wire {w:.0} B/report, {:.1}x smaller",
            t.batches,
            t.ratio()
        );
    }
    println!("edge outbox: {stored:.0} B/report stored (each report compressed on its own)");
    Ok(())
}

/// Mean bytes of a report in the edge's outbox: postcard of the entry,
/// compressed alone with the wire's dictionary, as the edge stores it.
fn stored_bytes(arrivals: &[Arrival]) -> anyhow::Result<f64> {
    let mut total = 0usize;
    for a in arrivals {
        let raw = postcard::to_allocvec(&a.entry)?;
        total += wire::dictionary::compress(&raw, 3)?.len();
    }
    Ok(total as f64 / arrivals.len().max(1) as f64)
}

/// One report as it reaches the edge: when, and what it decodes to.
struct Arrival {
    at_s: f64,
    json_len: usize,
    entry: Entry,
}

/// Every report of the run in arrival order, each rendered as JSON
/// NameValuePair (the raw body the ratio is measured against) and decoded.
fn simulate(args: &WireSizeArgs) -> anyhow::Result<Vec<Arrival>> {
    let mut rng = fastrand::Rng::with_seed(args.seed);
    let start: DateTime<Utc> = DateTime::from_timestamp(1_764_547_200, 0).unwrap_or_default();
    let mut arrivals = Vec::new();
    for i in 0..args.cpes {
        let mut cpe = Cpe::new(i, args.seed);
        let device = DeviceIdentity::from_oui_pc_sn(
            &cpe.oui,
            &cpe.product_class,
            &cpe.serial,
            IdentitySource::Query,
        );
        let phase = rng.f64() * args.interval_s as f64;
        let mut t = phase;
        while t < args.duration_s as f64 {
            cpe.advance(args.interval_s);
            let time = start + chrono::Duration::milliseconds((t * 1000.0) as i64);
            let body = cpe.render_as(
                Encoding::NameValuePair,
                TimeStyle::UnixEpoch,
                &[(time, cpe.params())],
            );
            let received_at_ms = time.timestamp_millis();
            let decoded = report::decode(
                &Request {
                    body: &body,
                    content_type: Some("application/json"),
                    report_format: Some("NameValuePair"),
                    content_encoding: None,
                    date: None,
                    received_at_ms,
                },
                &Limits::default(),
            )?;
            for r in decoded.reports {
                arrivals.push(Arrival {
                    at_s: t,
                    json_len: body.len(),
                    entry: Entry {
                        device: device.clone(),
                        received_at_ms,
                        report: r,
                    },
                });
            }
            t += args.interval_s as f64;
        }
    }
    arrivals.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    Ok(arrivals)
}

/// Groups arrivals into batches (closed on count, or on age when `age_s` is
/// given) and encodes each with the wire format.
fn tally(arrivals: &[Arrival], max_reports: usize, age_s: Option<f64>) -> anyhow::Result<Tally> {
    let mut t = Tally {
        reports: 0,
        batches: 0,
        json_bytes: 0,
        wire_bytes: 0,
    };
    let mut start = 0;
    while start < arrivals.len() {
        let opened = arrivals[start].at_s;
        let mut end = start;
        while end < arrivals.len()
            && end - start < max_reports
            && age_s.is_none_or(|age| arrivals[end].at_s - opened <= age)
        {
            end += 1;
        }
        let batch = Batch {
            edge_id: "site-1".into(),
            batch_seq: t.batches as u64 + 1,
            entries: arrivals[start..end]
                .iter()
                .map(|a| a.entry.clone())
                .collect(),
        };
        t.wire_bytes += wire::encode(&batch)?.len();
        t.json_bytes += arrivals[start..end]
            .iter()
            .map(|a| a.json_len)
            .sum::<usize>();
        t.reports += end - start;
        t.batches += 1;
        start = end;
    }
    Ok(t)
}
