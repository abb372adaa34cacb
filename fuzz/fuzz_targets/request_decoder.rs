//! Feeds arbitrary bytes to the request decoder, whole and in pieces: it must never panic,
//! every range it returns must lie inside the buffer, and the split feed must give the
//! same requests as the whole one (limits are far above the input size here).
#![no_main]

use libfuzzer_sys::fuzz_target;
use resp::{Limits, RequestDecoder};

/// Decodes `data` fed in pieces of `step` bytes; returns each request's arguments, then the
/// error if one ended the stream.
fn run(data: &[u8], step: usize) -> Vec<Result<Vec<Vec<u8>>, String>> {
    let mut dec = RequestDecoder::new(Limits::default());
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for chunk in data.chunks(step.max(1)) {
        buf.extend_from_slice(chunk);
        loop {
            match dec.decode(&buf) {
                Ok(Some(req)) => {
                    let n = req.consumed();
                    assert!(n > 0 && n <= buf.len());
                    let args: Vec<Vec<u8>> = req.args(&buf).map(<[u8]>::to_vec).collect();
                    assert_eq!(args.len(), req.argc());
                    out.push(Ok(args));
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
    let whole = run(data, data.len());
    assert_eq!(run(data, usize::from(step % 16) + 1), whole);
    // Tiny limits exercise every limit path; only absence of panics is checked.
    let tiny = Limits {
        max_bulk: 4,
        max_multibulk: 3,
        max_inline: 8,
    };
    let mut dec = RequestDecoder::new(tiny);
    let mut rest = data;
    while let Ok(Some(req)) = dec.decode(rest) {
        rest = &rest[req.consumed()..];
    }
});
