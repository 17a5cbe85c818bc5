//! Domain errors. The Kafka edge maps each variant to one Kafka error code.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BrokerError {
    #[error("unknown topic or partition {0}")]
    UnknownTopicOrPartition(String),
    #[error("topic {0} already exists")]
    TopicAlreadyExists(String),
    #[error("invalid topic name {0:?}: {1}")]
    InvalidTopic(String, String),
    #[error("invalid partition count: {0}")]
    InvalidPartitions(String),
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("record batch of {size} bytes exceeds max.message.bytes {limit}")]
    MessageTooLarge { size: usize, limit: usize },
    #[error("a record batch's records decompress to more than {limit} bytes")]
    DecompressedTooLarge { limit: usize },
    #[error("corrupt record batch: {0}")]
    CorruptMessage(String),
    #[error("record timestamp out of range: {0}")]
    InvalidTimestamp(String),
    #[error("unsupported record batch format: {0}")]
    UnsupportedMessageFormat(String),
    #[error("offset {requested} out of range [{start}, {end}]")]
    OffsetOutOfRange {
        requested: i64,
        start: i64,
        end: i64,
    },
    #[error("storage error: {0}")]
    Storage(String),
    #[error("metadata store error: {0}")]
    Metadata(String),
    #[error("request timed out: {0}")]
    Timeout(String),
    #[error("out of order sequence number: {0}")]
    OutOfOrderSequence(String),
    #[error("invalid producer epoch: {0}")]
    InvalidProducerEpoch(String),
    #[error("not the leader of {0}")]
    NotLeader(String),
    #[error("not enough in-sync replicas: {0}")]
    NotEnoughReplicas(String),
    #[error("written, but the in-sync replicas fell below min.insync.replicas: {0}")]
    NotEnoughReplicasAfterAppend(String),
    #[error("leader epoch {0} is older than the current one")]
    FencedLeaderEpoch(String),
    #[error("leader epoch {0} is newer than this broker knows")]
    UnknownLeaderEpoch(String),
    #[error("another operation on the transaction is in progress: {0}")]
    ConcurrentTransactions(String),
    #[error("invalid transaction state: {0}")]
    InvalidTxnState(String),
    #[error("producer fenced: {0}")]
    ProducerFenced(String),
    #[error("producer id does not match the transactional id: {0}")]
    InvalidProducerIdMapping(String),
    #[error("invalid transaction timeout: {0}")]
    InvalidTransactionTimeout(String),
    #[error("transactional id {0} not found")]
    TransactionalIdNotFound(String),
    #[error("not the coordinator of {0}")]
    NotCoordinator(String),
    #[error("committed offsets of {0} are pending in a transaction")]
    UnstableOffsetCommit(String),
    #[error("broker is shutting down")]
    ShuttingDown,
    #[error("group error: {0}")]
    Group(#[from] crate::groups::GroupError),
}

impl From<strata_meta::MetaError> for BrokerError {
    fn from(e: strata_meta::MetaError) -> Self {
        match e {
            // Only a request's own size makes a write this large (ids and
            // config values are bounded before they reach a key, offsets
            // are written one key each): retrying cannot help.
            strata_meta::MetaError::TooLarge { .. } => Self::InvalidRequest(e.to_string()),
            e => Self::Metadata(e.to_string()),
        }
    }
}

impl From<strata_log::LogError> for BrokerError {
    fn from(e: strata_log::LogError) -> Self {
        match e {
            strata_log::LogError::OffsetOutOfRange {
                requested,
                start,
                end,
            } => Self::OffsetOutOfRange {
                requested,
                start,
                end,
            },
            strata_log::LogError::Batch(b) => b.into(),
            other => Self::Storage(other.to_string()),
        }
    }
}

impl From<strata_record::BatchError> for BrokerError {
    fn from(e: strata_record::BatchError) -> Self {
        use strata_record::BatchError as B;
        match e {
            B::TooLarge { size, limit } => Self::MessageTooLarge { size, limit },
            B::Decompress(strata_record::DecompressError::TooLarge { limit, .. }) => {
                Self::DecompressedTooLarge { limit }
            }
            B::UnsupportedMagic(_) => Self::UnsupportedMessageFormat(e.to_string()),
            B::ControlBatchFromClient => Self::InvalidRequest(e.to_string()),
            other => Self::CorruptMessage(other.to_string()),
        }
    }
}
