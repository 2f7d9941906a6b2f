//! Configuration pieces both binaries use when they receive CPE requests.
//!
//! The edge and central accept Bulk Data with exactly the same rules (decoder
//! limits, device identity, Basic credentials, TLS files), so these structs
//! live here and each binary embeds them as sections of its own TOML file.

use crate::identity::IdentityConfig;
use crate::report::Limits;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// HTTP Basic credentials CPEs must present. Authentication is on when a
/// shared user or any per-device credential is configured, off otherwise.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BasicAuthConfig {
    /// Realm named in the `WWW-Authenticate` challenge. Default `bulkflow`.
    pub realm: Option<String>,
    /// One user name shared by every CPE (with `password`).
    pub user: Option<String>,
    pub password: Option<String>,
    /// Per-device credentials: user name -> password.
    pub devices: BTreeMap<String, String>,
}

impl BasicAuthConfig {
    pub fn enabled(&self) -> bool {
        self.user.is_some() || !self.devices.is_empty()
    }

    pub fn realm(&self) -> &str {
        self.realm.as_deref().unwrap_or("bulkflow")
    }
}

/// Certificate chain and private key (PEM files) for an HTTPS listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA (PEM):
    /// mutual TLS, e.g. for edges connecting to central.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
}

/// Everything that decides how one Bulk Data request is answered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReceiveConfig {
    pub limits: Limits,
    pub identity: IdentityConfig,
    pub auth: BasicAuthConfig,
}

/// Why an environment override could not be applied.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}: {reason}")]
pub struct EnvOverrideError {
    pub name: String,
    pub reason: String,
}

/// Applies environment overrides to a parsed TOML config, the scheme both
/// binaries document: `<PREFIX><KEY>` sets a top-level key and
/// `<PREFIX><SECTION>_<KEY>` a key of one of `sections` (names upper-cased in
/// the environment). A value is read as TOML when it parses as one (numbers,
/// booleans, arrays, inline tables) and as a string otherwise.
pub fn apply_env_overrides(
    table: &mut toml::Table,
    prefix: &str,
    sections: &[&str],
    vars: impl Iterator<Item = (String, String)>,
) -> Result<(), EnvOverrideError> {
    for (name, raw) in vars {
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let lower = rest.to_ascii_lowercase();
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(raw));
        let section = sections.iter().find_map(|s| {
            lower
                .strip_prefix(s)
                .and_then(|k| k.strip_prefix('_'))
                .map(|k| (*s, k))
        });
        match section {
            Some((section, key)) => {
                let entry = table
                    .entry(section.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let Some(t) = entry.as_table_mut() else {
                    return Err(EnvOverrideError {
                        name,
                        reason: format!("{section} is not a section"),
                    });
                };
                t.insert(key.to_string(), value);
            }
            None => {
                table.insert(lower, value);
            }
        }
    }
    Ok(())
}

impl TlsFiles {
    /// The configured files that do not exist (or cannot be seen) now, for
    /// `check-config` warnings: the service would fail to start with them.
    pub fn missing(&self) -> Vec<&std::path::Path> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
            .filter(|p| !p.exists())
            .collect()
    }
}

/// Whether a secret still holds an example config's placeholder.
pub fn is_placeholder(secret: &str) -> bool {
    let s = secret.to_ascii_lowercase();
    s.contains("change-me") || s.contains("changeme")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_reach_keys_and_sections_with_typed_values() {
        let mut t: toml::Table = "a = 1\n[outbox]\npath = \"x\"\n".parse().unwrap();
        let vars = [
            ("APP_A", "2"),
            ("APP_OUTBOX_QUOTA_BYTES", "5000"),
            ("APP_OUTBOX_PATH", "/data/o.db"),
            ("APP_FORWARD_TOKEN", "abc def"),
            ("OTHER_A", "9"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        apply_env_overrides(&mut t, "APP_", &["outbox", "forward"], vars.into_iter()).unwrap();
        assert_eq!(t["a"].as_integer(), Some(2));
        assert_eq!(t["outbox"]["quota_bytes"].as_integer(), Some(5000));
        assert_eq!(t["outbox"]["path"].as_str(), Some("/data/o.db"));
        assert_eq!(t["forward"]["token"].as_str(), Some("abc def"));
        let mut bad: toml::Table = "outbox = 1\n".parse().unwrap();
        let vars = [("APP_OUTBOX_PATH".to_string(), "x".to_string())];
        assert!(apply_env_overrides(&mut bad, "APP_", &["outbox"], vars.into_iter()).is_err());
    }
}
