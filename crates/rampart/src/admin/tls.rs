//! TLS of the admin listener (`--admin-tls-cert`, `--admin-tls-key`): the certificate is
//! read at start (a bad file stops the start) and again after every configuration reload
//! (SIGHUP, `POST /api/reload`), when the next connection arrives; a file that does not load
//! then keeps the previous certificate and says why in the log. Its expiry is in /metrics.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock};

use rustls::ServerConfig;

use crate::tls::{CertInfo, LoadError};
use crate::topology::Shared;

/// The admin listener's certificate, reloadable.
pub struct AdminTls {
    cert: PathBuf,
    key: PathBuf,
    /// The config in use and the reload count it was read at.
    current: Mutex<(Arc<ServerConfig>, u64)>,
}

/// The loaded admin certificate, for /metrics (`None` without admin TLS).
static INFO: OnceLock<Mutex<Option<CertInfo>>> = OnceLock::new();

fn info() -> &'static Mutex<Option<CertInfo>> {
    INFO.get_or_init(|| Mutex::new(None))
}

/// The admin certificate's expiry, if the admin listener uses TLS.
pub fn cert_info() -> Option<CertInfo> {
    info().lock().ok().and_then(|i| i.clone())
}

impl std::fmt::Debug for AdminTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminTls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl AdminTls {
    /// Read `cert` and `key`.
    ///
    /// # Errors
    /// A file cannot be read, holds no usable PEM, or the key does not go with the chain.
    pub fn load(cert: &Path, key: &Path) -> Result<AdminTls, LoadError> {
        let (config, leaf) = crate::tls::server_from_files(cert, key)?;
        if let Ok(mut i) = info().lock() {
            *i = Some(leaf);
        }
        Ok(AdminTls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            // Read at start, before any reload.
            current: Mutex::new((config, 0)),
        })
    }

    /// The config for a new connection: read again first if a reload happened since.
    pub fn config(&self, shared: &Shared) -> Arc<ServerConfig> {
        let reloads = shared.reloads.load(Relaxed);
        // Nothing panics while holding it; a poisoned lock is taken as is.
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if cur.1 != reloads {
            cur.1 = reloads;
            match crate::tls::server_from_files(&self.cert, &self.key) {
                Ok((config, leaf)) => {
                    cur.0 = config;
                    if let Ok(mut i) = info().lock() {
                        *i = Some(leaf);
                    }
                    tracing::info!("admin interface: TLS certificate read again");
                }
                Err(e) => tracing::error!(
                    "admin interface: TLS certificate not reloaded, keeping the previous one: {e}"
                ),
            }
        }
        Arc::clone(&cur.0)
    }
}
