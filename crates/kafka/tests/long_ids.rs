//! Group and transactional ids longer than a Kafka string holds
//! (`strata_broker::keys::MAX_ID_BYTES`), sent in flexible versions whose
//! compact strings carry any length: each gets its error code and names
//! no key in the metadata store, and the connection keeps serving.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use strata_broker::keys::MAX_ID_BYTES;
use strata_kafka::client::KafkaClient;

fn long_id() -> StrBytes {
    StrBytes::from_string("i".repeat(MAX_ID_BYTES + 1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_longer_than_a_kafka_string_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let b = common::start(dir.path()).await;
    let mut c = KafkaClient::connect(&b.addr, "long-ids").await.unwrap();

    let find = FindCoordinatorRequest::default()
        .with_key_type(0)
        .with_coordinator_keys(vec![long_id(), StrBytes::from_static_str("g")]);
    let r = c.call(find, 4).await.unwrap();
    let codes: Vec<i16> = r.coordinators.iter().map(|k| k.error_code).collect();
    assert_eq!(codes, [ResponseError::InvalidRequest.code(), 0]);

    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(long_id()))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default().with_name(StrBytes::from_static_str("range"))
        ]);
    let r = c.call(join, 9).await.unwrap();
    assert_eq!(r.error_code, ResponseError::InvalidGroupId.code());

    let init = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(long_id())))
        .with_transaction_timeout_ms(60_000);
    let r = c.call(init, 4).await.unwrap();
    assert_eq!(r.error_code, ResponseError::InvalidRequest.code());

    // Nothing was made for either id.
    let groups = c.call(ListGroupsRequest::default(), 4).await.unwrap();
    assert!(groups.groups.is_empty(), "{:?}", groups.groups.len());
    let txns = c.call(ListTransactionsRequest::default(), 1).await.unwrap();
    assert!(txns.transaction_states.is_empty());
    let r = c.call(ApiVersionsRequest::default(), 3).await.unwrap();
    assert_eq!(r.error_code, 0);
    b.shutdown().await;
}
