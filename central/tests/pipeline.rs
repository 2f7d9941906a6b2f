//! Central end to end against the real Redis and PostgreSQL: batches posted to
//! `/v1/batches` land in every table exactly once, through worker deaths,
//! PostgreSQL outages, poisoned entries and resends.

mod common;

use common::*;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Distinct (device, parameter, time) keys: what `samples` must hold.
fn distinct_keys(entries: &[bulkflow_shared::wire::Entry]) -> i64 {
    let mut keys = HashSet::new();
    for e in entries {
        for p in &e.report.params {
            keys.insert((e.device.id.clone(), p.path.clone(), e.report.time_ms));
        }
    }
    keys.len() as i64
}

#[test]
fn migrate_twice_is_a_no_op_on_plain_postgresql() {
    let env = Env::new("migrate");
    let cfg = env.config();
    let first = env.migrate(&cfg);
    assert!(
        first.starts_with("applied migrations: [1, 2, 3, 4]"),
        "{first}"
    );
    assert!(first.contains("Plain"), "{first}");
    let fingerprint = |env: &Env| -> i64 {
        env.scalar("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'")
    };
    let before = fingerprint(&env);
    let second = env.migrate(&cfg);
    assert!(second.starts_with("applied migrations: []"), "{second}");
    assert_eq!(fingerprint(&env), before);
    let tables: i64 = env.scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' AND table_name IN
         ('devices','parameters','samples','device_stats','interface_stats','radio_stats','wifi_neighbors',
          'wifi_clients','ingested_batches','interface_rates','radio_rates','client_rates','device_reboots')",
    );
    assert_eq!(tables, 13);
}

#[test]
fn fixture_batch_lands_in_every_table_exactly_once() {
    let env = Env::new("e2e");
    let cfg = env.config();
    env.migrate(&cfg);
    let central = Central::start(&cfg, "run");
    let entries = fixture_entries();
    assert_eq!(entries.len(), 9, "reports in the decodable fixtures");
    let params: usize = entries.iter().map(|e| e.report.params.len()).sum();
    let expected_rows = distinct_keys(&entries);

    let r = post_batch(central.addr(), &batch(1, entries.clone()), TOKEN);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.ack().queued, Some(1));
    assert!(wait_committed(central.addr(), 1), "batch 1 never committed");

    assert_eq!(
        env.scalar::<i64>("SELECT count(*) FROM samples"),
        expected_rows
    );
    assert_eq!(
        env.scalar::<i32>("SELECT parameters FROM ingested_batches WHERE batch_seq = 1") as usize,
        params
    );
    let devices: Vec<String> = env
        .db()
        .query("SELECT device_key FROM devices ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        devices,
        [
            "0A1B2C-Device2-SN0000000001",
            "0A1B2C-USP%20Agent-SN0000000002",
            "cpe-0001"
        ]
    );

    // A 64-bit counter above 2^63 survives exactly, in samples and typed rows.
    let counter: String = env.scalar(
        "SELECT s.value_num::text FROM samples s JOIN parameters p ON p.id = s.parameter_id
         JOIN devices d ON d.id = s.device_id
         WHERE p.name = 'Device.IP.Interface.4.Stats.BytesReceived' AND d.device_key LIKE '%SN0000000002'",
    );
    assert_eq!(counter, "18446744073709551000");
    let typed: String = env.scalar(
        "SELECT i.bytes_received::text FROM interface_stats i JOIN devices d ON d.id = i.device_id
         WHERE i.interface = 4 AND d.device_key LIKE '%SN0000000002'",
    );
    assert_eq!(typed, "18446744073709551000");

    // Neighbour SSIDs exactly as sent: blank, separators, quotes, non-ASCII.
    let ssids: HashSet<String> = env
        .db()
        .query(
            "SELECT n.ssid FROM wifi_neighbors n JOIN devices d ON d.id = n.device_id WHERE d.device_key = 'cpe-0001'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let want: HashSet<String> = [
        "LAB-5G",
        "Vizinho_2G",
        "  ",
        "Cafe;2nd",
        "Café ☕",
        "NET_\"quoted\"",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(ssids, want);

    // An ISO-8601 time with an offset is stored as the right instant.
    let t: String = env.scalar(
        "SELECT to_char(s.time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') FROM samples s
         JOIN parameters p ON p.id = s.parameter_id WHERE p.name = 'cpu' ORDER BY s.time LIMIT 1",
    );
    assert_eq!(t, "2024-12-03 17:10:00");

    // Device statistics, clients joined to host names, radios.
    let row = env
        .db()
        .query_one(
            "SELECT uptime_s, memory_total_kib, memory_free_kib, cpu_percent FROM device_stats s
             JOIN devices d ON d.id = s.device_id WHERE d.device_key = 'cpe-0001'",
            &[],
        )
        .unwrap();
    assert_eq!(
        (
            row.get::<_, Option<i64>>(0),
            row.get::<_, Option<i64>>(1),
            row.get::<_, Option<i64>>(2),
            row.get::<_, Option<i32>>(3)
        ),
        (Some(86213), Some(249856), Some(61234), Some(7))
    );
    let host: String = env.scalar(
        "SELECT c.host_name FROM wifi_clients c JOIN devices d ON d.id = c.device_id
         WHERE d.device_key = 'cpe-0001' AND c.mac = '02:00:5e:10:00:01'",
    );
    assert_eq!(host, "phone-bruno");
    let signal: String = env.scalar(
        "SELECT c.signal_dbm::text FROM wifi_clients c JOIN devices d ON d.id = c.device_id
         WHERE d.device_key = 'cpe-0001' AND c.mac = '02:00:5e:10:00:01'",
    );
    assert_eq!(signal, "-71.5", "RCPI 77 is -71.5 dBm");
    let radios: i64 =
        env.scalar("SELECT count(*) FROM radio_stats WHERE band = '5GHz' AND channel = 44");
    assert!(radios >= 1);

    // Every typed table got rows; a resend must add none to any of them.
    let typed_counts = |env: &Env| -> Vec<i64> {
        [
            "device_stats",
            "interface_stats",
            "radio_stats",
            "wifi_neighbors",
            "wifi_clients",
        ]
        .iter()
        .map(|t| env.scalar::<i64>(&format!("SELECT count(*) FROM {t}")))
        .collect()
    };
    let typed_before = typed_counts(&env);
    assert!(typed_before.iter().all(|&n| n > 0), "{typed_before:?}");

    // The same batch again: acknowledged as committed, stored once.
    let r = post_batch(central.addr(), &batch(1, entries.clone()), TOKEN);
    assert_eq!(r.status, 200);
    assert!(r.ack().committed.contains(&1));
    // The same reports in a new batch (a CPE resend through the edge): no new rows.
    let r = post_batch(central.addr(), &batch(2, entries), TOKEN);
    assert_eq!(r.status, 200);
    assert!(wait_committed(central.addr(), 2));
    assert_eq!(
        env.scalar::<i64>("SELECT count(*) FROM samples"),
        expected_rows
    );
    assert_eq!(
        env.scalar::<i64>("SELECT count(*) FROM ingested_batches"),
        2
    );
    assert_eq!(env.scalar::<i64>("SELECT count(*) FROM wifi_neighbors"), 10);
    assert_eq!(typed_counts(&env), typed_before);
}

#[test]
fn requests_are_checked_before_queueing() {
    let env = Env::new("auth");
    let cfg = env.config_with(
        &env.pg_url,
        REDIS_URL,
        "",
        "[ingest]\nmax_batch_bytes = 4096\n",
    );
    env.migrate(&cfg);
    let central = Central::start(&cfg, "serve");
    let small = batch(1, fixture_entries().into_iter().take(1).collect());

    let r = post_batch(central.addr(), &small, "wrong-token-0000000000");
    assert_eq!(r.status, 401);
    let mut other = small.clone();
    other.edge_id = "lab-2".into();
    let r = post_batch(central.addr(), &other, TOKEN);
    assert_eq!(r.status, 403);
    assert!(r.text().contains("lab-2"), "{}", r.text());
    let auth = format!("Bearer {TOKEN}");
    let r = http(
        central.addr(),
        "POST",
        "/v1/batches",
        &[("Authorization", &auth)],
        b"garbage",
    );
    assert_eq!(r.status, 400);
    assert!(
        r.text().starts_with("batch does not decompress"),
        "{}",
        r.text()
    );
    let r = http(
        central.addr(),
        "POST",
        "/v1/batches",
        &[("Authorization", &auth)],
        &vec![0u8; 5000],
    );
    assert_eq!(r.status, 413);
    let r = http(
        central.addr(),
        "GET",
        "/v1/acks",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 400);
    let r = http(central.addr(), "GET", "/nope", &[], b"");
    assert_eq!(r.status, 404);
    // Nothing reached the queue.
    let len = env.xlen(&env.stream());
    assert_eq!(len, 0);
}

#[test]
fn redis_down_answers_503_with_retry_after() {
    let env = Env::new("redisdown");
    let cfg = env.config_with(&env.pg_url, "redis://127.0.0.1:1", "", "");
    env.migrate(&cfg);
    let central = Central::start(&cfg, "serve");
    let r = post_batch(central.addr(), &batch(1, fixture_entries()), TOKEN);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("5"));
    assert_eq!(
        http(central.addr(), "GET", "/healthz", &[], b"").status,
        503
    );
}

#[test]
fn entries_of_a_dead_worker_are_reclaimed_without_duplicates() {
    let env = Env::new("reclaim");
    let cfg = env.config_with(&env.pg_url, REDIS_URL, "reclaim_idle_ms = 300", "");
    env.migrate(&cfg);
    let server = Central::start(&cfg, "serve");
    let entries = fixture_entries();
    for seq in 1..=3 {
        assert_eq!(
            post_batch(server.addr(), &batch(seq, entries.clone()), TOKEN).status,
            200
        );
    }
    // A worker takes all three entries, then dies before writing anything.
    env.take_as_dead_worker("dead-worker");

    let _worker = Central::start(&cfg, "store");
    for seq in 1..=3 {
        assert!(
            wait_committed(server.addr(), seq),
            "batch {seq} not committed"
        );
    }
    assert_eq!(
        env.scalar::<i64>("SELECT count(*) FROM ingested_batches"),
        3
    );
    assert_eq!(
        env.scalar::<i64>("SELECT count(*) FROM samples"),
        distinct_keys(&entries)
    );
    assert!(wait_until(Duration::from_secs(10), || {
        env.xlen(&env.stream()) == 0
    }));
}

#[test]
fn a_poisoned_entry_goes_to_the_dead_letter_stream_and_the_rest_flows() {
    let env = Env::new("poison");
    let cfg = env.config_with(&env.pg_url, REDIS_URL, "max_attempts = 3", "");
    env.migrate(&cfg);
    let mut r = env.redis();
    let _: String = redis::cmd("XADD")
        .arg(env.stream())
        .arg("*")
        .arg("origin")
        .arg("edge")
        .arg("edge")
        .arg(EDGE)
        .arg("seq")
        .arg(99)
        .arg("data")
        .arg("not a batch")
        .query(&mut r)
        .unwrap();
    let central = Central::start(&cfg, "run");
    assert_eq!(
        post_batch(central.addr(), &batch(1, fixture_entries()), TOKEN).status,
        200
    );
    assert!(wait_committed(central.addr(), 1));
    assert!(wait_until(Duration::from_secs(30), || {
        env.xlen(&env.dead_stream()) == 1
    }));
    let dead = env.dead_letters();
    let error: String = redis::from_redis_value(dead.ids[0].map["error"].clone()).unwrap();
    assert!(error.starts_with("batch does not decompress"), "{error}");
    assert!(wait_until(Duration::from_secs(10), || {
        env.xlen(&env.stream()) == 0
    }));
    assert_eq!(
        env.scalar::<i64>("SELECT count(*) FROM ingested_batches"),
        1
    );
}

/// A TCP proxy to PostgreSQL that the test can cut and restore, standing in
/// for a database outage without stopping the shared server.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(target: &'static str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (up2, open2) = (up.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: connection refused in effect
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let mut list = open2.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, up, open }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_postgresql_outage_delays_but_loses_nothing() {
    let env = Env::new("pgdown");
    env.migrate(&env.config());
    let proxy = Proxy::start("127.0.0.1:5432");
    let via_proxy = format!(
        "host=127.0.0.1 port={} user=postgres dbname={} connect_timeout=2",
        proxy.port, env.name
    );
    let cfg = env.config_with(&via_proxy, REDIS_URL, "", "");
    let central = Central::start(&cfg, "run");
    let entries = fixture_entries();
    assert_eq!(
        post_batch(central.addr(), &batch(1, entries.clone()), TOKEN).status,
        200
    );
    assert!(wait_committed(central.addr(), 1));

    proxy.cut();
    for seq in 2..=4 {
        let r = post_batch(central.addr(), &batch(seq, entries.clone()), TOKEN);
        assert_eq!(
            r.status,
            200,
            "queueing must go on while PostgreSQL is down: {}",
            r.text()
        );
        assert!(r.ack().committed.is_empty());
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        env.scalar::<i64>("SELECT count(*) FROM ingested_batches"),
        1
    );

    proxy.restore();
    for seq in 2..=4 {
        assert!(
            wait_committed(central.addr(), seq),
            "batch {seq} lost after the outage"
        );
    }
    assert_eq!(
        env.scalar::<i64>("SELECT count(*) FROM ingested_batches"),
        4
    );
    assert_eq!(
        env.scalar::<i64>("SELECT count(*) FROM samples"),
        distinct_keys(&entries)
    );
}

/// Headers of a fixture's `.http` file and the path with its query.
fn fixture_request(name: &str) -> (String, Vec<(String, String)>, Vec<u8>) {
    let http = std::fs::read_to_string(fixtures_dir().join(format!("{name}.http"))).unwrap();
    let body = std::fs::read(fixtures_dir().join(format!("{name}.body"))).unwrap();
    let mut lines = http.lines();
    let path = lines.next().unwrap().split(' ').nth(1).unwrap().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    (path, headers, body)
}

fn post_fixture(addr: std::net::SocketAddr, name: &str, auth: Option<&str>) -> HttpResponse {
    let (path, headers, body) = fixture_request(name);
    let mut h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if let Some(a) = auth {
        h.push(("Authorization", a));
    }
    http(addr, "POST", &path, &h, &body)
}

#[test]
fn cpes_without_an_edge_post_straight_to_central() {
    let env = Env::new("direct");
    let cfg = env.config_with(
        &env.pg_url,
        REDIS_URL,
        "",
        "[bulkdata.auth]\nuser = \"cpe\"\npassword = \"pw\"\n",
    );
    env.migrate(&cfg);
    let central = Central::start(&cfg, "run");
    let auth = Some("Basic Y3BlOnB3");

    let r = post_fixture(central.addr(), "nvp-gzip-obuspa-like", None);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"bulkflow\", charset=\"UTF-8\"")
    );
    let r = post_fixture(
        central.addr(),
        "nvp-gzip-obuspa-like",
        Some("Basic Y3BlOnd4"),
    );
    assert_eq!(r.status, 401);

    let r = post_fixture(central.addr(), "nvp-gzip-obuspa-like", auth);
    assert_eq!(r.status, 200, "{}", r.text());
    let device_rows = "SELECT count(*) FROM samples s JOIN devices d ON d.id = s.device_id
                       WHERE d.device_key = '0A1B2C-USP%20Agent-SN0000000002' AND d.last_edge = 'direct'";
    assert!(wait_until(Duration::from_secs(30), || env
        .scalar::<i64>(device_rows)
        == 87));
    // The same request again (a CPE retry): answered 200, stored once.
    assert_eq!(
        post_fixture(central.addr(), "nvp-gzip-obuspa-like", auth).status,
        200
    );
    assert_eq!(
        post_fixture(central.addr(), "empty-report-array", auth).status,
        200
    );

    let r = post_fixture(central.addr(), "bad-truncated-json", auth);
    assert_eq!(r.status, 400);
    assert!(r.text().starts_with("invalid JSON"), "{}", r.text());
    let (path, _, body) = fixture_request("csv-per-row");
    let r = http(
        central.addr(),
        "POST",
        &path,
        &[
            ("Content-Encoding", "br"),
            ("Authorization", "Basic Y3BlOnB3"),
        ],
        &body,
    );
    assert_eq!(r.status, 415);
    // No identity anywhere: refused, never stored under "unknown".
    let r = http(
        central.addr(),
        "PUT",
        "/bulkdata",
        &[
            ("Authorization", "Basic Y3BlOnB3"),
            ("Content-Type", "application/json"),
        ],
        br#"{"Report":[{"a":1}]}"#,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().starts_with("cannot identify the device"),
        "{}",
        r.text()
    );
    let r = http(
        central.addr(),
        "GET",
        "/bulkdata",
        &[("Authorization", "Basic Y3BlOnB3")],
        b"",
    );
    assert_eq!(r.status, 405);

    // Wait for the retry to be processed, then check nothing doubled.
    assert!(wait_until(Duration::from_secs(30), || {
        env.xlen(&env.stream()) == 0
    }));
    assert_eq!(env.scalar::<i64>(device_rows), 87);
    assert_eq!(env.scalar::<i64>("SELECT count(*) FROM samples"), 87);
}

/// The same entries an hour later: new (device, parameter, time) keys.
fn an_hour_later(entries: &[bulkflow_shared::wire::Entry]) -> Vec<bulkflow_shared::wire::Entry> {
    entries
        .iter()
        .cloned()
        .map(|mut e| {
            e.report.time_ms += 3_600_000;
            e
        })
        .collect()
}

#[test]
fn a_running_worker_recovers_when_redis_loses_its_consumer_group() {
    let env = Env::new("nogroup");
    let cfg = env.config();
    env.migrate(&cfg);
    let central = Central::start(&cfg, "run");
    let first = fixture_entries();
    let r = post_batch(central.addr(), &batch(1, first.clone()), TOKEN);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(wait_committed(central.addr(), 1), "batch 1 never committed");

    // The stream goes, and its consumer group with it, as after FLUSHALL or a
    // Redis restart without persistence; the worker is mid-loop.
    let _: () = redis::cmd("DEL")
        .arg(env.stream())
        .query(&mut env.redis())
        .unwrap();
    let second = an_hour_later(&first);
    let r = post_batch(central.addr(), &batch(2, second.clone()), TOKEN);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        wait_committed(central.addr(), 2),
        "the worker stopped storing once its consumer group was gone"
    );
    assert_eq!(
        env.scalar::<i64>("SELECT count(*) FROM samples"),
        distinct_keys(&first) + distinct_keys(&second)
    );
}

#[test]
fn a_batch_queued_twice_is_written_once_by_the_worker() {
    // Ingest drops a resend it already knows; this is the worker's own check:
    // a batch committed, then its entry delivered again (a crash between
    // COMMIT and XACK, or two ingests racing).
    let env = Env::new("twice");
    let cfg = env.config();
    env.migrate(&cfg);
    let entries = fixture_entries();
    let data = bulkflow_shared::wire::encode(&batch(1, entries.clone())).unwrap();
    for _ in 0..2 {
        let _: String = redis::cmd("XADD")
            .arg(env.stream())
            .arg("*")
            .arg("origin")
            .arg("edge")
            .arg("edge")
            .arg(EDGE)
            .arg("seq")
            .arg(1)
            .arg("data")
            .arg(&data)
            .query(&mut env.redis())
            .unwrap();
    }
    let _worker = Central::start(&cfg, "store");
    let stream_len = || env.xlen(&env.stream());
    assert!(
        wait_until(Duration::from_secs(60), || stream_len() == 0),
        "the worker never consumed both entries"
    );
    assert_eq!(
        env.scalar::<i64>("SELECT count(*) FROM ingested_batches"),
        1
    );
    assert_eq!(
        env.scalar::<i64>("SELECT count(*) FROM samples"),
        distinct_keys(&entries)
    );
    assert_eq!(env.scalar::<i64>("SELECT count(*) FROM wifi_neighbors"), 10);
    let dead = env.xlen(&env.dead_stream());
    assert_eq!(dead, 0);
}

#[test]
fn run_exits_with_the_reason_when_its_port_is_taken() {
    let env = Env::new("porttaken");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = env.config();
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{}\"", taken.local_addr().unwrap()),
    );
    std::fs::write(&cfg, text).unwrap();
    env.migrate(&cfg);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bulkflow-central"))
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The store role would run forever: the failed serve role must stop it.
    let exited = wait_until(Duration::from_secs(30), || {
        child.try_wait().unwrap().is_some()
    });
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(exited, "run kept going without its listener");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the serve role"), "{stderr}");
}

#[test]
fn migrate_makes_hypertables_where_timescaledb_is_installed() {
    let env = Env::new("timescale");
    let installed: i64 =
        env.scalar("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'");
    if installed == 0 {
        // The plain branch is what the other tests run on; this one needs the
        // extension in the server's shared_preload_libraries.
        eprintln!("timescaledb is not installed on this server: its branch is not exercised");
        return;
    }
    let cfg = env.config();
    let first = env.migrate(&cfg);
    assert!(first.contains("Timescale"), "{first}");
    let hypertables: i64 = env.scalar(
        "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_schema = 'public'",
    );
    assert_eq!(hypertables, 6);
    let second = env.migrate(&cfg);
    assert!(second.starts_with("applied migrations: []"), "{second}");
    assert!(second.contains("Timescale"), "{second}");
}

#[test]
fn an_entry_whose_workers_keep_dying_is_dead_lettered() {
    // max_attempts = 1: the first reclaim already gives up on the entry (a
    // worker died holding it; with the default 5 it takes five such deaths).
    let env = Env::new("reclaimdead");
    let cfg = env.config_with(
        &env.pg_url,
        REDIS_URL,
        "reclaim_idle_ms = 300\nmax_attempts = 1",
        "",
    );
    env.migrate(&cfg);
    let server = Central::start(&cfg, "serve");
    let r = post_batch(server.addr(), &batch(1, fixture_entries()), TOKEN);
    assert_eq!(r.status, 200);
    env.take_as_dead_worker("crashed-worker");
    let _worker = Central::start(&cfg, "store");
    assert!(wait_until(Duration::from_secs(30), || env
        .xlen(&env.dead_stream())
        == 1));
    let dead = env.dead_letters();
    let error: String = redis::from_redis_value(dead.ids[0].map["error"].clone()).unwrap();
    assert!(error.starts_with("reclaimed 1 times"), "{error}");
    let seq: String = redis::from_redis_value(dead.ids[0].map["seq"].clone()).unwrap();
    assert_eq!(seq, "1");
    assert_eq!(
        env.scalar::<i64>("SELECT count(*) FROM ingested_batches"),
        0
    );
    assert_eq!(env.xlen(&env.stream()), 0);
}

#[test]
fn interface_rates_skip_counter_resets_and_reboots() {
    let env = Env::new("rates");
    let cfg = env.config();
    env.migrate(&cfg);
    let mut db = env.db();
    // Reports every 300 s. 12:05 -> 12:10: a plain increase. 12:10 -> 12:15:
    // the counter went down (reset). 12:15 -> 12:20: rebooted 100 s before the
    // report (uptime 100), and the counter has already climbed past its old
    // value: an ordinary-looking increase that is not one.
    db.batch_execute(
        "INSERT INTO interface_stats (time, device_id, interface, bytes_sent, bytes_received) VALUES
           ('2026-01-01 12:00:00+00', 1, 1, 1000, 0),
           ('2026-01-01 12:05:00+00', 1, 1, 31000, 0),
           ('2026-01-01 12:10:00+00', 1, 1, 500, 0),
           ('2026-01-01 12:15:00+00', 1, 1, 900, 0),
           ('2026-01-01 12:20:00+00', 1, 1, 60000, 0);
         INSERT INTO device_stats (time, device_id, uptime_s) VALUES
           ('2026-01-01 12:00:00+00', 1, 5000),
           ('2026-01-01 12:05:00+00', 1, 5300),
           ('2026-01-01 12:15:00+00', 1, 5900),
           ('2026-01-01 12:20:00+00', 1, 100);",
    )
    .unwrap();
    let rows: Vec<(String, Option<String>, bool)> = db
        .query(
            "SELECT to_char(time AT TIME ZONE 'UTC', 'HH24:MI'), round(tx_bps, 3)::text, counter_reset
             FROM interface_rates ORDER BY time",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let row =
        |t: &str, bps: Option<&str>, reset: bool| (t.to_string(), bps.map(String::from), reset);
    assert_eq!(
        rows,
        [
            row("12:05", Some("800.000"), false),
            row("12:10", None, true),
            row("12:15", Some("10.667"), false),
            row("12:20", None, true),
        ]
    );
}

#[test]
fn a_body_that_never_finishes_gets_408() {
    let env = Env::new("slowbody");
    let cfg = env.config_with(
        &env.pg_url,
        REDIS_URL,
        "",
        "[ingest]\nbody_timeout_secs = 1\n",
    );
    env.migrate(&cfg);
    let central = Central::start(&cfg, "serve");
    let mut slow = TcpStream::connect(central.addr()).unwrap();
    slow.write_all(
        format!(
            "POST /v1/batches HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: 100\r\n\r\nabc"
        )
        .as_bytes(),
    )
    .unwrap();
    // Meanwhile others are served.
    let ok = post_batch(central.addr(), &batch(1, fixture_entries()), TOKEN);
    assert_eq!(ok.status, 200, "{}", ok.text());
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("body not received within 1s"), "{answer:?}");
}
