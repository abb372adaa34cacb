//! Byte-exact tests of the reply decoder: every type, nesting, errors and limits.

use resp::{Limits, ReplyDecoder, ReplyError};

fn len(buf: &[u8]) -> Result<Option<usize>, ReplyError> {
    ReplyDecoder::new(Limits::default()).decode(buf)
}

fn small() -> Limits {
    Limits {
        max_bulk: 5,
        max_multibulk: 3,
        max_inline: 16,
    }
}

#[test]
fn resp2_types() {
    for frame in [
        &b"+OK\r\n"[..],
        b"-ERR unknown command 'x'\r\n",
        b":0\r\n",
        b":-9223372036854775808\r\n",
        b"$0\r\n\r\n",
        b"$5\r\na\r\nbc\r\n",
        b"$-1\r\n",
        b"*-1\r\n",
        b"*0\r\n",
        b"*2\r\n$1\r\na\r\n:2\r\n",
        b"*2\r\n*1\r\n+x\r\n*-1\r\n",
    ] {
        let mut buf = frame.to_vec();
        buf.extend_from_slice(b"+NEXT\r\n");
        assert_eq!(
            len(&buf),
            Ok(Some(frame.len())),
            "{:?}",
            String::from_utf8_lossy(frame)
        );
    }
}

#[test]
fn resp3_types() {
    for frame in [
        &b"_\r\n"[..],
        b",3.14\r\n",
        b",-inf\r\n",
        b"#t\r\n",
        b"(3492890328409238509324850943850943825024385\r\n",
        b"!21\r\nSYNTAX invalid syntax\r\n",
        b"=15\r\ntxt:Some string\r\n",
        b"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n",
        b"%0\r\n",
        b"~2\r\n+a\r\n+b\r\n",
        b">3\r\n+message\r\n+chan\r\n$2\r\nhi\r\n",
        // An attribute belongs to the value after it.
        b"|1\r\n+ttl\r\n:3600\r\n*2\r\n:1\r\n:2\r\n",
        b"*2\r\n|1\r\n+a\r\n+b\r\n:1\r\n:2\r\n",
    ] {
        let mut buf = frame.to_vec();
        buf.extend_from_slice(b":9\r\n");
        assert_eq!(
            len(&buf),
            Ok(Some(frame.len())),
            "{:?}",
            String::from_utf8_lossy(frame)
        );
    }
}

#[test]
fn incomplete_at_every_cut() {
    let frame = b"*3\r\n$3\r\nfoo\r\n%1\r\n+k\r\n*1\r\n:1\r\n|1\r\n+a\r\n+b\r\n_\r\n";
    for cut in 0..frame.len() {
        assert_eq!(len(&frame[..cut]), Ok(None), "cut at {cut}");
    }
    assert_eq!(len(frame), Ok(Some(frame.len())));
}

#[test]
fn resumes_byte_by_byte() {
    let frame = b"*2\r\n$10\r\n0123456789\r\n*1\r\n+deep\r\n";
    let mut dec = ReplyDecoder::new(Limits::default());
    for cut in 0..frame.len() {
        assert_eq!(dec.decode(&frame[..cut]), Ok(None));
    }
    assert_eq!(dec.decode(frame), Ok(Some(frame.len())));
    assert!(!dec.is_partial());
}

#[test]
fn min_needed_follows_the_declared_bulk() {
    let mut dec = ReplyDecoder::new(Limits::default());
    assert_eq!(dec.decode(b"$10\r\nab"), Ok(None));
    assert_eq!(dec.min_needed(), 10);
}

#[test]
fn errors() {
    assert_eq!(len(b"?x\r\n"), Err(ReplyError::UnknownType(b'?')));
    assert_eq!(len(b"*1\r\n@\r\n"), Err(ReplyError::UnknownType(b'@')));
    assert_eq!(len(b"+OK\rX"), Err(ReplyError::MissingCrlf));
    assert_eq!(len(b"$2\r\nabcd"), Err(ReplyError::MissingCrlf));
    assert_eq!(len(b":12a\r\n"), Err(ReplyError::InvalidInteger));
    assert_eq!(len(b":\r\n"), Err(ReplyError::InvalidInteger));
    for bad in [
        &b"$-2\r\n"[..],
        b"$x\r\n",
        b"!-1\r\n",
        b"*-2\r\n",
        b"%-1\r\n",
        b"~-1\r\n",
        b"*01\r\n",
    ] {
        assert_eq!(len(bad), Err(ReplyError::InvalidLength), "{bad:?}");
    }
    // The largest map still counts without overflow, and costs nothing until it arrives.
    assert_eq!(len(b"|9223372036854775807\r\n"), Ok(None));
}

#[test]
fn limit_max_bulk_at_the_boundary() {
    let mut dec = ReplyDecoder::new(small());
    assert_eq!(dec.decode(b"$5\r\nhello\r\n"), Ok(Some(11)));
    assert_eq!(
        dec.decode(b"$6\r\n"),
        Err(ReplyError::BulkTooBig { len: 6, limit: 5 })
    );
    assert_eq!(
        dec.decode(b"=6\r\n"),
        Err(ReplyError::BulkTooBig { len: 6, limit: 5 })
    );
}

/// `depth` arrays of one element around an empty array: the shape of a Lua table nested
/// `depth` levels deep, as `EVAL` returns it.
fn nested(depth: usize) -> Vec<u8> {
    let mut buf = b"*1\r\n".repeat(depth);
    buf.extend_from_slice(b"*0\r\n");
    buf
}

#[test]
fn an_8000_level_reply_decodes() {
    let reply = nested(8_000);
    assert_eq!(len(&reply), Ok(Some(reply.len())));
    // Also when it arrives in pieces and is followed by the next reply.
    let mut dec = ReplyDecoder::new(Limits::default());
    let mut buf = Vec::new();
    for chunk in reply.chunks(4093) {
        assert_eq!(dec.decode(&buf), Ok(None));
        buf.extend_from_slice(chunk);
    }
    buf.extend_from_slice(b"+OK\r\n");
    assert_eq!(dec.decode(&buf), Ok(Some(reply.len())));
    assert!(!dec.is_partial());
}

#[test]
fn nesting_is_not_limited_by_the_other_limits() {
    // `small()` allows 3 elements and 5-byte bulks; depth is free.
    let mut dec = ReplyDecoder::new(small());
    assert_eq!(dec.decode(&nested(100)), Ok(Some(404)));
}

#[test]
fn consume_framed_drops_complete_headers_only() {
    let mut dec = ReplyDecoder::new(Limits::default());
    assert_eq!(dec.consume_framed(), 0);
    let mut buf = b"*3\r\n:1\r\n+lon".to_vec();
    assert_eq!(dec.decode(&buf), Ok(None));
    // `*3` and `:1` are framed; the unterminated `+lon` line is kept.
    assert_eq!(dec.consume_framed(), 8);
    buf.drain(..8);
    assert_eq!(dec.consume_framed(), 0);
    buf.extend_from_slice(b"g line\r\n$-1\r\n");
    assert_eq!(dec.decode(&buf), Ok(Some(buf.len())));
    assert_eq!(dec.consume_framed(), 0);
}

#[test]
fn consume_framed_streams_a_long_blob_and_checks_its_crlf() {
    let mut dec = ReplyDecoder::new(Limits::default());
    let mut buf = b"$10\r\n01234".to_vec();
    assert_eq!(dec.decode(&buf), Ok(None));
    assert_eq!(dec.consume_framed(), 10);
    buf.clear();
    assert!(dec.is_partial());
    assert_eq!(dec.min_needed(), 7);
    buf.extend_from_slice(b"56789\r");
    assert_eq!(dec.decode(&buf), Ok(None));
    // The payload goes; the CR of the terminator stays to be checked.
    assert_eq!(dec.consume_framed(), 5);
    buf.drain(..5);
    assert_eq!(buf, b"\r");
    buf.extend_from_slice(b"\n:7\r\n");
    assert_eq!(dec.decode(&buf), Ok(Some(2)));

    // A payload not followed by CRLF is still an error after its bytes were dropped.
    let mut buf = b"$3\r\nab".to_vec();
    assert_eq!(dec.decode(&buf), Ok(None));
    assert_eq!(dec.consume_framed(), 6);
    buf.clear();
    buf.extend_from_slice(b"cXY");
    assert_eq!(dec.decode(&buf), Err(ReplyError::MissingCrlf));
}

#[test]
fn consume_framed_keeps_a_deep_reply_in_step() {
    // A deep reply streamed through a 64-byte window ends where it ends.
    let reply = nested(8_000);
    let mut stream = reply.clone();
    stream.extend_from_slice(b":5\r\n");
    let mut dec = ReplyDecoder::new(Limits::default());
    let mut buf = Vec::new();
    let mut dropped = 0;
    let mut found = None;
    for chunk in stream.chunks(64) {
        buf.extend_from_slice(chunk);
        if let Some(n) = dec.decode(&buf).unwrap() {
            found = Some(dropped + n);
            break;
        }
        let n = dec.consume_framed();
        dropped += n;
        buf.drain(..n);
        assert!(buf.len() < 64 + 4);
    }
    assert_eq!(found, Some(reply.len()));
}

#[test]
fn errors_reset_the_decoder() {
    let mut dec = ReplyDecoder::new(Limits::default());
    assert!(dec.decode(b"*1\r\n?\r\n").is_err());
    assert!(!dec.is_partial());
    assert_eq!(dec.decode(b"+OK\r\n"), Ok(Some(5)));
}

#[test]
fn large_arrays_need_no_memory_per_element() {
    // A declared count costs nothing: only nesting is tracked.
    let mut dec = ReplyDecoder::new(Limits::default());
    assert_eq!(dec.decode(b"*9223372036854775807\r\n:1\r\n"), Ok(None));
}
