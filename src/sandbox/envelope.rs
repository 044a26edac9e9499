//! The one record a sandbox run produces. The supervisor writes it, the local executor returns
//! it, a sandbox pod prints it as its log, and the HTTP layer maps it to a response.

use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::files::OutputFile;

/// What a finished run amounts to, in one word. The HTTP status and the one-line `error`
/// follow from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// main() returned a dict that converted to JSON.
    Success,
    /// The script does not compile.
    SyntaxError,
    /// The script defines no `main`.
    NoMain,
    /// `main` exists but cannot be called as `main()` (not callable, needs arguments, async).
    InvalidMain,
    /// main() returned something other than a dict.
    NotADict,
    /// main()'s value holds something JSON cannot represent.
    Unserializable,
    /// main()'s value is larger than the result limit.
    ResultTooLarge,
    /// The script or main() raised an exception.
    Exception,
    /// The script ended (sys.exit, os._exit) before main() returned.
    Exited,
    /// The wall-clock or CPU time limit ran out.
    Timeout,
    /// The memory limit was hit.
    MemoryLimit,
    /// A signal killed the script (segfault, abort, ...).
    Signaled,
    /// The script ended without reporting a result, for no reason the supervisor could see.
    NoResult,
    /// The sandbox itself could not run (nsjail or Python missing or broken).
    SandboxFailure,
}

impl Outcome {
    /// A stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::SyntaxError => "syntax_error",
            Outcome::NoMain => "no_main",
            Outcome::InvalidMain => "invalid_main",
            Outcome::NotADict => "not_a_dict",
            Outcome::Unserializable => "unserializable",
            Outcome::ResultTooLarge => "result_too_large",
            Outcome::Exception => "exception",
            Outcome::Exited => "exited",
            Outcome::Timeout => "timeout",
            Outcome::MemoryLimit => "memory_limit",
            Outcome::Signaled => "signaled",
            Outcome::NoResult => "no_result",
            Outcome::SandboxFailure => "sandbox_failure",
        }
    }

    /// Every outcome, for pre-registering metric labels.
    pub const ALL: [Outcome; 14] = [
        Outcome::Success,
        Outcome::SyntaxError,
        Outcome::NoMain,
        Outcome::InvalidMain,
        Outcome::NotADict,
        Outcome::Unserializable,
        Outcome::ResultTooLarge,
        Outcome::Exception,
        Outcome::Exited,
        Outcome::Timeout,
        Outcome::MemoryLimit,
        Outcome::Signaled,
        Outcome::NoResult,
        Outcome::SandboxFailure,
    ];
}

/// The record of one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub outcome: Outcome,
    /// main()'s dict, on success only.
    pub result: Option<ResultJson>,
    pub stdout: String,
    pub stderr: String,
    /// Python's subprocess convention: the exit code, or minus the signal that killed it.
    pub returncode: i32,
    /// One line saying what went wrong; absent on success.
    pub error: Option<String>,
    #[serde(default)]
    pub stdout_truncated: bool,
    #[serde(default)]
    pub stderr_truncated: bool,
    /// Wall-clock time of the run, sandbox set-up included.
    pub duration_ms: u64,
    /// The files the script left in its output folder; left out of the JSON when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<OutputFile>,
    /// Whether files of the output folder were left out; present only when some were.
    #[serde(default, skip_serializing_if = "is_false")]
    pub files_truncated: bool,
    /// The names of the files left out (at most `files::output::MAX_OMITTED_NAMES`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files_omitted: Vec<String>,
}

fn is_false(flag: &bool) -> bool {
    !flag
}

impl Envelope {
    /// An envelope for a run that was decided before any sandbox started.
    pub fn rejected(outcome: Outcome, error: impl Into<String>) -> Self {
        Envelope {
            outcome,
            result: None,
            stdout: String::new(),
            stderr: String::new(),
            returncode: 1,
            error: Some(error.into()),
            stdout_truncated: false,
            stderr_truncated: false,
            duration_ms: 0,
            files: Vec::new(),
            files_truncated: false,
            files_omitted: Vec::new(),
        }
    }
}

/// main()'s dict as the JSON text the harness wrote: checked once to be one JSON object, then
/// kept and written out byte for byte (key order included). Never a tree of `Value`s, which
/// would take many times the text's size for a large result.
#[derive(Clone, Debug, Serialize)]
#[serde(transparent)]
pub struct ResultJson(Box<RawValue>);

impl ResultJson {
    /// Checks that `raw` is one JSON object as strict as a parse into `Value` would be (see
    /// `check_object`), and keeps a copy of its text.
    pub fn from_raw(raw: &RawValue) -> Result<Self, serde_json::Error> {
        check_object(raw.get())?;
        Ok(ResultJson(raw.to_owned()))
    }

    /// The JSON text, for writing it out as it is.
    pub fn json(&self) -> &RawValue {
        &self.0
    }

    /// The object as a map, where a bounded copy is needed (a PythonExecution status).
    pub fn to_map(&self) -> Option<Map<String, Value>> {
        serde_json::from_str(self.0.get()).ok()
    }

    /// The text of a map (a PythonExecution status's result).
    pub fn from_map(map: &Map<String, Value>) -> Option<Self> {
        serde_json::value::to_raw_value(map).ok().map(ResultJson)
    }
}

/// Two results are equal when their texts are.
impl PartialEq for ResultJson {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

/// Read back (from a sandbox pod's log) with the same checks the supervisor made.
impl<'de> Deserialize<'de> for ResultJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        check_object(raw.get()).map_err(de::Error::custom)?;
        Ok(ResultJson(raw))
    }
}

/// Checks that `text` is exactly one JSON object, refused wherever parsing it into a `Value`
/// would fail (invalid escapes and lone surrogates, numbers out of range, nesting past
/// serde_json's limit, trailing text), and also when an object repeats a key: the harness
/// converts main()'s dict into dicts, which cannot hold one twice, so a repeated key is a forged
/// report. Nothing of the value is kept but the keys of the objects being read.
pub fn check_object(text: &str) -> Result<(), serde_json::Error> {
    if !text.trim_start().starts_with('{') {
        return Err(de::Error::custom("main()'s result is not a JSON object"));
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    deserializer.deserialize_any(Walk)?;
    deserializer.end()
}

/// A visitor that reads any JSON value and keeps nothing of it.
struct Walk;

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(Walk)
    }
}

impl<'de> Visitor<'de> for Walk {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Walk)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Keys without escapes are slices of the text; the rest are decoded copies.
        let mut borrowed: Vec<&'de str> = Vec::new();
        let mut decoded: Vec<String> = Vec::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match key {
                Key::Borrowed(key) => borrowed.push(key),
                Key::Decoded(key) => decoded.push(key),
            }
            map.next_value_seed(Walk)?;
        }
        match repeated_key(&mut borrowed, &mut decoded) {
            Some(key) => Err(de::Error::custom(format!("an object repeats the key {key:?}"))),
            None => Ok(()),
        }
    }
}

/// A key that occurs twice among one object's keys (sorting them in place).
fn repeated_key<'a>(borrowed: &'a mut [&str], decoded: &'a mut [String]) -> Option<&'a str> {
    borrowed.sort_unstable();
    decoded.sort_unstable();
    let borrowed: &'a [&str] = borrowed;
    let decoded: &'a [String] = decoded;
    borrowed
        .windows(2)
        .find(|pair| pair[0] == pair[1])
        .map(|pair| pair[0])
        .or_else(|| decoded.windows(2).find(|pair| pair[0] == pair[1]).map(|pair| pair[0].as_str()))
        .or_else(|| decoded.iter().map(String::as_str).find(|key| borrowed.binary_search(key).is_ok()))
}

/// An object's key, borrowed from the text where it has no escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Decoded(String),
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key<'de>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
        Ok(Key::Borrowed(key))
    }

    fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
        Ok(Key::Decoded(key.to_owned()))
    }
}

/// The exact message the documented contract gives for a script without `main()`.
pub const NO_MAIN_MESSAGE: &str = "Script must contain a 'main()' function.";

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope_line(result: &str) -> String {
        format!(
            r#"{{"outcome":"success","result":{result},"stdout":"","stderr":"","returncode":0,"error":null,"duration_ms":1}}"#
        )
    }

    #[test]
    fn an_envelope_prints_and_reads_back_its_result_verbatim() {
        let line = envelope_line(r#"{"z":1,"a":[0.10,1e+16]}"#);
        let envelope: Envelope = serde_json::from_str(&line).expect("an envelope");
        let result = envelope.result.as_ref().expect("result");
        assert_eq!(result.json().get(), r#"{"z":1,"a":[0.10,1e+16]}"#);
        assert!(serde_json::to_string(&envelope).expect("json").contains(r#""result":{"z":1,"a":[0.10,1e+16]}"#));
    }

    #[test]
    fn an_envelope_read_back_gets_the_supervisors_checks() {
        for result in ["[1]", r#""{}""#, r#"{"a":1,"a":2}"#, r#"{"a":"\ud800"}"#] {
            assert!(serde_json::from_str::<Envelope>(&envelope_line(result)).is_err(), "{result}");
        }
    }

    #[test]
    fn an_envelope_without_files_has_no_files_keys() {
        let text = serde_json::to_string(&Envelope::rejected(Outcome::NoMain, "x")).expect("json");
        assert!(!text.contains("files"), "{text}");
        let envelope: Envelope = serde_json::from_str(&envelope_line("{}")).expect("an envelope");
        assert!(envelope.files.is_empty() && !envelope.files_truncated);
    }

    #[test]
    fn a_map_converts_both_ways_in_order() {
        let map: Map<String, Value> = serde_json::from_str(r#"{"z":1,"a":{"y":2,"b":3}}"#).expect("map");
        let result = ResultJson::from_map(&map).expect("text");
        assert_eq!(result.json().get(), r#"{"z":1,"a":{"y":2,"b":3}}"#);
        assert_eq!(result.to_map(), Some(map));
    }
}
