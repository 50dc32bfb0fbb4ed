//! Partition reassignment and preferred leader elections through real Kafka clients
//! (`tests/clients/reassign_client.py`): a fourth node joins, kafka-python moves a partition onto
//! it with AlterPartitionReassignments and follows the move with ListPartitionReassignments,
//! reads every record back, and kafka-python and confluent-kafka ask for preferred leader
//! elections (ElectLeaders). The metadata, the replicas on disk and the leaders are checked here.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use common::*;
use quipu_kafka::KafkaConfig;
use quipu_node::{GroupId, NodeConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_clients_move_a_partition_and_elect_preferred_leaders() {
    let python = python();
    let script = client_script("reassign_client.py");
    // Catch-up to a new replica is throttled to the least rate allowed, 64 KiB/s, so the move
    // of partition 0 (500 entries, about 300 KiB of log) lasts seconds and
    // ListPartitionReassignments, asked every 100 ms, sees it.
    let mut cluster = Cluster::start_tuned(KafkaConfig::default(), |c| NodeConfig {
        move_bytes_per_sec: Some(quipu_node::MOVE_BYTES_PER_SEC_MIN),
        ..c
    })
    .await;
    cluster.add_node(KafkaConfig::default()).await;
    let topic = "moved";
    let output = run(
        &python,
        &[&script, &cluster.bootstrap(), topic, "4,1,2"],
        None,
    )
    .await;
    let seen: serde_json::Value = serde_json::from_str(output.trim()).unwrap();
    assert_eq!(seen["consumed"], 1000, "{seen}");
    assert_eq!(seen["in_order"], true, "{seen}");
    assert_eq!(
        seen["wrong_size"], "InvalidReplicationFactorError",
        "{seen}"
    );
    assert_eq!(
        seen["cancel_idle"], "NoReassignmentInProgressError",
        "{seen}"
    );
    // The move was listed while under way: node 4 being added, node 3 removed (the topic's
    // replicas were nodes 1 to 3).
    let listed = &seen["listed_while_moving"][0];
    assert_eq!(listed["adding_replicas"], serde_json::json!([4]), "{seen}");
    assert_eq!(
        listed["removing_replicas"],
        serde_json::json!([3]),
        "{seen}"
    );
    let (group, replicas) = cluster.any().with_metadata(|m| {
        let p = &m.topic(topic).unwrap().partitions[0];
        (GroupId(p.group), p.replicas.clone())
    });
    assert_eq!(replicas, [4, 1, 2]);
    // Node 3's replica of partition 0 is gone; node 4 holds one.
    cluster
        .wait_for("the old replica deleted", |c| {
            c.nodes[2].node.as_ref().unwrap().partition(group).is_none()
        })
        .await;
    assert!(
        cluster.nodes[3]
            .node
            .as_ref()
            .unwrap()
            .partition(group)
            .is_some()
    );
    // Each election either moved the leadership to the preferred replica or found it there.
    for codes in [&seen["kafka_python_election_codes"]] {
        for code in codes.as_array().unwrap() {
            let code = code.as_i64().unwrap();
            assert!(code == 0 || code == 84 || code == 80, "{seen}");
        }
    }
    // Node 4 leads partition 0 once an election found it caught up (asked again until then).
    let start = std::time::Instant::now();
    let leads = |c: &Cluster| {
        c.nodes[3]
            .node
            .as_ref()
            .unwrap()
            .partition(group)
            .is_some_and(|p| p.is_leader())
    };
    while !leads(&cluster) {
        assert!(start.elapsed() < PATIENCE, "node 4 never led partition 0");
        cluster.any().elect_leaders(Some(vec![group.0])).await;
        // Paces the retries of an action (not a wait for a condition).
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // confluent-kafka: each partition elected or found led by its preferred replica.
    for result in seen["confluent_election"].as_array().unwrap() {
        let code = result[1].as_str().unwrap();
        assert!(
            [
                "NONE",
                "ELECTION_NOT_NEEDED",
                "PREFERRED_LEADER_NOT_AVAILABLE"
            ]
            .contains(&code),
            "{seen}"
        );
    }
    cluster.stop().await;
}
