//! `strata topic reassign`: moves a partition's replicas (or, with the same
//! replicas in another order, its leadership) with Kafka's
//! AlterPartitionReassignments, and with `--wait` reports how long the move
//! took until Metadata shows the new replicas in sync and the first of them
//! leading.

use super::route::Routes;
use super::{error_name, error_text, s};
use anyhow::{bail, Context};
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::{AlterPartitionReassignmentsRequest, BrokerId, TopicName};
use std::time::{Duration, Instant};

/// Submits reassignments `(topic, partition, target replicas)` in one
/// AlterPartitionReassignments request; fails naming the first refusal.
async fn submit(r: &mut Routes, moves: &[(String, i32, Vec<i32>)]) -> anyhow::Result<()> {
    let mut by_topic: std::collections::BTreeMap<&str, Vec<ReassignablePartition>> =
        Default::default();
    for (topic, partition, target) in moves {
        by_topic.entry(topic).or_default().push(
            ReassignablePartition::default()
                .with_partition_index(*partition)
                .with_replicas(Some(target.iter().map(|b| BrokerId(*b)).collect())),
        );
    }
    let mut req = AlterPartitionReassignmentsRequest::default();
    req.timeout_ms = 30_000;
    req.topics = by_topic
        .into_iter()
        .map(|(t, ps)| {
            ReassignableTopic::default()
                .with_name(TopicName(s(t.to_string())))
                .with_partitions(ps)
        })
        .collect();
    let resp = r.any().call(req, 0).await?;
    if resp.error_code != 0 {
        bail!("cannot reassign: {}", error_name(resp.error_code));
    }
    for t in &resp.responses {
        for p in &t.partitions {
            if p.error_code != 0 {
                bail!(
                    "cannot reassign {}-{}: {}",
                    t.name.as_str(),
                    p.partition_index,
                    error_text(p.error_code, p.error_message.as_ref())
                );
            }
        }
    }
    Ok(())
}

/// Whether Metadata shows `target` as the partition's replicas, all in
/// sync, with the first leading.
async fn settled(
    r: &mut Routes,
    topic: &str,
    partition: i32,
    target: &[i32],
) -> anyhow::Result<bool> {
    let md = r.topic(topic).await?;
    Ok(md
        .partitions
        .iter()
        .find(|p| p.partition_index == partition)
        .is_some_and(|p| {
            let replicas: Vec<i32> = p.replica_nodes.iter().map(|b| b.0).collect();
            let isr: Vec<i32> = p.isr_nodes.iter().map(|b| b.0).collect();
            replicas == target
                && target.iter().all(|b| isr.contains(b))
                && target.first() == Some(&p.leader_id.0)
        }))
}

/// Waits (bounded) until every move has settled.
async fn wait_all(
    r: &mut Routes,
    moves: &[(String, i32, Vec<i32>)],
    deadline: Instant,
) -> anyhow::Result<()> {
    for (topic, partition, target) in moves {
        while !settled(r, topic, *partition, target).await? {
            if Instant::now() >= deadline {
                bail!("{topic}-{partition} did not reach {target:?} in time");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

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
    let started = Instant::now();
    let moves = vec![(topic.to_string(), partition, target.clone())];
    submit(&mut r, &moves).await?;
    if !wait {
        println!("reassignment of {topic}-{partition} to {target:?} started");
        return Ok(());
    }
    wait_all(&mut r, &moves, started + timeout).await?;
    println!(
        "moved {topic}-{partition} to {target:?} in {} ms",
        started.elapsed().as_millis()
    );
    Ok(())
}

/// `strata cluster drain`: moves every replica off `broker` (to the live
/// broker holding the fewest replicas, keeping each replication factor),
/// leadership included, e.g. before taking it out of service.
pub async fn drain(
    bootstrap: &str,
    broker: i32,
    wait: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut r = Routes::connect(bootstrap).await?;
    let md = super::metadata(r.any(), None).await?;
    let live: Vec<i32> = md.brokers.iter().map(|b| b.node_id.0).collect();
    let mut load: std::collections::BTreeMap<i32, usize> = live
        .iter()
        .filter(|b| **b != broker)
        .map(|b| (*b, 0))
        .collect();
    for t in &md.topics {
        for p in &t.partitions {
            for b in &p.replica_nodes {
                if let Some(n) = load.get_mut(&b.0) {
                    *n += 1;
                }
            }
        }
    }
    let mut moves = Vec::new();
    for t in &md.topics {
        let Some(name) = t.name.as_ref().map(|n| n.to_string()) else {
            continue;
        };
        for p in &t.partitions {
            let replicas: Vec<i32> = p.replica_nodes.iter().map(|b| b.0).collect();
            if !replicas.contains(&broker) {
                continue;
            }
            let mut target: Vec<i32> = replicas.iter().copied().filter(|b| *b != broker).collect();
            let spare = load
                .iter()
                .filter(|(b, _)| !replicas.contains(b))
                .min_by_key(|(b, n)| (**n, **b))
                .map(|(b, _)| *b);
            match spare {
                Some(b) => {
                    target.push(b);
                    if let Some(n) = load.get_mut(&b) {
                        *n += 1;
                    }
                }
                None if target.is_empty() => bail!(
                    "{name}-{}: no other live broker to move its only replica to",
                    p.partition_index
                ),
                // Fewer brokers than the replication factor: shrink it.
                None => {}
            }
            moves.push((name.clone(), p.partition_index, target));
        }
    }
    if moves.is_empty() {
        println!("broker {broker} holds no replicas");
        return Ok(());
    }
    let started = Instant::now();
    submit(&mut r, &moves).await?;
    if wait {
        wait_all(&mut r, &moves, started + timeout).await?;
    }
    for (t, p, target) in &moves {
        println!("{t}-{p} -> {target:?}");
    }
    println!(
        "{} partition(s) moved off broker {broker}{}",
        moves.len(),
        if wait {
            format!(" in {} ms", started.elapsed().as_millis())
        } else {
            " (started)".to_string()
        }
    );
    Ok(())
}
