//! `kill -9` during a load of concurrent POSTs: every report answered 200 is
//! still there after the crash, and after a restart the forwarder delivers
//! each exactly once (no report in two different batches).

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const PARAMS: usize = 20;

fn check_content(e: &bulkflow_shared::wire::Entry) {
    use bulkflow_shared::report::Value;
    let id = test_id(e);
    assert_eq!(e.device.id, format!("0A1B2C-K{}", id / 100_000));
    assert_eq!(e.report.params.len(), PARAMS);
    for (i, p) in e.report.params.iter().skip(1).enumerate() {
        assert_eq!(p.path, format!("Device.IP.Interface.{i}.Stats.BytesSent"));
        assert_eq!(p.value, Value::Int((id * 1000 + i as u64) as i64));
    }
}

#[test]
fn kill_9_under_load_loses_nothing_and_duplicates_nothing() {
    let central = TestCentral::start(true);
    let dir = tempfile::tempdir().unwrap();
    let mut edge = Edge::start(
        dir.path(),
        &central.url(),
        "[forward]\nbatch_max_age_ms = 20\nbatch_max_reports = 25\nbackoff_min_ms = 50\n\
         backoff_max_ms = 200\nack_poll_ms = 100\n",
    );
    let ok: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let answered = Arc::new(AtomicUsize::new(0));
    let addr = edge.addr;
    let clients: Vec<_> = (0..8u64)
        .map(|t| {
            let (ok, answered) = (ok.clone(), answered.clone());
            std::thread::spawn(move || {
                for k in 0.. {
                    let id = t * 100_000 + k;
                    let target = format!("/bulkdata?oui=0A1B2C&sn=K{t}");
                    match try_request(addr, &target, &nvp_body(id, PARAMS)) {
                        Some(200) => {
                            ok.lock().unwrap().insert(id);
                            answered.fetch_add(1, Ordering::SeqCst);
                        }
                        Some(other) => panic!("unexpected status {other}"),
                        None => return, // the edge is gone
                    }
                }
            })
        })
        .collect();
    wait_until("load", || answered.load(Ordering::SeqCst) >= 300);
    edge.kill();
    for c in clients {
        c.join().unwrap();
    }
    let ok = ok.lock().unwrap().clone();
    assert!(ok.len() >= 300);

    // After the crash: each 200 is in the outbox file or already at central.
    let mut present: BTreeMap<u64, usize> = BTreeMap::new();
    for e in outbox_reports(&edge.db)
        .iter()
        .chain(central.state.lock().unwrap().entries().iter())
    {
        check_content(e);
        *present.entry(test_id(e)).or_default() += 1;
    }
    for id in &ok {
        assert!(
            present.contains_key(id),
            "report {id} answered 200 but lost"
        );
    }

    // Restart: everything reaches central, each report in exactly one batch.
    edge.restart();
    wait_until("delivery of every answered report", || {
        let entries = central.state.lock().unwrap().entries();
        let got: BTreeSet<u64> = entries.iter().map(test_id).collect();
        ok.is_subset(&got)
    });
    wait_until("the outbox to empty", || {
        count(&edge.db, "SELECT COUNT(*) FROM batches") == 0
            && count(&edge.db, "SELECT COUNT(*) FROM entries") == 0
    });
    let entries = central.state.lock().unwrap().entries();
    let mut seen = BTreeSet::new();
    for e in &entries {
        check_content(e);
        assert!(
            seen.insert(test_id(e)),
            "report {} delivered twice",
            test_id(e)
        );
    }
    // Per device, delivery follows the order the reports were accepted.
    let mut per_device: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in &entries {
        per_device
            .entry(e.device.id.clone())
            .or_default()
            .push(test_id(e));
    }
    for ids in per_device.values() {
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    }
}
