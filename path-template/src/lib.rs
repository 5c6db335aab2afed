//! Path templates in KrakenD's style, shared by the host's endpoints and the plugin's routes.
//!
//! A template such as `/sse/{id}` matches a path with the same number of segments whose
//! literal segments are equal; each `{name}` captures one non-empty segment. The captures
//! are substituted into a backend pattern such as `/events-stream/{id}`.

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
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
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
            let segment = match raw.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) if is_param_name(name) => {
                    if segments.contains(&Segment::Param(name.to_owned())) {
                        return Err(TemplateError::DuplicateParam(name.to_owned()));
                    }
                    Segment::Param(name.to_owned())
                }
                Some(_) => return Err(TemplateError::BadSegment(raw.to_owned())),
                None if raw.contains(['{', '}']) => {
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
            Segment::Literal(_) => None,
        })
    }

    /// Matches `path` (no query string) and returns the captured parameters.
    pub fn matches<'a>(&'a self, path: &'a str) -> Option<Params<'a>> {
        let rest = path.strip_prefix('/')?;
        let mut params = Vec::new();
        let mut parts = rest.split('/');
        for segment in &self.segments {
            let part = parts.next()?;
            match segment {
                Segment::Literal(literal) if literal == part => {}
                Segment::Param(name) if !part.is_empty() => params.push((name.as_str(), part)),
                _ => return None,
            }
        }
        parts.next().is_none().then_some(params)
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
