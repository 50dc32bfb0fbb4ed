//! The small files a replica keeps beside its log (state files: the vote, snapshots; the flush
//! mark), damaged arbitrarily: reading them gives their body or an error, never a panic, never
//! more than the limit given.
#![no_main]

#[global_allocator]
static ALLOCATOR: quipu_alloc::ReservingAllocator = quipu_alloc::ReservingAllocator;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("state"), data).expect("write the state file");
    if let Ok(Some(body)) = quipu_storage::read_state_file(dir.path(), "state", 4096) {
        assert!(body.len() <= 4096);
    }
    std::fs::write(dir.path().join("mark"), data).expect("write the mark file");
    let _ = quipu_storage::MarkFile::open(dir.path(), "mark");
});
