//! The keys of a cache pool that fails open, and `when_down`: defaults, every key read, and
//! the refusals.

use std::time::Duration;

use rampart_config::{parse, FailOpen, FailOpenWrites, Pool, WhenDown};

fn one_pool(text: &str) -> Pool {
    match parse(text, "cache.yml") {
        Ok(mut config) => config.pools.remove(0),
        Err(err) => panic!("{err}\n--- input ---\n{text}"),
    }
}

const BASE: &str = "p:\n  listen: 127.0.0.1:1\n  servers:\n    - h:1:1\n";

#[test]
fn a_pool_is_a_cache_when_it_ejects_hosts_and_fails_open_only_when_told() {
    let plain = one_pool(BASE);
    assert!(!plain.cache);
    assert_eq!(plain.fail_open, None);
    let eject = one_pool(&format!("{BASE}  auto_eject_hosts: true\n"));
    assert!(eject.cache, "auto_eject_hosts pools are caches");
    let off = one_pool(&format!("{BASE}  auto_eject_hosts: true\n  cache: false\n"));
    assert!(!off.cache);
    let on = one_pool(&format!("{BASE}  cache: true\n  fail_open: true\n"));
    assert_eq!(
        on.fail_open,
        Some(FailOpen {
            timeout: Duration::from_millis(100),
            after: 3,
            writes: FailOpenWrites::Error,
        })
    );
}

#[test]
fn every_fail_open_key_is_read() {
    let p = one_pool(&format!(
        "{BASE}  auto_eject_hosts: true\n  fail_open: true\n  fail_open_timeout: 50ms\n  fail_open_after: 5\n  fail_open_writes: drop\n"
    ));
    assert_eq!(
        p.fail_open,
        Some(FailOpen {
            timeout: Duration::from_millis(50),
            after: 5,
            writes: FailOpenWrites::Drop,
        })
    );
}

#[test]
fn unclear_fail_open_settings_are_refused() {
    for (extra, words) in [
        ("  fail_open: true\n", "fail_open: only a cache pool"),
        (
            "  cache: true\n  fail_open_timeout: 50\n",
            "fail_open_timeout: only applies with fail_open: true",
        ),
        (
            "  cache: true\n  fail_open: true\n  fail_open_writes: maybe\n",
            "fail_open_writes: \"maybe\" is not error or drop",
        ),
        (
            "  cache: true\n  fail_open: true\n  fail_open_timeout: 0\n",
            "fail_open_timeout: must be greater than 0",
        ),
        (
            "  cache: true\n  fail_open: true\n  fail_open_after: 0\n",
            "fail_open_after",
        ),
    ] {
        let text = format!("{BASE}{extra}");
        let e = parse(&text, "cache.yml")
            .err()
            .unwrap_or_else(|| panic!("accepted: {text}"));
        assert!(e.to_string().contains(words), "{e}");
    }
}

#[test]
fn when_down_is_error_unless_told_close_and_close_is_refused_where_the_pool_fails_open() {
    assert_eq!(one_pool(BASE).when_down, WhenDown::Error);
    assert_eq!(
        one_pool(&format!("{BASE}  when_down: error\n")).when_down,
        WhenDown::Error
    );
    assert_eq!(
        one_pool(&format!("{BASE}  when_down: close\n")).when_down,
        WhenDown::Close
    );
    // A cache that does not fail open may close.
    assert_eq!(
        one_pool(&format!("{BASE}  cache: true\n  when_down: close\n")).when_down,
        WhenDown::Close
    );
    for (extra, words) in [
        (
            "  when_down: maybe\n",
            "when_down: \"maybe\" is not error or close",
        ),
        (
            "  cache: true\n  fail_open: true\n  when_down: close\n",
            "when_down: close does not apply with fail_open: true",
        ),
    ] {
        let text = format!("{BASE}{extra}");
        let e = parse(&text, "cache.yml")
            .err()
            .unwrap_or_else(|| panic!("accepted: {text}"));
        assert!(e.to_string().contains(words), "{e}");
    }
}
