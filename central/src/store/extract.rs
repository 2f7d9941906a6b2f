//! Typed rows from a report's full TR-181 paths: device statistics, interface
//! and radio counters, neighbouring Wi-Fi scan results and Wi-Fi clients.
//!
//! Pure functions over one report; the writer adds device id and time. Only
//! full paths (`Device.` or `InternetGatewayDevice.`) are read here: keys a
//! profile renamed with `Parameter.Name` (`host.2`, `cpu`) still land in the
//! every-parameter table, and are mapped back to paths elsewhere.

use bulkflow_shared::report::{Param, Value};
use std::collections::BTreeMap;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct DeviceStats {
    pub uptime_s: Option<i64>,
    pub memory_total_kib: Option<i64>,
    pub memory_free_kib: Option<i64>,
    pub cpu_percent: Option<i32>,
}

impl DeviceStats {
    fn is_empty(&self) -> bool {
        *self == DeviceStats::default()
    }
}

/// Counters are unsigned 64-bit (they can exceed `i64`); stored as numeric.
pub type Counter = Option<u64>;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct InterfaceStats {
    pub interface: i32,
    pub bytes_sent: Counter,
    pub bytes_received: Counter,
    pub packets_sent: Counter,
    pub packets_received: Counter,
    pub errors_sent: Counter,
    pub errors_received: Counter,
    pub discard_packets_sent: Counter,
    pub discard_packets_received: Counter,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct RadioStats {
    pub radio: i32,
    pub channel: Option<i32>,
    pub band: Option<String>,
    pub bandwidth: Option<String>,
    pub bytes_sent: Counter,
    pub bytes_received: Counter,
    pub packets_sent: Counter,
    pub packets_received: Counter,
    pub errors_sent: Counter,
    pub errors_received: Counter,
    pub noise_dbm: Option<i32>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Neighbor {
    pub result: i32,
    pub bssid: Option<String>,
    pub ssid: Option<String>,
    pub channel: Option<i32>,
    pub band: Option<String>,
    pub bandwidth: Option<String>,
    pub signal_dbm: Option<i32>,
    pub noise_dbm: Option<i32>,
    pub security_mode: Option<String>,
    pub encryption_mode: Option<String>,
    pub mode: Option<String>,
    pub standards: Option<String>,
    pub radio: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientSource {
    DataElements,
    AccessPoint,
}

impl ClientSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientSource::DataElements => "data_elements",
            ClientSource::AccessPoint => "access_point",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    pub mac: String,
    pub source: ClientSource,
    pub attached_to: String,
    pub ssid: Option<String>,
    pub bssid: Option<String>,
    pub band: Option<String>,
    pub host_name: Option<String>,
    /// dBm, in tenths exact to .5 (RCPI/2 - 110), as decimal text.
    pub signal_dbm: Option<String>,
    pub bytes_sent: Counter,
    pub bytes_received: Counter,
    pub packets_sent: Counter,
    pub packets_received: Counter,
    pub errors_sent: Counter,
    pub errors_received: Counter,
    pub retrans_count: Counter,
    pub last_downlink_rate_kbps: Option<i64>,
    pub last_uplink_rate_kbps: Option<i64>,
    pub connected_s: Option<i64>,
}

/// Everything typed that one report holds.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Extracted {
    pub device: Option<DeviceStats>,
    pub interfaces: Vec<InterfaceStats>,
    pub radios: Vec<RadioStats>,
    pub neighbors: Vec<Neighbor>,
    pub clients: Vec<Client>,
}

impl Extracted {
    pub fn is_empty(&self) -> bool {
        self.device.is_none()
            && self.interfaces.is_empty()
            && self.radios.is_empty()
            && self.neighbors.is_empty()
            && self.clients.is_empty()
    }
}

/// Fields of one object instance, by name, borrowing the report's values.
type Fields<'a> = BTreeMap<&'a str, &'a Value>;

/// The report's parameters grouped by the objects the typed tables read.
#[derive(Default)]
struct Objects<'a> {
    device: Fields<'a>,
    interfaces: BTreeMap<u32, Fields<'a>>,
    radios: BTreeMap<u32, Fields<'a>>,
    ssids: BTreeMap<u32, Fields<'a>>,
    neighbors: BTreeMap<u32, Fields<'a>>,
    /// DataElements BSS, keyed by (device, radio, bss).
    bsses: BTreeMap<(u32, u32, u32), Fields<'a>>,
    /// DataElements STA, keyed by (device, radio, bss, sta).
    stas: BTreeMap<(u32, u32, u32, u32), Fields<'a>>,
    access_points: BTreeMap<u32, Fields<'a>>,
    /// AccessPoint.{a}.AssociatedDevice.{d}, `Stats.` fields prefixed `Stats.`.
    assoc: BTreeMap<(u32, u32), Fields<'a>>,
    hosts: BTreeMap<u32, Fields<'a>>,
}

fn index(s: &str) -> Option<u32> {
    s.parse().ok()
}

impl<'a> Objects<'a> {
    fn add(&mut self, path: &'a str, value: &'a Value) {
        let rest = match path
            .strip_prefix("Device.")
            .or_else(|| path.strip_prefix("InternetGatewayDevice."))
        {
            Some(r) => r,
            None => return,
        };
        // Segments on the stack: no allocation per parameter. No path the
        // tables read has more than 12; longer ones are skipped.
        let mut seg = [""; 12];
        let mut n = 0;
        for s in rest.split('.') {
            let Some(slot) = seg.get_mut(n) else {
                return;
            };
            *slot = s;
            n += 1;
        }
        match &seg[..n] {
            ["DeviceInfo", "UpTime"] => {
                self.device.insert("UpTime", value);
            }
            ["DeviceInfo", "MemoryStatus", f @ ("Total" | "Free")] => {
                self.device.insert(f, value);
            }
            ["DeviceInfo", "ProcessStatus", "CPUUsage"] => {
                self.device.insert("CPUUsage", value);
            }
            ["IP", "Interface", i, "Stats", f] => {
                if let Some(i) = index(i) {
                    self.interfaces.entry(i).or_default().insert(f, value);
                }
            }
            ["WiFi", "Radio", i, f] | ["WiFi", "Radio", i, "Stats", f] => {
                if let Some(i) = index(i) {
                    self.radios.entry(i).or_default().insert(f, value);
                }
            }
            ["WiFi", "SSID", i, f] => {
                if let Some(i) = index(i) {
                    self.ssids.entry(i).or_default().insert(f, value);
                }
            }
            ["WiFi", "NeighboringWiFiDiagnostic", "Result", i, f] => {
                if let Some(i) = index(i) {
                    self.neighbors.entry(i).or_default().insert(f, value);
                }
            }
            [
                "WiFi",
                "DataElements",
                "Network",
                "Device",
                d,
                "Radio",
                r,
                "BSS",
                b,
                f,
            ] => {
                if let (Some(d), Some(r), Some(b)) = (index(d), index(r), index(b)) {
                    self.bsses.entry((d, r, b)).or_default().insert(f, value);
                }
            }
            [
                "WiFi",
                "DataElements",
                "Network",
                "Device",
                d,
                "Radio",
                r,
                "BSS",
                b,
                "STA",
                s,
                f,
            ] => {
                if let (Some(d), Some(r), Some(b), Some(s)) =
                    (index(d), index(r), index(b), index(s))
                {
                    self.stas.entry((d, r, b, s)).or_default().insert(f, value);
                }
            }
            ["WiFi", "AccessPoint", a, f] => {
                if let Some(a) = index(a) {
                    self.access_points.entry(a).or_default().insert(f, value);
                }
            }
            ["WiFi", "AccessPoint", a, "AssociatedDevice", d, f] => {
                if let (Some(a), Some(d)) = (index(a), index(d)) {
                    self.assoc.entry((a, d)).or_default().insert(f, value);
                }
            }
            ["WiFi", "AccessPoint", a, "AssociatedDevice", d, "Stats", f] => {
                if let (Some(a), Some(d)) = (index(a), index(d)) {
                    let key = stats_key(f);
                    self.assoc.entry((a, d)).or_default().insert(key, value);
                }
            }
            ["Hosts", "Host", i, f] => {
                if let Some(i) = index(i) {
                    self.hosts.entry(i).or_default().insert(f, value);
                }
            }
            _ => {}
        }
    }
}

/// AssociatedDevice keeps its counters under `Stats.`; mapped onto the same
/// field names DataElements STA uses.
fn stats_key(f: &str) -> &str {
    match f {
        "BytesSent" | "BytesReceived" | "PacketsSent" | "PacketsReceived" | "ErrorsSent"
        | "ErrorsReceived" | "RetransCount" => f,
        _ => "",
    }
}

/// Extracts the typed rows of one report.
pub fn extract(params: &[Param]) -> Extracted {
    let mut o = Objects::default();
    for p in params {
        o.add(&p.path, &p.value);
    }
    let device = DeviceStats {
        uptime_s: int(o.device.get("UpTime")),
        memory_total_kib: int(o.device.get("Total")),
        memory_free_kib: int(o.device.get("Free")),
        cpu_percent: int(o.device.get("CPUUsage")).and_then(|v| i32::try_from(v).ok()),
    };
    let radio_band = |r: u32| -> Option<String> {
        let f = o.radios.get(&r)?;
        text(f.get("OperatingFrequencyBand"))
            .or_else(|| int(f.get("Channel")).and_then(band_of_channel))
    };
    let host_names: BTreeMap<String, String> = o
        .hosts
        .values()
        .filter_map(|h| {
            Some((
                normalize_mac(&text(h.get("PhysAddress"))?),
                text(h.get("HostName"))?,
            ))
        })
        .collect();
    let counter_of = |f: &Fields<'_>, k: &str| counter(f.get(k));

    let interfaces = o
        .interfaces
        .iter()
        .map(|(&i, f)| InterfaceStats {
            interface: i as i32,
            bytes_sent: counter_of(f, "BytesSent"),
            bytes_received: counter_of(f, "BytesReceived"),
            packets_sent: counter_of(f, "PacketsSent"),
            packets_received: counter_of(f, "PacketsReceived"),
            errors_sent: counter_of(f, "ErrorsSent"),
            errors_received: counter_of(f, "ErrorsReceived"),
            discard_packets_sent: counter_of(f, "DiscardPacketsSent"),
            discard_packets_received: counter_of(f, "DiscardPacketsReceived"),
        })
        .collect();
    let radios = o
        .radios
        .iter()
        .map(|(&i, f)| RadioStats {
            radio: i as i32,
            channel: int32(f.get("Channel")),
            band: radio_band(i),
            bandwidth: text(f.get("CurrentOperatingChannelBandwidth"))
                .or_else(|| text(f.get("OperatingChannelBandwidth"))),
            bytes_sent: counter_of(f, "BytesSent"),
            bytes_received: counter_of(f, "BytesReceived"),
            packets_sent: counter_of(f, "PacketsSent"),
            packets_received: counter_of(f, "PacketsReceived"),
            errors_sent: counter_of(f, "ErrorsSent"),
            errors_received: counter_of(f, "ErrorsReceived"),
            noise_dbm: int32(f.get("Noise")),
        })
        .collect();
    let neighbors = o
        .neighbors
        .iter()
        .map(|(&i, f)| Neighbor {
            result: i as i32,
            bssid: text(f.get("BSSID")),
            // SSIDs are kept exactly: blank, padded or full of separators.
            ssid: raw_text(f.get("SSID")),
            channel: int32(f.get("Channel")),
            band: text(f.get("OperatingFrequencyBand"))
                .or_else(|| int(f.get("Channel")).and_then(band_of_channel)),
            bandwidth: text(f.get("OperatingChannelBandwidth")),
            signal_dbm: int32(f.get("SignalStrength")),
            noise_dbm: int32(f.get("Noise")),
            security_mode: text(f.get("SecurityModeEnabled")),
            encryption_mode: text(f.get("EncryptionMode")),
            mode: text(f.get("Mode")),
            standards: text(f.get("OperatingStandards")),
            radio: text(f.get("Radio")),
        })
        .collect();

    let mut clients = Vec::new();
    for (&(d, r, b, s), f) in &o.stas {
        let Some(mac) = text(f.get("MACAddress")).map(|m| normalize_mac(&m)) else {
            continue;
        };
        let bss = o.bsses.get(&(d, r, b));
        clients.push(Client {
            host_name: host_names
                .get(&mac)
                .cloned()
                .or_else(|| text(f.get("Hostname"))),
            mac,
            source: ClientSource::DataElements,
            attached_to: format!("Device.{d}.Radio.{r}.BSS.{b}.STA.{s}"),
            ssid: bss.and_then(|x| raw_text(x.get("SSID"))),
            bssid: bss.and_then(|x| text(x.get("BSSID"))),
            // DataElements radios are numbered like WiFi.Radio on the CPEs seen;
            // the band comes from the same-numbered radio when the report has it.
            band: radio_band(r),
            signal_dbm: int(f.get("SignalStrength")).and_then(rcpi_to_dbm),
            bytes_sent: counter_of(f, "BytesSent"),
            bytes_received: counter_of(f, "BytesReceived"),
            packets_sent: counter_of(f, "PacketsSent"),
            packets_received: counter_of(f, "PacketsReceived"),
            errors_sent: counter_of(f, "ErrorsSent"),
            errors_received: counter_of(f, "ErrorsReceived"),
            retrans_count: counter_of(f, "RetransCount"),
            last_downlink_rate_kbps: int(f.get("LastDataDownlinkRate")),
            last_uplink_rate_kbps: int(f.get("LastDataUplinkRate")),
            connected_s: int(f.get("LastConnectTime")),
        });
    }
    for (&(a, d), f) in &o.assoc {
        let Some(mac) = text(f.get("MACAddress")).map(|m| normalize_mac(&m)) else {
            continue;
        };
        // AccessPoint -> SSIDReference -> SSID.LowerLayers -> Radio, when reported.
        let ap = o.access_points.get(&a);
        let ssid_index = ap
            .and_then(|x| text(x.get("SSIDReference")))
            .and_then(|r| last_index(&r));
        let ssid_obj = ssid_index.and_then(|i| o.ssids.get(&i));
        let radio_index = ssid_obj
            .and_then(|x| text(x.get("LowerLayers")))
            .and_then(|r| last_index(&r));
        clients.push(Client {
            host_name: host_names.get(&mac).cloned(),
            mac,
            source: ClientSource::AccessPoint,
            attached_to: format!("AccessPoint.{a}.AssociatedDevice.{d}"),
            ssid: ssid_obj.and_then(|x| raw_text(x.get("SSID"))),
            bssid: ssid_obj.and_then(|x| text(x.get("BSSID"))),
            band: radio_index.and_then(radio_band),
            signal_dbm: int(f.get("SignalStrength")).map(|v| v.to_string()),
            bytes_sent: counter_of(f, "BytesSent"),
            bytes_received: counter_of(f, "BytesReceived"),
            packets_sent: counter_of(f, "PacketsSent"),
            packets_received: counter_of(f, "PacketsReceived"),
            errors_sent: counter_of(f, "ErrorsSent"),
            errors_received: counter_of(f, "ErrorsReceived"),
            retrans_count: counter_of(f, "RetransCount"),
            last_downlink_rate_kbps: int(f.get("LastDataDownlinkRate")),
            last_uplink_rate_kbps: int(f.get("LastDataUplinkRate")),
            // AssociationTime is a dateTime, not a duration; left to SQL.
            connected_s: None,
        });
    }

    Extracted {
        device: (!device.is_empty()).then_some(device),
        interfaces,
        radios,
        neighbors,
        clients,
    }
}

/// The instance number a path reference ends with (`Device.WiFi.Radio.2` -> 2).
fn last_index(reference: &str) -> Option<u32> {
    reference
        .trim_end_matches('.')
        .rsplit('.')
        .next()
        .and_then(index)
}

/// A value as trimmed, non-empty text.
fn text(v: Option<&&Value>) -> Option<String> {
    raw_text(v)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// A value as text, exactly as reported.
fn raw_text(v: Option<&&Value>) -> Option<String> {
    match v? {
        Value::Text(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => None,
    }
}

/// A value as an integer: JSON numbers, or text that reads as one (many CPEs
/// send every value as a string).
fn int(v: Option<&&Value>) -> Option<i64> {
    match v? {
        Value::Int(i) => Some(*i),
        Value::UInt(_) => None,
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 9e15 => Some(*f as i64),
        Value::Text(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn int32(v: Option<&&Value>) -> Option<i32> {
    int(v).and_then(|i| i32::try_from(i).ok())
}

/// A counter: any non-negative integer up to u64.
fn counter(v: Option<&&Value>) -> Counter {
    match v? {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::UInt(u) => Some(*u),
        Value::Text(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    }
}

/// EasyMesh RCPI (0..220) to dBm: RCPI/2 - 110; 221..255 mean "not available".
fn rcpi_to_dbm(rcpi: i64) -> Option<String> {
    // Halves are exact in f64, so one decimal prints the value exactly.
    (0..=220)
        .contains(&rcpi)
        .then(|| format!("{:.1}", rcpi as f64 / 2.0 - 110.0))
}

/// The band a primary channel number lies in (channels 1-14 are 2.4 GHz,
/// 32-177 5 GHz; 6 GHz channels overlap those numbers and need the band field).
fn band_of_channel(channel: i64) -> Option<String> {
    match channel {
        1..=14 => Some("2.4GHz".into()),
        32..=177 => Some("5GHz".into()),
        _ => None,
    }
}

/// MAC addresses compare equal whatever their case and separators:
/// `02-00-5E-10-00-01`, `0200.5e10.0001` -> `02:00:5e:10:00:01`.
pub fn normalize_mac(mac: &str) -> String {
    let hex: String = mac
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.len() == 12 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        hex.as_bytes()
            .chunks(2)
            .map(|p| std::str::from_utf8(p).unwrap_or_default())
            .collect::<Vec<_>>()
            .join(":")
    } else {
        mac.trim().to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(list: &[(&str, Value)]) -> Vec<Param> {
        list.iter()
            .map(|(p, v)| Param {
                path: (*p).to_string(),
                value: v.clone(),
            })
            .collect()
    }
    fn t(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn device_interface_and_radio_rows() {
        let e = extract(&params(&[
            ("Device.DeviceInfo.UpTime", t("86213")),
            ("Device.DeviceInfo.MemoryStatus.Free", Value::Int(61234)),
            ("Device.DeviceInfo.MemoryStatus.Total", t("249856")),
            ("Device.DeviceInfo.ProcessStatus.CPUUsage", t("7")),
            (
                "Device.IP.Interface.4.Stats.BytesReceived",
                Value::UInt(18_446_744_073_709_551_000),
            ),
            ("Device.IP.Interface.4.Stats.BytesSent", t("9297406989")),
            ("Device.WiFi.Radio.2.Channel", t("44")),
            (
                "Device.WiFi.Radio.2.CurrentOperatingChannelBandwidth",
                t("80MHz"),
            ),
            ("Device.WiFi.Radio.2.Stats.BytesSent", t("987654321")),
            ("cpu", t("9")),
        ]));
        assert_eq!(
            e.device,
            Some(DeviceStats {
                uptime_s: Some(86213),
                memory_total_kib: Some(249856),
                memory_free_kib: Some(61234),
                cpu_percent: Some(7)
            })
        );
        assert_eq!(e.interfaces.len(), 1);
        assert_eq!(e.interfaces[0].interface, 4);
        assert_eq!(
            e.interfaces[0].bytes_received,
            Some(18_446_744_073_709_551_000)
        );
        assert_eq!(e.interfaces[0].bytes_sent, Some(9_297_406_989));
        assert_eq!(e.radios[0].radio, 2);
        assert_eq!(e.radios[0].channel, Some(44));
        assert_eq!(e.radios[0].band.as_deref(), Some("5GHz"));
        assert_eq!(e.radios[0].bandwidth.as_deref(), Some("80MHz"));
    }

    #[test]
    fn neighbors_keep_ssids_exactly() {
        let e = extract(&params(&[
            (
                "Device.WiFi.NeighboringWiFiDiagnostic.Result.3.SSID",
                t("  "),
            ),
            (
                "Device.WiFi.NeighboringWiFiDiagnostic.Result.3.Channel",
                t("11"),
            ),
            (
                "Device.WiFi.NeighboringWiFiDiagnostic.Result.3.SignalStrength",
                t("-71"),
            ),
            (
                "Device.WiFi.NeighboringWiFiDiagnostic.Result.4.SSID",
                t("Cafe;2nd"),
            ),
            (
                "Device.WiFi.NeighboringWiFiDiagnostic.Result.4.OperatingFrequencyBand",
                t("6GHz"),
            ),
        ]));
        assert_eq!(e.neighbors.len(), 2);
        assert_eq!(e.neighbors[0].ssid.as_deref(), Some("  "));
        assert_eq!(e.neighbors[0].band.as_deref(), Some("2.4GHz"));
        assert_eq!(e.neighbors[0].signal_dbm, Some(-71));
        assert_eq!(e.neighbors[1].ssid.as_deref(), Some("Cafe;2nd"));
        assert_eq!(e.neighbors[1].band.as_deref(), Some("6GHz"));
    }

    #[test]
    fn clients_join_hosts_by_normalized_mac_and_convert_rcpi() {
        let sta = "Device.WiFi.DataElements.Network.Device.1.Radio.1.BSS.2";
        let e = extract(&params(&[
            (&format!("{sta}.SSID"), t("LAB-CPE-2G")),
            (&format!("{sta}.STA.1.MACAddress"), t("02:00:5E:10:00:01")),
            (&format!("{sta}.STA.1.SignalStrength"), t("77")),
            (&format!("{sta}.STA.1.BytesSent"), t("612178002")),
            (&format!("{sta}.STA.2.MACAddress"), t("02:00:5E:10:00:02")),
            (&format!("{sta}.STA.2.SignalStrength"), t("255")),
            ("Device.WiFi.Radio.1.OperatingFrequencyBand", t("2.4GHz")),
            ("Device.Hosts.Host.5.PhysAddress", t("02-00-5e-10-00-01")),
            ("Device.Hosts.Host.5.HostName", t("phone-bruno")),
            (
                "Device.WiFi.AccessPoint.1.SSIDReference",
                t("Device.WiFi.SSID.2"),
            ),
            ("Device.WiFi.SSID.2.LowerLayers", t("Device.WiFi.Radio.2")),
            ("Device.WiFi.SSID.2.SSID", t("LAB 5G")),
            ("Device.WiFi.Radio.2.Channel", t("36")),
            (
                "Device.WiFi.AccessPoint.1.AssociatedDevice.3.MACAddress",
                t("AA:BB:CC:00:11:22"),
            ),
            (
                "Device.WiFi.AccessPoint.1.AssociatedDevice.3.SignalStrength",
                Value::Int(-61),
            ),
            (
                "Device.WiFi.AccessPoint.1.AssociatedDevice.3.Stats.BytesSent",
                Value::Int(1000),
            ),
        ]));
        assert_eq!(e.clients.len(), 3);
        let c = &e.clients[0];
        assert_eq!(c.mac, "02:00:5e:10:00:01");
        assert_eq!(c.host_name.as_deref(), Some("phone-bruno"));
        assert_eq!(c.signal_dbm.as_deref(), Some("-71.5"));
        assert_eq!(c.ssid.as_deref(), Some("LAB-CPE-2G"));
        assert_eq!(c.band.as_deref(), Some("2.4GHz"));
        assert_eq!(c.bytes_sent, Some(612_178_002));
        assert_eq!(e.clients[1].signal_dbm, None, "RCPI 255 is unknown");
        let ap = &e.clients[2];
        assert_eq!(ap.source, ClientSource::AccessPoint);
        assert_eq!(ap.signal_dbm.as_deref(), Some("-61"));
        assert_eq!(ap.band.as_deref(), Some("5GHz"));
        assert_eq!(ap.ssid.as_deref(), Some("LAB 5G"));
        assert_eq!(ap.bytes_sent, Some(1000));
    }

    #[test]
    fn paths_deeper_than_any_table_reads_are_skipped() {
        let sta = "Device.WiFi.DataElements.Network.Device.1.Radio.1.BSS.2.STA.1";
        let e = extract(&params(&[
            (&format!("{sta}.MACAddress"), t("02:00:5E:10:00:01")),
            // 13 and 40 segments after `Device.`: not a field of any table.
            (&format!("{sta}.MultiAPSTA.SteeringSummaryStats"), t("x")),
            (&format!("{sta}{}", ".X".repeat(28)), t("y")),
            ("Device.DeviceInfo.UpTime", t("5")),
        ]));
        assert_eq!(e.clients.len(), 1);
        assert_eq!(e.clients[0].mac, "02:00:5e:10:00:01");
        assert_eq!(e.device.map(|d| d.uptime_s), Some(Some(5)));
    }

    #[test]
    fn rcpi_edges() {
        assert_eq!(rcpi_to_dbm(0).as_deref(), Some("-110.0"));
        assert_eq!(rcpi_to_dbm(219).as_deref(), Some("-0.5"));
        assert_eq!(rcpi_to_dbm(220).as_deref(), Some("0.0"));
        assert_eq!(rcpi_to_dbm(221), None);
    }

    #[test]
    fn macs_normalize() {
        assert_eq!(normalize_mac("0200.5E10.0001"), "02:00:5e:10:00:01");
        assert_eq!(normalize_mac("not-a-mac"), "not-a-mac");
    }
}
