//! One client: the read loop and ordered write-back ([`client`]), what each request becomes
//! ([`dispatch`]: a local answer, a forward by key, a split over shards, a broadcast), the
//! commands rampart answers itself ([`local`]; those about the connection itself in
//! [`conn`]), `CLIENT PAUSE` ([`pause`]), COMMAND's replies in RESP3 types ([`resp3`]), a
//! transaction queued between MULTI and EXEC ([`transaction`]), WATCH on a connection of its
//! own ([`watch`]), blocking commands on connections of their own ([`blocking`]), how both
//! reach the shard's primary, waiting through a failover ([`primary`]), and a session's
//! subscriptions and the Pub/Sub commands ([`pubsub`]), the CLUSTER commands, as a server
//! without cluster support or as the pool's cluster view ([`clusterview`]), users at the
//! proxy and the ACL command ([`acl`]), and the failed-AUTH back-off ([`backoff`]).

pub mod acl;
pub mod backoff;
pub mod blocking;
pub mod client;
pub mod clusterview;
pub mod conn;
pub mod dispatch;
pub mod local;
pub mod pause;
pub mod primary;
pub mod pubsub;
pub mod resp3;
pub mod transaction;
pub mod watch;
