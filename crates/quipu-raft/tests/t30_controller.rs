//! The controller state machine: commands applied in log order change the metadata and emit this
//! node's effects; refused commands are answered with their error; snapshots carry the whole
//! metadata across a restart and to another node.
#![allow(clippy::unwrap_used)] // tests unwrap

use bytes::Bytes;
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder};
use quipu_meta::{Command, Effect, NodeInfo, TopicConfig};
use quipu_raft::{ControllerStateMachine, Request, TypeConfig};

fn entry(index: u64, command: &Command) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
        payload: EntryPayload::Normal(Request::Metadata(Bytes::from(
            postcard::to_allocvec(command).unwrap(),
        ))),
    }
}

fn register(id: u64) -> Command {
    Command::Register(NodeInfo {
        id,
        raft_addr: format!("127.0.0.1:{}", 7000 + id),
        api_addr: format!("127.0.0.1:{}", 9000 + id),
        kafka_addr: String::new(),
        rack: String::new(),
    })
}

#[tokio::test]
async fn commands_change_metadata_emit_effects_and_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sm, mut effects) = ControllerStateMachine::open(dir.path().to_path_buf(), 2)
        .await
        .unwrap();
    assert!(
        sm.attach().is_empty(),
        "nothing to restore without a snapshot"
    );
    let responses = sm
        .apply([
            entry(1, &register(1)),
            entry(2, &register(2)),
            entry(3, &register(3)),
        ])
        .await
        .unwrap();
    assert!(responses.iter().all(|r| r.error.is_none()));
    let create = sm
        .metadata()
        .plan_create_topic("orders", 3, 2, TopicConfig::default())
        .unwrap();
    let responses = sm
        .apply([entry(4, &create), entry(5, &create)])
        .await
        .unwrap();
    assert_eq!(responses[0].error, None);
    assert_eq!(
        responses[1].error.as_deref(),
        Some("topic orders already exists"),
        "a refused command is answered"
    );
    let topic = sm.metadata().topic("orders").unwrap().clone();
    let hosted: Vec<u64> = topic
        .partitions
        .iter()
        .filter(|p| p.replicas.contains(&2))
        .map(|p| p.group)
        .collect();
    for group in &hosted {
        match effects.try_recv().unwrap() {
            Effect::StartReplica {
                group: started,
                created: true,
                ..
            } => assert_eq!(started, *group),
            other => panic!("unexpected effect {other:?}"),
        }
    }
    assert!(
        effects.try_recv().is_err(),
        "no effect for partitions node 2 does not host"
    );
    let garbage = Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 0), 6),
        payload: EntryPayload::Normal(Request::Metadata(Bytes::from_static(b"\xff\xff"))),
    };
    assert!(sm.apply([garbage]).await.unwrap()[0].error.is_some());

    // A snapshot covers entries never applied here again: it is built only once their effects
    // were carried out.
    let progress = sm.progress();
    let mut waiting = sm.get_snapshot_builder().await;
    let mut early = tokio::spawn(async move { waiting.build_snapshot().await.map(|s| s.meta) });
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), &mut early)
            .await
            .is_err(),
        "built before its effects were carried out"
    );
    progress.carried_out(hosted.len() as u64);
    early.await.unwrap().unwrap();
    let snapshot = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    drop(sm);
    let (mut reopened, _effects) = ControllerStateMachine::open(dir.path().to_path_buf(), 2)
        .await
        .unwrap();
    assert_eq!(reopened.metadata().topic("orders"), Some(&topic));
    // Restarted from the snapshot, the node starts the replicas it holds first.
    let restored: Vec<u64> = reopened
        .attach()
        .iter()
        .filter_map(|e| match e {
            Effect::StartReplica {
                group,
                created: false,
                ..
            } => Some(*group),
            _ => None,
        })
        .collect();
    assert_eq!(restored, hosted);
    assert_eq!(
        reopened.applied_state().await.unwrap().0,
        Some(LogId::new(CommittedLeaderId::new(1, 0), 6))
    );

    let other_dir = tempfile::tempdir().unwrap();
    let (mut other, mut other_effects) =
        ControllerStateMachine::open(other_dir.path().to_path_buf(), 3)
            .await
            .unwrap();
    assert!(other.attach().is_empty());
    let mut data = other.begin_receiving_snapshot().await.unwrap();
    *data = *snapshot.snapshot;
    other.install_snapshot(&snapshot.meta, data).await.unwrap();
    assert_eq!(other.metadata(), reopened.metadata());
    // Installed from the leader, it starts the replicas node 3 holds, as applying would have.
    let mut started = Vec::new();
    while let Ok(effect) = other_effects.try_recv() {
        match effect {
            Effect::StartReplica { group, .. } => started.push(group),
            other => panic!("unexpected effect {other:?}"),
        }
    }
    let held: Vec<u64> = topic
        .partitions
        .iter()
        .filter(|p| p.replicas.contains(&3))
        .map(|p| p.group)
        .collect();
    assert_eq!(started, held);

    // A node that stops before carrying its effects out builds no snapshot.
    let progress = other.progress();
    let mut builder = other.get_snapshot_builder().await;
    progress.close();
    assert!(builder.build_snapshot().await.is_err());
}
