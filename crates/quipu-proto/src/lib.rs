//! Quipu's protobuf definitions (`proto/quipu/v1`), compiled for tonic at build time with protox.
//!
//! Only this crate and the gRPC service layers see prost types; everything else converts at that
//! edge. The Raft transport (`RaftTransport`) carries openraft messages as postcard bytes inside
//! protobuf, so openraft's types are not mirrored here.

/// Package `quipu.v1`.
pub mod v1 {
    #![allow(
        clippy::all,
        clippy::pedantic,
        missing_debug_implementations,
        unreachable_pub
    )]
    tonic::include_proto!("quipu.v1");
}
