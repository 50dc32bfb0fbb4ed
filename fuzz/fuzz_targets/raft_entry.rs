//! A stored Raft entry's payload, as the entry codec reads it back from a segment: never a panic.
#![no_main]

#[global_allocator]
static ALLOCATOR: quipu_alloc::ReservingAllocator = quipu_alloc::ReservingAllocator;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&kind, payload)) = data.split_first() else {
        return;
    };
    let entry = quipu_storage::Entry {
        index: 7,
        term: 3,
        base_offset: quipu_storage::Offset(0),
        record_count: 0,
        max_timestamp: -1,
        kind: if kind % 2 == 0 {
            quipu_storage::EntryKind::Records
        } else {
            quipu_storage::EntryKind::Internal
        },
        payload: bytes::Bytes::copy_from_slice(payload),
    };
    let _ = quipu_raft::from_stored(entry);
});
