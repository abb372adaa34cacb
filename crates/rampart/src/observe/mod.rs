//! What rampart records about itself: statistics ([`stats`]), state changes ([`events`]),
//! slow requests ([`slowlog`]), its client sessions ([`clients`]) and the command stream
//! `MONITOR` shows ([`monitor`]), and the credentials servers and Sentinels refused to rampart
//! ([`refused`]). Workers write their own cells; readers sum them.

pub mod clients;
pub mod events;
pub mod monitor;
pub mod refused;
pub mod slowlog;
pub mod stats;
