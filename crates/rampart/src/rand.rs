//! A small, fast, non-cryptographic random source for jitter and random choices.
//!
//! Each thread has its own xorshift state seeded from the clock and the thread, so no lock or
//! shared atomic is touched.

use std::cell::Cell;

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    );
    h.finish() | 1
}

/// The next pseudo-random 64-bit value of this thread.
pub fn next_u64() -> u64 {
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

/// A value in `0..n` (`n` > 0).
pub fn below(n: u64) -> u64 {
    next_u64() % n.max(1)
}

/// A value in `(0, 1]`, uniformly (53 bits), never 0 so that its logarithm is finite.
pub fn unit() -> f64 {
    ((next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
}

/// `d` scaled by a random factor in [0.5, 1.5): spreads retries of many connections apart.
pub fn jitter(d: std::time::Duration) -> std::time::Duration {
    let ms = d.as_millis() as u64;
    std::time::Duration::from_millis(ms / 2 + below(ms.max(1)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn below_stays_in_range_and_varies() {
        let v: Vec<u64> = (0..1000).map(|_| super::below(7)).collect();
        assert!(v.iter().all(|&x| x < 7));
        assert!(
            (0..7).all(|i| v.contains(&i)),
            "every value in range shows up"
        );
    }

    #[test]
    fn jitter_is_within_half_and_one_and_a_half() {
        let d = std::time::Duration::from_millis(100);
        for _ in 0..1000 {
            let j = super::jitter(d).as_millis();
            assert!((50..150).contains(&j), "{j}");
        }
    }
}
