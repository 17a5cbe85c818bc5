//! The follower's task for one partition: find the leader in the cluster
//! view, open a replication stream to its gRPC endpoint, truncate as the
//! leader says, then append what it pushes and report the new log end.
//! Reconnects (bounded backoff) on any error or when the view names a new
//! leader; stops when cancelled (before this replica is promoted, or when
//! it is removed).
//!
//! Between attempts it waits for the backoff or for its partition's leader
//! (or that leader's address) to change in the view, whichever comes
//! first: a new partition's followers usually look before its leader is
//! elected, and after a failover the backoff has grown while the old
//! leader was unreachable; in both cases the new leader key is what they
//! are waiting for. (A fixed wait made the first records on a new
//! replication-factor-3 topic wait ~25–40 ms for the second follower.) A
//! new leader also restarts the backoff.

use crate::broker::Broker;
use crate::partition::{FollowerStart, Partition};
use std::sync::Arc;
use std::time::Duration;
use strata_rpc::replication::replication_client::ReplicationClient;
use strata_rpc::replication::{
    follower_message, leader_message, EpochStart, FollowerMessage, Hello, Position,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

/// The largest HTTP/2 frame a follower takes from its leader: more than a
/// Records message (at most about 1 MiB of batches), so one frame carries
/// a whole one.
const MAX_FRAME: u32 = 2 << 20;

/// The leader a follower copies from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderTarget {
    pub broker: i32,
    pub epoch: i32,
    pub grpc: String,
}

/// A running follower task and the replica it writes.
pub struct FollowerHandle {
    pub partition: Arc<Partition>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl FollowerHandle {
    pub fn spawn(broker: Arc<Broker>, partition: Arc<Partition>) -> Self {
        let cancel = broker.shutdown_token().child_token();
        let task = tokio::spawn(follow(broker, partition.clone(), cancel.clone()));
        Self {
            partition,
            cancel,
            task,
        }
    }

    /// Stops copying; once this returns nothing more is appended.
    pub async fn stop(self) -> Arc<Partition> {
        self.cancel.cancel();
        if let Err(e) = self.task.await {
            tracing::error!(partition = %self.partition.name(), error = %e, "follower task failed");
        }
        self.partition
    }
}

/// A lazily connected channel to `addr`, with HTTP/2 windows and frames
/// sized for bulk copy.
pub fn channel(addr: &str) -> Result<Channel, String> {
    let ep = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("bad gRPC address {addr:?}: {e}"))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(32 << 20)
        // The leader's Records messages (up to 1 MiB of batches) come in
        // frames of up to this size rather than HTTP/2's default 16 KiB:
        // one frame to parse, account and hand up per message, not 64.
        .max_frame_size(MAX_FRAME)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5));
    Ok(ep.connect_lazy())
}

async fn follow(broker: Arc<Broker>, p: Arc<Partition>, cancel: CancellationToken) {
    let mut failures = 0u32;
    let mut last: Option<LeaderTarget> = None;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        // Created before the leader is looked up: a change from here on
        // ends the wait below.
        let changed = broker.leaders_changed.notified();
        let target = broker.leader_to_follow(&p.topic, p.index);
        if target != last {
            failures = 0;
            last.clone_from(&target);
        }
        let outcome = match target {
            Some(target) => tokio::select! {
                r = follow_once(&broker, &p, &target) => r.map_err(|e| (target, e)),
                _ = cancel.cancelled() => return,
            },
            None => Ok(()),
        };
        match outcome {
            Ok(()) => failures = 0,
            Err((target, e)) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(50) {
                    tracing::info!(partition = %p.name(), leader = target.broker, epoch = target.epoch, failures, error = %e, "replication stream failed; retrying");
                }
            }
        }
        let moved = || broker.leader_to_follow(&p.topic, p.index) != last;
        if !retry_wait(failures, &broker.leaders_changed, changed, moved, &cancel).await {
            return;
        }
    }
}

/// Waits before the next attempt: the backoff for `failures` consecutive
/// failures (25 ms, doubling up to 800 ms), or until `notify` fires and
/// `moved` says this partition's leader is no longer the one tried.
/// `changed` is a wait on `notify` created before that leader was looked
/// up. Other partitions' changes wake it too (one `Notify` per broker):
/// those only re-check, so a failover of many partitions does not send
/// every follower back to a dead leader once per key. False if cancelled.
async fn retry_wait<'a>(
    failures: u32,
    notify: &'a tokio::sync::Notify,
    changed: tokio::sync::futures::Notified<'a>,
    moved: impl Fn() -> bool,
    cancel: &CancellationToken,
) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(25u64 << failures.min(5));
    let mut changed = std::pin::pin!(changed);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return true,
            _ = &mut changed => {
                // Re-armed before looking, so no change is missed.
                changed.set(notify.notified());
                if moved() {
                    return true;
                }
            }
            _ = cancel.cancelled() => return false,
        }
    }
}

/// One stream to the leader; returns when it ends or the leader changes.
async fn follow_once(
    broker: &Arc<Broker>,
    p: &Arc<Partition>,
    target: &LeaderTarget,
) -> Result<(), String> {
    let mut client = ReplicationClient::new(broker.rpc_channel(&target.grpc)?)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel(8);
    let history = p.epoch_history();
    let hello = Hello {
        topic: p.topic.clone(),
        topic_id: p.topic_id().to_string(),
        partition: p.index,
        replica_id: broker.node_id(),
        leader_epoch: target.epoch,
        log_start_offset: p.log_start_offset(),
        log_end_offset: p.log_end_offset(),
        epochs: history
            .entries()
            .iter()
            .map(|&(epoch, start_offset)| EpochStart {
                epoch,
                start_offset,
            })
            .collect(),
    };
    let send = |m: follower_message::Body| {
        let tx = tx.clone();
        async move {
            tx.send(FollowerMessage { body: Some(m) })
                .await
                .map_err(|_| "stream closed".to_string())
        }
    };
    send(follower_message::Body::Hello(hello)).await?;
    let mut inbound = client
        .replicate(ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("{}: {}", s.code(), s.message()))?
        .into_inner();
    let status = |s: tonic::Status| format!("{}: {}", s.code(), s.message());
    let start = match inbound
        .message()
        .await
        .map_err(status)?
        .and_then(|m| m.body)
    {
        Some(leader_message::Body::Start(s)) => s,
        _ => return Err("the leader did not open with Start".into()),
    };
    let end = p
        .truncate_for_leader(
            FollowerStart {
                truncate_to: start.truncate_to,
                log_start_offset: start.log_start_offset,
                high_watermark: start.high_watermark,
            },
            broker.now_ms(),
        )
        .map_err(|e| e.to_string())?;
    send(follower_message::Body::Position(Position {
        log_end_offset: end,
    }))
    .await?;
    let mut check = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            m = inbound.message() => match m.map_err(status)?.and_then(|m| m.body) {
                Some(leader_message::Body::Records(r)) => {
                    let end = p
                        .append_replicated(&r.data, r.high_watermark, broker.now_ms())
                        .map_err(|e| e.to_string())?;
                    send(follower_message::Body::Position(Position { log_end_offset: end })).await?;
                }
                Some(leader_message::Body::Watermark(w)) => {
                    p.set_follower_high_watermark(w.high_watermark);
                    // Answering shows the leader this replica is alive and
                    // (if so) caught up while no data flows.
                    send(follower_message::Body::Position(Position {
                        log_end_offset: p.log_end_offset(),
                    }))
                    .await?;
                }
                Some(leader_message::Body::Start(_)) => {
                    return Err("unexpected Start mid-stream".into());
                }
                None => return Ok(()),
            },
            _ = check.tick() => {
                if broker.leader_to_follow(&p.topic, p.index).as_ref() != Some(target) {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use tokio::sync::Notify;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn a_retry_waits_out_its_backoff_unless_its_leader_changes_first() {
        let (n, cancel) = (Notify::new(), CancellationToken::new());
        let wait = |failures, moved: bool| {
            let (n, cancel) = (&n, &cancel);
            async move {
                let t = Instant::now();
                let go_on = retry_wait(failures, n, n.notified(), || moved, cancel).await;
                (go_on, t.elapsed())
            }
        };
        assert_eq!(wait(0, false).await, (true, Duration::from_millis(25)));
        assert_eq!(
            wait(9, false).await,
            (true, Duration::from_millis(800)),
            "capped"
        );
        // A change after the follower looked up its leader (the future's
        // creation), even before it waits, ends the wait at once...
        let changed = n.notified();
        n.notify_waiters();
        let t = Instant::now();
        assert!(retry_wait(9, &n, changed, || true, &cancel).await);
        assert_eq!(t.elapsed(), Duration::ZERO);
        // ...if it moved this partition's leader; others' changes do not.
        let (fired, n2) = (std::sync::atomic::AtomicUsize::new(0), &n);
        let t = Instant::now();
        let waiting = retry_wait(
            5,
            n2,
            n2.notified(),
            || {
                fired.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                false
            },
            &cancel,
        );
        let churn = async {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                n2.notify_waiters();
            }
        };
        let (go_on, ()) = tokio::join!(waiting, churn);
        assert!(go_on);
        assert_eq!(t.elapsed(), Duration::from_millis(800));
        assert_eq!(
            fired.load(std::sync::atomic::Ordering::Relaxed),
            3,
            "each change re-checked"
        );
        cancel.cancel();
        assert!(!wait(9, false).await.0);
    }

    #[tokio::test]
    async fn the_metadata_watch_wakes_waiting_followers_on_a_broker_or_leader_key() {
        let d = tempfile::tempdir().unwrap();
        let b = crate::tests::broker(d.path(), ManualClock::new(1_000)).await;
        let background = tokio::spawn(b.clone().run_background());
        // Another broker registering (its gRPC address is what a follower
        // of it waits for), written straight to the store: only the
        // broker's watch of the store can see it.
        let record = crate::cluster::BrokerRecord {
            id: 99,
            host: "127.0.0.1".into(),
            port: 1,
            grpc: Some("127.0.0.1:2".into()),
            http: None,
            rack: None,
            start_ms: 0,
        };
        let changed = b.leaders_changed.notified();
        b.meta
            .txn(strata_meta::Txn::new().then(strata_meta::Op::put(
                b.keys.broker(99),
                serde_json::to_vec(&record).unwrap(),
            )))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), changed)
            .await
            .expect("no wake-up for the new broker record");
        // A leader key: this broker electing itself for a new topic (its
        // own write also rereads the view, which wakes them too).
        let changed = b.leaders_changed.notified();
        let t = crate::tests::topic("t", 1, &[]);
        b.create_topic(t, false).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), changed)
            .await
            .expect("no wake-up for the new leader key");
        b.shutdown_token().cancel();
        background.await.unwrap();
    }
}
