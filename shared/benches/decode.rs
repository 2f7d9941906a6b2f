//! Decoder throughput on realistic TR-181 reports generated here: a 100- and a
//! 2,000-parameter report in each of the four formats, plus gzip'd NameValuePair.
//! Two groups measure the same work: `decode_bytes` (bytes as sent) and
//! `decode_params` (parameters).
//!
//! Run: `cargo bench -p bulkflow-shared --bench decode -- --warm-up-time 1 --measurement-time 3`

use bulkflow_shared::report::{self, Limits, Request};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

#[path = "support/reports.rs"]
mod reports;
use reports::*;

struct Case {
    id: BenchmarkId,
    label: String,
    body: Vec<u8>,
    content_type: &'static str,
    format: &'static str,
    encoding: Option<&'static str>,
    params: u64,
}

fn cases() -> Vec<Case> {
    let shapes = [("100", Shape::SMALL), ("2000", Shape::LARGE)];
    let mut out = Vec::new();
    for (size, shape) in shapes {
        let params = report_params(&shape, 0x5eed);
        let n = params.len() as u64;
        let nvp = encode_nvp(&params, COLLECTION_TIME).into_bytes();
        let mut add = |name: &str, body: Vec<u8>, format: &'static str, encoding| {
            let content_type = if format.starts_with("Parameter") {
                "text/csv"
            } else {
                "application/json"
            };
            out.push(Case {
                id: BenchmarkId::new(name, size),
                label: format!("{name}/{size}"),
                body,
                content_type,
                format,
                encoding,
                params: n,
            });
        };
        add("json-nvp", nvp.clone(), "NameValuePair", None);
        add("json-nvp-gzip", gzip(&nvp), "NameValuePair", Some("gzip"));
        add(
            "json-oh",
            encode_oh(&params, COLLECTION_TIME).into_bytes(),
            "ObjectHierarchy",
            None,
        );
        add(
            "csv-per-row",
            encode_per_row(&params, COLLECTION_TIME).into_bytes(),
            "ParameterPerRow",
            None,
        );
        add(
            "csv-per-column",
            encode_per_column(&params, COLLECTION_TIME).into_bytes(),
            "ParameterPerColumn",
            None,
        );
    }
    out
}

fn request(case: &Case) -> Request<'_> {
    Request {
        body: &case.body,
        content_type: Some(case.content_type),
        report_format: Some(case.format),
        content_encoding: case.encoding,
        date: None,
        received_at_ms: 1_767_225_600_000,
    }
}

fn bench(c: &mut Criterion) {
    let cases = cases();
    let limits = Limits::default();
    // A benchmark of a failing decode would measure the wrong thing.
    for case in &cases {
        match report::decode(&request(case), &limits) {
            Ok(d) if d.param_count() as u64 == case.params => {}
            Ok(d) => panic!("{}: {} parameters decoded", case.label, d.param_count()),
            Err(e) => panic!("{}: {e}", case.label),
        }
    }
    for (group_name, by_bytes) in [("decode_bytes", true), ("decode_params", false)] {
        let mut group = c.benchmark_group(group_name);
        for case in &cases {
            group.throughput(if by_bytes {
                Throughput::Bytes(case.body.len() as u64)
            } else {
                Throughput::Elements(case.params)
            });
            let req = request(case);
            group.bench_function(case.id.clone(), |b| {
                b.iter(|| report::decode(black_box(&req), &limits))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
