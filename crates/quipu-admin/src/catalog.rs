//! Every metric a node exposes, with its help text: what `/metrics` prints after `# HELP`, and
//! the list `docs/operations/metrics.md` must match (tested below).

use metrics::Unit;

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (name ends in `_total`).
    Counter,
    /// Set to a value.
    Gauge,
    /// Samples in buckets.
    Histogram,
}

/// Name, kind, unit and help text of every metric.
pub const METRICS: &[(&str, Kind, Unit, &str)] = &[
    // Requests.
    (
        "quipu_produce_requests_total",
        Kind::Counter,
        Unit::Count,
        "Partition produces handled, by listener and result.",
    ),
    (
        "quipu_produce_bytes_total",
        Kind::Counter,
        Unit::Bytes,
        "Bytes of record batches stored by produces.",
    ),
    (
        "quipu_produce_duration_seconds",
        Kind::Histogram,
        Unit::Seconds,
        "Time from a partition produce's arrival to its answer.",
    ),
    (
        "quipu_produce_phase_seconds",
        Kind::Histogram,
        Unit::Seconds,
        "Time a batch spent on its partition leader in each phase: queued for the next Raft entry, \
         into the leader's log, until committed and applied (from the proposal if a majority held \
         it before the leader's log did).",
    ),
    (
        "quipu_raft_append_round_trip_seconds",
        Kind::Histogram,
        Unit::Seconds,
        "On a leader, the round trip of each AppendEntries carrying entries, to the follower's answer.",
    ),
    (
        "quipu_raft_append_handling_seconds",
        Kind::Histogram,
        Unit::Seconds,
        "On a follower, the handling of each AppendEntries carrying entries: its Raft core, the \
         append and its fsync.",
    ),
    (
        "quipu_produce_batch_bytes",
        Kind::Histogram,
        Unit::Bytes,
        "Bytes of each stored produce's record batches.",
    ),
    (
        "quipu_produce_batches_per_entry",
        Kind::Histogram,
        Unit::Count,
        "Produced batches in each Raft entry a partition leader proposed (group commit).",
    ),
    (
        "quipu_fetch_responses_total",
        Kind::Counter,
        Unit::Count,
        "Kafka Fetch responses and gRPC fetch messages sent.",
    ),
    (
        "quipu_fetch_bytes_total",
        Kind::Counter,
        Unit::Bytes,
        "Bytes of record batches in fetch answers.",
    ),
    (
        "quipu_kafka_requests_total",
        Kind::Counter,
        Unit::Count,
        "Kafka requests handled, by API name.",
    ),
    (
        "quipu_grpc_requests_total",
        Kind::Counter,
        Unit::Count,
        "gRPC calls, by method and status.",
    ),
    (
        "quipu_grpc_request_duration_seconds",
        Kind::Histogram,
        Unit::Seconds,
        "Time from a gRPC call's arrival until its response began.",
    ),
    // Raft and the disk.
    (
        "quipu_fsync_duration_seconds",
        Kind::Histogram,
        Unit::Seconds,
        "Time of each fsync, fdatasync, syncfs and directory sync of the storage engine.",
    ),
    (
        "quipu_log_spare_bytes_released_total",
        Kind::Counter,
        Unit::Bytes,
        "Bytes of recycled segment files deleted because the data disk neared its reserve.",
    ),
    (
        "quipu_shared_sync_logs",
        Kind::Histogram,
        Unit::Count,
        "Logs made durable by each round of shared syncs (1: an fdatasync; more: one syncfs).",
    ),
    (
        "quipu_raft_messages_sent_total",
        Kind::Counter,
        Unit::Count,
        "Raft messages sent to peers, by rpc and how the call ended.",
    ),
    (
        "quipu_raft_sent_bytes_total",
        Kind::Counter,
        Unit::Bytes,
        "Bytes of the Raft messages sent to peers (their encoded payloads), by rpc.",
    ),
    (
        "quipu_raft_append_entries",
        Kind::Histogram,
        Unit::Count,
        "Entries in each AppendEntries sent to a peer (0: a heartbeat).",
    ),
    (
        "quipu_raft_streams_opened_total",
        Kind::Counter,
        Unit::Count,
        "Raft message streams opened to peers: one per peer, and one more each time a stream broke.",
    ),
    (
        "quipu_raft_messages_received_total",
        Kind::Counter,
        Unit::Count,
        "Raft messages from peers, by rpc and whether their group answered.",
    ),
    (
        "quipu_leader_changes_total",
        Kind::Counter,
        Unit::Count,
        "Leaders the node's partition replicas learnt of.",
    ),
    (
        "quipu_elections_total",
        Kind::Counter,
        Unit::Count,
        "Elections the node's partition replicas started.",
    ),
    // Connections.
    (
        "quipu_connections_accepted_total",
        Kind::Counter,
        Unit::Count,
        "Connections admitted, by listener.",
    ),
    (
        "quipu_connections_closed_total",
        Kind::Counter,
        Unit::Count,
        "Admitted connections closed, by listener.",
    ),
    (
        "quipu_connections_refused_total",
        Kind::Counter,
        Unit::Count,
        "Connections closed at once because a limit was reached, by listener and limit.",
    ),
    // The node.
    (
        "quipu_node_ready",
        Kind::Gauge,
        Unit::Count,
        "1 when the node can serve (as /readyz), else 0.",
    ),
    (
        "quipu_controller_leader_known",
        Kind::Gauge,
        Unit::Count,
        "1 when the node knows a controller leader.",
    ),
    (
        "quipu_replicas",
        Kind::Gauge,
        Unit::Count,
        "Partition replicas open on the node.",
    ),
    (
        "quipu_replicas_assigned",
        Kind::Gauge,
        Unit::Count,
        "Partition replicas the metadata assigns to the node.",
    ),
    (
        "quipu_replicas_missing",
        Kind::Gauge,
        Unit::Count,
        "Replicas the metadata assigns to the node that are not open.",
    ),
    (
        "quipu_replicas_failed",
        Kind::Gauge,
        Unit::Count,
        "Open replicas stopped on a fatal error.",
    ),
    (
        "quipu_partitions_led",
        Kind::Gauge,
        Unit::Count,
        "Replicas that lead their partition.",
    ),
    (
        "quipu_partitions_quiescent",
        Kind::Gauge,
        Unit::Count,
        "Replicas whose group is asleep (idle: no ticks, no heartbeats).",
    ),
    (
        "quipu_disk_free_bytes",
        Kind::Gauge,
        Unit::Bytes,
        "Free bytes of the data directory's file system.",
    ),
    (
        "quipu_disk_total_bytes",
        Kind::Gauge,
        Unit::Bytes,
        "Size of the data directory's file system.",
    ),
    (
        "quipu_partition_series_enabled",
        Kind::Gauge,
        Unit::Count,
        "1 when per-partition series are reported (at most partition_series_max replicas).",
    ),
    // Each partition replica.
    (
        "quipu_partition_log_start_offset",
        Kind::Gauge,
        Unit::Count,
        "First offset the replica still holds.",
    ),
    (
        "quipu_partition_log_end_offset",
        Kind::Gauge,
        Unit::Count,
        "One past the last offset in the replica's log.",
    ),
    (
        "quipu_partition_high_watermark",
        Kind::Gauge,
        Unit::Count,
        "One past the last committed offset the replica knows.",
    ),
    (
        "quipu_partition_size_bytes",
        Kind::Gauge,
        Unit::Bytes,
        "Bytes of the replica's segments.",
    ),
    (
        "quipu_partition_leader",
        Kind::Gauge,
        Unit::Count,
        "1 if the replica leads its partition.",
    ),
    (
        "quipu_partition_leader_epoch",
        Kind::Gauge,
        Unit::Count,
        "The Raft term the replica knows (Kafka's leader epoch).",
    ),
    (
        "quipu_partition_voter",
        Kind::Gauge,
        Unit::Count,
        "1 if the replica is a voter of its group, 0 for a learner.",
    ),
    (
        "quipu_partition_quiescent",
        Kind::Gauge,
        Unit::Count,
        "1 while the replica's group is asleep.",
    ),
    (
        "quipu_partition_segments",
        Kind::Gauge,
        Unit::Count,
        "Segment files of the replica's log.",
    ),
    (
        "quipu_partition_leader_changes",
        Kind::Gauge,
        Unit::Count,
        "Leaders the replica learnt of since it opened.",
    ),
    (
        "quipu_partition_elections",
        Kind::Gauge,
        Unit::Count,
        "Elections the replica started since it opened.",
    ),
    (
        "quipu_partition_last_fsync_age_seconds",
        Kind::Gauge,
        Unit::Seconds,
        "Seconds since the replica's log last finished an fsync (or opened).",
    ),
    (
        "quipu_partition_follower_lag_entries",
        Kind::Gauge,
        Unit::Count,
        "On the leader: Raft entries a follower is known to lack.",
    ),
    (
        "quipu_partition_follower_lag_bytes",
        Kind::Gauge,
        Unit::Bytes,
        "On the leader: bytes a follower is estimated to lack.",
    ),
    // Consumer groups.
    (
        "quipu_groups",
        Kind::Gauge,
        Unit::Count,
        "Consumer groups in each state.",
    ),
    (
        "quipu_group_members",
        Kind::Gauge,
        Unit::Count,
        "Members of a consumer group.",
    ),
    (
        "quipu_group_generation",
        Kind::Gauge,
        Unit::Count,
        "A group's generation or group epoch: rises once per rebalance.",
    ),
    (
        "quipu_group_lag",
        Kind::Gauge,
        Unit::Count,
        "Records between a group's committed offsets and the high watermarks, summed.",
    ),
    (
        "quipu_group_committed_offset",
        Kind::Gauge,
        Unit::Count,
        "The next offset a group reads in a partition.",
    ),
    (
        "quipu_group_partition_lag",
        Kind::Gauge,
        Unit::Count,
        "High watermark minus a group's committed offset in a partition.",
    ),
    (
        "quipu_group_partition_series_enabled",
        Kind::Gauge,
        Unit::Count,
        "1 when per-partition group series are reported.",
    ),
    (
        "quipu_group_report_complete",
        Kind::Gauge,
        Unit::Count,
        "1 when every node answered this scrape's group report in full.",
    ),
];

/// Registers every metric's help text with the installed recorder.
pub fn describe() {
    for &(name, kind, unit, help) in METRICS {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, unit, help),
            Kind::Gauge => metrics::describe_gauge!(name, unit, help),
            Kind::Histogram => metrics::describe_histogram!(name, unit, help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The metrics `docs/operations/metrics.md` lists: every backquoted `quipu_` name that
    /// starts a table row.
    fn documented() -> std::collections::BTreeSet<String> {
        let doc = include_str!("../../../docs/operations/metrics.md");
        doc.lines()
            .filter_map(|line| line.strip_prefix("| `"))
            .flat_map(|cell| {
                let cell = cell.split(" |").next().unwrap_or_default();
                cell.split(", ")
                    .map(|name| {
                        name.trim_matches('`')
                            .split('{')
                            .next()
                            .unwrap_or_default()
                            .trim_end_matches('`')
                            .to_owned()
                    })
                    .collect::<Vec<_>>()
            })
            .filter(|name| name.starts_with("quipu_"))
            .collect()
    }

    #[test]
    fn the_catalog_and_the_documentation_list_the_same_metrics() {
        let catalog: std::collections::BTreeSet<String> =
            METRICS.iter().map(|m| m.0.to_owned()).collect();
        let documented = documented();
        let undocumented: Vec<_> = catalog.difference(&documented).collect();
        let unknown: Vec<_> = documented.difference(&catalog).collect();
        assert!(
            undocumented.is_empty(),
            "not in metrics.md: {undocumented:?}"
        );
        assert!(
            unknown.is_empty(),
            "in metrics.md but not exposed: {unknown:?}"
        );
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        for &(name, kind, unit, _) in METRICS {
            assert!(name.starts_with("quipu_"), "{name}");
            assert_eq!(kind == Kind::Counter, name.ends_with("_total"), "{name}");
            match unit {
                Unit::Seconds => assert!(name.contains("_seconds"), "{name}"),
                Unit::Bytes => assert!(name.contains("_bytes"), "{name}"),
                _ => {}
            }
        }
    }
}
