//! Value formats shared by the host's config and the plugins' config blocks, so that a
//! `"timeout": "1m30s"` or a `"host": ["http://origin:8080"]` means the same everywhere.

#![forbid(unsafe_code)]

pub mod duration;

/// Parses a backend base URL: `http://host[:port]`, with no path or query (a trailing
/// slash is allowed).
pub fn http_base_url(text: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(format!("{text:?} is not an http:// URL"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "{text:?} must be scheme and host only, without a path"
        ));
    }
    Ok(uri)
}

/// The `host:port` to dial for a base URL from [`http_base_url`] (port 80 when it names none).
pub fn dial_addr(uri: &http::Uri) -> String {
    let authority = uri.authority().expect("checked by http_base_url");
    format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let uri = http_base_url("http://origin.internal/").unwrap();
        assert_eq!(dial_addr(&uri), "origin.internal:80");
        assert_eq!(
            dial_addr(&http_base_url("http://[::1]:81").unwrap()),
            "[::1]:81"
        );
        for bad in ["ftp://h", "http://h/path", "http://h?q", "h:80", ""] {
            assert!(http_base_url(bad).is_err(), "{bad}");
        }
    }
}
