//! Feeds arbitrary bytes to the reply decoder and to `peek`: they must never panic, a split
//! feed must find the same reply boundaries as a whole one, and so must a split feed that
//! drops the framed bytes of a partial reply after every read (`consume_framed`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use resp::{Limits, ReplyDecoder};

/// Where each reply ends in `data` (or the first error), fed `step` bytes at a time; with
/// `drop`, the framed bytes of a partial reply are dropped after each read.
fn run(data: &[u8], step: usize, limits: Limits, drop: bool) -> Vec<Result<usize, String>> {
    let mut dec = ReplyDecoder::new(limits);
    let mut buf = Vec::new();
    // Offset in `data` of `buf[0]`, and of the start of the reply in progress.
    let mut base = 0;
    let mut start = 0;
    let mut out = Vec::new();
    for chunk in data.chunks(step.max(1)) {
        buf.extend_from_slice(chunk);
        loop {
            match dec.decode(&buf) {
                Ok(Some(n)) => {
                    assert!(n > 0 && n <= buf.len());
                    // Every complete reply can be peeked at.
                    let end = base + n;
                    assert!(resp::peek(&data[start..end]).is_ok());
                    out.push(Ok(end));
                    buf.drain(..n);
                    base = end;
                    start = end;
                    assert_eq!(dec.consume_framed(), 0);
                }
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
        if drop {
            let n = dec.consume_framed();
            assert!(n <= buf.len());
            buf.drain(..n);
            base += n;
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 16) + 1;
    let whole = run(data, data.len(), Limits::default(), false);
    assert_eq!(run(data, step, Limits::default(), false), whole);
    assert_eq!(run(data, step, Limits::default(), true), whole);
    let tiny = Limits {
        max_bulk: 4,
        max_multibulk: 3,
        max_inline: 8,
    };
    run(data, data.len(), tiny, false);
    run(data, step, tiny, true);
    let _ = resp::peek(data);
});
