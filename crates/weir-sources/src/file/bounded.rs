//! YAML to JSON values with a bound on what aliases may expand to.
//!
//! An alias (`*a`) repeats the node its anchor (`&a`) names, so nested aliases grow
//! exponentially: the "billion laughs" file of a few dozen lines describes gigabytes. The YAML
//! parser bounds only the number of alias jumps (100 per event of the document), not what
//! they expand to, so a 50 KB file could make the process abort on memory.
//!
//! Here every node a document deserializes into is charged against a budget for the whole
//! file, as it is built: one unit per node plus the bytes of each string (keys included).
//! Without aliases a file cannot reach one unit per byte of its text (a node takes at least
//! a byte of text besides its characters, and a separator), so the budget,
//! [`EXPANSION_FACTOR`] times the file's size and at least [`EXPANSION_FLOOR`], only stops
//! files whose aliases multiply them. Building stops at the first unit over the budget, so
//! a refused file costs at most about the budget in time and memory.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Number, Value};

/// A file may expand to this many times its size...
pub(super) const EXPANSION_FACTOR: u64 = 4;
/// ...or to this many units, whichever is more (room for small files that reuse a block).
pub(super) const EXPANSION_FLOOR: u64 = 64 * 1024;

/// What is left of one file's expansion budget.
#[derive(Debug)]
pub(super) struct Budget {
    limit: u64,
    left: Cell<u64>,
    exceeded: Cell<bool>,
}

impl Budget {
    /// The budget of a file of `len` bytes.
    pub(super) fn for_len(len: usize) -> Self {
        let limit = (len as u64)
            .saturating_mul(EXPANSION_FACTOR)
            .max(EXPANSION_FLOOR);
        Self {
            limit,
            left: Cell::new(limit),
            exceeded: Cell::new(false),
        }
    }

    /// The whole budget, in units.
    pub(super) fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether a document failed because the budget ran out (and not for a syntax error).
    pub(super) fn exceeded(&self) -> bool {
        self.exceeded.get()
    }

    fn charge<E: de::Error>(&self, units: usize) -> Result<(), E> {
        let units = units as u64;
        match self.left.get().checked_sub(units) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => {
                self.exceeded.set(true);
                Err(E::custom(format_args!(
                    "aliases expand the file beyond {} units",
                    self.limit
                )))
            }
        }
    }
}

/// One document of `text` as a JSON value, charged against `budget`.
pub(super) fn from_str(text: &str, budget: &Budget) -> Result<Value, serde_norway::Error> {
    Node(budget).deserialize(serde_norway::Deserializer::from_str(text))
}

/// Deserializes a node as `serde_json::Value` does, charging the budget as it goes.
#[derive(Clone, Copy)]
struct Node<'b>(&'b Budget);

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.0.charge(1)?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.0.charge(1)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.0.charge(1)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        self.0.charge(1)?;
        Number::deserialize(de::value::I128Deserializer::<E>::new(v)).map(Value::Number)
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        self.0.charge(1)?;
        Number::deserialize(de::value::U128Deserializer::<E>::new(v)).map(Value::Number)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.0.charge(1)?;
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.0.charge(1 + v.len())?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.0.charge(1 + v.len())?;
        Ok(Value::String(v))
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.0.charge(1)?;
        Ok(Value::Null)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.0.charge(1)?;
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.0.charge(1)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.0.charge(1)?;
        let mut object = Map::new();
        while let Some(key) = map.next_key_seed(Key(self.0))? {
            let value = map.next_value_seed(self)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// A mapping key, read as a string as `serde_json::Value` reads it.
struct Key<'b>(&'b Budget);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = String;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        self.0.charge(1 + v.len())?;
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        self.0.charge(1 + v.len())?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The same value as `serde_json::Value`'s own deserialization gives.
    #[test]
    fn reads_what_serde_json_value_reads() {
        let text = "\
a: 1
b: [true, ~, 1.5, -3, 18446744073709551615, \"x\"]
c: {d: e, 1: one, true: yes}
anchored: &x {k: v}
again: *x
empty: {}
null:
";
        let ours = from_str(text, &Budget::for_len(text.len())).unwrap();
        let theirs: Value = serde_norway::from_str(text).unwrap();
        assert_eq!(ours, theirs);
        assert_eq!(ours["again"], serde_json::json!({"k": "v"}));
    }

    #[test]
    fn a_file_without_aliases_stays_under_one_unit_per_byte() {
        for text in [
            "a: b\nc: d\n",
            "[a,b,c,d,e,f]",
            "[{},{},{},[],[]]",
            "- \n- \n- \n",
            "{a: [1,2,3], b: {c: ''}}",
        ] {
            let budget = Budget::for_len(text.len());
            from_str(text, &budget).unwrap();
            let used = budget.limit() - budget.left.get();
            assert!(used <= text.len() as u64, "{text:?}: {used} units");
        }
    }

    #[test]
    fn nested_aliases_are_refused_once_over_the_budget() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let budget = Budget::for_len(text.len());
        let err = from_str(&text, &budget).unwrap_err();
        assert!(budget.exceeded());
        assert!(err.to_string().contains("aliases expand"), "{err}");
        // A few levels expand to little and are read.
        let small: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
        let budget = Budget::for_len(small.len());
        assert!(from_str(&small, &budget).is_ok());
        assert!(!budget.exceeded());
    }
}
