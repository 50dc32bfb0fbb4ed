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
    assert_eq!(
        reopened.applied_state().await.unwrap().0,
        Some(LogId::new(CommittedLeaderId::new(1, 0), 6))
    );

    let other_dir = tempfile::tempdir().unwrap();
    let (mut other, _other_effects) =
        ControllerStateMachine::open(other_dir.path().to_path_buf(), 3)
            .await
            .unwrap();
    let mut data = other.begin_receiving_snapshot().await.unwrap();
    *data = *snapshot.snapshot;
    other.install_snapshot(&snapshot.meta, data).await.unwrap();
    assert_eq!(other.metadata(), reopened.metadata());
}
