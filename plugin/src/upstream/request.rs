//! What a stream asks its hosts for, made from the client's request head once.
//!
//! Every value a client sends that goes upstream (forwarded header values, its
//! `Last-Event-ID`, the query string, the captured path parameters) passes `wire::clean`
//! when the [`Request`] is made, before anything is dialled; [`Request::bytes`] is the one
//! writer of an upstream request head.

use abi::RequestHead;
use http::Method;
use wire::clean::{self, Unclean};

use crate::config::{LoadBalance, Route, StickyKey};

/// The method of every upstream request, a stream's; its response is framed by it too.
pub const METHOD: Method = Method::GET;

/// A request the plugin will not forward: answered 400 before any upstream is dialled or
/// any fan-out source joined. The reason is logged; the client gets a general one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    Unclean(#[from] Unclean),
    /// Named here: forwarded headers come from the config, `Unclean` names static ones.
    #[error("a control character in the forwarded header {0}")]
    ForwardedHeader(String),
}

/// What to ask every host for: taken from the client's request head, which is then
/// dropped (a stream lives for hours and needs only this).
pub struct Request {
    /// The upstream path and query.
    pub target: String,
    /// The forwarded header lines (`Name: value\r\n`), without `Last-Event-ID`.
    pub headers: Vec<u8>,
    /// Sent as `Last-Event-ID`: the client's (when forwarded) on the first request, the
    /// last event the client received on a resumption.
    pub last_event_id: Option<String>,
    pub sticky_key: Option<Vec<u8>>,
}

impl Request {
    /// The request `head` makes of the route's hosts, once every value copied from it is
    /// clean.
    pub fn new(route: &Route, head: &RequestHead) -> Result<Self, Refused> {
        let mut headers = Vec::new();
        let mut last_event_id = None;
        for name in &route.forward_headers {
            for h in head
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
            {
                if name.eq_ignore_ascii_case("last-event-id") {
                    last_event_id = Some(client_last_event_id(&h.value)?);
                    continue;
                }
                clean::header_value("forwarded", &h.value)
                    .map_err(|_| Refused::ForwardedHeader(name.clone()))?;
                wire::header_line(&mut headers, name, &h.value);
            }
        }
        Ok(Self {
            target: target(route, &head.path, &head.query)?,
            headers,
            last_event_id,
            sticky_key: sticky_key(route, head),
        })
    }

    /// The request head for the host `authority`.
    pub fn bytes(&self, authority: &str) -> Vec<u8> {
        let mut bytes =
            format!("{METHOD} {} HTTP/1.1\r\nHost: {authority}\r\n", self.target).into_bytes();
        bytes.extend_from_slice(&self.headers);
        if let Some(id) = self.last_event_id.as_deref().filter(|id| !id.is_empty()) {
            wire::header_line(&mut bytes, "Last-Event-ID", id.as_bytes());
        }
        // One stream per connection: nothing to pool, and the close ends an unframed body.
        bytes.extend_from_slice(b"Connection: close\r\n\r\n");
        bytes
    }
}

/// A client's `Last-Event-ID` header value, if it is clean.
pub fn client_last_event_id(value: &[u8]) -> Result<String, Unclean> {
    let id = String::from_utf8_lossy(value).into_owned();
    clean::last_event_id(&id)?;
    Ok(id)
}

/// The upstream path and query: the route's pattern with the captured params, plus the
/// client's query string; refused if any of them is not clean.
pub fn target(route: &Route, path: &str, query: &str) -> Result<String, Unclean> {
    let params = route.template.matches(path).unwrap_or_default();
    for (_, value) in &params {
        // A trailing `/*` captures several segments: each must stay one.
        for segment in value.split('/') {
            clean::path_param(segment)?;
        }
    }
    clean::query(query)?;
    let mut target = path_template::substitute(&route.backend_url_pattern, &params);
    if !query.is_empty() {
        target.push(if target.contains('?') { '&' } else { '?' });
        target.push_str(query);
    }
    Ok(target)
}

/// The key a sticky route hashes; `None` (round robin) when the request lacks it.
fn sticky_key(route: &Route, head: &RequestHead) -> Option<Vec<u8>> {
    let LoadBalance::Sticky(key) = &route.load_balance else {
        return None;
    };
    match key {
        StickyKey::Header(name) => head.header(name).map(<[u8]>::to_vec),
        StickyKey::Cookie(name) => head
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
            .find_map(|h| wire::cookie(&h.value, name))
            .map(<[u8]>::to_vec),
        StickyKey::Ip => {
            let peer = head.peer.as_str();
            let ip = peer.rsplit_once(':').map_or(peer, |(ip, _)| ip);
            Some(ip.as_bytes().to_vec())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(block: &str) -> Route {
        crate::config::parse(block).unwrap().routes.remove(0)
    }

    fn head(path: &str, query: &str, headers: &[(&str, &[u8])]) -> RequestHead {
        RequestHead {
            method: "GET".into(),
            path: path.into(),
            query: query.into(),
            headers: headers
                .iter()
                .map(|(name, value)| abi::Header {
                    name: (*name).into(),
                    value: value.to_vec().into(),
                })
                .collect(),
            peer: "127.0.0.1:1".into(),
        }
    }

    #[test]
    fn every_value_copied_upstream_is_checked_when_the_request_is_made() {
        let route = route(
            r#"{"endpoint": "/s/{id}", "backend_url_pattern": "/e/{id}", "backend_host": "http://h",
                "forward_headers": ["Last-Event-ID", "X-Trace"]}"#,
        );
        let made = |path, query, headers: &[(&str, &[u8])]| {
            Request::new(&route, &head(path, query, headers))
                .map(|r| String::from_utf8(r.bytes("h")).unwrap())
        };
        assert_eq!(
            made("/s/a", "x=1", &[("x-trace", b"t\t1"), ("last-event-id", b"4")]).unwrap(),
            "GET /e/a?x=1 HTTP/1.1\r\nHost: h\r\nX-Trace: t\t1\r\nLast-Event-ID: 4\r\nConnection: close\r\n\r\n"
        );
        for (headers, why) in [
            (
                &[("x-trace", &b"a\r\nInjected: 1"[..])][..],
                Refused::ForwardedHeader("X-Trace".into()),
            ),
            (
                &[("X-TRACE", b"\0")],
                Refused::ForwardedHeader("X-Trace".into()),
            ),
            (&[("last-event-id", b"7\n")], Unclean::LastEventId.into()),
            (&[("last-event-id", b"7\x1b")], Unclean::LastEventId.into()),
        ] {
            assert_eq!(made("/s/a", "", headers).err(), Some(why), "{headers:?}");
        }
        assert_eq!(
            made("/s/a", "x=%0d%0aGET%20/", &[]).err(),
            Some(Unclean::Query.into())
        );
        assert_eq!(
            made("/s/..", "", &[]).err(),
            Some(Unclean::PathParamDots.into())
        );
        assert_eq!(
            made("/s/a%2F..", "", &[]).err(),
            Some(Unclean::PathParamSeparator.into())
        );
    }

    #[test]
    fn each_segment_a_wildcard_captures_is_checked() {
        let route = route(
            r#"{"endpoint": "/n/*", "backend_url_pattern": "/feed/{*}", "backend_host": "http://h"}"#,
        );
        assert_eq!(
            target(&route, "/n/a/b.c/...", "").unwrap(),
            "/feed/a/b.c/..."
        );
        assert_eq!(target(&route, "/n/a/../b", ""), Err(Unclean::PathParamDots));
        assert_eq!(target(&route, "/n/a/./b", ""), Err(Unclean::PathParamDots));
    }
}
