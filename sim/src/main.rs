//! `bulkflow-sim`: emulated CPEs for the quick-start, tests and benchmarks.
//!
//! `bulkflow-sim cpes` runs a small fleet that posts Bulk Data reports to a
//! collector the way TR-069 CPEs do: identity in the query string, the
//! vendor's encoding (JSON NameValuePair / ObjectHierarchy, CSV per row / per
//! column), optional gzip and Basic auth, and retained failed reports resent
//! with the next one.
//!
//! `bulkflow-sim fleet` runs a fleet whose Bulk Data profiles are configured
//! through an emulator of GenieACS's NBI ([`nbi`]); each CPE with an enabled
//! profile reports to the profile's URL at its (scaled) interval.
//! `bulkflow-sim load` drives a fixed report rate for benchmarks, and
//! `bulkflow-sim wire-size` measures bytes on the wire per report for a site.

mod cpe;
mod fleet;
mod load;
mod nbi;
mod wire_size;

use anyhow::Context;
use chrono::Utc;
use clap::{Parser, Subcommand};
use cpe::{Cpe, Snapshot};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "bulkflow-sim",
    version,
    about = "Emulated TR-069 CPEs sending Bulk Data reports"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run N CPEs, each sending a fixed number of reports to a collector.
    Cpes(CpesArgs),
    /// Run N CPEs behind an emulated GenieACS NBI; they report per the
    /// Bulk Data profiles provisioned through it.
    Fleet(FleetArgs),
    /// Post reports at a fixed rate (benchmarks).
    Load(load::LoadArgs),
    /// Bytes per report on the edge -> central wire for a simulated site,
    /// against the JSON bodies its CPEs post (benchmarks).
    WireSize(wire_size::WireSizeArgs),
}

#[derive(clap::Args)]
struct FleetArgs {
    #[arg(long, default_value_t = 10)]
    cpes: usize,
    /// Address the NBI emulator listens on (GenieACS's NBI port is 7557; port
    /// 0 picks a free one). The first stdout line says `NBI listening on ADDR`.
    #[arg(long, default_value = "127.0.0.1:7557")]
    nbi: std::net::SocketAddr,
    /// Simulated seconds per real second (intervals, retries and scans shrink).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// GenieACS tags (lab sites) the devices rotate through, comma-separated.
    #[arg(long, default_value = "lab")]
    tags: String,
    /// Chance per simulated minute that a device goes offline (or back online).
    #[arg(long, default_value_t = 0.0)]
    offline_rate: f64,
    /// Chance per simulated minute that a device reboots.
    #[arg(long, default_value_t = 0.0)]
    reboot_rate: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(clap::Args)]
struct CpesArgs {
    /// Collector URL (the profile's HTTP.URL), e.g. http://127.0.0.1:8080/bulkdata
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 5)]
    cpes: usize,
    /// Reports per CPE.
    #[arg(long, default_value_t = 6)]
    reports: u32,
    /// Real time between a CPE's reports, ms.
    #[arg(long, default_value_t = 500)]
    interval_ms: u64,
    /// Simulated ReportingInterval: CollectionTime advances this much per report,
    /// ending at the present.
    #[arg(long, default_value_t = 300)]
    step_s: u64,
    /// Failed reports kept and resent with the next one (NumberOfRetainedFailedReports).
    #[arg(long, default_value_t = 3)]
    retained: usize,
    /// HTTP Basic credentials.
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    password: Option<String>,
    /// Reboot every N reports (uptime and counters restart from zero); 0 never.
    #[arg(long, default_value_t = 0)]
    reboot_every: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    reports_delivered: AtomicU64,
    reports_dropped: AtomicU64,
    params_delivered: AtomicU64,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // reqwest is built without a default TLS provider; ring is the one that
    // cross-builds everywhere.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    match cli.command {
        Command::Cpes(args) => runtime.block_on(cpes(args)),
        Command::Fleet(args) => runtime.block_on(run_fleet(args)),
        Command::Load(args) => runtime.block_on(load::run(args)),
        Command::WireSize(args) => wire_size::run(args),
    }
}

async fn run_fleet(args: FleetArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.time_scale > 0.0, "--time-scale must be positive");
    let tags: Vec<String> = args
        .tags
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect();
    let mut fleet = fleet::Fleet::new(args.cpes, args.seed, &tags, args.time_scale);
    fleet.offline_rate = args.offline_rate;
    fleet.reboot_rate = args.reboot_rate;
    let shared: nbi::Shared = Arc::new(std::sync::Mutex::new(fleet));
    let listener = tokio::net::TcpListener::bind(args.nbi)
        .await
        .with_context(|| format!("binding {}", args.nbi))?;
    println!("NBI listening on {}", listener.local_addr()?);
    std::io::stdout().flush().ok();
    tokio::spawn(nbi::serve(listener, shared.clone()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        let outgoing = match shared.lock() {
            Ok(mut f) => f.tick(),
            Err(_) => anyhow::bail!("fleet state poisoned"),
        };
        for o in outgoing {
            let (client, shared) = (client.clone(), shared.clone());
            tokio::spawn(async move {
                let ok = post_report(&client, &o).await;
                if let Ok(mut f) = shared.lock() {
                    f.delivered(o.device, o.instance, ok);
                }
            });
        }
    }
}

/// One report as a CPE sends it: identity query, format headers, Basic
/// auth, gzip when the profile asks for it. True on 200/204.
async fn post_report(client: &reqwest::Client, o: &fleet::Outgoing) -> bool {
    let sep = if o.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{sep}{}", o.url, o.query);
    let method = if o.method == "PUT" {
        reqwest::Method::PUT
    } else {
        reqwest::Method::POST
    };
    let mut body = o.body.clone();
    let mut req = client
        .request(method, &url)
        .header("Content-Type", o.encoding.content_type())
        .header("BBF-Report-Format", format!("\"{}\"", o.encoding.token()))
        .header(
            "Date",
            Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        );
    if o.gzip {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        if gz.write_all(&body).is_ok()
            && let Ok(compressed) = gz.finish()
        {
            body = compressed;
            req = req.header("Content-Encoding", "gzip");
        }
    }
    if !o.username.is_empty() {
        req = req.basic_auth(&o.username, Some(&o.password));
    }
    match req.body(body).send().await {
        Ok(r) if r.status() == 200 || r.status() == 204 => true,
        Ok(r) => {
            tracing::warn!(url, status = %r.status(), reports = o.reports, "report refused");
            false
        }
        Err(e) => {
            tracing::warn!(url, error = %e, "report not delivered");
            false
        }
    }
}

async fn cpes(args: CpesArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;
    let args = Arc::new(args);
    let tally = Arc::new(Tally::default());
    let mut tasks = Vec::new();
    for i in 0..args.cpes {
        let (client, args, tally) = (client.clone(), args.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            run_cpe(i, &client, &args, &tally).await
        }));
    }
    for t in tasks {
        t.await.context("a CPE task failed")?;
    }
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "{} CPEs: {} requests ({} answered 200, {} failed); {} reports ({} parameters) delivered, {} dropped",
        args.cpes,
        get(&tally.requests),
        get(&tally.ok),
        get(&tally.failed),
        get(&tally.reports_delivered),
        get(&tally.params_delivered),
        get(&tally.reports_dropped),
    );
    std::io::stdout().flush().ok();
    Ok(())
}

async fn run_cpe(index: usize, client: &reqwest::Client, args: &CpesArgs, tally: &Tally) {
    let mut cpe = Cpe::new(index, args.seed);
    let sep = if args.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{sep}{}", args.url, cpe.query());
    let start =
        Utc::now() - chrono::Duration::seconds((args.step_s * u64::from(args.reports)) as i64);
    let mut pending: Vec<Snapshot> = Vec::new();
    // Spread the fleet over the interval, as real CPEs' phases differ.
    tokio::time::sleep(Duration::from_millis(
        args.interval_ms * index as u64 / args.cpes.max(1) as u64,
    ))
    .await;
    for k in 1..=args.reports {
        if args.reboot_every > 0 && k % args.reboot_every == 0 {
            cpe.reboot();
        }
        cpe.advance(args.step_s);
        let t = start + chrono::Duration::seconds((args.step_s * u64::from(k)) as i64);
        pending.push((t, cpe.params()));
        if pending.len() > args.retained + 1 {
            pending.remove(0);
            tally.reports_dropped.fetch_add(1, Ordering::Relaxed);
        }
        if send(client, &url, &cpe, &pending, args).await {
            tally.ok.fetch_add(1, Ordering::Relaxed);
            tally
                .reports_delivered
                .fetch_add(pending.len() as u64, Ordering::Relaxed);
            let params: usize = pending.iter().map(|p| p.1.len()).sum();
            tally
                .params_delivered
                .fetch_add(params as u64, Ordering::Relaxed);
            pending.clear();
        } else {
            tally.failed.fetch_add(1, Ordering::Relaxed);
        }
        tally.requests.fetch_add(1, Ordering::Relaxed);
        if k < args.reports {
            tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
        }
    }
    tally
        .reports_dropped
        .fetch_add(pending.len() as u64, Ordering::Relaxed);
}

/// Posts the pending reports; true on 200 or 204 (what iopsys CPEs count as success).
async fn send(
    client: &reqwest::Client,
    url: &str,
    cpe: &Cpe,
    reports: &[Snapshot],
    args: &CpesArgs,
) -> bool {
    let mut body = cpe.render(reports);
    let mut req = client
        .post(url)
        .header("Content-Type", cpe.encoding.content_type())
        .header("BBF-Report-Format", format!("\"{}\"", cpe.encoding.token()))
        .header(
            "Date",
            Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        );
    if cpe.gzip {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        if gz.write_all(&body).is_ok()
            && let Ok(compressed) = gz.finish()
        {
            body = compressed;
            req = req.header("Content-Encoding", "gzip");
        }
    }
    if let Some(user) = &args.user {
        req = req.basic_auth(user, args.password.as_deref());
    }
    match req.body(body).send().await {
        Ok(r) if r.status() == 200 || r.status() == 204 => true,
        Ok(r) => {
            tracing::warn!(cpe = %cpe.serial, status = %r.status(), "report refused");
            false
        }
        Err(e) => {
            tracing::warn!(cpe = %cpe.serial, error = %e, "report not delivered");
            false
        }
    }
}
