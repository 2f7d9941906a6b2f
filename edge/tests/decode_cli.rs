//! The `decode` command against every sample request in `testdata/reports`:
//! `.expected.ndjson` cases must print exactly those parameters, `.error` cases
//! must be refused with exit 2 and a one-line reason.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const RECEIVED_AT: &str = "1767225600";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/reports")
}

/// Maps the headers of a `.http` file to `decode` flags.
fn flags_from_http(http: &str) -> Vec<String> {
    let mut flags = Vec::new();
    for line in http.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let flag = match name.trim().to_ascii_lowercase().as_str() {
            "content-type" => "--content-type",
            "bbf-report-format" => "--report-format",
            "content-encoding" => "--content-encoding",
            "date" => "--date",
            _ => continue,
        };
        flags.push(flag.to_string());
        flags.push(value.trim().to_string());
    }
    flags
}

fn decode(name: &str, extra: &[&str]) -> Output {
    let dir = fixtures();
    let http = std::fs::read_to_string(dir.join(format!("{name}.http"))).unwrap();
    Command::new(env!("CARGO_BIN_EXE_bulkflow-edge"))
        .arg("decode")
        .arg(dir.join(format!("{name}.body")))
        .args(flags_from_http(&http))
        .args(["--received-at", RECEIVED_AT])
        .args(extra)
        .output()
        .unwrap()
}

fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}")))
        .collect()
}

fn names_with(ext: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(ext).map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

#[test]
fn every_expected_fixture_decodes_exactly() {
    let names = names_with(".expected.ndjson");
    assert_eq!(names.len(), 7, "fixture set changed: {names:?}");
    for name in names {
        let out = decode(&name, &[]);
        assert!(
            out.status.success(),
            "{name}: exit {:?}, stderr {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let expected =
            std::fs::read_to_string(fixtures().join(format!("{name}.expected.ndjson"))).unwrap();
        // Byte for byte, so operators can `diff` a CPE's decoding against them.
        assert_eq!(
            std::str::from_utf8(&out.stdout).unwrap(),
            expected,
            "{name}: output differs from the expected file"
        );
        let expected = parse_lines(&expected);
        let actual = parse_lines(std::str::from_utf8(&out.stdout).unwrap());
        assert_eq!(actual.len(), expected.len(), "{name}: parameter count");
        for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
            assert_eq!(a, e, "{name}: line {}", i + 1);
        }
    }
}

#[test]
fn every_error_fixture_is_refused_with_a_reason() {
    let names = names_with(".error");
    assert_eq!(names.len(), 2, "fixture set changed: {names:?}");
    for name in names {
        let out = decode(&name, &[]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        assert!(out.stdout.is_empty(), "{name}: printed parameters");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.starts_with("error: "), "{name}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{name}: {stderr}");
    }
}

#[test]
fn error_reasons_name_the_problem() {
    let out = decode("bad-no-report-member", &[]);
    assert_eq!(
        String::from_utf8(out.stderr).unwrap().trim_end(),
        "error: JSON body has no Report member"
    );
    let out = decode("bad-truncated-json", &[]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("error: invalid JSON: EOF while parsing"),
        "{stderr}"
    );
}

#[test]
fn output_keys_follow_the_documented_order() {
    let out = decode("nvp-no-timestamp-date-header", &[]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "{\"report\": 0, \"time\": 1733299200, \"time_source\": \"date\", \"path\": \"Device.DeviceInfo.UpTime\", \"value\": 300}\n"
    );
}

#[test]
fn millisecond_times_print_with_a_fraction() {
    let out = Command::new(env!("CARGO_BIN_EXE_bulkflow-edge"))
        .args(["decode", "-", "--received-at", RECEIVED_AT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(br#"{"Report":[{"CollectionTime":1733246400250,"a":1}]}"#)?;
            child.wait_with_output()
        })
        .unwrap();
    let lines = parse_lines(std::str::from_utf8(&out.stdout).unwrap());
    assert_eq!(lines[0]["time"], serde_json::json!(1733246400.25));
}

#[test]
fn missing_file_is_an_io_error_not_a_decode_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_bulkflow-edge"))
        .args(["decode", "/nonexistent/body"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
