//! curl as the test's HTTP client for TLS and HTTP/2: the real thing, as users run it.
//!
//! ```text
//! let out = curl(&format!("https://localhost:{port}/sse/a")).cacert(&pki.ca).http2().run().await;
//! assert_eq!((out.status, out.http_version.as_str()), (200, "2"));
//! let mut live = curl(&url).cacert(&pki.ca).spawn();  // the body as it arrives
//! live.read_until(b"id: 2\n").await;
//! ```
//! The body goes to stdout; curl's own error and, at the end, `%{http_code}` and
//! `%{http_version}` go to stderr (`-w '%{stderr}...'`), so that the body is exactly what
//! was received.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::timeout;

use crate::raw::{read_into, read_until_count, Receiver};
use crate::{CertKey, STEP};

/// What curl writes last on stderr: `%{http_code} %{http_version}`.
const RESULT_MARKER: &str = "curl-result: ";

/// `curl -sS -N URL`, with the options added below; `--max-time` is [`STEP`] unless set.
pub fn curl(url: &str) -> Curl {
    Curl {
        url: url.to_owned(),
        args: Vec::new(),
        max_time: STEP,
    }
}

pub struct Curl {
    url: String,
    args: Vec<OsString>,
    max_time: Duration,
}

/// A finished transfer.
#[derive(Debug)]
pub struct CurlOutput {
    /// curl's exit code: 0, or 28 when `--max-time` ended a stream, 35/60 for TLS
    /// failures, 56 for a reset...
    pub exit_code: i32,
    /// `%{http_code}`: 0 when no response head arrived.
    pub status: u16,
    /// `%{http_version}`: `1.1` or `2` (`0` when no response arrived).
    pub http_version: String,
    pub body: Vec<u8>,
    /// What curl printed besides the result line (`curl: (60) SSL certificate problem ...`).
    pub stderr: String,
}

impl Curl {
    /// Trusts this CA (curl then trusts no other).
    pub fn cacert(self, ca: &Path) -> Self {
        self.arg("--cacert").arg(ca)
    }

    /// HTTP/2 by ALPN over TLS (curl falls back to HTTP/1.1 if the server does not choose it).
    pub fn http2(self) -> Self {
        self.arg("--http2")
    }

    /// Cleartext HTTP/2 without an upgrade (h2c).
    pub fn http2_prior_knowledge(self) -> Self {
        self.arg("--http2-prior-knowledge")
    }

    /// HTTP/1.1 only (no `h2` in ALPN).
    pub fn http1_1(self) -> Self {
        self.arg("--http1.1")
    }

    /// Shows this client certificate (mTLS).
    pub fn cert(self, cert: &CertKey) -> Self {
        self.arg("--cert")
            .arg(&cert.cert)
            .arg("--key")
            .arg(&cert.key)
    }

    /// A request header, `Name: value`.
    pub fn header(self, line: &str) -> Self {
        self.arg("-H").arg(line)
    }

    /// Dials `addr` for `host` (`--resolve host:port:addr`): a name to send by SNI.
    pub fn resolve(self, host: &str, addr: SocketAddr) -> Self {
        let resolve = format!("{host}:{}:{}", addr.port(), addr.ip());
        self.arg("--resolve").arg(resolve)
    }

    /// Ends the transfer after `limit` (exit code 28), for streams that do not end.
    pub fn max_time(mut self, limit: Duration) -> Self {
        self.max_time = limit;
        self
    }

    /// Any other curl argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Starts curl; the body is read from [`CurlStream`] as it arrives.
    pub fn spawn(self) -> CurlStream {
        let write_out = format!("%{{stderr}}\n{RESULT_MARKER}%{{http_code}} %{{http_version}}\n");
        let mut child = Command::new("curl")
            .args(["-sS", "-N", "--max-time"])
            .arg(format!("{:.3}", self.max_time.as_secs_f64()))
            .arg("-w")
            .arg(write_out)
            .args(&self.args)
            .arg(&self.url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("running curl (scripts/test-deps.sh installs it)");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        CurlStream {
            child,
            stdout,
            received: Vec::new(),
        }
    }

    /// Runs curl to the end of the transfer.
    pub async fn run(self) -> CurlOutput {
        self.spawn().finish().await
    }
}

impl Receiver for CurlStream {
    fn received(&self) -> &[u8] {
        &self.received
    }

    async fn read_more(&mut self) -> bool {
        read_into(&mut self.stdout, &mut self.received).await
    }
}

/// A running curl whose body is read as it arrives.
pub struct CurlStream {
    child: Child,
    stdout: BufReader<ChildStdout>,
    /// The body so far.
    pub received: Vec<u8>,
}

impl CurlStream {
    /// Reads until the body contains `needle`; panics after [`STEP`].
    pub async fn read_until(&mut self, needle: &[u8]) -> &[u8] {
        read_until_count(self, needle, 1).await;
        &self.received
    }

    /// Waits for curl to exit (its `--max-time` bounds it) and returns the whole transfer.
    pub async fn finish(mut self) -> CurlOutput {
        let mut stderr = self.child.stderr.take().expect("piped stderr");
        let mut err = Vec::new();
        let read = async {
            let (body, err) = tokio::join!(
                self.stdout.read_to_end(&mut self.received),
                stderr.read_to_end(&mut err)
            );
            body.and(err)
        };
        timeout(STEP + STEP, read)
            .await
            .expect("curl did not exit")
            .expect("reading curl's output");
        let status = self.child.wait().await.expect("waiting for curl");
        let err = String::from_utf8_lossy(&err).into_owned();
        let (rest, result) = err
            .rsplit_once(RESULT_MARKER)
            .unwrap_or_else(|| panic!("curl printed no result line: {err}"));
        let mut fields = result.split_whitespace();
        CurlOutput {
            exit_code: status.code().unwrap_or(-1),
            status: fields.next().and_then(|s| s.parse().ok()).unwrap_or(0),
            http_version: fields.next().unwrap_or("").to_owned(),
            body: self.received,
            stderr: rest.trim().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientAuth, H2Origin, ScriptedOrigin, TestPki, ALPN_H2, ALPN_HTTP1};

    async fn https_origin(
        pki: &TestPki,
        cert: &CertKey,
        client_auth: ClientAuth,
    ) -> ScriptedOrigin {
        ScriptedOrigin::start_tls(pki.server_config(cert, ALPN_HTTP1, client_auth)).await
    }

    /// Answers the next request with `204`, closing cleanly; the client's certificate count.
    async fn no_content(origin: &mut ScriptedOrigin) -> usize {
        let mut conn = origin.accept().await;
        let certificates = conn.client_certificates;
        conn.send(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        conn.close().await;
        certificates
    }

    #[tokio::test]
    async fn over_tls_curl_gets_the_body_live_with_status_and_version() {
        let pki = TestPki::new();
        let mut origin = https_origin(&pki, &pki.server, ClientAuth::None).await;
        let mut live = curl(&format!("{}/events", origin.url_with_host("localhost")))
            .cacert(&pki.ca)
            .spawn();
        let mut conn = origin.accept().await;
        assert!(
            conn.head.starts_with("GET /events HTTP/1.1\r\n"),
            "{}",
            conn.head
        );
        conn.send_event_stream_head().await;
        conn.send(b"id: 1\ndata: one\n\n").await;
        // Live: the first event is there before the origin sends the second.
        live.read_until(b"data: one\n\n").await;
        conn.send(b"id: 2\ndata: two\n\n").await;
        conn.close().await;
        let out = live.finish().await;
        assert_eq!((out.exit_code, out.status), (0, 200), "{}", out.stderr);
        assert_eq!(out.http_version, "1.1");
        assert_eq!(out.body, b"id: 1\ndata: one\n\nid: 2\ndata: two\n\n");
    }

    #[tokio::test]
    async fn curl_refuses_an_origin_it_does_not_trust_and_says_why() {
        let pki = TestPki::new();
        let origin = https_origin(&pki, &pki.server, ClientAuth::None).await;
        let out = curl(&origin.url_with_host("localhost"))
            .cacert(&pki.wrong_ca)
            .run()
            .await;
        assert_eq!((out.exit_code, out.status), (60, 0), "{out:?}");
        assert!(out.stderr.contains("certificate"), "{}", out.stderr);
    }

    #[tokio::test]
    async fn curl_shows_its_client_certificate_to_an_mtls_origin() {
        let pki = TestPki::new();
        let mut origin = https_origin(&pki, &pki.server, ClientAuth::Required).await;
        let run = curl(&origin.url()).cacert(&pki.ca).cert(&pki.client).run();
        let (out, certificates) = tokio::join!(run, no_content(&mut origin));
        assert_eq!((out.status, certificates), (204, 1), "{out:?}");
    }

    #[tokio::test]
    async fn curl_dials_a_resolved_name_and_verifies_the_certificate_for_it() {
        let pki = TestPki::new();
        let named = pki.server_cert("named", &["gateway.test"]);
        let mut origin = https_origin(&pki, &named, ClientAuth::None).await;
        let run = curl(&origin.url_with_host("gateway.test"))
            .cacert(&pki.ca)
            .resolve("gateway.test", origin.addr)
            .run();
        let (out, _) = tokio::join!(run, no_content(&mut origin));
        assert_eq!(out.status, 204, "{out:?}");
    }

    #[tokio::test]
    async fn curl_speaks_http2_by_alpn_and_with_prior_knowledge() {
        let pki = TestPki::new();
        let tls = pki.server_config(&pki.server, ALPN_H2, ClientAuth::None);
        for (mut origin, h2c) in [
            (H2Origin::start(Some(tls)).await, false),
            (H2Origin::start(None).await, true),
        ] {
            let url = format!("{}/h2", origin.url());
            let run = if h2c {
                curl(&url).http2_prior_knowledge()
            } else {
                curl(&url).cacert(&pki.ca).http2()
            }
            .run();
            let answer = async {
                let mut request = origin.accept().await;
                request.send_event_stream_head(200);
                request.send(b"data: multiplexed\n\n");
                request.finish();
            };
            let (out, ()) = tokio::join!(run, answer);
            assert_eq!(
                (out.status, out.http_version.as_str()),
                (200, "2"),
                "{out:?}"
            );
            assert_eq!(out.body, b"data: multiplexed\n\n");
        }
    }
}
