//! A Raft transport payload from a peer (postcard of openraft's requests and replies, as
//! `quipu-node`'s transport decodes them): never a panic, never an allocation the bytes do not
//! pay for.
#![no_main]

#[global_allocator]
static ALLOCATOR: quipu_alloc::ReservingAllocator = quipu_alloc::ReservingAllocator;

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use quipu_raft::{NodeId, TypeConfig};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&kind, payload)) = data.split_first() else {
        return;
    };
    match kind % 6 {
        0 => drop(postcard::from_bytes::<AppendEntriesRequest<TypeConfig>>(payload)),
        1 => drop(postcard::from_bytes::<AppendEntriesResponse<NodeId>>(payload)),
        2 => drop(postcard::from_bytes::<VoteRequest<NodeId>>(payload)),
        3 => drop(postcard::from_bytes::<VoteResponse<NodeId>>(payload)),
        4 => drop(postcard::from_bytes::<InstallSnapshotRequest<TypeConfig>>(payload)),
        _ => drop(postcard::from_bytes::<InstallSnapshotResponse<NodeId>>(payload)),
    }
});
