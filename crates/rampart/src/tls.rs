//! TLS material of a pool, read from the files its config names: the listener's certificate
//! and key (with the CA of client certificates), and the backend side's trust roots and
//! client certificate. Built with rustls and its `ring` provider; PEM is read with
//! `rustls-pki-types`, certificate expiry with `x509-parser`.
//!
//! [`PoolTls::load`] reads every file at once (at start, on `rampart -t` and on every reload)
//! and fails whole, naming the file, where the config names it and why, so a bad file changes
//! nothing. Connections made after a reload use the new material; open ones keep theirs.
//!
//! The byte-level work of a TLS connection (records over a non-blocking socket) is in
//! [`crate::io`]; the handshakes are [`accept`] (a client of a `tls_listen` address) and
//! [`Connector::connect`] (rampart to a server or Sentinel).

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rampart_config::{BackendTls, ClientAuth, ListenerTls, Pool, TlsFile};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::io::Stream;

/// Why TLS material could not be loaded: one line naming the file, where the config names
/// it, and the reason (`conf.yml:9:11: pool "p": tls.cert: certs/p.pem: no certificate in
/// the file`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct LoadError(String);

/// One loaded certificate, for `/metrics`, `/api/topology` and the page.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertInfo {
    /// What it is: `listener` (the `tls.cert` leaf), `client_ca`, `backend_ca` or
    /// `backend_client` (the `backend_tls.cert` leaf). For a CA file, the certificate that
    /// expires first.
    pub role: &'static str,
    /// The file, as the config names it.
    pub file: String,
    /// The certificate's subject, as text (`CN=cache.example.com`).
    pub subject: String,
    /// notAfter, in seconds since the Unix epoch.
    pub not_after: i64,
}

/// The rustls provider every config uses: `ring` (see docs/ARCHITECTURE.md, Dependencies).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.2 and 1.3.
const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// A pool's TLS material; empty for a pool without TLS.
#[derive(Clone, Default)]
pub struct PoolTls {
    /// The listener side (`tls_listen`), if any.
    pub server: Option<Arc<ServerConfig>>,
    /// The backend side (`backend_tls`), if any.
    pub client: Option<Arc<Connector>>,
    /// Every certificate loaded, with its expiry.
    pub certs: Vec<CertInfo>,
    /// A digest of the backend side's files, to tell renewed material from the same.
    client_digest: u64,
}

impl std::fmt::Debug for PoolTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolTls")
            .field("server", &self.server.is_some())
            .field("client", &self.client.is_some())
            .field("certs", &self.certs)
            .finish()
    }
}

impl PoolTls {
    /// Read every TLS file `conf` names.
    ///
    /// # Errors
    /// A file cannot be read, holds no usable PEM, a key does not match its certificate, or
    /// rustls refuses the combination; the error names the file and why.
    pub fn load(conf: &Pool) -> Result<PoolTls, LoadError> {
        let mut out = PoolTls::default();
        if let Some(t) = &conf.tls {
            out.server = Some(Arc::new(server_config(&conf.name, t, &mut out.certs)?));
        }
        if let Some(b) = &conf.backend_tls {
            let mut digest = std::collections::hash_map::DefaultHasher::new();
            out.client = Some(Arc::new(connector(
                &conf.name,
                b,
                &mut out.certs,
                &mut digest,
            )?));
            out.client_digest = std::hash::Hasher::finish(&digest);
        }
        Ok(out)
    }

    /// A digest of the backend side's files (0 without backend TLS): equal digests, same
    /// material.
    pub fn client_digest(&self) -> u64 {
        self.client_digest
    }
}

/// Rejects with a message naming the file.
fn fail(pool: &str, file: &TlsFile, why: impl std::fmt::Display) -> LoadError {
    LoadError(format!(
        "{}: pool {pool:?}: {}: {}: {why}",
        file.place,
        file.key,
        file.path.display()
    ))
}

fn read(pool: &str, file: &TlsFile) -> Result<Vec<u8>, LoadError> {
    std::fs::read(&file.path).map_err(|e| fail(pool, file, format!("cannot read it: {e}")))
}

/// Every certificate of a PEM file (at least one).
fn certs(pool: &str, file: &TlsFile) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let pem = read(pool, file)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(pool, file, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(fail(
            pool,
            file,
            "no certificate (BEGIN CERTIFICATE) in the file",
        ));
    }
    Ok(certs)
}

fn key(pool: &str, file: &TlsFile) -> Result<PrivateKeyDer<'static>, LoadError> {
    let pem = read(pool, file)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        fail(
            pool,
            file,
            format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
        )
    })
}

/// Subject and notAfter of a DER certificate.
fn validity(der: &CertificateDer<'_>) -> Option<(String, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some((
        cert.subject().to_string(),
        cert.validity().not_after.timestamp(),
    ))
}

/// Record the expiry of `certs`: the first one (a chain's leaf), or with `earliest` the one
/// that expires first (a CA bundle).
fn note(
    out: &mut Vec<CertInfo>,
    role: &'static str,
    pool: &str,
    file: &TlsFile,
    certs: &[CertificateDer<'_>],
    earliest: bool,
) -> Result<(), LoadError> {
    let mut parsed = Vec::new();
    for c in certs {
        let v = validity(c)
            .ok_or_else(|| fail(pool, file, "a certificate in it cannot be parsed (X.509)"))?;
        parsed.push(v);
        if !earliest {
            break;
        }
    }
    if let Some((subject, not_after)) = parsed.into_iter().min_by_key(|(_, t)| *t) {
        out.push(CertInfo {
            role,
            file: file.path.display().to_string(),
            subject,
            not_after,
        });
    }
    Ok(())
}

fn roots(
    pool: &str,
    file: &TlsFile,
    role: &'static str,
    info: &mut Vec<CertInfo>,
) -> Result<RootCertStore, LoadError> {
    let certs = certs(pool, file)?;
    note(info, role, pool, file, &certs, true)?;
    let mut store = RootCertStore::empty();
    for c in certs {
        store
            .add(c)
            .map_err(|e| fail(pool, file, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(store)
}

/// A server config from a certificate chain and key named on the command line (the admin
/// listener's `--admin-tls-cert`, `--admin-tls-key`), with the chain's leaf for expiry.
///
/// # Errors
/// A file cannot be read or holds no usable PEM, or the key does not go with the chain.
pub fn server_from_files(
    cert: &std::path::Path,
    key_path: &std::path::Path,
) -> Result<(Arc<ServerConfig>, CertInfo), LoadError> {
    let file = |path: &std::path::Path, key: &'static str| TlsFile {
        path: path.to_path_buf(),
        key,
        place: "command line".to_string(),
    };
    let t = ListenerTls {
        cert: file(cert, "--admin-tls-cert"),
        key: file(key_path, "--admin-tls-key"),
        client_ca: None,
        client_auth: ClientAuth::Off,
        user_from_cn: false,
    };
    let mut info = Vec::new();
    let config = server_config("admin", &t, &mut info)?;
    let leaf = info
        .pop()
        .ok_or_else(|| LoadError(format!("{}: no certificate", cert.display())))?;
    Ok((
        Arc::new(config),
        CertInfo {
            role: "admin",
            ..leaf
        },
    ))
}

fn server_config(
    pool: &str,
    t: &ListenerTls,
    info: &mut Vec<CertInfo>,
) -> Result<ServerConfig, LoadError> {
    let chain = certs(pool, &t.cert)?;
    note(info, "listener", pool, &t.cert, &chain, false)?;
    let key = key(pool, &t.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| LoadError(format!("pool {pool:?}: tls: {e}")))?;
    let builder = match (&t.client_ca, t.client_auth) {
        (Some(ca), auth) if auth != ClientAuth::Off => {
            let store = roots(pool, ca, "client_ca", info)?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(store),
                provider(),
            );
            let verifier = if auth == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| fail(pool, ca, format!("cannot verify clients with it: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    builder.with_single_cert(chain, key).map_err(|e| {
        fail(
            pool,
            &t.key,
            format!("does not go with {}: {e}", t.cert.path.display()),
        )
    })
}

fn connector(
    pool: &str,
    b: &BackendTls,
    info: &mut Vec<CertInfo>,
    digest: &mut std::collections::hash_map::DefaultHasher,
) -> Result<Connector, LoadError> {
    let built = connector_inner(pool, b, info)?;
    // What was just loaded (a file replaced in between shows as a change: harmless).
    for f in [&b.ca, &b.cert, &b.key].into_iter().flatten() {
        std::hash::Hash::hash(&std::fs::read(&f.path).unwrap_or_default(), digest);
    }
    std::hash::Hash::hash(&b.server_name, digest);
    Ok(built)
}

fn connector_inner(
    pool: &str,
    b: &BackendTls,
    info: &mut Vec<CertInfo>,
) -> Result<Connector, LoadError> {
    let store = match &b.ca {
        Some(ca) => roots(pool, ca, "backend_ca", info)?,
        None => system_roots(pool)?,
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| LoadError(format!("pool {pool:?}: backend_tls: {e}")))?
        .with_root_certificates(store);
    let config = match (&b.cert, &b.key) {
        (Some(cert), Some(key_file)) => {
            let chain = certs(pool, cert)?;
            note(info, "backend_client", pool, cert, &chain, false)?;
            let key = key(pool, key_file)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                fail(
                    pool,
                    key_file,
                    format!("does not go with {}: {e}", cert.path.display()),
                )
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    let server_name = match &b.server_name {
        Some(n) => Some(ServerName::try_from(n.clone()).map_err(|e| {
            LoadError(format!(
                "pool {pool:?}: backend_tls.server_name: {n:?} is not a DNS name or IP address: {e}"
            ))
        })?),
        None => None,
    };
    Ok(Connector {
        config: Arc::new(config),
        server_name,
    })
}

/// The system's trusted roots (the OS bundle, as `rustls-native-certs` finds it).
fn system_roots(pool: &str) -> Result<RootCertStore, LoadError> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_string(), |e| e.to_string());
        return Err(LoadError(format!(
            "pool {pool:?}: backend_tls: no ca: given and the system's trusted roots cannot be read ({why}); set backend_tls.ca"
        )));
    }
    Ok(store)
}

/// How rampart opens TLS to a pool's servers and Sentinels.
pub struct Connector {
    config: Arc<ClientConfig>,
    /// `backend_tls.server_name`, else each node's host.
    server_name: Option<ServerName<'static>>,
}

impl Connector {
    /// Run the client handshake over `sock` (connected to `host`), naming `host` (or the
    /// configured `server_name`) in SNI and checking the certificate against it.
    ///
    /// # Errors
    /// The name is not a valid server name, the socket failed, or the handshake was refused;
    /// the error says which in words (`the server certificate was not trusted: ...`).
    pub async fn connect(&self, sock: Stream, host: &str) -> io::Result<Stream> {
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => ServerName::try_from(host.to_string()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("TLS: {host:?} is not a name a certificate can be checked against; set backend_tls.server_name"),
                )
            })?,
        };
        let conn = rustls::ClientConnection::new(Arc::clone(&self.config), name)
            .map_err(|e| io::Error::other(format!("TLS: {e}")))?;
        Stream::tls(sock, rustls::Connection::Client(conn))
            .await
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("TLS handshake failed: {}", explain(&e, "server")),
                )
            })
    }
}

/// Run the server handshake of a client of a `tls_listen` address.
///
/// # Errors
/// The socket failed or the handshake was refused (no certificate, an untrusted one, no
/// shared version or cipher); the error says why in words.
pub async fn accept(config: &Arc<ServerConfig>, sock: Stream) -> io::Result<Stream> {
    let conn = rustls::ServerConnection::new(Arc::clone(config))
        .map_err(|e| io::Error::other(format!("TLS: {e}")))?;
    Stream::tls(sock, rustls::Connection::Server(conn))
        .await
        .map_err(|e| io::Error::new(e.kind(), explain(&e, "client")))
}

/// The subject of the certificate a TLS peer presented (`CN=app,O=shop`), if it sent one.
pub fn peer_subject(stream: &Stream) -> Option<String> {
    let Stream::Tls(t) = stream else { return None };
    let der = t.peer_certificate()?;
    validity(&der).map(|(subject, _)| subject)
}

/// The common name (CN) of the subject of the certificate a TLS peer presented, if it sent
/// one (verified against `client_ca` by the handshake) and it has one.
pub fn peer_common_name(stream: &Stream) -> Option<String> {
    let Stream::Tls(t) = stream else { return None };
    let der = t.peer_certificate()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// A handshake error in words: rustls' own error inside an `io::Error` is named by what it
/// means for the operator; `peer` is `server` or `client`.
fn explain(e: &io::Error, peer: &str) -> String {
    use rustls::{CertificateError, Error};
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) else {
        return e.to_string();
    };
    match tls {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            format!("the {peer} certificate was not trusted: it is not signed by a trusted CA (UnknownIssuer)")
        }
        Error::InvalidCertificate(CertificateError::Expired) => {
            format!("the {peer} certificate has expired")
        }
        Error::InvalidCertificate(CertificateError::NotValidForName) => {
            format!("the {peer} certificate does not name the host connected to (set backend_tls.server_name?)")
        }
        Error::InvalidCertificate(other) => {
            format!("the {peer} certificate was not trusted: {other:?}")
        }
        Error::NoCertificatesPresented => "the client sent no certificate".to_string(),
        Error::AlertReceived(alert) => {
            format!("the {peer} refused the handshake (alert {alert:?})")
        }
        other => other.to_string(),
    }
}

/// TLS handshake counts of one pool slot.
struct Counts {
    accepted: AtomicU64,
    refused: AtomicU64,
    backend_failed: AtomicU64,
}

static COUNTS: [Counts; crate::observe::stats::MAX_POOLS] = [const {
    Counts {
        accepted: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        backend_failed: AtomicU64::new(0),
    }
}; crate::observe::stats::MAX_POOLS];

/// What happened to a TLS handshake, for [`count`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A client's handshake on `tls_listen` completed.
    Accepted,
    /// A client's handshake on `tls_listen` was refused or broke.
    Refused,
    /// A handshake with a server or Sentinel failed.
    BackendFailed,
}

/// Count a handshake of the pool in statistics slot `pool`.
pub fn count(pool: usize, outcome: Outcome) {
    if let Some(c) = COUNTS.get(pool) {
        let cell = match outcome {
            Outcome::Accepted => &c.accepted,
            Outcome::Refused => &c.refused,
            Outcome::BackendFailed => &c.backend_failed,
        };
        cell.fetch_add(1, Relaxed);
    }
}

/// The handshake counts of slot `pool`: (accepted, refused, backend failed).
pub fn counts(pool: usize) -> (u64, u64, u64) {
    COUNTS.get(pool).map_or((0, 0, 0), |c| {
        (
            c.accepted.load(Relaxed),
            c.refused.load(Relaxed),
            c.backend_failed.load(Relaxed),
        )
    })
}

/// Log a failed handshake with a server, at most once a minute per node and reason (every
/// connection of every worker and each health check may meet the same refusal).
pub fn log_backend_failure(node: &str, why: &str) {
    static LAST: Mutex<Option<HashMap<String, (String, Instant)>>> = Mutex::new(None);
    const QUIET: Duration = Duration::from_secs(60);
    let Ok(mut last) = LAST.lock() else { return };
    let map = last.get_or_insert_with(HashMap::new);
    if map.len() > 4096 {
        map.clear();
    }
    let now = Instant::now();
    let fresh = match map.get(node) {
        Some((w, at)) => w != why || now.duration_since(*at) >= QUIET,
        None => true,
    };
    if fresh {
        map.insert(node.to_string(), (why.to_string(), now));
        drop(last);
        tracing::warn!(node, "TLS to server {node} failed: {why}");
    }
}
