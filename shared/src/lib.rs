//! Pieces both bulkflow binaries share: decoding of TR-069 / TR-181 HTTP Bulk Data
//! reports into canonical [`report::Report`]s.
//!
//! The edge and central each receive Bulk Data requests straight from CPEs, so the
//! decoder lives here, free of I/O: it takes the body and the few headers that
//! matter and returns reports or a one-line [`report::DecodeError`].

pub mod config;
pub mod identity;
#[cfg(feature = "net")]
pub mod net;
pub mod notify;
pub mod receive;
pub mod report;
#[cfg(feature = "tls")]
pub mod tls;
pub mod wire;
