//! Path templates: a parsed template matches the paths built from it with the values put
//! in, captures exactly those values in its parameters' order, and `substitute` puts a
//! match back together; `same_shape` templates match the same paths with the same
//! specificity, and two templates that match one path with the same specificity have the
//! same shape (so "the most specific wins" always has one winner).

#![no_main]

use std::cmp::Ordering;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use path_template::{substitute, Template, WILDCARD};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    template: &'a str,
    other: &'a str,
    path: &'a str,
    pattern: &'a str,
    values: Vec<&'a str>,
}

/// A path `template` (valid) matches, with the values it should capture: each `{name}`
/// takes the next value made one non-empty segment, the wildcard the next value as is.
fn build<'v>(template: &str, values: &mut impl Iterator<Item = &'v str>) -> (String, Vec<String>) {
    let mut path = String::new();
    let mut captured = Vec::new();
    for segment in template[1..].split('/') {
        path.push('/');
        let value = if segment.starts_with('{') {
            let value = values.next().unwrap_or("v").replace('/', "");
            if value.is_empty() {
                "v".to_owned()
            } else {
                value
            }
        } else if segment == WILDCARD {
            values.next().unwrap_or("").to_owned()
        } else {
            path.push_str(segment);
            continue;
        };
        path.push_str(&value);
        captured.push(value);
    }
    (path, captured)
}

/// The template as a backend pattern: `{*}` where it has its wildcard.
fn as_pattern(template: &str) -> String {
    match template.strip_suffix(WILDCARD) {
        Some(head) if head.ends_with('/') => format!("{head}{{{WILDCARD}}}"),
        _ => template.to_owned(),
    }
}

fn check_match(t: &Template, template: &str, path: &str) {
    let Some(params) = t.matches(path) else {
        return;
    };
    let names: Vec<&str> = params.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, t.params().collect::<Vec<_>>());
    for (name, value) in &params {
        if *name != WILDCARD {
            assert!(
                !value.is_empty() && !value.contains('/'),
                "{name} = {value:?}"
            );
        }
    }
    assert_eq!(substitute(&as_pattern(template), &params), path);
}

fuzz_target!(|input: Input| {
    let mut values = input.values.iter().copied();
    let params: Vec<(&str, &str)> = input.values.iter().map(|v| (*v, *v)).collect();
    let substituted = substitute(input.pattern, &params);
    if !input.pattern.contains('{') {
        assert_eq!(substituted, input.pattern);
    }
    let Ok(t) = Template::parse(input.template) else {
        return;
    };
    assert!(t.same_shape(&t));
    check_match(&t, input.template, input.path);
    let (built, captured) = build(input.template, &mut values);
    let params = t
        .matches(&built)
        .unwrap_or_else(|| panic!("{built:?} does not match"));
    assert_eq!(
        params
            .iter()
            .map(|(_, v)| v.to_string())
            .collect::<Vec<_>>(),
        captured
    );
    check_match(&t, input.template, &built);
    let Ok(o) = Template::parse(input.other) else {
        return;
    };
    assert_eq!(t.same_shape(&o), o.same_shape(&t));
    for path in [input.path, built.as_str()] {
        let (a, b) = (t.matches(path).is_some(), o.matches(path).is_some());
        let order = t.specificity().cmp(&o.specificity());
        if t.same_shape(&o) {
            assert_eq!(a, b, "same shape, {path:?} matched by one only");
            assert_eq!(order, Ordering::Equal);
        } else if a && b {
            assert_ne!(order, Ordering::Equal, "{path:?}: two winners");
        }
    }
});
