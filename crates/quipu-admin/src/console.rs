//! The web console: a few static pages (`console/`, embedded in the binary: no separate
//! process, no Node.js) and the read-only JSON they show, on the admin listener.
//!
//! The console reads what the cluster shows a client: the cluster, topics and records through
//! this node's client API (`quipu-client`, connected to `api_addr` as an anonymous client, so
//! ACLs apply to it as to any anonymous client), and consumer groups with their lag from the
//! cluster-wide report the metrics use (`NodeHandle::groups_report`), filtered by the same ACLs.
//! It changes nothing.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use quipu_client::{Client, ClientConfig, ClientError, Consumer, StartAt};
use quipu_meta::acls::{Operation, ResourceType};
use quipu_node::{NodeHandle, Principal};
use serde_json::{Value, json};

/// Most records one browse returns.
pub const RECORDS_MAX: usize = 500;
/// Most bytes of keys, values and headers one browse returns.
pub const RECORD_BYTES_MAX: usize = 4 * 1024 * 1024;
/// How long one browse reads at most.
const BROWSE_TIME_MAX: Duration = Duration::from_secs(5);

/// The console's state: the node, and a client of its API made on first use.
pub(crate) struct Console {
    node: NodeHandle,
    /// The client API to read through; `None`: the node serves its API over TLS, which the
    /// console does not read through yet.
    api: Option<String>,
    client: tokio::sync::OnceCell<Client>,
}

impl Console {
    pub(crate) fn new(node: NodeHandle, api: Option<String>) -> Console {
        Console {
            node,
            api,
            client: tokio::sync::OnceCell::new(),
        }
    }

    async fn client(&self) -> Result<&Client, Failure> {
        let api = self.api.as_ref().ok_or_else(|| {
            Failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "the console reads through the client API, which serves TLS on this node: not supported yet".into(),
            )
        })?;
        self.client
            .get_or_try_init(|| async {
                let config = ClientConfig {
                    retry_deadline: Duration::from_secs(5),
                    ..ClientConfig::default()
                };
                Client::connect_with([api.clone()], config).await
            })
            .await
            .map_err(Failure::from)
    }

    /// What an anonymous client of this node may do.
    fn may(&self, operation: Operation, resource: ResourceType, name: &str) -> bool {
        let anonymous = Principal::anonymous(IpAddr::V4(Ipv4Addr::LOCALHOST));
        self.node.authorize(&anonymous, operation, resource, name)
    }
}

/// The console's routes.
pub(crate) fn routes(console: Arc<Console>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { page(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/console/",
            get(|| async { page(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/console/app.js",
            get(|| async { page(APP, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/console/style.css",
            get(|| async { page(STYLE, "text/css; charset=utf-8") }),
        )
        .route("/api/cluster", get(cluster))
        .route("/api/topics", get(topics))
        .route("/api/topics/{name}", get(topic))
        .route("/api/groups", get(groups))
        .route("/api/groups/{name}", get(group))
        .route("/api/records", get(records))
        .with_state(console)
}

const INDEX: &str = include_str!("../console/index.html");
const APP: &str = include_str!("../console/app.js");
const STYLE: &str = include_str!("../console/style.css");

fn page(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            ("content-type", content_type),
            ("cache-control", "no-cache"),
            ("x-content-type-options", "nosniff"),
            (
                "content-security-policy",
                "default-src 'self'; frame-ancestors 'none'",
            ),
        ],
        body,
    )
        .into_response()
}

/// An answer that is not a success: its status and a message the page shows.
#[derive(Debug)]
struct Failure(StatusCode, String);

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Failure {
        let status = match &error {
            ClientError::UnknownTopic(_)
            | ClientError::UnknownPartition(_)
            | ClientError::UnknownGroup(_) => StatusCode::NOT_FOUND,
            ClientError::InvalidArgument(_) | ClientError::OffsetOutOfRange(_) => {
                StatusCode::BAD_REQUEST
            }
            ClientError::NotAuthorized(_) | ClientError::NotAuthenticated(_) => {
                StatusCode::FORBIDDEN
            }
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        Failure(status, error.to_string())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut message = self.1;
        message.truncate(1024);
        json_answer(self.0, &json!({ "error": message }))
    }
}

fn json_answer(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [
            ("content-type", "application/json"),
            ("cache-control", "no-store"),
        ],
        format!("{value}\n"),
    )
        .into_response()
}

fn ok(value: &Value) -> Response {
    json_answer(StatusCode::OK, value)
}

async fn cluster(State(console): State<Arc<Console>>) -> Result<Response, Failure> {
    let cluster = console.client().await?.describe_cluster().await?;
    let nodes: Vec<Value> = cluster
        .nodes
        .iter()
        .map(|n| {
            json!({
                "node_id": n.node_id,
                "state": n.state,
                "controller_role": n.controller_role,
                "alive": n.alive,
                "api_addr": n.api_addr,
                "kafka_addr": n.kafka_addr,
                "rack": n.rack,
                "replicas": n.replicas,
                "preferred_leaders": n.preferred_leaders,
            })
        })
        .collect();
    Ok(ok(&json!({
        "answering_node": cluster.answering_node,
        "controller_leader": cluster.controller_leader,
        "nodes": nodes,
    })))
}

async fn topics(State(console): State<Arc<Console>>) -> Result<Response, Failure> {
    let topics = console.client().await?.list_topics_including(true).await?;
    let topics: Vec<Value> = topics
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "partitions": t.partitions.len(),
                "replication_factor": t.replication_factor,
                "internal": t.internal,
            })
        })
        .collect();
    Ok(ok(&Value::Array(topics)))
}

async fn topic(
    State(console): State<Arc<Console>>,
    Path(name): Path<String>,
) -> Result<Response, Failure> {
    let topic = console
        .client()
        .await?
        .describe_topic_everywhere(&name)
        .await?;
    let partitions: Vec<Value> = topic
        .partitions
        .iter()
        .map(|p| {
            json!({
                "partition": p.partition,
                "leader": p.leader,
                "replicas": p.replicas,
                "log_start_offset": p.log_start_offset,
                "high_watermark": p.high_watermark,
                "log_end_offset": p.log_end_offset,
            })
        })
        .collect();
    let config: Vec<Value> = topic
        .effective_config
        .iter()
        .map(|c| json!({ "name": c.name, "value": c.value, "is_default": c.is_default }))
        .collect();
    Ok(ok(&json!({
        "name": topic.name,
        "replication_factor": topic.replication_factor,
        "internal": topic.internal,
        "partitions": partitions,
        "config": config,
    })))
}

/// A group as the console shows it; `offsets` only for one group's page.
fn group_json(group: &quipu_node::GroupReport, offsets: bool) -> Value {
    let lag: u64 = group.offsets.iter().filter_map(|o| o.lag).sum();
    let mut value = json!({
        "group": group.group,
        "protocol": group.protocol,
        "state": group.state,
        "members": group.members,
        "generation": group.generation,
        "lag": lag,
    });
    if offsets {
        value["offsets"] = group
            .offsets
            .iter()
            .map(|o| {
                json!({
                    "topic": o.topic,
                    "partition": o.partition,
                    "committed": o.committed,
                    "lag": o.lag,
                })
            })
            .collect();
    }
    value
}

async fn groups(State(console): State<Arc<Console>>) -> Response {
    let report = console.node.groups_report().await;
    let groups: Vec<Value> = report
        .groups
        .iter()
        .filter(|g| console.may(Operation::Describe, ResourceType::Group, &g.group))
        .map(|g| group_json(g, false))
        .collect();
    ok(&json!({
        "complete": report.unanswered.is_empty() && !report.truncated,
        "groups": groups,
    }))
}

async fn group(
    State(console): State<Arc<Console>>,
    Path(name): Path<String>,
) -> Result<Response, Failure> {
    let not_found = || Failure(StatusCode::NOT_FOUND, format!("no consumer group {name:?}"));
    if !console.may(Operation::Describe, ResourceType::Group, &name) {
        return Err(not_found());
    }
    let report = console.node.groups_report().await;
    let group = report
        .groups
        .iter()
        .find(|g| g.group == name)
        .ok_or_else(not_found)?;
    Ok(ok(&group_json(group, true)))
}

async fn records(
    State(console): State<Arc<Console>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let bad = |message: String| Failure(StatusCode::BAD_REQUEST, message);
    let topic = query
        .get("topic")
        .ok_or_else(|| bad("topic is missing".into()))?;
    let number = |key: &str| -> Result<Option<i64>, Failure> {
        query
            .get(key)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| bad(format!("{key} must be a whole number")))
            })
            .transpose()
    };
    let partition = u32::try_from(number("partition")?.unwrap_or(0))
        .map_err(|_| bad("partition must be 0 or more".into()))?;
    let limit = number("limit")?.unwrap_or(50);
    let limit = usize::try_from(limit)
        .ok()
        .filter(|l| (1..=RECORDS_MAX).contains(l))
        .ok_or_else(|| bad(format!("limit must be 1 to {RECORDS_MAX}")))?;
    let start = match (number("offset")?, number("timestamp")?) {
        (_, Some(ms)) => StartAt::Timestamp(ms),
        (Some(offset), None) => StartAt::Offset(
            u64::try_from(offset).map_err(|_| bad("offset must be 0 or more".into()))?,
        ),
        (None, None) => StartAt::Earliest,
    };
    let client = console.client().await?;
    // Where the partition starts and ends now: an offset outside is moved inside, as a
    // consumer with auto.offset.reset would.
    let first = client
        .list_offsets(topic, partition, StartAt::Earliest)
        .await?;
    let end = client
        .list_offsets(topic, partition, StartAt::Latest)
        .await?;
    let start = match start {
        StartAt::Offset(offset) => StartAt::Offset(offset.clamp(first, end)),
        other => other,
    };
    let mut consumer = Consumer::new(client, topic, partition, start, false).await?;
    let mut records = Vec::new();
    let mut bytes = 0usize;
    let deadline = tokio::time::Instant::now() + BROWSE_TIME_MAX;
    let b64 = |b: &Option<bytes::Bytes>| {
        b.as_ref()
            .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
    };
    'read: while records.len() < limit && bytes < RECORD_BYTES_MAX {
        let Ok(batch) = tokio::time::timeout_at(deadline, consumer.next_batch()).await else {
            break; // what was read so far
        };
        let Some(batch) = batch? else {
            break;
        };
        for record in batch {
            if records.len() == limit || bytes >= RECORD_BYTES_MAX {
                break 'read;
            }
            bytes += record.key.as_ref().map_or(0, bytes::Bytes::len)
                + record.value.as_ref().map_or(0, bytes::Bytes::len)
                + record
                    .headers
                    .iter()
                    .map(|(k, v)| k.len() + v.as_ref().map_or(0, bytes::Bytes::len))
                    .sum::<usize>();
            records.push(json!({
                "offset": record.offset,
                "timestamp_ms": record.timestamp_ms,
                "key": b64(&record.key),
                "value": b64(&record.value),
                "headers": record.headers.iter().map(|(k, v)| json!({ "key": k, "value": b64(v) })).collect::<Vec<_>>(),
            }));
        }
    }
    let next = records
        .last()
        .and_then(|r| r["offset"].as_u64())
        .map(|o| o + 1)
        .filter(|&next| next < end);
    Ok(ok(&json!({
        "log_start_offset": first,
        "high_watermark": end,
        "records": records,
        "next_offset": next,
    })))
}
