//! KrakenD's response manipulation for one backend's JSON (`target`, `allow`, `deny`,
//! `mapping`, `group`, collections), into the object the pipeline merges with the other
//! backends' (`pipeline::merge`).

use serde_json::{Map, Value};

use crate::config::Shape;

/// Applies `shape` to one backend's answer; the result is an object ready to merge.
pub fn apply(value: Value, shape: &Shape) -> Result<Map<String, Value>, String> {
    let mut value = match &shape.target {
        Some(path) => get(&value, path)
            .cloned()
            .ok_or_else(|| format!("target {path:?} is not in the answer"))?,
        None => value,
    };
    // An array can only be merged under a key: KrakenD calls it `collection`.
    if value.is_array() || (shape.is_collection && !value.is_object()) {
        value = Value::Object(Map::from_iter([("collection".to_owned(), value)]));
    }
    let Value::Object(mut object) = value else {
        return Err(format!(
            "the answer is neither an object nor an array: {value}"
        ));
    };
    if !shape.allow.is_empty() {
        let mut allowed = Map::new();
        for path in &shape.allow {
            if let Some(found) = get_in(&object, path) {
                set_in(&mut allowed, path, found.clone());
            }
        }
        object = allowed;
    }
    for path in &shape.deny {
        remove_in(&mut object, path);
    }
    for (from, to) in &shape.mapping {
        if let Some(value) = object.remove(from) {
            object.insert(to.clone(), value);
        }
    }
    Ok(match &shape.group {
        Some(group) => Map::from_iter([(group.clone(), Value::Object(object))]),
        None => object,
    })
}

fn get<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

fn get_in<'a>(object: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let (first, rest) = split(path);
    let value = object.get(first)?;
    match rest {
        Some(rest) => get(value, rest),
        None => Some(value),
    }
}

fn set_in(object: &mut Map<String, Value>, path: &str, value: Value) {
    match split(path) {
        (key, None) => {
            object.insert(key.to_owned(), value);
        }
        (key, Some(rest)) => {
            let inner = object
                .entry(key.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(inner) = inner {
                set_in(inner, rest, value);
            }
        }
    }
}

fn remove_in(object: &mut Map<String, Value>, path: &str) {
    match split(path) {
        (key, None) => {
            object.remove(key);
        }
        (key, Some(rest)) => {
            if let Some(Value::Object(inner)) = object.get_mut(key) {
                remove_in(inner, rest);
            }
        }
    }
}

fn split(path: &str) -> (&str, Option<&str>) {
    match path.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (path, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shaped(value: Value, shape: Shape) -> Value {
        Value::Object(apply(value, &shape).unwrap())
    }

    #[test]
    fn target_allow_deny_mapping_group_in_krakend_order() {
        let answer = json!({"data": {"user": {"id": 1, "name": "ann", "secret": "x"}, "n": 2}});
        let shape = Shape {
            target: Some("data".into()),
            allow: vec!["user.id".into(), "user.secret".into(), "n".into()],
            deny: vec!["user.secret".into()],
            mapping: vec![("n".into(), "count".into())],
            group: Some("profile".into()),
            ..Shape::default()
        };
        assert_eq!(
            shaped(answer, shape),
            json!({"profile": {"user": {"id": 1}, "count": 2}})
        );
    }

    #[test]
    fn arrays_become_collections_and_scalars_are_refused() {
        assert_eq!(
            shaped(json!([1, 2]), Shape::default()),
            json!({"collection": [1, 2]})
        );
        assert!(apply(json!("text"), &Shape::default()).is_err());
        let missing = Shape {
            target: Some("a.b".into()),
            ..Shape::default()
        };
        assert!(apply(json!({"a": {}}), &missing)
            .unwrap_err()
            .contains("a.b"));
    }
}
