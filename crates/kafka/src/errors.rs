//! The one place where domain errors become Kafka error codes.

use kafka_protocol::ResponseError as E;
use strata_broker::groups::GroupError;
use strata_broker::metrics::Metrics;
use strata_broker::BrokerError;

pub const NONE: i16 = 0;

pub fn broker_error_code(e: &BrokerError) -> i16 {
    match e {
        BrokerError::UnknownTopicOrPartition(_) => E::UnknownTopicOrPartition,
        BrokerError::TopicAlreadyExists(_) => E::TopicAlreadyExists,
        BrokerError::InvalidTopic(..) => E::InvalidTopicException,
        BrokerError::InvalidPartitions(_) => E::InvalidPartitions,
        BrokerError::InvalidReplicationFactor(_) => E::InvalidReplicationFactor,
        BrokerError::InvalidConfig(_) => E::InvalidConfig,
        BrokerError::InvalidRequest(_) => E::InvalidRequest,
        BrokerError::MessageTooLarge { .. } | BrokerError::DecompressedTooLarge { .. } => {
            E::MessageTooLarge
        }
        BrokerError::CorruptMessage(_) => E::CorruptMessage,
        BrokerError::InvalidTimestamp(_) => E::InvalidTimestamp,
        // DESIGN §2: record batches older than magic 2 get UNSUPPORTED_VERSION.
        BrokerError::UnsupportedMessageFormat(_) => E::UnsupportedVersion,
        BrokerError::OffsetOutOfRange { .. } => E::OffsetOutOfRange,
        BrokerError::Storage(_) => E::KafkaStorageError,
        BrokerError::Metadata(_) => E::UnknownServerError,
        BrokerError::Timeout(_) => E::RequestTimedOut,
        BrokerError::OutOfOrderSequence(_) => E::OutOfOrderSequenceNumber,
        BrokerError::InvalidProducerEpoch(_) => E::InvalidProducerEpoch,
        BrokerError::NotLeader(_) => E::NotLeaderOrFollower,
        BrokerError::NotEnoughReplicas(_) => E::NotEnoughReplicas,
        BrokerError::NotEnoughReplicasAfterAppend(_) => E::NotEnoughReplicasAfterAppend,
        BrokerError::FencedLeaderEpoch(_) => E::FencedLeaderEpoch,
        BrokerError::UnknownLeaderEpoch(_) => E::UnknownLeaderEpoch,
        BrokerError::ConcurrentTransactions(_) => E::ConcurrentTransactions,
        BrokerError::InvalidTxnState(_) => E::InvalidTxnState,
        BrokerError::ProducerFenced(_) => E::ProducerFenced,
        BrokerError::InvalidProducerIdMapping(_) => E::InvalidProducerIdMapping,
        BrokerError::InvalidTransactionTimeout(_) => E::InvalidTransactionTimeout,
        BrokerError::NotCoordinator(_) => E::NotCoordinator,
        BrokerError::TransactionalIdNotFound(_) => E::TransactionalIdNotFound,
        BrokerError::UnstableOffsetCommit(_) => E::UnstableOffsetCommit,
        BrokerError::ShuttingDown => E::NotLeaderOrFollower,
        BrokerError::Group(g) => return group_error_code(g),
    }
    .code()
}

pub fn group_error_code(e: &GroupError) -> i16 {
    match e {
        GroupError::UnknownMemberId => E::UnknownMemberId,
        GroupError::IllegalGeneration => E::IllegalGeneration,
        GroupError::RebalanceInProgress => E::RebalanceInProgress,
        GroupError::InconsistentGroupProtocol => E::InconsistentGroupProtocol,
        GroupError::MemberIdRequired(_) => E::MemberIdRequired,
        GroupError::InvalidSessionTimeout => E::InvalidSessionTimeout,
        GroupError::GroupIdNotFound => E::GroupIdNotFound,
        GroupError::NonEmptyGroup => E::NonEmptyGroup,
        GroupError::CoordinatorNotAvailable => E::CoordinatorNotAvailable,
        GroupError::NotCoordinator => E::NotCoordinator,
        GroupError::InvalidGroupId => E::InvalidGroupId,
        GroupError::GroupSubscribedToTopic => E::GroupSubscribedToTopic,
        GroupError::OffsetStore(_) => E::CoordinatorNotAvailable,
    }
    .code()
}

/// Error code (counted in `m` as returned to a client) and, for errors
/// worth explaining, a message for the client.
pub fn broker_error(m: &Metrics, e: &BrokerError) -> (i16, Option<String>) {
    (returned_error_code(m, e), Some(e.to_string()))
}

/// [`broker_error_code`], counted in `m` as returned to a client.
pub fn returned_error_code(m: &Metrics, e: &BrokerError) -> i16 {
    m.error_codes.record(broker_error_code(e))
}

/// [`group_error_code`], counted in `m` as returned to a client.
pub fn returned_group_error_code(m: &Metrics, e: &GroupError) -> i16 {
    m.error_codes.record(group_error_code(e))
}

/// The code of an error a handler decided itself (a malformed, unsupported
/// or unknown request, or a name that resolves to nothing), counted in `m`
/// as returned to a client like the mapped ones.
pub fn refused(m: &Metrics, e: E) -> i16 {
    m.error_codes.record(e.code())
}

/// A Kafka error code's name (as `kafka_protocol` spells it), or the
/// number for a code it does not know.
pub fn error_name(code: i16) -> String {
    E::try_from_code(code).map_or_else(|| code.to_string(), |e| format!("{e:?}"))
}
