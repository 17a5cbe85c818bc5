//! Values stored under the DESIGN §5 keys (JSON).

use serde::{Deserialize, Serialize};

/// `brokers/<id>`, bound to the broker's session lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRecord {
    pub id: i32,
    /// Advertised Kafka listener.
    pub host: String,
    pub port: i32,
    #[serde(default)]
    pub grpc: Option<String>,
    #[serde(default)]
    pub http: Option<String>,
    #[serde(default)]
    pub rack: Option<String>,
    pub start_ms: i64,
}

/// `partitions/<t>/<p>/leader`, bound to the leader's session lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    pub broker: i32,
    pub epoch: i32,
}

/// `groups/<g>/coordinator`, bound to the coordinator's session lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorRecord {
    pub broker: i32,
}

/// `partitions/<t>/<p>/segments/<base_offset:020>`: one cold segment in the
/// manifest, committed only by the partition's current leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentEntry {
    pub object_key: String,
    pub base_offset: i64,
    pub last_offset: i64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    pub bytes: u64,
    pub records: i64,
    pub epoch: i32,
}
