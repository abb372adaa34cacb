//! `POST /api/faults`, `GET /api/faults`, `DELETE /api/faults/{id}`: faults injected into
//! live traffic ([`crate::upstream::fault`]) to rehearse failures. Adding and deleting are
//! changing calls (token, JSON, no foreign `Origin`, as every other one).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{pools, AdminState, ApiError};
use crate::upstream::fault::{self, Delay, Fault, Kind, Spec};

type St = State<Arc<AdminState>>;

/// Body of `POST /api/faults`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultReq {
    pool: String,
    shard: Option<String>,
    /// A node's address or label.
    node: Option<String>,
    command: Option<String>,
    /// `delay`, `error`, `blackhole` or `reset`.
    kind: String,
    /// For `delay`: milliseconds added to each reply (the least of a `uniform` delay, the
    /// mean of a `normal` or `exponential` one).
    delay_ms: Option<u64>,
    /// For `delay`: `fixed`, `uniform`, `normal` or `exponential`; `uniform` when
    /// `jitter_ms` is given, else `fixed`.
    distribution: Option<String>,
    /// For a `uniform` delay: up to this many milliseconds more, drawn per request.
    jitter_ms: Option<u64>,
    /// For a `normal` delay: the standard deviation, milliseconds.
    stddev_ms: Option<u64>,
    /// For `error`: the error reply without its `-` (`ERR injected`).
    error: Option<String>,
    /// Share of the matching requests, `(0, 1]`; 1 when absent.
    share: Option<f64>,
    /// `true`: every matching request (the same as `share: 1`).
    all: Option<bool>,
    /// How long it lasts, seconds; required, at most 3600.
    duration_s: u64,
}

/// One fault as the API shows it.
#[derive(Debug, Serialize)]
pub struct FaultJson {
    id: u64,
    pool: String,
    shard: Option<String>,
    node: Option<String>,
    command: Option<String>,
    kind: &'static str,
    delay_ms: Option<u64>,
    distribution: Option<&'static str>,
    jitter_ms: Option<u64>,
    stddev_ms: Option<u64>,
    error: Option<String>,
    share: f64,
    duration_s: u64,
    /// Unix time (s) it started.
    started: u64,
    /// Until it ends by itself.
    remaining_ms: u64,
    /// Requests it applied to so far.
    hits: u64,
}

/// The JSON of `f`.
pub fn json(f: &Fault) -> FaultJson {
    let s = &f.spec;
    FaultJson {
        id: f.id,
        pool: s.pool.clone(),
        shard: s.shard.clone(),
        node: s.node.clone(),
        command: s.command.clone(),
        kind: s.kind.name(),
        delay_ms: match &s.kind {
            Kind::Delay(d) => Some(d.base().as_millis() as u64),
            _ => None,
        },
        distribution: match &s.kind {
            Kind::Delay(d) => Some(d.name()),
            _ => None,
        },
        jitter_ms: match s.kind {
            Kind::Delay(Delay::Uniform { jitter, .. }) => Some(jitter.as_millis() as u64),
            Kind::Delay(Delay::Fixed(_)) => Some(0),
            _ => None,
        },
        stddev_ms: match s.kind {
            Kind::Delay(Delay::Normal { stddev, .. }) => Some(stddev.as_millis() as u64),
            _ => None,
        },
        error: match &s.kind {
            Kind::Error(t) => Some(t.clone()),
            _ => None,
        },
        share: s.share,
        duration_s: s.duration.as_secs(),
        started: f.started_unix,
        remaining_ms: f.remaining().as_millis() as u64,
        hits: f.hits(),
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, msg)
}

/// Check `req` against the running topology and turn it into a [`Spec`].
fn spec(st: &AdminState, req: FaultReq) -> Result<Spec, ApiError> {
    let all = pools(&st.shared);
    let pool = all
        .iter()
        .find(|p| p.conf.name == req.pool)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no pool '{}'", req.pool)))?;
    let shards: Vec<_> = match &req.shard {
        Some(name) => {
            let s = pool
                .shards
                .iter()
                .find(|s| &s.name == name)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::NOT_FOUND,
                        format!("no shard '{name}' in pool '{}'", req.pool),
                    )
                })?;
            vec![s]
        }
        None => pool.shards.iter().collect(),
    };
    if let Some(node) = &req.node {
        let known = shards.iter().any(|s| {
            s.view()
                .nodes
                .iter()
                .any(|n| &n.label == node || &n.addr.to_string() == node)
        });
        if !known {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no node '{node}' in pool '{}'", req.pool),
            ));
        }
    }
    let command = match req.command.as_deref() {
        Some(c) if rampart_commands::lookup(c.as_bytes()).is_none() => {
            return Err(bad(format!("unknown command '{c}'")));
        }
        c => c.map(|c| c.to_ascii_uppercase()),
    };
    if req.kind != "delay" {
        for (given, name) in [
            (req.jitter_ms.is_some(), "jitter_ms"),
            (req.stddev_ms.is_some(), "stddev_ms"),
            (req.distribution.is_some(), "distribution"),
        ] {
            if given {
                return Err(bad(format!("{name} only applies to a delay fault")));
            }
        }
    }
    let kind = match req.kind.as_str() {
        "delay" => Kind::Delay(delay(&req)?),
        "error" => Kind::Error(
            req.error
                .ok_or_else(|| bad("an error fault needs error (the reply's text)"))?,
        ),
        "blackhole" => Kind::Blackhole,
        "reset" => Kind::Reset,
        other => {
            return Err(bad(format!(
                "kind '{other}' is not one of delay, error, blackhole, reset"
            )))
        }
    };
    let share = match (req.share, req.all) {
        (Some(_), Some(true)) => return Err(bad("give share or all, not both")),
        (Some(s), _) => s,
        (None, _) => 1.0,
    };
    Ok(Spec {
        pool: req.pool,
        shard: req.shard,
        node: req.node,
        command,
        kind,
        share,
        duration: Duration::from_secs(req.duration_s),
    })
}

/// The delay of a `delay` fault: its distribution and parameters, each given only where it
/// applies.
fn delay(req: &FaultReq) -> Result<Delay, ApiError> {
    let ms = Duration::from_millis;
    let base = ms(req
        .delay_ms
        .ok_or_else(|| bad("a delay fault needs delay_ms"))?);
    let name = match (&req.distribution, req.jitter_ms) {
        (Some(d), _) => d.as_str(),
        (None, Some(_)) => "uniform",
        (None, None) => "fixed",
    };
    let only = |given: bool, field: &str, dist: &str| {
        if given && name != dist {
            Err(bad(format!("{field} only applies to distribution {dist}")))
        } else {
            Ok(())
        }
    };
    only(req.jitter_ms.is_some(), "jitter_ms", "uniform")?;
    only(req.stddev_ms.is_some(), "stddev_ms", "normal")?;
    Ok(match name {
        "fixed" => Delay::Fixed(base),
        "uniform" => Delay::Uniform {
            base,
            jitter: ms(req
                .jitter_ms
                .ok_or_else(|| bad("a uniform delay needs jitter_ms"))?),
        },
        "normal" => Delay::Normal {
            mean: base,
            stddev: ms(req
                .stddev_ms
                .ok_or_else(|| bad("a normal delay needs stddev_ms"))?),
        },
        "exponential" => Delay::Exponential { mean: base },
        other => {
            return Err(bad(format!(
                "distribution '{other}' is not one of fixed, uniform, normal, exponential"
            )))
        }
    })
}

/// `POST /api/faults`: add a fault; 201 with it (and its `id`).
pub async fn add(State(st): St, body: Bytes) -> Result<Response, ApiError> {
    let req: FaultReq =
        serde_json::from_slice(&body).map_err(|e| bad(format!("bad JSON body: {e}")))?;
    let spec = spec(&st, req)?;
    let f = fault::add(spec).map_err(|e| {
        let status = match e {
            fault::FaultError::TooMany => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.to_string())
    })?;
    fault::expire_later(&f);
    let j = json(&f);
    tracing::warn!(
        fault = f.id,
        pool = %j.pool,
        shard = j.shard.as_deref().unwrap_or("*"),
        node = j.node.as_deref().unwrap_or("*"),
        command = j.command.as_deref().unwrap_or("*"),
        "injected fault: {} for {} s, share {}",
        j.kind,
        j.duration_s,
        j.share
    );
    Ok((StatusCode::CREATED, Json(j)).into_response())
}

/// The faults active now.
#[derive(Debug, Serialize)]
pub struct FaultList {
    faults: Vec<FaultJson>,
}

/// `GET /api/faults`.
pub async fn list() -> Json<FaultList> {
    Json(FaultList {
        faults: fault::active().iter().map(|f| json(f)).collect(),
    })
}

/// `DELETE /api/faults/{id}`: end a fault now; 404 when none is active with that id.
pub async fn delete(Path(id): Path<u64>) -> Result<Response, ApiError> {
    if !fault::remove(id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no active fault {id}"),
        ));
    }
    tracing::warn!(fault = id, "injected fault removed");
    Ok(Json(serde_json::json!({ "id": id, "removed": true })).into_response())
}
