//! Raft for Quipu: the one openraft type configuration, openraft's log store over the segment
//! log, and the state machine of a data partition.
//!
//! - [`TypeConfig`] fixes openraft's types for every group (partitions and, later, the
//!   controller). It uses openraft's `single-term-leader` mode, so a log id is `(term, index)`:
//!   exactly what a segment frame stores, and the Kafka partition leader epoch of a batch is the
//!   term of its entry.
//! - [`LogStore`] implements `RaftLogStorage` on a [`quipu_storage::Log`]: a record batch is
//!   stored once, as the payload of its Raft entry (no second copy); other entries are stored as
//!   internal entries (`docs/format/raft-entries.md`). The vote and purge point live in a state
//!   file beside the segments.
//! - [`PartitionStateMachine`] holds no records: applying an entry advances the partition's high
//!   watermark, which it reads from the batch's base offset assigned by the log, and records
//!   an idempotent producer's batch in the partition's [`producers::ProducerTable`].
//!
//! - [`ControllerStateMachine`] applies `quipu_meta` commands of the controller group (group 0)
//!   and hands this node's effects (start or delete replicas) to the node runtime.
//!
//! - [`repair`] finds damage in a log that will not open and sets the damaged files aside, so the
//!   replica starts over empty with its vote, abstaining until it has re-replicated.
//!
//! Not here: networking, the node runtime that carries out effects.

// openraft's traits fix `StorageError` (about 200 bytes) as the error type; boxing it is not ours to do.
#![allow(clippy::result_large_err)]

mod codec;
mod controller;
mod io_threads;
mod log_store;
pub mod producers;
mod recent;
pub mod repair;
mod snapshot_file;
mod state_machine;
mod type_config;
pub mod wire;

pub use codec::{EntryCodecError, from_stored, to_stored};
pub use controller::{
    CONTROLLER_SNAPSHOT_FILE, ControllerStateMachine, EFFECTS_QUEUE_MAX, EffectsProgress,
    SNAPSHOT_BYTES_MAX as CONTROLLER_SNAPSHOT_BYTES_MAX,
};
pub use log_store::{FLUSH_MARK_FILE, LogStore, LogStoreError, META_FILE, READ_BYTES_MAX};
pub use recent::{RECENT_BYTES_MAX, RECENT_NODE_BYTES_MAX};
pub use state_machine::{
    CHECKPOINT_FILE, PartitionStateMachine, SNAPSHOT_BYTES_MAX as PARTITION_SNAPSHOT_BYTES_MAX,
    SNAPSHOT_FILE,
};
pub use type_config::{NodeId, Request, Response, TypeConfig};

/// State shared by a partition's log store and state machine.
pub mod shared;
