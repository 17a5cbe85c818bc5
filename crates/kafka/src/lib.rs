//! The Kafka wire-protocol edge of a Strata broker: the TCP listener, request
//! handlers (decoding with the `kafka-protocol` crate, never hand-written
//! message structs), the mapping of domain errors to Kafka error codes, and a
//! small async client used by the CLI and tests.

mod bounded;
pub mod client;
pub mod errors;
mod fetch_encode;
mod handlers;
pub mod server;
pub mod versions;

pub use bounded::{decode_message, decode_versioned};
pub use handlers::Ctx;
pub use server::{serve, ServerLimits};
