//! The stream URL the load tool is given, `http://` or `https://`: where to dial, what to
//! send as `Host` (`:authority`) and as the request target, and the name TLS verifies.

use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// A parsed `http(s)://host[:port][/path][?query]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamUrl {
    pub tls: bool,
    /// The host without IPv6 brackets: the certificate must be valid for it, and SNI
    /// carries it when it is a name.
    pub host: String,
    pub port: u16,
    /// `host[:port]` as written: `Host` over HTTP/1.1, `:authority` over HTTP/2.
    pub authority: String,
    /// Path and query; `/` when the URL has neither.
    pub target: String,
}

/// Why a URL cannot be loaded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("{0:?}: only http:// and https:// URLs")]
    Scheme(String),
    #[error("{0:?}: no host")]
    NoHost(String),
    #[error("{0:?}: the port must be 1 to 65535")]
    Port(String),
    #[error("{0:?}: user names and passwords in URLs are not supported")]
    UserInfo(String),
    #[error("{0:?}: an IPv6 address needs its closing ]")]
    Bracket(String),
    #[error("{0} does not resolve: {1}")]
    Resolve(String, String),
}

impl FromStr for StreamUrl {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<Self, UrlError> {
        let scheme_end = url
            .find("://")
            .ok_or_else(|| UrlError::Scheme(url.into()))?;
        let tls = match url[..scheme_end].to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            _ => return Err(UrlError::Scheme(url.into())),
        };
        let rest = &url[scheme_end + 3..];
        let (authority, target) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
        if authority.contains('@') {
            return Err(UrlError::UserInfo(url.into()));
        }
        let (host, port) =
            split_host_port(authority).ok_or_else(|| UrlError::Bracket(url.into()))?;
        if host.is_empty() {
            return Err(UrlError::NoHost(url.into()));
        }
        let port = match port {
            None => {
                if tls {
                    443
                } else {
                    80
                }
            }
            Some(port) => port
                .parse()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| UrlError::Port(url.into()))?,
        };
        // A fragment is the client's own; it never goes on the wire.
        let target = target.split('#').next().unwrap_or_default();
        Ok(Self {
            tls,
            host: host.into(),
            port,
            authority: authority.into(),
            target: match target.strip_prefix('?') {
                Some(_) => format!("/{target}"),
                None if target.is_empty() => "/".into(),
                None => target.into(),
            },
        })
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; `None` for an unclosed bracket.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(port) => Some((host, Some(port))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    Some(match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

impl StreamUrl {
    /// The first address the host resolves to.
    pub fn resolve(&self) -> Result<SocketAddr, UrlError> {
        let unresolved = |cause: String| UrlError::Resolve(self.authority.clone(), cause);
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| unresolved(e.to_string()))?
            .next()
            .ok_or_else(|| unresolved("no address".into()))
    }

    /// The absolute URI of an HTTP/2 request (`:scheme`, `:authority`, `:path`).
    pub fn uri(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority, self.target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> StreamUrl {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn the_scheme_decides_tls_and_the_default_port() {
        let plain = url("http://127.0.0.1:9081/bench/s1?rate=20&size=100");
        assert_eq!(
            plain,
            StreamUrl {
                tls: false,
                host: "127.0.0.1".into(),
                port: 9081,
                authority: "127.0.0.1:9081".into(),
                target: "/bench/s1?rate=20&size=100".into(),
            }
        );
        let secure = url("HTTPS://localhost/sse/a");
        assert!(secure.tls);
        assert_eq!((secure.host.as_str(), secure.port), ("localhost", 443));
        assert_eq!(secure.authority, "localhost");
        assert_eq!(url("http://h").port, 80);
        assert_eq!(secure.uri(), "https://localhost/sse/a");
    }

    #[test]
    fn the_target_is_at_least_a_slash_and_never_the_fragment() {
        assert_eq!(url("http://h:1").target, "/");
        assert_eq!(url("http://h:1?x=1").target, "/?x=1");
        assert_eq!(url("http://h:1/a#frag").target, "/a");
        assert_eq!(url("http://h:1#frag").target, "/");
        assert_eq!(url("http://h:1/a?b=1#c").target, "/a?b=1");
    }

    #[test]
    fn ipv6_hosts_lose_their_brackets_but_not_in_the_authority() {
        let v6 = url("https://[::1]:8443/s");
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 8443));
        assert_eq!(v6.authority, "[::1]:8443");
        assert_eq!(url("http://[::1]/").port, 80);
        assert_eq!(v6.resolve().unwrap(), "[::1]:8443".parse().unwrap());
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let err = |s: &str| s.parse::<StreamUrl>().unwrap_err();
        assert_eq!(err("ftp://h/"), UrlError::Scheme("ftp://h/".into()));
        assert_eq!(
            err("localhost:8080/x"),
            UrlError::Scheme("localhost:8080/x".into())
        );
        assert_eq!(err("http:///x"), UrlError::NoHost("http:///x".into()));
        assert_eq!(err("http://:80/x"), UrlError::NoHost("http://:80/x".into()));
        for port in ["0", "65536", "x", ""] {
            let u = format!("http://h:{port}/");
            assert_eq!(err(&u), UrlError::Port(u.clone()));
        }
        assert_eq!(
            err("https://u:p@h/"),
            UrlError::UserInfo("https://u:p@h/".into())
        );
        assert_eq!(
            err("http://[::1/"),
            UrlError::Bracket("http://[::1/".into())
        );
        assert_eq!(
            err("http://[::1]x/"),
            UrlError::Bracket("http://[::1]x/".into())
        );
    }
}
