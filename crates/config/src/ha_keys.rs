//! The pool keys that tune high availability: read policy, replica lag, zone, health
//! checks, passive ejection, failover holds and
//! writes acknowledged by replicas. (Backends and Sentinel are in `shards`.)

use std::time::Duration;

use crate::defaults;
use crate::error::{ConfigError, Problem};
use crate::ha::{HealthCheck, ReadPolicy};
use crate::pool::{narrow, Fields, Lookup};
use crate::raw::{Pos, RawValue};

/// The keys of `health_check:`.
const HEALTH_KEYS: &[&str] = &[
    "interval",
    "timeout",
    "rise",
    "fall",
    "jitter",
    "fast_interval",
];

/// The pool's high-availability tuning, every key defaulted.
pub(crate) struct HaSettings {
    pub read_policy: ReadPolicy,
    pub read_your_writes: Option<Duration>,
    pub max_replica_lag: Duration,
    pub max_stale: Duration,
    pub zone: Option<String>,
    pub health: HealthCheck,
    pub eject_after: u32,
    pub eject_time: Duration,
    pub eject_time_max: Duration,
    pub failover_hold: Duration,
    pub failover_hold_bytes: u64,
    pub min_replica_acks: u32,
    pub min_replica_acks_timeout: Duration,
}

impl Fields<'_> {
    pub(crate) fn ha_settings(&self, get: &Lookup<'_, '_>) -> Result<HaSettings, ConfigError> {
        let read_policy = match self.text(get, "read_policy")? {
            None => defaults::READ_POLICY,
            Some((text, pos)) => text
                .parse()
                .map_err(|_| self.err(pos, Problem::UnknownReadPolicy(text.to_string())))?,
        };
        let eject_time = self.positive(get, "eject_time", defaults::EJECT_TIME)?;
        let eject_time_max = self.positive(get, "eject_time_max", defaults::EJECT_TIME_MAX)?;
        self.not_longer(
            get,
            ("eject_time", eject_time),
            ("eject_time_max", eject_time_max),
        )?;
        Ok(HaSettings {
            read_policy,
            // Zero reads as "off", the same as leaving the key out.
            read_your_writes: self
                .duration(get, "read_your_writes")?
                .filter(|d| !d.is_zero()),
            max_replica_lag: self.positive(get, "max_replica_lag", defaults::MAX_REPLICA_LAG)?,
            // Zero is accepted: a replica whose link is down never serves.
            max_stale: self
                .duration(get, "max_stale")?
                .unwrap_or(defaults::MAX_STALE),
            zone: self.zone(get, "zone")?,
            health: self.health(get)?,
            eject_after: self
                .number(get, "eject_after", 1, u32::MAX.into())?
                .map_or(defaults::EJECT_AFTER, narrow),
            eject_time,
            eject_time_max,
            failover_hold: self
                .duration(get, "failover_hold")?
                .unwrap_or(defaults::FAILOVER_HOLD),
            failover_hold_bytes: self.size(
                get,
                "failover_hold_bytes",
                defaults::FAILOVER_HOLD_BYTES,
                (0, u64::MAX),
            )?,
            min_replica_acks: self
                .number(
                    get,
                    "min_replica_acks",
                    0,
                    defaults::MIN_REPLICA_ACKS_MAX.into(),
                )?
                .map_or(defaults::MIN_REPLICA_ACKS, narrow),
            min_replica_acks_timeout: self.positive(
                get,
                "min_replica_acks_timeout",
                defaults::MIN_REPLICA_ACKS_TIMEOUT,
            )?,
        })
    }

    /// A duration that must be greater than zero, or `default` when absent.
    pub(crate) fn positive(
        &self,
        get: &Lookup<'_, '_>,
        key: &'static str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match self.duration(get, key)? {
            None => Ok(default),
            Some(d) if d.is_zero() => Err(self.err(self.pos(get, key), Problem::ZeroDuration(key))),
            Some(d) => Ok(d),
        }
    }

    /// Where `key`'s value is, or the pool's name when the key is absent.
    pub(crate) fn pos(&self, get: &Lookup<'_, '_>, key: &'static str) -> Pos {
        get(key).map_or(self.at, |e| e.pos)
    }

    /// Refuses `short` longer than `long`, pointing at whichever of the two was written
    /// (the later one if both).
    fn not_longer(
        &self,
        get: &Lookup<'_, '_>,
        (key, value): (&'static str, Duration),
        (other, limit): (&'static str, Duration),
    ) -> Result<(), ConfigError> {
        if value <= limit {
            return Ok(());
        }
        let pos = [key, other]
            .iter()
            .filter_map(|k| get(k))
            .map(|e| e.pos)
            .max_by_key(|p| (p.line, p.column))
            .unwrap_or(self.at);
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let problem = Problem::LongerThan {
            key,
            value_ms: ms(value),
            other,
            limit_ms: ms(limit),
        };
        Err(self.err(pos, problem))
    }

    /// A zone name: any non-empty text.
    pub(crate) fn zone(
        &self,
        get: &Lookup<'_, '_>,
        key: &'static str,
    ) -> Result<Option<String>, ConfigError> {
        match self.text(get, key)? {
            None => Ok(None),
            Some((text, pos)) if text.trim().is_empty() => {
                Err(self.err(pos, Problem::EmptyZone(key)))
            }
            Some((text, _)) => Ok(Some(text.trim().to_string())),
        }
    }

    fn health(&self, get: &Lookup<'_, '_>) -> Result<HealthCheck, ConfigError> {
        let Some(entry) = get("health_check") else {
            return Ok(HealthCheck::default());
        };
        let entries = match &entry.value {
            RawValue::Entries(entries) => entries,
            RawValue::Empty => return Err(self.err(entry.pos, Problem::EmptyValue("health_check"))),
            _ => return Err(self.err(entry.pos, Problem::NotMapping("health_check"))),
        };
        let map = self.index_nested(entries, HEALTH_KEYS, "health_check")?;
        // Messages name the keys in full (`health_check.interval`).
        let lookup = |key: &'static str| {
            key.strip_prefix("health_check.")
                .and_then(|short| map.get(short).copied())
        };
        let interval =
            self.positive(&lookup, "health_check.interval", defaults::HEALTH_INTERVAL)?;
        let fast_interval = self.positive(
            &lookup,
            "health_check.fast_interval",
            defaults::HEALTH_FAST_INTERVAL,
        )?;
        self.not_longer(
            &lookup,
            ("health_check.fast_interval", fast_interval),
            ("health_check.interval", interval),
        )?;
        let count = |key, default| -> Result<u32, ConfigError> {
            Ok(self
                .number(&lookup, key, 1, defaults::HEALTH_COUNT_MAX.into())?
                .map_or(default, narrow))
        };
        Ok(HealthCheck {
            interval,
            timeout: self.positive(&lookup, "health_check.timeout", defaults::HEALTH_TIMEOUT)?,
            rise: count("health_check.rise", defaults::HEALTH_RISE)?,
            fall: count("health_check.fall", defaults::HEALTH_FALL)?,
            jitter: self.fraction(&lookup, "health_check.jitter", defaults::HEALTH_JITTER)?,
            fast_interval,
        })
    }

    /// A fraction in `0 <= x < 1`, written as a decimal (`0.1`, `0`, `.25`).
    fn fraction(
        &self,
        get: &Lookup<'_, '_>,
        key: &'static str,
        default: f64,
    ) -> Result<f64, ConfigError> {
        let Some((text, pos)) = self.text(get, key)? else {
            return Ok(default);
        };
        let plain = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        match text.parse::<f64>() {
            Ok(x) if plain && (0.0..1.0).contains(&x) => Ok(x),
            _ => Err(self.err(
                pos,
                Problem::BadFraction {
                    key,
                    value: text.to_string(),
                },
            )),
        }
    }
}
