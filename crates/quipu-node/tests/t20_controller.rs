//! The controller group: three nodes form a cluster, a topic created on the controller leader is
//! placed on the nodes, every replica opens and every partition elects a leader and accepts
//! records; partitions added later do too; deleting the topic stops its replicas and removes
//! their data everywhere.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // tests unwrap; sizes are small

use std::path::Path;
use std::time::{Duration, Instant};

use quipu_node::{GroupId, Node, NodeConfig};
use quipu_record::{BatchBuilder, Compression};
use quipu_storage::{LogConfig, Offset};

const PATIENCE: Duration = Duration::from_secs(20);

fn config(id: u64, dir: &Path) -> NodeConfig {
    NodeConfig {
        log: LogConfig {
            segment_bytes_max: 64 * 1024,
            entry_bytes_max: 16 * 1024,
            ..LogConfig::default()
        },
        ..NodeConfig::new(id, dir.to_path_buf(), "127.0.0.1:0".parse().unwrap())
    }
}

async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_placed_replicated_and_deleted_through_the_controller() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        nodes.push(Node::start(config(i as u64 + 1, dir.path())).await.unwrap());
    }
    let voters: Vec<(u64, String)> = nodes
        .iter()
        .map(|n| (n.id(), n.addr().to_string()))
        .collect();
    for node in &nodes {
        node.join(voters.clone()).await.unwrap();
    }
    wait_for("a controller leader that registered every node", || {
        nodes
            .iter()
            .all(|n| n.metadata().nodes().count() == 3 && n.controller_leader().is_some())
    })
    .await;
    let leader = nodes
        .iter()
        .position(|n| n.controller_leader() == Some(n.id()))
        .unwrap();
    // A follower forwards the request to the controller leader.
    let follower = (leader + 1) % 3;
    nodes[follower].create_topic("orders", 3, 3).await.unwrap();
    assert!(matches!(
        nodes[leader].create_topic("orders", 1, 1).await,
        Err(quipu_node::ControllerError::TopicExists(_))
    ));
    assert!(matches!(
        nodes[follower].create_topic("orders", 3, 3).await,
        Err(quipu_node::ControllerError::TopicExists(_))
    ));
    assert!(matches!(
        nodes[follower].delete_topic("missing").await,
        Err(quipu_node::ControllerError::UnknownTopic(_))
    ));

    let groups: Vec<GroupId> = nodes[leader]
        .metadata()
        .topic("orders")
        .unwrap()
        .partitions
        .iter()
        .map(|p| GroupId(p.group))
        .collect();
    assert_eq!(groups.len(), 3);
    wait_for("every replica open with a leader", || {
        groups.iter().all(|group| {
            nodes.iter().all(|n| n.partition(*group).is_some())
                && nodes
                    .iter()
                    .any(|n| n.partition(*group).is_some_and(|p| p.is_leader()))
        })
    })
    .await;
    // Preferred leaders are spread: each node bootstrapped one partition.
    for (at, group) in groups.iter().enumerate() {
        let partition_leader = nodes
            .iter()
            .find(|n| n.partition(*group).unwrap().is_leader())
            .unwrap();
        let mut builder = BatchBuilder::new(0, Compression::None);
        builder.push(0, None, Some(format!("partition {at}").as_bytes()), &[]);
        let offset = partition_leader
            .partition(*group)
            .unwrap()
            .produce(builder.build().unwrap())
            .await
            .unwrap();
        assert_eq!(offset, Offset(0));
    }

    // Two more partitions: placed, opened everywhere, led, and taking records.
    nodes[leader].add_partitions("orders", 2).await.unwrap();
    let groups: Vec<GroupId> = nodes[leader]
        .metadata()
        .topic("orders")
        .unwrap()
        .partitions
        .iter()
        .map(|p| GroupId(p.group))
        .collect();
    assert_eq!(groups.len(), 5);
    wait_for("the added partitions open everywhere with a leader", || {
        groups[3..].iter().all(|group| {
            nodes.iter().all(|n| n.partition(*group).is_some())
                && nodes
                    .iter()
                    .any(|n| n.partition(*group).is_some_and(|p| p.is_leader()))
        })
    })
    .await;
    for group in &groups[3..] {
        let partition = nodes
            .iter()
            .find_map(|n| n.partition(*group).filter(|p| p.is_leader()))
            .unwrap();
        let mut builder = BatchBuilder::new(0, Compression::None);
        builder.push(0, None, Some(b"added"), &[]);
        assert_eq!(
            partition.produce(builder.build().unwrap()).await.unwrap(),
            Offset(0)
        );
    }
    assert!(matches!(
        nodes[leader].add_partitions("missing", 1).await,
        Err(quipu_node::ControllerError::UnknownTopic(_))
    ));

    nodes[leader].delete_topic("orders").await.unwrap();
    wait_for("every replica stopped and its data removed", || {
        nodes.iter().enumerate().all(|(i, n)| {
            n.partitions().is_empty()
                && groups.iter().all(|g| {
                    !dirs[i]
                        .path()
                        .join("partitions")
                        .join(format!("{:020}", g.0))
                        .exists()
                })
        })
    })
    .await;
    assert!(nodes.iter().all(|n| n.metadata().topic("orders").is_none()));
    for node in nodes {
        node.stop().await;
    }
}
