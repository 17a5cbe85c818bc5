//! The cluster view: the part of the metadata store a broker answers
//! requests from, rebuilt from a range read and then updated event by event
//! from a watch. Values that fail to decode are logged and skipped.

use super::records::{BrokerRecord, CoordinatorRecord, LeaderRecord, SegmentEntry};
use crate::config::TopicConfig;
use crate::keys::{Keys, ParsedKey};
use crate::topics::{from_json, PartitionStateRecord, TopicRecord};
use std::collections::BTreeMap;
use std::sync::Arc;
use strata_meta::{KeyValue, LeaseId, WatchEvent};

#[derive(Debug, Clone)]
pub struct TopicEntry {
    pub record: TopicRecord,
    pub config: Arc<TopicConfig>,
    /// The revision the topic key was created at (it tells this topic from
    /// an earlier one of the same name).
    pub create_revision: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateEntry {
    pub state: PartitionStateRecord,
    pub mod_revision: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderEntry {
    pub leader: LeaderRecord,
    pub lease: LeaseId,
    /// Create revision of the leader key: the leader's fencing token for its
    /// own metadata writes.
    pub create_revision: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoordinatorEntry {
    pub broker: i32,
    pub lease: LeaseId,
}

/// One topic as requests see it.
#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub name: String,
    pub id: uuid::Uuid,
    pub replication_factor: i16,
    pub config: Arc<TopicConfig>,
    pub partitions: Vec<PartitionInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub index: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: Option<LeaderRecord>,
}

#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub revision: i64,
    pub brokers: BTreeMap<i32, BrokerRecord>,
    pub topics: BTreeMap<String, TopicEntry>,
    pub states: BTreeMap<(String, i32), StateEntry>,
    pub leaders: BTreeMap<(String, i32), LeaderEntry>,
    pub coordinators: BTreeMap<String, CoordinatorEntry>,
    /// Transaction coordinators, by transactional id.
    pub txn_coordinators: BTreeMap<String, CoordinatorEntry>,
    /// Transactional ids' stored state (for recovery after a coordinator
    /// dies, and for ListTransactions).
    pub txns: BTreeMap<String, crate::txn::TxnRecord>,
    /// The cold-segment manifest, by partition then base offset.
    pub segments: BTreeMap<(String, i32), BTreeMap<i64, SegmentEntry>>,
}

impl ClusterView {
    pub fn load(
        keys: &Keys,
        kvs: &[KeyValue],
        revision: i64,
        defaults: &BTreeMap<String, String>,
    ) -> Self {
        let mut v = Self::default();
        for kv in kvs {
            v.put(keys, kv, defaults);
        }
        v.revision = revision;
        v
    }

    pub fn apply(&mut self, keys: &Keys, ev: &WatchEvent, defaults: &BTreeMap<String, String>) {
        match ev {
            WatchEvent::Put(kv) => self.put(keys, kv, defaults),
            WatchEvent::Delete { key, .. } => self.delete(keys, key),
        }
        self.revision = self.revision.max(ev.revision());
    }

    fn put(&mut self, keys: &Keys, kv: &KeyValue, defaults: &BTreeMap<String, String>) {
        let parsed = keys.parse(&kv.key);
        let result: Result<(), String> = (|| {
            match parsed {
                ParsedKey::Broker(id) => {
                    self.brokers
                        .insert(id, from_json(&kv.value).map_err(|e| e.to_string())?);
                }
                ParsedKey::Topic(name) => {
                    let record: TopicRecord = from_json(&kv.value).map_err(|e| e.to_string())?;
                    let config = TopicConfig::new(record.configs.clone(), defaults.clone())
                        .map_err(|e| e.to_string())?;
                    self.topics.insert(
                        name,
                        TopicEntry {
                            record,
                            config: Arc::new(config),
                            create_revision: kv.create_revision,
                        },
                    );
                }
                ParsedKey::PartitionState(t, p) => {
                    let state = from_json(&kv.value).map_err(|e| e.to_string())?;
                    self.states.insert(
                        (t, p),
                        StateEntry {
                            state,
                            mod_revision: kv.mod_revision,
                        },
                    );
                }
                ParsedKey::PartitionLeader(t, p) => {
                    let leader = from_json(&kv.value).map_err(|e| e.to_string())?;
                    self.leaders.insert(
                        (t, p),
                        LeaderEntry {
                            leader,
                            lease: kv.lease,
                            create_revision: kv.create_revision,
                        },
                    );
                }
                ParsedKey::Segment(t, p, base) => {
                    let e: SegmentEntry = from_json(&kv.value).map_err(|e| e.to_string())?;
                    self.segments.entry((t, p)).or_default().insert(base, e);
                }
                ParsedKey::Coordinator(g) => {
                    let c: CoordinatorRecord = from_json(&kv.value).map_err(|e| e.to_string())?;
                    self.coordinators.insert(
                        g,
                        CoordinatorEntry {
                            broker: c.broker,
                            lease: kv.lease,
                        },
                    );
                }
                ParsedKey::TxnCoordinator(t) => {
                    let c: CoordinatorRecord = from_json(&kv.value).map_err(|e| e.to_string())?;
                    self.txn_coordinators.insert(
                        t,
                        CoordinatorEntry {
                            broker: c.broker,
                            lease: kv.lease,
                        },
                    );
                }
                ParsedKey::TxnState(t) => {
                    self.txns
                        .insert(t, from_json(&kv.value).map_err(|e| e.to_string())?);
                }
                ParsedKey::Other => {}
            }
            Ok(())
        })();
        if let Err(e) = result {
            tracing::error!(key = %kv.key, error = %e, "skipping unreadable metadata value");
        }
    }

    fn delete(&mut self, keys: &Keys, key: &str) {
        match keys.parse(key) {
            ParsedKey::Broker(id) => {
                self.brokers.remove(&id);
            }
            ParsedKey::Topic(name) => {
                self.topics.remove(&name);
            }
            ParsedKey::PartitionState(t, p) => {
                self.states.remove(&(t, p));
            }
            ParsedKey::PartitionLeader(t, p) => {
                self.leaders.remove(&(t, p));
            }
            ParsedKey::Segment(t, p, base) => {
                if let Some(m) = self.segments.get_mut(&(t.clone(), p)) {
                    m.remove(&base);
                    if m.is_empty() {
                        self.segments.remove(&(t, p));
                    }
                }
            }
            ParsedKey::Coordinator(g) => {
                self.coordinators.remove(&g);
            }
            ParsedKey::TxnCoordinator(t) => {
                self.txn_coordinators.remove(&t);
            }
            ParsedKey::TxnState(t) => {
                self.txns.remove(&t);
            }
            ParsedKey::Other => {}
        }
    }

    /// The cold segment holding `offset`, if any.
    pub fn cold_segment(&self, topic: &str, p: i32, offset: i64) -> Option<SegmentEntry> {
        let m = self.segments.get(&(topic.to_string(), p))?;
        let (_, e) = m.range(..=offset).next_back()?;
        (offset <= e.last_offset).then(|| e.clone())
    }

    /// First offset in the cold tier, if any.
    pub fn cold_start(&self, topic: &str, p: i32) -> Option<i64> {
        self.segments
            .get(&(topic.to_string(), p))
            .and_then(|m| m.values().next().map(|e| e.base_offset))
    }

    /// The segment after the one ending before `offset` (for reads that fall
    /// in a gap between cold segments, e.g. aborted or compacted records).
    pub fn next_cold_segment(&self, topic: &str, p: i32, offset: i64) -> Option<SegmentEntry> {
        let m = self.segments.get(&(topic.to_string(), p))?;
        m.range(offset..).next().map(|(_, e)| e.clone())
    }

    pub fn topic(&self, name: &str) -> Option<TopicInfo> {
        let entry = self.topics.get(name)?;
        let partitions = (0..entry.record.partitions)
            .map(|p| {
                let key = (name.to_string(), p);
                let state = self.states.get(&key);
                PartitionInfo {
                    index: p,
                    replicas: state.map(|s| s.state.replicas.clone()).unwrap_or_default(),
                    isr: state.map(|s| s.state.isr.clone()).unwrap_or_default(),
                    leader: self.leaders.get(&key).map(|l| l.leader),
                }
            })
            .collect();
        Some(TopicInfo {
            name: name.to_string(),
            id: uuid::Uuid::parse_str(&entry.record.id).unwrap_or_default(),
            replication_factor: entry.record.replication_factor,
            config: entry.config.clone(),
            partitions,
        })
    }

    pub fn topic_names(&self) -> Vec<String> {
        self.topics.keys().cloned().collect()
    }
}
