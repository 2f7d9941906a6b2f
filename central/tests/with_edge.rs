//! The whole path with a real edge in front: CPE requests posted to
//! `bulkflow-edge`, forwarded to central, stored in PostgreSQL. Uses the edge
//! binary built next to central's (`cargo test --workspace` builds both).

mod common;

use common::*;
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Edge {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn edge_binary() -> PathBuf {
    let path = std::path::Path::new(env!("CARGO_BIN_EXE_bulkflow-central"))
        .with_file_name("bulkflow-edge");
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo test --workspace, as scripts/test does)",
        path.display()
    );
    path
}

fn start_edge(env: &Env, central: std::net::SocketAddr) -> Edge {
    let dir = env.dir.path();
    let config = dir.join("edge.toml");
    std::fs::write(
        &config,
        format!(
            r#"edge_id = "{EDGE}"
listen = "127.0.0.1:0"
central_url = "http://{central}"

[outbox]
path = "{db}"

[forward]
token = "{TOKEN}"
batch_max_age_ms = 100
ack_timeout_secs = 2
ack_poll_ms = 200
backoff_min_ms = 100
backoff_max_ms = 1000
"#,
            db = dir.join("edge.db").display()
        ),
    )
    .unwrap();
    let addr_file = dir.join("edge.addr");
    let child = Command::new(edge_binary())
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--addr-file")
        .arg(&addr_file)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(&addr_file).is_ok_and(|s| s.ends_with('\n'))
    }));
    let addr = std::fs::read_to_string(&addr_file)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    Edge { child, addr }
}

/// Posts every fixture request to the edge with the headers it was sent with.
fn post_all_fixtures(edge: std::net::SocketAddr) -> (usize, usize) {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .into_string()
                .unwrap()
                .strip_suffix(".http")
                .map(String::from)
        })
        .collect();
    names.sort();
    let (mut ok, mut refused) = (0, 0);
    for name in names {
        let http_text =
            std::fs::read_to_string(fixtures_dir().join(format!("{name}.http"))).unwrap();
        let body = std::fs::read(fixtures_dir().join(format!("{name}.body"))).unwrap();
        let mut lines = http_text.lines();
        let request_line = lines.next().unwrap().to_string();
        let mut parts = request_line.split(' ');
        let method = parts.next().unwrap().to_string();
        let path = parts.next().unwrap().to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let r = http(edge, &method, &path, &h, &body);
        if name.starts_with("bad-") {
            assert_eq!(r.status, 400, "{name}: {}", r.text());
            refused += 1;
        } else {
            assert_eq!(r.status, 200, "{name}: {}", r.text());
            ok += 1;
        }
    }
    (ok, refused)
}

fn distinct_keys() -> i64 {
    let mut keys = HashSet::new();
    for e in fixture_entries() {
        for p in &e.report.params {
            keys.insert((e.device.id.clone(), p.path.clone(), e.report.time_ms));
        }
    }
    keys.len() as i64
}

#[test]
fn fixtures_posted_to_an_edge_land_in_every_table_with_exact_values() {
    let env = Env::new("withedge");
    let cfg = env.config();
    env.migrate(&cfg);
    let central = Central::start(&cfg, "run");
    let edge = start_edge(&env, central.addr());
    assert_eq!(post_all_fixtures(edge.addr), (7, 2));

    let expected = distinct_keys();
    assert!(wait_until(Duration::from_secs(60), || env
        .scalar::<i64>("SELECT count(*) FROM samples")
        == expected));
    let one = |sql: &str| -> String { env.scalar(sql) };
    assert_eq!(
        one("SELECT i.bytes_received::text FROM interface_stats i JOIN devices d ON d.id = i.device_id
             WHERE i.interface = 4 AND d.device_key = '0A1B2C-USP%20Agent-SN0000000002'"),
        "18446744073709551000"
    );
    assert_eq!(
        one(
            "SELECT string_agg(format('%L', ssid), ',' ORDER BY result) FROM wifi_neighbors n
             JOIN devices d ON d.id = n.device_id WHERE d.device_key = 'cpe-0001'"
        ),
        "'LAB-5G','Vizinho_2G','  ','Cafe;2nd','Café ☕','NET_\"quoted\"'"
    );
    assert_eq!(
        one(
            "SELECT to_char(min(s.time) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') FROM samples s
             JOIN parameters p ON p.id = s.parameter_id WHERE p.name = 'cpu'"
        ),
        "2024-12-03 17:10:00"
    );
    assert_eq!(
        one(
            "SELECT value_text FROM samples s JOIN parameters p ON p.id = s.parameter_id
             WHERE p.name = 'Device.WiFi.SSID.1.SSID'"
        ),
        "Cafe, \"2nd\" floor"
    );
    assert_eq!(
        one("SELECT string_agg(DISTINCT last_edge, ',') FROM devices"),
        EDGE
    );
    assert_eq!(
        env.scalar::<i64>("SELECT count(*) FROM device_stats WHERE uptime_s IS NOT NULL"),
        7
    );
    assert_eq!(
        env.scalar::<i64>("SELECT count(*) FROM wifi_clients WHERE host_name IS NOT NULL"),
        6
    );
    assert_eq!(
        one(
            "SELECT string_agg(c.mac || '=' || c.host_name, ',' ORDER BY c.mac) FROM wifi_clients c
             JOIN devices d ON d.id = c.device_id WHERE d.device_key = 'cpe-0001'"
        ),
        "02:00:5e:10:00:01=phone-bruno,02:00:5e:10:00:02=tv-sala,02:00:5e:10:00:03=printer"
    );
}

#[test]
fn a_redis_flush_loses_nothing_because_the_edge_resends() {
    let env = Env::new("flush");
    let cfg = env.config();
    env.migrate(&cfg);
    // Ingest only: batches are queued but nothing stores them yet.
    let central = Central::start(&cfg, "serve");
    let edge = start_edge(&env, central.addr());
    post_all_fixtures(edge.addr);
    let stream_len = || -> i64 {
        redis::cmd("XLEN")
            .arg(env.stream())
            .query(&mut env.redis())
            .unwrap()
    };
    assert!(
        wait_until(Duration::from_secs(30), || stream_len() > 0),
        "the edge never forwarded"
    );
    // Redis loses everything it had for us (a flush, or a restart without persistence).
    let _: () = redis::cmd("DEL")
        .arg(env.stream())
        .query(&mut env.redis())
        .unwrap();
    assert_eq!(stream_len(), 0);

    let _worker = Central::start(&cfg, "store");
    let expected = distinct_keys();
    assert!(
        wait_until(Duration::from_secs(60), || env
            .scalar::<i64>("SELECT count(*) FROM samples")
            == expected),
        "rows missing after the flush: {} of {expected}",
        env.scalar::<i64>("SELECT count(*) FROM samples")
    );
    // Resent batches are the same batches: each committed once.
    let batches: i64 = env.scalar("SELECT count(*) FROM ingested_batches");
    let distinct: i64 = env.scalar("SELECT count(DISTINCT batch_seq) FROM ingested_batches");
    assert_eq!(batches, distinct);
    assert!(batches >= 1);
}
