//! The table against a real redis-server: every command present, `COMMAND INFO` / `COMMAND
//! DOCS` encodings byte-equal, key positions equal to `COMMAND GETKEYS`, and numkeys errors
//! worded as Redis words them.
//!
//! The server listens only on a unix socket in a temporary directory (`--port 0`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use rampart_commands::{all, encode_docs, encode_info, lookup, lookup_argv, Command};

/// A redis-server started for one test, killed (by its own PID) on drop.
struct Server {
    child: Child,
    _dir: tempfile::TempDir,
    conn: BufReader<UnixStream>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let sock = dir.path().join("redis.sock");
        let child = Process::new("redis-server")
            .args([
                "--port",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--unixsocket",
            ])
            .arg(&sock)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match UnixStream::connect(&sock) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => panic!("redis-server did not start: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        Server {
            child,
            _dir: dir,
            conn: BufReader::new(stream),
        }
    }

    /// Sends one command and returns its reply, raw and parsed.
    fn call(&mut self, argv: &[&[u8]]) -> (Vec<u8>, Value) {
        let mut req = format!("*{}\r\n", argv.len()).into_bytes();
        for a in argv {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a);
            req.extend_from_slice(b"\r\n");
        }
        self.conn.get_mut().write_all(&req).expect("write");
        let mut raw = Vec::new();
        let value = read_value(&mut self.conn, &mut raw);
        (raw, value)
    }

    fn call_str(&mut self, argv: &[&str]) -> Value {
        let argv: Vec<&[u8]> = argv.iter().map(|a| a.as_bytes()).collect();
        self.call(&argv).1
    }
}

/// A RESP2 reply that remembers which type each string had, so it can be re-encoded exactly.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Value>),
}

impl Value {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Status(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
            Value::Error(s) => out.extend_from_slice(format!("-{s}\r\n").as_bytes()),
            Value::Int(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
            Value::Bulk(b) => {
                out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Value::Nil => out.extend_from_slice(b"$-1\r\n"),
            Value::Array(items) => {
                out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
                for i in items {
                    i.encode(out);
                }
            }
        }
    }

    fn text(&self) -> String {
        match self {
            Value::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
            Value::Status(s) | Value::Error(s) => s.clone(),
            other => panic!("not a string: {other:?}"),
        }
    }

    fn items(&self) -> &[Value] {
        match self {
            Value::Array(items) => items,
            other => panic!("not an array: {other:?}"),
        }
    }
}

fn read_value(r: &mut impl BufRead, raw: &mut Vec<u8>) -> Value {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line).expect("read");
    raw.extend_from_slice(&line);
    let body = String::from_utf8(line[1..line.len() - 2].to_vec()).expect("utf8 header");
    match line[0] {
        b'+' => Value::Status(body),
        b'-' => Value::Error(body),
        b':' => Value::Int(body.parse().expect("int")),
        b'$' => {
            let n: i64 = body.parse().expect("len");
            if n < 0 {
                return Value::Nil;
            }
            let mut data = vec![0; n as usize + 2];
            r.read_exact(&mut data).expect("read bulk");
            raw.extend_from_slice(&data);
            data.truncate(n as usize);
            Value::Bulk(data)
        }
        b'*' => {
            let n: i64 = body.parse().expect("len");
            Value::Array((0..n).map(|_| read_value(r, raw)).collect())
        }
        other => panic!("unexpected reply type {other}"),
    }
}

/// Redis lists subcommands in hash-table order, which is random per process; sort them by name
/// (info: the last field, an array of entries; docs: the `subcommands` map) before comparing.
fn sort_info_subcommands(entry: &mut Value) {
    if let Value::Array(fields) = entry {
        if let Some(Value::Array(subs)) = fields.get_mut(9) {
            subs.sort_by_key(|s| s.items()[0].text());
        }
    }
}

fn sort_docs_subcommands(docs: &mut Value) {
    let Value::Array(fields) = docs else { return };
    for pair in fields.chunks_mut(2) {
        if pair[0].text() == "subcommands" {
            if let Value::Array(map) = &mut pair[1] {
                let mut pairs: Vec<(Value, Value)> = map
                    .chunks(2)
                    .map(|p| (p[0].clone(), p[1].clone()))
                    .collect();
                pairs.sort_by_key(|p| p.0.text());
                *map = pairs.into_iter().flat_map(|(k, v)| [k, v]).collect();
            }
        }
    }
}

fn table_entry(name: &str) -> &'static Command {
    let (parent, sub) = match name.split_once('|') {
        Some((p, s)) => (p, Some(s)),
        None => (name, None),
    };
    let cmd = lookup(parent.as_bytes()).unwrap_or_else(|| panic!("{parent} missing"));
    match sub {
        Some(s) => rampart_commands::lookup_sub(cmd, s.as_bytes())
            .unwrap_or_else(|| panic!("{name} missing")),
        None => cmd,
    }
}

#[test]
fn every_server_command_is_in_the_table_and_nothing_else() {
    let mut server = Server::start();
    let listed = server.call_str(&["COMMAND", "LIST"]);
    let mut names: Vec<String> = listed.items().iter().map(Value::text).collect();
    names.sort();
    let mut ours: Vec<String> = Vec::new();
    for cmd in all() {
        ours.push(cmd.name.to_string());
        ours.extend(cmd.subcommands.iter().map(|s| s.name.to_string()));
    }
    ours.sort();
    assert_eq!(names, ours);
    for name in &names {
        assert_eq!(table_entry(name).name, name);
    }
    assert_eq!(
        server.call_str(&["COMMAND", "COUNT"]),
        Value::Int(all().len() as i64)
    );
}

#[test]
fn command_info_and_docs_are_byte_equal_to_redis() {
    let mut server = Server::start();
    for cmd in all() {
        let (_, reply) = server.call(&[b"COMMAND", b"INFO", cmd.name.as_bytes()]);
        let mut entry = reply.items()[0].clone();
        sort_info_subcommands(&mut entry);
        let mut expected = Vec::new();
        entry.encode(&mut expected);
        let mut got = Vec::new();
        encode_info(cmd, &mut got);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expected),
            "COMMAND INFO {}",
            cmd.name
        );

        let (_, reply) = server.call(&[b"COMMAND", b"DOCS", cmd.name.as_bytes()]);
        let pair = reply.items();
        assert_eq!(pair[0].text(), cmd.name);
        let mut docs = pair[1].clone();
        sort_docs_subcommands(&mut docs);
        let mut expected = Vec::new();
        docs.encode(&mut expected);
        let mut got = Vec::new();
        encode_docs(cmd, &mut got);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expected),
            "COMMAND DOCS {}",
            cmd.name
        );
    }
}

#[test]
fn plain_command_info_is_the_exact_reply() {
    // No subcommands, so no reordering: the reply is `*1` plus our entry, byte for byte.
    let mut server = Server::start();
    for name in [
        "get",
        "sort",
        "eval",
        "xread",
        "georadius",
        "zunionstore",
        "migrate",
    ] {
        let (raw, _) = server.call(&[b"COMMAND", b"INFO", name.as_bytes()]);
        let mut ours = b"*1\r\n".to_vec();
        encode_info(lookup(name.as_bytes()).expect("known"), &mut ours);
        assert_eq!(ours, raw, "{name}");
    }
}

/// Calls whose keys we compute and Redis computes with `COMMAND GETKEYS`.
const GETKEYS_CASES: &[&str] = &[
    "get k",
    "set k v ex 10",
    "mset a 1 b 2 c 3",
    "mget a b c",
    "del a b c",
    "eval s 2 k1 k2 a1",
    "eval_ro s 1 k1",
    "evalsha abc 3 a b c d",
    "fcall f 1 k arg",
    "zunionstore dst 2 a b weights 1 2",
    "zinterstore dst 1 a",
    "zdiff 2 a b withscores",
    "zunion 3 a b c",
    "xread count 2 streams s1 s2 0 0",
    "xread streams s 0",
    "xreadgroup group g c streams s1 s2 > >",
    "sort k",
    "sort k by w_* limit 0 5 get # get o_* store dst",
    "sort k store d1 store d2",
    "sort k get store store dst",
    "sort_ro k by x",
    "georadius g 1 2 3 km store dst",
    "georadius g 1 2 3 km storedist dst",
    "georadius g 1 2 3 km",
    "georadiusbymember g m 3 km store dst",
    "geosearchstore dst src frommember m byradius 1 km",
    "lmove a b left right",
    "blmove a b left right 0",
    "rpoplpush a b",
    "smove a b m",
    "rename a b",
    "msetnx a 1 b 2",
    "pfmerge d a b",
    "pfcount a b",
    "bitop and dst a b c",
    "object encoding k",
    "memory usage k",
    "xinfo stream s full",
    "xgroup create s g $",
    "migrate h 1 k 0 10",
    "migrate h 1 \"\" 0 10 copy replace keys a b",
    "migrate h 1 \"\" 0 10 auth pw keys a b",
    "migrate h 1 \"\" 0 10 auth2 u pw keys a",
    "lmpop 2 a b left count 1",
    "blmpop 0 2 a b left",
    "zmpop 1 a min",
    "sintercard 2 a b limit 1",
    "zintercard 2 a b",
    "blpop a b c 0",
    "bzpopmin a b 0",
    "copy a b db 0",
    "lcs a b",
    "smismember s a b",
    "hset h f v f2 v2",
    "watch a b",
    "touch a b",
    "exists a b a",
];

fn split_case(case: &str) -> Vec<Vec<u8>> {
    case.split(' ')
        .map(|w| {
            if w == "\"\"" {
                Vec::new()
            } else {
                w.as_bytes().to_vec()
            }
        })
        .collect()
}

#[test]
fn key_indices_agree_with_command_getkeys() {
    let mut server = Server::start();
    let mut out = Vec::new();
    for case in GETKEYS_CASES {
        let argv = split_case(case);
        let mut req: Vec<&[u8]> = vec![b"COMMAND", b"GETKEYS"];
        req.extend(argv.iter().map(Vec::as_slice));
        let (_, reply) = server.call(&req);
        let expected: Vec<String> = reply.items().iter().map(Value::text).collect();

        let cmd = lookup_argv(&argv).unwrap_or_else(|e| panic!("{case}: {e}"));
        cmd.key_indices(&argv, &mut out)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let got: Vec<String> = out
            .iter()
            .map(|&i| String::from_utf8_lossy(&argv[i]).into_owned())
            .collect();
        assert_eq!(got, expected, "{case}");
    }
}

#[test]
fn numkeys_errors_use_redis_wording() {
    let mut server = Server::start();
    let cases = [
        "eval s abc",
        "eval s -1",
        "eval s 3 a",
        "zunionstore d 0 a",
        "zunionstore d x a",
        "zunionstore d 3 a",
        "zinter -1 a",
        "zdiff 2 a",
        "sintercard 0 a",
        "sintercard x a",
        "sintercard 3 a",
        "lmpop 0 a left",
        "lmpop 3 a left",
        "zmpop x a min",
        "zintercard 2 a",
    ];
    let mut out = Vec::new();
    for case in cases {
        let argv = split_case(case);
        let req: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
        let (_, reply) = server.call(&req);
        let Value::Error(expected) = reply else {
            panic!("{case}: expected an error, got {reply:?}")
        };
        let cmd = lookup_argv(&argv).unwrap_or_else(|e| panic!("{case}: {e}"));
        let err = cmd.key_indices(&argv, &mut out).expect_err(case);
        assert_eq!(format!("ERR {err}"), expected, "{case}");
    }
}

#[test]
fn lookup_errors_use_redis_wording() {
    let mut server = Server::start();
    let long = "x".repeat(200);
    let cases: Vec<Vec<&str>> = vec![
        vec!["nosuchcmd", "a", "b"],
        vec!["nosuchcmd"],
        vec!["nosuchcmd", "a\r\nb", &long, "c"],
        vec!["config", "nosuch", "x"],
        vec!["CONFIG", "Nosuch"],
        vec!["config"],
        vec!["config", "get"],
        vec!["get"],
        vec!["get", "a", "b"],
        vec!["object", "encoding"],
    ];
    for argv in cases {
        let Value::Error(expected) = server.call_str(&argv) else {
            panic!("{argv:?}: no error")
        };
        let err = lookup_argv(&argv).expect_err("invalid call");
        assert_eq!(format!("ERR {err}"), expected, "{argv:?}");
    }
}
