//! One emulated CPE: a small TR-181 data model whose values move like a real
//! router's (uptime, growing counters that reset on reboot, hosts and Wi-Fi
//! stations, neighbouring networks), rendered as a Bulk Data report in any of
//! the four BBF formats.

use chrono::{DateTime, Utc};
use std::fmt::Write;

/// A report encoding, as the CPE's profile would configure it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    NameValuePair,
    ObjectHierarchy,
    ParameterPerRow,
    ParameterPerColumn,
}

impl Encoding {
    pub fn token(self) -> &'static str {
        match self {
            Encoding::NameValuePair => "NameValuePair",
            Encoding::ObjectHierarchy => "ObjectHierarchy",
            Encoding::ParameterPerRow => "ParameterPerRow",
            Encoding::ParameterPerColumn => "ParameterPerColumn",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::NameValuePair | Encoding::ObjectHierarchy => {
                "application/json; charset=UTF-8"
            }
            _ => "text/csv; charset=UTF-8; header=present",
        }
    }
}

/// How a report carries its CollectionTime / ReportTimestamp
/// (`JSONEncoding.ReportTimestamp`, `CSVEncoding.RowTimestamp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeStyle {
    UnixEpoch,
    Iso8601,
    None,
}

impl TimeStyle {
    pub fn from_token(s: &str) -> TimeStyle {
        match s {
            "ISO-8601" => TimeStyle::Iso8601,
            "None" => TimeStyle::None,
            _ => TimeStyle::UnixEpoch,
        }
    }

    fn render(self, t: &DateTime<Utc>) -> Option<serde_json::Value> {
        match self {
            TimeStyle::UnixEpoch => Some(t.timestamp().into()),
            TimeStyle::Iso8601 => Some(t.format("%Y-%m-%dT%H:%M:%SZ").to_string().into()),
            TimeStyle::None => None,
        }
    }

    fn text(self, t: &DateTime<Utc>) -> Option<String> {
        self.render(t).map(|v| match v {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        })
    }
}

/// A parameter value with its TR-106 type.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    UInt(u64),
    Int(i64),
    Bool(bool),
    Str(String),
}

impl Val {
    pub fn csv_type(&self) -> &'static str {
        match self {
            Val::UInt(v) if *v > u64::from(u32::MAX) => "unsignedLong",
            Val::UInt(_) => "unsignedInt",
            Val::Int(_) => "int",
            Val::Bool(_) => "boolean",
            Val::Str(_) => "string",
        }
    }

    pub fn text(&self) -> String {
        match self {
            Val::UInt(v) => v.to_string(),
            Val::Int(v) => v.to_string(),
            Val::Bool(b) => if *b { "1" } else { "0" }.to_string(),
            Val::Str(s) => s.clone(),
        }
    }

    fn json(&self, as_strings: bool) -> serde_json::Value {
        if as_strings {
            return self.text().into();
        }
        match self {
            Val::UInt(v) => (*v).into(),
            Val::Int(v) => (*v).into(),
            Val::Bool(b) => (*b).into(),
            Val::Str(s) => s.clone().into(),
        }
    }
}

struct Host {
    mac: String,
    name: String,
    band: usize,
    rcpi: u8,
    bytes: [u64; 2],
}

struct Neighbor {
    ssid: String,
    bssid: String,
    channel: u32,
    signal: i64,
}

/// One report's content: its CollectionTime and parameters.
pub type Snapshot = (DateTime<Utc>, Vec<(String, Val)>);

/// One emulated router.
pub struct Cpe {
    pub oui: String,
    pub product_class: String,
    pub serial: String,
    pub encoding: Encoding,
    /// Everything as JSON strings, as TP-Link firmware sends it.
    pub strings: bool,
    pub gzip: bool,
    /// `NeighboringWiFiDiagnostic.DiagnosticsState`; results are reported
    /// only once a scan completed.
    pub scan_state: &'static str,
    uptime_s: u64,
    /// [interface][bytes sent, bytes received, packets sent, packets received]
    interfaces: Vec<[u64; 4]>,
    radios: Vec<[u64; 4]>,
    hosts: Vec<Host>,
    neighbors: Vec<Neighbor>,
    rng: fastrand::Rng,
}

const VENDORS: &[(&str, &str, Encoding, bool, bool)] = &[
    // OUI, product class, encoding, all-strings, gzip
    ("30DE4B", "Device2", Encoding::ObjectHierarchy, true, false),
    ("A1B2C3", "HX-100", Encoding::NameValuePair, false, true),
    ("00236A", "SR552n", Encoding::ParameterPerRow, false, false),
    ("0A1B2C", "USP Agent", Encoding::NameValuePair, false, false),
    ("C0FFEE", "CX.7", Encoding::ParameterPerColumn, false, true),
];

impl Cpe {
    /// The `index`-th CPE of a fleet: vendors, formats and ids rotate, and
    /// some serial numbers and product classes need GenieACS escaping.
    pub fn new(index: usize, seed: u64) -> Cpe {
        let (oui, pc, encoding, strings, gzip) = VENDORS[index % VENDORS.len()];
        let mut rng =
            fastrand::Rng::with_seed(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let serial = if index % 3 == 2 {
            format!("SR-{index:04}")
        } else {
            format!("SN{index:010}")
        };
        let hosts = (0..rng.usize(2..5))
            .map(|h| Host {
                mac: format!(
                    "02:00:5E:{:02X}:{:02X}:{:02X}",
                    index / 256 % 256,
                    index % 256,
                    h
                ),
                name: ["phone-ana", "laptop-bruno", "tv-sala", "printer"][h % 4].to_string(),
                band: h % 2,
                rcpi: rng.u8(60..150),
                bytes: [
                    rng.u64(1_000_000..50_000_000),
                    rng.u64(1_000_000..90_000_000),
                ],
            })
            .collect();
        let neighbors = (0..rng.usize(3..7))
            .map(|n| Neighbor {
                ssid: [
                    "Vizinho_2G",
                    "  ",
                    "Cafe;2nd",
                    "Café ☕",
                    "NET_\"quoted\"",
                    "LAB-5G",
                    "",
                ][n % 7]
                    .to_string(),
                bssid: format!(
                    "0A:11:22:{:02X}:{:02X}:{:02X}",
                    index / 256 % 256,
                    index % 256,
                    n
                ),
                channel: [1, 6, 11, 36, 44, 149][n % 6],
                signal: -(rng.i64(45..92)),
            })
            .collect();
        Cpe {
            oui: oui.into(),
            product_class: pc.into(),
            serial,
            encoding,
            strings,
            gzip,
            scan_state: "Complete",
            uptime_s: rng.u64(3_600..2_000_000),
            interfaces: (0..4)
                .map(|_| {
                    [
                        rng.u64(1 << 30..1 << 34),
                        rng.u64(1 << 30..1 << 35),
                        rng.u64(1 << 20..1 << 24),
                        rng.u64(1 << 20..1 << 24),
                    ]
                })
                .collect(),
            radios: (0..2)
                .map(|_| {
                    [
                        rng.u64(1 << 26..1 << 30),
                        rng.u64(1 << 26..1 << 30),
                        rng.u64(1 << 16..1 << 20),
                        rng.u64(1 << 16..1 << 20),
                    ]
                })
                .collect(),
            hosts,
            neighbors,
            rng,
        }
    }

    /// The query string a CPE appends to its collector URL.
    pub fn query(&self) -> String {
        format!(
            "oui={}&pc={}&sn={}",
            self.oui,
            self.product_class.replace(' ', "%20"),
            self.serial
        )
    }

    /// Time passes: counters grow with traffic, signals wander.
    pub fn advance(&mut self, secs: u64) {
        self.uptime_s += secs;
        for i in &mut self.interfaces {
            let bytes = self.rng.u64(0..2_000_000) * secs;
            i[0] += bytes;
            i[1] += bytes * 3;
            i[2] += bytes / 1200;
            i[3] += bytes / 400;
        }
        for r in &mut self.radios {
            let bytes = self.rng.u64(0..500_000) * secs;
            r[0] += bytes;
            r[1] += bytes / 2;
            r[2] += bytes / 1000;
            r[3] += bytes / 2000;
        }
        for h in &mut self.hosts {
            h.bytes[0] += self.rng.u64(0..100_000) * secs;
            h.bytes[1] += self.rng.u64(0..300_000) * secs;
            h.rcpi = h
                .rcpi
                .saturating_add(self.rng.u8(0..5))
                .saturating_sub(2)
                .clamp(40, 200);
        }
    }

    pub fn uptime_s(&self) -> u64 {
        self.uptime_s
    }

    /// A new neighbour scan: signals move, a network may come or go.
    pub fn rescan(&mut self) {
        for n in &mut self.neighbors {
            n.signal = (n.signal + self.rng.i64(-4..5)).clamp(-95, -30);
        }
        self.scan_state = "Complete";
    }

    /// A reboot: uptime and counters start again from zero.
    pub fn reboot(&mut self) {
        self.uptime_s = 0;
        for c in self.interfaces.iter_mut().chain(self.radios.iter_mut()) {
            *c = [0; 4];
        }
    }

    /// The parameters a profile referencing the usual lab objects reports.
    pub fn params(&self) -> Vec<(String, Val)> {
        let mut p: Vec<(String, Val)> = Vec::with_capacity(128);
        let mut add = |path: String, v: Val| p.push((path, v));
        add("Device.DeviceInfo.UpTime".into(), Val::UInt(self.uptime_s));
        add(
            "Device.DeviceInfo.MemoryStatus.Total".into(),
            Val::UInt(249_856),
        );
        add(
            "Device.DeviceInfo.MemoryStatus.Free".into(),
            Val::UInt(61_234 + self.uptime_s % 5000),
        );
        add(
            "Device.DeviceInfo.ProcessStatus.CPUUsage".into(),
            Val::UInt(self.uptime_s % 37),
        );
        for (i, c) in self.interfaces.iter().enumerate() {
            let base = format!("Device.IP.Interface.{}.Stats", i + 1);
            for (name, v) in [
                "BytesSent",
                "BytesReceived",
                "PacketsSent",
                "PacketsReceived",
            ]
            .iter()
            .zip(c)
            {
                add(format!("{base}.{name}"), Val::UInt(*v));
            }
            add(format!("{base}.ErrorsSent"), Val::UInt(c[2] / 100_000));
            add(format!("{base}.ErrorsReceived"), Val::UInt(c[3] / 50_000));
        }
        for (i, c) in self.radios.iter().enumerate() {
            let base = format!("Device.WiFi.Radio.{}", i + 1);
            add(
                format!("{base}.Channel"),
                Val::UInt(if i == 0 { 6 } else { 44 }),
            );
            add(
                format!("{base}.OperatingFrequencyBand"),
                Val::Str(if i == 0 { "2.4GHz" } else { "5GHz" }.into()),
            );
            add(
                format!("{base}.CurrentOperatingChannelBandwidth"),
                Val::Str(if i == 0 { "20MHz" } else { "80MHz" }.into()),
            );
            for (name, v) in [
                "BytesSent",
                "BytesReceived",
                "PacketsSent",
                "PacketsReceived",
            ]
            .iter()
            .zip(c)
            {
                add(format!("{base}.Stats.{name}"), Val::UInt(*v));
            }
            add(format!("{base}.Stats.Noise"), Val::Int(-92 + i as i64 * 3));
        }
        for (n, h) in self.hosts.iter().enumerate() {
            let sta = format!(
                "Device.WiFi.DataElements.Network.Device.1.Radio.{}.BSS.1.STA.{}",
                h.band + 1,
                n + 1
            );
            add(format!("{sta}.MACAddress"), Val::Str(h.mac.clone()));
            add(
                format!("{sta}.SignalStrength"),
                Val::UInt(u64::from(h.rcpi)),
            );
            add(format!("{sta}.BytesSent"), Val::UInt(h.bytes[0]));
            add(format!("{sta}.BytesReceived"), Val::UInt(h.bytes[1]));
            add(
                format!("{sta}.LastConnectTime"),
                Val::UInt(self.uptime_s.min(86_400)),
            );
            let host = format!("Device.Hosts.Host.{}", n + 1);
            add(
                format!("{host}.PhysAddress"),
                Val::Str(h.mac.to_lowercase()),
            );
            add(format!("{host}.HostName"), Val::Str(h.name.clone()));
            add(format!("{host}.Active"), Val::Bool(true));
        }
        for b in 0..2 {
            let bss = format!(
                "Device.WiFi.DataElements.Network.Device.1.Radio.{}.BSS.1",
                b + 1
            );
            add(
                format!("{bss}.SSID"),
                Val::Str(format!("LAB-{}", if b == 0 { "2G" } else { "5G" })),
            );
        }
        add(
            "Device.WiFi.NeighboringWiFiDiagnostic.DiagnosticsState".into(),
            Val::Str(self.scan_state.into()),
        );
        let results: &[Neighbor] = if self.scan_state == "Complete" {
            &self.neighbors
        } else {
            &[]
        };
        add(
            "Device.WiFi.NeighboringWiFiDiagnostic.ResultNumberOfEntries".into(),
            Val::UInt(results.len() as u64),
        );
        for (n, nb) in results.iter().enumerate() {
            let r = format!("Device.WiFi.NeighboringWiFiDiagnostic.Result.{}", n + 1);
            add(format!("{r}.SSID"), Val::Str(nb.ssid.clone()));
            add(format!("{r}.BSSID"), Val::Str(nb.bssid.clone()));
            add(format!("{r}.Channel"), Val::UInt(u64::from(nb.channel)));
            add(format!("{r}.SignalStrength"), Val::Int(nb.signal));
            add(
                format!("{r}.OperatingFrequencyBand"),
                Val::Str(if nb.channel <= 14 { "2.4GHz" } else { "5GHz" }.into()),
            );
            add(
                format!("{r}.OperatingChannelBandwidth"),
                Val::Str("20MHz".into()),
            );
        }
        p
    }

    /// Renders reports (oldest first: retained failed ones, then the current
    /// one) as one request body in this CPE's encoding.
    pub fn render(&self, reports: &[Snapshot]) -> Vec<u8> {
        self.render_as(self.encoding, TimeStyle::UnixEpoch, reports)
    }

    /// Renders reports in `encoding` with the profile's timestamp style.
    pub fn render_as(&self, encoding: Encoding, time: TimeStyle, reports: &[Snapshot]) -> Vec<u8> {
        match encoding {
            Encoding::NameValuePair | Encoding::ObjectHierarchy => {
                let list: Vec<serde_json::Value> = reports
                    .iter()
                    .map(|(t, params)| {
                        let mut obj = serde_json::Map::new();
                        if let Some(ct) = time.render(t) {
                            obj.insert("CollectionTime".into(), ct);
                        }
                        for (path, v) in params {
                            if encoding == Encoding::NameValuePair {
                                obj.insert(path.clone(), v.json(self.strings));
                            } else {
                                insert_nested(&mut obj, path, v.json(self.strings));
                            }
                        }
                        serde_json::Value::Object(obj)
                    })
                    .collect();
                serde_json::json!({ "Report": list })
                    .to_string()
                    .into_bytes()
            }
            Encoding::ParameterPerRow => {
                let mut out = String::from(if time == TimeStyle::None {
                    "ParameterName,ParameterValue,ParameterType\r\n"
                } else {
                    "ReportTimestamp,ParameterName,ParameterValue,ParameterType\r\n"
                });
                for (t, params) in reports {
                    let ts = time.text(t).map(|s| format!("{s},")).unwrap_or_default();
                    for (path, v) in params {
                        let _ = write!(
                            out,
                            "{ts}{},{},{}\r\n",
                            csv_field(path),
                            csv_field(&v.text()),
                            v.csv_type()
                        );
                    }
                }
                out.into_bytes()
            }
            Encoding::ParameterPerColumn => {
                let stamped = time != TimeStyle::None;
                let mut header: Vec<String> = Vec::new();
                if stamped {
                    header.push("ReportTimestamp".into());
                }
                if let Some((_, params)) = reports.first() {
                    header.extend(params.iter().map(|(path, _)| csv_field(path)));
                }
                let mut out = header.join(",");
                out.push_str("\r\n");
                for (t, params) in reports {
                    let mut row: Vec<String> = Vec::new();
                    if let Some(ts) = time.text(t) {
                        row.push(ts);
                    }
                    row.extend(params.iter().map(|(_, v)| csv_field(&v.text())));
                    out.push_str(&row.join(","));
                    out.push_str("\r\n");
                }
                out.into_bytes()
            }
        }
    }
}

/// RFC 4180 quoting where needed.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// ObjectHierarchy: `a.b.c = v` becomes `{"a":{"b":{"c":v}}}`.
fn insert_nested(
    obj: &mut serde_json::Map<String, serde_json::Value>,
    path: &str,
    v: serde_json::Value,
) {
    match path.split_once('.') {
        None => {
            obj.insert(path.to_string(), v);
        }
        Some((head, rest)) => {
            let child = obj
                .entry(head.to_string())
                .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
            if let serde_json::Value::Object(m) = child {
                insert_nested(m, rest, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkflow_shared::report::{self, Limits, Request, Value};

    /// Every encoding decodes back to the same parameters.
    #[test]
    fn every_encoding_round_trips_through_the_decoder() {
        let t = DateTime::from_timestamp(1_733_246_400, 0).unwrap();
        for i in 0..VENDORS.len() {
            let cpe = Cpe::new(i, 7);
            let params = cpe.params();
            let body = cpe.render(&[
                (t, params.clone()),
                (t + chrono::Duration::seconds(300), params.clone()),
            ]);
            let req = Request {
                body: &body,
                content_type: Some(cpe.encoding.content_type()),
                report_format: Some(cpe.encoding.token()),
                content_encoding: None,
                date: None,
                received_at_ms: 0,
            };
            let decoded = report::decode(&req, &Limits::default()).unwrap();
            assert_eq!(decoded.reports.len(), 2, "{:?}", cpe.encoding);
            assert_eq!(decoded.reports[1].time_ms, 1_733_246_700_000);
            let got: Vec<&str> = decoded.reports[0]
                .params
                .iter()
                .map(|p| p.path.as_str())
                .collect();
            let want: Vec<&str> = params.iter().map(|p| p.0.as_str()).collect();
            if matches!(
                cpe.encoding,
                Encoding::ObjectHierarchy | Encoding::NameValuePair
            ) {
                // JSON objects here keep keys sorted; the set is what must match.
                let mut g = got.clone();
                let mut w = want.clone();
                g.sort_unstable();
                w.sort_unstable();
                assert_eq!(g, w);
            } else {
                assert_eq!(got, want, "{:?}", cpe.encoding);
            }
            let uptime = decoded.reports[0]
                .params
                .iter()
                .find(|p| p.path == "Device.DeviceInfo.UpTime")
                .unwrap();
            let expected = match (cpe.encoding, cpe.strings) {
                (Encoding::ParameterPerColumn, _) | (_, true) => {
                    Value::Text(cpe.uptime_s.to_string())
                }
                _ => Value::Int(cpe.uptime_s as i64),
            };
            assert_eq!(uptime.value, expected, "{:?}", cpe.encoding);
        }
    }
}
