//! The root `tls` block: a listener's rustls `ServerConfig`.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use serde::Deserialize;

use crate::{pem, provider, versions, TlsError, Version};

/// The block as KrakenD writes it. Unknown keys are refused: a misspelt `enable_mtls`
/// must not leave a listener open to every client.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerTls {
    pub public_key: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    #[serde(default)]
    pub keys: Vec<RawKeyPair>,
    pub min_version: Option<Version>,
    pub max_version: Option<Version>,
    #[serde(default)]
    pub enable_mtls: bool,
    #[serde(default)]
    pub ca_certs: Vec<PathBuf>,
    #[serde(default)]
    pub disabled: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeyPair {
    pub public_key: PathBuf,
    pub private_key: PathBuf,
}

/// ALPN, most preferred first: a client that speaks HTTP/2 gets it.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The listener's config, or `None` when the block says `disabled`. Paths are relative to
/// the working directory, as in KrakenD.
pub fn server(raw: &RawServerTls) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
    if raw.disabled {
        return Ok(None);
    }
    let mut pairs = Vec::new();
    match (&raw.public_key, &raw.private_key) {
        (Some(cert), Some(key)) => pairs.push(pair("public_key", cert, key)?),
        (None, None) => {}
        (Some(_), None) => return Err(TlsError::new("private_key", "missing beside public_key")),
        (None, Some(_)) => return Err(TlsError::new("public_key", "missing beside private_key")),
    }
    for (i, keys) in raw.keys.iter().enumerate() {
        let at = format!("keys[{i}].public_key");
        pairs.push(pair(&at, &keys.public_key, &keys.private_key)?);
    }
    if pairs.is_empty() {
        return Err(TlsError::new(
            "keys",
            "no certificate: set public_key and private_key, or keys",
        ));
    }
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&versions(raw.min_version, raw.max_version)?)
        .map_err(|e| TlsError::new("min_version", e.to_string()))?;
    let builder = match (raw.enable_mtls, raw.ca_certs.is_empty()) {
        (false, _) => builder.with_no_client_auth(),
        (true, true) => return Err(TlsError::new(
            "ca_certs",
            "enable_mtls needs the CA certificates that client certificates are checked against",
        )),
        (true, false) => {
            let mut roots = rustls::RootCertStore::empty();
            for (i, file) in raw.ca_certs.iter().enumerate() {
                let at = format!("ca_certs[{i}]");
                for certificate in pem::certificates(file).map_err(|e| TlsError::new(&at, e))? {
                    roots
                        .add(certificate)
                        .map_err(|e| TlsError::new(&at, format!("{}: {e}", file.display())))?;
                }
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::new("ca_certs", e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(SniOrFirst(pairs)));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Some(Arc::new(config)))
}

fn pair(
    at: &str,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let pair = pem::certified_key(cert, key).map_err(|e| TlsError::new(at, e))?;
    // Parsed once here, so that a certificate the resolver could not read fails `check`.
    webpki::EndEntityCert::try_from(
        pair.end_entity_cert()
            .map_err(|e| TlsError::new(at, e.to_string()))?,
    )
    .map_err(|e| {
        TlsError::new(
            at,
            format!("{}: not a usable certificate: {e}", cert.display()),
        )
    })?;
    Ok(pair)
}

/// Picks the first pair whose certificate is valid for the client's SNI name; the first
/// pair when none is, or when the client sent no name (an IP address): Go's behaviour,
/// where rustls' own resolver fails the handshake. The client's own name check decides.
#[derive(Debug)]
struct SniOrFirst(Vec<Arc<CertifiedKey>>);

impl ResolvesServerCert for SniOrFirst {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello
            .server_name()
            .and_then(|name| ServerName::try_from(name).ok());
        let valid_for = |pair: &&Arc<CertifiedKey>| {
            let (Some(name), Ok(der)) = (&name, pair.end_entity_cert()) else {
                return false;
            };
            webpki::EndEntityCert::try_from(der)
                .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(name).is_ok())
        };
        self.0.iter().find(valid_for).or(self.0.first()).cloned()
    }
}
