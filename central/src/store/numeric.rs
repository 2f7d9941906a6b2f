//! PostgreSQL `numeric` in its binary wire form, so parameter values can go
//! into `samples.value_num` by binary COPY without a text cast.
//!
//! The form: digit count, weight (power of 10000 of the first digit), sign,
//! display scale, then base-10000 digits. Integers are encoded directly,
//! other decimals from their text (`copy::sample_columns` decides which);
//! 64-bit counters stay exact.

use bytes::BufMut;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

/// An encoded numeric value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Numeric(Vec<u8>);

const POSITIVE: u16 = 0x0000;
const NEGATIVE: u16 = 0x4000;

impl Numeric {
    /// Encodes decimal text (`-12.50`, `1.5e3`, `.5`); `None` if it is not one
    /// or is absurdly large.
    pub fn parse(text: &str) -> Option<Numeric> {
        let t = text.trim();
        let (negative, body) = match t.as_bytes().first()? {
            b'-' => (true, &t[1..]),
            b'+' => (false, &t[1..]),
            _ => (false, t),
        };
        let (mantissa, exponent) = match body.split_once(['e', 'E']) {
            Some((m, e)) => (m, e.parse::<i32>().ok()?),
            None => (body, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if (int.is_empty() && frac.is_empty())
            || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
            || exponent.unsigned_abs() > 1000
        {
            return None;
        }
        // All digits, and where the decimal point falls among them.
        let digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
        let point = int.len() as i64 + i64::from(exponent);
        let dscale = (digits.len() as i64 - point).max(0) as u16;
        // Integer part digits (left of the point) and fraction digits, padded
        // with zeros where the exponent moved the point outside the digits.
        let mut int_part: Vec<u8> = Vec::new();
        let mut frac_part: Vec<u8> = Vec::new();
        if point <= 0 {
            frac_part.extend(std::iter::repeat_n(0, (-point) as usize));
            frac_part.extend(&digits);
        } else if point as usize >= digits.len() {
            int_part.extend(&digits);
            int_part.extend(std::iter::repeat_n(0, point as usize - digits.len()));
        } else {
            int_part.extend(&digits[..point as usize]);
            frac_part.extend(&digits[point as usize..]);
        }
        // Group into base-10000 digits: the integer part from the right, the
        // fraction from the left.
        let int_pad = (4 - int_part.len() % 4) % 4;
        let mut padded: Vec<u8> = std::iter::repeat_n(0, int_pad).chain(int_part).collect();
        let int_groups = padded.len() / 4;
        padded.extend(&frac_part);
        padded.extend(std::iter::repeat_n(0, (4 - frac_part.len() % 4) % 4));
        let mut groups: Vec<i16> = padded
            .chunks(4)
            .map(|c| c.iter().fold(0i16, |acc, d| acc * 10 + i16::from(*d)))
            .collect();
        let mut weight = int_groups as i64 - 1;
        let leading = groups.iter().take_while(|g| **g == 0).count();
        groups.drain(..leading);
        weight -= leading as i64;
        while groups.last() == Some(&0) {
            groups.pop();
        }
        let (sign, weight) = if groups.is_empty() {
            (POSITIVE, 0)
        } else {
            (if negative { NEGATIVE } else { POSITIVE }, weight)
        };
        let mut out = Vec::with_capacity(8 + groups.len() * 2);
        out.put_i16(i16::try_from(groups.len()).ok()?);
        out.put_i16(i16::try_from(weight).ok()?);
        out.put_u16(sign);
        out.put_u16(dscale);
        for g in groups {
            out.put_i16(g);
        }
        Some(Numeric(out))
    }
}

/// A sample's `value_num`, encoded for binary COPY without going through
/// text: integers (most values: counters, gauges) are turned into base-10000
/// digits directly, with no allocation; other decimals are parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SampleNum {
    Null,
    Int { negative: bool, magnitude: u64 },
    Decimal(Numeric),
}

impl SampleNum {
    pub fn from_i64(v: i64) -> SampleNum {
        SampleNum::Int {
            negative: v < 0,
            magnitude: v.unsigned_abs(),
        }
    }

    pub fn from_u64(v: u64) -> SampleNum {
        SampleNum::Int {
            negative: false,
            magnitude: v,
        }
    }

    /// Decimal text as [`Numeric::parse`] takes it; plain integers (the usual
    /// numeric string) skip the general parser.
    pub fn parse(text: &str) -> SampleNum {
        let t = text.trim();
        let (negative, digits) = match t.as_bytes().first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        if !digits.is_empty()
            && digits.len() <= 19
            && digits.bytes().all(|b| b.is_ascii_digit())
            && let Ok(magnitude) = digits.parse::<u64>()
        {
            return SampleNum::Int {
                negative: negative && magnitude != 0,
                magnitude,
            };
        }
        Numeric::parse(t).map_or(SampleNum::Null, SampleNum::Decimal)
    }
}

/// Writes an integer as PostgreSQL's binary numeric: base-10000 digits, most
/// significant first, trailing zero digits dropped (as PostgreSQL does).
fn put_integer(negative: bool, magnitude: u64, out: &mut bytes::BytesMut) {
    let mut groups = [0i16; 5];
    let mut n = magnitude;
    let mut len = 0;
    while n > 0 {
        groups[len] = (n % 10_000) as i16;
        n /= 10_000;
        len += 1;
    }
    // groups[0] is the least significant; the weight is that of the first.
    let weight = len.saturating_sub(1) as i16;
    let trailing = groups[..len].iter().take_while(|g| **g == 0).count();
    let ndigits = (len - trailing) as i16;
    out.put_i16(ndigits);
    out.put_i16(weight);
    out.put_u16(if negative && len > 0 {
        NEGATIVE
    } else {
        POSITIVE
    });
    out.put_u16(0);
    for g in groups[trailing..len].iter().rev() {
        out.put_i16(*g);
    }
}

impl ToSql for SampleNum {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            SampleNum::Null => Ok(IsNull::Yes),
            SampleNum::Int {
                negative,
                magnitude,
            } => {
                put_integer(*negative, *magnitude, out);
                Ok(IsNull::No)
            }
            SampleNum::Decimal(n) => n.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }

    to_sql_checked!();
}

impl ToSql for Numeric {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(n: &SampleNum) -> Option<Vec<u8>> {
        let mut out = bytes::BytesMut::new();
        match n.to_sql(&Type::NUMERIC, &mut out).unwrap() {
            IsNull::Yes => None,
            IsNull::No => Some(out.to_vec()),
        }
    }

    #[test]
    fn integers_encode_exactly_as_their_decimal_text() {
        let mut values: Vec<i128> =
            vec![0, 1, -1, 9, 10, 9999, 10_000, 10_001, 100_000_000, -20_000];
        values.extend([i64::MIN as i128, i64::MAX as i128, u64::MAX as i128]);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push((x >> (x % 64)) as i128);
            values.push(-((x >> (1 + x % 63)) as i128));
        }
        for v in values {
            let fast = if v < 0 {
                SampleNum::from_i64(v as i64)
            } else {
                SampleNum::from_u64(v as u64)
            };
            let text = Numeric::parse(&v.to_string()).unwrap();
            assert_eq!(encoded(&fast), Some(text.0.clone()), "{v}");
            assert_eq!(
                encoded(&SampleNum::parse(&format!(" {v} "))),
                Some(text.0),
                "{v}"
            );
        }
    }

    #[test]
    fn decimal_text_takes_the_general_parser() {
        assert_eq!(
            SampleNum::parse("-12.50"),
            SampleNum::Decimal(Numeric::parse("-12.50").unwrap())
        );
        assert_eq!(SampleNum::parse("+7"), SampleNum::from_u64(7));
        assert_eq!(SampleNum::parse("-0"), SampleNum::from_u64(0));
        // 20 digits: past u64, still exact.
        assert_eq!(
            SampleNum::parse("18446744073709551616"),
            SampleNum::Decimal(Numeric::parse("18446744073709551616").unwrap())
        );
        assert_eq!(SampleNum::parse("abc"), SampleNum::Null);
        assert_eq!(encoded(&SampleNum::Null), None);
    }

    fn words(n: &Numeric) -> Vec<i32> {
        n.0.chunks(2)
            .map(|c| i32::from(u16::from_be_bytes([c[0], c[1]])))
            .collect()
    }

    #[test]
    fn encodes_like_postgresql() {
        // ndigits, weight, sign, dscale, digits...
        assert_eq!(words(&Numeric::parse("0").unwrap()), [0, 0, 0, 0]);
        assert_eq!(
            words(&Numeric::parse("12345").unwrap()),
            [2, 1, 0, 0, 1, 2345]
        );
        assert_eq!(
            words(&Numeric::parse("-1.5").unwrap()),
            [2, 0, 0x4000, 1, 1, 5000]
        );
        assert_eq!(
            words(&Numeric::parse("0.0025").unwrap()),
            [1, 0xFFFF, 0, 4, 25]
        );
        assert_eq!(
            words(&Numeric::parse("2.5E-3").unwrap()),
            [1, 0xFFFF, 0, 4, 25]
        );
        assert_eq!(
            words(&Numeric::parse("1.5e0").unwrap()),
            [2, 0, 0, 1, 1, 5000]
        );
        assert_eq!(words(&Numeric::parse("10000").unwrap()), [1, 1, 0, 0, 1]);
        assert_eq!(
            words(&Numeric::parse("18446744073709551615").unwrap()),
            [5, 4, 0, 0, 1844, 6744, 737, 955, 1615]
        );
        for bad in ["", "-", ".", "1.2.3", "abc", "1e", "1e99999", "0x10"] {
            assert_eq!(Numeric::parse(bad), None, "{bad}");
        }
    }

    /// The real server reads every form back as the same number.
    #[test]
    fn postgresql_reads_them_back() {
        let Ok(mut db) = postgres::Client::connect(
            "host=127.0.0.1 user=postgres dbname=postgres",
            postgres::NoTls,
        ) else {
            panic!("PostgreSQL on 127.0.0.1:5432 is needed for this test");
        };
        for (text, want) in [
            ("0", "0"),
            ("-0", "0"),
            ("86213", "86213"),
            ("18446744073709551000", "18446744073709551000"),
            ("-92", "-92"),
            ("1.5e0", "1.5"),
            ("-71.5", "-71.5"),
            ("0.000123", "0.000123"),
            ("1e20", "100000000000000000000"),
            ("123.4500", "123.4500"),
            ("007", "7"),
            (".5", "0.5"),
        ] {
            let n = Numeric::parse(text).unwrap();
            let got: String = db
                .query_one("SELECT $1::numeric::text", &[&n])
                .unwrap()
                .get(0);
            assert_eq!(got, want, "{text}");
        }
    }
}
