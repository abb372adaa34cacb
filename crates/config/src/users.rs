//! A pool's users at the proxy (`users:`) and its command policy (`deny_commands:`,
//! `rename_commands:`, `allow_commands:`).
//!
//! ```yaml
//! users:
//!   - name: default
//!     nopass: true
//!     rules: "on +@read ~cache:*"
//!   - name: app
//!     password_sha256: 5e88...42d8      # as Redis' ACL `#<hash>`
//!     rules: "on +@read +@write -@dangerous ~cache:* &chan:*"
//!   - name: ops
//!     password_file: /run/secrets/ops   # or password_env: OPS_PASSWORD
//!     rules: "on +@all ~* &*"
//! deny_commands: [KEYS, FLUSHALL]
//! rename_commands: {CONFIG: "", FLUSHDB: FLUSHDB_8f2a}
//! allow_commands: [CONFIG SET]
//! ```
//!
//! Passwords are kept only as SHA-256 hashes: a file's or variable's password is hashed when
//! the configuration is read (again at each reload), and never kept in clear.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use rampart_commands::acl::{parse_hash, Rules};

use crate::error::{ConfigError, Problem};
use crate::pool::{Fields, Lookup};
use crate::raw::{Pos, RawEntry, RawValue};

/// The keys of one `users:` entry.
const USER_KEYS: &[&str] = &[
    "name",
    "password_sha256",
    "password_file",
    "password_env",
    "nopass",
    "rules",
    "password",
];

/// Longest password file read (a password, not a document).
const MAX_PASSWORD_FILE: u64 = 4096;

/// One user at the proxy: a name, the SHA-256 hashes of its passwords, and its rules.
///
/// `Debug` shows neither hashes nor where a password was read from.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// The name clients give to `AUTH` (`default`: the user a new connection is).
    pub name: String,
    /// SHA-256 of the password given by `password_sha256`, `password_file` or
    /// `password_env` (empty with `nopass`); `#<hash>` rules are in [`Rules::hashes`].
    pub hashes: Vec<[u8; 32]>,
    /// The user's rules in Redis ACL syntax, parsed (`nopass: true` sets `nopass`).
    pub rules: Rules,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl User {
    /// Whether `password` authenticates this user: the user is `on`, and `nopass` or the
    /// password's SHA-256 is one of the user's hashes (compared without stopping at the
    /// first differing byte).
    #[must_use]
    pub fn accepts(&self, password: &[u8]) -> bool {
        if !self.rules.enabled {
            return false;
        }
        if self.rules.nopass {
            return true;
        }
        let given = sha256(password);
        let mut ok = false;
        for h in self.hashes.iter().chain(&self.rules.hashes) {
            ok |= equal_ct(h, &given);
        }
        ok
    }

    /// Every password hash of the user (configuration keys, then `#<hash>` rules).
    pub fn all_hashes(&self) -> impl Iterator<Item = &[u8; 32]> {
        self.hashes.iter().chain(&self.rules.hashes)
    }
}

/// SHA-256 of `data`.
#[must_use]
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Equality of two hashes in time that does not depend on where they differ.
fn equal_ct(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A pool's command policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandPolicy {
    /// Commands answered as unknown (`deny_commands`), lowercase; `name` or `name|sub`.
    pub deny: Vec<String>,
    /// `rename_commands`: (original, new name), lowercase; an empty new name disables it.
    pub rename: Vec<(String, String)>,
    /// Dangerous commands allowed (`allow_commands`), lowercase; `name` or `name|sub`.
    pub allow: Vec<String>,
}

impl CommandPolicy {
    /// No command is denied, renamed or allowed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.deny.is_empty() && self.rename.is_empty() && self.allow.is_empty()
    }
}

/// Commands that change a whole server, refused whatever the pool unless listed in
/// `allow_commands` (`name` or `name|sub`, lowercase). See docs/CONFIG.md.
pub const DANGEROUS: &[&str] = &[
    "config|set",
    "config|rewrite",
    "config|resetstat",
    "shutdown",
    "replicaof",
    "slaveof",
    "module",
    "debug",
    "migrate",
    "save",
    "bgsave",
    "bgrewriteaof",
    "failover",
];

/// The table name of a command written as `NAME` or `NAME SUB` (`CONFIG SET`,
/// `config|set`): `name` or `name|sub`, lowercase, if the table knows it.
fn table_name(written: &str) -> Option<String> {
    let lower = written.trim().to_ascii_lowercase();
    let mut parts = lower.split([' ', '|']).filter(|p| !p.is_empty());
    let name = parts.next()?;
    let cmd = rampart_commands::lookup(name.as_bytes())?;
    match (parts.next(), parts.next()) {
        (None, _) => Some(cmd.name.to_string()),
        (Some(sub), None) => {
            rampart_commands::lookup_sub(cmd, sub.as_bytes()).map(|s| s.name.to_string())
        }
        _ => None,
    }
}

impl Fields<'_> {
    /// `users:`: a list of mappings; names unique.
    pub(crate) fn users(&self, get: &Lookup<'_, '_>) -> Result<Vec<Arc<User>>, ConfigError> {
        let Some(entry) = get("users") else {
            return Ok(Vec::new());
        };
        let items = match &entry.value {
            RawValue::Items(items) if !items.is_empty() => items,
            _ => return Err(self.err(entry.pos, Problem::NotList("users"))),
        };
        let mut users: Vec<Arc<User>> = Vec::with_capacity(items.len());
        for item in items {
            let RawValue::Entries(entries) = &item.value else {
                return Err(self.err(item.pos, Problem::NotList("users")));
            };
            let map = self.index_nested(entries, USER_KEYS, "a user")?;
            let user = self.user(&map, item.pos)?;
            if users.iter().any(|u| u.name == user.name) {
                let reason = "is listed twice; a user can only be defined once".to_string();
                return Err(self.err(item.pos, user_problem(&user.name, reason)));
            }
            users.push(Arc::new(user));
        }
        Ok(users)
    }

    fn user(
        &self,
        map: &std::collections::HashMap<&'static str, &RawEntry>,
        at: Pos,
    ) -> Result<User, ConfigError> {
        let scalar = |key: &'static str| -> Result<Option<(&str, Pos)>, ConfigError> {
            match map.get(key).map(|e| (&e.value, e.pos)) {
                None => Ok(None),
                Some((RawValue::Scalar(t), pos)) => Ok(Some((t.as_str(), pos))),
                Some((_, pos)) => Err(self.err(pos, Problem::EmptyValue(key))),
            }
        };
        let (name, name_pos) = scalar("name")?
            .filter(|(n, _)| !n.trim().is_empty())
            .ok_or_else(|| self.err(at, Problem::MissingKey("name")))?;
        let name = name.trim().to_string();
        if name.bytes().any(|b| b <= b' ' || b > b'~') {
            let reason = "has a name with spaces or special characters".to_string();
            return Err(self.err(name_pos, user_problem(&name, reason)));
        }
        if let Some((_, pos)) = scalar("password")? {
            return Err(self.err(pos, Problem::ClearPassword { user: name }));
        }
        let (rules_text, rules_pos) = scalar("rules")?.unwrap_or(("", at));
        let mut rules = Rules::parse(rules_text)
            .map_err(|e| self.err(rules_pos, user_problem(&name, e.to_string())))?;
        let forms = ["password_sha256", "password_file", "password_env", "nopass"];
        let given: Vec<&str> = forms
            .iter()
            .copied()
            .filter(|k| map.contains_key(k))
            .collect();
        if given.len() > 1 {
            let reason = format!("has both {} and {}; give one", given[0], given[1]);
            return Err(self.err(at, user_problem(&name, reason)));
        }
        let mut hashes = Vec::new();
        match given.first().copied() {
            Some("password_sha256") => {
                let (text, pos) = scalar("password_sha256")?.unwrap_or(("", at));
                let hash = parse_hash(text.trim()).ok_or_else(|| {
                    let reason = "password_sha256: The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters".to_string();
                    self.err(pos, user_problem(&name, reason))
                })?;
                hashes.push(hash);
            }
            Some("password_file") => {
                let (path, pos) = scalar("password_file")?.unwrap_or(("", at));
                let pass = read_password_file(path)
                    .map_err(|reason| self.err(pos, user_problem(&name, reason)))?;
                hashes.push(sha256(&pass));
            }
            Some("password_env") => {
                let (var, pos) = scalar("password_env")?.unwrap_or(("", at));
                let pass = match std::env::var_os(var.trim()) {
                    Some(v) if !v.is_empty() => v,
                    _ => {
                        let reason = format!(
                            "password_env: the environment variable {} is not set or empty",
                            var.trim()
                        );
                        return Err(self.err(pos, user_problem(&name, reason)));
                    }
                };
                hashes.push(sha256(pass.as_encoded_bytes()));
            }
            Some(_) => {
                let (text, pos) = scalar("nopass")?.unwrap_or(("", at));
                match crate::value::parse_bool(text) {
                    Some(true) => {
                        rules.nopass = true;
                        rules.hashes.clear();
                    }
                    _ => {
                        let reason =
                            "nopass: must be true (remove the key to require a password)".into();
                        return Err(self.err(pos, user_problem(&name, reason)));
                    }
                }
            }
            None if rules.nopass || !rules.hashes.is_empty() => {}
            None => return Err(self.err(at, Problem::UserWithoutPassword { user: name })),
        }
        Ok(User {
            name,
            hashes,
            rules,
        })
    }

    /// `deny_commands:`, `rename_commands:` and `allow_commands:`.
    pub(crate) fn command_policy(
        &self,
        get: &Lookup<'_, '_>,
    ) -> Result<CommandPolicy, ConfigError> {
        let mut policy = CommandPolicy::default();
        for (key, out) in [
            ("deny_commands", &mut policy.deny),
            ("allow_commands", &mut policy.allow),
        ] {
            let Some(entry) = get(key) else { continue };
            let listed: Vec<(String, Pos)> = match &entry.value {
                RawValue::List(items) => items.iter().map(|t| (t.text.clone(), t.pos)).collect(),
                RawValue::Scalar(text) => vec![(text.clone(), entry.pos)],
                RawValue::Empty => Vec::new(),
                _ => return Err(self.err(entry.pos, Problem::NotList(key))),
            };
            for (written, pos) in listed {
                let name = table_name(&written).ok_or_else(|| {
                    self.err(
                        pos,
                        policy_problem(key, format!("unknown command '{written}'")),
                    )
                })?;
                if key == "allow_commands" && !is_dangerous(&name) {
                    let reason = format!(
                        "'{written}' is not one of the commands refused by default ({}); nothing to allow",
                        DANGEROUS.join(", ").replace('|', " ").to_uppercase()
                    );
                    return Err(self.err(pos, policy_problem(key, reason)));
                }
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        if let Some(entry) = get("rename_commands") {
            let entries = match &entry.value {
                RawValue::Entries(e) => e.as_slice(),
                RawValue::Empty => &[],
                _ => return Err(self.err(entry.pos, Problem::NotList("rename_commands"))),
            };
            for e in entries {
                let from = e.key.text.trim().to_ascii_lowercase();
                let to = match &e.value {
                    RawValue::Scalar(t) => t.trim().to_ascii_lowercase(),
                    RawValue::Empty => String::new(),
                    _ => {
                        let reason = format!(
                            "{from}: the new name must be one word, or \"\" to disable the command"
                        );
                        return Err(self.err(e.pos, policy_problem("rename_commands", reason)));
                    }
                };
                let known = rampart_commands::lookup(from.as_bytes());
                let reason = if known.is_none() || from.contains('|') {
                    Some(format!("unknown command '{}'", e.key.text))
                } else if to.bytes().any(|b| b <= b' ' || b > b'~' || b == b'|') {
                    Some(format!("{from}: the new name must be one word without '|'"))
                } else if !to.is_empty() && rampart_commands::lookup(to.as_bytes()).is_some() {
                    Some(format!("{from}: the new name '{to}' is already a command"))
                } else if policy
                    .rename
                    .iter()
                    .any(|(f, t)| *f == from || (!to.is_empty() && *t == to))
                {
                    Some(format!("{from}: renamed twice, or to a name already used"))
                } else {
                    None
                };
                if let Some(reason) = reason {
                    return Err(self.err(e.key.pos, policy_problem("rename_commands", reason)));
                }
                policy.rename.push((from, to));
            }
        }
        Ok(policy)
    }
}

/// Whether a table name (`name` or `name|sub`) is refused by default.
#[must_use]
pub fn is_dangerous(name: &str) -> bool {
    DANGEROUS
        .iter()
        .any(|d| *d == name || name.split_once('|').is_some_and(|(parent, _)| *d == parent))
}

/// Reads a password file: its content without one trailing line end, at most 4 KiB.
fn read_password_file(path: &str) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let path = path.trim();
    let file =
        std::fs::File::open(path).map_err(|e| format!("password_file: cannot read {path}: {e}"))?;
    let mut pass = Vec::new();
    file.take(MAX_PASSWORD_FILE + 1)
        .read_to_end(&mut pass)
        .map_err(|e| format!("password_file: cannot read {path}: {e}"))?;
    if pass.len() as u64 > MAX_PASSWORD_FILE {
        return Err(format!(
            "password_file: {path} is larger than {MAX_PASSWORD_FILE} bytes; it must hold the password only"
        ));
    }
    if pass.ends_with(b"\n") {
        pass.pop();
        if pass.ends_with(b"\r") {
            pass.pop();
        }
    }
    if pass.is_empty() {
        return Err(format!("password_file: {path} is empty"));
    }
    Ok(pass)
}

fn user_problem(user: &str, reason: String) -> Problem {
    Problem::User {
        user: user.to_string(),
        reason,
    }
}

fn policy_problem(key: &'static str, reason: String) -> Problem {
    Problem::CommandPolicy { key, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(body: &str) -> Result<crate::Config, ConfigError> {
        crate::parse(
            &format!("p:\n  listen: 127.0.0.1:22121\n  servers:\n    - 127.0.0.1:6379:1\n{body}"),
            "t.yml",
        )
    }

    fn err(body: &str) -> String {
        load(body).expect_err(body).to_string()
    }

    #[test]
    fn users_with_each_password_form() {
        let hash = rampart_commands::acl::hex(&sha256(b"pw"));
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "filepw\n").expect("write");
        std::env::set_var("RAMPART_TEST_USERS_PW", "envpw");
        let c = load(&format!(
            "  users:\n    - name: default\n      nopass: true\n      rules: on +@read ~*\n    - name: a\n      password_sha256: {hash}\n      rules: on +@all ~* &*\n    - name: b\n      password_file: {}\n      rules: on +get ~k\n    - name: c\n      password_env: RAMPART_TEST_USERS_PW\n      rules: on\n",
            file.display()
        ))
        .expect("config");
        let users = &c.pools[0].users;
        assert_eq!(users.len(), 4);
        assert!(users[0].accepts(b"anything"));
        assert!(users[1].accepts(b"pw") && !users[1].accepts(b"pw2"));
        assert!(users[2].accepts(b"filepw"));
        assert!(users[3].accepts(b"envpw"));
        let debug = format!("{:?}", c.pools[0]);
        assert!(!debug.contains(&hash), "{debug}");
    }

    #[test]
    fn clear_passwords_and_bad_rules_are_refused_by_name() {
        let e = err("  users:\n    - name: app\n      password: hunter2\n");
        assert!(
            e.contains("password_sha256")
                && e.contains("password_file")
                && e.contains("password_env"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
        let e = err("  users:\n    - name: app\n      nopass: true\n      rules: on +nosuch\n");
        assert!(e.contains("user 'app'") && e.contains("Error in ACL SETUSER modifier '+nosuch': Unknown command or category name in ACL"), "{e}");
        let e = err("  users:\n    - name: app\n      rules: on >hunter2\n");
        assert!(
            !e.contains("hunter2") && e.contains("password_sha256"),
            "{e}"
        );
        let e = err("  users:\n    - name: app\n      rules: on +@all\n");
        assert!(e.contains("user 'app'") && e.contains("nopass"), "{e}");
        let e = err("  users:\n    - name: app\n      password_sha256: ABC\n");
        assert!(e.contains("exactly 64"), "{e}");
        let e = err("  users:\n    - name: app\n      password_env: RAMPART_TEST_NOT_SET_EVER\n");
        assert!(e.contains("RAMPART_TEST_NOT_SET_EVER"), "{e}");
        let e =
            err("  users:\n    - name: a\n      nopass: true\n    - name: a\n      nopass: true\n");
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn command_policy() {
        let c = load("  deny_commands: [KEYS, flushall, CONFIG GET]\n  rename_commands:\n    CONFIG: \"\"\n    FLUSHDB: FLUSHDB_8f2a\n  allow_commands: [CONFIG SET, bgsave]\n").expect("config");
        let p = &c.pools[0].commands;
        assert_eq!(p.deny, ["keys", "flushall", "config|get"]);
        assert_eq!(
            p.rename,
            [
                ("config".to_string(), String::new()),
                ("flushdb".to_string(), "flushdb_8f2a".to_string())
            ]
        );
        assert_eq!(p.allow, ["config|set", "bgsave"]);
        assert!(err("  deny_commands: [NOSUCH]\n").contains("unknown command 'NOSUCH'"));
        assert!(err("  allow_commands: [GET]\n").contains("nothing to allow"));
        assert!(err("  rename_commands:\n    GET: SET\n").contains("already a command"));
        assert!(
            is_dangerous("module|load")
                && is_dangerous("config|set")
                && !is_dangerous("config|get")
        );
    }
}
