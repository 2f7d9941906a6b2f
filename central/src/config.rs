//! Central's configuration: a TOML file whose every key can be overridden by an
//! environment variable, with defaults that work on one machine (Redis and
//! PostgreSQL on localhost).
//!
//! Environment overrides, as on the edge: `BULKFLOW_CENTRAL_<KEY>` for a
//! top-level key, `BULKFLOW_CENTRAL_<SECTION>_<KEY>` inside a section, e.g.
//! `BULKFLOW_CENTRAL_POSTGRES_URL="host=db user=bulkflow"` or
//! `BULKFLOW_CENTRAL_STORE_READ_COUNT=64`. The value is read as a TOML value
//! when it parses as one (numbers, booleans, arrays) and as a string otherwise.

use anyhow::{Context, bail};
use bulkflow_shared::config::{BasicAuthConfig, ReceiveConfig, TlsFiles};
use bulkflow_shared::identity::IdentityConfig;
use bulkflow_shared::report::Limits;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;

pub const ENV_PREFIX: &str = "BULKFLOW_CENTRAL_";

/// The sections an override name can start with.
const SECTIONS: &[&str] = &[
    "tls",
    "redis",
    "postgres",
    "ingest",
    "bulkdata",
    "store",
    "timescale",
    "provision",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP(S) server listens on.
    pub listen: SocketAddr,
    /// HTTPS on `listen` (with `client_ca`: edges must present a client certificate).
    pub tls: Option<TlsFiles>,
    pub redis: RedisConfig,
    pub postgres: PostgresConfig,
    /// Edges allowed to send batches, each with its bearer token.
    pub edges: Vec<EdgeAuth>,
    pub ingest: IngestConfig,
    /// Reports posted straight to central by CPEs at sites without an edge.
    pub bulkdata: BulkdataConfig,
    pub store: StoreConfig,
    pub timescale: TimescaleConfig,
    /// GenieACS provisioning of Bulk Data profiles; off while `nbi_url` is empty.
    pub provision: ProvisionConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8480)),
            tls: None,
            redis: RedisConfig::default(),
            postgres: PostgresConfig::default(),
            edges: Vec::new(),
            ingest: IngestConfig::default(),
            bulkdata: BulkdataConfig::default(),
            store: StoreConfig::default(),
            timescale: TimescaleConfig::default(),
            provision: ProvisionConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeAuth {
    pub id: String,
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    pub url: String,
    /// Stream that holds queued batches, one entry per batch or direct request.
    pub stream: String,
    /// Consumer group of the store workers.
    pub group: String,
    /// Where entries that keep failing go, with their error.
    pub dead_letter_stream: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            stream: "bulkflow:batches".into(),
            group: "bulkflow-store".into(),
            dead_letter_stream: "bulkflow:dead".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// libpq-style connection string or `postgresql://` URL.
    pub url: String,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: "host=127.0.0.1 user=postgres dbname=bulkflow".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Largest compressed batch accepted from an edge (413 above). Default 16 MiB.
    pub max_batch_bytes: usize,
    /// Largest batch after decompression (a zstd bomb is refused). Default 256 MiB.
    pub max_batch_decompressed_bytes: usize,
    /// How long reading an edge's committed batches from PostgreSQL may take
    /// before the answer goes without them (a hung database must not hold
    /// up queueing). Default 2000.
    pub ack_query_timeout_ms: u64,
    /// How long a client may take to send a request body once its head is in
    /// (408 after); the head itself has 30 s. Default 60.
    pub body_timeout_secs: u64,
    /// Connections served at once (edges and direct CPEs); more wait in the
    /// kernel's accept queue. Default 1024.
    pub max_connections: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_batch_bytes: 16 << 20,
            max_batch_decompressed_bytes: 256 << 20,
            ack_query_timeout_ms: 2000,
            body_timeout_secs: 60,
            max_connections: 1024,
        }
    }
}

/// Direct CPE ingest: the same rules and answers as an edge's listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BulkdataConfig {
    /// The path CPEs post to (their profile's HTTP.URL). Default `/bulkdata`.
    pub path: String,
    pub limits: Limits,
    pub identity: IdentityConfig,
    pub auth: BasicAuthConfig,
}

impl Default for BulkdataConfig {
    fn default() -> Self {
        BulkdataConfig {
            path: "/bulkdata".into(),
            limits: Limits::default(),
            identity: IdentityConfig::default(),
            auth: BasicAuthConfig::default(),
        }
    }
}

impl BulkdataConfig {
    pub fn receive(&self) -> ReceiveConfig {
        ReceiveConfig {
            limits: self.limits.clone(),
            identity: self.identity.clone(),
            auth: self.auth.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Stream entries read (and written in one transaction) at a time. Default 32.
    pub read_count: usize,
    /// How long one read waits for new entries, ms. Default 1000.
    pub block_ms: u64,
    /// Entries pending this long at another (dead) worker are reclaimed, ms. Default 60000.
    pub reclaim_idle_ms: u64,
    /// Attempts before an entry moves to the dead-letter stream; a reclaim
    /// from a worker that died or hung counts as one. Default 5.
    pub max_attempts: u32,
    /// Longest wait between retries while PostgreSQL or Redis is down, ms. Default 10000.
    pub max_backoff_ms: u64,
    /// Renamed report keys are mapped back to paths with the provisioner's
    /// table `profile_parameter_names`, re-read this often, s. Default 30.
    pub names_refresh_secs: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            read_count: 32,
            block_ms: 1000,
            reclaim_idle_ms: 60_000,
            max_attempts: 5,
            max_backoff_ms: 10_000,
            names_refresh_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimescaleConfig {
    /// Use TimescaleDB when the extension is available. Default true.
    pub enabled: bool,
    /// Hypertable chunk interval (a PostgreSQL interval). Default "1 day".
    pub chunk_interval: String,
    /// Compress chunks older than this; empty disables. Default "7 days".
    pub compress_after: String,
    /// Drop chunks older than this; empty keeps everything. Default "".
    pub retain_for: String,
}

impl Default for TimescaleConfig {
    fn default() -> Self {
        TimescaleConfig {
            enabled: true,
            chunk_interval: "1 day".into(),
            compress_after: "7 days".into(),
            retain_for: String::new(),
        }
    }
}

impl Config {
    /// Loads `path` (or only defaults when `None`) and applies environment overrides.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let mut table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config {}", p.display()))?;
                text.parse::<toml::Table>()
                    .with_context(|| format!("parsing config {}", p.display()))?
            }
            None => toml::Table::new(),
        };
        bulkflow_shared::config::apply_env_overrides(
            &mut table,
            ENV_PREFIX,
            SECTIONS,
            std::env::vars(),
        )?;
        let config: Config = toml::Value::Table(table)
            .try_into()
            .context("invalid configuration")?;
        config.validate()?;
        Ok(config)
    }

    /// The effective settings as TOML, secrets masked (tokens, passwords).
    /// Settings that are valid but probably not what the operator wants.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.edges.is_empty() {
            w.push(
                "no [[edges]]: every edge batch will be refused (401); only direct CPE reports are taken"
                    .to_string(),
            );
        }
        for e in &self.edges {
            if bulkflow_shared::config::is_placeholder(&e.token) {
                w.push(format!(
                    "[[edges]] {:?}: token is still the example's placeholder",
                    e.id
                ));
            }
        }
        if let Some(tls) = &self.tls {
            for f in tls.missing() {
                w.push(format!("[tls] file {} does not exist (yet)", f.display()));
            }
        }
        w
    }

    pub fn effective(&self) -> String {
        let mut shown = self.clone();
        let mask = |s: &mut String| {
            if !s.is_empty() {
                *s = "<set>".into();
            }
        };
        for e in &mut shown.edges {
            mask(&mut e.token);
        }
        if let Some(p) = shown.bulkdata.auth.password.as_mut() {
            mask(p);
        }
        for p in shown.bulkdata.auth.devices.values_mut() {
            mask(p);
        }
        mask(&mut shown.provision.password);
        for profile in &mut shown.provision.profiles {
            mask(&mut profile.password);
        }
        // A password inside a connection string, if any.
        if let Some(i) = shown.postgres.url.find("password=") {
            let end = shown.postgres.url[i..]
                .find(' ')
                .map_or(shown.postgres.url.len(), |e| i + e);
            shown.postgres.url.replace_range(i..end, "password=<set>");
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }

    fn validate(&self) -> anyhow::Result<()> {
        let mut ids = std::collections::HashSet::new();
        for e in &self.edges {
            if e.token.len() < 16 {
                bail!("edge {:?}: token must be at least 16 characters", e.id);
            }
            if !ids.insert(&e.id) {
                bail!("edge {:?} is listed twice", e.id);
            }
        }
        if self.store.read_count == 0 || self.store.max_attempts == 0 {
            bail!("store.read_count and store.max_attempts must be at least 1");
        }
        self.provision.validate()?;
        Ok(())
    }
}

/// `[provision]`: the desired Bulk Data state of the fleet, applied through
/// GenieACS's NBI (see `provision/mod.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProvisionConfig {
    /// GenieACS NBI base URL, e.g. `http://acs:7557`. Empty: provisioning off.
    pub nbi_url: String,
    /// Optional Basic credentials (an NBI behind an authenticating proxy).
    pub user: String,
    pub password: String,
    /// Every device is compared with the desired state this often. Default 300.
    pub sync_interval_secs: u64,
    /// Devices are listed (a small projection) this often to notice reboots,
    /// which are re-checked at once. Default 30.
    pub watch_interval_secs: u64,
    /// Devices worked on in parallel (NBI requests in flight). Default 4.
    pub concurrency: usize,
    /// A faulting value is retried in this many passes, then left out and shown. Default 3.
    pub max_fault_retries: u32,
    /// `tasks` (the provisioner sends minimal tasks) or `preset` (installs a
    /// provision script and presets; GenieACS applies them on BOOT/BOOTSTRAP).
    pub mode: ProvisionMode,
    /// Devices per `GET /devices` page. Default 100.
    pub page_size: usize,
    /// `timeout` (ms) passed with `?connection_request`: how long GenieACS
    /// waits for the device to connect. Default 4000 (GenieACS's own default).
    pub connection_request_timeout_ms: u64,
    /// One NBI request may take this long, s. Default 130 (a session may take 120).
    pub request_timeout_secs: u64,
    /// Attempts for NBI reads answered 5xx or unreachable, with backoff. Default 4.
    pub nbi_attempts: u32,
    /// Name of the provision script (and prefix of the presets) in preset mode. Default "bulkflow".
    pub preset_name: String,
    pub profiles: Vec<ProfileConfig>,
    pub scan: ScanConfig,
}

impl Default for ProvisionConfig {
    fn default() -> Self {
        ProvisionConfig {
            nbi_url: String::new(),
            user: String::new(),
            password: String::new(),
            sync_interval_secs: 300,
            watch_interval_secs: 30,
            concurrency: 4,
            max_fault_retries: 3,
            mode: ProvisionMode::Tasks,
            page_size: 100,
            connection_request_timeout_ms: 4000,
            request_timeout_secs: 130,
            nbi_attempts: 4,
            preset_name: "bulkflow".into(),
            profiles: Vec::new(),
            scan: ScanConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProvisionMode {
    Tasks,
    Preset,
}

/// One Bulk Data profile, identified on the device by its `Alias`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProfileConfig {
    pub alias: String,
    /// `Profile.Name` (a label).
    pub name: String,
    /// `ReportingInterval`, s (raised to the CPE's MinReportingInterval).
    pub interval_secs: u64,
    /// `JSON` or `CSV`.
    pub encoding: String,
    /// `NameValuePair`/`ObjectHierarchy` (JSON), `ParameterPerRow`/`ParameterPerColumn` (CSV).
    pub report_format: String,
    /// `Unix-Epoch`, `ISO-8601` or `None`.
    pub timestamp: String,
    /// `NumberOfRetainedFailedReports` (-1: as many as the CPE can).
    pub retained: i64,
    pub retry: bool,
    pub retry_min_wait_secs: u64,
    /// Units of 0.001 (2000 = x2).
    pub retry_multiplier: u64,
    /// `GZIP`, `Deflate` or `None`.
    pub compression: String,
    /// Collector URL. `{tag}` is replaced by the device's first GenieACS tag
    /// (one edge per lab site); `urls` picks a whole URL per tag instead.
    pub url: String,
    pub urls: std::collections::BTreeMap<String, String>,
    pub username: String,
    pub password: String,
    pub parameters: Vec<ParameterRef>,
    /// Vendor parameters set on matching devices only.
    pub vendor: Vec<VendorExtra>,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        ProfileConfig {
            alias: "bulkflow".into(),
            name: "bulkflow".into(),
            interval_secs: 300,
            encoding: "JSON".into(),
            report_format: "NameValuePair".into(),
            timestamp: "Unix-Epoch".into(),
            retained: 3,
            retry: true,
            retry_min_wait_secs: 5,
            retry_multiplier: 2000,
            compression: "None".into(),
            url: String::new(),
            urls: Default::default(),
            username: String::new(),
            password: String::new(),
            parameters: Vec::new(),
            vendor: Vec::new(),
        }
    }
}

/// A `Profile.Parameter.{i}` row: report key `name` (empty: the full path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParameterRef {
    #[serde(default)]
    pub name: String,
    pub reference: String,
}

/// A vendor parameter under the profile (`parameter` relative to
/// `Profile.{i}.`) on devices matching `oui` and, when set, `product_class`.
/// `value` may be `"{interval}"` (the profile's effective interval).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VendorExtra {
    pub oui: String,
    #[serde(default)]
    pub product_class: String,
    pub parameter: String,
    pub value: toml::Value,
}

/// `[provision.scan]`: neighbouring Wi-Fi scans.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScanConfig {
    /// Each device is scanned this often, s; 0 disables scans. Default 0.
    pub interval_secs: u64,
    /// Up to this much is added at random per device and scan, s. Default 60.
    pub jitter_secs: u64,
    /// Devices scanned at the same time. Default 2.
    pub concurrency: usize,
    /// A scan still `Requested` after this long is given up, s. Default 120.
    pub timeout_secs: u64,
    /// Pause between result checks of a running scan, s. Default 5.
    pub poll_secs: u64,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            interval_secs: 0,
            jitter_secs: 60,
            concurrency: 2,
            timeout_secs: 120,
            poll_secs: 5,
        }
    }
}

impl ProvisionConfig {
    pub fn enabled(&self) -> bool {
        !self.nbi_url.is_empty()
    }

    fn validate(&self) -> anyhow::Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        if self.concurrency == 0 || self.page_size == 0 || self.nbi_attempts == 0 {
            bail!("provision.concurrency, page_size and nbi_attempts must be at least 1");
        }
        // Report keys are mapped back to paths by Name alone (a report does
        // not say which profile produced it), so a Name means one reference.
        let mut names: std::collections::HashMap<&str, &str> = Default::default();
        let mut aliases = std::collections::HashSet::new();
        for p in &self.profiles {
            if p.alias.is_empty() || !aliases.insert(&p.alias) {
                bail!(
                    "provision profile alias {:?} is empty or listed twice",
                    p.alias
                );
            }
            if p.url.is_empty() && p.urls.is_empty() {
                bail!("provision profile {:?} needs url or urls", p.alias);
            }
            match (p.encoding.as_str(), p.report_format.as_str()) {
                ("JSON", "NameValuePair" | "ObjectHierarchy")
                | ("CSV", "ParameterPerRow" | "ParameterPerColumn") => {}
                (e, f) => bail!(
                    "provision profile {:?}: encoding {e:?} with report_format {f:?}",
                    p.alias
                ),
            }
            for r in &p.parameters {
                if r.reference.is_empty() {
                    bail!(
                        "provision profile {:?}: a parameter has no reference",
                        p.alias
                    );
                }
                if !r.name.is_empty()
                    && let Some(prev) = names.insert(&r.name, &r.reference)
                    && prev != r.reference
                {
                    bail!(
                        "parameter name {:?} is used for {prev:?} and {:?}",
                        r.name,
                        r.reference
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_nested_keys_with_typed_values() {
        let mut t: toml::Table = "[redis]\nstream = \"s\"\n".parse().unwrap();
        bulkflow_shared::config::apply_env_overrides(
            &mut t,
            ENV_PREFIX,
            SECTIONS,
            [
                (
                    "BULKFLOW_CENTRAL_REDIS_STREAM".to_string(),
                    "other".to_string(),
                ),
                (
                    "BULKFLOW_CENTRAL_STORE_READ_COUNT".to_string(),
                    "7".to_string(),
                ),
                (
                    "BULKFLOW_CENTRAL_POSTGRES_URL".to_string(),
                    "host=db user=x".to_string(),
                ),
                (
                    "BULKFLOW_CENTRAL_LISTEN".to_string(),
                    "0.0.0.0:9000".to_string(),
                ),
                ("UNRELATED".to_string(), "1".to_string()),
            ]
            .into_iter(),
        )
        .unwrap();
        let c: Config = toml::Value::Table(t).try_into().unwrap();
        assert_eq!(c.redis.stream, "other");
        assert_eq!(c.store.read_count, 7);
        assert_eq!(c.postgres.url, "host=db user=x");
        assert_eq!(c.redis.group, "bulkflow-store");
        assert_eq!(c.listen.port(), 9000);
    }

    #[test]
    fn warnings_name_no_edges_placeholders_and_missing_tls_files() {
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(
            c.warnings(),
            [
                "no [[edges]]: every edge batch will be refused (401); only direct CPE reports are taken"
            ]
        );
        let c: Config = toml::from_str(
            "[[edges]]\nid = \"a\"\ntoken = \"change-me-to-a-long-random-token\"\n\
             [tls]\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n",
        )
        .unwrap();
        assert_eq!(
            c.warnings(),
            [
                "[[edges]] \"a\": token is still the example's placeholder",
                "[tls] file /nonexistent/c.pem does not exist (yet)",
                "[tls] file /nonexistent/k.pem does not exist (yet)",
            ]
        );
    }

    #[test]
    fn effective_settings_mask_secrets() {
        let c: Config = toml::from_str(
            "[[edges]]\nid = \"a\"\ntoken = \"0123456789abcdefXYZ\"\n[postgres]\nurl = \"host=db password=hunter2 user=x\"\n",
        )
        .unwrap();
        let shown = c.effective();
        assert!(
            !shown.contains("0123456789abcdefXYZ") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(shown.contains("token = \"<set>\""), "{shown}");
        assert!(shown.contains("host=db password=<set> user=x"), "{shown}");
    }

    #[test]
    fn example_file_parses() {
        let c: Config = toml::from_str(include_str!("../central.example.toml")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.edges[0].id, "lab-1");
    }

    #[test]
    fn unknown_keys_and_short_tokens_are_refused() {
        let bad: Result<Config, _> = toml::from_str("[redis]\nstreem = \"x\"\n");
        assert!(bad.is_err());
        let c: Config = toml::from_str("[[edges]]\nid = \"a\"\ntoken = \"short\"\n").unwrap();
        assert!(c.validate().is_err());
    }
}
