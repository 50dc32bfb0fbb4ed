//! [`serve`]: the Kafka listener's accept loop.

use std::sync::Arc;

use quipu_node::NodeHandle;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::connection;

/// Limits and behaviour of a node's Kafka listener.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Most client connections open at once; a connection beyond it is closed at once.
    pub connections_max: usize,
    /// Most connections open at once from one client address (Kafka's
    /// `max.connections.per.ip`); beyond it a connection is closed at once.
    pub connections_per_address_max: usize,
    /// Largest request frame, in bytes (Kafka's `socket.request.max.bytes`); a larger one closes
    /// the connection before anything is allocated for it.
    pub request_bytes_max: usize,
    /// Most requests of one connection handled at once; the connection is not read further
    /// until one is answered.
    pub requests_in_flight_max: usize,
    /// Most bytes of requests read and not yet handled, on all connections of the listener
    /// together (Kafka's `queued.max.request.bytes`); a connection is not read further until
    /// there is room for its next request. At least `request_bytes_max`.
    pub queued_request_bytes_max: usize,
    /// A connection with no request read and none being handled for this long is closed, and so
    /// is one whose client does not take a response within it (Kafka's
    /// `connections.max.idle.ms`), in ms.
    pub connections_max_idle_ms: u64,
    /// Whether Metadata requests for unknown topics create them (Kafka's
    /// `auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic, or of a CreateTopics request that asks for -1.
    pub default_partitions: usize,
    /// Replication factor of such topics, capped at the number of registered nodes.
    pub default_replication_factor: usize,
    /// TLS on the listener (Kafka's SSL listener); `None`: plaintext.
    pub tls: Option<Arc<quipu_tls::ServerTls>>,
    /// SASL mechanisms clients must authenticate with (Kafka's SASL_SSL or SASL_PLAINTEXT
    /// listener); empty: none asked for.
    pub sasl_mechanisms: Vec<crate::SaslMechanism>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            connections_max: 10_000,
            connections_per_address_max: 1_000,
            request_bytes_max: 100 * 1024 * 1024,
            requests_in_flight_max: 32,
            queued_request_bytes_max: 256 * 1024 * 1024,
            connections_max_idle_ms: 600_000,
            auto_create_topics: false,
            default_partitions: 1,
            default_replication_factor: 3,
            tls: None,
            sasl_mechanisms: Vec::new(),
        }
    }
}

/// What every connection's handlers share.
#[derive(Debug)]
pub(crate) struct Context {
    pub node: NodeHandle,
    pub config: KafkaConfig,
    /// Room for request bytes read and not yet handled, in KiB.
    pub queued: Arc<tokio::sync::Semaphore>,
}

/// Units of the request-bytes pool: KiB, so that a frame of any allowed size is one acquire.
pub(crate) fn pool_units(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// Serves Kafka clients of `node` on `listener` until `shutdown` completes; then closes every
/// connection.
pub async fn serve(
    node: NodeHandle,
    listener: TcpListener,
    config: KafkaConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = quipu_node::ConnectionLimits::new(
        config.connections_max,
        config.connections_per_address_max,
    );
    // Never smaller than one largest request, which would otherwise wait forever.
    let queued = config
        .queued_request_bytes_max
        .max(config.request_bytes_max);
    let queued = Arc::new(tokio::sync::Semaphore::new(pool_units(queued) as usize));
    let context = Arc::new(Context {
        node,
        config,
        queued,
    });
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            (stream, peer, permit) = limits.accept(&listener, "kafka") => {
                let context = Arc::clone(&context);
                connections.spawn(async move {
                    // The handshake runs in the connection's own task: a slow client holds up
                    // nobody else, and holds its connection slot meanwhile.
                    match context.config.tls.clone() {
                        None => {
                            let (reader, writer) = stream.into_split();
                            connection::run(reader, writer, peer, None, context).await;
                        }
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => {
                                // A client certificate (client_auth requested or required)
                                // names the client: its subject is its principal.
                                let subject = stream
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|chain| chain.first())
                                    .and_then(quipu_tls::subject_of);
                                let (reader, writer) = tokio::io::split(stream);
                                connection::run(reader, writer, peer, subject, context).await;
                            }
                            Err(e) => {
                                tracing::warn!(%peer, error = &e as &dyn std::error::Error, "kafka TLS handshake failed");
                            }
                        },
                    }
                    drop(permit);
                });
            }
        }
    }
    connections.shutdown().await;
    Ok(())
}
