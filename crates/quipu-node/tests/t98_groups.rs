//! The consumer group coordinator on a three-node cluster: the offsets topic is created on first
//! use and closed to clients; offsets are committed through the leader of the group's offsets
//! partition and read back linearizably; other nodes refuse as "not coordinator"; and after the
//! coordinator crashes, its successor has every committed offset.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use std::time::{Duration, Instant};

use common::*;
use quipu_groups::GroupError;
use quipu_node::{
    CommitRefused, ControllerError, CoordinatorError, GroupId, GroupsConfig, JoinGroup, Node,
    OffsetCommit, ProduceError,
};

const OFFSETS_PARTITIONS: usize = 4;

async fn start_cluster(dirs: &[tempfile::TempDir]) -> Vec<Node> {
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let mut config = config(
            i as u64 + 1,
            dir.path(),
            "127.0.0.1:0".parse().unwrap(),
            small_log(),
        );
        config.groups = GroupsConfig {
            offsets_partitions: OFFSETS_PARTITIONS,
            limits: quipu_node::GroupLimits {
                initial_rebalance_delay_ms: 100,
                ..quipu_node::GroupLimits::default()
            },
            ..GroupsConfig::default()
        };
        nodes.push(Node::start(config).await.unwrap());
    }
    let voters = voters(&nodes);
    for node in &nodes {
        node.join(voters.clone()).await.unwrap();
    }
    wait_for("a controller leader that registered every node", || {
        nodes
            .iter()
            .all(|n| n.metadata().nodes().count() == 3 && n.controller_leader().is_some())
    })
    .await;
    nodes
}

/// The index in `nodes` of `group`'s coordinator, asking `nodes[ask]` until one is known.
async fn coordinator(nodes: &[Node], ask: usize, group: &str) -> usize {
    let start = Instant::now();
    loop {
        match nodes[ask].find_coordinator(group).await {
            Ok(info) => {
                if let Some(at) = nodes.iter().position(|n| n.id() == info.id) {
                    return at;
                }
            }
            Err(CoordinatorError::NotAvailable(_)) => {}
            Err(e) => panic!("find_coordinator: {e}"),
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no coordinator");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn commit(topic: &str, partition: i32, offset: i64, metadata: &str) -> OffsetCommit {
    OffsetCommit {
        topic: topic.to_string(),
        partition,
        offset,
        leader_epoch: 2,
        metadata: metadata.to_string(),
    }
}

/// Runs `call` on `group`'s coordinator and returns its index in `nodes` with the answer,
/// finding the coordinator again while it moves, loads or is not there yet (as clients do);
/// any other error fails the test.
async fn on_coordinator<'n, T, Fut>(
    nodes: &'n [Node],
    group: &str,
    what: &str,
    call: impl Fn(&'n Node) -> Fut,
) -> (usize, T)
where
    Fut: std::future::Future<Output = Result<T, CoordinatorError>>,
{
    let start = Instant::now();
    loop {
        let at = coordinator(nodes, 0, group).await;
        match call(&nodes[at]).await {
            Ok(value) => return (at, value),
            Err(
                CoordinatorError::NotCoordinator { .. }
                | CoordinatorError::Loading { .. }
                | CoordinatorError::NotAvailable(_),
            ) => {}
            Err(e) => panic!("{what}: {e}"),
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Commits on the group's coordinator, finding it again while it moves or loads.
async fn commit_retrying(nodes: &[Node], group: &str, offsets: &[OffsetCommit]) {
    let (_, results) = on_coordinator(nodes, group, "commit", |node| {
        node.commit_offsets(group, -1, "", None, offsets)
    })
    .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}

/// The offsets `group` committed, as `(topic, partition, offset, metadata)`, from its
/// coordinator.
async fn committed(nodes: &[Node], group: &str) -> Vec<(String, i32, i64, String)> {
    let (_, offsets) = on_coordinator(nodes, group, "fetch", |node| {
        node.fetch_offsets(group, None)
    })
    .await;
    offsets
        .into_iter()
        .map(|o| {
            let value = o.value.unwrap();
            (o.topic, o.partition, value.offset, value.metadata)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_committed_through_the_coordinator_and_survive_its_crash() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = start_cluster(&dirs).await;
    assert!(nodes[0].metadata().topic("__consumer_offsets").is_none());

    // The first FindCoordinator creates the offsets topic: 4 partitions, 3 replicas each.
    let at = coordinator(&nodes, 1, "orders-app").await;
    let topic = nodes[0]
        .metadata()
        .topic("__consumer_offsets")
        .cloned()
        .unwrap();
    assert_eq!(topic.partitions.len(), OFFSETS_PARTITIONS);
    assert!(topic.partitions.iter().all(|p| p.replicas.len() == 3));
    // Every node names the same coordinator.
    for ask in 0..3 {
        assert_eq!(coordinator(&nodes, ask, "orders-app").await, at);
    }

    // Commits: one refused for its metadata, the others committed. (A new partition's first
    // leader may still be deposed by a replica that started late: clients find the coordinator
    // again on NOT_COORDINATOR, and so does this test.)
    let offsets = [
        commit("orders", 0, 10, "first"),
        commit("orders", 1, 20, &"m".repeat(5000)),
        commit("orders", 2, 30, ""),
        commit("orders", 3, -4, ""),
    ];
    let (at, results) = on_coordinator(&nodes, "orders-app", "commit", |node| {
        node.commit_offsets("orders-app", -1, "", None, &offsets)
    })
    .await;
    assert_eq!(results[0], Ok(()));
    assert!(matches!(
        results[1],
        Err(CommitRefused::MetadataTooLarge { len: 5000, .. })
    ));
    assert_eq!(results[2], Ok(()));
    assert!(matches!(results[3], Err(CommitRefused::Invalid { .. })));

    // The other nodes are not its coordinator.
    for other in (0..3).filter(|i| *i != at) {
        assert!(matches!(
            nodes[other]
                .commit_offsets("orders-app", -1, "", None, &[commit("orders", 0, 11, "")])
                .await,
            Err(CoordinatorError::NotCoordinator { .. })
        ));
        assert!(matches!(
            nodes[other].fetch_offsets("orders-app", None).await,
            Err(CoordinatorError::NotCoordinator { .. })
        ));
    }
    // A commit for a generation the group never had is refused, nothing written.
    assert!(matches!(
        nodes[at]
            .commit_offsets(
                "orders-app",
                3,
                "member-1",
                None,
                &[commit("orders", 0, 99, "")]
            )
            .await,
        Err(CoordinatorError::Group(GroupError::IllegalGeneration {
            asked: 3,
            ..
        }))
    ));
    assert!(matches!(
        nodes[at].commit_offsets("", -1, "", None, &[]).await,
        Err(CoordinatorError::InvalidGroupId)
    ));

    // Read back: every committed offset, and "none" for a partition never committed.
    assert_eq!(
        committed(&nodes, "orders-app").await,
        vec![
            ("orders".to_string(), 0, 10, "first".to_string()),
            ("orders".to_string(), 2, 30, String::new()),
        ]
    );
    let asked = [("orders".to_string(), 2), ("orders".to_string(), 7)];
    let some = nodes[at]
        .fetch_offsets("orders-app", Some(&asked))
        .await
        .unwrap();
    assert_eq!(some[0].value.as_ref().unwrap().offset, 30);
    assert_eq!(some[0].value.as_ref().unwrap().leader_epoch, 2);
    assert!(some[1].value.is_none());

    // Clients cannot write to, create, grow or delete the offsets topic.
    let offsets_group = GroupId(topic.partitions[0].group);
    // (Refused on any replica, before anything else is checked.)
    wait_for("a replica of the offsets partition", || {
        nodes[0].partition(offsets_group).is_some()
    })
    .await;
    let replica = nodes[0].partition(offsets_group).unwrap();
    assert!(matches!(
        replica.produce(batch("forged")).await,
        Err(ProduceError::InternalTopic { .. })
    ));
    assert!(matches!(
        nodes[0].create_topic("__consumer_offsets", 1, 1).await,
        Err(ControllerError::InternalTopic(_))
    ));
    assert!(matches!(
        nodes[0].delete_topic("__consumer_offsets").await,
        Err(ControllerError::InternalTopic(_))
    ));
    assert!(matches!(
        nodes[0].add_partitions("__consumer_offsets", 1).await,
        Err(ControllerError::InternalTopic(_))
    ));

    // The coordinator crashes: its successor has every committed offset, and takes new ones.
    let addr = nodes[at].addr();
    let id = nodes[at].id();
    nodes.remove(at).stop_unclean().await;
    assert_eq!(
        committed(&nodes, "orders-app").await,
        vec![
            ("orders".to_string(), 0, 10, "first".to_string()),
            ("orders".to_string(), 2, 30, String::new()),
        ]
    );
    commit_retrying(&nodes, "orders-app", &[commit("orders", 0, 15, "second")]).await;

    // Back again, the crashed node's replica catches up: whichever node leads has the newest.
    let dir = dirs[usize::try_from(id - 1).unwrap()].path();
    let back = restart(&nodes, id, dir, addr, small_log()).await;
    nodes.push(back);
    wait_for(
        "the restarted node's replica of the group's partition",
        || {
            let at = nodes.len() - 1;
            nodes[at].partition(offsets_group).is_some()
        },
    )
    .await;
    assert_eq!(
        committed(&nodes, "orders-app").await,
        vec![
            ("orders".to_string(), 0, 15, "second".to_string()),
            ("orders".to_string(), 2, 30, String::new()),
        ]
    );
    for node in nodes {
        node.stop().await;
    }
}

fn join_request(member: &str) -> JoinGroup {
    JoinGroup {
        member_id: member.to_string(),
        instance_id: None,
        client_id: "t98".to_string(),
        client_host: "/127.0.0.1".to_string(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        protocol_type: "consumer".to_string(),
        protocols: vec![("range".to_string(), b"subscription".to_vec())],
        require_known_member_id: false,
    }
}

/// A group's generation is written when it completes: after its coordinator crashes, the new
/// one knows the members, their generation and their assignments, so they go on without
/// rejoining; a member of an older generation is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stable_group_survives_its_coordinator_crash() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = start_cluster(&dirs).await;
    let group = "members-app";
    // One member forms the group (no initial delay to wait for past the first join: the
    // barrier completes once the delay passes, so give it a moment).
    let (at, joined) = on_coordinator(&nodes, group, "join", |node| {
        node.join_group(group, join_request(""))
    })
    .await;
    assert_eq!(joined.error, None, "join refused");
    assert_eq!(joined.generation, 1);
    assert_eq!(joined.leader, joined.member_id);
    let synced = nodes[at]
        .sync_group(
            group,
            &joined.member_id,
            None,
            1,
            vec![(joined.member_id.clone(), b"orders-0".to_vec())],
        )
        .await
        .unwrap();
    assert_eq!(synced.assignment, b"orders-0");
    // The sync was answered once generation 1 was committed: every replica holds it.
    let offsets_group = {
        let topic = nodes[0]
            .metadata()
            .topic("__consumer_offsets")
            .cloned()
            .unwrap();
        let count = u32::try_from(topic.partitions.len()).unwrap();
        GroupId(topic.partitions[quipu_groups::partition_for_group(group, count) as usize].group)
    };
    wait_for("every replica to hold generation 1", || {
        nodes.iter().all(|n| {
            n.partition(offsets_group).is_some_and(|p| {
                p.with_groups(|s| s.metadata(group).map(|m| m.generation)) == Some(Some(1))
            })
        })
    })
    .await;

    nodes.remove(at).stop_unclean().await;
    // The new coordinator knows the member, its generation and its assignment.
    let (at, ()) = on_coordinator(&nodes, group, "heartbeat at the new coordinator", |node| {
        node.heartbeat(group, &joined.member_id, None, 1)
    })
    .await;
    let again = nodes[at]
        .sync_group(group, &joined.member_id, None, 1, Vec::new())
        .await
        .unwrap();
    assert_eq!(again.assignment, b"orders-0");
    assert!(matches!(
        nodes[at].heartbeat(group, &joined.member_id, None, 0).await,
        Err(CoordinatorError::Group(
            GroupError::IllegalGeneration { .. }
        ))
    ));
    for node in nodes {
        node.stop().await;
    }
}

/// Committed offsets and a group's metadata survive a restart of the whole cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_a_restart_of_every_node() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = start_cluster(&dirs).await;
    commit_retrying(&nodes, "restart-app", &[commit("orders", 0, 42, "kept")]).await;
    let addrs: Vec<std::net::SocketAddr> = nodes.iter().map(|n| n.addr()).collect();
    for node in nodes {
        node.stop().await;
    }
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let mut config = config(i as u64 + 1, dir.path(), addrs[i], small_log());
        config.groups = GroupsConfig {
            offsets_partitions: OFFSETS_PARTITIONS,
            ..GroupsConfig::default()
        };
        nodes.push(Node::start(config).await.unwrap());
    }
    let voters = voters(&nodes);
    for node in &nodes {
        node.join(voters.clone()).await.unwrap();
    }
    assert_eq!(
        committed(&nodes, "restart-app").await,
        vec![("orders".to_string(), 0, 42, "kept".to_string())]
    );
    for node in nodes {
        node.stop().await;
    }
}

/// A KIP-848 group's state is written before heartbeats are answered: after its coordinator
/// crashes, the new one knows its member at its epoch, holding its partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kip848_group_survives_its_coordinator_crash() {
    use quipu_groups::consumer::{Assignment, Heartbeat};
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = start_cluster(&dirs).await;
    let leader = nodes
        .iter()
        .find(|n| n.controller_leader() == Some(n.id()))
        .unwrap();
    leader.create_topic("clicks", 2, 3).await.unwrap();
    let group = "kip848-app";
    let join = Heartbeat {
        member_id: "member-1".into(),
        member_epoch: 0,
        rebalance_timeout_ms: 10_000,
        subscribed_topics: Some(vec!["clicks".into()]),
        owned: Some(Assignment::new()),
        ..Heartbeat::default()
    };
    let (at, (joined, _)) = on_coordinator(&nodes, group, "join", |node| {
        node.consumer_heartbeat(group, join.clone())
    })
    .await;
    let assigned = joined.assignment.clone().unwrap();
    assert_eq!(assigned["clicks"].len(), 2);

    nodes.remove(at).stop_unclean().await;
    let beat = Heartbeat {
        member_id: "member-1".into(),
        member_epoch: joined.member_epoch,
        rebalance_timeout_ms: -1,
        owned: Some(assigned.clone()),
        ..Heartbeat::default()
    };
    // (An unknown member here would fail the test: the new coordinator must know it.)
    let (_, (reply, _)) =
        on_coordinator(&nodes, group, "heartbeat at the new coordinator", |node| {
            node.consumer_heartbeat(group, beat.clone())
        })
        .await;
    assert_eq!(reply.member_epoch, joined.member_epoch);
    for node in nodes {
        node.stop().await;
    }
}

/// A group is one protocol at a time: a KIP-848 heartbeat for a group with classic members
/// gets the classic-group refusal (Kafka's GROUP_ID_NOT_FOUND), and a JoinGroup for a group with
/// KIP-848 members INCONSISTENT_GROUP_PROTOCOL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_is_one_protocol_at_a_time() {
    use quipu_groups::consumer::{Assignment, ConsumerError, Heartbeat};
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = start_cluster(&dirs).await;
    let leader = nodes
        .iter()
        .find(|n| n.controller_leader() == Some(n.id()))
        .unwrap();
    leader.create_topic("clicks", 2, 3).await.unwrap();
    let kip848 = |member: &str| Heartbeat {
        member_id: member.into(),
        member_epoch: 0,
        rebalance_timeout_ms: 10_000,
        subscribed_topics: Some(vec!["clicks".into()]),
        owned: Some(Assignment::new()),
        ..Heartbeat::default()
    };
    // A classic group with a member...
    let (at, reply) = on_coordinator(&nodes, "classic-app", "join", |node| {
        node.join_group("classic-app", join_request(""))
    })
    .await;
    assert_eq!(reply.error, None, "join refused");
    assert!(matches!(
        nodes[at]
            .consumer_heartbeat("classic-app", kip848("m"))
            .await,
        Err(CoordinatorError::Consumer(ConsumerError::ClassicGroup))
    ));
    // ... and a KIP-848 group with one.
    let (at, _) = on_coordinator(&nodes, "kip848-app", "heartbeat", |node| {
        node.consumer_heartbeat("kip848-app", kip848("m"))
    })
    .await;
    let refused = nodes[at]
        .join_group("kip848-app", join_request(""))
        .await
        .unwrap();
    assert_eq!(refused.error, Some(GroupError::InconsistentGroupProtocol));
    for node in nodes {
        node.stop().await;
    }
}

/// A group whose only member left, with a member id still pending (handed out with
/// MEMBER_ID_REQUIRED, not joined with), is described as Empty and can be deleted, as in Kafka;
/// the pending id goes with it. (A group with a member cannot be.) confluent-kafka's admin test
/// found a delete refused as NON_EMPTY_GROUP right after a describe said Empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_with_only_a_pending_member_id_can_be_deleted() {
    use quipu_node::DeleteGroupError;
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = start_cluster(&dirs).await;
    let group = "pending-app";
    let (at, joined) = on_coordinator(&nodes, group, "join", |node| {
        node.join_group(group, join_request(""))
    })
    .await;
    assert_eq!(joined.error, None, "join refused");
    nodes[at]
        .sync_group(
            group,
            &joined.member_id,
            None,
            joined.generation,
            vec![(joined.member_id.clone(), b"a".to_vec())],
        )
        .await
        .unwrap();
    assert!(matches!(
        nodes[at].delete_group(group).await,
        Err(DeleteGroupError::NotEmpty)
    ));
    // A second client asks to join and is handed a member id to join with (pending)...
    let asked = nodes[at]
        .join_group(
            group,
            JoinGroup {
                require_known_member_id: true,
                ..join_request("")
            },
        )
        .await
        .unwrap();
    let Some(GroupError::MemberIdRequired(pending)) = asked.error else {
        panic!("no member id handed out: {:?}", asked.error);
    };
    // ... and the member leaves.
    let left = nodes[at]
        .leave_group(group, &[(joined.member_id.clone(), None)])
        .await
        .unwrap();
    assert!(left.iter().all(Result::is_ok), "{left:?}");
    let described = nodes[at].describe_group(group).await.unwrap().unwrap();
    assert_eq!(described.state, "Empty");
    assert!(described.members.is_empty());
    nodes[at].delete_group(group).await.unwrap();
    // The pending id went with the group.
    let late = nodes[at]
        .join_group(group, join_request(&pending))
        .await
        .unwrap();
    assert_eq!(late.error, Some(GroupError::UnknownMemberId));
    for node in nodes {
        node.stop().await;
    }
}
