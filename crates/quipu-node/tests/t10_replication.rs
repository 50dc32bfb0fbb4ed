//! In-process multi-node tests: three nodes on 127.0.0.1, each a real Raft transport server,
//! replicating partitions through the real segment log.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // tests unwrap; sizes are small

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use bytes::Bytes;
use quipu_node::{GroupId, Node, NodeConfig, Partition, ProduceError};
use quipu_record::{BatchBuilder, Compression};
use quipu_storage::{LogConfig, Offset};

/// How long a test waits for a condition before failing (a bound, not a synchronisation).
const PATIENCE: Duration = Duration::from_secs(20);
const GROUP: GroupId = GroupId(1);

fn config(id: u64, dir: &Path, listen: SocketAddr) -> NodeConfig {
    NodeConfig {
        log: LogConfig {
            segment_bytes_max: 64 * 1024,
            entry_bytes_max: 16 * 1024,
            ..LogConfig::default()
        },
        ..NodeConfig::new(id, dir.to_path_buf(), listen)
    }
}

fn batch(producer: u64, sequence: u64, records: usize) -> Bytes {
    let mut builder = BatchBuilder::new(0, Compression::None);
    for i in 0..records {
        builder.push(
            1_700_000_000_000,
            None,
            Some(format!("{producer}-{sequence}-{i}").as_bytes()),
            &[],
        );
    }
    builder.build().unwrap()
}

/// Waits until one of `partitions` is leader and the others know it; returns its index.
async fn leader_of(partitions: &[Arc<Partition>]) -> usize {
    let start = Instant::now();
    loop {
        let leaders: Vec<Option<u64>> = partitions.iter().map(|p| p.leader()).collect();
        if let Some(at) = partitions.iter().position(|p| p.is_leader())
            && leaders.iter().all(|l| *l == leaders[at])
        {
            return at;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "no leader agreed on: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Produces on whichever replica leads, following not-leader answers.
async fn produce(partitions: &[Arc<Partition>], batch: Bytes) -> Offset {
    let start = Instant::now();
    loop {
        let at = leader_of(partitions).await;
        match partitions[at].produce(batch.clone()).await {
            Ok(offset) => return offset,
            Err(ProduceError::NotLeader { .. }) => {}
            Err(e) => panic!("produce failed: {e}"),
        }
        assert!(
            start.elapsed() < PATIENCE,
            "produce did not succeed in time"
        );
    }
}

/// `(offset, value)` of every record of `partition` in offset order: committed, from the
/// leader; with `replica`, whatever this replica holds.
async fn read_all(partition: &Partition, replica: bool) -> Vec<(u64, String)> {
    common::records_from(partition, Offset(0), replica).await
}

async fn start_cluster(dirs: &[tempfile::TempDir]) -> (Vec<Node>, Vec<Arc<Partition>>) {
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        nodes.push(
            Node::start(config(
                i as u64 + 1,
                dir.path(),
                "127.0.0.1:0".parse().unwrap(),
            ))
            .await
            .unwrap(),
        );
    }
    let partitions = common::bootstrap_group(&nodes, GROUP).await;
    (nodes, partitions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_the_loss_of_the_leader() {
    common::init_tracing();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut nodes, mut partitions) = start_cluster(&dirs).await;

    let mut acknowledged = Vec::new();
    for sequence in 0..60 {
        let offset = produce(&partitions, batch(1, sequence, 5)).await;
        acknowledged.push((offset, sequence));
    }

    // Crash the leader: stop its node without handing leadership over.
    let old = leader_of(&partitions).await;
    let old_addr = nodes[old].addr();
    let killed_at = Instant::now();
    nodes.remove(old).stop_unclean().await;
    partitions.remove(old);
    let new = leader_of(&partitions).await;
    let failover = killed_at.elapsed();
    eprintln!("failover: new leader after {failover:?}");
    assert_ne!(partitions[new].leader(), Some(old as u64 + 1));

    for sequence in 60..90 {
        let offset = produce(&partitions, batch(1, sequence, 5)).await;
        acknowledged.push((offset, sequence));
    }

    // Every acknowledged record is on the new leader, in order, once, with dense offsets.
    let records = read_all(&partitions[new], false).await;
    assert_eq!(records.len(), 90 * 5, "a record was lost or duplicated");
    for (at, (offset, value)) in records.iter().enumerate() {
        assert_eq!(*offset, at as u64, "offsets are dense");
        let (batch_offset, sequence) = acknowledged[at / 5];
        assert_eq!(batch_offset.0, (at - at % 5) as u64);
        assert_eq!(value, &format!("1-{sequence}-{}", at % 5));
    }

    // The crashed node restarts on its address, recovers its log and catches up.
    let node = Node::start(config(old as u64 + 1, dirs[old].path(), old_addr))
        .await
        .unwrap();
    let rejoined = node.open_partition(GROUP).await.unwrap();
    let start = Instant::now();
    while rejoined.log_end_offset() < Offset(450) {
        assert!(
            start.elapsed() < PATIENCE,
            "the restarted replica did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(read_all(&rejoined, true).await, records, "replicas differ");
    nodes.push(node);
    // The replicas close only once nothing holds them.
    drop((partitions, rejoined));
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_refuses_produce_and_fetch_and_names_the_leader() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (nodes, partitions) = start_cluster(&dirs).await;
    let leader = leader_of(&partitions).await;
    let follower = (leader + 1) % 3;
    let offset = produce(&partitions, batch(2, 0, 3)).await;
    assert_eq!(offset, Offset(0));
    match partitions[follower].produce(batch(2, 1, 1)).await {
        Err(ProduceError::NotLeader {
            leader: Some(id),
            leader_addr: Some(addr),
            ..
        }) => {
            assert_eq!(id, nodes[leader].id());
            assert_eq!(addr, nodes[leader].addr().to_string());
        }
        other => panic!("expected not-leader, got {other:?}"),
    }
    assert!(partitions[follower].fetch(Offset(0), 100).await.is_err());
    // An invalid batch is refused before it reaches Raft: the group keeps working.
    assert!(matches!(
        partitions[leader]
            .produce(Bytes::from_static(b"not a batch"))
            .await,
        Err(ProduceError::InvalidBatch(_))
    ));
    assert_eq!(produce(&partitions, batch(2, 2, 1)).await, Offset(3));
    // The replicas close only once nothing holds them.
    drop(partitions);
    for node in nodes {
        node.stop().await;
    }
}

/// A leader cut off from the others keeps accepting batches it can never commit; the majority
/// elects a new leader and goes on. When the network heals, the old leader truncates its
/// uncommitted suffix: none of those batches is ever acknowledged or read, and every replica
/// ends with the same log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_truncates_its_uncommitted_suffix_when_it_rejoins() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (nodes, partitions) = start_cluster(&dirs).await;
    for sequence in 0..10 {
        produce(&partitions, batch(3, sequence, 2)).await;
    }
    let old = leader_of(&partitions).await;
    nodes[old].set_isolated(true);

    // Batches sent to the isolated leader: appended to its log, never committed.
    let stranded: Vec<_> = (0..5)
        .map(|sequence| {
            let partition = Arc::clone(&partitions[old]);
            tokio::spawn(async move { partition.produce(batch(9, sequence, 2)).await })
        })
        .collect();
    let start = Instant::now();
    while partitions[old].log_end_offset() < Offset(30) {
        assert!(
            start.elapsed() < PATIENCE,
            "the isolated leader did not append the stranded batches"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The majority moves on.
    let others: Vec<Arc<Partition>> = (0..3)
        .filter(|i| *i != old)
        .map(|i| Arc::clone(&partitions[i]))
        .collect();
    for sequence in 10..20 {
        produce(&others, batch(3, sequence, 2)).await;
    }
    nodes[old].set_isolated(false);

    for task in stranded {
        let result = tokio::time::timeout(PATIENCE, task)
            .await
            .expect("stranded produce never answered")
            .unwrap();
        assert!(
            result.is_err(),
            "a batch the majority never had was acknowledged: {result:?}"
        );
    }
    let new = leader_of(&partitions).await;
    let committed = read_all(&partitions[new], false).await;
    assert_eq!(committed.len(), 40);
    assert!(
        committed.iter().all(|(_, value)| value.starts_with("3-")),
        "a stranded batch was committed"
    );
    let start = Instant::now();
    loop {
        if read_all(&partitions[old], true).await == committed {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the old leader did not converge on the committed log"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The replicas close only once nothing holds them.
    drop((partitions, others));
    for node in nodes {
        node.stop().await;
    }
}

/// A replica whose disk damaged a committed entry (a flipped byte in a sealed segment) never
/// applies, serves or votes with the damaged prefix: the CRC error is found when the log is
/// re-applied at open, the files are set aside, and the replica starts over empty, re-replicating
/// from the leader while the two healthy replicas go on (`t60_repair` covers a zeroed page).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_a_damaged_committed_entry_is_set_aside_and_rebuilt() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut nodes, mut partitions) = start_cluster(&dirs).await;
    // About 190 KiB of batches: the first 64 KiB segments are sealed.
    for sequence in 0..120 {
        produce(&partitions, batch(4, sequence, 80)).await;
    }
    let leader = leader_of(&partitions).await;
    let victim = (leader + 1) % 3;
    let victim_addr = nodes[victim].addr();
    let start = Instant::now();
    while partitions[victim].log_end_offset() < Offset(9600) {
        assert!(start.elapsed() < PATIENCE, "the follower did not catch up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    nodes.remove(victim).stop_unclean().await;
    partitions.remove(victim);

    // Flip one byte inside a record batch of the victim's first (sealed) segment.
    let partition_dir = dirs[victim]
        .path()
        .join("partitions")
        .join(format!("{:020}", GROUP.0));
    let segment = partition_dir.join(format!("{:020}.log", 0));
    let segments = std::fs::read_dir(&partition_dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        })
        .count();
    assert!(segments > 1, "the first segment is sealed");
    let mut bytes = std::fs::read(&segment).unwrap();
    assert!(
        bytes.len() > 4096,
        "the first segment holds several batches"
    );
    bytes[3000] ^= 0x20;
    std::fs::write(&segment, &bytes).unwrap();

    // A restart starts from the applied-state checkpoint and no longer reads the whole log, so
    // the damage is found by the first read of it, which never serves the bad bytes; the
    // replica is then reopened with its whole log verified, set aside and rebuilt from the
    // leader instead of serving the damaged prefix.
    let node = Node::start(config(victim as u64 + 1, dirs[victim].path(), victim_addr))
        .await
        .unwrap();
    let reopened = node.open_partition(GROUP).await.unwrap();
    assert!(
        matches!(
            reopened.read_replica(Offset(0), u64::MAX).await,
            Err(quipu_node::FetchError::Read {
                source: quipu_storage::ReadError::Corrupt { .. },
                ..
            })
        ),
        "the damaged bytes are refused"
    );
    // The reopen needs the log's lock: nothing may hold the old replica.
    let weak = Arc::downgrade(&reopened);
    drop(reopened);
    let aside = || {
        std::fs::read_dir(dirs[victim].path().join("partitions"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".damaged-")
            })
            .count()
    };
    let start = Instant::now();
    let rebuilt = loop {
        if let Some(p) = node
            .partition(GROUP)
            .filter(|p| weak.upgrade().is_none_or(|old| !Arc::ptr_eq(p, &old)))
            && aside() == 1
        {
            break p;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the damaged replica was not set aside"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The healthy majority keeps acknowledging and serving meanwhile.
    for sequence in 120..130 {
        produce(&partitions, batch(4, sequence, 80)).await;
    }
    let new = leader_of(&partitions).await;
    let on_leader = read_all(&partitions[new], false).await;
    assert_eq!(on_leader.len(), 130 * 80);
    let start = Instant::now();
    while rebuilt.high_watermark() < Offset(130 * 80) || rebuilt.is_abstaining() {
        assert!(
            start.elapsed() < PATIENCE,
            "the rebuilt replica did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(read_all(&rebuilt, true).await, on_leader);
    nodes.push(node);
    // The replicas close only once nothing holds them.
    drop(partitions);
    for node in nodes {
        node.stop().await;
    }
}

/// Regression (found while writing the test above): a follower whose recovered log is shorter
/// than what it acknowledged (here a damaged frame in its active segment, cut at recovery like a
/// torn write; the same happens after power loss under a relaxed fsync policy) made openraft's
/// leader panic on "follower log reversion". With `loosen-follower-log-revert` the leader
/// re-replicates the lost suffix and the replicas converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_lost_its_tail_is_repaired_by_the_leader() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut nodes, mut partitions) = start_cluster(&dirs).await;
    for sequence in 0..60 {
        produce(&partitions, batch(5, sequence, 8)).await;
    }
    let leader = leader_of(&partitions).await;
    let victim = (leader + 1) % 3;
    let victim_addr = nodes[victim].addr();
    let start = Instant::now();
    while partitions[victim].log_end_offset() < Offset(480) {
        assert!(start.elapsed() < PATIENCE, "the follower did not catch up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    nodes.remove(victim).stop_unclean().await;
    partitions.remove(victim);
    let segment = dirs[victim]
        .path()
        .join("partitions")
        .join(format!("{:020}", GROUP.0))
        .join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&segment).unwrap();
    // The file is preallocated: aim at the middle of its data, not of its length.
    let data_end = bytes.iter().rposition(|b| *b != 0).unwrap();
    bytes[data_end / 2] ^= 0x20;
    std::fs::write(&segment, &bytes).unwrap();

    let node = Node::start(config(victim as u64 + 1, dirs[victim].path(), victim_addr))
        .await
        .unwrap();
    let repaired = node.open_partition(GROUP).await.unwrap();
    assert!(
        repaired.log_end_offset() < Offset(480),
        "recovery cut the damaged tail"
    );
    for sequence in 60..70 {
        produce(&partitions, batch(5, sequence, 8)).await;
    }
    let new = leader_of(&partitions).await;
    let committed = read_all(&partitions[new], false).await;
    assert_eq!(committed.len(), 70 * 8);
    let start = Instant::now();
    while read_all(&repaired, true).await != committed {
        assert!(
            start.elapsed() < PATIENCE,
            "the damaged follower was not repaired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // No replica's Raft instance died on the way (without the feature, the leader's panicked).
    assert!(repaired.health().is_ok());
    for partition in &partitions {
        assert_eq!(partition.health(), Ok(()));
    }
    nodes.push(node);
    // The replicas close only once nothing holds them.
    drop(partitions);
    for node in nodes {
        node.stop().await;
    }
}

/// acks=0: batches handed to the leader without waiting are committed in the order they were
/// sent; an acknowledged batch after them proves they are all in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_batches_are_committed_in_order() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (nodes, partitions) = start_cluster(&dirs).await;
    let leader = leader_of(&partitions).await;
    for sequence in 0..50 {
        partitions[leader]
            .produce_unacknowledged(batch(6, sequence, 2))
            .await
            .unwrap();
    }
    assert_eq!(
        partitions[leader].produce(batch(6, 50, 2)).await.unwrap(),
        Offset(100)
    );
    let records = read_all(&partitions[leader], false).await;
    let expected: Vec<(u64, String)> = (0..51u64)
        .flat_map(|s| (0..2u64).map(move |i| (s * 2 + i, format!("6-{s}-{i}"))))
        .collect();
    assert_eq!(records, expected);
    let follower = (leader + 1) % 3;
    assert!(matches!(
        partitions[follower]
            .produce_unacknowledged(batch(6, 99, 1))
            .await,
        Err(ProduceError::NotLeader { .. })
    ));
    // The replicas close only once nothing holds them.
    drop(partitions);
    for node in nodes {
        node.stop().await;
    }
}

/// acks=1: the leader answers once the batch is durable in its own log, with the offset it got,
/// without waiting for followers; so an isolated leader still answers (and the batch may be
/// lost, as with Kafka's acks=1), where acks=all would not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_acknowledged_batches_get_their_offsets_without_the_followers() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (nodes, partitions) = start_cluster(&dirs).await;
    let leader = leader_of(&partitions).await;
    for sequence in 0..20u64 {
        let offset = partitions[leader]
            .produce_leader_ack(batch(7, sequence, 3))
            .await
            .unwrap();
        assert_eq!(offset, Offset(sequence * 3));
    }
    assert_eq!(
        partitions[leader].produce(batch(7, 20, 3)).await.unwrap(),
        Offset(60)
    );
    assert_eq!(read_all(&partitions[leader], false).await.len(), 63);
    let follower = (leader + 1) % 3;
    assert!(matches!(
        partitions[follower]
            .produce_leader_ack(batch(7, 99, 1))
            .await,
        Err(ProduceError::NotLeader { .. })
    ));

    nodes[leader].set_isolated(true);
    let answer = tokio::time::timeout(
        PATIENCE,
        partitions[leader].produce_leader_ack(batch(8, 0, 2)),
    )
    .await;
    assert_eq!(
        answer.expect("acks=1 waits for no follower").unwrap(),
        Offset(63)
    );
    let stranded = tokio::time::timeout(
        Duration::from_millis(500),
        partitions[leader].produce(batch(8, 1, 2)),
    )
    .await;
    assert!(
        stranded.is_err() || stranded.unwrap().is_err(),
        "acks=all cannot succeed without a majority"
    );
    nodes[leader].set_isolated(false);
    // The replicas close only once nothing holds them.
    drop(partitions);
    for node in nodes {
        node.stop().await;
    }
}

/// Group commit within a partition: batches produced at once while an entry is on its way into
/// the leader's log share the next entry; each still gets its own offsets (acks=all and acks=1
/// alike), holds exactly its records there, and every replica agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_produced_at_once_share_entries_and_each_gets_its_own_offsets() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (nodes, partitions) = start_cluster(&dirs).await;
    let leader = leader_of(&partitions).await;
    const PRODUCERS: u64 = 8;
    const BATCHES: u64 = 40;
    let tasks: Vec<_> = (0..PRODUCERS)
        .map(|producer| {
            let partition = Arc::clone(&partitions[leader]);
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for sequence in 0..BATCHES {
                    let records = (producer + sequence) as usize % 4 + 1;
                    let batch = batch(100 + producer, sequence, records);
                    let offset = if sequence.is_multiple_of(2) {
                        partition.produce(batch).await
                    } else {
                        partition.produce_leader_ack(batch).await
                    };
                    answers.push((offset.unwrap(), producer, sequence, records));
                }
                answers
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.extend(task.await.unwrap());
    }
    answers.sort();
    let total: u64 = answers.iter().map(|a| a.3 as u64).sum();
    // Offsets: each batch's own, back to back, none shared.
    let mut expected = Vec::new();
    let mut next = 0;
    for (offset, producer, sequence, records) in &answers {
        assert_eq!(*offset, Offset(next), "batches' offsets tile the log");
        for i in 0..*records {
            expected.push((next, format!("{}-{sequence}-{i}", 100 + producer)));
            next += 1;
        }
    }
    assert_eq!(next, total);
    wait_for_end(&partitions, Offset(total)).await;
    let start = Instant::now();
    while partitions[leader].high_watermark() != Offset(total) {
        assert!(
            start.elapsed() < PATIENCE,
            "the acks=1 tail was not committed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(read_all(&partitions[leader], false).await, expected);
    for partition in &partitions {
        assert_eq!(read_all(partition, true).await, expected, "replicas agree");
    }
    // Fewer entries than batches: some went to Raft together.
    let mut entries = 0;
    let mut from = Offset(0);
    while from < Offset(total) {
        let read = partitions[leader].fetch(from, 1 << 20).await.unwrap();
        entries += read.len();
        from = read.last().unwrap().next_offset();
    }
    assert!(
        entries < answers.len(),
        "{entries} entries for {} batches",
        answers.len()
    );
    drop(partitions);
    for node in nodes {
        node.stop().await;
    }
}

/// Waits until every replica's log ends at `end`.
async fn wait_for_end(partitions: &[Arc<Partition>], end: Offset) {
    let start = Instant::now();
    while partitions.iter().any(|p| p.log_end_offset() != end) {
        assert!(start.elapsed() < PATIENCE, "replicas did not reach {end:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
