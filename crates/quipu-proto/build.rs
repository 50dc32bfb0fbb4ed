//! Compiles `proto/` with protox (no `protoc` needed) and generates tonic code.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not when it was compiled: cargo reuses a compiled build script
    // for another checkout of the same sources sharing the target directory.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR is not set")?;
    let root = PathBuf::from(manifest).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let files = protox::compile(["quipu/v1/raft.proto", "quipu/v1/api.proto"], [&root])?;
    tonic_prost_build::configure()
        // Every service and client encodes with `SizedCodec`, which reserves a message's length
        // before writing it (src/codec.rs).
        .codec_path("crate::codec::SizedCodec")
        // Record batches travel as `Bytes`: a fetch sends batches that share the segment's map.
        .bytes(".quipu.v1.ProduceRequest.record_batch")
        .bytes(".quipu.v1.FetchResponse.record_batches")
        .bytes(".quipu.v1.ReadReplicaResponse.record_batches")
        // Raft messages too: a follower's entries keep the received bytes (`quipu_raft::wire`).
        .bytes(".quipu.v1.RaftMessage.payload")
        .bytes(".quipu.v1.RaftReply.payload")
        .compile_fds(files)?;
    Ok(())
}
