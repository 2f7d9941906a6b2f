//! Forwarding to a test central: outage, backlog, delivery in order per
//! device, deletion only after central's commit; plus `status`,
//! `check-config`, `/healthz` and `/metrics`.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::Ordering;

const FAST: &str = "[forward]\ntoken = \"tok\"\nbatch_max_age_ms = 50\nbatch_max_reports = 7\n\
                    backoff_min_ms = 50\nbackoff_max_ms = 200\nack_poll_ms = 100\n";

#[test]
fn outage_backlog_then_delivery_in_order() {
    let central = TestCentral::start(false);
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(dir.path(), &central.url(), FAST);
    let json = [("Content-Type", "application/json")];
    for id in 0..60u64 {
        let target = format!("/bulkdata?oui=0A1B2C&sn=D{}", id % 3);
        let r = edge.post(&target, &json, &nvp_body(id, 5));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // Central is down: everything is still here, nothing was deleted.
    assert_eq!(outbox_reports(&edge.db).len(), 60);
    wait_until("a failed forward", || {
        count(
            &edge.db,
            "SELECT COUNT(*) FROM meta WHERE key = 'last_forward_ok' AND value = 0",
        ) == 1
    });
    assert_eq!(central.received(), 0);

    central.up.store(true, Ordering::SeqCst);
    wait_until("delivery", || central.received() == 60);
    wait_until("the outbox to empty", || {
        count(&edge.db, "SELECT COUNT(*) FROM batches") == 0
            && count(&edge.db, "SELECT COUNT(*) FROM entries") == 0
    });
    let state = central.state.lock().unwrap();
    let mut per_device: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in state.entries() {
        per_device
            .entry(e.device.id.clone())
            .or_default()
            .push(test_id(&e));
        assert_eq!(e.report.params.len(), 5);
    }
    for d in 0..3u64 {
        let want: Vec<u64> = (0..60).filter(|i| i % 3 == d).collect();
        assert_eq!(per_device[&format!("0A1B2C-D{d}")], want, "device D{d}");
    }
    // Batch numbers are dense from 1 and each batch holds at most 7 reports.
    let seqs: Vec<u64> = state.batches.keys().copied().collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(state.batches.values().all(|b| b.len() <= 7));
    assert!(
        state
            .tokens
            .iter()
            .all(|t| t.as_deref() == Some("Bearer tok"))
    );
    drop(state);

    let out = Command::new(env!("CARGO_BIN_EXE_bulkflow-edge"))
        .args(["status", "--config"])
        .arg(&edge.config)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(text.contains("pending reports:   0 "), "{text}");
    assert!(text.contains("last forward:      ok"), "{text}");
    assert!(
        text.contains(&format!("next batch seq:    {}", seqs.len() + 1)),
        "{text}"
    );
}

#[test]
fn reports_keep_flowing_and_admin_endpoints_answer() {
    let central = TestCentral::start(true);
    let dir = tempfile::tempdir().unwrap();
    let mut edge = Edge::start(dir.path(), &central.url(), FAST);
    let json = [("Content-Type", "application/json")];
    for id in 0..10u64 {
        let r = edge.post("/bulkdata?oui=0A1B2C&sn=F1", &json, &nvp_body(id, 3));
        assert_eq!(r.status, 200);
    }
    assert_eq!(edge.post("/bulkdata", &json, b"{").status, 400);
    wait_until("delivery", || central.received() == 10);
    let r = request(edge.addr, "GET", "/healthz", &[], b"");
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    wait_until("the batches to be committed", || {
        let m = request(edge.addr, "GET", "/metrics", &[], b"").body;
        m.contains("bulkflow_edge_outbox_reports 0\n")
    });
    let m = request(edge.addr, "GET", "/metrics", &[], b"").body;
    for line in [
        "bulkflow_edge_requests_total{status=\"200\"} 10",
        "bulkflow_edge_requests_total{status=\"400\"} 1",
        "bulkflow_edge_rejected_total{reason=\"undecodable\"} 1",
        "bulkflow_edge_reports_accepted_total 10",
        "bulkflow_edge_params_accepted_total 30",
        "bulkflow_edge_quarantined_total 1",
        "bulkflow_edge_quarantine_rows 1",
    ] {
        assert!(m.lines().any(|l| l == line), "missing {line:?} in\n{m}");
    }
    // A graceful stop exits 0 and leaves nothing behind.
    assert!(edge.stop().success());
    assert_eq!(count(&edge.db, "SELECT COUNT(*) FROM entries"), 0);
}

#[test]
fn check_config_prints_effective_settings_and_refuses_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "edge_id = \"lab-1\"\nlisten = \"0.0.0.0:8080\"\ncentral_url = \"https://central.example\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bulkflow-edge"))
        .args(["check-config", "--config"])
        .arg(&good)
        .env("BULKFLOW_EDGE_OUTBOX_QUOTA_BYTES", "12345")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("quota_bytes = 12345"), "{text}");
    assert!(text.contains("path = \"/bulkdata\""), "{text}");
    assert!(text.contains("synchronous = \"full\""), "{text}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "edge_id = \"x\"\nlisten = \"nowhere\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bulkflow-edge"))
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: "));
}

#[test]
fn a_batch_central_refuses_for_good_is_set_aside_and_the_rest_flows() {
    let central = TestCentral::start(true);
    central.state.lock().unwrap().refuse.push(1);
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(dir.path(), &central.url(), FAST);
    let json = [("Content-Type", "application/json")];
    for id in 0..20u64 {
        let r = edge.post("/bulkdata?oui=0A1B2C&sn=D1", &json, &nvp_body(id, 3));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    wait_until("the refused batch to be set aside", || {
        count(
            &edge.db,
            "SELECT COUNT(*) FROM rejected_batches WHERE seq = 1 AND status = 400",
        ) == 1
    });
    let parked = count(
        &edge.db,
        "SELECT reports FROM rejected_batches WHERE seq = 1",
    );
    assert!(parked >= 1);
    wait_until("the other reports to arrive", || {
        central.received() as i64 == 20 - parked
    });
    wait_until("the outbox to empty", || {
        count(&edge.db, "SELECT COUNT(*) FROM batches") == 0
    });
    let reason: String = rusqlite::Connection::open(&edge.db)
        .unwrap()
        .query_row(
            "SELECT reason FROM rejected_batches WHERE seq = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(reason, "batch refused for the test");
    let status = Command::new(env!("CARGO_BIN_EXE_bulkflow-edge"))
        .args(["status", "--config"])
        .arg(&edge.config)
        .output()
        .unwrap();
    let text = String::from_utf8(status.stdout).unwrap();
    assert!(text.contains("rejected batches:  1"), "{text}");
}
