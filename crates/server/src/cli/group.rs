//! `strata group list|describe`: members, assignments, committed offsets, lag.

use super::route::Routes;
use super::{connect, error_name, s};
use anyhow::bail;
use bytes::Bytes;
use clap::{Args, Subcommand};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, DescribeGroupsRequest, GroupId, ListGroupsRequest,
    OffsetFetchRequest,
};
use std::collections::BTreeMap;

#[derive(Args)]
pub struct GroupArgs {
    #[command(subcommand)]
    cmd: GroupCmd,
}

#[derive(Subcommand)]
enum GroupCmd {
    /// List groups.
    List {
        #[arg(long)]
        bootstrap: String,
    },
    /// State, members, assignments, committed offsets and lag of a group.
    Describe {
        #[arg(long)]
        bootstrap: String,
        #[arg(long)]
        group: String,
    },
}

fn decode_assignment(b: Bytes) -> Vec<(String, Vec<i32>)> {
    // The broker's bytes (another member's, as sent): bounded, so a count
    // in them cannot size an allocation.
    strata_kafka::decode_versioned::<ConsumerProtocolAssignment>(b)
        .map(|a| {
            a.assigned_partitions
                .into_iter()
                .map(|tp| (tp.topic.to_string(), tp.partitions))
                .collect()
        })
        .unwrap_or_default()
}

pub async fn run(a: GroupArgs) -> anyhow::Result<()> {
    match a.cmd {
        GroupCmd::List { bootstrap } => {
            let mut c = connect(&bootstrap).await?;
            let resp = c.call(ListGroupsRequest::default(), 4).await?;
            if resp.error_code != 0 {
                bail!("cannot list groups: {}", error_name(resp.error_code));
            }
            for g in resp.groups {
                println!(
                    "{} {} {}",
                    g.group_id.as_str(),
                    g.group_state.as_str(),
                    g.protocol_type.as_str()
                );
            }
        }
        GroupCmd::Describe { bootstrap, group } => {
            let mut r = Routes::connect(&bootstrap).await?;
            let coordinator = r.coordinator(&group).await?;
            let c = r.broker(coordinator).await?;
            let mut req = DescribeGroupsRequest::default();
            req.groups = vec![GroupId(s(group.clone()))];
            let resp = c.call(req, 5).await?;
            let Some(g) = resp.groups.into_iter().next() else {
                bail!("no description returned for group {group}");
            };
            if g.error_code != 0 {
                bail!("group {group}: {}", error_name(g.error_code));
            }
            println!(
                "group {group} state {} protocol {} {}",
                g.group_state.as_str(),
                g.protocol_type.as_str(),
                g.protocol_data.as_str()
            );
            let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
            for m in &g.members {
                let assigned = decode_assignment(m.member_assignment.clone());
                println!(
                    "  member {} client {} host {} assignment {:?}",
                    m.member_id.as_str(),
                    m.client_id.as_str(),
                    m.client_host.as_str(),
                    assigned
                );
                for (t, ps) in assigned {
                    for p in ps {
                        owner.insert((t.clone(), p), m.member_id.to_string());
                    }
                }
            }
            let mut req = OffsetFetchRequest::default();
            req.groups = vec![OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(s(group.clone())))
                // Null (not empty) asks for every committed partition.
                .with_topics(None)];
            let v = c.version::<OffsetFetchRequest>(8)?;
            let mut committed: BTreeMap<String, Vec<(i32, i64)>> = BTreeMap::new();
            if v >= 8 {
                let resp = c.send(req, v).await?;
                for gr in resp.groups {
                    for t in gr.topics {
                        for p in t.partitions {
                            committed
                                .entry(t.name.to_string())
                                .or_default()
                                .push((p.partition_index, p.committed_offset));
                        }
                    }
                }
            } else {
                let mut old = OffsetFetchRequest::default();
                old.group_id = GroupId(s(group.clone()));
                old.topics = None;
                let resp = c.send(old, v).await?;
                for t in resp.topics {
                    for p in t.partitions {
                        committed
                            .entry(t.name.to_string())
                            .or_default()
                            .push((p.partition_index, p.committed_offset));
                    }
                }
            }
            println!(
                "  {:<30} {:>9} {:>12} {:>12} {:>8}  member",
                "topic", "partition", "committed", "log-end", "lag"
            );
            for (topic, parts) in committed {
                // A deleted topic or a leaderless partition shows lag -1.
                let ends = match r.refresh(&topic).await {
                    Ok(n) => super::topic::offsets(&mut r, &topic, n)
                        .await
                        .unwrap_or_default(),
                    Err(_) => Vec::new(),
                };
                for (p, off) in parts {
                    let end = ends
                        .iter()
                        .find(|(q, _, _)| *q == p)
                        .map_or(-1, |(_, _, e)| *e);
                    let lag = if off >= 0 && end >= 0 { end - off } else { -1 };
                    let who = owner
                        .get(&(topic.clone(), p))
                        .cloned()
                        .unwrap_or_else(|| "-".into());
                    println!("  {topic:<30} {p:>9} {off:>12} {end:>12} {lag:>8}  {who}");
                }
            }
        }
    }
    Ok(())
}
