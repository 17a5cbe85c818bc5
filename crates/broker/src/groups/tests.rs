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
