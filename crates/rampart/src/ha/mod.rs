//! High availability: active health checks ([`health`]), the Sentinel follower
//! ([`sentinel`]), planned switchovers ([`switchover`]), replication lag from offsets
//! ([`lag`]), the checks that close an open circuit of a cache pool that fails open
//! ([`circuit`]), replaying write spools ([`replay`]), and the control plane's own small
//! Redis client they share ([`link`]), the Redis Cluster follower ([`cluster`]) with
//! the map it reads ([`cluster_map`]), and a primary that changed outside rampart in a pool
//! without Sentinel ([`roles`]).

pub mod circuit;
pub mod cluster;
pub mod cluster_map;
pub mod health;
pub mod lag;
pub mod link;
pub mod replay;
pub mod roles;
pub mod sentinel;
pub mod switchover;
