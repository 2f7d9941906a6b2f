//! Benchmark of bulkflow-central against the local Redis and PostgreSQL.
//!
//! ```sh
//! cargo build --release -p bulkflow-central
//! cargo run --release -p bulkflow-central --example pipeline_bench -- \
//!     [--reports 20000] [--params 100] [--devices 200] [--batch-size 100] [--runs 3] \
//!     [--clients 4] [--latency-secs 30] [--read-count N] [--write BENCHMARKS.md]
//! ```
//!
//! What it measures, on synthetic TR-181 reports generated here (D devices
//! reporting every 300 s of simulated time, ~100 parameters each):
//!
//! 1. ceiling: the same parameter rows loaded with one plain binary `COPY` into
//!    a table with the columns of `samples` (no staging, no `ON CONFLICT`, no
//!    dictionaries), without and with the unique index `samples` has;
//! 2. end to end: all batches POSTed to `/v1/batches` by several clients to
//!    `bulkflow-central run` (one store worker), then again with a second
//!    `bulkflow-central store` process, until every batch is committed;
//! 3. latency at a steady load (half the 1-worker throughput), batch by batch;
//! 4. Redis memory per queued report with only `serve` running, and the
//!    encoded size of a report against its JSON NameValuePair body.
//!
//! Every phase gets a fresh database `bf_bench_<pid>_<n>` (migrated by the real
//! binary) and Redis streams named after it; both are removed at the end.
//! `--write FILE` replaces the `## Central` section of FILE with the results.

use anyhow::{Context, anyhow, bail};
use bulkflow_shared::identity::{DeviceIdentity, IdentitySource};
use bulkflow_shared::report::{Param, Report, TimeSource, Value};
use bulkflow_shared::wire::{self, Batch, Entry};
use bytes::{BufMut, BytesMut};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, NoTls};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ADMIN_URL: &str = "host=127.0.0.1 user=postgres dbname=postgres";
const REDIS_URL: &str = "redis://127.0.0.1:6379";
const EDGE: &str = "bench-1";
const TOKEN: &str = "bench-1-token-0123456789";
/// 2026-01-01T00:00:00Z, the first simulated report round.
const T0_MS: i64 = 1_767_225_600_000;
const INTERVAL_MS: i64 = 300_000;
/// Longest wait for a phase's batches to be committed.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(600);

static DB_COUNTER: AtomicU32 = AtomicU32::new(0);

// ---------------------------------------------------------------- arguments

/// central's default `store.read_count` (batches per stream read).
const DEFAULT_READ_COUNT: usize = 32;

#[derive(Debug, Clone)]
struct Args {
    reports: usize,
    params: usize,
    devices: usize,
    batch_size: usize,
    runs: usize,
    clients: usize,
    latency_secs: u64,
    read_count: Option<usize>,
    write: Option<PathBuf>,
}

impl Args {
    fn parse() -> anyhow::Result<Args> {
        let mut a = Args {
            reports: 20_000,
            params: 100,
            devices: 200,
            batch_size: 100,
            runs: 3,
            clients: 4,
            latency_secs: 30,
            read_count: None,
            write: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            if flag == "--help" || flag == "-h" {
                println!(
                    "pipeline_bench [--reports N] [--params P] [--devices D] [--batch-size B] [--runs R] \
                     [--clients C] [--latency-secs S] [--read-count N] [--write FILE]"
                );
                std::process::exit(0);
            }
            let value = it.next().with_context(|| format!("{flag} needs a value"))?;
            let num = || -> anyhow::Result<usize> {
                let n: usize = value
                    .parse()
                    .with_context(|| format!("{flag}: not a number: {value:?}"))?;
                if n == 0 {
                    bail!("{flag} must be at least 1");
                }
                Ok(n)
            };
            match flag.as_str() {
                "--reports" => a.reports = num()?,
                "--params" => a.params = num()?,
                "--devices" => a.devices = num()?,
                "--batch-size" => a.batch_size = num()?,
                "--runs" => a.runs = num()?,
                "--clients" => a.clients = num()?,
                "--latency-secs" => a.latency_secs = num()? as u64,
                "--read-count" => a.read_count = Some(num()?),
                "--write" => a.write = Some(PathBuf::from(value)),
                other => bail!("unknown flag {other} (try --help)"),
            }
        }
        Ok(a)
    }

    /// The flags as given, for the record.
    fn command_line(&self) -> String {
        let mut s = format!(
            "--reports {} --params {} --devices {} --batch-size {} --runs {} --clients {} --latency-secs {}",
            self.reports,
            self.params,
            self.devices,
            self.batch_size,
            self.runs,
            self.clients,
            self.latency_secs
        );
        if let Some(n) = self.read_count {
            s.push_str(&format!(" --read-count {n}"));
        }
        if let Some(p) = &self.write {
            s.push_str(&format!(" --write {}", p.display()));
        }
        s
    }
}

// ------------------------------------------------------- synthetic reports

/// How a parameter's value is made.
#[derive(Clone, Copy)]
enum Kind {
    /// Seconds since boot: a JSON number growing 300 per report.
    Uptime,
    /// A 64-bit counter as a JSON number, growing `per_s` per second.
    Counter {
        per_s: u64,
    },
    /// The same, as a numeric string (many CPEs send every value as text).
    CounterText {
        per_s: u64,
    },
    /// A gauge as a JSON number.
    Gauge {
        lo: i64,
        hi: i64,
    },
    /// A gauge as a numeric string.
    GaugeText {
        lo: i64,
        hi: i64,
    },
    /// One of a few strings, fixed per device (channels, bandwidths).
    Choice(&'static [&'static str]),
    /// Text that never changes.
    Fixed(&'static str),
    Ssid,
    Bssid,
    /// A station MAC, shared by the DataElements STA and the Hosts entry `n`.
    Mac(u64),
    HostName(u64),
}

fn mix(mut x: u64) -> u64 {
    // splitmix64 finaliser: deterministic, well spread.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn hash3(a: u64, b: u64, c: u64) -> u64 {
    mix(mix(mix(a) ^ b) ^ c)
}

/// The parameter paths of a report and how their values are made.
fn template(count: usize) -> Vec<(String, Kind)> {
    let mut t: Vec<(String, Kind)> = vec![
        ("Device.DeviceInfo.UpTime".into(), Kind::Uptime),
        (
            "Device.DeviceInfo.MemoryStatus.Total".into(),
            Kind::Fixed("249856"),
        ),
        (
            "Device.DeviceInfo.MemoryStatus.Free".into(),
            Kind::Gauge {
                lo: 40_000,
                hi: 140_000,
            },
        ),
        (
            "Device.DeviceInfo.ProcessStatus.CPUUsage".into(),
            Kind::GaugeText { lo: 0, hi: 100 },
        ),
    ];
    for i in 1..=4 {
        for (name, per_s) in [
            ("BytesSent", 40_000),
            ("BytesReceived", 400_000),
            ("PacketsSent", 60),
            ("PacketsReceived", 400),
            ("ErrorsSent", 0),
            ("ErrorsReceived", 0),
        ] {
            t.push((
                format!("Device.IP.Interface.{i}.Stats.{name}"),
                Kind::Counter { per_s },
            ));
        }
    }
    for r in 1..=2 {
        let p = format!("Device.WiFi.Radio.{r}");
        if r == 1 {
            t.push((format!("{p}.Channel"), Kind::Choice(&["1", "6", "11"])));
            t.push((format!("{p}.OperatingFrequencyBand"), Kind::Fixed("2.4GHz")));
        } else {
            t.push((
                format!("{p}.Channel"),
                Kind::Choice(&["36", "44", "100", "149"]),
            ));
            t.push((format!("{p}.OperatingFrequencyBand"), Kind::Fixed("5GHz")));
        }
        for (name, per_s) in [
            ("BytesSent", 30_000),
            ("BytesReceived", 250_000),
            ("PacketsSent", 50),
            ("PacketsReceived", 300),
            ("ErrorsSent", 0),
            ("ErrorsReceived", 1),
        ] {
            t.push((format!("{p}.Stats.{name}"), Kind::CounterText { per_s }));
        }
        t.push((
            format!("{p}.Stats.Noise"),
            Kind::GaugeText { lo: -97, hi: -85 },
        ));
    }
    for n in 1..=5 {
        let p = format!("Device.WiFi.NeighboringWiFiDiagnostic.Result.{n}");
        let five = n % 2 == 0;
        t.push((format!("{p}.SSID"), Kind::Ssid));
        t.push((format!("{p}.BSSID"), Kind::Bssid));
        t.push((
            format!("{p}.Channel"),
            Kind::Choice(if five {
                &["36", "40", "44", "48", "149", "157"]
            } else {
                &["1", "6", "11"]
            }),
        ));
        t.push((
            format!("{p}.SignalStrength"),
            Kind::GaugeText { lo: -92, hi: -40 },
        ));
        t.push((
            format!("{p}.OperatingFrequencyBand"),
            Kind::Fixed(if five { "5GHz" } else { "2.4GHz" }),
        ));
        t.push((
            format!("{p}.OperatingChannelBandwidth"),
            Kind::Fixed(if five { "80MHz" } else { "20MHz" }),
        ));
    }
    for s in 1..=3u64 {
        let radio = if s == 3 { 2 } else { 1 };
        let p = format!("Device.WiFi.DataElements.Network.Device.1.Radio.{radio}.BSS.1.STA.{s}");
        t.push((format!("{p}.MACAddress"), Kind::Mac(s)));
        t.push((
            format!("{p}.SignalStrength"),
            Kind::GaugeText { lo: 60, hi: 180 },
        ));
        t.push((format!("{p}.BytesSent"), Kind::Counter { per_s: 20_000 }));
        t.push((
            format!("{p}.BytesReceived"),
            Kind::Counter { per_s: 150_000 },
        ));
        t.push((
            format!("{p}.LastDataDownlinkRate"),
            Kind::Gauge {
                lo: 6_500,
                hi: 866_000,
            },
        ));
        t.push((
            format!("{p}.LastDataUplinkRate"),
            Kind::Gauge {
                lo: 6_500,
                hi: 433_000,
            },
        ));
    }
    for h in 1..=3u64 {
        t.push((format!("Device.Hosts.Host.{h}.HostName"), Kind::HostName(h)));
        t.push((format!("Device.Hosts.Host.{h}.PhysAddress"), Kind::Mac(h)));
    }
    // Other sizes than the ~100 above: cut, or pad with vendor gauges.
    t.truncate(count);
    let mut i = 1;
    while t.len() < count {
        t.push((
            format!("Device.X_BENCH_Vendor.Sensor.{i}.Value"),
            Kind::Gauge { lo: 0, hi: 10_000 },
        ));
        i += 1;
    }
    t
}

fn value(kind: Kind, device: u64, param: u64, round: u64) -> Value {
    let fixed = hash3(device, param, 0);
    let varying = hash3(device, param, round + 1);
    let span = |lo: i64, hi: i64| lo + (varying % (hi - lo + 1) as u64) as i64;
    let counter = |per_s: u64| {
        // Starts anywhere below 2^40, grows by roughly per_s a second.
        let start = fixed % (1 << 40);
        let jitter = if per_s == 0 { 0 } else { varying % per_s };
        start + round * 300 * per_s + jitter
    };
    match kind {
        Kind::Uptime => Value::Int((fixed % 5_000_000 + round * 300) as i64),
        Kind::Counter { per_s } => Value::from_u64(counter(per_s)),
        Kind::CounterText { per_s } => Value::Text(counter(per_s).to_string()),
        Kind::Gauge { lo, hi } => Value::Int(span(lo, hi)),
        Kind::GaugeText { lo, hi } => Value::Text(span(lo, hi).to_string()),
        Kind::Choice(list) => Value::Text(list[(fixed % list.len() as u64) as usize].to_owned()),
        Kind::Fixed(s) => Value::Text(s.to_owned()),
        Kind::Ssid => Value::Text(format!("Neighbour-{:04x}", fixed % 0x10000)),
        Kind::Bssid => Value::Text(mac(fixed)),
        Kind::Mac(n) => Value::Text(mac(hash3(device, n, 7))),
        Kind::HostName(n) => Value::Text(format!("host-{device}-{n}")),
    }
}

fn mac(h: u64) -> String {
    let b = h.to_be_bytes();
    format!(
        "02:{:02X}:{:02X}:{:02X}:{:02X}:{:02X}",
        b[3], b[4], b[5], b[6], b[7]
    )
}

fn device_identity(device: u64) -> DeviceIdentity {
    DeviceIdentity::from_oui_pc_sn(
        "0A1B2C",
        "HGW-4000",
        &format!("BF{device:08}"),
        IdentitySource::Query,
    )
}

/// Report `i`: device `i % D` in round `i / D`.
fn report_time_ms(i: usize, devices: usize) -> (u64, u64, i64) {
    let device = (i % devices) as u64;
    let round = (i / devices) as u64;
    // Devices are spread over the interval, each keeps its own phase.
    let phase = (device as i64 * 1_500) % INTERVAL_MS;
    (device, round, T0_MS + round as i64 * INTERVAL_MS + phase)
}

/// One row of the ceiling table, as `samples` would hold it.
struct Row {
    time: SystemTime,
    device: i32,
    param: i32,
    num: Option<IntNumeric>,
    text: Option<String>,
}

/// An integer sent as PostgreSQL `numeric` in binary form (every number the
/// generator makes is an integer).
#[derive(Debug, Clone, Copy)]
struct IntNumeric(i128);

impl ToSql for IntNumeric {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        // numeric binary: ndigits, weight, sign, dscale, then base-10000 digits.
        let mut n = self.0.unsigned_abs();
        let mut digits = Vec::new();
        while n > 0 {
            digits.push((n % 10_000) as i16);
            n /= 10_000;
        }
        digits.reverse();
        out.put_i16(digits.len() as i16);
        out.put_i16(digits.len().saturating_sub(1) as i16);
        out.put_u16(if self.0 < 0 { 0x4000 } else { 0 });
        out.put_u16(0);
        for d in digits {
            out.put_i16(d);
        }
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
    to_sql_checked!();
}

/// `(value_num, value_text)` as central's store writes them (for the values
/// this generator makes: integers, and text that is an integer or not a number).
fn columns(v: &Value) -> anyhow::Result<(Option<IntNumeric>, Option<String>)> {
    Ok(match v {
        Value::Int(i) => (Some(IntNumeric(i128::from(*i))), None),
        Value::UInt(u) => (Some(IntNumeric(i128::from(*u))), None),
        Value::Text(s) => (
            s.trim().parse::<i128>().ok().map(IntNumeric),
            Some(s.clone()),
        ),
        other => bail!("generator made an unexpected value {other:?}"),
    })
}

/// Everything the phases share: encoded batches, ceiling rows, sizes.
struct Workload {
    bodies: Vec<Vec<u8>>,
    rows: Vec<Row>,
    reports: usize,
    params: usize,
    /// Rows whose value_num / value_text is not NULL.
    num_count: usize,
    text_count: usize,
    json_bytes: usize,
}

impl Workload {
    fn build(a: &Args) -> anyhow::Result<Workload> {
        let tpl = template(a.params);
        let mut bodies = Vec::new();
        let mut rows = Vec::with_capacity(a.reports * tpl.len());
        let mut json_bytes = 0;
        let mut start = 0;
        while start < a.reports {
            let end = (start + a.batch_size).min(a.reports);
            let mut entries = Vec::with_capacity(end - start);
            for i in start..end {
                let (device, round, time_ms) = report_time_ms(i, a.devices);
                let params: Vec<Param> = tpl
                    .iter()
                    .enumerate()
                    .map(|(p, (path, kind))| Param {
                        path: path.clone(),
                        value: value(*kind, device, p as u64, round),
                    })
                    .collect();
                // The report as a CPE would send it: JSON NameValuePair.
                let mut obj = serde_json::Map::new();
                obj.insert("CollectionTime".into(), (time_ms / 1000).into());
                for p in &params {
                    obj.insert(p.path.clone(), serde_json::Value::from(&p.value));
                }
                let body = serde_json::json!({ "Report": [obj] });
                json_bytes += serde_json::to_vec(&body)?.len();
                let time = UNIX_EPOCH + Duration::from_millis(time_ms as u64);
                for (p, param) in params.iter().enumerate() {
                    let (num, text) = columns(&param.value)?;
                    rows.push(Row {
                        time,
                        device: device as i32 + 1,
                        param: p as i32 + 1,
                        num,
                        text,
                    });
                }
                entries.push(Entry {
                    device: device_identity(device),
                    received_at_ms: time_ms + 1_500,
                    report: Report {
                        time_ms,
                        time_source: TimeSource::Report,
                        params,
                    },
                });
            }
            let batch = Batch {
                edge_id: EDGE.into(),
                batch_seq: bodies.len() as u64 + 1,
                entries,
            };
            bodies.push(wire::encode(&batch)?);
            start = end;
        }
        Ok(Workload {
            num_count: rows.iter().filter(|r| r.num.is_some()).count(),
            text_count: rows.iter().filter(|r| r.text.is_some()).count(),
            params: rows.len(),
            rows,
            bodies,
            reports: a.reports,
            json_bytes,
        })
    }

    fn params_per_batch(&self) -> f64 {
        self.params as f64 / self.bodies.len() as f64
    }
}

// ------------------------------------------------ databases and processes

/// A fresh database and the Redis keys named after it; dropped at the end.
struct Db {
    name: String,
    url: String,
}

impl Db {
    fn create() -> anyhow::Result<Db> {
        let name = format!(
            "bf_bench_{}_{}",
            std::process::id(),
            DB_COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let mut admin =
            Client::connect(ADMIN_URL, NoTls).context("connecting to PostgreSQL as postgres")?;
        admin.batch_execute(&format!("CREATE DATABASE {name}"))?;
        Ok(Db {
            url: format!("host=127.0.0.1 user=postgres dbname={name}"),
            name,
        })
    }

    fn client(&self) -> anyhow::Result<Client> {
        Client::connect(&self.url, NoTls).with_context(|| format!("connecting to {}", self.name))
    }

    fn stream(&self) -> String {
        format!("{}:batches", self.name)
    }

    fn keys(&self) -> Vec<String> {
        vec![
            self.stream(),
            format!("{}:attempts", self.stream()),
            format!("{}:dead", self.name),
        ]
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Ok(mut admin) = Client::connect(ADMIN_URL, NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
        if let Ok(mut r) = redis::Client::open(REDIS_URL).and_then(|c| c.get_connection()) {
            let _: Result<(), _> = redis::cmd("DEL").arg(self.keys()).query(&mut r);
        }
    }
}

/// A running bulkflow-central, killed on drop.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Setup {
    bin: PathBuf,
    dir: tempfile::TempDir,
    read_count: Option<usize>,
}

impl Setup {
    fn new(read_count: Option<usize>) -> anyhow::Result<Setup> {
        // target/release/examples/pipeline_bench -> target/release/bulkflow-central
        let exe = std::env::current_exe().context("locating this program")?;
        let bin = exe
            .parent()
            .and_then(Path::parent)
            .map(|d| d.join("bulkflow-central"))
            .context("no parent directory for this program")?;
        if !bin.is_file() {
            bail!(
                "{} not found: run `cargo build --release -p bulkflow-central` first",
                bin.display()
            );
        }
        Ok(Setup {
            bin,
            dir: tempfile::tempdir()?,
            read_count,
        })
    }

    /// Writes a config for `db` and migrates the database with the real binary.
    fn config(&self, db: &Db) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join(format!("{}.toml", db.name));
        let read_count = self
            .read_count
            .map(|n| format!("read_count = {n}\n"))
            .unwrap_or_default();
        let text = format!(
            r#"listen = "127.0.0.1:0"

[[edges]]
id = "{EDGE}"
token = "{TOKEN}"

[redis]
url = "{REDIS_URL}"
stream = "{stream}"
group = "store"
dead_letter_stream = "{name}:dead"

[postgres]
url = "{url}"

[store]
{read_count}"#,
            stream = db.stream(),
            name = db.name,
            url = db.url,
        );
        std::fs::write(&path, text)?;
        let out = Command::new(&self.bin)
            .arg("--config")
            .arg(&path)
            .arg("migrate")
            .output()
            .context("running migrate")?;
        if !out.status.success() {
            bail!("migrate failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(path)
    }

    /// Starts `role`; for serve and run, waits for the address it listens on.
    fn start(&self, config: &Path, role: &str) -> anyhow::Result<(Proc, Option<SocketAddr>)> {
        let n = DB_COUNTER.fetch_add(1, Ordering::SeqCst);
        let log = self.dir.path().join(format!("{role}-{n}.log"));
        let mut child = Command::new(&self.bin)
            .arg("--config")
            .arg(config)
            .arg(role)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let stdout = child.stdout.take();
        let mut proc = Proc { child, log };
        if role == "store" {
            return Ok((proc, None));
        }
        let mut line = String::new();
        if let Some(s) = stdout {
            BufReader::new(s).read_line(&mut line)?;
        }
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            proc.stop();
            bail!(
                "{role} did not start (first line {line:?}): {}",
                std::fs::read_to_string(&proc.log).unwrap_or_default()
            );
        };
        let addr = addr.parse().context("parsing the listen address")?;
        Ok((proc, Some(addr)))
    }
}

// ------------------------------------------------------------------- HTTP

/// One HTTP/1.1 request over a fresh connection: (status, body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.set_nodelay(true)?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("HTTP answer without a header end")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("HTTP answer without a status")?;
    Ok((status, raw[split + 4..].to_vec()))
}

/// Posts batch `seq` (1-based), retrying on 503.
fn post(addr: SocketAddr, seq: u64, body: &[u8]) -> anyhow::Result<()> {
    let auth = format!("Bearer {TOKEN}");
    let seq_text = seq.to_string();
    for _ in 0..50 {
        let (status, answer) = http(
            addr,
            "POST",
            "/v1/batches",
            &[
                ("Authorization", &auth),
                ("Content-Type", wire::CONTENT_TYPE),
                (wire::PENDING_FROM_HEADER, &seq_text),
            ],
            body,
        )?;
        match status {
            200 => return Ok(()),
            503 => std::thread::sleep(Duration::from_millis(200)),
            _ => bail!(
                "POST batch {seq}: {status} {}",
                String::from_utf8_lossy(&answer)
            ),
        }
    }
    bail!("POST batch {seq}: still 503 after 50 tries")
}

/// Posts every batch with `clients` concurrent connections.
fn post_all(addr: SocketAddr, bodies: &[Vec<u8>], clients: usize) -> anyhow::Result<()> {
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..clients {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= bodies.len() {
                        break;
                    }
                    if let Err(e) = post(addr, i as u64 + 1, &bodies[i]) {
                        if let Ok(mut f) = failure.lock() {
                            f.get_or_insert(e);
                        }
                        // Stop the other clients too.
                        next.store(bodies.len(), Ordering::Relaxed);
                        break;
                    }
                }
            });
        }
    });
    match failure.into_inner() {
        Ok(Some(e)) => Err(e),
        Ok(None) => Ok(()),
        Err(_) => bail!("a client thread panicked"),
    }
}

/// Committed batch numbers from `from` on, per central's `/v1/acks`.
fn acks(addr: SocketAddr, from: u64) -> anyhow::Result<Vec<u64>> {
    let (status, body) = http(
        addr,
        "GET",
        &format!("/v1/acks?from={from}"),
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        b"",
    )?;
    if status != 200 {
        bail!("GET /v1/acks: {status} {}", String::from_utf8_lossy(&body));
    }
    Ok(serde_json::from_slice::<wire::Ack>(&body)?.committed)
}

// ------------------------------------------------------------------ phases

struct Ceiling {
    plain: f64,
    unique: f64,
    /// With the unique index, each read-sized chunk sent in key order (as the
    /// store worker sends it).
    unique_sorted: f64,
}

/// One plain binary COPY of the workload's rows into a fresh table, without
/// and with the unique index of `samples`, and with it again in the order
/// the store worker sends rows (sorted by key within each chunk of
/// `chunk_rows`, one read's worth); rows/s of each.
fn ceiling(w: &Workload, chunk_rows: usize) -> anyhow::Result<Ceiling> {
    let db = Db::create()?;
    let mut c = db.client()?;
    let as_received: Vec<&Row> = w.rows.iter().collect();
    let mut in_key_order = as_received.clone();
    for chunk in in_key_order.chunks_mut(chunk_rows.max(1)) {
        chunk.sort_unstable_by_key(|r| (r.device, r.param, r.time));
    }
    let mut load = |table: &str, unique: bool, rows: &[&Row]| -> anyhow::Result<f64> {
        c.batch_execute(&format!(
            "CREATE TABLE {table} (time timestamptz NOT NULL, device_id int4 NOT NULL,
                 parameter_id int4 NOT NULL, value_num numeric, value_text text{})",
            if unique {
                ", UNIQUE (device_id, parameter_id, time)"
            } else {
                ""
            }
        ))?;
        c.batch_execute("CHECKPOINT")?;
        let started = Instant::now();
        let sink = c.copy_in(&format!(
            "COPY {table} (time, device_id, parameter_id, value_num, value_text) FROM STDIN BINARY"
        ))?;
        let mut writer = BinaryCopyInWriter::new(
            sink,
            &[
                Type::TIMESTAMPTZ,
                Type::INT4,
                Type::INT4,
                Type::NUMERIC,
                Type::TEXT,
            ],
        );
        for r in rows {
            writer.write(&[&r.time, &r.device, &r.param, &r.num, &r.text])?;
        }
        let n = writer.finish()?;
        let secs = started.elapsed().as_secs_f64();
        if n as usize != w.params {
            bail!("ceiling COPY loaded {n} rows, expected {}", w.params);
        }
        Ok(w.params as f64 / secs)
    };
    let plain = load("ceiling_plain", false, &as_received)?;
    let unique = load("ceiling_unique", true, &as_received)?;
    let unique_sorted = load("ceiling_unique_sorted", true, &in_key_order)?;
    Ok(Ceiling {
        plain,
        unique,
        unique_sorted,
    })
}

/// The ceiling on exactly what a run committed: every row of `samples` and
/// the typed tables, read back with `COPY .. TO` (binary, physical order,
/// which is commit order) and loaded again with one plain binary COPY per
/// table, in one transaction, into empty tables made `LIKE` the originals
/// (same columns, indexes and constraints). Returns `samples` rows per second
/// of that load, to compare with the run's parameters/s.
fn same_rows_ceiling(pg: &mut Client) -> anyhow::Result<f64> {
    // The time-series tables, as the migrations made them: every base table
    // with a `time` column (the views have one too, but are not tables).
    let tables: Vec<String> = pg
        .query(
            "SELECT c.table_name::text FROM information_schema.columns c
             JOIN information_schema.tables t USING (table_schema, table_name)
             WHERE c.table_schema = current_schema() AND c.column_name = 'time'
               AND t.table_type = 'BASE TABLE'
             ORDER BY 1",
            &[],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !tables.iter().any(|t| t == "samples") {
        bail!("no `samples` table among the time-series tables {tables:?}");
    }
    let mut dumps = Vec::new();
    for table in &tables {
        let mut bytes = Vec::new();
        pg.copy_out(&format!("COPY {table} TO STDOUT (FORMAT binary)"))?
            .read_to_end(&mut bytes)?;
        pg.batch_execute(&format!(
            "CREATE TABLE ceiling_{table} (LIKE {table} INCLUDING ALL)"
        ))?;
        dumps.push((table, bytes));
    }
    // Start where the run started: nothing of the run left dirty in shared
    // buffers for the load to write back, no checkpoint due.
    pg.batch_execute(&format!("TRUNCATE {}; CHECKPOINT", tables.join(", ")))?;
    let started = Instant::now();
    let mut tx = pg.transaction()?;
    let mut samples = 0;
    for (table, bytes) in &dumps {
        let mut sink = tx.copy_in(&format!("COPY ceiling_{table} FROM STDIN (FORMAT binary)"))?;
        sink.write_all(bytes)?;
        let n = sink.finish()?;
        if *table == "samples" {
            samples = n;
        }
    }
    tx.commit()?;
    Ok(samples as f64 / started.elapsed().as_secs_f64())
}

struct EndToEnd {
    /// Parameters/s from the first POST to the last commit seen.
    params_per_s: f64,
    /// Parameters/s from the first POST to the last POST answered.
    posted_per_s: f64,
    secs: f64,
    /// `same_rows_ceiling` of the run's database (1-worker runs only).
    same_rows_ceiling: Option<f64>,
}

/// Posts the whole workload to a fresh `run` (plus `workers - 1` extra store
/// processes) and waits for every batch to be committed.
fn end_to_end(
    setup: &Setup,
    w: &Workload,
    clients: usize,
    workers: usize,
) -> anyhow::Result<EndToEnd> {
    let db = Db::create()?;
    let config = setup.config(&db)?;
    let (mut main, addr) = setup.start(&config, "run")?;
    let addr = addr.context("run has no address")?;
    let mut extra = Vec::new();
    for _ in 1..workers {
        extra.push(setup.start(&config, "store")?.0);
    }
    let mut pg = db.client()?;
    // As the ceilings: no checkpoint due from what ran before.
    pg.batch_execute("CHECKPOINT")?;
    // Let the workers create the consumer group and settle.
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    post_all(addr, &w.bodies, clients)?;
    let posted = started.elapsed();
    let total = w.bodies.len() as i64;
    loop {
        let n: i64 = pg
            .query_one("SELECT count(*) FROM ingested_batches", &[])?
            .get(0);
        if n >= total {
            break;
        }
        if started.elapsed() > COMMIT_TIMEOUT {
            bail!(
                "only {n} of {total} batches committed after {COMMIT_TIMEOUT:?}; log: {}",
                std::fs::read_to_string(&main.log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = started.elapsed().as_secs_f64();
    // Everything landed, once.
    let row = pg.query_one(
        "SELECT count(*), count(value_num), count(value_text) FROM samples",
        &[],
    )?;
    let (rows, nums, texts): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    if (rows as usize, nums as usize, texts as usize) != (w.params, w.num_count, w.text_count) {
        bail!(
            "samples holds {rows} rows ({nums} numeric, {texts} text), expected {} ({}, {})",
            w.params,
            w.num_count,
            w.text_count
        );
    }
    for p in &mut extra {
        p.stop();
    }
    main.stop();
    // Measured once per run, after the 1-worker pass: the 2-worker pass
    // commits the same rows.
    let same_rows_ceiling = if workers == 1 {
        Some(same_rows_ceiling(&mut pg)?)
    } else {
        None
    };
    Ok(EndToEnd {
        params_per_s: w.params as f64 / secs,
        posted_per_s: w.params as f64 / posted.as_secs_f64(),
        secs,
        same_rows_ceiling,
    })
}

struct Latency {
    rate_params: f64,
    batches: usize,
    ack_ms: Vec<f64>,
    committed_at_ms: Vec<f64>,
}

/// Posts batches at a fixed rate to a fresh `run` and measures, per batch,
/// send -> commit seen by polling /v1/acks every 20 ms, and send ->
/// `ingested_batches.committed_at`.
fn latency(setup: &Setup, w: &Workload, rate_params: f64, secs: u64) -> anyhow::Result<Latency> {
    let db = Db::create()?;
    let config = setup.config(&db)?;
    let (_main, addr) = setup.start(&config, "run")?;
    let addr = addr.context("run has no address")?;
    std::thread::sleep(Duration::from_millis(300));
    let per_batch = w.params_per_batch();
    let interval = Duration::from_secs_f64(per_batch / rate_params);
    let count = ((secs as f64 / interval.as_secs_f64()).ceil() as usize).clamp(1, w.bodies.len());
    let sent: Mutex<Vec<Option<(Instant, SystemTime)>>> = Mutex::new(vec![None; count]);
    let seen: Mutex<HashMap<u64, Instant>> = Mutex::new(HashMap::new());
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let record_failure = |e: anyhow::Error| {
        if let Ok(mut f) = failure.lock() {
            f.get_or_insert(e);
        }
    };
    let start = Instant::now();
    std::thread::scope(|s| {
        // The poller: committed batches, as an edge would learn of them.
        s.spawn(|| {
            let mut from = 1u64;
            let deadline = start + Duration::from_secs(secs) + COMMIT_TIMEOUT;
            while from <= count as u64 && Instant::now() < deadline {
                if failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                    return;
                }
                match acks(addr, from) {
                    Ok(committed) => {
                        let now = Instant::now();
                        if let Ok(mut seen) = seen.lock() {
                            for seq in committed {
                                seen.entry(seq).or_insert(now);
                            }
                            while seen.contains_key(&from) {
                                from += 1;
                            }
                        }
                    }
                    Err(e) => return record_failure(e),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        // The sender: batch i leaves at start + i * interval, each on its own thread.
        for i in 0..count {
            let due = start + interval * i as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let body = &w.bodies[i];
            let sent = &sent;
            let record_failure = &record_failure;
            s.spawn(move || {
                let t = (Instant::now(), SystemTime::now());
                if let Ok(mut v) = sent.lock() {
                    v[i] = Some(t);
                }
                if let Err(e) = post(addr, i as u64 + 1, body) {
                    record_failure(e);
                }
            });
        }
    });
    if let Ok(Some(e)) = failure.into_inner() {
        return Err(e);
    }
    let sent = sent.into_inner().map_err(|_| anyhow!("lock poisoned"))?;
    let seen = seen.into_inner().map_err(|_| anyhow!("lock poisoned"))?;
    let mut pg = db.client()?;
    let committed_at: HashMap<u64, f64> = pg
        .query(
            "SELECT batch_seq, extract(epoch FROM committed_at)::float8 FROM ingested_batches",
            &[],
        )?
        .iter()
        .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, f64>(1)))
        .collect();
    let mut ack_ms = Vec::new();
    let mut committed_at_ms = Vec::new();
    for (i, t) in sent.iter().enumerate() {
        let seq = i as u64 + 1;
        let (sent_at, sent_wall) = t.context("a batch was never sent")?;
        let acked = seen
            .get(&seq)
            .with_context(|| format!("batch {seq} never acknowledged"))?;
        ack_ms.push(acked.duration_since(sent_at).as_secs_f64() * 1000.0);
        let wall = sent_wall.duration_since(UNIX_EPOCH)?.as_secs_f64();
        let c = committed_at
            .get(&seq)
            .with_context(|| format!("batch {seq} not in ingested_batches"))?;
        committed_at_ms.push((c - wall) * 1000.0);
    }
    Ok(Latency {
        rate_params,
        batches: count,
        ack_ms,
        committed_at_ms,
    })
}

struct RedisMemory {
    used_per_report: f64,
    usage_per_report: f64,
    batches: usize,
}

fn used_memory(r: &mut redis::Connection) -> anyhow::Result<i64> {
    let info: String = redis::cmd("INFO").arg("memory").query(r)?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .context("INFO memory has no used_memory")
}

/// Queues every batch with only `serve` running; Redis memory per report.
fn redis_memory(setup: &Setup, w: &Workload, clients: usize) -> anyhow::Result<RedisMemory> {
    let db = Db::create()?;
    let config = setup.config(&db)?;
    let mut r = redis::Client::open(REDIS_URL)?.get_connection()?;
    let (mut serve, addr) = setup.start(&config, "serve")?;
    let addr = addr.context("serve has no address")?;
    let before = used_memory(&mut r)?;
    post_all(addr, &w.bodies, clients)?;
    let after = used_memory(&mut r)?;
    let usage: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(db.stream())
        .arg("SAMPLES")
        .arg(0)
        .query(&mut r)?;
    let len: usize = redis::cmd("XLEN").arg(db.stream()).query(&mut r)?;
    if len != w.bodies.len() {
        bail!("stream holds {len} entries, expected {}", w.bodies.len());
    }
    serve.stop();
    Ok(RedisMemory {
        used_per_report: (after - before) as f64 / w.reports as f64,
        usage_per_report: usage as f64 / w.reports as f64,
        batches: len,
    })
}

// ------------------------------------------------------------------ report

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile.
fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

fn thousands(x: f64) -> String {
    let n = x.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn runs_list(v: &[f64]) -> String {
    v.iter()
        .map(|x| thousands(*x))
        .collect::<Vec<_>>()
        .join(" / ")
}

struct Machine {
    cpus: usize,
    cpu_model: String,
    memory_gib: f64,
    postgres: String,
    postgres_settings: String,
    redis: String,
    load: String,
}

fn machine() -> anyhow::Result<Machine> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let mut admin = Client::connect(ADMIN_URL, NoTls)?;
    let postgres: String = admin.query_one("SHOW server_version", &[])?.get(0);
    let mut settings = Vec::new();
    for s in ["shared_buffers", "synchronous_commit", "fsync"] {
        let v: String = admin.query_one(&format!("SHOW {s}"), &[])?.get(0);
        settings.push(format!("{s}={v}"));
    }
    let mut r = redis::Client::open(REDIS_URL)?.get_connection()?;
    let info: String = redis::cmd("INFO").arg("server").query(&mut r)?;
    let redis_version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("unknown")
        .trim()
        .to_string();
    let aof: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .query(&mut r)
        .unwrap_or_default();
    Ok(Machine {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model,
        memory_gib,
        postgres,
        postgres_settings: settings.join(", "),
        redis: format!(
            "{redis_version} (appendonly={})",
            aof.get(1).map_or("?", String::as_str)
        ),
        load: std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split(' ')
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    })
}

/// Replaces (or appends) the `## Central` section of `path`, re-reading the
/// file right before writing so other sections written meanwhile are kept.
fn write_section(path: &Path, section: &str) -> anyhow::Result<()> {
    let current = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "# bulkflow benchmarks\n".into(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let lines: Vec<&str> = current.lines().collect();
    let start = lines.iter().position(|l| l.trim_end() == "## Central");
    let mut out: Vec<&str> = Vec::new();
    match start {
        Some(s) => {
            let end = lines[s + 1..]
                .iter()
                .position(|l| l.starts_with("## "))
                .map_or(lines.len(), |e| s + 1 + e);
            out.extend(&lines[..s]);
            out.extend(section.lines());
            if end < lines.len() {
                out.push("");
                out.extend(&lines[end..]);
            }
        }
        None => {
            out.extend(&lines);
            while out.last().is_some_and(|l| l.trim().is_empty()) {
                out.pop();
            }
            out.push("");
            out.extend(section.lines());
        }
    }
    let mut text = out.join("\n");
    text.push('\n');
    let tmp = path.with_extension("md.tmp-central");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    let setup = Setup::new(args.read_count)?;
    let m = machine()?;
    eprintln!(
        "machine: {} x {}, PostgreSQL {}, Redis {}, load {}",
        m.cpus, m.cpu_model, m.postgres, m.redis, m.load
    );

    let t = Instant::now();
    let w = Workload::build(&args)?;
    let encoded: usize = w.bodies.iter().map(Vec::len).sum();
    eprintln!(
        "workload: {} reports x {} params = {} rows in {} batches, built in {:.1} s",
        w.reports,
        args.params,
        w.params,
        w.bodies.len(),
        t.elapsed().as_secs_f64()
    );

    let mut ceil_plain = Vec::new();
    let mut ceil_unique = Vec::new();
    let mut ceil_sorted = Vec::new();
    // One store read's worth of rows: what the worker sorts and copies at once.
    let read_rows = args.read_count.unwrap_or(DEFAULT_READ_COUNT) * args.batch_size * args.params;
    let mut same_rows = Vec::new();
    let mut e2e1 = Vec::new();
    let mut e2e2 = Vec::new();
    let mut posted = Vec::new();
    for run in 1..=args.runs {
        let c = ceiling(&w, read_rows)?;
        eprintln!(
            "run {run}: ceiling {} rows/s (with unique index {}, in key order per read {})",
            thousands(c.plain),
            thousands(c.unique),
            thousands(c.unique_sorted)
        );
        ceil_plain.push(c.plain);
        ceil_unique.push(c.unique);
        ceil_sorted.push(c.unique_sorted);
        let one = end_to_end(&setup, &w, args.clients, 1)?;
        eprintln!(
            "run {run}: end to end, 1 worker: {} params/s ({:.1} s; POSTs answered at {} params/s)",
            thousands(one.params_per_s),
            one.secs,
            thousands(one.posted_per_s)
        );
        eprintln!(
            "run {run}: its committed rows copied again: {} samples rows/s",
            thousands(one.same_rows_ceiling.unwrap_or(f64::NAN))
        );
        e2e1.push(one.params_per_s);
        same_rows.extend(one.same_rows_ceiling);
        posted.push(one.posted_per_s);
        let two = end_to_end(&setup, &w, args.clients, 2)?;
        eprintln!(
            "run {run}: end to end, 2 workers: {} params/s ({:.1} s)",
            thousands(two.params_per_s),
            two.secs
        );
        e2e2.push(two.params_per_s);
    }
    let ceiling_med = median(&ceil_plain);
    let e2e1_med = median(&e2e1);
    let e2e2_med = median(&e2e2);

    let lat = latency(&setup, &w, e2e1_med / 2.0, args.latency_secs)?;
    eprintln!(
        "latency at {} params/s over {} batches: ack p50 {:.0} ms p99 {:.0} ms",
        thousands(lat.rate_params),
        lat.batches,
        percentile(&lat.ack_ms, 50.0),
        percentile(&lat.ack_ms, 99.0)
    );
    let mem = redis_memory(&setup, &w, args.clients)?;

    let batch_per_report = encoded as f64 / w.reports as f64;
    let json_per_report = w.json_bytes as f64 / w.reports as f64;
    let unique_med = median(&ceil_unique);
    let same_rows_med = median(&same_rows);
    let sorted_med = median(&ceil_sorted);
    let ratio = |x: f64| {
        format!(
            "{:.0}% of the same-rows COPY; {:.0}% of the samples-only COPY in key order",
            100.0 * x / same_rows_med,
            100.0 * x / sorted_med,
        )
    };
    let table = [
        "| measurement | median | runs |".to_string(),
        "|---|---|---|".to_string(),
        format!(
            "| ceiling: the rows a 1-worker run committed (`samples` + typed tables), one plain binary COPY per table into empty tables with the same indexes, in commit order (`samples` rows/s) | {} | {} |",
            thousands(same_rows_med),
            runs_list(&same_rows)
        ),
        format!(
            "| `samples` rows only, one plain binary COPY, no index (rows/s) | {} | {} |",
            thousands(ceiling_med),
            runs_list(&ceil_plain)
        ),
        format!(
            "| same COPY into a table with `samples`' unique index (rows/s) | {} | {} |",
            thousands(unique_med),
            runs_list(&ceil_unique)
        ),
        format!(
            "| same COPY with the unique index, rows in key order per read as the worker sends them (rows/s) | {} | {} |",
            thousands(sorted_med),
            runs_list(&ceil_sorted)
        ),
        format!(
            "| end to end, `run` (1 store worker) (params/s) | {} ({}) | {} |",
            thousands(e2e1_med),
            ratio(e2e1_med),
            runs_list(&e2e1)
        ),
        format!(
            "| end to end, `run` + 1 `store` (2 workers) (params/s) | {} ({}) | {} |",
            thousands(e2e2_med),
            ratio(e2e2_med),
            runs_list(&e2e2)
        ),
        format!(
            "| ingest only: POSTs answered (queued in Redis), 1-worker runs (params/s) | {} | {} |",
            thousands(median(&posted)),
            runs_list(&posted)
        ),
        format!(
            "| latency at {} params/s ({:.1} batches/s, {} batches): send -> ack seen, p50 / p99 | {:.0} / {:.0} ms | max {:.0} ms |",
            thousands(lat.rate_params),
            lat.rate_params / w.params_per_batch(),
            lat.batches,
            percentile(&lat.ack_ms, 50.0),
            percentile(&lat.ack_ms, 99.0),
            percentile(&lat.ack_ms, 100.0)
        ),
        format!(
            "| same batches: send -> `committed_at` (transaction start), p50 / p99 | {:.0} / {:.0} ms | |",
            percentile(&lat.committed_at_ms, 50.0),
            percentile(&lat.committed_at_ms, 99.0)
        ),
        format!(
            "| Redis memory per queued report: `used_memory` delta / `MEMORY USAGE` of the stream | {:.0} / {:.0} bytes | {} batches queued |",
            mem.used_per_report, mem.usage_per_report, mem.batches
        ),
        format!(
            "| encoded batch bytes per report vs JSON NameValuePair body | {:.0} vs {} bytes ({:.1}x smaller) | |",
            batch_per_report,
            thousands(json_per_report),
            json_per_report / batch_per_report
        ),
    ]
    .join("\n");
    println!("{table}");

    let command = format!(
        "cargo build --release -p bulkflow-central && \\\n  cargo run --release -p bulkflow-central --example pipeline_bench -- {}",
        args.command_line()
    );
    let section = format!(
        "## Central

`central/examples/pipeline_bench.rs`: {reports} synthetic TR-181 reports x {params} parameters \
({rows} rows; {devices} devices reporting every 300 s of simulated time; JSON numbers for counters, \
text and numeric strings elsewhere) in {batches} batches of {batch} reports, through the real \
`bulkflow-central` binary, local Redis and PostgreSQL. Throughput: median of {runs} runs, each on a \
fresh database; the runs column lists every run.

Machine: {cpus} x {cpu}, {mem:.0} GiB RAM; PostgreSQL {pg} ({pgs}); Redis {redis}. \
Load average when started: {load} (a shared machine: other builds may run alongside, \
and client, central, Redis and PostgreSQL all share the {cpus} CPUs).

```sh
{command}
```

(`--write FILE` replaces this `## Central` section of FILE with the new results; leave it out to print the
table only.)

{table}

- Ceiling (first row): after each 1-worker run, every row it committed to `samples` and the five typed \
tables is read back with `COPY .. TO STDOUT (FORMAT binary)` (physical order, i.e. the order the worker \
committed them) and loaded again, timed, with one `COPY .. FROM STDIN (FORMAT binary)` per table in one \
transaction into empty tables made `LIKE .. INCLUDING ALL` (same columns, unique keys and BRIN indexes). \
This is the plain-COPY cost of exactly what the pipeline writes; expressed in `samples` rows per second \
so that it compares with parameters/s.
- The three `samples`-only rows: the workload's parameter rows, built in memory beforehand, through one \
`COPY .. FROM STDIN BINARY` (postgres crate `BinaryCopyInWriter`, numeric sent in binary) into a fresh \
table with `samples`' columns: without any index, with its unique index in report order (as received), \
and with it in key order within each read-sized chunk (as the worker sends them). No typed tables, no \
staging, no `ON CONFLICT`, no dictionaries. In all but the no-index row the unique index sets the \
pace.
- End to end: from the first POST ({clients} concurrent HTTP/1.1 clients, one connection per batch) \
until a 20 ms poll of `ingested_batches` sees every batch. It includes what the ceilings do not: \
zstd/postcard decoding (twice: ingest validates, the worker decodes), Redis, the `devices` and \
`parameters` dictionaries, the batch-id bookkeeping, pulling the typed rows out of each report, and \
one binary COPY per table (`samples` plus the device, interface, radio, neighbour and client tables, \
about 15 typed rows per report) inside a savepoint (the staging tables and `INSERT .. ON CONFLICT DO \
NOTHING` only for a read that holds an already-stored key, which this workload does not). \
Store settings: default `read_count` unless the command says otherwise.
- Latency: batches posted at half the 1-worker throughput; per batch, send time to the first \
`/v1/acks` poll (every 20 ms) that lists it: what an edge observes, give or take 20 ms. \
`committed_at` is `now()` of the storing transaction, i.e. its start, before the COPY and the \
commit, so the second line understates the latency by the transaction's duration.
- Redis: only `serve` running (nothing drains the stream); `used_memory` before/after is \
affected by anything else using the same Redis meanwhile, `MEMORY USAGE` is the stream key alone.
",
        reports = thousands(w.reports as f64),
        params = args.params,
        rows = thousands(w.params as f64),
        devices = args.devices,
        batches = w.bodies.len(),
        batch = args.batch_size,
        runs = args.runs,
        cpus = m.cpus,
        cpu = m.cpu_model,
        mem = m.memory_gib,
        pg = m.postgres,
        pgs = m.postgres_settings,
        redis = m.redis,
        load = m.load,
        clients = args.clients,
    );
    if let Some(path) = &args.write {
        write_section(path, &section)?;
        eprintln!("wrote the Central section of {}", path.display());
    }
    Ok(())
}
