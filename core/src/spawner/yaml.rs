//! The zero-to-jupyterhub values fragment.
//!
//! Writes the profile list as `singleuser.profileList` for a Helm values
//! file, with the same content and key order as the JSON the hub serves.
//! Pure text generation: must not write files or call Helm.
//!
//! The conversion goes through the JSON text rather than `serde_json::Value`:
//! this crate's `serde_json` has no `preserve_order`, so a `Value` would sort
//! the keys of every profile. Reading the JSON text with a visitor that
//! builds `yaml_rust2::Yaml` keeps the order serde writes them in.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use yaml_rust2::yaml::Hash;
use yaml_rust2::{Yaml, YamlEmitter};

use super::SpawnerProfile;

/// `singleuser:\n  profileList:\n    - …` as YAML text (helm values).
pub fn values_fragment(list: &[SpawnerProfile]) -> String {
    let profiles = to_yaml(list);
    let mut profile_list = Hash::new();
    profile_list.insert(Yaml::String("profileList".into()), profiles);
    let mut root = Hash::new();
    root.insert(Yaml::String("singleuser".into()), Yaml::Hash(profile_list));
    let mut out = String::new();
    // Writing into a String cannot fail, and every value is a plain
    // JSON-shaped scalar, sequence or mapping.
    let _ = YamlEmitter::new(&mut out).dump(&Yaml::Hash(root));
    let mut text = out.strip_prefix("---\n").map(str::to_string).unwrap_or(out);
    text.push('\n');
    text
}

/// The list as YAML, keys in serialization order.
fn to_yaml(list: &[SpawnerProfile]) -> Yaml {
    // A list of plain structs, maps and JSON values always serializes, and
    // serde_json always reads back what it wrote.
    serde_json::to_string(list)
        .ok()
        .and_then(|json| {
            let mut de = serde_json::Deserializer::from_str(&json);
            de.deserialize_any(ToYaml).ok()
        })
        .unwrap_or(Yaml::Array(Vec::new()))
}

/// Builds a [`Yaml`] from any self-describing input, in input order.
struct ToYaml;

impl<'de> Visitor<'de> for ToYaml {
    type Value = Yaml;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Yaml, E> {
        Ok(Yaml::Boolean(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Yaml, E> {
        Ok(Yaml::Integer(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Yaml, E> {
        Ok(i64::try_from(v).map_or_else(|_| Yaml::Real(v.to_string()), Yaml::Integer))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Yaml, E> {
        // `{:?}` keeps the fraction (`4.0`, not `4`), so it reads back as a float.
        Ok(Yaml::Real(format!("{v:?}")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Yaml, E> {
        Ok(Yaml::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Yaml, E> {
        Ok(Yaml::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Yaml, E> {
        Ok(Yaml::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Yaml, E> {
        Ok(Yaml::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Yaml, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Seed)? {
            items.push(item);
        }
        Ok(Yaml::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Yaml, A::Error> {
        let mut hash = Hash::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(Seed)?;
            hash.insert(Yaml::String(key), value);
        }
        Ok(Yaml::Hash(hash))
    }
}

struct Seed;

impl<'de> de::DeserializeSeed<'de> for Seed {
    type Value = Yaml;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Yaml, D::Error> {
        d.deserialize_any(ToYaml)
    }
}
