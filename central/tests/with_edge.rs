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
        "{} is missing: build the workspace's binaries first (cargo build --workspace --bins, as scripts/test does)",
        path.display()
    );
    path
}

fn start_edge(env: &Env, central: std::net::SocketAddr) -> Edge {
    start_edge_with(env, &format!("http://{central}"), "", "edge")
}

fn start_edge_with(env: &Env, central_url: &str, forward_extra: &str, name: &str) -> Edge {
    let dir = env.dir.path();
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            r#"edge_id = "{EDGE}"
listen = "127.0.0.1:0"
central_url = "{central_url}"

[outbox]
path = "{db}"

[forward]
token = "{TOKEN}"
batch_max_age_ms = 100
ack_timeout_secs = 2
ack_poll_ms = 200
backoff_min_ms = 100
backoff_max_ms = 1000
{forward_extra}
"#,
            db = dir.join(format!("{name}.db")).display()
        ),
    )
    .unwrap();
    let addr_file = dir.join(format!("{name}.addr"));
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
    let stream_len = || env.xlen(&env.stream());
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

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for localhost and a client certificate.
fn make_pki(dir: &std::path::Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-days",
        "2",
        "-subj",
        "/CN=bulkflow test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    ca.extend([
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    openssl(dir, &ca);
    for (name, cn, ext) in [
        (
            "server",
            "localhost",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE",
        ),
        (
            "client",
            "lab-1",
            "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE",
        ),
    ] {
        let mut req = vec!["req"];
        req.extend(ec);
        let subj = format!("/CN={cn}");
        let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
        req.extend([
            "-subj",
            subj.as_str(),
            "-keyout",
            key.as_str(),
            "-out",
            csr.as_str(),
        ]);
        openssl(dir, &req);
        let ext_file = format!("{name}.ext");
        std::fs::write(dir.join(&ext_file), ext.replace("\\n", "\n")).unwrap();
        let crt = format!("{name}.crt");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &crt,
                "-extfile",
                &ext_file,
            ],
        );
    }
}

#[test]
fn edges_reach_central_over_mutual_tls() {
    let env = Env::new("mtls");
    let pki = env.dir.path();
    make_pki(pki);
    let tls = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
        pki.join("server.crt").display(),
        pki.join("server.key").display(),
        pki.join("ca.crt").display()
    );
    let cfg = env.config_with(&env.pg_url, REDIS_URL, "", &tls);
    env.migrate(&cfg);
    let central = Central::start(&cfg, "run");
    let url = format!("https://localhost:{}", central.addr().port());
    let trust = format!("ca_cert = \"{}\"\n", pki.join("ca.crt").display());
    let identity = format!(
        "client_cert = \"{}\"\nclient_key = \"{}\"\n",
        pki.join("client.crt").display(),
        pki.join("client.key").display()
    );

    // Plain HTTP to the TLS port gets no answer.
    let plain = std::panic::catch_unwind(|| http(central.addr(), "GET", "/healthz", &[], b""));
    assert!(plain.is_err() || plain.as_ref().is_ok_and(|r| r.status != 200));

    let edge = start_edge_with(&env, &url, &format!("{trust}{identity}"), "edge");
    assert_eq!(post_all_fixtures(edge.addr), (7, 2));
    let expected = distinct_keys();
    assert!(wait_until(Duration::from_secs(60), || env
        .scalar::<i64>("SELECT count(*) FROM samples")
        == expected));

    let batches: i64 = env.scalar("SELECT count(*) FROM ingested_batches");

    // Without a client certificate the handshake fails and nothing gets through.
    let anonymous = start_edge_with(&env, &url, &trust, "anonymous");
    let status = || {
        let out = Command::new(edge_binary())
            .args(["status", "--config"])
            .arg(env.dir.path().join("anonymous.toml"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    post_all_fixtures(anonymous.addr);
    assert!(
        wait_until(Duration::from_secs(30), || status()
            .contains("last forward:      FAILED")),
        "{}",
        status()
    );
    assert_eq!(
        env.scalar::<i64>("SELECT count(*) FROM ingested_batches"),
        batches
    );
}
