//! twemproxy-compatible key placement.
//!
//! rampart must put every key on exactly the server nutcracker 0.5.0 puts it on, so this crate
//! reproduces twemproxy's hashes and distributions bit for bit, quirks included (signed `char`
//! bytes, truncated 64-bit FNV, 15-bit `crc32`, ketama point counts in single precision).
//!
//! # Layout
//! - [`hash`](HashKind): the twelve key hash functions.
//! - [`tag`](HashTag): hash tag extraction and Redis Cluster slots.
//! - [`dist`](Continuum): ketama / modula / random rings and dispatch.
//!
//! # Placing a key
//! ```
//! use hashkit::{ring_identity, Continuum, Distribution, HashKind, HashTag, ServerPoint};
//!
//! let servers: Vec<ServerPoint> = ["127.0.0.1:7001", "127.0.0.1:7002"]
//!     .iter()
//!     .map(|text| ServerPoint { identity: ring_identity(text, 0, None), weight: 1 })
//!     .collect();
//! let ring = Continuum::build(Distribution::Ketama, &servers, &[true, true]);
//! let tag = HashTag::new("{}")?;
//! let hash = HashKind::Fnv1a_64.hash(tag.extract(b"{user:1}:profile"));
//! assert!(ring.dispatch(hash).is_some_and(|i| i < 2));
//! # Ok::<(), hashkit::HashTagError>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod dist;
mod hash;
mod tag;

pub use dist::{pool_order, ring_identity, Continuum, Distribution, ServerPoint};
pub use hash::HashKind;
pub use tag::{cluster_slot, HashTag, CLUSTER_SLOTS};

/// A `hash:` or `distribution:` name that twemproxy does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseNameError {
    /// Unknown hash function name.
    #[error("unknown hash \"{0}\" (expected one of one_at_a_time, md5, crc16, crc32, crc32a, fnv1_64, fnv1a_64, fnv1_32, fnv1a_32, hsieh, murmur, jenkins)")]
    Hash(String),
    /// Unknown distribution name.
    #[error("unknown distribution \"{0}\" (expected ketama, modula or random)")]
    Distribution(String),
}

/// A `hash_tag:` value that is not exactly two bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hash_tag \"{0}\" is not a string of two characters")]
pub struct HashTagError(pub String);

#[cfg(test)]
mod golden_tests;
