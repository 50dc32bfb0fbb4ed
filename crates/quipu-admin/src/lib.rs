//! Every node's HTTP admin listener (`admin_listen_addr`, plaintext or TLS: `listener`):
//! `/metrics` in Prometheus' text format, `/healthz` (the process is up), `/readyz` (the node
//! can serve: `NodeHandle::readiness`), and the web console (`/`, its JSON under `/api/`:
//! `console`), read-only unless `console_actions` lets a signed-in user act.
//! Metric names and meanings: `docs/operations/metrics.md`.
//!
//! Libraries record through the `metrics` facade (counters and histograms on the request paths);
//! this crate installs the Prometheus recorder, and at each scrape sets the gauges that describe
//! state (each partition replica's offsets, size and role; the node's replicas and disk) from the
//! node itself before rendering, and the consumer groups' from the whole cluster
//! (`NodeHandle::groups_report`: every node's groups and led high watermarks), so that a group's
//! lag is the same whichever node is scraped.
//!
//! Invariant: every gauge is set at each scrape (counters and histograms only on the request
//! paths), so that stale gauges can be dropped ([`STALE_GAUGE_TIMEOUT`]).
//! Invariant: a scrape reads the node's state and never waits on Raft or the disk beyond
//! `statvfs`; the only wait is for the other nodes' reports, each at most `REPORT_WAIT`.
//! Per-partition series (replicas, groups' offsets) are left out above `partition_series_max`,
//! so a scrape's size is bounded.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use quipu_node::{GroupId, NodeHandle};

/// Most partition replicas a node reports per-partition series for, by default.
pub const PARTITION_SERIES_MAX: usize = 10_000;

/// Buckets of request latency histograms, in seconds: every millisecond or so from 1 to 10 ms
/// (where a produce's p99 on a healthy cluster lies, so that a target such as "p99 under 5 ms"
/// can be read from them), coarser beyond.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.001_5, 0.002, 0.002_5, 0.003, 0.004, 0.005, 0.006, 0.008, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Buckets of `quipu_fsync_duration_seconds` (a fast disk syncs in tens of microseconds), and of
/// the steps of a produce (`quipu_produce_phase_seconds`, `quipu_raft_append_*_seconds`), some
/// of which take microseconds; as [`LATENCY_BUCKETS`], every millisecond or so from 1 to 10 ms.
const FSYNC_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.000_75, 0.001, 0.001_5, 0.002, 0.002_5, 0.003, 0.004,
    0.005, 0.006, 0.008, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Buckets of `quipu_produce_batch_bytes`: from one small record to the largest batches.
const BATCH_BYTES_BUCKETS: &[f64] = &[
    128.0,
    512.0,
    1_024.0,
    4_096.0,
    16_384.0,
    65_536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
];

/// Buckets of `quipu_produce_batches_per_entry`: one batch alone up to a full entry of small
/// batches.
const BATCHES_PER_ENTRY_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 256.0, 1_024.0];

/// Buckets of `quipu_shared_sync_logs`: one log alone up to thousands of busy partitions.
const SHARED_SYNC_LOGS_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1_024.0, 4_096.0,
];

/// Buckets of `quipu_raft_append_entries`: heartbeats (0), one entry, up to a catch-up's
/// largest appends.
const APPEND_ENTRIES_BUCKETS: &[f64] = &[
    0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1_024.0, 4_096.0,
];

/// How long a gauge not set again stays in the exposition. Every gauge is set at each scrape,
/// just before rendering, so one that was not is stale (a partition deleted, a replica that no
/// longer leads): it goes at the next scrape after this.
pub const STALE_GAUGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub mod catalog;
mod console;
mod listener;

pub use console::{RECORD_BYTES_MAX, RECORDS_MAX};
pub use listener::{CONNECTIONS_MAX, CONNECTIONS_PER_ADDRESS_MAX};

/// The histograms whose buckets are not [`LATENCY_BUCKETS`].
const BUCKETS_BY_METRIC: &[(&str, &[f64])] = &[
    ("quipu_fsync_duration_seconds", FSYNC_BUCKETS),
    ("quipu_produce_phase_seconds", FSYNC_BUCKETS),
    ("quipu_raft_append_round_trip_seconds", FSYNC_BUCKETS),
    ("quipu_raft_append_handling_seconds", FSYNC_BUCKETS),
    ("quipu_produce_batch_bytes", BATCH_BYTES_BUCKETS),
    ("quipu_produce_batches_per_entry", BATCHES_PER_ENTRY_BUCKETS),
    ("quipu_shared_sync_logs", SHARED_SYNC_LOGS_BUCKETS),
    ("quipu_raft_append_entries", APPEND_ENTRIES_BUCKETS),
];

/// Installs the process's Prometheus recorder (once per process), with every metric's help
/// text ([`catalog`]); what `serve` renders.
pub fn install_recorder() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let mut builder = PrometheusBuilder::new().set_buckets(LATENCY_BUCKETS)?;
    for (name, buckets) in BUCKETS_BY_METRIC {
        builder = builder.set_buckets_for_metric(Matcher::Full((*name).to_owned()), buckets)?;
    }
    let handle = builder
        .idle_timeout(
            metrics_util::MetricKindMask::GAUGE,
            Some(STALE_GAUGE_TIMEOUT),
        )
        .install_recorder()?;
    catalog::describe();
    Ok(handle)
}

/// The admin listener's settings.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Whether the node records and serves metrics (off: no recorder is installed and the
    /// request paths' recording is the facade's no-op).
    pub metrics: bool,
    /// Above this many partition replicas on the node, per-partition series are left out.
    pub partition_series_max: usize,
    /// Whether the web console is served (`/`, `/console/`, `/api/`).
    pub console: bool,
    /// Whether a signed-in user may act in the console (create topics, reset a group's
    /// offsets), as the client API authorizes that user; off: the console is read-only.
    pub console_actions: bool,
    /// How the console reaches this node's client API; `None`: it cannot (the API serves TLS
    /// and no CA is known to check its certificate), and its pages say so.
    pub console_api: Option<ConsoleApi>,
    /// TLS of the admin listener (`[admin.tls]`); `None`: plaintext, where the console offers
    /// no sign-in.
    pub tls: Option<Arc<quipu_tls::ServerTls>>,
}

/// How the console reaches this node's client API.
#[derive(Debug, Clone)]
pub struct ConsoleApi {
    /// The API's address (this node's; loopback when the API listens on every interface).
    pub addr: String,
    /// The TLS the API serves, as a client checks it (the CA); `None`: plaintext.
    pub tls: Option<Arc<quipu_tls::ClientTls>>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            metrics: true,
            partition_series_max: PARTITION_SERIES_MAX,
            console: true,
            console_actions: false,
            console_api: None,
            tls: None,
        }
    }
}

struct Shared {
    node: NodeHandle,
    /// `None`: metrics are off (no recorder installed).
    metrics: Option<PrometheusHandle>,
    config: AdminConfig,
}

/// Serves `/metrics`, `/healthz` and `/readyz` for `node` on `listener` until `shutdown`
/// completes; `metrics` is `None` when metrics are off (`/metrics` then answers 404 saying so).
pub async fn serve(
    node: NodeHandle,
    listener: tokio::net::TcpListener,
    metrics: Option<PrometheusHandle>,
    config: AdminConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The recorder keeps histogram samples until upkeep folds them in: without it a node that
    // nobody scrapes would hold every produce's sample.
    let upkeep = metrics.clone().map(|handle| {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(UPKEEP_INTERVAL);
            loop {
                ticker.tick().await;
                handle.run_upkeep();
            }
        })
    });
    let console = config.console.then(|| {
        console::routes(Arc::new(console::Console::new(
            node.clone(),
            console::Access {
                api: config.console_api.clone(),
                sign_in: config.tls.is_some(),
                actions: config.console_actions,
            },
        )))
    });
    let tls = config.tls.clone();
    let shared = Arc::new(Shared {
        node,
        metrics,
        config,
    });
    let mut app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(shared);
    if let Some(console) = console {
        app = app.merge(console);
    }
    let local = listener.local_addr()?;
    let limits = quipu_node::ConnectionLimits::new(
        listener::CONNECTIONS_MAX,
        listener::CONNECTIONS_PER_ADDRESS_MAX,
    );
    let app = app.into_make_service_with_connect_info::<listener::Peer>();
    let served = match tls {
        None => {
            let incoming = quipu_node::incoming::admitted(listener, limits, "admin");
            axum::serve(listener::AdmittedListener::new(incoming, local), app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(tls) => {
            let incoming = quipu_node::incoming::admitted_tls(listener, limits, tls, "admin");
            axum::serve(listener::AdmittedListener::new(incoming, local), app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    };
    if let Some(upkeep) = upkeep {
        upkeep.abort();
    }
    served
}

/// How often the recorder folds histogram samples in (and drops stale gauges).
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// `/readyz`: 200 and the node's state when it can serve, else 503 and why not (JSON).
async fn ready(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let readiness = shared.node.readiness();
    let reasons = readiness.not_ready_because();
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "ready": reasons.is_empty(),
        "node_id": readiness.node_id,
        "registered": readiness.registered,
        "controller_leader": readiness.controller_leader,
        "assigned_replicas": readiness.assigned_replicas,
        "open_replicas": readiness.open_replicas,
        "missing_replicas": readiness.missing_replicas,
        "failed_replicas": readiness.failed_replicas,
        "not_ready_because": reasons,
    });
    (
        status,
        [("content-type", "application/json")],
        format!("{body}\n"),
    )
}

/// `/metrics`: the state gauges set now, then everything rendered.
async fn scrape(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let Some(metrics) = &shared.metrics else {
        return (
            StatusCode::NOT_FOUND,
            [("content-type", "text/plain")],
            "metrics are off on this node ([admin] metrics = false)\n".to_owned(),
        );
    };
    record_state(&shared.node, &shared.config);
    record_groups(&shared.node.groups_report().await, &shared.config);
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4")],
        metrics.render(),
    )
}

fn count(n: usize) -> f64 {
    n as f64
}

fn flag(on: bool) -> f64 {
    if on { 1.0 } else { 0.0 }
}

/// Every state name a group can be in (classic and KIP-848 groups).
const GROUP_STATES: &[&str] = &[
    "Empty",
    "PreparingRebalance",
    "CompletingRebalance",
    "Assigning",
    "Reconciling",
    "Stable",
];

/// Sets the consumer groups' gauges from the cluster's report: the same on every node.
fn record_groups(report: &quipu_node::GroupsReport, config: &AdminConfig) {
    let complete = report.unanswered.is_empty() && !report.truncated;
    metrics::gauge!("quipu_group_report_complete").set(flag(complete));
    for state in GROUP_STATES {
        let n = report.groups.iter().filter(|g| g.state == *state).count();
        metrics::gauge!("quipu_groups", "state" => *state).set(count(n));
    }
    let offsets: usize = report.groups.iter().map(|g| g.offsets.len()).sum();
    let per_partition = offsets <= config.partition_series_max;
    metrics::gauge!("quipu_group_partition_series_enabled").set(flag(per_partition));
    for group in &report.groups {
        let name = group.group.clone();
        metrics::gauge!("quipu_group_members", "group" => name.clone())
            .set(f64::from(group.members));
        metrics::gauge!("quipu_group_generation", "group" => name.clone())
            .set(f64::from(group.generation));
        let lag: u64 = group.offsets.iter().filter_map(|o| o.lag).sum();
        metrics::gauge!("quipu_group_lag", "group" => name.clone()).set(lag as f64);
        if !per_partition {
            continue;
        }
        for offset in &group.offsets {
            let labels = [
                ("group", name.clone()),
                ("topic", offset.topic.clone()),
                ("partition", offset.partition.to_string()),
            ];
            metrics::gauge!("quipu_group_committed_offset", &labels).set(offset.committed as f64);
            if let Some(lag) = offset.lag {
                metrics::gauge!("quipu_group_partition_lag", &labels).set(lag as f64);
            }
        }
    }
}

/// Sets the gauges that describe the node's state.
fn record_state(node: &NodeHandle, config: &AdminConfig) {
    let readiness = node.readiness();
    metrics::gauge!("quipu_node_ready").set(if readiness.ready() { 1.0 } else { 0.0 });
    metrics::gauge!("quipu_replicas").set(count(readiness.open_replicas));
    metrics::gauge!("quipu_replicas_assigned").set(count(readiness.assigned_replicas));
    metrics::gauge!("quipu_replicas_failed").set(count(readiness.failed_replicas));
    metrics::gauge!("quipu_replicas_missing").set(count(readiness.missing_replicas));
    metrics::gauge!("quipu_controller_leader_known").set(
        if readiness.controller_leader.is_some() {
            1.0
        } else {
            0.0
        },
    );
    if let Ok(free) = quipu_node::free_bytes(node.data_dir()) {
        metrics::gauge!("quipu_disk_free_bytes").set(free as f64);
    }
    if let Ok(total) = quipu_node::total_bytes(node.data_dir()) {
        metrics::gauge!("quipu_disk_total_bytes").set(total as f64);
    }
    let groups = node.partitions();
    let per_partition = groups.len() <= config.partition_series_max;
    metrics::gauge!("quipu_partition_series_enabled").set(if per_partition { 1.0 } else { 0.0 });
    let mut leaders = 0usize;
    let mut quiescent = 0usize;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    // Each hosted group's topic and partition number, from one walk of the metadata.
    let names: std::collections::HashMap<u64, (String, u32)> = if per_partition {
        node.with_metadata(|m| {
            m.topics()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .zip(0u32..)
                        .map(|(p, number)| (p.group, (t.name.clone(), number)))
                })
                .collect()
        })
    } else {
        std::collections::HashMap::new()
    };
    for group in groups {
        let Some(replica) = node.partition(group) else {
            continue;
        };
        quiescent += usize::from(replica.is_quiescent());
        let leader = replica.is_leader();
        leaders += usize::from(leader);
        if !per_partition {
            continue;
        }
        let GroupId(id) = group;
        let Some((topic, number)) = names.get(&id).cloned() else {
            continue;
        };
        let labels = [("topic", topic), ("partition", number.to_string())];
        metrics::gauge!("quipu_partition_log_start_offset", &labels)
            .set(replica.log_start_offset().0 as f64);
        metrics::gauge!("quipu_partition_log_end_offset", &labels)
            .set(replica.log_end_offset().0 as f64);
        metrics::gauge!("quipu_partition_high_watermark", &labels)
            .set(replica.high_watermark().0 as f64);
        metrics::gauge!("quipu_partition_size_bytes", &labels).set(replica.size_bytes() as f64);
        metrics::gauge!("quipu_partition_leader", &labels).set(flag(leader));
        metrics::gauge!("quipu_partition_leader_epoch", &labels)
            .set(f64::from(replica.leader_epoch()));
        metrics::gauge!("quipu_partition_voter", &labels).set(flag(replica.is_voter()));
        metrics::gauge!("quipu_partition_quiescent", &labels).set(flag(replica.is_quiescent()));
        metrics::gauge!("quipu_partition_segments", &labels).set(count(replica.segment_count()));
        metrics::gauge!("quipu_partition_leader_changes", &labels)
            .set(replica.leader_changes() as f64);
        metrics::gauge!("quipu_partition_elections", &labels).set(replica.elections() as f64);
        let since_sync_ms = now_ms.saturating_sub(replica.last_sync_ms()).max(0);
        metrics::gauge!("quipu_partition_last_fsync_age_seconds", &labels)
            .set(since_sync_ms as f64 / 1000.0);
        if leader {
            for (follower, entries) in replica.follower_lag() {
                let labels = [
                    labels[0].clone(),
                    labels[1].clone(),
                    ("follower", follower.to_string()),
                ];
                metrics::gauge!("quipu_partition_follower_lag_entries", &labels)
                    .set(entries as f64);
                metrics::gauge!("quipu_partition_follower_lag_bytes", &labels)
                    .set(replica.estimated_bytes(entries) as f64);
            }
        }
    }
    metrics::gauge!("quipu_partitions_quiescent").set(count(quiescent));
    metrics::gauge!("quipu_partitions_led").set(count(leaders));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From 1 to 10 ms, a latency is placed within a millisecond or two (a p99 target of a few
    /// milliseconds can be read from the buckets), and every bucket list grows strictly.
    #[test]
    fn latency_buckets_resolve_milliseconds_up_to_ten() {
        for buckets in [LATENCY_BUCKETS, FSYNC_BUCKETS] {
            assert!(buckets.windows(2).all(|w| w[0] < w[1]), "{buckets:?}");
            let within: Vec<f64> = buckets
                .iter()
                .copied()
                .filter(|b| (0.001..=0.01).contains(b))
                .collect();
            assert_eq!(within.first(), Some(&0.001), "{buckets:?}");
            assert_eq!(within.last(), Some(&0.01), "{buckets:?}");
            for w in within.windows(2) {
                assert!(
                    w[1] - w[0] <= 0.002 + 1e-12,
                    "a gap from {} to {} s",
                    w[0],
                    w[1]
                );
            }
            assert!(within.contains(&0.005), "the 5 ms bound of a p99 target");
        }
        for (_, buckets) in BUCKETS_BY_METRIC {
            assert!(buckets.windows(2).all(|w| w[0] < w[1]), "{buckets:?}");
        }
    }

    /// The recorder takes every bucket list (each non-empty), and renders a histogram with the
    /// millisecond bounds.
    #[test]
    fn a_latency_histogram_renders_the_millisecond_bounds() {
        let recorder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .unwrap()
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!("quipu_test_seconds").record(0.0035);
        });
        let text = handle.render();
        assert!(
            text.contains("quipu_test_seconds_bucket{le=\"0.003\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("quipu_test_seconds_bucket{le=\"0.004\"} 1"),
            "{text}"
        );
    }
}
