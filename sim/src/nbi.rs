//! An emulator of GenieACS 1.2's northbound interface (NBI) in front of the
//! emulated fleet: the endpoints, answers and quirks a provisioner relies on.
//!
//! - `GET|HEAD /devices/?query=&projection=&skip=&limit=` with the `total`
//!   header; `query` keys that are parameter paths match the cached `_value`.
//! - `POST /devices/<id>/tasks[?connection_request][&timeout=]`: 200 when
//!   the task ran, 202 with the reason phrase (`Device is offline`, `Task
//!   faulted`, `Accepted`) when it stays queued, 404 `No such device`.
//! - `GET /tasks`, `DELETE /tasks/<id>` (also deletes its fault),
//!   `POST /tasks/<id>/retry`, `GET /faults`, `DELETE /faults/<id>`,
//!   `PUT|DELETE /presets/<name>`, `PUT|DELETE /provisions/<name>`,
//!   `POST|DELETE /devices/<id>/tags/<tag>`.
//! - Ids in paths: only `[A-Za-z0-9-_%]` is routed (a literal `.` is a 404),
//!   then decoded once, so GenieACS's stored `%` must arrive as `%25`.
//!
//! `/_sim/...` is the emulator's own control surface (not GenieACS): fleet
//! status, the task log, and offline/online/reboot events for tests.

use crate::fleet::{Fleet, Outcome, plain_match};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value as Json, json};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

pub type Shared = Arc<Mutex<Fleet>>;
type Answer = Response<Full<Bytes>>;

const VERSION: &str = "1.2.16";

fn answer(status: u16, reason: Option<&str>, content_type: &str, body: impl Into<Bytes>) -> Answer {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        "GenieACS-Version",
        hyper::header::HeaderValue::from_static(VERSION),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    if let Some(phrase) = reason
        && let Ok(p) = hyper::ext::ReasonPhrase::try_from(phrase.as_bytes().to_vec())
    {
        r.extensions_mut().insert(p);
    }
    r
}

fn text(status: u16, body: &str) -> Answer {
    answer(status, None, "text/plain", body.to_string())
}

fn json_answer(status: u16, reason: Option<&str>, body: &Json) -> Answer {
    answer(status, reason, "application/json", body.to_string())
}

/// `[\n{...},\n{...}\n]` with the `total` header, as GenieACS streams lists.
fn list(items: &[Json], total: usize, head: bool) -> Answer {
    let body = if head || items.is_empty() {
        if head { String::new() } else { "[]".into() }
    } else {
        let parts: Vec<String> = items.iter().map(Json::to_string).collect();
        format!("[\n{}\n]", parts.join(",\n"))
    };
    let mut r = answer(200, None, "application/json", body);
    if let Ok(v) = hyper::header::HeaderValue::from_str(&total.to_string()) {
        r.headers_mut().insert("total", v);
    }
    r
}

pub async fn serve(listener: TcpListener, fleet: Shared) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let fleet = fleet.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let fleet = fleet.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, fleet).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Decodes `%XX` once (GenieACS does one `decodeURIComponent`).
pub fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A routed id/name segment: GenieACS's route regexes allow only these bytes.
fn segment(raw: &str) -> Option<String> {
    raw.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'%')
        .then(|| percent_decode(raw, false))
        .flatten()
}

fn query_params(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                percent_decode(k, true).unwrap_or_default(),
                percent_decode(v, true).unwrap_or_default(),
            )
        })
        .collect()
}

async fn handle(req: Request<Incoming>, fleet: Shared) -> Answer {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let params = query_params(req.uri().query());
    let param = |k: &str| params.iter().find(|p| p.0 == k).map(|p| p.1.clone());
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return text(400, "Bad request body"),
    };
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let segs: Vec<&str> = if segs.len() > 1 && segs.last() == Some(&"") {
        segs[..segs.len() - 1].to_vec()
    } else {
        segs
    };
    let query = match param("query") {
        Some(q) if !q.is_empty() => match serde_json::from_str::<Json>(&q) {
            Ok(v) => v,
            Err(e) => return text(400, &format!("SyntaxError: {e}")),
        },
        _ => json!({}),
    };
    let skip: usize = param("skip").and_then(|s| s.parse().ok()).unwrap_or(0);
    let limit: Option<usize> = param("limit").and_then(|s| s.parse().ok());
    let head = method == Method::HEAD;
    let Ok(mut f) = fleet.lock() else {
        return text(500, "fleet state poisoned");
    };
    match (&method, segs.as_slice()) {
        (&Method::GET | &Method::HEAD, ["devices"]) => {
            let projection: Option<Vec<String>> = param("projection")
                .filter(|p| !p.is_empty())
                .map(|p| p.split(',').map(|s| s.trim().to_string()).collect());
            let mut docs: Vec<Json> = f
                .devices
                .iter()
                .map(|d| d.document())
                .filter(|d| device_match(d, &query))
                .collect();
            docs.sort_by(|a, b| a["_id"].as_str().cmp(&b["_id"].as_str()));
            let total = docs.len();
            let page: Vec<Json> = docs
                .into_iter()
                .skip(skip)
                .take(limit.unwrap_or(usize::MAX))
                .map(|d| match &projection {
                    Some(p) => project(&d, p),
                    None => d,
                })
                .collect();
            list(&page, total, head)
        }
        (&Method::POST, ["devices", id, "tasks"]) => {
            let Some(id) = segment(id) else {
                return text(404, "404 Not Found");
            };
            let Some(dev) = f.index(&id) else {
                return answer(404, Some("No such device"), "text/plain", "No such device");
            };
            let task: Json = match serde_json::from_slice(&body) {
                Ok(t @ Json::Object(_)) => t,
                Ok(_) | Err(_) => return text(400, "SyntaxError: invalid task JSON"),
            };
            let cr = params.iter().any(|p| p.0 == "connection_request");
            let (outcome, task) = f.post_task(dev, task, cr);
            let body = task.to_json();
            match outcome {
                Outcome::Done => json_answer(200, None, &body),
                Outcome::Queued(reason) => json_answer(202, Some(reason), &body),
                Outcome::Faulted => json_answer(202, Some("Task faulted"), &body),
                Outcome::Invalid(why) => text(400, &why),
            }
        }
        (&Method::POST | &Method::DELETE, ["devices", id, "tags", tag]) => {
            let (Some(id), Some(tag)) = (segment(id), segment(tag)) else {
                return text(404, "404 Not Found");
            };
            let Some(dev) = f.index(&id) else {
                return answer(404, Some("No such device"), "text/plain", "No such device");
            };
            let tags = &mut f.devices[dev].tags;
            tags.retain(|t| *t != tag);
            if method == Method::POST {
                tags.push(tag);
            }
            text(200, "")
        }
        (&Method::GET | &Method::HEAD, ["tasks"]) => {
            let items = f.query_tasks(&query);
            let total = items.len();
            let page: Vec<Json> = items
                .into_iter()
                .skip(skip)
                .take(limit.unwrap_or(usize::MAX))
                .collect();
            list(&page, total, head)
        }
        (&Method::DELETE, ["tasks", id]) => {
            let Some(id) = segment(id) else {
                return text(404, "404 Not Found");
            };
            let Some(pos) = f.tasks.iter().position(|t| t.id == id) else {
                return answer(404, Some("Task not found"), "text/plain", "Task not found");
            };
            let t = f.tasks.remove(pos);
            f.faults.remove(&format!("{}:task_{}", t.device, t.id));
            text(200, "")
        }
        (&Method::POST, ["tasks", id, "retry"]) => {
            let Some(id) = segment(id) else {
                return text(404, "404 Not Found");
            };
            let device = f
                .tasks
                .iter()
                .find(|t| t.id == id)
                .map(|t| t.device.clone());
            if let Some(device) = device {
                f.faults.remove(&format!("{device}:task_{id}"));
            }
            text(200, "")
        }
        (&Method::GET | &Method::HEAD, ["faults"]) => {
            let items = f.query_faults(&query);
            let total = items.len();
            list(&items, total, head)
        }
        (&Method::DELETE, ["faults", id]) => {
            let Some(id) = percent_decode(id, false) else {
                return text(404, "404 Not Found");
            };
            f.faults.remove(&id);
            text(200, "")
        }
        (&Method::GET | &Method::HEAD, ["presets"]) => {
            let items: Vec<Json> = f
                .presets
                .iter()
                .map(|(k, v)| {
                    let mut v = v.clone();
                    v["_id"] = k.clone().into();
                    v
                })
                .filter(|v| plain_match(v, &query))
                .collect();
            let total = items.len();
            list(&items, total, head)
        }
        (&Method::PUT, ["presets", name]) => {
            let Some(name) = segment(name) else {
                return text(404, "404 Not Found");
            };
            match serde_json::from_slice::<Json>(&body) {
                Ok(v @ Json::Object(_)) => {
                    f.presets.insert(name, v);
                    text(200, "")
                }
                _ => text(400, "SyntaxError: preset is not a JSON object"),
            }
        }
        (&Method::GET | &Method::HEAD, ["provisions"]) => {
            let items: Vec<Json> = f
                .provisions
                .iter()
                .map(|(k, v)| json!({"_id": k, "script": v}))
                .filter(|v| plain_match(v, &query))
                .collect();
            let total = items.len();
            list(&items, total, head)
        }
        (&Method::PUT, ["provisions", name]) => {
            let Some(name) = segment(name) else {
                return text(404, "404 Not Found");
            };
            f.provisions
                .insert(name, String::from_utf8_lossy(&body).into_owned());
            text(200, "")
        }
        (&Method::DELETE, [kind @ ("presets" | "provisions"), name]) => {
            let Some(name) = segment(name) else {
                return text(404, "404 Not Found");
            };
            if *kind == "presets" {
                f.presets.remove(&name);
            } else {
                f.provisions.remove(&name);
            }
            text(200, "")
        }
        // The emulator's own control surface.
        (&Method::GET, ["_sim", "devices"]) => {
            let all: Vec<Json> = f.devices.iter().map(|d| d.status()).collect();
            json_answer(200, None, &Json::Array(all))
        }
        (&Method::GET, ["_sim", "tasks"]) => json_answer(200, None, &Json::Array(f.log.clone())),
        (&Method::POST, ["_sim", "devices", id, action]) => {
            let Some(id) = segment(id) else {
                return text(404, "404 Not Found");
            };
            let Some(dev) = f.index(&id) else {
                return text(404, "No such device");
            };
            match *action {
                "offline" => f.set_online(dev, false),
                "online" => f.set_online(dev, true),
                "reboot" => f.reboot(dev, param("wipe").is_some_and(|w| w == "1" || w == "true")),
                "session" => {
                    f.session(dev);
                }
                _ => return text(404, "unknown action"),
            }
            json_answer(200, None, &f.devices[dev].status())
        }
        (
            _,
            [
                "devices" | "tasks" | "faults" | "presets" | "provisions",
                ..,
            ],
        ) => text(405, "405 Method Not Allowed"),
        _ => text(404, "404 Not Found"),
    }
}

/// GenieACS's `query` for devices: keys not starting with `_` (in their last
/// segment) compare against `._value`; plain values, `$in`, `$ne`, `$exists`.
fn device_match(doc: &Json, query: &Json) -> bool {
    let Some(q) = query.as_object() else {
        return true;
    };
    q.iter().all(|(k, want)| {
        if k == "$and" {
            return want
                .as_array()
                .is_some_and(|a| a.iter().all(|x| device_match(doc, x)));
        }
        if k == "$or" {
            return want
                .as_array()
                .is_some_and(|a| a.iter().any(|x| device_match(doc, x)));
        }
        let last = k.rsplit('.').next().unwrap_or("");
        let mut path: Vec<&str> = k.split('.').collect();
        if !last.starts_with('_') {
            path.push("_value");
        }
        let mut node = Some(doc);
        for p in &path {
            node = node.and_then(|n| n.get(p));
        }
        let matches = |have: Option<&Json>, w: &Json| -> bool {
            match have {
                Some(Json::Array(a)) => a.iter().any(|x| loose_eq(x, w)),
                Some(h) => loose_eq(h, w),
                None => false,
            }
        };
        match want {
            Json::Object(ops) if ops.keys().all(|o| o.starts_with('$')) => {
                ops.iter().all(|(op, v)| match op.as_str() {
                    "$in" => v
                        .as_array()
                        .is_some_and(|a| a.iter().any(|w| matches(node, w))),
                    "$ne" => !matches(node, v),
                    "$exists" => node.is_some() == v.as_bool().unwrap_or(true),
                    _ => false,
                })
            }
            w => matches(node, w),
        }
    })
}

/// String values also match their numeric form, as GenieACS expands them.
fn loose_eq(have: &Json, want: &Json) -> bool {
    if have == want {
        return true;
    }
    match (have, want) {
        (Json::Number(n), Json::String(s)) | (Json::String(s), Json::Number(n)) => {
            s.parse::<f64>().ok() == n.as_f64()
        }
        _ => false,
    }
}

/// Keeps `_id` and the projected paths (a parent path keeps its subtree).
fn project(doc: &Json, paths: &[String]) -> Json {
    let mut out = serde_json::Map::new();
    out.insert("_id".into(), doc["_id"].clone());
    for p in paths {
        let segs: Vec<&str> = p.split('.').filter(|s| !s.is_empty()).collect();
        let mut node = Some(doc);
        for s in &segs {
            node = node.and_then(|n| n.get(s));
        }
        let Some(value) = node else { continue };
        let mut target = &mut out;
        for (i, s) in segs.iter().enumerate() {
            if i + 1 == segs.len() {
                target.insert((*s).to_string(), value.clone());
            } else {
                let e = target
                    .entry((*s).to_string())
                    .or_insert_with(|| Json::Object(serde_json::Map::new()));
                let Json::Object(m) = e else { break };
                target = m;
            }
        }
    }
    Json::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_route_only_when_escaped_as_genieacs_expects() {
        // Stored id `C0FFEE-CX%2E7-SR%2D0002` travels as `%252E`/`%252D`.
        assert_eq!(
            segment("C0FFEE-CX%252E7-SR%252D0002").as_deref(),
            Some("C0FFEE-CX%2E7-SR%2D0002")
        );
        assert_eq!(segment("C0FFEE-CX.7-SN1"), None);
        // A single escape decodes to the raw character: not the stored id.
        assert_eq!(segment("C0FFEE-CX%2E7").as_deref(), Some("C0FFEE-CX.7"));
    }

    #[test]
    fn queries_and_projections() {
        let doc = json!({"_id": "a", "_tags": ["lab"], "Device": {"DeviceInfo": {
            "UpTime": {"_value": 5}, "SerialNumber": {"_value": "SN1"}}}});
        assert!(device_match(&doc, &json!({"_tags": "lab"})));
        assert!(device_match(
            &doc,
            &json!({"Device.DeviceInfo.SerialNumber": "SN1"})
        ));
        assert!(device_match(
            &doc,
            &json!({"Device.DeviceInfo.UpTime": "5"})
        ));
        assert!(!device_match(&doc, &json!({"_id": {"$in": ["b"]}})));
        let p = project(&doc, &["Device.DeviceInfo.UpTime".into()]);
        assert_eq!(
            p,
            json!({"_id": "a", "Device": {"DeviceInfo": {"UpTime": {"_value": 5}}}})
        );
    }
}
