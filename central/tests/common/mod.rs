//! Test harness for central: a database and stream names of the test's own,
//! the real binary started as a child process, a tiny HTTP client, and sample
//! batches built from the repository's fixture requests.
#![allow(dead_code)]

use bulkflow_shared::identity::{self, IdentityConfig};
use bulkflow_shared::report::{self, Limits, Request};
use bulkflow_shared::wire::{self, Batch, Entry};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const EDGE: &str = "lab-1";
pub const TOKEN: &str = "lab-1-token-0123456789";
const ADMIN_URL: &str = "host=127.0.0.1 user=postgres dbname=postgres";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Everything one test owns: a fresh database, stream names, a temp dir.
pub struct Env {
    pub name: String,
    pub pg_url: String,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new(test: &str) -> Env {
        let name = format!(
            "bf_{}_{}_{}",
            test,
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let mut admin = postgres::Client::connect(ADMIN_URL, postgres::NoTls)
            .expect("PostgreSQL on 127.0.0.1:5432");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        Env {
            pg_url: format!("host=127.0.0.1 user=postgres dbname={name}"),
            name,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn stream(&self) -> String {
        format!("{}:batches", self.name)
    }

    pub fn dead_stream(&self) -> String {
        format!("{}:dead", self.name)
    }

    /// Writes a config file; `extra` is appended TOML (it may add sections
    /// not in the base, e.g. `[ingest]`).
    pub fn config_with(
        &self,
        pg_url: &str,
        redis_url: &str,
        store_extra: &str,
        extra: &str,
    ) -> PathBuf {
        let path = self.dir.path().join(format!(
            "central-{}.toml",
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let text = format!(
            r#"listen = "127.0.0.1:0"

[[edges]]
id = "{EDGE}"
token = "{TOKEN}"

[redis]
url = "{redis_url}"
stream = "{stream}"
group = "store"
dead_letter_stream = "{dead}"

[postgres]
url = "{pg_url}"

[store]
block_ms = 200
max_backoff_ms = 500
{store_extra}

{extra}
"#,
            stream = self.stream(),
            dead = self.dead_stream(),
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn config(&self) -> PathBuf {
        self.config_with(&self.pg_url, REDIS_URL, "", "")
    }

    pub fn migrate(&self, config: &Path) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_bulkflow-central"))
            .args(["--config"])
            .arg(config)
            .arg("migrate")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "migrate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn db(&self) -> postgres::Client {
        postgres::Client::connect(&self.pg_url, postgres::NoTls).unwrap()
    }

    /// A single value of a query.
    pub fn scalar<T: for<'a> postgres::types::FromSql<'a>>(&self, sql: &str) -> T {
        self.db().query_one(sql, &[]).unwrap().get(0)
    }

    pub fn redis(&self) -> redis::Connection {
        redis::Client::open(REDIS_URL)
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// Entries in `stream`.
    pub fn xlen(&self, stream: &str) -> i64 {
        redis::cmd("XLEN")
            .arg(stream)
            .query(&mut self.redis())
            .unwrap()
    }

    /// A worker takes every queued entry in the `store` group, then dies
    /// before writing anything: the entries stay pending under its name.
    pub fn take_as_dead_worker(&self, consumer: &str) {
        let mut r = self.redis();
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.stream())
            .arg("store")
            .arg("0")
            .query(&mut r)
            .unwrap();
        let taken: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("store")
            .arg(consumer)
            .arg("COUNT")
            .arg(1000)
            .arg("STREAMS")
            .arg(self.stream())
            .arg(">")
            .query(&mut r)
            .unwrap();
        assert!(!matches!(taken, redis::Value::Nil), "nothing was queued");
    }

    /// The dead-letter stream's entries.
    pub fn dead_letters(&self) -> redis::streams::StreamRangeReply {
        redis::cmd("XRANGE")
            .arg(self.dead_stream())
            .arg("-")
            .arg("+")
            .query(&mut self.redis())
            .unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(ADMIN_URL, postgres::NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
        if let Ok(mut r) = redis::Client::open(REDIS_URL).and_then(|c| c.get_connection()) {
            let _: Result<(), _> = redis::cmd("DEL")
                .arg(self.stream())
                .arg(self.dead_stream())
                .arg(format!("{}:attempts", self.stream()))
                .query(&mut r);
        }
    }
}

/// A running `bulkflow-central` process, killed on drop.
pub struct Central {
    pub child: Child,
    pub addr: Option<SocketAddr>,
}

impl Central {
    /// Starts `role` (serve, store or run); for serving roles waits for the port.
    pub fn start(config: &Path, role: &str) -> Central {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bulkflow-central"))
            .arg("--config")
            .arg(config)
            .arg(role)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut addr = None;
        if role != "store" {
            let stdout = child.stdout.take().unwrap();
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).unwrap();
            let a = line
                .trim()
                .strip_prefix("listening on ")
                .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
            addr = Some(a.parse().unwrap());
        }
        Central { child, addr }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("not a serving role")
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Central {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn ack(&self) -> wire::Ack {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not an Ack ({e}): {}", self.text()))
    }
}

/// One HTTP/1.1 request over a fresh connection.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no header end");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

pub fn post_batch(addr: SocketAddr, batch: &Batch, token: &str) -> HttpResponse {
    let body = wire::encode(batch).unwrap();
    http(
        addr,
        "POST",
        "/v1/batches",
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("Content-Type", wire::CONTENT_TYPE),
        ],
        &body,
    )
}

/// Polls `f` until it returns true; false after `limit`.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// Waits until central acknowledges `seq` of the test edge as committed.
pub fn wait_committed(addr: SocketAddr, seq: u64) -> bool {
    wait_until(Duration::from_secs(60), || {
        let r = http(
            addr,
            "GET",
            &format!("/v1/acks?from={seq}"),
            &[("Authorization", &format!("Bearer {TOKEN}"))],
            b"",
        );
        r.status == 200 && r.ack().committed.contains(&seq)
    })
}

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/reports")
}

/// The decodable fixture requests as edge entries (identity as an edge would
/// find it), received at 2026-01-01T00:00:00Z.
pub fn fixture_entries() -> Vec<Entry> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .into_string()
                .unwrap()
                .strip_suffix(".expected.ndjson")
                .map(String::from)
        })
        .collect();
    names.sort();
    let mut entries = Vec::new();
    for name in names {
        let http = std::fs::read_to_string(fixtures_dir().join(format!("{name}.http"))).unwrap();
        let body = std::fs::read(fixtures_dir().join(format!("{name}.body"))).unwrap();
        let header = |h: &str| {
            http.lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case(h))
                .map(|(_, v)| v.trim().to_string())
        };
        let query = http
            .lines()
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .split_once('?')
            .map(|(_, q)| q.to_string());
        let (ct, rf, ce, date) = (
            header("content-type"),
            header("bbf-report-format"),
            header("content-encoding"),
            header("date"),
        );
        let req = Request {
            body: &body,
            content_type: ct.as_deref(),
            report_format: rf.as_deref(),
            content_encoding: ce.as_deref(),
            date: date.as_deref(),
            received_at_ms: 1_767_225_600_000,
        };
        let decoded = report::decode(&req, &Limits::default()).unwrap();
        let Some(device) = identity::identify(
            query.as_deref(),
            None,
            &decoded.reports,
            &IdentityConfig::default(),
        ) else {
            continue;
        };
        for r in decoded.reports {
            entries.push(Entry {
                device: device.clone(),
                received_at_ms: 1_767_225_600_000,
                report: r,
            });
        }
    }
    entries
}

pub fn batch(seq: u64, entries: Vec<Entry>) -> Batch {
    Batch {
        edge_id: EDGE.into(),
        batch_seq: seq,
        entries,
    }
}
