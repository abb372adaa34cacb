//! One client: the read loop and ordered write-back ([`client`]), what each request becomes
//! ([`dispatch`]: a local answer, a forward by key, a split over shards, a broadcast), and
//! the commands rampart answers itself ([`local`]), and blocking commands on connections of
//! their own ([`blocking`]).

pub mod blocking;
pub mod client;
pub mod dispatch;
pub mod local;
