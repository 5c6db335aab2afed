//! The blocks as an operator writes them, wrong in each way `check` must name.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use serde_json::json;
use testkit::TestPki;

use super::*;

fn server_tls(block: serde_json::Value) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
    server(&serde_json::from_value(block).unwrap())
}

fn pair(files: &testkit::CertKey) -> serde_json::Value {
    json!({"public_key": files.cert, "private_key": files.key})
}

#[test]
fn bad_files_are_named_with_the_cause() {
    let pki = TestPki::new();
    let good = pki.server_cert("s1", &["a.test"]);
    let other = pki.server_cert("s2", &["b.test"]);
    let not_pem = pki.file("not.pem", "hello\n");
    let missing = Path::new("/nonexistent/cert.pem");
    let cases = [
        (
            json!({"public_key": missing, "private_key": good.key}),
            "public_key: /nonexistent/cert.pem: cannot read: No such file",
        ),
        (
            json!({"public_key": not_pem, "private_key": good.key}),
            "not.pem: no CERTIFICATE block",
        ),
        (
            json!({"public_key": good.cert, "private_key": not_pem}),
            "not.pem: no PEM block of the expected kind",
        ),
        (
            json!({"public_key": good.cert, "private_key": good.cert}),
            ".pem: no PEM block of the expected kind",
        ),
        (
            json!({"keys": [pair(&good), {"public_key": good.cert, "private_key": other.key}]}),
            "keys[1].public_key: ",
        ),
        (
            json!({"public_key": good.cert}),
            "private_key: missing beside public_key",
        ),
        (json!({}), "keys: no certificate"),
        (
            json!({"public_key": good.cert, "private_key": good.key, "enable_mtls": true}),
            "ca_certs: enable_mtls needs",
        ),
        (
            json!({"public_key": good.cert, "private_key": good.key, "min_version": "TLS13", "max_version": "TLS12"}),
            "min_version: Tls13 is above max_version Tls12",
        ),
    ];
    for (block, expected) in cases {
        let error = server_tls(block.clone()).unwrap_err().to_string();
        assert!(
            error.contains(expected),
            "{block}\n  gave: {error}\n  want: {expected}"
        );
    }
    let mismatch =
        server_tls(json!({"public_key": good.cert, "private_key": other.key})).unwrap_err();
    assert!(
        mismatch.cause.contains(&format!(
            "{}: does not match the certificate in {}",
            other.key.display(),
            good.cert.display()
        )),
        "{mismatch}"
    );
    let old = serde_json::from_value::<RawServerTls>(json!({"min_version": "TLS11"})).unwrap_err();
    assert!(
        old.to_string()
            .contains("unknown variant `TLS11`, expected `TLS12` or `TLS13`"),
        "{old}"
    );
    let typo = serde_json::from_value::<RawServerTls>(json!({"enable_mtl": true})).unwrap_err();
    assert!(
        typo.to_string().contains("unknown field `enable_mtl`"),
        "{typo}"
    );
    assert!(server_tls(json!({"disabled": true, "public_key": missing}))
        .unwrap()
        .is_none());
}

/// The certificate a handshake for `sni` gets from `config`, seen by a client that trusts
/// checks nothing (so a fallback certificate is visible as such).
fn served_to(config: Arc<rustls::ServerConfig>, sni: &str) -> Vec<u8> {
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(client::AcceptAnyCertificate(provider())))
        .with_no_client_auth();
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    let mut client = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
    let mut server = rustls::ServerConnection::new(config).unwrap();
    let mut wire = Vec::new();
    for _ in 0..4 {
        wire.clear();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        server.read_tls(&mut wire.as_slice()).unwrap();
        server.process_new_packets().unwrap();
        wire.clear();
        while server.wants_write() {
            server.write_tls(&mut wire).unwrap();
        }
        client.read_tls(&mut wire.as_slice()).unwrap();
        client.process_new_packets().unwrap();
    }
    client.peer_certificates().unwrap()[0].to_vec()
}

#[test]
fn sni_picks_the_pair_and_an_unknown_name_gets_the_first() {
    let pki = TestPki::new();
    let a = pki.server_cert("s3", &["a.test"]);
    let b = pki.server_cert("s4", &["b.test", "*.b.test"]);
    let config = server_tls(json!({"keys": [pair(&a), pair(&b)]}))
        .unwrap()
        .unwrap();
    assert_eq!(
        config.alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    let cert_a = pem::certificates(&a.cert).unwrap()[0].to_vec();
    let cert_b = pem::certificates(&b.cert).unwrap()[0].to_vec();
    assert_eq!(served_to(config.clone(), "a.test"), cert_a);
    assert_eq!(served_to(config.clone(), "b.test"), cert_b);
    assert_eq!(served_to(config.clone(), "x.b.test"), cert_b);
    assert_eq!(served_to(config, "c.test"), cert_a, "Go's fallback");
}

#[test]
fn client_blocks_read_their_files() {
    let pki = TestPki::new();
    let client = pki.client_cert("c5", "gateway");
    let other = pki.client_cert("c6", "other");
    let load = |block: serde_json::Value| ClientTls::load(&serde_json::from_value(block).unwrap());
    let good = load(json!({"ca_certs": [pki.ca], "client_certs": [{"certificate": client.cert, "private_key": client.key}], "disable_system_ca_pool": true})).unwrap();
    assert!(!good.insecure);
    good.client_config();
    let error =
        load(json!({"client_certs": [{"certificate": client.cert, "private_key": other.key}]}))
            .unwrap_err();
    assert!(
        error.to_string().starts_with("client_certs[0]: ")
            && error.cause.contains("does not match"),
        "{error}"
    );
    let error = load(json!({"ca_certs": ["/nonexistent/ca.pem"]})).unwrap_err();
    assert_eq!(error.key, "ca_certs[0]");
    assert!(
        error.cause.contains("/nonexistent/ca.pem: cannot read"),
        "{error}"
    );
}

#[test]
fn disable_system_ca_pool_leaves_only_ca_certs() {
    let pki = TestPki::new();
    let load = |block: serde_json::Value| {
        ClientTls::load(&serde_json::from_value(block).unwrap()).unwrap()
    };
    let own = load(json!({"ca_certs": [pki.ca], "disable_system_ca_pool": true}));
    assert_eq!(own.roots().len(), 1);
    // Debian's ca-certificates, which the system's store is read from.
    let with_system = load(json!({"ca_certs": [pki.ca]}));
    assert!(
        with_system.roots().len() > 1,
        "no system CA certificates found"
    );
    assert_eq!(
        load(json!({"disable_system_ca_pool": true})).roots().len(),
        0
    );
    assert_eq!(own.client_config().alpn_protocols, [b"http/1.1".to_vec()]);
}
