//! Which part of a key is hashed: twemproxy hash tags and Redis Cluster slots.

use crate::hash::crc16_xmodem;
use crate::HashTagError;

/// A two-byte hash tag (`hash_tag: "{}"` in `nutcracker.yml`).
///
/// Invariant: exactly two bytes, the opening and the closing delimiter (they may be equal, and
/// like twemproxy a single two-byte UTF-8 character is accepted as its two bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashTag([u8; 2]);

impl HashTag {
    /// A hash tag from its config text.
    ///
    /// # Errors
    /// [`HashTagError`] unless `s` is exactly two bytes long.
    pub fn new(s: &str) -> Result<Self, HashTagError> {
        match *s.as_bytes() {
            [open, close] => Ok(HashTag([open, close])),
            _ => Err(HashTagError(s.to_owned())),
        }
    }

    /// The opening and closing delimiter.
    pub fn delimiters(&self) -> [u8; 2] {
        self.0
    }

    /// The part of `key` that is hashed: the bytes between the first opening delimiter and the
    /// first closing delimiter after it. With no opening delimiter, no closing one after it, or
    /// nothing between them, the whole key is hashed.
    pub fn extract<'a>(&self, key: &'a [u8]) -> &'a [u8] {
        tag_between(key, self.0[0], self.0[1]).unwrap_or(key)
    }
}

/// The non-empty bytes between the first `open` and the first `close` after it.
fn tag_between(key: &[u8], open: u8, close: u8) -> Option<&[u8]> {
    let start = key.iter().position(|&b| b == open)? + 1;
    let rest = key.get(start..)?;
    let len = rest.iter().position(|&b| b == close)?;
    if len == 0 {
        return None;
    }
    rest.get(..len)
}

/// Number of Redis Cluster hash slots.
pub const CLUSTER_SLOTS: u16 = 16384;

/// Redis Cluster slot of a key (CRC16/XMODEM of the {tag} part, mod 16384), for later use.
pub fn cluster_slot(key: &[u8]) -> u16 {
    let part = tag_between(key, b'{', b'}').unwrap_or(key);
    crc16_xmodem(part) % CLUSTER_SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn braces() -> HashTag {
        HashTag::new("{}").unwrap()
    }

    #[test]
    fn tag_must_be_two_bytes() {
        assert!(HashTag::new("").is_err());
        assert!(HashTag::new("{").is_err());
        assert!(HashTag::new("{}}").is_err());
        assert_eq!(HashTag::new("::").unwrap().delimiters(), [b':', b':']);
        // One two-byte character counts as two delimiters, as in twemproxy.
        assert_eq!(HashTag::new("é").unwrap().delimiters(), [0xc3, 0xa9]);
    }

    #[test]
    fn extracts_first_tag() {
        let t = braces();
        assert_eq!(t.extract(b"{user1}:a"), b"user1");
        assert_eq!(t.extract(b"x{user1}y{user2}"), b"user1");
        assert_eq!(t.extract(b"a{b{c}d"), b"b{c");
        assert_eq!(t.extract(b"{a}}"), b"a");
    }

    #[test]
    fn empty_or_unclosed_tag_hashes_whole_key() {
        let t = braces();
        assert_eq!(t.extract(b"{}x"), b"{}x");
        assert_eq!(t.extract(b"{}{a}"), b"{}{a}");
        assert_eq!(t.extract(b"{abc"), b"{abc");
        assert_eq!(t.extract(b"}a{"), b"}a{");
        assert_eq!(t.extract(b"plain"), b"plain");
        assert_eq!(t.extract(b""), b"");
    }

    #[test]
    fn same_open_and_close() {
        let t = HashTag::new("::").unwrap();
        assert_eq!(t.extract(b"a:b:c"), b"b");
        assert_eq!(t.extract(b"a::c"), b"a::c");
    }

    #[test]
    fn cluster_slots_match_redis() {
        // Values from Redis' CLUSTER KEYSLOT and its cluster specification.
        assert_eq!(cluster_slot(b"123456789"), 12739);
        assert_eq!(cluster_slot(b"foo"), 12182);
        assert_eq!(
            cluster_slot(b"{user1000}.following"),
            cluster_slot(b"user1000")
        );
        assert_ne!(cluster_slot(b"{}foo"), cluster_slot(b"foo"));
        assert_eq!(cluster_slot(b""), 0);
    }
}
