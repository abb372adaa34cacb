//! `listen:` values and `servers:` lines.
//!
//! Both are parsed from the end, like twemproxy does, so a bare IPv6 address works without
//! brackets (`::1:6379:1` is host `::1`, port 6379, weight 1). rampart also accepts the
//! bracketed form (`[::1]:6379:1`), which nutcracker 0.5.0 refuses. Host names are not resolved
//! here: resolution belongs to the proxy, at connect time.

use std::fmt;
use std::path::PathBuf;

use crate::error::AddrError;

/// Where a pool accepts clients.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Listen {
    /// A TCP address: `host:port` (`0.0.0.0:22121`, `localhost:22121`, `::1:22121`).
    Tcp {
        /// Host name or IP address, without brackets.
        host: String,
        /// TCP port, never 0.
        port: u16,
    },
    /// A unix socket: `/path/to.sock` with an optional octal mode (`/run/rampart.sock 0660`).
    Unix {
        /// Absolute path of the socket.
        path: PathBuf,
        /// File mode to set on the socket, at most `0o777`.
        mode: Option<u32>,
    },
}

/// A backend server's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerAddr {
    /// A TCP address.
    Tcp {
        /// Host name or IP address, without brackets.
        host: String,
        /// TCP port, never 0.
        port: u16,
    },
    /// A unix socket path.
    Unix(PathBuf),
}

impl fmt::Display for Listen {
    /// `host:port` (IPv6 hosts in brackets) or the socket path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp { host, port } => fmt_host_port(f, host, *port),
            Listen::Unix { path, .. } => write!(f, "{}", path.display()),
        }
    }
}

impl fmt::Display for ServerAddr {
    /// `host:port` (IPv6 hosts in brackets) or the socket path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerAddr::Tcp { host, port } => fmt_host_port(f, host, *port),
            ServerAddr::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// `host:port`, with an IPv6 host in brackets.
pub(crate) fn fmt_host_port(f: &mut fmt::Formatter<'_>, host: &str, port: u16) -> fmt::Result {
    if host.contains(':') {
        write!(f, "[{host}]:{port}")
    } else {
        write!(f, "{host}:{port}")
    }
}

/// One line of `servers:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Where the server is.
    pub addr: ServerAddr,
    /// Share of the keys relative to the pool's other servers; at least 1.
    pub weight: u32,
    /// The optional name after the address; when present it is the ketama identity, so the
    /// server's keys stay put when its address changes.
    pub name: Option<String>,
    /// The address exactly as written (`host:port`, or the socket path), without weight and
    /// name. twemproxy derives the ring identity of an unnamed server from this text.
    pub text: String,
}

impl Server {
    /// The bytes twemproxy hashes onto the ketama ring for this server (see
    /// [`hashkit::ring_identity`]: the name if given, else the address text with twemproxy's
    /// port-11211 and unix-socket quirks).
    pub fn ring_identity(&self) -> Vec<u8> {
        let port = match self.addr {
            ServerAddr::Tcp { port, .. } => port,
            ServerAddr::Unix(_) => 0,
        };
        hashkit::ring_identity(&self.text, port, self.name.as_deref())
    }
}

/// The longest unix socket path, in bytes, that can be bound: `sun_path` holds 108 bytes on
/// Linux and 104 on the BSDs and macOS, one of them the terminating NUL.
pub const MAX_SOCKET_PATH: usize = if cfg!(target_os = "linux") { 107 } else { 103 };

/// Parses a `listen:` value; a unix socket path longer than [`MAX_SOCKET_PATH`] is refused.
pub(crate) fn parse_listen(value: &str) -> Result<Listen, AddrError> {
    let value = value.trim();
    if value.starts_with('/') {
        let (path, mode) = match value.rsplit_once(char::is_whitespace) {
            Some((path, mode)) => (path.trim_end(), Some(parse_mode(mode)?)),
            None => (value, None),
        };
        if path.len() > MAX_SOCKET_PATH {
            return Err(AddrError::SocketPathTooLong {
                len: path.len(),
                max: MAX_SOCKET_PATH,
            });
        }
        return Ok(Listen::Unix {
            path: PathBuf::from(path),
            mode,
        });
    }
    let (host, port) = value.rsplit_once(':').ok_or(AddrError::ListenShape)?;
    let host = parse_host(host)?;
    let port = parse_port(port)?;
    Ok(Listen::Tcp { host, port })
}

/// Parses a `servers:` line: `host:port:weight [name]` or `/path:weight [name]`.
pub(crate) fn parse_server(line: &str) -> Result<Server, AddrError> {
    let line = line.trim();
    let (addr_weight, name) = match line.split_once(char::is_whitespace) {
        Some((addr, name)) => {
            let name = name.trim();
            if name.contains(char::is_whitespace) {
                return Err(AddrError::BadName);
            }
            (addr, Some(name.to_string()))
        }
        None => (line, None),
    };
    let (text, weight) = addr_weight.rsplit_once(':').ok_or(AddrError::ServerShape)?;
    let weight = parse_weight(weight)?;
    let addr = if text.starts_with('/') {
        ServerAddr::Unix(PathBuf::from(text))
    } else {
        let (host, port) = text.rsplit_once(':').ok_or(AddrError::ServerShape)?;
        ServerAddr::Tcp {
            host: parse_host(host)?,
            port: parse_port(port)?,
        }
    };
    Ok(Server {
        addr,
        weight,
        name,
        text: text.to_string(),
    })
}

/// Parses a node address of a replica set: `host:port` or `/path/to.sock` (no weight, no
/// name: those belong to the shard).
pub(crate) fn parse_node(text: &str) -> Result<ServerAddr, AddrError> {
    let text = text.trim();
    if text.starts_with('/') {
        if text.contains(char::is_whitespace) {
            return Err(AddrError::NodeShape);
        }
        return Ok(ServerAddr::Unix(PathBuf::from(text)));
    }
    let (host, port) = text.rsplit_once(':').ok_or(AddrError::NodeShape)?;
    Ok(ServerAddr::Tcp {
        host: parse_host(host)?,
        port: parse_port(port)?,
    })
}

/// Parses a Sentinel address: `host:port` only.
pub(crate) fn parse_sentinel(text: &str) -> Result<(String, u16), AddrError> {
    let text = text.trim();
    let (host, port) = text.rsplit_once(':').ok_or(AddrError::SentinelShape)?;
    Ok((parse_host(host)?, parse_port(port)?))
}

/// A host: non-empty, no whitespace; `[v6]` loses its brackets.
fn parse_host(host: &str) -> Result<String, AddrError> {
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']').ok_or(AddrError::BadHost)?,
        None => host,
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || "[]/".contains(c)) {
        return Err(AddrError::BadHost);
    }
    Ok(host.to_string())
}

fn parse_port(port: &str) -> Result<u16, AddrError> {
    match digits(port).and_then(|n| u16::try_from(n).ok()) {
        Some(port) if port > 0 => Ok(port),
        _ => Err(AddrError::BadPort(port.to_string())),
    }
}

fn parse_weight(weight: &str) -> Result<u32, AddrError> {
    match digits(weight).map(u32::try_from) {
        Some(Ok(0)) => Err(AddrError::ZeroWeight),
        Some(Ok(weight)) => Ok(weight),
        _ => Err(AddrError::BadWeight(weight.to_string())),
    }
}

fn parse_mode(mode: &str) -> Result<u32, AddrError> {
    let bad = || AddrError::BadMode(mode.to_string());
    if mode.is_empty() || !mode.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(bad());
    }
    match u32::from_str_radix(mode, 8) {
        Ok(bits) if bits <= 0o777 => Ok(bits),
        _ => Err(bad()),
    }
}

/// An unsigned decimal made of ASCII digits only (no sign, no spaces), as twemproxy's `nc_atoi`.
pub(crate) fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_print_as_host_port_with_ipv6_in_brackets() {
        assert_eq!(tcp("10.0.0.1", 6379).to_string(), "10.0.0.1:6379");
        assert_eq!(tcp("::1", 6379).to_string(), "[::1]:6379");
        assert_eq!(
            ServerAddr::Unix(PathBuf::from("/run/redis.sock")).to_string(),
            "/run/redis.sock"
        );
        let listen = Listen::Tcp {
            host: "::".into(),
            port: 22121,
        };
        assert_eq!(listen.to_string(), "[::]:22121");
    }

    fn tcp(host: &str, port: u16) -> ServerAddr {
        ServerAddr::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn listen_tcp_forms() {
        let cases = [
            ("127.0.0.1:22121", "127.0.0.1", 22121),
            ("0.0.0.0:1", "0.0.0.0", 1),
            ("localhost:65535", "localhost", 65535),
            ("::1:22121", "::1", 22121),
            ("[::1]:22121", "::1", 22121),
            ("[fe80::1%eth0]:7000", "fe80::1%eth0", 7000),
        ];
        for (text, host, port) in cases {
            assert_eq!(
                parse_listen(text),
                Ok(Listen::Tcp {
                    host: host.into(),
                    port
                }),
                "{text}"
            );
        }
    }

    #[test]
    fn listen_unix_with_and_without_mode() {
        assert_eq!(
            parse_listen("/tmp/rampart.sock"),
            Ok(Listen::Unix {
                path: "/tmp/rampart.sock".into(),
                mode: None
            })
        );
        assert_eq!(
            parse_listen("/tmp/rampart.sock 0660"),
            Ok(Listen::Unix {
                path: "/tmp/rampart.sock".into(),
                mode: Some(0o660)
            })
        );
    }

    #[test]
    fn listen_errors() {
        assert_eq!(parse_listen("22121"), Err(AddrError::ListenShape));
        assert_eq!(parse_listen(":22121"), Err(AddrError::BadHost));
        assert_eq!(parse_listen("[::1:22121"), Err(AddrError::BadHost));
        assert_eq!(parse_listen("h:0"), Err(AddrError::BadPort("0".into())));
        assert_eq!(
            parse_listen("h:65536"),
            Err(AddrError::BadPort("65536".into()))
        );
        assert_eq!(parse_listen("h:-1"), Err(AddrError::BadPort("-1".into())));
        assert_eq!(parse_listen("h:"), Err(AddrError::BadPort(String::new())));
        assert_eq!(
            parse_listen("/x.sock 0800"),
            Err(AddrError::BadMode("0800".into()))
        );
        assert_eq!(
            parse_listen("/x.sock 1777"),
            Err(AddrError::BadMode("1777".into()))
        );
        assert_eq!(
            parse_listen("/x.sock rw"),
            Err(AddrError::BadMode("rw".into()))
        );
    }

    #[test]
    fn server_lines() {
        let s = parse_server("127.0.0.1:6379:1").unwrap();
        assert_eq!(
            (s.addr, s.weight, s.name, s.text.as_str()),
            (tcp("127.0.0.1", 6379), 1, None, "127.0.0.1:6379")
        );
        let s = parse_server("redis-a.internal:6380:10 shard-a").unwrap();
        assert_eq!(
            (s.addr, s.weight, s.name.as_deref(), s.text.as_str()),
            (
                tcp("redis-a.internal", 6380),
                10,
                Some("shard-a"),
                "redis-a.internal:6380"
            )
        );
        let s = parse_server("::1:6379:2").unwrap();
        assert_eq!((s.addr, s.text.as_str()), (tcp("::1", 6379), "::1:6379"));
        let s = parse_server("[::1]:6379:2 six").unwrap();
        assert_eq!((s.addr, s.text.as_str()), (tcp("::1", 6379), "[::1]:6379"));
        let s = parse_server("/var/run/redis.sock:3 local").unwrap();
        assert_eq!(
            (s.addr, s.weight, s.text.as_str()),
            (
                ServerAddr::Unix("/var/run/redis.sock".into()),
                3,
                "/var/run/redis.sock"
            )
        );
    }

    #[test]
    fn server_errors() {
        assert_eq!(parse_server("127.0.0.1:6379"), Err(AddrError::ServerShape));
        assert_eq!(parse_server("127.0.0.1"), Err(AddrError::ServerShape));
        assert_eq!(parse_server("h:6379:0"), Err(AddrError::ZeroWeight));
        assert_eq!(
            parse_server("h:6379:x"),
            Err(AddrError::BadWeight("x".into()))
        );
        assert_eq!(
            parse_server("h:6379:-1"),
            Err(AddrError::BadWeight("-1".into()))
        );
        assert_eq!(
            parse_server("h:99999:1"),
            Err(AddrError::BadPort("99999".into()))
        );
        assert_eq!(parse_server(":6379:1"), Err(AddrError::BadHost));
        assert_eq!(parse_server("h:1:1 two words"), Err(AddrError::BadName));
        assert_eq!(parse_server("/x.sock"), Err(AddrError::ServerShape));
    }

    #[test]
    fn node_addresses() {
        assert_eq!(parse_node("10.0.0.1:6379"), Ok(tcp("10.0.0.1", 6379)));
        assert_eq!(
            parse_node("redis.internal:6380"),
            Ok(tcp("redis.internal", 6380))
        );
        assert_eq!(parse_node("[::1]:6379"), Ok(tcp("::1", 6379)));
        assert_eq!(parse_node("::1:6379"), Ok(tcp("::1", 6379)));
        assert_eq!(
            parse_node("/run/redis.sock"),
            Ok(ServerAddr::Unix("/run/redis.sock".into()))
        );
        assert_eq!(parse_node("10.0.0.1"), Err(AddrError::NodeShape));
        assert_eq!(parse_node("/run/r.sock 0660"), Err(AddrError::NodeShape));
        assert_eq!(parse_node(":6379"), Err(AddrError::BadHost));
        assert_eq!(parse_node("h:0"), Err(AddrError::BadPort("0".into())));
    }

    #[test]
    fn sentinel_addresses() {
        assert_eq!(
            parse_sentinel("10.0.0.1:26379"),
            Ok(("10.0.0.1".into(), 26379))
        );
        assert_eq!(parse_sentinel("[::1]:26379"), Ok(("::1".into(), 26379)));
        assert_eq!(parse_sentinel("sentinel"), Err(AddrError::SentinelShape));
        assert_eq!(parse_sentinel("/run/s.sock"), Err(AddrError::SentinelShape));
        assert_eq!(parse_sentinel("/run/s:1"), Err(AddrError::BadHost));
    }

    #[test]
    fn ring_identity_follows_twemproxy() {
        let named = parse_server("10.0.0.1:6379:1 shard-a").unwrap();
        assert_eq!(named.ring_identity(), b"shard-a");
        let plain = parse_server("10.0.0.1:6379:1").unwrap();
        assert_eq!(plain.ring_identity(), b"10.0.0.1:6379");
        let memcached_port = parse_server("10.0.0.1:11211:1").unwrap();
        assert_eq!(memcached_port.ring_identity(), b"10.0.0.1");
    }
}
