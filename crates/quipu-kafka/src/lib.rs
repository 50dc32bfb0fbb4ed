//! The Kafka wire protocol on a Quipu node: every node is a Kafka broker to existing Kafka
//! clients (librdkafka, kafka-python, aiokafka, kafkajs, kcat), which bootstrap from any node,
//! create topics, produce and fetch by partition and offset, and follow leaders through failover.
//!
//! - [`serve`] accepts connections ([`KafkaConfig`] bounds them) and runs one task per
//!   connection: frames are read, decoded with `kafka-protocol`, handled concurrently and
//!   answered in request order (`connection`).
//! - `api` is the handler table: ApiVersions is built from it, so a client is never offered an
//!   API or a version that has no handler.
//! - Handlers map Kafka requests onto the node: `metadata`, `produce` (record batches stay
//!   opaque bytes, validated by the partition), `fetch` (batches as stored, long poll),
//!   `list_offsets`, `producer_id` (idempotent producers), the admin APIs (`admin`,
//!   `describe`, `delete_records`, `leader_epoch`), and `groups` (FindCoordinator and committed
//!   offsets; the group coordinator is `quipu-node`'s).
//!
//! - Group membership (`membership`: JoinGroup and the rest of the classic protocol;
//!   `consumer_group`: KIP-848), SASL (`sasl`) and ACLs (`authorize`, `acls`); TLS is the
//!   listener's (`server`).
//! - `response`: an answer as byte chunks, so a fetch's record batches go out as the log's own
//!   bytes, in vectored writes, never copied into the answer.
//!
//! Not here (yet): transactions.
//!
//! Architecture Invariant: the only crate that sees Kafka wire types; record data on the produce
//! and fetch paths is never decoded or re-encoded here.

mod acls;
mod admin;
mod api;
mod authorize;
mod connection;
mod consumer_group;
mod delete_records;
mod describe;
mod error;
mod fetch;
mod group_admin;
mod groups;
mod leader_epoch;
mod list_offsets;
mod membership;
mod metadata;
mod produce;
mod producer_id;
mod reassign;
mod response;
mod sasl;
mod scram_users;
mod server;

pub use api::{SupportedApi, decode_request, supported_apis};
pub use connection::read_exactly;
pub use error::{CodecError, RequestError};
pub use sasl::SaslMechanism;
pub use server::{KafkaConfig, serve};
