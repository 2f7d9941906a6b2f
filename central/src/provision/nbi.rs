//! GenieACS NBI client: the few endpoints the provisioner uses.
//!
//! Reads (`GET /devices`, `/tasks`, `/faults`) are retried with backoff on 5xx
//! and connection errors. Task posts are not: a 5xx may come after GenieACS
//! stored the task, and a second `addObject` would create a second instance.
//! The next pass re-reads the device instead.
//!
//! Device ids are GenieACS-escaped already (`%2D` for `-` ...); in a URL path
//! they are escaped once more (`%` -> `%25`, `.` -> `%2E`), because the NBI
//! routes only `[A-Za-z0-9-_%]` and decodes once.

use crate::config::ProvisionConfig;
use serde_json::{Value as Json, json};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum NbiError {
    #[error("NBI unreachable: {0}")]
    Unreachable(String),
    #[error("NBI answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("no such device")]
    NoSuchDevice,
    #[error("invalid NBI answer: {0}")]
    Invalid(String),
}

/// What a posted task became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskAnswer {
    /// 200: run in a session, finished without a fault.
    Done,
    /// 202: still queued at GenieACS (`reason`: the reason phrase when the
    /// HTTP stack exposes it, e.g. `Device is offline`, `Task faulted`).
    Queued { task_id: String, reason: String },
}

pub struct Nbi {
    client: reqwest::Client,
    base: String,
    user: Option<(String, String)>,
    cr_timeout_ms: u64,
    attempts: u32,
}

/// A device id (or tag, name) as one NBI URL path segment.
pub fn path_segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len() + 8);
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query-string value (the JSON of `query=` and the like).
fn query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b',') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Nbi {
    pub fn new(cfg: &ProvisionConfig) -> Result<Nbi, NbiError> {
        // reqwest is built without a default TLS provider: ring, as elsewhere.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.request_timeout_secs.max(1)))
            .build()
            .map_err(|e| NbiError::Unreachable(e.to_string()))?;
        Ok(Nbi {
            client,
            base: cfg.nbi_url.trim_end_matches('/').to_string(),
            user: (!cfg.user.is_empty()).then(|| (cfg.user.clone(), cfg.password.clone())),
            cr_timeout_ms: cfg.connection_request_timeout_ms,
            attempts: cfg.nbi_attempts.max(1),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.client.request(method, format!("{}{path}", self.base));
        match &self.user {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    /// GET with retries on 5xx / connection errors; returns (total header, body).
    async fn get(&self, path: &str) -> Result<(Option<u64>, Vec<u8>), NbiError> {
        let mut last = NbiError::Unreachable("no attempt".into());
        for attempt in 0..self.attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt.min(6))).await;
            }
            match self.request(reqwest::Method::GET, path).send().await {
                Ok(r) if r.status().is_success() => {
                    let total = r
                        .headers()
                        .get("total")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok());
                    let body = r
                        .bytes()
                        .await
                        .map_err(|e| NbiError::Unreachable(e.to_string()))?;
                    return Ok((total, body.to_vec()));
                }
                Ok(r) if r.status().is_server_error() => {
                    last = NbiError::Status {
                        status: r.status().as_u16(),
                        body: r.text().await.unwrap_or_default(),
                    };
                }
                Ok(r) => {
                    return Err(NbiError::Status {
                        status: r.status().as_u16(),
                        body: r.text().await.unwrap_or_default(),
                    });
                }
                Err(e) => last = NbiError::Unreachable(e.to_string()),
            }
        }
        Err(last)
    }

    async fn get_list(&self, path: &str) -> Result<(Vec<Json>, Option<u64>), NbiError> {
        let (total, body) = self.get(path).await?;
        let list: Vec<Json> =
            serde_json::from_slice(&body).map_err(|e| NbiError::Invalid(e.to_string()))?;
        Ok((list, total))
    }

    /// All devices matching `query`, page by page, with only `projection`.
    pub async fn devices(
        &self,
        query: &Json,
        projection: &[&str],
        page: usize,
    ) -> Result<Vec<Json>, NbiError> {
        let mut out = Vec::new();
        loop {
            let path = format!(
                "/devices/?query={}&projection={}&sort={}&skip={}&limit={page}",
                query_value(&query.to_string()),
                query_value(&projection.join(",")),
                query_value(r#"{"_id":1}"#),
                out.len()
            );
            let (list, total) = self.get_list(&path).await?;
            let got = list.len();
            out.extend(list);
            let total = total.unwrap_or(out.len() as u64) as usize;
            if got == 0 || out.len() >= total {
                return Ok(out);
            }
        }
    }

    /// One device (by its GenieACS id), with only `projection`.
    pub async fn device(&self, id: &str, projection: &[&str]) -> Result<Json, NbiError> {
        let list = self.devices(&json!({ "_id": id }), projection, 1).await?;
        list.into_iter().next().ok_or(NbiError::NoSuchDevice)
    }

    /// Posts a task with a connection request and waits for the session.
    pub async fn post_task(&self, id: &str, task: &Json) -> Result<TaskAnswer, NbiError> {
        let path = format!(
            "/devices/{}/tasks?connection_request&timeout={}",
            path_segment(id),
            self.cr_timeout_ms
        );
        let r = self
            .request(reqwest::Method::POST, &path)
            .header("Content-Type", "application/json")
            .body(task.to_string())
            .send()
            .await
            .map_err(|e| NbiError::Unreachable(e.to_string()))?;
        let status = r.status().as_u16();
        let reason = r
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|p| String::from_utf8_lossy(p.as_bytes()).into_owned())
            .or_else(|| r.status().canonical_reason().map(String::from))
            .unwrap_or_default();
        let body = r.bytes().await.unwrap_or_default();
        match status {
            200 => Ok(TaskAnswer::Done),
            202 => {
                let task: Json = serde_json::from_slice(&body)
                    .map_err(|e| NbiError::Invalid(format!("task answer: {e}")))?;
                let task_id = task["_id"]
                    .as_str()
                    .ok_or_else(|| NbiError::Invalid("task answer without _id".into()))?
                    .to_string();
                Ok(TaskAnswer::Queued { task_id, reason })
            }
            404 => Err(NbiError::NoSuchDevice),
            _ => Err(NbiError::Status {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            }),
        }
    }

    pub async fn tasks(&self, query: &Json) -> Result<Vec<Json>, NbiError> {
        let path = format!("/tasks/?query={}", query_value(&query.to_string()));
        Ok(self.get_list(&path).await?.0)
    }

    pub async fn faults(&self, query: &Json) -> Result<Vec<Json>, NbiError> {
        let path = format!("/faults/?query={}", query_value(&query.to_string()));
        Ok(self.get_list(&path).await?.0)
    }

    /// Deletes a task (and its fault). 404: already gone, fine.
    pub async fn delete_task(&self, task_id: &str) -> Result<(), NbiError> {
        self.send_ok(
            self.request(
                reqwest::Method::DELETE,
                &format!("/tasks/{}", path_segment(task_id)),
            ),
            &[200, 404],
        )
        .await
    }

    pub async fn put_provision(&self, name: &str, script: &str) -> Result<(), NbiError> {
        let path = format!("/provisions/{}", path_segment(name));
        self.send_ok(
            self.request(reqwest::Method::PUT, &path)
                .body(script.to_string()),
            &[200],
        )
        .await
    }

    pub async fn put_preset(&self, name: &str, preset: &Json) -> Result<(), NbiError> {
        let path = format!("/presets/{}", path_segment(name));
        self.send_ok(
            self.request(reqwest::Method::PUT, &path)
                .header("Content-Type", "application/json")
                .body(preset.to_string()),
            &[200],
        )
        .await
    }

    async fn send_ok(&self, req: reqwest::RequestBuilder, ok: &[u16]) -> Result<(), NbiError> {
        let r = req
            .send()
            .await
            .map_err(|e| NbiError::Unreachable(e.to_string()))?;
        let status = r.status().as_u16();
        if ok.contains(&status) {
            Ok(())
        } else {
            Err(NbiError::Status {
                status,
                body: r.text().await.unwrap_or_default(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_escaped_once_more_for_paths() {
        assert_eq!(
            path_segment("00236A-SR552n-SR%2D01"),
            "00236A-SR552n-SR%252D01"
        );
        assert_eq!(path_segment("C0FFEE-CX.7-SN1"), "C0FFEE-CX%2E7-SN1");
        assert_eq!(
            path_segment("0A1B2C-USP%20Agent-SN1"),
            "0A1B2C-USP%2520Agent-SN1"
        );
    }
}
