//! Broker-level settings the domain needs, and topic configs under Kafka's
//! names (DESIGN §7) with validation, defaults and describe output.

use crate::durability::AckAllFsync;
use crate::error::BrokerError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use strata_log::LogConfig;

/// Domain settings (the binary maps its file/env/flag settings onto these).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BrokerSettings {
    pub node_id: i32,
    /// `broker.rack`: failure domain (e.g. the availability zone), recorded
    /// in `brokers/<id>` and reported in Metadata.
    pub rack: Option<String>,
    /// `auto.create.topics.enable`
    pub auto_create_topics: bool,
    /// `num.partitions`
    pub num_partitions: i32,
    /// `default.replication.factor`
    pub default_replication_factor: i16,
    /// `group.initial.rebalance.delay.ms`
    pub group_initial_rebalance_delay_ms: i64,
    /// `group.min.session.timeout.ms`
    pub group_min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`
    pub group_max_session_timeout_ms: i32,
    /// `transaction.max.timeout.ms`: the longest transaction timeout a
    /// producer may ask for.
    pub transaction_max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`: a transactional id idle (no open
    /// transaction) this long is forgotten.
    pub transactional_id_expiration_ms: i64,
    /// When an acks=all write is fsync'd before it is acknowledged
    /// (`Always` by default, as in the dev profile).
    pub ack_all_fsync: AckAllFsync,
    /// `log.retention.check.interval.ms`
    pub retention_check_interval_ms: u64,
    /// TTL of the broker's metadata-store session lease.
    pub session_timeout_ms: i64,
    /// `replica.lag.time.max.ms`: a follower not caught up for this long
    /// leaves the ISR.
    pub replica_lag_time_max_ms: i64,
    /// `fetch.max.bytes`: the most one fetch response carries, whatever
    /// the client asks (at least one batch is always returned). Bounds the
    /// memory a fetch takes on the broker.
    pub fetch_max_bytes: usize,
    /// How often unreferenced cold objects are looked for.
    pub cold_gc_interval_ms: u64,
    /// How old an unreferenced cold object must be before it is deleted
    /// (longer than any upload-to-commit window).
    pub cold_gc_grace_ms: i64,
    /// How often the metadata store's history of changes is compacted, to
    /// the revision of the round before (0: never, for an etcd compacted
    /// by its own `--auto-compaction-*`). etcd keeps every revision until
    /// compacted, and past its backend quota refuses every write.
    pub metadata_compaction_interval_ms: u64,
    /// `offsets.retention.minutes`: an empty group's committed offsets are
    /// discarded this long after its last activity (0: kept for good).
    pub offsets_retention_minutes: i64,
    /// `offsets.retention.check.interval.ms`
    pub offsets_retention_check_interval_ms: u64,
    /// Defaults for topic configs not set on the topic (`log.*` in Kafka).
    pub topic_defaults: BTreeMap<String, String>,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self {
            node_id: 0,
            rack: None,
            auto_create_topics: true,
            num_partitions: 1,
            default_replication_factor: 1,
            group_initial_rebalance_delay_ms: 3000,
            group_min_session_timeout_ms: 6000,
            group_max_session_timeout_ms: 1_800_000,
            transaction_max_timeout_ms: 900_000,
            transactional_id_expiration_ms: 604_800_000,
            ack_all_fsync: AckAllFsync::Always,
            retention_check_interval_ms: 60_000,
            session_timeout_ms: 10_000,
            replica_lag_time_max_ms: 30_000,
            fetch_max_bytes: 55 << 20,
            cold_gc_interval_ms: 600_000,
            cold_gc_grace_ms: 3_600_000,
            metadata_compaction_interval_ms: 300_000,
            offsets_retention_minutes: 10_080,
            offsets_retention_check_interval_ms: 600_000,
            topic_defaults: BTreeMap::new(),
        }
    }
}

/// How a config value came to be, as DescribeConfigs reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    Topic,
    Broker,
    Default,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: &'static str,
    pub value: String,
    pub source: ConfigSource,
    pub read_only: bool,
    pub sensitive: bool,
}

#[derive(Clone, Copy)]
enum Kind {
    Long { min: i64 },
    Int { min: i64 },
    Choice(&'static [&'static str]),
}

struct Def {
    name: &'static str,
    default: &'static str,
    kind: Kind,
}

const LONG_MAX: &str = "9223372036854775807";

/// Every topic config Strata accepts. Unknown names are refused, as Kafka does.
const DEFS: &[Def] = &[
    Def {
        name: "cleanup.policy",
        default: "delete",
        kind: Kind::Choice(&["delete"]),
    },
    Def {
        name: "compression.type",
        default: "producer",
        kind: Kind::Choice(&["producer"]),
    },
    Def {
        name: "flush.messages",
        default: LONG_MAX,
        kind: Kind::Long { min: 1 },
    },
    Def {
        name: "flush.ms",
        default: LONG_MAX,
        kind: Kind::Long { min: 0 },
    },
    Def {
        name: "index.interval.bytes",
        default: "4096",
        kind: Kind::Int { min: 0 },
    },
    Def {
        name: "local.retention.bytes",
        default: "-2",
        kind: Kind::Long { min: -2 },
    },
    Def {
        name: "local.retention.ms",
        default: "-2",
        kind: Kind::Long { min: -2 },
    },
    Def {
        name: "max.message.bytes",
        default: "1048588",
        kind: Kind::Int { min: 0 },
    },
    // Kafka 4.0's defaults: records at most an hour ahead of the broker's
    // clock (a timestamp far in the future would keep its segment from
    // time-based retention), any age behind it.
    Def {
        name: "message.timestamp.after.max.ms",
        default: "3600000",
        kind: Kind::Long { min: 0 },
    },
    Def {
        name: "message.timestamp.before.max.ms",
        default: LONG_MAX,
        kind: Kind::Long { min: 0 },
    },
    Def {
        name: "message.timestamp.type",
        default: "CreateTime",
        kind: Kind::Choice(&["CreateTime", "LogAppendTime"]),
    },
    Def {
        name: "min.insync.replicas",
        default: "1",
        kind: Kind::Int { min: 1 },
    },
    Def {
        name: "retention.bytes",
        default: "-1",
        kind: Kind::Long { min: -1 },
    },
    Def {
        name: "retention.ms",
        default: "604800000",
        kind: Kind::Long { min: -1 },
    },
    Def {
        name: "segment.bytes",
        default: "1073741824",
        kind: Kind::Int { min: 1024 },
    },
    Def {
        name: "segment.ms",
        default: "604800000",
        kind: Kind::Long { min: 1 },
    },
    Def {
        name: "strata.durability",
        default: "replicated",
        kind: Kind::Choice(&["replicated"]),
    },
    // Unclean election is not implemented: refuse `true` rather than
    // silently keep partitions leaderless that the user asked to elect.
    Def {
        name: "unclean.leader.election.enable",
        default: "false",
        kind: Kind::Choice(&["false"]),
    },
];

fn def(name: &str) -> Option<&'static Def> {
    DEFS.iter().find(|d| d.name == name)
}

/// Whether Strata knows this topic config name.
pub fn is_known_config(name: &str) -> bool {
    def(name).is_some()
}

/// The longest topic config value taken, in bytes: every valid value
/// (a number or one of a few names) is far shorter.
pub const MAX_CONFIG_VALUE_BYTES: usize = 256;

/// Checks one `name=value` pair against its definition.
pub fn validate_config(name: &str, value: &str) -> Result<(), BrokerError> {
    let d = def(name)
        .ok_or_else(|| BrokerError::InvalidConfig(format!("unknown topic config name {name:?}")))?;
    if value.len() > MAX_CONFIG_VALUE_BYTES {
        // A number padded with whitespace parses; it must not carry
        // megabytes into the topic's record.
        return Err(BrokerError::InvalidConfig(format!(
            "{name}: a value of {} bytes is longer than the {MAX_CONFIG_VALUE_BYTES} any takes",
            value.len()
        )));
    }
    let bad = |why: String| BrokerError::InvalidConfig(format!("{name}={value:?}: {why}"));
    match d.kind {
        Kind::Long { min } | Kind::Int { min } => {
            let v: i64 = value
                .trim()
                .parse()
                .map_err(|_| bad("not an integer".into()))?;
            if v < min {
                return Err(bad(format!("must be at least {min}")));
            }
            if matches!(d.kind, Kind::Int { .. }) && v > i64::from(i32::MAX) {
                return Err(bad("must fit in a 32-bit integer".into()));
            }
        }
        Kind::Choice(options) => {
            if !options.contains(&value) {
                return Err(bad(format!("supported values are {options:?}")));
            }
        }
    }
    Ok(())
}

/// A topic's explicit configs plus the broker defaults behind them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicConfig {
    /// Set on the topic itself.
    pub overrides: BTreeMap<String, String>,
    /// Broker-level defaults (validated at startup).
    pub broker_defaults: BTreeMap<String, String>,
}

impl TopicConfig {
    pub fn new(
        overrides: BTreeMap<String, String>,
        broker_defaults: BTreeMap<String, String>,
    ) -> Result<Self, BrokerError> {
        for (k, v) in overrides.iter().chain(broker_defaults.iter()) {
            validate_config(k, v)?;
        }
        Ok(Self {
            overrides,
            broker_defaults,
        })
    }

    fn raw(&self, name: &str) -> (String, ConfigSource) {
        if let Some(v) = self.overrides.get(name) {
            (v.clone(), ConfigSource::Topic)
        } else if let Some(v) = self.broker_defaults.get(name) {
            (v.clone(), ConfigSource::Broker)
        } else {
            (
                def(name).map_or("", |d| d.default).to_string(),
                ConfigSource::Default,
            )
        }
    }

    fn long(&self, name: &str) -> i64 {
        // Values were validated on the way in; a default always parses.
        self.raw(name).0.trim().parse().unwrap_or(0)
    }

    pub fn max_message_bytes(&self) -> usize {
        self.long("max.message.bytes").max(0) as usize
    }

    pub fn log_append_time(&self) -> bool {
        self.raw("message.timestamp.type").0 == "LogAppendTime"
    }

    /// `(message.timestamp.before.max.ms, message.timestamp.after.max.ms)`:
    /// how far a create-time record's timestamp may lie behind and ahead
    /// of the broker's clock.
    pub fn timestamp_bounds(&self) -> (i64, i64) {
        (
            self.long("message.timestamp.before.max.ms"),
            self.long("message.timestamp.after.max.ms"),
        )
    }

    pub fn flush_messages(&self) -> i64 {
        self.long("flush.messages")
    }

    pub fn min_insync_replicas(&self) -> usize {
        self.long("min.insync.replicas").max(1) as usize
    }

    pub fn flush_ms(&self) -> i64 {
        self.long("flush.ms")
    }

    /// `(retention.ms, retention.bytes)`: bounds of the whole log, both tiers.
    pub fn whole_log_retention(&self) -> (i64, i64) {
        (self.long("retention.ms"), self.long("retention.bytes"))
    }

    /// Settings of the local (hot) log. Its retention is `local.retention.*`
    /// where set (-2 means "as `retention.*`").
    pub fn log_config(&self) -> LogConfig {
        let local = |name: &str, whole: &str| match self.long(name) {
            -2 => self.long(whole),
            v => v,
        };
        LogConfig {
            segment_bytes: self.long("segment.bytes").max(1024) as u64,
            segment_ms: self.long("segment.ms"),
            retention_ms: local("local.retention.ms", "retention.ms"),
            retention_bytes: local("local.retention.bytes", "retention.bytes"),
            index_interval_bytes: self.long("index.interval.bytes").max(1) as usize,
        }
    }

    /// Every config with its effective value and source.
    pub fn describe(&self) -> Vec<ConfigEntry> {
        DEFS.iter()
            .map(|d| {
                let (value, source) = self.raw(d.name);
                ConfigEntry {
                    name: d.name,
                    value,
                    source,
                    read_only: false,
                    sensitive: false,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_names_and_values() {
        assert!(validate_config("retention.ms", "1000").is_ok());
        assert!(validate_config("retention.ms", "-1").is_ok());
        assert!(validate_config("retention.ms", "-5").is_err());
        assert!(validate_config("retention.ms", "abc").is_err());
        assert!(validate_config("no.such.config", "1").is_err());
        assert!(validate_config("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate_config("cleanup.policy", "compact").is_err());
        assert!(validate_config("max.message.bytes", "99999999999").is_err());
        // Kafka trims a number; padding is bounded all the same.
        assert!(validate_config("retention.ms", " 1000 ").is_ok());
        let padded = format!("{}1000", " ".repeat(MAX_CONFIG_VALUE_BYTES - 4));
        assert!(validate_config("retention.ms", &padded).is_ok());
        let over = format!(" {padded}");
        assert!(matches!(
            validate_config("retention.ms", &over),
            Err(BrokerError::InvalidConfig(m)) if m.contains("257 bytes")
        ));
    }

    #[test]
    fn effective_values_and_sources() {
        let mut o = BTreeMap::new();
        o.insert("segment.bytes".to_string(), "2048".to_string());
        let mut b = BTreeMap::new();
        b.insert("retention.ms".to_string(), "5000".to_string());
        let c = TopicConfig::new(o, b).unwrap();
        let lc = c.log_config();
        assert_eq!(lc.segment_bytes, 2048);
        assert_eq!(lc.retention_ms, 5000);
        let d = c.describe();
        let seg = d.iter().find(|e| e.name == "segment.bytes").unwrap();
        assert_eq!(seg.source, ConfigSource::Topic);
        let ret = d.iter().find(|e| e.name == "retention.ms").unwrap();
        assert_eq!(ret.source, ConfigSource::Broker);
        let mm = d.iter().find(|e| e.name == "max.message.bytes").unwrap();
        assert_eq!(
            (mm.value.as_str(), mm.source),
            ("1048588", ConfigSource::Default)
        );
    }
}
