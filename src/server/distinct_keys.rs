//! JSON read with every object's keys distinct. serde_json keeps the last of a repeated key while
//! other readers keep the first, so a body like `{"script": "a", "script": "b"}` would mean one
//! thing to a proxy or an audit log and another to the service: it is refused instead, at any
//! depth (`limits` included).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::error::Category;
use serde_json::{Map, Number, Value};

/// Why bytes are not a JSON value with distinct keys.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// Not JSON at all (syntax, end of input, encoding).
    #[error("{0}")]
    Syntax(#[source] serde_json::Error),
    /// Valid JSON, but an object names a key twice.
    #[error("{0}")]
    DuplicateKey(#[source] serde_json::Error),
}

/// Parses `bytes` as JSON, refusing any object that names a key more than once.
pub fn from_slice(bytes: &[u8]) -> Result<Value, JsonError> {
    serde_json::from_slice::<Distinct>(bytes).map(|distinct| distinct.0).map_err(|err| match err.classify() {
        // The visitor below raises the only data errors a `Value` can meet.
        Category::Data => JsonError::DuplicateKey(err),
        Category::Io | Category::Syntax | Category::Eof => JsonError::Syntax(err),
    })
}

struct Distinct(Value);

impl<'de> Deserialize<'de> for Distinct {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DistinctVisitor).map(Distinct)
    }
}

struct DistinctVisitor;

impl<'de> Visitor<'de> for DistinctVisitor {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Distinct(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut fields = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if fields.contains_key(&key) {
                return Err(de::Error::custom(format_args!("the key \"{key}\" appears twice in one object")));
            }
            let Distinct(value) = map.next_value()?;
            fields.insert(key, value);
        }
        Ok(Value::Object(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_keys_parse_like_serde_json() {
        let text = r#"{"script": "x", "limits": {"timeout_seconds": 2.5, "memory_mb": 64}, "n": [1, -2, null, true]}"#;
        let value = from_slice(text.as_bytes()).expect("valid");
        assert_eq!(value, serde_json::from_str::<Value>(text).expect("valid"));
    }

    #[test]
    fn a_repeated_key_is_refused_at_any_depth() {
        for body in [
            r#"{"script": "a", "script": "b"}"#,
            r#"{"script": "a", "limits": {"memory_mb": 64, "memory_mb": 4096}}"#,
            r#"[{"a": 1}, {"b": 1, "b": 2}]"#,
            // The same key spelled with an escape is the same key.
            r#"{"script": "a", "scr\u0069pt": "b"}"#,
        ] {
            let err = from_slice(body.as_bytes()).expect_err(body);
            assert!(matches!(err, JsonError::DuplicateKey(_)), "{body}: {err}");
            assert!(err.to_string().contains("appears twice"), "{err}");
        }
    }

    #[test]
    fn syntax_errors_stay_syntax_errors() {
        for body in [r#"{"script": "a"#, "not json", r#"{"script": "a" "b"}"#] {
            assert!(matches!(from_slice(body.as_bytes()), Err(JsonError::Syntax(_))), "{body}");
        }
    }
}
