//! One client: the read loop and ordered write-back ([`client`]), what each request becomes
//! ([`dispatch`]: a local answer, a forward by key, a split over shards, a broadcast),
//! the commands rampart answers itself ([`local`]), and a transaction queued between MULTI
//! and EXEC ([`transaction`]).

pub mod client;
pub mod dispatch;
pub mod local;
pub mod transaction;
