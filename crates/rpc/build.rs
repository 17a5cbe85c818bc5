//! Generates the gRPC client and server from `proto/` (needs `protoc`:
//! Debian's `protobuf-compiler`, which the project's scripts install).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        .bytes(".strata.replication.v1.Records.data")
        .compile_protos(
            &["proto/replication.proto", "proto/transactions.proto"],
            &["proto"],
        )?;
    Ok(())
}
