//! High availability: active health checks ([`health`]), the Sentinel follower
//! ([`sentinel`]), planned switchovers ([`switchover`]), and the control plane's own small
//! Redis client they share ([`link`]).

pub mod health;
pub mod link;
pub mod sentinel;
pub mod switchover;
