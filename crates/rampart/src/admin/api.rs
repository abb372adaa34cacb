//! The JSON API: the topology with its counters, recent events, readiness, and the changing
//! calls (maintenance, switchover, reload). The guard has checked the bearer token of a
//! changing call before it gets here ([`super::guard`]); bodies are parsed here so every
//! error is a JSON `{"error": ...}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{pools, AdminState, ApiError};
use crate::observe::stats::{PoolStat, ServerStat, LATENCY_BUCKETS_US};
use crate::topology::snapshot::{NodeSnap, ShardSnap, Snapshot};
use crate::topology::{PoolRt, ShardRt};

type St = State<Arc<AdminState>>;

fn error(status: StatusCode, msg: impl Into<String>) -> ApiError {
    ApiError::new(status, msg)
}

/// One node in `/api/topology`: its state from the one snapshot
/// ([`crate::topology::snapshot`]) and its traffic counters.
#[derive(Debug, Serialize)]
pub struct NodeJson {
    /// Address (`host:port`).
    addr: String,
    /// Configured name (a twemproxy server's name), if any.
    name: Option<String>,
    /// Its key in the stats JSON and in maintenance calls (the name, else the address as
    /// written).
    label: String,
    zone: Option<String>,
    /// The role the shard view gives it (writes go to the primary).
    role: &'static str,
    /// What its last ROLE reply said (`unknown` for unchecked nodes).
    seen_role: &'static str,
    /// `up`, `down`, `ejected`, `maintenance` or `out`.
    status: &'static str,
    up: bool,
    /// Why it is not `up`; empty when it is.
    reason: String,
    /// `health-check` or `traffic`.
    health_source: &'static str,
    routable: bool,
    writable: bool,
    replica_usable: bool,
    lag_ms: Option<u64>,
    lag_bytes: Option<u64>,
    /// Serving reads with its replication link down (within `max_stale`).
    stale: bool,
    /// Unix time (s) its replication link went down; `null` while up.
    stale_since: Option<u64>,
    /// Reads sent to it while stale, since start.
    reads_stale: i64,
    maintenance: bool,
    ejected: bool,
    ejections: u32,
    check_us: u64,
    last_check_age_ms: Option<u64>,
    requests: i64,
    responses: i64,
    errors: i64,
    server_err: i64,
    server_eof: i64,
    server_timedout: i64,
    request_bytes: i64,
    response_bytes: i64,
    connections: i64,
    in_queue: i64,
    out_queue: i64,
}

/// One shard in `/api/topology`.
#[derive(Debug, Serialize)]
pub struct ShardJson {
    name: String,
    /// Address of the primary in its view.
    primary: Option<String>,
    writable: bool,
    /// Why it does not take writes; empty when it does.
    reason: String,
    ejected: bool,
    switching: bool,
    /// A Sentinel announced a failover that is not applied yet (writes are held).
    failing_over: bool,
    switch_state: String,
    failovers: u64,
    switchovers: u64,
    /// Worker subscriber connections of the shard opened again and resubscribed.
    pubsub_resubscriptions: u64,
    /// Its circuit is open (a cache pool with `fail_open`).
    circuit_open: bool,
    /// Reads answered as a miss by failing open.
    fail_open_misses: i64,
    /// Writes dropped by failing open.
    fail_open_drops: i64,
    nodes: Vec<NodeJson>,
    /// The shard's write spool, when the pool has one.
    spool: Option<SpoolJson>,
}

/// A shard's write spool in `/api/topology`.
#[derive(Debug, Serialize)]
pub struct SpoolJson {
    dir: String,
    /// Entries waiting for replay.
    entries: u64,
    /// Their bytes on disk.
    bytes: u64,
    /// Age of the oldest waiting entry in ms (null when none waits).
    oldest_age_ms: Option<u64>,
    appended: u64,
    replayed: u64,
    replay_errors: u64,
    refused: u64,
    /// Why it stopped for good (null while it runs).
    stopped: Option<String>,
}

/// One pool in `/api/topology`.
#[derive(Debug, Serialize)]
pub struct PoolJson {
    name: String,
    listen: String,
    /// `twemproxy`, `replicated` or `sentinel`.
    kind: &'static str,
    /// `auto_eject_hosts`: ready while any shard serves.
    cache: bool,
    ready: bool,
    /// Why it is not ready, one line per cause.
    not_ready: Vec<String>,
    read_policy: String,
    client_connections: i64,
    client_eof: i64,
    client_err: i64,
    forward_error: i64,
    server_ejects: i64,
    fragments: i64,
    /// The TLS listener's address (`tls_listen`), if any.
    tls_listen: Option<String>,
    /// Every certificate the pool loaded (listener, client CA, backend CA, backend client
    /// certificate), with its expiry (`not_after`, seconds since the epoch).
    tls_certificates: Vec<crate::tls::CertInfo>,
    shards: Vec<ShardJson>,
}

/// Calls and latency of one command.
#[derive(Debug, Serialize)]
pub struct CommandJson {
    name: &'static str,
    calls: i64,
    /// Of those, answered with an error reply.
    errors: i64,
    sum_us: i64,
    /// Per bucket of `latency_buckets_us`, not cumulative.
    buckets: Vec<i64>,
}

/// The whole `/api/topology` document.
#[derive(Debug, Serialize)]
pub struct Topology {
    version: &'static str,
    now_ms: u64,
    uptime_s: u64,
    workers: usize,
    client_connections: i64,
    requests: i64,
    /// Upper bounds of the latency buckets in µs (`null` for the last, +Inf).
    latency_buckets_us: Vec<Option<u64>>,
    commands: Vec<CommandJson>,
    /// Every pool is ready (what `/readyz` answers).
    ready: bool,
    pools: Vec<PoolJson>,
    events: Vec<crate::observe::events::Event>,
    /// Faults injected into live traffic now (as `GET /api/faults` lists them).
    faults: Vec<super::faults::FaultJson>,
}

fn node_json(n: &NodeSnap) -> NodeJson {
    let r = &n.node;
    let (err, eof, tmo) = (
        r.sum(ServerStat::ServerErr),
        r.sum(ServerStat::ServerEof),
        r.sum(ServerStat::ServerTimedout),
    );
    NodeJson {
        addr: n.addr.clone(),
        name: n.name.clone(),
        label: n.stats_key.clone(),
        zone: r.zone.clone(),
        role: n.role,
        seen_role: n.seen_role,
        status: n.status.name(),
        up: n.up,
        reason: n.reason.clone(),
        health_source: n.source,
        routable: n.routable,
        writable: n.writable,
        replica_usable: n.replica_usable,
        lag_ms: n.lag_ms,
        lag_bytes: n.lag_bytes,
        stale: n.stale,
        stale_since: n.stale_since,
        reads_stale: n.stale_reads,
        maintenance: n.maintenance,
        ejected: n.ejected,
        ejections: n.ejections,
        check_us: n.check_us,
        last_check_age_ms: n.last_check_age_ms,
        requests: r.sum(ServerStat::Requests),
        responses: r.sum(ServerStat::Responses),
        errors: err + eof + tmo,
        server_err: err,
        server_eof: eof,
        server_timedout: tmo,
        request_bytes: r.sum(ServerStat::RequestBytes),
        response_bytes: r.sum(ServerStat::ResponseBytes),
        connections: r.sum(ServerStat::ServerConnections),
        in_queue: r.sum(ServerStat::InQueue),
        out_queue: r.sum(ServerStat::OutQueue),
    }
}

fn shard_json(s: &ShardSnap) -> ShardJson {
    ShardJson {
        name: s.name.clone(),
        primary: s.primary.clone(),
        writable: s.writable,
        reason: s.reason.clone(),
        ejected: s.ejected,
        switching: s.switching,
        failing_over: s.failing_over,
        switch_state: s.switch_state.clone(),
        failovers: s.failovers,
        switchovers: s.switchovers,
        pubsub_resubscriptions: s.resubscriptions,
        circuit_open: s.circuit_open,
        fail_open_misses: s.fail_open_misses,
        fail_open_drops: s.fail_open_drops,
        nodes: s.nodes.iter().map(node_json).collect(),
        spool: s.spool.as_ref().map(|sp| SpoolJson {
            dir: sp.dir.clone(),
            entries: sp.entries,
            bytes: sp.bytes,
            oldest_age_ms: sp.oldest_age_ms,
            appended: sp.appended,
            replayed: sp.replayed,
            replay_errors: sp.replay_errors,
            refused: sp.refused,
            stopped: sp.stopped.clone(),
        }),
    }
}

/// `GET /api/topology`.
pub async fn topology(State(st): St) -> Json<Topology> {
    let shared = &st.shared;
    let m = &shared.metrics;
    let snap = Snapshot::of(&pools(shared));
    let pools = snap
        .pools
        .iter()
        .map(|ps| {
            let p = &ps.pool;
            let sum = |s| m.pool_sum(p.index, s);
            PoolJson {
                name: p.conf.name.clone(),
                listen: p.conf.listen.to_string(),
                kind: ps.kind.name(),
                cache: ps.cache,
                ready: ps.ready,
                not_ready: ps.not_ready.clone(),
                read_policy: p.conf.read_policy.to_string(),
                client_connections: sum(PoolStat::ClientConnections),
                client_eof: sum(PoolStat::ClientEof),
                client_err: sum(PoolStat::ClientErr),
                forward_error: sum(PoolStat::ForwardError),
                server_ejects: sum(PoolStat::ServerEjects),
                fragments: sum(PoolStat::Fragments),
                tls_listen: p.conf.tls_listen.as_ref().map(ToString::to_string),
                tls_certificates: p.tls.certs.clone(),
                shards: ps.shards.iter().map(shard_json).collect(),
            }
        })
        .collect();
    Json(Topology {
        version: env!("CARGO_PKG_VERSION"),
        now_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        uptime_s: shared.started.elapsed().as_secs(),
        workers: shared.workers,
        client_connections: m.global_sum(|w| &w.curr_connections),
        requests: m.global_sum(|w| &w.commands),
        latency_buckets_us: LATENCY_BUCKETS_US
            .iter()
            .map(|&b| (b != u64::MAX).then_some(b))
            .collect(),
        commands: m
            .commands()
            .into_iter()
            .map(|(name, t)| CommandJson {
                name,
                calls: t.calls,
                errors: t.errors,
                sum_us: t.sum_us,
                buckets: t.buckets.to_vec(),
            })
            .collect(),
        ready: snap.ready(),
        pools,
        events: crate::observe::events::recent(),
        faults: crate::upstream::fault::active()
            .iter()
            .map(|f| super::faults::json(f))
            .collect(),
    })
}

/// `GET /api/events`: the recent events, oldest first.
pub async fn events() -> Json<Vec<crate::observe::events::Event>> {
    Json(crate::observe::events::recent())
}

/// `GET /readyz`: 200 when every pool is ready (the rules are in
/// [`crate::topology::snapshot`]), else 503 with one line per cause.
pub async fn readyz(State(st): St) -> Response {
    let snap = Snapshot::of(&pools(&st.shared));
    if snap.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let missing: Vec<&str> = snap
            .pools
            .iter()
            .flat_map(|p| p.not_ready.iter().map(String::as_str))
            .collect();
        let body = format!("not ready:\n{}\n", missing.join("\n"));
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
}

fn find_pool(st: &AdminState, name: &str) -> Result<Arc<PoolRt>, ApiError> {
    pools(&st.shared)
        .iter()
        .find(|p| p.conf.name == name)
        .cloned()
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no pool '{name}'")))
}

fn find_shard(p: &PoolRt, name: &str) -> Result<usize, ApiError> {
    p.shards.iter().position(|s| s.name == name).ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            format!("no shard '{name}' in pool '{}'", p.conf.name),
        )
    })
}

/// Body of `POST /api/nodes/maintenance`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceReq {
    pool: String,
    /// Optional: the node is searched in every shard of the pool when absent.
    shard: Option<String>,
    /// The node's address or its label (name).
    node: String,
    on: bool,
}

/// `POST /api/nodes/maintenance`: drain a node (no new requests; the ones in flight finish)
/// or bring it back.
pub async fn maintenance(State(st): St, body: Bytes) -> Result<Response, ApiError> {
    {
        let req: MaintenanceReq = parse(&body)?;
        let pool = find_pool(&st, &req.pool)?;
        let shards: Vec<&ShardRt> = match &req.shard {
            Some(s) => vec![&pool.shards[find_shard(&pool, s)?]],
            None => pool.shards.iter().collect(),
        };
        for s in shards {
            let view = s.view();
            let found = view
                .nodes
                .iter()
                .find(|n| n.label == req.node || n.addr.to_string() == req.node);
            if let Some(n) = found {
                n.set_maintenance(req.on);
                return Ok(Json(serde_json::json!({
                    "pool": req.pool,
                    "shard": s.name,
                    "node": n.label,
                    "maintenance": n.in_maintenance(),
                }))
                .into_response());
            }
        }
        Err(error(
            StatusCode::NOT_FOUND,
            format!("no node '{}' in pool '{}'", req.node, req.pool),
        ))
    }
}

/// Body of `POST /api/shards/switchover`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchoverReq {
    pool: String,
    shard: String,
    /// Label of the replica to promote; the best healthy one when absent.
    target: Option<String>,
}

/// `POST /api/shards/switchover`: start a planned switchover and answer 202 at once; progress
/// is at `GET /api/shards/switchover?pool=&shard=`.
pub async fn switchover(State(st): St, body: Bytes) -> Result<Response, ApiError> {
    {
        let req: SwitchoverReq = parse(&body)?;
        let pool = find_pool(&st, &req.pool)?;
        let shard = find_shard(&pool, &req.shard)?;
        if !pool.checked {
            return Err(error(
                StatusCode::CONFLICT,
                "a twemproxy servers: pool has no replicas to switch to",
            ));
        }
        if pool.conf.failover_hold.is_zero() {
            return Err(error(
                StatusCode::CONFLICT,
                "failover_hold is 0 in this pool, so writes cannot be held during a switchover",
            ));
        }
        let s = &pool.shards[shard];
        if s.is_switching() {
            return Err(error(
                StatusCode::CONFLICT,
                format!("a switchover of shard '{}' is already running", s.name),
            ));
        }
        s.set_switch_state("requested through the admin API");
        let poll = format!(
            "/api/shards/switchover?pool={}&shard={}",
            req.pool, req.shard
        );
        // `switchover::run` records the outcome as an event and in the shard's state.
        tokio::spawn(async move {
            if let Err(e) = crate::ha::switchover::run(pool, shard, req.target).await {
                tracing::warn!("switchover requested through the admin API failed: {e}");
            }
        });
        Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "started": true, "progress": poll })),
        )
            .into_response())
    }
}

/// Query of `GET /api/shards/switchover`.
#[derive(Debug, Deserialize)]
pub struct ShardQuery {
    pool: String,
    shard: String,
}

/// `GET /api/shards/switchover?pool=&shard=`: whether a switchover runs, what it is doing
/// (or how the last one ended), and the shard's primary now.
pub async fn switchover_status(
    State(st): St,
    Query(q): Query<ShardQuery>,
) -> Result<Response, ApiError> {
    let pool = find_pool(&st, &q.pool)?;
    let shard = find_shard(&pool, &q.shard)?;
    let s = &pool.shards[shard];
    let view = s.view();
    let state = s.switch_state.lock().map(|x| x.clone()).unwrap_or_default();
    Ok(Json(serde_json::json!({
        "pool": q.pool,
        "shard": s.name,
        "switching": s.is_switching(),
        "state": state,
        "done": !s.is_switching() && state.starts_with("done"),
        "failed": !s.is_switching() && state.starts_with("failed"),
        "primary": view.primary.and_then(|i| view.nodes.get(i)).map(|n| n.label.clone()),
    }))
    .into_response())
}

/// Query of `POST /api/reload`.
#[derive(Debug, Deserialize)]
pub struct ReloadQuery {
    /// Apply even when keys would move to other shards.
    #[serde(default)]
    force: bool,
}

/// Body of `POST /api/reload`: empty, or `{"force": true}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadReq {
    /// Apply even when keys would move to other shards.
    #[serde(default)]
    force: bool,
}

/// `POST /api/reload[?force=true]`: read the configuration file again and apply it, and read
/// the admin token file again when the token comes from one. The body may be empty or
/// `{"force": true}`. The answer has `admin_token` when there is a token file: `changed`,
/// `unchanged`, or why it was not read (the previous token stays); the configuration's
/// outcome does not depend on it.
pub async fn reload(
    State(st): St,
    Query(q): Query<ReloadQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: ReloadReq = if body.iter().all(u8::is_ascii_whitespace) {
        ReloadReq::default()
    } else {
        parse(&body)?
    };
    let token = match st.token.reload() {
        Ok(super::token::Reloaded::NotAFile) => None,
        Ok(super::token::Reloaded::Unchanged) => Some("unchanged".to_string()),
        Ok(super::token::Reloaded::Changed) => Some("changed".to_string()),
        Err(e) => Some(format!("not read, the previous token stays: {e}")),
    };
    let force = q.force || req.force;
    let (status, mut answer) =
        match crate::control::reload::reload(&st.shared, &st.control, force).await {
            Ok(msg) => (
                StatusCode::OK,
                serde_json::json!({ "ok": true, "message": msg }),
            ),
            // The shape of every API error.
            Err(e) => (StatusCode::CONFLICT, serde_json::json!({ "error": e })),
        };
    if let Some(t) = token {
        answer["admin_token"] = serde_json::Value::String(t);
    }
    Ok((status, Json(answer)).into_response())
}
