//! A three-node cluster in this process, each node with a Kafka listener on 127.0.0.1, for the
//! tests that drive it with real Kafka clients.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;
use std::time::{Duration, Instant};

use quipu_kafka::KafkaConfig;
use quipu_node::{Node, NodeConfig};

/// How long a test waits for a condition before failing (a bound, not a synchronisation).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A running node with its Kafka listener.
pub struct KafkaNode {
    pub node: Option<Node>,
    pub kafka_addr: String,
    pub dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    listener: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl KafkaNode {
    /// Stops the listener and the node gracefully (leaderships handed over, logs closed).
    pub async fn stop(&mut self) {
        self.stop_listener().await;
        if let Some(node) = self.node.take() {
            node.stop().await;
        }
    }

    /// Stops the listener and the node as a crash would: no handover, logs not closed.
    pub async fn crash(&mut self) {
        self.stop_listener().await;
        if let Some(node) = self.node.take() {
            node.stop_unclean().await;
        }
    }

    async fn stop_listener(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(listener) = self.listener.take() {
            let _ = listener.await;
        }
    }
}

/// The cluster: nodes, and the temporary directories they keep their data in.
pub struct Cluster {
    pub nodes: Vec<KafkaNode>,
    _dirs: Vec<tempfile::TempDir>,
    /// What a test changes in every node's configuration, nodes added later too.
    tune: fn(NodeConfig) -> NodeConfig,
}

impl KafkaNode {
    /// Node `id` in `dir` with its Kafka listener, not a member of any cluster yet.
    async fn start(
        id: u64,
        dir: &std::path::Path,
        config: &KafkaConfig,
        groups: quipu_node::GroupsConfig,
        authorization: &quipu_node::AuthorizationConfig,
        tune: fn(NodeConfig) -> NodeConfig,
    ) -> KafkaNode {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let kafka_addr = listener.local_addr().unwrap().to_string();
        let node = Node::start(tune(NodeConfig {
            kafka_addr: Some(kafka_addr.clone()),
            groups,
            authorization: authorization.clone(),
            ..NodeConfig::new(id, dir.to_path_buf(), "127.0.0.1:0".parse().unwrap())
        }))
        .await
        .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let listener = tokio::spawn(quipu_kafka::serve(
            node.handle(),
            listener,
            config.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        KafkaNode {
            node: Some(node),
            kafka_addr,
            dir: dir.to_path_buf(),
            stop: Some(stop),
            listener: Some(listener),
        }
    }
}

impl Cluster {
    /// Three nodes joined in one cluster, every one registered with its Kafka address.
    pub async fn start(config: KafkaConfig) -> Cluster {
        Cluster::start_with(config, quipu_node::GroupsConfig::default()).await
    }

    /// [`Cluster::start`] with the nodes' consumer group settings.
    pub async fn start_with(config: KafkaConfig, groups: quipu_node::GroupsConfig) -> Cluster {
        Cluster::start_nodes(
            config,
            groups,
            quipu_node::AuthorizationConfig::default(),
            |c| c,
        )
        .await
    }

    /// [`Cluster::start`] with `tune` applied to every node's configuration (nodes added later
    /// too).
    pub async fn start_tuned(config: KafkaConfig, tune: fn(NodeConfig) -> NodeConfig) -> Cluster {
        Cluster::start_nodes(
            config,
            quipu_node::GroupsConfig::default(),
            quipu_node::AuthorizationConfig::default(),
            tune,
        )
        .await
    }

    /// [`Cluster::start`] with access control on the nodes.
    pub async fn start_authorized(
        config: KafkaConfig,
        authorization: quipu_node::AuthorizationConfig,
    ) -> Cluster {
        Cluster::start_nodes(
            config,
            quipu_node::GroupsConfig::default(),
            authorization,
            |c| c,
        )
        .await
    }

    async fn start_nodes(
        config: KafkaConfig,
        groups: quipu_node::GroupsConfig,
        authorization: quipu_node::AuthorizationConfig,
        tune: fn(NodeConfig) -> NodeConfig,
    ) -> Cluster {
        let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut nodes = Vec::new();
        for (i, dir) in dirs.iter().enumerate() {
            let id = i as u64 + 1;
            nodes.push(
                KafkaNode::start(id, dir.path(), &config, groups, &authorization, tune).await,
            );
        }
        let voters: Vec<(u64, String)> = nodes
            .iter()
            .map(|n| {
                let node = n.node.as_ref().unwrap();
                (node.id(), node.addr().to_string())
            })
            .collect();
        for n in &nodes {
            n.node.as_ref().unwrap().join(voters.clone()).await.unwrap();
        }
        let cluster = Cluster {
            nodes,
            _dirs: dirs,
            tune,
        };
        cluster
            .wait_for("every node registered with its Kafka address", |c| {
                c.nodes.iter().all(|n| {
                    n.node.as_ref().is_some_and(|node| {
                        node.metadata()
                            .nodes()
                            .filter(|info| !info.kafka_addr.is_empty())
                            .count()
                            == 3
                    })
                })
            })
            .await;
        cluster
    }

    /// Starts one more node, joined through the first, once it registered.
    pub async fn add_node(&mut self, config: KafkaConfig) {
        let dir = tempfile::tempdir().unwrap();
        let id = self.nodes.len() as u64 + 1;
        let node = KafkaNode::start(
            id,
            dir.path(),
            &config,
            quipu_node::GroupsConfig::default(),
            &quipu_node::AuthorizationConfig::default(),
            self.tune,
        )
        .await;
        let seed = self.any().addr().to_string();
        let joined = node.node.as_ref().unwrap();
        joined.join_through(&seed, PATIENCE).await.unwrap();
        assert!(
            joined.wait_until_registered(PATIENCE).await,
            "node {id} never registered"
        );
        self.nodes.push(node);
        self._dirs.push(dir);
    }

    /// Every running node's Kafka address, comma-separated (a client's bootstrap list).
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| n.node.is_some())
            .map(|n| n.kafka_addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Some running node.
    pub fn any(&self) -> &Node {
        self.nodes.iter().find_map(|n| n.node.as_ref()).unwrap()
    }

    /// Waits (bounded) until `condition` holds.
    pub async fn wait_for(&self, what: &str, condition: impl Fn(&Cluster) -> bool) {
        let start = Instant::now();
        while !condition(self) {
            assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The index in `nodes` of the running node whose replica of partition group `group` leads.
    pub fn leader_index(&self, group: u64) -> Option<usize> {
        self.nodes.iter().position(|n| {
            n.node.as_ref().is_some_and(|node| {
                node.partition(quipu_node::GroupId(group))
                    .is_some_and(|p| p.is_leader())
            })
        })
    }

    /// The replica of partition group `group` that leads, on whichever running node holds it.
    pub fn leader_replica(&self, group: u64) -> Option<std::sync::Arc<quipu_node::Partition>> {
        self.nodes
            .iter()
            .filter_map(|n| n.node.as_ref())
            .find_map(|node| {
                node.partition(quipu_node::GroupId(group))
                    .filter(|p| p.is_leader())
            })
    }

    /// Waits until every running node's metadata holds `topic` (a node applies the controller's
    /// entries on its own schedule, and a client may ask any of them).
    pub async fn wait_for_topic_everywhere(&self, topic: &str) {
        self.wait_for("every node to know the topic", |c| {
            c.nodes
                .iter()
                .filter_map(|n| n.node.as_ref())
                .all(|node| node.with_metadata(|m| m.topic(topic).is_some()))
        })
        .await;
    }

    /// Waits until every partition of `topic` has a leader known to some node.
    pub async fn wait_for_leaders(&self, topic: &str) {
        self.wait_for("a leader for every partition", |c| {
            let groups: Vec<u64> = c.any().with_metadata(|m| {
                m.topic(topic)
                    .map(|t| t.partitions.iter().map(|p| p.group).collect())
                    .unwrap_or_default()
            });
            !groups.is_empty()
                && groups.iter().all(|g| {
                    c.nodes.iter().filter_map(|n| n.node.as_ref()).any(|node| {
                        node.partition(quipu_node::GroupId(*g))
                            .is_some_and(|p| p.is_leader())
                    })
                })
        })
        .await;
    }

    pub async fn stop(mut self) {
        for node in &mut self.nodes {
            node.stop().await;
        }
    }
}

/// Runs a client program to completion (bounded by [`PATIENCE`]) and returns its standard
/// output; fails the test with its standard error if it fails.
pub async fn run(program: &str, args: &[&str], stdin: Option<&[u8]>) -> String {
    run_full(program, args, stdin, &[]).await
}

/// Runs `program` with `args`, expecting it may fail; whether it succeeded (within 30 s: the
/// program's own timeouts are shorter).
pub async fn succeeds(program: &str, args: &[impl AsRef<std::ffi::OsStr>]) -> bool {
    let status = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    tokio::time::timeout(Duration::from_secs(30), status)
        .await
        .expect("the program ran past its own timeout")
        .unwrap()
        .success()
}

/// [`run`] with extra environment variables.
pub async fn run_with_env(program: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    run_full(program, args, None, env).await
}

async fn run_full(
    program: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
    env: &[(&str, &str)],
) -> String {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_vec();
        tokio::spawn(async move {
            let _ = pipe.write_all(&input).await;
        });
    }
    let output = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not finish in {PATIENCE:?}"))
        .unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The path of a client program the tests need, or a failure that says how to get it.
pub fn require(program: &str, how: &str) -> String {
    match std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
    {
        Ok(out) if out.status.success() => {
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        }
        _ => panic!("{program} is missing: {how} (`.ci/run` installs it)"),
    }
}

/// One record as the cluster holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub partition: u32,
    pub offset: u64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// The producer id of its batch (-1: not an idempotent producer's).
    pub producer_id: i64,
}

/// Every committed record of `topic`, read from each partition's leader in this process.
pub async fn read_back(cluster: &Cluster, topic: &str) -> Vec<Stored> {
    let groups: Vec<u64> = cluster.any().with_metadata(|m| {
        m.topic(topic)
            .map(|t| t.partitions.iter().map(|p| p.group).collect())
            .unwrap_or_default()
    });
    let mut out = Vec::new();
    for (partition, group) in (0u32..).zip(groups) {
        let leader = cluster.leader_replica(group).expect("a leader");
        let end = leader.high_watermark();
        let mut offset = quipu_storage::Offset(0);
        while offset < end {
            let entries = leader.fetch(offset, 1 << 20).await.unwrap();
            for entry in entries {
                for batch in entry.batches() {
                    let batch = batch.unwrap();
                    let header = quipu_record::BatchHeader::parse(&batch).unwrap();
                    for record in quipu_record::decode_records(&batch, 64 << 20).unwrap() {
                        out.push(Stored {
                            partition,
                            offset: u64::try_from(record.offset(header.base_offset)).unwrap(),
                            key: record.key.map(|k| k.to_vec()),
                            value: record.value.map(|v| v.to_vec()),
                            headers: record
                                .headers
                                .into_iter()
                                .map(|h| (h.key, h.value.map(|v| v.to_vec())))
                                .collect(),
                            producer_id: header.producer_id,
                        });
                    }
                }
                offset = entry.next_offset();
            }
        }
    }
    out
}

/// The Python of the virtual environment `scripts/test.sh` makes (or `QUIPU_PYTHON`).
pub fn python() -> String {
    if let Some(python) = std::env::var_os("QUIPU_PYTHON") {
        return python.to_string_lossy().into_owned();
    }
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/kafka-clients/venv/bin/python");
    assert!(
        venv.exists(),
        "the Python Kafka clients are missing: run scripts/test.sh (it makes {})",
        venv.display()
    );
    venv.to_string_lossy().into_owned()
}

/// Node.js and the `node_modules` directory with kafkajs that `scripts/test.sh` installs (run a
/// script with that as `NODE_PATH`).
pub fn kafkajs() -> (String, String) {
    let modules = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/kafka-clients/node/node_modules");
    assert!(
        modules.join("kafkajs").exists(),
        "kafkajs is missing: run scripts/test.sh (it installs it under {})",
        modules.display()
    );
    let node = require("node", "install Node.js (apt-get install nodejs)");
    (node, modules.to_string_lossy().into_owned())
}

/// A client script in `tests/clients`.
pub fn client_script(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
        .to_string_lossy()
        .into_owned()
}
