//! Differential tests against a real redis-server: the decoder must split inline requests
//! and reject malformed ones exactly as Redis does, since the proxy stands in for it.
//!
//! The server listens on a Unix socket in a temporary directory (no TCP port at all) and is
//! killed by PID when the test ends. Without a `redis-server` binary the tests are skipped.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use resp::{peek, Limits, RequestDecoder, Value};

/// A redis-server process, killed on drop.
struct Redis {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Option<Redis> {
        let dir = tempfile::tempdir().ok()?;
        let socket = dir.path().join("redis.sock");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let redis = Redis {
            child,
            socket,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if UnixStream::connect(&redis.socket).is_ok() {
                return Some(redis);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends `data` and reads until the server closes or stays silent for a moment.
    fn exchange(&self, data: &[u8]) -> Vec<u8> {
        let mut conn = UnixStream::connect(&self.socket).expect("connect to redis");
        conn.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("set timeout");
        conn.write_all(data).expect("write to redis");
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = conn.read(&mut chunk) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n]);
        }
        out
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis() -> Option<Redis> {
    let redis = Redis::start();
    if redis.is_none() {
        eprintln!("redis-server not available: skipping");
    }
    redis
}

#[test]
fn inline_splitting_matches_redis() {
    let Some(redis) = redis() else { return };
    let lines: &[&[u8]] = &[
        b"a b c",
        b"  a\t\tb  ",
        b"\"a b\" 'c d'",
        b"\"\" x \"\"",
        b"\"\\x41\\x7a\\n\\r\\t\\b\\a\\\"\\\\\\q\"",
        b"\"\\x4g\" \"\\x\"",
        b"'a\\'b' 'a\\nb'",
        b"a\"b c\"",
        b"a\x0bb \x0bc",
        b"a\rb",
        b"x\"y\"",
    ];
    for line in lines {
        let mut request = b"RPUSH l ".to_vec();
        request.extend_from_slice(line);
        request.extend_from_slice(b"\r\n");
        let mut dec = RequestDecoder::new(Limits::default());
        let ours: Vec<Vec<u8>> = match dec.decode(&request) {
            Ok(Some(req)) => req.args(&request).skip(2).map(<[u8]>::to_vec).collect(),
            other => panic!("{line:?}: {other:?}"),
        };
        let mut script = b"DEL l\r\n".to_vec();
        script.extend_from_slice(&request);
        script.extend_from_slice(b"*4\r\n$6\r\nLRANGE\r\n$1\r\nl\r\n$1\r\n0\r\n$2\r\n-1\r\n");
        let replies = redis.exchange(&script);
        // Skip the DEL and RPUSH integer replies, then read the LRANGE array.
        let mut rest = &replies[..];
        for _ in 0..2 {
            let n = resp::reply::reply_len(rest).unwrap().unwrap();
            rest = &rest[n..];
        }
        let Ok(Value::Array(Some(items))) = peek(rest) else {
            panic!("{line:?}: unexpected reply {replies:?}");
        };
        let theirs: Vec<Vec<u8>> = items
            .iter()
            .map(|item| match peek(item) {
                Ok(Value::Bulk(Some(b))) => b.to_vec(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ours, theirs, "line {:?}", String::from_utf8_lossy(line));
    }
}

#[test]
fn protocol_errors_match_redis_byte_for_byte() {
    let Some(redis) = redis() else { return };
    let cases: &[&[u8]] = &[
        b"*x\r\n",
        b"*-0\r\n",
        b"*1\r\n$-1\r\n",
        b"*1\r\n$04\r\n",
        b"*1\r\n\r\n",
        b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n",
        b"ECHO \"abc\r\n",
        b"ECHO \"a\"b\r\n",
        b"ECHO 'a'b'\r\n",
    ];
    let mut big = b"*1\r\n$".to_vec();
    big.extend(std::iter::repeat_n(b'1', 65536));
    let mut inline = vec![b'A'; 65537];
    inline.insert(0, b'B');
    let mut count = b"*".to_vec();
    count.extend(std::iter::repeat_n(b'1', 65536));
    for case in cases
        .iter()
        .copied()
        .chain([&big[..], &inline[..], &count[..]])
    {
        let mut dec = RequestDecoder::new(Limits::default());
        let mut expected = BytesMut::new();
        let mut rest = case;
        loop {
            match dec.decode(rest) {
                Ok(Some(req)) => rest = &rest[req.consumed()..],
                Ok(None) => panic!("{case:?} decoded as incomplete"),
                Err(e) => {
                    e.reply(&mut expected);
                    break;
                }
            }
        }
        assert_eq!(
            String::from_utf8_lossy(&redis.exchange(case)),
            String::from_utf8_lossy(&expected)
        );
    }
    // Redis answers nothing to a request it is still waiting on; neither do we.
    let mut dec = RequestDecoder::new(Limits::default());
    assert_eq!(dec.decode(b"ECHO a\0b\r\n").map(|r| r.is_some()), Ok(false));
    assert_eq!(redis.exchange(b"ECHO a\0b\r\n"), b"");
}

#[test]
fn the_deepest_reply_redis_sends_decodes() {
    let Some(redis) = redis() else { return };
    // A Lua table nested 7,000 levels deep: Redis sends it whole.
    let script = b"local t={} local c=t for i=1,7000 do c[1]={} c=c[1] end return t";
    let mut request = BytesMut::new();
    resp::encode::command(&mut request, &[b"EVAL", script, b"0"]);
    request.extend_from_slice(b"PING\r\n");
    let replies = redis.exchange(&request);
    let mut expected = b"*1\r\n".repeat(7000);
    expected.extend_from_slice(b"*0\r\n");
    assert!(replies.starts_with(&expected), "{replies:?}");
    let mut dec = resp::ReplyDecoder::new(Limits::default());
    assert_eq!(dec.decode(&replies), Ok(Some(expected.len())));
    assert_eq!(&replies[expected.len()..], b"+PONG\r\n");
}
