//! The API versions Strata advertises: exactly what the handlers implement.
//! Each range is also clipped to what the codec crate can decode.

use kafka_protocol::messages::ApiKey;

/// `(api, min, max)` implemented by the handlers.
const IMPLEMENTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::OffsetForLeaderEpoch, 0, 4),
    (ApiKey::AlterPartitionReassignments, 0, 0),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::DescribeProducers, 0, 0),
];

/// Supported `(api key, min, max)` triples, clipped to the codec's range.
pub fn supported() -> Vec<(ApiKey, i16, i16)> {
    IMPLEMENTED
        .iter()
        .filter_map(|&(k, min, max)| {
            let v = k.valid_versions();
            let (lo, hi) = (min.max(v.min), max.min(v.max));
            (lo <= hi).then_some((k, lo, hi))
        })
        .collect()
}

/// Whether `version` of `api` is implemented.
pub fn is_supported(api: ApiKey, version: i16) -> bool {
    supported()
        .iter()
        .any(|&(k, lo, hi)| k == api && (lo..=hi).contains(&version))
}

/// The name of the request type with API key `code` (`Produce`, `Fetch`,
/// ...), or `unknown_<code>`, for metrics labels.
pub fn api_name(code: i16) -> String {
    match ApiKey::try_from(code) {
        Ok(k) => format!("{k:?}"),
        Err(_) => format!("unknown_{code}"),
    }
}
