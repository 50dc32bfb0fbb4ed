//! What the client listeners record of each request, and the Raft transport of each message,
//! through the `metrics` facade (the binary installs the Prometheus recorder; without one these
//! cost an atomic load). Names and labels: `docs/operations/metrics.md`.

use std::time::Duration;

/// The listener a request came through (`api` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// The gRPC client API.
    Grpc,
    /// The Kafka listener.
    Kafka,
}

impl Api {
    fn label(self) -> &'static str {
        match self {
            Api::Grpc => "grpc",
            Api::Kafka => "kafka",
        }
    }
}

/// One partition's produce: stored or refused, its batch's bytes, and how long it took.
pub fn produced(api: Api, stored: bool, bytes: usize, took: Duration) {
    let result = if stored { "ok" } else { "error" };
    metrics::counter!("quipu_produce_requests_total", "api" => api.label(), "result" => result)
        .increment(1);
    if stored {
        metrics::counter!("quipu_produce_bytes_total", "api" => api.label())
            .increment(u64::try_from(bytes).unwrap_or(u64::MAX));
        metrics::histogram!("quipu_produce_batch_bytes", "api" => api.label()).record(bytes as f64);
    }
    metrics::histogram!("quipu_produce_duration_seconds", "api" => api.label())
        .record(took.as_secs_f64());
}

/// The histogram of one phase of a produce on its partition's leader
/// (`quipu_produce_phase_seconds`): one sample per batch.
pub(crate) fn produce_phase(phase: &'static str) -> metrics::Histogram {
    metrics::histogram!("quipu_produce_phase_seconds", "phase" => phase)
}

/// One Raft entry of records proposed on a partition's leader, holding `batches` producers'
/// batches (group commit within the partition).
pub(crate) fn proposed_entry(batches: usize) {
    metrics::histogram!("quipu_produce_batches_per_entry").record(batches as f64);
}

/// The `rpc` label of a Raft transport message.
pub(crate) fn rpc_label(rpc: i32) -> &'static str {
    use quipu_proto::v1::RaftRpc;
    match RaftRpc::try_from(rpc) {
        Ok(RaftRpc::AppendEntries) => "append_entries",
        Ok(RaftRpc::Vote) => "vote",
        Ok(RaftRpc::InstallSnapshot) => "install_snapshot",
        Ok(RaftRpc::Unspecified) | Err(_) => "unknown",
    }
}

/// One Raft message this node sent a peer (`payload` bytes; 0 if it was never sent), and how
/// its call ended: `ok`, `unreachable` (no answer in time, or the call failed), `refused` (the
/// peer's transport refused it), `error` (the peer's group answered with an error, or a message
/// did not encode or decode) or `throttled` (a move's catch-up traffic held back).
pub(crate) fn raft_sent(rpc: &'static str, payload: usize, result: &'static str) {
    metrics::counter!("quipu_raft_messages_sent_total", "rpc" => rpc, "result" => result)
        .increment(1);
    metrics::counter!("quipu_raft_sent_bytes_total", "rpc" => rpc)
        .increment(u64::try_from(payload).unwrap_or(u64::MAX));
}

/// One AppendEntries about to be sent, carrying `entries` entries (0: a heartbeat).
pub(crate) fn raft_append_sent(entries: usize) {
    metrics::histogram!("quipu_raft_append_entries").record(entries as f64);
}

/// A Raft message stream to a peer opened (`DeliverStream`): once per peer while it stays up,
/// again after each time it broke.
pub(crate) fn raft_stream_opened() {
    metrics::counter!("quipu_raft_streams_opened_total").increment(1);
}

/// An AppendEntries carrying entries answered: on the leader, its round trip (from the call to
/// the follower's answer); on the follower, its handling (from the group taking it to its
/// answer: the Raft core, the append and its fsync).
pub(crate) fn raft_append_round_trip(took: std::time::Duration) {
    metrics::histogram!("quipu_raft_append_round_trip_seconds").record(took.as_secs_f64());
}

/// See [`raft_append_round_trip`].
pub(crate) fn raft_append_handled(took: std::time::Duration) {
    metrics::histogram!("quipu_raft_append_handling_seconds").record(took.as_secs_f64());
}

/// One Raft message a peer sent this node: handed to its group and answered (`ok`), or refused
/// before or by it (`refused`).
pub(crate) fn raft_received(rpc: &'static str, handled: bool) {
    let result = if handled { "ok" } else { "refused" };
    metrics::counter!("quipu_raft_messages_received_total", "rpc" => rpc, "result" => result)
        .increment(1);
}

/// One fetch answer (a Kafka Fetch response, or one gRPC fetch message) and its batches' bytes.
pub fn fetched(api: Api, bytes: u64) {
    metrics::counter!("quipu_fetch_responses_total", "api" => api.label()).increment(1);
    metrics::counter!("quipu_fetch_bytes_total", "api" => api.label()).increment(bytes);
}

/// One Kafka request handled, by its API's name (`Produce`, `Fetch`, ...).
pub fn kafka_request(api_key: &'static str) {
    metrics::counter!("quipu_kafka_requests_total", "request" => api_key).increment(1);
}
