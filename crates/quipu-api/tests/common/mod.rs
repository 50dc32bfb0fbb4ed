//! What the client API's tests share.
#![allow(clippy::unwrap_used, dead_code)] // tests unwrap; not every test file uses everything

use quipu_api::ApiLimits;
use quipu_node::{Node, NodeConfig};

/// The client API of one node, served on 127.0.0.1.
pub struct Served {
    pub addr: std::net::SocketAddr,
    /// Starts a graceful stop.
    pub stop: tokio::sync::oneshot::Sender<()>,
    pub server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Serves `node`'s client API with `limits` on a free port of 127.0.0.1.
pub async fn serve(node: quipu_node::NodeHandle, limits: ApiLimits) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(quipu_api::serve(node, listener, limits, async {
        let _ = stopped.await;
    }));
    Served { addr, stop, server }
}

/// A one-node cluster serving the client API with `limits`, stopped by [`Api::stop`].
pub struct Api {
    pub node: Node,
    pub addr: std::net::SocketAddr,
    pub stop: tokio::sync::oneshot::Sender<()>,
    pub server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    pub _dir: tempfile::TempDir,
}

impl Api {
    pub async fn start(limits: ApiLimits) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::start(NodeConfig::new(
            1,
            dir.path().to_path_buf(),
            "127.0.0.1:0".parse().unwrap(),
        ))
        .await
        .unwrap();
        node.join(vec![(1, node.addr().to_string())]).await.unwrap();
        let Served { addr, stop, server } = serve(node.handle(), limits).await;
        Api {
            node,
            addr,
            stop,
            server,
            _dir: dir,
        }
    }

    /// Stops the API (a graceful stop waits for open connections: close them first) and the node.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
        self.node.stop().await;
    }
}

/// A record batch of one record whose value is `value`.
pub fn batch(value: &str) -> bytes::Bytes {
    let mut builder = quipu_record::BatchBuilder::new(0, quipu_record::Compression::None);
    builder.push(0, None, Some(value.as_bytes()), &[]);
    builder.build().unwrap()
}
