//! The pool keys of TLS: `tls_listen` (a TLS listener beside `listen`), `tls` (its
//! certificate, key and client certificates) and `backend_tls` (connections to the servers
//! and Sentinels).
//!
//! Only the shape is checked here; the files are read (and their PEM checked) by the proxy
//! when it builds the pool, at start, on `rampart -t` and on every reload. Each file keeps
//! where it was written (`file:line:column`), so an error about its content points there too.

use crate::error::TlsProblem;
use std::fmt;
use std::path::PathBuf;

use crate::error::{ConfigError, Problem};
use crate::pool::{Fields, Lookup};
use crate::raw::{Pos, RawValue};

/// The keys of `tls:`.
const LISTENER_KEYS: &[&str] = &[
    "cert",
    "key",
    "client_ca",
    "client_auth",
    "auth_clients_user",
];
/// The keys of `backend_tls:`.
const BACKEND_KEYS: &[&str] = &["enabled", "ca", "server_name", "cert", "key"];

/// A file named by a TLS key, with where the key was written. Two are equal when they name
/// the same path (wherever the key stands in the file).
#[derive(Debug, Clone, Eq)]
pub struct TlsFile {
    /// The path as written; a relative path is relative to rampart's working directory.
    pub path: PathBuf,
    /// The key in full, as messages name it (`tls.cert`, `backend_tls.ca`).
    pub key: &'static str,
    /// Where the value is: `file:line:column`.
    pub place: String,
}

impl PartialEq for TlsFile {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

impl fmt::Display for TlsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())
    }
}

/// Whether a TLS listener asks clients for a certificate (`tls.client_auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No `client_ca`: no client certificate is asked for.
    Off,
    /// A certificate is asked for and verified against `client_ca` when sent; a client
    /// without one is served too.
    Optional,
    /// A client without a certificate that `client_ca` verifies is refused (the default
    /// with `client_ca`).
    Required,
}

impl fmt::Display for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientAuth::Off => "off",
            ClientAuth::Optional => "optional",
            ClientAuth::Required => "required",
        })
    }
}

/// The TLS side of a pool's client listener (`tls:`): it serves `tls_listen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// The certificate chain (PEM, leaf first).
    pub cert: TlsFile,
    /// The private key of the leaf (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: TlsFile,
    /// CA certificates (PEM) that client certificates are verified against.
    pub client_ca: Option<TlsFile>,
    /// Whether a client certificate is required; [`ClientAuth::Off`] without `client_ca`.
    pub client_auth: ClientAuth,
    /// `auth_clients_user: CN` (Redis 7.2's `tls-auth-clients-user`): a client whose verified
    /// certificate's subject common name names one of the pool's `users:` starts as that
    /// user, without AUTH. Default `off`; needs `client_ca`.
    pub user_from_cn: bool,
}

/// TLS to the pool's servers and Sentinels (`backend_tls:`, unless `enabled: false`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendTls {
    /// CA certificates (PEM) the servers' certificates are verified against; `None`: the
    /// system's trusted roots.
    pub ca: Option<TlsFile>,
    /// The name sent in SNI and checked against the server certificates, instead of each
    /// node's host (needed when nodes are given as IP addresses and their certificates name
    /// a DNS name).
    pub server_name: Option<String>,
    /// A client certificate chain (PEM) to present, with `key`.
    pub cert: Option<TlsFile>,
    /// The private key of `cert`.
    pub key: Option<TlsFile>,
}

impl Fields<'_> {
    /// `tls_listen`'s partner checks and the `tls:` block.
    pub(crate) fn listener_tls(
        &self,
        get: &Lookup<'_, '_>,
        has_tls_listen: bool,
    ) -> Result<Option<ListenerTls>, ConfigError> {
        let Some(entry) = get("tls") else {
            if has_tls_listen {
                return Err(self.err(
                    self.pos(get, "tls_listen"),
                    TlsProblem::ListenWithoutTls.into(),
                ));
            }
            return Ok(None);
        };
        if !has_tls_listen {
            return Err(self.err(entry.pos, TlsProblem::TlsWithoutListen.into()));
        }
        let map = self.block(entry, LISTENER_KEYS, "tls")?;
        let lookup = |key: &'static str| key.strip_prefix("tls.").and_then(|k| map.get(k).copied());
        let required = |key: &'static str| -> Result<TlsFile, ConfigError> {
            self.file(&lookup, key)?.ok_or_else(|| {
                self.err(
                    entry.pos,
                    Problem::MissingNestedKey {
                        within: "tls",
                        key: key.trim_start_matches("tls."),
                    },
                )
            })
        };
        let cert = required("tls.cert")?;
        let key = required("tls.key")?;
        let client_ca = self.file(&lookup, "tls.client_ca")?;
        let client_auth = match (self.text(&lookup, "tls.client_auth")?, &client_ca) {
            (None, None) => ClientAuth::Off,
            (None, Some(_)) => ClientAuth::Required,
            (Some((_, pos)), None) => return Err(self.err(pos, TlsProblem::AuthWithoutCa.into())),
            (Some(("optional", _)), Some(_)) => ClientAuth::Optional,
            (Some(("required", _)), Some(_)) => ClientAuth::Required,
            (Some((other, pos)), Some(_)) => {
                return Err(self.err(pos, TlsProblem::BadClientAuth(other.to_string()).into()))
            }
        };
        let user_from_cn = match self.text(&lookup, "tls.auth_clients_user")? {
            None => false,
            Some((v, _)) if v.eq_ignore_ascii_case("off") => false,
            Some((v, pos)) if v.eq_ignore_ascii_case("cn") => {
                if client_ca.is_none() {
                    return Err(self.err(pos, TlsProblem::UserWithoutCa.into()));
                }
                true
            }
            Some((other, pos)) => {
                return Err(self.err(pos, TlsProblem::BadUserFrom(other.to_string()).into()))
            }
        };
        Ok(Some(ListenerTls {
            cert,
            key,
            client_ca,
            client_auth,
            user_from_cn,
        }))
    }

    /// The `backend_tls:` block; `None` when absent or `enabled: false`.
    pub(crate) fn backend_tls(
        &self,
        get: &Lookup<'_, '_>,
    ) -> Result<Option<BackendTls>, ConfigError> {
        let Some(entry) = get("backend_tls") else {
            return Ok(None);
        };
        let map = self.block(entry, BACKEND_KEYS, "backend_tls")?;
        let lookup = |key: &'static str| {
            key.strip_prefix("backend_tls.")
                .and_then(|k| map.get(k).copied())
        };
        if !self.flag(&lookup, "backend_tls.enabled", true)? {
            return Ok(None);
        }
        let server_name = match self.text(&lookup, "backend_tls.server_name")? {
            None => None,
            Some((text, pos)) => {
                let name = text.trim();
                if name.is_empty() || name.contains(char::is_whitespace) {
                    return Err(self.err(pos, TlsProblem::BadServerName(text.to_string()).into()));
                }
                Some(name.to_string())
            }
        };
        let cert = self.file(&lookup, "backend_tls.cert")?;
        let key = self.file(&lookup, "backend_tls.key")?;
        if cert.is_some() != key.is_some() {
            let pos = lookup("backend_tls.cert")
                .or_else(|| lookup("backend_tls.key"))
                .map_or(entry.pos, |e| e.pos);
            return Err(self.err(pos, TlsProblem::HalfPair("backend_tls").into()));
        }
        Ok(Some(BackendTls {
            ca: self.file(&lookup, "backend_tls.ca")?,
            server_name,
            cert,
            key,
        }))
    }

    /// The entries of a TLS block, indexed (unknown and repeated keys refused).
    fn block<'e>(
        &self,
        entry: &'e crate::raw::RawEntry,
        known: &[&'static str],
        within: &'static str,
    ) -> Result<std::collections::HashMap<&'static str, &'e crate::raw::RawEntry>, ConfigError>
    {
        match &entry.value {
            RawValue::Entries(entries) => self.index_nested(entries, known, within),
            RawValue::Empty => Err(self.err(entry.pos, Problem::EmptyValue(within))),
            _ => Err(self.err(entry.pos, Problem::NotMapping(within))),
        }
    }

    /// A file key of a TLS block.
    fn file(
        &self,
        get: &Lookup<'_, '_>,
        key: &'static str,
    ) -> Result<Option<TlsFile>, ConfigError> {
        Ok(self.text(get, key)?.map(|(text, pos)| TlsFile {
            path: PathBuf::from(text.trim()),
            key,
            place: self.place(pos),
        }))
    }

    /// `file:line:column` of `pos`.
    fn place(&self, pos: Pos) -> String {
        format!("{}:{}:{}", self.origin, pos.line, pos.column)
    }
}

/// `tls:` in words for a reload's list of changes: `cert=a.pem key=a.key client_ca=ca.pem
/// client_auth=required`.
pub(crate) fn describe_listener(t: &ListenerTls) -> String {
    let mut s = format!("cert={} key={}", t.cert, t.key);
    if let Some(ca) = &t.client_ca {
        s.push_str(&format!(" client_ca={ca} client_auth={}", t.client_auth));
    }
    s
}

/// `backend_tls:` in words: `ca=ca.pem server_name=redis.example cert=c.pem key=c.key`, or
/// `system roots` for the CA.
pub(crate) fn describe_backend(t: &BackendTls) -> String {
    let mut s = match &t.ca {
        Some(ca) => format!("ca={ca}"),
        None => "ca=system roots".to_string(),
    };
    if let Some(n) = &t.server_name {
        s.push_str(&format!(" server_name={n}"));
    }
    if let (Some(c), Some(k)) = (&t.cert, &t.key) {
        s.push_str(&format!(" cert={c} key={k}"));
    }
    s
}
