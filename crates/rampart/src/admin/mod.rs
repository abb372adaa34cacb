//! The operator interface: one HTTP listener (default `127.0.0.1:22223`, loopback only) with
//! Prometheus metrics, the twemproxy stats JSON, health and readiness probes, a JSON API to
//! look at and change the topology, and a live stats page.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | live stats page (pools, shards, nodes, events), refreshed every second |
//! | `GET /metrics` | Prometheus text format ([`metrics`]) |
//! | `GET /stats` | the twemproxy stats JSON, as on the stats port |
//! | `GET /healthz` | 200 `ok` while the process runs |
//! | `GET /readyz` | 200 when every pool is ready ([`crate::topology::snapshot`] has the rules), else 503 and why |
//! | `GET /api/topology` | pools, shards, nodes, counters and recent events ([`api`]) |
//! | `GET /api/events` | recent events |
//! | `GET /api/history` | the last 15 minutes per pool and node, and the busiest commands ([`history`]) |
//! | `POST /api/nodes/maintenance` | `{pool, shard, node, on}`: drain a node or bring it back |
//! | `POST /api/shards/switchover` | `{pool, shard, target?}`: start a planned switchover (202) |
//! | `GET /api/shards/switchover?pool=&shard=` | its progress |
//! | `POST /api/reload` | reload the configuration file |
//! | `GET /api/faults` | faults injected into live traffic now ([`faults`]) |
//! | `POST /api/faults` | `{pool, shard?, node?, command?, kind, delay_ms?, error?, share?, all?, duration_s}`: inject one (201) |
//! | `DELETE /api/faults/{id}` | end one now |
//!
//! Reading is open to anyone who can reach the listener. Changing (every method but `GET` and
//! `HEAD`) needs `Authorization: Bearer <token>` whenever a token is configured ([`token`]: from
//! a file read again on reload, an environment variable, or the command line); a listener that
//! is not on a loopback address refuses to start without one, so a default install can only be
//! changed from the machine itself. Every request must name the listener in `Host`, and changes
//! must be JSON from no foreign `Origin` ([`guard`]), so a web page in the operator's browser
//! can neither read nor change anything. The listener bounds its connections and their time
//! ([`listener`]); with `--admin-tls-cert` and `--admin-tls-key` it serves HTTPS ([`tls`]).
//! docs/ADMIN.md describes every call, docs/SECURITY.md the threat model.

pub mod api;
pub mod faults;
pub mod guard;
pub mod history;
pub mod listener;
pub mod metrics;
pub mod page;
pub mod stats_port;
pub mod tls;
pub mod token;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::topology::PoolRt;
use crate::topology::Shared;

/// The default admin address: loopback only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:22223";

/// How the admin interface is configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminOptions {
    /// `host:port` to listen on.
    pub addr: String,
    /// Where the bearer token for changing calls comes from; none: changes need no token.
    pub token: Option<token::Source>,
    /// More names the listener answers to in `Host` and `Origin` besides its own
    /// (`name` for any port, or `name:port`); see [`guard::Names`]. Default: none.
    pub hosts: Vec<String>,
    /// The address was given explicitly: failing to bind it stops the start. The default
    /// address only logs a warning when it is taken (so several instances, or tests, can run
    /// side by side).
    pub explicit: bool,
    /// Serve HTTPS with this certificate chain and key (PEM files); `None`: plain HTTP.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// Why the admin interface cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The address does not parse or resolve.
    #[error("cannot resolve admin address {addr}: {source}")]
    Resolve {
        /// As given.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The address resolves to nothing.
    #[error("admin address {0} resolves to no address")]
    NoAddress(String),
    /// Reachable from other machines, and no token to protect changes.
    #[error(
        "the admin interface on {0} is reachable from other machines, so it needs a token for \
         changes: pass --admin-token-file FILE (or --admin-token-env VAR, or set \
         RAMPART_ADMIN_TOKEN, or --admin-token TOKEN), or listen on a loopback address such as \
         127.0.0.1"
    )]
    TokenRequired(String),
    /// The token cannot be read or is not usable (empty, malformed).
    #[error(transparent)]
    Token(#[from] token::TokenError),
    /// An extra host name is malformed.
    #[error(transparent)]
    BadHost(#[from] guard::BadName),
    /// The TLS certificate or key does not load.
    #[error("admin interface TLS: {0}")]
    Tls(#[from] crate::tls::LoadError),
    /// Binding failed.
    #[error("cannot listen for the admin interface on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A bound admin listener, ready to serve.
#[derive(Debug)]
pub struct Bound {
    listener: TcpListener,
    token: Arc<token::AdminToken>,
    names: guard::Names,
    tls: Option<Arc<tls::AdminTls>>,
}

impl Bound {
    /// The address it listens on.
    ///
    /// # Errors
    /// The socket has no local address (should not happen once bound).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The token changing calls need, shared with whoever reloads it (SIGHUP).
    pub fn token(&self) -> Arc<token::AdminToken> {
        Arc::clone(&self.token)
    }
}

/// Check the options and bind the listener. `Ok(None)` when the default address is taken.
///
/// # Errors
/// See [`AdminError`]: a token that cannot be read or is empty, an address reachable from
/// other machines without a token, an address that does not resolve, or an explicit address
/// that cannot be bound.
pub async fn bind(opts: &AdminOptions) -> Result<Option<Bound>, AdminError> {
    let token = Arc::new(match &opts.token {
        Some(source) => token::AdminToken::load(source.clone())?,
        None => token::AdminToken::none(),
    });
    let addrs: Vec<SocketAddr> = opts
        .addr
        .to_socket_addrs()
        .map_err(|source| AdminError::Resolve {
            addr: opts.addr.clone(),
            source,
        })?
        .collect();
    let Some(addr) = addrs.first().copied() else {
        return Err(AdminError::NoAddress(opts.addr.clone()));
    };
    if !addrs.iter().all(|a| a.ip().is_loopback()) && !token.is_set() {
        return Err(AdminError::TokenRequired(opts.addr.clone()));
    }
    let admin_tls = match &opts.tls {
        Some((cert, key)) => Some(Arc::new(tls::AdminTls::load(cert, key)?)),
        None => None,
    };
    let bound = |listener: TcpListener| -> Result<Option<Bound>, AdminError> {
        let local = listener
            .local_addr()
            .map_err(|source| AdminError::Bind { addr, source })?;
        Ok(Some(Bound {
            names: guard::Names::new(local, &opts.hosts)?,
            listener,
            token: Arc::clone(&token),
            tls: admin_tls.clone(),
        }))
    };
    match TcpListener::bind(addr).await {
        Ok(listener) => bound(listener),
        Err(source) if !opts.explicit => {
            tracing::warn!(
                "admin interface disabled: cannot listen on the default {addr}: {source} \
                 (pass --admin ADDR to choose another address, --no-admin to silence this)"
            );
            Ok(None)
        }
        Err(source) => Err(AdminError::Bind { addr, source }),
    }
}

/// What every handler reads.
pub struct AdminState {
    /// The process state.
    pub shared: Arc<Shared>,
    /// The control plane, for reloads.
    pub control: crate::control::Handle,
    /// Bearer token for changing calls (the guard checks it; reload reads its file again).
    pub token: Arc<token::AdminToken>,
    /// The last 15 minutes, sampled every second.
    pub history: Arc<history::History>,
    /// Host name, PID and configuration file, for the page's header.
    pub process: history::Process,
}

type St = axum::extract::State<Arc<AdminState>>;

/// The pools of the current configuration.
pub fn pools(shared: &Shared) -> Arc<Vec<Arc<PoolRt>>> {
    shared.pools.load_full()
}

/// Serve the admin interface until the task is aborted or `stop` is cancelled.
pub async fn serve(
    bound: Bound,
    shared: Arc<Shared>,
    control: crate::control::Handle,
    stop: CancellationToken,
) {
    let history = Arc::new(history::History::default());
    history::start(Arc::clone(&shared), Arc::clone(&history), stop.clone());
    let rules = guard::Rules {
        names: bound.names,
        token: Arc::clone(&bound.token),
    };
    let state = Arc::new(AdminState {
        process: history::Process::current(&shared),
        shared,
        control,
        token: bound.token,
        history,
    });
    if let Ok(a) = bound.listener.local_addr() {
        let scheme = if bound.tls.is_some() { "https" } else { "http" };
        tracing::info!("admin interface on {scheme}://{a}/");
    }
    let tls = bound.tls.map(|t| (t, Arc::clone(&state.shared)));
    let app = router(state, rules);
    listener::run(bound.listener, app, stop, tls).await;
}

/// Every route, behind the [`guard`] that checks `Host`, `Origin`, `Content-Type`, the body
/// and the token of every request with these `rules`.
pub fn router(state: Arc<AdminState>, rules: guard::Rules) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/assets/app.js", get(page::script))
        .route("/assets/style.css", get(page::style))
        .route("/metrics", get(prometheus))
        .route("/stats", get(stats))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(api::readyz))
        .route("/api/topology", get(api::topology))
        .route("/api/events", get(api::events))
        .route("/api/history", get(history::get))
        .route("/api/nodes/maintenance", post(api::maintenance))
        .route(
            "/api/shards/switchover",
            get(api::switchover_status).post(api::switchover),
        )
        .route("/api/reload", post(api::reload))
        .route("/api/faults", get(faults::list).post(faults::add))
        .route("/api/faults/{id}", delete(faults::delete))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(rules),
            guard::check,
        ))
}

async fn prometheus(axum::extract::State(st): St) -> Response {
    let body = metrics::render(&st.shared);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn stats(axum::extract::State(st): St) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::admin::stats_port::render(&st.shared),
    )
        .into_response()
}

/// A refused API call: its status and why, answered as `{"error": ...}`.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Why.
    pub message: String,
}

impl ApiError {
    /// An error with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = axum::Json(serde_json::json!({ "error": self.message }));
        if self.status == StatusCode::UNAUTHORIZED {
            (self.status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
        } else {
            (self.status, body).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_public_address_needs_a_token() {
        let opts = |addr: &str, t: Option<&str>| AdminOptions {
            addr: addr.into(),
            token: t.map(|t| token::Source::Value(t.to_string())),
            hosts: Vec::new(),
            explicit: true,
            tls: None,
        };
        let e = bind(&opts("0.0.0.0:0", None)).await;
        assert!(matches!(e, Err(AdminError::TokenRequired(_))), "{e:?}");
        assert!(matches!(
            bind(&opts("127.0.0.1:0", Some(""))).await,
            Err(AdminError::Token(token::TokenError::Empty(_)))
        ));
        let ok = bind(&opts("127.0.0.1:0", None)).await;
        assert!(matches!(ok, Ok(Some(_))), "{ok:?}");
        let ok = bind(&opts("0.0.0.0:0", Some("t"))).await;
        assert!(matches!(ok, Ok(Some(_))), "{ok:?}");
    }

    #[tokio::test]
    async fn a_taken_default_address_is_not_fatal_but_an_explicit_one_is() {
        let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = taken.local_addr().expect("addr").to_string();
        let mut opts = AdminOptions {
            addr,
            token: None,
            hosts: Vec::new(),
            explicit: false,
            tls: None,
        };
        assert!(matches!(bind(&opts).await, Ok(None)));
        opts.explicit = true;
        assert!(matches!(bind(&opts).await, Err(AdminError::Bind { .. })));
    }
}
