//! Leader/follower replication (DESIGN §6).
//!
//! - [`replica_set`]: the leader's record of follower progress, the ISR and
//!   the high watermark (pure).
//! - [`service`]: the leader's side of a follower's gRPC stream
//!   (`strata.replication.v1.Replication/Replicate`).
//! - [`follower`]: the follower's task that copies one partition from its
//!   leader, truncating a divergent tail first.
//! - [`isr`]: the leader writing ISR changes to the metadata store (CAS on
//!   the partition state, guarded by its leader key), election eligibility,
//!   and handing leadership over at shutdown.
//! - [`reassign`]: moving replicas and transferring leadership.
//!
//! Why nothing acknowledged is lost: an acks=all write is acknowledged only
//! once every ISR member has it, where the leader's ISR is a superset of the
//! ISR in the store; only a live member of the stored ISR may take the
//! leader key (with a higher epoch); and a follower stops copying before it
//! tries to become leader. So every possible new leader holds every
//! acknowledged record, and followers of the new leader truncate only what
//! the new leader does not have, which was never acknowledged.

pub mod follower;
pub mod isr;
pub mod reassign;
pub mod replica_set;
pub mod service;
