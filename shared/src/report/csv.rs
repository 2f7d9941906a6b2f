//! CSV reports: ParameterPerRow and ParameterPerColumn (TR-069 Annex N / TR-369
//! A.3.4), read with the `csv` crate (RFC 4180 quoting, CRLF or LF).
//!
//! The field separator is configurable on the CPE (`CSVEncoding.FieldSeparator`,
//! default `,`), so it is read off the header row: the first of `,` `;` `\t` `|`
//! that appears in it outside quotes.
//!
//! ParameterPerRow: one parameter per row, typed by the `ParameterType` column;
//! consecutive rows with the same `ReportTimestamp` form one report (retained
//! reports follow the current one under the single header). ParameterPerColumn:
//! one report per data row, one column per key, all values text (the format
//! carries no types). A row may be shorter than the header (keys that come and go
//! between retained reports) but never longer.

use super::time::{self, Fallback};
use super::{DecodeError, Decoded, Format, Limits, Param, Report, Value};

/// Decodes a CSV Bulk Data body. Without a `hint`, a header with
/// `ParameterName` and `ParameterValue` columns means ParameterPerRow.
pub fn decode(
    text: &str,
    hint: Option<Format>,
    fallback: &Fallback,
    limits: &Limits,
) -> Result<Decoded, DecodeError> {
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(separator(text))
        .from_reader(text.as_bytes());
    let mut header = ::csv::StringRecord::new();
    if !reader.read_record(&mut header).map_err(csv_error)? {
        return Err(DecodeError::EmptyBody);
    }
    let columns: Vec<&str> = header.iter().map(str::trim).collect();
    let per_row = match hint {
        Some(f) => f == Format::ParameterPerRow,
        None => {
            find(&columns, "ParameterName").is_some() && find(&columns, "ParameterValue").is_some()
        }
    };
    let mut out = Builder {
        reports: Vec::new(),
        params: 0,
        fallback,
        limits,
    };
    if per_row {
        per_row_reports(&mut reader, &columns, &mut out)?;
    } else {
        per_column_reports(&mut reader, &columns, &mut out)?;
    }
    Ok(Decoded {
        format: if per_row {
            Format::ParameterPerRow
        } else {
            Format::ParameterPerColumn
        },
        reports: out.reports,
    })
}

fn csv_error(e: ::csv::Error) -> DecodeError {
    DecodeError::InvalidCsv(e.to_string())
}

fn find(columns: &[&str], name: &str) -> Option<usize> {
    columns.iter().position(|c| c.eq_ignore_ascii_case(name))
}

/// The separator used by the header row.
fn separator(text: &str) -> u8 {
    let mut quoted = false;
    for b in text.bytes() {
        match b {
            b'"' => quoted = !quoted,
            b'\n' | b'\r' if !quoted => break,
            b',' | b';' | b'\t' | b'|' if !quoted => return b,
            _ => {}
        }
    }
    b','
}

/// Collects reports while enforcing the parameter limit.
struct Builder<'a> {
    reports: Vec<Report>,
    params: usize,
    fallback: &'a Fallback,
    limits: &'a Limits,
}

impl Builder<'_> {
    fn start(&mut self, timestamp: Option<&str>) {
        let (time_ms, time_source) = self.fallback.resolve(timestamp.and_then(time::from_text));
        self.reports.push(Report {
            time_ms,
            time_source,
            params: Vec::new(),
        });
    }

    fn push(&mut self, path: &str, value: Value) -> Result<(), DecodeError> {
        if self.params >= self.limits.max_params {
            return Err(DecodeError::TooManyParams {
                limit: self.limits.max_params,
            });
        }
        if path.len() > self.limits.max_path_bytes {
            return Err(DecodeError::PathTooLong {
                limit: self.limits.max_path_bytes,
            });
        }
        self.params += 1;
        if let Some(r) = self.reports.last_mut() {
            r.params.push(Param {
                path: path.to_owned(),
                value,
            });
        }
        Ok(())
    }
}

fn check_width(record: &::csv::StringRecord, header: usize) -> Result<u64, DecodeError> {
    // Rows are numbered as a person counts lines: the header is row 1.
    let row = record.position().map_or(0, |p| p.record() + 1);
    if record.len() > header {
        return Err(DecodeError::CsvRowTooLong {
            row,
            fields: record.len(),
            header,
        });
    }
    Ok(row)
}

fn per_row_reports(
    reader: &mut ::csv::Reader<&[u8]>,
    columns: &[&str],
    out: &mut Builder<'_>,
) -> Result<(), DecodeError> {
    let missing = |column| DecodeError::CsvMissingColumn {
        format: Format::ParameterPerRow,
        column,
    };
    let name_col = find(columns, "ParameterName").ok_or_else(|| missing("ParameterName"))?;
    let value_col = find(columns, "ParameterValue").ok_or_else(|| missing("ParameterValue"))?;
    let type_col = find(columns, "ParameterType");
    let time_col = find(columns, "ReportTimestamp");
    let mut record = ::csv::StringRecord::new();
    let mut current_time: Option<String> = None;
    while reader.read_record(&mut record).map_err(csv_error)? {
        let row = check_width(&record, columns.len())?;
        let field = |i: usize, column| {
            record
                .get(i)
                .ok_or(DecodeError::CsvShortRow { row, column })
        };
        let name = field(name_col, "ParameterName")?;
        let value = field(value_col, "ParameterValue")?;
        let kind = type_col.and_then(|i| record.get(i)).unwrap_or("");
        let stamp = time_col.and_then(|i| record.get(i));
        if out.reports.is_empty() || stamp != current_time.as_deref() {
            out.start(stamp);
            current_time = stamp.map(str::to_owned);
        }
        out.push(name.trim(), typed(value, kind))?;
    }
    Ok(())
}

fn per_column_reports(
    reader: &mut ::csv::Reader<&[u8]>,
    columns: &[&str],
    out: &mut Builder<'_>,
) -> Result<(), DecodeError> {
    let time_col = find(columns, "ReportTimestamp");
    let mut record = ::csv::StringRecord::new();
    while reader.read_record(&mut record).map_err(csv_error)? {
        check_width(&record, columns.len())?;
        out.start(time_col.and_then(|i| record.get(i)));
        for (i, value) in record.iter().enumerate() {
            if Some(i) != time_col {
                out.push(columns[i], Value::Text(value.to_owned()))?;
            }
        }
    }
    Ok(())
}

/// Types a ParameterPerRow value by its `ParameterType` (TR-106 type names, with
/// or without `xsd:`). A value that does not parse as its type is kept as text
/// rather than lost (iopsys' `atoi` garbles 64-bit counters, for one).
fn typed(value: &str, kind: &str) -> Value {
    let kind = kind.trim();
    let kind = kind.strip_prefix("xsd:").unwrap_or(kind);
    let v = value.trim();
    let parsed = if kind.eq_ignore_ascii_case("int") || kind.eq_ignore_ascii_case("long") {
        v.parse::<i64>().ok().map(Value::Int)
    } else if kind.eq_ignore_ascii_case("unsignedInt") || kind.eq_ignore_ascii_case("unsignedLong")
    {
        v.parse::<u64>().ok().map(Value::from_u64)
    } else if kind.eq_ignore_ascii_case("boolean") {
        match v {
            "1" => Some(Value::Bool(true)),
            "0" => Some(Value::Bool(false)),
            _ if v.eq_ignore_ascii_case("true") => Some(Value::Bool(true)),
            _ if v.eq_ignore_ascii_case("false") => Some(Value::Bool(false)),
            _ => None,
        }
    } else {
        None
    };
    parsed.unwrap_or_else(|| Value::Text(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::TimeSource;

    const RECEIVED: i64 = 1_767_225_600_000;

    fn run(text: &str, hint: Option<Format>) -> Result<Decoded, DecodeError> {
        decode(
            text,
            hint,
            &Fallback::new(None, RECEIVED),
            &Limits::default(),
        )
    }

    #[test]
    fn per_row_types_and_groups_by_timestamp() {
        let text = "ReportTimestamp,ParameterName,ParameterValue,ParameterType\r\n\
                    1733246400,a,-3,int\r\n1733246400,b,18446744073709551615,unsignedLong\r\n\
                    1733246400,c,\"x, \"\"y\"\"\",string\r\n1733246700,d,TRUE,xsd:boolean\r\n\
                    1733246700,e,12abc,unsignedInt";
        let d = run(text, None).unwrap();
        assert_eq!(d.format, Format::ParameterPerRow);
        assert_eq!(d.reports.len(), 2);
        assert_eq!(d.reports[0].time_ms, 1_733_246_400_000);
        let values: Vec<&Value> = d
            .reports
            .iter()
            .flat_map(|r| r.params.iter().map(|p| &p.value))
            .collect();
        assert_eq!(
            values,
            [
                &Value::Int(-3),
                &Value::UInt(u64::MAX),
                &Value::Text("x, \"y\"".into()),
                &Value::Bool(true),
                &Value::Text("12abc".into()),
            ]
        );
    }

    #[test]
    fn per_row_without_timestamps_is_one_report() {
        let d = run(
            "ParameterName,ParameterValue\na,1\nb,2\n",
            Some(Format::ParameterPerRow),
        )
        .unwrap();
        assert_eq!(d.reports.len(), 1);
        assert_eq!(d.reports[0].time_source, TimeSource::Received);
        assert_eq!(d.reports[0].params[1].value, Value::Text("2".into()));
    }

    #[test]
    fn per_column_rows_are_reports_and_may_be_short() {
        let d = run(
            "ReportTimestamp;a;b\n1733246100;1;x\n2024-12-03T17:20:00Z;2\n",
            None,
        )
        .unwrap();
        assert_eq!(d.format, Format::ParameterPerColumn);
        assert_eq!(d.reports.len(), 2);
        assert_eq!(d.reports[1].time_ms, 1_733_246_400_000);
        assert_eq!(
            d.reports[1].params,
            vec![Param {
                path: "a".into(),
                value: Value::Text("2".into())
            }]
        );
    }

    #[test]
    fn long_rows_and_missing_columns_are_refused() {
        assert_eq!(
            run("ReportTimestamp,a\n1733246100,1,2\n", None).unwrap_err(),
            DecodeError::CsvRowTooLong {
                row: 2,
                fields: 3,
                header: 2
            }
        );
        assert_eq!(
            run("ReportTimestamp,a\n1,2\n", Some(Format::ParameterPerRow)).unwrap_err(),
            DecodeError::CsvMissingColumn {
                format: Format::ParameterPerRow,
                column: "ParameterName"
            }
        );
        assert_eq!(
            run("ParameterName,ParameterValue\nonly-name\n", None).unwrap_err(),
            DecodeError::CsvShortRow {
                row: 2,
                column: "ParameterValue"
            }
        );
    }

    #[test]
    fn separator_is_read_off_the_header() {
        assert_eq!(separator("a;b,c"), b';');
        assert_eq!(separator("\"a;b\",c"), b',');
        assert_eq!(separator("a\tb"), b'\t');
        assert_eq!(separator("single"), b',');
    }
}
