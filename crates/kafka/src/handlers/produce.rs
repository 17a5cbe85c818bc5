//! Produce: partitions of one request are appended concurrently, so their
//! fsyncs overlap.

use super::{str, Ctx};
use crate::errors::{broker_error, refused};
use futures::future::join_all;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse, ProducerId,
};
use kafka_protocol::ResponseError;
use strata_broker::durability::Acks;

pub async fn produce(ctx: &Ctx, r: ProduceRequest, v: i16) -> ProduceResponse {
    let acks = Acks::from_kafka(r.acks);
    // The request's own bound on waiting for the in-sync replicas.
    let timeout = std::time::Duration::from_millis(r.timeout_ms.clamp(100, 300_000) as u64);
    let mut resp = ProduceResponse::default();
    let txn_id = r.transactional_id.as_ref().map(|t| t.as_str());
    for topic in r.topic_data {
        let name = topic.name.to_string();
        let parts = topic.partition_data.into_iter().map(|pd| {
            let name = name.clone();
            async move {
                let mut pr = PartitionProduceResponse::default();
                pr.index = pd.index;
                pr.base_offset = -1;
                pr.log_append_time_ms = -1;
                pr.log_start_offset = -1;
                let Some(acks) = acks else {
                    pr.error_code = refused(&ctx.broker.metrics, ResponseError::InvalidRequiredAcks);
                    return pr;
                };
                let Some(records) = pd.records else {
                    pr.error_code = refused(&ctx.broker.metrics, ResponseError::CorruptMessage);
                    return pr;
                };
                match ctx
                    .broker
                    .produce_with_timeout(&name, pd.index, &records, acks, timeout, txn_id)
                    .await
                {
                    Ok(o) => {
                        pr.base_offset = o.base_offset;
                        pr.log_append_time_ms = o.log_append_time;
                        pr.log_start_offset = o.log_start_offset;
                    }
                    Err(e) => {
                        tracing::debug!(topic = %name, partition = pd.index, error = %e, "produce refused");
                        let (code, msg) = broker_error(&ctx.broker.metrics, &e);
                        pr.error_code = code;
                        if v >= 8 {
                            pr.error_message = msg.map(str);
                        }
                    }
                }
                pr
            }
        });
        let mut tr = TopicProduceResponse::default();
        tr.name = topic.name;
        tr.partition_responses = join_all(parts).await;
        resp.responses.push(tr);
    }
    resp
}

/// InitProducerId: a new producer id for an idempotent producer, or the
/// transactional id's producer id with a bumped epoch (from its
/// coordinator, which must be this broker).
pub async fn init_producer_id(
    ctx: &Ctx,
    r: InitProducerIdRequest,
    v: i16,
) -> InitProducerIdResponse {
    let mut resp = InitProducerIdResponse::default();
    resp.producer_id = ProducerId(-1);
    resp.producer_epoch = -1;
    match r.transactional_id.as_ref().map(|t| t.is_empty()) {
        None => {}
        // Kafka refuses an empty transactional id.
        Some(true) => {
            resp.error_code = refused(&ctx.broker.metrics, ResponseError::InvalidRequest);
            return resp;
        }
        Some(false) => {}
    }
    let current = (v >= 3 && r.producer_id.0 >= 0).then_some((r.producer_id.0, r.producer_epoch));
    if let Some(id) = r.transactional_id.as_ref() {
        match ctx
            .broker
            .txn_init_producer_id(id, r.transaction_timeout_ms, current)
            .await
        {
            Ok((pid, epoch)) => {
                resp.producer_id = ProducerId(pid);
                resp.producer_epoch = epoch;
            }
            Err(e) => {
                tracing::debug!(transactional_id = %id.as_str(), error = %e, "InitProducerId refused");
                resp.error_code = broker_error(&ctx.broker.metrics, &e).0;
            }
        }
        return resp;
    }
    match ctx.broker.init_producer_id(current).await {
        Ok((id, epoch)) => {
            resp.producer_id = ProducerId(id);
            resp.producer_epoch = epoch;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot allocate a producer id");
            resp.error_code = broker_error(&ctx.broker.metrics, &e).0;
        }
    }
    resp
}
