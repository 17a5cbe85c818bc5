//! Broker settings: defaults that work on one laptop, overridden by a TOML
//! file, then by `STRATA_<KEY>` environment variables, then by flags
//! (DESIGN §7). Settings are plain data; components are built from them in
//! `dev.rs`.

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use strata_broker::config::BrokerSettings;
use strata_broker::durability::AckAllFsync;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub data_dir: PathBuf,
    /// Kafka listener; port 0 picks a free port.
    pub listen: String,
    /// Address clients are told to use; defaults to the bound listener.
    pub advertise: Option<String>,
    /// HTTP endpoint for /metrics, /healthz, /readyz.
    pub http: String,
    /// Cold-tier object store URL (used once the cold tier lands).
    pub object_store: Option<String>,
    /// etcd endpoints, comma-separated (cluster profile).
    pub etcd: Option<String>,
    /// S3 settings for `s3://` object stores, as in the standard AWS
    /// variables (which are used when these are unset).
    pub aws_endpoint_url: Option<String>,
    pub aws_region: Option<String>,
    pub aws_access_key_id: Option<String>,
    pub aws_secret_access_key: Option<String>,
    pub aws_allow_http: Option<bool>,
    /// Broker-to-broker gRPC listener (replication); port 0 picks a free
    /// port. `strata broker` defaults to 127.0.0.1:9093; `strata dev` serves
    /// none unless set.
    pub grpc: Option<String>,
    /// Address other brokers are told to use for gRPC; defaults to the
    /// bound listener (with the advertised Kafka host if bound to 0.0.0.0).
    pub advertise_grpc: Option<String>,
    pub cluster: String,
    pub node_id: i32,
    /// Failure domain (e.g. availability zone) reported as the broker's rack.
    pub rack: Option<String>,
    pub auto_create_topics: bool,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub group_initial_rebalance_delay_ms: i64,
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    /// `transaction.max.timeout.ms`
    pub transaction_max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`
    pub transactional_id_expiration_ms: i64,
    /// fsync every acks=all write before acknowledging it (true), or none
    /// (false, as Kafka). Unset, the profile decides (decision 0015):
    /// `strata dev` fsyncs every one; `strata broker` one only while the
    /// partition's leader is its only in-sync replica, relying otherwise
    /// on the followers holding it.
    pub fsync_on_ack_all: Option<bool>,
    /// Whether this is `strata broker` (set by [`Settings::profile_defaults`],
    /// not a setting).
    #[serde(skip)]
    pub cluster_profile: bool,
    pub retention_check_interval_ms: u64,
    /// TTL of the broker's metadata-store session (leadership lease).
    pub session_timeout_ms: i64,
    /// `replica.lag.time.max.ms`: a follower not caught up for this long
    /// leaves the ISR.
    pub replica_lag_time_max_ms: i64,
    /// `fetch.max.bytes`: the most one fetch response carries, whatever the
    /// client asks (at least one batch is always returned).
    pub fetch_max_bytes: usize,
    /// How often unreferenced cold objects are looked for.
    pub cold_gc_interval_ms: u64,
    /// Age after which an unreferenced cold object is deleted.
    pub cold_gc_grace_ms: i64,
    /// How often the metadata store's history is compacted (0: never, for
    /// an etcd that compacts itself).
    pub metadata_compaction_interval_ms: u64,
    /// `offsets.retention.minutes` (0: committed offsets never expire).
    pub offsets_retention_minutes: i64,
    /// `offsets.retention.check.interval.ms`
    pub offsets_retention_check_interval_ms: u64,
    pub max_connections: usize,
    pub max_request_bytes: usize,
    /// `connections.max.idle.ms`: a client connection with nothing in
    /// flight that sends no request for this long is closed (0: never).
    pub connections_max_idle_ms: u64,
    pub shutdown_grace_ms: u64,
    /// Bytes of cold-tier objects cached in memory.
    pub cold_cache_bytes: u64,
    /// Milliseconds added to every object store request (0: none): a
    /// local or in-memory store then answers with S3's round trips, for
    /// trying and measuring the cold tier as it behaves against S3.
    pub object_store_latency_ms: u64,
    /// Bytes of recent appends (all partitions together) kept in the OS
    /// page cache; older appended data is written back and dropped from the
    /// cache, so reads of it go to disk. 0 leaves the cache to the kernel.
    /// Unset: a quarter of the memory the broker may use (its cgroup limit,
    /// else the machine's; 1 GiB if neither can be read).
    pub log_cache_bytes: Option<u64>,
    /// tracing filter, e.g. `info` or `strata_kafka=debug,info`.
    pub log: String,
    /// Broker-wide defaults for topic configs, by Kafka name.
    pub topic_defaults: BTreeMap<String, String>,
}

impl Default for Settings {
    fn default() -> Self {
        let b = BrokerSettings::default();
        Self {
            data_dir: PathBuf::from("./strata-data"),
            listen: "127.0.0.1:9092".into(),
            advertise: None,
            http: "127.0.0.1:9644".into(),
            object_store: None,
            etcd: None,
            aws_endpoint_url: None,
            aws_region: None,
            aws_access_key_id: None,
            aws_secret_access_key: None,
            aws_allow_http: None,
            grpc: None,
            advertise_grpc: None,
            cluster: "strata".into(),
            node_id: b.node_id,
            rack: None,
            auto_create_topics: b.auto_create_topics,
            num_partitions: b.num_partitions,
            default_replication_factor: b.default_replication_factor,
            group_initial_rebalance_delay_ms: b.group_initial_rebalance_delay_ms,
            group_min_session_timeout_ms: b.group_min_session_timeout_ms,
            group_max_session_timeout_ms: b.group_max_session_timeout_ms,
            transaction_max_timeout_ms: b.transaction_max_timeout_ms,
            transactional_id_expiration_ms: b.transactional_id_expiration_ms,
            fsync_on_ack_all: None,
            cluster_profile: false,
            retention_check_interval_ms: b.retention_check_interval_ms,
            session_timeout_ms: b.session_timeout_ms,
            replica_lag_time_max_ms: b.replica_lag_time_max_ms,
            fetch_max_bytes: b.fetch_max_bytes,
            cold_gc_interval_ms: b.cold_gc_interval_ms,
            cold_gc_grace_ms: b.cold_gc_grace_ms,
            metadata_compaction_interval_ms: b.metadata_compaction_interval_ms,
            offsets_retention_minutes: b.offsets_retention_minutes,
            offsets_retention_check_interval_ms: b.offsets_retention_check_interval_ms,
            max_connections: 10_000,
            max_request_bytes: 100 * 1024 * 1024,
            connections_max_idle_ms: 600_000,
            shutdown_grace_ms: 10_000,
            cold_cache_bytes: 256 * 1024 * 1024,
            object_store_latency_ms: 0,
            log_cache_bytes: None,
            log: "info".into(),
            topic_defaults: BTreeMap::new(),
        }
    }
}

/// The page-cache budget for recent appends: `log_cache_bytes`, or by
/// default a quarter of the memory limit; `None` when 0.
pub fn log_cache_budget(configured: Option<u64>) -> Option<u64> {
    match configured {
        Some(0) => None,
        Some(n) => Some(n),
        None => Some(memory_limit().map_or(1 << 30, |m| m / 4)),
    }
}

/// The memory this process may use: its cgroup (v2) limit if one is set,
/// else the machine's total.
fn memory_limit() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    cgroup.or_else(|| {
        let info = std::fs::read_to_string("/proc/meminfo").ok()?;
        let kib = info
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()?;
        Some(kib * 1024)
    })
}

/// Settings whose default is "unset".
const OPTIONAL_KEYS: &[&str] = &[
    "advertise",
    "object_store",
    "etcd",
    "grpc",
    "advertise_grpc",
    "fsync_on_ack_all",
    "rack",
    "aws_endpoint_url",
    "aws_region",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_allow_http",
    "log_cache_bytes",
];

/// Parses a scalar as TOML (numbers, booleans) or else takes it as a string.
fn scalar(raw: &str) -> toml::Value {
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

impl Settings {
    /// Layers: defaults < file < environment < `overrides` (`key=value`).
    pub fn load(
        file: Option<&Path>,
        env: impl Iterator<Item = (String, String)>,
        overrides: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let mut table = toml::Table::try_from(Settings::default())
            .context("cannot serialise default settings")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            let file_table: toml::Table = text
                .parse()
                .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
            for (k, v) in file_table {
                table.insert(k, v);
            }
        }
        // Optional settings are absent from the serialised defaults.
        let mut keys: Vec<String> = table.keys().cloned().collect();
        keys.extend(OPTIONAL_KEYS.iter().map(|k| k.to_string()));
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("STRATA_") else {
                continue;
            };
            let key = rest.to_ascii_lowercase();
            if keys.contains(&key) && key != "topic_defaults" {
                table.insert(key, scalar(&value));
            }
        }
        for (k, v) in overrides {
            if let Some(name) = k.strip_prefix("topic_defaults.") {
                let entry = table
                    .entry("topic_defaults")
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let toml::Value::Table(t) = entry {
                    t.insert(name.to_string(), toml::Value::String(v.clone()));
                }
            } else if keys.contains(k) {
                table.insert(k.clone(), scalar(v));
            } else {
                bail!("unknown setting {k:?}");
            }
        }
        // Topic defaults are Kafka config strings; accept TOML numbers and
        // booleans for them too (`"segment.bytes" = 134217728`).
        if let Some(toml::Value::Table(t)) = table.get_mut("topic_defaults") {
            for (_, v) in t.iter_mut() {
                match v {
                    toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                        *v = toml::Value::String(v.to_string());
                    }
                    _ => {}
                }
            }
        }
        // Optional settings set to "" mean "unset".
        table.retain(|_, v| !matches!(v, toml::Value::String(s) if s.is_empty()));
        let s: Settings = toml::Value::Table(table)
            .try_into()
            .context("invalid settings")?;
        Ok(s)
    }

    /// Fills in what each profile defaults differently, where unset:
    /// `strata broker` (`cluster`) serves gRPC for its followers on
    /// 127.0.0.1:9093 (DESIGN §7) and fsyncs an acks=all write only while
    /// no follower is in sync; `strata dev`, a single node with no
    /// follower, fsyncs every one (DESIGN §3).
    pub fn profile_defaults(&mut self, cluster: bool) {
        self.cluster_profile = cluster;
        if cluster {
            self.grpc.get_or_insert_with(|| "127.0.0.1:9093".into());
        }
    }

    /// The settings as TOML with secrets replaced by `"<redacted>"`, for
    /// `strata config`.
    pub fn to_redacted_toml(&self) -> anyhow::Result<String> {
        let mut s = self.clone();
        if s.aws_secret_access_key.is_some() {
            s.aws_secret_access_key = Some("<redacted>".into());
        }
        toml::to_string(&s).context("cannot serialise settings")
    }

    pub fn broker_settings(&self) -> BrokerSettings {
        BrokerSettings {
            node_id: self.node_id,
            rack: self.rack.clone(),
            auto_create_topics: self.auto_create_topics,
            num_partitions: self.num_partitions,
            default_replication_factor: self.default_replication_factor,
            group_initial_rebalance_delay_ms: self.group_initial_rebalance_delay_ms,
            group_min_session_timeout_ms: self.group_min_session_timeout_ms,
            group_max_session_timeout_ms: self.group_max_session_timeout_ms,
            transaction_max_timeout_ms: self.transaction_max_timeout_ms,
            transactional_id_expiration_ms: self.transactional_id_expiration_ms,
            ack_all_fsync: match self.fsync_on_ack_all {
                Some(true) => AckAllFsync::Always,
                Some(false) => AckAllFsync::Never,
                None if self.cluster_profile => AckAllFsync::Unreplicated,
                None => AckAllFsync::Always,
            },
            retention_check_interval_ms: self.retention_check_interval_ms,
            session_timeout_ms: self.session_timeout_ms,
            replica_lag_time_max_ms: self.replica_lag_time_max_ms,
            fetch_max_bytes: self.fetch_max_bytes,
            cold_gc_interval_ms: self.cold_gc_interval_ms,
            cold_gc_grace_ms: self.cold_gc_grace_ms,
            metadata_compaction_interval_ms: self.metadata_compaction_interval_ms,
            offsets_retention_minutes: self.offsets_retention_minutes,
            offsets_retention_check_interval_ms: self.offsets_retention_check_interval_ms,
            topic_defaults: self.topic_defaults.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("strata.toml");
        std::fs::write(
            &f,
            "num_partitions = 3\nlisten = \"127.0.0.1:1\"\n[topic_defaults]\n\"retention.ms\" = \"1000\"\n",
        )
        .unwrap();
        let env = vec![
            ("STRATA_LISTEN".to_string(), "127.0.0.1:2".to_string()),
            ("STRATA_FSYNC_ON_ACK_ALL".to_string(), "false".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let s = Settings::load(
            Some(&f),
            env.into_iter(),
            &[
                ("listen".into(), "127.0.0.1:3".into()),
                ("topic_defaults.segment.bytes".into(), "4096".into()),
            ],
        )
        .unwrap();
        assert_eq!(s.num_partitions, 3);
        assert_eq!(s.listen, "127.0.0.1:3");
        assert_eq!(s.fsync_on_ack_all, Some(false));
        assert_eq!(s.broker_settings().ack_all_fsync, AckAllFsync::Never);
        assert_eq!(s.topic_defaults.get("retention.ms").unwrap(), "1000");
        assert_eq!(s.topic_defaults.get("segment.bytes").unwrap(), "4096");
    }

    /// `strata dev` fsyncs every acks=all write and serves no gRPC by
    /// default; `strata broker` serves gRPC and fsyncs an acks=all write
    /// only while no follower is in sync. Either way what is set stays.
    #[test]
    fn profiles_default_grpc_and_the_acks_all_fsync() {
        let load = |env: Vec<(String, String)>, cluster: bool| {
            let mut s = Settings::load(None, env.into_iter(), &[]).unwrap();
            s.profile_defaults(cluster);
            s
        };
        let dev = load(vec![], false);
        assert_eq!(dev.broker_settings().ack_all_fsync, AckAllFsync::Always);
        assert_eq!(dev.grpc, None);
        let cluster = load(vec![], true);
        assert_eq!(
            cluster.broker_settings().ack_all_fsync,
            AckAllFsync::Unreplicated
        );
        assert_eq!(cluster.grpc.as_deref(), Some("127.0.0.1:9093"));
        // Not a setting: never printed, never read.
        assert!(!cluster
            .to_redacted_toml()
            .unwrap()
            .contains("cluster_profile"));

        let set = |v: &str| vec![("STRATA_FSYNC_ON_ACK_ALL".to_string(), v.to_string())];
        for cluster in [false, true] {
            let off = load(set("false"), cluster).broker_settings().ack_all_fsync;
            assert_eq!(off, AckAllFsync::Never);
            let on = load(set("true"), cluster).broker_settings().ack_all_fsync;
            assert_eq!(on, AckAllFsync::Always);
        }
    }

    #[test]
    fn optional_settings_can_be_set_by_env_and_flags() {
        let env = vec![(
            "STRATA_ETCD".to_string(),
            "http://127.0.0.1:2379".to_string(),
        )];
        let s = Settings::load(
            None,
            env.into_iter(),
            &[("advertise".into(), "\"h:1\"".into())],
        )
        .unwrap();
        assert_eq!(s.etcd.as_deref(), Some("http://127.0.0.1:2379"));
        assert_eq!(s.advertise.as_deref(), Some("h:1"));
        assert_eq!(s.grpc, None);
    }

    #[test]
    fn unknown_settings_are_errors() {
        assert!(Settings::load(None, std::iter::empty(), &[("nope".into(), "1".into())]).is_err());
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("bad.toml");
        std::fs::write(&f, "bogus = 1\n").unwrap();
        assert!(Settings::load(Some(&f), std::iter::empty(), &[]).is_err());
    }

    #[test]
    fn the_log_cache_is_off_at_zero_as_set_otherwise_and_bounded_by_default() {
        assert_eq!(log_cache_budget(Some(0)), None);
        assert_eq!(log_cache_budget(Some(12345)), Some(12345));
        let auto = log_cache_budget(None).unwrap();
        assert!(
            auto > 0 && auto <= memory_limit().unwrap_or(4 << 30) / 4,
            "{auto}"
        );
        let env = [("STRATA_LOG_CACHE_BYTES".to_string(), "0".to_string())];
        let s = Settings::load(None, env.into_iter(), &[]).unwrap();
        assert_eq!(s.log_cache_bytes, Some(0));
    }

    #[test]
    fn topic_defaults_accept_numbers_and_rack_is_optional() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("strata.toml");
        std::fs::write(
            &f,
            "rack = \"zone-a\"\n[topic_defaults]\n\"segment.bytes\" = 4096\n\"x.enable\" = true\n",
        )
        .unwrap();
        let s = Settings::load(Some(&f), std::iter::empty(), &[]).unwrap();
        assert_eq!(s.topic_defaults.get("segment.bytes").unwrap(), "4096");
        assert_eq!(s.topic_defaults.get("x.enable").unwrap(), "true");
        assert_eq!(s.broker_settings().rack.as_deref(), Some("zone-a"));
        let none = Settings::load(None, std::iter::empty(), &[]).unwrap();
        assert_eq!(none.rack, None);
    }

    #[test]
    fn redacted_toml_hides_the_secret_key_and_round_trips() {
        let env = vec![(
            "STRATA_AWS_SECRET_ACCESS_KEY".to_string(),
            "s3cr3t".to_string(),
        )];
        let s = Settings::load(None, env.into_iter(), &[]).unwrap();
        let text = s.to_redacted_toml().unwrap();
        assert!(!text.contains("s3cr3t"));
        assert!(text.contains("<redacted>"));
        let back: Settings = toml::from_str(&text).unwrap();
        assert_eq!(back.listen, s.listen);
    }
}
