//! Byte-exact tests of the request decoder: framing, every error, every limit at its edge.

use resp::{Limits, ProtocolError, Request, RequestDecoder};

/// Bytes consumed and arguments of one decoded request.
type Decoded = Result<Option<(usize, Vec<Vec<u8>>)>, ProtocolError>;

/// Decodes one request and returns (bytes consumed, arguments).
fn one(dec: &mut RequestDecoder, buf: &[u8]) -> Decoded {
    Ok(dec
        .decode(buf)?
        .map(|req| (req.consumed(), req.args(buf).map(<[u8]>::to_vec).collect())))
}

fn decode(buf: &[u8]) -> Decoded {
    one(&mut RequestDecoder::new(Limits::default()), buf)
}

fn small() -> Limits {
    Limits {
        max_bulk: 5,
        max_multibulk: 3,
        max_inline: 16,
    }
}

fn args(list: &[&[u8]]) -> Vec<Vec<u8>> {
    list.iter().map(|a| a.to_vec()).collect()
}

#[test]
fn multibulk_set() {
    let buf = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
    let mut dec = RequestDecoder::new(Limits::default());
    let req = dec.decode(buf).unwrap().unwrap();
    assert_eq!(
        req,
        Request::Multibulk {
            len: buf.len(),
            args: &[8..11, 17..20, 26..31]
        }
    );
    assert_eq!(req.name(buf), Some(&b"SET"[..]));
    assert_eq!(req.argc(), 3);
    assert_eq!(req.arg(buf, 3), None);
}

#[test]
fn pipelined_requests_come_one_at_a_time() {
    let buf = b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n";
    let mut dec = RequestDecoder::new(Limits::default());
    assert_eq!(one(&mut dec, buf), Ok(Some((14, args(&[b"PING"])))));
    assert_eq!(
        one(&mut dec, &buf[14..]),
        Ok(Some((20, args(&[b"GET", b"k"]))))
    );
    assert_eq!(one(&mut dec, &buf[34..]), Ok(Some((6, args(&[b"PING"])))));
    assert_eq!(one(&mut dec, &buf[40..]), Ok(None));
}

#[test]
fn binary_payloads_are_not_scanned() {
    let buf = b"*2\r\n$4\r\nECHO\r\n$6\r\na\r\n\0*$\r\n";
    assert_eq!(
        decode(buf),
        Ok(Some((buf.len(), args(&[b"ECHO", b"a\r\n\0*$"]))))
    );
}

#[test]
fn empty_requests_have_no_arguments() {
    assert_eq!(decode(b"*0\r\n"), Ok(Some((4, vec![]))));
    assert_eq!(decode(b"*-1\r\n"), Ok(Some((5, vec![]))));
    assert_eq!(decode(b"*-10\r\nPING"), Ok(Some((6, vec![]))));
    assert_eq!(decode(b"\r\n"), Ok(Some((2, vec![]))));
    assert_eq!(decode(b"\n"), Ok(Some((1, vec![]))));
    assert_eq!(decode(b"  \t \r\n"), Ok(Some((6, vec![]))));
}

#[test]
fn inline_requests() {
    assert_eq!(decode(b"PING\r\n"), Ok(Some((6, args(&[b"PING"])))));
    assert_eq!(decode(b"PING\n"), Ok(Some((5, args(&[b"PING"])))));
    assert_eq!(
        decode(b"SET k \"a b\\x21\"\r\nGET k\r\n"),
        Ok(Some((17, args(&[b"SET", b"k", b"a b!"]))))
    );
    assert_eq!(
        decode(b"ECHO \"\"\r\n"),
        Ok(Some((9, args(&[b"ECHO", b""]))))
    );
    // Only one CR before the LF is part of the terminator.
    assert_eq!(decode(b"A\r\r\n"), Ok(Some((4, args(&[b"A"])))));
    assert_eq!(decode(b"PING"), Ok(None));
}

#[test]
fn lenient_where_redis_is_lenient() {
    // Redis skips the byte after a header's CR and the two bytes after a payload unchecked.
    assert_eq!(
        decode(b"*1\r\n$4\rXPING\r\n"),
        Ok(Some((14, args(&[b"PING"]))))
    );
    assert_eq!(
        decode(b"*1\r\n$4\r\nPINGxy"),
        Ok(Some((14, args(&[b"PING"]))))
    );
    assert_eq!(
        decode(b"*1\rx$4\r\nPING\r\n"),
        Ok(Some((14, args(&[b"PING"]))))
    );
}

#[test]
fn incomplete_everywhere() {
    let buf = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n";
    for cut in 0..buf.len() {
        assert_eq!(decode(&buf[..cut]), Ok(None), "cut at {cut}");
    }
}

#[test]
fn resumes_byte_by_byte() {
    let buf = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
    let mut dec = RequestDecoder::new(Limits::default());
    for cut in 0..buf.len() {
        assert_eq!(one(&mut dec, &buf[..cut]), Ok(None));
        assert!(dec.is_partial() || cut == 0);
    }
    assert_eq!(
        one(&mut dec, buf),
        Ok(Some((buf.len(), args(&[b"SET", b"key", b"value"]))))
    );
    assert!(!dec.is_partial());
}

#[test]
fn min_needed_follows_the_declared_bulk() {
    let mut dec = RequestDecoder::new(Limits::default());
    assert_eq!(dec.min_needed(), 1);
    assert_eq!(one(&mut dec, b"*1\r\n$100\r\nab"), Ok(None));
    assert_eq!(dec.min_needed(), 100);
    // A 512 MiB declaration costs nothing until the bytes arrive.
    let mut dec = RequestDecoder::new(Limits::default());
    assert_eq!(one(&mut dec, b"*1\r\n$536870912\r\nxy"), Ok(None));
    assert_eq!(dec.min_needed(), 536_870_912);
}

#[test]
fn a_shorter_buffer_starts_over() {
    let mut dec = RequestDecoder::new(Limits::default());
    assert_eq!(one(&mut dec, b"*2\r\n$3\r\nGET\r\n"), Ok(None));
    assert_eq!(one(&mut dec, b"PING\r\n"), Ok(Some((6, args(&[b"PING"])))));
}

#[test]
fn error_invalid_multibulk_length() {
    for buf in [
        &b"*x\r\n"[..],
        b"*\r\n",
        b"*+1\r\n",
        b"*-0\r\n",
        b"*01\r\n",
        b"*1 \r\n",
        b"*99999999999999999999\r\n",
    ] {
        assert_eq!(
            decode(buf),
            Err(ProtocolError::InvalidMultibulkLength),
            "{buf:?}"
        );
    }
}

#[test]
fn error_invalid_bulk_length() {
    for buf in [
        &b"*1\r\n$x\r\n"[..],
        b"*1\r\n$\r\n",
        b"*1\r\n$-1\r\n",
        b"*1\r\n$04\r\n",
        b"*1\r\n$+4\r\n",
    ] {
        assert_eq!(
            decode(buf),
            Err(ProtocolError::InvalidBulkLength),
            "{buf:?}"
        );
    }
}

#[test]
fn error_expected_dollar() {
    assert_eq!(
        decode(b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n"),
        Err(ProtocolError::ExpectedDollar { got: b'f' })
    );
    assert_eq!(
        decode(b"*1\r\n\r\n"),
        Err(ProtocolError::ExpectedDollar { got: b'\r' })
    );
    // The '$' is only checked once the line is complete.
    assert_eq!(decode(b"*1\r\nfoo"), Ok(None));
}

#[test]
fn error_unbalanced_quotes() {
    assert_eq!(
        decode(b"ECHO \"abc\r\n"),
        Err(ProtocolError::UnbalancedQuotes)
    );
    assert_eq!(
        decode(b"ECHO \"a\"b\r\n"),
        Err(ProtocolError::UnbalancedQuotes)
    );
    assert_eq!(decode(b"ECHO 'a\r\n"), Err(ProtocolError::UnbalancedQuotes));
}

#[test]
fn limit_max_inline_at_the_boundary() {
    let mut dec = RequestDecoder::new(small());
    assert_eq!(one(&mut dec, &[b'A'; 16]), Ok(None));
    assert_eq!(
        one(&mut dec, &[b'A'; 17]),
        Err(ProtocolError::TooBigInline { limit: 16 })
    );
    // A complete line is judged on its content, whatever its length (as in Redis).
    let mut long = vec![b'A'; 40];
    long.push(b'\n');
    assert_eq!(one(&mut dec, &long), Ok(Some((41, vec![vec![b'A'; 40]]))));
}

#[test]
fn limit_mbulk_count_string_at_the_boundary() {
    let mut dec = RequestDecoder::new(small());
    let mut buf = b"*".to_vec();
    buf.extend([b'1'; 15]);
    assert_eq!(one(&mut dec, &buf), Ok(None));
    buf.push(b'1');
    assert_eq!(
        one(&mut dec, &buf),
        Err(ProtocolError::TooBigMultibulkCount { limit: 16 })
    );
}

#[test]
fn limit_bulk_count_string_at_the_boundary() {
    let mut dec = RequestDecoder::new(small());
    let mut buf = b"*1\r\n$".to_vec();
    buf.extend([b'1'; 15]);
    assert_eq!(one(&mut dec, &buf), Ok(None));
    buf.push(b'1');
    assert_eq!(
        one(&mut dec, &buf),
        Err(ProtocolError::TooBigBulkCount { limit: 16 })
    );
    // The limit applies before the '$' is checked.
    let mut buf = b"*1\r\n".to_vec();
    buf.extend([b'X'; 17]);
    assert_eq!(
        one(&mut RequestDecoder::new(small()), &buf),
        Err(ProtocolError::TooBigBulkCount { limit: 16 })
    );
}

#[test]
fn limit_multibulk_count_at_the_boundary() {
    let mut dec = RequestDecoder::new(small());
    assert_eq!(
        one(&mut dec, b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"),
        Ok(Some((25, args(&[b"a", b"b", b"c"]))))
    );
    assert_eq!(
        one(&mut dec, b"*4\r\n"),
        Err(ProtocolError::InvalidMultibulkLength)
    );
    assert_eq!(decode(b"*1048576\r\n"), Ok(None));
    assert_eq!(
        decode(b"*1048577\r\n"),
        Err(ProtocolError::InvalidMultibulkLength)
    );
}

#[test]
fn limit_max_bulk_at_the_boundary() {
    let mut dec = RequestDecoder::new(small());
    assert_eq!(
        one(&mut dec, b"*1\r\n$5\r\nhello\r\n"),
        Ok(Some((15, args(&[b"hello"]))))
    );
    assert_eq!(
        one(&mut dec, b"*1\r\n$6\r\n"),
        Err(ProtocolError::InvalidBulkLength)
    );
    assert_eq!(decode(b"*1\r\n$536870912\r\n"), Ok(None));
    assert_eq!(
        decode(b"*1\r\n$536870913\r\n"),
        Err(ProtocolError::InvalidBulkLength)
    );
}

#[test]
fn a_nul_hides_the_terminator_as_in_redis() {
    let mut dec = RequestDecoder::new(small());
    assert_eq!(one(&mut dec, b"ECHO a\0b\r\n"), Ok(None));
    let mut buf = b"ECHO a\0b\r\n".to_vec();
    buf.extend([b'x'; 7]);
    assert_eq!(
        one(&mut dec, &buf),
        Err(ProtocolError::TooBigInline { limit: 16 })
    );
    assert_eq!(decode(b"*1\0\r\n"), Ok(None));
    assert_eq!(decode(b"*1\r\n$1\0\r\n"), Ok(None));
}

#[test]
fn errors_reset_the_decoder() {
    let mut dec = RequestDecoder::new(Limits::default());
    assert!(one(&mut dec, b"*x\r\n").is_err());
    assert!(!dec.is_partial());
    assert_eq!(one(&mut dec, b"PING\r\n"), Ok(Some((6, args(&[b"PING"])))));
}

#[test]
fn a_million_arguments_decode_in_pieces_without_rescanning() {
    let n = 1024 * 1024;
    let mut buf = Vec::with_capacity(n * 7 + 16);
    buf.extend_from_slice(b"*1048576\r\n");
    for _ in 0..n {
        buf.extend_from_slice(b"$1\r\nx\r\n");
    }
    let mut dec = RequestDecoder::new(Limits::default());
    let mut end = 0;
    // Feed in 64 KiB reads: total work must stay linear.
    while end < buf.len() {
        end = (end + 65536).min(buf.len());
        if let Some(req) = dec.decode(&buf[..end]).unwrap() {
            assert_eq!(end, buf.len());
            assert_eq!(req.consumed(), buf.len());
            assert_eq!(req.argc(), n);
            assert_eq!(req.arg(&buf, n - 1), Some(&b"x"[..]));
            return;
        }
    }
    panic!("request never completed");
}
