//! `bulkflow-edge decode`: runs the shared decoder on a file so operators can see
//! exactly what bulkflow makes of what a CPE sends.
//!
//! Output contract (tooling depends on it): one JSON object per parameter, in
//! body order, `{"report": N, "time": T, "time_source": S, "path": P, "value": V}` with T
//! in Unix seconds (a fraction only when the time has milliseconds). Exit 0 on
//! success; on undecodable input `error: <reason>` on stderr and exit 2.

use bulkflow_shared::report::{self, Limits, Request};
use serde::Serialize;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(clap::Args)]
pub struct Args {
    /// The request body as sent (`-` reads standard input).
    file: PathBuf,
    /// The Content-Type header.
    #[arg(long)]
    content_type: Option<String>,
    /// The BBF-Report-Format header.
    #[arg(long)]
    report_format: Option<String>,
    /// The Content-Encoding header.
    #[arg(long)]
    content_encoding: Option<String>,
    /// The HTTP Date header.
    #[arg(long)]
    date: Option<String>,
    /// Time of receipt in Unix seconds (default: now).
    #[arg(long)]
    received_at: Option<i64>,
}

pub fn run(args: &Args) -> ExitCode {
    let body = match read_body(args) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", args.file.display());
            return ExitCode::from(1);
        }
    };
    let received_at_ms = match args.received_at {
        Some(s) => s.saturating_mul(1000),
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
    };
    let request = Request {
        body: &body,
        content_type: args.content_type.as_deref(),
        report_format: args.report_format.as_deref(),
        content_encoding: args.content_encoding.as_deref(),
        date: args.date.as_deref(),
        received_at_ms,
    };
    let decoded = match report::decode(&request, &Limits::default()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match print(&decoded, &mut BufWriter::new(io::stdout().lock())) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`| head`) is not an error worth a message.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: writing output: {e}");
            ExitCode::from(1)
        }
    }
}

fn read_body(args: &Args) -> io::Result<Vec<u8>> {
    if args.file.as_os_str() == "-" {
        let mut body = Vec::new();
        io::stdin().lock().read_to_end(&mut body)?;
        Ok(body)
    } else {
        std::fs::read(&args.file)
    }
}

/// Unix seconds as a JSON number: an integer unless there are milliseconds.
pub fn json_time(time_ms: i64) -> serde_json::Value {
    if time_ms % 1000 == 0 {
        (time_ms / 1000).into()
    } else {
        (time_ms as f64 / 1000.0).into()
    }
}

/// One line of JSON with a space after `,` and `:` (`{"report": 0, "time": ...}`),
/// the layout of the sample files' expected output (Python's `json.dumps`), so
/// a CPE's decoding can be compared with them by `diff`.
struct Spaced;

impl serde_json::ser::Formatter for Spaced {
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}

/// One output line; a struct so the keys keep the documented order.
#[derive(serde::Serialize)]
struct Line<'a> {
    report: usize,
    time: &'a serde_json::Value,
    time_source: &'static str,
    path: &'a str,
    value: serde_json::Value,
}

fn print(decoded: &report::Decoded, out: &mut impl Write) -> io::Result<()> {
    for (index, r) in decoded.reports.iter().enumerate() {
        let time = json_time(r.time_ms);
        for p in &r.params {
            let line = Line {
                report: index,
                time: &time,
                time_source: r.time_source.as_str(),
                path: &p.path,
                value: serde_json::Value::from(&p.value),
            };
            let mut ser = serde_json::Serializer::with_formatter(&mut *out, Spaced);
            line.serialize(&mut ser)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()
}
