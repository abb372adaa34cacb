//! Looking at rampart without HTTP: SLOWLOG through the proxy (with the node that served each
//! slow request), JSON log lines, and SIGUSR1 reopening the log file for logrotate.

use std::time::Duration;

use testkit::{free_port, poll_until, send_signal, Client, Proxy, RedisServer, Reply};

fn yml(port: u16, redis: &RedisServer) -> String {
    format!(
        "alpha:\n  listen: 127.0.0.1:{port}\n  servers:\n   - {}:1 only\n",
        redis.addr()
    )
}

#[test]
fn slowlog_lists_slow_requests_with_the_node_that_served_them() {
    let redis = RedisServer::start();
    let port = free_port();
    let proxy = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("r.yml", yml(port, &redis))
        .args([
            "-c",
            "{dir}/r.yml",
            "--no-stats",
            "--slowlog-slower-than",
            "0",
        ])
        .wait_port(port)
        .start();
    let mut c = Client::connect(&proxy.addr());
    assert_eq!(c.cmd(&["SLOWLOG", "RESET"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "slowkey", "v"]), Reply::ok());
    assert_eq!(c.cmd(&["GET", "slowkey"]), Reply::bulk("v"));
    let len = c.cmd(&["SLOWLOG", "LEN"]).as_int().expect("an integer");
    assert!(len >= 2, "every request is slow with a 0 threshold: {len}");
    let Reply::Array(Some(entries)) = c.cmd(&["SLOWLOG", "GET", "10"]) else {
        panic!("SLOWLOG GET is an array")
    };
    let get = entries
        .iter()
        .filter_map(|e| e.as_array())
        .find(|e| e[3].as_array().is_some_and(|a| a[0] == Reply::bulk("GET")))
        .expect("the GET is listed");
    assert_eq!(
        get[3].as_array().map(|a| a[1].clone()),
        Some(Reply::bulk("slowkey"))
    );
    assert_eq!(get[6], Reply::bulk("only"), "the node that served it");
    assert!(get[2].as_int().is_some_and(|us| us >= 0));
    assert_eq!(c.cmd(&["SLOWLOG", "RESET"]), Reply::ok());
    assert_eq!(
        c.cmd(&["SLOWLOG", "LEN"]).as_int(),
        Some(1),
        "only the LEN itself"
    );
}

#[test]
fn json_logs_go_to_the_file_and_sigusr1_reopens_it() {
    let redis = RedisServer::start();
    let port = free_port();
    let proxy = Proxy::builder(env!("CARGO_BIN_EXE_rampart"))
        .file("r.yml", yml(port, &redis))
        .args([
            "-c",
            "{dir}/r.yml",
            "--no-stats",
            "--log-format",
            "json",
            "-o",
            "{dir}/r.log",
        ])
        .wait_port(port)
        .start();
    let log = proxy.dir().join("r.log");
    let first = std::fs::read_to_string(&log).expect("log file");
    let line = first.lines().next().expect("a start-up line");
    let v: serde_json::Value = serde_json::from_str(line).expect("a JSON object per line");
    assert!(
        v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("starting")),
        "{line}"
    );

    std::fs::rename(&log, proxy.dir().join("r.log.1")).expect("rotate");
    send_signal(proxy.pid(), "USR1");
    let reopened = poll_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("reopened"))
    });
    assert!(
        reopened.is_some(),
        "after SIGUSR1 rampart writes to a new file at the same path"
    );
}
