//! A test PKI made with rcgen and written as PEM files (the gateway reads paths, as KrakenD
//! does), and the rustls configs a test's own clients and origins build from it.
//!
//! Three CAs that share nothing: `ca` signs the server certificates, `client_ca` the client
//! certificates, and `wrong_ca` signs one of each that nothing else trusts, for the refusals.
//!
//! ```text
//! let pki = TestPki::new();
//! gateway().root("tls", json!({"public_key": pki.server.cert, "private_key": pki.server.key}));
//! curl(&url).cacert(&pki.ca).http2().run().await;           // status 200, http_version "2"
//! let origin = ScriptedOrigin::start_tls(pki.server_config(&pki.server, ClientAuth::Required)).await;
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::TempDir;

/// The names every server certificate of the PKI holds: what a test dials.
pub const SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// ALPN for a server that speaks HTTP/1.1 only (the origins the gateway dials).
pub const ALPN_HTTP1: &[&[u8]] = &[b"http/1.1"];
/// ALPN of a client or server that prefers HTTP/2, as browsers and the gateway do.
pub const ALPN_H2: &[&[u8]] = &[b"h2", b"http/1.1"];

/// A certificate (with its chain up to, not including, the CA) and its private key, as PEM
/// files.
#[derive(Debug, Clone)]
pub struct CertKey {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Whether a server asks for client certificates (mTLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    /// Required, and verified against the PKI's `client_ca`.
    Required,
}

type Issuer = CertifiedIssuer<'static, KeyPair>;

/// The PKI's files live in one temp folder, removed with it.
pub struct TestPki {
    dir: TempDir,
    server_issuer: Issuer,
    client_issuer: Issuer,
    /// The CA of the server certificates: curl's `--cacert`, `client_tls.ca_certs`.
    pub ca: PathBuf,
    /// For [`SERVER_NAMES`], signed by `ca`.
    pub server: CertKey,
    /// The CA of the client certificates: the gateway's `ca_certs` for `enable_mtls`.
    pub client_ca: PathBuf,
    /// A client certificate (`CN=test-client`) signed by `client_ca`.
    pub client: CertKey,
    /// A CA nobody trusts.
    pub wrong_ca: PathBuf,
    /// For [`SERVER_NAMES`], signed by `wrong_ca`: an origin a gateway trusting `ca` refuses.
    pub wrong_server: CertKey,
    /// Signed by `wrong_ca`: a client certificate mTLS refuses.
    pub wrong_client: CertKey,
}

impl TestPki {
    pub fn new() -> Self {
        let dir = TempDir::new("pki");
        let at = dir.path();
        let server_issuer = new_ca("test server CA");
        let client_issuer = new_ca("test client CA");
        let wrong_issuer = new_ca("wrong CA");
        let (server_usage, client_usage) = (
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        Self {
            ca: write_file(at, "ca.pem", &server_issuer.pem()),
            server: write_leaf(at, "server", &server_issuer, &SERVER_NAMES, &server_usage),
            client_ca: write_file(at, "client-ca.pem", &client_issuer.pem()),
            client: write_leaf(
                at,
                "client",
                &client_issuer,
                &["test-client"],
                &client_usage,
            ),
            wrong_ca: write_file(at, "wrong-ca.pem", &wrong_issuer.pem()),
            wrong_server: write_leaf(
                at,
                "wrong-server",
                &wrong_issuer,
                &SERVER_NAMES,
                &server_usage,
            ),
            wrong_client: write_leaf(
                at,
                "wrong-client",
                &wrong_issuer,
                &["test-client"],
                &client_usage,
            ),
            dir,
            server_issuer,
            client_issuer,
        }
    }

    /// The folder that holds the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Another server certificate signed by `ca`, for `names` (DNS names, wildcards such as
    /// `*.b.test`, or IP addresses), written as `<file>.pem` and `<file>-key.pem`: SNI tests.
    pub fn server_cert(&self, file: &str, names: &[&str]) -> CertKey {
        let usage = ExtendedKeyUsagePurpose::ServerAuth;
        write_leaf(self.dir(), file, &self.server_issuer, names, &usage)
    }

    /// Another client certificate signed by `client_ca`, with `name` as its CN.
    pub fn client_cert(&self, file: &str, name: &str) -> CertKey {
        let usage = ExtendedKeyUsagePurpose::ClientAuth;
        write_leaf(self.dir(), file, &self.client_issuer, &[name], &usage)
    }

    /// Writes `contents` as `name` in the PKI's folder: a file that is not PEM, say.
    pub fn file(&self, name: &str, contents: &str) -> PathBuf {
        write_file(self.dir(), name, contents)
    }

    /// A client that trusts `ca` only and offers `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        self.client_config_with(None, alpn)
    }

    /// A client that trusts `ca` only, offers `alpn` and, when given, shows `cert` (mTLS).
    pub fn client_config_with(
        &self,
        cert: Option<&CertKey>,
        alpn: &[&[u8]],
    ) -> Arc<rustls::ClientConfig> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_root_certificates(roots(&self.ca));
        let mut config = match cert {
            Some(cert) => builder
                .with_client_auth_cert(load_certs(&cert.cert), load_key(&cert.key))
                .expect("a usable client certificate"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// A server showing `cert`, offering `alpn`, with or without mTLS (verified against
    /// `client_ca`).
    pub fn server_config(
        &self,
        cert: &CertKey,
        alpn: &[&[u8]],
        client_auth: ClientAuth,
    ) -> Arc<rustls::ServerConfig> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions");
        let builder = match client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Required => {
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots(&self.client_ca)),
                    provider(),
                )
                .build()
                .expect("a client verifier over the client CA");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(load_certs(&cert.cert), load_key(&cert.key))
            .expect("the certificate and its key match");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// The one crypto provider of the build (ring, as hyper-rustls uses).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file; panics naming the file.
pub fn load_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The private key in a PEM file; panics naming the file.
pub fn load_key(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A trust store of the certificates in `ca`.
pub fn roots(ca: &Path) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(ca) {
        roots
            .add(cert)
            .unwrap_or_else(|e| panic!("{}: not a trust anchor: {e}", ca.display()));
    }
    roots
}

fn new_ca(name: &str) -> Issuer {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names to parse");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().expect("an ECDSA P-256 key");
    CertifiedIssuer::self_signed(params, key).expect("a self-signed CA")
}

fn write_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("writing a PKI file");
    path
}

/// A leaf for `names` (the first is its CN) signed by `issuer`, written as `<file>.pem` and
/// `<file>-key.pem` (PKCS#8).
fn write_leaf(
    dir: &Path,
    file: &str,
    issuer: &Issuer,
    names: &[&str],
    usage: &ExtendedKeyUsagePurpose,
) -> CertKey {
    let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(sans).expect("valid subject alternative names");
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![usage.clone()];
    let key = KeyPair::generate().expect("an ECDSA P-256 key");
    let cert = params.signed_by(&key, issuer).expect("signing a leaf");
    CertKey {
        cert: write_file(dir, &format!("{file}.pem"), &cert.pem()),
        key: write_file(dir, &format!("{file}-key.pem"), &key.serialize_pem()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{ServerName, UnixTime};

    fn verify_server(ca: &Path, cert: &CertKey, name: &str) -> Result<(), rustls::Error> {
        let chain = load_certs(&cert.cert);
        let name = ServerName::try_from(name.to_owned()).unwrap();
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots(ca)), provider())
            .build()
            .unwrap()
            .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    fn verify_client(pki: &TestPki, cert: &CertKey) -> Result<(), rustls::Error> {
        let chain = load_certs(&cert.cert);
        rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots(&pki.client_ca)),
            provider(),
        )
        .build()
        .unwrap()
        .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
        .map(|_| ())
    }

    #[test]
    fn the_server_certificate_verifies_for_its_names_against_its_ca_only() {
        let pki = TestPki::new();
        for name in SERVER_NAMES {
            verify_server(&pki.ca, &pki.server, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let other = verify_server(&pki.ca, &pki.server, "example.test").unwrap_err();
        assert!(other.to_string().contains("not valid for name"), "{other}");
        for (ca, cert) in [(&pki.wrong_ca, &pki.server), (&pki.ca, &pki.wrong_server)] {
            let refused = verify_server(ca, cert, "localhost").unwrap_err();
            assert!(refused.to_string().contains("UnknownIssuer"), "{refused}");
        }
        verify_server(&pki.wrong_ca, &pki.wrong_server, "localhost").unwrap();
    }

    #[test]
    fn more_server_certificates_carry_their_names_wildcards_included() {
        let pki = TestPki::new();
        let b = pki.server_cert("b", &["b.test", "*.b.test"]);
        verify_server(&pki.ca, &b, "b.test").unwrap();
        verify_server(&pki.ca, &b, "x.b.test").unwrap();
        assert!(verify_server(&pki.ca, &b, "localhost").is_err());
        assert!(b.cert.starts_with(pki.dir()) && b.key.exists());
    }

    #[test]
    fn client_certificates_verify_against_the_client_ca_only() {
        let pki = TestPki::new();
        verify_client(&pki, &pki.client).unwrap();
        verify_client(&pki, &pki.client_cert("alice", "alice")).unwrap();
        let error = verify_client(&pki, &pki.wrong_client).unwrap_err();
        assert!(error.to_string().contains("UnknownIssuer"), "{error}");
        // A server certificate is no client's, nor the other way round.
        let error = verify_client(&pki, &pki.server).unwrap_err();
        assert!(
            error.to_string().contains("client authentication"),
            "{error}"
        );
        assert!(verify_server(&pki.ca, &pki.client, "test-client").is_err());
    }

    #[test]
    fn the_files_are_pem_and_go_with_the_pki() {
        let pki = TestPki::new();
        let dir = pki.dir().to_owned();
        for path in [&pki.ca, &pki.server.cert, &pki.client.cert, &pki.wrong_ca] {
            let text = std::fs::read_to_string(path).unwrap();
            assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{text}");
        }
        let key = std::fs::read_to_string(&pki.server.key).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
        drop(pki);
        assert!(!dir.exists());
    }
}
