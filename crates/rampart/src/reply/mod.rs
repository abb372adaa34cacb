//! Replies on their way back to a client: the session's ordered reply queue ([`pending`]),
//! filled by backend connections, and how the parts of a split request are merged
//! ([`merge`]), and how rampart's own answers join a transaction's `EXEC` reply ([`merge::splice`]).
//! Sessions and backend connections meet here, so neither imports the other.

pub mod merge;
pub mod pending;
