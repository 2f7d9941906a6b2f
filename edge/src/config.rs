//! The edge's configuration: a TOML file, then environment overrides.
//!
//! A minimal file is three lines (`edge_id`, `listen`, `central_url`); every
//! other value has a documented default (see `edge/edge.example.toml`).
//!
//! Environment overrides: `BULKFLOW_EDGE_<KEY>` sets a top-level key and
//! `BULKFLOW_EDGE_<SECTION>_<KEY>` a key of a section, names upper-cased
//! (`BULKFLOW_EDGE_OUTBOX_QUOTA_BYTES=500000000`,
//! `BULKFLOW_EDGE_FORWARD_TOKEN=...`). The value is read as a TOML value when it
//! parses as one (numbers, booleans, `["a","b"]`) and as a plain string
//! otherwise; quote it (`'"123"'`) to force a string.

use anyhow::{Context, bail};
use bulkflow_shared::config::{BasicAuthConfig, ReceiveConfig, TlsFiles};
use bulkflow_shared::identity::IdentityConfig;
use bulkflow_shared::report::Limits;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const ENV_PREFIX: &str = "BULKFLOW_EDGE_";
const SECTIONS: &[&str] = &[
    "ingest",
    "limits",
    "identity",
    "auth",
    "tls",
    "outbox",
    "quarantine",
    "forward",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This edge's name; with `batch_seq` it identifies every batch at central.
    pub edge_id: String,
    /// Address of the CPE listener, e.g. `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// Base URL of central (`https://central.example:8443`); batches go to
    /// `<central_url>/v1/batches`.
    pub central_url: String,
    #[serde(default)]
    pub ingest: Ingest,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub identity: IdentityConfig,
    #[serde(default)]
    pub auth: BasicAuthConfig,
    /// HTTPS for the CPE listener when present.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    #[serde(default)]
    pub outbox: Outbox,
    #[serde(default)]
    pub quarantine: Quarantine,
    #[serde(default)]
    pub forward: Forward,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ingest {
    /// Path CPEs post to. Default `/bulkdata`.
    pub path: String,
    /// Separate plain-HTTP address for `/healthz` and `/metrics`; when unset
    /// they are served on the CPE listener.
    pub admin_listen: Option<SocketAddr>,
    /// How long shutdown waits for in-flight requests. Default 10 s.
    pub shutdown_grace_secs: u64,
    /// How long a client may take to send its whole body once its head is in
    /// (408 after). Default 60 s.
    pub body_timeout_secs: u64,
    /// Connections served at once; further clients wait in the kernel's
    /// accept queue. Bounds memory at about this many request bodies. Default 256.
    pub max_connections: usize,
}

impl Default for Ingest {
    fn default() -> Self {
        Ingest {
            path: "/bulkdata".into(),
            admin_listen: None,
            shutdown_grace_secs: 10,
            body_timeout_secs: 60,
            max_connections: 256,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    /// fsync at every commit: survives power loss. Default.
    Full,
    /// WAL fsync only at checkpoints: survives a crash of the process, but a
    /// power loss may lose the last commits (which were already answered 200).
    Normal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaPolicy {
    /// Answer 503 + Retry-After while the outbox is full. Default.
    Reject,
    /// Make room by deleting the oldest data not yet sent (counted and logged).
    DropOldest,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Outbox {
    /// SQLite file. Default `bulkflow-edge.db` (relative to the working directory).
    pub path: PathBuf,
    pub synchronous: Synchronous,
    /// Most bytes of stored reports and batches. Default 1 GiB.
    pub quota_bytes: u64,
    pub quota_policy: QuotaPolicy,
    /// `Retry-After` seconds on a 503. Default 60.
    pub retry_after_secs: u32,
    /// How long the writer waits for concurrent requests to join a commit
    /// (only while other requests are in flight). Default 2 ms.
    pub commit_window_ms: u64,
    /// Most requests in one commit. Default 256.
    pub commit_max_requests: usize,
    /// zstd level of stored reports. Default 3.
    pub zstd_level: i32,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox {
            path: "bulkflow-edge.db".into(),
            synchronous: Synchronous::Full,
            quota_bytes: 1 << 30,
            quota_policy: QuotaPolicy::Reject,
            retry_after_secs: 60,
            commit_window_ms: 2,
            commit_max_requests: 256,
            zstd_level: 3,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quarantine {
    /// Rows kept; the oldest are evicted. Default 1000 (0 disables quarantine).
    pub max_rows: u32,
    /// Body bytes kept per row (longer bodies are truncated). Default 64 KiB.
    pub max_body_bytes: usize,
}

impl Default for Quarantine {
    fn default() -> Self {
        Quarantine {
            max_rows: 1000,
            max_body_bytes: 64 << 10,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Forward {
    /// Bearer token sent to central.
    pub token: Option<String>,
    /// Client certificate and key (PEM) for mutual TLS with central.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Extra CA certificate (PEM) trusted for central, e.g. a private CA.
    pub ca_cert: Option<PathBuf>,
    /// Most reports in one batch. Default 1000.
    pub batch_max_reports: usize,
    /// Most stored (compressed) bytes of reports in one batch. Default 4 MiB.
    pub batch_max_bytes: usize,
    /// A batch is sent once its oldest report waited this long, even if not
    /// full. Default 1000 ms.
    pub batch_max_age_ms: u64,
    /// Most batches sent but not yet committed by central. Default 16.
    pub max_unacked: usize,
    /// A sent batch not acknowledged as committed after this long is sent
    /// again (same bytes). Default 30 s.
    pub ack_timeout_secs: u64,
    /// How often to ask central for acknowledgements while waiting. Default 2 s.
    pub ack_poll_ms: u64,
    /// Timeout of one HTTP request to central. Default 30 s.
    pub request_timeout_secs: u64,
    /// Backoff after a failed request: from `backoff_min_ms`, doubling up to
    /// `backoff_max_ms`, with jitter. Defaults 500 ms and 60 s.
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for Forward {
    fn default() -> Self {
        Forward {
            token: None,
            client_cert: None,
            client_key: None,
            ca_cert: None,
            batch_max_reports: 1000,
            batch_max_bytes: 4 << 20,
            batch_max_age_ms: 1000,
            max_unacked: 16,
            ack_timeout_secs: 30,
            ack_poll_ms: 2000,
            request_timeout_secs: 30,
            backoff_min_ms: 500,
            backoff_max_ms: 60_000,
        }
    }
}

impl Config {
    /// Reads `path`, applies the process environment's overrides, validates.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        Self::from_str_with_env(&text, std::env::vars())
            .with_context(|| format!("in config {}", path.display()))
    }

    pub fn from_str_with_env(
        text: &str,
        env: impl Iterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let mut table: toml::Table = text.parse().context("invalid TOML")?;
        bulkflow_shared::config::apply_env_overrides(&mut table, ENV_PREFIX, SECTIONS, env)?;
        let config: Config = toml::Value::Table(table)
            .try_into()
            .context("invalid configuration")?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.edge_id.trim().is_empty() {
            bail!("edge_id must not be empty");
        }
        if !(self.central_url.starts_with("http://") || self.central_url.starts_with("https://")) {
            bail!("central_url must start with http:// or https://");
        }
        if !self.ingest.path.starts_with('/') {
            bail!("ingest.path must start with '/'");
        }
        if self.forward.client_cert.is_some() != self.forward.client_key.is_some() {
            bail!("forward.client_cert and forward.client_key go together");
        }
        if self.forward.batch_max_reports == 0 || self.forward.max_unacked == 0 {
            bail!("forward.batch_max_reports and forward.max_unacked must be at least 1");
        }
        if self.auth.user.is_some() && self.auth.password.is_none() {
            bail!("auth.user needs auth.password");
        }
        Ok(())
    }

    /// Settings that are valid but probably not what the operator wants.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.forward.token.is_none() {
            w.push(
                "[forward] token is not set: central refuses batches without its bearer token for this edge \
                 (reports are kept in the outbox until it is set)"
                    .to_string(),
            );
        }
        if self
            .forward
            .token
            .as_deref()
            .is_some_and(bulkflow_shared::config::is_placeholder)
        {
            w.push("[forward] token is still the example's placeholder".to_string());
        }
        if let Some(tls) = &self.tls {
            for f in tls.missing() {
                w.push(format!("[tls] file {} does not exist (yet)", f.display()));
            }
        }
        if self.outbox.path.is_relative() {
            w.push(format!(
                "[outbox] path {:?} is relative to the directory the edge is started in",
                self.outbox.path
            ));
        }
        w
    }

    /// The pieces the shared request logic needs.
    pub fn receive(&self) -> ReceiveConfig {
        ReceiveConfig {
            limits: self.limits.clone(),
            identity: self.identity.clone(),
            auth: self.auth.clone(),
        }
    }

    /// The effective settings as TOML, secrets masked.
    pub fn effective(&self) -> String {
        let mut shown = self.clone();
        if shown.forward.token.is_some() {
            shown.forward.token = Some("<set>".into());
        }
        if shown.auth.password.is_some() {
            shown.auth.password = Some("<set>".into());
        }
        for p in shown.auth.devices.values_mut() {
            *p = "<set>".into();
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "edge_id = \"lab-1\"\nlisten = \"0.0.0.0:8080\"\ncentral_url = \"https://central.example\"\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_str_with_env(MINIMAL, std::iter::empty()).unwrap();
        assert_eq!(c.ingest.path, "/bulkdata");
        assert_eq!(c.outbox.synchronous, Synchronous::Full);
        assert_eq!(c.outbox.quota_policy, QuotaPolicy::Reject);
        assert!(!c.auth.enabled());
        assert!(c.tls.is_none());
    }

    #[test]
    fn environment_overrides_keys_and_sections() {
        let env = [
            ("BULKFLOW_EDGE_LISTEN", "127.0.0.1:0"),
            ("BULKFLOW_EDGE_OUTBOX_QUOTA_BYTES", "5000"),
            ("BULKFLOW_EDGE_OUTBOX_QUOTA_POLICY", "drop_oldest"),
            ("BULKFLOW_EDGE_FORWARD_TOKEN", "abc"),
            ("BULKFLOW_EDGE_AUTH_DEVICES", "{ r1 = \"pw\" }"),
            ("OTHER", "x"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let c = Config::from_str_with_env(MINIMAL, env.into_iter()).unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.outbox.quota_bytes, 5000);
        assert_eq!(c.outbox.quota_policy, QuotaPolicy::DropOldest);
        assert_eq!(c.forward.token.as_deref(), Some("abc"));
        assert_eq!(c.auth.devices.get("r1").map(String::as_str), Some("pw"));
    }

    #[test]
    fn warnings_name_missing_token_and_relative_outbox() {
        let c = Config::from_str_with_env(MINIMAL, std::iter::empty()).unwrap();
        let w = c.warnings();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("[forward] token is not set"), "{w:?}");
        assert!(w[1].starts_with("[outbox] path"), "{w:?}");
        let full = format!(
            "{MINIMAL}[forward]\ntoken = \"t\"\n[outbox]\npath = \"/var/lib/bulkflow-edge/outbox.db\"\n"
        );
        let c = Config::from_str_with_env(&full, std::iter::empty()).unwrap();
        assert_eq!(c.warnings(), Vec::<String>::new());
    }

    #[test]
    fn bad_configs_are_refused() {
        let bad = MINIMAL.replace("https://central.example", "central");
        assert!(Config::from_str_with_env(&bad, std::iter::empty()).is_err());
        let unknown = format!("{MINIMAL}[outbox]\nqouta_bytes = 1\n");
        assert!(Config::from_str_with_env(&unknown, std::iter::empty()).is_err());
    }

    #[test]
    fn example_file_parses() {
        let text = include_str!("../edge.example.toml");
        let c = Config::from_str_with_env(text, std::iter::empty()).unwrap();
        assert_eq!(c.edge_id, "lab-1");
    }
}
