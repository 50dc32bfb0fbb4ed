//! A produced RecordBatch, through every check the produce path runs and the decoders readers
//! use: never a panic, never more memory than the limits given.
#![no_main]

#[global_allocator]
static ALLOCATOR: quipu_alloc::ReservingAllocator = quipu_alloc::ReservingAllocator;

const LIMIT: usize = 1 << 20;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let batch = bytes::Bytes::copy_from_slice(data);
    if let Ok(header) = quipu_record::validate_batch(&batch, LIMIT) {
        let rules = quipu_record::RecordRules {
            decompressed_bytes_max: LIMIT,
            timestamp_min: i64::MIN,
            timestamp_max: i64::MAX,
        };
        let _ = quipu_record::validate_records(&batch, &header, &rules);
    }
    let _ = quipu_record::decode_records(&batch, LIMIT);
    for split in quipu_record::batches(batch, LIMIT) {
        let _ = split;
    }
});
