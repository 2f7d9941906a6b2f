//! One Bulk Data request in, identified reports or a rejection out.
//!
//! This is the HTTP-independent half of a Bulk Data receiver, shared by the
//! edge and central's direct `/bulkdata` so both answer CPEs identically:
//! method, Basic authentication, decoding and device identity. The caller owns
//! the socket, the body size cap while reading, and storage; it answers `200`
//! only after storing [`Accepted`] durably (never 201/202: iopsys CPEs count
//! anything but 200/204 as a failure), or the [`Rejection`]'s status and
//! one-line reason.

use crate::config::{BasicAuthConfig, ReceiveConfig};
use crate::identity::{self, DeviceIdentity};
use crate::report::{self, Format, Report, Request};
use http::{HeaderMap, Method, StatusCode, Uri, header};

/// What a request delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub device: DeviceIdentity,
    pub format: Format,
    /// Possibly empty (an empty `Report` array is valid: answer 200, store nothing).
    pub reports: Vec<Report>,
}

/// Why a request is refused, in the terms a metric label uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectKind {
    Method,
    Unauthorized,
    TooLarge,
    Encoding,
    Undecodable,
    Unidentified,
    /// Per-device credentials used to report for another device.
    Forbidden,
}

impl RejectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::Method => "method",
            RejectKind::Unauthorized => "unauthorized",
            RejectKind::TooLarge => "too_large",
            RejectKind::Encoding => "encoding",
            RejectKind::Undecodable => "undecodable",
            RejectKind::Unidentified => "unidentified",
            RejectKind::Forbidden => "forbidden",
        }
    }

    /// Kinds whose raw request is worth keeping for an operator to look at:
    /// the CPE sent something we could not make sense of.
    pub fn quarantined(self) -> bool {
        matches!(self, RejectKind::Undecodable | RejectKind::Unidentified)
    }
}

/// A refusal: the status to answer, a one-line reason for the body, and for a
/// 401 the `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub status: StatusCode,
    pub kind: RejectKind,
    pub reason: String,
    pub challenge: Option<String>,
}

impl Rejection {
    fn new(status: StatusCode, kind: RejectKind, reason: impl Into<String>) -> Self {
        Rejection {
            status,
            kind,
            reason: reason.into(),
            challenge: None,
        }
    }
}

/// The checks that need only the request head: method and credentials. Run
/// them before reading the body, so a CPE that sent `Expect: 100-continue`
/// gets its 401 without uploading the report first. Returns the Basic user
/// name, if the request carried one.
pub fn check_head(
    method: &Method,
    headers: &HeaderMap,
    auth: &BasicAuthConfig,
) -> Result<Option<String>, Rejection> {
    if method != Method::POST && method != Method::PUT {
        return Err(Rejection::new(
            StatusCode::METHOD_NOT_ALLOWED,
            RejectKind::Method,
            "Bulk Data reports are sent with POST or PUT",
        ));
    }
    let credentials = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_basic);
    if !auth.enabled() {
        return Ok(credentials.map(|(user, _)| user));
    }
    match credentials {
        Some((user, password)) if credentials_match(auth, &user, &password) => Ok(Some(user)),
        found => {
            let mut r = Rejection::new(
                StatusCode::UNAUTHORIZED,
                RejectKind::Unauthorized,
                if found.is_some() {
                    "wrong user name or password"
                } else {
                    "HTTP Basic credentials required"
                },
            );
            r.challenge = Some(format!(
                "Basic realm=\"{}\", charset=\"UTF-8\"",
                auth.realm().replace('"', "")
            ));
            Err(r)
        }
    }
}

fn credentials_match(auth: &BasicAuthConfig, user: &str, password: &str) -> bool {
    let shared = match (&auth.user, &auth.password) {
        (Some(u), p) => {
            constant_time_eq(u.as_bytes(), user.as_bytes())
                & constant_time_eq(p.as_deref().unwrap_or("").as_bytes(), password.as_bytes())
        }
        _ => false,
    };
    let device = auth
        .devices
        .get(user)
        .is_some_and(|p| constant_time_eq(p.as_bytes(), password.as_bytes()));
    shared | device
}

/// Compares without stopping at the first difference, so response timing does
/// not reveal how much of a password was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    diff == 0
}

/// Parses `Authorization: Basic base64(user:password)` (RFC 7617). The scheme
/// is case-insensitive; the credentials must be UTF-8 with a `:`.
pub fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64_decode(rest.trim())?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Standard base64 with optional padding; `None` on any other character.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Decodes a request whose head passed [`check_head`] and identifies its sender.
pub fn receive(
    uri: &Uri,
    headers: &HeaderMap,
    basic_user: Option<&str>,
    body: &[u8],
    received_at_ms: i64,
    config: &ReceiveConfig,
) -> Result<Accepted, Rejection> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let request = Request {
        body,
        content_type: text("content-type"),
        report_format: text("bbf-report-format"),
        content_encoding: text("content-encoding"),
        date: text("date"),
        received_at_ms,
    };
    let decoded = report::decode(&request, &config.limits).map_err(|e| {
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
        let kind = match status.as_u16() {
            413 => RejectKind::TooLarge,
            415 => RejectKind::Encoding,
            _ => RejectKind::Undecodable,
        };
        Rejection::new(status, kind, e.to_string())
    })?;
    // A user name every CPE shares says nothing about which CPE this is; only
    // per-device credentials identify.
    let basic_user = basic_user.filter(|u| config.auth.user.as_deref() != Some(*u));
    let device = identity::identify(uri.query(), basic_user, &decoded.reports, &config.identity)
        .ok_or_else(|| {
            Rejection::new(
                StatusCode::BAD_REQUEST,
                RejectKind::Unidentified,
                "cannot identify the device: no oui/sn (or device) query parameters, \
                 no Basic user, no identifying parameter in the report",
            )
        })?;
    // Per-device credentials speak for that device only: without this, any
    // one CPE's password would let it report as every other CPE (the query
    // string is the CPE's to choose). The user name must be the device's id
    // or its serial number, as Bulk Data profiles are usually provisioned.
    if let Some(user) = basic_user.filter(|u| config.auth.devices.contains_key(*u))
        && !speaks_for(user, &device)
    {
        return Err(Rejection::new(
            StatusCode::FORBIDDEN,
            RejectKind::Forbidden,
            format!(
                "the credentials of {user:?} cannot report for device {:?}",
                device.id
            ),
        ));
    }
    Ok(Accepted {
        device,
        format: decoded.format,
        reports: decoded.reports,
    })
}

/// Whether per-device user `user` names `device`: its id (GenieACS-escaped or
/// not) or its serial number.
fn speaks_for(user: &str, device: &DeviceIdentity) -> bool {
    if device.id == user || device.serial.as_deref() == Some(user) {
        return true;
    }
    match (&device.oui, &device.serial) {
        (Some(oui), Some(sn)) => {
            let pc = device.product_class.as_deref().unwrap_or("");
            user == format!("{oui}-{pc}-{sn}") || (pc.is_empty() && user == format!("{oui}-{sn}"))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn auth() -> BasicAuthConfig {
        BasicAuthConfig {
            user: Some("cpe".into()),
            password: Some("s3cret".into()),
            devices: [("router-9".to_string(), "pw9".to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn basic_header_parsing() {
        // "Aladdin:open sesame" from RFC 7617.
        assert_eq!(
            parse_basic("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
            Some(("Aladdin".into(), "open sesame".into()))
        );
        assert_eq!(
            parse_basic("basic QWxhZGRpbjpvcGVuIHNlc2FtZQ"),
            Some(("Aladdin".into(), "open sesame".into()))
        );
        assert_eq!(parse_basic("Bearer abc"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
        assert_eq!(parse_basic("Basic bm9jb2xvbg=="), None); // "nocolon"
    }

    #[test]
    fn auth_shared_and_per_device() {
        let post = Method::POST;
        // cpe:s3cret, router-9:pw9, cpe:wrong
        let ok = headers(&[("authorization", "Basic Y3BlOnMzY3JldA==")]);
        assert_eq!(
            check_head(&post, &ok, &auth()).unwrap().as_deref(),
            Some("cpe")
        );
        let dev = headers(&[("authorization", "Basic cm91dGVyLTk6cHc5")]);
        assert_eq!(
            check_head(&post, &dev, &auth()).unwrap().as_deref(),
            Some("router-9")
        );
        let bad = headers(&[("authorization", "Basic Y3BlOndyb25n")]);
        let r = check_head(&post, &bad, &auth()).unwrap_err();
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.challenge.as_deref(),
            Some("Basic realm=\"bulkflow\", charset=\"UTF-8\"")
        );
        let none = check_head(&post, &HeaderMap::new(), &auth()).unwrap_err();
        assert_eq!(none.reason, "HTTP Basic credentials required");
        assert_eq!(
            check_head(&Method::GET, &ok, &auth()).unwrap_err().status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        // Without configured credentials a Basic user is still read (identity).
        assert_eq!(
            check_head(&post, &dev, &BasicAuthConfig::default()).unwrap(),
            Some("router-9".into())
        );
    }

    #[test]
    fn decode_and_identity_rejections() {
        let cfg = ReceiveConfig::default();
        let uri: Uri = "/bulkdata?oui=0A1B2C&sn=SN1".parse().unwrap();
        let h = headers(&[("content-type", "application/json")]);
        let body = br#"{"Report":[{"CollectionTime":1733246400,"Device.DeviceInfo.UpTime":5}]}"#;
        let a = receive(&uri, &h, None, body, 0, &cfg).unwrap();
        assert_eq!(a.device.id, "0A1B2C-SN1");
        assert_eq!(a.reports.len(), 1);

        let r = receive(&"/bulkdata".parse().unwrap(), &h, None, body, 0, &cfg).unwrap_err();
        assert_eq!(
            (r.status, r.kind),
            (StatusCode::BAD_REQUEST, RejectKind::Unidentified)
        );
        let r = receive(&uri, &h, None, b"{\"Report\":[", 0, &cfg).unwrap_err();
        assert_eq!(
            (r.status, r.kind),
            (StatusCode::BAD_REQUEST, RejectKind::Undecodable)
        );
        let br = headers(&[("content-encoding", "br")]);
        let r = receive(&uri, &br, None, body, 0, &cfg).unwrap_err();
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let small = ReceiveConfig {
            limits: report::Limits {
                max_body_bytes: 10,
                ..Default::default()
            },
            ..Default::default()
        };
        let r = receive(&uri, &h, None, body, 0, &small).unwrap_err();
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn a_shared_basic_user_does_not_identify_a_device() {
        let cfg = ReceiveConfig {
            auth: auth(),
            ..Default::default()
        };
        let h = headers(&[("content-type", "application/json")]);
        let body = br#"{"Report":[{"Device.DeviceInfo.UpTime":5}]}"#;
        let bare: Uri = "/bulkdata".parse().unwrap();
        let r = receive(&bare, &h, Some("cpe"), body, 0, &cfg).unwrap_err();
        assert_eq!(r.kind, RejectKind::Unidentified);
        let a = receive(&bare, &h, Some("router-9"), body, 0, &cfg).unwrap();
        assert_eq!(a.device.id, "router-9");
    }

    #[test]
    fn per_device_credentials_report_only_for_their_device() {
        let mut auth = auth();
        auth.devices.insert("SN0042".into(), "pw42".into());
        let cfg = ReceiveConfig {
            auth,
            ..Default::default()
        };
        let h = headers(&[("content-type", "application/json")]);
        let body = br#"{"Report":[{"Device.DeviceInfo.UpTime":5}]}"#;
        let own: Uri = "/bulkdata?oui=0A1B2C&pc=R&sn=SN0042".parse().unwrap();
        let a = receive(&own, &h, Some("SN0042"), body, 0, &cfg).unwrap();
        assert_eq!(a.device.id, "0A1B2C-R-SN0042");
        // The GenieACS id as the user name, unescaped as a CPE would send it.
        let mut cfg = cfg;
        cfg.auth
            .devices
            .insert("0A1B2C-USP Agent-SN7".into(), "pw7".into());
        let usp: Uri = "/bulkdata?oui=0A1B2C&pc=USP%20Agent&sn=SN7"
            .parse()
            .unwrap();
        let a = receive(&usp, &h, Some("0A1B2C-USP Agent-SN7"), body, 0, &cfg).unwrap();
        assert_eq!(a.device.id, "0A1B2C-USP%20Agent-SN7");
        // router-9's password used for another device.
        let other: Uri = "/bulkdata?oui=0A1B2C&pc=R&sn=OTHER".parse().unwrap();
        let r = receive(&other, &h, Some("router-9"), body, 0, &cfg).unwrap_err();
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.kind, RejectKind::Forbidden);
        assert_eq!(
            r.reason,
            "the credentials of \"router-9\" cannot report for device \"0A1B2C-R-OTHER\""
        );
        // The shared user reports for any device.
        let a = receive(&other, &h, Some("cpe"), body, 0, &cfg).unwrap();
        assert_eq!(a.device.id, "0A1B2C-R-OTHER");
    }
}
