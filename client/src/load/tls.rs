//! The load tool's TLS client (rustls with ring): which certificates it trusts, and the
//! ALPN it offers, one config shared by every connection of a run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::ClientConfig;

/// Which server certificates a run accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Those that chain to a CA in this PEM file (and only those, as curl's `--cacert`).
    Ca(PathBuf),
    /// Any (`--insecure`): the handshake's signatures are still checked, not who signed
    /// the certificate nor for which name.
    Insecure,
}

/// Why the TLS client cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}: cannot read: {1}")]
    Read(PathBuf, String),
    #[error("{0}: no CERTIFICATE block in the file")]
    NoCertificate(PathBuf),
    #[error("{0}: not a usable CA certificate: {1}")]
    BadCa(PathBuf, rustls::Error),
}

/// A client config that trusts `trust` and offers `alpn` (`h2`, or `http/1.1`).
pub fn client_config(trust: &Trust, alpn: &[u8]) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let mut config = match trust {
        Trust::Ca(path) => builder
            .with_root_certificates(roots(path)?)
            .with_no_client_auth(),
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(tls_config::AcceptAnyCertificate(provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(config))
}

fn roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let read = |e: rustls::pki_types::pem::Error| TlsError::Read(path.into(), e.to_string());
    let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<_, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.into()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| TlsError::BadCa(path.into(), e))?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_that_cannot_serve_is_refused_naming_it() {
        let pki = testkit::TestPki::new();
        let missing = pki.dir().join("missing.pem");
        let error = client_config(&Trust::Ca(missing.clone()), b"h2").unwrap_err();
        assert!(
            matches!(&error, TlsError::Read(path, _) if *path == missing),
            "{error}"
        );
        let not_pem = pki.file("not-pem.txt", "hello");
        let error = client_config(&Trust::Ca(not_pem.clone()), b"h2").unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("{}: no CERTIFICATE block in the file", not_pem.display())
        );
        // A key file holds no certificate either.
        let error = client_config(&Trust::Ca(pki.server.key.clone()), b"h2").unwrap_err();
        assert!(matches!(error, TlsError::NoCertificate(_)), "{error}");
    }

    #[test]
    fn the_config_offers_the_one_protocol_asked_for() {
        let pki = testkit::TestPki::new();
        let config = client_config(&Trust::Ca(pki.ca.clone()), b"http/1.1").unwrap();
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
        let config = client_config(&Trust::Insecure, b"h2").unwrap();
        assert_eq!(config.alpn_protocols, [b"h2".to_vec()]);
    }
}
