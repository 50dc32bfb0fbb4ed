//! A controller command as read from the controller log, decoded and applied to metadata:
//! never a panic; a refused command changes nothing.
#![no_main]

#[global_allocator]
static ALLOCATOR: quipu_alloc::ReservingAllocator = quipu_alloc::ReservingAllocator;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(command) = postcard::from_bytes::<quipu_meta::Command>(data) else {
        return;
    };
    let mut metadata = quipu_meta::Metadata::default();
    for id in 1..=4 {
        let node = quipu_meta::NodeInfo {
            id,
            raft_addr: format!("127.0.0.1:{}", 7000 + id),
            api_addr: String::new(),
            kafka_addr: String::new(),
            rack: format!("r{}", id % 2),
        };
        metadata
            .apply(&quipu_meta::Command::Register(node), 1)
            .expect("registering a node is always accepted");
    }
    // A topic, so that moves, completions, drains and removals have partitions to act on.
    let create = metadata
        .plan_create_topic("t", 2, 3, quipu_meta::TopicConfig::default())
        .expect("placing two partitions on four nodes");
    metadata.apply(&create, 1).expect("a planned create applies");
    let before = metadata.clone();
    if metadata.apply(&command, 1).is_err() {
        assert_eq!(metadata, before, "a refused command changed the metadata");
    }
});
