//! The emulated fleet behind the NBI emulator: every CPE has its own TR-181
//! data model (telemetry from [`Cpe`] plus the writable Bulk Data and
//! neighbour-scan objects), and the ACS side keeps a separate *cache* of it,
//! the way GenieACS keeps a device document that is only as fresh as its last
//! fetch. Tasks act on the cache and the model exactly as far as a provisioner
//! can observe (reference section 9):
//!
//! - a device nobody touched shows only its Inform parameters: `Device.BulkData`
//!   appears after a `refreshObject`/`getParameterValues`;
//! - `addObject` always creates a new instance (CPE-chosen number), and does
//!   nothing (answer 200) when the cached object is not writable;
//! - `setParameterValues` silently drops unknown and read-only parameters and
//!   values equal to the cached ones; the CPE checks the rest and faults the
//!   whole RPC (`cwmp.9003`, with 9007 per invalid value) when one is invalid;
//! - a reboot leaves the cache as it was (stale), moves `_lastBoot`, and on
//!   some vendors wipes the Bulk Data profiles.
//!
//! Enabled profiles really report: [`Fleet::due_reports`] hands out the POSTs.

use crate::cpe::{Cpe, Encoding, Snapshot, TimeStyle, Val};
use bulkflow_shared::identity::genieacs_id;
use chrono::{DateTime, Utc};
use serde_json::{Value as Json, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// What differs between the emulated vendors' Bulk Data implementations.
#[derive(Debug, Clone, Copy)]
pub struct Traits {
    pub manufacturer: &'static str,
    /// `BulkData.MinReportingInterval`: smaller ReportingIntervals fault (9007).
    pub min_interval: u64,
    pub encodings: &'static str,
    /// JSON report formats the agent accepts (obuspa: NameValuePair only).
    pub json_formats: &'static [&'static str],
    pub compressions: &'static str,
    /// Some CPEs forget their Bulk Data profiles on reboot.
    pub loses_profiles_on_reboot: bool,
    /// TP-Link's vendor parameter on every profile.
    pub vendor_param: Option<&'static str>,
}

pub fn traits(oui: &str) -> Traits {
    let base = Traits {
        manufacturer: "Acme",
        min_interval: 10,
        encodings: "JSON,CSV",
        json_formats: &["ObjectHierarchy", "NameValuePair"],
        compressions: "GZIP",
        loses_profiles_on_reboot: false,
        vendor_param: None,
    };
    match oui {
        "30DE4B" => Traits {
            manufacturer: "TP-Link",
            loses_profiles_on_reboot: true,
            vendor_param: Some("X_TP_CollectInterval"),
            ..base
        },
        "00236A" => Traits {
            manufacturer: "Sercomm",
            compressions: "GZIP,Deflate",
            ..base
        },
        "0A1B2C" => Traits {
            manufacturer: "obuspa",
            encodings: "JSON",
            json_formats: &["NameValuePair"],
            ..base
        },
        "C0FFEE" => Traits {
            manufacturer: "Casa",
            min_interval: 30,
            ..base
        },
        _ => base,
    }
}

/// One parameter of a data model (the CPE's or the ACS's cached copy).
#[derive(Debug, Clone, PartialEq)]
pub struct Leaf {
    pub value: Json,
    pub typ: &'static str,
    pub writable: bool,
}

fn leaf(value: impl Into<Json>, typ: &'static str, writable: bool) -> Leaf {
    Leaf {
        value: value.into(),
        typ,
        writable,
    }
}

#[derive(Debug, Clone)]
struct Cached {
    leaf: Leaf,
    at: DateTime<Utc>,
}

/// A GenieACS task as posted (the JSON object) with its id.
#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    pub device: String,
    pub body: Json,
    pub timestamp: DateTime<Utc>,
}

impl Task {
    pub fn to_json(&self) -> Json {
        let mut t = self.body.clone();
        if let Json::Object(m) = &mut t {
            m.insert("_id".into(), self.id.clone().into());
            m.insert("device".into(), self.device.clone().into());
            m.insert("timestamp".into(), iso(&self.timestamp).into());
        }
        t
    }

    pub fn name(&self) -> &str {
        self.body.get("name").and_then(Json::as_str).unwrap_or("")
    }
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub device: String,
    pub channel: String,
    pub code: String,
    pub message: String,
    pub detail: Json,
    pub timestamp: DateTime<Utc>,
}

impl Fault {
    pub fn id(&self) -> String {
        format!("{}:{}", self.device, self.channel)
    }

    pub fn to_json(&self) -> Json {
        json!({
            "_id": self.id(), "device": self.device, "channel": self.channel,
            "timestamp": iso(&self.timestamp), "code": self.code, "message": self.message,
            "detail": self.detail, "retries": 0, "provisions": "[]",
        })
    }
}

/// A task's outcome, as the NBI answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Executed in a session (200).
    Done,
    /// Queued: 202 with this reason phrase.
    Queued(&'static str),
    /// The task faulted: 202 `Task faulted`, fault stored.
    Faulted,
    /// Not a valid task (400).
    Invalid(String),
}

/// Per-profile reporting state on the CPE.
#[derive(Debug, Default)]
struct Reporter {
    signature: String,
    next_due: Option<Instant>,
    retained: Vec<Snapshot>,
    retry: u32,
    next_retry: Option<Instant>,
    in_flight: bool,
}

pub struct SimDevice {
    pub id: String,
    pub cpe: Cpe,
    pub traits: Traits,
    pub tags: Vec<String>,
    pub online: bool,
    registered: DateTime<Utc>,
    last_inform: DateTime<Utc>,
    last_boot: DateTime<Utc>,
    /// The CPE's own configurable state (Bulk Data, scan state), by full path.
    config: BTreeMap<String, Leaf>,
    /// Object paths (no trailing dot) the CPE has, with their writability.
    objects: BTreeMap<String, bool>,
    /// Secured values (`HTTP.Password`): stored here, read back empty.
    secrets: BTreeMap<String, String>,
    cache: BTreeMap<String, Cached>,
    cached_objects: BTreeMap<String, (bool, DateTime<Utc>)>,
    scan_done_at: Option<Instant>,
    sim_carry: f64,
    reporters: BTreeMap<u32, Reporter>,
    pub reports_ok: u64,
    pub reports_failed: u64,
    pub scans: u64,
}

const BULK: &str = "Device.BulkData";
const PROFILE: &str = "Device.BulkData.Profile";
const SCAN_STATE: &str = "Device.WiFi.NeighboringWiFiDiagnostic.DiagnosticsState";

/// Inform parameters: always fresh in the cache after a session.
const INFORM: &[&str] = &[
    "Device.DeviceInfo.Manufacturer",
    "Device.DeviceInfo.ManufacturerOUI",
    "Device.DeviceInfo.ProductClass",
    "Device.DeviceInfo.SerialNumber",
    "Device.DeviceInfo.SoftwareVersion",
    "Device.DeviceInfo.HardwareVersion",
    "Device.DeviceInfo.UpTime",
    "Device.ManagementServer.ConnectionRequestURL",
    "Device.ManagementServer.ParameterKey",
];

pub fn iso(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

impl SimDevice {
    fn new(index: usize, seed: u64, tag: &str, now: DateTime<Utc>) -> SimDevice {
        let mut cpe = Cpe::new(index, seed);
        cpe.scan_state = "None";
        let t = traits(&cpe.oui);
        let id = genieacs_id(&cpe.oui, &cpe.product_class, &cpe.serial);
        let mut config = BTreeMap::new();
        let mut add = |p: &str, l: Leaf| {
            config.insert(p.to_string(), l);
        };
        add("Device.BulkData.Enable", leaf(false, "xsd:boolean", true));
        add(
            "Device.BulkData.Status",
            leaf("Disabled", "xsd:string", false),
        );
        add(
            "Device.BulkData.MinReportingInterval",
            leaf(t.min_interval, "xsd:unsignedInt", false),
        );
        add(
            "Device.BulkData.Protocols",
            leaf("HTTP", "xsd:string", false),
        );
        add(
            "Device.BulkData.EncodingTypes",
            leaf(t.encodings, "xsd:string", false),
        );
        add(
            "Device.BulkData.ParameterWildCardSupported",
            leaf(true, "xsd:boolean", false),
        );
        add(
            "Device.BulkData.MaxNumberOfProfiles",
            leaf(4, "xsd:int", false),
        );
        add(
            "Device.BulkData.MaxNumberOfParameterReferences",
            leaf(-1, "xsd:int", false),
        );
        let mut objects = BTreeMap::new();
        objects.insert(BULK.to_string(), false);
        objects.insert(PROFILE.to_string(), true);
        let mut d = SimDevice {
            id,
            traits: t,
            tags: vec![tag.to_string()],
            online: true,
            registered: now,
            last_inform: now,
            last_boot: now - chrono::Duration::seconds(cpe.uptime_s() as i64),
            cpe,
            config,
            objects,
            secrets: BTreeMap::new(),
            cache: BTreeMap::new(),
            cached_objects: BTreeMap::new(),
            scan_done_at: None,
            sim_carry: 0.0,
            reporters: BTreeMap::new(),
            reports_ok: 0,
            reports_failed: 0,
            scans: 0,
        };
        d.inform(now);
        d
    }

    fn inform_leaf(&self, path: &str) -> Option<Leaf> {
        let s = |v: &str| Some(leaf(v, "xsd:string", false));
        match path {
            "Device.DeviceInfo.Manufacturer" => s(self.traits.manufacturer),
            "Device.DeviceInfo.ManufacturerOUI" => s(&self.cpe.oui),
            "Device.DeviceInfo.ProductClass" => s(&self.cpe.product_class),
            "Device.DeviceInfo.SerialNumber" => s(&self.cpe.serial),
            "Device.DeviceInfo.SoftwareVersion" => s("1.2.3"),
            "Device.DeviceInfo.HardwareVersion" => s("v1"),
            "Device.ManagementServer.ConnectionRequestURL" => s("http://192.0.2.1:7547/"),
            "Device.ManagementServer.ParameterKey" => s(""),
            _ => None,
        }
    }

    /// The CPE's whole data model as it is now.
    fn model(&self) -> BTreeMap<String, Leaf> {
        let mut m: BTreeMap<String, Leaf> = BTreeMap::new();
        for p in INFORM {
            if let Some(l) = self.inform_leaf(p) {
                m.insert(p.to_string(), l);
            }
        }
        for (path, v) in self.cpe.params() {
            let (value, typ) = match v {
                Val::UInt(u) if u > u64::from(u32::MAX) => {
                    (Json::from(u.to_string()), "xsd:unsignedLong")
                }
                Val::UInt(u) => (Json::from(u), "xsd:unsignedInt"),
                Val::Int(i) => (Json::from(i), "xsd:int"),
                Val::Bool(b) => (Json::from(b), "xsd:boolean"),
                Val::Str(s) => (Json::from(s), "xsd:string"),
            };
            let writable = path == SCAN_STATE;
            m.insert(
                path,
                Leaf {
                    value,
                    typ,
                    writable,
                },
            );
        }
        for (p, l) in &self.config {
            m.insert(p.clone(), l.clone());
        }
        let profiles = self.instances(PROFILE).len();
        m.insert(
            "Device.BulkData.ProfileNumberOfEntries".into(),
            leaf(profiles as u64, "xsd:unsignedInt", false),
        );
        m.insert(
            "Device.BulkData.Status".into(),
            leaf(
                if self.bool_at("Device.BulkData.Enable") {
                    "Enabled"
                } else {
                    "Disabled"
                },
                "xsd:string",
                false,
            ),
        );
        m
    }

    /// Object paths of the model, writable or not.
    fn model_objects(&self, model: &BTreeMap<String, Leaf>) -> BTreeMap<String, bool> {
        let mut o = self.objects.clone();
        for p in model.keys() {
            let mut parts: Vec<&str> = p.split('.').collect();
            parts.pop();
            while !parts.is_empty() {
                o.entry(parts.join(".")).or_insert(false);
                parts.pop();
            }
        }
        o
    }

    fn instances(&self, object: &str) -> Vec<u32> {
        let prefix = format!("{object}.");
        self.objects
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter(|r| !r.contains('.'))
            .filter_map(|r| r.parse().ok())
            .collect()
    }

    fn bool_at(&self, path: &str) -> bool {
        self.config.get(path).and_then(|l| l.value.as_bool()) == Some(true)
    }

    fn text_at(&self, path: &str) -> String {
        match self.config.get(path).map(|l| &l.value) {
            Some(Json::String(s)) => s.clone(),
            Some(Json::Null) | None => String::new(),
            Some(v) => v.to_string(),
        }
    }

    fn u64_at(&self, path: &str) -> u64 {
        self.config
            .get(path)
            .and_then(|l| l.value.as_u64())
            .unwrap_or(0)
    }

    /// GenieACS fetches `name` (a parameter, an object with or without the
    /// trailing dot, or "" for everything) from the CPE into its cache.
    fn fetch(&mut self, name: &str, now: DateTime<Utc>) {
        let model = self.model();
        let objects = self.model_objects(&model);
        let p = name.trim_end_matches('.');
        if let Some(l) = model.get(p) {
            self.cache.insert(
                p.to_string(),
                Cached {
                    leaf: l.clone(),
                    at: now,
                },
            );
            return;
        }
        let under = |k: &str| p.is_empty() || k == p || k.starts_with(&format!("{p}."));
        self.cache.retain(|k, _| !under(k));
        self.cached_objects.retain(|k, _| !under(k));
        if !p.is_empty() && !objects.contains_key(p) {
            return;
        }
        for (k, l) in model.iter().filter(|(k, _)| under(k)) {
            self.cache.insert(
                k.clone(),
                Cached {
                    leaf: l.clone(),
                    at: now,
                },
            );
        }
        for (k, w) in objects.iter().filter(|(k, _)| under(k)) {
            self.cached_objects.insert(k.clone(), (*w, now));
        }
        // Ancestors are known to exist (not discovered: no new timestamp).
        let mut parts: Vec<&str> = p.split('.').collect();
        while parts.len() > 1 {
            parts.pop();
            let a = parts.join(".");
            let w = objects.get(&a).copied().unwrap_or(false);
            self.cached_objects.entry(a).or_insert((w, now));
        }
    }

    /// A session opened by the CPE: Inform parameters refreshed.
    fn inform(&mut self, now: DateTime<Utc>) {
        self.last_inform = now;
        for p in INFORM {
            self.fetch(p, now);
        }
    }

    pub fn reboot(&mut self, wipe: bool, now: DateTime<Utc>) {
        self.cpe.reboot();
        self.cpe.scan_state = "None";
        self.scan_done_at = None;
        self.config
            .insert(SCAN_STATE.into(), leaf("None", "xsd:string", true));
        if wipe || self.traits.loses_profiles_on_reboot {
            self.remove_subtree(PROFILE, false);
        }
        self.reporters.clear();
        self.last_boot = now;
        self.inform(now);
    }

    fn remove_subtree(&mut self, object: &str, including: bool) {
        let prefix = format!("{object}.");
        self.config.retain(|k, _| !k.starts_with(&prefix));
        self.secrets.retain(|k, _| !k.starts_with(&prefix));
        self.objects
            .retain(|k, _| !(k.starts_with(&prefix) || (including && k == object)));
    }

    /// Runs one task in a session. `now` is the session's time.
    pub fn execute(&mut self, task: &Task, now: DateTime<Utc>) -> Result<(), Box<Fault>> {
        let body = &task.body;
        let device_id = self.id.clone();
        let fault = |code: &str, message: &str, detail: Json| {
            Box::new(Fault {
                device: device_id.clone(),
                channel: format!("task_{}", task.id),
                code: code.into(),
                message: message.into(),
                detail,
                timestamp: now,
            })
        };
        match task.name() {
            "getParameterValues" => {
                for n in body["parameterNames"].as_array().into_iter().flatten() {
                    if let Some(n) = n.as_str() {
                        self.fetch(n, now);
                    }
                }
                Ok(())
            }
            "refreshObject" => {
                let name = body["objectName"].as_str().unwrap_or("").to_string();
                self.fetch(&name, now);
                Ok(())
            }
            "setParameterValues" => {
                let list: Vec<(String, Json)> = body["parameterValues"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| Some((e.get(0)?.as_str()?.to_string(), e.get(1)?.clone())))
                    .collect();
                self.set_values(&list, now)
                    .map_err(|faults| spv_fault(&faults, fault))
            }
            "addObject" => {
                let object = body["objectName"]
                    .as_str()
                    .unwrap_or("")
                    .trim_end_matches('.')
                    .to_string();
                if !self.cached_objects.contains_key(&object) {
                    self.fetch(&object, now);
                }
                // GenieACS decides from its cache: not writable, nothing happens.
                if self.cached_objects.get(&object).map(|o| o.0) != Some(true) {
                    return Ok(());
                }
                if self.objects.get(&object) != Some(&true) {
                    return Err(fault("cwmp.9005", "Invalid parameter name", json!({})));
                }
                let n = self.instances(&object).into_iter().max().unwrap_or(0) + 1;
                let inst = format!("{object}.{n}");
                self.create_instance(&object, n);
                let rel: Vec<(String, Json)> = body["parameterValues"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| {
                        Some((format!("{inst}.{}", e.get(0)?.as_str()?), e.get(1)?.clone()))
                    })
                    .collect();
                self.fetch(&inst, now);
                if !rel.is_empty() {
                    self.set_values(&rel, now)
                        .map_err(|faults| spv_fault(&faults, fault))?;
                }
                Ok(())
            }
            "deleteObject" => {
                let object = body["objectName"]
                    .as_str()
                    .unwrap_or("")
                    .trim_end_matches('.')
                    .to_string();
                if self.objects.contains_key(&object) {
                    self.remove_subtree(&object, true);
                }
                self.fetch(&object, now);
                Ok(())
            }
            "reboot" => {
                self.reboot(false, now);
                Ok(())
            }
            "factoryReset" => {
                self.reboot(true, now);
                self.config.insert(
                    BULK.to_string() + ".Enable",
                    leaf(false, "xsd:boolean", true),
                );
                Ok(())
            }
            "provisions" | "download" => Ok(()),
            _ => Ok(()),
        }
    }

    fn create_instance(&mut self, object: &str, n: u32) {
        let inst = format!("{object}.{n}");
        self.objects.insert(inst.clone(), true);
        let mut add = |rel: &str, l: Leaf| {
            self.config.insert(format!("{inst}.{rel}"), l);
        };
        if object == PROFILE {
            add("Enable", leaf(false, "xsd:boolean", true));
            add("Alias", leaf(format!("cpe-{n}"), "xsd:string", true));
            add("Name", leaf("", "xsd:string", true));
            add("NumberOfRetainedFailedReports", leaf(0, "xsd:int", true));
            add("Protocol", leaf("HTTP", "xsd:string", true));
            add("EncodingType", leaf("JSON", "xsd:string", true));
            add("ReportingInterval", leaf(86_400, "xsd:unsignedInt", true));
            add(
                "TimeReference",
                leaf("0001-01-01T00:00:00Z", "xsd:dateTime", true),
            );
            add("CSVEncoding.FieldSeparator", leaf(",", "xsd:string", true));
            add("CSVEncoding.RowSeparator", leaf("\r\n", "xsd:string", true));
            add(
                "CSVEncoding.EscapeCharacter",
                leaf("\"", "xsd:string", true),
            );
            add(
                "CSVEncoding.ReportFormat",
                leaf("ParameterPerColumn", "xsd:string", true),
            );
            add(
                "CSVEncoding.RowTimestamp",
                leaf("Unix-Epoch", "xsd:string", true),
            );
            // The agent's own default: its first supported format.
            let default_format = self
                .traits
                .json_formats
                .first()
                .copied()
                .unwrap_or("ObjectHierarchy");
            add(
                "JSONEncoding.ReportFormat",
                leaf(default_format, "xsd:string", true),
            );
            add(
                "JSONEncoding.ReportTimestamp",
                leaf("Unix-Epoch", "xsd:string", true),
            );
            add("HTTP.URL", leaf("", "xsd:string", true));
            add("HTTP.Username", leaf("", "xsd:string", true));
            add("HTTP.Password", leaf("", "xsd:string", true));
            add(
                "HTTP.CompressionsSupported",
                leaf(self.traits.compressions, "xsd:string", false),
            );
            add("HTTP.Compression", leaf("None", "xsd:string", true));
            add(
                "HTTP.MethodsSupported",
                leaf("POST,PUT", "xsd:string", false),
            );
            add("HTTP.Method", leaf("POST", "xsd:string", true));
            add("HTTP.UseDateHeader", leaf(true, "xsd:boolean", true));
            add("HTTP.RetryEnable", leaf(false, "xsd:boolean", true));
            add(
                "HTTP.RetryMinimumWaitInterval",
                leaf(5, "xsd:unsignedInt", true),
            );
            add(
                "HTTP.RetryIntervalMultiplier",
                leaf(2000, "xsd:unsignedInt", true),
            );
            add("HTTP.PersistAcrossReboot", leaf(false, "xsd:boolean", true));
            if let Some(v) = self.traits.vendor_param {
                add(v, leaf(0, "xsd:unsignedInt", true));
            }
            for o in ["CSVEncoding", "JSONEncoding", "HTTP"] {
                self.objects.insert(format!("{inst}.{o}"), false);
            }
            self.objects.insert(format!("{inst}.Parameter"), true);
        } else if object.ends_with(".Parameter") {
            add("Name", leaf("", "xsd:string", true));
            add("Reference", leaf("", "xsd:string", true));
        }
    }

    /// setParameterValues as GenieACS + the CPE do it. Err: the CPE's
    /// per-parameter faults (nothing applied).
    fn set_values(
        &mut self,
        list: &[(String, Json)],
        now: DateTime<Utc>,
    ) -> Result<(), Vec<(String, &'static str)>> {
        let mut changes: Vec<(String, Json)> = Vec::new();
        for (path, raw) in list {
            if !self.cache.contains_key(path) {
                self.fetch(path, now);
            }
            let Some(cached) = self.cache.get(path) else {
                continue; // unknown: silently dropped
            };
            if !cached.leaf.writable {
                continue; // read-only: silently dropped
            }
            let value = convert(raw, cached.leaf.typ);
            if value == cached.leaf.value {
                continue; // equal to the cached value: not sent
            }
            changes.push((path.clone(), value));
        }
        let faults: Vec<(String, &'static str)> = changes
            .iter()
            .filter_map(|(p, v)| self.check(p, v).err().map(|why| (p.clone(), why)))
            .collect();
        if !faults.is_empty() {
            return Err(faults);
        }
        for (p, v) in changes {
            if p.ends_with(".HTTP.Password") {
                self.secrets.insert(p.clone(), value_text(&v));
                if let Some(c) = self.cache.get_mut(&p) {
                    c.leaf.value = v;
                    c.at = now;
                }
                continue;
            }
            if p == SCAN_STATE {
                // The CPE runs the scan after the session; results replace the old ones.
                self.cpe.scan_state = "Requested";
                self.scan_done_at = Some(Instant::now());
                self.scans += 1;
            }
            if let Some(l) = self.config.get_mut(&p) {
                l.value = v.clone();
            } else if p == SCAN_STATE {
                self.config
                    .insert(p.clone(), leaf(v.clone(), "xsd:string", true));
            }
            if let Some(c) = self.cache.get_mut(&p) {
                c.leaf.value = v;
                c.at = now;
            }
        }
        Ok(())
    }

    /// The CPE's own validation of one value.
    fn check(&self, path: &str, v: &Json) -> Result<(), &'static str> {
        let l = self.model().get(path).cloned();
        let Some(l) = l else { return Ok(()) };
        let invalid = Err("Invalid parameter value");
        match l.typ {
            "xsd:boolean" if !v.is_boolean() => return invalid,
            "xsd:unsignedInt" if v.as_u64().is_none() => return invalid,
            "xsd:int" if v.as_i64().is_none() => return invalid,
            _ => {}
        }
        let s = v.as_str().unwrap_or("");
        let last = path.rsplit('.').next().unwrap_or("");
        let listed = |list: &str| list.split(',').any(|x| x == s);
        match last {
            "ReportingInterval" => {
                let n = v.as_u64().unwrap_or(0);
                if n < 1 || n < self.traits.min_interval {
                    return invalid;
                }
            }
            "EncodingType" if !listed(self.traits.encodings) => return invalid,
            "Protocol" if s != "HTTP" => return invalid,
            "Compression" if s != "None" && !listed(self.traits.compressions) => return invalid,
            "Method" if s != "POST" && s != "PUT" => return invalid,
            "RetryIntervalMultiplier" if !(1000..=65535).contains(&v.as_u64().unwrap_or(0)) => {
                return invalid;
            }
            "DiagnosticsState" if s != "Requested" && s != "Canceled" => return invalid,
            "ReportFormat"
                if path.contains(".JSONEncoding.") && !self.traits.json_formats.contains(&s) =>
            {
                return invalid;
            }
            "ReportFormat" if path.contains(".JSONEncoding.") => {}
            "ReportFormat" if s != "ParameterPerRow" && s != "ParameterPerColumn" => {
                return invalid;
            }
            "ReportTimestamp" | "RowTimestamp" if !listed("Unix-Epoch,ISO-8601,None") => {
                return invalid;
            }
            _ => {}
        }
        Ok(())
    }

    /// The device as GenieACS's `GET /devices` shows it (whole document).
    pub fn document(&self) -> Json {
        let mut root = serde_json::Map::new();
        root.insert("_id".into(), self.id.clone().into());
        root.insert(
            "_deviceId".into(),
            json!({"_Manufacturer": self.traits.manufacturer, "_OUI": self.cpe.oui,
                   "_ProductClass": self.cpe.product_class, "_SerialNumber": self.cpe.serial}),
        );
        root.insert("_registered".into(), iso(&self.registered).into());
        root.insert("_lastInform".into(), iso(&self.last_inform).into());
        root.insert("_lastBoot".into(), iso(&self.last_boot).into());
        if !self.tags.is_empty() {
            root.insert("_tags".into(), self.tags.clone().into());
        }
        root.insert("_timestamp".into(), iso(&self.last_inform).into());
        for (path, (w, at)) in &self.cached_objects {
            let node = node_at(&mut root, path);
            node.insert("_object".into(), true.into());
            node.insert("_writable".into(), (*w).into());
            node.insert("_timestamp".into(), iso(at).into());
        }
        for (path, c) in &self.cache {
            let node = node_at(&mut root, path);
            node.insert("_value".into(), c.leaf.value.clone());
            node.insert("_type".into(), c.leaf.typ.into());
            node.insert("_writable".into(), c.leaf.writable.into());
            node.insert("_timestamp".into(), iso(&c.at).into());
        }
        Json::Object(root)
    }

    /// The CPE's profiles: instance -> (alias, enabled, interval, url).
    pub fn profiles(&self) -> Vec<Json> {
        self.instances(PROFILE)
            .into_iter()
            .map(|n| {
                let p = |rel: &str| format!("{PROFILE}.{n}.{rel}");
                let rows: Vec<Json> = self
                    .instances(&p("Parameter"))
                    .into_iter()
                    .map(|r| {
                        json!({"name": self.text_at(&p(&format!("Parameter.{r}.Name"))),
                               "reference": self.text_at(&p(&format!("Parameter.{r}.Reference")))})
                    })
                    .collect();
                let values: BTreeMap<String, Json> = self
                    .config
                    .iter()
                    .filter_map(|(k, l)| {
                        let rel = k.strip_prefix(&format!("{PROFILE}.{n}."))?;
                        (!rel.starts_with("Parameter.")).then(|| (rel.to_string(), l.value.clone()))
                    })
                    .collect();
                json!({"instance": n, "alias": self.text_at(&p("Alias")),
                       "enabled": self.bool_at(&p("Enable")), "values": values,
                       "password": self.secrets.get(&p("HTTP.Password")),
                       "parameters": rows})
            })
            .collect()
    }

    pub fn status(&self) -> Json {
        json!({"id": self.id, "online": self.online, "oui": self.cpe.oui,
               "product_class": self.cpe.product_class, "serial": self.cpe.serial,
               "tags": self.tags, "bulkdata_enabled": self.bool_at("Device.BulkData.Enable"),
               "profiles": self.profiles(), "reports_ok": self.reports_ok,
               "reports_failed": self.reports_failed, "scans": self.scans,
               "scan_state": self.cpe.scan_state})
    }
}

fn spv_fault(
    faults: &[(String, &'static str)],
    make: impl Fn(&str, &str, Json) -> Box<Fault>,
) -> Box<Fault> {
    let list: Vec<Json> = faults
        .iter()
        .map(|(p, why)| json!({"parameterName": p, "faultCode": "9007", "faultString": why}))
        .collect();
    // As CPEs answer: 9003 for the call, the reason per parameter.
    make(
        "cwmp.9003",
        "Invalid arguments",
        json!({"faultCode": "9003", "faultString": "Invalid arguments",
               "setParameterValuesFault": list}),
    )
}

fn value_text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// GenieACS converts a value to the type the CPE last reported.
fn convert(raw: &Json, typ: &str) -> Json {
    match (typ, raw) {
        ("xsd:boolean", Json::String(s)) => match s.as_str() {
            "true" | "1" => true.into(),
            "false" | "0" => false.into(),
            _ => raw.clone(),
        },
        ("xsd:boolean", Json::Number(n)) => (n.as_i64() != Some(0)).into(),
        ("xsd:unsignedInt" | "xsd:int", Json::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Json::from)
            .unwrap_or_else(|_| raw.clone()),
        ("xsd:string" | "xsd:dateTime" | "xsd:unsignedLong" | "xsd:long", v) if !v.is_string() => {
            value_text(v).into()
        }
        _ => raw.clone(),
    }
}

fn node_at<'a>(
    root: &'a mut serde_json::Map<String, Json>,
    path: &str,
) -> &'a mut serde_json::Map<String, Json> {
    let mut node = root;
    for seg in path.split('.') {
        let entry = node
            .entry(seg.to_string())
            .or_insert_with(|| Json::Object(serde_json::Map::new()));
        if !entry.is_object() {
            *entry = Json::Object(serde_json::Map::new());
        }
        node = match entry {
            Json::Object(m) => m,
            _ => unreachable!("just made an object"),
        };
    }
    node
}

/// Resolves a profile's Parameter rows against the CPE's live parameters
/// (reference section 3.1): wildcards match instance numbers, a reference
/// ending in `.` takes everything below it, and a Name replaces the path
/// with `Name.<instances>.<remainder>`.
pub fn resolve(rows: &[(String, String)], params: &[(String, Val)]) -> Vec<(String, Val)> {
    let mut out: Vec<(String, Val)> = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for (name, reference) in rows {
        if reference.is_empty() {
            continue;
        }
        let partial = reference.ends_with('.');
        let pattern: Vec<&str> = reference.trim_end_matches('.').split('.').collect();
        for (path, v) in params {
            let segs: Vec<&str> = path.split('.').collect();
            if segs.len() < pattern.len() || (!partial && segs.len() != pattern.len()) {
                continue;
            }
            if partial && segs.len() == pattern.len() {
                continue;
            }
            let mut captures: Vec<&str> = Vec::new();
            let matched = pattern.iter().zip(&segs).all(|(p, s)| {
                if *p == "*" {
                    let ok = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
                    if ok {
                        captures.push(s);
                    }
                    ok
                } else {
                    p == s
                }
            });
            if !matched {
                continue;
            }
            let key = if name.is_empty() {
                path.clone()
            } else {
                let mut parts: Vec<&str> = vec![name.as_str()];
                parts.extend(captures);
                parts.extend(&segs[pattern.len()..]);
                parts.join(".")
            };
            if seen.insert(key.clone()) {
                out.push((key, v.clone()));
            }
        }
    }
    out
}

/// One report POST a CPE is about to make.
pub struct Outgoing {
    pub device: usize,
    pub instance: u32,
    pub url: String,
    /// The identity query the CPE appends (`oui=&pc=&sn=`).
    pub query: String,
    pub method: String,
    pub username: String,
    pub password: String,
    pub gzip: bool,
    pub encoding: Encoding,
    pub body: Vec<u8>,
    pub reports: usize,
}

pub struct Fleet {
    pub devices: Vec<SimDevice>,
    pub tasks: Vec<Task>,
    pub faults: BTreeMap<String, Fault>,
    pub presets: BTreeMap<String, Json>,
    pub provisions: BTreeMap<String, String>,
    /// Every task posted, with its answer: for tests and the log.
    pub log: Vec<Json>,
    pub time_scale: f64,
    task_seq: u64,
    last_now: DateTime<Utc>,
    last_tick: Instant,
    rng: fastrand::Rng,
    pub offline_rate: f64,
    pub reboot_rate: f64,
}

impl Fleet {
    pub fn new(cpes: usize, seed: u64, tags: &[String], time_scale: f64) -> Fleet {
        let now = Utc::now();
        let devices = (0..cpes)
            .map(|i| {
                let tag = tags
                    .get(i % tags.len().max(1))
                    .map_or("lab", String::as_str);
                SimDevice::new(i, seed, tag, now)
            })
            .collect();
        Fleet {
            devices,
            tasks: Vec::new(),
            faults: BTreeMap::new(),
            presets: BTreeMap::new(),
            provisions: BTreeMap::new(),
            log: Vec::new(),
            time_scale,
            task_seq: 0,
            last_now: now,
            last_tick: Instant::now(),
            rng: fastrand::Rng::with_seed(seed),
            offline_rate: 0.0,
            reboot_rate: 0.0,
        }
    }

    /// Strictly increasing timestamps, so "fetched after the reboot" is
    /// decidable even within one millisecond.
    pub fn now(&mut self) -> DateTime<Utc> {
        let mut t = Utc::now();
        if t <= self.last_now {
            t = self.last_now + chrono::Duration::milliseconds(1);
        }
        self.last_now = t;
        t
    }

    pub fn index(&self, id: &str) -> Option<usize> {
        self.devices.iter().position(|d| d.id == id)
    }

    /// `POST /devices/<id>/tasks`: runs the task now when the device is
    /// online and a connection request was asked for, else queues it.
    pub fn post_task(
        &mut self,
        dev: usize,
        body: Json,
        connection_request: bool,
    ) -> (Outcome, Task) {
        self.task_seq += 1;
        let now = self.now();
        let task = Task {
            id: format!("{:08x}{:016x}", now.timestamp() as u32, self.task_seq),
            device: self.devices[dev].id.clone(),
            body,
            timestamp: now,
        };
        let outcome = match validate_task(&task.body) {
            Err(why) => Outcome::Invalid(why),
            Ok(()) if !connection_request => {
                self.tasks.push(task.clone());
                Outcome::Queued("Accepted")
            }
            Ok(()) if !self.devices[dev].online => {
                self.tasks.push(task.clone());
                Outcome::Queued("Device is offline")
            }
            Ok(()) => {
                self.tasks.push(task.clone());
                self.session(dev)
                    .into_iter()
                    .find(|(id, _)| *id == task.id)
                    .map_or(Outcome::Queued("Task queued but not processed"), |(_, o)| o)
            }
        };
        let (status, reason) = match &outcome {
            Outcome::Done => (200, "OK".to_string()),
            Outcome::Queued(r) => (202, r.to_string()),
            Outcome::Faulted => (202, "Task faulted".to_string()),
            Outcome::Invalid(w) => (400, w.clone()),
        };
        self.log.push(
            json!({"device": task.device, "task": task.to_json(), "name": task.name(),
                             "status": status, "reason": reason}),
        );
        (outcome, task)
    }

    /// A CWMP session of device `dev`: Inform, then its queued tasks that
    /// have no fault, in order. Returns each run task's outcome.
    pub fn session(&mut self, dev: usize) -> Vec<(String, Outcome)> {
        let now = self.now();
        let id = self.devices[dev].id.clone();
        self.devices[dev].inform(now);
        let mut results = Vec::new();
        let queued: Vec<Task> = self
            .tasks
            .iter()
            .filter(|t| t.device == id && !self.faults.contains_key(&format!("{id}:task_{}", t.id)))
            .cloned()
            .collect();
        for t in queued {
            match self.devices[dev].execute(&t, now) {
                Ok(()) => {
                    self.tasks.retain(|x| x.id != t.id);
                    results.push((t.id.clone(), Outcome::Done));
                }
                Err(f) => {
                    self.faults.insert(f.id(), *f);
                    results.push((t.id.clone(), Outcome::Faulted));
                }
            }
        }
        results
    }

    pub fn set_online(&mut self, dev: usize, online: bool) {
        self.devices[dev].online = online;
        if online {
            self.session(dev);
        }
    }

    pub fn reboot(&mut self, dev: usize, wipe: bool) {
        let now = self.now();
        self.devices[dev].reboot(wipe, now);
        if self.devices[dev].online {
            self.session(dev);
        }
    }

    /// Time passes: telemetry moves, scans finish, random events happen, and
    /// each enabled profile whose interval ended yields a report to send.
    pub fn tick(&mut self) -> Vec<Outgoing> {
        let elapsed = self.last_tick.elapsed();
        self.last_tick = Instant::now();
        let real_secs = elapsed.as_secs_f64();
        let scan_time = Duration::from_secs_f64(5.0 / self.time_scale);
        let mut out = Vec::new();
        for i in 0..self.devices.len() {
            {
                let d = &mut self.devices[i];
                // Telemetry moves in real time: reports carry real CollectionTimes,
                // so counters growing by scaled time would show rates `time_scale`
                // times too high. Only intervals, retries and scans are scaled.
                d.sim_carry += real_secs;
                let whole = d.sim_carry.floor();
                if whole >= 1.0 {
                    d.cpe.advance(whole as u64);
                    d.sim_carry -= whole;
                }
                if let Some(at) = d.scan_done_at
                    && at.elapsed() >= scan_time
                {
                    d.cpe.rescan();
                    d.scan_done_at = None;
                    d.config
                        .insert(SCAN_STATE.into(), leaf("Complete", "xsd:string", true));
                }
            }
            // Random events, per simulated minute.
            let minutes = real_secs * self.time_scale / 60.0;
            if self.offline_rate > 0.0 && self.rng.f64() < self.offline_rate * minutes {
                let online = !self.devices[i].online;
                self.set_online(i, online);
            }
            if self.reboot_rate > 0.0 && self.rng.f64() < self.reboot_rate * minutes {
                self.reboot(i, false);
            }
            out.extend(self.due_reports(i));
        }
        out
    }

    fn due_reports(&mut self, dev: usize) -> Vec<Outgoing> {
        let scale = self.time_scale;
        let d = &mut self.devices[dev];
        let mut out = Vec::new();
        let master = d.bool_at("Device.BulkData.Enable");
        let instances = d.instances(PROFILE);
        d.reporters.retain(|n, _| instances.contains(n));
        for n in instances {
            let p = |rel: &str| format!("{PROFILE}.{n}.{rel}");
            let enabled =
                master && d.bool_at(&p("Enable")) && !d.text_at(&p("HTTP.URL")).is_empty();
            let interval = d.u64_at(&p("ReportingInterval")).max(1);
            let signature = format!(
                "{enabled}|{interval}|{}|{}",
                d.text_at(&p("EncodingType")),
                d.text_at(&p("HTTP.URL"))
            );
            let real = |secs: f64| Duration::from_secs_f64((secs / scale).max(0.001));
            let now = Instant::now();
            let (due, retry_due) = {
                let r = d.reporters.entry(n).or_default();
                if r.signature != signature {
                    // A changed profile restarts its interval (and drops retained
                    // reports when the encoding changed).
                    r.signature = signature;
                    r.retained.clear();
                    r.next_due =
                        enabled.then(|| now + real(interval as f64 * fastrand::f64().max(0.2)));
                    r.next_retry = None;
                    r.retry = 0;
                }
                if !enabled || r.in_flight || !d.online {
                    continue;
                }
                (
                    r.next_due.is_some_and(|t| now >= t),
                    r.next_retry.is_some_and(|t| now >= t),
                )
            };
            if !due && !retry_due {
                continue;
            }
            if due {
                let keep = match d
                    .config
                    .get(&p("NumberOfRetainedFailedReports"))
                    .and_then(|l| l.value.as_i64())
                {
                    Some(-1) => 10,
                    Some(k) if k > 0 => k as usize,
                    _ => 0,
                };
                let rows: Vec<(String, String)> = d
                    .instances(&p("Parameter"))
                    .into_iter()
                    .map(|k| {
                        (
                            d.text_at(&p(&format!("Parameter.{k}.Name"))),
                            d.text_at(&p(&format!("Parameter.{k}.Reference"))),
                        )
                    })
                    .collect();
                let params = resolve(&rows, &d.cpe.params());
                let r = d.reporters.entry(n).or_default();
                r.next_due = Some(now + real(interval as f64));
                r.next_retry = None;
                r.retry = 0;
                // Undelivered reports beyond what the profile retains are dropped, oldest first.
                while r.retained.len() > keep {
                    r.retained.remove(0);
                }
                r.retained.push((Utc::now(), params));
            }
            let encoding = if d.text_at(&p("EncodingType")) == "CSV" {
                if d.text_at(&p("CSVEncoding.ReportFormat")) == "ParameterPerRow" {
                    Encoding::ParameterPerRow
                } else {
                    Encoding::ParameterPerColumn
                }
            } else if d.text_at(&p("JSONEncoding.ReportFormat")) == "NameValuePair" {
                Encoding::NameValuePair
            } else {
                Encoding::ObjectHierarchy
            };
            let style = TimeStyle::from_token(&d.text_at(&p(
                if encoding == Encoding::ParameterPerRow || encoding == Encoding::ParameterPerColumn
                {
                    "CSVEncoding.RowTimestamp"
                } else {
                    "JSONEncoding.ReportTimestamp"
                },
            )));
            let r = d.reporters.entry(n).or_default();
            r.in_flight = true;
            let body = d.cpe.render_as(encoding, style, &r.retained);
            let reports = r.retained.len();
            out.push(Outgoing {
                device: dev,
                instance: n,
                url: d.text_at(&p("HTTP.URL")),
                query: d.cpe.query(),
                method: d.text_at(&p("HTTP.Method")),
                username: d.text_at(&p("HTTP.Username")),
                password: d
                    .secrets
                    .get(&p("HTTP.Password"))
                    .cloned()
                    .unwrap_or_default(),
                gzip: d
                    .text_at(&p("HTTP.Compression"))
                    .eq_ignore_ascii_case("GZIP"),
                encoding,
                body,
                reports,
            });
        }
        out
    }

    /// The outcome of a report POST (2xx: delivered).
    pub fn delivered(&mut self, dev: usize, instance: u32, ok: bool) {
        let scale = self.time_scale;
        let Some(d) = self.devices.get_mut(dev) else {
            return;
        };
        let p = |rel: &str| format!("{PROFILE}.{instance}.{rel}");
        let retry_enable = d.bool_at(&p("HTTP.RetryEnable"));
        let m = d.u64_at(&p("HTTP.RetryMinimumWaitInterval")).max(1) as f64;
        let k = d.u64_at(&p("HTTP.RetryIntervalMultiplier")).max(1000) as f64 / 1000.0;
        let Some(r) = d.reporters.get_mut(&instance) else {
            return;
        };
        r.in_flight = false;
        if ok {
            d.reports_ok += 1;
            r.retained.clear();
            r.retry = 0;
            r.next_retry = None;
            return;
        }
        d.reports_failed += 1;
        if retry_enable {
            // TR-069 Annex N / TR-369 A.2.2.1: retry n waits in [m·k^(n-1), m·k^n].
            r.retry += 1;
            let n = r.retry.min(10) as i32;
            let lo = m * k.powi(n - 1);
            let hi = m * k.powi(n);
            let wait = lo + fastrand::f64() * (hi - lo);
            let at = Instant::now() + Duration::from_secs_f64(wait / scale);
            // Retries stop when the next interval starts.
            if r.next_due.is_none_or(|due| at < due) {
                r.next_retry = Some(at);
            }
        }
    }

    pub fn query_tasks(&self, query: &Json) -> Vec<Json> {
        self.tasks
            .iter()
            .map(Task::to_json)
            .filter(|t| plain_match(t, query))
            .collect()
    }

    pub fn query_faults(&self, query: &Json) -> Vec<Json> {
        self.faults
            .values()
            .map(Fault::to_json)
            .filter(|f| plain_match(f, query))
            .collect()
    }
}

fn validate_task(body: &Json) -> Result<(), String> {
    let name = body.get("name").and_then(Json::as_str).unwrap_or("");
    let ok = match name {
        "getParameterValues" => body["parameterNames"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "setParameterValues" => body["parameterValues"].as_array().is_some(),
        "refreshObject" => body["objectName"].is_string(),
        "addObject" | "deleteObject" => body["objectName"].is_string(),
        "reboot" | "factoryReset" | "download" | "provisions" => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("Error: Invalid task {name:?}"))
    }
}

/// Equality match of MongoDB-style `query` on plain documents (tasks,
/// faults): `{"k": v}` and `{"k": {"$in": [..]}}`.
pub fn plain_match(doc: &Json, query: &Json) -> bool {
    let Some(q) = query.as_object() else {
        return true;
    };
    q.iter().all(|(k, want)| {
        let have = doc.get(k);
        match want {
            Json::Object(ops) if ops.contains_key("$in") => ops["$in"]
                .as_array()
                .is_some_and(|a| a.iter().any(|w| have == Some(w))),
            _ => have == Some(want),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(path: &str, v: u64) -> (String, Val) {
        (path.to_string(), Val::UInt(v))
    }

    #[test]
    fn names_follow_the_key_rules() {
        let params = vec![
            p("Device.WiFi.NeighboringWiFiDiagnostic.Result.3.Channel", 6),
            p("Device.IP.Interface.1.Stats.BytesSent", 5),
            p("Device.IP.Interface.2.Stats.BytesSent", 7),
            p("Device.DeviceInfo.UpTime", 9),
        ];
        let rows = vec![
            (
                "ch".to_string(),
                "Device.WiFi.NeighboringWiFiDiagnostic.Result.*.Channel".to_string(),
            ),
            (
                "ifs".to_string(),
                "Device.IP.Interface.*.Stats.".to_string(),
            ),
            (String::new(), "Device.DeviceInfo.UpTime".to_string()),
            ("x".to_string(), String::new()),
        ];
        let keys: Vec<String> = resolve(&rows, &params).into_iter().map(|k| k.0).collect();
        assert_eq!(
            keys,
            [
                "ch.3",
                "ifs.1.BytesSent",
                "ifs.2.BytesSent",
                "Device.DeviceInfo.UpTime"
            ]
        );
    }

    #[test]
    fn tasks_behave_like_genieacs() {
        let mut fleet = Fleet::new(5, 1, &["lab".into()], 1.0);
        let d = 1;
        let doc = fleet.devices[d].document();
        assert!(
            doc["Device"].get("BulkData").is_none(),
            "untouched device lacks BulkData"
        );
        let (o, _) = fleet.post_task(
            d,
            json!({"name":"refreshObject","objectName":"Device.BulkData."}),
            true,
        );
        assert_eq!(o, Outcome::Done);
        let doc = fleet.devices[d].document();
        assert_eq!(doc["Device"]["BulkData"]["Profile"]["_writable"], true);
        // addObject twice: two instances.
        for _ in 0..2 {
            let (o, _) = fleet.post_task(
                d,
                json!({"name":"addObject","objectName":"Device.BulkData.Profile","parameterValues":[["Alias","c"]]}),
                true,
            );
            assert_eq!(o, Outcome::Done);
        }
        assert_eq!(fleet.devices[d].profiles().len(), 2);
        // Unknown and read-only parameters are dropped, the task still succeeds.
        let (o, _) = fleet.post_task(
            d,
            json!({"name":"setParameterValues","parameterValues":[
                ["Device.BulkData.Nope", 1], ["Device.BulkData.MinReportingInterval", 1],
                ["Device.BulkData.Profile.1.ReportingInterval", "300"]]}),
            true,
        );
        assert_eq!(o, Outcome::Done);
        let doc = fleet.devices[d].document();
        assert_eq!(
            doc["Device"]["BulkData"]["Profile"]["1"]["ReportingInterval"]["_value"],
            300
        );
        assert_eq!(
            doc["Device"]["BulkData"]["MinReportingInterval"]["_value"],
            10
        );
        // Below MinReportingInterval: the whole SPV faults (9003, 9007 for the value).
        let (o, t) = fleet.post_task(
            d,
            json!({"name":"setParameterValues","parameterValues":[
                ["Device.BulkData.Profile.1.ReportingInterval", 5], ["Device.BulkData.Enable", true]]}),
            true,
        );
        assert_eq!(o, Outcome::Faulted);
        let f = &fleet.faults[&format!("{}:task_{}", fleet.devices[d].id, t.id)];
        assert_eq!(f.code, "cwmp.9003");
        assert_eq!(
            f.detail["setParameterValuesFault"][0]["parameterName"],
            "Device.BulkData.Profile.1.ReportingInterval"
        );
        assert_eq!(f.detail["setParameterValuesFault"][0]["faultCode"], "9007");
        assert!(!fleet.devices[d].bool_at("Device.BulkData.Enable"));
        // Offline: queued with the reason, run at the next session.
        fleet.set_online(d, false);
        let (o, _) = fleet.post_task(
            d,
            json!({"name":"refreshObject","objectName":"Device.BulkData."}),
            true,
        );
        assert_eq!(o, Outcome::Queued("Device is offline"));
        fleet.set_online(d, true);
        assert_eq!(
            fleet
                .tasks
                .iter()
                .filter(|t| t.name() == "refreshObject")
                .count(),
            0
        );
    }
}
