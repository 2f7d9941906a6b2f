//! JSON reports (NameValuePair and ObjectHierarchy), streamed straight into
//! flat parameters.
//!
//! Both formats share the envelope `{"Report": [<report>, ...]}`. A report is
//! flattened the same way whichever format it uses: nested objects join their
//! keys with `.` (ObjectHierarchy instance numbers are object keys, never
//! arrays), so `{"Device":{"DeviceInfo":{"UpTime":1}}}` and
//! `{"Device.DeviceInfo.UpTime":1}` give the same parameter.
//!
//! The body is walked once with serde visitors instead of building a
//! `serde_json::Value` tree: keys keep body order (and duplicates), integers
//! keep 64-bit precision, and nesting depth and parameter count are bounded
//! while parsing.
//!
//! Tolerated beyond the spec: `Report` as a single object (one report); a report
//! given as an array of objects (merged, as some NameValuePair encoders emit one
//! object per parameter); a JSON array of scalars as a value (keys `.1`, `.2`,
//! ... like instance numbers).

use super::time::{self, Fallback};
use super::{DecodeError, Decoded, Format, Limits, Param, Report, Value};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::cell::RefCell;
use std::fmt;

/// Decodes a JSON Bulk Data body. `hint` is the format the request named, if
/// any; otherwise nesting in the first report decides between the two.
pub fn decode(
    text: &str,
    hint: Option<Format>,
    fallback: &Fallback,
    limits: &Limits,
) -> Result<Decoded, DecodeError> {
    let state = State {
        limits,
        failure: RefCell::new(None),
        params: RefCell::new(0),
        nested: RefCell::new(false),
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = EnvelopeSeed { state: &state }
        .deserialize(&mut de)
        .and_then(|reports| de.end().map(|()| reports));
    let raw_reports = match parsed {
        Ok(r) => r,
        Err(e) => {
            return Err(state
                .failure
                .into_inner()
                .unwrap_or_else(|| DecodeError::InvalidJson(e.to_string())));
        }
    };
    let format = hint.unwrap_or(if *state.nested.borrow() {
        Format::ObjectHierarchy
    } else {
        Format::NameValuePair
    });
    let reports = raw_reports
        .into_iter()
        .map(|r| {
            let (time_ms, time_source) = fallback.resolve(r.time);
            Report {
                time_ms,
                time_source,
                params: r.params,
            }
        })
        .collect();
    Ok(Decoded { format, reports })
}

/// What the visitors share: the limits, and the typed error that made them stop
/// (serde only carries strings, so the real cause is kept here).
struct State<'l> {
    limits: &'l Limits,
    failure: RefCell<Option<DecodeError>>,
    params: RefCell<usize>,
    nested: RefCell<bool>,
}

impl State<'_> {
    fn fail<E: de::Error>(&self, err: DecodeError) -> E {
        let msg = err.to_string();
        self.failure.borrow_mut().get_or_insert(err);
        E::custom(msg)
    }
}

#[derive(Default)]
struct RawReport {
    time: Option<i64>,
    params: Vec<Param>,
}

fn kind_of_unexpected(u: de::Unexpected<'_>) -> &'static str {
    match u {
        de::Unexpected::Bool(_) => "a boolean",
        de::Unexpected::Str(_) => "a string",
        de::Unexpected::Seq => "an array",
        de::Unexpected::Map => "an object",
        de::Unexpected::Unit => "null",
        _ => "a number",
    }
}

/// Generates the scalar `visit_*` methods of a visitor that only accepts
/// containers, each failing with `$err(kind)`.
macro_rules! refuse_scalars {
    ($err:path) => {
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Err(self
                .state
                .fail($err(kind_of_unexpected(de::Unexpected::Bool(v)))))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(self.state.fail($err("a number")))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(self.state.fail($err("a number")))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(self.state.fail($err("a number")))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Err(self.state.fail($err("a string")))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Err(self.state.fail($err("null")))
        }
    };
}

/// The top level: an object whose `Report` member holds the reports.
struct EnvelopeSeed<'s, 'l> {
    state: &'s State<'l>,
}

impl<'de> DeserializeSeed<'de> for EnvelopeSeed<'_, '_> {
    type Value = Vec<RawReport>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EnvelopeSeed<'_, '_> {
    type Value = Vec<RawReport>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with a Report member")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut reports = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "Report" && reports.is_none() {
                reports = Some(map.next_value_seed(ReportsSeed { state: self.state })?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        reports.ok_or_else(|| self.state.fail(DecodeError::NoReportMember))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.state.fail(DecodeError::NotAnEnvelope("an array")))
    }

    refuse_scalars!(DecodeError::NotAnEnvelope);
}

/// The `Report` member: an array of reports, or a single report object.
struct ReportsSeed<'s, 'l> {
    state: &'s State<'l>,
}

impl<'de> DeserializeSeed<'de> for ReportsSeed<'_, '_> {
    type Value = Vec<RawReport>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ReportsSeed<'_, '_> {
    type Value = Vec<RawReport>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of reports")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut reports = Vec::new();
        loop {
            let mut report = RawReport::default();
            let seed = ReportSeed {
                state: self.state,
                report: &mut report,
                depth: 1,
            };
            if seq.next_element_seed(seed)?.is_none() {
                break;
            }
            reports.push(report);
        }
        Ok(reports)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let mut report = RawReport::default();
        ReportSeed {
            state: self.state,
            report: &mut report,
            depth: 1,
        }
        .visit_map(map)?;
        Ok(vec![report])
    }

    refuse_scalars!(DecodeError::BadReportMember);
}

/// One report: an object of parameters plus `CollectionTime`, or an array of
/// such objects merged into one report.
struct ReportSeed<'s, 'l, 'r> {
    state: &'s State<'l>,
    report: &'r mut RawReport,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ReportSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ReportSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a report object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut path = String::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "CollectionTime" {
                let t = map.next_value::<TimeValue>()?;
                self.report.time = t.0;
                continue;
            }
            path.clear();
            path.push_str(&key);
            map.next_value_seed(FlattenSeed {
                state: self.state,
                path: &mut path,
                out: &mut self.report.params,
                depth: self.depth + 1,
                index: None,
            })?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth > 2 {
            return Err(self
                .state
                .fail(DecodeError::BadReportElement("a nested array")));
        }
        while seq
            .next_element_seed(ReportSeed {
                state: self.state,
                report: &mut *self.report,
                depth: self.depth + 1,
            })?
            .is_some()
        {}
        Ok(())
    }

    refuse_scalars!(DecodeError::BadReportElement);
}

/// `CollectionTime`: a number or a string; anything unusable is `None` (the
/// report then takes the fallback time rather than being refused).
struct TimeValue(Option<i64>);

impl<'de> de::Deserialize<'de> for TimeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TimeValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a time")
            }
            fn visit_i64<E>(self, v: i64) -> Result<TimeValue, E> {
                Ok(TimeValue(time::from_integer(v.into())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<TimeValue, E> {
                Ok(TimeValue(time::from_integer(v.into())))
            }
            fn visit_f64<E>(self, v: f64) -> Result<TimeValue, E> {
                Ok(TimeValue(time::from_number(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<TimeValue, E> {
                Ok(TimeValue(time::from_text(v)))
            }
            fn visit_bool<E>(self, _: bool) -> Result<TimeValue, E> {
                Ok(TimeValue(None))
            }
            fn visit_unit<E>(self) -> Result<TimeValue, E> {
                Ok(TimeValue(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<TimeValue, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(TimeValue(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<TimeValue, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(TimeValue(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// A value under `path`: a scalar becomes a parameter, an object extends the
/// path with each key, an array of scalars with each 1-based index.
struct FlattenSeed<'s, 'l, 'p> {
    state: &'s State<'l>,
    path: &'p mut String,
    out: &'p mut Vec<Param>,
    depth: usize,
    /// Set for array elements: scalars get `.<index>` appended.
    index: Option<usize>,
}

impl FlattenSeed<'_, '_, '_> {
    fn emit<E: de::Error>(self, value: Value) -> Result<(), E> {
        let limits = self.state.limits;
        let mut count = self.state.params.borrow_mut();
        if *count >= limits.max_params {
            return Err(self.state.fail(DecodeError::TooManyParams {
                limit: limits.max_params,
            }));
        }
        *count += 1;
        let mut path = self.path.clone();
        if let Some(i) = self.index {
            path.push('.');
            path.push_str(&i.to_string());
        }
        if path.len() > limits.max_path_bytes {
            return Err(self.state.fail(DecodeError::PathTooLong {
                limit: limits.max_path_bytes,
            }));
        }
        self.out.push(Param { path, value });
        Ok(())
    }

    fn enter<E: de::Error>(&self) -> Result<(), E> {
        if self.depth > self.state.limits.max_depth {
            return Err(self.state.fail(DecodeError::TooDeep {
                limit: self.state.limits.max_depth,
            }));
        }
        *self.state.nested.borrow_mut() = true;
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for FlattenSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FlattenSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a parameter value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.emit(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.emit(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.emit(Value::from_u64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.emit(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.emit(Value::Text(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
        self.emit(Value::Text(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.emit(Value::Null)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.enter()?;
        // Objects inside arrays merge under the array's own path.
        let base = self.path.len();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            self.path.truncate(base);
            if !self.path.is_empty() {
                self.path.push('.');
            }
            self.path.push_str(&key);
            map.next_value_seed(FlattenSeed {
                state: self.state,
                path: &mut *self.path,
                out: &mut *self.out,
                depth: self.depth + 1,
                index: None,
            })?;
        }
        self.path.truncate(base);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.enter()?;
        let mut i = 1;
        while seq
            .next_element_seed(FlattenSeed {
                state: self.state,
                path: &mut *self.path,
                out: &mut *self.out,
                depth: self.depth + 1,
                index: Some(i),
            })?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::TimeSource;

    const RECEIVED: i64 = 1_767_225_600_000;

    fn run(text: &str) -> Result<Decoded, DecodeError> {
        decode(
            text,
            None,
            &Fallback::new(None, RECEIVED),
            &Limits::default(),
        )
    }

    fn pairs(d: &Decoded) -> Vec<(usize, String, Value)> {
        d.reports
            .iter()
            .enumerate()
            .flat_map(|(i, r)| {
                r.params
                    .iter()
                    .map(move |p| (i, p.path.clone(), p.value.clone()))
            })
            .collect()
    }

    #[test]
    fn nested_and_flat_bodies_flatten_alike() {
        let nested = run(r#"{"Report":[{"CollectionTime":1733246400,"Device":{"DeviceInfo":{"UpTime":86213},"IP":{"Interface":{"4":{"Stats":{"BytesReceived":5566778899}}}}},"host":{"2":"laptop-ana","5":""}}]}"#).unwrap();
        let flat = run(r#"{"Report":[{"CollectionTime":1733246400,"Device.DeviceInfo.UpTime":86213,"Device.IP.Interface.4.Stats.BytesReceived":5566778899,"host.2":"laptop-ana","host.5":""}]}"#).unwrap();
        assert_eq!(nested.reports, flat.reports);
        assert_eq!(nested.format, Format::ObjectHierarchy);
        assert_eq!(flat.format, Format::NameValuePair);
        assert_eq!(
            pairs(&flat)[3],
            (0, "host.5".to_string(), Value::Text(String::new()))
        );
        assert_eq!(flat.reports[0].time_ms, 1_733_246_400_000);
        assert_eq!(flat.reports[0].time_source, TimeSource::Report);
    }

    #[test]
    fn values_keep_their_json_types_and_precision() {
        let d = run(r#"{"Report":[{"a":18446744073709551000,"b":-5,"c":1.5,"d":true,"e":null,"f":"7","g":9223372036854775807}]}"#).unwrap();
        let values: Vec<Value> = d.reports[0]
            .params
            .iter()
            .map(|p| p.value.clone())
            .collect();
        assert_eq!(
            values,
            vec![
                Value::UInt(18_446_744_073_709_551_000),
                Value::Int(-5),
                Value::Float(1.5),
                Value::Bool(true),
                Value::Null,
                Value::Text("7".into()),
                Value::Int(i64::MAX),
            ]
        );
    }

    #[test]
    fn report_shapes() {
        // A single object is one report; an empty array is no report.
        assert_eq!(run(r#"{"Report":{"a":1}}"#).unwrap().reports.len(), 1);
        assert_eq!(run(r#"{"Report":[]}"#).unwrap().reports.len(), 0);
        // A report given as an array of one-member objects is merged.
        let d = run(r#"{"Report":[[{"CollectionTime":1733246400},{"a":1},{"b":2}]]}"#).unwrap();
        assert_eq!(d.reports.len(), 1);
        assert_eq!(d.reports[0].params.len(), 2);
        assert_eq!(d.reports[0].time_source, TimeSource::Report);
        // Scalars in arrays get 1-based indexes; other top-level members are ignored.
        let d = run(r#"{"Version":"1","Report":[{"list":[10,20]}]}"#).unwrap();
        assert_eq!(
            pairs(&d),
            vec![
                (0, "list.1".into(), Value::Int(10)),
                (0, "list.2".into(), Value::Int(20))
            ]
        );
    }

    #[test]
    fn duplicate_keys_are_kept_in_body_order() {
        let d = run(r#"{"Report":[{"x":1,"y":2,"x":3}]}"#).unwrap();
        let keys: Vec<&str> = d.reports[0]
            .params
            .iter()
            .map(|p| p.path.as_str())
            .collect();
        assert_eq!(keys, ["x", "y", "x"]);
    }

    #[test]
    fn malformed_bodies_get_typed_errors() {
        assert_eq!(
            run(r#"{"Reports":[]}"#).unwrap_err(),
            DecodeError::NoReportMember
        );
        assert_eq!(
            run(r#"[{"a":1}]"#).unwrap_err(),
            DecodeError::NotAnEnvelope("an array")
        );
        assert_eq!(
            run(r#"{"Report":5}"#).unwrap_err(),
            DecodeError::BadReportMember("a number")
        );
        assert_eq!(
            run(r#"{"Report":["x"]}"#).unwrap_err(),
            DecodeError::BadReportElement("a string")
        );
        let e = run(r#"{"Report":[{"a":1,}]}"#).unwrap_err();
        assert!(matches!(e, DecodeError::InvalidJson(_)), "{e}");
        let e = run(r#"{"Report":[{"a":1}]} trailing"#).unwrap_err();
        assert!(matches!(e, DecodeError::InvalidJson(_)), "{e}");
    }

    #[test]
    fn limits_apply_while_parsing() {
        let deep = format!(
            r#"{{"Report":[{{{}1{}}}]}}"#,
            r#""k":{"#.repeat(40),
            "}".repeat(40)
        );
        assert_eq!(run(&deep).unwrap_err(), DecodeError::TooDeep { limit: 32 });
        let limits = Limits {
            max_params: 2,
            ..Limits::default()
        };
        let fb = Fallback::new(None, RECEIVED);
        assert_eq!(
            decode(r#"{"Report":[{"a":1},{"b":2,"c":3}]}"#, None, &fb, &limits).unwrap_err(),
            DecodeError::TooManyParams { limit: 2 }
        );
        let long = format!(r#"{{"Report":[{{"{}":1}}]}}"#, "a".repeat(2000));
        assert_eq!(
            run(&long).unwrap_err(),
            DecodeError::PathTooLong { limit: 1024 }
        );
    }
}
