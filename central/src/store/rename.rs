//! Renamed report keys back to full paths, for typed-table extraction.
//!
//! A profile row with Name `SSID_NBW` and Reference
//! `Device.WiFi.NeighboringWiFiDiagnostic.Result.*.SSID` makes the CPE report
//! `SSID_NBW.3`; an object reference (`Device.IP.Interface.*.Stats.`, Name
//! `ifs`) gives `ifs.1.BytesSent` (wildcard instances first, then the rest of
//! the path: reference section 3.1). The mapping comes from the provisioner
//! through `profile_parameter_names`, cached and re-read every
//! `store.names_refresh_secs`.

use bulkflow_shared::report::Param;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, Default, Clone)]
pub struct NameMap {
    /// Name -> Reference.
    names: BTreeMap<String, String>,
}

impl NameMap {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> NameMap {
        NameMap {
            names: pairs.into_iter().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The full path of a renamed key; `None` for full paths and unknown names.
    pub fn full_path(&self, key: &str) -> Option<String> {
        if key.starts_with("Device.") || key.starts_with("InternetGatewayDevice.") {
            return None;
        }
        // The longest Name that is the key or a prefix of it at a dot
        // (Names may themselves contain dots).
        let (name, reference) = self
            .names
            .iter()
            .filter(|(n, _)| key == n.as_str() || key.starts_with(&format!("{n}.")))
            .max_by_key(|(n, _)| n.len())?;
        let rest: Vec<&str> = key[name.len()..]
            .strip_prefix('.')
            .map(|r| r.split('.').collect())
            .unwrap_or_default();
        let partial = reference.ends_with('.');
        let mut rest = rest.into_iter();
        let mut out: Vec<&str> = Vec::new();
        for seg in reference.trim_end_matches('.').split('.') {
            if seg == "*" {
                out.push(rest.next()?);
            } else {
                out.push(seg);
            }
        }
        let remainder: Vec<&str> = rest.collect();
        if !remainder.is_empty() && !partial {
            return None;
        }
        out.extend(remainder);
        Some(out.join("."))
    }

    /// The report's parameters with renamed keys mapped back (borrowed when
    /// nothing needs mapping).
    pub fn map_params<'a>(&self, params: &'a [Param]) -> Cow<'a, [Param]> {
        if self.is_empty() || params.iter().all(|p| self.full_path(&p.path).is_none()) {
            return Cow::Borrowed(params);
        }
        Cow::Owned(
            params
                .iter()
                .map(|p| match self.full_path(&p.path) {
                    Some(path) => Param {
                        path,
                        value: p.value.clone(),
                    },
                    None => p.clone(),
                })
                .collect(),
        )
    }
}

/// [`NameMap`] loaded from PostgreSQL, refreshed when older than `every`.
pub struct NameCache {
    pub map: NameMap,
    loaded: Option<Instant>,
    every: Duration,
}

impl NameCache {
    pub fn new(every: Duration) -> NameCache {
        NameCache {
            map: NameMap::default(),
            loaded: None,
            every,
        }
    }

    pub async fn refresh(&mut self, client: &tokio_postgres::Client) {
        if self.loaded.is_some_and(|t| t.elapsed() < self.every) {
            return;
        }
        self.loaded = Some(Instant::now());
        match client
            .query("SELECT name, reference FROM profile_parameter_names", &[])
            .await
        {
            Ok(rows) => self.map = NameMap::new(rows.iter().map(|r| (r.get(0), r.get(1)))),
            // Before migration 0003 the table does not exist: no renamed keys.
            Err(e) => tracing::debug!(error = %e, "profile_parameter_names not readable"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renamed_keys_map_back_to_paths() {
        let m = NameMap::new([
            (
                "SSID_NBW".to_string(),
                "Device.WiFi.NeighboringWiFiDiagnostic.Result.*.SSID".to_string(),
            ),
            (
                "ifs".to_string(),
                "Device.IP.Interface.*.Stats.".to_string(),
            ),
            ("up".to_string(), "Device.DeviceInfo.UpTime".to_string()),
            ("di".to_string(), "Device.DeviceInfo.".to_string()),
            (
                "Bytes Sent WAN/LAN".to_string(),
                "Device.IP.Interface.1.Stats.BytesSent".to_string(),
            ),
        ]);
        let f = |k: &str| m.full_path(k);
        assert_eq!(
            f("SSID_NBW.3").as_deref(),
            Some("Device.WiFi.NeighboringWiFiDiagnostic.Result.3.SSID")
        );
        assert_eq!(
            f("ifs.2.BytesSent").as_deref(),
            Some("Device.IP.Interface.2.Stats.BytesSent")
        );
        assert_eq!(f("up").as_deref(), Some("Device.DeviceInfo.UpTime"));
        assert_eq!(
            f("di.MemoryStatus.Free").as_deref(),
            Some("Device.DeviceInfo.MemoryStatus.Free")
        );
        assert_eq!(
            f("Bytes Sent WAN/LAN").as_deref(),
            Some("Device.IP.Interface.1.Stats.BytesSent")
        );
        assert_eq!(f("SSID_NBW"), None, "a wildcard needs its instance");
        assert_eq!(f("up.7"), None, "a parameter reference has no remainder");
        assert_eq!(f("other.1"), None);
        assert_eq!(f("Device.DeviceInfo.UpTime"), None);
    }
}
