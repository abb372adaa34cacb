//! Scalar values: booleans, durations and byte sizes, from the text written in the file.

use std::time::Duration;

use crate::addr::digits;

/// `true` / `false`, as twemproxy spells them (YAML's other spellings are refused so that a
/// file rampart accepts is one nutcracker accepts too).
pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// A duration: integer milliseconds (twemproxy) or a humantime string (`"1s 500ms"`, `"2m"`).
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    match digits(text) {
        Some(ms) => Some(Duration::from_millis(ms)),
        None if text.starts_with(|c: char| c.is_ascii_digit()) => {
            humantime::parse_duration(text).ok()
        }
        None => None,
    }
}

/// A size in bytes: an integer, optionally followed by a unit with Redis' meanings
/// (`k`/`m`/`g` are powers of 1000, `kb`/`mb`/`gb` and `kib`/`mib`/`gib` powers of 1024),
/// case-insensitive, with optional space: `1048576`, `"64mb"`, `"1 GiB"`.
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number = digits(number)?;
    let multiplier: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" => 1000,
        "kb" | "kib" => 1 << 10,
        "m" => 1_000_000,
        "mb" | "mib" => 1 << 20,
        "g" => 1_000_000_000,
        "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a typo.
pub(crate) fn closest(word: &str, candidates: &[&'static str]) -> Option<&'static str> {
    // A key this long is no typo of a known one; skip the quadratic comparison.
    if word.len() > 64 {
        return None;
    }
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance (with adjacent transpositions counted as one edit) between two words.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // rows[i][j] = distance between a[..i] and b[..j]
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bools_are_twemproxy_spellings_only() {
        assert_eq!(parse_bool("true"), Some(true));
        assert_eq!(parse_bool("false"), Some(false));
        for other in ["True", "yes", "1", "on", ""] {
            assert_eq!(parse_bool(other), None, "{other}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("400"), Some(Duration::from_millis(400)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(
            parse_duration("1s 500ms"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        for bad in ["-1", "fast", "", "1.5", "ms"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("64mb"), Some(64 << 20));
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("1 GB"), Some(1 << 30));
        assert_eq!(parse_size("2k"), Some(2000));
        assert_eq!(parse_size("3m"), Some(3_000_000));
        for bad in [
            "",
            "-1",
            "mb",
            "1.5mb",
            "12 parsecs",
            "99999999999999999999",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        assert_eq!(parse_size("99999999999gb"), None, "overflow is refused");
    }

    #[test]
    fn typo_hints() {
        let keys = ["hash", "hash_tag", "timeout", "servers", "listen"];
        assert_eq!(closest("hsah", &keys), Some("hash"));
        assert_eq!(closest("server", &keys), Some("servers"));
        assert_eq!(closest("timout", &keys), Some("timeout"));
        assert_eq!(closest("completely_else", &keys), None);
        assert_eq!(closest(&"hash".repeat(100), &keys), None);
    }
}
