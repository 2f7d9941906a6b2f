//! Canonical Bulk Data reports and the decoder entry point.
//!
//! One HTTP request carries one or more reports (the current one plus retained
//! failed ones, oldest first), in one of four BBF encodings. [`decode`] turns the
//! request into [`Report`]s that no longer depend on the encoding: a list of
//! `(path, value)` parameters in body order plus the report's time and where that
//! time came from.
//!
//! The steps, each in its own module: [`compress`] (Content-Encoding and magic
//! bytes, with bomb limits), format choice (here), [`json`] or [`csv`] parsing,
//! and [`time`] for CollectionTime / ReportTimestamp / Date handling.

pub mod compress;
pub mod csv;
pub mod json;
pub mod time;

use serde::{Deserialize, Serialize};
use std::fmt;

/// A parameter value as the body typed it.
///
/// Integers are kept exact (never through `f64`): 64-bit counters above 2^53 are
/// common. Integers that fit in `i64` are always `Int`; `UInt` holds only values
/// above `i64::MAX`, so each number has exactly one representation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(String),
}

impl Value {
    /// The canonical form of an unsigned integer.
    pub fn from_u64(v: u64) -> Value {
        match i64::try_from(v) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::UInt(v),
        }
    }
}

impl From<&Value> for serde_json::Value {
    fn from(v: &Value) -> Self {
        match v {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Int(i) => (*i).into(),
            Value::UInt(u) => (*u).into(),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Text(s) => s.clone().into(),
        }
    }
}

/// One reported parameter: its key exactly as the CPE reported it (dotted; a full
/// path, or a profile `Parameter.Name`-derived key such as `host.2`) and its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Param {
    pub path: String,
    pub value: Value,
}

/// Which clock gave a report its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeSource {
    /// The report's own CollectionTime / ReportTimestamp.
    Report,
    /// The HTTP `Date` header (the report had no usable time of its own).
    Date,
    /// The time the request was received (neither of the above was usable).
    Received,
}

impl TimeSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeSource::Report => "report",
            TimeSource::Date => "date",
            TimeSource::Received => "received",
        }
    }
}

/// One decoded report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Milliseconds since the Unix epoch, UTC.
    pub time_ms: i64,
    pub time_source: TimeSource,
    pub params: Vec<Param>,
}

/// The four BBF report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Format {
    NameValuePair,
    ObjectHierarchy,
    ParameterPerRow,
    ParameterPerColumn,
}

impl Format {
    /// Parses a `BBF-Report-Format` token. CPEs send it bare or in double quotes
    /// (the spec example quotes it), in any case, sometimes padded.
    pub fn from_token(token: &str) -> Option<Format> {
        let t = token.trim().trim_matches(|c| c == '"' || c == '\'').trim();
        [
            Format::NameValuePair,
            Format::ObjectHierarchy,
            Format::ParameterPerRow,
            Format::ParameterPerColumn,
        ]
        .into_iter()
        .find(|f| f.as_str().eq_ignore_ascii_case(t))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::NameValuePair => "NameValuePair",
            Format::ObjectHierarchy => "ObjectHierarchy",
            Format::ParameterPerRow => "ParameterPerRow",
            Format::ParameterPerColumn => "ParameterPerColumn",
        }
    }

    fn is_json(self) -> bool {
        matches!(self, Format::NameValuePair | Format::ObjectHierarchy)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bounds on what one request may make the decoder do. Every one is a config
/// value on both binaries; the defaults suit reports of tens of thousands of
/// parameters with retained reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest body accepted as sent (compressed or not). Default 8 MiB.
    pub max_body_bytes: usize,
    /// Largest body after decompression. Default 32 MiB.
    pub max_decompressed_bytes: usize,
    /// Largest decompressed/compressed size ratio, checked once the output has
    /// passed `ratio_floor_bytes` (small bodies compress very well legitimately).
    /// Default 200.
    pub max_ratio: usize,
    /// Output size below which the ratio is not checked. Default 1 MiB.
    pub ratio_floor_bytes: usize,
    /// Deepest JSON nesting. Default 32 (real ObjectHierarchy reports need ~12).
    pub max_depth: usize,
    /// Most parameters in one request, over all its reports. Default 200,000.
    pub max_params: usize,
    /// Longest parameter key in bytes. Default 1,024 (TR-181 paths are < 256).
    pub max_path_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 8 << 20,
            max_decompressed_bytes: 32 << 20,
            max_ratio: 200,
            ratio_floor_bytes: 1 << 20,
            max_depth: 32,
            max_params: 200_000,
            max_path_bytes: 1024,
        }
    }
}

/// Why a request could not be decoded. Each message is one line meant for the
/// CPE's operator (it is sent back in the 4xx body and kept in quarantine).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("body is {size} bytes, over the {limit}-byte limit")]
    BodyTooLarge { size: usize, limit: usize },
    #[error("body decompresses to more than {limit} bytes")]
    DecompressedTooLarge { limit: usize },
    #[error("body decompresses more than {ratio}-fold (compression bomb?)")]
    RatioExceeded { ratio: usize },
    #[error("unsupported Content-Encoding {0:?} (supported: gzip, deflate, identity)")]
    UnsupportedEncoding(String),
    #[error("corrupt {encoding} body: {reason}")]
    Corrupt {
        encoding: &'static str,
        reason: String,
    },
    #[error("body is not valid UTF-8 (first bad byte at offset {offset})")]
    InvalidUtf8 { offset: usize },
    #[error("body is empty")]
    EmptyBody,
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("JSON body has no Report member")]
    NoReportMember,
    #[error("JSON body must be an object with a Report member, found {0}")]
    NotAnEnvelope(&'static str),
    #[error("Report member must be an array or an object, found {0}")]
    BadReportMember(&'static str),
    #[error("each Report element must be an object, found {0}")]
    BadReportElement(&'static str),
    #[error("JSON nesting deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error("more than {limit} parameters in one request")]
    TooManyParams { limit: usize },
    #[error("parameter key longer than {limit} bytes")]
    PathTooLong { limit: usize },
    #[error("invalid CSV: {0}")]
    InvalidCsv(String),
    #[error("CSV row {row} has {fields} fields but the header has {header}")]
    CsvRowTooLong {
        row: u64,
        fields: usize,
        header: usize,
    },
    #[error("CSV {format} header has no {column} column")]
    CsvMissingColumn {
        format: Format,
        column: &'static str,
    },
    #[error("CSV row {row} has no {column} field")]
    CsvShortRow { row: u64, column: &'static str },
}

impl DecodeError {
    /// The HTTP status a receiver answers with: 413 for size limits, 415 for an
    /// unknown encoding (iopsys CPEs react to it by turning compression off), 400
    /// for everything else.
    pub fn http_status(&self) -> u16 {
        match self {
            DecodeError::BodyTooLarge { .. } | DecodeError::DecompressedTooLarge { .. } => 413,
            DecodeError::UnsupportedEncoding(_) => 415,
            _ => 400,
        }
    }
}

/// One Bulk Data request as received: the body and the headers the decoder uses.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub body: &'a [u8],
    pub content_type: Option<&'a str>,
    /// The `BBF-Report-Format` header.
    pub report_format: Option<&'a str>,
    pub content_encoding: Option<&'a str>,
    /// The HTTP `Date` header: the fallback time of reports that carry none.
    pub date: Option<&'a str>,
    /// When the request arrived, ms since the epoch: the last-resort time.
    pub received_at_ms: i64,
}

/// The reports of one request and the format they were read as.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub format: Format,
    pub reports: Vec<Report>,
}

impl Decoded {
    pub fn param_count(&self) -> usize {
        self.reports.iter().map(|r| r.params.len()).sum()
    }
}

/// Decodes one Bulk Data request.
pub fn decode(req: &Request<'_>, limits: &Limits) -> Result<Decoded, DecodeError> {
    if req.body.len() > limits.max_body_bytes {
        return Err(DecodeError::BodyTooLarge {
            size: req.body.len(),
            limit: limits.max_body_bytes,
        });
    }
    let raw = compress::decompress(req.body, req.content_encoding, limits)?;
    let text = std::str::from_utf8(&raw).map_err(|e| DecodeError::InvalidUtf8 {
        offset: e.valid_up_to(),
    })?;
    // A UTF-8 byte order mark is legal in CSV exports and harmless in JSON.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(DecodeError::EmptyBody);
    }
    let fallback = time::Fallback::new(req.date, req.received_at_ms);
    match choose_format(req, text) {
        Family::Json(hint) => json::decode(text, hint, &fallback, limits),
        Family::Csv(hint) => csv::decode(text, hint, &fallback, limits),
    }
}

/// The parser family and, where the request names one, the exact format.
enum Family {
    Json(Option<Format>),
    Csv(Option<Format>),
}

/// Picks the parser: `BBF-Report-Format`, then Content-Type, then the body.
///
/// A body whose first non-blank byte is `{` or `[` is JSON whatever the headers
/// say (no CSV header row starts that way); this keeps a mislabelled JSON body
/// from reaching the CSV parser and failing with a confusing message.
fn choose_format(req: &Request<'_>, text: &str) -> Family {
    let token = req.report_format.and_then(Format::from_token);
    let looks_json = matches!(text.trim_start().as_bytes().first(), Some(b'{' | b'['));
    if looks_json {
        return Family::Json(token.filter(|f| f.is_json()));
    }
    if let Some(f) = token {
        return if f.is_json() {
            Family::Json(Some(f))
        } else {
            Family::Csv(Some(f))
        };
    }
    let ct = req.content_type.unwrap_or("").to_ascii_lowercase();
    if ct.contains("json") {
        Family::Json(None)
    } else {
        Family::Csv(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_tokens_are_dequoted_and_case_insensitive() {
        assert_eq!(
            Format::from_token(" \"ObjectHierarchy\" "),
            Some(Format::ObjectHierarchy)
        );
        assert_eq!(
            Format::from_token("parameterperrow"),
            Some(Format::ParameterPerRow)
        );
        assert_eq!(Format::from_token("XML"), None);
    }

    fn request(body: &[u8]) -> Request<'_> {
        Request {
            body,
            content_type: None,
            report_format: None,
            content_encoding: None,
            date: None,
            received_at_ms: 1_767_225_600_000,
        }
    }

    #[test]
    fn a_byte_order_mark_is_skipped_in_json_and_csv() {
        let json = decode(
            &request(b"\xEF\xBB\xBF{\"Report\":[{\"CollectionTime\":1767225600,\"A.B\":7}]}"),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(json.format, Format::NameValuePair);
        assert_eq!(json.reports[0].time_ms, 1_767_225_600_000);
        assert_eq!(
            json.reports[0].params,
            [Param {
                path: "A.B".into(),
                value: Value::Int(7)
            }]
        );
        let csv = decode(
            &request(b"\xEF\xBB\xBFReportTimestamp,ParameterName,ParameterValue,ParameterType\r\n1767225600,A.B,7,int\r\n"),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(csv.format, Format::ParameterPerRow);
        assert_eq!(
            csv.reports[0].params,
            [Param {
                path: "A.B".into(),
                value: Value::Int(7)
            }]
        );
    }

    #[test]
    fn invalid_utf8_is_refused_with_its_offset() {
        let err = decode(
            &request(b"{\"Report\":[{\"A\":\"\xC3\x28\"}]}"),
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(err, DecodeError::InvalidUtf8 { offset: 17 });
        assert_eq!(err.http_status(), 400);
    }

    #[test]
    fn unsigned_values_have_one_representation() {
        assert_eq!(Value::from_u64(5), Value::Int(5));
        assert_eq!(Value::from_u64(u64::MAX), Value::UInt(u64::MAX));
    }

    #[test]
    fn status_codes_follow_the_error_kind() {
        assert_eq!(
            DecodeError::UnsupportedEncoding("br".into()).http_status(),
            415
        );
        assert_eq!(
            DecodeError::BodyTooLarge { size: 2, limit: 1 }.http_status(),
            413
        );
        assert_eq!(DecodeError::NoReportMember.http_status(), 400);
    }
}
