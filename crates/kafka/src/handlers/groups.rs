//! Group coordination APIs (classic protocol) and committed offsets.

use super::{str, Ctx};
use crate::errors::{refused, returned_group_error_code, NONE};
use bytes::Bytes;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    BrokerId, ConsumerProtocolSubscription, DeleteGroupsRequest, DeleteGroupsResponse,
    DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use strata_broker::cluster::BrokerRecord;
use strata_broker::groups::{self as g, CommittedOffset, GroupError};

/// FindCoordinator key types.
const KEY_GROUP: i8 = 0;
const KEY_TRANSACTION: i8 = 1;

pub fn find_coordinator(ctx: &Ctx, r: FindCoordinatorRequest, v: i16) -> FindCoordinatorResponse {
    let mut resp = FindCoordinatorResponse::default();
    // (error code, message, coordinator) for one key.
    let lookup = |key: &str| -> (i16, Option<String>, Option<BrokerRecord>) {
        if !strata_broker::keys::id_fits(key) {
            return (
                refused(&ctx.broker.metrics, ResponseError::InvalidRequest),
                Some(format!(
                    "a coordinator key of {} bytes is longer than the {} a Kafka string holds",
                    key.len(),
                    strata_broker::keys::MAX_ID_BYTES
                )),
                None,
            );
        }
        let found = match r.key_type {
            KEY_GROUP => ctx.broker.coordinator_for(key),
            KEY_TRANSACTION => ctx.broker.txn_coordinator_for(key),
            other => {
                return (
                    refused(&ctx.broker.metrics, ResponseError::InvalidRequest),
                    Some(format!("unknown coordinator key type {other}")),
                    None,
                )
            }
        };
        match found {
            Some(b) => (NONE, None, Some(b)),
            None => (
                refused(&ctx.broker.metrics, ResponseError::CoordinatorNotAvailable),
                Some("no live broker".into()),
                None,
            ),
        }
    };
    if v >= 4 {
        resp.coordinators = r
            .coordinator_keys
            .iter()
            .map(|k| {
                let (code, msg, b) = lookup(k.as_str());
                let mut c = Coordinator::default();
                c.key = k.clone();
                c.error_code = code;
                c.error_message = msg.map(str);
                match b {
                    Some(b) => {
                        c.node_id = BrokerId(b.id);
                        c.host = str(b.host);
                        c.port = b.port;
                    }
                    None => c.node_id = BrokerId(-1),
                }
                c
            })
            .collect();
    } else {
        let (code, msg, b) = lookup(r.key.as_str());
        resp.error_code = code;
        if v >= 1 {
            resp.error_message = msg.map(str);
        }
        match b {
            Some(b) => {
                resp.node_id = BrokerId(b.id);
                resp.host = str(b.host);
                resp.port = b.port;
            }
            None => resp.node_id = BrokerId(-1),
        }
    }
    resp
}

pub async fn join(
    ctx: &Ctx,
    r: JoinGroupRequest,
    v: i16,
    client_id: String,
    peer: SocketAddr,
) -> JoinGroupResponse {
    let req = g::JoinRequest {
        group_id: r.group_id.to_string(),
        member_id: r.member_id.to_string(),
        group_instance_id: r.group_instance_id.map(|s| s.to_string()),
        client_id,
        client_host: format!("/{}", peer.ip()),
        session_timeout_ms: r.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if v >= 1 {
            r.rebalance_timeout_ms
        } else {
            r.session_timeout_ms
        },
        protocol_type: r.protocol_type.to_string(),
        protocols: r
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: v >= 4,
    };
    let mut resp = JoinGroupResponse::default();
    resp.generation_id = -1;
    if let Err(e) = ctx.broker.ensure_coordinator(&req.group_id).await {
        resp.error_code = returned_group_error_code(&ctx.broker.metrics, &e);
        return resp;
    }
    match ctx.broker.groups.join(req).await {
        Ok(j) => {
            resp.generation_id = j.generation;
            resp.protocol_type = j.protocol_type.map(str);
            resp.protocol_name = j.protocol_name.map(str);
            resp.leader = str(j.leader);
            resp.member_id = str(j.member_id);
            resp.members = j
                .members
                .into_iter()
                .map(|m| {
                    let mut jm = JoinGroupResponseMember::default();
                    jm.member_id = str(m.member_id);
                    jm.group_instance_id = m.instance_id.map(str);
                    jm.metadata = m.metadata;
                    jm
                })
                .collect();
        }
        Err(e) => {
            if let GroupError::MemberIdRequired(id) = &e {
                resp.member_id = str(id.clone());
            }
            resp.error_code = returned_group_error_code(&ctx.broker.metrics, &e);
        }
    }
    resp
}

pub async fn sync(ctx: &Ctx, r: SyncGroupRequest, v: i16) -> SyncGroupResponse {
    let req = g::SyncRequest {
        group_id: r.group_id.to_string(),
        member_id: r.member_id.to_string(),
        generation: r.generation_id,
        protocol_type: r.protocol_type.map(|s| s.to_string()),
        protocol_name: r.protocol_name.map(|s| s.to_string()),
        assignments: r
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    let mut resp = SyncGroupResponse::default();
    if let Err(e) = ctx.broker.ensure_coordinator(&req.group_id).await {
        resp.error_code = returned_group_error_code(&ctx.broker.metrics, &e);
        return resp;
    }
    match ctx.broker.groups.sync(req).await {
        Ok(s) => {
            if v >= 5 {
                resp.protocol_type = s.protocol_type.map(str);
                resp.protocol_name = s.protocol_name.map(str);
            }
            resp.assignment = s.assignment;
        }
        Err(e) => resp.error_code = returned_group_error_code(&ctx.broker.metrics, &e),
    }
    resp
}

pub async fn heartbeat(ctx: &Ctx, r: HeartbeatRequest, _v: i16) -> HeartbeatResponse {
    let mut resp = HeartbeatResponse::default();
    if let Err(e) = ctx.broker.ensure_coordinator(&r.group_id).await {
        resp.error_code = returned_group_error_code(&ctx.broker.metrics, &e);
        return resp;
    }
    if let Err(e) = ctx
        .broker
        .groups
        .heartbeat(&r.group_id, &r.member_id, r.generation_id)
    {
        resp.error_code = returned_group_error_code(&ctx.broker.metrics, &e);
    }
    resp
}

pub async fn leave(ctx: &Ctx, r: LeaveGroupRequest, v: i16) -> LeaveGroupResponse {
    let mut resp = LeaveGroupResponse::default();
    if let Err(e) = ctx.broker.ensure_coordinator(&r.group_id).await {
        resp.error_code = returned_group_error_code(&ctx.broker.metrics, &e);
        return resp;
    }
    let members: Vec<(String, Option<String>)> = if v >= 3 {
        r.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(r.member_id.to_string(), None)]
    };
    let ids: Vec<String> = members.iter().map(|(m, _)| m.clone()).collect();
    match ctx.broker.groups.leave(&r.group_id, &ids) {
        Ok(results) => {
            if v >= 3 {
                resp.members = members
                    .into_iter()
                    .zip(results)
                    .map(|((id, inst), res)| {
                        let mut mr = MemberResponse::default();
                        mr.member_id = str(id);
                        mr.group_instance_id = inst.map(str);
                        mr.error_code = res
                            .err()
                            .map_or(NONE, |e| returned_group_error_code(&ctx.broker.metrics, &e));
                        mr
                    })
                    .collect();
            } else if let Some(Err(e)) = results.into_iter().next() {
                resp.error_code = returned_group_error_code(&ctx.broker.metrics, &e);
            }
        }
        Err(e) => resp.error_code = returned_group_error_code(&ctx.broker.metrics, &e),
    }
    resp
}

pub async fn offset_commit(ctx: &Ctx, r: OffsetCommitRequest, _v: i16) -> OffsetCommitResponse {
    let now = ctx.broker.now_ms();
    let mut resp = OffsetCommitResponse::default();
    let mut to_commit = Vec::new();
    // Per-partition result slots; `None` until the group commit decides.
    type Slots = Vec<(TopicName, Vec<(i32, Option<i16>)>)>;
    let mut slots: Slots = Vec::new();
    for t in &r.topics {
        let mut parts = Vec::new();
        for p in &t.partitions {
            let offset = CommittedOffset {
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                commit_timestamp: now,
                topic_id: ctx.broker.topic_id(&t.name),
            };
            if !offset.metadata_fits() {
                parts.push((
                    p.partition_index,
                    Some(refused(
                        &ctx.broker.metrics,
                        ResponseError::OffsetMetadataTooLarge,
                    )),
                ));
            } else if ctx.broker.has_partition(&t.name, p.partition_index) {
                to_commit.push((t.name.to_string(), p.partition_index, offset));
                parts.push((p.partition_index, None));
            } else {
                parts.push((
                    p.partition_index,
                    Some(refused(
                        &ctx.broker.metrics,
                        ResponseError::UnknownTopicOrPartition,
                    )),
                ));
            }
        }
        slots.push((t.name.clone(), parts));
    }
    let coordinator = ctx.broker.ensure_coordinator(&r.group_id).await;
    let group_result = if let Err(e) = coordinator {
        returned_group_error_code(&ctx.broker.metrics, &e)
    } else if to_commit.is_empty() {
        NONE
    } else {
        match ctx
            .broker
            .groups
            .commit_offsets(
                &r.group_id,
                &r.member_id,
                r.generation_id_or_member_epoch,
                to_commit,
            )
            .await
        {
            Ok(()) => NONE,
            Err(e) => {
                tracing::debug!(group = %r.group_id.as_str(), error = %e, "offset commit refused");
                returned_group_error_code(&ctx.broker.metrics, &e)
            }
        }
    };
    for (name, parts) in slots {
        let mut tr = OffsetCommitResponseTopic::default();
        tr.name = name;
        tr.partitions = parts
            .into_iter()
            .map(|(idx, code)| {
                let mut pr = OffsetCommitResponsePartition::default();
                pr.partition_index = idx;
                pr.error_code = code.unwrap_or(group_result);
                pr
            })
            .collect();
        resp.topics.push(tr);
    }
    resp
}

type Fetched = Vec<(String, i32, Option<CommittedOffset>)>;

fn fetch_group(ctx: &Ctx, group: &str, topics: Option<Vec<(String, Vec<i32>)>>) -> Fetched {
    let wanted: Option<Vec<(String, i32)>> = topics.map(|ts| {
        ts.into_iter()
            .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
            .collect()
    });
    ctx.broker.fetch_offsets(group, wanted.as_deref())
}

fn grouped(f: Fetched) -> BTreeMap<String, Vec<(i32, Option<CommittedOffset>)>> {
    let mut m: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for (t, p, o) in f {
        m.entry(t).or_default().push((p, o));
    }
    m
}

/// UNSTABLE_OFFSET_COMMIT when the client asks for stable offsets (KIP-447,
/// read_committed consumers) and a transaction in flight holds an offset of
/// the partition for the group; the client retries until it ends.
fn unstable(ctx: &Ctx, require_stable: bool, group: &str, topic: &str, p: i32) -> i16 {
    if require_stable && ctx.broker.groups.has_pending_offset(group, topic, p) {
        refused(&ctx.broker.metrics, ResponseError::UnstableOffsetCommit)
    } else {
        NONE
    }
}

pub async fn offset_fetch(ctx: &Ctx, r: OffsetFetchRequest, v: i16) -> OffsetFetchResponse {
    let mut resp = OffsetFetchResponse::default();
    if v >= 8 {
        for gq in r.groups {
            if let Err(e) = ctx.broker.ensure_coordinator(&gq.group_id).await {
                let mut gr = OffsetFetchResponseGroup::default();
                gr.group_id = gq.group_id.clone();
                gr.error_code = returned_group_error_code(&ctx.broker.metrics, &e);
                resp.groups.push(gr);
                continue;
            }
            let topics = gq.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.to_string(), t.partition_indexes))
                    .collect()
            });
            let mut gr = OffsetFetchResponseGroup::default();
            gr.group_id = gq.group_id.clone();
            for (t, parts) in grouped(fetch_group(ctx, &gq.group_id, topics)) {
                let mut tr = OffsetFetchResponseTopics::default();
                tr.name = TopicName(str(t.clone()));
                tr.partitions = parts
                    .into_iter()
                    .map(|(p, o)| {
                        let mut pr = OffsetFetchResponsePartitions::default();
                        pr.partition_index = p;
                        pr.committed_offset = o.as_ref().map_or(-1, |o| o.offset);
                        pr.committed_leader_epoch = o.as_ref().map_or(-1, |o| o.leader_epoch);
                        pr.metadata = Some(str(o.and_then(|o| o.metadata).unwrap_or_default()));
                        pr.error_code = unstable(ctx, r.require_stable, &gq.group_id, &t, p);
                        pr
                    })
                    .collect();
                gr.topics.push(tr);
            }
            resp.groups.push(gr);
        }
        return resp;
    }
    if let Err(e) = ctx.broker.ensure_coordinator(&r.group_id).await {
        resp.error_code = returned_group_error_code(&ctx.broker.metrics, &e);
        return resp;
    }
    let topics = r.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.to_string(), t.partition_indexes))
            .collect()
    });
    for (t, parts) in grouped(fetch_group(ctx, &r.group_id, topics)) {
        let mut tr = OffsetFetchResponseTopic::default();
        tr.name = TopicName(str(t.clone()));
        tr.partitions = parts
            .into_iter()
            .map(|(p, o)| {
                let mut pr = OffsetFetchResponsePartition::default();
                pr.partition_index = p;
                pr.committed_offset = o.as_ref().map_or(-1, |o| o.offset);
                if v >= 5 {
                    pr.committed_leader_epoch = o.as_ref().map_or(-1, |o| o.leader_epoch);
                }
                pr.metadata = Some(str(o.and_then(|o| o.metadata).unwrap_or_default()));
                pr.error_code = unstable(ctx, v >= 7 && r.require_stable, &r.group_id, &t, p);
                pr
            })
            .collect();
        resp.topics.push(tr);
    }
    resp
}

pub async fn list_groups(ctx: &Ctx, r: ListGroupsRequest, v: i16) -> ListGroupsResponse {
    let mut resp = ListGroupsResponse::default();
    let filter: Vec<String> = r.states_filter.iter().map(|s| s.to_lowercase()).collect();
    resp.groups = ctx
        .broker
        .list_groups()
        .await
        .into_iter()
        .filter(|l| filter.is_empty() || filter.contains(&l.state.as_str().to_lowercase()))
        .map(|l| {
            let mut lg = ListedGroup::default();
            lg.group_id = GroupId(str(l.group_id));
            lg.protocol_type = str(l.protocol_type);
            if v >= 4 {
                lg.group_state = str(l.state.as_str());
            }
            lg
        })
        .collect();
    resp
}

pub async fn describe_groups(
    ctx: &Ctx,
    r: DescribeGroupsRequest,
    _v: i16,
) -> DescribeGroupsResponse {
    let mut resp = DescribeGroupsResponse::default();
    for id in r.groups {
        if let Err(e) = ctx.broker.ensure_coordinator(&id).await {
            let mut dg = DescribedGroup::default();
            dg.group_id = id;
            dg.error_code = returned_group_error_code(&ctx.broker.metrics, &e);
            resp.groups.push(dg);
            continue;
        }
        let d = ctx.broker.groups.describe(&id);
        let mut dg = DescribedGroup::default();
        dg.group_id = id;
        dg.group_state = str(d.state.as_str());
        dg.protocol_type = str(d.protocol_type);
        dg.protocol_data = str(d.protocol);
        dg.members = d
            .members
            .into_iter()
            .map(|m| {
                let mut dm = DescribedGroupMember::default();
                dm.member_id = str(m.member_id);
                dm.group_instance_id = m.instance_id.map(str);
                dm.client_id = str(m.client_id);
                dm.client_host = str(m.client_host);
                dm.member_metadata = m.metadata;
                dm.member_assignment = m.assignment;
                dm
            })
            .collect();
        resp.groups.push(dg);
    }
    resp
}

pub async fn delete_groups(ctx: &Ctx, r: DeleteGroupsRequest, _v: i16) -> DeleteGroupsResponse {
    let mut resp = DeleteGroupsResponse::default();
    for id in r.groups_names {
        let mut res = DeletableGroupResult::default();
        let outcome = match ctx.broker.ensure_coordinator(&id).await {
            Ok(()) => ctx.broker.groups.delete_group(&id).await,
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            res.error_code = returned_group_error_code(&ctx.broker.metrics, &e);
        }
        res.group_id = id;
        resp.results.push(res);
    }
    resp
}

/// Topics the group's live consumer members subscribe to.
fn subscribed_topics(ctx: &Ctx, group: &str) -> Vec<String> {
    let d = ctx.broker.groups.describe(group);
    if d.protocol_type != "consumer" {
        return Vec::new();
    }
    let mut topics = Vec::new();
    for m in d.members {
        if let Some(sub) = decode_subscription(m.metadata) {
            topics.extend(sub.topics.iter().map(|t| t.to_string()));
        }
    }
    topics
}

/// A consumer member's subscription (its JoinGroup metadata: a version,
/// then the message), or `None` if it does not decode. The bytes are the
/// client's: decoded bounded, so a count they declare cannot size an
/// allocation.
fn decode_subscription(b: Bytes) -> Option<ConsumerProtocolSubscription> {
    crate::bounded::decode_versioned(b).ok()
}

pub async fn offset_delete(ctx: &Ctx, r: OffsetDeleteRequest, _v: i16) -> OffsetDeleteResponse {
    let mut resp = OffsetDeleteResponse::default();
    if let Err(e) = ctx.broker.ensure_coordinator(&r.group_id).await {
        resp.error_code = returned_group_error_code(&ctx.broker.metrics, &e);
        return resp;
    }
    let subscribed = subscribed_topics(ctx, &r.group_id);
    let tps: Vec<(String, i32)> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.to_string(), p.partition_index))
        })
        .collect();
    match ctx
        .broker
        .groups
        .delete_offsets(&r.group_id, &tps, &subscribed)
        .await
    {
        Ok(results) => {
            let mut it = results.into_iter();
            for t in r.topics {
                let mut tr = OffsetDeleteResponseTopic::default();
                tr.name = t.name;
                for p in t.partitions {
                    let mut pr = OffsetDeleteResponsePartition::default();
                    pr.partition_index = p.partition_index;
                    if let Some(Err(e)) = it.next() {
                        pr.error_code = returned_group_error_code(&ctx.broker.metrics, &e);
                    }
                    tr.partitions.push(pr);
                }
                resp.topics.push(tr);
            }
        }
        Err(e) => resp.error_code = returned_group_error_code(&ctx.broker.metrics, &e),
    }
    resp
}
