//! The CPE-facing server over real sockets: every sample request lands in the
//! outbox with its decoded content; refusals get the right status and
//! `.error` / unidentified requests land in quarantine.

mod common;

use bulkflow_shared::wire::Entry;
use common::*;
use serde_json::Value;
use std::io::{BufReader, Write};
use std::net::TcpStream;

/// Keeps forwarded-to-nowhere reports as entries, so the outbox shows them.
const HOLD: &str = "[forward]\nbatch_max_age_ms = 3600000\n[limits]\nmax_body_bytes = 65536\n";

fn names_with(ext: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            n.strip_suffix(ext).map(str::to_string)
        })
        .collect();
    v.sort();
    v
}

fn post_fixture(edge: &Edge, name: &str) -> Reply {
    let dir = fixtures();
    let http = std::fs::read_to_string(dir.join(format!("{name}.http"))).unwrap();
    let body = std::fs::read(dir.join(format!("{name}.body"))).unwrap();
    let (method, target, headers) = parse_http(&http);
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    request(edge.addr, &method, &target, &headers, &body)
}

/// The expected lines as (report, time, time_source, path, value).
fn expected(name: &str) -> Vec<(u64, Value, String, String, Value)> {
    std::fs::read_to_string(fixtures().join(format!("{name}.expected.ndjson")))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["report"].as_u64().unwrap(),
                v["time"].clone(),
                v["time_source"].as_str().unwrap().to_string(),
                v["path"].as_str().unwrap().to_string(),
                v["value"].clone(),
            )
        })
        .collect()
}

fn as_lines(entries: &[Entry]) -> Vec<(u64, Value, String, String, Value)> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let t = e.report.time_ms;
        let time: Value = if t % 1000 == 0 {
            (t / 1000).into()
        } else {
            (t as f64 / 1000.0).into()
        };
        for p in &e.report.params {
            out.push((
                i as u64,
                time.clone(),
                e.report.time_source.as_str().to_string(),
                p.path.clone(),
                Value::from(&p.value),
            ));
        }
    }
    out
}

#[test]
fn every_fixture_is_stored_or_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(dir.path(), &dead_central(), HOLD);
    let mut seen = 0;
    for name in names_with(".expected.ndjson") {
        let reply = post_fixture(&edge, &name);
        assert_eq!(reply.status, 200, "{name}: {}", reply.body);
        assert_eq!(reply.body, "", "{name}");
        let all = outbox_reports(&edge.db);
        let new = &all[seen..];
        seen = all.len();
        assert_eq!(as_lines(new), expected(&name), "{name}");
        for e in new {
            let want = if name == "oh-tplink-strings" {
                "cpe-0001"
            } else if name == "nvp-gzip-obuspa-like" {
                "0A1B2C-USP%20Agent-SN0000000002"
            } else {
                "0A1B2C-Device2-SN0000000001"
            };
            assert_eq!(e.device.id, want, "{name}");
        }
    }
    assert_eq!(count(&edge.db, "SELECT COUNT(*) FROM quarantine"), 0);
    let errors = names_with(".error");
    assert_eq!(errors.len(), 2);
    for (i, name) in errors.iter().enumerate() {
        let reply = post_fixture(&edge, name);
        assert_eq!(reply.status, 400, "{name}");
        assert_eq!(reply.body.lines().count(), 1, "{name}: one-line reason");
        let rows = i as i64 + 1;
        wait_until("the quarantine row", || {
            count(&edge.db, "SELECT COUNT(*) FROM quarantine") == rows
        });
        let body = std::fs::read(fixtures().join(format!("{name}.body"))).unwrap();
        let conn = rusqlite::Connection::open(&edge.db).unwrap();
        let (status, reason, stored, uri): (i64, String, Vec<u8>, String) = conn
            .query_row(
                "SELECT status, reason, body, uri FROM quarantine ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(status, 400);
        assert_eq!(reason, reply.body.trim_end());
        assert_eq!(stored, body);
        assert!(uri.starts_with("/bulkdata?oui=0A1B2C"), "{uri}");
    }
    // Nothing refused was stored.
    assert_eq!(outbox_reports(&edge.db).len(), seen);
}

#[test]
fn refusals_get_their_status_and_touch_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(dir.path(), &dead_central(), HOLD);
    let json = [("Content-Type", "application/json")];
    let ok = nvp_body(1, 3);
    // No identity anywhere: 400, quarantined, never stored as "unknown".
    let r = edge.post("/bulkdata", &json, &ok);
    assert_eq!(r.status, 400);
    assert!(
        r.body.starts_with("cannot identify the device"),
        "{}",
        r.body
    );
    // A URL that already had a query: the CPE's part follows a second '?'.
    let r = edge.post("/bulkdata?site=lab?oui=0A1B2C&pc=X&sn=S1", &json, &ok);
    assert_eq!(r.status, 200, "{}", r.body);
    // Unsupported encoding: 415 (iopsys turns compression off).
    let r = edge.post(
        "/bulkdata?oui=0A1B2C&sn=S1",
        &[
            ("Content-Encoding", "br"),
            ("Content-Type", "application/json"),
        ],
        &ok,
    );
    assert_eq!(r.status, 415);
    // Over the body limit, declared up front.
    let big = vec![b' '; 70_000];
    let r = edge.post("/bulkdata?oui=0A1B2C&sn=S1", &json, &big);
    assert_eq!(r.status, 413);
    // Wrong method, wrong path.
    let r = request(edge.addr, "GET", "/bulkdata", &[], b"");
    assert_eq!((r.status, r.header("allow")), (405, Some("POST, PUT")));
    let r = edge.post("/other?oui=0A1B2C&sn=S1", &json, &ok);
    assert_eq!(r.status, 404);
    // Good requests after all that still work.
    let r = edge.post("/bulkdata?oui=0A1B2C&sn=S2", &json, &nvp_body(2, 3));
    assert_eq!(r.status, 200);
    let stored: Vec<(String, u64)> = outbox_reports(&edge.db)
        .iter()
        .map(|e| (e.device.id.clone(), test_id(e)))
        .collect();
    assert_eq!(
        stored,
        vec![("0A1B2C-X-S1".into(), 1), ("0A1B2C-S2".into(), 2)]
    );
    wait_until("the quarantine row", || {
        count(&edge.db, "SELECT COUNT(*) FROM quarantine") == 1
    });
}

/// Chunked bodies, including one over the limit, and `Expect: 100-continue`.
#[test]
fn chunked_and_expect_continue() {
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(dir.path(), &dead_central(), HOLD);
    let chunked = |body: &[u8], expect: bool| -> Reply {
        let mut s = TcpStream::connect(edge.addr).unwrap();
        let mut head =
            "POST /bulkdata?oui=0A1B2C&sn=C1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                .to_string();
        if expect {
            head.push_str("Expect: 100-continue\r\n");
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        if expect {
            let cont = read_reply(&mut r);
            assert_eq!(cont.status, 100);
        }
        for chunk in body.chunks(1000) {
            if s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .is_err()
                || s.write_all(chunk).is_err()
                || s.write_all(b"\r\n").is_err()
            {
                break;
            }
        }
        let _ = s.write_all(b"0\r\n\r\n");
        read_reply(&mut r)
    };
    assert_eq!(chunked(&nvp_body(7, 50), false).status, 200);
    assert_eq!(chunked(&nvp_body(8, 50), true).status, 200);
    let mut big = nvp_body(9, 5000);
    big.truncate(100_000);
    assert_eq!(chunked(&big, false).status, 413);
    let ids: Vec<u64> = outbox_reports(&edge.db).iter().map(test_id).collect();
    assert_eq!(ids, vec![7, 8]);
    assert_eq!(outbox_reports(&edge.db)[1].report.params.len(), 50);
}

#[test]
fn basic_auth_refuses_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(
        dir.path(),
        &dead_central(),
        &format!(
            "{HOLD}[auth]\nuser = \"cpe\"\npassword = \"s3cret\"\n[auth.devices]\n\"router-9\" = \"pw9\"\n"
        ),
    );
    let json = ("Content-Type", "application/json");
    let target = "/bulkdata?oui=0A1B2C&sn=A1";
    let r = edge.post(target, &[json], &nvp_body(1, 3));
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"bulkflow\", charset=\"UTF-8\"")
    );
    // cpe:wrong
    let r = edge.post(
        target,
        &[json, ("Authorization", "Basic Y3BlOndyb25n")],
        &nvp_body(2, 3),
    );
    assert_eq!(r.status, 401);
    // Digest is not supported: challenged like a missing credential.
    let r = edge.post(
        target,
        &[json, ("Authorization", "Digest username=\"cpe\"")],
        &nvp_body(3, 3),
    );
    assert_eq!(r.status, 401);
    // cpe:s3cret (shared) and router-9:pw9 (per device; identity from the Basic user).
    let r = edge.post(
        target,
        &[json, ("Authorization", "Basic Y3BlOnMzY3JldA==")],
        &nvp_body(4, 3),
    );
    assert_eq!(r.status, 200);
    let r = edge.post(
        "/bulkdata",
        &[json, ("Authorization", "Basic cm91dGVyLTk6cHc5")],
        &nvp_body(5, 3),
    );
    assert_eq!(r.status, 200);
    let stored: Vec<(String, u64)> = outbox_reports(&edge.db)
        .iter()
        .map(|e| (e.device.id.clone(), test_id(e)))
        .collect();
    assert_eq!(
        stored,
        vec![("0A1B2C-A1".into(), 4), ("router-9".into(), 5)]
    );
    assert_eq!(count(&edge.db, "SELECT COUNT(*) FROM quarantine"), 0);
}

#[test]
fn a_body_that_never_finishes_gets_408_and_others_are_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("{HOLD}[ingest]\nbody_timeout_secs = 1\nmax_connections = 2\n");
    let edge = Edge::start(dir.path(), &dead_central(), &extra);
    // Promises 100 bytes, sends 10, then stalls.
    let mut slow = TcpStream::connect(edge.addr).unwrap();
    slow.write_all(
        b"POST /bulkdata?oui=0A1B2C&sn=SLOW HTTP/1.1\r\nHost: x\r\n\
          Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"Report\":",
    )
    .unwrap();
    // While it stalls, another CPE is answered (the limit is 2 connections).
    let body = br#"{"Report":[{"CollectionTime":1767225600,"Device.DeviceInfo.UpTime":5}]}"#;
    let ok = edge.post(
        "/bulkdata?oui=0A1B2C&sn=FAST",
        &[("Content-Type", "application/json")],
        body,
    );
    assert_eq!(ok.status, 200);
    let reply = read_reply(&mut BufReader::new(slow.try_clone().unwrap()));
    assert_eq!(reply.status, 408);
    assert_eq!(reply.header("connection"), Some("close"));
    let stored: Vec<String> = outbox_reports(&edge.db)
        .iter()
        .map(|e| e.device.id.clone())
        .collect();
    assert_eq!(stored, ["0A1B2C-FAST"]);
}

/// CPEs whose periodic reports line up connect all at once. 1,000 of them,
/// each sending 4 reports back to back, against the default limit of 256
/// connections in service: every report is answered 200 and stored (the
/// rest wait in the accept queue; with `TcpListener::bind`'s queue of 128
/// the kernel reset some 6% of the connections).
#[test]
fn a_burst_of_cpes_connecting_at_once_is_all_answered() {
    const CPES: usize = 1000;
    const EACH: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(dir.path(), &dead_central(), HOLD);
    let go = std::sync::Arc::new(std::sync::Barrier::new(CPES));
    let addr = edge.addr;
    let cpes: Vec<_> = (0..CPES)
        .map(|i| {
            let go = go.clone();
            std::thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || {
                    go.wait();
                    (0..EACH)
                        .map(|k| {
                            let body = format!(
                                r#"{{"Report":[{{"CollectionTime":{},"Device.DeviceInfo.UpTime":{i}}}]}}"#,
                                1_767_225_600 + k * 60
                            );
                            let target = format!("/bulkdata?oui=0A1B2C&sn=B{i:04}");
                            try_request(addr, &target, body.as_bytes())
                        })
                        .collect::<Vec<_>>()
                })
                .unwrap()
        })
        .collect();
    let answers: Vec<Option<u16>> = cpes.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let failed = answers.iter().filter(|a| **a != Some(200)).count();
    assert_eq!(
        failed,
        0,
        "{failed} of {} reports not answered 200",
        CPES * EACH
    );
    assert_eq!(outbox_reports(&edge.db).len(), CPES * EACH);
}
