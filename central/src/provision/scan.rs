//! Neighbouring Wi-Fi scans: every `interval_secs` (plus random jitter) per
//! device, `DiagnosticsState` is set to `Requested`, then the results are
//! refreshed into GenieACS once the CPE says `Complete`.
//!
//! GenieACS does not send a value equal to its cached copy, and the cache
//! still says `Requested` after an earlier scan, so the state is read from
//! the CPE first (`getParameterValues`). A device whose scan is still
//! `Requested` is left alone until `timeout_secs` have passed.

use super::Provisioner;
use super::nbi::TaskAnswer;
use super::plan::DeviceDoc;
use crate::config::ScanConfig;
use crate::shutdown::Shutdown;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

pub const STATE: &str = "Device.WiFi.NeighboringWiFiDiagnostic.DiagnosticsState";
const OBJECT: &str = "Device.WiFi.NeighboringWiFiDiagnostic.";

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Next scan due at.
    Idle(Instant),
    /// Requested at; results checked every `poll_secs`.
    Running { since: Instant, next_check: Instant },
}

pub async fn run(p: Arc<Provisioner>, cfg: ScanConfig, mut shutdown: Shutdown) {
    let mut phases: HashMap<String, Phase> = HashMap::new();
    let interval = Duration::from_secs(cfg.interval_secs.max(1));
    let poll = Duration::from_secs(cfg.poll_secs.max(1));
    let timeout = Duration::from_secs(cfg.timeout_secs.max(1));
    let jitter = |base: Duration| base + Duration::from_secs(fastrand::u64(0..=cfg.jitter_secs));
    let mut next_list = Instant::now();
    loop {
        if Instant::now() >= next_list {
            next_list = Instant::now() + interval.min(Duration::from_secs(60));
            match p.nbi().devices(&json!({}), &["_id"], 500).await {
                Ok(list) => {
                    for d in &list {
                        let id = DeviceDoc(d).id().to_string();
                        // First scans spread over the jitter window.
                        phases.entry(id).or_insert_with(|| {
                            Phase::Idle(Instant::now() + jitter(Duration::ZERO))
                        });
                    }
                }
                Err(e) => warn!(error = %e, "scan: listing devices failed"),
            }
        }
        let now = Instant::now();
        let due: Vec<(String, Phase)> = phases
            .iter()
            .filter(|(_, ph)| match ph {
                Phase::Idle(at) => now >= *at,
                Phase::Running { next_check, .. } => now >= *next_check,
            })
            .take(cfg.concurrency.max(1))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let mut set = tokio::task::JoinSet::new();
        for (id, phase) in due {
            let p = p.clone();
            set.spawn(async move {
                let next = step(&p, &id, phase, poll, timeout).await;
                (id, next)
            });
        }
        while let Some(r) = set.join_next().await {
            if let Ok((id, next)) = r {
                let next = next.unwrap_or_else(|| Phase::Idle(Instant::now() + jitter(interval)));
                phases.insert(id, next);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = shutdown.wait() => return,
        }
    }
}

/// Advances one device's scan; `None`: done (or given up), schedule the next.
async fn step(
    p: &Provisioner,
    id: &str,
    phase: Phase,
    poll: Duration,
    timeout: Duration,
) -> Option<Phase> {
    let nbi = p.nbi();
    let state = |doc: &serde_json::Value| {
        DeviceDoc(doc)
            .value(STATE)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    match phase {
        Phase::Idle(_) => {
            let read = json!({"name": "getParameterValues", "parameterNames": [STATE]});
            if !done_or_withdrawn(p, id, &read).await {
                debug!(device = id, "scan: device not reachable now");
                return None;
            }
            let doc = nbi.device(id, &["_id", STATE]).await.ok()?;
            if state(&doc) == "Requested" {
                debug!(device = id, "scan: one is still running; skipped");
                let now = Instant::now();
                return Some(Phase::Running {
                    since: now,
                    next_check: now + poll,
                });
            }
            let set =
                json!({"name": "setParameterValues", "parameterValues": [[STATE, "Requested"]]});
            match nbi.post_task(id, &set).await {
                Ok(TaskAnswer::Done) => {
                    let now = Instant::now();
                    Some(Phase::Running {
                        since: now,
                        next_check: now + poll,
                    })
                }
                other => {
                    warn!(device = id, answer = ?other, "scan request not executed");
                    if let Ok(TaskAnswer::Queued { task_id, .. }) = other {
                        let _ = nbi.delete_task(&task_id).await;
                    }
                    None
                }
            }
        }
        Phase::Running { since, .. } => {
            let refresh = json!({"name": "refreshObject", "objectName": OBJECT});
            if !done_or_withdrawn(p, id, &refresh).await {
                return None;
            }
            let doc = nbi.device(id, &["_id", STATE]).await.ok()?;
            let s = state(&doc);
            if s == "Requested" {
                if since.elapsed() >= timeout {
                    warn!(
                        device = id,
                        "scan still Requested after the timeout; given up"
                    );
                    return None;
                }
                return Some(Phase::Running {
                    since,
                    next_check: Instant::now() + poll,
                });
            }
            info!(device = id, state = %s, "neighbour scan finished; results refreshed");
            None
        }
    }
}

/// Runs a read task; true when it ran. A read queued for an offline device is
/// withdrawn: the next round asks again, and one task per round would
/// otherwise pile up at GenieACS (and make the reconciler see the device as
/// having work queued).
async fn done_or_withdrawn(p: &Provisioner, id: &str, task: &serde_json::Value) -> bool {
    let nbi = p.nbi();
    match nbi.post_task(id, task).await {
        Ok(TaskAnswer::Done) => true,
        Ok(TaskAnswer::Queued { task_id, .. }) => {
            let _ = nbi.delete_task(&task_id).await;
            false
        }
        Err(_) => false,
    }
}
