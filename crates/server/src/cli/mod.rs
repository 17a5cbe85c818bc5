//! Command-line tools: thin clients over the Kafka protocol, so they work
//! against any Kafka-compatible broker.

pub mod bench;
pub mod consume;
pub mod group;
pub mod produce;
pub mod segments;
pub mod topic;

use anyhow::{bail, Context};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use strata_kafka::client::KafkaClient;

pub fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

pub async fn connect(bootstrap: &str) -> anyhow::Result<KafkaClient> {
    KafkaClient::connect(bootstrap, "strata-cli")
        .await
        .with_context(|| format!("cannot reach the broker at {bootstrap}"))
}

pub fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(e) => format!("{e:?} ({code})"),
        None => format!("error {code}"),
    }
}

/// Metadata for `topics` (all topics when `None`), without auto-creating.
pub async fn metadata(
    c: &mut KafkaClient,
    topics: Option<&[String]>,
) -> anyhow::Result<MetadataResponse> {
    let mut req = MetadataRequest::default();
    req.allow_auto_topic_creation = false;
    req.topics = topics.map(|ts| {
        ts.iter()
            .map(|t| MetadataRequestTopic::default().with_name(Some(TopicName(s(t.clone())))))
            .collect()
    });
    Ok(c.call(req, 12).await?)
}

/// Partition count of one topic.
pub async fn partition_count(c: &mut KafkaClient, topic: &str) -> anyhow::Result<i32> {
    let md = metadata(c, Some(&[topic.to_string()])).await?;
    let Some(t) = md.topics.first() else {
        bail!("no metadata returned for topic {topic}");
    };
    if t.error_code != 0 {
        bail!("topic {topic}: {}", error_name(t.error_code));
    }
    Ok(t.partitions.len() as i32)
}
