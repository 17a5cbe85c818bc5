//! AlterPartitionReassignments and ListPartitionReassignments (KIP-455):
//! moving replicas between brokers, as `kafka-reassign-partitions` and
//! `strata topic reassign` do. Any broker accepts them (the move is
//! recorded in the metadata store; the partition's leader completes it).

use super::{str, Ctx};
use crate::errors::broker_error;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use std::collections::BTreeMap;

pub async fn alter(
    ctx: &Ctx,
    r: AlterPartitionReassignmentsRequest,
    _v: i16,
) -> AlterPartitionReassignmentsResponse {
    let mut resp = AlterPartitionReassignmentsResponse::default();
    for t in r.topics {
        let mut tr = ReassignableTopicResponse::default();
        tr.name = t.name.clone();
        for p in t.partitions {
            let mut pr = ReassignablePartitionResponse::default();
            pr.partition_index = p.partition_index;
            let target = p.replicas.map(|v| v.into_iter().map(|b| b.0).collect());
            if let Err(e) = ctx
                .broker
                .reassign(&t.name, p.partition_index, target)
                .await
            {
                let (code, msg) = broker_error(&ctx.broker.metrics, &e);
                pr.error_code = code;
                pr.error_message = msg.map(str);
            }
            tr.partitions.push(pr);
        }
        resp.responses.push(tr);
    }
    resp
}

pub fn list(
    ctx: &Ctx,
    r: ListPartitionReassignmentsRequest,
    _v: i16,
) -> ListPartitionReassignmentsResponse {
    let wanted: Option<BTreeMap<String, Vec<i32>>> = r.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.to_string(), t.partition_indexes))
            .collect()
    });
    let mut by_topic: BTreeMap<String, Vec<OngoingPartitionReassignment>> = BTreeMap::new();
    for m in ctx.broker.reassignments() {
        let asked = wanted
            .as_ref()
            .is_none_or(|w| w.get(&m.topic).is_some_and(|ps| ps.contains(&m.partition)));
        if !asked {
            continue;
        }
        let ids = |v: &[i32]| v.iter().map(|b| BrokerId(*b)).collect::<Vec<_>>();
        let mut pr = OngoingPartitionReassignment::default();
        pr.partition_index = m.partition;
        pr.replicas = ids(&m.replicas);
        pr.adding_replicas = ids(&m.adding);
        pr.removing_replicas = ids(&m.removing);
        by_topic.entry(m.topic).or_default().push(pr);
    }
    let mut resp = ListPartitionReassignmentsResponse::default();
    for (name, partitions) in by_topic {
        let mut tr = OngoingTopicReassignment::default();
        tr.name = TopicName(str(name));
        tr.partitions = partitions;
        resp.topics.push(tr);
    }
    resp
}
