//! The admin token: the bearer token every changing call must carry when one is configured.
//!
//! It comes from one of three places ([`Source`]): a file (`--admin-token-file`, read again
//! on every reload, so a token is rotated by rewriting the file and sending SIGHUP or calling
//! `POST /api/reload`), an environment variable named by `--admin-token-env` (or
//! `RAMPART_ADMIN_TOKEN`), or the command line (`--admin-token`, visible in `ps`). Only its
//! SHA-256 is kept; a request's token is hashed too and the two digests are compared in
//! constant time, so the time a refusal takes says nothing about the token, not even its
//! length. Refusals are counted ([`stats`]) and logged with the peer and the reason, never
//! with what was sent.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Longest token accepted, in bytes (4096).
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Largest token file read, in bytes (64 KiB); a larger file is refused unread.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// Minimum time between two log lines about refused tokens (1 s); the lines in between are
/// counted and the next line says how many there were.
const LOG_EVERY: Duration = Duration::from_secs(1);

static AUTH_FAILURES: AtomicU64 = AtomicU64::new(0);
static RELOAD_FAILURES: AtomicU64 = AtomicU64::new(0);

/// Process-wide counters: `(changing calls refused for a missing or wrong token, token file
/// re-reads that failed and kept the previous token)`.
pub fn stats() -> (u64, u64) {
    (AUTH_FAILURES.load(Relaxed), RELOAD_FAILURES.load(Relaxed))
}

/// Where the token comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum Source {
    /// Given as is (`--admin-token`).
    Value(String),
    /// The value of this environment variable (`--admin-token-env`, or `RAMPART_ADMIN_TOKEN`
    /// when no option names a token), read once at start.
    Env(String),
    /// The content of this file (surrounding white space removed), read at start and on
    /// every reload.
    File(PathBuf),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Value(_) => f.write_str("Value(<redacted>)"),
            Source::Env(n) => write!(f, "Env({n:?})"),
            Source::File(p) => write!(f, "File({p:?})"),
        }
    }
}

/// Why a token cannot be used. The messages never contain the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token is empty (an empty token would accept an empty header).
    #[error("the admin token {0} is empty")]
    Empty(String),
    /// Too long, or holds a character a header cannot carry after `Bearer `.
    #[error(
        "the admin token {0} must be 1 to {MAX_TOKEN_BYTES} printable ASCII characters without \
         spaces (for example the output of: openssl rand -hex 32)"
    )]
    Malformed(String),
    /// The environment variable is not set or not UTF-8.
    #[error(
        "the environment variable {0}, which should hold the admin token, is not set or not UTF-8"
    )]
    NoEnv(String),
    /// The file cannot be read.
    #[error("cannot read the admin token file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is larger than any token.
    #[error("the admin token file {0} is larger than {MAX_FILE_BYTES} bytes")]
    FileTooLarge(PathBuf),
}

/// The token's digest, or none, and where it came from.
pub struct AdminToken {
    source: Option<Source>,
    digest: ArcSwapOption<[u8; 32]>,
    log: Mutex<Throttle>,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken")
            .field("source", &self.source)
            .field("set", &self.is_set())
            .finish()
    }
}

#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    quiet: u64,
}

/// What [`AdminToken::reload`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// The token does not come from a file: nothing to read.
    NotAFile,
    /// The file holds the token in use.
    Unchanged,
    /// The file holds a new token, in use from now on.
    Changed,
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// Checks a token read from `what` (a description for errors: never the token itself).
fn validate(token: &str, what: &str) -> Result<[u8; 32], TokenError> {
    if token.is_empty() {
        return Err(TokenError::Empty(what.to_string()));
    }
    if token.len() > MAX_TOKEN_BYTES || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::Malformed(what.to_string()));
    }
    Ok(digest(token.as_bytes()))
}

fn read_file(path: &Path) -> Result<[u8; 32], TokenError> {
    use std::io::Read as _;
    let file = |source| TokenError::File {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(file)?;
    let mut text = String::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(file)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(TokenError::FileTooLarge(path.to_path_buf()));
    }
    warn_if_readable_by_others(path);
    validate(text.trim(), &format!("in {}", path.display()))
}

/// A token file others may read is worth a warning (it is still used).
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "the admin token file {} can be read by other users (mode {:o}); \
                 chmod 600 it",
                path.display(),
                m.permissions().mode() & 0o777
            );
        }
    }
}

impl AdminToken {
    /// No token: changing calls are open (allowed only on a loopback listener).
    pub fn none() -> Self {
        AdminToken {
            source: None,
            digest: ArcSwapOption::empty(),
            log: Mutex::new(Throttle::default()),
        }
    }

    /// Reads the token from `source`.
    ///
    /// # Errors
    /// See [`TokenError`]: the variable is unset, the file cannot be read, or the token is
    /// empty or malformed.
    pub fn load(source: Source) -> Result<Self, TokenError> {
        let d = match &source {
            Source::Value(v) => validate(v, "given")?,
            Source::Env(name) => {
                let v = std::env::var(name).map_err(|_| TokenError::NoEnv(name.clone()))?;
                validate(&v, &format!("in {name}"))?
            }
            Source::File(p) => read_file(p)?,
        };
        Ok(AdminToken {
            source: Some(source),
            digest: ArcSwapOption::from_pointee(d),
            log: Mutex::new(Throttle::default()),
        })
    }

    /// Whether changing calls need a token.
    pub fn is_set(&self) -> bool {
        self.digest.load().is_some()
    }

    /// Reads the token file again (a token from anywhere else does not change). A file
    /// that cannot be read or holds no valid token leaves the previous token in use; the
    /// failure is counted and logged.
    ///
    /// # Errors
    /// Why the file was not used.
    pub fn reload(&self) -> Result<Reloaded, TokenError> {
        let Some(Source::File(path)) = &self.source else {
            return Ok(Reloaded::NotAFile);
        };
        match read_file(path) {
            Ok(d) => {
                let same = self
                    .digest
                    .load()
                    .as_deref()
                    .is_some_and(|old| bool::from(old.ct_eq(&d)));
                if same {
                    return Ok(Reloaded::Unchanged);
                }
                self.digest.store(Some(Arc::new(d)));
                tracing::info!("admin token: a new token was read from {}", path.display());
                Ok(Reloaded::Changed)
            }
            Err(e) => {
                RELOAD_FAILURES.fetch_add(1, Relaxed);
                tracing::error!("admin token: {e}; the previous token stays in use");
                Err(e)
            }
        }
    }

    /// `Ok` when no token is configured or `headers` carry it as `Authorization: Bearer
    /// <token>` (the scheme's case does not matter). A refusal is counted and logged with
    /// `what` (method and path) and `peer`.
    ///
    /// # Errors
    /// The reason, fit for the client: no `Authorization` header, another scheme, or a
    /// token that is not the configured one.
    pub fn check(&self, headers: &HeaderMap, what: &str, peer: &str) -> Result<(), &'static str> {
        let Some(want) = self.digest.load_full() else {
            return Ok(());
        };
        let refusal = match headers.get(header::AUTHORIZATION) {
            None => Some("no Authorization header"),
            Some(v) => match bearer(v.as_bytes()) {
                None => Some("an Authorization header that is not Bearer"),
                Some(given) if bool::from(digest(given).ct_eq(&want[..])) => None,
                Some(_) => Some("a wrong token"),
            },
        };
        let Some(why) = refusal else {
            return Ok(());
        };
        AUTH_FAILURES.fetch_add(1, Relaxed);
        if let Ok(mut t) = self.log.lock() {
            if t.last.is_none_or(|l| l.elapsed() >= LOG_EVERY) {
                let more = std::mem::take(&mut t.quiet);
                let more = if more > 0 {
                    format!(" ({more} more refusals since the last line)")
                } else {
                    String::new()
                };
                tracing::warn!("admin interface: refused {what} from {peer}: {why}{more}");
                t.last = Some(Instant::now());
            } else {
                t.quiet += 1;
            }
        }
        Err(why)
    }
}

/// The token of an `Authorization: Bearer <token>` value.
fn bearer(v: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = v.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    Some(rest.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(v).unwrap_or_else(|e| panic!("{e}")),
        );
        h
    }

    #[test]
    fn only_the_exact_token_passes() {
        let t = AdminToken::load(Source::Value("s3cret".into())).unwrap_or_else(|e| panic!("{e}"));
        assert!(t.check(&with("Bearer s3cret"), "POST /x", "p").is_ok());
        assert!(t.check(&with("bearer  s3cret "), "POST /x", "p").is_ok());
        for bad in [
            "Bearer s3cre",
            "Bearer s3crett",
            "Bearer S3cret",
            "Basic s3cret",
            "Bearer",
        ] {
            assert!(t.check(&with(bad), "POST /x", "p").is_err(), "{bad}");
        }
        assert!(t.check(&HeaderMap::new(), "POST /x", "p").is_err());
        let open = AdminToken::none();
        assert!(open.check(&HeaderMap::new(), "POST /x", "p").is_ok());
    }

    #[test]
    fn bad_tokens_are_refused_without_being_shown() {
        for bad in ["", "with space", "tab\there", "ünïcode"] {
            match AdminToken::load(Source::Value(bad.into())) {
                Ok(_) => panic!("{bad:?} accepted"),
                Err(e) if !bad.is_empty() => assert!(!e.to_string().contains(bad), "{e}"),
                Err(_) => {}
            }
        }
        let long = "x".repeat(MAX_TOKEN_BYTES + 1);
        assert!(AdminToken::load(Source::Value(long)).is_err());
        let e = AdminToken::load(Source::Env("RAMPART_TEST_SURELY_UNSET".into()));
        assert!(matches!(e, Err(TokenError::NoEnv(_))));
        let debug = format!("{:?}", Source::Value("s3cret".into()));
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn a_token_file_is_read_again_and_a_bad_one_keeps_the_old_token() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap_or_else(|e| panic!("{e}"));
        let t = AdminToken::load(Source::File(path.clone())).unwrap_or_else(|e| panic!("{e}"));
        assert!(t.check(&with("Bearer first"), "POST /x", "p").is_ok());
        assert_eq!(t.reload().ok(), Some(Reloaded::Unchanged));
        std::fs::write(&path, "  second  \n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.reload().ok(), Some(Reloaded::Changed));
        assert!(t.check(&with("Bearer first"), "POST /x", "p").is_err());
        assert!(t.check(&with("Bearer second"), "POST /x", "p").is_ok());
        for bad in ["\n", "two words"] {
            std::fs::write(&path, bad).unwrap_or_else(|e| panic!("{e}"));
            assert!(t.reload().is_err(), "{bad:?}");
            assert!(t.check(&with("Bearer second"), "POST /x", "p").is_ok());
        }
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(t.reload(), Err(TokenError::File { .. })));
        assert!(t.check(&with("Bearer second"), "POST /x", "p").is_ok());
    }
}
