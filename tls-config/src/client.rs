//! The root `client_tls` block: upstream connections' rustls `ClientConfig`.
//!
//! The files are read with the config ([`ClientTls::load`]); the system's roots only when
//! the config is built ([`ClientTls::client_config`], once at start): loading them took
//! 3-5 ms here, and once 7.4 s on a cold cache, which no connection should wait for.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Deserialize;

use crate::{pem, provider, versions, TlsError, Version};

/// The block as KrakenD writes it; unknown keys are refused.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientTls {
    #[serde(default)]
    pub allow_insecure_connections: bool,
    #[serde(default)]
    pub ca_certs: Vec<PathBuf>,
    #[serde(default)]
    pub client_certs: Vec<RawClientCert>,
    #[serde(default)]
    pub disable_system_ca_pool: bool,
    pub min_version: Option<Version>,
    pub max_version: Option<Version>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientCert {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

/// `client_tls` with its files read and checked.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// `allow_insecure_connections`: any server certificate is taken.
    pub insecure: bool,
    system_roots: bool,
    ca_certs: Vec<CertificateDer<'static>>,
    client_certs: Vec<Arc<CertifiedKey>>,
    versions: Vec<&'static rustls::SupportedProtocolVersion>,
}

impl Default for ClientTls {
    /// No block: the system's roots, TLS 1.2 and 1.3 (what origins speak; KrakenD's
    /// client default too).
    fn default() -> Self {
        Self::load(&RawClientTls::default()).expect("the default reads no file")
    }
}

impl ClientTls {
    pub fn load(raw: &RawClientTls) -> Result<Self, TlsError> {
        let mut ca_certs = Vec::new();
        for (i, file) in raw.ca_certs.iter().enumerate() {
            ca_certs.extend(
                pem::certificates(file).map_err(|e| TlsError::new(format!("ca_certs[{i}]"), e))?,
            );
        }
        let client_certs = raw
            .client_certs
            .iter()
            .enumerate()
            .map(|(i, pair)| {
                pem::certified_key(&pair.certificate, &pair.private_key)
                    .map_err(|e| TlsError::new(format!("client_certs[{i}]"), e))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            insecure: raw.allow_insecure_connections,
            system_roots: !raw.disable_system_ca_pool,
            ca_certs,
            client_certs,
            versions: versions(raw.min_version.or(Some(Version::Tls12)), raw.max_version)?,
        })
    }

    /// The config every upstream connection shares: its roots ([`ClientTls::roots`]),
    /// versions, client certificates, and ALPN `http/1.1`.
    pub fn client_config(&self) -> rustls::ClientConfig {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&self.versions)
            .expect("ring supports TLS 1.2 and 1.3");
        let builder = if self.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
        } else {
            builder.with_root_certificates(self.roots())
        };
        let mut config = match self.client_certs.len() {
            0 => builder.with_no_client_auth(),
            _ => {
                builder.with_client_cert_resolver(Arc::new(FirstUsable(self.client_certs.clone())))
            }
        };
        // The gateway speaks HTTP/1.1 to its origins; saying so lets an origin that
        // prefers HTTP/2 answer in the protocol asked for.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    }

    /// The trusted CAs: the system's (unless `disable_system_ca_pool`) and `ca_certs`.
    /// Roots the system holds but rustls cannot use are logged, not fatal.
    pub(crate) fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        if self.system_roots {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!("client_tls: reading the system's CA certificates: {error}");
            }
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            if ignored > 0 {
                tracing::warn!(
                    "client_tls: {ignored} of the system's CA certificates are unusable"
                );
            }
            tracing::debug!("client_tls: {added} system CA certificates");
        }
        let (_, ignored) = roots.add_parsable_certificates(self.ca_certs.iter().cloned());
        if ignored > 0 {
            tracing::warn!("client_tls.ca_certs: {ignored} certificates are not usable as CAs");
        }
        roots
    }
}

/// Of several client certificates, the first whose key can sign with a scheme the origin
/// accepts (Go, and so KrakenD, also looks at the origin's CA hints).
#[derive(Debug)]
struct FirstUsable(Vec<Arc<CertifiedKey>>);

impl ResolvesClientCert for FirstUsable {
    fn resolve(&self, _: &[&[u8]], schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0
            .iter()
            .find(|pair| pair.key.choose_scheme(schemes).is_some())
            .cloned()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// `allow_insecure_connections` (and the load tool's `--insecure`): any certificate chain
/// for any name. The handshake's signatures are still checked, so it is a real handshake
/// with whoever holds the key.
#[derive(Debug)]
pub struct AcceptAnyCertificate(pub Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
