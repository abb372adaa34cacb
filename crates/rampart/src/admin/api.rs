//! The JSON API: the topology with its counters, recent events, readiness, and the changing
//! calls (maintenance, switchover, reload). Changing calls check the bearer token first
//! ([`super::authorize`]); bodies are parsed here so every error is a JSON `{"error": ...}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::probe::Health;
use super::{authorize, pools, AdminState, ApiError};
use crate::clock::now_ms;
use crate::observe::stats::{PoolStat, ServerStat, LATENCY_BUCKETS_US};
use crate::topology::node::{NodeRt, Role};
use crate::topology::{PoolRt, ShardRt};

type St = State<Arc<AdminState>>;

fn error(status: StatusCode, msg: impl Into<String>) -> ApiError {
    ApiError::new(status, msg)
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Primary => "primary",
        Role::Replica => "replica",
        Role::Unknown => "unknown",
    }
}

/// One node in `/api/topology`.
#[derive(Debug, Serialize)]
pub struct NodeJson {
    label: String,
    addr: String,
    zone: Option<String>,
    /// The role the shard view gives it (writes go to the primary).
    role: &'static str,
    /// What its last ROLE reply said (`unknown` for unchecked nodes).
    seen_role: &'static str,
    up: bool,
    routable: bool,
    maintenance: bool,
    ejected: bool,
    replica_ok: bool,
    lag_ms: u64,
    check_us: u64,
    last_check_age_ms: Option<u64>,
    last_error: String,
    health_source: &'static str,
    ejections: u32,
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
    primary: Option<String>,
    writable: bool,
    ejected: bool,
    switching: bool,
    switch_state: String,
    nodes: Vec<NodeJson>,
}

/// One pool in `/api/topology`.
#[derive(Debug, Serialize)]
pub struct PoolJson {
    name: String,
    listen: String,
    /// `twemproxy`, `replicated` or `sentinel`.
    kind: &'static str,
    read_policy: String,
    client_connections: i64,
    client_eof: i64,
    client_err: i64,
    forward_error: i64,
    server_ejects: i64,
    fragments: i64,
    shards: Vec<ShardJson>,
}

/// Calls and latency of one command.
#[derive(Debug, Serialize)]
pub struct CommandJson {
    name: &'static str,
    calls: i64,
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
    pools: Vec<PoolJson>,
    events: Vec<crate::observe::events::Event>,
}

fn node_json(n: &NodeRt, primary: bool, h: Health) -> NodeJson {
    let now = now_ms();
    let (err, eof, tmo) = (
        n.sum(ServerStat::ServerErr),
        n.sum(ServerStat::ServerEof),
        n.sum(ServerStat::ServerTimedout),
    );
    NodeJson {
        label: n.label.clone(),
        addr: n.addr.to_string(),
        zone: n.zone.clone(),
        role: if primary { "primary" } else { "replica" },
        seen_role: role_name(n.role()),
        up: h.up,
        routable: h.up && n.is_routable(),
        maintenance: n.in_maintenance(),
        ejected: n.is_ejected(),
        replica_ok: n.replica_ok(),
        lag_ms: n.lag_ms(),
        check_us: h.check_us,
        last_check_age_ms: (h.last_check_ms != 0).then(|| now.saturating_sub(h.last_check_ms)),
        last_error: h.last_error,
        health_source: h.source,
        ejections: n.ejections(),
        requests: n.sum(ServerStat::Requests),
        responses: n.sum(ServerStat::Responses),
        errors: err + eof + tmo,
        server_err: err,
        server_eof: eof,
        server_timedout: tmo,
        request_bytes: n.sum(ServerStat::RequestBytes),
        response_bytes: n.sum(ServerStat::ResponseBytes),
        connections: n.sum(ServerStat::ServerConnections),
        in_queue: n.sum(ServerStat::InQueue),
        out_queue: n.sum(ServerStat::OutQueue),
    }
}

fn pool_kind(p: &PoolRt) -> &'static str {
    if p.conf.is_sentinel() {
        "sentinel"
    } else if p.checked {
        "replicated"
    } else {
        "twemproxy"
    }
}

/// Whether the shard can take writes now, as `/readyz` judges it.
fn writable(st: &AdminState, s: &ShardRt) -> bool {
    let view = s.view();
    !s.is_ejected()
        && view
            .writable_primary()
            .is_some_and(|n| st.probes.health(n).up)
}

/// `GET /api/topology`.
pub async fn topology(State(st): St) -> Json<Topology> {
    let shared = &st.shared;
    let m = &shared.metrics;
    let pools = pools(shared)
        .iter()
        .map(|p| {
            let sum = |s| m.pool_sum(p.index, s);
            PoolJson {
                name: p.conf.name.clone(),
                listen: p.conf.listen.to_string(),
                kind: pool_kind(p),
                read_policy: p.conf.read_policy.to_string(),
                client_connections: sum(PoolStat::ClientConnections),
                client_eof: sum(PoolStat::ClientEof),
                client_err: sum(PoolStat::ClientErr),
                forward_error: sum(PoolStat::ForwardError),
                server_ejects: sum(PoolStat::ServerEjects),
                fragments: sum(PoolStat::Fragments),
                shards: p
                    .shards
                    .iter()
                    .map(|s| {
                        let view = s.view();
                        ShardJson {
                            name: s.name.clone(),
                            primary: view
                                .primary
                                .and_then(|i| view.nodes.get(i))
                                .map(|n| n.label.clone()),
                            writable: writable(&st, s),
                            ejected: s.is_ejected(),
                            switching: s.is_switching(),
                            switch_state: s
                                .switch_state
                                .lock()
                                .map(|x| x.clone())
                                .unwrap_or_default(),
                            nodes: view
                                .nodes
                                .iter()
                                .enumerate()
                                .map(|(i, n)| {
                                    node_json(n, view.primary == Some(i), st.probes.health(n))
                                })
                                .collect(),
                        }
                    })
                    .collect(),
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
            .map(|(name, calls, sum_us, buckets)| CommandJson {
                name,
                calls,
                sum_us,
                buckets,
            })
            .collect(),
        pools,
        events: crate::observe::events::recent(),
    })
}

/// `GET /api/events`: the recent events, oldest first.
pub async fn events() -> Json<Vec<crate::observe::events::Event>> {
    Json(crate::observe::events::recent())
}

/// `GET /readyz`: 200 when every shard of every pool has a writable primary, else 503 with
/// one line per shard that lacks one.
pub async fn readyz(State(st): St) -> Response {
    let mut missing = Vec::new();
    for p in pools(&st.shared).iter() {
        for s in &p.shards {
            if !writable(&st, s) {
                let why = if s.is_ejected() {
                    "ejected from the ring"
                } else {
                    "no healthy primary"
                };
                missing.push(format!("{}/{}: {why}", p.conf.name, s.name));
            }
        }
    }
    if missing.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
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
pub struct MaintenanceReq {
    pool: String,
    /// Optional: the node label is searched in every shard of the pool when absent.
    shard: Option<String>,
    node: String,
    on: bool,
}

/// `POST /api/nodes/maintenance`: drain a node (no new requests; the ones in flight finish)
/// or bring it back.
pub async fn maintenance(
    State(st): St,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    {
        authorize(&st, &headers)?;
        let req: MaintenanceReq = parse(&body)?;
        let pool = find_pool(&st, &req.pool)?;
        let shards: Vec<&ShardRt> = match &req.shard {
            Some(s) => vec![&pool.shards[find_shard(&pool, s)?]],
            None => pool.shards.iter().collect(),
        };
        for s in shards {
            if let Some(n) = s.view().nodes.iter().find(|n| n.label == req.node) {
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
pub struct SwitchoverReq {
    pool: String,
    shard: String,
    /// Label of the replica to promote; the best healthy one when absent.
    target: Option<String>,
}

/// `POST /api/shards/switchover`: start a planned switchover and answer 202 at once; progress
/// is at `GET /api/shards/switchover?pool=&shard=`.
pub async fn switchover(
    State(st): St,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    {
        authorize(&st, &headers)?;
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
pub struct ReloadReq {
    /// Apply even when keys would move to other shards.
    #[serde(default)]
    force: bool,
}

/// `POST /api/reload[?force=true]`: read the configuration file again and apply it. The body
/// may be empty or `{"force": true}`.
pub async fn reload(
    State(st): St,
    headers: HeaderMap,
    Query(q): Query<ReloadQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&st, &headers)?;
    let req: ReloadReq = if body.iter().all(u8::is_ascii_whitespace) {
        ReloadReq::default()
    } else {
        parse(&body)?
    };
    Ok(
        match crate::control::reload::reload(&st.shared, &st.control, q.force || req.force).await {
            Ok(msg) => Json(serde_json::json!({ "ok": true, "message": msg })).into_response(),
            Err(e) => error(StatusCode::CONFLICT, e).into_response(),
        },
    )
}
