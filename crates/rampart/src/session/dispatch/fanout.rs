//! Requests split over shards or sent to every shard, their replies merged: MGET, MSET, DEL
//! and the other multi-key commands one sub-request per shard (per slot in a cluster pool),
//! keyless commands every shard answers ([`crate::reply::merge`] says how), and SCAN with one
//! cursor that walks the shards in turn.

use std::collections::HashMap;

use rampart_commands::{Command, Merge};
use resp::encode;

use super::Session;
use crate::observe::stats::PoolStat;
use crate::reply::merge::{scan_cursor_split, Merger};

impl Session {
    /// MGET, MSET, DEL, UNLINK, TOUCH, EXISTS: one sub-request per shard, merged in key order.
    pub(super) fn fan_out(
        &mut self,
        cmd: &Command,
        merge: Merge,
        argv: &[&[u8]],
        raw: Option<&[u8]>,
    ) {
        if !self.find_keys(cmd, argv) || !self.map_keys(argv) {
            return;
        }
        let Some(&first) = self.shards.first() else {
            return self.forward_keys(cmd, argv, raw);
        };
        if self.shards.iter().all(|&s| s == first) && !self.spans_slots(argv) {
            return self.forward_whole(first, argv, raw);
        }
        // Arguments that travel with each key: 1 for MGET/DEL, 2 (key value) for MSET.
        let span = match self.keys[..] {
            [a, b, ..] => b - a,
            _ => 1,
        };
        // One group per shard; in a cluster pool one per slot, since a node runs a
        // multi-key command only on keys of one slot.
        let rt = &self.pool.rt;
        // Groups in the order of their first key. A few are found by a scan (a sharded pool
        // has as many as it has shards, and no map to build per request); past
        // SCAN_GROUPS, by (shard, slot) in a map, since a cluster request may name
        // thousands of slots (a scan per key would cost keys x slots on the worker that
        // every other client of it waits for).
        const SCAN_GROUPS: usize = 16;
        let mut groups: Vec<(usize, Vec<u32>)> = Vec::new();
        let mut keyed: Vec<(usize, Option<u16>)> = Vec::new();
        let mut index: HashMap<(usize, Option<u16>), usize> = HashMap::new();
        for (i, &s) in self.shards.iter().enumerate() {
            let key = (
                s,
                rt.slot_of(argv.get(self.keys[i]).copied().unwrap_or_default()),
            );
            let found = if keyed.len() <= SCAN_GROUPS {
                keyed.iter().position(|k| *k == key)
            } else {
                if index.is_empty() {
                    index.extend(keyed.iter().enumerate().map(|(g, k)| (*k, g)));
                }
                index.get(&key).copied()
            };
            match found {
                Some(g) => groups[g].1.push(i as u32),
                None => {
                    if !index.is_empty() {
                        index.insert(key, groups.len());
                    }
                    keyed.push(key);
                    groups.push((s, vec![i as u32]));
                }
            }
        }
        // A write split over shards (MSET, DEL, UNLINK) goes to every shard or to none: a
        // shard that has no primary and cannot get one in time, or whose fail-open circuit
        // is open, would refuse its part after the others applied theirs.
        if self.write {
            let refused = groups
                .iter()
                .find_map(|&(s, _)| crate::session::primary::refused_now(rt, s));
            if let Some(f) = refused {
                return self.fail_now(f);
            }
        }
        let merger = match merge {
            Merge::Array => Merger::Array {
                total: self.keys.len(),
                positions: groups.iter().map(|g| g.1.clone()).collect(),
            },
            Merge::AllOk => Merger::AllOk,
            _ => Merger::Sum,
        };
        self.worker.stats.pools[self.pool.rt.index]
            .pool(PoolStat::Fragments)
            .add(groups.len() as i64);
        let seq = self.pending.push_gather(groups.len(), merger);
        let keys = std::mem::take(&mut self.keys);
        for (part, (shard, idx)) in groups.iter().enumerate() {
            let keys = &keys;
            self.send(*shard, seq, part as u32, |out| {
                encode::array_header(out, 1 + idx.len() * span);
                encode::bulk(out, argv[0]);
                for &i in idx {
                    let k = keys[i as usize];
                    for a in &argv[k..(k + span).min(argv.len())] {
                        encode::bulk(out, a);
                    }
                }
            });
        }
        self.keys = keys;
    }

    /// Keyless commands that every shard answers, merged.
    pub(super) fn all_shards(&mut self, merge: Merge, argv: &[&[u8]], raw: Option<&[u8]>) {
        if merge == Merge::Scan {
            return self.scan(argv);
        }
        let merger = match merge {
            Merge::Sum => Merger::Sum,
            Merge::Concat => Merger::Concat,
            Merge::RandomKey => Merger::RandomKey,
            Merge::Same => Merger::Same,
            Merge::And => Merger::And,
            Merge::First if argv[0].eq_ignore_ascii_case(b"config") => Merger::ConfigGet,
            Merge::First => Merger::First,
            Merge::AllOk => Merger::AllOk,
            Merge::Array | Merge::Scan => Merger::First,
        };
        self.broadcast(merger, argv, raw);
    }

    /// Send the request to every shard on the ring and merge the replies.
    pub fn broadcast(&mut self, merger: Merger, argv: &[&[u8]], raw: Option<&[u8]>) {
        let shards: Vec<usize> = (0..self.pool.rt.shards.len())
            .filter(|&s| !self.pool.rt.shards[s].is_ejected())
            .collect();
        if shards.is_empty() {
            if merger.keeps_going() {
                // INFO: every shard left out (each an error part), the rest answered.
                let none = bytes::Bytes::from_static(b"-ERR ejected\r\n");
                let parts = vec![none; self.pool.rt.shards.len()];
                return self.reply_raw(&merger.merge(parts));
            }
            return self.no_server();
        }
        let seq = self.pending.push_gather(shards.len(), merger);
        for (part, &s) in shards.iter().enumerate() {
            match raw {
                Some(r) => self.send_bytes(s, seq, part as u32, r),
                None => self.send(s, seq, part as u32, |out| encode::command(out, argv)),
            }
        }
    }

    /// SCAN with one cursor that walks the shards in turn.
    fn scan(&mut self, argv: &[&[u8]]) {
        let shards = self.pool.rt.shards.len() as u64;
        let cursor = std::str::from_utf8(argv[1])
            .ok()
            .and_then(|c| c.parse::<u64>().ok());
        let Some((inner, shard)) = cursor.map(|c| scan_cursor_split(c, shards)) else {
            return self.reply_error("ERR invalid cursor");
        };
        if shard >= shards {
            // No such shard (any more): the walk is over, as a server ends one at a
            // cursor past its table.
            return self.reply_raw(b"*2\r\n$1\r\n0\r\n*0\r\n");
        }
        let seq = self.pending.push_gather(1, Merger::Scan { shard, shards });
        let inner = inner.to_string();
        self.send(shard as usize, seq, 0, |out| {
            encode::array_header(out, argv.len());
            encode::bulk(out, argv[0]);
            encode::bulk(out, inner.as_bytes());
            for a in &argv[2..] {
                encode::bulk(out, a);
            }
        });
    }
}
