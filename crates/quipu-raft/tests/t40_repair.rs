//! Setting a damaged replica aside: the damage is found, the new replica keeps the vote and a
//! flush mark that makes it abstain, and a crash between the two renames is finished at the next
//! open.
#![allow(clippy::unwrap_used)] // tests unwrap

use std::sync::Arc;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
use quipu_raft::repair::{find_damage, finish_repair, set_aside};
use quipu_raft::shared::PartitionShared;
use quipu_raft::{LogStore, TypeConfig};
use quipu_storage::{Log, LogConfig};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 4096,
        entry_bytes_max: 1024,
        preallocate_bytes: 0,
        ..LogConfig::default()
    }
}

fn blank(index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
        payload: EntryPayload::Blank,
    }
}

async fn open(dir: &std::path::Path) -> (LogStore, Arc<PartitionShared>) {
    let log = Arc::new(Log::open(dir, config()).unwrap());
    let shared = Arc::new(PartitionShared::default());
    let store = LogStore::open(log, Arc::clone(&shared), 1).await.unwrap();
    (store, shared)
}

#[tokio::test]
async fn a_damaged_replica_starts_over_with_its_vote_and_abstains() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("00000000000000000007");
    {
        let (mut store, _) = open(&dir).await;
        store.blocking_append((0..300).map(blank)).await.unwrap();
        // It led: openraft would restore it as leader at once from this vote.
        store.save_vote(&Vote::new_committed(1, 2)).await.unwrap();
    }
    assert_eq!(
        find_damage(&dir, config()),
        None,
        "an intact log has no damage"
    );
    // Bit rot in the oldest (sealed) segment.
    let oldest = dir.join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&oldest).unwrap();
    bytes[200] ^= 0x01;
    std::fs::write(&oldest, &bytes).unwrap();
    let damage = find_damage(&dir, config()).expect("the flipped bit is found");
    assert!(damage.description.contains("corrupt segment"), "{damage:?}");
    // Found at open (no end known) or when read (the log's end is known).
    assert!(damage.next_index.is_none_or(|n| n == 300), "{damage:?}");

    let aside = set_aside(&dir, damage.next_index).unwrap();
    assert!(aside.exists() && aside.join(format!("{:020}.log", 0)).exists());
    let (mut store, shared) = open(&dir).await;
    assert_eq!(
        store.read_vote().await.unwrap(),
        Some(Vote::new(1, 2)),
        "the vote is kept, uncommitted: leading again takes an election"
    );
    assert_eq!(store.get_log_state().await.unwrap().last_log_id, None);
    assert!(
        shared.is_abstaining(),
        "it had acknowledged entries it no longer has"
    );
    drop(store);

    // A crash between the renames leaves only the new directory: the next open finishes it.
    std::fs::rename(&dir, root.path().join("00000000000000000007.repair")).unwrap();
    assert!(finish_repair(&dir).unwrap());
    assert!(!finish_repair(&dir).unwrap(), "nothing left to finish");
    let (mut store, shared) = open(&dir).await;
    assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(1, 2)));
    assert!(shared.is_abstaining());
}
