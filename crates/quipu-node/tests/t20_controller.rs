//! The controller group: three nodes form a cluster, a topic created on the controller leader is
//! placed on the nodes, every replica opens and every partition elects a leader and accepts
//! records; partitions added later do too; deleting the topic stops its replicas and removes
//! their data everywhere.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // tests unwrap; sizes are small

mod common;

use common::*;
use quipu_node::{Node, NodeConfig};
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
    // The node that asked answers once it applied the change itself: its client's next request
    // sees the topic (kafkajs asks for the new topic's leaders at once).
    for n in 0..10 {
        let name = format!("seen-{n}");
        nodes[follower].create_topic(&name, 1, 1).await.unwrap();
        assert!(
            nodes[follower].with_metadata(|m| m.topic(&name).is_some()),
            "{name} is not applied on the node that created it"
        );
        nodes[follower].delete_topic(&name).await.unwrap();
        assert!(
            nodes[follower].with_metadata(|m| m.topic(&name).is_none()),
            "{name} is still there on the node that deleted it"
        );
    }
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

/// Pins the bug where a script that waited for the cluster to answer and then created a topic got
/// "replication factor 3 needs that many nodes, the cluster has 2": while a voter has not
/// registered yet, a request that needs it waits (bounded) for the cluster to form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_while_the_cluster_forms_waits_for_its_nodes() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // The third node's address is fixed now; it starts later.
    let third_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().take(2).enumerate() {
        let listen = "127.0.0.1:0".parse().unwrap();
        let config = config(i as u64 + 1, dir.path(), listen, small_log());
        nodes.push(quipu_node::Node::start(config).await.unwrap());
    }
    let mut all_voters = voters(&nodes);
    all_voters.push((3, third_addr.to_string()));
    for node in &nodes {
        node.join(all_voters.clone()).await.unwrap();
    }
    wait_for("a controller leader and two registered nodes", || {
        nodes
            .iter()
            .all(|n| n.controller_leader().is_some() && n.metadata().nodes().count() == 2)
    })
    .await;
    // The third voter shows as one the cluster waits for.
    assert_eq!(nodes[0].controller_voters().len(), 3);
    let creating = {
        let handle = nodes[0].handle();
        tokio::spawn(async move { handle.create_topic("early", 1, 3).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !creating.is_finished(),
        "the request waits for the third node"
    );
    let third = quipu_node::Node::start(config(3, dirs[2].path(), third_addr, small_log()))
        .await
        .unwrap();
    third.join(all_voters.clone()).await.unwrap();
    creating.await.unwrap().unwrap();
    nodes.push(third);
    let groups = groups_of(&nodes[0], "early");
    wait_for("the topic's partition led", || {
        every_replica_led(&nodes, &groups)
    })
    .await;
    for node in nodes {
        node.stop().await;
    }
}

/// A restarted node has its metadata back once `wait_for_metadata` says so: a server serves
/// clients only after it, so it never calls an existing topic unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_has_its_metadata_back_before_it_serves() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let log = small_log();
    let (mut nodes, _groups) = start(&dirs, 2, &log).await;
    for round in 0..3 {
        let at = round % 3;
        let node = nodes.remove(at);
        let (id, addr) = (node.id(), node.addr());
        node.stop_unclean().await;
        let restarted = restart(&nodes, id, dirs[at].path(), addr, log.clone()).await;
        assert!(
            restarted
                .wait_for_metadata(std::time::Duration::from_secs(30))
                .await
        );
        let topic = restarted.metadata().topic("topic").cloned();
        assert_eq!(topic.map(|t| t.partitions.len()), Some(2), "round {round}");
        assert_eq!(restarted.metadata().nodes().count(), 3);
        nodes.insert(at, restarted);
    }
    for node in nodes {
        node.stop().await;
    }
}

/// Nodes whose controller snapshots every few entries and keeps none before its snapshot.
fn snapshotting(id: u64, dir: &std::path::Path, listen: std::net::SocketAddr) -> NodeConfig {
    NodeConfig {
        controller_snapshot_entries: 4,
        controller_log_kept: 0,
        ..config(id, dir, listen, small_log())
    }
}

/// Changes to the metadata that start and stop nothing: they move the controller's log on.
async fn churn(node: &Node, count: usize) {
    for i in 0..count {
        node.request_controller(quipu_node::ControllerRequest::AlterTopicConfig {
            name: "kept".into(),
            set: vec![("retention.ms".into(), (60_000 + i).to_string())],
            reset: Vec::new(),
            replace: false,
        })
        .await
        .unwrap();
    }
}

/// The controller snapshots its metadata and purges its log: a node restarted from its
/// snapshot starts the replicas the snapshot says it holds (their creation is never applied
/// again), and a node that was down while the log it missed was purged installs the leader's
/// snapshot, starting the replicas it was given meanwhile and deleting those it lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarts_from_the_controller_snapshot_and_catches_up_by_one() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let listen = "127.0.0.1:0".parse().unwrap();
        let config = snapshotting(i as u64 + 1, dir.path(), listen);
        nodes.push(Node::start(config).await.unwrap());
    }
    form_cluster(&nodes).await;
    let leader = nodes
        .iter()
        .position(|n| n.controller_leader() == Some(n.id()))
        .unwrap();
    nodes[leader].create_topic("kept", 2, 3).await.unwrap();
    nodes[leader].create_topic("dropped", 1, 3).await.unwrap();
    let kept = groups_of(&nodes[leader], "kept");
    let dropped = groups_of(&nodes[leader], "dropped");
    wait_for("the topics' replicas led", || {
        every_replica_led(&nodes, &kept) && every_replica_led(&nodes, &dropped)
    })
    .await;
    // Past the creates: every node snapshots beyond them and purges its log.
    let created = nodes[leader].controller_log_state().applied.unwrap();
    churn(&nodes[leader], 6).await;
    wait_for(
        "every node's snapshot past the creates, its log purged",
        || {
            nodes.iter().all(|n| {
                let state = n.controller_log_state();
                state.snapshot.is_some_and(|s| s > created)
                    && state.purged.is_some_and(|p| p > created)
            })
        },
    )
    .await;

    // A follower restarts from its snapshot: its replicas of "kept" open again.
    let at = (leader + 1) % 3;
    let node = nodes.remove(at);
    let (id, addr) = (node.id(), node.addr());
    node.stop().await;
    let restarted = rejoin(&nodes, snapshotting(id, dirs[at].path(), addr)).await;
    nodes.insert(at, restarted);
    wait_for("the restarted node's replicas open and led", || {
        every_replica_led(&nodes, &kept) && every_replica_led(&nodes, &dropped)
    })
    .await;
    for group in &kept {
        assert_eq!(produce(&nodes, *group, "after a restart").await.0, 0);
    }

    // Another follower is down while a topic is created on it, one it held is deleted, and the
    // log is purged past everything it has: it catches up by the leader's snapshot.
    let leader = nodes
        .iter()
        .position(|n| n.controller_leader() == Some(n.id()))
        .unwrap();
    let at = (leader + 2) % 3;
    let node = nodes.remove(at);
    let (id, addr) = (node.id(), node.addr());
    let seen = node.controller_log_state().applied.unwrap();
    node.stop().await;
    let leader = nodes
        .iter()
        .position(|n| n.controller_leader() == Some(n.id()))
        .unwrap();
    nodes[leader].create_topic("late", 2, 3).await.unwrap();
    nodes[leader].delete_topic("dropped").await.unwrap();
    churn(&nodes[leader], 6).await;
    wait_for(
        "the controller's log purged past what the stopped node has",
        || {
            nodes[leader]
                .controller_log_state()
                .purged
                .is_some_and(|p| p > seen)
        },
    )
    .await;
    let late = groups_of(&nodes[leader], "late");
    let dropped_dir = dirs[at]
        .path()
        .join("partitions")
        .join(format!("{:020}", dropped[0].0));
    assert!(
        dropped_dir.exists(),
        "the stopped node still holds the dropped replica"
    );
    let restarted = rejoin(&nodes, snapshotting(id, dirs[at].path(), addr)).await;
    nodes.insert(at, restarted);
    wait_for("the late topic's replicas open everywhere and led", || {
        every_replica_led(&nodes, &late) && every_replica_led(&nodes, &kept)
    })
    .await;
    wait_for("the dropped topic's replica deleted", || {
        !dropped_dir.exists()
    })
    .await;
    assert!(nodes[at].partition(dropped[0]).is_none());
    wait_for("the same metadata on both", || {
        nodes[at].metadata() == nodes[leader].metadata()
    })
    .await;
    for group in &late {
        assert_eq!(produce(&nodes, *group, "after catching up").await.0, 0);
    }
    for node in nodes {
        node.stop().await;
    }
}

/// The controller keeps its committed log id: a node restarted while no other is up (so no
/// leader can say what is committed) has the metadata it had at once, and opens its replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_alone_has_its_committed_metadata_at_once() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (nodes, groups) = start(&dirs, 2, &small_log()).await;
    wait_for("the topic's replicas led", || {
        every_replica_led(&nodes, &groups)
    })
    .await;
    let addrs: Vec<_> = nodes.iter().map(|n| (n.id(), n.addr())).collect();
    for node in nodes {
        node.stop().await;
    }
    let (id, addr) = addrs[0];
    let alone = rejoin(&[], config(id, dirs[0].path(), addr, small_log())).await;
    assert!(
        alone.wait_for_metadata(std::time::Duration::ZERO).await,
        "the committed metadata is applied before any leader is known"
    );
    assert_eq!(
        alone.metadata().topic("topic").map(|t| t.partitions.len()),
        Some(2)
    );
    wait_for("its replicas open", || {
        groups.iter().all(|g| alone.partition(*g).is_some())
    })
    .await;
    alone.stop().await;
}
