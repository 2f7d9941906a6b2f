//! The disk quota: `reject` answers 503 + Retry-After and stores nothing
//! more; `drop_oldest` keeps accepting, deletes the oldest and counts them.

mod common;

use common::*;

const BASE: &str = "[forward]\nbatch_max_age_ms = 3600000\n";

#[test]
fn reject_answers_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(
        dir.path(),
        &dead_central(),
        &format!("quota_bytes = 4000\nretry_after_secs = 7\n{BASE}"),
    );
    let json = [("Content-Type", "application/json")];
    let mut accepted = 0;
    let mut refused = 0;
    for id in 0..200u64 {
        let r = edge.post("/bulkdata?oui=0A1B2C&sn=Q1", &json, &nvp_body(id, 30));
        match r.status {
            200 => {
                assert_eq!(refused, 0, "accepted after a refusal");
                accepted += 1;
            }
            503 => {
                assert_eq!(r.header("retry-after"), Some("7"));
                assert_eq!(r.body, "outbox is full (quota 4000 bytes)\n");
                refused += 1;
            }
            s => panic!("status {s}"),
        }
    }
    assert!(accepted > 0 && refused > 0, "{accepted} / {refused}");
    let stored: Vec<u64> = outbox_reports(&edge.db).iter().map(test_id).collect();
    assert_eq!(stored, (0..accepted).collect::<Vec<_>>());
    let m = request(edge.addr, "GET", "/metrics", &[], b"").body;
    assert!(
        m.contains(&format!(
            "bulkflow_edge_requests_total{{status=\"503\"}} {refused}\n"
        )),
        "{m}"
    );
    assert!(m.contains("bulkflow_edge_dropped_reports_total 0\n"), "{m}");
}

#[test]
fn drop_oldest_keeps_the_newest_and_counts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start(
        dir.path(),
        &dead_central(),
        &format!("quota_bytes = 4000\nquota_policy = \"drop_oldest\"\n{BASE}"),
    );
    let json = [("Content-Type", "application/json")];
    for id in 0..200u64 {
        let r = edge.post("/bulkdata?oui=0A1B2C&sn=Q2", &json, &nvp_body(id, 30));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let stored: Vec<u64> = outbox_reports(&edge.db).iter().map(test_id).collect();
    let kept = stored.len() as u64;
    assert!(kept > 0 && kept < 200, "{kept}");
    assert_eq!(stored, (200 - kept..200).collect::<Vec<_>>());
    let dropped = 200 - kept;
    assert_eq!(
        count(
            &edge.db,
            "SELECT value FROM meta WHERE key = 'dropped_reports'"
        ),
        dropped as i64
    );
    let m = request(edge.addr, "GET", "/metrics", &[], b"").body;
    assert!(
        m.contains(&format!("bulkflow_edge_dropped_reports_total {dropped}\n")),
        "{m}"
    );
}
