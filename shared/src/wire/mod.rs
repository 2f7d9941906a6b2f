//! The edge -> central batch format and the `/v1/batches` contract.
//!
//! A [`Batch`] carries the reports an edge accepted, with parameter names and
//! devices interned once per batch (a 100-parameter report repeats the same
//! paths every interval, so names dominate the raw size). It is encoded with
//! postcard and compressed with zstd and a dictionary of common TR-181 paths
//! ([`dictionary`]): [`encode`] / [`decode`].
//!
//! # HTTP contract
//!
//! `POST /v1/batches`
//! - headers: `Authorization: Bearer <edge token>`, `Content-Type:`
//!   [`CONTENT_TYPE`], and [`PENDING_FROM_HEADER`]`: <seq>`, the lowest batch
//!   sequence number the edge still holds unacknowledged;
//! - body: [`encode`]d [`Batch`]; `(edge_id, batch_seq)` identifies it, and the
//!   same pair is always the same bytes (the edge never rebuilds a batch);
//! - `200` once the batch is queued (durable per central's Redis setting), with an
//!   [`Ack`] JSON body; a batch central has already seen is answered the same way
//!   and stored once;
//! - `400` (the batch cannot be decoded; resending will not help) and `413`
//!   (over central's size limit): the edge sets the batch aside in its
//!   `rejected_batches` table for an operator and goes on with the next one;
//!   `401` (unknown token) and `403` (the token belongs to another edge):
//!   configuration errors, retried; `503` (queue unavailable): retried with
//!   backoff. Bodies of errors are one line of text.
//!
//! `GET /v1/acks?from=<seq>` (same authorization): the [`Ack`] alone, for an edge
//! that has nothing new to send but waits on confirmations.
//!
//! An edge deletes a batch only when an [`Ack`] lists it in `committed`: then its
//! rows are committed in PostgreSQL. Until then it keeps the batch and resends it
//! after a timeout, so a lost Redis entry costs a resend, never data.

use crate::identity::DeviceIdentity;
use crate::report::{Report, TimeSource, Value};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

pub mod dictionary;

/// Wire format version; central refuses versions it does not know.
/// Version 2 compresses with [`dictionary`]; version 1 (the same encoding
/// without it) is still decoded.
pub const VERSION: u16 = 2;
/// Oldest version [`decode`] still reads.
pub const OLDEST_VERSION: u16 = 1;
/// Media type of an encoded batch.
pub const CONTENT_TYPE: &str = "application/vnd.bulkflow.batch.v2+zstd";
/// Request header: lowest batch sequence number the edge still holds.
pub const PENDING_FROM_HEADER: &str = "bulkflow-pending-from";

/// One report as the edge accepted it: who sent it, when it arrived, what it said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub device: DeviceIdentity,
    pub received_at_ms: i64,
    pub report: Report,
}

/// A batch of entries from one edge, ready to decode into [`Entry`]s.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub edge_id: String,
    pub batch_seq: u64,
    pub entries: Vec<Entry>,
}

/// Central's answer: which of this edge's batches are committed in PostgreSQL,
/// among those with `seq >= from` (the edge's [`PENDING_FROM_HEADER`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The batch this answer queued, if the request carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<u64>,
    /// Committed batch sequence numbers, ascending.
    pub committed: Vec<u64>,
}

/// Why bytes are not a valid batch.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("batch does not decompress (zstd): {0}")]
    Decompress(String),
    #[error("batch decompresses to more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("batch is not valid postcard: {0}")]
    Decode(#[from] postcard::Error),
    #[error("unknown batch format version {0} (this build reads {OLDEST_VERSION} to {VERSION})")]
    Version(u16),
    #[error("batch refers to {what} #{index}, which it does not define")]
    BadIndex { what: &'static str, index: u32 },
    #[error("batch compression failed: {0}")]
    Compress(String),
}

// The encoded shape: names and devices once, entries refer to them by index.
#[derive(Serialize, Deserialize)]
struct WireBatch {
    version: u16,
    edge_id: String,
    batch_seq: u64,
    devices: Vec<DeviceIdentity>,
    names: Vec<String>,
    entries: Vec<WireEntry>,
}

#[derive(Serialize, Deserialize)]
struct WireEntry {
    device: u32,
    received_at_ms: i64,
    time_ms: i64,
    time_source: TimeSource,
    params: Vec<(u32, Value)>,
}

/// zstd level: 3 is zstd's default, a good ratio at well over 100 MB/s.
const ZSTD_LEVEL: i32 = 3;

/// Encodes and compresses a batch.
pub fn encode(batch: &Batch) -> Result<Vec<u8>, WireError> {
    let mut encoder = BatchEncoder::new(&batch.edge_id, batch.batch_seq);
    for e in &batch.entries {
        encoder.push(e)?;
    }
    encoder.finish()
}

/// Builds an encoded batch one entry at a time: each entry is interned and
/// serialized as it comes, so the edge can form a batch of a thousand reports
/// from its outbox without holding them all decoded at once (that alone
/// tripled its peak memory). The bytes are exactly those of [`WireBatch`].
pub struct BatchEncoder {
    edge_id: String,
    batch_seq: u64,
    devices: Vec<DeviceIdentity>,
    device_index: HashMap<DeviceIdentity, u32>,
    names: Vec<String>,
    name_index: HashMap<String, u32>,
    /// The serialized entries, without the sequence's length prefix.
    entries: Vec<u8>,
    count: usize,
}

// An entry serialized from borrowed values: the same bytes as `WireEntry`.
#[derive(Serialize)]
struct WireEntryRef<'a> {
    device: u32,
    received_at_ms: i64,
    time_ms: i64,
    time_source: TimeSource,
    params: Vec<(u32, &'a Value)>,
}

impl BatchEncoder {
    pub fn new(edge_id: &str, batch_seq: u64) -> Self {
        BatchEncoder {
            edge_id: edge_id.to_owned(),
            batch_seq,
            devices: Vec::new(),
            device_index: HashMap::new(),
            names: Vec::new(),
            name_index: HashMap::new(),
            entries: Vec::new(),
            count: 0,
        }
    }

    /// Entries pushed so far.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn push(&mut self, e: &Entry) -> Result<(), WireError> {
        let device = match self.device_index.get(&e.device) {
            Some(&i) => i,
            None => {
                let i = self.devices.len() as u32;
                self.devices.push(e.device.clone());
                self.device_index.insert(e.device.clone(), i);
                i
            }
        };
        let params = e
            .report
            .params
            .iter()
            .map(|p| {
                let i = match self.name_index.get(p.path.as_str()) {
                    Some(&i) => i,
                    None => {
                        let i = self.names.len() as u32;
                        self.names.push(p.path.clone());
                        self.name_index.insert(p.path.clone(), i);
                        i
                    }
                };
                (i, &p.value)
            })
            .collect();
        let entry = WireEntryRef {
            device,
            received_at_ms: e.received_at_ms,
            time_ms: e.report.time_ms,
            time_source: e.report.time_source,
            params,
        };
        self.entries = postcard::to_extend(&entry, std::mem::take(&mut self.entries))?;
        self.count += 1;
        Ok(())
    }

    /// The compressed batch.
    pub fn finish(self) -> Result<Vec<u8>, WireError> {
        // postcard lays out a struct as its fields in order and a Vec as a
        // varint length then the elements: the head, the entry count, then
        // the entries already serialized.
        let head = (
            VERSION,
            &self.edge_id,
            self.batch_seq,
            &self.devices,
            &self.names,
            self.count,
        );
        let mut raw = postcard::to_allocvec(&head)?;
        raw.extend_from_slice(&self.entries);
        dictionary::compress(&raw, ZSTD_LEVEL).map_err(|e| WireError::Compress(e.to_string()))
    }
}

/// Decompresses (to at most `max_decompressed` bytes) and decodes a batch.
pub fn decode(bytes: &[u8], max_decompressed: usize) -> Result<Batch, WireError> {
    let raw = dictionary::decompress(bytes, max_decompressed).map_err(|e| {
        // zstd reports an over-capacity frame as "Destination buffer is too small".
        if e.to_string().contains("too small") {
            WireError::TooLarge {
                limit: max_decompressed,
            }
        } else {
            WireError::Decompress(e.to_string())
        }
    })?;
    // The version leads the encoding, so an unknown version is named as such
    // rather than reported as a confusing decode error.
    let (version, _) = postcard::take_from_bytes::<u16>(&raw)?;
    if !(OLDEST_VERSION..=VERSION).contains(&version) {
        return Err(WireError::Version(version));
    }
    let wire: WireBatch = postcard::from_bytes(&raw)?;
    let mut entries = Vec::with_capacity(wire.entries.len());
    for e in wire.entries {
        let device = wire
            .devices
            .get(e.device as usize)
            .ok_or(WireError::BadIndex {
                what: "device",
                index: e.device,
            })?
            .clone();
        let params = e
            .params
            .into_iter()
            .map(|(i, value)| {
                let path = wire.names.get(i as usize).ok_or(WireError::BadIndex {
                    what: "name",
                    index: i,
                })?;
                Ok(crate::report::Param {
                    path: path.clone(),
                    value,
                })
            })
            .collect::<Result<Vec<_>, WireError>>()?;
        entries.push(Entry {
            device,
            received_at_ms: e.received_at_ms,
            report: Report {
                time_ms: e.time_ms,
                time_source: e.time_source,
                params,
            },
        });
    }
    Ok(Batch {
        edge_id: wire.edge_id,
        batch_seq: wire.batch_seq,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdentitySource;
    use crate::report::Param;

    fn entry(sn: &str, t: i64, n: usize) -> Entry {
        Entry {
            device: DeviceIdentity::from_oui_pc_sn("0A1B2C", "Device2", sn, IdentitySource::Query),
            received_at_ms: t + 5,
            report: Report {
                time_ms: t,
                time_source: TimeSource::Report,
                params: (0..n)
                    .map(|i| Param {
                        path: format!("Device.IP.Interface.{i}.Stats.BytesSent"),
                        value: if i % 2 == 0 {
                            Value::UInt(u64::MAX - i as u64)
                        } else {
                            Value::Text(format!("v{i}"))
                        },
                    })
                    .collect(),
            },
        }
    }

    #[test]
    fn batches_round_trip_exactly() {
        let batch = Batch {
            edge_id: "lab-1".into(),
            batch_seq: 42,
            entries: vec![
                entry("A", 1_733_246_400_000, 50),
                entry("B", 1_733_246_400_000, 50),
                entry("A", 1_733_246_700_000, 10),
            ],
        };
        let bytes = encode(&batch).unwrap();
        assert_eq!(decode(&bytes, 1 << 20).unwrap(), batch);
    }

    #[test]
    fn incremental_encoding_is_the_postcard_of_the_whole_batch() {
        let entries = vec![entry("A", 1, 30), entry("B", 2, 5), entry("A", 3, 31)];
        let mut names: Vec<String> = Vec::new();
        let mut wire_entries = Vec::new();
        for e in &entries {
            let params = e
                .report
                .params
                .iter()
                .map(|p| {
                    let i = names.iter().position(|n| *n == p.path).unwrap_or_else(|| {
                        names.push(p.path.clone());
                        names.len() - 1
                    });
                    (i as u32, p.value.clone())
                })
                .collect();
            wire_entries.push(WireEntry {
                device: u32::from(e.device.id.ends_with('B')),
                received_at_ms: e.received_at_ms,
                time_ms: e.report.time_ms,
                time_source: e.report.time_source,
                params,
            });
        }
        let whole = WireBatch {
            version: VERSION,
            edge_id: "e".into(),
            batch_seq: 7,
            devices: vec![entries[0].device.clone(), entries[1].device.clone()],
            names,
            entries: wire_entries,
        };
        let expected = postcard::to_allocvec(&whole).unwrap();
        let bytes = encode(&Batch {
            edge_id: "e".into(),
            batch_seq: 7,
            entries,
        })
        .unwrap();
        assert_eq!(dictionary::decompress(&bytes, 1 << 20).unwrap(), expected);
    }

    #[test]
    fn names_are_interned_once_per_batch() {
        let one = encode(&Batch {
            edge_id: "e".into(),
            batch_seq: 1,
            entries: vec![entry("A", 1, 100)],
        })
        .unwrap();
        let many = encode(&Batch {
            edge_id: "e".into(),
            batch_seq: 1,
            entries: (0..20).map(|i| entry("A", i, 100)).collect(),
        })
        .unwrap();
        // 20 reports cost far less than 20 times one report.
        assert!(
            many.len() < one.len() * 5,
            "{} vs {}",
            many.len(),
            one.len()
        );
    }

    #[test]
    fn bad_input_gets_a_typed_error() {
        assert!(matches!(
            decode(b"not zstd", 1 << 20),
            Err(WireError::Decompress(_))
        ));
        let bytes = encode(&Batch {
            edge_id: "e".into(),
            batch_seq: 1,
            entries: vec![entry("A", 1, 100)],
        })
        .unwrap();
        assert!(matches!(
            decode(&bytes, 100),
            Err(WireError::TooLarge { limit: 100 })
        ));
        let future =
            zstd::bulk::compress(&postcard::to_allocvec(&(3u16, "e")).unwrap(), 3).unwrap();
        assert!(matches!(
            decode(&future, 1 << 20),
            Err(WireError::Version(3))
        ));
        let garbage = zstd::bulk::compress(&[1, 0, 200, 200, 200], 3).unwrap();
        assert!(matches!(
            decode(&garbage, 1 << 20),
            Err(WireError::Decode(_))
        ));
    }
}
