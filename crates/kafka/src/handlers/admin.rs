//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions,
//! DescribeConfigs, IncrementalAlterConfigs.

use super::{str, Ctx};
use crate::errors::{broker_error, refused};
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, TopicName,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;
use strata_broker::config::{ConfigEntry, ConfigSource, TopicConfig};
use strata_broker::topics::{AlterOp, CreateTopic};
use strata_broker::BrokerError;

/// Kafka's ConfigResource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

fn source_code(s: ConfigSource) -> i8 {
    match s {
        ConfigSource::Topic => 1,
        ConfigSource::Broker => 4,
        ConfigSource::Default => 5,
    }
}

pub async fn create_topics(ctx: &Ctx, r: CreateTopicsRequest, v: i16) -> CreateTopicsResponse {
    let mut resp = CreateTopicsResponse::default();
    for t in r.topics {
        let name = t.name.to_string();
        let mut res = CreatableTopicResult::default();
        res.name = t.name.clone();
        let mut configs = BTreeMap::new();
        let mut bad_config = None;
        for c in &t.configs {
            match &c.value {
                Some(val) => {
                    configs.insert(c.name.to_string(), val.to_string());
                }
                None => bad_config = Some(format!("config {} has a null value", c.name.as_str())),
            }
        }
        let (partitions, rf) = if t.assignments.is_empty() {
            (t.num_partitions, t.replication_factor)
        } else {
            // Manual assignment: every replica must be this broker.
            let rf = t.assignments[0].broker_ids.len() as i16;
            let me = ctx.broker.node_id();
            if t.assignments
                .iter()
                .any(|a| a.broker_ids.iter().any(|b| b.0 != me))
            {
                bad_config = Some(format!("replica assignment names brokers other than {me}"));
            }
            (t.assignments.len() as i32, rf)
        };
        let outcome = match bad_config {
            Some(msg) => Err(BrokerError::InvalidRequest(msg)),
            None => {
                ctx.broker
                    .create_topic(
                        CreateTopic {
                            name: name.clone(),
                            partitions,
                            replication_factor: rf,
                            configs,
                        },
                        r.validate_only,
                    )
                    .await
            }
        };
        match outcome {
            Ok(record) => {
                if v >= 5 {
                    res.num_partitions = record.partitions;
                    res.replication_factor = record.replication_factor;
                    let cfg = TopicConfig::new(
                        record.configs.clone(),
                        ctx.broker.settings().topic_defaults.clone(),
                    );
                    res.configs = cfg.ok().map(|c| {
                        c.describe()
                            .into_iter()
                            .map(|e| {
                                let mut ce = CreatableTopicConfigs::default();
                                ce.name = str(e.name);
                                ce.value = Some(str(e.value));
                                ce.read_only = e.read_only;
                                ce.config_source = source_code(e.source);
                                ce.is_sensitive = e.sensitive;
                                ce
                            })
                            .collect()
                    });
                }
                if v >= 7 {
                    res.topic_id = uuid::Uuid::parse_str(&record.id).unwrap_or_default();
                }
            }
            Err(e) => {
                tracing::debug!(topic = %name, error = %e, "create topic refused");
                let (code, msg) = broker_error(&ctx.broker.metrics, &e);
                res.error_code = code;
                res.error_message = msg.map(str);
                if v >= 5 {
                    res.num_partitions = -1;
                    res.replication_factor = -1;
                }
            }
        }
        resp.topics.push(res);
    }
    resp
}

pub async fn delete_topics(ctx: &Ctx, r: DeleteTopicsRequest, v: i16) -> DeleteTopicsResponse {
    let mut resp = DeleteTopicsResponse::default();
    let mut targets: Vec<(Option<String>, uuid::Uuid)> = r
        .topic_names
        .iter()
        .map(|n| (Some(n.to_string()), uuid::Uuid::nil()))
        .collect();
    targets.extend(
        r.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.to_string()), t.topic_id)),
    );
    for (name, id) in targets {
        let mut res = DeletableTopicResult::default();
        let resolved = name.clone().or_else(|| {
            ctx.broker
                .topics()
                .into_iter()
                .find(|t| t.id == id)
                .map(|t| t.name.clone())
        });
        res.name = resolved.clone().map(|n| TopicName(str(n)));
        if v >= 6 {
            res.topic_id = id;
        }
        let outcome = match &resolved {
            Some(n) => ctx.broker.delete_topic(n).await,
            None => Err(BrokerError::UnknownTopicOrPartition(id.to_string())),
        };
        if let Err(e) = outcome {
            let (code, msg) = if resolved.is_none() {
                (
                    refused(&ctx.broker.metrics, ResponseError::UnknownTopicId),
                    Some(e.to_string()),
                )
            } else {
                broker_error(&ctx.broker.metrics, &e)
            };
            res.error_code = code;
            if v >= 5 {
                res.error_message = msg.map(str);
            }
        }
        resp.responses.push(res);
    }
    resp
}

pub async fn create_partitions(
    ctx: &Ctx,
    r: CreatePartitionsRequest,
    _v: i16,
) -> CreatePartitionsResponse {
    let mut resp = CreatePartitionsResponse::default();
    for t in r.topics {
        let mut res = CreatePartitionsTopicResult::default();
        res.name = t.name.clone();
        if let Err(e) = ctx
            .broker
            .create_partitions(&t.name, t.count, r.validate_only)
            .await
        {
            let (code, msg) = broker_error(&ctx.broker.metrics, &e);
            res.error_code = code;
            res.error_message = msg.map(str);
        }
        resp.results.push(res);
    }
    resp
}

fn broker_configs(ctx: &Ctx) -> Vec<ConfigEntry> {
    let s = ctx.broker.settings();
    let entry = |name: &'static str, value: String| ConfigEntry {
        name,
        value,
        source: ConfigSource::Broker,
        read_only: true,
        sensitive: false,
    };
    vec![
        entry("broker.id", s.node_id.to_string()),
        entry(
            "auto.create.topics.enable",
            s.auto_create_topics.to_string(),
        ),
        entry("num.partitions", s.num_partitions.to_string()),
        entry(
            "default.replication.factor",
            s.default_replication_factor.to_string(),
        ),
        entry(
            "group.initial.rebalance.delay.ms",
            s.group_initial_rebalance_delay_ms.to_string(),
        ),
        entry(
            "group.min.session.timeout.ms",
            s.group_min_session_timeout_ms.to_string(),
        ),
        entry(
            "group.max.session.timeout.ms",
            s.group_max_session_timeout_ms.to_string(),
        ),
        entry(
            "log.retention.check.interval.ms",
            s.retention_check_interval_ms.to_string(),
        ),
    ]
}

pub fn describe_configs(ctx: &Ctx, r: DescribeConfigsRequest, _v: i16) -> DescribeConfigsResponse {
    let mut resp = DescribeConfigsResponse::default();
    for res in r.resources {
        let mut out = DescribeConfigsResult::default();
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name.clone();
        let entries = match res.resource_type {
            RESOURCE_TOPIC => match ctx.broker.topic(res.resource_name.as_str()) {
                Some(t) => Ok(t.config.describe()),
                None => Err((
                    refused(&ctx.broker.metrics, ResponseError::UnknownTopicOrPartition),
                    format!("unknown topic {}", res.resource_name.as_str()),
                )),
            },
            RESOURCE_BROKER => {
                let id = res.resource_name.as_str();
                if id.is_empty() || id == ctx.broker.node_id().to_string() {
                    Ok(broker_configs(ctx))
                } else {
                    Err((
                        refused(&ctx.broker.metrics, ResponseError::InvalidRequest),
                        format!("unknown broker {id}"),
                    ))
                }
            }
            other => Err((
                refused(&ctx.broker.metrics, ResponseError::InvalidRequest),
                format!("resource type {other} is not supported"),
            )),
        };
        match entries {
            Ok(entries) => {
                // Null or empty both mean "every config", as in Kafka.
                let wanted = res.configuration_keys.as_ref().filter(|k| !k.is_empty());
                out.configs = entries
                    .into_iter()
                    .filter(|e| wanted.is_none_or(|w| w.iter().any(|k| k.as_str() == e.name)))
                    .map(|e| {
                        let mut c = DescribeConfigsResourceResult::default();
                        c.name = str(e.name);
                        c.value = Some(str(e.value));
                        c.read_only = e.read_only;
                        c.config_source = source_code(e.source);
                        c.is_sensitive = e.sensitive;
                        c
                    })
                    .collect();
            }
            Err((code, msg)) => {
                out.error_code = code;
                out.error_message = Some(str(msg));
            }
        }
        resp.results.push(out);
    }
    resp
}

pub async fn incremental_alter_configs(
    ctx: &Ctx,
    r: IncrementalAlterConfigsRequest,
    _v: i16,
) -> IncrementalAlterConfigsResponse {
    let mut resp = IncrementalAlterConfigsResponse::default();
    for res in r.resources {
        let mut out = AlterConfigsResourceResponse::default();
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name.clone();
        let outcome = if res.resource_type != RESOURCE_TOPIC {
            Err(BrokerError::InvalidRequest(
                "only topic configs can be altered; broker configs are static".into(),
            ))
        } else {
            let ops: Result<Vec<AlterOp>, BrokerError> = res
                .configs
                .iter()
                .map(|c| match (c.config_operation, &c.value) {
                    (0, Some(val)) => Ok(AlterOp::Set(c.name.to_string(), val.to_string())),
                    (0, None) => Err(BrokerError::InvalidConfig(format!(
                        "SET of {} needs a value",
                        c.name.as_str()
                    ))),
                    (1, _) => Ok(AlterOp::Delete(c.name.to_string())),
                    (op, _) => Err(BrokerError::InvalidConfig(format!(
                        "operation {op} on {} is not supported (only SET and DELETE)",
                        c.name.as_str()
                    ))),
                })
                .collect();
            match ops {
                Ok(ops) => {
                    ctx.broker
                        .alter_topic_configs(res.resource_name.as_str(), ops, r.validate_only)
                        .await
                }
                Err(e) => Err(e),
            }
        };
        if let Err(e) = outcome {
            let (code, msg) = broker_error(&ctx.broker.metrics, &e);
            out.error_code = code;
            out.error_message = msg.map(str);
        }
        resp.responses.push(out);
    }
    resp
}

/// DeleteRecords: moves each partition's log start offset forward.
pub async fn delete_records(ctx: &Ctx, r: DeleteRecordsRequest, _v: i16) -> DeleteRecordsResponse {
    let mut resp = DeleteRecordsResponse::default();
    for t in r.topics {
        let mut tr = DeleteRecordsTopicResult::default();
        tr.name = t.name.clone();
        for p in t.partitions {
            let mut pr = DeleteRecordsPartitionResult::default();
            pr.partition_index = p.partition_index;
            match ctx
                .broker
                .delete_records(&t.name, p.partition_index, p.offset)
                .await
            {
                Ok(low) => pr.low_watermark = low,
                Err(e) => {
                    pr.low_watermark = -1;
                    pr.error_code = broker_error(&ctx.broker.metrics, &e).0;
                }
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}
