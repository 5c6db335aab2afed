//! JSON documents built from a fuzz input with a vocabulary of keys and values, mostly of
//! the type each key takes, so that a config fuzzer spends its time in validation rather
//! than in JSON syntax or type errors.

use arbitrary::{Result, Unstructured};
use serde_json::{Map, Value};

/// The keys and values a config knows, and which keys take which kind of value.
pub struct Vocabulary {
    pub keys: &'static [&'static str],
    pub strings: &'static [&'static str],
    /// Keys whose value is a list of objects.
    pub object_lists: &'static [&'static str],
    /// Keys whose value is a list of strings (or, for some, one string).
    pub string_lists: &'static [&'static str],
    pub objects: &'static [&'static str],
}

impl Vocabulary {
    /// An object of up to six keys, mostly from the vocabulary.
    pub fn object(&self, u: &mut Unstructured, depth: u32) -> Result<Value> {
        let mut map = Map::new();
        for _ in 0..u.int_in_range(0..=6)? {
            let key = match u.ratio(9, 10)? {
                true => (*u.choose(self.keys)?).to_owned(),
                false => u.arbitrary::<String>()?,
            };
            let value = self.value_for(u, &key, depth)?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }

    /// Mostly the type `key` takes.
    fn value_for(&self, u: &mut Unstructured, key: &str, depth: u32) -> Result<Value> {
        if depth >= 6 || u.ratio(1, 4)? {
            return self.value(u, depth + 1);
        }
        let list = |u: &mut Unstructured, item: &dyn Fn(&mut Unstructured) -> Result<Value>| {
            let n = u.int_in_range(0..=3)?;
            (0..n)
                .map(|_| item(u))
                .collect::<Result<Vec<_>>>()
                .map(Value::Array)
        };
        if self.object_lists.contains(&key) {
            list(u, &|u| self.object(u, depth + 1))
        } else if self.string_lists.contains(&key) {
            match u.ratio(1, 4)? {
                true => self.string(u),
                false => list(u, &|u| self.string(u)),
            }
        } else if self.objects.contains(&key) {
            self.object(u, depth + 1)
        } else {
            self.value(u, depth + 1)
        }
    }

    fn string(&self, u: &mut Unstructured) -> Result<Value> {
        Ok(Value::from(*u.choose(self.strings)?))
    }

    /// Any value, mostly from the vocabulary's strings and small numbers.
    fn value(&self, u: &mut Unstructured, depth: u32) -> Result<Value> {
        let leaf = depth >= 4;
        Ok(match u.int_in_range(0..=if leaf { 5 } else { 7 })? {
            0 => Value::Null,
            1 => Value::Bool(u.arbitrary()?),
            2 => Value::from(*u.choose(&[
                0i64,
                1,
                2,
                3,
                4,
                1023,
                1024,
                65535,
                65536,
                -1,
                i64::MAX,
            ])?),
            3 => Value::from(
                u.arbitrary::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .unwrap_or(1.5),
            ),
            4 => self.string(u)?,
            5 => Value::from(u.arbitrary::<&str>()?),
            6 => Value::Array(
                (0..u.int_in_range(0..=3)?)
                    .map(|_| self.value(u, depth + 1))
                    .collect::<Result<_>>()?,
            ),
            _ => self.object(u, depth + 1)?,
        })
    }
}
