//! Request decoding, dispatch and response encoding.
//!
//! Each handler turns a decoded Kafka request into domain calls on
//! [`Broker`] and builds the response for the request's version, setting
//! version-gated fields only where that version has them.

mod admin;
pub(crate) mod decode;
mod fetch;
mod groups;
mod metadata;
mod produce;
mod reassign;
mod txn;

use crate::bounded;
use crate::errors::refused;
use crate::versions;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{decode_request_header_from_buffer, Encodable, StrBytes};
use kafka_protocol::ResponseError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use strata_broker::Broker;

/// What every handler can see.
pub struct Ctx {
    pub broker: Arc<Broker>,
    /// Host and port clients are told to connect to.
    pub advertised_host: String,
    pub advertised_port: i32,
    pub cluster_id: String,
}

/// A response body (header included) as chunks to write back to back, or
/// `None` for acks=0 produce.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Option<Vec<Bytes>>> + Send>>;

fn ready(b: BytesMut) -> ResponseFuture {
    Box::pin(async move { Some(vec![b.freeze()]) })
}

pub(crate) fn str(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// Parses the request header and body; returns the request's API key (as
/// sent, known or not) and the future that handles it. `Err` means the
/// frame is malformed and the connection should close.
pub fn prepare(
    ctx: Arc<Ctx>,
    frame: Bytes,
    peer: SocketAddr,
) -> Result<(i16, ResponseFuture), String> {
    if frame.len() < 8 {
        return Err(format!(
            "request of {} bytes is shorter than a request header",
            frame.len()
        ));
    }
    let api = i16::from_be_bytes([frame[0], frame[1]]);
    Ok((api, handle(ctx, api, frame, peer)?))
}

/// [`prepare`] past the API key.
fn handle(
    ctx: Arc<Ctx>,
    api: i16,
    frame: Bytes,
    peer: SocketAddr,
) -> Result<ResponseFuture, String> {
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Ok(key) = ApiKey::try_from(api) else {
        tracing::warn!(api_key = api, version, "unknown API key");
        refused(&ctx.broker.metrics, ResponseError::UnsupportedVersion);
        return Ok(ready(error_only(correlation)));
    };
    if !versions::is_supported(key, version) {
        tracing::debug!(api = ?key, version, "unsupported API or version");
        let code = refused(&ctx.broker.metrics, ResponseError::UnsupportedVersion);
        if key == ApiKey::ApiVersions {
            // KIP-511: answer in v0 with the error and our version list.
            return Ok(ready(api_versions_response(correlation, 0, code)));
        }
        return Ok(ready(error_only(correlation)));
    }
    let (header, req) = bounded::decode(frame, |buf| {
        let header = decode_request_header_from_buffer(buf)?;
        Ok((header, decode::request(key, buf, version)?))
    })
    .map_err(|e| format!("cannot decode {key:?} v{version} request: {e}"))?;
    Ok(Box::pin(async move {
        dispatch(ctx, header, key, req, peer).await
    }))
}

/// The response to an API we do not implement: the response header followed
/// by an INT16 UNSUPPORTED_VERSION, the shape every Kafka response error
/// (and ApiVersions v0's) starts with.
fn error_only(correlation: i32) -> BytesMut {
    let mut b = BytesMut::with_capacity(6);
    b.extend_from_slice(&correlation.to_be_bytes());
    b.extend_from_slice(&ResponseError::UnsupportedVersion.code().to_be_bytes());
    b
}

fn api_versions_response(correlation: i32, version: i16, error_code: i16) -> BytesMut {
    let mut resp = ApiVersionsResponse::default();
    resp.error_code = error_code;
    resp.api_keys = versions::supported()
        .into_iter()
        .map(|(k, lo, hi)| {
            kafka_protocol::messages::api_versions_response::ApiVersion::default()
                .with_api_key(k as i16)
                .with_min_version(lo)
                .with_max_version(hi)
        })
        .collect();
    // Tagged fields (features, zk migration) stay at their defaults so they
    // are not encoded: librdkafka 2.0.2 cannot parse non-default ones.
    let mut b = BytesMut::new();
    b.extend_from_slice(&correlation.to_be_bytes());
    if let Err(e) = resp.encode(&mut b, version) {
        tracing::error!(error = %e, "cannot encode ApiVersions response");
    }
    b
}

async fn dispatch(
    ctx: Arc<Ctx>,
    header: RequestHeader,
    key: ApiKey,
    req: RequestKind,
    peer: SocketAddr,
) -> Option<Vec<Bytes>> {
    let v = header.request_api_version;
    let correlation = header.correlation_id;
    let client_id = header
        .client_id
        .as_ref()
        .map(|s| s.to_string())
        .unwrap_or_default();
    let resp: ResponseKind = match req {
        RequestKind::ApiVersions(_) => {
            return Some(vec![api_versions_response(correlation, v, 0).freeze()]);
        }
        RequestKind::Metadata(r) => ResponseKind::Metadata(metadata::metadata(&ctx, r, v).await),
        RequestKind::Produce(r) => {
            let acks = r.acks;
            let resp = produce::produce(&ctx, r, v).await;
            if acks == 0 {
                return None;
            }
            ResponseKind::Produce(resp)
        }
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch::fetch(&ctx, r, v).await),
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(fetch::list_offsets(&ctx, r, v).await)
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(fetch::offset_for_leader_epoch(&ctx, r, v))
        }
        RequestKind::AlterPartitionReassignments(r) => {
            ResponseKind::AlterPartitionReassignments(reassign::alter(&ctx, r, v).await)
        }
        RequestKind::ListPartitionReassignments(r) => {
            ResponseKind::ListPartitionReassignments(reassign::list(&ctx, r, v))
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(admin::create_topics(&ctx, r, v).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(admin::delete_topics(&ctx, r, v).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(admin::create_partitions(&ctx, r, v).await)
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(admin::describe_configs(&ctx, r, v))
        }
        RequestKind::IncrementalAlterConfigs(r) => ResponseKind::IncrementalAlterConfigs(
            admin::incremental_alter_configs(&ctx, r, v).await,
        ),
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(admin::delete_records(&ctx, r, v).await)
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(produce::init_producer_id(&ctx, r, v).await)
        }
        RequestKind::AddPartitionsToTxn(r) => {
            ResponseKind::AddPartitionsToTxn(txn::add_partitions(&ctx, r, v).await)
        }
        RequestKind::AddOffsetsToTxn(r) => {
            ResponseKind::AddOffsetsToTxn(txn::add_offsets(&ctx, r, v).await)
        }
        RequestKind::TxnOffsetCommit(r) => {
            ResponseKind::TxnOffsetCommit(txn::txn_offset_commit(&ctx, r, v).await)
        }
        RequestKind::EndTxn(r) => ResponseKind::EndTxn(txn::end_txn(&ctx, r, v).await),
        RequestKind::DescribeTransactions(r) => {
            ResponseKind::DescribeTransactions(txn::describe_transactions(&ctx, r, v).await)
        }
        RequestKind::ListTransactions(r) => {
            ResponseKind::ListTransactions(txn::list_transactions(&ctx, r, v))
        }
        RequestKind::DescribeProducers(r) => {
            ResponseKind::DescribeProducers(txn::describe_producers(&ctx, r, v))
        }
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(metadata::describe_cluster(&ctx, r, v))
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(groups::find_coordinator(&ctx, r, v))
        }
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(groups::join(&ctx, r, v, client_id, peer).await)
        }
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(groups::sync(&ctx, r, v).await),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(groups::heartbeat(&ctx, r, v).await),
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(groups::leave(&ctx, r, v).await),
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(groups::offset_commit(&ctx, r, v).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(groups::offset_fetch(&ctx, r, v).await)
        }
        RequestKind::ListGroups(r) => {
            ResponseKind::ListGroups(groups::list_groups(&ctx, r, v).await)
        }
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(groups::describe_groups(&ctx, r, v).await)
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(groups::delete_groups(&ctx, r, v).await)
        }
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(groups::offset_delete(&ctx, r, v).await)
        }
        other => {
            // Unreachable while `versions` and this match agree.
            tracing::error!(api = ?key, request = ?std::mem::discriminant(&other), "advertised API has no handler");
            return Some(vec![error_only(correlation).freeze()]);
        }
    };
    let mut b = BytesMut::with_capacity(256);
    let header_version = key.response_header_version(v);
    let head = ResponseHeader::default()
        .with_correlation_id(correlation)
        .encode(&mut b, header_version);
    if let (Ok(()), ResponseKind::Fetch(f)) = (&head, &resp) {
        // Record sets go out as they came from the log, not copied.
        if let Some(chunks) = crate::fetch_encode::encode_chunked(f, v, b.clone()) {
            return Some(chunks);
        }
    }
    match head.and_then(|_| resp.encode(&mut b, v)) {
        Ok(()) => Some(vec![b.freeze()]),
        Err(e) => {
            tracing::error!(api = ?key, version = v, error = %e, "cannot encode response");
            ctx.broker
                .metrics
                .request_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Some(vec![error_only(correlation).freeze()])
        }
    }
}
