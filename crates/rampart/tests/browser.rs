//! The live stats page in a real browser: headless Chromium loads `/` from rampart's admin
//! listener, runs the page's script against the real `/api/topology` and `/api/history`, and
//! the test reads the DOM it rendered. A replica set (a primary and two replicas, real
//! redis-servers) is listed node by node; after `kill -9` of one replica the page marks that
//! node DOWN within a few seconds while the other two stay UP. Under traffic, the charts of a
//! pool draw the history the server keeps (non-zero ops/s and errors/s), each node shows its
//! p99, the commands table counts error replies per command, and the header names the host,
//! the PID and the configuration file.
//!
//! Chromium is required: when neither `chromium` nor `chromium-browser` is on `PATH` (and
//! `RAMPART_CHROMIUM` does not name one) the test fails and says how to install it.
//!
//! `RAMPART_SCREENSHOT=path.png` also saves a 1280x900 screenshot of the page to that path
//! (after about a minute of light read/write traffic with a few error replies, the replica
//! killed half-way), and a 380 px wide one (the phone layout) to `path-narrow.png`;
//! `docs/img/stats-page.png` was made that way. Rates on the page are computed by the server,
//! so Chromium's virtual clock (`--virtual-time-budget`) does not change them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use testkit::{free_port, poll_until, Client, Proxy, RedisServer, Reply};

/// How long one Chromium run may take before it is killed.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the page may take to show a killed replica as down.
const DOWN_WITHIN: Duration = Duration::from_secs(10);
/// How long the charts may take to show traffic (the server samples once a second).
const HISTORY_WITHIN: Duration = Duration::from_secs(15);
/// Traffic before and after the kill, when taking the screenshot.
const SCREENSHOT_TRAFFIC: Duration = Duration::from_secs(30);

/// Chromium from `RAMPART_CHROMIUM` or `PATH`.
///
/// # Panics
/// When there is none: this test needs a real browser and must not pass without one.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("RAMPART_CHROMIUM") {
        return PathBuf::from(p);
    }
    let dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    ["chromium", "chromium-browser"]
        .iter()
        .flat_map(|name| dirs.iter().map(move |d| d.join(name)))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "Chromium not found: neither `chromium` nor `chromium-browser` is on PATH. \
                 This test drives the stats page in a real headless browser; install one \
                 (Debian/Ubuntu: `apt-get install chromium`) or set RAMPART_CHROMIUM to its path."
            )
        })
}

/// Runs headless Chromium on `url` with `extra` arguments and returns its stdout.
/// Chromium runs in its own process group, and the whole group is killed (by that group's
/// id, which is Chromium's PID) when the run exits or takes longer than
/// [`CHROMIUM_TIMEOUT`], so no renderer or helper outlives the run.
///
/// # Panics
/// When Chromium cannot start, times out, or exits with an error.
fn run_chromium(url: &str, extra: &[String]) -> String {
    use std::os::unix::process::CommandExt;

    let profile = tempfile::Builder::new()
        .prefix("rampart-chromium-")
        .tempdir()
        .unwrap_or_else(|e| panic!("temp dir for the Chromium profile: {e}"));
    let out_path = profile.path().join("stdout.txt");
    let err_path = profile.path().join("stderr.txt");
    let file = |p: &Path| {
        std::fs::File::create(p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()))
    };
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--virtual-time-budget=3000",
    ])
    .arg(format!(
        "--user-data-dir={}",
        profile.path().join("profile").display()
    ))
    .args(extra)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(file(&out_path))
    .stderr(file(&err_path))
    .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
    let group = child.id();
    let started = Instant::now();
    let status = poll_until(CHROMIUM_TIMEOUT, || child.try_wait().ok().flatten());
    // Helpers (zygote, renderer, crash handler) share the group; none may outlive the run.
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{group}")])
        .stderr(Stdio::null())
        .status();
    let stderr = || std::fs::read_to_string(&err_path).unwrap_or_default();
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "Chromium did not finish {url} within {CHROMIUM_TIMEOUT:?}; stderr:\n{}",
            stderr()
        );
    };
    assert!(
        status.success(),
        "Chromium failed on {url} ({status}, after {:?}); stderr:\n{}",
        started.elapsed(),
        stderr()
    );
    std::fs::read_to_string(&out_path).unwrap_or_else(|e| panic!("Chromium's output: {e}"))
}

/// The DOM of `url` after the page's script has run for 3 s of virtual time.
fn dump_dom(url: &str) -> String {
    run_chromium(url, &["--dump-dom".to_string()])
}

/// Saves a screenshot of `url`, `width` x `height` CSS pixels, to `path`.
fn screenshot(url: &str, path: &Path, width: u32, height: u32) {
    let _ = std::fs::remove_file(path);
    run_chromium(
        url,
        &[
            format!("--screenshot={}", path.display()),
            format!("--window-size={width},{height}"),
        ],
    );
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 1000,
        "no screenshot at {} ({size} bytes)",
        path.display()
    );
}

/// One node's row of the page: its opening tag and its whole HTML.
#[derive(Debug)]
struct Row {
    tag: String,
    html: String,
}

impl Row {
    fn attr(&self, name: &str) -> Option<&str> {
        let start = self.tag.find(&format!(" {name}=\""))? + name.len() + 3;
        let len = self.tag.get(start..)?.find('"')?;
        self.tag.get(start..start + len)
    }
    fn classes(&self) -> Vec<&str> {
        self.attr("class")
            .unwrap_or("")
            .split_whitespace()
            .collect()
    }
    /// Down: class `down`, state `DOWN`, and a `DOWN` badge shown.
    fn is_down(&self) -> bool {
        self.classes().contains(&"down")
            && self.attr("data-state") == Some("DOWN")
            && self.html.contains(">DOWN<")
    }
    /// Up: class `up`, state `UP`, an `UP` badge, nothing saying down.
    fn is_up(&self) -> bool {
        self.classes().contains(&"up")
            && self.attr("data-state") == Some("UP")
            && self.html.contains(">UP<")
            && !self.html.contains("DOWN")
    }
}

/// The row that carries `data-node="label"`, if the page shows one.
fn node_row(dom: &str, label: &str) -> Option<Row> {
    element(dom, &format!("data-node=\"{label}\""), "tr")
}

/// The first element whose opening tag contains `marker`, up to its closing `</tag>`.
fn element(dom: &str, marker: &str, tag: &str) -> Option<Row> {
    let at = dom.find(marker)?;
    let open = dom.get(..at)?.rfind('<')?;
    let tag_len = dom.get(open..)?.find('>')? + 1;
    let end = dom
        .get(open..)?
        .find(&format!("</{tag}>"))
        .map_or(dom.len(), |e| open + e);
    Some(Row {
        tag: dom.get(open..open + tag_len)?.to_string(),
        html: dom.get(open..end)?.to_string(),
    })
}

/// The chart `what` (`ops/s`, `errors/s`, `p99`) of pool `pool`.
fn chart(dom: &str, pool: &str, what: &str) -> Option<Row> {
    element(
        dom,
        &format!("data-chart=\"{what}\" data-series=\"{pool}\""),
        "figure",
    )
}

/// How many points of the pool's own line a chart draws above zero.
fn nonzero_points(dom: &str, pool: &str, what: &str) -> usize {
    chart(dom, pool, what)
        .and_then(|c| c.attr("data-nonzero").and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// The text of cell `label` in a row, tags removed.
fn cell_text(row: &Row, label: &str) -> Option<String> {
    let marker = format!("data-label=\"{label}\">");
    let start = row.html.find(&marker)? + marker.len();
    let end = start + row.html.get(start..)?.find("</td>")?;
    let mut text = String::new();
    let mut in_tag = false;
    for ch in row.html.get(start..end)?.chars() {
        match ch {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    Some(text.trim().to_string())
}

/// Polls the page (a fresh Chromium run about every 500 ms) until `ok` holds for its DOM or
/// `within` has passed; returns the last DOM either way, and whether `ok` held.
fn poll_page(url: &str, within: Duration, ok: impl Fn(&str) -> bool) -> (String, bool) {
    let deadline = Instant::now() + within;
    loop {
        let dom = dump_dom(url);
        if ok(&dom) {
            return (dom, true);
        }
        if Instant::now() >= deadline {
            return (dom, false);
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// Light traffic through the proxy (a SET and a GET every few ms, and every tenth round an
/// LPUSH on a string key, which Redis answers with a WRONGTYPE error) until dropped, so the
/// page has rates, errors and latencies to show.
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(addr: String) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut c = Client::connect(&addr);
            let mut i = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let key = format!("page:{}", i % 50);
                let _ = c.try_cmd(&["SET", key.as_str(), "v"]);
                let _ = c.try_cmd(&["GET", key.as_str()]);
                if i.is_multiple_of(10) {
                    let _ = c.try_cmd(&["LPUSH", key.as_str(), "x"]);
                }
                i += 1;
                thread::sleep(Duration::from_millis(5));
            }
        });
        Traffic {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn the_stats_page_lists_every_node_and_shows_a_killed_replica_down() {
    let chromium = chromium();
    let primary = RedisServer::start();
    let mut replicas: Vec<RedisServer> = (0..2)
        .map(|_| RedisServer::start_replica_of(&primary))
        .collect();
    for r in &replicas {
        r.wait_replication_up(Duration::from_secs(10));
    }
    let port = free_port();
    let admin = free_port();
    let yaml = format!(
        "cache:\n  listen: 127.0.0.1:{port}\n  redis: true\n  primary: {}\n  replicas:\n    \
         - {}\n    - {}\n  read_policy: prefer-replica\n  health_check: {{interval: 100ms, \
         timeout: 100ms}}\n",
        primary.addr(),
        replicas[0].addr(),
        replicas[1].addr()
    );
    let proxy = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("rampart.yml", &yaml)
        .args(["-c", "{dir}/rampart.yml", "-s"])
        .arg(free_port().to_string())
        .args(["--admin".to_string(), format!("127.0.0.1:{admin}")])
        .wait_port(port)
        .start();
    testkit::wait_for_port(admin, Duration::from_secs(5), "rampart admin");
    let url = format!("http://127.0.0.1:{admin}/");

    let labels: Vec<String> = std::iter::once(primary.addr())
        .chain(replicas.iter().map(RedisServer::addr))
        .collect();
    // New nodes start down and pass their rise checks first: wait for all three UP.
    let (dom, ok) = poll_page(&url, DOWN_WITHIN, |dom| {
        labels
            .iter()
            .all(|l| node_row(dom, l).is_some_and(|r| r.is_up()))
    });
    for l in &labels {
        let row = node_row(&dom, l).unwrap_or_else(|| {
            panic!(
                "{} shows no data-node=\"{l}\"; DOM:\n{dom}",
                chromium.display()
            )
        });
        assert!(
            row.html.contains(&format!(">{l}<")),
            "node {l}'s address is not shown: {}",
            row.html
        );
        assert!(ok, "node {l} never shown UP: {}\nDOM:\n{dom}", row.html);
    }
    assert!(dom.contains("live · "), "the page says it is live: {dom}");
    let mut c = Client::connect(&proxy.addr());
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::ok());
    assert!(
        dom.contains("data-pool=\"cache\""),
        "the pool is listed: {dom}"
    );

    // For the screenshot: half a minute of traffic before the kill, half a minute after, so
    // the charts show both.
    let screenshot_to = std::env::var_os("RAMPART_SCREENSHOT").map(PathBuf::from);
    let traffic = screenshot_to.as_ref().map(|_| {
        let t = Traffic::start(proxy.addr());
        thread::sleep(SCREENSHOT_TRAFFIC);
        t
    });

    // kill -9 one replica: the page shows it down within a few seconds, the others up.
    let dead = replicas[1].addr();
    let killed_at = Instant::now();
    replicas[1].kill9();
    let (dom, ok) = poll_page(&url, DOWN_WITHIN, |dom| {
        node_row(dom, &dead).is_some_and(|r| r.is_down())
    });
    assert!(
        ok,
        "the killed replica {dead} is not shown DOWN after {:?}: {:?}\nrampart log:\n{}",
        killed_at.elapsed(),
        node_row(&dom, &dead),
        proxy.stderr()
    );
    eprintln!(
        "the page showed {dead} DOWN {:?} after kill -9",
        killed_at.elapsed()
    );
    for l in labels.iter().filter(|l| **l != dead) {
        let row = node_row(&dom, l).unwrap_or_else(|| panic!("node {l} gone from the page"));
        assert!(row.is_up(), "node {l} should still be UP: {}", row.html);
    }
    assert!(
        dom.contains(&format!("{dead}<")) && dom.contains("node down"),
        "the events list shows the node going down: {dom}"
    );

    if let Some(path) = screenshot_to {
        thread::sleep(SCREENSHOT_TRAFFIC);
        screenshot(&url, &path, 1280, 900);
        // The phone-sized layout, next to it: `stats-page.png` -> `stats-page-narrow.png`.
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        let narrow = path.with_file_name(format!("{}-narrow.png", stem.unwrap_or_default()));
        screenshot(&url, &narrow, 380, 1400);
    }
    drop(traffic);
}

#[test]
fn the_stats_page_charts_the_history_the_server_keeps() {
    let chromium = chromium();
    let shards = [RedisServer::start(), RedisServer::start()];
    let port = free_port();
    let admin = free_port();
    let yaml = format!(
        "web:\n  listen: 127.0.0.1:{port}\n  redis: true\n  hash: murmur\n  servers:\n    \
         - {}:1 one\n    - {}:1 two\n",
        shards[0].addr(),
        shards[1].addr()
    );
    let proxy = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("rampart.yml", &yaml)
        .args(["-c", "{dir}/rampart.yml", "-s"])
        .arg(free_port().to_string())
        .args(["--admin".to_string(), format!("127.0.0.1:{admin}")])
        .wait_port(port)
        .start();
    testkit::wait_for_port(admin, Duration::from_secs(5), "rampart admin");
    let url = format!("http://127.0.0.1:{admin}/");
    // (murmur puts the traffic's keys on both servers; the default hash puts them on one.)
    let _traffic = Traffic::start(proxy.addr());

    // Within a few seconds of traffic, the server's history has points for the pool and for
    // each node.
    let node_p99 = |dom: &str, label: &str| {
        node_row(dom, label)
            .and_then(|r| cell_text(&r, "p99"))
            .unwrap_or_default()
    };
    let (dom, ok) = poll_page(&url, HISTORY_WITHIN, |dom| {
        nonzero_points(dom, "web", "ops/s") > 0
            && shards
                .iter()
                .all(|r| node_p99(dom, &r.addr()).starts_with('≤'))
            && nonzero_points(dom, "web", "errors/s") > 0
            && element(dom, "data-command=\"lpush\"", "tr")
                .and_then(|r| cell_text(&r, "errors"))
                .is_some_and(|e| e != "0")
    });
    assert!(
        ok,
        "{} never drew the pool's ops/s and errors/s with points above zero, a p99 for each \
         node, or LPUSH's errors in the commands table: ops/s chart {:?}, errors/s chart {:?}, \
         nodes {:?} {:?}, lpush row {:?}",
        chromium.display(),
        chart(&dom, "web", "ops/s").map(|c| c.tag),
        chart(&dom, "web", "errors/s").map(|c| c.tag),
        node_p99(&dom, &shards[0].addr()),
        node_p99(&dom, &shards[1].addr()),
        element(&dom, "data-command=\"lpush\"", "tr")
    );
    let ops = chart(&dom, "web", "ops/s").expect("the ops/s chart");
    assert!(
        ops.html.contains("<path") && ops.html.contains(" d=\"M"),
        "the ops/s chart draws a line: {}",
        ops.html
    );
    assert!(chart(&dom, "web", "p99").is_some(), "no p99 chart: {dom}");

    // Per-node latency: every node that served requests shows its p99.
    for r in &shards {
        let label = r.addr();
        let p99 = node_p99(&dom, &label);
        assert!(
            p99.starts_with('≤') && (p99.ends_with("µs") || p99.ends_with("ms")),
            "node {label} shows no p99 latency ({p99:?}): {:?}",
            node_row(&dom, &label)
        );
    }
    // The commands table shows GET and SET, their errors (none), below the events.
    for cmd in ["get", "set"] {
        let row = element(&dom, &format!("data-command=\"{cmd}\""), "tr")
            .unwrap_or_else(|| panic!("the commands table has no {cmd}: {dom}"));
        assert_eq!(
            cell_text(&row, "errors").as_deref(),
            Some("0"),
            "{}",
            row.html
        );
    }
    let events = dom.find("id=\"events\"").expect("the events list");
    let commands = dom.find("id=\"commands\"").expect("the commands table");
    assert!(
        events < commands,
        "the commands table comes after the events"
    );

    // The header names the host, the PID and the configuration file.
    let pid = element(&dom, "id=\"pid\"", "span").expect("the PID in the header");
    assert_eq!(
        pid.attr("data-pid"),
        Some(proxy.pid().to_string().as_str()),
        "{}",
        pid.html
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let header = element(&dom, "<header", "header").expect("the header");
    assert!(
        header.html.contains(host.trim()),
        "the header names the host {host:?}: {}",
        header.html
    );
    let config = proxy.dir().join("rampart.yml");
    assert!(
        header.html.contains(&config.display().to_string()),
        "the header names the configuration file {}: {}",
        config.display(),
        header.html
    );
}

/// `POST /api/faults` with `body` on the admin port; the status line and body.
fn inject_fault(admin: u16, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", admin))
        .unwrap_or_else(|e| panic!("admin connect: {e}"));
    let req = format!(
        "POST /api/faults HTTP/1.1\r\nHost: 127.0.0.1:{admin}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("admin write: {e}"));
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn the_stats_page_shows_replicas_serving_stale_and_injected_faults() {
    let chromium = chromium();
    let mut primary = RedisServer::start();
    let replicas: Vec<RedisServer> = (0..2)
        .map(|_| RedisServer::start_replica_of(&primary))
        .collect();
    for r in &replicas {
        r.wait_replication_up(Duration::from_secs(10));
    }
    let port = free_port();
    let admin = free_port();
    let yaml = format!(
        "stale:\n  listen: 127.0.0.1:{port}\n  redis: true\n  primary: {}\n  replicas:\n    \
         - {}\n    - {}\n  read_policy: prefer-replica\n  health_check: {{interval: 100ms, \
         timeout: 100ms}}\n",
        primary.addr(),
        replicas[0].addr(),
        replicas[1].addr()
    );
    let proxy = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("rampart.yml", &yaml)
        .args(["-c", "{dir}/rampart.yml", "-s"])
        .arg(free_port().to_string())
        .args(["--admin".to_string(), format!("127.0.0.1:{admin}")])
        .wait_port(port)
        .start();
    testkit::wait_for_port(admin, Duration::from_secs(5), "rampart admin");
    let url = format!("http://127.0.0.1:{admin}/");
    let mut c = Client::connect(&proxy.addr());
    let serving = poll_until(DOWN_WITHIN, || {
        (c.cmd(&["SET", "k", "v"]) == Reply::ok()).then_some(())
    });
    assert!(serving.is_some(), "the pool never took a write");
    let synced = poll_until(DOWN_WITHIN, || {
        replicas
            .iter()
            .all(|r| r.cmd(&["GET", "k"]) == Reply::bulk("v"))
            .then_some(())
    });
    assert!(synced.is_some());

    // The primary dies: the replicas go on serving reads, stale, and the page says so.
    primary.kill9();
    let read = poll_until(DOWN_WITHIN, || {
        thread::sleep(Duration::from_millis(300));
        (0..20)
            .all(|_| c.try_cmd(&["GET", "k"]).ok() == Some(Reply::bulk("v")))
            .then_some(())
    });
    assert!(read.is_some(), "reads failed with the primary down");
    let (dom, ok) = poll_page(&url, DOWN_WITHIN, |dom| {
        dom.matches("data-stale=\"1\"").count() == 2
    });
    assert!(
        ok,
        "{} does not show both replicas serving stale; DOM:\n{dom}",
        chromium.display()
    );
    assert!(dom.contains("stale reads"), "{dom}");

    // A fault injected through the API is listed, and leaves the page when it ends.
    let answer = inject_fault(
        admin,
        r#"{"pool":"stale","command":"GET","kind":"error","error":"ERR drill","duration_s":3}"#,
    );
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let (dom, ok) = poll_page(&url, DOWN_WITHIN, |dom| dom.contains("data-fault=\""));
    assert!(ok, "the fault is not on the page; DOM:\n{dom}");
    assert!(dom.contains("ERR drill"), "{dom}");
    let (dom, ok) = poll_page(&url, DOWN_WITHIN, |dom| !dom.contains("data-fault=\""));
    assert!(
        ok,
        "the fault stayed on the page after it ended; DOM:\n{dom}"
    );
}
