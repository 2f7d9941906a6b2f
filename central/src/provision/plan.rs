//! Desired Bulk Data profiles + one GenieACS device document -> the tasks
//! that make the device match, each with its reason. Pure: no I/O.
//!
//! Rules that come from how GenieACS and CPEs behave (reference section 9):
//! - decide only from a fresh read: `Device.BulkData` missing from the
//!   document, or fetched before the last boot (some CPEs lose profiles on
//!   reboot while GenieACS keeps the old copy), means "refresh first";
//! - `addObject` is not idempotent, so a profile is added only when no
//!   instance carries its Alias, and nothing else is planned until the new
//!   instance has been read back (its number is the CPE's choice);
//! - everything else goes in ONE `setParameterValues`, only values that
//!   differ, the profile's `Enable` last; parameters the CPE lacks or reports
//!   read-only are left out (GenieACS would drop them silently);
//! - `HTTP.Password` reads back empty, so it never triggers a write by
//!   itself: it is sent along when the profile changes anyway.

use crate::config::ProfileConfig;
use serde_json::{Value as Json, json};
use std::collections::BTreeSet;
use std::fmt;

pub const BULKDATA: &str = "Device.BulkData";

/// One value to set, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub path: String,
    pub value: Json,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Refresh {
        object: String,
        reason: String,
    },
    AddProfile {
        alias: String,
        reason: String,
    },
    AddRow {
        /// `Device.BulkData.Profile.{i}.Parameter`
        object: String,
        name: String,
        reference: String,
    },
    Set(Vec<Change>),
}

impl Step {
    /// The GenieACS task object.
    pub fn task(&self) -> Json {
        match self {
            Step::Refresh { object, .. } => json!({"name": "refreshObject", "objectName": object}),
            Step::AddProfile { alias, .. } => json!({"name": "addObject",
                "objectName": format!("{BULKDATA}.Profile"), "parameterValues": [["Alias", alias]]}),
            Step::AddRow {
                object,
                name,
                reference,
            } => json!({"name": "addObject", "objectName": object,
                "parameterValues": [["Reference", reference], ["Name", name]]}),
            Step::Set(changes) => {
                let values: Vec<Json> = changes.iter().map(|c| json!([c.path, c.value])).collect();
                json!({"name": "setParameterValues", "parameterValues": values})
            }
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Refresh { object, reason } => write!(f, "refreshObject {object} ({reason})"),
            Step::AddProfile { alias, reason } => {
                write!(
                    f,
                    "addObject {BULKDATA}.Profile with Alias {alias:?} ({reason})"
                )
            }
            Step::AddRow {
                object,
                name,
                reference,
            } => write!(
                f,
                "addObject {object} with Reference {reference:?}, Name {name:?} (row missing)"
            ),
            Step::Set(changes) => {
                write!(f, "setParameterValues ({} values)", changes.len())?;
                for c in changes {
                    write!(f, "\n      {} = {} ({})", c.path, c.value, c.reason)?;
                }
                Ok(())
            }
        }
    }
}

/// What one device needs: the next steps (later ones depend on reading the
/// device again after the structural ones) and remarks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProvisionPlan {
    pub device: String,
    pub steps: Vec<Step>,
    pub notes: Vec<String>,
}

/// Read access to the parts of a device document the planner needs.
pub struct DeviceDoc<'a>(pub &'a Json);

impl<'a> DeviceDoc<'a> {
    pub fn id(&self) -> &'a str {
        self.0["_id"].as_str().unwrap_or("")
    }

    pub fn node(&self, path: &str) -> Option<&'a Json> {
        path.split('.').try_fold(self.0, |n, s| n.get(s))
    }

    pub fn value(&self, path: &str) -> Option<&'a Json> {
        self.node(path).and_then(|n| n.get("_value"))
    }

    pub fn oui(&self) -> &'a str {
        self.0["_deviceId"]["_OUI"].as_str().unwrap_or("")
    }

    pub fn product_class(&self) -> &'a str {
        self.0["_deviceId"]["_ProductClass"].as_str().unwrap_or("")
    }

    pub fn tags(&self) -> Vec<&'a str> {
        self.0["_tags"]
            .as_array()
            .map(|a| a.iter().filter_map(Json::as_str).collect())
            .unwrap_or_default()
    }

    pub fn last_boot(&self) -> Option<&'a str> {
        self.0["_lastBoot"].as_str()
    }

    pub fn uptime(&self) -> Option<u64> {
        as_u64(self.value("Device.DeviceInfo.UpTime")?)
    }
}

fn as_u64(v: &Json) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str()?.trim().parse().ok())
}

/// GenieACS shows booleans as JSON booleans, (unsigned) ints as numbers and
/// everything else as strings; compare by meaning, not by JSON type.
pub fn same_value(have: &Json, want: &Json) -> bool {
    fn text(v: &Json) -> String {
        match v {
            Json::String(s) => s.clone(),
            Json::Bool(true) => "true".into(),
            Json::Bool(false) => "false".into(),
            other => other.to_string(),
        }
    }
    let (h, w) = (text(have), text(want));
    h == w
        || (want.is_boolean() && matches!((h.as_str(), w.as_str()), ("1", "true") | ("0", "false")))
}

/// The collector URL for a device: a per-tag entry in `urls`, else `url`
/// with `{tag}` replaced by the device's first tag.
pub fn profile_url(p: &ProfileConfig, tags: &[&str]) -> Result<String, String> {
    if let Some(u) = tags.iter().find_map(|t| p.urls.get(*t)) {
        return Ok(u.clone());
    }
    if p.url.contains("{tag}") {
        let tag = tags.first().ok_or_else(|| {
            format!(
                "profile {:?}: device has no tag for {{tag}} in its URL",
                p.alias
            )
        })?;
        return Ok(p.url.replace("{tag}", tag));
    }
    if p.url.is_empty() {
        return Err(format!(
            "profile {:?}: no URL for this device's tags",
            p.alias
        ));
    }
    Ok(p.url.clone())
}

fn toml_to_json(v: &toml::Value, interval: u64) -> Json {
    match v {
        toml::Value::String(s) if s == "{interval}" => interval.into(),
        toml::Value::String(s) => s.replace("{interval}", &interval.to_string()).into(),
        toml::Value::Integer(i) => (*i).into(),
        toml::Value::Boolean(b) => (*b).into(),
        toml::Value::Float(f) => (*f).into(),
        other => other.to_string().into(),
    }
}

/// Whether `doc`'s copy of `Device.BulkData` can be trusted.
fn freshness(doc: &DeviceDoc<'_>, force: Option<&str>) -> Option<String> {
    let Some(bulk) = doc.node(BULKDATA) else {
        return Some("Device.BulkData is not in GenieACS's copy yet".into());
    };
    if let Some(why) = force {
        return Some(why.to_string());
    }
    let fetched = bulk["_timestamp"].as_str().unwrap_or("");
    match doc.last_boot() {
        // ISO-8601 from GenieACS, same format: comparable as text.
        Some(boot) if fetched < boot => Some(format!(
            "read at {fetched}, before the last boot at {boot}: the CPE may have lost its profiles"
        )),
        _ => None,
    }
}

/// Plans one device. `left_out` holds full paths not to set (they faulted
/// and were given up); `force_refresh` a reason to re-read regardless.
pub fn plan(
    profiles: &[ProfileConfig],
    doc: &Json,
    left_out: &BTreeSet<String>,
    force_refresh: Option<&str>,
) -> ProvisionPlan {
    let d = DeviceDoc(doc);
    let mut plan = ProvisionPlan {
        device: d.id().to_string(),
        ..Default::default()
    };
    if profiles.is_empty() {
        return plan;
    }
    if let Some(reason) = freshness(&d, force_refresh) {
        plan.steps.push(Step::Refresh {
            object: format!("{BULKDATA}."),
            reason,
        });
        return plan;
    }
    let min_interval = d
        .value(&format!("{BULKDATA}.MinReportingInterval"))
        .and_then(as_u64)
        .unwrap_or(0);
    let profile_obj = d.node(&format!("{BULKDATA}.Profile"));
    let mut changes: Vec<Change> = Vec::new();
    let mut last: Vec<Change> = Vec::new();
    let mut structural: Vec<Step> = Vec::new();
    for p in profiles {
        let url = match profile_url(p, &d.tags()) {
            Ok(u) => u,
            Err(why) => {
                plan.notes.push(why);
                continue;
            }
        };
        let instances: Vec<(&str, &Json)> = profile_obj
            .and_then(Json::as_object)
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| k.bytes().all(|b| b.is_ascii_digit()))
                    .filter(|(_, v)| v["Alias"]["_value"].as_str() == Some(p.alias.as_str()))
                    .map(|(k, v)| (k.as_str(), v))
                    .collect()
            })
            .unwrap_or_default();
        let Some(&(num, inst)) = instances
            .iter()
            .min_by_key(|(k, _)| k.parse::<u64>().unwrap_or(0))
        else {
            if profile_obj.and_then(|o| o["_writable"].as_bool()) == Some(false) {
                plan.notes.push(format!(
                    "profile {:?} missing and Device.BulkData.Profile is not writable (fixed slots): not added",
                    p.alias
                ));
                continue;
            }
            structural.push(Step::AddProfile {
                alias: p.alias.clone(),
                reason: format!(
                    "no profile with Alias {:?}; then {} parameter rows and its values",
                    p.alias,
                    p.parameters.len()
                ),
            });
            continue;
        };
        if instances.len() > 1 {
            plan.notes.push(format!(
                "{} profiles carry Alias {:?}; using instance {num}",
                instances.len(),
                p.alias
            ));
        }
        let base = format!("{BULKDATA}.Profile.{num}");
        let interval = if p.interval_secs < min_interval {
            min_interval
        } else {
            p.interval_secs
        };
        let interval_reason = if interval != p.interval_secs {
            format!(
                "wanted {} s, raised to MinReportingInterval {min_interval}",
                p.interval_secs
            )
        } else {
            String::new()
        };
        let mut wanted: Vec<(String, Json, String)> = vec![
            ("Name".into(), p.name.clone().into(), String::new()),
            ("Protocol".into(), "HTTP".into(), String::new()),
            (
                "EncodingType".into(),
                p.encoding.clone().into(),
                String::new(),
            ),
            ("ReportingInterval".into(), interval.into(), interval_reason),
            (
                "NumberOfRetainedFailedReports".into(),
                p.retained.into(),
                String::new(),
            ),
        ];
        let (fmt_path, ts_path) = if p.encoding == "CSV" {
            ("CSVEncoding.ReportFormat", "CSVEncoding.RowTimestamp")
        } else {
            ("JSONEncoding.ReportFormat", "JSONEncoding.ReportTimestamp")
        };
        wanted.push((
            fmt_path.into(),
            p.report_format.clone().into(),
            String::new(),
        ));
        wanted.push((ts_path.into(), p.timestamp.clone().into(), String::new()));
        wanted.push(("HTTP.URL".into(), url.into(), String::new()));
        wanted.push((
            "HTTP.Username".into(),
            p.username.clone().into(),
            String::new(),
        ));
        wanted.push((
            "HTTP.Compression".into(),
            p.compression.clone().into(),
            String::new(),
        ));
        wanted.push(("HTTP.Method".into(), "POST".into(), String::new()));
        wanted.push(("HTTP.RetryEnable".into(), p.retry.into(), String::new()));
        if p.retry {
            wanted.push((
                "HTTP.RetryMinimumWaitInterval".into(),
                p.retry_min_wait_secs.into(),
                String::new(),
            ));
            wanted.push((
                "HTTP.RetryIntervalMultiplier".into(),
                p.retry_multiplier.into(),
                String::new(),
            ));
        }
        for v in &p.vendor {
            let pc_ok = v.product_class.is_empty() || v.product_class == d.product_class();
            if v.oui.eq_ignore_ascii_case(d.oui()) && pc_ok {
                wanted.push((
                    v.parameter.clone(),
                    toml_to_json(&v.value, interval),
                    format!("vendor extra for {} {}", v.oui, v.product_class),
                ));
            }
        }
        let mut profile_changes: Vec<Change> = Vec::new();
        for (rel, value, why) in wanted {
            let path = format!("{base}.{rel}");
            if left_out.contains(&path) {
                plan.notes
                    .push(format!("{path} left out: it faulted on this CPE"));
                continue;
            }
            let Some(node) = d.node(&path) else {
                plan.notes
                    .push(format!("{path}: the CPE lacks it, left out"));
                continue;
            };
            let have = node.get("_value").unwrap_or(&Json::Null);
            if same_value(have, &value) {
                continue;
            }
            if node["_writable"].as_bool() == Some(false) {
                plan.notes
                    .push(format!("{path} is read-only on this CPE ({have} kept)"));
                continue;
            }
            let reason = if why.is_empty() {
                format!("is {have}")
            } else {
                format!("is {have}; {why}")
            };
            profile_changes.push(Change {
                path,
                value,
                reason,
            });
        }
        // Parameter rows, matched by Reference.
        let rows: Vec<(&str, &Json)> = inst["Parameter"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| k.bytes().all(|b| b.is_ascii_digit()))
                    .map(|(k, v)| (k.as_str(), v))
                    .collect()
            })
            .unwrap_or_default();
        for r in &p.parameters {
            let found = rows
                .iter()
                .find(|(_, row)| row["Reference"]["_value"].as_str() == Some(r.reference.as_str()));
            match found {
                None => structural.push(Step::AddRow {
                    object: format!("{base}.Parameter"),
                    name: r.name.clone(),
                    reference: r.reference.clone(),
                }),
                Some((k, row)) => {
                    let have = row["Name"]["_value"].clone();
                    if !same_value(&have, &Json::from(r.name.clone())) {
                        profile_changes.push(Change {
                            path: format!("{base}.Parameter.{k}.Name"),
                            value: r.name.clone().into(),
                            reason: format!("is {have}"),
                        });
                    }
                }
            }
        }
        let enable_path = format!("{base}.Enable");
        let enabled = d
            .value(&enable_path)
            .is_some_and(|v| same_value(v, &json!(true)));
        if !profile_changes.is_empty() && !p.password.is_empty() {
            profile_changes.push(Change {
                path: format!("{base}.HTTP.Password"),
                value: p.password.clone().into(),
                reason: "write-only (reads back empty): sent with the other changes".into(),
            });
        }
        changes.extend(profile_changes);
        if !enabled {
            last.push(Change {
                path: enable_path,
                value: true.into(),
                reason: "profile disabled; enabled last".into(),
            });
        }
    }
    if !structural.is_empty() {
        plan.steps = structural;
        return plan;
    }
    let master = format!("{BULKDATA}.Enable");
    if !d
        .value(&master)
        .is_some_and(|v| same_value(v, &json!(true)))
        && !left_out.contains(&master)
    {
        changes.push(Change {
            path: master,
            value: true.into(),
            reason: "Bulk Data switched off on the CPE".into(),
        });
    }
    changes.extend(last);
    if !changes.is_empty() {
        plan.steps.push(Step::Set(changes));
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ParameterRef, VendorExtra};

    fn profile() -> ProfileConfig {
        ProfileConfig {
            alias: "lab".into(),
            name: "lab".into(),
            interval_secs: 60,
            url: "http://edge-{tag}:8080/bulkdata".into(),
            password: "pw".into(),
            parameters: vec![
                ParameterRef {
                    name: String::new(),
                    reference: "Device.DeviceInfo.".into(),
                },
                ParameterRef {
                    name: "SSID_NBW".into(),
                    reference: "Device.WiFi.NeighboringWiFiDiagnostic.Result.*.SSID".into(),
                },
            ],
            vendor: vec![VendorExtra {
                oui: "30DE4B".into(),
                product_class: "Device2".into(),
                parameter: "X_TP_CollectInterval".into(),
                value: toml::Value::String("{interval}".into()),
            }],
            ..ProfileConfig::default()
        }
    }

    fn leaf(v: Json) -> Json {
        json!({"_value": v, "_writable": true, "_type": "xsd:string"})
    }

    /// A device document with one profile matching `profile()` (interval as given).
    fn converged(interval: u64, oui: &str) -> Json {
        let mut prof = json!({
            "_object": true, "_writable": true,
            "Alias": leaf("lab".into()), "Name": leaf("lab".into()), "Enable": leaf(true.into()),
            "Protocol": leaf("HTTP".into()), "EncodingType": leaf("JSON".into()),
            "ReportingInterval": leaf(interval.into()), "NumberOfRetainedFailedReports": leaf(3.into()),
            "JSONEncoding": {"ReportFormat": leaf("NameValuePair".into()), "ReportTimestamp": leaf("Unix-Epoch".into())},
            "HTTP": {"URL": leaf("http://edge-site1:8080/bulkdata".into()), "Username": leaf("".into()),
                     "Password": leaf("".into()), "Compression": leaf("None".into()), "Method": leaf("POST".into()),
                     "RetryEnable": leaf(true.into()), "RetryMinimumWaitInterval": leaf(5.into()),
                     "RetryIntervalMultiplier": leaf(2000.into())},
            "Parameter": {"_object": true, "_writable": true,
                "1": {"Name": leaf("".into()), "Reference": leaf("Device.DeviceInfo.".into())},
                "2": {"Name": leaf("SSID_NBW".into()), "Reference": leaf("Device.WiFi.NeighboringWiFiDiagnostic.Result.*.SSID".into())}},
        });
        if oui == "30DE4B" {
            prof["X_TP_CollectInterval"] = leaf(interval.into());
        }
        json!({"_id": "X-Y-Z", "_lastBoot": "2024-12-01T00:00:00.000Z", "_tags": ["site1"],
               "_deviceId": {"_OUI": oui, "_ProductClass": "Device2"},
               "Device": {"BulkData": {"_object": true, "_timestamp": "2024-12-02T00:00:00.000Z",
                   "Enable": leaf(true.into()),
                   "MinReportingInterval": {"_value": 30, "_writable": false},
                   "Profile": {"_object": true, "_writable": true, "4": prof}}}})
    }

    #[test]
    fn missing_or_stale_bulkdata_is_refreshed_first() {
        let doc = json!({"_id": "a", "_lastBoot": "2024-12-01T00:00:00.000Z", "Device": {}});
        let p = plan(&[profile()], &doc, &BTreeSet::new(), None);
        assert!(matches!(p.steps.as_slice(), [Step::Refresh { .. }]));
        let mut doc = converged(60, "A1B2C3");
        doc["_lastBoot"] = "2024-12-03T00:00:00.000Z".into();
        let p = plan(&[profile()], &doc, &BTreeSet::new(), None);
        assert_eq!(p.steps[0].task()["name"], "refreshObject");
        assert_eq!(p.steps[0].task()["objectName"], "Device.BulkData.");
    }

    #[test]
    fn converged_device_needs_nothing() {
        let p = plan(
            &[profile()],
            &converged(60, "A1B2C3"),
            &BTreeSet::new(),
            None,
        );
        assert_eq!(p.steps, vec![], "{:?}", p.notes);
        let p = plan(
            &[profile()],
            &converged(60, "30DE4B"),
            &BTreeSet::new(),
            None,
        );
        assert_eq!(p.steps, vec![]);
    }

    #[test]
    fn missing_profile_is_added_by_alias_and_nothing_else_yet() {
        let mut doc = converged(60, "A1B2C3");
        doc["Device"]["BulkData"]["Profile"] = json!({"_object": true, "_writable": true});
        let p = plan(&[profile()], &doc, &BTreeSet::new(), None);
        assert_eq!(p.steps.len(), 1);
        assert_eq!(
            p.steps[0].task(),
            json!({"name": "addObject", "objectName": "Device.BulkData.Profile", "parameterValues": [["Alias", "lab"]]})
        );
        // Fixed slots: not writable, nothing added, said why.
        doc["Device"]["BulkData"]["Profile"]["_writable"] = false.into();
        let p = plan(&[profile()], &doc, &BTreeSet::new(), None);
        assert!(p.steps.is_empty() && p.notes[0].contains("not writable"));
    }

    #[test]
    fn differences_go_in_one_set_with_enable_last() {
        let mut doc = converged(60, "30DE4B");
        let prof = &mut doc["Device"]["BulkData"]["Profile"]["4"];
        prof["Enable"] = leaf(false.into());
        prof["HTTP"]["URL"] = leaf("http://old/".into());
        prof["ReportingInterval"] = leaf(300.into());
        prof["Parameter"]["2"]["Name"] = leaf("".into());
        let p = plan(&[profile()], &doc, &BTreeSet::new(), None);
        assert_eq!(p.steps.len(), 1);
        let task = p.steps[0].task();
        assert_eq!(task["name"], "setParameterValues");
        let paths: Vec<&str> = task["parameterValues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v[0].as_str().unwrap())
            .collect();
        assert_eq!(
            paths,
            [
                "Device.BulkData.Profile.4.ReportingInterval",
                "Device.BulkData.Profile.4.HTTP.URL",
                "Device.BulkData.Profile.4.Parameter.2.Name",
                "Device.BulkData.Profile.4.HTTP.Password",
                "Device.BulkData.Profile.4.Enable",
            ]
        );
        assert_eq!(
            task["parameterValues"][1][1],
            "http://edge-site1:8080/bulkdata"
        );
    }

    #[test]
    fn interval_below_the_minimum_is_raised_and_vendor_extra_follows() {
        let mut doc = converged(60, "30DE4B");
        let mut prof = profile();
        prof.interval_secs = 10;
        doc["Device"]["BulkData"]["Profile"]["4"]["X_TP_CollectInterval"] = leaf(0.into());
        let p = plan(&[prof], &doc, &BTreeSet::new(), None);
        let Step::Set(changes) = &p.steps[0] else {
            panic!("{p:?}")
        };
        assert_eq!(
            changes[0].path,
            "Device.BulkData.Profile.4.ReportingInterval"
        );
        assert_eq!(changes[0].value, json!(30));
        assert!(changes[0].reason.contains("MinReportingInterval 30"));
        let extra = changes
            .iter()
            .find(|c| c.path.ends_with("X_TP_CollectInterval"))
            .unwrap();
        assert_eq!(extra.value, json!(30));
        // Not on other vendors.
        let p = plan(
            &[profile()],
            &converged(60, "A1B2C3"),
            &BTreeSet::new(),
            None,
        );
        assert!(p.steps.is_empty());
    }

    #[test]
    fn missing_rows_are_added_and_given_up_values_left_out() {
        let mut doc = converged(60, "A1B2C3");
        doc["Device"]["BulkData"]["Profile"]["4"]["Parameter"]
            .as_object_mut()
            .unwrap()
            .remove("2");
        let p = plan(&[profile()], &doc, &BTreeSet::new(), None);
        assert_eq!(
            p.steps,
            vec![Step::AddRow {
                object: "Device.BulkData.Profile.4.Parameter".into(),
                name: "SSID_NBW".into(),
                reference: "Device.WiFi.NeighboringWiFiDiagnostic.Result.*.SSID".into()
            }]
        );
        let mut doc = converged(60, "A1B2C3");
        doc["Device"]["BulkData"]["Profile"]["4"]["JSONEncoding"]["ReportFormat"] =
            leaf("ObjectHierarchy".into());
        let out: BTreeSet<String> =
            ["Device.BulkData.Profile.4.JSONEncoding.ReportFormat".to_string()].into();
        let p = plan(&[profile()], &doc, &out, None);
        assert!(p.steps.is_empty());
        assert!(p.notes.iter().any(|n| n.contains("faulted")));
    }

    #[test]
    fn urls_per_tag() {
        let mut p = profile();
        assert_eq!(
            profile_url(&p, &["b"]).unwrap(),
            "http://edge-b:8080/bulkdata"
        );
        assert!(profile_url(&p, &[]).is_err());
        p.urls.insert("b".into(), "http://b/".into());
        assert_eq!(profile_url(&p, &["a", "b"]).unwrap(), "http://b/");
    }
}
