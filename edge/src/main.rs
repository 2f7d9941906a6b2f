//! `bulkflow-edge`: the agent that sits next to the CPEs.
//!
//! The binary only parses arguments and wires modules together; each command's
//! work lives in its own module: `ingest` (CPE HTTP server) -> `outbox` (SQLite)
//! -> `forward` (batches to central), plus `status`, `metrics` and `shutdown`.

mod config;
mod decode;
mod forward;
mod ingest;
mod metrics;
mod outbox;
mod shutdown;
mod status;

use anyhow::Context;
use clap::{Parser, Subcommand};
use config::Config;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "bulkflow-edge",
    version,
    about = "bulkflow edge agent: accepts TR-069 Bulk Data reports from CPEs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// The TOML config file (`BULKFLOW_EDGE_*` environment variables override it).
    #[arg(long, short)]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Decode one Bulk Data request body and print one JSON line per parameter.
    Decode(decode::Args),
    /// Accept reports from CPEs and forward them to central.
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Write the bound listener address(es) here once listening
        /// (one per line: ingest, then admin if separate).
        #[arg(long)]
        addr_file: Option<PathBuf>,
    },
    /// Show what the outbox holds and how forwarding goes.
    Status(ConfigArg),
    /// Validate a config file and print the effective settings.
    CheckConfig(ConfigArg),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Decode(args) => return decode::run(&args),
        Command::Run { config, addr_file } => run(&config.config, addr_file.as_deref()),
        Command::Status(c) => Config::load(&c.config).and_then(|c| status::run(&c)),
        Command::CheckConfig(c) => Config::load(&c.config).map(|c| {
            println!("# configuration is valid; effective settings:");
            for w in c.warnings() {
                println!("# warning: {w}");
            }
            print!("{}", c.effective());
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(config_path: &Path, addr_file: Option<&Path>) -> anyhow::Result<()> {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // RUST_LOG as `level` or `target=level,...`: the span and field filters of
    // EnvFilter would bring a regex engine into a binary meant for routers.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .and_then(|s| s.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .init();
    let config = Config::load(config_path)?;
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    // reqwest is built without a crypto provider: ring, never aws-lc.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (outbox, writer) = outbox::Outbox::start(&config.outbox, config.quarantine.max_rows)
        .with_context(|| format!("cannot open outbox {}", config.outbox.path.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(serve(&config, outbox.clone(), addr_file));
    // Connections still open after the grace period end with the runtime;
    // then the last outbox handle goes and the writer finishes.
    drop(runtime);
    drop(outbox);
    let _ = writer.join();
    result
}

async fn serve(
    config: &Config,
    outbox: outbox::Outbox,
    addr_file: Option<&Path>,
) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signals();
    let metrics = Arc::new(metrics::Metrics::default());
    let stored = Arc::new(tokio::sync::Notify::new());
    let tls = config.tls.as_ref().map(ingest::tls_acceptor).transpose()?;
    let (listener, addr) = ingest::bind(config.listen, "Bulk Data").await?;
    let mut addrs = vec![addr.to_string()];
    let admin = match config.ingest.admin_listen {
        Some(a) => {
            let (l, a) = ingest::bind(a, "admin (/healthz, /metrics)").await?;
            addrs.push(a.to_string());
            Some(l)
        }
        None => None,
    };
    if let Some(path) = addr_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, addrs.join("\n") + "\n")?;
        std::fs::rename(&tmp, path)?;
    }
    let state = Arc::new(ingest::Ingest::new(
        config,
        outbox.clone(),
        metrics.clone(),
        stored.clone(),
    ));
    let forwarder = forward::Forwarder::new(config, outbox, metrics, stored, shutdown.clone())?;
    let forwarding = tokio::spawn(forwarder.run());
    notify_systemd(&addrs, shutdown.clone());
    let grace = Duration::from_secs(config.ingest.shutdown_grace_secs);
    let role = match admin {
        Some(l) => {
            tokio::spawn(ingest::serve(
                l,
                None,
                state.clone(),
                ingest::Role::Admin,
                shutdown.clone(),
                grace,
            ));
            ingest::Role::Ingest
        }
        None => ingest::Role::All,
    };
    ingest::serve(listener, tls, state, role, shutdown, grace).await;
    let _ = forwarding.await;
    tracing::info!("stopped");
    Ok(())
}

/// systemd `Type=notify` (nothing happens without `$NOTIFY_SOCKET`): READY
/// once the listeners are bound and the outbox is open, WATCHDOG pings from
/// this runtime (a hung runtime misses them and systemd restarts the edge),
/// until shutdown (the signal handler sends STOPPING).
fn notify_systemd(addrs: &[String], mut shutdown: shutdown::Shutdown) {
    use bulkflow_shared::notify;
    notify::ready(&format!("listening on {}", addrs.join(", ")));
    let mut tick = notify::watchdog_interval().map(tokio::time::interval);
    tokio::spawn(async move {
        loop {
            let ping = async {
                match tick.as_mut() {
                    Some(t) => t.tick().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = ping => notify::watchdog_ping(),
                _ = shutdown.wait() => break,
            }
        }
    });
}
