//! The gRPC contract between brokers (and, later, admin tools): protobuf
//! messages and the tonic client and server generated from `proto/`.
//! Domain logic lives in `strata-broker`; this crate is only the codec.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod replication {
    tonic::include_proto!("strata.replication.v1");
}

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod transactions {
    tonic::include_proto!("strata.transactions.v1");
}
