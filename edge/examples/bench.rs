//! Edge benchmark: durable reports/s and latency of the 200 at 1-64
//! concurrent clients with `synchronous = full` and `normal`, peak RSS idle
//! and under load, and bytes on the wire per report for the sample fixtures.
//!
//! ```sh
//! cargo build --release -p bulkflow-edge
//! cargo run --release -p bulkflow-edge --example bench -- target/release/bulkflow-edge
//! ```
//!
//! Each client sends 100-parameter JSON NameValuePair reports, one connection
//! per request (as CPEs do). Forwarding is parked (central unreachable, long
//! batch age) so the numbers are the ingest path alone: decode, compress,
//! group commit in SQLite, answer.

use bulkflow_shared::identity::{DeviceIdentity, IdentitySource};
use bulkflow_shared::report::{self, Limits, Request};
use bulkflow_shared::wire::{self, Batch, Entry};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn body(id: u64) -> Vec<u8> {
    let mut s = format!("{{\"Report\":[{{\"CollectionTime\":{}", 1_733_246_400 + id);
    for i in 0..99 {
        s.push_str(&format!(
            ",\"Device.IP.Interface.{}.Stats.Counter{}\":{}",
            i % 8,
            i,
            id * 7919 + i * 104_729
        ));
    }
    s.push_str("}]}");
    s.into_bytes()
}

fn post(addr: SocketAddr, target: &str, body: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).expect("connect");
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: edge\r\nConnection: close\r\nContent-Type: application/json\r\n\
         BBF-Report-Format: NameValuePair\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
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
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn load(exe: &Path, sync: &str, clients: usize, total: usize) {
    let edge = start(exe, sync);
    std::thread::sleep(Duration::from_millis(200));
    let idle_kb = status_kb(edge.child.id(), "VmHWM:");
    let bodies: Vec<Vec<u8>> = (0..64).map(body).collect();
    let per_client = total / clients;
    let addr = edge.addr;
    let cpu_before = cpu_secs(edge.child.id());
    let start_t = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let bodies = bodies.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(per_client);
                let target = format!("/bulkdata?oui=0A1B2C&pc=Bench&sn=SN{c:04}");
                for k in 0..per_client {
                    let t = Instant::now();
                    let status = post(addr, &target, &bodies[k % bodies.len()]);
                    assert_eq!(status, 200);
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let elapsed = start_t.elapsed().as_secs_f64();
    lat.sort();
    let peak_kb = status_kb(edge.child.id(), "VmHWM:");
    let cpu = cpu_secs(edge.child.id()) - cpu_before;
    println!(
        "| {sync} | {clients} | {} | {:.0} | {:.2} | {:.2} | {:.1} | {:.1} | {:.2} |",
        lat.len(),
        lat.len() as f64 / elapsed,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        idle_kb as f64 / 1024.0,
        peak_kb as f64 / 1024.0,
        cpu * 1000.0 / lat.len() as f64
    );
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
    let raw = body(1);
    let entries: Vec<Entry> = (0..100)
        .map(|i| {
            let b = body(i);
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
    let exe = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/release/bulkflow-edge".into());
    let exe = Path::new(&exe);
    let total: usize = std::env::var("BENCH_REPORTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    println!(
        "| synchronous | clients | reports | reports/s | p50 ms | p99 ms | RSS idle MiB | peak RSS MiB | edge CPU s per 1,000 reports |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for sync in ["full", "normal"] {
        for clients in [1, 4, 16, 64] {
            load(exe, sync, clients, total);
        }
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
