//! Metadata and DescribeCluster.

use super::{str, Ctx};
use crate::errors::{refused, returned_error_code};
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse,
    TopicName,
};
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;
use strata_broker::cluster::TopicInfo;
use strata_broker::metrics::Metrics;
use strata_broker::topics::CreateTopic;
use strata_broker::BrokerError;

fn topic_entry(m: &Metrics, t: &TopicInfo) -> MetadataResponseTopic {
    let mut e = MetadataResponseTopic::default();
    e.name = Some(TopicName(str(t.name.clone())));
    e.topic_id = t.id;
    e.partitions = t
        .partitions
        .iter()
        .map(|p| {
            let mut mp = MetadataResponsePartition::default();
            mp.partition_index = p.index;
            match p.leader {
                Some(l) => {
                    mp.leader_id = BrokerId(l.broker);
                    mp.leader_epoch = l.epoch;
                }
                None => {
                    mp.error_code = refused(m, ResponseError::LeaderNotAvailable);
                    mp.leader_id = BrokerId(-1);
                    mp.leader_epoch = -1;
                }
            }
            mp.replica_nodes = p.replicas.iter().map(|b| BrokerId(*b)).collect();
            mp.isr_nodes = p.isr.iter().map(|b| BrokerId(*b)).collect();
            mp
        })
        .collect();
    e
}

/// Every live broker, as clients should reach it.
fn brokers(ctx: &Ctx) -> Vec<MetadataResponseBroker> {
    ctx.broker
        .brokers()
        .into_iter()
        .map(|b| {
            let mut mb = MetadataResponseBroker::default();
            mb.node_id = BrokerId(b.id);
            mb.host = str(b.host);
            mb.port = b.port;
            mb.rack = b.rack.map(str);
            mb
        })
        .collect()
}

fn error_entry(name: Option<String>, code: i16) -> MetadataResponseTopic {
    let mut e = MetadataResponseTopic::default();
    e.name = name.map(|n| TopicName(str(n)));
    e.error_code = code;
    e
}

pub async fn metadata(ctx: &Ctx, r: MetadataRequest, v: i16) -> MetadataResponse {
    let b = &ctx.broker;
    let mut resp = MetadataResponse::default();
    resp.brokers = brokers(ctx);
    resp.cluster_id = Some(str(ctx.cluster_id.clone()));
    resp.controller_id = BrokerId(b.node_id());
    // v0: an empty list means all topics; v1+: null means all.
    let all = match &r.topics {
        None => true,
        Some(ts) => v == 0 && ts.is_empty(),
    };
    if all {
        resp.topics = b
            .topics()
            .iter()
            .map(|t| topic_entry(&b.metrics, t))
            .collect();
        return resp;
    }
    let auto_create = (v < 4 || r.allow_auto_topic_creation) && b.settings().auto_create_topics;
    for req_topic in r.topics.unwrap_or_default() {
        let name = match (&req_topic.name, req_topic.topic_id) {
            (Some(n), _) => n.to_string(),
            (None, id) if !id.is_nil() => match b.topics().into_iter().find(|t| t.id == id) {
                Some(t) => t.name.clone(),
                None => {
                    let mut e = error_entry(
                        None,
                        refused(&ctx.broker.metrics, ResponseError::UnknownTopicId),
                    );
                    e.topic_id = id;
                    resp.topics.push(e);
                    continue;
                }
            },
            _ => {
                resp.topics.push(error_entry(
                    None,
                    refused(&ctx.broker.metrics, ResponseError::InvalidRequest),
                ));
                continue;
            }
        };
        if b.topic(&name).is_none() && auto_create {
            let created = b
                .create_topic(
                    CreateTopic {
                        name: name.clone(),
                        partitions: -1,
                        replication_factor: -1,
                        configs: BTreeMap::new(),
                    },
                    false,
                )
                .await;
            match created {
                Ok(_) | Err(BrokerError::TopicAlreadyExists(_)) => {}
                Err(e) => {
                    tracing::info!(topic = %name, error = %e, "auto topic creation failed");
                    resp.topics.push(error_entry(
                        Some(name),
                        returned_error_code(&ctx.broker.metrics, &e),
                    ));
                    continue;
                }
            }
        }
        match b.topic(&name) {
            Some(t) => resp.topics.push(topic_entry(&b.metrics, &t)),
            None => resp.topics.push(error_entry(
                Some(name),
                refused(&ctx.broker.metrics, ResponseError::UnknownTopicOrPartition),
            )),
        }
    }
    resp
}

pub fn describe_cluster(ctx: &Ctx, _r: DescribeClusterRequest, _v: i16) -> DescribeClusterResponse {
    let mut resp = DescribeClusterResponse::default();
    resp.cluster_id = str(ctx.cluster_id.clone());
    resp.controller_id = BrokerId(ctx.broker.node_id());
    resp.brokers = ctx
        .broker
        .brokers()
        .into_iter()
        .map(|b| {
            let mut db = DescribeClusterBroker::default();
            db.broker_id = BrokerId(b.id);
            db.host = str(b.host);
            db.port = b.port;
            db.rack = b.rack.map(str);
            db
        })
        .collect();
    resp
}
