//! Consumer group coordination (classic protocol) and committed offsets.
//!
//! [`GroupCoordinator`] owns every group this broker coordinates: the
//! membership state machines ([`group::Group`]) and the committed offsets,
//! which live in the metadata store under `groups/<g>/offsets/<t>/<p>` (one
//! transaction per OffsetCommit) with an in-memory copy for OffsetFetch.

mod deleted;
mod expiry;
mod group;
mod pending;
#[cfg(test)]
mod tests;

pub use group::{Group, GroupState, GroupTimings, Reply};

use crate::clock::Clock;
use crate::keys::Keys;
use crate::topics::{from_json, to_json};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use strata_meta::{MetadataStore, Op, Txn};
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GroupError {
    #[error("unknown member id")]
    UnknownMemberId,
    #[error("illegal generation")]
    IllegalGeneration,
    #[error("rebalance in progress")]
    RebalanceInProgress,
    #[error("inconsistent group protocol")]
    InconsistentGroupProtocol,
    #[error("member id required: rejoin with {0}")]
    MemberIdRequired(String),
    #[error("session timeout outside the broker's allowed range")]
    InvalidSessionTimeout,
    #[error("group id not found")]
    GroupIdNotFound,
    #[error("group is not empty")]
    NonEmptyGroup,
    #[error("coordinator not available")]
    CoordinatorNotAvailable,
    #[error("not the coordinator of this group")]
    NotCoordinator,
    #[error("invalid group id")]
    InvalidGroupId,
    #[error("group is subscribed to the topic")]
    GroupSubscribedToTopic,
    #[error("offset store failure: {0}")]
    OffsetStore(String),
}

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// KIP-394 (JoinGroup v4+): hand out a member id and make the client rejoin.
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Only the leader gets the member list.
    pub members: Vec<JoinedMember>,
}

#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub group_id: String,
    pub member_id: String,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp: i64,
    /// The id of the topic it was committed for (`TopicRecord::id`): a
    /// topic deleted and created again under its name is another topic,
    /// and none of its predecessor's offsets are its own (as Kafka deletes
    /// a deleted topic's offsets). None in offsets committed before ids
    /// were recorded, which are taken as the current topic's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
}

/// The most bytes of metadata a committed offset may carry (Kafka's
/// `offset.metadata.max.bytes` default): offsets are held in memory and in
/// the metadata store, whose requests are bounded too.
pub const OFFSET_METADATA_MAX_BYTES: usize = 4096;

impl CommittedOffset {
    /// Whether its metadata is within [`OFFSET_METADATA_MAX_BYTES`] (a
    /// commit of one that is not is refused for that partition).
    pub fn metadata_fits(&self) -> bool {
        self.metadata
            .as_ref()
            .is_none_or(|m| m.len() <= OFFSET_METADATA_MAX_BYTES)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: GroupState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

type TopicPartition = (String, i32);

pub struct GroupCoordinator {
    meta: Arc<dyn MetadataStore>,
    keys: Keys,
    clock: Arc<dyn Clock>,
    timings: GroupTimings,
    groups: Mutex<HashMap<String, Arc<Mutex<Group>>>>,
    offsets: Mutex<HashMap<String, BTreeMap<TopicPartition, CommittedOffset>>>,
    /// Offsets committed by transactions still in flight, per group.
    pending: Mutex<HashMap<String, pending::Pending>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Group state changes are applied step by step with no fallible work
    // half-way, so a poisoned lock still guards a consistent value.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn await_reply<T>(r: Reply<T>) -> Result<T, GroupError> {
    match r {
        Reply::Now(r) => r,
        Reply::Later(rx) => rx.await.unwrap_or(Err(GroupError::CoordinatorNotAvailable)),
    }
}

impl GroupCoordinator {
    pub fn new(
        meta: Arc<dyn MetadataStore>,
        keys: Keys,
        clock: Arc<dyn Clock>,
        timings: GroupTimings,
    ) -> Self {
        Self {
            meta,
            keys,
            clock,
            timings,
            groups: Mutex::new(HashMap::new()),
            offsets: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Loads one group's committed offsets from the metadata store (when
    /// this broker becomes its coordinator), replacing any cached copy.
    pub async fn load_group(&self, group: &str) -> Result<(), GroupError> {
        let range = self
            .meta
            .range(&self.keys.group_offsets_prefix(group))
            .await
            .map_err(|e| GroupError::OffsetStore(e.to_string()))?;
        let mut loaded = BTreeMap::new();
        for kv in range.kvs {
            let Some((_, t, p)) = self.keys.parse_group_offset(&kv.key) else {
                continue;
            };
            match from_json::<CommittedOffset>(&kv.value) {
                Ok(o) => {
                    loaded.insert((t, p), o);
                }
                Err(e) => {
                    tracing::error!(key = %kv.key, error = %e, "skipping unreadable committed offset")
                }
            }
        }
        {
            let mut offsets = lock(&self.offsets);
            if loaded.is_empty() {
                offsets.remove(group);
            } else {
                offsets.insert(group.to_string(), loaded);
            }
        }
        // Its offsets' retention counts from now at the earliest: whether
        // it had members before is not known here.
        self.group(group);
        self.load_pending(group).await
    }

    /// Drops every group's state (the coordinator role was lost); members
    /// get errors, find the new coordinator and rejoin there.
    pub fn forget_all(&self) {
        let groups: Vec<_> = lock(&self.groups).drain().map(|(_, g)| g).collect();
        for g in groups {
            lock(&g).shutdown();
        }
        lock(&self.offsets).clear();
        lock(&self.pending).clear();
    }

    fn group(&self, id: &str) -> Arc<Mutex<Group>> {
        lock(&self.groups)
            .entry(id.to_string())
            .or_insert_with(|| {
                let mut g = Group::new(id.to_string());
                g.active_ms = self.clock.now_ms();
                Arc::new(Mutex::new(g))
            })
            .clone()
    }

    fn existing(&self, id: &str) -> Option<Arc<Mutex<Group>>> {
        lock(&self.groups).get(id).cloned()
    }

    pub async fn join(&self, req: JoinRequest) -> Result<JoinResponse, GroupError> {
        if req.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let g = self.group(&req.group_id);
        let reply = lock(&g).join(req, self.clock.now_ms(), &self.timings);
        await_reply(reply).await
    }

    pub async fn sync(&self, req: SyncRequest) -> Result<SyncResponse, GroupError> {
        let Some(g) = self.existing(&req.group_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        let reply = lock(&g).sync(req);
        await_reply(reply).await
    }

    pub fn heartbeat(&self, group: &str, member: &str, generation: i32) -> Result<(), GroupError> {
        let Some(g) = self.existing(group) else {
            return Err(GroupError::UnknownMemberId);
        };
        let r = lock(&g).heartbeat(member, generation, self.clock.now_ms());
        r
    }

    pub fn leave(
        &self,
        group: &str,
        members: &[String],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let Some(g) = self.existing(group) else {
            return Err(GroupError::UnknownMemberId);
        };
        let r = lock(&g).leave(members, self.clock.now_ms(), &self.timings);
        Ok(r)
    }

    /// Advances every group's timers; the broker calls this periodically.
    pub fn tick(&self) {
        let now = self.clock.now_ms();
        let groups: Vec<_> = lock(&self.groups).values().cloned().collect();
        for g in groups {
            let mut g = lock(&g);
            g.tick(now, &self.timings);
            if !g.is_empty() {
                g.active_ms = now;
            }
        }
    }

    pub async fn commit_offsets(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        offsets: Vec<(String, i32, CommittedOffset)>,
    ) -> Result<(), GroupError> {
        if group.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        {
            let g = self.group(group);
            let r = lock(&g).validate_commit(member_id, generation);
            r?;
        }
        let mut ops = Vec::with_capacity(offsets.len());
        for (t, p, o) in &offsets {
            let value = to_json(o).map_err(|e| GroupError::OffsetStore(e.to_string()))?;
            ops.push(Op::put(self.keys.group_offset(group, t, *p), value));
        }
        // One key per partition, so a commit of more partitions than a
        // transaction holds is written in parts (each offset stands alone,
        // as Kafka's per-partition commit results do).
        strata_meta::apply_in_chunks(&*self.meta, ops)
            .await
            .map_err(|e| GroupError::OffsetStore(e.to_string()))?;
        let mut all = lock(&self.offsets);
        let entry = all.entry(group.to_string()).or_default();
        for (t, p, o) in offsets {
            entry.insert((t, p), o);
        }
        Ok(())
    }

    /// Committed offsets: for the given partitions, or all of the group's.
    pub fn fetch_offsets(
        &self,
        group: &str,
        partitions: Option<&[(String, i32)]>,
    ) -> Vec<(String, i32, Option<CommittedOffset>)> {
        let all = lock(&self.offsets);
        let committed = all.get(group);
        match partitions {
            Some(ps) => ps
                .iter()
                .map(|(t, p)| {
                    let o = committed.and_then(|c| c.get(&(t.clone(), *p)).cloned());
                    (t.clone(), *p, o)
                })
                .collect(),
            None => committed
                .map(|c| {
                    c.iter()
                        .map(|((t, p), o)| (t.clone(), *p, Some(o.clone())))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    pub fn list(&self) -> Vec<GroupListing> {
        let mut out: BTreeMap<String, GroupListing> = BTreeMap::new();
        for (id, g) in lock(&self.groups).iter() {
            let g = lock(g);
            if g.state == GroupState::Dead {
                continue;
            }
            out.insert(
                id.clone(),
                GroupListing {
                    group_id: id.clone(),
                    protocol_type: g.protocol_type.clone().unwrap_or_default(),
                    state: g.state,
                },
            );
        }
        for id in lock(&self.offsets).keys() {
            out.entry(id.clone()).or_insert_with(|| GroupListing {
                group_id: id.clone(),
                protocol_type: "consumer".to_string(),
                state: GroupState::Empty,
            });
        }
        out.into_values().collect()
    }

    pub fn describe(&self, group: &str) -> GroupDescription {
        let known_offsets = lock(&self.offsets).contains_key(group);
        let Some(g) = self.existing(group) else {
            return GroupDescription {
                group_id: group.to_string(),
                state: if known_offsets {
                    GroupState::Empty
                } else {
                    GroupState::Dead
                },
                protocol_type: if known_offsets {
                    "consumer".into()
                } else {
                    String::new()
                },
                protocol: String::new(),
                members: Vec::new(),
            };
        };
        let g = lock(&g);
        let protocol = g.protocol.clone().unwrap_or_default();
        let mut members: Vec<&group::Member> = g.members.values().collect();
        members.sort_by_key(|m| m.join_seq);
        GroupDescription {
            group_id: group.to_string(),
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: protocol.clone(),
            members: members
                .into_iter()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == protocol)
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    pub async fn delete_group(&self, group: &str) -> Result<(), GroupError> {
        let had_offsets = lock(&self.offsets).contains_key(group);
        let live = self.existing(group);
        if let Some(g) = &live {
            if !lock(g).is_empty() {
                return Err(GroupError::NonEmptyGroup);
            }
        }
        if live.is_none() && !had_offsets {
            return Err(GroupError::GroupIdNotFound);
        }
        self.meta
            .txn(Txn::new().then(Op::delete_prefix(self.keys.group_prefix(group))))
            .await
            .map_err(|e| GroupError::OffsetStore(e.to_string()))?;
        lock(&self.offsets).remove(group);
        lock(&self.groups).remove(group);
        tracing::info!(group, "deleted group");
        Ok(())
    }

    /// OffsetDelete: removes committed offsets of partitions whose topic the
    /// group's live members are not subscribed to (`subscribed`).
    pub async fn delete_offsets(
        &self,
        group: &str,
        partitions: &[(String, i32)],
        subscribed: &[String],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let known = lock(&self.offsets).contains_key(group) || self.existing(group).is_some();
        if !known {
            return Err(GroupError::GroupIdNotFound);
        }
        let mut results = Vec::new();
        let mut ops = Vec::new();
        let mut removed = Vec::new();
        for (t, p) in partitions {
            if subscribed.contains(t) {
                results.push(Err(GroupError::GroupSubscribedToTopic));
            } else {
                ops.push(Op::Delete {
                    key: self.keys.group_offset(group, t, *p),
                });
                removed.push((t.clone(), *p));
                results.push(Ok(()));
            }
        }
        strata_meta::apply_in_chunks(&*self.meta, ops)
            .await
            .map_err(|e| GroupError::OffsetStore(e.to_string()))?;
        if let Some(c) = lock(&self.offsets).get_mut(group) {
            for tp in removed {
                c.remove(&tp);
            }
        }
        Ok(results)
    }
}
