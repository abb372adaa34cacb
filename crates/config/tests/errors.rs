//! Every kind of invalid file is refused with the file, line, column, pool and reason.

use rampart_config::{parse, AddrError, ConfigError, Problem, MAX_SOCKET_PATH};

/// Parses `text` as `nutcracker.yml` and returns the refusal.
fn refuse(text: &str) -> ConfigError {
    match parse(text, "nutcracker.yml") {
        Ok(config) => panic!("accepted: {config:?}\n--- input ---\n{text}"),
        Err(err) => err,
    }
}

/// A valid pool body (listen on port `port`) with `extra` lines inserted after `listen:`.
fn pool(name: &str, port: u16, extra: &str) -> String {
    format!("{name}:\n  listen: 127.0.0.1:{port}\n{extra}  servers:\n    - 127.0.0.1:6379:1\n")
}

/// (what, input, expected message)
fn cases() -> Vec<(&'static str, String, &'static str)> {
    vec![
        (
            "unknown key",
            pool("alpha", 1, "  redis: true\n  hsah: md5\n"),
            "nutcracker.yml:4:3: pool \"alpha\": unknown key \"hsah\" (did you mean \"hash\"?)",
        ),
        (
            "unknown key without a near miss",
            pool("alpha", 1, "  colour: blue\n"),
            "nutcracker.yml:3:3: pool \"alpha\": unknown key \"colour\"",
        ),
        (
            "misspelled list key",
            "alpha:\n  listen: 127.0.0.1:1\n  server:\n    - 127.0.0.1:6379:1\n".into(),
            "nutcracker.yml:3:3: pool \"alpha\": unknown key \"server\" (did you mean \"servers\"?)",
        ),
        (
            "duplicate key",
            pool("alpha", 1, "  timeout: 100\n  timeout: 200\n"),
            "nutcracker.yml:4:3: pool \"alpha\": duplicate key \"timeout\" (first given on line 3)",
        ),
        (
            "duplicate pool",
            format!("{}{}", pool("alpha", 1, ""), pool("alpha", 2, "")),
            "nutcracker.yml:5:1: pool \"alpha\": duplicate pool name (first defined on line 1)",
        ),
        (
            "duplicate listen",
            format!("{}{}", pool("alpha", 1, ""), pool("beta", 1, "")),
            "nutcracker.yml:6:11: pool \"beta\": listen: the address is already used by pool \"alpha\" (line 2)",
        ),
        (
            "missing listen",
            "alpha:\n  redis: true\n  servers:\n    - 127.0.0.1:6379:1\n".into(),
            "nutcracker.yml:1:1: pool \"alpha\": missing required key \"listen\"",
        ),
        (
            "missing servers",
            "alpha:\n  listen: 127.0.0.1:1\n".into(),
            "nutcracker.yml:1:1: pool \"alpha\": missing required key \"servers\"",
        ),
        (
            "empty servers",
            "alpha:\n  listen: 127.0.0.1:1\n  servers: []\n".into(),
            "nutcracker.yml:3:12: pool \"alpha\": servers: the list is empty; a pool needs at least one server",
        ),
        (
            "servers not a list",
            "alpha:\n  listen: 127.0.0.1:1\n  servers: 127.0.0.1:6379:1\n".into(),
            "nutcracker.yml:3:12: pool \"alpha\": key \"servers\" must be a list",
        ),
        (
            "bad server line",
            "alpha:\n  listen: 127.0.0.1:1\n  servers:\n    - 127.0.0.1:6379\n".into(),
            "nutcracker.yml:4:7: pool \"alpha\": servers: \"127.0.0.1:6379\": expected \"host:port:weight [name]\" or \"/path/to.sock:weight [name]\"",
        ),
        (
            "weight 0",
            "alpha:\n  listen: 127.0.0.1:1\n  servers:\n    - 127.0.0.1:6379:0\n".into(),
            "nutcracker.yml:4:7: pool \"alpha\": servers: \"127.0.0.1:6379:0\": the weight must be at least 1",
        ),
        (
            "duplicate server name",
            "alpha:\n  listen: 127.0.0.1:1\n  servers:\n    - 10.0.0.1:6379:1 a\n    - 10.0.0.2:6379:1 a\n".into(),
            "nutcracker.yml:5:7: pool \"alpha\": servers: duplicate server name \"a\" (first used on line 4)",
        ),
        (
            "duplicate server address",
            "alpha:\n  listen: 127.0.0.1:1\n  servers:\n    - 10.0.0.1:6379:1 a\n    - 10.0.0.1:6379:1 b\n".into(),
            "nutcracker.yml:5:7: pool \"alpha\": servers: duplicate server address \"10.0.0.1:6379\" (first used on line 4)",
        ),
        (
            "name equal to another server's derived identity",
            "alpha:\n  listen: 127.0.0.1:1\n  servers:\n    - 10.0.0.1:6379:1\n    - 10.0.0.2:6379:1 10.0.0.1:6379\n".into(),
            "nutcracker.yml:5:7: pool \"alpha\": servers: duplicate server name \"10.0.0.1:6379\" (first used on line 4)",
        ),
        (
            "bad hash",
            pool("alpha", 1, "  hash: sha1\n"),
            "nutcracker.yml:3:9: pool \"alpha\": hash: \"sha1\" is not a valid hash (one_at_a_time, md5, crc16, crc32, crc32a, fnv1_64, fnv1a_64, fnv1_32, fnv1a_32, hsieh, murmur, jenkins)",
        ),
        (
            "bad distribution",
            pool("alpha", 1, "  distribution: rendezvous\n"),
            "nutcracker.yml:3:17: pool \"alpha\": distribution: \"rendezvous\" is not a valid distribution (ketama, modula, random)",
        ),
        (
            "hash_tag too long",
            pool("alpha", 1, "  hash_tag: \"{{}}\"\n"),
            "nutcracker.yml:3:13: pool \"alpha\": hash_tag: \"{{}}\" is not a hash tag of exactly two characters, e.g. \"{}\"",
        ),
        (
            "hash_tag too short",
            pool("alpha", 1, "  hash_tag: \"{\"\n"),
            "nutcracker.yml:3:13: pool \"alpha\": hash_tag: \"{\" is not a hash tag of exactly two characters, e.g. \"{}\"",
        ),
        (
            "timeout 0",
            pool("alpha", 1, "  timeout: 0\n"),
            "nutcracker.yml:3:12: pool \"alpha\": timeout: must be greater than 0",
        ),
        (
            "timeout negative",
            pool("alpha", 1, "  timeout: -1\n"),
            "nutcracker.yml:3:12: pool \"alpha\": timeout: \"-1\" is not a duration (integer milliseconds, or e.g. \"1s 500ms\")",
        ),
        (
            "timeout longer than a day",
            pool("alpha", 1, "  timeout: 2days\n"),
            "nutcracker.yml:3:12: pool \"alpha\": timeout: 172800000 is out of range (accepted: 0..=86400000)",
        ),
        (
            "redis_db negative",
            pool("alpha", 1, "  redis_db: -1\n"),
            "nutcracker.yml:3:13: pool \"alpha\": redis_db: \"-1\" is not a non-negative integer",
        ),
        (
            "server_connections 0",
            pool("alpha", 1, "  server_connections: 0\n"),
            "nutcracker.yml:3:23: pool \"alpha\": server_connections: 0 is out of range (accepted: 1..=65535)",
        ),
        (
            "bool spelled otherwise",
            pool("alpha", 1, "  preconnect: yes\n"),
            "nutcracker.yml:3:15: pool \"alpha\": preconnect: \"yes\" is not \"true\" or \"false\"",
        ),
        (
            "redis false",
            pool("alpha", 1, "  redis: false\n"),
            "nutcracker.yml:3:10: pool \"alpha\": redis: false (memcached) is not supported; rampart serves Redis only, set redis: true",
        ),
        (
            "empty redis_auth",
            pool("alpha", 1, "  redis_auth: \"\"\n"),
            "nutcracker.yml:3:15: pool \"alpha\": redis_auth: the password must not be empty (remove the key to disable AUTH)",
        ),
        (
            "key without value",
            pool("alpha", 1, "  backlog:\n"),
            "nutcracker.yml:3:3: pool \"alpha\": key \"backlog\" has no value",
        ),
        (
            "bad listen port",
            "alpha:\n  listen: 127.0.0.1:99999\n  servers:\n    - h:1:1\n".into(),
            "nutcracker.yml:2:11: pool \"alpha\": listen: \"127.0.0.1:99999\": \"99999\" is not a port in 1..=65535",
        ),
        (
            "listen without port",
            "alpha:\n  listen: localhost\n  servers:\n    - h:1:1\n".into(),
            "nutcracker.yml:2:11: pool \"alpha\": listen: \"localhost\": expected \"host:port\" or \"/path/to.sock [mode]\"",
        ),
        (
            "max_bulk_len raised",
            pool("alpha", 1, "  max_bulk_len: 1gb\n"),
            "nutcracker.yml:3:17: pool \"alpha\": max_bulk_len: 1073741824 is out of range (accepted: 1..=536870912)",
        ),
        (
            "bad size",
            pool("alpha", 1, "  client_output_soft: lots\n"),
            "nutcracker.yml:3:23: pool \"alpha\": client_output_soft: \"lots\" is not a size in bytes (e.g. 1048576, \"64mb\", \"1gb\")",
        ),
        (
            "soft above hard",
            pool("alpha", 1, "  client_output_hard: 1mb\n  client_output_soft: 2mb\n"),
            "nutcracker.yml:4:23: pool \"alpha\": client_output_soft (2097152 bytes) is larger than client_output_hard (1048576 bytes)",
        ),
        (
            "input below bulk",
            pool("alpha", 1, "  client_input_max: 1mb\n"),
            "nutcracker.yml:3:21: pool \"alpha\": client_input_max (1048576 bytes) is smaller than max_bulk_len (536870912 bytes), so the largest accepted argument could never be read",
        ),
        (
            "max_inflight_per_client 0",
            pool("alpha", 1, "  max_inflight_per_client: 0\n"),
            "nutcracker.yml:3:28: pool \"alpha\": max_inflight_per_client: 0 is out of range (accepted: 1..=1000000)",
        ),
        (
            "pool not a mapping",
            "alpha: 127.0.0.1:1\n".into(),
            "nutcracker.yml:1:8: pool \"alpha\": the pool settings must be a mapping of keys to values",
        ),
        (
            "no pools",
            "# nothing here\n".into(),
            "nutcracker.yml:1:1: no pools defined (expected a mapping of pool names to pool settings)",
        ),
    ]
}

#[test]
fn each_invalid_file_names_file_line_column_and_reason() {
    let mut wrong = Vec::new();
    for (what, text, expected) in cases() {
        let got = refuse(&text).to_string();
        if got != expected {
            wrong.push(format!("{what}:\n  expected {expected}\n  got      {got}"));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[test]
fn errors_expose_line_and_typed_problem() {
    let err = refuse(&pool("alpha", 1, "  servers_typo: 1\n"));
    assert_eq!(err.line(), Some(3));
    assert!(matches!(
        err.problem(),
        Some(Problem::UnknownKey { key, .. }) if key == "servers_typo"
    ));
    let err = refuse("alpha:\n  listen: 127.0.0.1:1\n  servers:\n    - h:1:0\n");
    assert_eq!(
        err.problem(),
        Some(&Problem::BadServer {
            value: "h:1:0".into(),
            reason: AddrError::ZeroWeight
        })
    );
}

#[test]
fn yaml_syntax_errors_carry_a_position() {
    let err = refuse("alpha:\n  listen: [127.0.0.1:1\n");
    let ConfigError::Invalid { line, problem, .. } = &err else {
        panic!("unexpected {err:?}");
    };
    assert!(*line >= 2, "{err}");
    assert!(matches!(problem, Problem::Yaml(_)), "{err}");
    assert!(err.to_string().starts_with("nutcracker.yml:"), "{err}");
}

#[test]
fn top_level_list_is_refused() {
    let err = refuse("- alpha\n- beta\n");
    assert!(matches!(err.problem(), Some(Problem::Yaml(_))), "{err}");
    assert_eq!(err.line(), Some(1));
}

#[test]
fn every_truncation_of_a_valid_file_is_accepted_or_refused_with_a_position() {
    let full = "alpha:\n  listen: 127.0.0.1:22121\n  hash_tag: \"{}\"\n  timeout: 1s 500ms\n  \
                client_output_soft: 16mb\n  servers:\n    - 10.0.0.1:6379:1 a\n    - ::1:6380:2\n\
                beta:\n  listen: /tmp/b.sock 0660\n  servers:\n    - /tmp/r.sock:1\n";
    assert!(parse(full, "n.yml").is_ok());
    for (cut, _) in full.char_indices() {
        if let Err(err) = parse(&full[..cut], "n.yml") {
            let line = err.line().unwrap_or(0);
            let lines_in_input = full[..cut].lines().count().max(1);
            assert!(
                line >= 1 && line as usize <= lines_in_input + 1,
                "cut {cut}: {err}"
            );
        }
    }
}

#[test]
fn odd_inputs_are_refused_not_panicked_on() {
    let inputs = [
        "\t",
        ":",
        "? [a, b]\n: c\n",
        "alpha:\n  listen: 127.0.0.1:1\n  servers:\n    - ''\n",
        "alpha:\n  listen: 127.0.0.1:1\n  servers:\n    - \"  \"\n",
        "alpha:\n  listen: \"\"\n  servers:\n    - h:1:1\n",
        "alpha:\n  listen: 127.0.0.1:1\n  servers:\n    - h:1:1 \u{1F600}\u{1F600}\n    - h:1:1\n",
        "alpha: &a\n  listen: *a\n",
        "\u{0}",
    ];
    for text in inputs {
        let err = refuse(text);
        assert!(err.line().is_some_and(|l| l >= 1), "{text:?}: {err}");
    }
}

/// A socket path of exactly `len` bytes.
fn socket_path(len: usize) -> String {
    let mut path = "/tmp/".to_string();
    path.push_str(&"s".repeat(len - path.len() - 5));
    path.push_str(".sock");
    assert_eq!(path.len(), len);
    path
}

#[test]
fn a_unix_socket_path_longer_than_sun_path_is_refused_with_its_length() {
    let long = socket_path(MAX_SOCKET_PATH + 1);
    let text = format!("alpha:\n  listen: {long} 0600\n  servers:\n    - 127.0.0.1:6379:1\n");
    let err = refuse(&text);
    assert_eq!(
        err.to_string(),
        format!(
            "nutcracker.yml:2:11: pool \"alpha\": listen: \"{long} 0600\": the unix socket path \
             is {} bytes long; the system allows at most {MAX_SOCKET_PATH}",
            MAX_SOCKET_PATH + 1
        )
    );
    // read_listen and write_listen are bound the same way.
    let text = format!(
        "alpha:\n  listen: 127.0.0.1:1\n  write_listen: {long}\n  servers:\n    - 127.0.0.1:6379:1\n"
    );
    assert_eq!(refuse(&text).line(), Some(3));
    // The longest path the system can bind is accepted.
    let fits = socket_path(MAX_SOCKET_PATH);
    let text = format!("alpha:\n  listen: {fits}\n  servers:\n    - 127.0.0.1:6379:1\n");
    assert!(parse(&text, "nutcracker.yml").is_ok(), "{fits}");
}

#[cfg(target_os = "linux")]
#[test]
fn the_socket_path_limit_is_linuxs_sun_path() {
    // sun_path is 108 bytes on Linux, one for the terminating NUL.
    assert_eq!(MAX_SOCKET_PATH, 107);
}

#[test]
fn an_unquoted_bracketed_ipv6_address_gets_a_hint_to_quote_it() {
    let listen = "alpha:\n  listen: [::1]:22121\n  servers:\n    - 127.0.0.1:6379:1\n";
    assert_eq!(
        refuse(listen).to_string(),
        "nutcracker.yml:2:11: the address [::1]:22121 must be quoted (\"[::1]:22121\"): \
         unquoted, YAML reads [...] as a list"
    );
    let server = "alpha:\n  listen: 127.0.0.1:1\n  servers:\n    - [fe80::1]:6379:1 a # one\n";
    assert_eq!(
        refuse(server).to_string(),
        "nutcracker.yml:4:7: the address [fe80::1]:6379:1 a must be quoted \
         (\"[fe80::1]:6379:1 a\"): unquoted, YAML reads [...] as a list"
    );
    // Quoted, both forms are read.
    let quoted = "alpha:\n  listen: \"[::1]:22121\"\n  servers:\n    - \"[::1]:6379:1\"\n";
    let config = parse(quoted, "nutcracker.yml").expect("quoted IPv6 addresses");
    assert_eq!(config.pools[0].listen.to_string(), "[::1]:22121");
    // A list that is not an address keeps the general message.
    let list = "alpha:\n  listen: [a, b]\n  servers:\n    - 127.0.0.1:6379:1\n";
    assert_eq!(
        refuse(list).to_string(),
        "nutcracker.yml:2:11: expected a single value here, not a list or a mapping"
    );
}
