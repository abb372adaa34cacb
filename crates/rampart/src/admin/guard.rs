//! What every request must pass before a handler sees it, so that a web page in the operator's
//! browser cannot drive the admin interface:
//!
//! 1. `Host` (and the authority of an absolute request URI) names this listener
//!    ([`Names`]); otherwise **421** with a plain-text reason. A page that reaches the listener
//!    through DNS rebinding sends its own host name, so it cannot even read.
//! 2. Changing calls (every method but `GET` and `HEAD`): an `Origin` header, when present,
//!    names this listener (**403** otherwise), and the body is `Content-Type:
//!    application/json` (**415** otherwise). A page can only send a cross-origin request
//!    without asking first when its type is a form or text type, so it cannot change anything.
//! 3. The body: at most [`MAX_BODY`] bytes (**413**), received within [`BODY_TIMEOUT`] of the
//!    header (**408**), on every route and method.
//! 4. Changing calls, when a token is configured: `Authorization: Bearer <token>`
//!    ([`super::token`]; **401** otherwise, counted and logged without what was sent).
//!
//! Every route is behind these checks, so a changing route added later needs the token too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::token::AdminToken;
use super::ApiError;

/// Largest request body accepted, in bytes (64 KiB). Every body of the API is a small JSON
/// object.
pub const MAX_BODY: usize = 64 * 1024;

/// Time a client has to send the whole body once the header is in (5 s).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// The local address a connection was accepted on, set by the accept loop on every request.
#[derive(Clone, Copy, Debug)]
pub struct LocalAddr(pub SocketAddr);

/// The address a connection came from, set by the accept loop on every request (for the log
/// line of a refused token).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// What the guard checks requests against.
#[derive(Debug)]
pub struct Rules {
    /// The names the listener answers to.
    pub names: Names,
    /// The token changing calls need (none configured: no check).
    pub token: Arc<AdminToken>,
}

/// The names a request may give in `Host` (and `Origin`) to reach this listener.
///
/// With the listener's port `P`: `localhost:P`, `127.0.0.1:P`, `[::1]:P`, the bound address
/// itself, and the address the request's connection arrived on (an address literal is never
/// the result of DNS rebinding). When the listener is bound to every address (`0.0.0.0` or
/// `::`), also the machine's host name with port `P`. Plus the operator's own names
/// (`--admin-host`): `name` accepts that name with any port, `name:port` only that port.
/// A `Host` without a port means port 80. Names compare without regard to case.
#[derive(Clone, Debug)]
pub struct Names {
    bound: SocketAddr,
    hostname: Option<String>,
    /// Operator names, lower case, each with its port if one was given.
    extra: Vec<(String, Option<u16>)>,
}

/// An `--admin-host` value that is not `name` or `name:port`.
#[derive(Debug, thiserror::Error)]
#[error("admin host name '{0}' is not a host name or host:port (example: admin.example.com:8080)")]
pub struct BadName(pub String);

impl Names {
    /// The names of a listener bound to `bound`, with the operator's `extra` names.
    ///
    /// # Errors
    /// An extra name that is empty or is not `name` or `name:port`.
    pub fn new(bound: SocketAddr, extra: &[String]) -> Result<Self, BadName> {
        let extra = extra
            .iter()
            .map(|e| {
                let (name, port) = split_authority(e).ok_or_else(|| BadName(e.clone()))?;
                if name.is_empty() || !name.bytes().all(name_byte) {
                    return Err(BadName(e.clone()));
                }
                Ok((name.to_ascii_lowercase(), port))
            })
            .collect::<Result<_, _>>()?;
        let hostname = bound
            .ip()
            .is_unspecified()
            .then(host_name)
            .flatten()
            .map(|h| h.to_ascii_lowercase());
        Ok(Names {
            bound,
            hostname,
            extra,
        })
    }

    /// Whether `authority` (`host[:port]`, as in `Host`) names this listener, for a request
    /// that arrived on `local`.
    pub fn allows(&self, authority: &str, local: Option<SocketAddr>) -> bool {
        let Some((name, port)) = split_authority(authority) else {
            return false;
        };
        let name = name.to_ascii_lowercase();
        if self
            .extra
            .iter()
            .any(|(n, p)| *n == name && p.is_none_or(|p| Some(p) == port))
        {
            return true;
        }
        if port.unwrap_or(80) != self.bound.port() {
            return false;
        }
        if let Some(ip) = parse_ip(&name) {
            let ip = ip.to_canonical();
            return ip == IpAddr::V4(Ipv4Addr::LOCALHOST)
                || ip == IpAddr::V6(Ipv6Addr::LOCALHOST)
                || ip == self.bound.ip().to_canonical()
                || local.is_some_and(|l| l.ip().to_canonical() == ip);
        }
        name == "localhost" || self.hostname.as_deref() == Some(name.as_str())
    }
}

fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'[' | b']' | b':')
}

/// `host[:port]` into its host (brackets kept for IPv6) and port; `None` when malformed.
fn split_authority(s: &str) -> Option<(&str, Option<u16>)> {
    let s = s.trim();
    let (host, port) = if s.starts_with('[') {
        let end = s.find(']')?;
        let (host, rest) = s.split_at(end + 1);
        match rest {
            "" => (host, None),
            r => (host, Some(r.strip_prefix(':')?)),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() || host.contains(['/', '@', ' ', '\t']) {
        return None;
    }
    match port {
        None => Some((host, None)),
        Some(p) => Some((host, Some(p.parse().ok()?))),
    }
}

fn parse_ip(host: &str) -> Option<IpAddr> {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => host.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

/// The machine's host name, as the kernel knows it.
fn host_name() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// A request the guard refuses: a plain-text reason (the Host check, which also covers pages
/// and metrics) or an API error.
fn plain(status: StatusCode, why: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CONNECTION, "close"),
        ],
        format!("{why}\n"),
    )
        .into_response()
}

fn closing(e: ApiError) -> Response {
    let mut r = e.into_response();
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

fn changes(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// Checks a request against the rules of this module; see there.
pub async fn check(State(rules): State<Arc<Rules>>, req: Request, next: Next) -> Response {
    let names = &rules.names;
    let local = req.extensions().get::<LocalAddr>().map(|l| l.0);
    let host = req
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or(""));
    let Some(host) = host else {
        return plain(
            StatusCode::MISDIRECTED_REQUEST,
            "this request has no Host header; the admin interface answers only requests that \
             name it (for example Host: 127.0.0.1:<port>)",
        );
    };
    let uri_host = req.uri().authority().map(|a| a.as_str().to_string());
    for name in std::iter::once(host).chain(uri_host.as_deref()) {
        if !names.allows(name, local) {
            return plain(
                StatusCode::MISDIRECTED_REQUEST,
                &format!(
                    "the admin interface does not answer to the host name '{name}': use the \
                     address it listens on, localhost, or a name given with --admin-host"
                ),
            );
        }
    }
    if changes(req.method()) {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let o = origin.to_str().unwrap_or("");
            let own = ["http://", "https://"]
                .iter()
                .find_map(|s| o.strip_prefix(s))
                .is_some_and(|a| names.allows(a, local));
            if !own {
                return closing(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "a page from origin '{o}' may not change the proxy: changes come only \
                         from the admin page itself or from a client that sends no Origin"
                    ),
                ));
            }
        }
        if !is_json(req.headers()) {
            return closing(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "changing calls take a JSON body: send Content-Type: application/json",
            ));
        }
    }
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        closing(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {MAX_BODY} bytes"),
        ))
    };
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return too_large();
    }
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await
    {
        Ok(Ok(b)) => b,
        Ok(Err(_)) if declared.is_none() => return too_large(),
        Ok(Err(e)) => {
            return closing(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            ))
        }
        Err(_) => {
            return closing(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            ))
        }
    };
    if changes(&parts.method) {
        let peer = parts
            .extensions
            .get::<PeerAddr>()
            .map_or_else(|| "an unknown peer".to_string(), |p| p.0.to_string());
        // The path is the client's: cut for the log line.
        let path = crate::text::sanitize(parts.uri.path().as_bytes(), 128);
        let what = format!("{} {path}", parts.method);
        if let Err(why) = rules.token.check(&parts.headers, &what, &peer) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                format!(
                    "this call changes the proxy: send Authorization: Bearer <admin token> \
                     (the request had {why})"
                ),
            )
            .into_response();
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(bound: &str, extra: &[&str]) -> Names {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Names::new(bound.parse().unwrap_or_else(|e| panic!("{e}")), &extra)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_loopback_listener_answers_to_its_own_names_only() {
        let n = names("127.0.0.1:8080", &[]);
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LocalHost:8080",
            "[::1]:8080",
        ] {
            assert!(n.allows(ok, None), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "evil.example",
            "localhost:8081",
            "localhost",
            "127.0.0.1",
            "127.0.0.1.evil.example:8080",
            "localhost.:8080",
            "",
            ":8080",
            "localhost:80x",
            "[::1",
            "user@localhost:8080",
        ] {
            assert!(!n.allows(bad, None), "{bad}");
        }
    }

    #[test]
    fn the_address_a_connection_arrived_on_is_a_name_of_a_wildcard_listener() {
        let n = names("0.0.0.0:8080", &[]);
        let local: SocketAddr = "10.1.2.3:8080".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(n.allows("10.1.2.3:8080", Some(local)));
        assert!(n.allows("0.0.0.0:8080", Some(local)));
        assert!(!n.allows("10.1.2.4:8080", Some(local)));
        assert!(!n.allows("10.1.2.3:8081", Some(local)));
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:8080"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(names("[::]:8080", &[]).allows("10.1.2.3:8080", Some(mapped)));
        if let Some(h) = host_name() {
            assert!(n.allows(&format!("{h}:8080"), None));
            assert!(!names("127.0.0.1:8080", &[]).allows(&format!("{h}:8080"), None));
        }
    }

    #[test]
    fn operator_names_with_and_without_a_port() {
        let n = names("127.0.0.1:8080", &["Admin.Example", "tunnel:9000"]);
        assert!(n.allows("admin.example", None));
        assert!(n.allows("admin.example:443", None));
        assert!(n.allows("tunnel:9000", None));
        assert!(!n.allows("tunnel:9001", None));
        assert!(!n.allows("tunnel", None));
        let one: SocketAddr = "127.0.0.1:1".parse().unwrap_or_else(|e| panic!("{e}"));
        let bad = |s: &str| Names::new(one, &[s.to_string()]).is_err();
        assert!(bad(""));
        assert!(bad("http://x"));
        assert!(bad("x:port"));
        assert!(bad("a b"));
    }

    #[test]
    fn only_application_json_is_json() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_str(v).unwrap_or_else(|e| panic!("{e}")),
            );
            is_json(&h)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(!with("text/plain"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(!with("multipart/form-data; boundary=x"));
        assert!(!with("application/jsonx"));
        assert!(!is_json(&HeaderMap::new()));
    }
}
