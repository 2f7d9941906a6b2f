//! Who sent a report: device identity from the request URI, the HTTP Basic user
//! or the report itself, in a configurable order.
//!
//! CPEs append `oui=..&pc=..&sn=..` to the collector URL (TR-069 Annex N); some
//! collector URLs already carry a query, so the CPE's part follows a second `?`
//! (`/bulkdata?site=lab?oui=..`), which is tolerated. When OUI and serial are
//! known the id is the GenieACS device id, so central can join reports with
//! GenieACS; otherwise it is the name the device was known by (a Basic user,
//! `ConnectionRequestUsername`, ...). A request that none of the rules identify
//! is refused by the receivers: nothing is ever stored under "unknown".

use crate::report::{Report, Value};
use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};

/// Which rule identified a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentitySource {
    /// Request URI parameters (`oui`/`pc`/`sn`, or `device`).
    Query,
    /// The HTTP Basic user name.
    BasicUser,
    /// Parameters inside the report.
    Report,
}

impl IdentitySource {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentitySource::Query => "query",
            IdentitySource::BasicUser => "basic_user",
            IdentitySource::Report => "report",
        }
    }
}

/// A device as identified by one request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeviceIdentity {
    /// The device's key: the GenieACS id `OUI-ProductClass-Serial` (each part
    /// escaped as GenieACS does) when OUI and serial are known, else the name
    /// the device was identified by.
    pub id: String,
    pub oui: Option<String>,
    pub product_class: Option<String>,
    pub serial: Option<String>,
    pub source: IdentitySource,
}

impl DeviceIdentity {
    pub fn from_oui_pc_sn(oui: &str, pc: &str, sn: &str, source: IdentitySource) -> Self {
        DeviceIdentity {
            id: genieacs_id(oui, pc, sn),
            oui: Some(oui.to_owned()),
            product_class: (!pc.is_empty()).then(|| pc.to_owned()),
            serial: Some(sn.to_owned()),
            source,
        }
    }

    fn named(name: &str, source: IdentitySource) -> Self {
        DeviceIdentity {
            id: name.to_owned(),
            oui: None,
            product_class: None,
            serial: None,
            source,
        }
    }
}

/// The rules, tried in order, and the report parameters the `report` rule reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    pub order: Vec<IdentitySource>,
    /// Parameters naming the device, tried in order by the `report` rule (after
    /// a full `DeviceInfo` OUI + ProductClass + SerialNumber set, which always
    /// wins because it gives the GenieACS id).
    pub report_params: Vec<String>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            order: vec![
                IdentitySource::Query,
                IdentitySource::BasicUser,
                IdentitySource::Report,
            ],
            report_params: vec![
                "Device.DeviceInfo.SerialNumber".into(),
                "Device.ManagementServer.ConnectionRequestUsername".into(),
                "InternetGatewayDevice.DeviceInfo.SerialNumber".into(),
                "InternetGatewayDevice.ManagementServer.ConnectionRequestUsername".into(),
            ],
        }
    }
}

/// Identifies the sender of a request, or `None` if no rule can.
pub fn identify(
    query: Option<&str>,
    basic_user: Option<&str>,
    reports: &[Report],
    config: &IdentityConfig,
) -> Option<DeviceIdentity> {
    config.order.iter().find_map(|rule| match rule {
        IdentitySource::Query => query.and_then(from_query),
        IdentitySource::BasicUser => basic_user
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| DeviceIdentity::named(u, IdentitySource::BasicUser)),
        IdentitySource::Report => from_reports(reports, &config.report_params),
    })
}

/// `oui`+`sn` (with optional `pc`), or a single `device` parameter.
fn from_query(query: &str) -> Option<DeviceIdentity> {
    let (mut oui, mut pc, mut sn, mut device) = (None, None, None, None);
    // A second `?` (the CPE appending to a URL that had a query) separates pairs too.
    for pair in query.split(['&', '?']) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode_str(value)
            .decode_utf8()
            .ok()?
            .trim()
            .to_string();
        match key {
            "oui" => oui = Some(value),
            "pc" => pc = Some(value),
            "sn" => sn = Some(value),
            "device" => device = Some(value),
            _ => {}
        }
    }
    match (oui, sn) {
        (Some(oui), Some(sn)) if !oui.is_empty() && !sn.is_empty() => {
            Some(DeviceIdentity::from_oui_pc_sn(
                &oui,
                pc.as_deref().unwrap_or(""),
                &sn,
                IdentitySource::Query,
            ))
        }
        _ => device
            .filter(|d| !d.is_empty())
            .map(|d| DeviceIdentity::named(&d, IdentitySource::Query)),
    }
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::Text(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        _ => None,
    }
}

fn from_reports(reports: &[Report], names: &[String]) -> Option<DeviceIdentity> {
    let find = |path: &str| {
        reports
            .iter()
            .flat_map(|r| &r.params)
            .find(|p| p.path == path)
            .and_then(|p| text_of(&p.value))
    };
    for root in ["Device.DeviceInfo.", "InternetGatewayDevice.DeviceInfo."] {
        let oui = find(&format!("{root}ManufacturerOUI"));
        let sn = find(&format!("{root}SerialNumber"));
        if let (Some(oui), Some(sn)) = (oui, sn) {
            let pc = find(&format!("{root}ProductClass")).unwrap_or_default();
            return Some(DeviceIdentity::from_oui_pc_sn(
                &oui,
                &pc,
                &sn,
                IdentitySource::Report,
            ));
        }
    }
    names
        .iter()
        .find_map(|n| find(n))
        .map(|v| DeviceIdentity::named(&v, IdentitySource::Report))
}

/// GenieACS's device id: `esc(OUI)-esc(ProductClass)-esc(Serial)`, or
/// `esc(OUI)-esc(Serial)` without a product class.
pub fn genieacs_id(oui: &str, product_class: &str, serial: &str) -> String {
    if product_class.is_empty() {
        format!("{}-{}", genieacs_escape(oui), genieacs_escape(serial))
    } else {
        format!(
            "{}-{}-{}",
            genieacs_escape(oui),
            genieacs_escape(product_class),
            genieacs_escape(serial)
        )
    }
}

/// GenieACS escapes every byte except `A-Z a-z 0-9 _` as `%XX` (upper-case hex,
/// UTF-8), including `-`, `.` and space.
pub fn genieacs_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Param, TimeSource};

    fn report(params: &[(&str, &str)]) -> Report {
        Report {
            time_ms: 0,
            time_source: TimeSource::Received,
            params: params
                .iter()
                .map(|(p, v)| Param {
                    path: (*p).into(),
                    value: Value::Text((*v).into()),
                })
                .collect(),
        }
    }

    #[test]
    fn escaping_matches_genieacs() {
        assert_eq!(
            genieacs_id("00236A", "SR552n", "SR-01"),
            "00236A-SR552n-SR%2D01"
        );
        assert_eq!(
            genieacs_id("0A1B2C", "USP Agent", "SN.2"),
            "0A1B2C-USP%20Agent-SN%2E2"
        );
        assert_eq!(genieacs_id("0A1B2C", "", "SN2"), "0A1B2C-SN2");
        assert_eq!(genieacs_escape("ü"), "%C3%BC");
    }

    #[test]
    fn query_identity_with_escapes_and_a_second_question_mark() {
        let cfg = IdentityConfig::default();
        let id = identify(
            Some("oui=0A1B2C&pc=USP%20Agent&sn=SN0000000002"),
            None,
            &[],
            &cfg,
        )
        .unwrap();
        assert_eq!(id.id, "0A1B2C-USP%20Agent-SN0000000002");
        assert_eq!(id.product_class.as_deref(), Some("USP Agent"));
        let id = identify(
            Some("site=lab1?oui=0A1B2C&pc=Device2&sn=SN1"),
            None,
            &[],
            &cfg,
        )
        .unwrap();
        assert_eq!(id.id, "0A1B2C-Device2-SN1");
        assert_eq!(id.source, IdentitySource::Query);
        let id = identify(Some("device=cpe-7"), None, &[], &cfg).unwrap();
        assert_eq!(id.id, "cpe-7");
    }

    #[test]
    fn rules_fall_through_in_order() {
        let cfg = IdentityConfig::default();
        let body = [report(&[(
            "Device.ManagementServer.ConnectionRequestUsername",
            "cpe-0001",
        )])];
        // Incomplete query (no sn) falls through to the Basic user, then the body.
        let id = identify(Some("oui=0A1B2C"), Some("router-9"), &body, &cfg).unwrap();
        assert_eq!(
            (id.id.as_str(), id.source),
            ("router-9", IdentitySource::BasicUser)
        );
        let id = identify(Some("oui=0A1B2C"), None, &body, &cfg).unwrap();
        assert_eq!(
            (id.id.as_str(), id.source),
            ("cpe-0001", IdentitySource::Report)
        );
        assert_eq!(identify(None, Some(" "), &[report(&[])], &cfg), None);
        let only_report = IdentityConfig {
            order: vec![IdentitySource::Report],
            ..IdentityConfig::default()
        };
        assert_eq!(
            identify(Some("oui=A&sn=B"), None, &body, &only_report)
                .unwrap()
                .id,
            "cpe-0001"
        );
    }

    #[test]
    fn full_device_info_in_the_report_gives_the_genieacs_id() {
        let body = [report(&[
            (
                "Device.ManagementServer.ConnectionRequestUsername",
                "cpe-0001",
            ),
            ("Device.DeviceInfo.ManufacturerOUI", "0A1B2C"),
            ("Device.DeviceInfo.ProductClass", "Device2"),
            ("Device.DeviceInfo.SerialNumber", "SN-1"),
        ])];
        let id = identify(None, None, &body, &IdentityConfig::default()).unwrap();
        assert_eq!(id.id, "0A1B2C-Device2-SN%2D1");
        assert_eq!(id.serial.as_deref(), Some("SN-1"));
    }
}
