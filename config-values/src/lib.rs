//! Value formats shared by the host's config and the plugins' config blocks, so that a
//! `"timeout": "1m30s"` or a `"host": ["https://origin:8443"]` means the same everywhere.

#![forbid(unsafe_code)]

pub mod duration;

/// Parses a backend base URL: `http://` or `https://host[:port]`, with no path or query
/// (a trailing slash is allowed).
pub fn base_url(text: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(format!("{text:?} is not an http:// or https:// URL"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "{text:?} must be scheme and host only, without a path"
        ));
    }
    Ok(uri)
}

/// The `host:port` to dial for a base URL from [`base_url`] (port 80 for `http`, 443 for
/// `https` when it names none).
pub fn dial_addr(uri: &http::Uri) -> String {
    let authority = uri.authority().expect("checked by base_url");
    let default = if uri.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(default)
    )
}

/// For an `https` base URL from [`base_url`], the host's name as TLS wants it (sent as
/// SNI when it is a name, and checked against the certificate): an IPv6 address without
/// its brackets. `None` for `http`.
pub fn tls_name(uri: &http::Uri) -> Option<String> {
    let host = uri.host().expect("checked by base_url");
    (uri.scheme_str() == Some("https")).then(|| {
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let uri = base_url("http://origin.internal/").unwrap();
        assert_eq!(dial_addr(&uri), "origin.internal:80");
        assert_eq!(tls_name(&uri), None);
        assert_eq!(dial_addr(&base_url("http://[::1]:81").unwrap()), "[::1]:81");
        let tls = base_url("https://origin.internal").unwrap();
        assert_eq!(dial_addr(&tls), "origin.internal:443");
        assert_eq!(tls_name(&tls).as_deref(), Some("origin.internal"));
        let v6 = base_url("HTTPS://[::1]:8443").unwrap();
        assert_eq!(tls_name(&v6).as_deref(), Some("::1"));
        for bad in ["ftp://h", "http://h/path", "https://h?q", "h:80", ""] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
    }
}
