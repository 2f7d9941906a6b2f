//! The provisioner against `bulkflow-sim fleet` (an emulated CPE fleet behind
//! an emulator of GenieACS's NBI), and the whole loop: provisioned CPEs report
//! to a real edge, which forwards to central, which fills every table.
//! Uses the binaries built next to central's (`cargo test --workspace`).

mod common;

use common::*;
use serde_json::Value as Json;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const TPLINK: &str = "30DE4B-Device2-SN0000000000";
const HX: &str = "A1B2C3-HX%2D100-SN0000000001";
const SERCOMM: &str = "00236A-SR552n-SR%2D0002";
const OBUSPA: &str = "0A1B2C-USP%20Agent-SN0000000003";
const CASA: &str = "C0FFEE-CX%2E7-SN0000000004";
const ALL: [&str; 5] = [TPLINK, HX, SERCOMM, OBUSPA, CASA];

fn sibling_binary(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_bulkflow-central")).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace's binaries first (cargo build --workspace --bins, as scripts/test does)",
        path.display()
    );
    path
}

/// A running `bulkflow-sim fleet`, killed on drop.
struct Fleet {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Fleet {
    fn start(cpes: usize, time_scale: f64) -> Fleet {
        let mut child = Command::new(sibling_binary("bulkflow-sim"))
            .args(["fleet", "--cpes", &cpes.to_string(), "--nbi", "127.0.0.1:0"])
            .args(["--time-scale", &time_scale.to_string(), "--tags", "site1"])
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("NBI listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Fleet { child, addr }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn get(&self, path: &str) -> Json {
        let r = http(self.addr, "GET", path, &[], b"");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        serde_json::from_slice(&r.body).unwrap()
    }

    /// Every task the NBI emulator received, with its answer.
    fn tasks(&self) -> Vec<Json> {
        self.get("/_sim/tasks").as_array().unwrap().clone()
    }

    fn device(&self, id: &str) -> Json {
        self.get("/_sim/devices")
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .unwrap()
            .clone()
    }

    fn control(&self, id: &str, action: &str) {
        let r = http(
            self.addr,
            "POST",
            &format!("/_sim/devices/{}/{action}", escape(id)),
            &[],
            b"",
        );
        assert_eq!(r.status, 200, "{action}: {}", r.text());
    }
}

/// A GenieACS id as a URL path segment.
fn escape(id: &str) -> String {
    id.replace('%', "%25").replace('.', "%2E")
}

const PROFILE: &str = r#"
[[provision.profiles]]
alias = "bulkflow-lab"
name = "lab telemetry"
interval_secs = 60
encoding = "JSON"
report_format = "NameValuePair"
retained = 3
compression = "GZIP"
url = "http://edge-{tag}.invalid:8080/bulkdata"
username = "cpe"
password = "secret"
parameters = [
  { name = "", reference = "Device.DeviceInfo." },
  { name = "SSID_NBW", reference = "Device.WiFi.NeighboringWiFiDiagnostic.Result.*.SSID" },
  { name = "ifs", reference = "Device.IP.Interface.*.Stats." },
]
vendor = [{ oui = "30DE4B", product_class = "Device2", parameter = "X_TP_CollectInterval", value = "{interval}" }]
"#;

fn config(dir: &Path, nbi: &str, pg_url: &str, profile: &str, extra: &str) -> PathBuf {
    let path = dir.join(format!("provision-{}.toml", fastrand_name()));
    std::fs::write(
        &path,
        format!(
            "[postgres]\nurl = \"{pg_url}\"\n{extra}\n[provision]\nnbi_url = \"{nbi}\"\nconcurrency = 2\n{profile}"
        ),
    )
    .unwrap();
    path
}

fn fastrand_name() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// PostgreSQL that refuses at once: the name mapping is optional for these tests.
const NO_PG: &str = "host=127.0.0.1 port=1 user=postgres connect_timeout=1";

/// `bulkflow-central provision [args]`: its stdout lines.
fn provision(config: &Path, args: &[&str]) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_bulkflow-central"))
        .arg("--config")
        .arg(config)
        .arg("provision")
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "provision failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(String::from).collect()
}

fn summary(lines: &[String]) -> &str {
    lines
        .iter()
        .rev()
        .find(|l| l.starts_with("summary "))
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no summary in {lines:#?}"))
}

fn status_line<'a>(lines: &'a [String], id: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.starts_with(&format!("{id} ")))
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no line for {id} in {lines:#?}"))
}

/// Task names the emulator received for `id`, from log position `from` on.
fn task_names(log: &[Json], id: &str, from: usize) -> Vec<String> {
    log[from..]
        .iter()
        .filter(|t| t["device"] == id)
        .map(|t| {
            let name = t["name"].as_str().unwrap().to_string();
            match t["task"]["objectName"].as_str() {
                Some(o) if name == "addObject" => format!("addObject {o}"),
                _ => name,
            }
        })
        .collect()
}

fn profile_of(fleet: &Fleet, id: &str) -> Json {
    let d = fleet.device(id);
    let profiles = d["profiles"].as_array().unwrap();
    assert_eq!(profiles.len(), 1, "{id}: {profiles:#?}");
    profiles[0].clone()
}

/// A fresh profile costs: one refresh, one addObject for the profile, one per
/// parameter row, ONE setParameterValues. Nothing per value.
fn assert_fresh_profile_tasks(log: &[Json], id: &str, from: usize) {
    let names = task_names(log, id, from);
    let row = names
        .iter()
        .find(|n| n.ends_with(".Parameter"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        names,
        [
            "refreshObject".to_string(),
            "addObject Device.BulkData.Profile".to_string(),
            row.clone(),
            row.clone(),
            row,
            "setParameterValues".to_string(),
        ],
        "{id}"
    );
}

#[test]
fn fresh_fleet_converges_in_one_pass_and_a_second_pass_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = Fleet::start(5, 1.0);
    let cfg = config(dir.path(), &fleet.url(), NO_PG, PROFILE, "");

    let dry = provision(&cfg, &["--dry-run"]);
    assert!(
        dry.iter()
            .any(|l| l
                .contains("would addObject Device.BulkData.Profile with Alias \"bulkflow-lab\"")),
        "{dry:#?}"
    );
    let log = fleet.tasks();
    assert!(
        log.iter().all(|t| t["name"] == "refreshObject"),
        "a dry run only reads: {log:#?}"
    );
    let from = log.len();

    let first = provision(&cfg, &[]);
    assert_eq!(
        summary(&first),
        "summary devices=5 converged=0 applied=5 queued=0 faulted=0 failed=0 tasks=25",
        "{first:#?}"
    );
    let log = fleet.tasks();
    for id in ALL {
        // After the dry run's refresh the copy is fresh: no second refresh.
        let names = task_names(&log, id, from);
        assert_eq!(names.len(), 5, "{id}: {names:?}");
        assert_eq!(names[0], "addObject Device.BulkData.Profile");
        assert_eq!(names[4], "setParameterValues");
        assert!(log.iter().all(|t| t["status"] == 200), "{log:#?}");
    }
    // Every value in one task, Enable last.
    let spv = log
        .iter()
        .rfind(|t| t["device"] == TPLINK && t["name"] == "setParameterValues")
        .unwrap();
    let values = spv["task"]["parameterValues"].as_array().unwrap();
    assert_eq!(
        values.last().unwrap()[0],
        "Device.BulkData.Profile.1.Enable"
    );
    assert!(
        values
            .iter()
            .any(|v| v[0] == "Device.BulkData.Profile.1.X_TP_CollectInterval" && v[1] == 60)
    );

    for id in ALL {
        let p = profile_of(&fleet, id);
        assert_eq!(p["alias"], "bulkflow-lab");
        assert_eq!(p["enabled"], true);
        assert_eq!(p["password"], "secret");
        assert_eq!(
            p["values"]["HTTP.URL"],
            "http://edge-site1.invalid:8080/bulkdata"
        );
        assert_eq!(p["values"]["HTTP.Compression"], "GZIP");
        assert_eq!(p["values"]["ReportingInterval"], 60);
        assert_eq!(p["values"]["JSONEncoding.ReportFormat"], "NameValuePair");
        assert_eq!(p["parameters"].as_array().unwrap().len(), 3);
        assert_eq!(
            p["values"].get("X_TP_CollectInterval").cloned(),
            (id == TPLINK).then(|| Json::from(60)),
            "vendor extra only on TP-Link"
        );
    }
    assert_eq!(fleet.device(TPLINK)["bulkdata_enabled"], true);

    let before = fleet.tasks().len();
    let second = provision(&cfg, &[]);
    assert_eq!(
        summary(&second),
        "summary devices=5 converged=5 applied=0 queued=0 faulted=0 failed=0 tasks=0"
    );
    assert_eq!(
        fleet.tasks().len(),
        before,
        "a converged fleet gets no task"
    );
}

#[test]
fn reboot_wiping_the_profile_is_repaired_and_offline_devices_are_not_done() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = Fleet::start(5, 1.0);
    let cfg = config(dir.path(), &fleet.url(), NO_PG, PROFILE, "");
    fleet.control(SERCOMM, "offline");

    let from = fleet.tasks().len();
    let first = provision(&cfg, &[]);
    assert_eq!(
        summary(&first),
        "summary devices=5 converged=0 applied=4 queued=1 faulted=0 failed=0 tasks=25",
        "{first:#?}"
    );
    assert!(
        status_line(&first, SERCOMM)
            .contains("queued tasks=1: refreshObject answered 202 Device is offline"),
        "{first:#?}"
    );
    let log = fleet.tasks();
    for id in [TPLINK, HX, OBUSPA, CASA] {
        assert_fresh_profile_tasks(&log, id, from);
    }
    assert!(
        fleet.device(SERCOMM)["profiles"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Still offline: its queued task is not sent again, it stays "queued".
    let again = provision(&cfg, &[]);
    assert!(
        status_line(&again, SERCOMM).starts_with(&format!("{SERCOMM} queued tasks=0")),
        "{again:#?}"
    );

    // Online: the queued refresh runs at its session; the next pass finishes it.
    fleet.control(SERCOMM, "online");
    let from = fleet.tasks().len();
    let third = provision(&cfg, &[]);
    assert_eq!(
        summary(&third),
        "summary devices=5 converged=4 applied=1 queued=0 faulted=0 failed=0 tasks=5",
        "{third:#?}"
    );
    let names = task_names(&fleet.tasks(), SERCOMM, from);
    assert_eq!(
        names.first().map(String::as_str),
        Some("addObject Device.BulkData.Profile")
    );
    assert_eq!(profile_of(&fleet, SERCOMM)["enabled"], true);

    // TP-Link loses its profiles on reboot; GenieACS still shows the old copy.
    fleet.control(TPLINK, "reboot");
    assert!(
        fleet.device(TPLINK)["profiles"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let from = fleet.tasks().len();
    let fourth = provision(&cfg, &[]);
    assert_eq!(
        summary(&fourth),
        "summary devices=5 converged=4 applied=1 queued=0 faulted=0 failed=0 tasks=6",
        "{fourth:#?}"
    );
    assert!(
        fourth.join("\n").contains("before the last boot"),
        "{fourth:#?}"
    );
    assert_fresh_profile_tasks(&fleet.tasks(), TPLINK, from);
    assert_eq!(profile_of(&fleet, TPLINK)["enabled"], true);
    // A reboot that keeps the profile costs one refresh and nothing else.
    fleet.control(HX, "reboot");
    let from = fleet.tasks().len();
    let fifth = provision(&cfg, &[]);
    assert_eq!(
        status_line(&fifth, HX),
        format!("{HX} applied tasks=1"),
        "{fifth:#?}"
    );
    assert_eq!(task_names(&fleet.tasks(), HX, from), ["refreshObject"]);
}

#[test]
fn a_faulting_value_is_reported_with_its_parameter_and_the_rest_applied() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = Fleet::start(5, 1.0);
    // obuspa-like agents take JSON NameValuePair only.
    let profile = PROFILE.replace("\"NameValuePair\"", "\"ObjectHierarchy\"");
    let cfg = config(dir.path(), &fleet.url(), NO_PG, &profile, "");
    let from = fleet.tasks().len();
    let first = provision(&cfg, &[]);
    assert_eq!(
        summary(&first),
        "summary devices=5 converged=0 applied=4 queued=0 faulted=1 failed=0 tasks=31",
        "{first:#?}"
    );
    let line = status_line(&first, OBUSPA);
    assert!(
        line.starts_with(&format!("{OBUSPA} faulted tasks=7")),
        "{line}"
    );
    let all = first.join("\n");
    assert!(
        all.contains("fault Device.BulkData.Profile.1.JSONEncoding.ReportFormat = \"ObjectHierarchy\": cwmp.9007 Invalid parameter value (left out, the rest applied; try 1 of 3)"),
        "{all}"
    );
    let log = fleet.tasks();
    let spvs: Vec<&Json> = log[from..]
        .iter()
        .filter(|t| t["device"] == OBUSPA && t["name"] == "setParameterValues")
        .collect();
    assert_eq!(spvs.len(), 2);
    assert_eq!(
        (spvs[0]["status"].as_u64(), spvs[0]["reason"].as_str()),
        (Some(202), Some("Task faulted"))
    );
    assert_eq!(spvs[1]["status"], 200);
    let p = profile_of(&fleet, OBUSPA);
    assert_eq!(p["enabled"], true, "the rest applied");
    assert_eq!(
        p["values"]["HTTP.URL"],
        "http://edge-site1.invalid:8080/bulkdata"
    );
    assert_eq!(
        p["values"]["JSONEncoding.ReportFormat"], "NameValuePair",
        "kept its default"
    );
    assert_eq!(
        fleet.get("/faults/").as_array().unwrap().len(),
        0,
        "faulted task removed"
    );
    assert_eq!(fleet.get("/tasks/").as_array().unwrap().len(), 0);
}

#[test]
fn preset_mode_installs_a_provision_script_node_accepts_and_boot_presets() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = Fleet::start(1, 1.0);
    let cfg = config(dir.path(), &fleet.url(), NO_PG, PROFILE, "");
    let out = provision(&cfg, &["--mode", "preset"]);
    assert!(
        out[0].starts_with("installed provision and preset \"bulkflow\""),
        "{out:#?}"
    );
    let provisions = fleet.get("/provisions/");
    let script = provisions[0]["script"].as_str().unwrap();
    assert_eq!(provisions[0]["_id"], "bulkflow");
    let file = dir.path().join("bulkflow.js");
    std::fs::write(&file, script).unwrap();
    let check = Command::new("node")
        .arg("--check")
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!("node is needed to check the provision script (apt-get install nodejs): {e}")
        });
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(script.contains("Device.BulkData.Profile.[Alias:"));
    let presets = fleet.get("/presets/");
    let mut events: Vec<String> = presets
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{} {}", p["_id"].as_str().unwrap(), p["events"]))
        .collect();
    events.sort();
    assert_eq!(
        events,
        [
            r#"bulkflow-boot {"1 BOOT":true}"#,
            r#"bulkflow-bootstrap {"0 BOOTSTRAP":true}"#
        ]
    );
    assert!(fleet.tasks().is_empty(), "preset mode sends no device task");
}

#[test]
fn whole_loop_fleet_provisioner_edge_central_fills_every_table() {
    let env = Env::new("provision_loop");
    let fleet = Fleet::start(5, 30.0);
    let central_cfg = env.config();
    env.migrate(&central_cfg);
    let central = Central::start(&central_cfg, "run");
    let edge = start_edge(&env, central.addr());
    // The provisioner role inside a second `run`, pointed at the emulated NBI.
    let profile = format!(
        r#"
[[provision.profiles]]
alias = "bulkflow-lab"
interval_secs = 60
encoding = "JSON"
report_format = "ObjectHierarchy"
url = "http://{edge}/bulkdata"
parameters = [
  {{ reference = "Device.DeviceInfo." }},
  {{ name = "ifs", reference = "Device.IP.Interface.*.Stats." }},
  {{ reference = "Device.WiFi.Radio.*." }},
  {{ name = "SSID_NBW", reference = "Device.WiFi.NeighboringWiFiDiagnostic.Result.*.SSID" }},
  {{ name = "nbw", reference = "Device.WiFi.NeighboringWiFiDiagnostic.Result.*." }},
  {{ reference = "Device.WiFi.DataElements.Network.Device.1.Radio.*.BSS.*.STA.*." }},
  {{ reference = "Device.Hosts.Host.*." }},
]

[provision.scan]
interval_secs = 3600
jitter_secs = 0
poll_secs = 1
timeout_secs = 60
"#,
        edge = edge.addr
    );
    let text = std::fs::read_to_string(&central_cfg).unwrap();
    let text = text.replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:0\"\n");
    let prov_cfg = env.dir.path().join("central-provision.toml");
    std::fs::write(
        &prov_cfg,
        format!(
            "{text}\n[provision]\nnbi_url = \"{}\"\nwatch_interval_secs = 1\n{profile}",
            fleet.url()
        ),
    )
    .unwrap();
    let _provisioner = Central::start(&prov_cfg, "run");

    let count = |table: &str| env.scalar::<i64>(&format!("SELECT count(*) FROM {table}"));
    let tables = [
        "devices",
        "samples",
        "device_stats",
        "interface_stats",
        "radio_stats",
        "wifi_neighbors",
        "wifi_clients",
        "ingested_batches",
    ];
    let filled = wait_until(Duration::from_secs(120), || {
        tables.iter().all(|t| count(t) > 0) && count("devices") == 5
    });
    let counts: Vec<(&str, i64)> = tables.iter().map(|t| (*t, count(t))).collect();
    assert!(filled, "{counts:?}");
    // Renamed keys: kept as reported in samples, mapped back for the typed tables.
    assert!(env.scalar::<i64>("SELECT count(*) FROM parameters WHERE name LIKE 'SSID_NBW.%'") > 0);
    assert_eq!(
        env.scalar::<String>(
            "SELECT reference FROM profile_parameter_names WHERE name = 'SSID_NBW'"
        ),
        "Device.WiFi.NeighboringWiFiDiagnostic.Result.*.SSID"
    );
    let ssids: i64 = env
        .scalar("SELECT count(*) FROM wifi_neighbors WHERE ssid IS NOT NULL AND bssid IS NOT NULL");
    assert!(ssids > 0);
    let escaped: i64 =
        env.scalar("SELECT count(*) FROM devices WHERE device_key = 'C0FFEE-CX%2E7-SN0000000004'");
    assert_eq!(escaped, 1);
}

struct Edge {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_edge(env: &Env, central: SocketAddr) -> Edge {
    let dir = env.dir.path();
    let config = dir.join("edge.toml");
    std::fs::write(
        &config,
        format!(
            r#"edge_id = "{EDGE}"
listen = "127.0.0.1:0"
central_url = "http://{central}"

[outbox]
path = "{db}"

[forward]
token = "{TOKEN}"
batch_max_age_ms = 100
"#,
            db = dir.join("edge.db").display()
        ),
    )
    .unwrap();
    let addr_file = dir.join("edge.addr");
    let child = Command::new(sibling_binary("bulkflow-edge"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--addr-file")
        .arg(&addr_file)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(&addr_file).is_ok_and(|s| s.ends_with('\n'))
    }));
    let addr = std::fs::read_to_string(&addr_file)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    Edge { child, addr }
}

#[test]
fn provision_watch_repairs_a_profile_lost_at_reboot_without_waiting_for_the_sync() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = Fleet::start(5, 1.0);
    // A sync interval of an hour: only the reboot watch can explain a repair
    // within the test's time.
    let profile = format!("sync_interval_secs = 3600\nwatch_interval_secs = 1\n{PROFILE}");
    let cfg = config(dir.path(), &fleet.url(), NO_PG, &profile, "");
    let mut child = Command::new(env!("CARGO_BIN_EXE_bulkflow-central"))
        .arg("--config")
        .arg(&cfg)
        .args(["provision", "--watch"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let enabled = |id: &str| {
        fleet.device(id)["profiles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["enabled"] == true)
    };
    let converged = wait_until(Duration::from_secs(60), || ALL.iter().all(|id| enabled(id)));
    let before_reboot = fleet.tasks().len();
    fleet.control(TPLINK, "reboot");
    assert!(!enabled(TPLINK));
    let repaired = wait_until(Duration::from_secs(60), || enabled(TPLINK));
    let log = fleet.tasks();
    let _ = child.kill();
    let _ = child.wait();
    assert!(converged, "the first pass did not enable every profile");
    assert!(repaired, "the profile wiped by the reboot was not restored");
    assert_fresh_profile_tasks(&log, TPLINK, before_reboot);
    // Only the rebooted device was touched.
    for id in [HX, SERCOMM, OBUSPA, CASA] {
        assert_eq!(
            task_names(&log, id, before_reboot),
            Vec::<String>::new(),
            "{id}"
        );
    }
}
