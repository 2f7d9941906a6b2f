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
