//! `bulkflow-central provision` and the provisioner role of `run`: makes
//! every device's Bulk Data profiles match `[provision]` through GenieACS's
//! NBI, with as few tasks as possible.
//!
//! Per device: skip it while GenieACS still holds queued tasks for it (an
//! offline device's queued `addObject` would otherwise run twice), read its
//! document (a projection, not the whole tree), then follow [`plan::plan`]:
//! refresh, add missing profiles, add missing rows (each time reading the
//! device back, since the CPE picks instance numbers), then one
//! `setParameterValues`. A 202 means "queued": the device is reported as
//! queued, never as done, and is looked at again on the next pass. A faulted
//! task is read from `/faults`, reported with its parameter and code, deleted,
//! and retried without the faulting values; after `max_fault_retries` passes
//! a value is given up and shown.
//!
//! The role loop lists devices every `watch_interval_secs` (id, `_lastBoot`,
//! uptime only) and re-checks at once a device that rebooted, besides the
//! full pass every `sync_interval_secs`.

pub mod names;
pub mod nbi;
pub mod plan;
pub mod preset;
pub mod scan;

use crate::config::{Config, ProfileConfig, ProvisionConfig, ProvisionMode};
use crate::shutdown::Shutdown;
use nbi::{Nbi, NbiError, TaskAnswer};
use plan::{DeviceDoc, Step};
use serde_json::{Value as Json, json};
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// What the planner needs of a device document.
pub const PROJECTION: &[&str] = &[
    "_id",
    "_deviceId",
    "_lastBoot",
    "_tags",
    "Device.DeviceInfo.UpTime",
    "Device.BulkData",
];

/// What the watcher lists: enough to notice reboots.
const WATCH_PROJECTION: &[&str] = &["_id", "_lastBoot", "Device.DeviceInfo.UpTime"];

/// Structural rounds per device and pass (refresh, profiles, rows, set, retries).
const MAX_ROUNDS: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Converged,
    Applied,
    /// Tasks queued at GenieACS (device offline ...): not done.
    Queued(String),
    /// Some values faulted; the rest applied.
    Faulted,
    Failed(String),
    /// Dry run: changes are needed (listed).
    WouldChange,
}

impl Status {
    fn word(&self) -> &'static str {
        match self {
            Status::Converged => "converged",
            Status::Applied => "applied",
            Status::Queued(_) => "queued",
            Status::Faulted => "faulted",
            Status::Failed(_) => "failed",
            Status::WouldChange => "would-change",
        }
    }
}

#[derive(Debug, Clone)]
pub struct FaultReport {
    pub parameter: String,
    pub value: Json,
    pub code: String,
    pub message: String,
    /// "left out, try 1 of 3" / "given up after 3 tries".
    pub action: String,
}

#[derive(Debug, Clone)]
pub struct DeviceReport {
    pub device: String,
    pub status: Status,
    pub tasks: u32,
    pub lines: Vec<String>,
    pub faults: Vec<FaultReport>,
}

impl DeviceReport {
    pub fn render(&self) -> String {
        let mut s = format!(
            "{} {} tasks={}",
            self.device,
            self.status.word(),
            self.tasks
        );
        match &self.status {
            Status::Queued(r) | Status::Failed(r) => {
                let _ = write!(s, ": {r}");
            }
            _ => {}
        }
        for l in &self.lines {
            let _ = write!(s, "\n    {l}");
        }
        for f in &self.faults {
            let _ = write!(
                s,
                "\n    fault {} = {}: {} {} ({})",
                f.parameter, f.value, f.code, f.message, f.action
            );
        }
        s
    }
}

/// What the provisioner remembers of a device between passes.
#[derive(Debug, Default, Clone)]
struct Memo {
    last_boot: Option<String>,
    uptime: Option<u64>,
    checked: Option<Instant>,
    /// Full path -> passes in which setting it faulted.
    faults: HashMap<String, u32>,
}

pub struct Provisioner {
    cfg: ProvisionConfig,
    nbi: Nbi,
    memo: Mutex<HashMap<String, Memo>>,
}

impl Provisioner {
    pub fn new(cfg: &ProvisionConfig) -> Result<Provisioner, NbiError> {
        Ok(Provisioner {
            nbi: Nbi::new(cfg)?,
            cfg: cfg.clone(),
            memo: Mutex::new(HashMap::new()),
        })
    }

    pub fn nbi(&self) -> &Nbi {
        &self.nbi
    }

    fn memo(&self, id: &str) -> Memo {
        self.memo
            .lock()
            .ok()
            .and_then(|m| m.get(id).cloned())
            .unwrap_or_default()
    }

    fn update_memo(&self, id: &str, f: impl FnOnce(&mut Memo)) {
        if let Ok(mut m) = self.memo.lock() {
            f(m.entry(id.to_string()).or_default());
        }
    }

    fn given_up(&self, id: &str) -> BTreeSet<String> {
        self.memo(id)
            .faults
            .into_iter()
            .filter(|(_, n)| *n >= self.cfg.max_fault_retries)
            .map(|(p, _)| p)
            .collect()
    }

    /// One pass over `ids` (all devices when `None`), `concurrency` at a time.
    pub async fn pass(
        self: &Arc<Self>,
        ids: Option<Vec<String>>,
        dry_run: bool,
    ) -> Result<Vec<DeviceReport>, NbiError> {
        let ids = match ids {
            Some(ids) => ids,
            None => self
                .nbi
                .devices(&json!({}), &["_id"], self.cfg.page_size)
                .await?
                .iter()
                .filter_map(|d| d["_id"].as_str().map(String::from))
                .collect(),
        };
        let permits = Arc::new(tokio::sync::Semaphore::new(self.cfg.concurrency.max(1)));
        let mut set = tokio::task::JoinSet::new();
        for (n, id) in ids.into_iter().enumerate() {
            let (this, permits) = (self.clone(), permits.clone());
            set.spawn(async move {
                let _permit = permits.acquire_owned().await;
                (n, this.device(&id, dry_run, None).await)
            });
        }
        let mut reports: Vec<(usize, DeviceReport)> = Vec::new();
        while let Some(r) = set.join_next().await {
            match r {
                Ok(r) => reports.push(r),
                Err(e) => warn!(error = %e, "a device task panicked"),
            }
        }
        reports.sort_by_key(|r| r.0);
        Ok(reports.into_iter().map(|r| r.1).collect())
    }

    /// Reconciles one device.
    pub async fn device(
        &self,
        id: &str,
        dry_run: bool,
        force_refresh: Option<&str>,
    ) -> DeviceReport {
        let mut report = DeviceReport {
            device: id.to_string(),
            status: Status::Converged,
            tasks: 0,
            lines: Vec::new(),
            faults: Vec::new(),
        };
        match self
            .reconcile(id, dry_run, force_refresh, &mut report)
            .await
        {
            Ok(status) => report.status = status,
            Err(NbiError::NoSuchDevice) => {
                report.status = Status::Failed("no such device (404)".into())
            }
            Err(e) => report.status = Status::Failed(e.to_string()),
        }
        if !dry_run {
            self.update_memo(id, |m| m.checked = Some(Instant::now()));
        }
        report
    }

    async fn reconcile(
        &self,
        id: &str,
        dry_run: bool,
        mut force_refresh: Option<&str>,
        report: &mut DeviceReport,
    ) -> Result<Status, NbiError> {
        let pending = self.nbi.tasks(&json!({ "device": id })).await?;
        if !pending.is_empty() {
            return Ok(Status::Queued(format!(
                "{} task(s) still queued at GenieACS (device offline?); checked again next pass",
                pending.len()
            )));
        }
        let mut doc = self.nbi.device(id, PROJECTION).await?;
        self.update_memo(id, |m| {
            let d = DeviceDoc(&doc);
            m.last_boot = d.last_boot().map(String::from);
            m.uptime = d.uptime();
        });
        let mut left_out = self.given_up(id);
        let mut faulted = false;
        for _ in 0..MAX_ROUNDS {
            let plan = plan::plan(&self.cfg.profiles, &doc, &left_out, force_refresh);
            force_refresh = None;
            for n in &plan.notes {
                if !report.lines.contains(n) {
                    report.lines.push(n.clone());
                }
            }
            let Some(first) = plan.steps.first() else {
                return Ok(if faulted {
                    Status::Faulted
                } else if report.tasks > 0 {
                    Status::Applied
                } else {
                    Status::Converged
                });
            };
            if dry_run && !matches!(first, Step::Refresh { .. }) {
                for s in &plan.steps {
                    report.lines.push(format!("would {s}"));
                }
                return Ok(Status::WouldChange);
            }
            // Structural steps of one kind together, then read back.
            let kind = std::mem::discriminant(first);
            let batch: Vec<&Step> = plan
                .steps
                .iter()
                .filter(|s| std::mem::discriminant(*s) == kind)
                .collect();
            for step in batch {
                report.tasks += 1;
                report.lines.push(step.to_string());
                match self.nbi.post_task(id, &step.task()).await? {
                    TaskAnswer::Done => {}
                    TaskAnswer::Queued { task_id, reason } => {
                        let faults = self
                            .nbi
                            .faults(&json!({ "_id": format!("{id}:task_{task_id}") }))
                            .await?;
                        let Some(fault) = faults.first() else {
                            return Ok(Status::Queued(format!(
                                "{} answered 202 {reason}: queued until the device connects",
                                step.task()["name"].as_str().unwrap_or("task")
                            )));
                        };
                        // The faulted task would block the device's queue: remove it
                        // (and its fault), then retry without the faulting values.
                        self.nbi.delete_task(&task_id).await?;
                        faulted = true;
                        let names = fault_parameters(fault, step);
                        for (path, value, code, message) in names {
                            let tries = {
                                let mut n = 0;
                                self.update_memo(id, |m| {
                                    let c = m.faults.entry(path.clone()).or_insert(0);
                                    *c += 1;
                                    n = *c;
                                });
                                n
                            };
                            let action = if tries >= self.cfg.max_fault_retries {
                                format!("given up after {tries} tries")
                            } else {
                                format!(
                                    "left out, the rest applied; try {tries} of {}",
                                    self.cfg.max_fault_retries
                                )
                            };
                            warn!(device = id, parameter = %path, %code, "value faulted");
                            report.faults.push(FaultReport {
                                parameter: path.clone(),
                                value,
                                code,
                                message,
                                action,
                            });
                            left_out.insert(path);
                        }
                        if !matches!(step, Step::Set(_)) {
                            return Ok(Status::Faulted);
                        }
                    }
                }
            }
            doc = self.nbi.device(id, PROJECTION).await?;
            // A set GenieACS accepted but that did not stick (dropped as
            // unknown or read-only): say so instead of sending it again.
            if let Step::Set(sent) = first
                && !faulted
                && let Some(Step::Set(again)) =
                    plan::plan(&self.cfg.profiles, &doc, &left_out, None)
                        .steps
                        .first()
            {
                for c in again {
                    if sent.iter().any(|s| s.path == c.path) {
                        report.lines.push(format!(
                            "{} did not change (dropped by GenieACS or the CPE)",
                            c.path
                        ));
                        left_out.insert(c.path.clone());
                    }
                }
            }
        }
        Ok(Status::Failed("did not converge within one pass".into()))
    }
}

/// The parameters a fault names (`setParameterValuesFault`), with the
/// values that were sent; all of the task's values when it names none.
/// The values a fault names, each with its own fault code and message. A CPE
/// answers a bad SetParameterValues with `9003 Invalid arguments` for the call
/// and the real reason per parameter in `SetParameterValuesFault` (e.g. 9007);
/// GenieACS keeps that list in the fault's `detail`. Without a list every
/// value of the step is suspect, with the call's code.
fn fault_parameters(fault: &Json, step: &Step) -> Vec<(String, Json, String, String)> {
    let Step::Set(changes) = step else {
        return Vec::new();
    };
    let text = |v: &Json| v.as_str().unwrap_or("").to_string();
    let call = (text(&fault["code"]), text(&fault["message"]));
    let named: Vec<(String, String, String)> = fault["detail"]["setParameterValuesFault"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| {
                    let name = f["parameterName"].as_str()?;
                    let code = match &f["faultCode"] {
                        Json::String(c) if !c.is_empty() => format!("cwmp.{c}"),
                        Json::Number(n) => format!("cwmp.{n}"),
                        _ => call.0.clone(),
                    };
                    let message = Some(text(&f["faultString"]))
                        .filter(|m| !m.is_empty())
                        .unwrap_or_else(|| call.1.clone());
                    Some((name.to_string(), code, message))
                })
                .collect()
        })
        .unwrap_or_default();
    changes
        .iter()
        .filter_map(|c| {
            if named.is_empty() {
                return Some((
                    c.path.clone(),
                    c.value.clone(),
                    call.0.clone(),
                    call.1.clone(),
                ));
            }
            let (_, code, message) = named.iter().find(|(n, _, _)| *n == c.path)?;
            Some((
                c.path.clone(),
                c.value.clone(),
                code.clone(),
                message.clone(),
            ))
        })
        .collect()
}

fn summary(reports: &[DeviceReport]) -> String {
    let count = |w: &str| reports.iter().filter(|r| r.status.word() == w).count();
    let would = count("would-change");
    let would = if would > 0 {
        format!(" would-change={would}")
    } else {
        String::new()
    };
    format!(
        "summary devices={}{would} converged={} applied={} queued={} faulted={} failed={} tasks={}",
        reports.len(),
        count("converged"),
        count("applied"),
        count("queued"),
        count("faulted"),
        count("failed"),
        reports.iter().map(|r| r.tasks).sum::<u32>()
    )
}

/// `bulkflow-central provision [--dry-run] [--mode preset]`: one pass, printed.
pub async fn once(cfg: &Config, dry_run: bool, mode: Option<ProvisionMode>) -> anyhow::Result<()> {
    anyhow::ensure!(cfg.provision.enabled(), "[provision] nbi_url is not set");
    let p = Arc::new(Provisioner::new(&cfg.provision)?);
    // A dry run changes nothing, not even the name mapping the store reads.
    if !dry_run {
        names::publish_or_warn(&cfg.postgres.url, &cfg.provision.profiles).await;
    }
    if mode.unwrap_or(cfg.provision.mode) == ProvisionMode::Preset {
        let (script, presets) = preset::generate(&cfg.provision)?;
        if dry_run {
            println!(
                "would PUT /provisions/{}:\n{script}",
                cfg.provision.preset_name
            );
            for (name, preset) in &presets {
                println!("would PUT /presets/{name}: {preset}");
            }
            return Ok(());
        }
        install_presets(&p, &cfg.provision.preset_name, &script, &presets).await?;
        println!(
            "installed provision and preset {:?} (applied by GenieACS on 0 BOOTSTRAP / 1 BOOT)",
            cfg.provision.preset_name
        );
        return Ok(());
    }
    let reports = p.pass(None, dry_run).await?;
    for r in &reports {
        println!("{}", r.render());
    }
    println!("{}", summary(&reports));
    Ok(())
}

async fn install_presets(
    p: &Provisioner,
    name: &str,
    script: &str,
    presets: &[(String, Json)],
) -> Result<(), NbiError> {
    p.nbi().put_provision(name, script).await?;
    for (preset_name, preset) in presets {
        p.nbi().put_preset(preset_name, preset).await?;
    }
    Ok(())
}

/// The provisioner role inside `run`.
pub async fn run(cfg: Config, mut shutdown: Shutdown) -> anyhow::Result<()> {
    let pc = cfg.provision.clone();
    let p = Arc::new(Provisioner::new(&pc)?);
    info!(nbi = %pc.nbi_url, profiles = pc.profiles.len(), "provisioner started");
    if pc.mode == ProvisionMode::Preset {
        let (script, presets) = preset::generate(&pc)?;
        install_presets(&p, &pc.preset_name, &script, &presets).await?;
        info!(name = %pc.preset_name, "provision script and preset installed");
    }
    let scans = (pc.scan.interval_secs > 0)
        .then(|| tokio::spawn(scan::run(p.clone(), pc.scan.clone(), shutdown.clone())));
    let sync = Duration::from_secs(pc.sync_interval_secs.max(1));
    let watch = Duration::from_secs(pc.watch_interval_secs.max(1)).min(sync);
    let mut published = false;
    loop {
        if !published {
            published = names::publish(&cfg.postgres.url, &pc.profiles)
                .await
                .is_ok();
        }
        if pc.mode == ProvisionMode::Tasks {
            match due_devices(&p, sync).await {
                Ok(due) if !due.is_empty() => {
                    let mut reports = Vec::new();
                    let (forced, rest): (Vec<_>, Vec<_>) =
                        due.into_iter().partition(|d| d.1.is_some());
                    for (id, why) in forced {
                        reports.push(p.device(&id, false, why.as_deref()).await);
                    }
                    if !rest.is_empty() {
                        match p
                            .pass(Some(rest.into_iter().map(|d| d.0).collect()), false)
                            .await
                        {
                            Ok(r) => reports.extend(r),
                            Err(e) => warn!(error = %e, "provisioning pass failed"),
                        }
                    }
                    for r in &reports {
                        if r.status != Status::Converged {
                            info!("{}", r.render());
                        }
                    }
                    info!("{}", summary(&reports));
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "listing devices failed; retrying"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(watch) => {}
            _ = shutdown.wait() => break,
        }
    }
    if let Some(s) = scans {
        let _ = s.await;
    }
    info!("provisioner stopped");
    Ok(())
}

/// Devices to check now: never checked, not checked for `sync`, or
/// rebooted since the last look (with the reason, which forces a re-read).
async fn due_devices(
    p: &Arc<Provisioner>,
    sync: Duration,
) -> Result<Vec<(String, Option<String>)>, NbiError> {
    let list = p
        .nbi
        .devices(&json!({}), WATCH_PROJECTION, p.cfg.page_size)
        .await?;
    let mut due = Vec::new();
    for doc in &list {
        let d = DeviceDoc(doc);
        let id = d.id().to_string();
        let m = p.memo(&id);
        let rebooted = match (&m.last_boot, d.last_boot()) {
            (Some(a), Some(b)) if a != b => Some(format!("rebooted at {b}")),
            _ => match (m.uptime, d.uptime()) {
                (Some(a), Some(b)) if b < a => Some(format!("uptime fell from {a} to {b}")),
                _ => None,
            },
        };
        if rebooted.is_some() {
            info!(device = %id, why = ?rebooted, "re-checking a rebooted device now");
            due.push((id, rebooted));
        } else if m.checked.is_none_or(|t| t.elapsed() >= sync) {
            due.push((id, None));
        }
    }
    Ok(due)
}

/// Every Name -> Reference the configured profiles define.
pub fn name_map(profiles: &[ProfileConfig]) -> Vec<(String, String, String)> {
    profiles
        .iter()
        .flat_map(|p| {
            p.parameters
                .iter()
                .filter(|r| !r.name.is_empty())
                .map(|r| (r.name.clone(), r.reference.clone(), p.alias.clone()))
        })
        .collect()
}
