//! `bulkflow-sim load`: a fixed report rate at an edge or central's
//! `/bulkdata`, for benchmarks. CPEs take turns; each request carries one
//! report in its vendor's encoding. Prints achieved rate and latencies.

use crate::cpe::Cpe;
use anyhow::Context;
use chrono::Utc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct LoadArgs {
    /// Collector URL, e.g. http://127.0.0.1:8080/bulkdata
    #[arg(long)]
    url: String,
    /// Reports per second.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// Distinct emulated CPEs the reports rotate through.
    #[arg(long, default_value_t = 100)]
    cpes: usize,
    /// Requests in flight at most (beyond it the rate is not held).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Stamp each CPE's reports this many seconds apart, ending now (a
    /// backlog: a day of reports sent in minutes, each with its own time),
    /// instead of with the time of sending.
    #[arg(long)]
    report_interval_s: Option<u64>,
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    password: Option<String>,
}

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rate > 0 && args.cpes > 0,
        "--rate and --cpes must be positive"
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;
    let mut cpes: Vec<Cpe> = (0..args.cpes).map(|i| Cpe::new(i, 1)).collect();
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let permits = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let total = args.rate * args.duration_s;
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
    let mut handles = Vec::new();
    let per_cpe = total.div_ceil(args.cpes as u64) as i64;
    let now = Utc::now();
    for n in 0..total {
        tick.tick().await;
        let cpe = &mut cpes[n as usize % args.cpes];
        let time = match args.report_interval_s {
            // The k-th report of a CPE, of `per_cpe`, the last one now.
            Some(step) => {
                let k = (n / args.cpes as u64) as i64;
                now - chrono::Duration::seconds((per_cpe - 1 - k) * step as i64)
            }
            None => Utc::now(),
        };
        cpe.advance(args.report_interval_s.unwrap_or(300));
        let body = cpe.render(&[(time, cpe.params())]);
        let sep = if args.url.contains('?') { '&' } else { '?' };
        let mut req = client
            .post(format!("{}{sep}{}", args.url, cpe.query()))
            .header("Content-Type", cpe.encoding.content_type())
            .header("BBF-Report-Format", cpe.encoding.token())
            .body(body);
        if let Some(u) = &args.user {
            req = req.basic_auth(u, args.password.as_deref());
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (ok, failed, latencies) = (ok.clone(), failed.clone(), latencies.clone());
        handles.push(tokio::spawn(async move {
            let t = Instant::now();
            let good = matches!(req.send().await, Ok(r) if r.status().is_success());
            let counter = if good { &ok } else { &failed };
            counter.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut l) = latencies.lock() {
                l.push(t.elapsed().as_micros() as u64);
            }
            drop(permit);
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    let secs = started.elapsed().as_secs_f64();
    let mut l = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort_unstable();
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{} reports in {secs:.1} s ({:.0}/s): {} answered 2xx, {} failed; latency p50 {:.1} ms, p99 {:.1} ms",
        total,
        total as f64 / secs,
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        pct(0.5) as f64 / 1000.0,
        pct(0.99) as f64 / 1000.0
    );
    Ok(())
}
