//! Offset expiry across brokers' lifetimes: a group no broker coordinates
//! (its coordinator stopped, nobody asked for it since) is adopted and its
//! offsets expire a retention later.

use super::broker_with;
use crate::clock::ManualClock;
use crate::config::BrokerSettings;
use crate::groups::CommittedOffset;
use crate::topics::to_json;

#[tokio::test]
async fn a_group_nobody_coordinates_is_adopted_then_expires() {
    let d = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000);
    let settings = BrokerSettings {
        offsets_retention_minutes: 1,
        ..BrokerSettings::default()
    };
    let b = broker_with(d.path(), clock.clone(), settings).await;
    let at = |ms: i64| CommittedOffset {
        offset: 3,
        leader_epoch: -1,
        metadata: None,
        commit_timestamp: ms,
        topic_id: None,
    };
    // Stored by a coordinator that has since stopped: old, and recent.
    for (group, ms) in [("orphan", 1_000), ("recent", 50_000)] {
        let key = b.keys.group_offset(group, "t", 0);
        b.meta
            .put(&key, to_json(&at(ms)).unwrap().into())
            .await
            .unwrap();
    }
    b.sync_view().await.unwrap();
    // The session stays live as its loop (not run here) would keep it.
    let advance = |ms: i64| {
        clock.advance(ms);
        let ttl = b.settings.session_timeout_ms;
        b.session.renewed(b.session.lease(), b.now_ms(), ttl);
    };
    advance(60_000);
    b.expire_offsets().await;
    b.sync_view().await.unwrap();
    let coordinated: Vec<String> = b.view().coordinators.keys().cloned().collect();
    assert_eq!(
        coordinated,
        ["orphan"],
        "only the group idle past the retention"
    );
    assert_eq!(
        b.fetch_offsets("orphan", None).len(),
        1,
        "kept a retention more"
    );
    advance(60_000);
    b.expire_offsets().await;
    assert!(b.fetch_offsets("orphan", None).is_empty());
    assert!(b
        .meta
        .get(&b.keys.group_offset("orphan", "t", 0))
        .await
        .unwrap()
        .is_none());
    assert!(b
        .meta
        .get(&b.keys.group_offset("recent", "t", 0))
        .await
        .unwrap()
        .is_some());
    b.shutdown().await;
}
