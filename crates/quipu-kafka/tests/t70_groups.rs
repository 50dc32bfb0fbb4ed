//! Consumer groups through the Kafka listener, with real clients on a three-node cluster.
//! Committed offsets (`tests/clients/groups_client.py`): confluent-kafka (librdkafka),
//! kafka-python and aiokafka find their group's coordinator, commit offsets with metadata for
//! partitions they assigned themselves, read them back, and a second consumer of the group starts
//! at them; the offsets are checked again on the coordinator itself. Members
//! (`tests/clients/group_members.py`): two members of a group share a topic's partitions and
//! consume every record once between them; one leaves and the other takes its partitions; a new
//! member starts at the committed offsets.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use common::*;
use quipu_kafka::KafkaConfig;
use quipu_record::{BatchBuilder, Compression};

const PARTITIONS: usize = 3;

/// A topic of `partitions` partitions with ten records in each.
async fn fill(cluster: &Cluster, topic: &str, partitions: usize) {
    cluster
        .any()
        .create_topic(topic, partitions, 3)
        .await
        .unwrap();
    cluster.wait_for_leaders(topic).await;
    let groups: Vec<u64> = cluster.any().with_metadata(|m| {
        m.topic(topic)
            .unwrap()
            .partitions
            .iter()
            .map(|p| p.group)
            .collect()
    });
    for group in groups {
        let mut builder = BatchBuilder::new(0, Compression::None);
        for i in 0..10 {
            builder.push(
                1_700_000_000_000,
                None,
                Some(format!("r{i}").as_bytes()),
                &[],
            );
        }
        let leader = cluster
            .nodes
            .iter()
            .filter_map(|n| n.node.as_ref())
            .find_map(|n| {
                n.partition(quipu_node::GroupId(group))
                    .filter(|p| p.is_leader())
            })
            .unwrap();
        leader.produce(builder.build().unwrap()).await.unwrap();
    }
}

/// The offsets topic's partitions in these tests (the default 16 would cost startup time only),
/// and no initial rebalance delay.
fn cluster_config() -> quipu_node::GroupsConfig {
    quipu_node::GroupsConfig {
        offsets_partitions: 4,
        limits: quipu_node::GroupLimits {
            initial_rebalance_delay_ms: 0,
            ..quipu_node::GroupLimits::default()
        },
        consumer: quipu_node::ConsumerLimits {
            session_timeout_ms: 6_000,
            heartbeat_interval_ms: 500,
            ..quipu_node::ConsumerLimits::default()
        },
        ..quipu_node::GroupsConfig::default()
    }
}

async fn members(name: &str) {
    let python = python();
    let script = client_script("group_members.py");
    let cluster = Cluster::start_with(KafkaConfig::default(), cluster_config()).await;
    let topic = format!("{}-members", name.replace('-', ""));
    let group = format!("{name}-members");
    fill(&cluster, &topic, 4).await;
    let output = run(
        &python,
        &[&script, name, &cluster.bootstrap(), &topic, &group],
        None,
    )
    .await;
    let summary: serde_json::Value = serde_json::from_str(output.trim()).unwrap();
    let shared = summary["shared"].as_array().unwrap();
    assert_eq!(shared.len(), 2);
    assert_eq!(
        summary["first"], 40,
        "{name}: every record consumed by the two members"
    );
    assert_eq!(
        summary["second"], 60,
        "{name}: and the 20 produced after B left"
    );
    // C started at the committed offsets: only the last record, at offset 15 of partition 0
    // (10 + 5 of the 20 there).
    assert_eq!(
        summary["last"],
        serde_json::json!([[0, 15]]),
        "{name}: where C started"
    );
    if name.starts_with("confluent-kafka-consumer") {
        // KIP-848 member ids are the client's own (a base64 UUID); classic ones the
        // coordinator's (`{client.id}-{uuid}`).
        let id = summary["member_id"].as_str().unwrap();
        assert!(
            !id.starts_with(name),
            "{name}: member id {id} is a classic one"
        );
    } else {
        let id = summary["member_id"].as_str().unwrap_or(name);
        assert!(
            id.starts_with(name),
            "{name}: member id {id} is not a classic one"
        );
    }
    cluster.stop().await;
}

async fn client(name: &str) {
    let python = python();
    let script = client_script("groups_client.py");
    let cluster = Cluster::start_with(KafkaConfig::default(), cluster_config()).await;
    let topic = format!("{}-offsets", name.replace('-', ""));
    let group = format!("{name}-group");
    fill(&cluster, &topic, PARTITIONS).await;
    let output = run(
        &python,
        &[&script, name, &cluster.bootstrap(), &topic, &group],
        None,
    )
    .await;
    let summary: serde_json::Value = serde_json::from_str(output.trim()).unwrap();
    for (partition, offset) in [(0, 3), (1, 5), (2, 7)] {
        let key = partition.to_string();
        let metadata = format!("{name}-meta-{partition}");
        assert_eq!(
            summary["committed"][&key],
            serde_json::json!([offset, metadata]),
            "{name}: committed offset of partition {partition} as the client read it back"
        );
        assert_eq!(
            summary["resumed"][&key], offset,
            "{name}: where a new consumer of the group started in partition {partition}"
        );
    }
    // On the coordinator: the same offsets and metadata, in one group.
    let node = cluster.any();
    let coordinator = node.find_coordinator(&group).await.unwrap();
    let coordinator = cluster
        .nodes
        .iter()
        .filter_map(|n| n.node.as_ref())
        .find(|n| n.id() == coordinator.id)
        .unwrap();
    let offsets = coordinator.fetch_offsets(&group, None).await.unwrap();
    let held: Vec<(String, i32, i64, String)> = offsets
        .into_iter()
        .map(|o| {
            let value = o.value.unwrap();
            // confluent-kafka's Python binding sends the metadata string with its C terminator
            // (it reads it back without); the coordinator keeps the bytes it was sent.
            let metadata = value.metadata.trim_end_matches('\0').to_string();
            (o.topic, o.partition, value.offset, metadata)
        })
        .collect();
    let wanted: Vec<(String, i32, i64, String)> = [(0, 3), (1, 5), (2, 7)]
        .into_iter()
        .map(|(p, o)| (topic.clone(), p, o, format!("{name}-meta-{p}")))
        .collect();
    assert_eq!(held, wanted, "{name}: offsets on the coordinator");
    // The offsets topic is listed as internal, and clients cannot delete it.
    assert!(
        node.metadata().topic("__consumer_offsets").is_some(),
        "{name}: the offsets topic exists"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka() {
    client("confluent-kafka").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python() {
    client("kafka-python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiokafka() {
    client("aiokafka").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_members() {
    members("confluent-kafka").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_members() {
    members("kafka-python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiokafka_members() {
    members("aiokafka").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafkajs_members() {
    let (node_js, modules) = kafkajs();
    let script = client_script("kafkajs_members.js");
    let cluster = Cluster::start_with(KafkaConfig::default(), cluster_config()).await;
    fill(&cluster, "kafkajs-members", 4).await;
    let output = run_with_env(
        &node_js,
        &[
            &script,
            &cluster.bootstrap(),
            "kafkajs-members",
            "kafkajs-members",
        ],
        &[("NODE_PATH", &modules)],
    )
    .await;
    let summary: serde_json::Value = serde_json::from_str(output.trim()).unwrap();
    assert_eq!(
        summary["first"], 40,
        "kafkajs: every record consumed by the two members"
    );
    assert_eq!(
        summary["second"], 60,
        "kafkajs: and the 20 produced after B left"
    );
    assert_eq!(
        summary["last"],
        serde_json::json!([[0, 15]]),
        "kafkajs: where C started"
    );
    cluster.stop().await;
}

/// Produces `batch` to `group` on whichever running node leads it, retrying while there is no
/// leader (a failover).
async fn produce_retrying(cluster: &Cluster, group: u64, batch: bytes::Bytes) {
    let start = std::time::Instant::now();
    loop {
        let leader = cluster
            .nodes
            .iter()
            .filter_map(|n| n.node.as_ref())
            .find_map(|n| {
                n.partition(quipu_node::GroupId(group))
                    .filter(|p| p.is_leader())
            });
        if let Some(leader) = leader
            && leader.produce(batch.clone()).await.is_ok()
        {
            return;
        }
        assert!(start.elapsed() < PATIENCE, "no leader took the batch");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `group`'s committed offsets by partition, from its coordinator (`None` while there is none).
async fn committed_now(cluster: &Cluster, group: &str) -> Option<Vec<(i32, i64)>> {
    let any = cluster.any();
    let coordinator = any.find_coordinator(group).await.ok()?;
    let node = cluster
        .nodes
        .iter()
        .filter_map(|n| n.node.as_ref())
        .find(|n| n.id() == coordinator.id)?;
    let offsets = node.fetch_offsets(group, None).await.ok()?;
    Some(
        offsets
            .into_iter()
            .map(|o| (o.partition, o.value.map_or(-1, |v| v.offset)))
            .collect(),
    )
}

/// Samples the group's committed offsets into `highest`, checking that none went backwards.
async fn sample(cluster: &Cluster, highest: &mut std::collections::HashMap<i32, i64>) {
    if let Some(offsets) = committed_now(cluster, "failover-members").await {
        for (partition, offset) in offsets {
            let before = highest.entry(partition).or_insert(-1);
            assert!(
                offset >= *before,
                "partition {partition}: committed offset went from {before} back to {offset}"
            );
            *before = offset;
        }
    }
}

/// The coordinator of a group crashes (no handoff) while two confluent-kafka members consume
/// and commit: the group goes on with its new coordinator, every record is consumed, and no
/// committed offset ever goes backwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_goes_on_through_a_coordinator_crash() {
    const BATCHES: usize = 40;
    const PER_BATCH: usize = 10;
    let mut cluster = Cluster::start_with(KafkaConfig::default(), cluster_config()).await;
    cluster
        .any()
        .create_topic("failover-group", 4, 3)
        .await
        .unwrap();
    cluster.wait_for_leaders("failover-group").await;
    let groups: Vec<u64> = cluster.any().with_metadata(|m| {
        m.topic("failover-group")
            .unwrap()
            .partitions
            .iter()
            .map(|p| p.group)
            .collect()
    });
    let child = tokio::process::Command::new(python())
        .arg(client_script("group_failover.py"))
        .arg(cluster.bootstrap())
        .arg("failover-group")
        .arg("failover-members")
        .arg((BATCHES * PER_BATCH).to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut highest: std::collections::HashMap<i32, i64> = std::collections::HashMap::new();
    let mut crashed = None;
    for i in 0..BATCHES {
        let mut builder = BatchBuilder::new(0, Compression::None);
        for j in 0..PER_BATCH {
            builder.push(
                1_700_000_000_000,
                None,
                Some(format!("r{i}-{j}").as_bytes()),
                &[],
            );
        }
        produce_retrying(&cluster, groups[i % groups.len()], builder.build().unwrap()).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        sample(&cluster, &mut highest).await;
        if i == BATCHES / 2 {
            // Wait until the group has committed something, then crash its coordinator.
            let start = std::time::Instant::now();
            while highest.is_empty() {
                assert!(start.elapsed() < PATIENCE, "the group committed nothing");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                sample(&cluster, &mut highest).await;
            }
            let coordinator = cluster
                .any()
                .find_coordinator("failover-members")
                .await
                .unwrap();
            let at = cluster
                .nodes
                .iter()
                .position(|n| {
                    n.node
                        .as_ref()
                        .is_some_and(|node| node.id() == coordinator.id)
                })
                .unwrap();
            cluster.nodes[at].crash().await;
            crashed = Some(coordinator.id);
        }
    }
    let crashed = crashed.unwrap();
    let output = tokio::time::timeout(PATIENCE * 2, child.wait_with_output())
        .await
        .expect("the members finished in time")
        .unwrap();
    assert!(
        output.status.success(),
        "members failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(String::from_utf8(output.stdout).unwrap().trim()).unwrap();
    assert_eq!(
        summary["distinct"],
        BATCHES * PER_BATCH,
        "every record consumed"
    );
    // The new coordinator is another node, and it holds offsets at least as high as any seen.
    let coordinator = cluster
        .any()
        .find_coordinator("failover-members")
        .await
        .unwrap();
    assert_ne!(coordinator.id, crashed);
    let last = committed_now(&cluster, "failover-members").await.unwrap();
    for (partition, offset) in last {
        assert!(offset >= highest.get(&partition).copied().unwrap_or(-1));
    }
    eprintln!("{summary} (coordinator {crashed} crashed)");
    cluster.stop().await;
}

/// confluent-kafka's AdminClient lists, describes and deletes groups and reads and alters their
/// offsets; kafka-python's deletes offsets (OffsetDelete).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_admin() {
    let cluster = Cluster::start_with(KafkaConfig::default(), cluster_config()).await;
    fill(&cluster, "admin-topic", 2).await;
    let output = run(
        &python(),
        &[
            &client_script("group_admin.py"),
            &cluster.bootstrap(),
            "admin-topic",
        ],
        None,
    )
    .await;
    let summary: serde_json::Value = serde_json::from_str(output.trim()).unwrap();
    assert_eq!(summary["listed"]["admin-members"], "STABLE", "{summary}");
    assert_eq!(summary["listed"]["admin-simple"], "EMPTY", "{summary}");
    assert_eq!(
        summary["described"],
        serde_json::json!({"state": "STABLE", "members": [{"client_id": "the-member", "partitions": [0, 1]}]})
    );
    assert_eq!(
        summary["simple_offsets"],
        serde_json::json!([[0, 4], [1, 6]])
    );
    assert_eq!(
        summary["altered_offsets"],
        serde_json::json!([[0, 9], [1, 6]])
    );
    assert_eq!(
        summary["offset_delete_live"],
        serde_json::json!(["GroupSubscribedToTopicError"])
    );
    assert_eq!(
        summary["offset_delete_simple"],
        serde_json::json!(["NoError"])
    );
    assert_eq!(summary["after_offset_delete"], serde_json::json!([[0, 9]]));
    assert_eq!(summary["delete_live"], "NON_EMPTY_GROUP");
    assert_eq!(summary["delete_again"], "GROUP_ID_NOT_FOUND");
    let after: Vec<&str> = summary["listed_after"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    assert!(
        !after.contains(&"admin-members") && !after.contains(&"admin-simple"),
        "{after:?}"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_kip848_members() {
    members("confluent-kafka-consumer").await;
}

/// kcat's balanced consumer (`-G`, librdkafka 2.0.2 from Debian) reads every record of a topic
/// as a member of a group, and commits what it read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_balanced_consumer() {
    let kcat = require("kcat", "install Debian's kcat (apt-get install kcat)");
    let cluster = Cluster::start_with(KafkaConfig::default(), cluster_config()).await;
    fill(&cluster, "kcat-group-topic", 2).await;
    let output = run(
        &kcat,
        &[
            "-b",
            &cluster.bootstrap(),
            "-G",
            "kcat-readers",
            "kcat-group-topic",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%p %o\n",
        ],
        None,
    )
    .await;
    let mut seen: Vec<&str> = output.lines().collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 20, "{output}");
    // kcat commits on leaving: both partitions at their end.
    let node = cluster.any();
    let coordinator = node.find_coordinator("kcat-readers").await.unwrap();
    let coordinator = cluster
        .nodes
        .iter()
        .filter_map(|n| n.node.as_ref())
        .find(|n| n.id() == coordinator.id)
        .unwrap();
    let committed: Vec<i64> = coordinator
        .fetch_offsets("kcat-readers", None)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.value.unwrap().offset)
        .collect();
    assert_eq!(committed, [10, 10]);
    cluster.stop().await;
}

/// Starts one member of `group` (`group_members.py ... member NAME`), whose output lines are its
/// assignments as they change.
fn spawn_member(
    client: &str,
    bootstrap: &str,
    topic: &str,
    group: &str,
    name: &str,
) -> (
    tokio::process::Child,
    tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) {
    use tokio::io::AsyncBufReadExt;
    let mut command = if client == "kafkajs" {
        let (node, modules) = kafkajs();
        let mut command = tokio::process::Command::new(node);
        command
            .arg(client_script("kafkajs_members.js"))
            .args([bootstrap, topic, group, "member", name])
            .env("NODE_PATH", modules);
        command
    } else {
        let mut command = tokio::process::Command::new(python());
        command
            .arg(client_script("group_members.py"))
            .args([client, bootstrap, topic, group, "member", name]);
        command
    };
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

/// Reads a member's output until an assignment it reports (`parse`: a line's assignment, if it
/// tells one) satisfies `done` (bounded by [`PATIENCE`]).
async fn until_reported<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    parse: impl Fn(&str) -> Option<Vec<u64>>,
    done: impl Fn(&[u64]) -> bool,
) -> Vec<u64> {
    let read = async {
        loop {
            let line = lines.next_line().await.unwrap().expect("the member ended");
            if let Some(assigned) = parse(&line)
                && done(&assigned)
            {
                return assigned;
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("the assignment came in time")
}

/// A script member's assignments: one JSON list per line.
async fn until_assigned<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    done: impl Fn(&[u64]) -> bool,
) -> Vec<u64> {
    until_reported(
        lines,
        |line| Some(serde_json::from_str(line).unwrap()),
        done,
    )
    .await
}

/// Two members share a topic; one is killed (SIGKILL: it never leaves); after its session
/// times out the survivor gets every partition.
async fn killed_member(client: &str) {
    let cluster = Cluster::start_with(KafkaConfig::default(), cluster_config()).await;
    let topic = format!("{}-killed", client.replace('-', ""));
    let group = format!("{client}-killed");
    fill(&cluster, &topic, 4).await;
    let bootstrap = cluster.bootstrap();
    let (_a, mut a) = spawn_member(client, &bootstrap, &topic, &group, "a");
    until_assigned(&mut a, |p| p.len() == 4).await;
    let (mut b_child, mut b) = spawn_member(client, &bootstrap, &topic, &group, "b");
    let b_share = until_assigned(&mut b, |p| !p.is_empty() && p.len() < 4).await;
    until_assigned(&mut a, |p| p.len() + b_share.len() == 4).await;
    b_child.kill().await.unwrap();
    let killed = std::time::Instant::now();
    until_assigned(&mut a, |p| p.len() == 4).await;
    let after = killed.elapsed();
    // Not before the session timeout (6 s) ran out: the killed member never left.
    assert!(
        after >= std::time::Duration::from_secs(4),
        "{client}: partitions moved {after:?} after the kill, before the session timeout"
    );
    eprintln!("{client}: the killed member's partitions moved after {after:?}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_killed_member() {
    killed_member("confluent-kafka").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_kip848_killed_member() {
    killed_member("confluent-kafka-consumer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_killed_member() {
    killed_member("kafka-python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiokafka_killed_member() {
    killed_member("aiokafka").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafkajs_killed_member() {
    killed_member("kafkajs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_cooperative_sticky_members() {
    members("confluent-kafka-cooperative").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_kip848_range_members() {
    members("confluent-kafka-consumer-range").await;
}

/// A static member (`group.instance.id`) killed and started again within its session timeout
/// gets its partitions back without a rebalance: the other member's never change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_static_member_comes_back_to_its_partitions() {
    let client = "confluent-kafka-static";
    let cluster = Cluster::start_with(KafkaConfig::default(), cluster_config()).await;
    fill(&cluster, "static-topic", 4).await;
    let bootstrap = cluster.bootstrap();
    let (_a, mut a) = spawn_member(client, &bootstrap, "static-topic", "static-group", "a");
    until_assigned(&mut a, |p| p.len() == 4).await;
    let (mut b_child, mut b) =
        spawn_member(client, &bootstrap, "static-topic", "static-group", "b");
    let b_share = until_assigned(&mut b, |p| !p.is_empty() && p.len() < 4).await;
    let a_share = until_assigned(&mut a, |p| p.len() + b_share.len() == 4).await;
    b_child.kill().await.unwrap();
    let (_b_again, mut b_again) =
        spawn_member(client, &bootstrap, "static-topic", "static-group", "b");
    let back = until_assigned(&mut b_again, |p| !p.is_empty()).await;
    assert_eq!(
        back, b_share,
        "the static member got its own partitions back"
    );
    // A's assignment did not change meanwhile: no line after its share.
    let more = tokio::time::timeout(std::time::Duration::from_secs(2), a.next_line()).await;
    assert!(
        more.is_err(),
        "a's assignment changed: {more:?} (it held {a_share:?})"
    );
    cluster.stop().await;
}

/// confluent-kafka's AdminClient describes a KIP-848 group (ConsumerGroupDescribe): its type,
/// state and each member's partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_describes_a_kip848_group() {
    let client = "confluent-kafka-consumer";
    let cluster = Cluster::start_with(KafkaConfig::default(), cluster_config()).await;
    fill(&cluster, "described-topic", 4).await;
    let bootstrap = cluster.bootstrap();
    let (_a, mut a) = spawn_member(client, &bootstrap, "described-topic", "described", "a");
    until_assigned(&mut a, |p| p.len() == 4).await;
    let output = run(
        &python(),
        &[&client_script("describe_group.py"), &bootstrap, "described"],
        None,
    )
    .await;
    let described: serde_json::Value = serde_json::from_str(output.trim()).unwrap();
    assert_eq!(described["type"], "CONSUMER", "{described}");
    assert_eq!(described["state"], "STABLE", "{described}");
    assert_eq!(
        described["members"],
        serde_json::json!([{"client_id": "confluent-kafka-consumer-a", "partitions": [0, 1, 2, 3]}])
    );
    cluster.stop().await;
}

/// A kcat balanced consumer (`-G`) as a group member: its assignments, parsed from what it says
/// on standard error ("% Group ... rebalanced ... assigned: topic [0], topic [2]").
fn spawn_kcat_member(
    bootstrap: &str,
    topic: &str,
    group: &str,
) -> (
    tokio::process::Child,
    tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
) {
    use tokio::io::AsyncBufReadExt;
    let kcat = require("kcat", "install Debian's kcat (apt-get install kcat)");
    let mut child = tokio::process::Command::new(kcat)
        .args([
            "-b",
            bootstrap,
            "-G",
            group,
            topic,
            "-X",
            "session.timeout.ms=6000",
            "-X",
            "heartbeat.interval.ms=500",
            "-o",
            "beginning",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    (child, lines)
}

/// kcat's assignments, from its messages ("... assigned: topic [0], topic [2]"; a revocation
/// leaves it holding nothing).
async fn until_kcat_assigned<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    done: impl Fn(&[u64]) -> bool,
) -> Vec<u64> {
    let parse = |line: &str| {
        if let Some((_, assigned)) = line.split_once("assigned:") {
            return Some(
                assigned
                    .split('[')
                    .skip(1)
                    .filter_map(|p| p.split(']').next()?.trim().parse().ok())
                    .collect(),
            );
        }
        line.contains("revoked").then(Vec::new)
    };
    until_reported(lines, parse, done).await
}

/// kcat balanced consumers share a topic, a third joins, one leaves (SIGINT) and one is killed:
/// each time the partitions move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_members_share_and_take_over() {
    let cluster = Cluster::start_with(KafkaConfig::default(), cluster_config()).await;
    fill(&cluster, "kcat-members", 4).await;
    let bootstrap = cluster.bootstrap();
    let (_a_child, mut a) = spawn_kcat_member(&bootstrap, "kcat-members", "kcat-members");
    until_kcat_assigned(&mut a, |p| p.len() == 4).await;
    let (mut b_child, mut b) = spawn_kcat_member(&bootstrap, "kcat-members", "kcat-members");
    let b_share = until_kcat_assigned(&mut b, |p| p.len() == 2).await;
    let a_share = until_kcat_assigned(&mut a, |p| p.len() == 2).await;
    assert!(
        a_share.iter().all(|p| !b_share.contains(p)),
        "{a_share:?} {b_share:?}"
    );
    // One leaves (kcat leaves its group on SIGINT): a takes everything again.
    let pid = b_child.id().unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(i32::try_from(pid).unwrap()).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    until_kcat_assigned(&mut a, |p| p.len() == 4).await;
    let _ = b_child.wait().await;
    // Another joins, then is killed: after its session timeout a has everything again.
    let (mut c_child, mut c) = spawn_kcat_member(&bootstrap, "kcat-members", "kcat-members");
    until_kcat_assigned(&mut c, |p| p.len() == 2).await;
    until_kcat_assigned(&mut a, |p| p.len() == 2).await;
    c_child.kill().await.unwrap();
    let killed = std::time::Instant::now();
    until_kcat_assigned(&mut a, |p| p.len() == 4).await;
    assert!(killed.elapsed() >= std::time::Duration::from_secs(4));
    cluster.stop().await;
}
