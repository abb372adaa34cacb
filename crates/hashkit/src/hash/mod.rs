//! The twelve key hashes of twemproxy, bit for bit.
//!
//! twemproxy's C code reads keys through `const char *`, and on x86-64 Linux `char` is signed.
//! Several functions widen each byte straight from that signed `char`, so a byte >= 0x80 enters
//! the arithmetic as `0xFFFF_FF80..` instead of `0x80..`. The helpers below say per function
//! whether a byte is taken signed ([`signed32`], [`signed64`]) or unsigned, following what the
//! Debian nutcracker 0.5.0 binary does. The differential test in `tests/nutcracker_diff.rs`
//! checks every function against that binary.

use std::fmt;
use std::str::FromStr;

use md5::{Digest, Md5};

use crate::ParseNameError;

/// A key hash function as named in `nutcracker.yml` (`hash:`).
///
/// Every variant returns exactly the 32-bit value twemproxy computes for placement, including
/// its truncations (the `*_64` FNV variants keep the low 32 bits, `crc32` keeps 15 bits).
// The variant names mirror twemproxy's config names (`fnv1a_64`), hence the underscores.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashKind {
    /// Bob Jenkins' one-at-a-time hash (`one_at_a_time`).
    OneAtATime,
    /// First four bytes of the MD5 digest, little-endian (`md5`).
    Md5,
    /// CRC-16/XMODEM table walk with twemproxy's 32-bit accumulator (`crc16`).
    Crc16,
    /// Bits 16..31 of CRC-32, masked to 15 bits (`crc32`).
    Crc32,
    /// The full standard CRC-32 (`crc32a`).
    Crc32a,
    /// 64-bit FNV-1, low 32 bits (`fnv1_64`).
    Fnv1_64,
    /// 64-bit FNV-1a, low 32 bits (`fnv1a_64`); twemproxy's default.
    Fnv1a_64,
    /// 32-bit FNV-1 (`fnv1_32`).
    Fnv1_32,
    /// 32-bit FNV-1a (`fnv1a_32`).
    Fnv1a_32,
    /// Paul Hsieh's SuperFastHash (`hsieh`).
    Hsieh,
    /// MurmurHash2 with a length-derived seed (`murmur`).
    Murmur,
    /// Bob Jenkins' lookup3 `hashlittle` with initial value 13 (`jenkins`).
    Jenkins,
}

impl HashKind {
    /// Every hash, in twemproxy's declaration order.
    pub const ALL: [HashKind; 12] = [
        HashKind::OneAtATime,
        HashKind::Md5,
        HashKind::Crc16,
        HashKind::Crc32,
        HashKind::Crc32a,
        HashKind::Fnv1_64,
        HashKind::Fnv1a_64,
        HashKind::Fnv1_32,
        HashKind::Fnv1a_32,
        HashKind::Hsieh,
        HashKind::Murmur,
        HashKind::Jenkins,
    ];

    /// The name used in `nutcracker.yml`.
    pub fn name(self) -> &'static str {
        match self {
            HashKind::OneAtATime => "one_at_a_time",
            HashKind::Md5 => "md5",
            HashKind::Crc16 => "crc16",
            HashKind::Crc32 => "crc32",
            HashKind::Crc32a => "crc32a",
            HashKind::Fnv1_64 => "fnv1_64",
            HashKind::Fnv1a_64 => "fnv1a_64",
            HashKind::Fnv1_32 => "fnv1_32",
            HashKind::Fnv1a_32 => "fnv1a_32",
            HashKind::Hsieh => "hsieh",
            HashKind::Murmur => "murmur",
            HashKind::Jenkins => "jenkins",
        }
    }

    /// The placement hash of a key (already reduced to its hash tag, if any).
    ///
    /// This is what twemproxy feeds to the distribution: an empty key hashes to 0 whatever the
    /// function (twemproxy short-cuts it before calling the hash), anything else is
    /// [`HashKind::raw`].
    pub fn hash(self, key: &[u8]) -> u32 {
        if key.is_empty() {
            return 0;
        }
        self.raw(key)
    }

    /// The hash function itself, without the empty-key rule of [`HashKind::hash`].
    pub fn raw(self, key: &[u8]) -> u32 {
        match self {
            HashKind::OneAtATime => one_at_a_time(key),
            HashKind::Md5 => md5_low32(key),
            HashKind::Crc16 => crc16(key),
            HashKind::Crc32 => (crc32fast::hash(key) >> 16) & 0x7fff,
            HashKind::Crc32a => crc32fast::hash(key),
            HashKind::Fnv1_64 => fnv1_64(key),
            HashKind::Fnv1a_64 => fnv1a_64(key),
            HashKind::Fnv1_32 => fnv1_32(key),
            HashKind::Fnv1a_32 => fnv1a_32(key),
            HashKind::Hsieh => hsieh(key),
            HashKind::Murmur => murmur(key),
            HashKind::Jenkins => jenkins(key),
        }
    }
}

impl fmt::Display for HashKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HashKind {
    type Err = ParseNameError;

    /// Parses a twemproxy hash name (exact, lower case, as nutcracker requires).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HashKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| ParseNameError::Hash(s.to_owned()))
    }
}

/// A key byte as C's signed `char` widened to 32 bits.
fn signed32(b: u8) -> u32 {
    b as i8 as i32 as u32
}

/// A key byte as C's signed `char` widened to 64 bits.
fn signed64(b: u8) -> u64 {
    b as i8 as i64 as u64
}

/// The first 16 bytes of an MD5 digest.
pub(crate) fn md5_digest(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

fn md5_low32(key: &[u8]) -> u32 {
    let d = md5_digest(key);
    u32::from_le_bytes([d[0], d[1], d[2], d[3]])
}

fn one_at_a_time(key: &[u8]) -> u32 {
    let mut v: u32 = 0;
    for &b in key {
        v = v.wrapping_add(signed32(b));
        v = v.wrapping_add(v << 10);
        v ^= v >> 6;
    }
    v = v.wrapping_add(v << 3);
    v ^= v >> 11;
    v.wrapping_add(v << 15)
}

/// CRC-16/XMODEM (polynomial 0x1021) lookup table, built at compile time.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC-16/XMODEM of `data` (what Redis Cluster uses for slots).
pub(crate) fn crc16_xmodem(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) as u8 ^ b)]
    })
}

/// twemproxy keeps the CRC-16 state in a `uint32_t` and never masks it, so bits shifted out of
/// the low 16 stay in the result (only bits 8..15 feed the table index).
fn crc16(key: &[u8]) -> u32 {
    key.iter().fold(0u32, |crc, &b| {
        (crc << 8) ^ u32::from(CRC16_TABLE[usize::from((crc >> 8) as u8 ^ b)])
    })
}

const FNV64_INIT: u64 = 0xcbf2_9ce4_8422_2325;
const FNV64_PRIME: u64 = 0x0000_0100_0000_01b3;
const FNV32_INIT: u32 = 0x811c_9dc5;
const FNV32_PRIME: u32 = 0x0100_0193;

fn fnv1_64(key: &[u8]) -> u32 {
    let h = key.iter().fold(FNV64_INIT, |h, &b| {
        h.wrapping_mul(FNV64_PRIME) ^ signed64(b)
    });
    h as u32
}

/// twemproxy runs this one in 32-bit arithmetic with the 64-bit constants truncated, which
/// equals the low half of the real 64-bit FNV-1a.
fn fnv1a_64(key: &[u8]) -> u32 {
    key.iter().fold(FNV64_INIT as u32, |h, &b| {
        (h ^ signed32(b)).wrapping_mul(FNV64_PRIME as u32)
    })
}

fn fnv1_32(key: &[u8]) -> u32 {
    key.iter().fold(FNV32_INIT, |h, &b| {
        h.wrapping_mul(FNV32_PRIME) ^ signed32(b)
    })
}

fn fnv1a_32(key: &[u8]) -> u32 {
    key.iter().fold(FNV32_INIT, |h, &b| {
        (h ^ signed32(b)).wrapping_mul(FNV32_PRIME)
    })
}

fn le16(b: &[u8]) -> u32 {
    u32::from(b[0]) | u32::from(b[1]) << 8
}

fn hsieh(key: &[u8]) -> u32 {
    if key.is_empty() {
        return 0;
    }
    let mut h: u32 = 0;
    let mut chunks = key.chunks_exact(4);
    for c in &mut chunks {
        h = h.wrapping_add(le16(&c[0..2]));
        let tmp = (le16(&c[2..4]) << 11) ^ h;
        h = (h << 16) ^ tmp;
        h = h.wrapping_add(h >> 11);
    }
    match *chunks.remainder() {
        [a, b, c] => {
            h = h.wrapping_add(le16(&[a, b]));
            h ^= h << 16;
            // The third tail byte is read through signed `char`.
            h ^= signed32(c) << 18;
            h = h.wrapping_add(h >> 11);
        }
        [a, b] => {
            h = h.wrapping_add(le16(&[a, b]));
            h ^= h << 11;
            h = h.wrapping_add(h >> 17);
        }
        [a] => {
            h = h.wrapping_add(u32::from(a));
            h ^= h << 10;
            h = h.wrapping_add(h >> 1);
        }
        _ => {}
    }
    h ^= h << 3;
    h = h.wrapping_add(h >> 5);
    h ^= h << 4;
    h = h.wrapping_add(h >> 17);
    h ^= h << 25;
    h.wrapping_add(h >> 6)
}

fn murmur(key: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    // twemproxy's `(uint32_t)length`: lengths wrap at 2^32.
    let len = key.len() as u32;
    let mut h = 0xdead_beef_u32.wrapping_mul(len) ^ len;
    let mut chunks = key.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, &b) in tail.iter().enumerate().rev() {
            h ^= u32::from(b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

/// twemproxy's `jenkins` is lookup3's `hashlittle` with initial value 13.
fn jenkins(key: &[u8]) -> u32 {
    lookup3(key, 13)
}

/// Bob Jenkins' lookup3 `hashlittle`. On little-endian machines its word-at-a-time paths read
/// the same bytes as its byte-at-a-time path, so only the latter is needed.
fn lookup3(key: &[u8], initval: u32) -> u32 {
    let init = 0xdead_beef_u32
        .wrapping_add(key.len() as u32)
        .wrapping_add(initval);
    let (mut a, mut b, mut c) = (init, init, init);
    if key.is_empty() {
        return c;
    }
    // Whole 12-byte blocks except the last (which may be full).
    let mut rest = key;
    while rest.len() > 12 {
        a = a.wrapping_add(le32(&rest[0..4]));
        b = b.wrapping_add(le32(&rest[4..8]));
        c = c.wrapping_add(le32(&rest[8..12]));
        jenkins_mix(&mut a, &mut b, &mut c);
        rest = &rest[12..];
    }
    let mut last = [0u8; 12];
    last[..rest.len()].copy_from_slice(rest);
    a = a.wrapping_add(le32(&last[0..4]));
    b = b.wrapping_add(le32(&last[4..8]));
    c = c.wrapping_add(le32(&last[8..12]));
    jenkins_final(&mut a, &mut b, &mut c);
    c
}

fn le32(b: &[u8]) -> u32 {
    u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16 | u32::from(b[3]) << 24
}

fn jenkins_mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    for (r1, r2, r3) in [(4, 6, 8), (16, 19, 4)] {
        *a = a.wrapping_sub(*c) ^ c.rotate_left(r1);
        *c = c.wrapping_add(*b);
        *b = b.wrapping_sub(*a) ^ a.rotate_left(r2);
        *a = a.wrapping_add(*c);
        *c = c.wrapping_sub(*b) ^ b.rotate_left(r3);
        *b = b.wrapping_add(*a);
    }
}

fn jenkins_final(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c = (*c ^ *b).wrapping_sub(b.rotate_left(14));
    *a = (*a ^ *c).wrapping_sub(c.rotate_left(11));
    *b = (*b ^ *a).wrapping_sub(a.rotate_left(25));
    *c = (*c ^ *b).wrapping_sub(b.rotate_left(16));
    *a = (*a ^ *c).wrapping_sub(c.rotate_left(4));
    *b = (*b ^ *a).wrapping_sub(a.rotate_left(14));
    *c = (*c ^ *b).wrapping_sub(b.rotate_left(24));
}

#[cfg(test)]
mod tests;
