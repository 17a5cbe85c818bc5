//! Decoding a request body through [`Bounded`] (which `RequestKind::decode`
//! cannot take: it reads only from `Bytes`).
//!
//! Invariant: every API in [`crate::versions`]'s implemented list has an
//! arm here (a test decodes each at each of its versions); any other is an
//! error, never reached by the handlers, which answer unsupported APIs
//! before decoding.

use crate::bounded::Bounded;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;

/// Calls `$m!` with `Kind: RequestType,` for every implemented request.
macro_rules! implemented {
    ($m:ident) => {
        $m! {
            Produce: ProduceRequest,
            Fetch: FetchRequest,
            ListOffsets: ListOffsetsRequest,
            Metadata: MetadataRequest,
            OffsetCommit: OffsetCommitRequest,
            OffsetFetch: OffsetFetchRequest,
            FindCoordinator: FindCoordinatorRequest,
            JoinGroup: JoinGroupRequest,
            Heartbeat: HeartbeatRequest,
            LeaveGroup: LeaveGroupRequest,
            SyncGroup: SyncGroupRequest,
            DescribeGroups: DescribeGroupsRequest,
            ListGroups: ListGroupsRequest,
            ApiVersions: ApiVersionsRequest,
            CreateTopics: CreateTopicsRequest,
            DeleteTopics: DeleteTopicsRequest,
            InitProducerId: InitProducerIdRequest,
            DeleteRecords: DeleteRecordsRequest,
            OffsetForLeaderEpoch: OffsetForLeaderEpochRequest,
            AlterPartitionReassignments: AlterPartitionReassignmentsRequest,
            ListPartitionReassignments: ListPartitionReassignmentsRequest,
            DescribeConfigs: DescribeConfigsRequest,
            CreatePartitions: CreatePartitionsRequest,
            DeleteGroups: DeleteGroupsRequest,
            IncrementalAlterConfigs: IncrementalAlterConfigsRequest,
            OffsetDelete: OffsetDeleteRequest,
            DescribeCluster: DescribeClusterRequest,
            AddPartitionsToTxn: AddPartitionsToTxnRequest,
            AddOffsetsToTxn: AddOffsetsToTxnRequest,
            EndTxn: EndTxnRequest,
            TxnOffsetCommit: TxnOffsetCommitRequest,
            DescribeTransactions: DescribeTransactionsRequest,
            ListTransactions: ListTransactionsRequest,
            DescribeProducers: DescribeProducersRequest,
        }
    };
}
#[cfg(test)]
pub(crate) use implemented;

/// `RequestKind::decode` for the implemented APIs, from a [`Bounded`].
pub(crate) fn request(key: ApiKey, buf: &mut Bounded, version: i16) -> anyhow::Result<RequestKind> {
    macro_rules! arms {
        ($($kind:ident: $ty:ty,)*) => {
            match key {
                $(ApiKey::$kind => Ok(RequestKind::$kind(<$ty>::decode(buf, version)?)),)*
                other => anyhow::bail!("{other:?} requests are not implemented"),
            }
        };
    }
    implemented!(arms)
}
