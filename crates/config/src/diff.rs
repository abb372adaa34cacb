//! What changed between two versions of one pool, in words, for the reload log and event.

use std::fmt::Display;
use std::time::Duration;

use crate::ha::{HealthCheck, Node, Shard};
use crate::{ClientLimits, Pool, WhenDown};

/// A duration as an operator writes it: `1s`, `200ms`, `1500us`.
fn dur(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros())
    }
}

/// twemproxy's millisecond keys (`timeout`, `server_retry_timeout`) keep their unit.
fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

fn opt<T: Display>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "none".to_string(), T::to_string)
}

fn node_text(n: &Node) -> String {
    n.text.clone()
}

fn list(nodes: &[Node]) -> String {
    if nodes.is_empty() {
        return "none".into();
    }
    nodes.iter().map(node_text).collect::<Vec<_>>().join(" ")
}

/// Collects `key old -> new` lines.
#[derive(Default)]
struct Changes(Vec<String>);

impl Changes {
    fn field<T: PartialEq>(&mut self, key: &str, old: &T, new: &T, show: impl Fn(&T) -> String) {
        if old != new {
            self.0.push(format!("{key} {} -> {}", show(old), show(new)));
        }
    }

    /// A secret: say that it changed, never its value.
    fn secret(&mut self, key: &str, old: &Option<String>, new: &Option<String>) {
        match (old, new) {
            (None, Some(_)) => self.0.push(format!("{key} set")),
            (Some(_), None) => self.0.push(format!("{key} removed")),
            (Some(a), Some(b)) if a != b => self.0.push(format!("{key} changed")),
            _ => {}
        }
    }

    fn health(&mut self, old: &HealthCheck, new: &HealthCheck) {
        self.field("health_check.interval", &old.interval, &new.interval, |d| {
            dur(*d)
        });
        self.field("health_check.timeout", &old.timeout, &new.timeout, |d| {
            dur(*d)
        });
        self.field("health_check.rise", &old.rise, &new.rise, u32::to_string);
        self.field("health_check.fall", &old.fall, &new.fall, u32::to_string);
        self.field(
            "health_check.jitter",
            &old.jitter,
            &new.jitter,
            f64::to_string,
        );
        self.field(
            "health_check.fast_interval",
            &old.fast_interval,
            &new.fast_interval,
            |d| dur(*d),
        );
    }

    fn limits(&mut self, old: &ClientLimits, new: &ClientLimits) {
        let n = u64::to_string;
        self.field("max_bulk_len", &old.max_bulk_len, &new.max_bulk_len, n);
        self.field(
            "client_input_max",
            &old.client_input_max,
            &new.client_input_max,
            n,
        );
        self.field(
            "client_output_soft",
            &old.client_output_soft,
            &new.client_output_soft,
            n,
        );
        self.field(
            "client_output_hard",
            &old.client_output_hard,
            &new.client_output_hard,
            n,
        );
        self.field(
            "max_inflight_per_client",
            &old.max_inflight_per_client,
            &new.max_inflight_per_client,
            u32::to_string,
        );
    }

    fn shards(&mut self, old: &[Shard], new: &[Shard]) {
        for s in new {
            let Some(o) = old.iter().find(|o| o.name == s.name) else {
                self.0.push(format!("shard {} added", s.name));
                continue;
            };
            let key = |what: &str| format!("shard {} {what}", s.name);
            self.field(&key("weight"), &o.weight, &s.weight, u32::to_string);
            self.field(&key("primary"), &o.primary, &s.primary, |p| {
                p.as_ref().map_or_else(|| "none".into(), node_text)
            });
            self.field(&key("replicas"), &o.replicas, &s.replicas, |r| list(r));
            for n in s.replicas.iter().chain(&s.primary) {
                if let Some(m) = o
                    .replicas
                    .iter()
                    .chain(&o.primary)
                    .find(|m| m.addr == n.addr)
                {
                    let at = |what: &str| format!("shard {} node {} {what}", s.name, n.text);
                    self.field(&at("zone"), &m.zone, &n.zone, opt);
                    self.field(&at("priority"), &m.priority, &n.priority, u32::to_string);
                }
            }
        }
        for o in old.iter().filter(|o| !new.iter().any(|s| s.name == o.name)) {
            self.0.push(format!("shard {} removed", o.name));
        }
    }
}

impl Pool {
    /// Every setting that differs from `old` (the same pool before a reload), one entry
    /// per setting in file-key words, `key old -> new` (`timeout 1000ms -> 500ms`,
    /// `health_check.interval 1s -> 200ms`); a password only says `set`, `changed` or
    /// `removed`. Empty when nothing changed.
    pub fn changes_from(&self, old: &Pool) -> Vec<String> {
        let (o, n) = (old, self);
        let mut c = Changes::default();
        let s = |v: &dyn Display| v.to_string();
        c.field("listen", &o.listen, &n.listen, |v| s(v));
        c.field("read_listen", &o.read_listen, &n.read_listen, opt);
        c.field("write_listen", &o.write_listen, &n.write_listen, opt);
        c.field("tls_listen", &o.tls_listen, &n.tls_listen, opt);
        c.field("tls", &o.tls, &n.tls, |t| {
            t.as_ref()
                .map_or_else(|| "none".into(), crate::tls_keys::describe_listener)
        });
        c.field("backend_tls", &o.backend_tls, &n.backend_tls, |t| {
            t.as_ref()
                .map_or_else(|| "off".into(), crate::tls_keys::describe_backend)
        });
        c.field(
            "client_connections",
            &o.client_connections,
            &n.client_connections,
            u32::to_string,
        );
        c.field("hash", &o.hash, &n.hash, |v| s(v));
        c.field("hash_tag", &o.hash_tag, &n.hash_tag, |t| {
            t.map_or_else(
                || "none".into(),
                |t| String::from_utf8_lossy(&t.delimiters()).into_owned(),
            )
        });
        c.field("distribution", &o.distribution, &n.distribution, |v| s(v));
        c.field("timeout", &o.timeout, &n.timeout, |d| ms(*d));
        c.field("backlog", &o.backlog, &n.backlog, u32::to_string);
        c.field("preconnect", &o.preconnect, &n.preconnect, bool::to_string);
        c.secret("redis_auth", &o.redis_auth, &n.redis_auth);
        c.field(
            "redis_username",
            &o.redis_username,
            &n.redis_username,
            |u| u.clone().unwrap_or_else(|| "none".into()),
        );
        if o.users != n.users {
            // Names only: hashes and rules of users are not written to logs.
            let names = |p: &Pool| p.users.iter().map(|u| u.name.clone()).collect::<Vec<_>>();
            c.0.push(format!("users changed ({})", names(n).join(", ")));
            let removed: Vec<String> = names(o)
                .into_iter()
                .filter(|u| !n.users.iter().any(|x| &x.name == u))
                .collect();
            if !removed.is_empty() {
                c.0.push(format!("users removed ({})", removed.join(", ")));
            }
        }
        // rename_commands' new names are what keeps a renamed command from callers who do
        // not know them (Redis' rename-command habit): the commands renamed, never to what.
        c.field("commands", &o.commands, &n.commands, describe_policy);
        c.field("redis_db", &o.redis_db, &n.redis_db, u32::to_string);
        c.field(
            "server_connections",
            &o.server_connections,
            &n.server_connections,
            u32::to_string,
        );
        c.field(
            "max_dedicated_connections",
            &o.max_dedicated_connections,
            &n.max_dedicated_connections,
            u32::to_string,
        );
        c.field("pubsub", &o.pubsub, &n.pubsub, |p| format!("{p:?}"));
        c.field(
            "auto_eject_hosts",
            &o.auto_eject_hosts,
            &n.auto_eject_hosts,
            bool::to_string,
        );
        c.field("cache", &o.cache, &n.cache, bool::to_string);
        c.field("fail_open", &o.fail_open, &n.fail_open, |f| match f {
            None => "off".into(),
            Some(f) => format!(
                "{} after {}, writes {:?}",
                dur(f.timeout),
                f.after,
                f.writes
            ),
        });
        c.field("when_down", &o.when_down, &n.when_down, |w| match w {
            WhenDown::Error => "error".into(),
            WhenDown::Close => "close".into(),
        });
        c.field(
            "server_retry_timeout",
            &o.server_retry_timeout,
            &n.server_retry_timeout,
            |d| ms(*d),
        );
        c.field(
            "server_failure_limit",
            &o.server_failure_limit,
            &n.server_failure_limit,
            u32::to_string,
        );
        c.field(
            "tcpkeepalive",
            &o.tcpkeepalive,
            &n.tcpkeepalive,
            bool::to_string,
        );
        c.field("reuseport", &o.reuseport, &n.reuseport, bool::to_string);
        c.field(
            "admin_broadcast",
            &o.admin_broadcast,
            &n.admin_broadcast,
            bool::to_string,
        );
        c.limits(&o.limits, &n.limits);
        c.shards(&o.shards, &n.shards);
        c.field("sentinels", &o.sentinels, &n.sentinels, |v| {
            if v.is_empty() {
                return "none".into();
            }
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        });
        c.field(
            "sentinel_username",
            &o.sentinel_username,
            &n.sentinel_username,
            opt,
        );
        c.secret(
            "sentinel_password",
            &o.sentinel_password,
            &n.sentinel_password,
        );
        c.field("sentinel_poll", &o.sentinel_poll, &n.sentinel_poll, |d| {
            dur(*d)
        });
        c.field("cluster", &o.cluster, &n.cluster, |v| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        });
        c.field(
            "cluster_refresh",
            &o.cluster_refresh,
            &n.cluster_refresh,
            |d| dur(*d),
        );
        c.field("read_policy", &o.read_policy, &n.read_policy, |v| s(v));
        c.field(
            "read_your_writes",
            &o.read_your_writes,
            &n.read_your_writes,
            |d| d.map_or_else(|| "off".into(), dur),
        );
        c.field(
            "max_replica_lag",
            &o.max_replica_lag,
            &n.max_replica_lag,
            |d| dur(*d),
        );
        c.field("max_stale", &o.max_stale, &n.max_stale, |d| dur(*d));
        c.field("zone", &o.zone, &n.zone, opt);
        c.health(&o.health, &n.health);
        c.field(
            "eject_after",
            &o.eject_after,
            &n.eject_after,
            u32::to_string,
        );
        c.field("eject_time", &o.eject_time, &n.eject_time, |d| dur(*d));
        c.field(
            "eject_time_max",
            &o.eject_time_max,
            &n.eject_time_max,
            |d| dur(*d),
        );
        c.field("failover_hold", &o.failover_hold, &n.failover_hold, |d| {
            dur(*d)
        });
        c.field(
            "failover_hold_bytes",
            &o.failover_hold_bytes,
            &n.failover_hold_bytes,
            u64::to_string,
        );
        c.field(
            "min_replica_acks",
            &o.min_replica_acks,
            &n.min_replica_acks,
            u32::to_string,
        );
        c.field(
            "min_replica_acks_timeout",
            &o.min_replica_acks_timeout,
            &n.min_replica_acks_timeout,
            |d| dur(*d),
        );
        c.field("spool", &o.spool, &n.spool, |sp| match sp {
            None => "off".to_string(),
            Some(sp) => {
                let names: Vec<&str> = sp.commands.iter().map(|c| c.name()).collect();
                format!(
                    "{} [{}] max {}",
                    sp.dir.display(),
                    names.join(" "),
                    sp.max_bytes
                )
            }
        });
        c.field("cluster_view", &o.cluster_view, &n.cluster_view, |v| {
            v.as_ref().map_or_else(|| "off".into(), ToString::to_string)
        });
        c.0
    }
}

/// A pool's command policy for the reload message: denied and allowed commands by name, the
/// renamed ones without their new names.
fn describe_policy(p: &crate::CommandPolicy) -> String {
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(" ")
        }
    };
    let renamed: Vec<String> = p.rename.iter().map(|(from, _)| from.clone()).collect();
    format!(
        "(deny: {}; renamed: {}; allow: {})",
        list(&p.deny),
        list(&renamed),
        list(&p.allow)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(body: &str) -> Pool {
        let text = format!("demo:\n  listen: 127.0.0.1:22121\n{body}");
        crate::parse(&text, "t.yml").expect("valid").pools.remove(0)
    }

    #[test]
    fn changed_settings_are_named_with_old_and_new_values() {
        let old = pool("  timeout: 1000\n  primary: 127.0.0.1:7000\n  replicas:\n    - 127.0.0.1:7001\n  health_check:\n    interval: 1s\n    fall: 3\n");
        let new = pool("  timeout: 500\n  primary: 127.0.0.1:7000\n  replicas:\n    - 127.0.0.1:7001\n  health_check:\n    interval: 200ms\n    fall: 1\n  redis_auth: secret\n  read_policy: prefer-replica\n");
        assert_eq!(
            new.changes_from(&old),
            vec![
                "timeout 1000ms -> 500ms",
                "redis_auth set",
                "read_policy primary -> prefer-replica",
                "health_check.interval 1s -> 200ms",
                "health_check.fall 3 -> 1",
            ]
        );
    }

    #[test]
    fn an_unchanged_pool_has_no_changes_and_secrets_stay_hidden() {
        let a = pool("  redis_auth: one\n  servers:\n    - 127.0.0.1:7000:1\n");
        assert!(a.changes_from(&a).is_empty());
        let b =
            pool("  redis_auth: two\n  servers:\n    - 127.0.0.1:7000:1\n    - 127.0.0.1:7001:1\n");
        let words = b.changes_from(&a).join(", ");
        assert!(!words.contains("one") && !words.contains("two"), "{words}");
        assert!(words.contains("redis_auth changed"), "{words}");
        assert!(words.contains("shard 127.0.0.1:7001 added"), "{words}");
    }

    #[test]
    fn a_command_policy_change_never_shows_the_new_names() {
        let a = pool("  deny_commands: [KEYS]\n  servers:\n    - 127.0.0.1:7000:1\n");
        let b = pool("  deny_commands: [KEYS]\n  rename_commands: {FLUSHALL: flushall_s3cret, CONFIG: \"\"}\n  servers:\n    - 127.0.0.1:7000:1\n");
        let words = b.changes_from(&a).join(", ");
        assert!(!words.contains("s3cret"), "{words}");
        assert!(
            words.contains("commands (deny: keys; renamed: none; allow: none) -> (deny: keys; renamed: flushall config; allow: none)"),
            "{words}"
        );
    }

    #[test]
    fn removed_users_and_an_empty_sentinel_list_are_named() {
        let user = |n: &str| {
            format!(
                "    - name: {n}\n      password_sha256: {}\n      rules: on +@all ~*\n",
                "a".repeat(64)
            )
        };
        let a = pool(&format!(
            "  users:\n{}{}  primary: 127.0.0.1:7000\n",
            user("app"),
            user("gone")
        ));
        let b = pool(&format!(
            "  users:\n{}{}  sentinels: [127.0.0.1:26379]\n  master: m\n",
            user("app"),
            user("new")
        ));
        let words = b.changes_from(&a).join(", ");
        assert!(words.contains("users changed (app, new)"), "{words}");
        assert!(words.contains("users removed (gone)"), "{words}");
        assert!(
            words.contains("sentinels none -> 127.0.0.1:26379"),
            "{words}"
        );
    }
}
