//! Golden vectors. Standard functions are pinned to their published reference values; the
//! twemproxy-specific twists (signed bytes, truncation, seeds) to values derived from the C
//! semantics, and every function is checked against the real nutcracker binary in
//! `tests/nutcracker_diff.rs`.

use super::*;

#[test]
fn names_round_trip() {
    for kind in HashKind::ALL {
        assert_eq!(kind.to_string().parse::<HashKind>(), Ok(kind));
    }
    assert_eq!("fnv1a_64".parse(), Ok(HashKind::Fnv1a_64));
    assert_eq!("one_at_a_time".parse(), Ok(HashKind::OneAtATime));
    assert!("FNV1A_64".parse::<HashKind>().is_err());
    assert!("sha1".parse::<HashKind>().is_err());
}

#[test]
fn empty_key_places_at_zero() {
    for kind in HashKind::ALL {
        assert_eq!(kind.hash(b""), 0, "{kind}");
    }
    // ... although several functions are not 0 on empty input.
    assert_eq!(HashKind::Fnv1a_64.raw(b""), 0x8422_2325);
    assert_eq!(HashKind::Jenkins.raw(b""), 0xdead_beef + 13);
    assert_eq!(HashKind::Md5.raw(b""), 0xd98c_1dd4);
}

#[test]
fn crc_reference_values() {
    // The CRC "check" input.
    let check = b"123456789";
    assert_eq!(HashKind::Crc32a.hash(check), 0xcbf4_3926);
    assert_eq!(HashKind::Crc32.hash(check), 0xcbf4 & 0x7fff);
    assert_eq!(crc16_xmodem(check), 0x31c3);
    // twemproxy's unmasked accumulator: the low 16 bits are the real CRC, the high 16 bits
    // are the previous state's low byte shifted up, xor the last table entry's high byte.
    let c = HashKind::Crc16.hash(check);
    assert_eq!(c & 0xffff, 0x31c3);
    assert_ne!(c >> 16, 0);
    assert_eq!(HashKind::Crc16.hash(b"a"), u32::from(crc16_xmodem(b"a")));
}

#[test]
fn crc16_keeps_high_bits_like_twemproxy() {
    // After two bytes the state is (crc1 << 8) ^ T[..]; crc1 < 0x10000, so bits 16..23 hold
    // crc1's high byte.
    let one = u32::from(crc16_xmodem(b"x"));
    let two = HashKind::Crc16.hash(b"xy");
    assert_eq!(two >> 16, one >> 8);
    assert_eq!(two & 0xffff, u32::from(crc16_xmodem(b"xy")));
}

#[test]
fn md5_is_first_word_little_endian() {
    // md5("a") = 0cc175b9 c0f1b6a8 ...
    assert_eq!(HashKind::Md5.hash(b"a"), 0xb975_c10c);
}

#[test]
fn fnv_reference_values() {
    assert_eq!(HashKind::Fnv1_32.hash(b"a"), 0x050c_5d7e);
    assert_eq!(HashKind::Fnv1a_32.hash(b"a"), 0xe40c_292c);
    assert_eq!(HashKind::Fnv1_64.hash(b"a"), 0x8601_b7be);
    assert_eq!(HashKind::Fnv1a_64.hash(b"a"), 0x8601_ec8c);
    assert_eq!(HashKind::Fnv1_32.hash(b"foobar"), 0x31f0_b262);
    assert_eq!(HashKind::Fnv1a_32.hash(b"foobar"), 0xbf9c_f968);
    assert_eq!(HashKind::Fnv1_64.hash(b"foobar"), 0xa4dd_a9c2);
    assert_eq!(HashKind::Fnv1a_64.hash(b"foobar"), 0xf739_67e8);
}

#[test]
fn fnv_takes_high_bytes_signed() {
    // (0x811c9dc5 ^ 0xffffff80) * 0x01000193, not (0x811c9dc5 ^ 0x80) * ...
    assert_eq!(HashKind::Fnv1a_32.hash(&[0x80]), 0x04f3_b29f);
    assert_eq!(HashKind::Fnv1_64.hash(&[0xff]), 0x79fe_4820);
    assert_eq!(HashKind::Fnv1a_64.hash("é".as_bytes()), 0xb4cc_3001);
}

#[test]
fn one_at_a_time_reference_values() {
    assert_eq!(HashKind::OneAtATime.hash(b"a"), 0xca2e_9442);
    assert_eq!(
        HashKind::OneAtATime.hash(b"The quick brown fox jumps over the lazy dog"),
        0x519e_91f5
    );
}

#[test]
fn lookup3_reference_values() {
    // From lookup3.c's driver: hashlittle("Four score and seven years ago", 30, 0 / 1).
    let s = b"Four score and seven years ago";
    assert_eq!(lookup3(s, 0), 0x1777_0551);
    assert_eq!(lookup3(s, 1), 0xcd62_8161);
    assert_eq!(lookup3(b"", 0), 0xdead_beef);
    assert_eq!(HashKind::Jenkins.hash(s), lookup3(s, 13));
}

#[test]
fn hsieh_and_murmur_tail_lengths_differ() {
    // Every tail length takes a distinct branch; none may collapse onto another.
    for kind in [HashKind::Hsieh, HashKind::Murmur, HashKind::Jenkins] {
        let keys: [&[u8]; 6] = [b"abcd", b"abcde", b"abcdef", b"abcdefg", b"abcdefgh", b"a"];
        let mut seen: Vec<u32> = keys.iter().map(|k| kind.hash(k)).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), keys.len(), "{kind}");
    }
}
