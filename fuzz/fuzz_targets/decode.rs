//! Fuzzes `report::decode`. The first four input bytes pick the request's
//! headers (and tight limits), the rest is the body, so one corpus entry is one
//! whole request and sample bodies seed it with a four-byte prefix.

#![no_main]

use bulkflow_shared::report::{self, Limits, Request};
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: [Option<&str>; 5] = [
    None,
    Some("application/json"),
    Some("application/json; charset=\"utf-8\""),
    Some("text/csv; charset=UTF-8; header=present"),
    Some("text/plain"),
];
const REPORT_FORMATS: [Option<&str>; 8] = [
    None,
    Some("NameValuePair"),
    Some("ObjectHierarchy"),
    Some("ParameterPerRow"),
    Some("ParameterPerColumn"),
    Some("\"objecthierarchy\""),
    Some(" 'ParameterPerRow' "),
    Some("XML"),
];
const CONTENT_ENCODINGS: [Option<&str>; 8] = [
    None,
    Some("gzip"),
    Some("deflate"),
    Some("identity"),
    Some("x-gzip"),
    Some("GZIP "),
    Some("br"),
    Some("gzip, deflate"),
];
const DATES: [Option<&str>; 4] = [
    None,
    Some("Tue, 03 Dec 2024 17:20:05 GMT"),
    Some("Thu, 01 Jan 1970 00:10:00 GMT"),
    Some("Tue Dec  3 17:20:05 2024"),
];

fn pick<T: Copy>(table: &[T], byte: u8) -> T {
    table[usize::from(byte) % table.len()]
}

fuzz_target!(|data: &[u8]| {
    let [ct, rf, ce, flags, body @ ..] = data else {
        return;
    };
    let req = Request {
        body,
        content_type: pick(&CONTENT_TYPES, *ct),
        report_format: pick(&REPORT_FORMATS, *rf),
        content_encoding: pick(&CONTENT_ENCODINGS, *ce),
        date: pick(&DATES, *flags),
        received_at_ms: 1_767_225_600_000,
    };
    // The high bit selects small limits, so that every limit is reached often.
    let limits = if flags & 0x80 != 0 {
        Limits {
            max_body_bytes: 4096,
            max_decompressed_bytes: 8192,
            max_ratio: 4,
            ratio_floor_bytes: 512,
            max_depth: 3,
            max_params: 8,
            max_path_bytes: 24,
        }
    } else {
        Limits::default()
    };
    match report::decode(&req, &limits) {
        Ok(decoded) => {
            assert!(decoded.param_count() <= limits.max_params);
            for p in decoded.reports.iter().flat_map(|r| &r.params) {
                assert!(p.path.len() <= limits.max_path_bytes);
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains(['\n', '\r']), "multi-line error: {msg:?}");
        }
    }
});
