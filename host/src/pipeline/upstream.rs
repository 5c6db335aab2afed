//! What of a client's request the pipeline writes upstream, and the check that it is clean.
//!
//! One rule for every backend request of an endpoint: the client headers `input_headers`
//! lets through (and `Content-Type`), never a hop-by-hop one or `Host`; the query
//! parameters `input_query_strings` lets through; the path parameters the route decision
//! captured. Each passes [`wire::clean`] before any backend request is built, so that a
//! value with a control byte (raw or percent-encoded), or a parameter that is `.` or `..`
//! or holds an encoded `/` or `\`, is refused with 400 and nothing reaches a backend. A
//! trailing `/*` capture is checked segment by segment, and may not hold `//`.

use http::{header, HeaderMap, HeaderName, HeaderValue};
use wire::clean;

use super::{Refusal, HOP_BY_HOP};
use crate::config::Endpoint;

/// The client headers an endpoint's backend requests carry.
pub fn headers<'a>(
    endpoint: &'a Endpoint,
    headers: &'a HeaderMap,
) -> impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)> {
    headers.iter().filter(|(name, _)| {
        let hop = HOP_BY_HOP.contains(&name.as_str()) || *name == header::HOST;
        let listed = endpoint.input_headers.allows(name.as_str(), true);
        !hop && (listed || *name == header::CONTENT_TYPE)
    })
}

/// The `name=value` pairs of the client's query string an endpoint forwards, as sent.
pub fn query<'a>(endpoint: &'a Endpoint, query: &'a str) -> impl Iterator<Item = &'a str> {
    query.split('&').filter(|pair| {
        let name = pair.split('=').next().unwrap_or("");
        !name.is_empty() && endpoint.input_query_strings.allows(name, false)
    })
}

/// Whether everything the client gives an endpoint's backends is clean.
pub fn check(
    endpoint: &Endpoint,
    params: &path_template::Params<'_>,
    parts: &http::request::Parts,
) -> Result<(), Refusal> {
    for (name, value) in headers(endpoint, &parts.headers) {
        // The refusal names the header itself (`clean` takes only names it knows).
        if clean::header_value("", value.as_bytes()).is_err() {
            return Err(Refusal::UncleanHeader(name.clone()));
        }
    }
    for pair in query(endpoint, parts.uri.query().unwrap_or("")) {
        clean::query(pair)?;
    }
    for (name, value) in params {
        if *name == path_template::WILDCARD {
            // The rest of a path: each of its segments is one parameter's worth, and none
            // but the last is empty, since an origin that merges slashes (nginx does by
            // default) would read `/{*}` with `/sse/1` as `/sse/1`.
            let mut segments = value.split('/').peekable();
            while let Some(segment) = segments.next() {
                if segment.is_empty() && segments.peek().is_some() {
                    return Err(Refusal::EmptySegment);
                }
                clean::path_param(segment)?;
            }
        } else {
            clean::path_param(value)?;
        }
    }
    Ok(())
}
