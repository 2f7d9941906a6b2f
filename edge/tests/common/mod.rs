//! Test harness: the real `bulkflow-edge run` binary on an ephemeral port, a
//! plain-socket HTTP client, a test central speaking `shared::wire`, and a
//! reader for the outbox file.
#![allow(dead_code)]

use bulkflow_shared::wire::{self, Ack, Entry};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Generous upper bound for conditions that must eventually hold; only hit if
/// something hangs.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/reports")
}

pub struct Edge {
    pub child: Child,
    pub addr: SocketAddr,
    pub config: PathBuf,
    pub db: PathBuf,
}

impl Edge {
    /// Writes a config into `dir` (three base keys + `extra`) and starts the edge.
    pub fn start(dir: &Path, central: &str, extra: &str) -> Edge {
        let db = dir.join("outbox.db");
        let config = dir.join("edge.toml");
        std::fs::write(
            &config,
            format!(
                "edge_id = \"test-edge\"\nlisten = \"127.0.0.1:0\"\ncentral_url = \"{central}\"\n\
                 [outbox]\npath = \"{}\"\n{extra}\n",
                db.display()
            ),
        )
        .unwrap();
        Self::spawn(config, db, dir)
    }

    pub fn spawn(config: PathBuf, db: PathBuf, dir: &Path) -> Edge {
        let addr_file = dir.join("addr");
        let _ = std::fs::remove_file(&addr_file);
        let child = Command::new(env!("CARGO_BIN_EXE_bulkflow-edge"))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .arg("--addr-file")
            .arg(&addr_file)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut text = String::new();
        wait_until("the edge to listen", || {
            text = std::fs::read_to_string(&addr_file).unwrap_or_default();
            text.ends_with('\n')
        });
        let addr = text.lines().next().unwrap().parse().unwrap();
        Edge {
            child,
            addr,
            config,
            db,
        }
    }

    pub fn restart(&mut self) {
        let dir = self.config.parent().unwrap().to_path_buf();
        *self = Self::spawn(self.config.clone(), self.db.clone(), &dir);
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().unwrap()
    }

    pub fn post(&self, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        request(self.addr, "POST", target, headers, body)
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection, `Content-Length` framing.
pub fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (401, 413) and close before reading the body.
    let _ = s.write_all(body);
    read_reply(&mut BufReader::new(s))
}

/// Like [`request`] but returns `None` when the connection fails (edge killed).
pub fn try_request(addr: SocketAddr, target: &str, body: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn read_reply(r: &mut impl BufRead) -> Reply {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("bad status line {line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap();
        if k.eq_ignore_ascii_case("content-length") {
            len = v.trim().parse().unwrap();
        }
        headers.push((k.to_string(), v.trim().to_string()));
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A `.http` fixture: request target and headers.
pub fn parse_http(text: &str) -> (String, String, Vec<(String, String)>) {
    let mut lines = text.lines();
    let first: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    (first[0].to_string(), first[1].to_string(), headers)
}

/// What the outbox file holds: entries not yet batched and entries inside
/// batches awaiting central, in order.
pub fn outbox_reports(db: &Path) -> Vec<Entry> {
    let mut conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    // One read transaction, one snapshot: the forwarder may move entries into
    // a batch between the two queries.
    let conn = conn.transaction().unwrap();
    let mut out = Vec::new();
    let mut stmt = conn
        .prepare("SELECT data FROM batches ORDER BY seq")
        .unwrap();
    for data in stmt.query_map([], |r| r.get::<_, Vec<u8>>(0)).unwrap() {
        out.extend(wire::decode(&data.unwrap(), 1 << 30).unwrap().entries);
    }
    let mut stmt = conn
        .prepare("SELECT data FROM entries ORDER BY id")
        .unwrap();
    for data in stmt.query_map([], |r| r.get::<_, Vec<u8>>(0)).unwrap() {
        let raw = wire::dictionary::decompress(&data.unwrap(), 1 << 30).unwrap();
        out.push(postcard::from_bytes(&raw).unwrap());
    }
    out
}

pub fn count(db: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// What the test central has seen.
#[derive(Default)]
pub struct CentralState {
    /// Batches by seq, first receipt only (central dedups on (edge_id, seq)).
    pub batches: BTreeMap<u64, Vec<Entry>>,
    /// Every POST, including resends.
    pub posts: u64,
    pub committed: Vec<u64>,
    pub tokens: Vec<Option<String>>,
    /// Batches to answer with 400, as central does for a batch it cannot use.
    pub refuse: Vec<u64>,
}

impl CentralState {
    /// Entries in the order central first received them.
    pub fn entries(&self) -> Vec<Entry> {
        self.batches.values().flatten().cloned().collect()
    }
}

/// A minimal central: `POST /v1/batches` (decode, record, commit at once) and
/// `GET /v1/acks`; answers 503 while `up` is false.
pub struct TestCentral {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<CentralState>>,
    pub up: Arc<AtomicBool>,
}

impl TestCentral {
    pub fn start(up: bool) -> TestCentral {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(CentralState::default()));
        let up = Arc::new(AtomicBool::new(up));
        let (st, u) = (state.clone(), up.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (st, u) = (st.clone(), u.clone());
                std::thread::spawn(move || serve_central(conn, &st, &u));
            }
        });
        TestCentral { addr, state, up }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn received(&self) -> usize {
        self.state
            .lock()
            .unwrap()
            .batches
            .values()
            .map(Vec::len)
            .sum()
    }
}

fn serve_central(conn: TcpStream, state: &Mutex<CentralState>, up: &AtomicBool) {
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut len = 0usize;
        let mut token = None;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap();
                }
                if k.eq_ignore_ascii_case("authorization") {
                    token = Some(v.trim().to_string());
                }
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let (status, text) = if !up.load(Ordering::SeqCst) {
            (503, "central is down\n".to_string())
        } else if line.starts_with("POST /v1/batches") {
            match wire::decode(&body, 1 << 30) {
                Ok(batch) if state.lock().unwrap().refuse.contains(&batch.batch_seq) => {
                    (400, "batch refused for the test\n".to_string())
                }
                Ok(batch) => {
                    let mut s = state.lock().unwrap();
                    s.posts += 1;
                    s.tokens.push(token);
                    assert_eq!(batch.edge_id, "test-edge");
                    s.batches.entry(batch.batch_seq).or_insert(batch.entries);
                    if !s.committed.contains(&batch.batch_seq) {
                        s.committed.push(batch.batch_seq);
                        s.committed.sort_unstable();
                    }
                    let ack = Ack {
                        queued: Some(batch.batch_seq),
                        committed: s.committed.clone(),
                    };
                    (200, serde_json::to_string(&ack).unwrap())
                }
                Err(e) => (400, format!("{e}\n")),
            }
        } else if line.starts_with("GET /v1/acks") {
            let s = state.lock().unwrap();
            let ack = Ack {
                queued: None,
                committed: s.committed.clone(),
            };
            (200, serde_json::to_string(&ack).unwrap())
        } else {
            (404, "not found\n".to_string())
        };
        let reply = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: application/json\r\n\r\n{text}",
            text.len()
        );
        if w.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// A JSON NameValuePair body with `n` parameters, tagged with `id`.
pub fn nvp_body(id: u64, n: usize) -> Vec<u8> {
    let mut s = format!("{{\"Report\":[{{\"CollectionTime\":1733246400,\"Test.Id\":{id}");
    for i in 0..n.saturating_sub(1) {
        s.push_str(&format!(
            ",\"Device.IP.Interface.{i}.Stats.BytesSent\":{}",
            id * 1000 + i as u64
        ));
    }
    s.push_str("}]}");
    s.into_bytes()
}

/// The `Test.Id` of an entry.
pub fn test_id(e: &Entry) -> u64 {
    use bulkflow_shared::report::Value;
    match e
        .report
        .params
        .iter()
        .find(|p| p.path == "Test.Id")
        .map(|p| &p.value)
    {
        Some(Value::Int(i)) => *i as u64,
        other => panic!("entry without Test.Id: {other:?}"),
    }
}

/// A central URL where nothing listens.
pub fn dead_central() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}
