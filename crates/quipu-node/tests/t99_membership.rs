//! Cluster membership while the cluster serves: nodes join through any member, partitions move
//! to new replicas, nodes are drained and removed, a dead node is replaced. Producers write with
//! acks=all throughout; at the end every acknowledged record is read back once, in order, and
//! every replica holds the same records.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{
    batch, config, groups_of, init_tracing, leader_node, produce, records_from, restart, small_log,
    start, start_nodes, wait_for,
};
use quipu_node::{GroupId, Node, NodeHandle, ProduceError};
use quipu_storage::Offset;

/// Longest a producer tries one record.
const RECORD_PATIENCE: Duration = Duration::from_secs(30);
/// Most records one producer writes (each loop is bounded in count and time).
const RECORDS_MAX: usize = 2_000;

/// What one producer saw: values acknowledged, in order, and values whose outcome is unknown.
#[derive(Debug, Default)]
struct Produced {
    acked: Vec<String>,
    unknown: Vec<String>,
}

/// Writes `"{group}-{n}"` records to `group` with acks=all, one at a time, on whichever node
/// leads it, until `stop` (or [`RECORDS_MAX`]).
async fn produce_until(
    nodes: Arc<std::sync::RwLock<Vec<NodeHandle>>>,
    group: GroupId,
    stop: Arc<AtomicBool>,
) -> Produced {
    let mut produced = Produced::default();
    for n in 0..RECORDS_MAX {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let value = format!("{}-{n}", group.0);
        let started = Instant::now();
        let mut last: String;
        loop {
            let leader = nodes
                .read()
                .unwrap()
                .iter()
                .find_map(|node| node.partition(group).filter(|p| p.is_leader()));
            let outcome = match leader {
                Some(partition) => Some(partition.produce(batch(&value)).await),
                None => None,
            };
            match outcome {
                Some(Ok(_)) => {
                    produced.acked.push(value);
                    break;
                }
                Some(Err(ProduceError::Unavailable { .. } | ProduceError::Task { .. })) => {
                    // Maybe written: it may show up once, never twice.
                    produced.unknown.push(value);
                    break;
                }
                Some(Err(e @ ProduceError::NotLeader { .. })) => last = format!("{e:?}"),
                None => last = "no replica leads".to_owned(),
                Some(Err(e)) => panic!("produce to {group} failed: {e}"),
            }
            if started.elapsed() >= RECORD_PATIENCE {
                let views: Vec<String> = nodes
                    .read()
                    .unwrap()
                    .iter()
                    .map(|node| match node.partition(group) {
                        Some(p) => format!(
                            "node {}: leader {:?}, leads {}, voters {:?}, quiet {}, abstains {}, \
                             health {:?}, end {:?}, hw {:?}",
                            node.id(),
                            p.leader(),
                            p.is_leader(),
                            p.voters(),
                            p.is_quiescent(),
                            p.is_abstaining(),
                            p.health(),
                            p.log_end_offset(),
                            p.high_watermark(),
                        ),
                        None => format!("node {}: no replica", node.id()),
                    })
                    .collect();
                panic!("{group}: no leader took {value} in time; last: {last}; {views:#?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    produced
}

/// Producers on every group, stopped and checked by [`Load::finish`].
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<(GroupId, tokio::task::JoinHandle<Produced>)>,
}

impl Load {
    fn start(nodes: &Arc<std::sync::RwLock<Vec<NodeHandle>>>, groups: &[GroupId]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = groups
            .iter()
            .map(|group| {
                let task =
                    tokio::spawn(produce_until(Arc::clone(nodes), *group, Arc::clone(&stop)));
                (*group, task)
            })
            .collect();
        Load { stop, tasks }
    }

    /// Stops the producers and checks, on every node that hosts a replica of each group, that
    /// the replica holds every acknowledged value once, in acknowledgement order, no unknown
    /// one twice, and the same records as the others.
    async fn finish(self, nodes: &[NodeHandle]) {
        self.stop.store(true, Ordering::SeqCst);
        for (group, task) in self.tasks {
            let produced = task.await.unwrap();
            assert!(!produced.acked.is_empty(), "{group}: nothing acknowledged");
            wait_for("three replicas holding the group's whole log", || {
                let ends: Vec<Offset> = nodes
                    .iter()
                    .filter_map(|n| n.partition(group))
                    .map(|p| p.log_end_offset())
                    .collect();
                ends.len() == 3 && ends.windows(2).all(|w| w[0] == w[1])
            })
            .await;
            let mut replicas = Vec::new();
            for node in nodes {
                if let Some(partition) = node.partition(group) {
                    replicas.push((node.id(), records_from(&partition, Offset(0), true).await));
                }
            }
            assert_eq!(
                replicas.len(),
                3,
                "{group}: replicas on {:?}",
                ids(&replicas)
            );
            let (first_id, first) = &replicas[0];
            for (id, records) in &replicas[1..] {
                assert_eq!(
                    records, first,
                    "{group}: node {id} differs from node {first_id}"
                );
            }
            let values: Vec<&String> = first.iter().map(|(_, v)| v).collect();
            let mut seen: BTreeMap<&String, usize> = BTreeMap::new();
            for value in &values {
                *seen.entry(value).or_insert(0) += 1;
            }
            assert!(seen.values().all(|n| *n == 1), "{group}: a record twice");
            let acked_in_log: Vec<&String> = values
                .iter()
                .copied()
                .filter(|v| produced.acked.contains(v))
                .collect();
            let acked: Vec<&String> = produced.acked.iter().collect();
            assert_eq!(
                acked_in_log, acked,
                "{group}: acknowledged records lost or reordered"
            );
        }
    }
}

fn ids<T>(replicas: &[(u64, T)]) -> Vec<u64> {
    replicas.iter().map(|(id, _)| *id).collect()
}

/// Starts node `id` in `dir` and joins it to the cluster through `seed`.
async fn join(id: u64, dir: &tempfile::TempDir, seed: &Node) -> Node {
    let node = Node::start(config(
        id,
        dir.path(),
        "127.0.0.1:0".parse().unwrap(),
        small_log(),
    ))
    .await
    .unwrap();
    node.join_through(&seed.addr().to_string(), Duration::from_secs(30))
        .await
        .unwrap();
    node
}

/// Whether every node's metadata shows no move under way and each partition's replicas are
/// open exactly on the nodes its assignment names.
fn settled(nodes: &[NodeHandle], topic: &str) -> bool {
    nodes.iter().all(|node| {
        node.with_metadata(|m| {
            m.reassignments().next().is_none()
                && m.topic(topic).is_some_and(|t| {
                    t.partitions.iter().all(|p| {
                        nodes.iter().all(|n| {
                            p.replicas.contains(&n.id()) == n.partition(GroupId(p.group)).is_some()
                        })
                    })
                })
        })
    })
}

fn handles(nodes: &[Node]) -> Vec<NodeHandle> {
    nodes.iter().map(Node::handle).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_join_and_a_rebalance_spreads_partitions_while_producing() {
    let dirs: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut nodes, groups) = start(&dirs[..3], 4, &small_log()).await;
    let shared = Arc::new(std::sync::RwLock::new(handles(&nodes)));
    let load = Load::start(&shared, &groups);

    for (id, at) in [(4, 3), (5, 4)] {
        let node = join(id, &dirs[at], &nodes[at % 3]).await;
        shared.write().unwrap().push(node.handle());
        nodes.push(node);
    }
    wait_for("five registered nodes", || {
        nodes.iter().all(|n| n.metadata().nodes().count() == 5)
    })
    .await;
    // The controller keeps three voters; the two new nodes follow it as learners.
    let statuses = nodes[0].cluster_nodes();
    let roles: Vec<(u64, &str, &str)> = statuses
        .iter()
        .map(|s| (s.id, s.state, s.controller_role))
        .collect();
    assert_eq!(
        roles,
        [
            (1, "active", "voter"),
            (2, "active", "voter"),
            (3, "active", "voter"),
            (4, "active", "learner"),
            (5, "active", "learner"),
        ]
    );

    let planned = nodes[0].plan_rebalance();
    assert!(!planned.is_empty(), "new nodes hold nothing yet");
    let moved = nodes[0].rebalance().await.unwrap();
    assert_eq!(moved, planned.len());
    let all = handles(&nodes);
    wait_for("the rebalance to complete", || settled(&all, "topic")).await;
    let counts: Vec<usize> = nodes[0]
        .cluster_nodes()
        .iter()
        .map(|s| s.replicas)
        .collect();
    assert!(
        counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1,
        "replicas per node {counts:?}"
    );
    assert_eq!(counts.iter().sum::<usize>(), 12);

    load.finish(&all).await;
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drained_node_is_emptied_and_then_removed_while_producing() {
    init_tracing();
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut nodes, groups) = start(&dirs[..3], 3, &small_log()).await;
    nodes.push(join(4, &dirs[3], &nodes[0]).await);
    wait_for("four registered nodes", || {
        nodes.iter().all(|n| n.metadata().nodes().count() == 4)
    })
    .await;
    let shared = Arc::new(std::sync::RwLock::new(handles(&nodes)));
    let load = Load::start(&shared, &groups);

    // Node 2 holds a replica of every partition (RF 3 on 3 nodes).
    assert!(
        nodes[0].remove_node(2, false).await.is_err(),
        "refused while it holds replicas"
    );
    nodes[0].drain_node(2).await.unwrap();
    wait_for("node 2 to lead nothing", || {
        groups
            .iter()
            .all(|g| nodes[1].partition(*g).is_none_or(|p| !p.is_leader()))
    })
    .await;
    let all = handles(&nodes);
    wait_for("the drain to complete", || settled(&all, "topic")).await;
    assert!(
        nodes[1].partitions().is_empty(),
        "node 2 still holds replicas"
    );
    let created = nodes[0].create_topic("after", 3, 3).await;
    created.unwrap();
    assert!(
        groups_of(&nodes[0], "after")
            .iter()
            .all(|g| nodes[0]
                .with_metadata(|m| { !m.partition(g.0).unwrap().2.replicas.contains(&2) })),
        "a draining node got a new replica"
    );
    nodes[2].remove_node(2, false).await.unwrap();
    wait_for("node 2 to leave the controller group", || {
        nodes[0]
            .cluster_nodes()
            .iter()
            .any(|s| s.id == 2 && s.state == "removed" && s.controller_role.is_empty())
    })
    .await;

    let mut survivors = handles(&nodes);
    survivors.remove(1);
    load.finish(&survivors).await;
    // The id is never used again: a node that comes back with it is refused.
    let removed = nodes.remove(1);
    removed.stop().await;
    let again = Node::start(config(
        2,
        tempfile::tempdir().unwrap().path(),
        "127.0.0.1:0".parse().unwrap(),
        small_log(),
    ))
    .await
    .unwrap();
    let refused = again
        .join_through(&nodes[0].addr().to_string(), Duration::from_secs(10))
        .await;
    assert!(
        format!("{:?}", refused).contains("NodeRemoved"),
        "{refused:?}"
    );
    again.stop().await;
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_whose_first_replica_is_gone_at_creation_still_gets_a_leader() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = start_nodes(&dirs, &small_log()).await;
    // A node that does not lead the controller stops; the topic is created without it.
    let gone = nodes
        .iter()
        .position(|n| n.controller_leader() != Some(n.id()))
        .unwrap();
    let dead = nodes.remove(gone);
    let (dead_id, dead_addr) = (dead.id(), dead.addr());
    dead.stop().await;
    nodes[0].create_topic("late", 3, 3).await.unwrap();
    let groups = groups_of(&nodes[0], "late");
    let orphan = groups
        .iter()
        .find(|g| nodes[0].with_metadata(|m| m.partition(g.0).unwrap().2.replicas[0] == dead_id))
        .copied()
        .expect("the stopped node is the first replica of one partition");
    // Its group was formed by the others: it leads and takes records.
    for group in &groups {
        produce(&nodes, *group, "first").await;
    }
    assert!(leader_node(&nodes, orphan).is_some());
    // The node that was gone comes back and catches up as a follower of the group.
    let back = restart(&nodes, dead_id, dirs[gone].path(), dead_addr, small_log()).await;
    let end = produce(&nodes, orphan, "second").await;
    wait_for("the returning replica to catch up", || {
        back.partition(orphan)
            .is_some_and(|p| p.log_end_offset() > end)
    })
    .await;
    back.stop().await;
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_node_is_replaced_and_its_partitions_regain_their_replicas() {
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut nodes, groups) = start(&dirs[..3], 3, &small_log()).await;
    let shared = Arc::new(std::sync::RwLock::new(handles(&nodes)));
    let load = Load::start(&shared, &groups);
    wait_for("records on every partition", || {
        groups.iter().all(|g| {
            nodes.iter().any(|n| {
                n.partition(*g)
                    .is_some_and(|p| p.high_watermark() > Offset(20))
            })
        })
    })
    .await;

    // Node 3 dies for good (no handoff, no clean close).
    let dead = nodes.remove(2);
    shared.write().unwrap().retain(|n| n.id() != 3);
    dead.stop().await;
    // A fresh machine joins with a new id; the dead node is removed with --force.
    let fresh = join(4, &dirs[3], &nodes[0]).await;
    shared.write().unwrap().push(fresh.handle());
    nodes.push(fresh);
    wait_for("node 4 registered", || {
        nodes[0].metadata().nodes().count() == 4
    })
    .await;
    nodes[1].remove_node(3, true).await.unwrap();
    let all = handles(&nodes);
    wait_for("every partition back to three replicas", || {
        settled(&all, "topic")
    })
    .await;
    assert!(
        groups.iter().all(|g| nodes[2].partition(*g).is_some()),
        "node 4 holds a replica of each partition"
    );
    load.finish(&all).await;
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_move_whose_leader_dies_midway_is_finished_by_the_next_leader() {
    init_tracing();
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut nodes, groups) = start(&dirs[..3], 1, &small_log()).await;
    nodes.push(join(4, &dirs[3], &nodes[0]).await);
    wait_for("four registered nodes", || {
        nodes.iter().all(|n| n.metadata().nodes().count() == 4)
    })
    .await;
    let group = groups[0];
    let shared = Arc::new(std::sync::RwLock::new(handles(&nodes)));
    let load = Load::start(&shared, &groups);
    wait_for("a leader with records", || {
        nodes.iter().any(|n| {
            n.partition(group)
                .is_some_and(|p| p.high_watermark() > Offset(50))
        })
    })
    .await;
    let leader = nodes
        .iter()
        .position(|n| n.partition(group).is_some_and(|p| p.is_leader()))
        .unwrap();
    let leader_id = nodes[leader].id();
    // Move the partition off a follower (the leader stays a replica), onto node 4, and kill the
    // leader as soon as node 4 holds a replica: mid-move.
    let follower = (1..=3).find(|id| *id != leader_id).unwrap();
    let target: Vec<u64> = (1..=4).filter(|id| *id != follower).collect();
    nodes[0]
        .move_partition("topic", 0, target.clone())
        .await
        .unwrap();
    wait_for("node 4 to open its replica", || {
        nodes[3].partition(group).is_some()
    })
    .await;
    let killed_addr = nodes[leader].addr();
    let killed = nodes.remove(leader);
    shared.write().unwrap().retain(|n| n.id() != leader_id);
    killed.stop().await;
    // The survivors elect a leader, which finishes the move: the old voters' majority and the
    // target's (node 4 and the remaining original replica) both commit the change.
    let alive = handles(&nodes);
    wait_for("the move to complete", || {
        alive.iter().all(|n| {
            n.with_metadata(|m| {
                let (_, _, p) = m.partition(group.0).unwrap();
                p.target.is_none() && p.replicas == target
            })
        })
    })
    .await;
    wait_for("the moved-off follower's replica deleted", || {
        nodes
            .iter()
            .find(|n| n.id() == follower)
            .is_some_and(|n| n.partition(group).is_none())
    })
    .await;
    // The dead leader comes back and catches up as a replica of the new set.
    let back = common::restart(
        &nodes,
        leader_id,
        dirs[leader].path(),
        killed_addr,
        small_log(),
    )
    .await;
    shared.write().unwrap().push(back.handle());
    nodes.push(back);
    load.finish(&handles(&nodes)).await;
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_throttled_move_sends_no_faster_than_its_bound() {
    const RATE: u64 = 256 * 1024;
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let throttled = |id: u64, dir: &tempfile::TempDir| quipu_node::NodeConfig {
        move_bytes_per_sec: Some(RATE),
        ..config(id, dir.path(), "127.0.0.1:0".parse().unwrap(), small_log())
    };
    let mut nodes = Vec::new();
    for (at, dir) in dirs[..3].iter().enumerate() {
        nodes.push(Node::start(throttled(at as u64 + 1, dir)).await.unwrap());
    }
    let voters = common::voters(&nodes);
    for node in &nodes {
        node.join(voters.clone()).await.unwrap();
    }
    wait_for("three registered nodes", || {
        nodes.iter().all(|n| n.metadata().nodes().count() == 3)
    })
    .await;
    nodes[0].create_topic("big", 1, 3).await.unwrap();
    let group = groups_of(&nodes[0], "big")[0];
    // About 1 MiB of records.
    let value = "x".repeat(1000);
    for _ in 0..1024 {
        common::produce(&nodes, group, &value).await;
    }
    let fourth = Node::start(throttled(4, &dirs[3])).await.unwrap();
    fourth
        .join_through(&nodes[0].addr().to_string(), Duration::from_secs(30))
        .await
        .unwrap();
    assert!(fourth.wait_until_registered(Duration::from_secs(30)).await);
    nodes.push(fourth);
    let started = Instant::now();
    nodes[0]
        .move_partition("big", 0, vec![4, 2, 3])
        .await
        .unwrap();
    let all = handles(&nodes);
    wait_for("the move to complete", || settled(&all, "big")).await;
    let took = started.elapsed();
    // The bound lets one second's worth go at once; the rest of the ~1 MiB, less the entries
    // the new replica may lack when it becomes a voter (64 entries, ~64 KiB), waits for it.
    assert!(
        took >= Duration::from_secs(2),
        "a throttled move of ~1 MiB at 256 KiB/s took {took:?}"
    );
    // Caught up with the rest once a voter (no longer throttled).
    wait_for("the new replica to hold every record", || {
        nodes[3].partition(group).unwrap().log_end_offset() == Offset(1024)
    })
    .await;
    assert_eq!(
        records_from(&nodes[3].partition(group).unwrap(), Offset(0), true)
            .await
            .len(),
        1024
    );
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_five_voter_controller_takes_two_joined_nodes_and_outlives_two_losses() {
    let dirs: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let five = |id: u64, dir: &tempfile::TempDir| quipu_node::NodeConfig {
        controller_voters: 5,
        ..config(id, dir.path(), "127.0.0.1:0".parse().unwrap(), small_log())
    };
    let mut nodes = Vec::new();
    for (at, dir) in dirs[..3].iter().enumerate() {
        nodes.push(Node::start(five(at as u64 + 1, dir)).await.unwrap());
    }
    common::form_cluster(&nodes).await;
    for (at, dir) in dirs.iter().enumerate().skip(3) {
        let node = Node::start(five(at as u64 + 1, dir)).await.unwrap();
        node.join_through(&nodes[0].addr().to_string(), Duration::from_secs(30))
            .await
            .unwrap();
        nodes.push(node);
    }
    // Both joined nodes become voters: the controller grows from three voters to five. The
    // change passes through a joint configuration (a majority of the old three and of the new
    // five): losing two of the old three in it would leave no quorum, so wait until it is done.
    wait_for("five controller voters", || {
        nodes.iter().all(|n| {
            let statuses = n.cluster_nodes();
            statuses.len() == 5
                && statuses
                    .iter()
                    .all(|s| s.state == "active" && s.controller_role == "voter")
                && n.controller_voters().len() == 5
                && n.controller_membership_settled()
        })
    })
    .await;
    // Two voters stop, the controller's leader one of them: three of five still commit.
    let leader = nodes[0].controller_leader().unwrap();
    let leader_at = nodes.iter().position(|n| n.id() == leader).unwrap();
    let first = nodes.remove(leader_at);
    let second = nodes.remove(0);
    let stopped = [first.id(), second.id()];
    first.stop_unclean().await;
    second.stop_unclean().await;
    wait_for("a controller leader among the three left", || {
        nodes
            .iter()
            .all(|n| n.controller_leader().is_some_and(|l| !stopped.contains(&l)))
    })
    .await;
    // A controller command is committed and applied (a producer id allocated), and a dead
    // node is removed for good.
    let started = Instant::now();
    let id = loop {
        match nodes[0].init_producer_id().await {
            Ok(id) => break id,
            Err(e) => assert!(
                started.elapsed() < RECORD_PATIENCE,
                "the three left commit nothing: {e}"
            ),
        }
        // Paces the retries of a request (not a wait for a condition).
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(id >= 0);
    nodes[1].remove_node(stopped[1], true).await.unwrap();
    wait_for("the removal seen by every node left", || {
        nodes.iter().all(|n| {
            n.cluster_nodes()
                .iter()
                .any(|s| s.id == stopped[1] && s.state == "removed")
        })
    })
    .await;
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_returns_by_itself_to_the_preferred_replicas_after_a_failover() {
    init_tracing();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // Kafka's auto.leader.rebalance, checked every second instead of every five minutes.
    let eager =
        |id: u64, dir: &std::path::Path, listen: std::net::SocketAddr| quipu_node::NodeConfig {
            leader_rebalance_interval: Some(Duration::from_secs(1)),
            ..config(id, dir, listen, small_log())
        };
    let mut nodes = Vec::new();
    for (at, dir) in dirs.iter().enumerate() {
        let listen = "127.0.0.1:0".parse().unwrap();
        nodes.push(
            Node::start(eager(at as u64 + 1, dir.path(), listen))
                .await
                .unwrap(),
        );
    }
    common::form_cluster(&nodes).await;
    nodes[0].create_topic("topic", 3, 3).await.unwrap();
    let groups = groups_of(&nodes[0], "topic");
    let preferred =
        |group: GroupId| nodes[0].with_metadata(|m| m.partition(group.0).unwrap().2.replicas[0]);
    let preferred: Vec<u64> = groups.iter().map(|g| preferred(*g)).collect();
    // Three partitions on three nodes: each node is the preferred leader of one.
    let mut distinct = preferred.clone();
    distinct.sort_unstable();
    assert_eq!(distinct, [1, 2, 3]);
    let led_by_preferred = |nodes: &[Node]| {
        groups
            .iter()
            .zip(&preferred)
            .all(|(g, p)| leader_node(nodes, *g).is_some_and(|at| nodes[at].id() == *p))
    };
    wait_for("every partition led by its preferred replica", || {
        led_by_preferred(&nodes)
    })
    .await;
    for group in &groups {
        produce(&nodes, *group, "before").await;
    }

    // The preferred leader of partition 0 crashes: another replica takes over, and takes more.
    let at = nodes.iter().position(|n| n.id() == preferred[0]).unwrap();
    let (id, addr) = (nodes[at].id(), nodes[at].addr());
    nodes.remove(at).stop_unclean().await;
    let end = produce(&nodes, groups[0], "during").await;

    // Back, it catches up and is handed the leadership again, with nobody asking.
    let back = Node::start(eager(id, dirs[at].path(), addr)).await.unwrap();
    back.join(common::voters(nodes.iter().chain(std::iter::once(&back))))
        .await
        .unwrap();
    nodes.insert(at, back);
    wait_for("partition 0 led by its preferred replica again", || {
        led_by_preferred(&nodes)
    })
    .await;
    assert!(nodes[at].partition(groups[0]).unwrap().log_end_offset() > end);
    for node in nodes {
        node.stop().await;
    }
}
