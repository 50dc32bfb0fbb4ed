//! The controller group: three nodes form a cluster, a topic created on the controller leader is
//! placed on the nodes, every replica opens and every partition elects a leader and accepts
//! records; partitions added later do too; deleting the topic stops its replicas and removes
//! their data everywhere.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // tests unwrap; sizes are small

mod common;

use common::*;
use quipu_storage::Offset;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_placed_replicated_and_deleted_through_the_controller() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = start_nodes(&dirs, &small_log()).await;
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

    let groups = groups_of(&nodes[leader], "orders");
    assert_eq!(groups.len(), 3);
    wait_for("every replica open with a leader", || {
        every_replica_led(&nodes, &groups)
    })
    .await;
    for (at, group) in groups.iter().enumerate() {
        assert_eq!(
            produce(&nodes, *group, &format!("partition {at}")).await,
            Offset(0)
        );
    }

    // Two more partitions: placed, opened everywhere, led, and taking records.
    nodes[leader].add_partitions("orders", 2).await.unwrap();
    let groups = groups_of(&nodes[leader], "orders");
    assert_eq!(groups.len(), 5);
    wait_for("the added partitions open everywhere with a leader", || {
        every_replica_led(&nodes, &groups[3..])
    })
    .await;
    for group in &groups[3..] {
        assert_eq!(produce(&nodes, *group, "added").await, Offset(0));
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
