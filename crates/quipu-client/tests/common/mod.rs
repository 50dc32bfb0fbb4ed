//! What the client's tests share: three in-process nodes serving the gRPC API on 127.0.0.1.
#![allow(clippy::unwrap_used, dead_code)] // tests unwrap; not every test file uses everything

use std::time::{Duration, Instant};

use quipu_client::Client;
use quipu_node::{Node, NodeConfig};
use quipu_storage::LogConfig;

pub const PATIENCE: Duration = Duration::from_secs(30);

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub stops: Vec<tokio::sync::oneshot::Sender<()>>,
    pub api_addrs: Vec<String>,
    _dirs: Vec<tempfile::TempDir>,
}

pub async fn cluster() -> Cluster {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    let mut listeners = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_addr = listener.local_addr().unwrap().to_string();
        let config = NodeConfig {
            log: LogConfig {
                segment_bytes_max: 256 * 1024,
                entry_bytes_max: 128 * 1024,
                preallocate_bytes: 0,
                ..LogConfig::default()
            },
            api_addr: Some(api_addr),
            groups: quipu_node::GroupsConfig {
                offsets_partitions: 4,
                consumer: quipu_node::ConsumerLimits {
                    session_timeout_ms: 6_000,
                    heartbeat_interval_ms: 300,
                    ..quipu_node::ConsumerLimits::default()
                },
                ..quipu_node::GroupsConfig::default()
            },
            ..NodeConfig::new(
                i as u64 + 1,
                dir.path().to_path_buf(),
                "127.0.0.1:0".parse().unwrap(),
            )
        };
        nodes.push(Node::start(config).await.unwrap());
        listeners.push(listener);
    }
    let voters: Vec<(u64, String)> = nodes
        .iter()
        .map(|n| (n.id(), n.addr().to_string()))
        .collect();
    for node in &nodes {
        node.join(voters.clone()).await.unwrap();
    }
    let mut stops = Vec::new();
    let mut api_addrs = Vec::new();
    for (node, listener) in nodes.iter().zip(listeners) {
        api_addrs.push(listener.local_addr().unwrap().to_string());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(quipu_api::serve(
            node.handle(),
            listener,
            quipu_api::ApiLimits::default(),
            async {
                let _ = stopped.await;
            },
        ));
        stops.push(stop);
    }
    Cluster {
        nodes,
        stops,
        api_addrs,
        _dirs: dirs,
    }
}

impl Cluster {
    /// A client of every node, once every node has registered.
    pub async fn registered_client(&self) -> Client {
        let client = Client::connect(self.api_addrs.clone()).await.unwrap();
        let start = Instant::now();
        while client.describe_cluster().await.unwrap().nodes.len() < 3 {
            assert!(start.elapsed() < PATIENCE, "the nodes did not register");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        client
    }

    pub async fn stop(self) {
        for stop in self.stops {
            let _ = stop.send(());
        }
        for node in self.nodes {
            node.stop().await;
        }
    }
}
