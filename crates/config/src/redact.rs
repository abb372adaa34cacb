//! The last guard between a refused file and its message: no value of a secret key reaches
//! an error.
//!
//! Most problems name a key without its value, and those about a secret key never carry one.
//! But a message can still quote text of the file: an address hint quotes what was written at
//! the error's position, a user's rule is quoted when it is malformed, and a YAML alias
//! (`timeout: *pw`) can carry a password's text under another key. So, once a file is
//! refused, the values written under the secret keys are read from its text line by line
//! (the file may not even be YAML) and each one found in the message, as a whole word, is
//! replaced by `(redacted)`.
//!
//! Secret keys: `redis_auth`, `sentinel_password`, and a user's `password` and
//! `password_sha256`; in a user's `rules`, the text after `>`, `<`, `#` and `!` (passwords and
//! their hashes, in Redis' ACL syntax).

/// Keys whose values are secrets.
const SECRET_KEYS: &[&str] = &[
    "redis_auth",
    "sentinel_password",
    "password",
    "password_sha256",
];

/// What a redacted value reads as, as SLOWLOG and MONITOR show a hidden argument.
pub(crate) const REDACTED: &str = "(redacted)";

/// The secret values written in `text`, each at least one character long.
pub(crate) fn secrets_in(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        for key in SECRET_KEYS.iter().chain(["rules"].iter()) {
            for value in values_of(line, key) {
                let value = if value.starts_with('|') || value.starts_with('>') {
                    block_after(&lines, i)
                } else {
                    value
                };
                if *key == "rules" {
                    found.extend(
                        unquote(value.trim())
                            .split_whitespace()
                            .filter_map(|r| r.strip_prefix(['>', '<', '#', '!']))
                            .map(|r| unquote(r).to_string()),
                    );
                } else {
                    add_forms(&mut found, &value);
                }
            }
        }
    }
    found.retain(|s| !s.is_empty());
    found.sort();
    found.dedup();
    found
}

/// The value text after every `key:` of `line` (block or flow style), up to the end of the
/// line, a comment, or the end of a flow entry.
fn values_of(line: &str, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = line[from..].find(key).map(|i| i + from) {
        from = at + key.len();
        let before = line[..at].trim_end_matches([' ', '\t', '"', '\'']);
        let starts_entry = before.is_empty() || before.ends_with(['-', '{', ',', '?']);
        let rest = line[from..].trim_start_matches(['"', '\'']);
        let Some(value) = rest.strip_prefix(':') else {
            continue;
        };
        if !starts_entry || !(value.is_empty() || value.starts_with([' ', '\t'])) {
            continue;
        }
        let value = value.trim();
        let value = match value.chars().next() {
            // A comment starts only after the closing quote.
            Some(q @ ('"' | '\'')) => match value[1..].find(q) {
                Some(end) => &value[..end + 2],
                None => value,
            },
            _ => value.split(" #").next().unwrap_or(value),
        };
        let in_flow = before.ends_with(['{', ',']);
        let value = if in_flow {
            value.split([',', '}']).next().unwrap_or(value)
        } else {
            value
        };
        out.push(value.trim().to_string());
    }
    out
}

/// The lines of a block scalar that starts after line `i`, joined with spaces.
fn block_after(lines: &[&str], i: usize) -> String {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let Some(head) = lines.get(i) else {
        return String::new();
    };
    let base = indent(head);
    lines[i + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || indent(l) > base)
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The value as written and as YAML may read it: without a tag or an anchor, quotes,
/// brackets; each item of it too when it is a flow list or mapping.
fn add_forms(found: &mut Vec<String>, written: &str) {
    let mut v = written.trim();
    while let Some(rest) = v.strip_prefix(['&', '!']) {
        v = rest.split_once([' ', '\t']).map_or("", |(_, r)| r).trim();
    }
    found.push(v.to_string());
    let bare = unquote(v.trim_matches(['[', ']', '{', '}']).trim());
    found.push(bare.to_string());
    if v.starts_with(['[', '{']) {
        for word in bare.split([' ', ',', '\t']) {
            found.push(unquote(word.trim_matches(['[', ']', '{', '}', ':'])).to_string());
        }
    }
}

/// Without the quotes around it (or an unterminated opening one).
fn unquote(v: &str) -> &str {
    let v = v.strip_prefix(['"', '\'']).unwrap_or(v);
    v.strip_suffix(['"', '\'']).unwrap_or(v)
}

/// `message` with every whole-word occurrence of a secret replaced by [`REDACTED`]; `None`
/// when it holds none. A word's neighbours are characters that are not letters or digits, or
/// the ends of the message.
pub(crate) fn scrub(message: &str, secrets: &[String]) -> Option<String> {
    let mut out = message.to_string();
    let mut changed = false;
    // Longest first, so that a secret inside another is not cut out of it first.
    let mut by_length: Vec<&String> = secrets.iter().collect();
    by_length.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for secret in by_length {
        let mut from = 0;
        while let Some(at) = out[from..].find(secret.as_str()).map(|i| i + from) {
            let end = at + secret.len();
            let alnum_before = out[..at]
                .chars()
                .next_back()
                .is_some_and(char::is_alphanumeric);
            let alnum_after = out[end..].chars().next().is_some_and(char::is_alphanumeric);
            if alnum_before || alnum_after {
                from = end;
                continue;
            }
            out.replace_range(at..end, REDACTED);
            from = at + REDACTED.len();
            changed = true;
        }
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_values_of_secret_keys_are_found_however_they_are_written() {
        let text = "p:\n  redis_auth: \"s1-a\" # note\n  sentinel_password: &pw s2-b\n  timeout: *pw\n  users:\n    - {name: a, password_sha256: s3-c}\n    - name: b\n      password: [s4-d]\n      rules: \"+@all >s5-e #s6-f ~*\"\n  redis_auth: |\n    s7-g\n  x: 1\n  redis_auth: 'unterminated s8-h\n";
        let found = secrets_in(text);
        for s in [
            "s1-a",
            "s2-b",
            "s3-c",
            "s4-d",
            "s5-e",
            "s6-f",
            "s7-g",
            "unterminated s8-h",
        ] {
            assert!(found.iter().any(|f| f == s), "{s} not in {found:?}");
        }
        assert!(!found.iter().any(|f| f == "a" || f == "1" || f == "+@all"));
    }

    #[test]
    fn a_refusal_that_would_quote_a_secret_is_redacted_and_keeps_its_position() {
        let text = "p:\n  listen: 127.0.0.1:7000\n  redis_auth: &pw s3cr3t-z\n  timeout: *pw\n  servers:\n   - 127.0.0.1:6379:1\n";
        let e = crate::parse(text, "f.yml").err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("f.yml:4:12: pool \"p\": timeout: \"(redacted)\" is not a duration (integer milliseconds, or e.g. \"1s 500ms\")")
        );
        // A refusal that shows no secret is left as it is.
        let text = "p:\n  listen: 127.0.0.1:7000\n  redis_auth: s3cr3t-z\n  timeout: soon\n  servers:\n   - 127.0.0.1:6379:1\n";
        let e = crate::parse(text, "f.yml").err();
        assert!(matches!(
            e.as_ref().and_then(|e| e.problem()),
            Some(crate::Problem::BadDuration { .. })
        ));
    }

    #[test]
    fn only_whole_words_are_redacted() {
        let secrets = vec!["pw".to_string(), "s1".to_string()];
        assert_eq!(
            scrub("timeout: \"pw\" is not a duration", &secrets).as_deref(),
            Some("timeout: \"(redacted)\" is not a duration")
        );
        assert_eq!(scrub("s1x and xs1 and pwd", &secrets), None);
        assert_eq!(
            scrub("modifier '#s1': bad", &secrets).as_deref(),
            Some("modifier '#(redacted)': bad")
        );
    }
}
