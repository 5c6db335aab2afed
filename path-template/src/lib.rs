//! Path templates in KrakenD's style, shared by the host's endpoints and the plugin's routes.
//!
//! A template such as `/sse/{id}` matches a path with the same number of segments whose
//! literal segments are equal; each `{name}` captures one non-empty segment. A trailing
//! `/*` (as in `/notifications/*`) matches whatever follows, captured as `{*}`. The captures
//! are substituted into a backend pattern such as `/events-stream/{id}`.
//!
//! When several templates match a path, [`Template::specificity`] orders them: segment by
//! segment from the left, a literal beats a parameter, which beats the wildcard.

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
        let mut rest = Some(path.strip_prefix('/')?);
        let mut params = Vec::new();
        for segment in &self.segments {
            let here = rest?;
            if *segment == Segment::Wildcard {
                params.push((WILDCARD, here));
                return Some(params);
            }
            let (part, after) = match here.split_once('/') {
                Some((part, after)) => (part, Some(after)),
                None => (here, None),
            };
            match segment {
                Segment::Literal(literal) if literal == part => {}
                Segment::Param(name) if !part.is_empty() => params.push((name.as_str(), part)),
                _ => return None,
            }
            rest = after;
        }
        rest.is_none().then_some(params)
    }
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
