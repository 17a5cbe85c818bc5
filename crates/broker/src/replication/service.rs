//! The leader's side of replication: serves one follower's stream for one
//! partition. The handshake finds where the follower must truncate; then the
//! leader pushes stored batches from the follower's log end as they are
//! appended, with its high watermark, and records the positions the
//! follower reports (which advance the high watermark and the ISR).

use crate::broker::Broker;
use crate::error::BrokerError;
use crate::partition::Partition;
use std::sync::Arc;
use std::time::Duration;
use strata_log::EpochHistory;
use strata_rpc::replication::replication_server::{Replication, ReplicationServer};
use strata_rpc::replication::{
    follower_message, leader_message, FollowerMessage, Hello, LeaderMessage, Records, Start,
    Watermark,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Most bytes of batches in one Records message.
const MAX_CHUNK: usize = 1 << 20;
/// Records messages buffered per stream before the leader waits (bounds
/// memory per follower; the follower's positions flow independently).
const STREAM_BUFFER: usize = 4;
/// A Watermark is sent at least this often, so an idle follower learns the
/// high watermark and notices a dead stream.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// How long a follower's Hello waits for this broker to take up a
/// leadership the metadata store already gives it (see `led_here`).
const PROMOTION_WAIT: Duration = Duration::from_secs(1);

pub struct ReplicationService {
    broker: Arc<Broker>,
}

impl ReplicationService {
    pub fn new(broker: Arc<Broker>) -> Self {
        Self { broker }
    }

    /// The tonic service, with HTTP/2 windows large enough for bulk copy.
    pub fn server(broker: Arc<Broker>) -> ReplicationServer<Self> {
        ReplicationServer::new(Self::new(broker))
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }
}

fn refuse(e: BrokerError) -> Status {
    match e {
        BrokerError::NotLeader(m) => Status::failed_precondition(format!("not the leader: {m}")),
        BrokerError::UnknownTopicOrPartition(m) => Status::not_found(m),
        BrokerError::OffsetOutOfRange { .. } => Status::out_of_range(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

impl ReplicationService {
    /// The partition a follower asks for, as this broker leads it. A
    /// follower learns of a leadership from the metadata store, and this
    /// broker writes the leader key before it promotes its replica (its
    /// reconcile does both, microseconds apart, and its own view may learn
    /// of the key later than the follower's). Refused, a Hello arriving in
    /// between sends its follower into a 50 ms backoff, with the high
    /// watermark waiting on it. So a Hello for an epoch this broker does
    /// not lead (yet) waits while this broker may still become its leader:
    /// until it leads in that epoch or later, until its view names another
    /// broker leader in that epoch or later (then it is refused at once),
    /// or for `PROMOTION_WAIT` at most.
    async fn led_here(&self, hello: &Hello) -> Result<Arc<Partition>, BrokerError> {
        let deadline = tokio::time::Instant::now() + PROMOTION_WAIT;
        let key = (hello.topic.clone(), hello.partition);
        loop {
            // Created before looking: a promotion or a leader change from
            // here on wakes the wait.
            let changed = self.broker.leaders_changed.notified();
            let p = self.broker.partition(&hello.topic, hello.partition);
            let behind = match &p {
                Ok(p) => p.leader_epoch() < hello.leader_epoch,
                Err(BrokerError::NotLeader(_)) => true,
                Err(_) => false,
            };
            let elsewhere = self.broker.view().leaders.get(&key).is_some_and(|l| {
                l.leader.broker != self.broker.node_id() && l.leader.epoch >= hello.leader_epoch
            });
            if !behind || elsewhere {
                return p;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return p;
            }
        }
    }

    /// The partition a follower's `hello` asks to copy, if this broker
    /// leads it in the follower's epoch, as the topic the follower holds a
    /// replica of, and the follower is one of its replicas.
    async fn accept(&self, hello: &Hello) -> Result<Arc<Partition>, Status> {
        let p = self.led_here(hello).await.map_err(refuse)?;
        if !hello.topic_id.is_empty() && p.is_other_topic(&hello.topic_id) {
            // The follower's replica is of a deleted topic of this name; its
            // broker deletes it once it sees the new topic.
            return Err(Status::failed_precondition(format!(
                "{} is led here as topic id {}, not {}",
                p.name(),
                p.topic_id(),
                hello.topic_id
            )));
        }
        let epoch = p.leader_epoch();
        if epoch != hello.leader_epoch {
            return Err(Status::failed_precondition(format!(
                "{} is led here in epoch {epoch}, not {}",
                p.name(),
                hello.leader_epoch
            )));
        }
        let is_replica = self
            .broker
            .view()
            .states
            .get(&(hello.topic.clone(), hello.partition))
            .is_some_and(|s| s.state.replicas.contains(&hello.replica_id));
        if !is_replica || hello.replica_id == self.broker.node_id() {
            return Err(Status::permission_denied(format!(
                "broker {} is not a follower of {}",
                hello.replica_id,
                p.name()
            )));
        }
        Ok(p)
    }
}

#[tonic::async_trait]
impl Replication for ReplicationService {
    type ReplicateStream = ReceiverStream<Result<LeaderMessage, Status>>;

    async fn replicate(
        &self,
        request: Request<Streaming<FollowerMessage>>,
    ) -> Result<Response<Self::ReplicateStream>, Status> {
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await?.and_then(|m| m.body) {
            Some(follower_message::Body::Hello(h)) => h,
            _ => return Err(Status::invalid_argument("the stream must open with Hello")),
        };
        let p = self.accept(&hello).await?;
        // The epoch it was accepted in (`accept` checked they are equal).
        let epoch = hello.leader_epoch;
        let history = EpochHistory::from_entries(
            hello
                .epochs
                .iter()
                .map(|e| (e.epoch, e.start_offset))
                .collect(),
        );
        let start = p.follower_start(&history, hello.log_end_offset);
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let first = LeaderMessage {
            body: Some(leader_message::Body::Start(Start {
                truncate_to: start.truncate_to,
                log_start_offset: start.log_start_offset,
                high_watermark: start.high_watermark,
            })),
        };
        tx.send(Ok(first))
            .await
            .map_err(|_| Status::cancelled("follower went away"))?;
        tracing::debug!(partition = %p.name(), follower = hello.replica_id, ?start, "follower connected");
        tokio::spawn(serve(
            self.broker.clone(),
            p,
            epoch,
            hello.replica_id,
            inbound,
            tx,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

type Tx = mpsc::Sender<Result<LeaderMessage, Status>>;

fn position(m: Result<Option<FollowerMessage>, Status>) -> Option<i64> {
    match m {
        Ok(Some(FollowerMessage {
            body: Some(follower_message::Body::Position(p)),
        })) => Some(p.log_end_offset),
        _ => None,
    }
}

/// Pushes data to one follower until it goes away or this broker stops
/// leading the partition in `epoch`.
async fn serve(
    broker: Arc<Broker>,
    p: Arc<Partition>,
    epoch: i32,
    follower: i32,
    mut inbound: Streaming<FollowerMessage>,
    tx: Tx,
) {
    // The follower reports its log end once it has truncated.
    let Some(mut next) = position(inbound.message().await) else {
        return;
    };
    p.follower_position(follower, next, broker.now_ms());
    // Positions are read by their own task, so a full outbound buffer never
    // delays the high watermark.
    let reader = {
        let (p, broker) = (p.clone(), broker.clone());
        tokio::spawn(async move {
            while let Some(end) = position(inbound.message().await) {
                p.follower_position(follower, end, broker.now_ms());
            }
        })
    };
    let mut last_hw = -1;
    loop {
        let appended = p.appended();
        tokio::pin!(appended);
        appended.as_mut().enable();
        if p.leader_epoch() != epoch {
            let _ = tx
                .send(Err(Status::failed_precondition(format!(
                    "{} is no longer led here in epoch {epoch}",
                    p.name()
                ))))
                .await;
            break;
        }
        if reader.is_finished() {
            break;
        }
        let end = p.log_end_offset();
        if next < end {
            match p.read_for_follower(next, MAX_CHUNK).await {
                Ok((data, n)) if n > next => {
                    if n >= end {
                        p.sent_to_follower(follower, n, broker.now_ms());
                    }
                    last_hw = p.high_watermark();
                    let msg = LeaderMessage {
                        body: Some(leader_message::Body::Records(Records {
                            data,
                            high_watermark: last_hw,
                        })),
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        break;
                    }
                    next = n;
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::info!(partition = %p.name(), follower, next, error = %e, "cannot serve follower; it will reconnect");
                    let _ = tx.send(Err(refuse(e))).await;
                    break;
                }
            }
        }
        let hw = p.high_watermark();
        if hw != last_hw {
            last_hw = hw;
            if send_watermark(&tx, hw).await.is_err() {
                break;
            }
            continue;
        }
        tokio::select! {
            _ = &mut appended => {}
            _ = tokio::time::sleep(HEARTBEAT) => {
                if send_watermark(&tx, hw).await.is_err() {
                    break;
                }
            }
            _ = tx.closed() => break,
        }
    }
    reader.abort();
}

async fn send_watermark(tx: &Tx, hw: i64) -> Result<(), ()> {
    let msg = LeaderMessage {
        body: Some(leader_message::Body::Watermark(Watermark {
            high_watermark: hw,
        })),
    };
    tx.send(Ok(msg)).await.map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::cluster::view::LeaderEntry;
    use crate::cluster::LeaderRecord;
    use crate::replication::replica_set::ReplicaSet;

    fn hello(epoch: i32) -> Hello {
        Hello {
            topic: "t".into(),
            partition: 0,
            leader_epoch: epoch,
            ..Hello::default()
        }
    }

    #[tokio::test]
    async fn a_hello_ahead_of_the_leader_waits_for_its_promotion() {
        let d = tempfile::tempdir().unwrap();
        let b = crate::tests::broker(d.path(), ManualClock::new(1_000)).await;
        let t = crate::tests::topic("t", 1, &[]);
        b.create_topic(t, false).await.unwrap();
        let p = b.partition("t", 0).unwrap();
        let now = p.leader_epoch();
        let svc = ReplicationService::new(b.clone());
        assert_eq!(svc.led_here(&hello(now)).await.unwrap().leader_epoch(), now);

        // A follower that learned of the next epoch before this broker
        // took it up: its Hello waits, and gets the partition once
        // promoted (not a refusal and a backoff).
        let ahead = tokio::spawn({
            let svc = ReplicationService::new(b.clone());
            async move {
                svc.led_here(&hello(now + 1))
                    .await
                    .map(|p| p.leader_epoch())
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!ahead.is_finished(), "refused before the promotion");
        let set = ReplicaSet::new(
            b.node_id(),
            vec![b.node_id()],
            &[],
            p.log_end_offset(),
            1_000,
        );
        p.promote(now + 1, 0, set);
        b.leaders_changed.notify_waiters();
        let got = tokio::time::timeout(Duration::from_secs(5), ahead).await;
        assert_eq!(got.unwrap().unwrap().unwrap(), now + 1);

        // A follower holding a replica of a deleted topic of this name.
        let id = b.topic_id("t").unwrap();
        let of = |topic_id: &str| Hello {
            topic_id: topic_id.into(),
            replica_id: b.node_id() + 1,
            ..hello(now + 1)
        };
        let refused = |r: Result<Arc<Partition>, Status>| r.err().expect("refused");
        let other = refused(svc.accept(&of("deleted-topic-id")).await);
        assert_eq!(other.code(), tonic::Code::FailedPrecondition);
        assert!(other.message().contains("topic id"), "{other:?}");
        for same in [id.as_str(), ""] {
            // Past the id check (then refused: not a replica here).
            let e = refused(svc.accept(&of(same)).await);
            assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        }

        // Another broker leads that epoch (by this broker's view): refused
        // at once.
        b.view.write().unwrap().leaders.insert(
            ("t".into(), 0),
            LeaderEntry {
                leader: LeaderRecord {
                    broker: b.node_id() + 1,
                    epoch: now + 2,
                },
                lease: 1,
                create_revision: 1,
            },
        );
        let t0 = tokio::time::Instant::now();
        assert_eq!(
            svc.led_here(&hello(now + 2)).await.unwrap().leader_epoch(),
            now + 1,
            "the caller refuses the epoch mismatch"
        );
        assert!(
            t0.elapsed() < PROMOTION_WAIT,
            "waited for a leadership named elsewhere"
        );
    }
}
