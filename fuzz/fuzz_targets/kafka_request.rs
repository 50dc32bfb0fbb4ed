//! A Kafka request frame, as the listener decodes it: never a panic, whatever the bytes.
#![no_main]

#[global_allocator]
static ALLOCATOR: quipu_alloc::ReservingAllocator = quipu_alloc::ReservingAllocator;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = quipu_kafka::decode_request(bytes::Bytes::copy_from_slice(data));
});
