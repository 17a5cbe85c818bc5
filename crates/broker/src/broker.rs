//! [`Broker`]: the domain façade the edges (Kafka listener, HTTP, CLI) call.
//! Components (metadata store, clock, durability) are injected through
//! [`BrokerBuilder`]; settings are plain data.

use crate::clock::{Clock, SystemClock};
use crate::cluster::{BrokerRecord, ClusterView, Session, TopicInfo};
use crate::config::BrokerSettings;
use crate::durability::{flush_partition, Acks, Durability, ReplicatedDurability};
use crate::error::BrokerError;
use crate::groups::{GroupCoordinator, GroupTimings};
use crate::keys::Keys;
use crate::metrics::Metrics;
use crate::partition::{Isolation, Partition, PartitionRead};
use crate::producer_ids::ProducerIdAllocator;
use crate::replication::follower::FollowerHandle;
use bytes::Bytes;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use strata_meta::MetadataStore;
use tokio_util::sync::CancellationToken;

pub struct Broker {
    pub(crate) settings: BrokerSettings,
    pub(crate) data_dir: PathBuf,
    pub(crate) meta: Arc<dyn MetadataStore>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) keys: Keys,
    pub(crate) admin_lock: tokio::sync::Mutex<()>,
    pub(crate) view: RwLock<ClusterView>,
    /// Partitions this broker currently leads, with their open logs.
    pub(crate) hosted: RwLock<HashMap<(String, i32), Arc<Partition>>>,
    /// Replicas this broker follows, each with its copying task.
    pub(crate) following: std::sync::Mutex<HashMap<(String, i32), FollowerHandle>>,
    /// One reconcile at a time (the loop, topic admin and startup all call it).
    pub(crate) reconcile_lock: tokio::sync::Mutex<()>,
    /// When this broker first saw each partition without a leader.
    pub(crate) leaderless_since: std::sync::Mutex<HashMap<(String, i32), i64>>,
    /// The view's revision at the last metadata compaction round: the next
    /// round compacts to it (`cluster::compaction`).
    pub(crate) compaction_mark: std::sync::atomic::AtomicI64,
    /// This broker, for the tasks it spawns (set once built).
    pub(crate) self_ref: std::sync::OnceLock<std::sync::Weak<Broker>>,
    /// gRPC channels to other brokers, by address.
    pub(crate) rpc_channels: std::sync::Mutex<HashMap<String, tonic::transport::Channel>>,
    pub(crate) session: Session,
    pub(crate) identity: BrokerRecord,
    /// Wakes the reconcile loop (view changed, session renewed).
    pub(crate) reconcile_now: tokio::sync::Notify,
    /// Wakes every waiter on a leadership (`notify_waiters`): a leader key
    /// or a broker record changed, the view was reread, or this broker took
    /// up a leadership. Followers waiting to (re)connect and leaders holding
    /// a follower's `Hello` re-check their own partition.
    pub(crate) leaders_changed: tokio::sync::Notify,
    pub(crate) durability: Arc<dyn Durability>,
    /// The cold tier, when an object store is configured.
    pub(crate) cold: Option<crate::cold::ColdTier>,
    /// Keeps only the broker's recent appends in the page cache (none: the
    /// kernel decides).
    pub(crate) write_behind: Option<strata_log::WriteBehind>,
    pub groups: GroupCoordinator,
    pub metrics: Metrics,
    pub(crate) shutdown: CancellationToken,
    cluster_id: String,
    pub(crate) producer_ids: ProducerIdAllocator,
    /// Transactional ids this broker coordinates.
    pub(crate) txns: crate::txn::TxnTable,
}

pub struct BrokerBuilder {
    settings: BrokerSettings,
    data_dir: PathBuf,
    cluster: String,
    meta: Option<Arc<dyn MetadataStore>>,
    clock: Arc<dyn Clock>,
    durability: Option<Arc<dyn Durability>>,
    advertised: (String, i32),
    grpc: Option<String>,
    http: Option<String>,
    cold: Option<crate::cold::ColdTier>,
    write_behind: Option<strata_log::WriteBehind>,
}

impl BrokerBuilder {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            settings: BrokerSettings::default(),
            data_dir: data_dir.into(),
            cluster: "strata".into(),
            meta: None,
            clock: Arc::new(SystemClock),
            durability: None,
            advertised: ("127.0.0.1".into(), 9092),
            grpc: None,
            http: None,
            cold: None,
            write_behind: None,
        }
    }

    /// Reports every hosted log's appends to `behind`, which keeps only the
    /// broker's most recent writes in the page cache.
    pub fn write_behind(mut self, behind: strata_log::WriteBehind) -> Self {
        self.write_behind = Some(behind);
        self
    }
    /// Enables the cold tier: sealed segments go to `store` under `prefix`
    /// as Parquet, and are read back through a cache of `cache_bytes`.
    pub fn cold_tier(
        mut self,
        store: Arc<dyn object_store::ObjectStore>,
        prefix: impl Into<String>,
        cache_bytes: u64,
    ) -> Self {
        self.cold = Some(crate::cold::ColdTier::new(
            store,
            prefix.into(),
            cache_bytes,
        ));
        self
    }
    /// The Kafka address other brokers and clients are told to use.
    pub fn advertise(mut self, host: impl Into<String>, port: i32) -> Self {
        self.advertised = (host.into(), port);
        self
    }
    /// Other endpoints recorded in `brokers/<id>`.
    pub fn endpoints(mut self, grpc: Option<String>, http: Option<String>) -> Self {
        self.grpc = grpc;
        self.http = http;
        self
    }
    pub fn settings(mut self, s: BrokerSettings) -> Self {
        self.settings = s;
        self
    }
    pub fn cluster(mut self, name: impl Into<String>) -> Self {
        self.cluster = name.into();
        self
    }
    pub fn metadata_store(mut self, m: Arc<dyn MetadataStore>) -> Self {
        self.meta = Some(m);
        self
    }
    pub fn clock(mut self, c: Arc<dyn Clock>) -> Self {
        self.clock = c;
        self
    }
    pub fn durability(mut self, d: Arc<dyn Durability>) -> Self {
        self.durability = Some(d);
        self
    }

    /// Loads the cluster view, opens a session (registering the broker) and
    /// takes leadership of the partitions assigned to it, opening their logs
    /// (recovering torn tails).
    pub async fn build(self) -> Result<Arc<Broker>, BrokerError> {
        let meta = self
            .meta
            .ok_or_else(|| BrokerError::Metadata("no metadata store configured".into()))?;
        for (k, v) in &self.settings.topic_defaults {
            crate::config::validate_config(k, v)?;
        }
        std::fs::create_dir_all(&self.data_dir).map_err(|e| {
            BrokerError::Storage(format!("cannot create {}: {e}", self.data_dir.display()))
        })?;
        crate::cold::remove_offload_scratch(&self.data_dir);
        let keys = Keys::new(&self.cluster);
        let cluster_id =
            crate::cluster::identity::bind(&self.data_dir, meta.as_ref(), &keys).await?;
        let meta_for_ids = meta.clone();
        let keys_for_ids = format!("{}producers/next_id", keys.root());
        let metrics = Metrics::default();
        let durability = self.durability.unwrap_or_else(|| {
            Arc::new(ReplicatedDurability {
                ack_all_fsync: self.settings.ack_all_fsync,
                flushes: metrics.log_flushes.clone(),
                clock: self.clock.clone(),
            })
        });
        let timings = GroupTimings {
            initial_rebalance_delay_ms: self.settings.group_initial_rebalance_delay_ms,
            min_session_timeout_ms: self.settings.group_min_session_timeout_ms,
            max_session_timeout_ms: self.settings.group_max_session_timeout_ms,
        };
        let identity = BrokerRecord {
            id: self.settings.node_id,
            host: self.advertised.0.clone(),
            port: self.advertised.1,
            grpc: self.grpc.clone(),
            http: self.http.clone(),
            rack: self.settings.rack.clone(),
            start_ms: self.clock.now_ms(),
        };
        let broker = Arc::new(Broker {
            groups: GroupCoordinator::new(meta.clone(), keys.clone(), self.clock.clone(), timings),
            view: RwLock::new(ClusterView::default()),
            hosted: RwLock::new(HashMap::new()),
            following: std::sync::Mutex::new(HashMap::new()),
            reconcile_lock: tokio::sync::Mutex::new(()),
            rpc_channels: std::sync::Mutex::new(HashMap::new()),
            self_ref: std::sync::OnceLock::new(),
            leaderless_since: std::sync::Mutex::new(HashMap::new()),
            compaction_mark: std::sync::atomic::AtomicI64::new(0),
            session: Session::default(),
            identity,
            reconcile_now: tokio::sync::Notify::new(),
            leaders_changed: tokio::sync::Notify::new(),
            settings: self.settings,
            data_dir: self.data_dir,
            meta,
            clock: self.clock,
            keys,
            admin_lock: tokio::sync::Mutex::new(()),
            durability,
            cold: self.cold,
            write_behind: self.write_behind,
            metrics,
            shutdown: CancellationToken::new(),
            cluster_id,
            producer_ids: ProducerIdAllocator::new(meta_for_ids, keys_for_ids),
            txns: crate::txn::TxnTable::default(),
        });
        let _ = broker.self_ref.set(Arc::downgrade(&broker));
        broker.sync_view().await?;
        broker.open_session().await?;
        broker.reconcile().await;
        Ok(broker)
    }
}

/// A ListOffsets query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    Earliest,
    Latest,
    /// Latest for a read_committed consumer: the last stable offset.
    LastStable,
    Timestamp(i64),
}

/// One partition of a Fetch.
#[derive(Debug, Clone)]
pub struct FetchSpec {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub max_bytes: usize,
    /// The leader epoch the client believes current (KIP-320), if it says.
    pub current_leader_epoch: Option<i32>,
    pub isolation: Isolation,
}

/// Result of a produce to one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceOutcome {
    pub base_offset: i64,
    pub log_append_time: i64,
    pub log_start_offset: i64,
}

impl Broker {
    /// What the page-cache write-behind has done, if it runs.
    pub fn write_behind_stats(&self) -> Option<&strata_log::WriteBehindStats> {
        self.write_behind.as_ref().map(|w| w.stats())
    }

    /// What the cold cache served of ranged reads, and what they read from
    /// the store (None without a cold tier).
    pub fn cold_cache_stats(&self) -> Option<&strata_cold::CacheStats> {
        self.cold.as_ref().map(|c| c.cache.stats())
    }

    pub fn settings(&self) -> &BrokerSettings {
        &self.settings
    }

    /// Stable id of the cluster, created on first start (Kafka's cluster id).
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub fn node_id(&self) -> i32 {
        self.settings.node_id
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn live_brokers(&self) -> usize {
        self.view().brokers.len()
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub(crate) fn view(&self) -> std::sync::RwLockReadGuard<'_, ClusterView> {
        self.view.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn hosted(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<(String, i32), Arc<Partition>>> {
        self.hosted.read().unwrap_or_else(|p| p.into_inner())
    }

    /// A topic as the cluster view has it.
    pub fn topic(&self, name: &str) -> Option<TopicInfo> {
        self.view().topic(name)
    }

    /// The id of topic `name` (`TopicRecord::id`), if it exists.
    pub fn topic_id(&self, name: &str) -> Option<String> {
        self.view().topics.get(name).map(|t| t.record.id.clone())
    }

    /// A group's committed offsets (for `partitions`, or all), without
    /// those committed for a topic since deleted, even if one of its name
    /// exists again: as Kafka deletes a deleted topic's offsets, a
    /// consumer of the new topic starts at its `auto.offset.reset`.
    pub fn fetch_offsets(
        &self,
        group: &str,
        partitions: Option<&[(String, i32)]>,
    ) -> Vec<(String, i32, Option<crate::groups::CommittedOffset>)> {
        let mut fetched = self.groups.fetch_offsets(group, partitions);
        let view = self.view();
        let stale = |t: &str, o: &crate::groups::CommittedOffset| {
            o.topic_id
                .as_ref()
                .is_some_and(|id| view.topics.get(t).map(|e| &e.record.id) != Some(id))
        };
        for (t, _, o) in &mut fetched {
            if o.as_ref().is_some_and(|o| stale(t, o)) {
                *o = None;
            }
        }
        if partitions.is_none() {
            fetched.retain(|(_, _, o)| o.is_some());
        }
        fetched
    }

    /// Whether partition `p` of `topic` exists (partitions are 0..count).
    pub fn has_partition(&self, topic: &str, p: i32) -> bool {
        self.view()
            .topics
            .get(topic)
            .is_some_and(|t| (0..t.record.partitions).contains(&p))
    }

    /// The topic, or UNKNOWN_TOPIC_OR_PARTITION.
    pub fn require_topic(&self, name: &str) -> Result<TopicInfo, BrokerError> {
        self.topic(name)
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition(name.to_string()))
    }

    pub fn topics(&self) -> Vec<TopicInfo> {
        let v = self.view();
        v.topic_names().iter().filter_map(|n| v.topic(n)).collect()
    }

    /// Live brokers, by id.
    pub fn brokers(&self) -> Vec<BrokerRecord> {
        self.view().brokers.values().cloned().collect()
    }

    /// Replicas this broker follows.
    pub fn followed_partitions(&self) -> Vec<Arc<Partition>> {
        let mut v: Vec<Arc<Partition>> = self
            .following
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|h| h.partition.clone())
            .collect();
        v.sort_by(|a, b| (&a.topic, a.index).cmp(&(&b.topic, b.index)));
        v
    }

    /// Partitions this broker leads.
    pub fn hosted_partitions(&self) -> Vec<Arc<Partition>> {
        let mut v: Vec<Arc<Partition>> = self.hosted().values().cloned().collect();
        v.sort_by(|a, b| (&a.topic, a.index).cmp(&(&b.topic, b.index)));
        v
    }

    /// The partition if this broker leads it; `NotLeader` if another broker
    /// does (or none yet), `UnknownTopicOrPartition` if it does not exist.
    pub fn partition(&self, topic: &str, p: i32) -> Result<Arc<Partition>, BrokerError> {
        if let Some(part) = self.hosted().get(&(topic.to_string(), p)) {
            return Ok(part.clone());
        }
        let known = self
            .view()
            .topics
            .get(topic)
            .is_some_and(|t| p >= 0 && p < t.record.partitions);
        if known {
            Err(BrokerError::NotLeader(format!("{topic}-{p}")))
        } else {
            Err(BrokerError::UnknownTopicOrPartition(format!("{topic}-{p}")))
        }
    }

    /// InitProducerId for an idempotent (non-transactional) producer: a new
    /// id at epoch 0, or, when the client names its current id and epoch
    /// (KIP-360), the same id with the epoch bumped.
    pub async fn init_producer_id(
        &self,
        current: Option<(i64, i16)>,
    ) -> Result<(i64, i16), BrokerError> {
        match current {
            Some((id, epoch)) if id >= 0 && (0..i16::MAX - 1).contains(&epoch) => {
                Ok((id, epoch + 1))
            }
            _ => Ok((self.producer_ids.next().await?, 0)),
        }
    }

    /// Appends a client's record set and waits (up to 30 s) for the
    /// durability `acks` asks.
    pub async fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: &Bytes,
        acks: Acks,
    ) -> Result<ProduceOutcome, BrokerError> {
        self.produce_with_timeout(
            topic,
            partition,
            records,
            acks,
            Duration::from_secs(30),
            None,
        )
        .await
    }

    /// [`Broker::produce`] with the request's own timeout (Kafka's
    /// `timeout_ms`) for replication to the in-sync replicas, and its
    /// transactional id (needed for transactional batches).
    pub async fn produce_with_timeout(
        &self,
        topic: &str,
        partition: i32,
        records: &Bytes,
        acks: Acks,
        timeout: Duration,
        transactional_id: Option<&str>,
    ) -> Result<ProduceOutcome, BrokerError> {
        let r = self
            .produce_inner(topic, partition, records, acks, timeout, transactional_id)
            .await;
        if r.is_err() {
            self.metrics
                .produce_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }

    async fn produce_inner(
        &self,
        topic: &str,
        partition: i32,
        records: &Bytes,
        acks: Acks,
        timeout: Duration,
        transactional_id: Option<&str>,
    ) -> Result<ProduceOutcome, BrokerError> {
        if self.shutdown.is_cancelled() {
            return Err(BrokerError::ShuttingDown);
        }
        let p = self.partition(topic, partition)?;
        self.verify_transactional_write(&p, records, transactional_id)
            .await?;
        // Fencing: never append (let alone acknowledge) once our lease could
        // have expired, because another broker may already lead.
        if !self.session.is_live(self.clock.now_ms()) {
            return Err(BrokerError::NotLeader(format!(
                "{topic}-{partition}: this broker's metadata-store session is not live"
            )));
        }
        if acks == Acks::All {
            let min = p.config().min_insync_replicas();
            let isr = p.isr_size();
            if isr < min {
                return Err(BrokerError::NotEnoughReplicas(format!(
                    "{topic}-{partition}: {isr} in sync, min.insync.replicas={min}"
                )));
            }
        }
        let now = self.clock.now_ms();
        let info = if decompresses_much(records) {
            // Checking compressed records decompresses them (milliseconds
            // for a megabyte of gzip): done where the runtime moves this
            // worker's other connections to another thread meanwhile. Not
            // on the blocking pool: appends to a partition must keep the
            // order the requests came in.
            tokio::task::block_in_place(|| p.append(records, now))?
        } else {
            p.append(records, now)?
        };
        self.metrics.record_produce(records.len());
        self.durability
            .make_durable(&p, info, acks, timeout)
            .await?;
        Ok(ProduceOutcome {
            base_offset: info.base_offset,
            log_append_time: info.log_append_time.unwrap_or(-1),
            log_start_offset: p.log_start_offset(),
        })
    }

    async fn read_one(
        &self,
        spec: &FetchSpec,
        budget: usize,
    ) -> Result<PartitionRead, BrokerError> {
        let p = self.partition(&spec.topic, spec.partition)?;
        if let Some(epoch) = spec.current_leader_epoch {
            check_leader_epoch(&p, epoch)?;
        }
        let max = spec.max_bytes.min(budget);
        let earliest = self.earliest_offset(&p);
        if max == 0 {
            return Ok(PartitionRead {
                data: Bytes::new(),
                high_watermark: p.high_watermark(),
                last_stable_offset: p.last_stable_offset(),
                log_start_offset: earliest,
                aborted: Vec::new(),
            });
        }
        if spec.offset < earliest {
            return Err(BrokerError::OffsetOutOfRange {
                requested: spec.offset,
                start: earliest,
                end: p.high_watermark(),
            });
        }
        match p.read(spec.offset, max, spec.isolation).await {
            // Below the local log: the cold tier, if it has the offset.
            Err(BrokerError::OffsetOutOfRange {
                requested, start, ..
            }) if requested < start => {
                match self
                    .cold_read(
                        crate::cold::ColdPartition {
                            topic: &spec.topic,
                            partition: spec.partition,
                            local_start: start,
                        },
                        requested,
                        max,
                    )
                    .await?
                {
                    // The cold tier holds only committed records and no
                    // markers, so there is nothing to skip there.
                    // Only empty cold files (aborted transactions, markers)
                    // up to the local log: continue there.
                    Some(data) if data.is_empty() && requested >= earliest => {
                        let mut read = p.read(p.log_start_offset(), max, spec.isolation).await?;
                        read.log_start_offset = earliest;
                        Ok(read)
                    }
                    Some(data) if requested >= earliest => Ok(PartitionRead {
                        data,
                        high_watermark: p.high_watermark(),
                        last_stable_offset: p.last_stable_offset(),
                        log_start_offset: earliest,
                        aborted: Vec::new(),
                    }),
                    _ => Err(BrokerError::OffsetOutOfRange {
                        requested,
                        start: earliest,
                        end: p.high_watermark(),
                    }),
                }
            }
            Ok(mut read) => {
                read.log_start_offset = earliest;
                Ok(read)
            }
            Err(e) => Err(e),
        }
    }

    /// Reads every requested partition, waiting up to `max_wait` for at least
    /// `min_bytes` in total; woken by appends, not by polling. Returns at
    /// most `max_bytes`, and never more than `fetch.max.bytes`, in total
    /// (but the first partition's first batch whatever its size).
    pub async fn fetch(
        &self,
        specs: &[FetchSpec],
        max_wait: Duration,
        min_bytes: usize,
        max_bytes: usize,
    ) -> Vec<Result<PartitionRead, BrokerError>> {
        let deadline = tokio::time::Instant::now() + max_wait;
        // A client may ask for up to 2 GiB: what a fetch holds in memory
        // is the broker's to bound.
        let max_bytes = max_bytes.min(self.settings.fetch_max_bytes.max(1));
        let partitions: Vec<Option<Arc<Partition>>> = specs
            .iter()
            .map(|s| self.partition(&s.topic, s.partition).ok())
            .collect();
        loop {
            // Register for wake-ups before reading, so no append is missed.
            let mut waits: Vec<_> = partitions
                .iter()
                .flatten()
                .map(|p| Box::pin(p.data_arrived()))
                .collect();
            for w in waits.iter_mut() {
                w.as_mut().enable();
            }
            let mut budget = max_bytes;
            let mut total = 0usize;
            let mut any_error = false;
            let mut results = Vec::with_capacity(specs.len());
            for (i, spec) in specs.iter().enumerate() {
                // The first partition always gets at least one batch (KIP-74).
                let b = if i == 0 { budget.max(1) } else { budget };
                let r = self.read_one(spec, b).await;
                match &r {
                    Ok(read) => {
                        total += read.data.len();
                        budget = budget.saturating_sub(read.data.len());
                    }
                    Err(_) => any_error = true,
                }
                results.push(r);
            }
            let timed_out = tokio::time::Instant::now() >= deadline;
            if total >= min_bytes.max(1) || any_error || timed_out || waits.is_empty() {
                let bytes: usize = total;
                self.metrics.record_fetch(bytes);
                return results;
            }
            tokio::select! {
                _ = futures::future::select_all(waits) => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.shutdown.cancelled() => {}
            }
            if self.shutdown.is_cancelled() {
                return results;
            }
        }
    }

    /// ListOffsets for one partition: `(offset, timestamp)`; `(-1, -1)` when
    /// no record has a timestamp at or after the one asked for. Timestamps
    /// are looked up in the cold tier first, then in the local log.
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: i32,
        spec: OffsetSpec,
    ) -> Result<(i64, i64), BrokerError> {
        let p = self.partition(topic, partition)?;
        Ok(match spec {
            OffsetSpec::Earliest => (self.earliest_offset(&p), -1),
            OffsetSpec::Latest => (p.high_watermark(), -1),
            OffsetSpec::LastStable => (p.last_stable_offset(), -1),
            OffsetSpec::Timestamp(ts) => {
                match self.cold_offset_for_timestamp(topic, partition, ts).await? {
                    Some(hit) => hit,
                    None => p.offset_for_timestamp(ts)?.unwrap_or((-1, -1)),
                }
            }
        })
    }

    /// The leader epoch that wrote `offset` of a led partition (for
    /// ListOffsets; -1 when unknown, e.g. for a cold-only offset).
    pub fn epoch_of_offset(&self, topic: &str, partition: i32, offset: i64) -> i32 {
        self.partition(topic, partition)
            .map_or(-1, |p| p.epoch_at(offset))
    }

    /// OffsetForLeaderEpoch on a led partition: checks the client's view of
    /// the current epoch (`current` -1: unchecked), then answers where
    /// `epoch` ends in this log.
    pub fn end_offset_for_epoch(
        &self,
        topic: &str,
        partition: i32,
        current: i32,
        epoch: i32,
    ) -> Result<Option<(i32, i64)>, BrokerError> {
        let p = self.partition(topic, partition)?;
        let mine = p.leader_epoch();
        if current >= 0 {
            check_leader_epoch(&p, current)?;
        }
        if epoch == mine {
            return Ok(Some((mine, p.log_end_offset())));
        }
        Ok(p.end_offset_for_epoch(epoch))
    }

    /// Rolls and applies retention on every partition, and honours
    /// `flush.ms`. Run periodically by [`Broker::run_background`].
    pub async fn housekeeping(&self, retention_due: bool) {
        let now = self.clock.now_ms();
        let led = self.hosted_partitions();
        let followed = self.followed_partitions();
        for (p, leads) in led
            .iter()
            .map(|p| (p, true))
            .chain(followed.iter().map(|p| (p, false)))
        {
            if retention_due {
                if leads {
                    self.enforce_cold_retention(p, now).await;
                }
                // Rolls, deletions (unlinking whole segments) and the
                // producer-state snapshot (an fsync) wait on the disk: not
                // on an async worker.
                let rule = self.local_deletion_rule(p);
                let part = p.clone();
                let done = tokio::task::spawn_blocking(move || {
                    part.housekeeping(now, |seg| rule.allows(&part, seg, now))
                })
                .await;
                match done {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => {
                        tracing::info!(partition = %p.name(), segments = n, "retention deleted segments")
                    }
                    Ok(Err(e)) => {
                        tracing::error!(partition = %p.name(), error = %e, "housekeeping failed")
                    }
                    Err(e) => {
                        tracing::error!(partition = %p.name(), error = %e, "housekeeping task failed")
                    }
                }
            }
            let flush_ms = p.config().flush_ms();
            if p.unflushed_messages() > 0 && now - p.last_flush_ms() >= flush_ms {
                if let Err(e) = flush_partition(p, now, &self.metrics.log_flushes).await {
                    tracing::error!(partition = %p.name(), error = %e, "periodic flush failed");
                }
            }
        }
    }

    /// Background work until shutdown: the metadata session, the cluster
    /// watch, leadership reconciliation, group timers every 100 ms, `flush.ms`
    /// checks every second, rolls and retention every
    /// `log.retention.check.interval.ms`, metadata compaction every
    /// `metadata_compaction_interval_ms`, offset expiry every
    /// `offsets_retention_check_interval_ms`, and the runtime's wakeup
    /// probe.
    pub async fn run_background(self: Arc<Self>) {
        let loops = [
            tokio::spawn(self.clone().session_loop()),
            tokio::spawn(self.clone().watch_loop()),
            tokio::spawn(self.clone().reconcile_loop()),
            tokio::spawn(self.clone().txn_loop()),
            tokio::spawn(self.clone().wakeup_probe()),
        ];
        self.clone().timers().await;
        for l in loops {
            if let Err(e) = l.await {
                tracing::error!(error = %e, "background task failed");
            }
        }
    }

    /// Transaction timeouts and recovery, apart from the other timers
    /// because settling a transaction may wait on other brokers.
    async fn txn_loop(self: Arc<Self>) {
        let mut every = tokio::time::interval(Duration::from_millis(500));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => self.txn_tick().await,
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Measures how late woken tasks start on this runtime (see
    /// [`crate::metrics::probe_wakeups`]).
    async fn wakeup_probe(self: Arc<Self>) {
        crate::metrics::probe_wakeups(
            &self.metrics.wakeup_delays,
            crate::metrics::WAKEUP_PROBE_PERIOD,
            &self.shutdown,
        )
        .await;
    }

    async fn timers(self: Arc<Self>) {
        use tokio::time::{interval, MissedTickBehavior};
        let mut groups = interval(Duration::from_millis(100));
        let mut flush = interval(Duration::from_secs(1));
        let mut retention = interval(Duration::from_millis(
            self.settings.retention_check_interval_ms.max(100),
        ));
        let mut gc = interval(Duration::from_millis(
            self.settings.cold_gc_interval_ms.max(1000),
        ));
        let mut isr = interval(Duration::from_millis(
            // Often enough that a caught-up follower joins (and a move
            // completes) promptly; each round writes only on a change.
            (self.settings.replica_lag_time_max_ms / 4).clamp(50, 250) as u64,
        ));
        let mut compaction = interval(Duration::from_millis(
            // When off (0), its rounds do nothing.
            match self.settings.metadata_compaction_interval_ms {
                0 => 3_600_000,
                ms => ms.max(1000),
            },
        ));
        let mut offsets_expiry = interval(Duration::from_millis(
            self.settings.offsets_retention_check_interval_ms.max(1000),
        ));
        for t in [
            &mut groups,
            &mut flush,
            &mut retention,
            &mut gc,
            &mut isr,
            &mut compaction,
            &mut offsets_expiry,
        ] {
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                _ = groups.tick() => self.groups.tick(),
                _ = flush.tick() => {
                    self.housekeeping(false).await;
                    self.offload_once().await;
                }
                _ = retention.tick() => self.housekeeping(true).await,
                _ = isr.tick() => self.maintain_isr().await,
                _ = gc.tick() => {
                    self.collect_garbage(self.settings.cold_gc_grace_ms).await;
                }
                _ = compaction.tick() => self.compact_metadata().await,
                _ = offsets_expiry.tick() => self.expire_offsets().await,
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Stops accepting work, lets in-sync followers copy what this broker
    /// leads (bounded by `grace`), fsyncs every replica and releases the
    /// session, so leadership moves at once.
    pub async fn shutdown_with_grace(&self, grace: Duration) {
        self.shutdown.cancel();
        self.drain_to_followers(grace).await;
        let followers: Vec<FollowerHandle> = self
            .following
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, h)| h)
            .collect();
        let mut replicas = self.hosted_partitions();
        for h in followers {
            replicas.push(h.stop().await);
        }
        for p in &replicas {
            let flushed = flush_partition(p, self.clock.now_ms(), &self.metrics.log_flushes);
            if let Err(e) = flushed.await {
                tracing::error!(partition = %p.name(), error = %e, "flush at shutdown failed");
            }
        }
        self.close_session().await;
    }

    /// [`Broker::shutdown_with_grace`] with 5 s for followers to catch up.
    pub async fn shutdown(&self) {
        self.shutdown_with_grace(Duration::from_secs(5)).await;
    }
}

/// KIP-320: a client naming an older leader epoch than this leader's is
/// fenced (it must refresh metadata); a newer one means this broker lags.
fn check_leader_epoch(p: &Partition, client_epoch: i32) -> Result<(), BrokerError> {
    let mine = p.leader_epoch();
    if client_epoch < mine {
        return Err(BrokerError::FencedLeaderEpoch(format!(
            "{client_epoch} for {}",
            p.name()
        )));
    }
    if client_epoch > mine {
        return Err(BrokerError::UnknownLeaderEpoch(format!(
            "{client_epoch} for {}",
            p.name()
        )));
    }
    Ok(())
}

/// True if `records` holds compressed batches worth moving off an async
/// worker to check (at least [`DECOMPRESS_OFF_WORKER`] bytes of them), and
/// the runtime can (`block_in_place` needs the multi-threaded one).
fn decompresses_much(records: &Bytes) -> bool {
    let compressed: usize = strata_record::BatchIter::new(records)
        .filter(|(_, h)| {
            h.compression()
                .is_ok_and(|c| c != strata_record::Compression::None)
        })
        .map(|(_, h)| h.total_size())
        .sum();
    compressed >= DECOMPRESS_OFF_WORKER
        && tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// Compressed bytes in one produce from which checking them leaves the
/// async worker (smaller ones are checked in place: the hand-off would
/// cost about what they take).
const DECOMPRESS_OFF_WORKER: usize = 64 << 10;
