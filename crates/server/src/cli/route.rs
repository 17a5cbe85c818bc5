//! Leader-aware connections for the CLI tools: in a cluster every partition
//! has its own leader, and Produce, Fetch and ListOffsets must go to it. One
//! connection per broker, opened on first use; leaders come from Metadata
//! when a command starts (a leader change mid-command fails it with the
//! broker's error; there is no retry).

use super::{connect, error_name, metadata, s};
use anyhow::{bail, Context};
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::FindCoordinatorRequest;
use std::collections::{BTreeMap, HashMap};
use strata_kafka::client::KafkaClient;

pub struct Routes {
    bootstrap: KafkaClient,
    brokers: HashMap<i32, String>,
    /// (topic, partition) → leader node id (-1: none right now).
    leaders: HashMap<(String, i32), i32>,
    clients: HashMap<i32, KafkaClient>,
}

impl Routes {
    pub async fn connect(bootstrap: &str) -> anyhow::Result<Self> {
        Ok(Self {
            bootstrap: connect(bootstrap).await?,
            brokers: HashMap::new(),
            leaders: HashMap::new(),
            clients: HashMap::new(),
        })
    }

    /// The connection to the bootstrap broker (for requests any broker
    /// answers: Metadata, admin, groups via FindCoordinator).
    pub fn any(&mut self) -> &mut KafkaClient {
        &mut self.bootstrap
    }

    /// Loads the topic's partitions and leaders; returns the partition count.
    pub async fn refresh(&mut self, topic: &str) -> anyhow::Result<i32> {
        Ok(self.topic(topic).await?.partitions.len() as i32)
    }

    /// The topic's metadata, recording its brokers and partition leaders.
    pub async fn topic(&mut self, topic: &str) -> anyhow::Result<MetadataResponseTopic> {
        let md = metadata(&mut self.bootstrap, Some(&[topic.to_string()])).await?;
        for b in &md.brokers {
            self.brokers
                .insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
        }
        let Some(t) = md.topics.into_iter().next() else {
            bail!("no metadata returned for topic {topic}");
        };
        if t.error_code != 0 {
            bail!("topic {topic}: {}", error_name(t.error_code));
        }
        for p in &t.partitions {
            self.leaders
                .insert((topic.to_string(), p.partition_index), p.leader_id.0);
        }
        Ok(t)
    }

    /// Groups `partitions` of `topic` by their leader.
    pub fn by_leader(
        &self,
        topic: &str,
        partitions: impl IntoIterator<Item = i32>,
    ) -> anyhow::Result<BTreeMap<i32, Vec<i32>>> {
        let mut out: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for p in partitions {
            match self.leaders.get(&(topic.to_string(), p)) {
                Some(&leader) if leader >= 0 => out.entry(leader).or_default().push(p),
                Some(_) => bail!("partition {topic}-{p} has no leader right now; try again"),
                None => bail!("no metadata for partition {topic}-{p}"),
            }
        }
        Ok(out)
    }

    /// The address of `topic`-`p`'s leader, from the last [`Routes::topic`].
    pub fn leader_addr(&self, topic: &str, p: i32) -> anyhow::Result<String> {
        let leader = self.by_leader(topic, [p])?.into_keys().next();
        leader
            .and_then(|l| self.brokers.get(&l).cloned())
            .with_context(|| format!("the leader of {topic}-{p} is not in the cluster metadata"))
    }

    /// The connection to broker `node`, opened on first use.
    pub async fn broker(&mut self, node: i32) -> anyhow::Result<&mut KafkaClient> {
        if !self.clients.contains_key(&node) {
            let Some(addr) = self.brokers.get(&node).cloned() else {
                bail!("broker {node} is not in the cluster metadata");
            };
            let c = connect(&addr)
                .await
                .with_context(|| format!("cannot reach broker {node}"))?;
            self.clients.insert(node, c);
        }
        self.clients
            .get_mut(&node)
            .context("connection just opened is missing")
    }

    /// Every broker of the cluster (from Metadata), by node id.
    pub async fn all_brokers(&mut self) -> anyhow::Result<Vec<i32>> {
        let md = metadata(&mut self.bootstrap, Some(&[])).await?;
        for b in &md.brokers {
            self.brokers
                .insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
        }
        Ok(md.brokers.iter().map(|b| b.node_id.0).collect())
    }

    /// The coordinator of consumer group `group` (FindCoordinator).
    pub async fn coordinator(&mut self, group: &str) -> anyhow::Result<i32> {
        self.find_coordinator(0, group).await
    }

    /// The transaction coordinator of transactional id `id`.
    pub async fn txn_coordinator(&mut self, id: &str) -> anyhow::Result<i32> {
        self.find_coordinator(1, id).await
    }

    async fn find_coordinator(&mut self, key_type: i8, group: &str) -> anyhow::Result<i32> {
        let v = self.bootstrap.version::<FindCoordinatorRequest>(4)?;
        let mut req = FindCoordinatorRequest::default();
        req.key_type = key_type;
        let (node, host, port, code) = if v >= 4 {
            req.coordinator_keys = vec![s(group.to_string())];
            let resp = self.bootstrap.send(req, v).await?;
            let Some(c) = resp.coordinators.into_iter().next() else {
                bail!("no coordinator returned for {group}");
            };
            (c.node_id.0, c.host.to_string(), c.port, c.error_code)
        } else {
            req.key = s(group.to_string());
            let resp = self.bootstrap.send(req, v).await?;
            (
                resp.node_id.0,
                resp.host.to_string(),
                resp.port,
                resp.error_code,
            )
        };
        if code != 0 {
            bail!("no coordinator for {group}: {}", error_name(code));
        }
        self.brokers.insert(node, format!("{host}:{port}"));
        Ok(node)
    }
}
