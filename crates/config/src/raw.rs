//! The file as YAML, before any meaning is given to it.
//!
//! twemproxy reads every value as the scalar's text and interprets it per key, so this layer
//! does the same: scalar values are kept as the text written in the file (`0123` stays `0123`,
//! `true` stays `true`), each with its position. Keys are kept in file order and duplicates are
//! kept too, so that the validator can report them with both positions.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A 1-based line and column in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub line: u32,
    pub column: u32,
}

impl Pos {
    /// The start of the file, for problems that have no node to point at.
    pub const START: Pos = Pos { line: 1, column: 1 };

    fn of<T>(spanned: &Spanned<T>) -> Pos {
        Pos::from_location(spanned.referenced)
    }

    /// Converts the parser's location; unknown (0) parts become 1.
    fn from_location(loc: serde_saphyr::Location) -> Pos {
        let clamp = |n: u64| u32::try_from(n.max(1)).unwrap_or(u32::MAX);
        Pos {
            line: clamp(loc.line()),
            column: clamp(loc.column()),
        }
    }
}

/// A text with the position it was written at.
#[derive(Debug, Clone)]
pub(crate) struct Text {
    pub text: String,
    pub pos: Pos,
}

impl Text {
    fn from_spanned(spanned: Spanned<String>) -> Text {
        let pos = Pos::of(&spanned);
        Text {
            text: spanned.value,
            pos,
        }
    }
}

/// The whole file: pools in file order (duplicates included).
#[derive(Debug)]
pub(crate) struct RawFile {
    pub pools: Vec<RawPool>,
}

/// One top-level entry.
#[derive(Debug)]
pub(crate) struct RawPool {
    pub name: Text,
    pub body: RawBody,
}

/// What a pool name maps to.
#[derive(Debug)]
pub(crate) enum RawBody {
    /// A mapping: settings in file order (duplicates included).
    Map(Vec<RawEntry>),
    /// Anything else (a scalar, a list, nothing), with its position.
    Other(Pos),
}

/// One `key: value` of a pool.
#[derive(Debug)]
pub(crate) struct RawEntry {
    pub key: Text,
    pub value: RawValue,
    /// Position of the value (the key's position when the value is empty).
    pub pos: Pos,
}

/// A setting's value.
#[derive(Debug)]
pub(crate) enum RawValue {
    /// A scalar, as written.
    Scalar(String),
    /// A list of scalars, as written.
    List(Vec<Text>),
    /// Nothing (`key:` or `key: ~`).
    Empty,
    /// A mapping under a key that takes none (`servers:` or an unknown key); its content is
    /// not kept, only reported.
    Map,
    /// A list under a structured key (`shards:`, `replicas:`, `sentinels:`): each item a
    /// scalar or a mapping, with its position.
    Items(Vec<RawItem>),
    /// A mapping under a structured key (`health_check:`, a shard, a node), in file order
    /// with duplicates kept.
    Entries(Vec<RawEntry>),
}

/// One item of a structured list.
#[derive(Debug)]
pub(crate) struct RawItem {
    pub value: RawValue,
    pub pos: Pos,
}

/// Parses the YAML text into the raw model.
pub(crate) fn parse(text: &str) -> Result<RawFile, (Pos, String)> {
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
    };
    match serde_saphyr::from_str_with_options::<Option<RawFile>>(text, options) {
        Ok(file) => Ok(file.unwrap_or(RawFile { pools: Vec::new() })),
        Err(err) => {
            let pos = err.location().map_or(Pos::START, Pos::from_location);
            let reason = match bracketed_address_at(text, pos) {
                Some(written) => format!(
                    "the address {written} must be quoted (\"{written}\"): unquoted, YAML reads [...] as a list"
                ),
                None => yaml_reason(&err),
            };
            Err((pos, reason))
        }
    }
}

/// The address written at `pos` if it starts with an IPv6 address in brackets
/// (`[::1]:22121`, `[fe80::1]:6379:1 name`), up to the end of the line or a comment.
fn bracketed_address_at(text: &str, pos: Pos) -> Option<&str> {
    let line = text
        .lines()
        .nth(usize::try_from(pos.line).ok()?.checked_sub(1)?)?;
    let skip = usize::try_from(pos.column).ok()?.checked_sub(1)?;
    let start = line.char_indices().nth(skip).map(|(i, _)| i)?;
    let rest = &line[start..];
    let inner = rest.strip_prefix('[')?;
    let close = inner.find(']')?;
    let host = &inner[..close];
    let ipv6 = host.contains(':')
        && host
            .chars()
            .all(|c| c.is_ascii_hexdigit() || ":.%".contains(c));
    if !ipv6 {
        return None;
    }
    let end = rest.find(" #").unwrap_or(rest.len());
    Some(rest[..end].trim_end())
}

/// The parser's message without its own "at line X, column Y" suffix (the caller adds one).
fn yaml_reason(err: &serde_saphyr::Error) -> String {
    let text = err.without_snippet().to_string();
    let text = match text.rfind(" at line ") {
        Some(cut) => &text[..cut],
        None => text.as_str(),
    };
    // Say what the parser's wording means for a nutcracker.yml.
    if text == "expected string scalar" {
        "expected a single value here, not a list or a mapping".to_string()
    } else if text.starts_with("multiple YAML documents") {
        "a configuration file holds one YAML document; remove the \"---\" separator".to_string()
    } else {
        text.to_string()
    }
}

impl<'de> Deserialize<'de> for RawFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FileVisitor;
        impl<'de> Visitor<'de> for FileVisitor {
            type Value = RawFile;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of pool names to pool settings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawFile, A::Error> {
                let mut pools = Vec::new();
                while let Some(name) = map.next_key::<Spanned<String>>()? {
                    let body = map.next_value::<Spanned<BodySeed>>()?;
                    let pos = Pos::of(&body);
                    let body = match body.value {
                        BodySeed::Map(entries) => RawBody::Map(entries),
                        BodySeed::Other => RawBody::Other(pos),
                    };
                    pools.push(RawPool {
                        name: Text::from_spanned(name),
                        body,
                    });
                }
                Ok(RawFile { pools })
            }
        }
        deserializer.deserialize_map(FileVisitor)
    }
}

impl RawEntry {
    /// An entry; an empty value points at its key (there is nothing else to point at).
    fn new(key: Text, value: RawValue, pos: Pos) -> RawEntry {
        let pos = if matches!(value, RawValue::Empty) {
            key.pos
        } else {
            pos
        };
        RawEntry { key, value, pos }
    }
}

/// Reads a map value as the scalar's text, as twemproxy does: `0123` stays `0123`.
fn next_scalar<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(RawValue, Pos), A::Error> {
    let value = map.next_value::<Spanned<Option<String>>>()?;
    let pos = Pos::of(&value);
    Ok((value.value.map_or(RawValue::Empty, RawValue::Scalar), pos))
}

/// Reads a map value as a tree of scalars, lists and mappings.
fn next_tree<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(RawValue, Pos), A::Error> {
    let value = map.next_value::<Spanned<TreeSeed>>()?;
    let pos = Pos::of(&value);
    Ok((value.value.0, pos))
}

/// A structured value (`shards:`, `primary:`, `replicas:`, `sentinels:`, `health_check:`).
///
/// Inside its mappings, keys that name a single setting (`name`, `weight`, `interval`, ...)
/// are read as the scalar's text like pool keys; other keys are read as trees again, so that
/// an unknown nested key is reported by name rather than as a YAML shape error.
struct TreeSeed(RawValue);

impl<'de> Deserialize<'de> for TreeSeed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TreeVisitor;
        impl<'de> Visitor<'de> for TreeVisitor {
            type Value = TreeSeed;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value, a list or a mapping")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TreeSeed, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<TreeSeed>>()? {
                    let pos = Pos::of(&item);
                    items.push(RawItem {
                        value: item.value.0,
                        pos,
                    });
                }
                Ok(TreeSeed(RawValue::Items(items)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TreeSeed, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    let key = Text::from_spanned(key);
                    let (value, pos) = if crate::keys::is_nested_scalar_key(&key.text) {
                        next_scalar(&mut map)?
                    } else {
                        next_tree(&mut map)?
                    };
                    entries.push(RawEntry::new(key, value, pos));
                }
                Ok(TreeSeed(RawValue::Entries(entries)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<TreeSeed, E> {
                Ok(TreeSeed(RawValue::Empty))
            }
            fn visit_none<E: de::Error>(self) -> Result<TreeSeed, E> {
                Ok(TreeSeed(RawValue::Empty))
            }
            // List items and whole values are addresses and names: strings. A number or a
            // boolean here is kept as its usual spelling and refused by the validator.
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<TreeSeed, E> {
                Ok(TreeSeed(RawValue::Scalar(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TreeSeed, E> {
                Ok(TreeSeed(RawValue::Scalar(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TreeSeed, E> {
                Ok(TreeSeed(RawValue::Scalar(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<TreeSeed, E> {
                Ok(TreeSeed(RawValue::Scalar(v.to_string())))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TreeSeed, E> {
                Ok(TreeSeed(RawValue::Scalar(v.to_string())))
            }
        }
        deserializer.deserialize_any(TreeVisitor)
    }
}

/// A pool body as read; a separate type so `Spanned` can wrap it.
enum BodySeed {
    Map(Vec<RawEntry>),
    Other,
}

impl<'de> Deserialize<'de> for BodySeed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BodyVisitor;
        impl<'de> Visitor<'de> for BodyVisitor {
            type Value = BodySeed;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of pool settings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BodySeed, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    let key = Text::from_spanned(key);
                    let (value, pos) = if crate::keys::is_scalar_key(&key.text) {
                        next_scalar(&mut map)?
                    } else if crate::keys::is_tree_key(&key.text) {
                        next_tree(&mut map)?
                    } else {
                        let value = map.next_value::<Spanned<ValueSeed>>()?;
                        let pos = Pos::of(&value);
                        (value.value.0, pos)
                    };
                    entries.push(RawEntry::new(key, value, pos));
                }
                Ok(BodySeed::Map(entries))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BodySeed, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(BodySeed::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<BodySeed, E> {
                Ok(BodySeed::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<BodySeed, E> {
                Ok(BodySeed::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<BodySeed, E> {
                Ok(BodySeed::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<BodySeed, E> {
                Ok(BodySeed::Other)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<BodySeed, E> {
                Ok(BodySeed::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<BodySeed, E> {
                Ok(BodySeed::Other)
            }
            fn visit_none<E: de::Error>(self) -> Result<BodySeed, E> {
                Ok(BodySeed::Other)
            }
        }
        deserializer.deserialize_any(BodyVisitor)
    }
}

/// A list-valued (or unknown) setting's value as read.
struct ValueSeed(RawValue);

impl<'de> Deserialize<'de> for ValueSeed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = ValueSeed;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar or a list of scalars")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ValueSeed, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<ScalarText>>()? {
                    let pos = Pos::of(&item);
                    items.push(Text {
                        text: item.value.0,
                        pos,
                    });
                }
                Ok(ValueSeed(RawValue::List(items)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ValueSeed, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(ValueSeed(RawValue::Map))
            }
            fn visit_unit<E: de::Error>(self) -> Result<ValueSeed, E> {
                Ok(ValueSeed(RawValue::Empty))
            }
            fn visit_none<E: de::Error>(self) -> Result<ValueSeed, E> {
                Ok(ValueSeed(RawValue::Empty))
            }
            // Only `servers:` and unknown keys are read this way; a scalar here is reported
            // by the validator, so its exact spelling does not matter.
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ValueSeed, E> {
                Ok(ValueSeed(RawValue::Scalar(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ValueSeed, E> {
                Ok(ValueSeed(RawValue::Scalar(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ValueSeed, E> {
                Ok(ValueSeed(RawValue::Scalar(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ValueSeed, E> {
                Ok(ValueSeed(RawValue::Scalar(v.to_string())))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ValueSeed, E> {
                Ok(ValueSeed(RawValue::Scalar(v.to_string())))
            }
        }
        deserializer.deserialize_any(ValueVisitor)
    }
}

/// A list item: the scalar's source text (a nested list or mapping is a YAML error).
struct ScalarText(String);

impl<'de> Deserialize<'de> for ScalarText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(ScalarText)
    }
}
