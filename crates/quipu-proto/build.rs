//! Compiles `proto/` with protox (no `protoc` needed) and generates tonic code.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let files = protox::compile(["quipu/v1/raft.proto", "quipu/v1/api.proto"], [&root])?;
    tonic_prost_build::configure().compile_fds(files)?;
    Ok(())
}
