//! Produced batches are validated record by record before anything is proposed: the malicious
//! batches of issue 15 are refused on every `acks` level and leave the log as it was.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // tests unwrap; sizes are small

mod common;

use bytes::Bytes;
use common::*;
use quipu_node::ProduceError;
use quipu_record::{BATCH_HEADER_LEN, BatchBuilder, BatchError, Compression};
use quipu_storage::Offset;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A good one-record batch stamped `timestamp_ms`.
fn stamped(timestamp_ms: i64) -> Vec<u8> {
    let mut builder = BatchBuilder::new(0, Compression::None);
    builder.push(timestamp_ms, None, Some(b"value"), &[]);
    builder.build().unwrap().to_vec()
}

/// Writes `bytes` at `position` (a field covered by the CRC) and seals the CRC again, so that
/// only the record checks can tell.
fn resealed(mut batch: Vec<u8>, position: usize, bytes: &[u8]) -> Bytes {
    batch[position..position + bytes.len()].copy_from_slice(bytes);
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(batch)
}

/// A batch whose header claims `count` records and holds none.
fn claiming(count: i32) -> Bytes {
    let mut batch = stamped(now_ms())[..BATCH_HEADER_LEN].to_vec();
    let batch_length = (BATCH_HEADER_LEN - 12) as i32;
    batch[8..12].copy_from_slice(&batch_length.to_be_bytes());
    batch[23..27].copy_from_slice(&(count - 1).to_be_bytes());
    resealed(batch, 57, &count.to_be_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malicious_batches_are_refused_and_nothing_is_written() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (nodes, groups) = start(&dirs, 1, &small_log()).await;
    let group = groups[0];
    assert_eq!(produce(&nodes, group, "first").await, Offset(0));
    let leader = nodes[leader_node(&nodes, group).unwrap()]
        .partition(group)
        .unwrap();
    let hour = 3_600_000;
    let cases: Vec<(&str, Bytes)> = vec![
        ("claims five records, holds none", claiming(5)),
        ("claims two billion offsets", claiming(i32::MAX)),
        (
            "max_timestamp = i64::MAX",
            resealed(stamped(now_ms()), 35, &i64::MAX.to_be_bytes()),
        ),
        (
            "stamped two hours ahead",
            Bytes::from(stamped(now_ms() + 2 * hour)),
        ),
        (
            "a control batch",
            resealed(stamped(now_ms()), 21, &0x20i16.to_be_bytes()),
        ),
    ];
    for (what, batch) in cases {
        let outcomes = [
            leader.produce(batch.clone()).await.map(|_| ()),
            leader.produce_leader_ack(batch.clone()).await.map(|_| ()),
            leader.produce_unacknowledged(batch.clone()).await,
        ];
        for outcome in outcomes {
            assert!(
                matches!(outcome, Err(ProduceError::InvalidBatch(_))),
                "{what}: {outcome:?}"
            );
        }
        assert_eq!(
            leader.log_end_offset(),
            Offset(1),
            "{what}: nothing written"
        );
    }
    // The reason is specific: a missing record, not a bad CRC.
    let refused = leader.produce(claiming(5)).await.unwrap_err();
    assert!(
        matches!(
            refused,
            ProduceError::InvalidBatch(BatchError::MissingRecords { declared: 5, .. })
        ),
        "{refused:?}"
    );
    // A compressed batch is checked too (on the blocking pool) and a good one still goes in.
    let mut builder = BatchBuilder::new(0, Compression::Zstd);
    for i in 0..1000 {
        builder.push(now_ms(), None, Some(format!("v{i}").as_bytes()), &[]);
    }
    assert_eq!(
        leader.produce(builder.build().unwrap()).await.unwrap(),
        Offset(1)
    );
    for node in nodes {
        node.stop().await;
    }
}

/// `message.timestamp.type=LogAppendTime`, set live: the leader stamps each batch with its clock
/// (attribute and `max_timestamp`, CRC computed again), every replica stores those bytes, and
/// the producer's timestamps are no longer bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_log_append_time_the_leader_stamps_every_batch() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (nodes, groups) = start(&dirs, 1, &small_log()).await;
    let group = groups[0];
    assert_eq!(produce(&nodes, group, "first").await, Offset(0));
    nodes[0]
        .request_controller(quipu_node::ControllerRequest::AlterTopicConfig {
            name: "topic".to_string(),
            set: vec![(
                "message.timestamp.type".to_string(),
                "LogAppendTime".to_string(),
            )],
            reset: Vec::new(),
            replace: false,
        })
        .await
        .unwrap();
    wait_for("every replica to run with LogAppendTime", || {
        nodes
            .iter()
            .all(|n| n.partition(group).unwrap().settings().log_append_time)
    })
    .await;
    let leader = nodes[leader_node(&nodes, group).unwrap()]
        .partition(group)
        .unwrap();
    // Two hours ahead: refused under CreateTime's one-hour bound, stamped here.
    let ahead = Bytes::from(stamped(now_ms() + 2 * 3_600_000));
    let before = now_ms();
    let (offset, stamp) = leader.produce_stamped(ahead, false).await.unwrap();
    let stamp = stamp.expect("a log append time");
    assert_eq!(offset, Offset(1));
    assert!((before..=now_ms()).contains(&stamp), "{stamp}");
    for node in &nodes {
        let replica = node.partition(group).unwrap();
        wait_for("the batch on every replica", || {
            replica.log_end_offset() == Offset(2)
        })
        .await;
        let stored = replica.read_replica(Offset(1), 1 << 20).await.unwrap();
        let header = quipu_record::validate_batch(&stored[0].payload, usize::MAX).unwrap();
        assert_eq!(
            header.timestamp_type(),
            quipu_record::TimestampType::LogAppendTime
        );
        assert_eq!(header.max_timestamp, stamp);
    }
    drop(leader);
    for node in nodes {
        node.stop().await;
    }
}
