//! Shared setup for rampart's integration tests: N real redis-servers, a nutcracker-style
//! YAML with one pool over them, and a rampart process serving that pool.
//!
//! ```ignore
//! let env = Setup::new(3).option("hash_tag", "\"{}\"").start();
//! let mut c = env.client();
//! assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::ok());
//! ```
//!
//! Every port is chosen by the OS; every process is killed by its guard on drop, so tests of
//! one binary run in parallel safely. Each test binary uses a different subset of these
//! helpers, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use testkit::{free_port, Client, Proxy, RedisServer, Reply};

/// Name of the pool written into the generated YAML.
pub const POOL: &str = "alpha";

/// Describes one test environment: how many backends, which pool options, how to start
/// the backends and the proxy.
#[derive(Debug, Clone)]
pub struct Setup {
    shards: usize,
    options: Vec<(String, String)>,
    redis_args: Vec<String>,
    password: Option<String>,
    workers: usize,
    env: Vec<(String, String)>,
}

impl Setup {
    /// `shards` backends, default options, 2 workers.
    pub fn new(shards: usize) -> Setup {
        Setup {
            shards,
            options: Vec::new(),
            redis_args: Vec::new(),
            password: None,
            workers: 2,
            env: Vec::new(),
        }
    }

    /// Adds a pool key, written as `key: value` (the value verbatim, so quote it yourself
    /// where YAML needs quotes, as in `("hash_tag", "\"{}\"")`).
    pub fn option(mut self, key: &str, value: impl ToString) -> Setup {
        self.options.push((key.to_string(), value.to_string()));
        self
    }

    /// `hash_tag: "{}"`.
    pub fn hash_tag(self) -> Setup {
        self.option("hash_tag", "\"{}\"")
    }

    /// Extra redis-server arguments for every backend.
    pub fn redis_args(mut self, args: &[&str]) -> Setup {
        self.redis_args.extend(args.iter().map(|s| s.to_string()));
        self
    }

    /// Gives every backend the password `password` and sets `redis_auth: password`.
    ///
    /// The password is set with `CONFIG SET requirepass` once a backend is up (the
    /// readiness check of the guard pings without AUTH).
    pub fn password(mut self, password: &str) -> Setup {
        self.password = Some(password.to_string());
        self.option("redis_auth", password)
    }

    /// Number of worker threads of the proxy.
    pub fn workers(mut self, n: usize) -> Setup {
        self.workers = n;
        self
    }

    /// Sets an environment variable for the proxy (for example `RAMPART_LOG`).
    pub fn env(mut self, key: &str, value: &str) -> Setup {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// The YAML for a pool listening on `listen_port` over `backends`.
    pub fn yaml(&self, listen_port: u16, backends: &[RedisServer]) -> String {
        let mut y = format!(
            "{POOL}:\n  listen: 127.0.0.1:{listen_port}\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n"
        );
        for (k, v) in &self.options {
            y.push_str(&format!("  {k}: {v}\n"));
        }
        y.push_str("  servers:\n");
        for (i, b) in backends.iter().enumerate() {
            y.push_str(&format!("   - {}:1 shard{i}\n", b.addr()));
        }
        y
    }

    /// Starts the backends and the proxy and waits until the proxy accepts connections.
    ///
    /// # Panics
    /// If a process does not start; the message includes its output.
    pub fn start(self) -> Env {
        let args: Vec<&str> = self.redis_args.iter().map(String::as_str).collect();
        let redis: Vec<RedisServer> = (0..self.shards)
            .map(|_| RedisServer::start_with(&args))
            .collect();
        if let Some(p) = &self.password {
            for r in &redis {
                require_pass(r, p);
            }
        }
        let port = free_port();
        let stats_port = free_port();
        let yaml = self.yaml(port, &redis);
        let mut builder = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
            .file("x.yml", &yaml)
            .args(["-c", "{dir}/x.yml", "-s"])
            .arg(stats_port.to_string())
            .args(["-a", "127.0.0.1", "--workers"])
            .arg(self.workers.to_string())
            .wait_port(port);
        for (k, v) in &self.env {
            builder = builder.env(k, v);
        }
        let proxy = builder.start();
        Env {
            redis,
            proxy,
            port,
            stats_port,
            password: self.password,
            yaml,
        }
    }
}

/// A running environment: backends in shard order (as written in the YAML) and the proxy.
/// Dropping it kills every process.
#[derive(Debug)]
pub struct Env {
    /// The backends, `shard0`, `shard1`, ... in YAML order.
    pub redis: Vec<RedisServer>,
    /// The rampart process.
    pub proxy: Proxy,
    /// The pool's listen port.
    pub port: u16,
    /// The stats port.
    pub stats_port: u16,
    /// The backends' password, if any.
    pub password: Option<String>,
    /// The YAML the proxy was started with.
    pub yaml: String,
}

impl Env {
    /// `"127.0.0.1:PORT"` of the pool.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A new client connected to the pool (not authenticated).
    pub fn client(&self) -> Client {
        Client::connect(&self.addr())
    }

    /// A new client connected straight to backend `i`, authenticated when the backends
    /// have a password.
    pub fn backend(&self, i: usize) -> Client {
        let mut c = Client::connect(&self.redis[i].addr());
        if let Some(p) = &self.password {
            assert_eq!(c.cmd(&["AUTH", p]), Reply::ok(), "AUTH on backend {i}");
        }
        c
    }

    /// Runs `args` on every backend and returns the replies in shard order.
    pub fn on_each_backend(&self, args: &[&str]) -> Vec<Reply> {
        (0..self.redis.len())
            .map(|i| self.backend(i).cmd(args))
            .collect()
    }

    /// The index of the one backend that holds `key` (checked with EXISTS on each).
    ///
    /// # Panics
    /// If no backend or more than one holds it.
    pub fn shard_holding(&self, key: &str) -> usize {
        let holders: Vec<usize> = self
            .on_each_backend(&["EXISTS", key])
            .iter()
            .enumerate()
            .filter(|(_, r)| r.as_int() == Some(1))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(holders.len(), 1, "key {key:?} is on backends {holders:?}");
        holders[0]
    }

    /// Sum of `DBSIZE` over the backends.
    pub fn total_keys(&self) -> i64 {
        self.on_each_backend(&["DBSIZE"])
            .iter()
            .map(|r| r.as_int().unwrap_or_else(|| panic!("DBSIZE: {r:?}")))
            .sum()
    }

    /// Writes one key per backend through the proxy and returns, for each backend, a
    /// key (`{prefix}N`) that lives there; useful to build cross-shard requests.
    ///
    /// # Panics
    /// If 1000 candidate keys do not cover every backend.
    pub fn key_per_shard(&self, prefix: &str) -> Vec<String> {
        let mut found: Vec<Option<String>> = vec![None; self.redis.len()];
        let mut c = self.client();
        if let Some(p) = &self.password {
            assert_eq!(c.cmd(&["AUTH", p]), Reply::ok());
        }
        for n in 0..1000 {
            if found.iter().all(Option::is_some) {
                break;
            }
            let key = format!("{prefix}{n}");
            assert_eq!(c.cmd(&["SET", &key, "x"]), Reply::ok());
            let s = self.shard_holding(&key);
            if found[s].is_none() {
                found[s] = Some(key.clone());
            }
            assert_eq!(c.cmd(&["DEL", &key]), Reply::Int(1));
        }
        found
            .into_iter()
            .enumerate()
            .map(|(i, k)| k.unwrap_or_else(|| panic!("no key of {prefix}N lands on shard {i}")))
            .collect()
    }

    /// The proxy's output so far (for assertion messages).
    pub fn proxy_log(&self) -> String {
        self.proxy.stderr()
    }
}

/// A standalone redis-server to compute what a single Redis answers.
pub fn reference() -> RedisServer {
    RedisServer::start()
}

/// Makes `server` require `password` from now on.
///
/// # Panics
/// If CONFIG SET fails.
pub fn require_pass(server: &RedisServer, password: &str) {
    let r = server.cmd(&["CONFIG", "SET", "requirepass", password]);
    assert_eq!(
        r,
        Reply::ok(),
        "CONFIG SET requirepass on {}",
        server.addr()
    );
}

/// Reads replies until the peer closes the connection; returns what came before the close.
///
/// # Panics
/// If the connection is still open after `timeout` of silence.
pub fn read_until_closed(c: &mut Client, timeout: Duration) -> Vec<Reply> {
    c.set_read_timeout(Some(timeout));
    let mut got = Vec::new();
    loop {
        match c.read_reply() {
            Ok(r) => got.push(r),
            Err(e) if testkit::is_timeout(&e) => {
                panic!("connection still open after {timeout:?}; replies so far: {got:?}")
            }
            Err(_) => return got,
        }
    }
}

/// Builds a command from words.
pub fn cmd(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// Runs every command on the proxy and on a standalone redis-server and asserts that each
/// reply is the same; returns the proxy's replies.
pub fn same_as_redis(proxy: &mut Client, direct: &mut Client, cmds: &[Vec<String>]) -> Vec<Reply> {
    cmds.iter()
        .map(|c| {
            let got = proxy.cmd(c);
            let want = direct.cmd(c);
            assert_eq!(got, want, "{c:?}: proxy vs redis-server");
            got
        })
        .collect()
}

/// Sends `bytes` on a fresh connection and returns everything read until the peer closes.
pub fn raw_exchange(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("set_read_timeout: {e}"));
    s.write_all(bytes).unwrap_or_else(|e| panic!("write: {e}"));
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap_or_else(|e| {
        panic!(
            "connection not closed (read so far {:?}): {e}",
            String::from_utf8_lossy(&out)
        )
    });
    out
}

/// Asserts that `r` is an error reply whose text contains every one of `parts`.
pub fn assert_err_contains(r: &Reply, parts: &[&str]) {
    let text = match r {
        Reply::Error(t) => t,
        other => panic!("expected an error containing {parts:?}, got {other:?}"),
    };
    for p in parts {
        assert!(text.contains(p), "error {text:?} lacks {p:?}");
    }
}

/// Asserts that the connection still answers PING.
pub fn assert_pings(c: &mut Client) {
    assert_eq!(
        c.cmd(&["PING"]),
        Reply::simple("PONG"),
        "connection unusable"
    );
}

/// Where `scripts/client-libs.sh` installed the pinned client libraries (redis-py, RQ,
/// Celery under `py/`; node-redis and ioredis under `node/`); installs them on first use in
/// this test binary.
pub fn client_libs() -> &'static std::path::PathBuf {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let out = std::process::Command::new("bash")
            .arg(root.join("scripts/client-libs.sh"))
            .output()
            .unwrap_or_else(|e| panic!("scripts/client-libs.sh: {e}"));
        assert!(
            out.status.success(),
            "installing the client libraries failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        root.join("target/client-libs")
    })
}

/// Run a client script and return its stdout, asserting that it exited 0 and printed `ok`
/// last (`what` names it in the failure).
pub fn run_script(what: &str, mut cmd: std::process::Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Starts rampart on the configuration `yaml` (written to its temp dir), with `workers`
/// worker threads, the stats port on a free port, loopback only, and waits until `port`
/// (the pool's `listen`) accepts.
pub fn start_rampart(yaml: &str, port: u16, workers: usize) -> Proxy {
    Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("rampart.yml", yaml)
        .args(["-c", "{dir}/rampart.yml", "-s"])
        .arg(free_port().to_string())
        .args(["-a".to_string(), "127.0.0.1".to_string()])
        .args(["--workers".to_string(), workers.to_string()])
        .wait_port(port)
        .start()
}
