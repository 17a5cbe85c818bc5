//! `strata topic create|list|describe|delete|alter|reassign`.

use super::route::Routes;
use super::{connect, error_name, error_text, metadata, parse_kv, s};
use anyhow::bail;
use clap::{Args, Subcommand};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, ListOffsetsRequest, TopicName,
};
use std::collections::BTreeMap;

#[derive(Args)]
pub struct TopicArgs {
    #[command(subcommand)]
    cmd: TopicCmd,
}

#[derive(Subcommand)]
enum TopicCmd {
    /// Create a topic.
    Create {
        #[arg(long)]
        bootstrap: String,
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = -1)]
        partitions: i32,
        #[arg(long, default_value_t = -1)]
        replication_factor: i16,
        /// Topic config KEY=VALUE (repeatable).
        #[arg(long = "config", value_parser = parse_kv)]
        configs: Vec<(String, String)>,
    },
    /// List topics.
    List {
        #[arg(long)]
        bootstrap: String,
    },
    /// Partitions, offsets and configs of a topic.
    Describe {
        #[arg(long)]
        bootstrap: String,
        #[arg(long)]
        topic: String,
    },
    /// Delete a topic.
    Delete {
        #[arg(long)]
        bootstrap: String,
        #[arg(long)]
        topic: String,
    },
    /// Move a partition's replicas to the brokers listed (the first leads);
    /// the same brokers in another order transfer leadership.
    Reassign {
        #[arg(long)]
        bootstrap: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: i32,
        /// Target broker ids, comma-separated, preferred leader first.
        #[arg(long)]
        replicas: String,
        /// Wait until the move completes and print how long it took.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, in seconds.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
    /// Set or delete topic configs.
    Alter {
        #[arg(long)]
        bootstrap: String,
        #[arg(long)]
        topic: String,
        /// KEY=VALUE to set (repeatable).
        #[arg(long = "set", value_parser = parse_kv)]
        set: Vec<(String, String)>,
        /// KEY to reset to its default (repeatable).
        #[arg(long = "delete")]
        delete: Vec<String>,
    },
}

pub async fn run(a: TopicArgs) -> anyhow::Result<()> {
    match a.cmd {
        TopicCmd::Create {
            bootstrap,
            topic,
            partitions,
            replication_factor,
            configs,
        } => {
            let mut c = connect(&bootstrap).await?;
            let mut t = CreatableTopic::default();
            t.name = TopicName(s(topic.clone()));
            t.num_partitions = partitions;
            t.replication_factor = replication_factor;
            t.configs = configs
                .into_iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(s(k))
                        .with_value(Some(s(v)))
                })
                .collect();
            let mut req = CreateTopicsRequest::default();
            req.topics = vec![t];
            req.timeout_ms = 30_000;
            let resp = c.call(req, 7).await?;
            for r in resp.topics {
                if r.error_code != 0 {
                    bail!(
                        "cannot create topic {}: {}",
                        r.name.as_str(),
                        error_text(r.error_code, r.error_message.as_ref())
                    );
                }
                println!(
                    "created topic {} with {} partition(s)",
                    r.name.as_str(),
                    r.num_partitions
                );
            }
        }
        TopicCmd::List { bootstrap } => {
            let mut c = connect(&bootstrap).await?;
            let md = metadata(&mut c, None).await?;
            let mut names: Vec<String> = md
                .topics
                .iter()
                .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
                .collect();
            names.sort();
            for n in names {
                println!("{n}");
            }
        }
        TopicCmd::Describe { bootstrap, topic } => describe(&bootstrap, &topic).await?,
        TopicCmd::Reassign {
            bootstrap,
            topic,
            partition,
            replicas,
            wait,
            timeout_secs,
        } => {
            super::reassign::run(
                &bootstrap,
                &topic,
                partition,
                &replicas,
                wait,
                std::time::Duration::from_secs(timeout_secs),
            )
            .await?
        }
        TopicCmd::Delete { bootstrap, topic } => {
            let mut c = connect(&bootstrap).await?;
            let mut req = DeleteTopicsRequest::default();
            req.topic_names = vec![TopicName(s(topic.clone()))];
            req.timeout_ms = 30_000;
            // v6 names topics in `topics`; stay on v5 where `topic_names` is used.
            let resp = c.call(req, 5).await?;
            for r in resp.responses {
                if r.error_code != 0 {
                    bail!("cannot delete topic {topic}: {}", error_name(r.error_code));
                }
            }
            println!("deleted topic {topic}");
        }
        TopicCmd::Alter {
            bootstrap,
            topic,
            set,
            delete,
        } => {
            let mut c = connect(&bootstrap).await?;
            let mut res = AlterConfigsResource::default();
            res.resource_type = 2;
            res.resource_name = s(topic.clone());
            for (k, v) in set {
                res.configs.push(
                    AlterableConfig::default()
                        .with_name(s(k))
                        .with_config_operation(0)
                        .with_value(Some(s(v))),
                );
            }
            for k in delete {
                res.configs.push(
                    AlterableConfig::default()
                        .with_name(s(k))
                        .with_config_operation(1),
                );
            }
            let mut req = IncrementalAlterConfigsRequest::default();
            req.resources = vec![res];
            let resp = c.call(req, 1).await?;
            for r in resp.responses {
                if r.error_code != 0 {
                    bail!(
                        "cannot alter {topic}: {}",
                        error_text(r.error_code, r.error_message.as_ref())
                    );
                }
            }
            println!("altered topic {topic}");
        }
    }
    Ok(())
}

/// `(earliest, latest)` offsets per partition.
/// `(partition, log start, log end)` of every partition, each asked of its
/// leader.
pub async fn offsets(
    r: &mut Routes,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<Vec<(i32, i64, i64)>> {
    let mut starts = BTreeMap::new();
    let mut ends = BTreeMap::new();
    for (leader, parts) in r.by_leader(topic, 0..partitions)? {
        let c = r.broker(leader).await?;
        for ts in [-2i64, -1] {
            let mut t = ListOffsetsTopic::default();
            t.name = TopicName(s(topic.to_string()));
            t.partitions = parts
                .iter()
                .map(|p| {
                    ListOffsetsPartition::default()
                        .with_partition_index(*p)
                        .with_timestamp(ts)
                })
                .collect();
            let mut req = ListOffsetsRequest::default();
            req.replica_id = kafka_protocol::messages::BrokerId(-1);
            req.topics = vec![t];
            let resp = c.call(req, 6).await?;
            for t in resp.topics {
                for p in t.partitions {
                    if p.error_code != 0 {
                        bail!(
                            "list offsets {topic}-{}: {}",
                            p.partition_index,
                            error_name(p.error_code)
                        );
                    }
                    let map = if ts == -2 { &mut starts } else { &mut ends };
                    map.insert(p.partition_index, p.offset);
                }
            }
        }
    }
    Ok(starts
        .into_iter()
        .map(|(p, start)| (p, start, ends.get(&p).copied().unwrap_or(-1)))
        .collect())
}

async fn describe(bootstrap: &str, topic: &str) -> anyhow::Result<()> {
    let mut r = Routes::connect(bootstrap).await?;
    let t = r.topic(topic).await?;
    let offs = offsets(&mut r, topic, t.partitions.len() as i32).await?;
    let c = r.any();
    println!(
        "topic {topic} id {} partitions {}",
        t.topic_id,
        t.partitions.len()
    );
    for p in &t.partitions {
        let (start, end) = offs
            .iter()
            .find(|(q, _, _)| *q == p.partition_index)
            .map_or((-1, -1), |(_, a, b)| (*a, *b));
        println!(
            "  partition {} leader {} epoch {} replicas {:?} isr {:?} offsets [{start}, {end})",
            p.partition_index,
            p.leader_id.0,
            p.leader_epoch,
            p.replica_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
            p.isr_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
        );
    }
    let mut req = DescribeConfigsRequest::default();
    req.resources = vec![DescribeConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(s(topic.to_string()))];
    let resp = c.call(req, 4).await?;
    println!("configs:");
    for r in resp.results {
        for cfg in r.configs {
            let source = match cfg.config_source {
                1 => "topic",
                4 => "broker",
                5 => "default",
                _ => "other",
            };
            println!(
                "  {}={} ({source})",
                cfg.name.as_str(),
                cfg.value.as_ref().map_or("", |v| v.as_str())
            );
        }
    }
    Ok(())
}
