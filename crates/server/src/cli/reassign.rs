//! `strata topic reassign`: moves a partition's replicas (or, with the same
//! replicas in another order, its leadership) with Kafka's
//! AlterPartitionReassignments, and with `--wait` reports how long the move
//! took until Metadata shows the new replicas in sync and the first of them
//! leading.

use super::route::Routes;
use super::{error_name, s};
use anyhow::{bail, Context};
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::{AlterPartitionReassignmentsRequest, BrokerId, TopicName};
use std::time::{Duration, Instant};

pub async fn run(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    replicas: &str,
    wait: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let target: Vec<i32> = replicas
        .split(',')
        .map(|r| r.trim().parse::<i32>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--replicas {replicas:?} must be broker ids, e.g. 1,2,3"))?;
    let mut r = Routes::connect(bootstrap).await?;
    let mut req = AlterPartitionReassignmentsRequest::default();
    req.timeout_ms = 30_000;
    req.topics = vec![ReassignableTopic::default()
        .with_name(TopicName(s(topic.to_string())))
        .with_partitions(vec![ReassignablePartition::default()
            .with_partition_index(partition)
            .with_replicas(Some(target.iter().map(|b| BrokerId(*b)).collect()))])];
    let started = Instant::now();
    let resp = r.any().call(req, 0).await?;
    if resp.error_code != 0 {
        bail!("cannot reassign: {}", error_name(resp.error_code));
    }
    for t in &resp.responses {
        for p in &t.partitions {
            if p.error_code != 0 {
                bail!(
                    "cannot reassign {topic}-{}: {}{}",
                    p.partition_index,
                    error_name(p.error_code),
                    p.error_message
                        .as_ref()
                        .map(|m| format!(": {}", m.as_str()))
                        .unwrap_or_default()
                );
            }
        }
    }
    if !wait {
        println!("reassignment of {topic}-{partition} to {target:?} started");
        return Ok(());
    }
    let deadline = started + timeout;
    loop {
        let md = r.topic(topic).await?;
        let done = md
            .partitions
            .iter()
            .find(|p| p.partition_index == partition)
            .is_some_and(|p| {
                let replicas: Vec<i32> = p.replica_nodes.iter().map(|b| b.0).collect();
                let isr: Vec<i32> = p.isr_nodes.iter().map(|b| b.0).collect();
                replicas == target
                    && target.iter().all(|b| isr.contains(b))
                    && Some(&p.leader_id.0) == target.first()
            });
        if done {
            println!(
                "moved {topic}-{partition} to {target:?} in {} ms",
                started.elapsed().as_millis()
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{topic}-{partition} did not reach {target:?} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
