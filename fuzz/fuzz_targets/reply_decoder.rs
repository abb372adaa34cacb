//! Feeds arbitrary bytes to the reply decoder and to `peek`: they must never panic, and a
//! split feed must find the same reply boundaries as a whole one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use resp::{Limits, ReplyDecoder};

fn run(data: &[u8], step: usize, limits: Limits) -> Vec<Result<usize, String>> {
    let mut dec = ReplyDecoder::new(limits);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for chunk in data.chunks(step.max(1)) {
        buf.extend_from_slice(chunk);
        loop {
            match dec.decode(&buf) {
                Ok(Some(n)) => {
                    assert!(n > 0 && n <= buf.len());
                    // Every complete reply can be peeked at.
                    assert!(resp::peek(&buf[..n]).is_ok());
                    out.push(Ok(n));
                    buf.drain(..n);
                }
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    let whole = run(data, data.len(), Limits::default());
    assert_eq!(run(data, usize::from(step % 16) + 1, Limits::default()), whole);
    let tiny = Limits {
        max_bulk: 4,
        max_multibulk: 3,
        max_inline: 8,
    };
    run(data, data.len(), tiny);
    let _ = resp::peek(data);
});
