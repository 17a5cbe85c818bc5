//! One classic-protocol consumer group's state machine (Kafka's
//! Empty → PreparingRebalance → CompletingRebalance → Stable).
//!
//! Pure and synchronous: time comes in as `now_ms`, and callers waiting for a
//! rebalance get a oneshot receiver that a later call (another member's join,
//! the leader's sync, or [`Group::tick`]) completes. Never await while holding
//! a group.
//!
//! Invariants:
//! - the generation only grows; join and sync responses carry the generation
//!   they completed;
//! - in CompletingRebalance and Stable every member has received the join
//!   response of the current generation;
//! - a member in no state outlives its session timeout without a heartbeat,
//!   except while its JoinGroup is parked during PreparingRebalance (then the
//!   rebalance timeout bounds it).

use super::{GroupError, JoinRequest, JoinResponse, JoinedMember, SyncRequest, SyncResponse};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::PreparingRebalance => "PreparingRebalance",
            Self::CompletingRebalance => "CompletingRebalance",
            Self::Stable => "Stable",
            Self::Dead => "Dead",
        }
    }
}

pub(crate) type JoinTx = oneshot::Sender<Result<JoinResponse, GroupError>>;
pub(crate) type SyncTx = oneshot::Sender<Result<SyncResponse, GroupError>>;

/// Either an answer now, or a receiver the answer will arrive on.
pub enum Reply<T> {
    Now(Result<T, GroupError>),
    Later(oneshot::Receiver<Result<T, GroupError>>),
}

#[derive(Debug)]
pub(crate) struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i64,
    pub rebalance_timeout_ms: i64,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub last_heartbeat_ms: i64,
    pub join_seq: u64,
    pub join_waiter: Option<JoinTx>,
    pub sync_waiter: Option<SyncTx>,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// Timing settings the state machine needs.
#[derive(Debug, Clone, Copy)]
pub struct GroupTimings {
    pub initial_rebalance_delay_ms: i64,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
}

#[derive(Debug)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub(crate) members: BTreeMap<String, Member>,
    /// KIP-394: member ids handed out with MEMBER_ID_REQUIRED, with expiry.
    pending: HashMap<String, i64>,
    rebalance_deadline_ms: i64,
    /// While set, an initial delayed join is in progress (from an empty group):
    /// joins extend the deadline, but never past this bound.
    initial_join_bound_ms: Option<i64>,
    next_seq: u64,
    /// When the group was last seen with members, or made here (loaded,
    /// or first asked for): its committed offsets expire
    /// `offsets.retention.minutes` after this or their last commit,
    /// whichever is later (`expiry.rs`). Kept by the coordinator.
    pub(crate) active_ms: i64,
}

impl Group {
    pub fn new(id: String) -> Self {
        Self {
            id,
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            rebalance_deadline_ms: 0,
            initial_join_bound_ms: None,
            next_seq: 0,
            active_ms: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn join(&mut self, req: JoinRequest, now: i64, t: &GroupTimings) -> Reply<JoinResponse> {
        match self.join_inner(req, now, t) {
            Ok(r) => r,
            Err(e) => Reply::Now(Err(e)),
        }
    }

    fn join_inner(
        &mut self,
        req: JoinRequest,
        now: i64,
        t: &GroupTimings,
    ) -> Result<Reply<JoinResponse>, GroupError> {
        if req.session_timeout_ms < t.min_session_timeout_ms
            || req.session_timeout_ms > t.max_session_timeout_ms
        {
            return Err(GroupError::InvalidSessionTimeout);
        }
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        if !self.members.is_empty() && !self.supports(&req) {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        if req.member_id.is_empty() {
            let id = format!("{}-{}", req.client_id, uuid::Uuid::new_v4());
            if req.require_known_member_id {
                self.pending
                    .insert(id.clone(), now + i64::from(req.session_timeout_ms));
                return Err(GroupError::MemberIdRequired(id));
            }
            return Ok(self.add_member_and_rebalance(id, req, now, t));
        }
        if self.pending.remove(&req.member_id).is_some() {
            let id = req.member_id.clone();
            return Ok(self.add_member_and_rebalance(id, req, now, t));
        }
        let state = self.state;
        let Some(m) = self.members.get_mut(&req.member_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        let changed = m.protocols != req.protocols;
        m.protocols = req.protocols;
        m.session_timeout_ms = i64::from(req.session_timeout_ms);
        m.rebalance_timeout_ms = i64::from(req.rebalance_timeout_ms);
        m.last_heartbeat_ms = now;
        let id = m.id.clone();
        let is_leader = self.leader.as_deref() == Some(id.as_str());
        let (tx, rx) = oneshot::channel();
        match state {
            GroupState::PreparingRebalance => {
                self.park_join(&id, tx);
                self.check_join_complete(now);
            }
            GroupState::CompletingRebalance | GroupState::Stable
                if !(changed || (state == GroupState::Stable && is_leader)) =>
            {
                // A retried join with nothing new: answer with the current generation.
                return Ok(Reply::Now(Ok(self.join_response_for(&id))));
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.park_join(&id, tx);
                self.prepare_rebalance(now, t);
            }
            GroupState::Empty | GroupState::Dead => return Err(GroupError::UnknownMemberId),
        }
        Ok(Reply::Later(rx))
    }

    fn park_join(&mut self, id: &str, tx: JoinTx) {
        if let Some(m) = self.members.get_mut(id) {
            if let Some(old) = m.join_waiter.replace(tx) {
                // A duplicate join from the same member supersedes the old one.
                let _ = old.send(Err(GroupError::UnknownMemberId));
            }
        }
    }

    /// Whether `req` is compatible with the group's members.
    fn supports(&self, req: &JoinRequest) -> bool {
        if self
            .protocol_type
            .as_deref()
            .is_some_and(|p| p != req.protocol_type)
        {
            return false;
        }
        self.members.values().all(|m| {
            m.protocols
                .iter()
                .any(|(n, _)| req.protocols.iter().any(|(r, _)| r == n))
        })
    }

    fn add_member_and_rebalance(
        &mut self,
        id: String,
        req: JoinRequest,
        now: i64,
        t: &GroupTimings,
    ) -> Reply<JoinResponse> {
        let (tx, rx) = oneshot::channel();
        self.next_seq += 1;
        if self.protocol_type.is_none() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        self.members.insert(
            id.clone(),
            Member {
                id: id.clone(),
                instance_id: req.group_instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                session_timeout_ms: i64::from(req.session_timeout_ms),
                rebalance_timeout_ms: i64::from(req.rebalance_timeout_ms),
                protocols: req.protocols,
                assignment: Bytes::new(),
                last_heartbeat_ms: now,
                join_seq: self.next_seq,
                join_waiter: Some(tx),
                sync_waiter: None,
            },
        );
        match self.state {
            GroupState::PreparingRebalance => {
                if let Some(bound) = self.initial_join_bound_ms {
                    self.rebalance_deadline_ms = (now + t.initial_rebalance_delay_ms).min(bound);
                }
                self.check_join_complete(now);
            }
            _ => self.prepare_rebalance(now, t),
        }
        Reply::Later(rx)
    }

    fn max_rebalance_timeout(&self) -> i64 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
    }

    fn prepare_rebalance(&mut self, now: i64, t: &GroupTimings) {
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut() {
                m.assignment = Bytes::new();
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(Err(GroupError::RebalanceInProgress));
                }
            }
        }
        let from_empty = self.state == GroupState::Empty;
        self.state = GroupState::PreparingRebalance;
        if from_empty && t.initial_rebalance_delay_ms > 0 {
            let bound = now + self.max_rebalance_timeout();
            self.initial_join_bound_ms = Some(bound);
            self.rebalance_deadline_ms = (now + t.initial_rebalance_delay_ms).min(bound);
        } else {
            self.initial_join_bound_ms = None;
            self.rebalance_deadline_ms = now + self.max_rebalance_timeout();
        }
        tracing::debug!(group = %self.id, generation = self.generation, "preparing rebalance");
        self.check_join_complete(now);
    }

    fn check_join_complete(&mut self, now: i64) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let delaying = self.initial_join_bound_ms.is_some() && now < self.rebalance_deadline_ms;
        let all_joined = self.members.values().all(|m| m.join_waiter.is_some());
        if (all_joined && !delaying) || now >= self.rebalance_deadline_ms {
            self.complete_join(now);
        }
    }

    fn select_protocol(&self) -> Option<String> {
        let mut candidates: Vec<&str> = Vec::new();
        // Candidates in the earliest member's preference order, so ties are
        // broken deterministically.
        if let Some(first) = self.members.values().min_by_key(|m| m.join_seq) {
            for (name, _) in &first.protocols {
                if self
                    .members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
                {
                    candidates.push(name);
                }
            }
        }
        // Each member votes for its most preferred candidate.
        let mut votes: Vec<(usize, &str)> = candidates.iter().map(|c| (0, *c)).collect();
        for m in self.members.values() {
            if let Some((n, _)) = m
                .protocols
                .iter()
                .find(|(n, _)| candidates.contains(&n.as_str()))
            {
                if let Some(v) = votes.iter_mut().find(|(_, c)| c == n) {
                    v.0 += 1;
                }
            }
        }
        let best = votes.iter().map(|(n, _)| *n).max()?;
        votes
            .into_iter()
            .find(|(n, _)| *n == best)
            .map(|(_, c)| c.to_string())
    }

    fn complete_join(&mut self, now: i64) {
        self.initial_join_bound_ms = None;
        let missing: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in missing {
            tracing::info!(group = %self.id, member = %id, "member did not rejoin in time; removing");
            self.members.remove(&id);
        }
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.select_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self
                .members
                .values()
                .min_by_key(|m| m.join_seq)
                .map(|m| m.id.clone());
        }
        self.state = GroupState::CompletingRebalance;
        tracing::info!(
            group = %self.id,
            generation = self.generation,
            members = self.members.len(),
            protocol = ?self.protocol,
            "group rebalanced"
        );
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let resp = self.join_response_for(&id);
            if let Some(m) = self.members.get_mut(&id) {
                m.last_heartbeat_ms = now;
                if let Some(w) = m.join_waiter.take() {
                    let _ = w.send(Ok(resp));
                }
            }
        }
    }

    fn join_response_for(&self, id: &str) -> JoinResponse {
        let protocol = self.protocol.clone().unwrap_or_default();
        let is_leader = self.leader.as_deref() == Some(id);
        let members = if is_leader {
            let mut ms: Vec<&Member> = self.members.values().collect();
            ms.sort_by_key(|m| m.join_seq);
            ms.into_iter()
                .map(|m| JoinedMember {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    metadata: m.metadata_for(&protocol),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: id.to_string(),
            members,
        }
    }

    pub fn sync(&mut self, req: SyncRequest) -> Reply<SyncResponse> {
        let Some(m) = self.members.get(&req.member_id) else {
            return Reply::Now(Err(GroupError::UnknownMemberId));
        };
        if req.generation != self.generation {
            return Reply::Now(Err(GroupError::IllegalGeneration));
        }
        if req
            .protocol_type
            .as_ref()
            .is_some_and(|p| Some(p) != self.protocol_type.as_ref())
            || req
                .protocol_name
                .as_ref()
                .is_some_and(|p| Some(p) != self.protocol.as_ref())
        {
            return Reply::Now(Err(GroupError::InconsistentGroupProtocol));
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => Reply::Now(Err(GroupError::UnknownMemberId)),
            GroupState::PreparingRebalance => Reply::Now(Err(GroupError::RebalanceInProgress)),
            GroupState::Stable => Reply::Now(Ok(self.sync_response(m.assignment.clone()))),
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                let is_leader = self.leader.as_deref() == Some(req.member_id.as_str());
                if let Some(m) = self.members.get_mut(&req.member_id) {
                    m.sync_waiter = Some(tx);
                }
                if is_leader {
                    let assignments: HashMap<String, Bytes> = req.assignments.into_iter().collect();
                    let resp_base = self.sync_response(Bytes::new());
                    for m in self.members.values_mut() {
                        m.assignment = assignments.get(&m.id).cloned().unwrap_or_default();
                        if let Some(w) = m.sync_waiter.take() {
                            let mut r = resp_base.clone();
                            r.assignment = m.assignment.clone();
                            let _ = w.send(Ok(r));
                        }
                    }
                    self.state = GroupState::Stable;
                    tracing::debug!(group = %self.id, generation = self.generation, "group stable");
                }
                Reply::Later(rx)
            }
        }
    }

    fn sync_response(&self, assignment: Bytes) -> SyncResponse {
        SyncResponse {
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            assignment,
        }
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        generation: i32,
        now: i64,
    ) -> Result<(), GroupError> {
        let state = self.state;
        let current = self.generation;
        let Some(m) = self.members.get_mut(member_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        if generation != current {
            return Err(GroupError::IllegalGeneration);
        }
        m.last_heartbeat_ms = now;
        match state {
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    /// Removes members that leave; per-member results in request order.
    pub fn leave(
        &mut self,
        member_ids: &[String],
        now: i64,
        t: &GroupTimings,
    ) -> Vec<Result<(), GroupError>> {
        member_ids
            .iter()
            .map(|id| {
                if self.pending.remove(id).is_some() {
                    return Ok(());
                }
                if self.members.contains_key(id) {
                    tracing::info!(group = %self.id, member = %id, "member left");
                    self.remove_member(id, now, t);
                    Ok(())
                } else {
                    Err(GroupError::UnknownMemberId)
                }
            })
            .collect()
    }

    fn remove_member(&mut self, id: &str, now: i64, t: &GroupTimings) {
        if let Some(m) = self.members.remove(id) {
            if let Some(w) = m.join_waiter {
                let _ = w.send(Err(GroupError::UnknownMemberId));
            }
            if let Some(w) = m.sync_waiter {
                let _ = w.send(Err(GroupError::UnknownMemberId));
            }
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => self.prepare_rebalance(now, t),
            GroupState::PreparingRebalance => {
                if self.members.is_empty() {
                    self.complete_join(now);
                } else {
                    self.check_join_complete(now);
                }
            }
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Expires sessions and pending members, and ends overdue join phases.
    pub fn tick(&mut self, now: i64, t: &GroupTimings) {
        self.pending.retain(|_, deadline| *deadline > now);
        let parked_ok = self.state == GroupState::PreparingRebalance;
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| !(parked_ok && m.join_waiter.is_some()))
            .filter(|m| now - m.last_heartbeat_ms > m.session_timeout_ms)
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "member session expired");
            self.remove_member(&id, now, t);
        }
        if self.state == GroupState::PreparingRebalance && now >= self.rebalance_deadline_ms {
            self.complete_join(now);
        }
    }

    /// Ends the group here (coordination moved): parked calls fail with
    /// NOT_COORDINATOR so clients look the coordinator up again.
    pub fn shutdown(&mut self) {
        for m in self.members.values_mut() {
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(Err(GroupError::NotCoordinator));
            }
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(Err(GroupError::NotCoordinator));
            }
        }
        self.members.clear();
        self.state = GroupState::Dead;
    }

    /// Validates an OffsetCommit's member and generation (Kafka allows
    /// commits while preparing a rebalance, so revoking consumers can commit).
    pub fn validate_commit(&self, member_id: &str, generation: i32) -> Result<(), GroupError> {
        if generation < 0 && member_id.is_empty() {
            return if self.members.is_empty() {
                Ok(())
            } else {
                Err(GroupError::IllegalGeneration)
            };
        }
        if !self.members.contains_key(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        Ok(())
    }
}
