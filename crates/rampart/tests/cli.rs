//! The command line against the real binary: nutcracker's flags (`-t`, `-V`, `-h`, `-D`,
//! `-p`, `-o`, `-d`, `-s`/`-a`), configuration errors, unix-socket listeners, and the
//! twemproxy stats JSON compared field by field with a real nutcracker's.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;
use testkit::{
    free_port, poll_until, send_signal, wait_for_port, wait_until, Client, Nutcracker, Proxy,
    RedisServer, Reply,
};

const BIN: &str = env!("CARGO_BIN_EXE_rampart");

/// What a finished run of the binary left behind.
#[derive(Debug)]
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs rampart with `args` in `dir` (stdin closed, output to files) and waits at most
/// `timeout` for it to exit; a run that does not finish is killed and fails the test.
fn run_in(dir: &Path, args: &[&str], timeout: Duration) -> Run {
    let out_path = dir.join("run.stdout");
    let err_path = dir.join("run.stderr");
    let out = std::fs::File::create(&out_path).expect("create stdout file");
    let err = std::fs::File::create(&err_path).expect("create stderr file");
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("start rampart");
    let status = poll_until(timeout, || child.try_wait().expect("waitpid"));
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "rampart {args:?} still running after {timeout:?}; stderr:\n{}",
            std::fs::read_to_string(&err_path).unwrap_or_default()
        );
    };
    Run {
        status,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

/// Runs rampart with `args` in a fresh temp dir.
fn run(args: &[&str]) -> Run {
    let dir = TempDir::new().expect("temp dir");
    run_in(dir.path(), args, Duration::from_secs(10))
}

/// A one-pool YAML listening on `listen` (a `host:port` or a socket path) over `backends`.
fn pool_yaml(listen: &str, backends: &[&RedisServer]) -> String {
    let mut y = format!(
        "alpha:\n  listen: {listen}\n  redis: true\n  hash: fnv1a_64\n  distribution: ketama\n  servers:\n"
    );
    for (i, b) in backends.iter().enumerate() {
        y.push_str(&format!("   - {}:1 s{i}\n", b.addr()));
    }
    y
}

/// Whether process `pid` still exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Kills (SIGKILL) a daemonized rampart on drop if a failed test left it running.
struct DaemonGuard(Option<u32>);

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            if alive(pid) {
                send_signal(pid, "KILL");
            }
        }
    }
}

/// Reads the pid written by `-p`.
fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[test]
fn test_conf_accepts_a_valid_file() {
    let dir = TempDir::new().expect("temp dir");
    // A check reads the file only: the server need not be up.
    let yaml =
        "alpha:\n  listen: 127.0.0.1:22121\n  redis: true\n  servers:\n   - 127.0.0.1:6379:1 s1\n";
    std::fs::write(dir.path().join("good.yml"), yaml).expect("write good.yml");
    let r = run_in(
        dir.path(),
        &["-t", "-c", "good.yml"],
        Duration::from_secs(10),
    );
    assert!(r.status.success(), "-t on a valid file: {r:?}");
    assert!(
        r.stderr.contains("'good.yml' syntax is ok"),
        "nutcracker's wording expected: {r:?}"
    );
}

/// Bad files: (name, contents, line of the error, words of the reason).
const BAD_FILES: &[(&str, &str, u32, &str)] = &[
    (
        "unknown.yml",
        "alpha:\n  listen: 127.0.0.1:22121\n  bogus_key: 1\n  servers:\n   - 127.0.0.1:6379:1\n",
        3,
        "unknown key \"bogus_key\"",
    ),
    (
        "duplicate.yml",
        "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:6379:1\n\
         alpha:\n  listen: 127.0.0.1:22122\n  servers:\n   - 127.0.0.1:6379:1\n",
        5,
        "duplicate pool name",
    ),
    (
        "memcached.yml",
        "alpha:\n  listen: 127.0.0.1:22121\n  redis: false\n  servers:\n   - 127.0.0.1:6379:1\n",
        3,
        "redis: false",
    ),
    (
        "nolisten.yml",
        "alpha:\n  redis: true\n  servers:\n   - 127.0.0.1:6379:1\n",
        1,
        "missing required key \"listen\"",
    ),
];

/// Asserts that `r` failed with exit code 1 and a message naming `file:line:` and `reason`.
fn assert_refused(r: &Run, file: &str, line: u32, reason: &str) {
    assert_eq!(r.status.code(), Some(1), "{file}: exit code; {r:?}");
    let located = format!("{file}:{line}:");
    assert!(
        r.stderr.contains(&located),
        "{file}: stderr lacks the position {located:?}:\n{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(reason),
        "{file}: stderr lacks the reason {reason:?}:\n{}",
        r.stderr
    );
}

#[test]
fn test_conf_refuses_bad_files_with_file_line_and_reason() {
    let dir = TempDir::new().expect("temp dir");
    for (name, yaml, line, reason) in BAD_FILES {
        std::fs::write(dir.path().join(name), yaml).expect("write bad file");
        let r = run_in(dir.path(), &["-t", "-c", name], Duration::from_secs(10));
        assert_refused(&r, name, *line, reason);
        assert!(r.stderr.contains("syntax is invalid"), "{name}: {r:?}");
    }
}

/// A key its pool's kind ignores: `-t` refuses one that tunes replicas or the failover
/// hold in a `servers:` pool, naming the key and the kind, as start would; it accepts
/// twemproxy's ejection keys in a pool with replicas, with a warning naming them.
#[test]
fn test_conf_refuses_a_key_its_pool_kind_ignores_and_warns_of_twemproxy_ejection_keys() {
    let dir = TempDir::new().expect("temp dir");
    let hold = "alpha:\n  listen: 127.0.0.1:22121\n  failover_hold: 5s\n  servers:\n   - 127.0.0.1:6379:1 s1\n";
    std::fs::write(dir.path().join("hold.yml"), hold).expect("write hold.yml");
    let r = run_in(
        dir.path(),
        &["-t", "-c", "hold.yml"],
        Duration::from_secs(10),
    );
    assert_refused(
        &r,
        "hold.yml",
        3,
        "pool \"alpha\": failover_hold: does nothing in a servers: pool",
    );
    let limit = "alpha:\n  listen: 127.0.0.1:22121\n  server_failure_limit: 3\n  \
                 primary: 127.0.0.1:6379\n  replicas: [127.0.0.1:6380]\n";
    std::fs::write(dir.path().join("limit.yml"), limit).expect("write limit.yml");
    let r = run_in(
        dir.path(),
        &["-t", "-c", "limit.yml"],
        Duration::from_secs(10),
    );
    assert!(r.status.success(), "{r:?}");
    assert!(
        r.stderr.contains(
            "rampart: warning: limit.yml:3:3: pool \"alpha\": server_failure_limit is twemproxy's ejection key and does nothing in a pool with replicas"
        ),
        "{r:?}"
    );
    assert!(r.stderr.contains("syntax is ok"), "{r:?}");
}

#[test]
fn starting_with_a_bad_file_exits_1_with_the_same_message() {
    let dir = TempDir::new().expect("temp dir");
    for (name, yaml, line, reason) in BAD_FILES {
        std::fs::write(dir.path().join(name), yaml).expect("write bad file");
        let stats = free_port().to_string();
        let r = run_in(
            dir.path(),
            &["-c", name, "-s", &stats, "-a", "127.0.0.1"],
            Duration::from_secs(10),
        );
        assert_refused(&r, name, *line, reason);
    }
}

#[test]
fn a_missing_config_file_is_said_not_to_exist() {
    let r = run(&["-t", "-c", "no-such-dir/none.yml"]);
    assert_eq!(r.status.code(), Some(1), "{r:?}");
    assert_eq!(
        r.stderr.trim_end(),
        "rampart: no-such-dir/none.yml: the configuration file does not exist",
        "{r:?}"
    );
}

#[test]
fn test_conf_catches_what_start_would_refuse() {
    let dir = TempDir::new().expect("temp dir");
    let servers = "  servers:\n   - 127.0.0.1:6379:1\n";
    // A socket path one byte longer than sun_path holds (107 bytes and a NUL on Linux).
    let long = format!(
        "/tmp/{}.sock",
        "s".repeat(rampart_config::MAX_SOCKET_PATH - 9)
    );
    assert_eq!(long.len(), rampart_config::MAX_SOCKET_PATH + 1);
    let files: &[(&str, Vec<u8>, &str)] = &[
        (
            "long.yml",
            format!("alpha:\n  listen: {long}\n{servers}").into_bytes(),
            "long.yml:2:11: pool \"alpha\": listen: ",
        ),
        (
            "v6.yml",
            format!("alpha:\n  listen: [::1]:22121\n{servers}").into_bytes(),
            "v6.yml:2:11: the address [::1]:22121 must be quoted (\"[::1]:22121\")",
        ),
        (
            "latin1.yml",
            b"alpha:\n  listen: 127.0.0.1:22121 # caf\xe9\n  servers:\n   - 127.0.0.1:6379:1\n"
                .to_vec(),
            "latin1.yml:2:32: the file is not valid UTF-8 text (byte 0xe9 here)",
        ),
    ];
    for (name, content, reason) in files {
        std::fs::write(dir.path().join(name), content).expect("write file");
        let r = run_in(dir.path(), &["-t", "-c", name], Duration::from_secs(10));
        assert_eq!(r.status.code(), Some(1), "{name}: {r:?}");
        assert!(r.stderr.contains(reason), "{name}: {r:?}");
    }
    let r = run_in(
        dir.path(),
        &["-t", "-c", "long.yml"],
        Duration::from_secs(10),
    );
    let len = rampart_config::MAX_SOCKET_PATH + 1;
    let max = rampart_config::MAX_SOCKET_PATH;
    let limit = format!("is {len} bytes long; the system allows at most {max}");
    assert!(r.stderr.contains(&limit), "{r:?}");
    // Text that is not UTF-8 is not called a syntax error.
    let r = run_in(
        dir.path(),
        &["-t", "-c", "latin1.yml"],
        Duration::from_secs(10),
    );
    assert!(!r.stderr.contains("syntax"), "{r:?}");
}

#[test]
fn version_flags_print_the_version() {
    for flag in ["-V", "--version"] {
        let r = run(&[flag]);
        assert!(r.status.success(), "{flag}: {r:?}");
        let want = format!("rampart {}", env!("CARGO_PKG_VERSION"));
        assert_eq!(r.stdout.trim(), want, "{flag}: {r:?}");
    }
}

#[test]
fn help_lists_every_nutcracker_flag() {
    for flag in ["-h", "--help"] {
        let r = run(&[flag]);
        assert!(r.status.success(), "{flag}: {r:?}");
        let long_of = [
            ('c', "--conf-file"),
            ('t', "--test-conf"),
            ('d', "--daemonize"),
            ('D', "--describe-stats"),
            ('v', "--verbose"),
            ('o', "--output"),
            ('s', "--stats-port"),
            ('a', "--stats-addr"),
            ('i', "--stats-interval"),
            ('p', "--pid-file"),
            ('m', "--mbuf-size"),
        ];
        // Same short and long names as nutcracker's own help.
        for (short, long) in long_of {
            let entry = format!("-{short}, {long}");
            assert!(
                r.stdout.contains(&entry),
                "{flag}: no {entry:?} in:\n{}",
                r.stdout
            );
        }
        assert!(r.stdout.contains("--workers"), "{flag}: {}", r.stdout);
    }
}

#[test]
fn an_unknown_flag_is_refused() {
    let r = run(&["--no-such-flag"]);
    assert!(!r.status.success(), "{r:?}");
    assert!(r.stderr.contains("--no-such-flag"), "{r:?}");
}

/// The stat names of a `-D` listing: the first word of each indented line.
fn described_stats(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn describe_stats_lists_the_same_names_as_nutcracker() {
    let r = run(&["-D"]);
    assert!(r.status.success(), "{r:?}");
    let ours = described_stats(&r.stdout);
    for name in [
        "server_timedout",
        "forward_error",
        "client_connections",
        "requests",
    ] {
        assert!(ours.contains(name), "-D lacks {name}:\n{}", r.stdout);
    }
    let program = testkit::process::find_program("nutcracker", "TESTKIT_NUTCRACKER");
    let out = Command::new(program)
        .arg("-D")
        .stdin(Stdio::null())
        .output()
        .expect("run nutcracker -D");
    // nutcracker prints its listing to stderr.
    let theirs_text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = described_stats(&theirs_text);
    assert!(!theirs.is_empty(), "nutcracker -D printed:\n{theirs_text}");
    let extra: Vec<&String> = ours.difference(&theirs).collect();
    assert!(
        extra.is_empty(),
        "-D names stats nutcracker lacks: {extra:?}"
    );
    let missing: Vec<&String> = theirs.difference(&ours).collect();
    assert!(missing.is_empty(), "-D lacks nutcracker's {missing:?}");
}

#[test]
fn pid_file_lives_while_running_and_goes_after_sigterm() {
    let redis = RedisServer::start();
    let port = free_port();
    let stats = free_port();
    let mut proxy = Proxy::builder(BIN)
        .file("x.yml", pool_yaml(&format!("127.0.0.1:{port}"), &[&redis]))
        .args([
            "-c",
            "{dir}/x.yml",
            "-p",
            "{dir}/rampart.pid",
            "-a",
            "127.0.0.1",
        ])
        .args(["-s", &stats.to_string(), "--workers", "1"])
        .wait_port(port)
        .start();
    let pid_path = proxy.dir().join("rampart.pid");
    assert_eq!(read_pid(&pid_path), Some(proxy.pid()), "pid file contents");
    let mut c = Client::connect(&proxy.addr());
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::ok());
    drop(c);
    send_signal(proxy.pid(), "TERM");
    let status = proxy.wait_exit(Duration::from_secs(10));
    let status = status.unwrap_or_else(|| panic!("no exit after SIGTERM:\n{}", proxy.stderr()));
    assert!(
        status.success(),
        "exit after SIGTERM: {status}\n{}",
        proxy.stderr()
    );
    assert!(!pid_path.exists(), "pid file left behind after SIGTERM");
}

#[test]
fn output_flag_sends_log_lines_to_the_file() {
    let redis = RedisServer::start();
    let port = free_port();
    let stats = free_port();
    let mut proxy = Proxy::builder(BIN)
        .file("x.yml", pool_yaml(&format!("127.0.0.1:{port}"), &[&redis]))
        .args(["-c", "{dir}/x.yml", "-o", "{dir}/rampart.log", "-v", "6"])
        .args(["-s", &stats.to_string(), "-a", "127.0.0.1"])
        .wait_port(port)
        .start();
    let log_path = proxy.dir().join("rampart.log");
    wait_until(
        Duration::from_secs(5),
        "a start line in the log file",
        || std::fs::read_to_string(&log_path).is_ok_and(|t| t.contains("starting")),
    );
    proxy.signal("TERM");
    let status = proxy.wait_exit(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "exit: {status:?}");
    let log = std::fs::read_to_string(&log_path).expect("read log file");
    assert!(
        log.contains("stopped"),
        "no stop line in the log file:\n{log}"
    );
    assert!(
        !log.contains("\u{1b}["),
        "colour codes in a log file:\n{log}"
    );
    assert!(
        !proxy.stderr().contains("starting"),
        "log lines went to stderr as well:\n{}",
        proxy.stderr()
    );
}

#[test]
fn nutcrackers_signals_change_the_log_level_and_do_not_kill() {
    // The one server is a port nobody listens on: each request makes a connect fail, which
    // is logged at debug level only.
    let dead = free_port();
    let port = free_port();
    let stats = free_port();
    let yaml = format!(
        "alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  servers:\n   - 127.0.0.1:{dead}:1 s0\n"
    );
    let proxy = Proxy::builder(BIN)
        .file("x.yml", yaml)
        .args([
            "-c",
            "{dir}/x.yml",
            "-v",
            "5",
            "--no-admin",
            "--workers",
            "1",
        ])
        .args(["-s", &stats.to_string(), "-a", "127.0.0.1"])
        .wait_port(port)
        .start();
    let logged = |text: &str| proxy.stderr().contains(text);
    // The failed connect's own line is at debug level (the node going down is a warning).
    let debug_line = || {
        proxy
            .stderr()
            .lines()
            .any(|l| l.contains(" DEBUG ") && l.contains("connect failed"))
    };
    let wait_log = |text: &str| {
        wait_until(Duration::from_secs(5), text, || logged(text));
    };
    let mut c = Client::connect(&proxy.addr());
    assert!(matches!(c.cmd(&["GET", "k"]), Reply::Error(_)));
    assert!(!debug_line(), "a debug line at level info");

    // SIGUSR2 is logged and ignored.
    proxy.signal("USR2");
    wait_log("SIGUSR2 received");
    assert!(alive(proxy.pid()), "SIGUSR2 killed the process");

    // SIGTTIN: one step up, to debug; the failed connects now show.
    proxy.signal("TTIN");
    wait_log("SIGTTIN: log level is now debug");
    wait_until(Duration::from_secs(10), "a debug line", || {
        let _ = c.cmd(&["GET", "k"]);
        debug_line()
    });

    // SIGTTOU: one step down each time; the line shows at the new level.
    proxy.signal("TTOU");
    wait_log("SIGTTOU: log level is now info");
    proxy.signal("TTOU");
    wait_log("SIGTTOU: log level is now warn");
    assert!(
        alive(proxy.pid()),
        "SIGTTIN/SIGTTOU stopped or killed the process"
    );
    assert_eq!(c.cmd(&["PING"]), Reply::Simple("PONG".into()));

    // stderr is a file here, not a terminal: no colour codes.
    assert!(
        !proxy.stderr().contains('\u{1b}'),
        "colour codes in a log that is not a terminal:\n{}",
        proxy.stderr()
    );
}

#[test]
fn sighup_reopens_the_log_file_as_nutcracker_does() {
    let redis = RedisServer::start();
    let port = free_port();
    let stats = free_port();
    let proxy = Proxy::builder(BIN)
        .file("x.yml", pool_yaml(&format!("127.0.0.1:{port}"), &[&redis]))
        .args(["-c", "{dir}/x.yml", "-o", "{dir}/rampart.log", "--no-admin"])
        .args(["-s", &stats.to_string(), "-a", "127.0.0.1"])
        .wait_port(port)
        .start();
    let log = proxy.dir().join("rampart.log");
    // logrotate moves the file away, then sends SIGHUP (nutcracker's reopen signal).
    std::fs::rename(&log, proxy.dir().join("rampart.log.1")).expect("rotate");
    proxy.signal("HUP");
    wait_until(Duration::from_secs(5), "a reopened log file", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("SIGHUP: log file reopened"))
    });
    assert!(alive(proxy.pid()));
}

#[test]
fn daemonize_returns_at_once_and_the_daemon_stops_on_sigterm() {
    let redis = RedisServer::start();
    let dir = TempDir::new().expect("temp dir");
    let port = free_port();
    let stats = free_port().to_string();
    std::fs::write(
        dir.path().join("x.yml"),
        pool_yaml(&format!("127.0.0.1:{port}"), &[&redis]),
    )
    .expect("write config");
    let pid_path: PathBuf = dir.path().join("rampart.pid");
    let pid_arg = pid_path.to_string_lossy().into_owned();
    let args = [
        "-d",
        "-c",
        "x.yml",
        "-p",
        &pid_arg,
        "-s",
        &stats,
        "-a",
        "127.0.0.1",
    ];
    let started = std::time::Instant::now();
    let r = run_in(dir.path(), &args, Duration::from_secs(5));
    assert!(r.status.success(), "-d: {r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "-d took {:?} to return",
        started.elapsed()
    );
    let pid = poll_until(Duration::from_secs(5), || read_pid(&pid_path))
        .unwrap_or_else(|| panic!("the daemon wrote no pid file"));
    let mut guard = DaemonGuard(Some(pid));
    wait_for_port(port, Duration::from_secs(5), "the daemon");
    let mut c = Client::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(c.cmd(&["SET", "daemon", "yes"]), Reply::ok());
    assert_eq!(redis.cmd(&["GET", "daemon"]), Reply::bulk("yes"));
    drop(c);
    send_signal(pid, "TERM");
    wait_until(Duration::from_secs(10), "the daemon to exit", || {
        !alive(pid)
    });
    guard.0 = None;
    assert!(!pid_path.exists(), "the daemon left its pid file behind");
}

#[test]
fn unix_socket_listener_answers_with_the_configured_mode() {
    let redis = RedisServer::start();
    let sock_dir = TempDir::new().expect("temp dir");
    let sock = sock_dir.path().join("r.sock");
    let listen = format!("{} 0666", sock.display());
    let stats = free_port();
    let proxy = Proxy::builder(BIN)
        .file("x.yml", pool_yaml(&listen, &[&redis]))
        .args([
            "-c",
            "{dir}/x.yml",
            "-s",
            &stats.to_string(),
            "-a",
            "127.0.0.1",
        ])
        .start();
    let connected = poll_until(Duration::from_secs(5), || UnixStream::connect(&sock).ok());
    let mut s = connected
        .unwrap_or_else(|| panic!("no unix socket at {}:\n{}", sock.display(), proxy.stderr()));
    let mode = std::fs::metadata(&sock)
        .expect("stat socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o666, "socket mode {:o}", mode & 0o777);
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let mut exchange = |req: &[u8], want: &[u8]| {
        s.write_all(req).expect("write to socket");
        let mut got = vec![0u8; want.len()];
        s.read_exact(&mut got).expect("read reply");
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want),
            "reply over the unix socket"
        );
    };
    exchange(b"*1\r\n$4\r\nPING\r\n", b"+PONG\r\n");
    exchange(b"*3\r\n$3\r\nSET\r\n$2\r\nuk\r\n$2\r\nv1\r\n", b"+OK\r\n");
    assert_eq!(redis.cmd(&["GET", "uk"]), Reply::bulk("v1"));
}

/// The stats document a stats port sends to a new connection.
fn read_stats(port: u16) -> Value {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect stats port");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read stats");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("stats JSON: {e}:\n{text}"))
}

/// The JSON type of `v`, as a word.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Fields rampart adds to each server entry (numbers, from the node snapshot); every other
/// field is nutcracker's own.
const OUR_SERVER_FIELDS: [&str; 2] = ["server_up", "server_writable"];

/// Asserts that `ours` has the field names and value types of `theirs` at every level, plus
/// only [`OUR_SERVER_FIELDS`] (numbers) in server entries; `path` names the level in messages.
fn assert_same_shape(ours: &Value, theirs: &Value, path: &str) {
    assert_eq!(
        kind(ours),
        kind(theirs),
        "type of {path}: ours {ours}, theirs {theirs}"
    );
    if let (Value::Object(a), Value::Object(b)) = (ours, theirs) {
        let ka: BTreeSet<&String> = a.keys().collect();
        let kb: BTreeSet<&String> = b.keys().collect();
        let extra: BTreeSet<&str> = ka.difference(&kb).map(|k| k.as_str()).collect();
        let server_entry = kb.iter().any(|k| k.as_str() == "server_eof");
        let allowed: BTreeSet<&str> = if server_entry {
            OUR_SERVER_FIELDS.into_iter().collect()
        } else {
            BTreeSet::new()
        };
        assert!(
            kb.is_subset(&ka) && extra == allowed,
            "field names at {path}: rampart {ka:?} vs nutcracker {kb:?}"
        );
        for (k, v) in a {
            match b.get(k) {
                Some(theirs) => assert_same_shape(v, theirs, &format!("{path}.{k}")),
                None => assert_eq!(kind(v), "number", "{path}.{k} is a number"),
            }
        }
    }
}

/// Sum of the `requests` counter over every server of pool `alpha`.
fn pool_requests(stats: &Value) -> u64 {
    let Some(Value::Object(pool)) = stats.get("alpha") else {
        panic!("no pool alpha in {stats}");
    };
    pool.values()
        .filter_map(|server| server.get("requests").and_then(Value::as_u64))
        .sum()
}

#[test]
fn stats_json_has_nutcrackers_fields_and_counts_requests() {
    let redis = [RedisServer::start(), RedisServer::start()];
    let ports: Vec<u16> = redis.iter().map(RedisServer::port).collect();
    let nut = Nutcracker::start(&Nutcracker::pool_yml(free_port(), &ports));
    let port = free_port();
    let stats = free_port();
    let proxy = Proxy::builder(BIN)
        .file("x.yml", Nutcracker::pool_yml(port, &ports))
        .args([
            "-c",
            "{dir}/x.yml",
            "-s",
            &stats.to_string(),
            "-a",
            "127.0.0.1",
        ])
        .wait_port(port)
        .start();
    wait_for_port(stats, Duration::from_secs(5), "rampart's stats port");
    // Traffic through both, so that every section (clients, servers) has been touched.
    for addr in [nut.addr(), proxy.addr()] {
        let mut c = Client::connect(&addr);
        for i in 0..10 {
            assert_eq!(
                c.cmd(&["SET", &format!("k{i}"), "v"]),
                Reply::ok(),
                "{addr}"
            );
        }
    }
    let theirs: Value = serde_json::from_str(&nut.stats()).expect("nutcracker stats JSON");
    let before = read_stats(stats);
    assert_same_shape(&before, &theirs, "stats");

    let mut c = Client::connect(&proxy.addr());
    let cmds: Vec<Vec<String>> = (0..50)
        .map(|i| common::cmd(&["GET", &format!("k{i}")]))
        .collect();
    assert_eq!(c.pipeline(&cmds).len(), 50);
    let grown = poll_until(Duration::from_secs(5), || {
        let now = read_stats(stats);
        (pool_requests(&now) >= pool_requests(&before) + 50).then_some(now)
    });
    let after = grown.unwrap_or_else(|| {
        panic!(
            "requests did not grow by 50: before {before}, now {}",
            read_stats(stats)
        )
    });
    assert_same_shape(&after, &theirs, "stats after traffic");
}
