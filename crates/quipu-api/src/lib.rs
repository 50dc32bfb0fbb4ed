//! Quipu's client API: the `quipu.v1.Admin`, `quipu.v1.Data` and `quipu.v1.Groups` gRPC services
//! (`proto/quipu/v1/api.proto`) over a running node. Behaviour, errors and guarantees:
//! `docs/protocol/grpc.md`.
//!
//! - Admin requests that change the metadata go to the controller leader through the node
//!   (forwarded from any node); queries answer from the node's own metadata.
//! - Data requests are served by the partition's leader; any other node answers "not leader"
//!   with the leader's (or the preferred leader's) API address in an `ErrorDetail`.
//! - Every error status carries an `ErrorDetail` (its encoded bytes in the status details).

mod acls;
mod admin;
mod auth;
mod data;
mod error;
mod groups;
mod telemetry;

use std::future::Future;

use quipu_node::{NodeHandle, incoming};
use quipu_proto::v1::admin_server::AdminServer;
use quipu_proto::v1::data_server::DataServer;
use quipu_proto::v1::groups_server::GroupsServer;

pub use data::{
    FETCH_BYTES_MAX, FETCH_WAIT_MS_MAX, FOLLOW_WAIT_MS_MIN, PRODUCE_STREAM_REQUESTS_MAX,
};

/// Largest request or response message of the client API (a produce carries one record batch,
/// at most the log's `entry_bytes_max`; a fetch message at most [`FETCH_BYTES_MAX`] of batches).
pub const API_MESSAGE_BYTES_MAX: usize = 32 * 1024 * 1024;

/// Largest `entry_bytes_max` the client API carries: one batch in a produce or fetch message,
/// with room for the message's other fields.
pub const ENTRY_BYTES_LIMIT: u64 = (API_MESSAGE_BYTES_MAX - 64 * 1024) as u64;

/// Limits of the client API's listener.
#[derive(Debug, Clone, Copy)]
pub struct ApiLimits {
    /// Most connections open at once.
    pub connections_max: usize,
    /// Most connections open at once from one client address.
    pub connections_per_address_max: usize,
    /// Most concurrent HTTP/2 streams (calls) on one connection.
    pub streams_per_connection_max: u32,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            connections_max: 10_000,
            connections_per_address_max: 1_000,
            streams_per_connection_max: 1_000,
        }
    }
}

/// Serves the client API of `node` on `listener` until `shutdown` completes.
pub async fn serve(
    node: NodeHandle,
    listener: tokio::net::TcpListener,
    limits: ApiLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    serve_tls(node, listener, limits, None, shutdown).await
}

/// Serves the client API of `node` on `listener` until `shutdown` completes, over `tls` if
/// given (then a plaintext client gets nothing but a TLS alert).
pub async fn serve_tls(
    node: NodeHandle,
    listener: tokio::net::TcpListener,
    limits: ApiLimits,
    tls: Option<std::sync::Arc<quipu_tls::ServerTls>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let gate = std::sync::Arc::new(auth::Gate::new(node.clone(), tls.is_some()));
    // A stop also ends the produce sessions, which a graceful shutdown would otherwise wait for
    // (a producer keeps its session open for as long as it lives).
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    let admin = AdminServer::new(admin::AdminService {
        node: node.clone(),
        gate: gate.clone(),
    })
    .max_decoding_message_size(API_MESSAGE_BYTES_MAX)
    .max_encoding_message_size(API_MESSAGE_BYTES_MAX);
    let groups = GroupsServer::new(groups::GroupsService {
        node: node.clone(),
        gate: gate.clone(),
    })
    .max_decoding_message_size(API_MESSAGE_BYTES_MAX)
    .max_encoding_message_size(API_MESSAGE_BYTES_MAX);
    let data = DataServer::new(data::DataService {
        node,
        gate,
        stopping,
        session_bytes: std::sync::Arc::new(tokio::sync::Semaphore::new(
            data::PRODUCE_SESSIONS_BYTES_MAX,
        )),
    })
    .max_decoding_message_size(API_MESSAGE_BYTES_MAX)
    .max_encoding_message_size(API_MESSAGE_BYTES_MAX);
    let connections = quipu_node::ConnectionLimits::new(
        limits.connections_max,
        limits.connections_per_address_max,
    );
    let router = tonic::transport::Server::builder()
        .max_concurrent_streams(limits.streams_per_connection_max)
        .max_frame_size(quipu_proto::HTTP2_FRAME_BYTES_MAX)
        .layer(telemetry::RecordCalls)
        .add_service(admin)
        .add_service(data)
        .add_service(groups);
    match tls {
        None => {
            router
                .serve_with_incoming_shutdown(
                    incoming::admitted(listener, connections, "grpc"),
                    shutdown,
                )
                .await
        }
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(
                    incoming::admitted_tls(listener, connections, tls, "grpc"),
                    shutdown,
                )
                .await
        }
    }
}
