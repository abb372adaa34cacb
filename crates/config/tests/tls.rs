//! The TLS keys: `tls_listen`, `tls:` and `backend_tls:`, their defaults, and every refusal
//! with its place in the file.

use std::path::PathBuf;

use rampart_config::{parse, ClientAuth, Pool};

fn one_pool(text: &str) -> Pool {
    match parse(text, "tls.yml") {
        Ok(mut config) => config.pools.remove(0),
        Err(err) => panic!("{err}\n--- input ---\n{text}"),
    }
}

fn refused(text: &str) -> String {
    match parse(text, "tls.yml") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

const BASE: &str = "p:\n  listen: 127.0.0.1:1\n  servers:\n    - h:1:1\n";

#[test]
fn a_tls_listener_with_client_certificates_is_read_with_its_places() {
    let p = one_pool(&format!(
        "{BASE}  tls_listen: 127.0.0.1:2\n  tls:\n    cert: s.pem\n    key: s.key\n    client_ca: ca.pem\n"
    ));
    assert!(p.tls_listen.is_some());
    let tls = p.tls.expect("tls");
    assert_eq!(tls.cert.path, PathBuf::from("s.pem"));
    assert_eq!(tls.cert.place, "tls.yml:7:11");
    assert_eq!(tls.key.key, "tls.key");
    assert_eq!(
        tls.client_auth,
        ClientAuth::Required,
        "client_ca alone requires"
    );
    let optional = one_pool(&format!(
        "{BASE}  tls_listen: 127.0.0.1:2\n  tls:\n    cert: s.pem\n    key: s.key\n    client_ca: ca.pem\n    client_auth: optional\n"
    ));
    assert_eq!(optional.tls.expect("tls").client_auth, ClientAuth::Optional);
    assert_eq!(one_pool(BASE).tls, None);
    assert_eq!(one_pool(BASE).backend_tls, None);
}

#[test]
fn backend_tls_defaults_to_system_roots_and_can_be_switched_off() {
    let p = one_pool(&format!(
        "{BASE}  backend_tls:\n    server_name: cache.example.com\n"
    ));
    let b = p.backend_tls.expect("backend_tls");
    assert_eq!(b.ca, None);
    assert_eq!(b.server_name.as_deref(), Some("cache.example.com"));
    let off = one_pool(&format!(
        "{BASE}  backend_tls:\n    enabled: false\n    ca: ca.pem\n"
    ));
    assert_eq!(off.backend_tls, None);
    let empty = one_pool(&format!("{BASE}  backend_tls: {{}}\n"));
    let b = empty.backend_tls.expect("an empty block turns TLS on");
    assert_eq!((b.ca, b.server_name, b.cert), (None, None, None));
}

#[test]
fn tls_mistakes_are_refused_where_they_are_written() {
    let cases = [
        (
            format!("{BASE}  tls_listen: 127.0.0.1:2\n"),
            "tls.yml:5:15: pool \"p\": tls_listen: a TLS listener needs a tls: block with cert and key",
        ),
        (
            format!("{BASE}  tls:\n    cert: a\n    key: b\n"),
            "tls.yml:6:5: pool \"p\": tls: no TLS listener uses it; add tls_listen: (listen stays plaintext)",
        ),
        (
            format!("{BASE}  tls_listen: 127.0.0.1:2\n  tls:\n    cert: a\n"),
            "tls.yml:7:5: pool \"p\": tls: missing required key \"key\"",
        ),
        (
            format!("{BASE}  tls_listen: 127.0.0.1:2\n  tls:\n    cert: a\n    key: b\n    client_auth: required\n"),
            "tls.yml:9:18: pool \"p\": tls.client_auth: needs tls.client_ca (the CA client certificates are verified against)",
        ),
        (
            format!("{BASE}  tls_listen: 127.0.0.1:2\n  tls:\n    cert: a\n    key: b\n    client_ca: c\n    client_auth: yes\n"),
            "tls.yml:10:18: pool \"p\": tls.client_auth: \"yes\" is not optional or required",
        ),
        (
            format!("{BASE}  tls_listen: 127.0.0.1:2\n  tls:\n    cert: a\n    keyy: b\n"),
            "tls.yml:8:5: pool \"p\": tls: unknown key \"keyy\" (did you mean \"key\"?)",
        ),
        (
            format!("{BASE}  backend_tls:\n    cert: c.pem\n"),
            "tls.yml:6:11: pool \"p\": backend_tls: a client certificate needs both cert and key",
        ),
        (
            format!("{BASE}  backend_tls:\n    server_name: \"a b\"\n"),
            "tls.yml:6:18: pool \"p\": backend_tls.server_name: \"a b\" is not a host name",
        ),
        (
            format!("{BASE}  backend_tls:\n    enabled: yes\n"),
            "tls.yml:6:14: pool \"p\": backend_tls.enabled:",
        ),
        (
            format!("{BASE}  tls_listen: 127.0.0.1:1\n  tls:\n    cert: a\n    key: b\n"),
            "tls.yml:5:15: pool \"p\": tls_listen: the address is already used by listen",
        ),
    ];
    for (text, want) in cases {
        let got = refused(&text);
        assert!(got.starts_with(want), "got:  {got}\nwant: {want}\n{text}");
    }
}
