//! Quipu's protobuf definitions (`proto/quipu/v1`), compiled for tonic at build time with protox.
//!
//! Only this crate and the gRPC service layers see prost types; everything else converts at that
//! edge. The Raft transport (`RaftTransport`) carries openraft messages as postcard bytes inside
//! protobuf, so openraft's types are not mirrored here.

pub mod codec;

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

/// The largest HTTP/2 frame each end of Quipu's gRPC connections (client API and Raft transport)
/// accepts, in bytes, which is what the other end sends in. HTTP/2's default, 16 KiB, cut a
/// 64 KiB produce or a 1 MiB Raft entry into 4 or 64 DATA frames, each read, flow-controlled and
/// written on its own. 256 KiB keeps a small message (a heartbeat) from waiting behind more than
/// 2 ms of one large frame on a 1 Gbit/s link, and stays below the flow-control windows (1 MiB
/// and more), which already bound what one connection makes the other end buffer.
pub const HTTP2_FRAME_BYTES_MAX: u32 = 256 * 1024;
