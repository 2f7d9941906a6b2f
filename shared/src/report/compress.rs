//! Body decompression by `Content-Encoding` and by magic bytes, with bomb limits.
//!
//! CPEs mislabel compressed bodies both ways: some send gzip without the header,
//! and Casa's agent labels plain bodies as gzip (its "GZIP" setting only adds
//! `--compressed` to curl). So the bytes decide: gzip (`1f 8b`) and zlib
//! (`78 xx` with a valid header check) are inflated whatever the label; a body
//! labelled `deflate` without a zlib header is raw deflate unless it plainly is
//! text; an unlabelled body that is not UTF-8 gets raw deflate as a last resort.
//!
//! Inflation stops as soon as the output passes the decompressed-size or ratio
//! limit, so a bomb costs at most the limit in memory and time.

use super::{DecodeError, Limits};
use flate2::read::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};
use std::borrow::Cow;
use std::io::Read;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Identity,
    Gzip,
    Deflate,
}

fn parse_label(content_encoding: Option<&str>) -> Result<Label, DecodeError> {
    let mut label = Label::Identity;
    for token in content_encoding.unwrap_or("").split(',') {
        let t = token.trim().to_ascii_lowercase();
        let this = match t.as_str() {
            "" | "identity" | "none" => continue,
            "gzip" | "x-gzip" => Label::Gzip,
            "deflate" => Label::Deflate,
            _ => return Err(DecodeError::UnsupportedEncoding(token.trim().to_string())),
        };
        // Stacked encodings (`gzip, gzip`) are legal HTTP but no CPE sends them.
        if label != Label::Identity {
            return Err(DecodeError::UnsupportedEncoding(
                content_encoding.unwrap_or("").trim().to_string(),
            ));
        }
        label = this;
    }
    Ok(label)
}

fn is_gzip(b: &[u8]) -> bool {
    b.starts_with(&[0x1f, 0x8b])
}

/// RFC 1950 header: method 8 (deflate), window <= 32K, FCHECK makes it a multiple of 31.
fn is_zlib(b: &[u8]) -> bool {
    b.len() >= 2
        && b[0] & 0x0f == 8
        && b[0] >> 4 <= 7
        && (u16::from(b[0]) << 8 | u16::from(b[1])) % 31 == 0
}

/// Whether the body reads as a JSON or CSV document as it stands.
fn looks_plain(b: &[u8]) -> bool {
    let b = b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b);
    let first = b.iter().find(|c| !c.is_ascii_whitespace());
    std::str::from_utf8(b).is_ok()
        && matches!(first, Some(b'{' | b'[') | Some(b'A'..=b'Z' | b'a'..=b'z' | b'"') | None)
}

/// Returns the body's decompressed bytes (borrowed when it was plain).
pub fn decompress<'a>(
    body: &'a [u8],
    content_encoding: Option<&str>,
    limits: &Limits,
) -> Result<Cow<'a, [u8]>, DecodeError> {
    let label = parse_label(content_encoding)?;
    if is_gzip(body) {
        return inflate(MultiGzDecoder::new(body), "gzip", body.len(), limits).map(Cow::Owned);
    }
    if is_zlib(body) {
        match inflate(ZlibDecoder::new(body), "deflate", body.len(), limits) {
            Ok(out) => return Ok(Cow::Owned(out)),
            // Text that happens to start like a zlib header (e.g. "x^", or a CSV
            // header "H,...") stays text, even when labelled compressed.
            Err(DecodeError::Corrupt { .. }) if looks_plain(body) => {}
            Err(e) => return Err(e),
        }
    }
    match label {
        Label::Deflate if !looks_plain(body) => {
            match inflate(DeflateDecoder::new(body), "deflate", body.len(), limits) {
                Ok(out) => Ok(Cow::Owned(out)),
                // Mislabelled text that starts oddly (a digit, a quote
                // character the sniffer does not know): plain after all.
                Err(DecodeError::Corrupt { .. }) if std::str::from_utf8(body).is_ok() => {
                    Ok(Cow::Borrowed(body))
                }
                Err(e) => Err(e),
            }
        }
        Label::Identity if std::str::from_utf8(body).is_err() => {
            match inflate(DeflateDecoder::new(body), "deflate", body.len(), limits) {
                Ok(out) => Ok(Cow::Owned(out)),
                Err(DecodeError::Corrupt { .. }) => Ok(Cow::Borrowed(body)),
                Err(e) => Err(e),
            }
        }
        // Labelled gzip or deflate but plain: taken as plain.
        _ => Ok(Cow::Borrowed(body)),
    }
}

/// Reads `decoder` to the end, refusing output beyond the limits.
fn inflate<R: Read>(
    mut decoder: R,
    encoding: &'static str,
    input_len: usize,
    limits: &Limits,
) -> Result<Vec<u8>, DecodeError> {
    let ratio_cap = input_len
        .saturating_mul(limits.max_ratio)
        .max(limits.ratio_floor_bytes);
    let cap = ratio_cap.min(limits.max_decompressed_bytes);
    let mut out = Vec::with_capacity(input_len.saturating_mul(8).min(cap));
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match decoder.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                return Err(DecodeError::Corrupt {
                    encoding,
                    reason: e.to_string(),
                });
            }
        };
        if out.len() + n > cap {
            return Err(if cap == limits.max_decompressed_bytes {
                DecodeError::DecompressedTooLarge {
                    limit: limits.max_decompressed_bytes,
                }
            } else {
                DecodeError::RatioExceeded {
                    ratio: limits.max_ratio,
                }
            });
        }
        out.extend_from_slice(&chunk[..n]);
    }
    if out.is_empty() && input_len > 0 {
        return Err(DecodeError::Corrupt {
            encoding,
            reason: "no data".into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
    use std::io::Write;

    const DOC: &[u8] = br#"{"Report":[{"CollectionTime":1733246400,"a":1}]}"#;

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }
    fn zlib(b: &[u8]) -> Vec<u8> {
        let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }
    fn raw(b: &[u8]) -> Vec<u8> {
        let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    fn run(body: &[u8], ce: Option<&str>) -> Result<Vec<u8>, DecodeError> {
        decompress(body, ce, &Limits::default()).map(|c| c.into_owned())
    }

    #[test]
    fn every_encoding_by_label_and_by_magic() {
        for ce in [
            None,
            Some("gzip"),
            Some("x-gzip"),
            Some("deflate"),
            Some("identity"),
        ] {
            assert_eq!(
                run(&gzip(DOC), ce).unwrap(),
                DOC,
                "gzip body labelled {ce:?}"
            );
            assert_eq!(
                run(&zlib(DOC), ce).unwrap(),
                DOC,
                "zlib body labelled {ce:?}"
            );
            assert_eq!(run(DOC, ce).unwrap(), DOC, "plain body labelled {ce:?}");
        }
        assert_eq!(run(&raw(DOC), Some("deflate")).unwrap(), DOC);
        assert_eq!(run(&raw(DOC), None).unwrap(), DOC, "unlabelled raw deflate");
    }

    #[test]
    fn plain_text_with_a_zlib_like_start_stays_plain_under_any_label() {
        for body in [&b"x^,a\n"[..], b"H,ParameterName\n", b"x?"] {
            assert!(is_zlib(body));
            for ce in [None, Some("gzip"), Some("deflate"), Some("identity")] {
                assert_eq!(run(body, ce).unwrap(), body, "{body:?} labelled {ce:?}");
            }
        }
    }

    #[test]
    fn plain_text_labelled_deflate_stays_plain_with_a_bom_or_an_odd_start() {
        for body in [
            &b"\xEF\xBB\xBF{\"Report\":[]}"[..],
            b"\xEF\xBB\xBFReportTimestamp,ParameterName\n",
            b"1733246400,Device.DeviceInfo.UpTime,5\n",
        ] {
            assert_eq!(run(body, Some("deflate")).unwrap(), body, "{body:?}");
        }
        // Binary that is not deflate is still refused.
        assert!(matches!(
            run(&[0xff, 0xfe, 0xfd, 0x00], Some("deflate")),
            Err(DecodeError::Corrupt { .. })
        ));
    }

    #[test]
    fn unknown_encodings_are_refused() {
        assert_eq!(
            run(DOC, Some("br")),
            Err(DecodeError::UnsupportedEncoding("br".into()))
        );
        assert!(matches!(
            run(DOC, Some("gzip, gzip")),
            Err(DecodeError::UnsupportedEncoding(_))
        ));
    }

    #[test]
    fn truncated_gzip_is_corrupt() {
        let g = gzip(DOC);
        let err = run(&g[..g.len() / 2], Some("gzip")).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Corrupt {
                    encoding: "gzip",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn bombs_stop_at_the_limits() {
        let zeros = vec![b' '; 64 << 20];
        let bomb = gzip(&zeros);
        assert!(bomb.len() < 100_000);
        assert_eq!(
            run(&bomb, Some("gzip")),
            Err(DecodeError::RatioExceeded { ratio: 200 })
        );
        let limits = Limits {
            max_ratio: usize::MAX,
            ..Limits::default()
        };
        assert_eq!(
            decompress(&bomb, Some("gzip"), &limits).map(|c| c.len()),
            Err(DecodeError::DecompressedTooLarge { limit: 32 << 20 })
        );
    }
}
