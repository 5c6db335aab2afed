//! KrakenD's TLS blocks as rustls configs, for the host and for plugins (each links its own
//! rustls: what crosses between them is this crate's input, JSON, never a config object).
//!
//! * [`server`]: the root `tls` block, a listener's `ServerConfig`: certificate/key pairs
//!   (SNI picks among several, the first serves unknown names and clients without SNI, as
//!   Go's `crypto/tls` and so KrakenD do), protocol versions, client certificates
//!   required and verified (`enable_mtls`), ALPN `h2` and `http/1.1`.
//! * [`client`]: the root `client_tls` block, upstream connections' `ClientConfig`: the
//!   system's roots plus `ca_certs`, client certificates for mTLS to an origin, and
//!   `allow_insecure_connections`.
//!
//! Files are read when the config is read, so `check` fails on a file `run` could not use,
//! and every error names the file and the cause (`a.pem: cannot read: No such file or
//! directory`; `b.key: does not match the certificate in a.pem`). rustls' `ring` provider
//! throughout.

#![forbid(unsafe_code)]

mod client;
mod pem;
mod server;

use std::sync::Arc;

pub use client::{AcceptAnyCertificate, ClientTls, RawClientTls};
pub use server::{server, RawServerTls};

/// Why a TLS block cannot be used: the key inside the block, and the cause (which names
/// the file when a file is at fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {cause}")]
pub struct TlsError {
    pub key: String,
    pub cause: String,
}

impl TlsError {
    fn new(key: impl Into<String>, cause: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            cause: cause.into(),
        }
    }
}

/// A protocol version as KrakenD spells it. rustls speaks TLS 1.2 and 1.3 only; KrakenD's
/// older names are refused by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
pub enum Version {
    #[serde(rename = "TLS12")]
    Tls12,
    #[serde(rename = "TLS13")]
    Tls13,
}

/// The versions from `min` to `max`; KrakenD's defaults are TLS 1.3 for both.
fn versions(
    min: Option<Version>,
    max: Option<Version>,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, TlsError> {
    let (min, max) = (min.unwrap_or(Version::Tls13), max.unwrap_or(Version::Tls13));
    if min > max {
        return Err(TlsError::new(
            "min_version",
            format!("{min:?} is above max_version {max:?}"),
        ));
    }
    let all = [
        (Version::Tls12, &rustls::version::TLS12),
        (Version::Tls13, &rustls::version::TLS13),
    ];
    Ok(all
        .into_iter()
        .filter(|(version, _)| (min..=max).contains(version))
        .map(|(_, supported)| supported)
        .collect())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests;
