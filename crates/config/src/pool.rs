//! One pool's settings: from raw YAML entries to a validated [`Pool`].

use std::collections::HashMap;
use std::time::Duration;

use hashkit::{Distribution, HashKind, HashTag};

use crate::addr::{digits, parse_listen, parse_server, Listen, Server};
use crate::defaults;
use crate::error::{ConfigError, ListenKey, Problem};
use crate::keys::{known_key, RAMPART_KEYS, TWEMPROXY_KEYS};
use crate::raw::{Pos, RawBody, RawEntry, RawPool, RawValue};
use crate::value::{closest, parse_bool, parse_duration, parse_size};
use crate::{ClientLimits, Pool, SpoolCommand, SpoolConfig};

/// Builds one pool; also returns where its `listen:`, `read_listen:` and `write_listen:`
/// values are (the pool's name for an absent one), for the duplicate-address check.
pub(crate) fn build(origin: &str, raw: &RawPool) -> Result<(Pool, [Pos; 4]), ConfigError> {
    let name = raw.name.text.as_str();
    let at = raw.name.pos;
    let fields = Fields { origin, name, at };
    if name.trim().is_empty() {
        return Err(invalid(origin, at, None, Problem::EmptyPoolName));
    }
    let entries = match &raw.body {
        RawBody::Map(entries) => entries,
        RawBody::Other(pos) => return Err(fields.err(*pos, Problem::PoolNotMapping)),
    };
    let map = fields.index(entries)?;
    let get = |key: &'static str| map.get(key).copied();
    fields.build(&get)
}

/// Builds a `ConfigError::Invalid`.
pub(crate) fn invalid(origin: &str, pos: Pos, pool: Option<&str>, problem: Problem) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.to_string(),
        line: pos.line,
        column: pos.column,
        pool: pool.map(str::to_string),
        problem,
    }
}

/// The pool being built: where errors point and what they name.
pub(crate) struct Fields<'a> {
    pub origin: &'a str,
    pub name: &'a str,
    pub at: Pos,
}

/// Finds a key's entry (in a pool, or in a structured value).
pub(crate) type Lookup<'e, 'f> = dyn Fn(&'static str) -> Option<&'e RawEntry> + 'f;

impl Fields<'_> {
    pub(crate) fn err(&self, pos: Pos, problem: Problem) -> ConfigError {
        invalid(self.origin, pos, Some(self.name), problem)
    }

    /// Indexes the entries of a structured mapping (`within` names it in messages),
    /// refusing unknown and repeated keys.
    pub(crate) fn index_nested<'e>(
        &self,
        entries: &'e [RawEntry],
        known: &[&'static str],
        within: &'static str,
    ) -> Result<HashMap<&'static str, &'e RawEntry>, ConfigError> {
        let mut map: HashMap<&'static str, &'e RawEntry> = HashMap::new();
        for entry in entries {
            let key = entry.key.text.as_str();
            let Some(found) = known.iter().find(|k| **k == key).copied() else {
                let problem = Problem::UnknownNestedKey {
                    within,
                    key: key.to_string(),
                    hint: closest(key, known),
                };
                return Err(self.err(entry.key.pos, problem));
            };
            if let Some(first) = map.insert(found, entry) {
                let problem = Problem::DuplicateNestedKey {
                    within,
                    key: found.to_string(),
                    first_line: first.key.pos.line,
                };
                return Err(self.err(entry.key.pos, problem));
            }
        }
        Ok(map)
    }

    /// Indexes the entries by key, refusing unknown and repeated keys.
    fn index<'e>(
        &self,
        entries: &'e [RawEntry],
    ) -> Result<HashMap<&'static str, &'e RawEntry>, ConfigError> {
        let mut map: HashMap<&'static str, &'e RawEntry> = HashMap::new();
        for entry in entries {
            let key = entry.key.text.as_str();
            let Some(known) = known_key(key) else {
                let all: Vec<&'static str> =
                    TWEMPROXY_KEYS.iter().chain(RAMPART_KEYS).copied().collect();
                let problem = Problem::UnknownKey {
                    key: key.to_string(),
                    hint: closest(key, &all),
                };
                return Err(self.err(entry.key.pos, problem));
            };
            if let Some(first) = map.insert(known, entry) {
                let problem = Problem::DuplicateKey {
                    key: known.to_string(),
                    first_line: first.key.pos.line,
                };
                return Err(self.err(entry.key.pos, problem));
            }
        }
        Ok(map)
    }

    fn build(&self, get: &Lookup<'_, '_>) -> Result<(Pool, [Pos; 4]), ConfigError> {
        if let Some((text, pos)) = self.text(get, "redis")? {
            match parse_bool(text) {
                Some(true) => {}
                Some(false) => return Err(self.err(pos, Problem::NotRedis)),
                None => return Err(self.err(pos, not_bool("redis", text))),
            }
        }
        let (listen, listen_pos) = self
            .listen(get, ListenKey::Listen)?
            .ok_or_else(|| self.err(self.at, Problem::MissingKey("listen")))?;
        let read_listen = self.listen(get, ListenKey::ReadListen)?;
        let write_listen = self.listen(get, ListenKey::WriteListen)?;
        let tls_listen = self.listen(get, ListenKey::TlsListen)?;
        let tls = self.listener_tls(get, tls_listen.is_some())?;
        let backend_tls = self.backend_tls(get)?;
        let backends = self.backends(get)?;
        let ha = self.ha_settings(get)?;
        let auto_eject_hosts = self.flag(get, "auto_eject_hosts", defaults::AUTO_EJECT_HOSTS)?;
        let (cache, fail_open) = self.cache_settings(get, auto_eject_hosts)?;
        let when_down = self.when_down(get, fail_open.is_some())?;
        let (timeout, timeout_from_file) = match self.duration(get, "timeout")? {
            Some(t) if t.is_zero() => {
                let pos = self.text(get, "timeout")?.map_or(self.at, |(_, p)| p);
                return Err(self.err(pos, Problem::ZeroDuration("timeout")));
            }
            Some(t) => (t, true),
            None => (defaults::TIMEOUT, false),
        };
        let cluster_view = self.cluster_view(get, &listen)?;
        let mut pool = Pool {
            name: self.name.to_string(),
            listen,
            client_connections: self
                .number(get, "client_connections", 0, u32::MAX.into())?
                .map_or(defaults::CLIENT_CONNECTIONS, narrow),
            hash: self.hash(get)?,
            hash_tag: self.hash_tag(get)?,
            distribution: self.distribution(get)?,
            timeout,
            timeout_from_file,
            backlog: self
                .number(get, "backlog", 0, i32::MAX as u64)?
                .map_or(defaults::BACKLOG, narrow),
            preconnect: self.flag(get, "preconnect", defaults::PRECONNECT)?,
            redis_auth: self.auth(get)?,
            redis_username: self.redis_username(get)?,
            redis_db: self
                .number(get, "redis_db", 0, i32::MAX as u64)?
                .map_or(defaults::REDIS_DB, narrow),
            server_connections: self
                .number(get, "server_connections", 1, 65_535)?
                .map_or(defaults::SERVER_CONNECTIONS, narrow),
            max_dedicated_connections: self
                .number(get, "max_dedicated_connections", 1, 1_000_000)?
                .map_or(defaults::MAX_DEDICATED_CONNECTIONS, narrow),
            auto_eject_hosts,
            cache,
            fail_open,
            when_down,
            server_retry_timeout: self
                .duration(get, "server_retry_timeout")?
                .unwrap_or(defaults::SERVER_RETRY_TIMEOUT),
            server_failure_limit: self
                .number(get, "server_failure_limit", 0, u32::MAX.into())?
                .map_or(defaults::SERVER_FAILURE_LIMIT, narrow),
            tcpkeepalive: self.flag(get, "tcpkeepalive", defaults::TCPKEEPALIVE)?,
            reuseport: self.flag(get, "reuseport", defaults::REUSEPORT)?,
            servers: backends.servers,
            admin_broadcast: self.flag(get, "admin_broadcast", defaults::ADMIN_BROADCAST)?,
            limits: self.limits(get)?,
            users: self.users(get)?,
            commands: self.command_policy(get)?,
            shards: backends.shards,
            sentinels: backends.sentinels,
            sentinel_username: backends.sentinel_username,
            sentinel_password: backends.sentinel_password,
            sentinel_poll: backends.sentinel_poll,
            cluster: backends.cluster,
            cluster_refresh: backends.cluster_refresh,
            read_policy: ha.read_policy,
            read_your_writes: ha.read_your_writes,
            max_replica_lag: ha.max_replica_lag,
            max_stale: ha.max_stale,
            zone: ha.zone,
            health: ha.health,
            eject_after: ha.eject_after,
            eject_time: ha.eject_time,
            eject_time_max: ha.eject_time_max,
            failover_hold: ha.failover_hold,
            failover_hold_bytes: ha.failover_hold_bytes,
            pubsub: self.pubsub(get)?,
            min_replica_acks: ha.min_replica_acks,
            min_replica_acks_timeout: ha.min_replica_acks_timeout,
            spool: self.spool(get)?,
            read_listen: read_listen.as_ref().map(|(l, _)| l.clone()),
            write_listen: write_listen.as_ref().map(|(l, _)| l.clone()),
            cluster_view,
            tls_listen: tls_listen.as_ref().map(|(l, _)| l.clone()),
            tls,
            backend_tls,
            warnings: Vec::new(),
        };
        pool.warnings = self.check_kind_keys(get, &pool)?;
        self.check_replica_acks(get, &pool)?;
        if pool.spool.is_some()
            && !pool.is_sentinel()
            && pool.shards.iter().all(|s| s.replicas.is_empty())
        {
            return Err(self.err(self.pos(get, "spool_dir"), Problem::SpoolWithoutReplicas));
        }
        let pos_of = |l: &Option<(Listen, Pos)>| l.as_ref().map_or(self.at, |(_, p)| *p);
        Ok((
            pool,
            [
                listen_pos,
                pos_of(&read_listen),
                pos_of(&write_listen),
                pos_of(&tls_listen),
            ],
        ))
    }

    /// `spool_dir`, `spool_commands`, `spool_max_bytes`: all or none of the first two; every
    /// command one whose reply rampart can give without the server.
    fn spool(&self, get: &Lookup<'_, '_>) -> Result<Option<SpoolConfig>, ConfigError> {
        let dir = self.text(get, "spool_dir")?;
        let max_bytes = self.size(
            get,
            "spool_max_bytes",
            defaults::SPOOL_MAX_BYTES,
            (1, u64::MAX),
        )?;
        let listed: Vec<(String, Pos)> = match get("spool_commands") {
            None => Vec::new(),
            Some(e) => match &e.value {
                RawValue::List(items) => items.iter().map(|t| (t.text.clone(), t.pos)).collect(),
                RawValue::Scalar(text) => vec![(text.clone(), e.pos)],
                _ => return Err(self.err(e.pos, Problem::NotList("spool_commands"))),
            },
        };
        let Some((dir, dir_pos)) = dir else {
            return match get("spool_commands").or_else(|| get("spool_max_bytes")) {
                Some(e) => Err(self.err(e.key.pos, Problem::SpoolWithoutDir)),
                None => Ok(None),
            };
        };
        if listed.is_empty() {
            return Err(self.err(dir_pos, Problem::SpoolWithoutCommands));
        }

        let mut commands = Vec::new();
        for (name, pos) in listed {
            let Some(c) = SpoolCommand::parse(&name) else {
                return Err(self.err(pos, Problem::NotSpoolable(name)));
            };
            if !commands.contains(&c) {
                commands.push(c);
            }
        }
        Ok(Some(SpoolConfig {
            dir: dir.into(),
            commands,
            max_bytes,
        }))
    }

    /// `min_replica_acks` needs replica sets, and no more acknowledgements than a shard with
    /// listed replicas has replicas (Sentinel pools learn theirs, so any count is taken).
    fn check_replica_acks(&self, get: &Lookup<'_, '_>, pool: &Pool) -> Result<(), ConfigError> {
        let wanted = pool.min_replica_acks;
        if wanted == 0 {
            return Ok(());
        }
        let pos = self.pos(get, "min_replica_acks");
        if pool.is_sentinel() || pool.is_cluster() {
            return Ok(());
        }
        if pool.shards.iter().all(|s| s.replicas.is_empty()) {
            return Err(self.err(pos, Problem::AcksWithoutReplicas));
        }
        match pool
            .shards
            .iter()
            .find(|s| (s.replicas.len() as u64) < wanted.into())
        {
            Some(s) => Err(self.err(
                pos,
                Problem::MoreAcksThanReplicas {
                    wanted,
                    shard: s.name.to_string(),
                    replicas: s.replicas.len(),
                },
            )),
            None => Ok(()),
        }
    }

    /// The scalar text of `key`, if the key is present; an empty value is an error.
    pub(crate) fn text<'e>(
        &self,
        get: &Lookup<'e, '_>,
        key: &'static str,
    ) -> Result<Option<(&'e str, Pos)>, ConfigError> {
        let Some(entry) = get(key) else {
            return Ok(None);
        };
        match &entry.value {
            RawValue::Scalar(text) => Ok(Some((text.as_str(), entry.pos))),
            RawValue::Empty => Err(self.err(entry.pos, Problem::EmptyValue(key))),
            RawValue::List(_) | RawValue::Map | RawValue::Items(_) | RawValue::Entries(_) => {
                Err(self.err(
                    entry.pos,
                    Problem::Yaml(format!("{key}: expected a single value")),
                ))
            }
        }
    }

    pub(crate) fn flag(
        &self,
        get: &Lookup<'_, '_>,
        key: &'static str,
        default: bool,
    ) -> Result<bool, ConfigError> {
        match self.text(get, key)? {
            None => Ok(default),
            Some((text, pos)) => parse_bool(text).ok_or_else(|| self.err(pos, not_bool(key, text))),
        }
    }

    pub(crate) fn number(
        &self,
        get: &Lookup<'_, '_>,
        key: &'static str,
        min: u64,
        max: u64,
    ) -> Result<Option<u64>, ConfigError> {
        let Some((text, pos)) = self.text(get, key)? else {
            return Ok(None);
        };
        let not_number = || Problem::NotNumber {
            key,
            value: text.to_string(),
        };
        let value = digits(text.trim()).ok_or_else(|| self.err(pos, not_number()))?;
        if !(min..=max).contains(&value) {
            return Err(self.err(
                pos,
                Problem::OutOfRange {
                    key,
                    value,
                    min,
                    max,
                },
            ));
        }
        Ok(Some(value))
    }

    pub(crate) fn duration(
        &self,
        get: &Lookup<'_, '_>,
        key: &'static str,
    ) -> Result<Option<Duration>, ConfigError> {
        let Some((text, pos)) = self.text(get, key)? else {
            return Ok(None);
        };
        let bad = || Problem::BadDuration {
            key,
            value: text.to_string(),
        };
        let value = parse_duration(text).ok_or_else(|| self.err(pos, bad()))?;
        if value > defaults::MAX_DURATION {
            let problem = Problem::OutOfRange {
                key,
                value: u64::try_from(value.as_millis()).unwrap_or(u64::MAX),
                min: 0,
                max: u64::try_from(defaults::MAX_DURATION.as_millis()).unwrap_or(u64::MAX),
            };
            return Err(self.err(pos, problem));
        }
        Ok(Some(value))
    }

    pub(crate) fn size(
        &self,
        get: &Lookup<'_, '_>,
        key: &'static str,
        default: u64,
        (min, max): (u64, u64),
    ) -> Result<u64, ConfigError> {
        let Some((text, pos)) = self.text(get, key)? else {
            return Ok(default);
        };
        let bad = || Problem::BadSize {
            key,
            value: text.to_string(),
        };
        let value = parse_size(text).ok_or_else(|| self.err(pos, bad()))?;
        if !(min..=max).contains(&value) {
            return Err(self.err(
                pos,
                Problem::OutOfRange {
                    key,
                    value,
                    min,
                    max,
                },
            ));
        }
        Ok(value)
    }

    /// A `listen:`-shaped key, if present.
    fn listen(
        &self,
        get: &Lookup<'_, '_>,
        key: ListenKey,
    ) -> Result<Option<(Listen, Pos)>, ConfigError> {
        let name = match key {
            ListenKey::Listen => "listen",
            ListenKey::ReadListen => "read_listen",
            ListenKey::WriteListen => "write_listen",
            ListenKey::TlsListen => "tls_listen",
        };
        let Some((text, pos)) = self.text(get, name)? else {
            return Ok(None);
        };
        let listen = parse_listen(text).map_err(|reason| {
            let value = text.to_string();
            let problem = if key == ListenKey::Listen {
                Problem::BadListen { value, reason }
            } else {
                Problem::BadListenKey { key, value, reason }
            };
            self.err(pos, problem)
        })?;
        Ok(Some((listen, pos)))
    }

    fn hash(&self, get: &Lookup<'_, '_>) -> Result<HashKind, ConfigError> {
        match self.text(get, "hash")? {
            None => Ok(defaults::HASH),
            Some((text, pos)) => text
                .parse()
                .map_err(|_| self.err(pos, Problem::UnknownHash(text.to_string()))),
        }
    }

    fn distribution(&self, get: &Lookup<'_, '_>) -> Result<Distribution, ConfigError> {
        match self.text(get, "distribution")? {
            None => Ok(defaults::DISTRIBUTION),
            Some((text, pos)) => text
                .parse()
                .map_err(|_| self.err(pos, Problem::UnknownDistribution(text.to_string()))),
        }
    }

    fn hash_tag(&self, get: &Lookup<'_, '_>) -> Result<Option<HashTag>, ConfigError> {
        match self.text(get, "hash_tag")? {
            None => Ok(None),
            Some((text, pos)) => HashTag::new(text)
                .map(Some)
                .map_err(|_| self.err(pos, Problem::BadHashTag(text.to_string()))),
        }
    }

    fn auth(&self, get: &Lookup<'_, '_>) -> Result<Option<String>, ConfigError> {
        match self.text(get, "redis_auth")? {
            None => Ok(None),
            Some(("", pos)) => Err(self.err(pos, Problem::EmptyAuth)),
            Some((text, _)) => Ok(Some(text.to_string())),
        }
    }

    /// `redis_username`: a name without spaces, and only with `redis_auth`.
    fn redis_username(&self, get: &Lookup<'_, '_>) -> Result<Option<String>, ConfigError> {
        let Some((text, pos)) = self.text(get, "redis_username")? else {
            return Ok(None);
        };
        if get("redis_auth").is_none() {
            return Err(self.err(pos, Problem::RedisUsernameWithoutAuth));
        }
        Ok(Some(text.trim().to_string()))
    }

    /// The twemproxy `servers:` list (the caller checked that the key is present).
    pub(crate) fn servers(&self, entry: &RawEntry) -> Result<Vec<Server>, ConfigError> {
        let lines = match &entry.value {
            RawValue::List(lines) if !lines.is_empty() => lines,
            RawValue::List(_) | RawValue::Empty => {
                return Err(self.err(entry.pos, Problem::NoServers))
            }
            RawValue::Scalar(_) | RawValue::Map | RawValue::Items(_) | RawValue::Entries(_) => {
                return Err(self.err(entry.pos, Problem::NotList("servers")))
            }
        };
        let mut servers = Vec::with_capacity(lines.len());
        let mut by_addr: HashMap<String, u32> = HashMap::new();
        let mut by_identity: HashMap<Vec<u8>, u32> = HashMap::new();
        for line in lines {
            let server = parse_server(&line.text).map_err(|reason| {
                let value = line.text.clone();
                self.err(line.pos, Problem::BadServer { value, reason })
            })?;
            if let Some(first_line) = by_addr.insert(server.text.clone(), line.pos.line) {
                let addr = server.text.clone();
                return Err(self.err(line.pos, Problem::DuplicateServerAddr { addr, first_line }));
            }
            if let Some(first_line) = by_identity.insert(server.ring_identity(), line.pos.line) {
                let name = String::from_utf8_lossy(&server.ring_identity()).into_owned();
                return Err(self.err(line.pos, Problem::DuplicateServerName { name, first_line }));
            }
            servers.push(server);
        }
        Ok(servers)
    }

    fn pubsub(&self, get: &Lookup<'_, '_>) -> Result<crate::PubSub, ConfigError> {
        let from = match self.text(get, "pubsub_from")? {
            None => crate::PubSubFrom::Primary,
            Some((text, pos)) => match text.trim() {
                "primary" => crate::PubSubFrom::Primary,
                "replica" => crate::PubSubFrom::Replica,
                other => return Err(self.err(pos, Problem::UnknownPubSubFrom(other.to_string()))),
            },
        };
        let output_hard = self.size(
            get,
            "pubsub_output_hard",
            defaults::PUBSUB_OUTPUT_HARD,
            (1, u64::MAX),
        )?;
        let output_soft = self.size(
            get,
            "pubsub_output_soft",
            defaults::PUBSUB_OUTPUT_SOFT,
            (1, u64::MAX),
        )?;
        if output_soft > output_hard {
            let pos = ["pubsub_output_soft", "pubsub_output_hard"]
                .iter()
                .filter_map(|k| get(k))
                .map(|e| e.pos)
                .max_by_key(|p| (p.line, p.column))
                .unwrap_or(self.at);
            return Err(self.err(
                pos,
                Problem::PubSubSoftAboveHard {
                    soft: output_soft,
                    hard: output_hard,
                },
            ));
        }
        Ok(crate::PubSub {
            from,
            output_hard,
            output_soft,
            output_soft_time: self
                .duration(get, "pubsub_output_soft_time")?
                .unwrap_or(defaults::PUBSUB_OUTPUT_SOFT_TIME),
            max_per_client: self
                .number(get, "max_subscriptions_per_client", 1, 1_000_000)?
                .map_or(defaults::MAX_SUBSCRIPTIONS_PER_CLIENT, narrow),
        })
    }

    fn limits(&self, get: &Lookup<'_, '_>) -> Result<ClientLimits, ConfigError> {
        let max_bulk_len = self.size(
            get,
            "max_bulk_len",
            defaults::MAX_BULK_LEN,
            (1, defaults::MAX_BULK_LEN),
        )?;
        let client_input_max = self.size(
            get,
            "client_input_max",
            defaults::CLIENT_INPUT_MAX,
            (1, u64::MAX),
        )?;
        let client_output_soft = self.size(
            get,
            "client_output_soft",
            defaults::CLIENT_OUTPUT_SOFT,
            (1, u64::MAX),
        )?;
        let client_output_hard = self.size(
            get,
            "client_output_hard",
            defaults::CLIENT_OUTPUT_HARD,
            (1, u64::MAX),
        )?;
        let max_inflight_per_client = self
            .number(
                get,
                "max_inflight_per_client",
                1,
                defaults::MAX_INFLIGHT_LIMIT.into(),
            )?
            .map_or(defaults::MAX_INFLIGHT_PER_CLIENT, narrow);
        // Point at whichever of the two keys the operator wrote (the later one if both).
        let pos_of = |keys: [&'static str; 2]| {
            keys.iter()
                .filter_map(|k| get(k))
                .map(|e| e.pos)
                .max_by_key(|p| (p.line, p.column))
                .unwrap_or(self.at)
        };
        if client_output_soft > client_output_hard {
            let pos = pos_of(["client_output_soft", "client_output_hard"]);
            let problem = Problem::SoftAboveHard {
                soft: client_output_soft,
                hard: client_output_hard,
            };
            return Err(self.err(pos, problem));
        }
        if client_input_max < max_bulk_len {
            let pos = pos_of(["client_input_max", "max_bulk_len"]);
            let problem = Problem::InputBelowBulk {
                input: client_input_max,
                bulk: max_bulk_len,
            };
            return Err(self.err(pos, problem));
        }
        Ok(ClientLimits {
            max_bulk_len,
            client_input_max,
            client_output_soft,
            client_output_hard,
            max_inflight_per_client,
        })
    }
}

pub(crate) fn not_bool(key: &'static str, text: &str) -> Problem {
    Problem::NotBool {
        key,
        value: text.to_string(),
    }
}

/// Narrows a value already range-checked against `u32` bounds.
pub(crate) fn narrow(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}
