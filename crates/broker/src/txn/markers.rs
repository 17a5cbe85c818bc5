//! Ending a transaction where its data lives: a commit or abort marker
//! appended (and replicated to the ISR) by each partition's leader, and the
//! transaction's pending offsets committed or discarded by each group's
//! coordinator. Items on this broker are handled in place; the rest go to
//! their brokers in one `WriteTxnMarkers` gRPC call per broker. Whatever
//! fails is returned for the coordinator to retry.

use crate::broker::Broker;
use crate::durability::Acks;
use crate::error::BrokerError;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use strata_record::ControlType;
use strata_rpc::transactions::txn_markers_client::TxnMarkersClient;
use strata_rpc::transactions::txn_markers_server::{TxnMarkers, TxnMarkersServer};
use strata_rpc::transactions::{ItemResult, MarkerPartition, MarkersRequest, MarkersResponse};
use tonic::{Request, Response, Status};

/// How long a marker may wait for the in-sync replicas.
const MARKER_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Work for one broker: partitions it leads and groups it coordinates.
#[derive(Default)]
struct Batch {
    partitions: Vec<(String, i32)>,
    groups: Vec<String>,
}

impl Broker {
    /// Writes the markers for `partitions` and settles `groups`; returns
    /// the partitions and groups not done yet.
    pub(crate) async fn write_markers(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        partitions: &[(String, i32)],
        groups: &[String],
    ) -> (Vec<(String, i32)>, Vec<String>) {
        let mut by_broker: BTreeMap<i32, Batch> = BTreeMap::new();
        let mut left_p = Vec::new();
        let mut left_g = Vec::new();
        {
            let v = self.view();
            for (t, p) in partitions {
                if !v.topics.contains_key(t) {
                    // Deleted with its data: nothing left to mark.
                    continue;
                }
                match v.leaders.get(&(t.clone(), *p)) {
                    Some(l) => by_broker
                        .entry(l.leader.broker)
                        .or_default()
                        .partitions
                        .push((t.clone(), *p)),
                    None => left_p.push((t.clone(), *p)),
                }
            }
        }
        for g in groups {
            match self.coordinator_for(g) {
                Some(b) => by_broker.entry(b.id).or_default().groups.push(g.clone()),
                None => left_g.push(g.clone()),
            }
        }
        let calls = by_broker.into_iter().map(|(broker, batch)| async move {
            if broker == self.identity.id {
                self.settle_locally(producer_id, epoch, commit, batch).await
            } else {
                self.settle_remotely(broker, producer_id, epoch, commit, batch)
                    .await
            }
        });
        for (p, g) in futures::future::join_all(calls).await {
            left_p.extend(p);
            left_g.extend(g);
        }
        (left_p, left_g)
    }

    async fn settle_locally(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        batch: Batch,
    ) -> (Vec<(String, i32)>, Vec<String>) {
        let r = self
            .apply_markers(producer_id, epoch, commit, &batch.partitions, &batch.groups)
            .await;
        failed_items(r)
    }

    async fn settle_remotely(
        &self,
        broker: i32,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        batch: Batch,
    ) -> (Vec<(String, i32)>, Vec<String>) {
        let failed = || (batch.partitions.clone(), batch.groups.clone());
        let addr = self
            .view()
            .brokers
            .get(&broker)
            .and_then(|b| b.grpc.clone());
        let Some(addr) = addr else {
            tracing::debug!(broker, "no gRPC endpoint for marker delivery");
            return failed();
        };
        let channel = match self.rpc_channel(&addr) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(broker, error = %e, "cannot reach broker for markers");
                return failed();
            }
        };
        let req = MarkersRequest {
            producer_id,
            producer_epoch: i32::from(epoch),
            commit,
            partitions: batch
                .partitions
                .iter()
                .map(|(t, p)| MarkerPartition {
                    topic: t.clone(),
                    partition: *p,
                })
                .collect(),
            groups: batch.groups.clone(),
        };
        let mut client = TxnMarkersClient::new(channel);
        let mut request = Request::new(req);
        request.set_timeout(MARKER_ACK_TIMEOUT * 2);
        match client.write_txn_markers(request).await {
            Ok(resp) => {
                let r = resp.into_inner();
                for i in r.partitions.iter().chain(&r.groups) {
                    if !i.error.is_empty() {
                        tracing::debug!(broker, topic = %i.topic, partition = i.partition, group = %i.group, error = %i.error, "marker not written yet");
                    }
                }
                failed_items(r)
            }
            Err(e) => {
                tracing::debug!(broker, error = %e, "WriteTxnMarkers failed");
                failed()
            }
        }
    }

    /// Receiver side: appends markers to partitions this broker leads and
    /// settles pending offsets of groups it coordinates.
    pub async fn apply_markers(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        partitions: &[(String, i32)],
        groups: &[String],
    ) -> MarkersResponse {
        let marks = partitions.iter().map(|(t, p)| async move {
            let error = match self.write_marker(t, *p, producer_id, epoch, commit).await {
                Ok(()) => String::new(),
                Err(e) => e.to_string(),
            };
            ItemResult {
                topic: t.clone(),
                partition: *p,
                group: String::new(),
                error,
            }
        });
        let partitions = futures::future::join_all(marks).await;
        let mut group_results = Vec::with_capacity(groups.len());
        for g in groups {
            let error = match self.settle_group_offsets(g, producer_id, commit).await {
                Ok(()) => String::new(),
                Err(e) => e.to_string(),
            };
            group_results.push(ItemResult {
                topic: String::new(),
                partition: -1,
                group: g.clone(),
                error,
            });
        }
        MarkersResponse {
            partitions,
            groups: group_results,
        }
    }

    /// Appends one marker as leader and waits until the ISR has it.
    async fn write_marker(
        &self,
        topic: &str,
        partition: i32,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<(), BrokerError> {
        let p = self.partition(topic, partition)?;
        if !self.session.is_live(self.clock.now_ms()) || self.shutdown.is_cancelled() {
            return Err(BrokerError::NotLeader(format!(
                "{topic}-{partition}: this broker cannot write now"
            )));
        }
        let info = match p.append_marker(
            producer_id,
            epoch,
            ControlType::from_commit(commit),
            0,
            self.clock.now_ms(),
        ) {
            Ok(info) => info,
            Err(BrokerError::InvalidProducerEpoch(m)) => {
                // A newer epoch already wrote here: that producer's own
                // transaction ended this one's (fenced) data.
                tracing::warn!(topic, partition, producer_id, reason = %m, "stale marker skipped");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        self.durability
            .make_durable(&p, info, Acks::All, MARKER_ACK_TIMEOUT)
            .await
    }

    async fn settle_group_offsets(
        &self,
        group: &str,
        producer_id: i64,
        commit: bool,
    ) -> Result<(), BrokerError> {
        self.ensure_coordinator(group).await?;
        self.groups
            .complete_txn_offsets(group, producer_id, commit)
            .await?;
        Ok(())
    }
}

/// The partitions and groups a [`MarkersResponse`] reports as not done.
fn failed_items(r: MarkersResponse) -> (Vec<(String, i32)>, Vec<String>) {
    let p = r
        .partitions
        .into_iter()
        .filter(|i| !i.error.is_empty())
        .map(|i| (i.topic, i.partition))
        .collect();
    let g = r
        .groups
        .into_iter()
        .filter(|i| !i.error.is_empty())
        .map(|i| i.group)
        .collect();
    (p, g)
}

/// The gRPC face of [`Broker::apply_markers`].
pub struct TxnMarkersService {
    broker: Arc<Broker>,
}

impl TxnMarkersService {
    pub fn server(broker: Arc<Broker>) -> TxnMarkersServer<Self> {
        TxnMarkersServer::new(Self { broker })
    }
}

#[tonic::async_trait]
impl TxnMarkers for TxnMarkersService {
    async fn write_txn_markers(
        &self,
        request: Request<MarkersRequest>,
    ) -> Result<Response<MarkersResponse>, Status> {
        let r = request.into_inner();
        let epoch = i16::try_from(r.producer_epoch)
            .map_err(|_| Status::invalid_argument("producer_epoch out of range"))?;
        let partitions: Vec<(String, i32)> = r
            .partitions
            .into_iter()
            .map(|p| (p.topic, p.partition))
            .collect();
        let resp = self
            .broker
            .apply_markers(r.producer_id, epoch, r.commit, &partitions, &r.groups)
            .await;
        Ok(Response::new(resp))
    }
}
