//! Path templates in KrakenD's style, shared by the host's endpoints and the plugin's routes.
//!
//! A template such as `/sse/{id}` matches a path with the same number of segments whose
//! literal segments are equal; each `{name}` captures one non-empty segment. A trailing
//! `/*` (as in `/notifications/*`) matches whatever follows, captured as `{*}`. The captures
//! are substituted into a backend pattern such as `/events-stream/{id}`.
//!
//! When several templates match a path, [`Template::specificity`] orders them: segment by
//! segment from the left, a literal beats a parameter, which beats the wildcard.
//! A literal segment matches however it is percent-encoded (`/%73se` is `/sse`), as an
//! origin that decodes paths would read it; captures are given as sent.

#![forbid(unsafe_code)]

/// Why a template was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("must start with '/'")]
    NoLeadingSlash,
    #[error("segment {0:?} is not a literal or a single {{param}}")]
    BadSegment(String),
    #[error("parameter {{{0}}} appears twice")]
    DuplicateParam(String),
    #[error("'*' is allowed only as the last segment")]
    WildcardNotLast,
}

/// The name a wildcard's capture goes by in backend patterns: `{*}`.
pub const WILDCARD: &str = "*";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Wildcard,
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

/// Values captured by a match, in template order.
pub type Params<'p> = Vec<(&'p str, &'p str)>;

impl Template {
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let rest = template
            .strip_prefix('/')
            .ok_or(TemplateError::NoLeadingSlash)?;
        let mut segments = Vec::new();
        for raw in rest.split('/') {
            if segments.last() == Some(&Segment::Wildcard) {
                return Err(TemplateError::WildcardNotLast);
            }
            let segment = match raw.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) if is_param_name(name) => {
                    if segments.contains(&Segment::Param(name.to_owned())) {
                        return Err(TemplateError::DuplicateParam(name.to_owned()));
                    }
                    Segment::Param(name.to_owned())
                }
                Some(_) => return Err(TemplateError::BadSegment(raw.to_owned())),
                None if raw == WILDCARD => Segment::Wildcard,
                None if raw.contains(['{', '}', '*']) => {
                    return Err(TemplateError::BadSegment(raw.to_owned()))
                }
                None => Segment::Literal(raw.to_owned()),
            };
            segments.push(segment);
        }
        Ok(Self { segments })
    }

    /// The names of the template's parameters, in order.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(name) => Some(name.as_str()),
            Segment::Wildcard => Some(WILDCARD),
            Segment::Literal(_) => None,
        })
    }

    /// A key that sorts more specific templates first: compared segment by segment from
    /// the left, a literal before a parameter before the wildcard. (Templates of different
    /// lengths without a wildcard never match the same path, so their order is moot.)
    pub fn specificity(&self) -> impl Ord {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(_) => 0,
                Segment::Param(_) => 1,
                Segment::Wildcard => 2,
            })
            .collect::<Vec<u8>>()
    }

    /// True when both templates match exactly the same paths (parameter names aside), so
    /// neither is more specific than the other.
    pub fn same_shape(&self, other: &Template) -> bool {
        self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|pair| match pair {
                    (Segment::Literal(a), Segment::Literal(b)) => a == b,
                    (Segment::Param(_), Segment::Param(_)) => true,
                    (Segment::Wildcard, Segment::Wildcard) => true,
                    _ => false,
                })
    }

    /// Matches `path` (no query string) and returns the captured parameters.
    pub fn matches<'a>(&'a self, path: &'a str) -> Option<Params<'a>> {
        let mut params = Vec::new();
        self.walk(path, |name, value| params.push((name, value)))
            .then_some(params)
    }

    /// Whether `path` matches, without capturing anything (nothing is allocated): a router
    /// tries many templates per request and captures only the winner's parameters.
    pub fn is_match(&self, path: &str) -> bool {
        self.walk(path, |_, _| {})
    }

    /// Walks `path` segment by segment, giving each capture to `capture`; whether it matched.
    fn walk<'a>(&'a self, path: &'a str, mut capture: impl FnMut(&'a str, &'a str)) -> bool {
        let Some(path) = path.strip_prefix('/') else {
            return false;
        };
        let mut rest = Some(path);
        for segment in &self.segments {
            let Some(here) = rest else { return false };
            if *segment == Segment::Wildcard {
                capture(WILDCARD, here);
                return true;
            }
            let (part, after) = match here.split_once('/') {
                Some((part, after)) => (part, Some(after)),
                None => (here, None),
            };
            match segment {
                Segment::Literal(literal) if spells(part, literal) => {}
                Segment::Param(name) if !part.is_empty() => capture(name.as_str(), part),
                _ => return false,
            }
            rest = after;
        }
        rest.is_none()
    }
}

/// Whether the path segment `part` spells `literal` once its percent-escapes are decoded.
/// An origin that decodes paths reads `/%73se/1` as `/sse/1`, so the gateway must route it
/// as `/sse/1` too: otherwise another spelling of a protected path would reach the origin
/// through a less specific, unprotected template.
fn spells(part: &str, literal: &str) -> bool {
    if part == literal {
        return true;
    }
    let (part, literal) = (part.as_bytes(), literal.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < part.len() {
        let decoded = match part.get(i..i + 3) {
            Some([b'%', high, low]) => hex_pair(*high, *low),
            _ => None,
        };
        let byte = decoded.unwrap_or(part[i]);
        if literal.get(j) != Some(&byte) {
            return false;
        }
        i += if decoded.is_some() { 3 } else { 1 };
        j += 1;
    }
    j == literal.len()
}

/// The byte a `%XY` escape stands for.
fn hex_pair(high: u8, low: u8) -> Option<u8> {
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    Some(digit(high)? << 4 | digit(low)?)
}

/// Replaces each `{name}` in `pattern` with its captured value; unknown names stay as written.
pub fn substitute(pattern: &str, params: &Params<'_>) -> String {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        match after.find('}').map(|close| (&after[1..close], close)) {
            Some((name, close)) => {
                match params.iter().find(|(n, _)| *n == name) {
                    Some((_, value)) => out.push_str(value),
                    None => out.push_str(&after[..=close]),
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(after);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn is_param_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_by_segment() {
        let t = Template::parse("/sse/{id}").unwrap();
        assert_eq!(t.matches("/sse/abc"), Some(vec![("id", "abc")]));
        assert_eq!(
            t.matches("/sse/"),
            None,
            "a param captures a non-empty segment"
        );
        assert_eq!(t.matches("/sse/a/b"), None);
        assert_eq!(t.matches("/sse"), None);
        assert_eq!(t.matches("/other/abc"), None);
        assert_eq!(t.matches("sse/abc"), None);
        let root = Template::parse("/").unwrap();
        assert_eq!(root.matches("/"), Some(vec![]));
        assert_eq!(root.matches("/x"), None);
    }

    #[test]
    fn literals_match_however_they_are_percent_encoded() {
        let t = Template::parse("/sse/{id}").unwrap();
        assert_eq!(t.matches("/%73se/1"), Some(vec![("id", "1")]));
        assert_eq!(t.matches("/%73%53e/1"), None, "decoding keeps case");
        assert!(t.is_match("/s%73%65/%2e%2e"), "captures stay raw");
        assert_eq!(t.matches("/s%73%65/%2e"), Some(vec![("id", "%2e")]));
        for other in [
            "/ss/1",
            "/sse%2f/1",
            "/%73s/1",
            "/sse%/1",
            "/%7/1",
            "/sse%00/1",
        ] {
            assert!(!t.is_match(other), "{other}");
        }
        assert!(Template::parse("/a%/b").unwrap().is_match("/a%/b"));
    }

    #[test]
    fn is_match_agrees_with_matches() {
        for template in ["/", "/sse/{id}", "/a/*", "/{x}/b", "/a/{x}/c"] {
            let t = Template::parse(template).unwrap();
            for path in [
                "/", "/sse/1", "/sse/", "/a/b", "/a/", "/a/x/c", "/q/b", "", "a", "/a/b/c/d",
            ] {
                assert_eq!(
                    t.is_match(path),
                    t.matches(path).is_some(),
                    "{template} {path}"
                );
            }
        }
    }

    #[test]
    fn a_trailing_wildcard_takes_the_rest() {
        let t = Template::parse("/notifications/*").unwrap();
        assert_eq!(t.matches("/notifications/a/b"), Some(vec![("*", "a/b")]));
        assert_eq!(t.matches("/notifications/"), Some(vec![("*", "")]));
        assert_eq!(t.matches("/notifications"), None);
        assert_eq!(t.matches("/other/a"), None);
        let params = t.matches("/notifications/u/7").unwrap();
        assert_eq!(substitute("/feed/{*}", &params), "/feed/u/7");
        assert_eq!(
            Template::parse("/a/*/b"),
            Err(TemplateError::WildcardNotLast)
        );
        assert!(Template::parse("/a*").is_err());
    }

    #[test]
    fn the_most_specific_template_sorts_first() {
        let mut templates: Vec<Template> = ["/a/*", "/a/{x}", "/a/b", "/{y}/b", "/a/{x}/c"]
            .iter()
            .map(|t| Template::parse(t).unwrap())
            .collect();
        templates.sort_by_key(|t| t.specificity());
        let order: Vec<_> = templates.iter().map(|t| format!("{t:?}")).collect();
        let expected: Vec<_> = ["/a/b", "/a/{x}", "/a/{x}/c", "/a/*", "/{y}/b"]
            .iter()
            .map(|t| format!("{:?}", Template::parse(t).unwrap()))
            .collect();
        assert_eq!(order, expected);
        let same = Template::parse("/a/{other}").unwrap();
        assert!(same.same_shape(&Template::parse("/a/{x}").unwrap()));
        assert!(!same.same_shape(&Template::parse("/a/b").unwrap()));
    }

    #[test]
    fn refuses_bad_templates() {
        assert_eq!(Template::parse("sse"), Err(TemplateError::NoLeadingSlash));
        assert!(matches!(
            Template::parse("/a{b}"),
            Err(TemplateError::BadSegment(_))
        ));
        assert!(matches!(
            Template::parse("/{}"),
            Err(TemplateError::BadSegment(_))
        ));
        assert!(matches!(
            Template::parse("/{a}/{a}"),
            Err(TemplateError::DuplicateParam(_))
        ));
    }

    #[test]
    fn substitutes_params() {
        let t = Template::parse("/u/{user}/s/{id}").unwrap();
        let params = t.matches("/u/ann/s/7").unwrap();
        assert_eq!(t.params().collect::<Vec<_>>(), ["user", "id"]);
        assert_eq!(
            substitute("/events/{id}?u={user}", &params),
            "/events/7?u=ann"
        );
        assert_eq!(substitute("/x/{other}/{id", &params), "/x/{other}/{id");
    }
}
