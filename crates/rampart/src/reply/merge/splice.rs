//! rampart's own answers inside a transaction's `EXEC` reply.
//!
//! Redis runs INFO, COMMAND and CLIENT inside `MULTI` and answers them in `EXEC`'s array;
//! rampart answers them itself, so the transaction's server never sees them. At `EXEC` the
//! session answers them and the server's array gains them at their places:
//!
//! ```text
//!   queued:   SET k v    CLIENT ID    GET k    INFO server
//!   server:   *2  +OK                 $1 v
//!   client:   *4  +OK    :7           $1 v     $... (rampart's INFO)
//! ```
//!
//! A reply that is not an array (nil or `_` when a watched key changed, an error) goes on as
//! the server gave it: nothing ran, so no answer is shown.

use bytes::{BufMut, Bytes, BytesMut};
use resp::encode;

use super::{Merger, BAD_REPLY};

/// One of rampart's answers in an `EXEC` reply.
#[derive(Clone, Debug)]
pub struct Spliced {
    /// Its place in the client's `EXEC` array (0 for the first element); places increase.
    pub at: u32,
    /// The answer.
    pub answer: Answer,
}

/// An answer to splice.
#[derive(Clone, Debug)]
pub enum Answer {
    /// Known at `EXEC` (one RESP value).
    Ready(Bytes),
    /// Merged by `merger` from the next `parts` parts of the gather (INFO with its
    /// keyspace section, summed over the shards).
    Merged {
        /// How the parts merge.
        merger: Box<Merger>,
        /// How many parts, taken in order after those of earlier answers.
        parts: usize,
    },
}

/// The client's `EXEC` reply: `parts[0]` is the server's, the rest feed [`Answer::Merged`].
pub fn splice(parts: Vec<Bytes>, answers: Vec<Spliced>) -> Bytes {
    let mut parts = parts.into_iter();
    let Some(exec) = parts.next() else {
        return Bytes::from_static(BAD_REPLY);
    };
    let Some((n, mut at)) = array_header(&exec) else {
        return exec;
    };
    let total = n + answers.len();
    let mut out = BytesMut::with_capacity(exec.len() + 64);
    encode::array_header(&mut out, total);
    let mut answers = answers.into_iter().peekable();
    let mut served = 0;
    for place in 0..total as u32 {
        if answers.peek().is_some_and(|a| a.at == place) {
            let Some(a) = answers.next() else { break };
            match a.answer {
                Answer::Ready(b) => out.put_slice(&b),
                Answer::Merged { merger, parts: k } => {
                    let mine: Vec<Bytes> = parts.by_ref().take(k).collect();
                    out.put_slice(&merger.merge(mine));
                }
            }
            continue;
        }
        if served == n {
            return Bytes::from_static(BAD_REPLY);
        }
        match exec.get(at..).map(resp::reply::reply_len) {
            Some(Ok(Some(len))) => {
                out.put_slice(&exec[at..at + len]);
                at += len;
                served += 1;
            }
            _ => return Bytes::from_static(BAD_REPLY),
        }
    }
    if served != n || answers.next().is_some() {
        return Bytes::from_static(BAD_REPLY);
    }
    out.freeze()
}

/// The element count and header length of an array reply (`*n`, n ≥ 0); `None` for
/// anything else (nil, `_`, an error).
fn array_header(reply: &[u8]) -> Option<(usize, usize)> {
    if reply.first() != Some(&b'*') {
        return None;
    }
    let cr = memchr::memchr(b'\r', reply)?;
    let n = std::str::from_utf8(&reply[1..cr])
        .ok()?
        .parse::<usize>()
        .ok()?;
    Some((n, cr + 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(at: u32, b: &'static [u8]) -> Spliced {
        Spliced {
            at,
            answer: Answer::Ready(Bytes::from_static(b)),
        }
    }

    #[test]
    fn answers_go_to_their_places() {
        let exec = Bytes::from_static(b"*2\r\n+OK\r\n*1\r\n$1\r\nv\r\n");
        let got = splice(
            vec![exec],
            vec![
                ready(0, b":7\r\n"),
                ready(2, b"$1\r\nn\r\n"),
                ready(4, b"-ERR x\r\n"),
            ],
        );
        assert_eq!(
            &got[..],
            b"*5\r\n:7\r\n+OK\r\n$1\r\nn\r\n*1\r\n$1\r\nv\r\n-ERR x\r\n"
        );
        // Only answers: an empty array from no server.
        let got = splice(
            vec![Bytes::from_static(b"*0\r\n")],
            vec![ready(0, b":1\r\n")],
        );
        assert_eq!(&got[..], b"*1\r\n:1\r\n");
    }

    #[test]
    fn nothing_ran_goes_on_as_the_server_said() {
        for exec in [&b"*-1\r\n"[..], b"_\r\n", b"-EXECABORT x\r\n"] {
            let got = splice(
                vec![
                    Bytes::copy_from_slice(exec),
                    Bytes::from_static(b"$1\r\nx\r\n"),
                ],
                vec![Spliced {
                    at: 0,
                    answer: Answer::Merged {
                        merger: Box::new(Merger::First),
                        parts: 1,
                    },
                }],
            );
            assert_eq!(&got[..], exec);
        }
    }

    #[test]
    fn merged_answers_take_their_parts_and_keep_their_errors() {
        let got = splice(
            vec![
                Bytes::from_static(b"*1\r\n:1\r\n"),
                Bytes::from_static(b"-ERR down\r\n"),
                Bytes::from_static(b":2\r\n"),
            ],
            vec![Spliced {
                at: 1,
                answer: Answer::Merged {
                    merger: Box::new(Merger::Sum),
                    parts: 2,
                },
            }],
        );
        assert_eq!(&got[..], b"*2\r\n:1\r\n-ERR down\r\n");
    }

    #[test]
    fn a_short_array_is_not_merged() {
        let got = splice(
            vec![Bytes::from_static(b"*2\r\n:1\r\n")],
            vec![ready(0, b":7\r\n")],
        );
        assert_eq!(&got[..], BAD_REPLY);
    }
}
