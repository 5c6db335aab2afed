//! A test PKI made with rcgen: a CA, and server and client certificates it signs, written
//! as PEM files into a folder removed with the PKI.

use std::path::PathBuf;

use crate::TempDir;

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct TestPki {
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA's certificate, as a file.
    pub ca_cert: PathBuf,
    dir: TempDir,
    issued: std::cell::Cell<u32>,
}

impl TestPki {
    /// A CA named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir = TempDir::new("pki");
        let ca_cert = dir.path().join("ca.pem");
        std::fs::write(&ca_cert, cert.pem()).unwrap();
        Self {
            ca: rcgen::Issuer::new(params, key),
            ca_cert,
            dir,
            issued: std::cell::Cell::new(0),
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, names: &[&str]) -> CertFiles {
        self.issue(names, rcgen::ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate for `name`.
    pub fn client(&self, name: &str) -> CertFiles {
        self.issue(&[name], rcgen::ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A file in the PKI's folder (for broken PEM files).
    pub fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn issue(&self, names: &[&str], usage: rcgen::ExtendedKeyUsagePurpose) -> CertFiles {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0].as_str());
        params.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let n = self.issued.get();
        self.issued.set(n + 1);
        let files = CertFiles {
            cert: self.dir.path().join(format!("{n}.pem")),
            key: self.dir.path().join(format!("{n}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }
}
