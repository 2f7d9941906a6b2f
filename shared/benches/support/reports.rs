//! Realistic TR-181 Bulk Data reports for the benchmarks: a parameter list
//! of a chosen shape (device info, IP interfaces, Wi-Fi stations, hosts,
//! neighbours) and its body in each BBF format. Shared by the decoder bench
//! and the edge bench (included there by path), so both measure the same
//! reports.
#![allow(dead_code)] // each includer uses part of it

use bulkflow_shared::report::Value;
use flate2::Compression;
use flate2::write::GzEncoder;
use std::io::Write;

pub const COLLECTION_TIME: i64 = 1_733_246_400;

/// Deterministic pseudo-random numbers (no extra dependency, same data every run).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 11
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// A 64-bit interface counter; a few are past 2^53, as on long-running CPEs.
    pub fn counter(&mut self) -> Value {
        let v = match self.below(8) {
            0 => (1 << 53) + self.below(1 << 40),
            1..=3 => self.below(1 << 40),
            _ => self.below(1 << 28),
        };
        Value::from_u64(v)
    }
    pub fn mac(&mut self) -> String {
        let b = self.next().to_be_bytes();
        format!(
            "{:02X}:{:02X}:{:02X}:{:02X}:{:02X}:{:02X}",
            b[0] & 0xfe,
            b[1],
            b[2],
            b[3],
            b[4],
            b[5]
        )
    }
}

/// Section sizes of one report.
pub struct Shape {
    pub interfaces: u32,
    pub radios: u32,
    pub bss_per_radio: u32,
    pub sta_per_bss: u32,
    pub hosts: u32,
    pub neighbours: u32,
}

const SSIDS: &[&str] = &[
    "FRITZ!Box 7590 XY",
    "Vodafone-5G",
    "Café, 2nd floor",
    "Linksys \"guest\"",
    "Ñandú; mesh",
    "DIRECT-7A-HP OfficeJet",
    "",
    "家里的网络",
];

/// The parameters of one report; `seed` varies the values, not the names.
pub fn report_params(shape: &Shape, seed: u64) -> Vec<(String, Value)> {
    let mut rng = Lcg(seed);
    let mut out: Vec<(String, Value)> = Vec::new();
    let mut put = |k: String, v: Value| out.push((k, v));

    put("Device.DeviceInfo.UpTime".into(), Value::Int(86_213));
    put(
        "Device.DeviceInfo.SoftwareVersion".into(),
        Value::Text("7.57-112233 BETA".into()),
    );
    put(
        "Device.DeviceInfo.MemoryStatus.Total".into(),
        Value::Int(249_856),
    );
    put(
        "Device.DeviceInfo.MemoryStatus.Free".into(),
        Value::Int(61_234),
    );
    put(
        "Device.DeviceInfo.ProcessStatus.CPUUsage".into(),
        Value::Int(7),
    );
    put(
        "Device.ManagementServer.ConnectionRequestUsername".into(),
        Value::Text("cpe-0001".into()),
    );

    for i in 1..=shape.interfaces {
        for stat in [
            "BytesSent",
            "BytesReceived",
            "PacketsSent",
            "PacketsReceived",
            "ErrorsSent",
            "ErrorsReceived",
            "DiscardPacketsSent",
            "DiscardPacketsReceived",
        ] {
            put(
                format!("Device.IP.Interface.{i}.Stats.{stat}"),
                rng.counter(),
            );
        }
    }

    for r in 1..=shape.radios {
        for b in 1..=shape.bss_per_radio {
            for s in 1..=shape.sta_per_bss {
                let p =
                    format!("Device.WiFi.DataElements.Network.Device.1.Radio.{r}.BSS.{b}.STA.{s}");
                put(format!("{p}.MACAddress"), Value::Text(rng.mac()));
                put(
                    format!("{p}.SignalStrength"),
                    Value::Int(-30 - rng.below(60) as i64),
                );
                put(
                    format!("{p}.LastDataDownlinkRate"),
                    Value::Int(rng.below(2_400_000) as i64),
                );
                put(
                    format!("{p}.LastDataUplinkRate"),
                    Value::Int(rng.below(1_200_000) as i64),
                );
                put(format!("{p}.BytesSent"), rng.counter());
                put(format!("{p}.BytesReceived"), rng.counter());
                put(format!("{p}.PacketsSent"), rng.counter());
                put(format!("{p}.PacketsReceived"), rng.counter());
                put(
                    format!("{p}.RetransCount"),
                    Value::Int(rng.below(10_000) as i64),
                );
                put(
                    format!("{p}.UtilizationReceive"),
                    Value::Int(rng.below(1_000) as i64),
                );
            }
        }
    }

    for h in 1..=shape.hosts {
        let p = format!("Device.Hosts.Host.{h}");
        put(format!("{p}.PhysAddress"), Value::Text(rng.mac()));
        put(
            format!("{p}.IPAddress"),
            Value::Text(format!("192.168.{}.{}", h / 250, 2 + h % 250)),
        );
        put(format!("{p}.HostName"), Value::Text(format!("device-{h}")));
        put(format!("{p}.Active"), Value::Bool(rng.below(4) != 0));
        put(
            format!("{p}.X_ACME_InterfaceType"),
            Value::Text(if h % 3 == 0 { "Ethernet" } else { "802.11" }.into()),
        );
    }

    for n in 1..=shape.neighbours {
        let p = format!("Device.WiFi.NeighboringWiFiDiagnostic.Result.{n}");
        let ssid = SSIDS[rng.below(SSIDS.len() as u64) as usize];
        put(format!("{p}.SSID"), Value::Text(format!("{ssid} {n}")));
        put(format!("{p}.BSSID"), Value::Text(rng.mac()));
        put(format!("{p}.Channel"), Value::Int(1 + rng.below(13) as i64));
        put(
            format!("{p}.SignalStrength"),
            Value::Int(-40 - rng.below(55) as i64),
        );
        put(
            format!("{p}.OperatingFrequencyBand"),
            Value::Text(if n % 2 == 0 { "5GHz" } else { "2.4GHz" }.into()),
        );
        put(
            format!("{p}.SecurityModeEnabled"),
            Value::Text("WPA2-Personal".into()),
        );
    }
    out
}

pub fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

pub fn json_scalar(v: &Value) -> String {
    match v {
        Value::Text(s) => json_string(s),
        other => serde_json::Value::from(other).to_string(),
    }
}

pub fn encode_nvp(params: &[(String, Value)], time: i64) -> String {
    let members: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}:{}", json_string(k), json_scalar(v)))
        .collect();
    format!(
        "{{\"Report\":[{{\"CollectionTime\":{time},{}}}]}}",
        members.join(",")
    )
}

/// ObjectHierarchy nesting, children in first-seen order.
pub enum Node {
    Leaf(Value),
    Branch(Vec<(String, Node)>),
}

pub fn insert(children: &mut Vec<(String, Node)>, path: &[&str], value: &Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        children.push((first.to_string(), Node::Leaf(value.clone())));
        return;
    }
    if let Some((_, Node::Branch(sub))) = children.iter_mut().find(|(n, _)| n == first) {
        insert(sub, rest, value);
    } else {
        let mut sub = Vec::new();
        insert(&mut sub, rest, value);
        children.push((first.to_string(), Node::Branch(sub)));
    }
}

pub fn write_object(children: &[(String, Node)], out: &mut String) {
    out.push('{');
    for (i, (name, node)) in children.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&json_string(name));
        out.push(':');
        match node {
            Node::Leaf(v) => out.push_str(&json_scalar(v)),
            Node::Branch(sub) => write_object(sub, out),
        }
    }
    out.push('}');
}

pub fn encode_oh(params: &[(String, Value)], time: i64) -> String {
    let mut root = Vec::new();
    for (k, v) in params {
        insert(&mut root, &k.split('.').collect::<Vec<_>>(), v);
    }
    let mut body = format!("{{\"Report\":[{{\"CollectionTime\":{time},");
    let mut tree = String::new();
    write_object(&root, &mut tree);
    // Splice the tree's members after CollectionTime.
    body.push_str(&tree[1..]);
    body.push_str("]}");
    body
}

pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn text_of(v: &Value) -> String {
    match v {
        Value::Text(s) => s.clone(),
        other => serde_json::Value::from(other).to_string(),
    }
}

pub fn encode_per_row(params: &[(String, Value)], time: i64) -> String {
    let mut body = String::from("ReportTimestamp,ParameterName,ParameterValue,ParameterType\r\n");
    for (k, v) in params {
        let kind = match v {
            Value::Int(i) if *i < 0 => "int",
            Value::Int(_) | Value::UInt(_) => "unsignedLong",
            Value::Bool(_) => "boolean",
            _ => "string",
        };
        body.push_str(&format!(
            "{time},{},{},{kind}\r\n",
            csv_field(k),
            csv_field(&text_of(v))
        ));
    }
    body
}

pub fn encode_per_column(params: &[(String, Value)], time: i64) -> String {
    let header: Vec<String> = params.iter().map(|(k, _)| csv_field(k)).collect();
    let row: Vec<String> = params.iter().map(|(_, v)| csv_field(&text_of(v))).collect();
    format!(
        "ReportTimestamp,{}\n{time},{}\n",
        header.join(","),
        row.join(",")
    )
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    // Writing to a Vec cannot fail.
    let _ = e.write_all(b);
    e.finish().unwrap_or_default()
}

impl Shape {
    /// About 100 parameters: what a home router's periodic profile sends.
    pub const SMALL: Shape = Shape {
        interfaces: 2,
        radios: 1,
        bss_per_radio: 1,
        sta_per_bss: 4,
        hosts: 4,
        neighbours: 3,
    };
    /// About 2,000 parameters: a busy mesh gateway with a full scan.
    pub const LARGE: Shape = Shape {
        interfaces: 8,
        radios: 2,
        bss_per_radio: 2,
        sta_per_bss: 25,
        hosts: 60,
        neighbours: 105,
    };
}
