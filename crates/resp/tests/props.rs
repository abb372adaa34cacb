//! Property tests: any split of a stream into successive reads decodes exactly like one
//! whole read, dropping a reply's framed bytes mid-way does not move any reply boundary, and
//! no input makes a decoder panic.

use proptest::prelude::*;
use resp::{encode, Limits, ProtocolError, ReplyDecoder, ReplyError, RequestDecoder};

/// One request as the client sends it.
#[derive(Debug, Clone)]
enum Req {
    Resp(Vec<Vec<u8>>),
    Inline(Vec<Vec<u8>>),
}

fn arb_req() -> impl Strategy<Value = Req> {
    let resp_arg = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..12),
        prop::collection::vec(any::<u8>(), 0..3000),
    ];
    let inline_arg = "[a-z0-9 ]{0,6}".prop_map(String::into_bytes);
    prop_oneof![
        prop::collection::vec(resp_arg, 0..6).prop_map(Req::Resp),
        prop::collection::vec(inline_arg, 0..5).prop_map(Req::Inline),
    ]
}

/// The bytes of `req` and the arguments Redis would see.
fn render(req: &Req) -> (Vec<u8>, Vec<Vec<u8>>) {
    match req {
        Req::Resp(args) => {
            let mut out = bytes::BytesMut::new();
            let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            encode::command(&mut out, &refs);
            (out.to_vec(), args.clone())
        }
        Req::Inline(args) => {
            let mut line = Vec::new();
            for (i, arg) in args.iter().enumerate() {
                if i > 0 {
                    line.push(b' ');
                }
                if !arg.is_empty() && !arg.contains(&b' ') {
                    line.extend_from_slice(arg);
                } else {
                    line.push(b'"');
                    line.extend_from_slice(arg);
                    line.push(b'"');
                }
            }
            line.extend_from_slice(b"\r\n");
            (line, args.clone())
        }
    }
}

type Outcome = Vec<Result<Vec<Vec<u8>>, ProtocolError>>;

/// Decodes `stream` delivered in pieces cut at `cuts` (sorted offsets), consuming each
/// complete request from the front of a growing buffer; stops at the first error.
fn decode_requests(stream: &[u8], cuts: &[usize], limits: Limits) -> Outcome {
    let mut dec = RequestDecoder::new(limits);
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut fed = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        let cut = cut.clamp(fed, stream.len());
        buf.extend_from_slice(&stream[fed..cut]);
        fed = cut;
        loop {
            match dec.decode(&buf) {
                Ok(Some(req)) => {
                    let n = req.consumed();
                    out.push(Ok(req.args(&buf).map(<[u8]>::to_vec).collect()));
                    buf.drain(..n);
                }
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }
    out
}

fn cuts(max: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..max.max(1), 0..20).prop_map(|mut v| {
        v.sort_unstable();
        v
    })
}

/// One reply frame, built recursively.
fn arb_reply() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        "[a-zA-Z ]{0,10}".prop_map(|s| format!("+{s}\r\n").into_bytes()),
        "[a-zA-Z ]{0,10}".prop_map(|s| format!("-ERR {s}\r\n").into_bytes()),
        any::<i64>().prop_map(|n| format!(":{n}\r\n").into_bytes()),
        prop::collection::vec(any::<u8>(), 0..4000).prop_map(|b| {
            let mut out = bytes::BytesMut::new();
            encode::bulk(&mut out, &b);
            out.to_vec()
        }),
        Just(b"$-1\r\n".to_vec()),
        Just(b"*-1\r\n".to_vec()),
        Just(b"_\r\n".to_vec()),
        Just(b",1.5\r\n".to_vec()),
        Just(b"#f\r\n".to_vec()),
        Just(b"=7\r\ntxt:a\r\n\r\n".to_vec()),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            (
                prop::sample::select(vec![b'*', b'~', b'>']),
                prop::collection::vec(inner.clone(), 0..6)
            )
                .prop_map(|(kind, items)| {
                    let mut out = format!("{}{}\r\n", char::from(kind), items.len()).into_bytes();
                    items.iter().for_each(|i| out.extend_from_slice(i));
                    out
                }),
            prop::collection::vec((inner.clone(), inner.clone()), 0..4).prop_map(|pairs| {
                let mut out = format!("%{}\r\n", pairs.len()).into_bytes();
                for (k, v) in &pairs {
                    out.extend_from_slice(k);
                    out.extend_from_slice(v);
                }
                out
            }),
            (inner.clone(), inner.clone(), inner).prop_map(|(k, v, value)| {
                let mut out = b"|1\r\n".to_vec();
                out.extend_from_slice(&k);
                out.extend_from_slice(&v);
                out.extend_from_slice(&value);
                out
            }),
        ]
    })
}

/// Reply lengths found in `stream` fed in pieces; stops at the first error.
fn decode_replies(stream: &[u8], cuts: &[usize]) -> Vec<Result<usize, ReplyError>> {
    let mut dec = ReplyDecoder::new(Limits::default());
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut fed = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        let cut = cut.clamp(fed, stream.len());
        buf.extend_from_slice(&stream[fed..cut]);
        fed = cut;
        loop {
            match dec.decode(&buf) {
                Ok(Some(n)) => {
                    out.push(Ok(n));
                    buf.drain(..n);
                }
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }
    out
}

/// Where each reply of `stream` ends (offsets into `stream`), fed in pieces cut at `cuts`,
/// dropping the framed bytes of a partial reply after the reads whose index is in `drops`
/// (all of them when `drops` is `None`); stops at the first error.
fn reply_ends_dropping(
    stream: &[u8],
    cuts: &[usize],
    drops: Option<&[bool]>,
) -> Vec<Result<usize, ReplyError>> {
    let mut dec = ReplyDecoder::new(Limits::default());
    let mut buf: Vec<u8> = Vec::new();
    // Offset in `stream` of `buf[0]`.
    let mut base = 0;
    let mut out = Vec::new();
    let mut fed = 0;
    for (read, &cut) in cuts
        .iter()
        .chain(std::iter::once(&stream.len()))
        .enumerate()
    {
        let cut = cut.clamp(fed, stream.len());
        buf.extend_from_slice(&stream[fed..cut]);
        fed = cut;
        loop {
            match dec.decode(&buf) {
                Ok(Some(n)) => {
                    base += n;
                    out.push(Ok(base));
                    buf.drain(..n);
                }
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
        if drops.is_none_or(|d| d.get(read).copied().unwrap_or(false)) {
            let n = dec.consume_framed();
            assert!(n <= buf.len());
            base += n;
            buf.drain(..n);
        }
    }
    out
}

/// Turns reply lengths into where each reply ends in the stream.
fn ends(lengths: Vec<Result<usize, ReplyError>>) -> Vec<Result<usize, ReplyError>> {
    let mut at = 0;
    lengths
        .into_iter()
        .map(|r| {
            r.map(|n| {
                at += n;
                at
            })
        })
        .collect()
}

/// Bytes biased towards RESP syntax, to reach deep decoder states.
fn resp_noise() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => any::<u8>(),
        2 => prop::sample::select(b"*$+-:_,#(!=~%>|\r\n\r\n0123456789- \"'\\x".to_vec()),
    ];
    prop::collection::vec(byte, 0..400)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn requests_decode_the_same_however_split(
        reqs in prop::collection::vec(arb_req(), 1..12),
        cuts in cuts(20_000),
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for req in &reqs {
            let (bytes, args) = render(req);
            stream.extend_from_slice(&bytes);
            expected.push(Ok(args));
        }
        let whole = decode_requests(&stream, &[], Limits::default());
        prop_assert_eq!(&whole, &expected);
        let split = decode_requests(&stream, &cuts, Limits::default());
        prop_assert_eq!(split, expected);
    }

    #[test]
    fn replies_decode_the_same_however_split(
        replies in prop::collection::vec(arb_reply(), 1..8),
        cuts in cuts(20_000),
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for reply in &replies {
            stream.extend_from_slice(reply);
            expected.push(Ok(reply.len()));
        }
        prop_assert_eq!(&decode_replies(&stream, &[]), &expected);
        prop_assert_eq!(decode_replies(&stream, &cuts), expected);
        // peek accepts every generated reply.
        for reply in &replies {
            prop_assert!(resp::peek(reply).is_ok());
        }
    }

    #[test]
    fn dropping_framed_bytes_keeps_reply_boundaries(
        (stream, expected, cuts) in prop::collection::vec(arb_reply(), 1..8).prop_flat_map(|replies| {
            let mut stream = Vec::new();
            let mut expected = Vec::new();
            for reply in &replies {
                stream.extend_from_slice(reply);
                expected.push(Ok(stream.len()));
            }
            // Many cuts within the stream, so some fall inside every kind of frame.
            let len = stream.len();
            (Just(stream), Just(expected), prop::collection::vec(0..len, 0..200).prop_map(|mut v| {
                v.sort_unstable();
                v
            }))
        }),
        drops in prop::collection::vec(any::<bool>(), 0..201),
    ) {
        prop_assert_eq!(&reply_ends_dropping(&stream, &cuts, None), &expected);
        prop_assert_eq!(reply_ends_dropping(&stream, &cuts, Some(&drops)), expected);
    }

    #[test]
    fn request_decoder_never_panics_and_ignores_splits(noise in resp_noise(), cuts in cuts(400)) {
        // Limits far above the input size, so read boundaries cannot change the outcome.
        let whole = decode_requests(&noise, &[], Limits::default());
        prop_assert_eq!(decode_requests(&noise, &cuts, Limits::default()), whole);
        // Tiny limits: outcomes may depend on read sizes (as in Redis), but never panic.
        let tiny = Limits { max_bulk: 3, max_multibulk: 2, max_inline: 4 };
        decode_requests(&noise, &cuts, tiny);
    }

    #[test]
    fn reply_decoder_never_panics_and_ignores_splits(noise in resp_noise(), cuts in cuts(400)) {
        let whole = decode_replies(&noise, &[]);
        prop_assert_eq!(&decode_replies(&noise, &cuts), &whole);
        // Dropping framed bytes changes neither a boundary nor an error.
        prop_assert_eq!(reply_ends_dropping(&noise, &cuts, None), ends(whole));
        let _ = resp::peek(&noise);
    }
}
