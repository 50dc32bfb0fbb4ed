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
