//! What rampart records about itself: statistics ([`stats`]), state changes ([`events`]),
//! slow requests ([`slowlog`]), its client sessions ([`clients`]) and the command stream
//! `MONITOR` shows ([`monitor`]), the credentials servers and Sentinels refused to rampart
//! ([`refused`]), and the rate of the log lines clients can cause ([`loglines`]). Workers
//! write their own cells; readers sum them.

pub mod clients;
pub mod events;
pub mod loglines;
pub mod monitor;
pub mod refused;
pub mod slowlog;
pub mod stats;
