//! What rampart records about itself: statistics ([`stats`]), state changes ([`events`]) and
//! slow requests ([`slowlog`]). Workers write their own cells; readers sum them.

pub mod events;
pub mod slowlog;
pub mod stats;
