//! Key -> server golden vectors observed from real nutcracker 0.5.0.
//!
//! The pools are those of `tests/nutcracker_diff.rs` whose placement does not depend on port
//! numbers (named servers), and these exact keys are part of that test's key set, so the
//! values below were checked against the nutcracker binary, not only computed here.

use crate::{Continuum, Distribution, HashKind, HashTag, ServerPoint};

const NAMES: [&str; 4] = ["alpha", "beta", "gamma", "delta"];

fn named(weights: [u32; 4]) -> Vec<ServerPoint> {
    NAMES
        .iter()
        .zip(weights)
        .map(|(n, weight)| ServerPoint {
            identity: n.as_bytes().to_vec(),
            weight,
        })
        .collect()
}

const KEYS: [&[u8]; 5] = [
    b"foo",
    b"key:7",
    b"{user1}:a",
    "\u{e9}".as_bytes(),
    &[0x80, 0x89, 0x92],
];

/// (hash, server per key with ketama + hash_tag "{}" + equal weights,
///  server per key with modula + weights 3,1,4,2 and no tag)
const OBSERVED: [(HashKind, [usize; 5], [usize; 5]); 12] = [
    (HashKind::OneAtATime, [0, 0, 2, 1, 2], [3, 0, 2, 0, 3]),
    (HashKind::Md5, [1, 0, 3, 2, 3], [3, 1, 0, 3, 2]),
    (HashKind::Crc16, [3, 2, 2, 1, 1], [0, 2, 0, 0, 3]),
    (HashKind::Crc32, [3, 3, 3, 3, 3], [2, 1, 1, 2, 2]),
    (HashKind::Crc32a, [0, 2, 0, 0, 1], [2, 0, 2, 2, 2]),
    (HashKind::Fnv1_64, [0, 1, 2, 3, 2], [2, 0, 2, 0, 3]),
    (HashKind::Fnv1a_64, [2, 2, 0, 3, 0], [0, 0, 0, 0, 3]),
    (HashKind::Fnv1_32, [1, 3, 2, 1, 3], [3, 2, 2, 2, 1]),
    (HashKind::Fnv1a_32, [3, 1, 1, 0, 0], [0, 3, 3, 2, 2]),
    (HashKind::Hsieh, [1, 3, 3, 3, 1], [0, 0, 3, 3, 1]),
    (HashKind::Murmur, [0, 3, 0, 0, 3], [2, 0, 0, 0, 0]),
    (HashKind::Jenkins, [2, 2, 1, 0, 2], [0, 1, 0, 1, 3]),
];

#[test]
fn placement_matches_observed_nutcracker() {
    let ketama = Continuum::build(Distribution::Ketama, &named([1; 4]), &[]);
    let modula = Continuum::build(Distribution::Modula, &named([3, 1, 4, 2]), &[]);
    let tag = HashTag::new("{}").unwrap();
    for (hash, want_ketama, want_modula) in OBSERVED {
        for (i, key) in KEYS.iter().enumerate() {
            let k = ketama.dispatch(hash.hash(tag.extract(key)));
            assert_eq!(k, Some(want_ketama[i]), "{hash} ketama {key:?}");
            let m = modula.dispatch(hash.hash(key));
            assert_eq!(m, Some(want_modula[i]), "{hash} modula {key:?}");
        }
    }
}
