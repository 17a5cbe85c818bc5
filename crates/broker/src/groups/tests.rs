use super::group::{Group, GroupState, GroupTimings, Reply};
use super::*;

const T: GroupTimings = GroupTimings {
    initial_rebalance_delay_ms: 0,
    min_session_timeout_ms: 1000,
    max_session_timeout_ms: 60_000,
};

fn req(member: &str, protocols: &[&str]) -> JoinRequest {
    JoinRequest {
        group_id: "g".into(),
        member_id: member.into(),
        group_instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 5_000,
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|p| (p.to_string(), Bytes::from(format!("meta-{p}"))))
            .collect(),
        require_known_member_id: true,
    }
}

fn now<T: std::fmt::Debug>(r: Reply<T>) -> Result<T, GroupError> {
    match r {
        Reply::Now(r) => r,
        Reply::Later(mut rx) => rx
            .try_recv()
            .unwrap_or(Err(GroupError::CoordinatorNotAvailable)),
    }
}

/// KIP-394 first join: returns the assigned member id.
fn member_id(g: &mut Group, t: i64) -> String {
    match now(g.join(req("", &["range"]), t, &T)) {
        Err(GroupError::MemberIdRequired(id)) => id,
        other => panic!("expected MEMBER_ID_REQUIRED, got {other:?}"),
    }
}

#[test]
fn single_member_joins_syncs_and_heartbeats() {
    let mut g = Group::new("g".into());
    let id = member_id(&mut g, 0);
    let j = now(g.join(req(&id, &["range"]), 0, &T)).unwrap();
    assert_eq!(j.generation, 1);
    assert_eq!(j.leader, id);
    assert_eq!(j.members.len(), 1);
    assert_eq!(j.protocol_name.as_deref(), Some("range"));
    assert_eq!(g.state, GroupState::CompletingRebalance);
    let s = now(g.sync(SyncRequest {
        group_id: "g".into(),
        member_id: id.clone(),
        generation: 1,
        protocol_type: None,
        protocol_name: None,
        assignments: vec![(id.clone(), Bytes::from_static(b"A"))],
    }))
    .unwrap();
    assert_eq!(&s.assignment[..], b"A");
    assert_eq!(g.state, GroupState::Stable);
    assert!(g.heartbeat(&id, 1, 10).is_ok());
    assert_eq!(g.heartbeat(&id, 0, 10), Err(GroupError::IllegalGeneration));
    assert_eq!(
        g.heartbeat("nobody", 1, 10),
        Err(GroupError::UnknownMemberId)
    );
}

#[test]
fn second_member_triggers_rebalance_and_both_get_assignments() {
    let mut g = Group::new("g".into());
    let a = member_id(&mut g, 0);
    now(g.join(req(&a, &["range", "roundrobin"]), 0, &T)).unwrap();
    now(g.sync(SyncRequest {
        group_id: "g".into(),
        member_id: a.clone(),
        generation: 1,
        protocol_type: None,
        protocol_name: None,
        assignments: vec![],
    }))
    .unwrap();
    let b = member_id(&mut g, 1);
    let Reply::Later(mut b_join) = g.join(req(&b, &["roundrobin", "range"]), 1, &T) else {
        panic!("join must wait for the rebalance");
    };
    assert_eq!(g.state, GroupState::PreparingRebalance);
    assert_eq!(g.heartbeat(&a, 1, 2), Err(GroupError::RebalanceInProgress));
    let ja = now(g.join(req(&a, &["range", "roundrobin"]), 2, &T)).unwrap();
    let jb = b_join.try_recv().unwrap().unwrap();
    assert_eq!(ja.generation, 2);
    assert_eq!(jb.generation, 2);
    assert_eq!(ja.leader, a);
    assert_eq!(ja.members.len(), 2);
    assert!(
        jb.members.is_empty(),
        "followers do not get the member list"
    );
    // One vote each: the tie goes to the first candidate in the first member's order.
    assert_eq!(ja.protocol_name.as_deref(), Some("range"));
    let Reply::Later(mut b_sync) = g.sync(SyncRequest {
        group_id: "g".into(),
        member_id: b.clone(),
        generation: 2,
        protocol_type: None,
        protocol_name: None,
        assignments: vec![],
    }) else {
        panic!("a follower's sync waits for the leader");
    };
    let sa = now(g.sync(SyncRequest {
        group_id: "g".into(),
        member_id: a.clone(),
        generation: 2,
        protocol_type: None,
        protocol_name: None,
        assignments: vec![(a.clone(), "pa".into()), (b.clone(), "pb".into())],
    }))
    .unwrap();
    assert_eq!(&sa.assignment[..], b"pa");
    assert_eq!(&b_sync.try_recv().unwrap().unwrap().assignment[..], b"pb");
}

#[test]
fn leave_and_session_expiry_remove_members() {
    let mut g = Group::new("g".into());
    let a = member_id(&mut g, 0);
    now(g.join(req(&a, &["range"]), 0, &T)).unwrap();
    let b = member_id(&mut g, 0);
    let Reply::Later(mut jb) = g.join(req(&b, &["range"]), 0, &T) else {
        panic!()
    };
    now(g.join(req(&a, &["range"]), 0, &T)).unwrap();
    jb.try_recv().unwrap().unwrap();
    assert_eq!(g.generation, 2);
    // b leaves: rebalance; a rejoins alone.
    assert_eq!(g.leave(std::slice::from_ref(&b), 10, &T), vec![Ok(())]);
    assert_eq!(g.state, GroupState::PreparingRebalance);
    let j = now(g.join(req(&a, &["range"]), 10, &T)).unwrap();
    assert_eq!((j.generation, j.members.len()), (3, 1));
    // a stops heartbeating: after its session timeout the group is empty.
    g.tick(10 + 10_001, &T);
    assert_eq!(g.state, GroupState::Empty);
    assert!(g.is_empty());
}

#[test]
fn member_that_does_not_rejoin_is_dropped_at_rebalance_timeout() {
    let mut g = Group::new("g".into());
    let a = member_id(&mut g, 0);
    now(g.join(req(&a, &["range"]), 0, &T)).unwrap();
    let b = member_id(&mut g, 0);
    let Reply::Later(mut jb) = g.join(req(&b, &["range"]), 0, &T) else {
        panic!()
    };
    // a never rejoins; the rebalance timeout (5 s) completes the join without it.
    g.tick(4_999, &T);
    assert!(jb.try_recv().is_err());
    g.tick(5_000, &T);
    let j = jb.try_recv().unwrap().unwrap();
    assert_eq!(j.leader, b);
    assert_eq!(j.members.len(), 1);
}

#[test]
fn initial_rebalance_delay_waits_and_extends() {
    let t = GroupTimings {
        initial_rebalance_delay_ms: 3000,
        ..T
    };
    let mut g = Group::new("g".into());
    let Reply::Now(Err(GroupError::MemberIdRequired(a))) = g.join(req("", &["range"]), 0, &t)
    else {
        panic!()
    };
    let Reply::Later(mut ja) = g.join(req(&a, &["range"]), 0, &t) else {
        panic!()
    };
    g.tick(2000, &t);
    assert!(ja.try_recv().is_err(), "still inside the initial delay");
    g.tick(3000, &t);
    assert_eq!(ja.try_recv().unwrap().unwrap().generation, 1);
}

#[test]
fn incompatible_protocols_and_bad_session_timeouts_are_refused() {
    let mut g = Group::new("g".into());
    let a = member_id(&mut g, 0);
    now(g.join(req(&a, &["range"]), 0, &T)).unwrap();
    let mut r = req("", &["roundrobin"]);
    r.require_known_member_id = false;
    assert!(matches!(
        now(g.join(r, 0, &T)),
        Err(GroupError::InconsistentGroupProtocol)
    ));
    let mut r = req("", &["range"]);
    r.session_timeout_ms = 10;
    assert!(matches!(
        now(g.join(r, 0, &T)),
        Err(GroupError::InvalidSessionTimeout)
    ));
}

#[test]
fn commit_validation() {
    let mut g = Group::new("g".into());
    assert!(
        g.validate_commit("", -1).is_ok(),
        "standalone commits on an empty group"
    );
    let a = member_id(&mut g, 0);
    now(g.join(req(&a, &["range"]), 0, &T)).unwrap();
    assert_eq!(
        g.validate_commit(&a, 1),
        Err(GroupError::RebalanceInProgress)
    );
    now(g.sync(SyncRequest {
        group_id: "g".into(),
        member_id: a.clone(),
        generation: 1,
        protocol_type: None,
        protocol_name: None,
        assignments: vec![],
    }))
    .unwrap();
    assert!(g.validate_commit(&a, 1).is_ok());
    assert_eq!(g.validate_commit(&a, 7), Err(GroupError::IllegalGeneration));
    assert_eq!(g.validate_commit("x", 1), Err(GroupError::UnknownMemberId));
}

mod expiry {
    use super::*;
    use crate::clock::ManualClock;
    use crate::keys::Keys;
    use strata_meta::MemStore;

    const RETENTION: i64 = 60_000;

    fn coordinator(clock: &ManualClock) -> (GroupCoordinator, Arc<MemStore>) {
        let store = Arc::new(MemStore::new());
        let c = GroupCoordinator::new(store.clone(), Keys::new("c"), Arc::new(clock.clone()), T);
        (c, store)
    }

    fn off(o: i64, at: i64) -> CommittedOffset {
        CommittedOffset {
            offset: o,
            leader_epoch: -1,
            metadata: None,
            commit_timestamp: at,
            topic_id: None,
        }
    }

    async fn stored(s: &MemStore) -> usize {
        s.range("/strata/c/groups/").await.unwrap().kvs.len()
    }

    #[tokio::test]
    async fn an_idle_groups_offsets_expire_a_retention_after_its_last_commit() {
        let clock = ManualClock::new(1_000);
        let (c, s) = coordinator(&clock);
        c.commit_offsets("g", "", -1, vec![("t".into(), 0, off(5, 1_000))])
            .await
            .unwrap();
        clock.advance(RETENTION / 2);
        // A later commit counts from itself.
        c.commit_offsets("g", "", -1, vec![("t".into(), 1, off(7, clock.now_ms()))])
            .await
            .unwrap();
        clock.advance(RETENTION - 1);
        assert_eq!(c.expire_offsets(RETENTION).await, 0);
        assert_eq!(c.fetch_offsets("g", None).len(), 2);
        clock.advance(1);
        assert_eq!(c.expire_offsets(RETENTION).await, 2);
        assert!(c.fetch_offsets("g", None).is_empty());
        assert_eq!(stored(&s).await, 0);
        assert!(c.list().is_empty(), "the group is gone");
    }

    #[tokio::test]
    async fn a_group_with_members_or_pending_offsets_keeps_its_offsets() {
        let clock = ManualClock::new(1_000);
        let (c, s) = coordinator(&clock);
        for g in ["members", "pending"] {
            c.commit_offsets(g, "", -1, vec![("t".into(), 0, off(5, 1_000))])
                .await
                .unwrap();
        }
        let (id, generation) = {
            let g = c.group("members");
            let mut g = lock(&g);
            let id = member_id(&mut g, 1_000);
            let j = now(g.join(req(&id, &["range"]), 1_000, &T)).unwrap();
            (id, j.generation)
        };
        c.txn_commit_offsets("pending", 42, None, vec![("t".into(), 1, off(9, 1_000))])
            .await
            .unwrap();
        // Members keep the group active through ticks; idle for longer than
        // the retention by their commits alone.
        for _ in 0..3 * RETENTION / 5_000 {
            clock.advance(5_000);
            c.heartbeat("members", &id, generation).unwrap();
            c.tick();
        }
        assert_eq!(c.expire_offsets(RETENTION).await, 0);
        assert_eq!(stored(&s).await, 3);
        // Once the transaction ends and the members leave: a retention later.
        c.complete_txn_offsets("pending", 42, false).await.unwrap();
        c.leave("members", &[id]).unwrap();
        assert_eq!(c.expire_offsets(RETENTION).await, 1, "pending's");
        clock.advance(RETENTION);
        assert_eq!(c.expire_offsets(RETENTION).await, 1, "members'");
        assert_eq!(stored(&s).await, 0);
    }

    /// Keys of the longest group id: the deletes are split by bytes too.
    #[tokio::test]
    async fn a_long_group_ids_many_offsets_expire() {
        let clock = ManualClock::new(1_000);
        let (c, s) = coordinator(&clock);
        let group = "g".repeat(crate::keys::MAX_ID_BYTES);
        let offsets = (0..100).map(|p| ("t".into(), p, off(5, 1_000))).collect();
        c.commit_offsets(&group, "", -1, offsets).await.unwrap();
        clock.advance(RETENTION);
        assert_eq!(c.expire_offsets(RETENTION).await, 100);
        assert_eq!(stored(&s).await, 0);
    }

    #[tokio::test]
    async fn an_offset_committed_while_expiring_is_kept() {
        let clock = ManualClock::new(1_000);
        let (c, s) = coordinator(&clock);
        c.commit_offsets("g", "", -1, vec![("t".into(), 0, off(5, 1_000))])
            .await
            .unwrap();
        clock.advance(RETENTION);
        // As if committed between the choice and the delete: the stored
        // value is no longer the one expired.
        let key = c.keys.group_offset("g", "t", 0);
        s.put(&key, to_json(&off(6, clock.now_ms())).unwrap().into())
            .await
            .unwrap();
        assert_eq!(c.expire_offsets(RETENTION).await, 0);
        assert_eq!(stored(&s).await, 1);
    }
}
