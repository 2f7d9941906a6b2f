//! Edge benchmark: reports/s and parameters/s durably accepted, latency of
//! the 200, peak RSS and edge CPU per 1,000 reports, for 1 to 1,000 CPEs
//! posting at once, with `synchronous = full` and `normal`, 100- and
//! 2,000-parameter reports, JSON and CSV, gzip on and off; each figure the
//! median of several runs on a fresh edge. Then bytes on the wire per report
//! for the sample fixtures.
//!
//! ```sh
//! cargo build --release -p bulkflow-edge --bin bulkflow-edge --example bench
//! target/release/examples/bench target/release/bulkflow-edge [--runs 3] [--json FILE] [--quick] [--cpes N]
//! ```
//!
//! Every CPE is a thread with its own serial number that sends its reports
//! one after another, one connection per request (as CPEs do); all start
//! together. The edge runs with its defaults (256 connections served at once;
//! more CPEs wait in the accept queue). Forwarding is parked (central
//! unreachable, long batch age) so the numbers are the ingest path alone:
//! decode, compress, group commit in SQLite, answer. `--quick` runs one row per body kind (CI smoke test).

use bulkflow_shared::identity::{DeviceIdentity, IdentitySource};
use bulkflow_shared::report::{self, Limits, Request};
use bulkflow_shared::wire::{self, Batch, Entry};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

#[path = "../../shared/benches/support/reports.rs"]
mod reports;

/// One kind of request body.
#[derive(Clone, Copy)]
struct Kind {
    /// `json-nvp`, `json-oh`, `csv-per-row` or `csv-per-column`.
    format: &'static str,
    large: bool,
    gzip: bool,
}

impl Kind {
    fn label(&self) -> String {
        format!("{}{}", self.format, if self.gzip { " + gzip" } else { "" })
    }
    fn params(&self) -> usize {
        self.body(0).1
    }
    /// Report `n`'s body (values and time differ per report) and its
    /// parameter count.
    fn body(&self, n: u64) -> (Vec<u8>, usize) {
        let shape = if self.large {
            reports::Shape::LARGE
        } else {
            reports::Shape::SMALL
        };
        let params = reports::report_params(&shape, 0x5eed + n);
        let time = reports::COLLECTION_TIME + n as i64 * 60;
        let text = match self.format {
            "json-oh" => reports::encode_oh(&params, time),
            "csv-per-row" => reports::encode_per_row(&params, time),
            "csv-per-column" => reports::encode_per_column(&params, time),
            _ => reports::encode_nvp(&params, time),
        };
        let body = if self.gzip {
            reports::gzip(text.as_bytes())
        } else {
            text.into_bytes()
        };
        (body, params.len())
    }
    fn headers(&self) -> String {
        let (ct, rf) = match self.format {
            "json-oh" => ("application/json", "ObjectHierarchy"),
            "csv-per-row" => ("text/csv; header=present", "ParameterPerRow"),
            "csv-per-column" => ("text/csv; header=present", "ParameterPerColumn"),
            _ => ("application/json", "NameValuePair"),
        };
        let ce = if self.gzip {
            "Content-Encoding: gzip\r\n"
        } else {
            ""
        };
        format!("Content-Type: {ct}\r\nBBF-Report-Format: {rf}\r\n{ce}")
    }
}

/// POSTs one report; the status code, or the I/O error's text.
fn post(addr: SocketAddr, target: &str, headers: &str, body: &[u8]) -> Result<u16, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    s.write_all(body).map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line: {line:?}"))
}
fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU time of a process so far, in seconds (`/proc/PID/stat`
/// fields 14 and 15, in clock ticks of 1/100 s on Linux).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; fields after it are plain.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // rest starts at field 3 (state), so utime (14) is index 11, stime (15) 12.
    (fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0)) as f64 / 100.0
}

struct Edge {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(exe: &Path, sync: &str) -> Edge {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "edge_id = \"bench\"\nlisten = \"127.0.0.1:0\"\ncentral_url = \"http://127.0.0.1:9\"\n\
             [outbox]\npath = \"{}\"\nsynchronous = \"{sync}\"\n[forward]\nbatch_max_age_ms = 3600000\n",
            dir.path().join("outbox.db").display()
        ),
    )
    .unwrap();
    let addr_file = dir.path().join("addr");
    let child = Command::new(exe)
        .args(["run", "--config"])
        .arg(&config)
        .arg("--addr-file")
        .arg(&addr_file)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("start the edge");
    let addr = loop {
        if let Ok(t) = std::fs::read_to_string(&addr_file)
            && t.ends_with('\n')
        {
            break t.lines().next().unwrap().parse().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Edge {
        child,
        addr,
        _dir: dir,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One run's figures.
struct Run {
    reports: usize,
    failed: usize,
    reports_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    idle_rss_mib: f64,
    peak_rss_mib: f64,
    cpu_s_per_1000: f64,
}

/// One row of the table: a body kind, a durability setting and a number of
/// CPEs posting at once.
struct Scenario {
    kind: Kind,
    sync: &'static str,
    cpes: usize,
    /// Reports in all per run.
    total: usize,
}

fn load(exe: &Path, sc: &Scenario, bodies: &Arc<Vec<Vec<u8>>>) -> Run {
    let edge = start(exe, sc.sync);
    std::thread::sleep(Duration::from_millis(200));
    let idle_kb = status_kb(edge.child.id(), "VmRSS:");
    let per_cpe = (sc.total / sc.cpes).max(1);
    let addr = edge.addr;
    let headers = Arc::new(sc.kind.headers());
    let go = Arc::new(Barrier::new(sc.cpes + 1));
    let handles: Vec<_> = (0..sc.cpes)
        .map(|c| {
            let (bodies, headers, go) = (bodies.clone(), headers.clone(), go.clone());
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let target = format!("/bulkdata?oui=0A1B2C&pc=Bench&sn=SN{c:04}");
                    let mut lat = Vec::with_capacity(per_cpe);
                    let mut failed = Vec::new();
                    go.wait();
                    for k in 0..per_cpe {
                        let t = Instant::now();
                        let body = &bodies[(c + k) % bodies.len()];
                        match post(addr, &target, &headers, body) {
                            Ok(200) => lat.push(t.elapsed()),
                            Ok(code) => failed.push(format!("HTTP {code}")),
                            Err(e) => failed.push(e),
                        }
                    }
                    (lat, failed)
                })
                .expect("spawn a CPE thread")
        })
        .collect();
    go.wait();
    let cpu_before = cpu_secs(edge.child.id());
    let start_t = Instant::now();
    let mut lat = Vec::new();
    let mut failures: std::collections::BTreeMap<String, usize> = Default::default();
    for h in handles {
        let (l, f) = h.join().expect("CPE thread");
        lat.extend(l);
        for why in f {
            *failures.entry(why).or_default() += 1;
        }
    }
    let failed = failures.values().sum();
    for (why, n) in &failures {
        eprintln!("{} {} CPEs: {n} requests failed: {why}", sc.sync, sc.cpes);
    }
    let elapsed = start_t.elapsed().as_secs_f64();
    lat.sort();
    let peak_kb = status_kb(edge.child.id(), "VmHWM:");
    let cpu = cpu_secs(edge.child.id()) - cpu_before;
    Run {
        reports: lat.len(),
        failed,
        reports_per_s: lat.len() as f64 / elapsed,
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
        idle_rss_mib: idle_kb as f64 / 1024.0,
        peak_rss_mib: peak_kb as f64 / 1024.0,
        cpu_s_per_1000: cpu * 1000.0 / lat.len().max(1) as f64,
    }
}

fn scenarios(quick: bool, small_total: usize) -> Vec<Scenario> {
    let kind = |format, large, gzip| Kind {
        format,
        large,
        gzip,
    };
    let nvp = kind("json-nvp", false, false);
    // 2,000-parameter reports are ~20x the work: fewer of them per run.
    let large_total = (small_total / 8).max(64);
    let mut out = Vec::new();
    if quick {
        for k in [nvp, kind("csv-per-row", true, true)] {
            let total = if k.large { 64 } else { 256 };
            out.push(Scenario {
                kind: k,
                sync: "full",
                cpes: 4,
                total,
            });
        }
        return out;
    }
    for (sync, cpes) in [
        ("full", &[1, 4, 16, 64, 256, 1000][..]),
        ("normal", &[1, 4, 16, 64, 1000][..]),
    ] {
        for &cpes in cpes {
            out.push(Scenario {
                kind: nvp,
                sync,
                cpes,
                total: small_total,
            });
        }
    }
    let variants = [
        kind("json-nvp", false, true),
        kind("json-oh", false, false),
        kind("csv-per-row", false, false),
        kind("csv-per-column", false, false),
        kind("json-nvp", true, false),
        kind("json-nvp", true, true),
        kind("csv-per-row", true, false),
        kind("csv-per-row", true, true),
    ];
    for sync in ["full", "normal"] {
        for k in variants {
            out.push(Scenario {
                kind: k,
                sync,
                cpes: 16,
                total: if k.large { large_total } else { small_total },
            });
        }
    }
    out
}

fn wire_ratio() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/reports");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            n.strip_suffix(".expected.ndjson").map(str::to_string)
        })
        .collect();
    names.sort();
    println!(
        "\n| fixture | reports | body as sent (B) | body decoded (B) | one-report batch (B) | x100 batch per report (B) | ratio vs decoded body (x100) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let device = DeviceIdentity::from_oui_pc_sn("0A1B2C", "Device2", "SN1", IdentitySource::Query);
    for name in names {
        let http = std::fs::read_to_string(dir.join(format!("{name}.http"))).unwrap();
        let raw = std::fs::read(dir.join(format!("{name}.body"))).unwrap();
        let header = |h: &str| {
            http.lines().skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(h)
                    .then(|| v.trim().to_string())
            })
        };
        let (ct, rf, ce, date) = (
            header("content-type"),
            header("bbf-report-format"),
            header("content-encoding"),
            header("date"),
        );
        let req = Request {
            body: &raw,
            content_type: ct.as_deref(),
            report_format: rf.as_deref(),
            content_encoding: ce.as_deref(),
            date: date.as_deref(),
            received_at_ms: 1_767_225_600_000,
        };
        let decoded = report::decode(&req, &Limits::default()).unwrap();
        if decoded.reports.is_empty() {
            continue;
        }
        let plain =
            bulkflow_shared::report::compress::decompress(&raw, ce.as_deref(), &Limits::default())
                .map(|c| c.len())
                .unwrap_or(raw.len());
        let device = &device;
        let reports = &decoded.reports;
        let entries = |n: usize| -> Vec<Entry> {
            let mut out = Vec::new();
            for i in 0..n {
                for r in reports {
                    let mut r = r.clone();
                    r.time_ms += i as i64 * 300_000;
                    out.push(Entry {
                        device: device.clone(),
                        received_at_ms: r.time_ms,
                        report: r,
                    });
                }
            }
            out
        };
        let batch = |n: usize| {
            wire::encode(&Batch {
                edge_id: "lab-1".into(),
                batch_seq: 1,
                entries: entries(n),
            })
            .unwrap()
            .len()
        };
        let one = batch(1);
        let hundred = batch(100) as f64 / 100.0;
        println!(
            "| {name} | {} | {} | {plain} | {one} | {hundred:.0} | {:.1} |",
            decoded.reports.len(),
            raw.len(),
            plain as f64 / hundred
        );
    }
    // The benchmark's own 100-parameter reports, every value different.
    let nvp = Kind {
        format: "json-nvp",
        large: false,
        gzip: false,
    };
    let raw = nvp.body(1).0;
    let entries: Vec<Entry> = (0..100)
        .map(|i| {
            let b = nvp.body(i).0;
            let req = Request {
                body: &b,
                content_type: Some("application/json"),
                report_format: None,
                content_encoding: None,
                date: None,
                received_at_ms: 0,
            };
            let r = report::decode(&req, &Limits::default()).unwrap().reports[0].clone();
            Entry {
                device: device.clone(),
                received_at_ms: r.time_ms,
                report: r,
            }
        })
        .collect();
    let b = wire::encode(&Batch {
        edge_id: "lab-1".into(),
        batch_seq: 1,
        entries,
    })
    .unwrap()
    .len() as f64
        / 100.0;
    println!(
        "| bench 100-parameter NVP (distinct values) | 1 | {} | {} | - | {b:.0} | {:.1} |",
        raw.len(),
        raw.len(),
        raw.len() as f64 / b
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut exe = String::from("target/release/bulkflow-edge");
    let mut runs = 3usize;
    let mut json_out: Option<String> = None;
    let mut quick = false;
    let mut only_cpes: Option<usize> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).unwrap_or(3).max(1),
            "--json" => json_out = args.next(),
            "--quick" => quick = true,
            "--cpes" => only_cpes = args.next().and_then(|v| v.parse().ok()),
            other => exe = other.to_string(),
        }
    }
    let exe = Path::new(&exe);
    let total: usize = std::env::var("BENCH_REPORTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    println!(
        "| body | params | synchronous | CPEs at once | reports/run | reports/s, median (runs) | params/s, median | p50 / p99 ms (median) | idle RSS MiB | peak RSS MiB (max) | CPU s per 1,000 reports | failed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for sc in scenarios(quick, total)
        .into_iter()
        .filter(|sc| only_cpes.is_none_or(|n| sc.cpes == n))
    {
        // Distinct bodies (values and times differ), generated before timing.
        let bodies: Arc<Vec<Vec<u8>>> = Arc::new((0..64).map(|n| sc.kind.body(n).0).collect());
        let params = sc.kind.params();
        let results: Vec<Run> = (0..runs).map(|_| load(exe, &sc, &bodies)).collect();
        let med = |f: fn(&Run) -> f64| median(results.iter().map(f).collect());
        let rps = med(|r| r.reports_per_s);
        let list: Vec<String> = results
            .iter()
            .map(|r| format!("{:.0}", r.reports_per_s))
            .collect();
        let peak = results.iter().map(|r| r.peak_rss_mib).fold(0.0, f64::max);
        let failed: usize = results.iter().map(|r| r.failed).sum();
        println!(
            "| {} | {params} | {} | {} | {} | {rps:.0} ({}) | {:.0} | {:.2} / {:.2} | {:.1} | {peak:.1} | {:.2} | {failed} |",
            sc.kind.label(),
            sc.sync,
            sc.cpes,
            results[0].reports + results[0].failed,
            list.join(" / "),
            rps * params as f64,
            med(|r| r.p50_ms),
            med(|r| r.p99_ms),
            med(|r| r.idle_rss_mib),
            med(|r| r.cpu_s_per_1000),
        );
        rows.push(serde_json::json!({
            "body": sc.kind.format,
            "gzip": sc.kind.gzip,
            "params": params,
            "body_bytes": bodies[0].len(),
            "synchronous": sc.sync,
            "cpes": sc.cpes,
            "reports_per_run": results[0].reports + results[0].failed,
            "median": {
                "reports_per_s": rps.round(),
                "params_per_s": (rps * params as f64).round(),
                "p50_ms": med(|r| r.p50_ms),
                "p99_ms": med(|r| r.p99_ms),
                "idle_rss_mib": med(|r| r.idle_rss_mib),
                "cpu_s_per_1000_reports": med(|r| r.cpu_s_per_1000),
            },
            "peak_rss_mib": peak,
            "failed": failed,
            "runs": results.iter().map(|r| serde_json::json!({
                "reports_per_s": r.reports_per_s.round(),
                "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
                "idle_rss_mib": r.idle_rss_mib, "peak_rss_mib": r.peak_rss_mib,
                "cpu_s_per_1000_reports": r.cpu_s_per_1000,
            })).collect::<Vec<_>>(),
        }));
    }
    if let Some(path) = json_out {
        let doc = serde_json::json!({ "runs_per_row": runs, "rows": rows });
        if let Err(e) = std::fs::write(&path, format!("{doc:#}\n")) {
            eprintln!("cannot write {path}: {e}");
            std::process::exit(1);
        }
    }
    if quick {
        return;
    }
    wire_ratio();
    if let Ok(m) = std::fs::metadata(exe) {
        println!(
            "\nbinary {}: {} bytes ({:.2} MiB)",
            exe.display(),
            m.len(),
            m.len() as f64 / 1048576.0
        );
    }
}
