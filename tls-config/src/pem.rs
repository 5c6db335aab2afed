//! PEM files, read with errors that name the file and say what is wrong with it.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// The certificates in `path` (at least one).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let named = |cause: String| format!("{}: {cause}", path.display());
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| named(cause(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| named(cause(e)))?;
    if certificates.is_empty() {
        // The iterator finds nothing in a file that is not PEM at all.
        return Err(named("no CERTIFICATE block (not a PEM certificate)".into()));
    }
    Ok(certificates)
}

/// A certificate chain and its private key, checked to belong together: without the
/// check rustls would take the pair and fail every handshake later.
pub fn certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    let chain = certificates(cert)?;
    let named = |cause: String| format!("{}: {cause}", key.display());
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| named(cause(e)))?;
    let signing = super::provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| named(format!("unusable private key: {e}")))?;
    let pair = CertifiedKey::new(chain, signing);
    pair.keys_match().map_err(|e| {
        named(format!(
            "does not match the certificate in {}: {e}",
            cert.display()
        ))
    })?;
    Ok(Arc::new(pair))
}

fn cause(error: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match error {
        Error::Io(e) => format!("cannot read: {e}"),
        Error::NoItemsFound => "no PEM block of the expected kind (not PEM, or not a key)".into(),
        other => format!("not valid PEM: {other:?}"),
    }
}
