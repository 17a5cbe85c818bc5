//! Topic administration on [`Broker`]: create, delete, add partitions, alter
//! configs. Topic records and partition states are persisted in the
//! metadata store (DESIGN §5) before the topic becomes visible.

use crate::broker::Broker;
use crate::config::{is_known_config, validate_config, TopicConfig};
use crate::error::BrokerError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use strata_meta::{Compare, Op, Txn, MAX_TXN_OPS};

/// `topics/<name>` in the metadata store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub id: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
    /// When a broker last wrote the record (creation, growth, configs), by
    /// its clock: partition states still missing `STATE_REPAIR_AFTER_MS`
    /// later were left unwritten by a broker that stopped, and are
    /// repaired ([`Broker::repair_partition_states`]). 0 in records from
    /// before it.
    #[serde(default)]
    pub written_ms: i64,
}

/// How long after its record was written a topic's missing partition
/// states are taken as abandoned (the writer stopped between its
/// transactions) and written by any broker.
pub(crate) const STATE_REPAIR_AFTER_MS: i64 = 30_000;

/// `partitions/<topic>/<p>/state` in the metadata store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStateRecord {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader_epoch: i32,
    pub log_start_offset: i64,
    /// A reassignment in progress: the replica list to end with. Until every
    /// one of them is in sync, `replicas` holds both old and new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_replicas: Option<Vec<i32>>,
}

/// What a CreateTopics entry asks for (-1 means "broker default").
#[derive(Debug, Clone)]
pub struct CreateTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

/// One IncrementalAlterConfigs operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterOp {
    Set(String, String),
    Delete(String),
}

/// Kafka's topic name rules.
pub fn validate_topic_name(name: &str) -> Result<(), BrokerError> {
    let bad = |why: &str| BrokerError::InvalidTopic(name.to_string(), why.to_string());
    if name.is_empty() {
        return Err(bad("name is empty"));
    }
    if name == "." || name == ".." {
        return Err(bad("'.' and '..' are not allowed"));
    }
    if name.len() > 249 {
        return Err(bad("longer than 249 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
    {
        return Err(bad(
            "only ASCII letters, digits, '.', '_' and '-' are allowed",
        ));
    }
    Ok(())
}

impl Broker {
    /// Partition states for partitions `from..to`, placed by
    /// [`place_replicas`] over the live brokers; the first replica is the
    /// preferred leader.
    fn partition_state_ops(
        &self,
        name: &str,
        from: i32,
        to: i32,
        rf: i16,
    ) -> Result<Vec<Op>, BrokerError> {
        let brokers: Vec<(i32, Option<String>)> = self
            .view()
            .brokers
            .values()
            .map(|b| (b.id, b.rack.clone()))
            .collect();
        if brokers.is_empty() {
            return Err(BrokerError::Metadata(
                "no live brokers to place partitions on".into(),
            ));
        }
        let mut ops = Vec::new();
        for (p, replicas) in (from..to).zip(place_replicas(&brokers, name, from, to, rf)) {
            let state = PartitionStateRecord {
                isr: replicas.clone(),
                replicas,
                leader_epoch: 0,
                log_start_offset: 0,
                target_replicas: None,
            };
            ops.push(Op::put(
                self.keys.partition_state(name, p),
                to_json(&state)?,
            ));
        }
        Ok(ops)
    }

    /// After this broker's own write: refresh the view, take up any
    /// leadership it was given, and wait (bounded) for leaders elsewhere.
    async fn settle(&self, topic: &str) -> Result<(), BrokerError> {
        self.sync_view().await?;
        self.reconcile().await;
        self.await_leaders(topic, std::time::Duration::from_secs(5))
            .await;
        Ok(())
    }

    /// Creates a topic (or only validates it). Returns the resolved record.
    pub async fn create_topic(
        &self,
        req: CreateTopic,
        validate_only: bool,
    ) -> Result<TopicRecord, BrokerError> {
        validate_topic_name(&req.name)?;
        let partitions = match req.partitions {
            -1 => self.settings.num_partitions,
            n if n >= 1 => n,
            n => {
                return Err(BrokerError::InvalidPartitions(format!(
                    "partition count {n} must be at least 1"
                )))
            }
        };
        check_partition_cap(partitions)?;
        let rf = match req.replication_factor {
            -1 => self.settings.default_replication_factor,
            n => n,
        };
        if rf < 1 || rf as usize > self.live_brokers() {
            return Err(BrokerError::InvalidReplicationFactor(format!(
                "replication factor {rf} must be between 1 and the {} live broker(s)",
                self.live_brokers()
            )));
        }
        TopicConfig::new(req.configs.clone(), self.settings.topic_defaults.clone())?;
        let _guard = self.admin_lock.lock().await;
        if self.topic(&req.name).is_some() {
            return Err(BrokerError::TopicAlreadyExists(req.name));
        }
        let record = TopicRecord {
            id: uuid::Uuid::new_v4().to_string(),
            partitions,
            replication_factor: rf,
            configs: req.configs,
            written_ms: self.clock.now_ms(),
        };
        if validate_only {
            return Ok(record);
        }
        let key = self.keys.topic(&req.name);
        let mut states = self
            .partition_state_ops(&req.name, 0, partitions, rf)?
            .into_iter();
        let txn = record_with_states(
            Compare::CreateRevision(key.clone(), 0),
            &key,
            &record,
            &mut states,
        )?;
        let created = self.meta.txn(txn).await?;
        if !created.succeeded {
            return Err(BrokerError::TopicAlreadyExists(req.name));
        }
        self.put_more_states(&req.name, created.revision, states.collect())
            .await?;
        tracing::info!(topic = %req.name, partitions, "created topic");
        self.settle(&req.name).await?;
        Ok(record)
    }

    /// Deletes a topic's records (leaders included); every broker that led
    /// one of its partitions removes the local files when it sees that.
    pub async fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        let _guard = self.admin_lock.lock().await;
        let id = self
            .topic_id(name)
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition(name.to_string()))?;
        let objects: Vec<String> = self
            .view()
            .segments
            .iter()
            .filter(|((t, _), _)| t == name)
            .flat_map(|(_, m)| m.values().map(|e| e.object_key.clone()))
            .collect();
        self.meta
            .txn(
                Txn::new()
                    .then(Op::delete(self.keys.topic(name)))
                    .then(Op::delete_prefix(self.keys.partitions_prefix(name))),
            )
            .await?;
        self.sync_view().await?;
        self.reconcile().await;
        self.delete_topic_objects(objects).await;
        // After the topic: no commit for it is taken any more. Should this
        // fail, the offsets are still never read (their topic id is gone).
        match self.groups.forget_topic(name, &id).await {
            Ok(n) => tracing::debug!(topic = %name, offsets = n, "deleted the topic's offsets"),
            Err(e) => {
                tracing::warn!(topic = %name, error = %e, "cannot delete the topic's offsets")
            }
        }
        tracing::info!(topic = %name, "deleted topic");
        Ok(())
    }

    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let _guard = self.admin_lock.lock().await;
        let topic = self.require_topic(name)?;
        let current = topic.partitions.len() as i32;
        if count <= current {
            return Err(BrokerError::InvalidPartitions(format!(
                "topic {name} has {current} partitions; the new count {count} must be larger"
            )));
        }
        check_partition_cap(count)?;
        if validate_only {
            return Ok(());
        }
        let state_ops = self.partition_state_ops(name, current, count, topic.replication_factor)?;
        self.update_topic_record(name, |r| r.partitions = count, state_ops)
            .await?;
        self.settle(name).await
    }

    /// Applies IncrementalAlterConfigs operations to a topic.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        ops: Vec<AlterOp>,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let _guard = self.admin_lock.lock().await;
        let topic = self.require_topic(name)?;
        let mut overrides = topic.config.overrides.clone();
        for op in ops {
            match op {
                AlterOp::Set(k, v) => {
                    validate_config(&k, &v)?;
                    overrides.insert(k, v);
                }
                AlterOp::Delete(k) => {
                    if !is_known_config(&k) {
                        return Err(BrokerError::InvalidConfig(format!(
                            "unknown topic config name {k:?}"
                        )));
                    }
                    overrides.remove(&k);
                }
            }
        }
        TopicConfig::new(overrides.clone(), self.settings.topic_defaults.clone())?;
        if validate_only {
            return Ok(());
        }
        self.update_topic_record(name, |r| r.configs = overrides, Vec::new())
            .await?;
        // The reconcile applies the new config to hosted partitions.
        self.settle(name).await
    }
}

impl Broker {
    /// Writes partition states a topic's creation (or growth) did not fit
    /// in its own transaction, in transactions of at most `MAX_TXN_OPS`,
    /// each only while the topic is still the one created at revision
    /// `created` and those states are absent. Until then those partitions
    /// have no state and no leader (clients see LEADER_NOT_AVAILABLE and
    /// retry, as for any new partition); should this broker stop half way,
    /// [`Self::repair_partition_states`] writes the rest, through this.
    async fn put_more_states(
        &self,
        name: &str,
        created: i64,
        states: Vec<Op>,
    ) -> Result<(), BrokerError> {
        let key = self.keys.topic(name);
        let mut states = states.into_iter().peekable();
        while states.peek().is_some() {
            let chunk: Vec<Op> = states.by_ref().take(MAX_TXN_OPS - 1).collect();
            if !self.put_states_if_absent(&key, created, chunk).await? {
                let ours = self
                    .meta
                    .get(&key)
                    .await?
                    .is_some_and(|kv| kv.create_revision == created);
                if !ours {
                    return Err(BrokerError::UnknownTopicOrPartition(format!(
                        "{name}: deleted while its partitions were being created"
                    )));
                }
                // Another broker wrote some of these meanwhile (the
                // writer, or a repair of a writer this slow, past
                // `STATE_REPAIR_AFTER_MS`): the rest are left to it.
                tracing::warn!(topic = %name, "partition states written by another broker meanwhile");
                return Ok(());
            }
        }
        Ok(())
    }

    /// Writes `states` (puts of partition state keys, at most
    /// `MAX_TXN_OPS - 1`) in one transaction, only if none of them exists
    /// and the topic key is the one created at revision `created`. Whether
    /// it applied.
    async fn put_states_if_absent(
        &self,
        topic_key: &str,
        created: i64,
        states: Vec<Op>,
    ) -> Result<bool, BrokerError> {
        let compares = std::iter::once(Compare::CreateRevision(topic_key.to_string(), created))
            .chain(states.iter().filter_map(|op| match op {
                Op::Put { key, .. } => Some(Compare::CreateRevision(key.clone(), 0)),
                _ => None,
            }))
            .collect();
        let txn = Txn {
            compares,
            success: states,
            failure: Vec::new(),
        };
        Ok(self.meta.txn(txn).await?.succeeded)
    }

    /// Writes the partition states a topic's record says exist but that
    /// are missing `STATE_REPAIR_AFTER_MS` after the record was written:
    /// the broker writing them stopped between its transactions, and
    /// those partitions would otherwise never have a leader. Any broker may
    /// run it; each state is written only if still absent.
    pub(crate) async fn repair_partition_states(&self) {
        let now = self.clock.now_ms();
        let todo: Vec<(String, i64, i16, Vec<i32>)> = {
            let v = self.view();
            v.topics
                .iter()
                .filter(|(_, e)| now - e.record.written_ms >= STATE_REPAIR_AFTER_MS)
                .filter_map(|(name, e)| {
                    let missing: Vec<i32> = (0..e.record.partitions)
                        .filter(|p| !v.states.contains_key(&(name.clone(), *p)))
                        .collect();
                    (!missing.is_empty()).then(|| {
                        (
                            name.clone(),
                            e.create_revision,
                            e.record.replication_factor,
                            missing,
                        )
                    })
                })
                .collect()
        };
        for (name, created, rf, missing) in todo {
            let mut ops = Vec::with_capacity(missing.len());
            for &p in &missing {
                match self.partition_state_ops(&name, p, p + 1, rf) {
                    Ok(o) => ops.extend(o),
                    Err(e) => {
                        tracing::warn!(topic = %name, error = %e, "cannot place missing partitions");
                        return;
                    }
                }
            }
            // The writer's own transactions: each applies only while its
            // states are absent and the topic is still this one.
            match self.put_more_states(&name, created, ops).await {
                Ok(()) => tracing::warn!(
                    topic = %name,
                    partitions = missing.len(),
                    "wrote partition states the topic's writer left unwritten"
                ),
                Err(e) => {
                    tracing::warn!(topic = %name, error = %e, "cannot repair partition states")
                }
            }
        }
    }

    /// Read-modify-write of `topics/<name>`, guarded by its mod revision,
    /// with `extra` operations (partition states) in the same transaction,
    /// as many as fit; the rest follow ([`Self::put_more_states`]).
    async fn update_topic_record(
        &self,
        name: &str,
        change: impl FnOnce(&mut TopicRecord),
        extra: Vec<Op>,
    ) -> Result<(), BrokerError> {
        let key = self.keys.topic(name);
        let kv = self
            .meta
            .get(&key)
            .await?
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition(name.to_string()))?;
        let mut record: TopicRecord = from_json(&kv.value)?;
        change(&mut record);
        record.written_ms = self.clock.now_ms();
        let mut extra = extra.into_iter();
        let txn = record_with_states(
            Compare::ModRevision(key.clone(), kv.mod_revision),
            &key,
            &record,
            &mut extra,
        )?;
        if !self.meta.txn(txn).await?.succeeded {
            return Err(BrokerError::Metadata(format!(
                "topic {name} changed concurrently; retry"
            )));
        }
        self.put_more_states(name, kv.create_revision, extra.collect())
            .await
    }
}

/// A transaction writing `record` at `key` if `guard` holds, with as many
/// of `states` as fit beside it, taken from the iterator (the rest follow
/// in `Broker::put_more_states`).
fn record_with_states(
    guard: Compare,
    key: &str,
    record: &TopicRecord,
    states: &mut impl Iterator<Item = Op>,
) -> Result<Txn, BrokerError> {
    Ok(Txn {
        compares: vec![guard],
        success: std::iter::once(Op::put(key.to_string(), to_json(record)?))
            .chain(states.take(MAX_TXN_OPS - 1))
            .collect(),
        failure: Vec::new(),
    })
}

/// Upper bound on a topic's partition count.
const MAX_PARTITIONS: i32 = 100_000;

fn check_partition_cap(count: i32) -> Result<(), BrokerError> {
    if count > MAX_PARTITIONS {
        return Err(BrokerError::InvalidPartitions(format!(
            "partition count {count} is larger than {MAX_PARTITIONS}"
        )));
    }
    Ok(())
}

pub(crate) fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, BrokerError> {
    serde_json::to_vec(v).map_err(|e| BrokerError::Metadata(format!("cannot encode record: {e}")))
}

pub(crate) fn from_json<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, BrokerError> {
    serde_json::from_slice(b)
        .map_err(|e| BrokerError::Metadata(format!("cannot decode record: {e}")))
}

/// Replica lists for partitions `from..to`: round-robin from a per-topic
/// starting point over the brokers ordered rack by rack in turn (a broker
/// of each rack, then the next of each, ...), so consecutive replicas of a
/// partition sit in different racks whenever there are enough racks.
/// Brokers without a rack form one rack of their own.
pub(crate) fn place_replicas(
    brokers: &[(i32, Option<String>)],
    name: &str,
    from: i32,
    to: i32,
    rf: i16,
) -> Vec<Vec<i32>> {
    let mut racks: BTreeMap<Option<&str>, Vec<i32>> = BTreeMap::new();
    for (id, rack) in brokers {
        racks.entry(rack.as_deref()).or_default().push(*id);
    }
    for ids in racks.values_mut() {
        ids.sort_unstable();
    }
    let deepest = racks.values().map(Vec::len).max().unwrap_or(0);
    let order: Vec<i32> = (0..deepest)
        .flat_map(|i| racks.values().filter_map(move |ids| ids.get(i).copied()))
        .collect();
    if order.is_empty() {
        return Vec::new();
    }
    let start = name.bytes().fold(0usize, |h, b| {
        h.wrapping_mul(31).wrapping_add(usize::from(b))
    });
    (from..to)
        .map(|p| {
            (0..rf.max(0) as usize)
                .map(|r| order[(start + p as usize + r) % order.len()])
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod placement_tests {
    use super::place_replicas;

    #[test]
    fn replicas_spread_over_racks_and_leaders_over_brokers() {
        let brokers: Vec<(i32, Option<String>)> =
            [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")]
                .iter()
                .map(|(id, r)| (*id, Some(r.to_string())))
                .collect();
        let rack = |id: i32| brokers.iter().find(|b| b.0 == id).and_then(|b| b.1.clone());
        let placed = place_replicas(&brokers, "orders", 0, 12, 3);
        for replicas in &placed {
            let mut racks: Vec<_> = replicas.iter().map(|id| rack(*id)).collect();
            racks.sort();
            racks.dedup();
            assert_eq!(racks.len(), 3, "{replicas:?} spans every rack");
        }
        let mut leaders: Vec<i32> = placed.iter().map(|r| r[0]).collect();
        leaders.sort_unstable();
        leaders.dedup();
        assert_eq!(leaders.len(), 6, "every broker leads some partition");
        // Without racks: plain round-robin over distinct brokers.
        let plain: Vec<(i32, Option<String>)> = (1..=3).map(|i| (i, None)).collect();
        for r in place_replicas(&plain, "t", 0, 3, 3) {
            let mut s = r.clone();
            s.sort_unstable();
            assert_eq!(s, vec![1, 2, 3]);
        }
    }
}
