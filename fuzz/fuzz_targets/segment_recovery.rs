//! A log directory whose only segment holds arbitrary bytes (a crash, a bad disk): opening it
//! recovers or fails with an error naming the damage, never a panic; a log that opens can be read
//! and appended to.
#![no_main]

#[global_allocator]
static ALLOCATOR: quipu_alloc::ReservingAllocator = quipu_alloc::ReservingAllocator;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("00000000000000000000.log"), data).expect("write the segment");
    let config = quipu_storage::LogConfig {
        segment_bytes_max: 64 * 1024,
        entry_bytes_max: 16 * 1024,
        index_bytes_max: 4096,
        preallocate_bytes: 0,
        ..quipu_storage::LogConfig::default()
    };
    let Ok(log) = quipu_storage::Log::open(dir.path(), config) else {
        return;
    };
    let (first, next) = (log.first_index(), log.next_index());
    let _ = log.read_entries(first, next, u64::MAX);
    let _ = log.read_records(log.start_offset(), log.next_offset(), u64::MAX);
    let _ = log.offset_for_timestamp(0, log.next_offset());
});
