//! PostgreSQL `numeric` in its binary wire form, so parameter values can go
//! into `samples.value_num` by binary COPY without a text cast.
//!
//! The form: digit count, weight (power of 10000 of the first digit), sign,
//! display scale, then base-10000 digits. Built from the decimal text the
//! store already has (`sample_columns`), which keeps 64-bit counters exact.

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
