//! Key distribution: which server of a pool a key hash lands on.
//!
//! ```text
//!   ketama                          modula                 random
//!   0 ──●──●────●──●───●──● 2^32    hash % total_weight    any live server
//!       s1 s0   s2 s1  s0 s2        [s0 s0 s1 s2 s2 s2]
//!   a hash goes to the first point  servers repeated by    (hash ignored)
//!   at or after it (wrapping)       weight, in pool order
//! ```
//!
//! Only live servers get points, so a [`Continuum`] is rebuilt whenever liveness changes,
//! as twemproxy does after an ejection. Indices returned by [`Continuum::dispatch`] always
//! point into the full server list given to [`Continuum::build`].

use std::cell::Cell;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::str::FromStr;

use crate::hash::md5_digest;
use crate::ParseNameError;

/// How a pool spreads keys over its servers (`distribution:` in `nutcracker.yml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Distribution {
    /// Consistent hashing on an MD5 ring with 160 points per server at weight parity.
    Ketama,
    /// `hash % total_weight` over the servers repeated by weight.
    Modula,
    /// A random live server for every key.
    Random,
}

impl Distribution {
    /// The name used in `nutcracker.yml`.
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Ketama => "ketama",
            Distribution::Modula => "modula",
            Distribution::Random => "random",
        }
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Distribution {
    type Err = ParseNameError;

    /// Parses `ketama`, `modula` or `random`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Distribution::Ketama,
            Distribution::Modula,
            Distribution::Random,
        ]
        .into_iter()
        .find(|d| d.name() == s)
        .ok_or_else(|| ParseNameError::Distribution(s.to_owned()))
    }
}

/// One server as the distribution sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerPoint {
    /// The bytes hashed onto the ketama ring; build it with [`ring_identity`].
    pub identity: Vec<u8>,
    /// The configured weight (twemproxy requires >= 1; 0 gets no share of keys).
    pub weight: u32,
}

/// The identity twemproxy hashes onto the ring for one server.
///
/// `host_port_text` is the server line as written, without `:weight` and without the name:
/// `"10.0.0.1:6379"`, `"cache-a.example:6380"`, or a unix socket path `"/run/redis.sock"`.
/// The rule (from twemproxy's config parser):
/// - a configured name wins: `"10.0.0.1:6379:1 shard-a"` -> `shard-a`;
/// - else port 11211 is left out for libmemcached compatibility: `"10.0.0.1"`;
/// - else the text as written, port included: `"10.0.0.1:6379"` (a port written `06379` stays so);
/// - a unix socket (text starting with `/`) keeps a trailing `:`: `"/run/redis.sock:"`.
pub fn ring_identity(host_port_text: &str, port: u16, name: Option<&str>) -> Vec<u8> {
    if let Some(name) = name {
        return name.as_bytes().to_vec();
    }
    if host_port_text.starts_with('/') {
        let mut id = host_port_text.as_bytes().to_vec();
        id.push(b':');
        return id;
    }
    if port == 11211 {
        if let Some((host, _)) = host_port_text.rsplit_once(':') {
            return host.as_bytes().to_vec();
        }
    }
    host_port_text.as_bytes().to_vec()
}

/// The order twemproxy keeps a pool's servers in: sorted by identity, shorter identities first,
/// equal lengths bytewise. (Its config check for duplicate names sorts the server list in place,
/// and the pool is built from the sorted list.) This order decides modula and random slots and
/// ketama ties; it is returned as indices into `servers`.
pub fn pool_order(servers: &[ServerPoint]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..servers.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&servers[a].identity, &servers[b].identity);
        x.len().cmp(&y.len()).then_with(|| x.cmp(y))
    });
    order
}

/// twemproxy's points per server at weight parity.
const KETAMA_POINTS_PER_SERVER: u32 = 160;
/// twemproxy formats `"<identity>-<n>"` into a 273-byte buffer, so at most 272 bytes are hashed.
const KETAMA_MAX_HOST: usize = 272;

/// The ring (or table) of one pool, built once per liveness change, read on every key.
#[derive(Debug, Clone)]
pub struct Continuum {
    ring: Ring,
    /// twemproxy skips hashing entirely when a pool has a single server.
    single: bool,
}

#[derive(Debug, Clone)]
enum Ring {
    /// (point, server index), sorted by point; equal points keep server order.
    Ketama(Vec<(u32, usize)>),
    /// (cumulative weight end, server index) over live servers, and the total weight.
    Modula(Vec<(u64, usize)>, u64),
    /// Live server indices.
    Random(Vec<usize>),
}

impl Continuum {
    /// Build the ring over the servers that are live (`live[i]`), like twemproxy rebuilds it
    /// after ejections. An index past the end of `live` counts as live, so `&[]` means all.
    pub fn build(dist: Distribution, servers: &[ServerPoint], live: &[bool]) -> Continuum {
        let is_live = |i: usize| live.get(i).copied().unwrap_or(true);
        let order = pool_order(servers);
        let alive = || {
            order
                .iter()
                .filter(move |&&i| is_live(i))
                .filter_map(|&i| Some((i, servers.get(i)?)))
        };
        let ring = match dist {
            Distribution::Ketama => Ring::Ketama(ketama_points(alive().collect())),
            Distribution::Modula => {
                let mut total = 0u64;
                let mut ends = Vec::new();
                for (i, s) in alive().filter(|(_, s)| s.weight > 0) {
                    total += u64::from(s.weight);
                    ends.push((total, i));
                }
                Ring::Modula(ends, total)
            }
            Distribution::Random => Ring::Random(alive().map(|(i, _)| i).collect()),
        };
        let single = servers.len() == 1 && is_live(0);
        Continuum { ring, single }
    }

    /// Server index (into the `servers` slice) for a key hash; None when no server is live.
    ///
    /// For [`Distribution::Random`] the hash is ignored and a live server is drawn from a
    /// per-thread generator (no lock, not cryptographic).
    pub fn dispatch(&self, hash: u32) -> Option<usize> {
        if self.single {
            return Some(0);
        }
        match &self.ring {
            Ring::Ketama(points) => {
                let at = points.partition_point(|&(p, _)| p < hash);
                points.get(at).or_else(|| points.first()).map(|&(_, i)| i)
            }
            Ring::Modula(ends, total) => {
                if *total == 0 {
                    return None;
                }
                let slot = u64::from(hash) % total;
                let at = ends.partition_point(|&(end, _)| end <= slot);
                ends.get(at).map(|&(_, i)| i)
            }
            Ring::Random(live) => {
                if live.is_empty() {
                    return None;
                }
                let pick = (next_random() % live.len() as u64) as usize;
                live.get(pick).copied()
            }
        }
    }

    /// How many ring points (ketama), table slots (modula: its weight) or draws (random: 1)
    /// server `index` has; 0 for a dead or unknown server.
    pub fn point_count(&self, index: usize) -> usize {
        match &self.ring {
            Ring::Ketama(points) => points.iter().filter(|&&(_, i)| i == index).count(),
            Ring::Modula(ends, _) => {
                let mut prev = 0;
                let mut n = 0;
                for &(end, i) in ends {
                    if i == index {
                        n = end - prev;
                    }
                    prev = end;
                }
                usize::try_from(n).unwrap_or(usize::MAX)
            }
            Ring::Random(live) => usize::from(live.contains(&index)),
        }
    }
}

/// Points per server, computed as twemproxy 0.5.0 does on x86-64: single-precision float
/// throughout, except one double-precision addition of 1e-10 that cannot rescue the rounding
/// loss. So 25 or 100 equal servers get 156 points each, not 160.
fn ketama_points_for(weight: u32, total_weight: u32, nlive: u32) -> u32 {
    let pct = weight as f32 / total_weight as f32;
    let per = pct * KETAMA_POINTS_PER_SERVER as f32 / 4.0 * nlive as f32;
    let per = (f64::from(per) + 0.000_000_000_1) as f32;
    // `as u32` saturates (NaN -> 0) where C would be undefined; only reachable with weight 0.
    (per.floor() * 4.0) as u32
}

fn ketama_points(live: Vec<(usize, &ServerPoint)>) -> Vec<(u32, usize)> {
    let nlive = live.len() as u32;
    // C sums the weights in a uint32_t.
    let total = live.iter().fold(0u32, |t, (_, s)| t.wrapping_add(s.weight));
    let mut points = Vec::new();
    let mut host = Vec::with_capacity(KETAMA_MAX_HOST + 16);
    for (index, server) in live {
        // `%.*s` stops at a NUL byte.
        let ident = server
            .identity
            .split(|&b| b == 0)
            .next()
            .unwrap_or_default();
        let per_server = ketama_points_for(server.weight, total, nlive);
        for group in 0..per_server / 4 {
            host.clear();
            host.extend_from_slice(ident);
            host.push(b'-');
            host.extend_from_slice(group.to_string().as_bytes());
            host.truncate(KETAMA_MAX_HOST);
            let digest = md5_digest(&host);
            for word in digest.chunks_exact(4) {
                let point = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
                points.push((point, index));
            }
        }
    }
    // Stable, like glibc's merge-sort qsort: on equal points the earlier server comes first.
    points.sort_by_key(|&(p, _)| p);
    points
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(RandomState::new().hash_one(0x5eed_u64) | 1);
}

/// xorshift64* on a per-thread state.
fn next_random() -> u64 {
    RNG.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 16
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn equal_servers(n: usize) -> Vec<ServerPoint> {
        (0..n)
            .map(|i| ServerPoint {
                identity: format!("10.0.0.{i}:6379").into_bytes(),
                weight: 1,
            })
            .collect()
    }

    #[test]
    fn names_round_trip() {
        for d in [
            Distribution::Ketama,
            Distribution::Modula,
            Distribution::Random,
        ] {
            assert_eq!(d.to_string().parse::<Distribution>(), Ok(d));
        }
        assert!("consistent".parse::<Distribution>().is_err());
    }

    #[test]
    fn identity_rules() {
        assert_eq!(ring_identity("10.0.0.1:6379", 6379, None), b"10.0.0.1:6379");
        assert_eq!(
            ring_identity("10.0.0.1:06379", 6379, None),
            b"10.0.0.1:06379"
        );
        assert_eq!(ring_identity("10.0.0.1:11211", 11211, None), b"10.0.0.1");
        assert_eq!(ring_identity("10.0.0.1:6379", 6379, Some("a")), b"a");
        assert_eq!(ring_identity("/run/r.sock", 0, None), b"/run/r.sock:");
    }

    #[test]
    fn ketama_point_counts_lose_to_float_rounding() {
        let expect = [
            (1, 160),
            (2, 160),
            (3, 160),
            (10, 160),
            (25, 156),
            (100, 156),
        ];
        for (n, per) in expect {
            let ring = Continuum::build(Distribution::Ketama, &equal_servers(n), &[]);
            for i in 0..n {
                assert_eq!(ring.point_count(i), per, "{n} servers, server {i}");
            }
        }
        assert_eq!(ketama_points_for(1, 25, 25), 156);
        assert_eq!(ketama_points_for(1, 100, 100), 156);
    }

    #[test]
    fn ketama_points_follow_weight() {
        // pct 0.1 / 0.2 / 0.3 / 0.4 of 160 * 4 points, in float.
        let mut servers = equal_servers(4);
        for (s, w) in servers.iter_mut().zip([1, 2, 3, 4]) {
            s.weight = w;
        }
        let ring = Continuum::build(Distribution::Ketama, &servers, &[]);
        let counts: Vec<usize> = (0..4).map(|i| ring.point_count(i)).collect();
        assert_eq!(counts, [64, 128, 192, 256]);
    }

    #[test]
    fn ketama_dispatch_takes_next_point_and_wraps() {
        let ring = Continuum::build(Distribution::Ketama, &equal_servers(3), &[]);
        let Ring::Ketama(points) = &ring.ring else {
            panic!("not ketama")
        };
        assert_eq!(points.len(), 480);
        assert!(points.windows(2).all(|w| w[0].0 <= w[1].0));
        let ((prev, prev_i), (p, i)) = (points[9], points[10]);
        assert!(prev < p);
        // Everything in (prev, p] belongs to the server owning p.
        assert_eq!(ring.dispatch(p), Some(i));
        assert_eq!(ring.dispatch(prev + 1), Some(i));
        assert_eq!(ring.dispatch(prev), Some(prev_i));
        let (last, _) = points[points.len() - 1];
        if last < u32::MAX {
            assert_eq!(ring.dispatch(last + 1), Some(points[0].1));
        }
        assert_eq!(ring.dispatch(0), Some(points[0].1));
    }

    #[test]
    fn ejection_rebuilds_over_live_servers_only() {
        let servers = equal_servers(4);
        let all = Continuum::build(Distribution::Ketama, &servers, &[]);
        let three = Continuum::build(Distribution::Ketama, &servers, &[true, false, true, true]);
        assert_eq!(three.point_count(1), 0);
        for h in (0..u32::MAX).step_by(9_999_991) {
            let before = all.dispatch(h);
            let after = three.dispatch(h);
            assert_ne!(after, Some(1));
            // Consistent hashing: only keys of the ejected server move.
            if before != Some(1) {
                assert_eq!(after, before, "hash {h}");
            }
        }
        let none = Continuum::build(Distribution::Ketama, &servers, &[false; 4]);
        assert_eq!(none.dispatch(7), None);
    }

    #[test]
    fn modula_repeats_servers_by_weight() {
        let mut servers = equal_servers(3);
        servers[1].weight = 2;
        let ring = Continuum::build(Distribution::Modula, &servers, &[]);
        let got: Vec<_> = (0..8).map(|h| ring.dispatch(h)).collect();
        let want = [0, 1, 1, 2, 0, 1, 1, 2].map(Some);
        assert_eq!(got, want);
        assert_eq!(ring.point_count(1), 2);
        let live = Continuum::build(Distribution::Modula, &servers, &[false, true, true]);
        let got: Vec<_> = (0..3).map(|h| live.dispatch(h)).collect();
        assert_eq!(got, [1, 1, 2].map(Some));
        let dead = Continuum::build(Distribution::Modula, &servers, &[false; 3]);
        assert_eq!(dead.dispatch(1), None);
    }

    #[test]
    fn pool_order_is_by_length_then_bytes() {
        let named: Vec<ServerPoint> = ["alpha", "beta", "gamma", "delta"]
            .iter()
            .map(|n| ServerPoint {
                identity: n.as_bytes().to_vec(),
                weight: 1,
            })
            .collect();
        assert_eq!(pool_order(&named), [1, 0, 3, 2]);
        // Modula slots follow that order, not the config order.
        let ring = Continuum::build(Distribution::Modula, &named, &[]);
        let got: Vec<_> = (0..4).map(|h| ring.dispatch(h)).collect();
        assert_eq!(got, [1, 0, 3, 2].map(Some));
    }

    #[test]
    fn random_picks_only_live_servers() {
        let servers = equal_servers(4);
        let ring = Continuum::build(Distribution::Random, &servers, &[true, false, true, false]);
        let mut seen = [0usize; 4];
        for _ in 0..400 {
            let i = ring.dispatch(0).unwrap();
            seen[i] += 1;
        }
        assert_eq!((seen[1], seen[3]), (0, 0));
        assert!(seen[0] > 100 && seen[2] > 100, "{seen:?}");
        let dead = Continuum::build(Distribution::Random, &servers, &[false; 4]);
        assert_eq!(dead.dispatch(0), None);
    }

    #[test]
    fn single_server_pool_skips_dispatch() {
        let one = equal_servers(1);
        for d in [
            Distribution::Ketama,
            Distribution::Modula,
            Distribution::Random,
        ] {
            assert_eq!(Continuum::build(d, &one, &[]).dispatch(12345), Some(0));
            assert_eq!(Continuum::build(d, &one, &[false]).dispatch(12345), None);
        }
    }

    #[test]
    fn long_identity_is_cut_at_272_bytes() {
        let long = |tail: &str| ServerPoint {
            identity: format!("{}{tail}", "h".repeat(300)).into_bytes(),
            weight: 1,
        };
        let a = Continuum::build(Distribution::Ketama, &[long("a"), long("x")], &[]);
        // Both identities share their first 272 bytes, so all their points coincide and the
        // stable sort gives every tie to server 0.
        assert_eq!(a.point_count(0), 160);
        for h in (0..u32::MAX).step_by(99_999_989) {
            assert_eq!(a.dispatch(h), Some(0));
        }
    }
}
