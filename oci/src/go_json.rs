//! Reading JSON the way Go's `encoding/json` reads it into runc's types.
//!
//! Engines are written in Go and so is runc: a `config.json` that runc
//! accepts is what docker, containerd and Kubernetes produce, and berth must
//! accept the same text. Go's decoder differs from serde's in two ways that
//! real configs rely on:
//! - `null` leaves a field at its zero value, whatever the field's type
//!   (containers-common's `seccomp.json` has `"args": null`); a map entry
//!   that is `null` holds the element's zero value;
//! - an object key names a field if it equals the field's name ignoring
//!   case (Unicode simple folding: `ſ` is `s`, the Kelvin sign is `k`).
//!
//! [`GoSchema::from_slice`] rewrites the parsed document into the shape
//! serde expects (nulls dropped, keys spelled as the fields are) and then
//! deserializes it. Zero values that runc treats as "unset" are a question
//! of each field's meaning, not of decoding: see
//! the runtime's `spec::Resources::without_go_zero_values`.

use serde::de::{DeserializeOwned, Visitor};
use serde::Deserializer;
use serde_json::{Map, Value};

/// The field names a serde-derived struct declares (its renames applied),
/// read by asking it to deserialize itself from a deserializer that only
/// records the list it is handed. A struct with a flattened field
/// deserializes as a map and declares nothing: list its keys by hand.
pub fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut found = None;
    let _ = T::deserialize(FieldNames(&mut found));
    found.unwrap_or(&[])
}

struct FieldNames<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(serde::de::Error::custom("fields recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// What a free-form map (`annotations`, `sysctl`) holds for a `null` entry.
#[derive(Debug, Clone, Copy)]
pub enum Zero {
    String,
    Object,
}

/// The object keys of a family of types, and which keys hold free-form
/// maps whose own keys are data (never folded).
#[derive(Debug, Default)]
pub struct GoSchema {
    keys: Vec<&'static str>,
    maps: Vec<(&'static str, Zero)>,
    /// Made on first use: the keys sorted, and by their ASCII lower case
    /// (every declared key is ASCII), for lookups by binary search.
    index: std::sync::OnceLock<Index>,
}

#[derive(Debug)]
struct Index {
    sorted: Vec<&'static str>,
    folded: Vec<(String, &'static str)>,
}

impl GoSchema {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the field names of `T`.
    pub fn with<T: DeserializeOwned>(self) -> Self {
        self.with_keys(field_names::<T>())
    }

    /// Adds field names listed by hand (a struct with a flattened field).
    pub fn with_keys(mut self, keys: &[&'static str]) -> Self {
        self.keys.extend_from_slice(keys);
        self
    }

    fn index(&self) -> &Index {
        self.index.get_or_init(|| {
            let mut sorted = self.keys.clone();
            sorted.sort_unstable();
            sorted.dedup();
            let mut folded: Vec<(String, &'static str)> = sorted
                .iter()
                .map(|k| (k.to_ascii_lowercase(), *k))
                .collect();
            folded.sort();
            Index { sorted, folded }
        })
    }

    /// Declares that the value under `key` is a map of data keys.
    pub fn with_map(mut self, key: &'static str, zero: Zero) -> Self {
        self.maps.push((key, zero));
        self.with_keys(&[key])
    }

    /// Two declared keys that Go could not tell apart (a test checks none).
    pub fn ambiguous(&self) -> Option<(&'static str, &'static str)> {
        let keys = &self.index().sorted;
        keys.iter().enumerate().find_map(|(i, a)| {
            keys[i + 1..]
                .iter()
                .find(|b| equal_fold(a, b))
                .map(|b| (*a, *b))
        })
    }

    /// Parses `bytes` as Go would decode them into `T`.
    pub fn from_slice<T: DeserializeOwned>(&self, bytes: &[u8]) -> serde_json::Result<T> {
        let mut value: Value = serde_json::from_slice(bytes)?;
        self.normalize(&mut value);
        T::deserialize(value)
    }

    /// Rewrites a parsed document in place (see the module comment).
    pub fn normalize(&self, value: &mut Value) {
        match value {
            Value::Array(items) => items.iter_mut().for_each(|v| self.normalize(v)),
            Value::Object(object) => {
                let entries = std::mem::take(object);
                for (key, mut item) in entries {
                    if item.is_null() {
                        continue;
                    }
                    let key = match self.respelled(&key) {
                        None => key,
                        // Go keeps the later of two spellings of one field;
                        // serde_json's map no longer knows which came later,
                        // so the exact spelling wins.
                        Some(declared) if object.contains_key(declared) => continue,
                        Some(declared) => declared.to_string(),
                    };
                    match self.maps.iter().find(|(k, _)| *k == key) {
                        Some((_, zero)) => zero_map_nulls(&mut item, *zero),
                        None => self.normalize(&mut item),
                    }
                    object.insert(key, item);
                }
            }
            _ => {}
        }
    }

    /// The declared key that `key` names in another spelling: none if
    /// `key` is declared itself (Go prefers an exact match) or names no
    /// declared key.
    fn respelled(&self, key: &str) -> Option<&'static str> {
        let index = self.index();
        if index.sorted.binary_search(&key).is_ok() {
            return None;
        }
        // For ASCII, Go's folding is the ASCII lower case; `ſ` and the
        // Kelvin sign fold onto ASCII letters, so other keys are compared
        // one by one.
        match key.is_ascii() {
            true => {
                let lower = key.to_ascii_lowercase();
                index
                    .folded
                    .binary_search_by(|(folded, _)| folded.as_str().cmp(&lower))
                    .ok()
                    .map(|i| index.folded[i].1)
            }
            false => index.sorted.iter().find(|k| equal_fold(k, key)).copied(),
        }
    }
}

fn zero_map_nulls(map: &mut Value, zero: Zero) {
    if let Value::Object(entries) = map {
        for item in entries.values_mut().filter(|v| v.is_null()) {
            *item = match zero {
                Zero::String => Value::String(String::new()),
                Zero::Object => Value::Object(Map::new()),
            };
        }
    }
}

/// Go's `bytes.EqualFold`: equal under Unicode simple case folding.
pub fn equal_fold(a: &str, b: &str) -> bool {
    a.chars().count() == b.chars().count()
        && a.chars().zip(b.chars()).all(|(x, y)| fold(x) == fold(y))
}

/// One representative per simple-fold orbit: the lower case of the upper
/// case, so `ſ` (upper `S`) and `K` (Kelvin, lower `k`) meet their ASCII
/// letters.
fn fold(c: char) -> char {
    let mut upper = c.to_uppercase();
    let u = match (upper.next(), upper.next()) {
        (Some(u), None) => u,
        _ => c,
    };
    let mut lower = u.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(l), None) => l,
        _ => u,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Inner {
        #[serde(default)]
        list: Vec<u32>,
        #[serde(rename = "blockIO")]
        block_io: Option<u16>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Outer {
        inner: Inner,
        #[serde(default)]
        labels: std::collections::BTreeMap<String, String>,
    }

    fn schema() -> GoSchema {
        GoSchema::new()
            .with::<Outer>()
            .with::<Inner>()
            .with_map("labels", Zero::String)
    }

    #[test]
    fn field_names_follow_renames() {
        assert_eq!(field_names::<Inner>(), ["list", "blockIO"]);
    }

    #[test]
    fn nulls_are_absent_and_keys_fold() {
        let text = br#"{"INNER": {"list": null, "BlockIo": 7}, "labels": {"Inner": null}}"#;
        let outer: Outer = schema().from_slice(text).unwrap();
        assert_eq!(outer.inner.list, Vec::<u32>::new());
        assert_eq!(outer.inner.block_io, Some(7));
        // Keys of a free-form map are data: kept as written, null is "".
        assert_eq!(outer.labels.get("Inner").map(String::as_str), Some(""));
    }

    #[test]
    fn go_folds_long_s_and_kelvin() {
        assert!(equal_fold("ſcheduler", "scheduler"));
        assert!(equal_fold("\u{212a}ernel", "kernel"));
        assert!(!equal_fold("blockio", "blockIOx"));
    }

    #[test]
    fn respelling_by_index_is_go_folding() {
        let schema = schema();
        // The slow definition: the declared key equal under folding.
        let slow = |key: &str| {
            (!schema.keys.contains(&key))
                .then(|| schema.keys.iter().find(|k| equal_fold(k, key)).copied())
                .flatten()
        };
        for key in [
            "inner",
            "INNER",
            "Inner",
            "list",
            "LIST",
            "blockIO",
            "blockio",
            "BLOCKIO",
            "BlockIo",
            "labels",
            "LaBeLs",
            "lists",
            "",
            "ſist",
            "\u{212a}abels",
            "blockı",
        ] {
            assert_eq!(schema.respelled(key), slow(key), "{key:?}");
        }
    }

    #[test]
    fn the_exact_spelling_wins_over_a_folded_one() {
        for text in [
            &br#"{"blockIO": 1, "BLOCKIO": 2}"#[..],
            br#"{"BLOCKIO": 2, "blockIO": 1}"#,
        ] {
            let inner: Inner = schema().from_slice(text).unwrap();
            assert_eq!(inner.block_io, Some(1));
        }
    }
}
