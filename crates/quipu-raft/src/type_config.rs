//! The openraft type configuration shared by every Raft group of Quipu.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Identifier of a node (a `quipu server` process).
pub type NodeId = u64;

/// What a client proposes to a Raft group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Kafka RecordBatches v2 to append to a data partition, as the producers sent them: one,
    /// or several back to back that the leader proposed together (group commit).
    Records {
        /// The batches, back to back.
        #[serde(deserialize_with = "crate::wire::shared_bytes")]
        batch: Bytes,
        /// A token of the leader that proposed it, for acks=1: the leader resolves it once the
        /// batch is durable in its own log. Never stored; followers ignore it.
        #[serde(default)]
        local_ack: Option<u64>,
    },
    /// A command of the controller group, encoded by the controller.
    Metadata(#[serde(deserialize_with = "crate::wire::shared_bytes")] Bytes),
    /// Deletes a data partition's records below offset `before` (Kafka's DeleteRecords): the
    /// partition's log start offset rises to `before`, at most to the high watermark when the
    /// entry is applied; it never goes down. Segments wholly below it go at the next retention
    /// pass.
    DeleteRecords {
        /// The offset the log start rises to.
        before: u64,
    },
}

/// What applying a request produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// For [`Request::Records`], the offset given to the first batch's first record; for
    /// [`Request::DeleteRecords`], the log start offset after it.
    pub base_offset: Option<u64>,
    /// For [`Request::Metadata`], why the controller refused the command (nothing changed).
    #[serde(default)]
    pub error: Option<String>,
    /// For a [`Request::Metadata`] command that allocates producer ids, the first id of the
    /// block.
    #[serde(default)]
    pub allocated: Option<u64>,
}

openraft::declare_raft_types!(
    /// openraft's types for every Raft group of Quipu.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);
