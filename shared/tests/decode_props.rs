//! Property tests for `report::decode`: it never panics on hostile input, it
//! gives back exactly what an encoder of each of the four formats wrote, and
//! compression bombs stop at the limits.
//!
//! Case counts come from `PROPTEST_CASES` (proptest's default), 256 otherwise.

use bulkflow_shared::report::{
    self, DecodeError, Decoded, Format, Limits, Param, Report, Request, TimeSource, Value,
};
use chrono::{DateTime, FixedOffset, SecondsFormat};
use flate2::Compression;
use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
use proptest::prelude::*;
use proptest::sample::select;
use std::io::{Read, Write};
use std::sync::OnceLock;

const RECEIVED_MS: i64 = 1_767_225_600_000;

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(b).expect("in-memory write");
    e.finish().expect("in-memory write")
}

fn zlib(b: &[u8]) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::new(), Compression::fast());
    e.write_all(b).expect("in-memory write");
    e.finish().expect("in-memory write")
}

fn raw_deflate(b: &[u8]) -> Vec<u8> {
    let mut e = DeflateEncoder::new(Vec::new(), Compression::fast());
    e.write_all(b).expect("in-memory write");
    e.finish().expect("in-memory write")
}

fn request<'a>(
    body: &'a [u8],
    content_type: Option<&'a str>,
    report_format: Option<&'a str>,
    content_encoding: Option<&'a str>,
) -> Request<'a> {
    Request {
        body,
        content_type,
        report_format,
        content_encoding,
        date: None,
        received_at_ms: RECEIVED_MS,
    }
}

// ---------------------------------------------------------------------------
// Hostile input: no panics, one-line errors, limits honoured.

/// Sample bodies as text (gzip ones inflated), so that mutations hit the syntax.
fn samples() -> &'static [Vec<u8>] {
    static SAMPLES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SAMPLES.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/reports");
        let mut out = Vec::new();
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("testdata/reports exists")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "body"))
            .collect();
        entries.sort();
        for path in entries {
            let bytes = std::fs::read(&path).expect("readable sample");
            if bytes.starts_with(&[0x1f, 0x8b]) {
                let mut text = Vec::new();
                flate2::read::MultiGzDecoder::new(&bytes[..])
                    .read_to_end(&mut text)
                    .expect("sample gzip is valid");
                out.push(text);
            }
            out.push(bytes);
        }
        assert!(!out.is_empty(), "no sample bodies in {dir}");
        out
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(usize),
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    /// Copies a slice of the body over another place (duplicates syntax).
    Splice(usize, usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let junk = prop_oneof![
        prop::collection::vec(any::<u8>(), 1..8),
        select(vec![
            b"{".to_vec(),
            b"}".to_vec(),
            b"[".to_vec(),
            b"]".to_vec(),
            b"\"".to_vec(),
            b",".to_vec(),
            b":".to_vec(),
            b"\n".to_vec(),
            b"\r\n".to_vec(),
            b"\"\"".to_vec(),
            b"{\"a\":{\"b\":[1,{\"c\":null}]}}".to_vec(),
            b"18446744073709551616".to_vec(),
            b"-9223372036854775809".to_vec(),
            b"1e999".to_vec(),
            b"\"CollectionTime\":".to_vec(),
            b"ReportTimestamp".to_vec(),
            b"ParameterName,ParameterValue".to_vec(),
            b"\xef\xbb\xbf".to_vec(),
            b"\xff\xfe".to_vec(),
        ]),
    ];
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), junk).prop_map(|(i, j)| Mutation::Insert(i, j)),
        (any::<usize>(), 1..64usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<usize>(), 1..64usize, any::<usize>())
            .prop_map(|(f, n, t)| Mutation::Splice(f, n, t)),
    ]
}

fn mutate(mut body: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = body.len();
        let at = |i: usize| if len == 0 { 0 } else { i % (len + 1) };
        match m {
            Mutation::Truncate(i) => body.truncate(at(*i)),
            Mutation::Flip(i, b) => {
                if len > 0 {
                    body[i % len] ^= b | 1;
                }
            }
            Mutation::Insert(i, junk) => {
                let i = at(*i);
                body.splice(i..i, junk.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let i = at(*i);
                body.drain(i..(i + n).min(len));
            }
            Mutation::Splice(from, n, to) => {
                let from = at(*from);
                let piece = body[from..(from + n).min(len)].to_vec();
                let to = at(*to);
                body.splice(to..to, piece);
            }
        }
    }
    body
}

fn text_like() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[{}\\[\\]\":,0-9a-zA-Z.\\- \n]{0,200}",
        "(ReportTimestamp|ParameterName|ParameterValue|ParameterType|[a-z.0-9\"]{0,8})([,;\t|](ReportTimestamp|ParameterName|ParameterValue|ParameterType|[a-z.0-9\"]{0,8})){0,5}(\r?\n[0-9a-z,;\t|\" ]{0,40}){0,6}",
    ]
    .prop_map(String::into_bytes)
}

#[derive(Debug, Clone, Copy)]
enum Wrap {
    Plain,
    Gzip,
    Zlib,
    Raw,
}

fn wrap(body: Vec<u8>, how: Wrap) -> Vec<u8> {
    match how {
        Wrap::Plain => body,
        Wrap::Gzip => gzip(&body),
        Wrap::Zlib => zlib(&body),
        Wrap::Raw => raw_deflate(&body),
    }
}

fn hostile_body() -> impl Strategy<Value = Vec<u8>> {
    let source = prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..300),
        3 => (0..samples().len(), prop::collection::vec(mutation(), 0..6))
            .prop_map(|(i, m)| mutate(samples()[i].clone(), &m)),
        2 => text_like(),
    ];
    let how = prop_oneof![
        6 => Just(Wrap::Plain),
        2 => Just(Wrap::Gzip),
        1 => Just(Wrap::Zlib),
        1 => Just(Wrap::Raw),
    ];
    // Compressed bodies are cut too: truncated uploads are common.
    (source, how, prop::option::weighted(0.2, any::<usize>())).prop_map(|(body, how, cut)| {
        let mut out = wrap(body, how);
        if let Some(cut) = cut {
            out.truncate(cut % (out.len() + 1));
        }
        out
    })
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("application/json".to_string())),
        Just(Some("application/json; charset=\"utf-8\"".to_string())),
        Just(Some("text/csv; charset=UTF-8; header=present".to_string())),
        Just(Some("text/plain".to_string())),
        ".{0,20}".prop_map(Some),
    ]
}

fn report_format() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        select(vec![
            "NameValuePair",
            "ObjectHierarchy",
            "ParameterPerRow",
            "ParameterPerColumn",
            "\"ObjectHierarchy\"",
            " parameterperrow ",
            "'NAMEVALUEPAIR'",
            "XML",
            "",
        ])
        .prop_map(|s| Some(s.to_string())),
        ".{0,20}".prop_map(Some),
    ]
}

fn content_encoding() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        select(vec![
            "gzip",
            "x-gzip",
            "GZIP",
            "deflate",
            "identity",
            "none",
            "",
            "gzip, gzip",
            "br",
            "gzip\n",
            "compress",
        ])
        .prop_map(|s| Some(s.to_string())),
        ".{0,16}".prop_map(Some),
    ]
}

fn date() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("Tue, 03 Dec 2024 17:20:05 GMT".to_string())),
        Just(Some("Thu, 01 Jan 1970 00:10:00 GMT".to_string())),
        ".{0,30}".prop_map(Some),
    ]
}

/// The default limits, or tight ones so that every limit path is reached.
fn limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        3 => Just(Limits::default()),
        1 => (1..400usize, 1..4000usize, 1..50usize, 0..2000usize, 0..6usize, 0..20usize, 0..40usize)
            .prop_map(|(body, dec, ratio, floor, depth, params, path)| Limits {
                max_body_bytes: body,
                max_decompressed_bytes: dec,
                max_ratio: ratio,
                ratio_floor_bytes: floor,
                max_depth: depth,
                max_params: params,
                max_path_bytes: path,
            }),
    ]
}

fn check_outcome(
    result: &Result<Decoded, DecodeError>,
    limits: &Limits,
) -> Result<(), TestCaseError> {
    match result {
        Ok(d) => {
            prop_assert!(d.param_count() <= limits.max_params);
            for r in &d.reports {
                for p in &r.params {
                    prop_assert!(p.path.len() <= limits.max_path_bytes, "{:?}", p.path);
                }
            }
        }
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(!msg.contains('\n') && !msg.contains('\r'), "{msg:?}");
            prop_assert!(!msg.is_empty());
            prop_assert!(matches!(e.http_status(), 400 | 413 | 415));
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn hostile_requests_never_panic(
        body in hostile_body(),
        ct in content_type(),
        rf in report_format(),
        ce in content_encoding(),
        date in date(),
        received_at_ms in any::<i64>(),
        limits in limits(),
    ) {
        let req = Request {
            body: &body,
            content_type: ct.as_deref(),
            report_format: rf.as_deref(),
            content_encoding: ce.as_deref(),
            date: date.as_deref(),
            received_at_ms,
        };
        check_outcome(&report::decode(&req, &limits), &limits)?;
    }
}

// ---------------------------------------------------------------------------
// Round trips: reports encoded here in each format decode back exactly.

const SEGMENTS: &[&str] = &[
    "Device",
    "DeviceInfo",
    "UpTime",
    "IP",
    "Interface",
    "Stats",
    "BytesSent",
    "BytesReceived",
    "WiFi",
    "Radio",
    "SSID",
    "DataElements",
    "Network",
    "STA",
    "SignalStrength",
    "Hosts",
    "Host",
    "HostName",
    "NeighboringWiFiDiagnostic",
    "Result",
    "X_ACME_Counter",
    "host",
];

/// A TR-181-like dotted key of 2 to 6 segments, instance numbers included.
fn key() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        3 => select(SEGMENTS).prop_map(str::to_string),
        1 => (1..20u32).prop_map(|n| n.to_string()),
    ];
    (select(SEGMENTS), prop::collection::vec(segment, 1..6)).prop_map(|(first, rest)| {
        let mut k = first.to_string();
        for s in rest {
            k.push('.');
            k.push_str(&s);
        }
        k
    })
}

fn text() -> impl Strategy<Value = String> {
    let c = prop_oneof![
        4 => select(vec![
            ',', '"', '\'', ';', '|', '\t', ' ', '\\', '\n', '\r', 'é', '€', 'ü', '😀', '\u{feff}',
            'a', 'Z', '0', '9', '.', '-',
        ]),
        1 => any::<char>(),
    ];
    prop::collection::vec(c, 0..16).prop_map(|v| v.into_iter().collect())
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::Int),
        (-1000..1000i64).prop_map(Value::Int),
        ((i64::MAX as u64 + 1)..=u64::MAX).prop_map(Value::UInt),
        any::<bool>().prop_map(Value::Bool),
        text().prop_map(Value::Text),
    ]
}

/// How a report time is written.
#[derive(Debug, Clone, Copy)]
enum TimeRepr {
    Seconds,
    Millis,
    /// ISO-8601 with milliseconds and this offset in minutes (0 is written `Z`).
    Iso(i32),
}

#[derive(Debug, Clone)]
struct Stamp {
    secs: i64,
    millis: i64,
    repr: TimeRepr,
    /// JSON only: a numeric time written as a string.
    quoted: bool,
}

impl Stamp {
    fn expected_ms(&self) -> i64 {
        match self.repr {
            TimeRepr::Seconds => self.secs * 1000,
            _ => self.secs * 1000 + self.millis,
        }
    }

    fn text(&self) -> String {
        match self.repr {
            TimeRepr::Seconds => self.secs.to_string(),
            TimeRepr::Millis => (self.secs * 1000 + self.millis).to_string(),
            TimeRepr::Iso(offset_min) => {
                let t = DateTime::from_timestamp_millis(self.expected_ms()).expect("in range");
                let zone = FixedOffset::east_opt(offset_min * 60).expect("valid offset");
                t.with_timezone(&zone)
                    .to_rfc3339_opts(SecondsFormat::Millis, true)
            }
        }
    }

    fn json(&self) -> String {
        match self.repr {
            TimeRepr::Iso(_) => json_string(&self.text()),
            _ if self.quoted => json_string(&self.text()),
            _ => self.text(),
        }
    }
}

/// Strictly increasing whole seconds (2000..2100), so that consecutive CSV
/// ParameterPerRow reports never share a ReportTimestamp and merge.
fn stamps(n: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Stamp>> {
    let repr = prop_oneof![
        Just(TimeRepr::Seconds),
        Just(TimeRepr::Millis),
        Just(TimeRepr::Iso(0)),
        (-12 * 60..14 * 60i32).prop_map(TimeRepr::Iso),
    ];
    (
        946_684_800..3_000_000_000i64,
        prop::collection::vec((1..1_000_000i64, 0..1000i64, repr, any::<bool>()), n),
    )
        .prop_map(|(start, steps)| {
            let mut secs = start;
            steps
                .into_iter()
                .map(|(step, millis, repr, quoted)| {
                    secs += step;
                    Stamp {
                        secs,
                        millis,
                        repr,
                        quoted,
                    }
                })
                .collect()
        })
}

#[derive(Debug, Clone)]
struct Case {
    stamps: Vec<Stamp>,
    reports: Vec<Vec<(String, Value)>>,
}

impl Case {
    fn expected(&self, format: Format, params: impl Fn(usize) -> Vec<Param>) -> Decoded {
        Decoded {
            format,
            reports: self
                .stamps
                .iter()
                .enumerate()
                .map(|(i, s)| Report {
                    time_ms: s.expected_ms(),
                    time_source: TimeSource::Report,
                    params: params(i),
                })
                .collect(),
        }
    }
}

fn params_of(pairs: &[(String, Value)]) -> Vec<Param> {
    pairs
        .iter()
        .map(|(path, value)| Param {
            path: path.clone(),
            value: value.clone(),
        })
        .collect()
}

/// 1 to 4 reports of 1 to 7 parameters; keys may repeat or prefix each other.
fn case() -> impl Strategy<Value = Case> {
    stamps(1..5).prop_flat_map(|stamps| {
        let n = stamps.len();
        (
            Just(stamps),
            prop::collection::vec(prop::collection::vec((key(), value()), 1..8), n),
        )
            .prop_map(|(stamps, reports)| Case { stamps, reports })
    })
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

fn json_scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Text(s) => json_string(s),
    }
}

/// Layout choices for a JSON body.
#[derive(Debug, Clone, Copy)]
struct JsonStyle {
    /// Whitespace between tokens ("" or newline and indent).
    pretty: bool,
    time_last: bool,
    /// A member the decoder must skip before `Report`.
    extra_member: bool,
}

fn json_style() -> impl Strategy<Value = JsonStyle> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(pretty, time_last, extra_member)| {
        JsonStyle {
            pretty,
            time_last,
            extra_member,
        }
    })
}

fn json_envelope(reports: &[String], style: JsonStyle) -> String {
    let (nl, sp) = if style.pretty {
        ("\n  ", " ")
    } else {
        ("", "")
    };
    let extra = if style.extra_member {
        format!("\"Version\":{sp}\"1.0\",{nl}")
    } else {
        String::new()
    };
    format!(
        "{{{nl}{extra}\"Report\":{sp}[{nl}{}{nl}]}}",
        reports.join(&format!(",{nl}"))
    )
}

fn json_object(members: Vec<String>, time: &Stamp, style: JsonStyle) -> String {
    let sp = if style.pretty { " " } else { "" };
    let time = format!("\"CollectionTime\":{sp}{}", time.json());
    let mut all = Vec::with_capacity(members.len() + 1);
    if !style.time_last {
        all.push(time.clone());
    }
    all.extend(members);
    if style.time_last {
        all.push(time);
    }
    format!("{{{}}}", all.join(&format!(",{sp}")))
}

fn encode_nvp(case: &Case, style: JsonStyle) -> String {
    let sp = if style.pretty { " " } else { "" };
    let reports: Vec<String> = case
        .reports
        .iter()
        .zip(&case.stamps)
        .map(|(params, stamp)| {
            let members = params
                .iter()
                .map(|(k, v)| format!("{}:{sp}{}", json_string(k), json_scalar(v)))
                .collect();
            json_object(members, stamp, style)
        })
        .collect();
    json_envelope(&reports, style)
}

/// An ObjectHierarchy tree; children keep first-insertion order.
#[derive(Debug)]
enum Node {
    Leaf(Value),
    Branch(Vec<(String, Node)>),
}

/// Inserts `path` unless it collides with a leaf or branch already there.
fn insert(children: &mut Vec<(String, Node)>, segments: &[&str], value: &Value) {
    let Some((first, rest)) = segments.split_first() else {
        return;
    };
    let existing = children.iter_mut().find(|(name, _)| name == first);
    match (existing, rest.is_empty()) {
        (None, true) => children.push((first.to_string(), Node::Leaf(value.clone()))),
        (None, false) => {
            let mut sub = Vec::new();
            insert(&mut sub, rest, value);
            children.push((first.to_string(), Node::Branch(sub)));
        }
        (Some((_, Node::Branch(sub))), false) => insert(sub, rest, value),
        // A leaf that is also a prefix, or a repeated key: not representable.
        (Some(_), _) => {}
    }
}

fn flatten(children: &[(String, Node)], prefix: &str, out: &mut Vec<Param>) {
    for (name, node) in children {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match node {
            Node::Leaf(v) => out.push(Param {
                path,
                value: v.clone(),
            }),
            Node::Branch(sub) => flatten(sub, &path, out),
        }
    }
}

fn oh_members(children: &[(String, Node)], style: JsonStyle) -> Vec<String> {
    let sp = if style.pretty { " " } else { "" };
    children
        .iter()
        .map(|(name, node)| {
            let v = match node {
                Node::Leaf(v) => json_scalar(v),
                Node::Branch(sub) => format!("{{{}}}", oh_members(sub, style).join(",")),
            };
            format!("{}:{sp}{v}", json_string(name))
        })
        .collect()
}

fn oh_trees(case: &Case) -> Vec<Vec<(String, Node)>> {
    case.reports
        .iter()
        .map(|params| {
            let mut root = Vec::new();
            for (k, v) in params {
                let segments: Vec<&str> = k.split('.').collect();
                insert(&mut root, &segments, v);
            }
            root
        })
        .collect()
}

fn encode_oh(trees: &[Vec<(String, Node)>], case: &Case, style: JsonStyle) -> String {
    let reports: Vec<String> = trees
        .iter()
        .zip(&case.stamps)
        .map(|(tree, stamp)| json_object(oh_members(tree, style), stamp, style))
        .collect();
    json_envelope(&reports, style)
}

/// Layout choices for a CSV body.
#[derive(Debug, Clone)]
struct CsvStyle {
    separator: char,
    crlf: bool,
    trailing_newline: bool,
    /// Quote every field, not only those that need it.
    quote_all: bool,
}

fn csv_style() -> impl Strategy<Value = CsvStyle> {
    (
        select(vec![',', ';', '\t', '|']),
        any::<bool>(),
        any::<bool>(),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(separator, crlf, trailing_newline, quote_all)| CsvStyle {
            separator,
            crlf,
            trailing_newline,
            quote_all,
        })
}

/// RFC 4180 field quoting.
fn csv_field(s: &str, style: &CsvStyle) -> String {
    let needs = s.contains(['"', '\r', '\n', style.separator]);
    if needs || style.quote_all {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_body(rows: &[Vec<String>], style: &CsvStyle) -> String {
    let eol = if style.crlf { "\r\n" } else { "\n" };
    let sep = style.separator.to_string();
    let mut out = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|f| csv_field(f, style))
                .collect::<Vec<_>>()
                .join(&sep)
        })
        .collect::<Vec<_>>()
        .join(eol);
    if style.trailing_newline {
        out.push_str(eol);
    }
    out
}

/// ParameterType and text of a value, as a CPE writes them per row.
fn csv_typed(v: &Value, bool_digits: bool) -> (&'static str, String) {
    match v {
        Value::Int(i) if i32::try_from(*i).is_ok() => ("int", i.to_string()),
        Value::Int(i) => ("long", i.to_string()),
        Value::UInt(u) => ("unsignedLong", u.to_string()),
        Value::Bool(b) if bool_digits => ("boolean", u8::from(*b).to_string()),
        Value::Bool(b) => ("xsd:boolean", b.to_string()),
        Value::Text(s) => ("string", s.clone()),
        Value::Null | Value::Float(_) => unreachable!("not generated"),
    }
}

const PER_ROW_COLUMNS: [&str; 4] = [
    "ReportTimestamp",
    "ParameterName",
    "ParameterValue",
    "ParameterType",
];

fn encode_per_row(case: &Case, columns: &[&str], style: &CsvStyle, bool_digits: bool) -> String {
    let mut rows = vec![columns.iter().map(|c| c.to_string()).collect::<Vec<_>>()];
    for (params, stamp) in case.reports.iter().zip(&case.stamps) {
        for (k, v) in params {
            let (kind, text) = csv_typed(v, bool_digits);
            rows.push(
                columns
                    .iter()
                    .map(|c| match *c {
                        "ReportTimestamp" => stamp.text(),
                        "ParameterName" => k.clone(),
                        "ParameterValue" => text.clone(),
                        _ => kind.to_string(),
                    })
                    .collect(),
            );
        }
    }
    csv_body(&rows, style)
}

/// The text a ParameterPerColumn body carries for a value.
fn plain_text(v: &Value) -> String {
    match v {
        Value::Text(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null | Value::Float(_) => unreachable!("not generated"),
    }
}

/// ParameterPerColumn: one header of keys shared by all rows; each report
/// fills a prefix of the columns (rows may be shorter than the header).
#[derive(Debug, Clone)]
struct ColumnCase {
    keys: Vec<String>,
    stamps: Vec<Stamp>,
    rows: Vec<Vec<Value>>,
}

fn column_case() -> impl Strategy<Value = ColumnCase> {
    (prop::collection::vec(key(), 1..8), stamps(1..5)).prop_flat_map(|(keys, stamps)| {
        let (width, n) = (keys.len(), stamps.len());
        (
            Just(keys),
            Just(stamps),
            prop::collection::vec(prop::collection::vec(value(), 1..=width), n),
        )
            .prop_map(|(keys, stamps, rows)| ColumnCase { keys, stamps, rows })
    })
}

fn encode_per_column(case: &ColumnCase, style: &CsvStyle) -> String {
    let mut rows = vec![
        std::iter::once("ReportTimestamp".to_string())
            .chain(case.keys.iter().cloned())
            .collect::<Vec<_>>(),
    ];
    for (values, stamp) in case.rows.iter().zip(&case.stamps) {
        rows.push(
            std::iter::once(stamp.text())
                .chain(values.iter().map(plain_text))
                .collect(),
        );
    }
    csv_body(&rows, style)
}

/// How a round-trip body is sent: compression and its label.
#[derive(Debug, Clone, Copy)]
enum Transfer {
    Plain(Option<&'static str>),
    Gzip(Option<&'static str>),
    Zlib(Option<&'static str>),
}

fn transfer() -> impl Strategy<Value = Transfer> {
    prop_oneof![
        3 => select(vec![None, Some("identity")]).prop_map(Transfer::Plain),
        // CPEs that label plain bodies as compressed: read as plain.
        1 => select(vec![Some("gzip"), Some("deflate")]).prop_map(Transfer::Plain),
        2 => select(vec![None, Some("gzip"), Some("x-gzip")]).prop_map(Transfer::Gzip),
        1 => select(vec![None, Some("deflate")]).prop_map(Transfer::Zlib),
    ]
}

fn send(body: &str, how: Transfer) -> (Vec<u8>, Option<&'static str>) {
    match how {
        Transfer::Plain(label) => (body.as_bytes().to_vec(), label),
        Transfer::Gzip(label) => (gzip(body.as_bytes()), label),
        Transfer::Zlib(label) => (zlib(body.as_bytes()), label),
    }
}

/// The `BBF-Report-Format` header as a CPE may send it, or none at all.
fn format_header(format: Format) -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(format.as_str().to_string())),
        Just(Some(format!("\"{format}\""))),
        Just(Some(format!(" {} ", format.as_str().to_ascii_lowercase()))),
    ]
}

fn decode_sent(
    body: &str,
    how: Transfer,
    content_type: Option<&str>,
    report_format: Option<&str>,
) -> Result<Decoded, DecodeError> {
    let (bytes, label) = send(body, how);
    report::decode(
        &request(&bytes, content_type, report_format, label),
        &Limits::default(),
    )
}

proptest! {
    #[test]
    fn json_name_value_pair_round_trips(
        case in case(),
        style in json_style(),
        how in transfer(),
        rf in format_header(Format::NameValuePair),
        ct in select(vec![None, Some("application/json"), Some("application/json; charset=UTF-8")]),
    ) {
        let body = encode_nvp(&case, style);
        let got = decode_sent(&body, how, ct, rf.as_deref());
        let want = case.expected(Format::NameValuePair, |i| params_of(&case.reports[i]));
        prop_assert_eq!(got, Ok(want), "body: {}", body);
    }

    #[test]
    fn json_object_hierarchy_round_trips(
        case in case(),
        style in json_style(),
        how in transfer(),
        rf in format_header(Format::ObjectHierarchy),
        ct in select(vec![None, Some("application/json")]),
    ) {
        let trees = oh_trees(&case);
        let body = encode_oh(&trees, &case, style);
        let got = decode_sent(&body, how, ct, rf.as_deref());
        // Every key has two or more segments, so the body nests and the format
        // is recognised without the header too.
        let want = case.expected(Format::ObjectHierarchy, |i| {
            let mut out = Vec::new();
            flatten(&trees[i], "", &mut out);
            out
        });
        prop_assert_eq!(got, Ok(want), "body: {}", body);
    }

    #[test]
    fn csv_parameter_per_row_round_trips(
        case in case(),
        columns in Just(PER_ROW_COLUMNS.to_vec()).prop_shuffle(),
        style in csv_style(),
        bool_digits in any::<bool>(),
        how in transfer(),
        rf in format_header(Format::ParameterPerRow),
        ct in select(vec![None, Some("text/csv; charset=UTF-8; header=present")]),
    ) {
        let body = encode_per_row(&case, &columns, &style, bool_digits);
        let got = decode_sent(&body, how, ct, rf.as_deref());
        let want = case.expected(Format::ParameterPerRow, |i| params_of(&case.reports[i]));
        prop_assert_eq!(got, Ok(want), "body: {:?}", body);
    }

    #[test]
    fn csv_parameter_per_column_round_trips(
        case in column_case(),
        style in csv_style(),
        how in transfer(),
        rf in format_header(Format::ParameterPerColumn),
        ct in select(vec![None, Some("text/csv")]),
    ) {
        let body = encode_per_column(&case, &style);
        let got = decode_sent(&body, how, ct, rf.as_deref());
        let want = Decoded {
            format: Format::ParameterPerColumn,
            reports: case
                .rows
                .iter()
                .zip(&case.stamps)
                .map(|(values, stamp)| Report {
                    time_ms: stamp.expected_ms(),
                    time_source: TimeSource::Report,
                    // The format carries no types: every value is its text.
                    params: case
                        .keys
                        .iter()
                        .zip(values)
                        .map(|(k, v)| Param { path: k.clone(), value: Value::Text(plain_text(v)) })
                        .collect(),
                })
                .collect(),
        };
        prop_assert_eq!(got, Ok(want), "body: {:?}", body);
    }

    /// A plain body reads the same whatever compression it is labelled with.
    #[test]
    fn plain_bodies_ignore_compression_labels(
        body in "[A-Za-z\"{\\[][ -~]{0,30}(\n[ -~]{0,30}){0,3}",
        label in select(vec![Some("gzip"), Some("x-gzip"), Some("deflate"), Some("identity")]),
        rf in report_format(),
    ) {
        let limits = Limits::default();
        let unlabelled = report::decode(&request(body.as_bytes(), None, rf.as_deref(), None), &limits);
        let labelled = report::decode(&request(body.as_bytes(), None, rf.as_deref(), label), &limits);
        prop_assert_eq!(labelled, unlabelled);
    }
}

// ---------------------------------------------------------------------------
// Compression bombs.

/// 100 MiB of zeros in one gzip member, compressed a chunk at a time.
fn zeros_bomb() -> Vec<u8> {
    let chunk = vec![0u8; 1 << 20];
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    for _ in 0..100 {
        e.write_all(&chunk).expect("in-memory write");
    }
    e.finish().expect("in-memory write")
}

fn assert_refused_as_bomb(body: &[u8], label: Option<&str>, limits: &Limits) {
    let err = report::decode(&request(body, None, None, label), limits).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::RatioExceeded { .. } | DecodeError::DecompressedTooLarge { .. }
        ),
        "{err}"
    );
}

#[test]
fn gzip_bomb_is_refused() {
    let bomb = zeros_bomb();
    assert!(bomb.len() < 1 << 20, "bomb is {} bytes", bomb.len());
    for label in [Some("gzip"), None, Some("deflate")] {
        assert_refused_as_bomb(&bomb, label, &Limits::default());
    }
    // With the ratio check out of the way the size cap still holds.
    let no_ratio = Limits {
        max_ratio: usize::MAX,
        ..Limits::default()
    };
    let err = report::decode(&request(&bomb, None, None, Some("gzip")), &no_ratio).unwrap_err();
    assert_eq!(err, DecodeError::DecompressedTooLarge { limit: 32 << 20 });
}

#[test]
fn concatenated_gzip_members_bomb_is_refused() {
    // Many small members: each alone is harmless, together they are 100 MiB.
    let member = gzip(&vec![0u8; 1 << 20]);
    let bomb = member.repeat(100);
    assert_refused_as_bomb(&bomb, Some("gzip"), &Limits::default());
}

#[test]
fn zlib_bomb_is_refused() {
    let bomb = zlib(&vec![0u8; 40 << 20]);
    assert_refused_as_bomb(&bomb, Some("deflate"), &Limits::default());
    assert_refused_as_bomb(&bomb, None, &Limits::default());
}
