//! The web console: a few static pages (`console/`, embedded in the binary: no separate
//! process, no Node.js) and the JSON they show, on the admin listener.
//!
//! The console shows what the cluster shows a client: the cluster, topics and records through
//! this node's client API (`quipu-client`, connected to the node's own API address), and
//! consumer groups with their lag from the cluster-wide report the metrics use
//! (`NodeHandle::groups_report`), filtered by the same ACLs. A visitor reads as an anonymous
//! client; one who signs in reads, and may act (create a topic, reset a group's offsets, when
//! `console_actions` is on), as that user: the page sends the user and password with each call
//! (`Authorization: Basic`, held in the page's memory only), and the console passes them on to
//! the client API, which authenticates the user against the SCRAM credentials and authorizes
//! each call with the ACLs, exactly as for any client of the API.
//!
//! Invariants:
//! - A password is read only on a TLS admin listener and passed on only to a TLS client API
//!   (checked against a known CA); otherwise a sign-in is refused, never sent in the clear.
//! - The console never answers with `WWW-Authenticate: Basic`, so a browser never keeps the
//!   credentials itself and another site's page cannot act with them (no ambient authority:
//!   every action carries its credentials in a header only the console's own script sets).
//! - A failed sign-in from an address delays that address's next sign-in by
//!   [`FAILED_SIGN_IN_DELAY`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use quipu_client::{Client, ClientConfig, ClientError, Consumer, Credentials, StartAt};
use quipu_meta::acls::{Operation, ResourceType};
use quipu_node::{NodeHandle, Principal};
use serde_json::{Value, json};

use crate::ConsoleApi;

/// Most records one browse returns.
pub const RECORDS_MAX: usize = 500;
/// Most bytes of keys, values and headers one browse returns.
pub const RECORD_BYTES_MAX: usize = 4 * 1024 * 1024;
/// How long one browse reads at most.
const BROWSE_TIME_MAX: Duration = Duration::from_secs(5);
/// How long a failed sign-in delays the next from the same address.
pub const FAILED_SIGN_IN_DELAY: Duration = Duration::from_secs(1);
/// Most signed-in users whose API clients are kept (the oldest goes first).
const SIGNED_IN_CLIENTS_MAX: usize = 16;
/// Most addresses whose failed sign-ins are remembered.
const PENALTIES_MAX: usize = 4096;
/// Longest user name or password read from a sign-in.
const CREDENTIAL_BYTES_MAX: usize = 1024;

/// What the console may do on this node.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    /// How to reach the node's client API; `None`: it cannot (TLS without a known CA).
    pub api: Option<ConsoleApi>,
    /// Whether a visitor may sign in (the admin listener serves TLS).
    pub sign_in: bool,
    /// Whether a signed-in user may act.
    pub actions: bool,
}

/// A user and password from a request's `Authorization: Basic` header.
#[derive(Clone, PartialEq, Eq, Hash)]
struct SignIn {
    user: String,
    password: String,
}

/// The console's state: the node, and clients of its API made on first use (an anonymous one,
/// and one per recently signed-in user).
pub(crate) struct Console {
    node: NodeHandle,
    access: Access,
    anonymous: tokio::sync::OnceCell<Client>,
    signed_in: Mutex<Vec<(SignIn, Client)>>,
    /// Per address, until when its next sign-in waits.
    penalties: Mutex<HashMap<IpAddr, tokio::time::Instant>>,
}

impl Console {
    pub(crate) fn new(node: NodeHandle, access: Access) -> Console {
        Console {
            node,
            access,
            anonymous: tokio::sync::OnceCell::new(),
            signed_in: Mutex::new(Vec::new()),
            penalties: Mutex::new(HashMap::new()),
        }
    }

    fn api(&self) -> Result<&ConsoleApi, Failure> {
        self.access.api.as_ref().ok_or_else(|| {
            Failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "the console cannot read this node's client API: it serves TLS and no CA is known to check its certificate (set [admin] console_ca_file or [api.tls] ca_file)".into(),
            )
        })
    }

    async fn connect(&self, credentials: Option<Credentials>) -> Result<Client, Failure> {
        let api = self.api()?;
        let config = ClientConfig {
            retry_deadline: Duration::from_secs(5),
            tls: api.tls.clone(),
            credentials,
            ..ClientConfig::default()
        };
        Client::connect_with([api.addr.clone()], config)
            .await
            .map_err(Failure::from)
    }

    /// The client a request reads and acts through: the signed-in user's, or the anonymous
    /// one.
    async fn client(&self, who: &Visitor) -> Result<Client, Failure> {
        let Some(sign_in) = &who.sign_in else {
            return self
                .anonymous
                .get_or_try_init(|| self.connect(None))
                .await
                .cloned();
        };
        if let Some((_, client)) = lock(&self.signed_in).iter().find(|(s, _)| s == sign_in) {
            return Ok(client.clone());
        }
        let client = self
            .connect(Some(Credentials {
                user: sign_in.user.clone(),
                password: sign_in.password.clone(),
            }))
            .await?;
        let mut kept = lock(&self.signed_in);
        if kept.len() >= SIGNED_IN_CLIENTS_MAX {
            kept.remove(0);
        }
        kept.push((sign_in.clone(), client.clone()));
        Ok(client)
    }

    /// Reads who a request comes from: anonymous, or a user and password, refused where a
    /// password may not be read or passed on. Waits out the address's failed sign-in delay.
    async fn visitor(&self, headers: &HeaderMap, peer: SocketAddr) -> Result<Visitor, Failure> {
        let Some(header) = headers.get(axum::http::header::AUTHORIZATION) else {
            return Ok(Visitor { sign_in: None });
        };
        if !self.access.sign_in {
            return Err(Failure(
                StatusCode::BAD_REQUEST,
                "signing in needs TLS on the admin listener ([admin.tls]): a password must not cross the network in the clear".into(),
            ));
        }
        if self.api()?.tls.is_none() {
            return Err(Failure(
                StatusCode::BAD_REQUEST,
                "signing in needs TLS on the client API ([api.tls]): the console signs in to it with the password".into(),
            ));
        }
        let sign_in = basic(header.as_bytes()).ok_or_else(|| {
            Failure(
                StatusCode::BAD_REQUEST,
                "the Authorization header is not Basic base64(user:password)".into(),
            )
        })?;
        let until = lock(&self.penalties).get(&peer.ip()).copied();
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
        Ok(Visitor {
            sign_in: Some(sign_in),
        })
    }

    /// Turns a failure of a signed-in call into the answer: a refused password delays the
    /// address's next sign-in and forgets the client made with it.
    fn failed(&self, who: &Visitor, peer: SocketAddr, failure: Failure) -> Failure {
        if let (StatusCode::UNAUTHORIZED, Some(sign_in)) = (failure.0, &who.sign_in) {
            lock(&self.signed_in).retain(|(s, _)| s != sign_in);
            let now = tokio::time::Instant::now();
            let mut penalties = lock(&self.penalties);
            if penalties.len() >= PENALTIES_MAX {
                penalties.retain(|_, until| *until > now);
            }
            if penalties.len() < PENALTIES_MAX {
                penalties.insert(peer.ip(), now + FAILED_SIGN_IN_DELAY);
            }
            tracing::warn!(%peer, user = %sign_in.user, "console sign-in refused");
        }
        failure
    }

    /// Whether `who` may do `operation` on a resource, as the client API would decide for the
    /// console's connection (from this node).
    fn may(&self, who: &Visitor, operation: Operation, resource: ResourceType, name: &str) -> bool {
        let host = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let principal = match &who.sign_in {
            Some(sign_in) => Principal::user(&sign_in.user, host),
            None => Principal::anonymous(host),
        };
        self.node.authorize(&principal, operation, resource, name)
    }

    /// A signed-in user's check with the client API (the groups pages read the node's report,
    /// not the API): a wrong password is refused here as there.
    async fn authenticate(&self, who: &Visitor) -> Result<(), Failure> {
        if who.sign_in.is_some() {
            self.client(who).await?.describe_cluster().await?;
        }
        Ok(())
    }
}

/// Who a request comes from.
struct Visitor {
    sign_in: Option<SignIn>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `Basic base64(user:password)`, within [`CREDENTIAL_BYTES_MAX`].
fn basic(header: &[u8]) -> Option<SignIn> {
    let encoded = header.strip_prefix(b"Basic ")?;
    if encoded.len() > 4 * CREDENTIAL_BYTES_MAX {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    (!user.is_empty() && !password.is_empty()).then(|| SignIn {
        user: user.to_owned(),
        password: password.to_owned(),
    })
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
        .route("/api/session", get(session))
        .route("/api/cluster", get(cluster))
        .route("/api/topics", get(topics).post(create_topic))
        .route("/api/topics/{name}", get(topic))
        .route("/api/groups", get(groups))
        .route("/api/groups/{name}", get(group))
        .route("/api/groups/{name}/offsets", post(reset_offsets))
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
            ClientError::NotAuthorized(_) => StatusCode::FORBIDDEN,
            ClientError::NotAuthenticated(_) => StatusCode::UNAUTHORIZED,
            ClientError::TopicExists(_)
            | ClientError::GroupNotEmpty(_)
            | ClientError::UnknownMember(_)
            | ClientError::FencedMember(_)
            | ClientError::GroupRefused(_) => StatusCode::CONFLICT,
            ClientError::LimitExceeded(_) | ClientError::MessageTooLarge(_) => {
                StatusCode::BAD_REQUEST
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

/// A request's visitor and address, read before its handler runs.
struct Caller {
    who: Visitor,
    peer: SocketAddr,
}

impl axum::extract::FromRequestParts<Arc<Console>> for Caller {
    type Rejection = Failure;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        console: &Arc<Console>,
    ) -> Result<Caller, Failure> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<crate::listener::Peer>>()
            .map_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), |c| c.0.0);
        let who = console.visitor(&parts.headers, peer).await?;
        Ok(Caller { who, peer })
    }
}

impl Console {
    /// The client a signed-in user acts through, once actions are on.
    async fn acting(&self, who: &Visitor) -> Result<Client, Failure> {
        if !self.access.actions {
            return Err(Failure(
                StatusCode::FORBIDDEN,
                "the console is read-only on this node ([admin] console_actions = false)".into(),
            ));
        }
        if who.sign_in.is_none() {
            return Err(Failure(
                StatusCode::UNAUTHORIZED,
                "sign in to act: actions are done as a user the cluster knows".into(),
            ));
        }
        self.client(who).await
    }
}

/// `/api/session`: who the caller is and what the console lets them do.
async fn session(State(console): State<Arc<Console>>, caller: Caller) -> Result<Response, Failure> {
    let checked = console.authenticate(&caller.who).await;
    checked.map_err(|f| console.failed(&caller.who, caller.peer, f))?;
    let api_tls = console.access.api.as_ref().is_some_and(|a| a.tls.is_some());
    Ok(ok(&json!({
        "user": caller.who.sign_in.as_ref().map(|s| s.user.clone()),
        "sign_in": console.access.sign_in && api_tls,
        "actions": console.access.actions,
    })))
}

/// A topic to create, as the console's form sends it.
#[derive(serde::Deserialize)]
struct NewTopic {
    name: String,
    partitions: u32,
    replication_factor: u32,
}

async fn create_topic(
    State(console): State<Arc<Console>>,
    caller: Caller,
    axum::Json(topic): axum::Json<NewTopic>,
) -> Result<Response, Failure> {
    let created = async {
        console
            .acting(&caller.who)
            .await?
            .create_topic(
                &topic.name,
                topic.partitions,
                topic.replication_factor,
                quipu_client::TopicConfig::default(),
            )
            .await?;
        Ok(json_answer(
            StatusCode::CREATED,
            &json!({ "created": topic.name }),
        ))
    };
    created
        .await
        .map_err(|f| console.failed(&caller.who, caller.peer, f))
}

/// Where to move a group's offsets, as the console's form sends it.
#[derive(serde::Deserialize)]
struct Reset {
    topic: String,
    /// One partition; absent: every partition of the topic.
    partition: Option<u32>,
    /// `earliest`, `latest`, `offset` (with `offset`) or `time` (with `timestamp_ms`).
    to: String,
    offset: Option<u64>,
    timestamp_ms: Option<i64>,
}

async fn reset_offsets(
    State(console): State<Arc<Console>>,
    caller: Caller,
    Path(group): Path<String>,
    axum::Json(reset): axum::Json<Reset>,
) -> Result<Response, Failure> {
    let bad = |message: &str| Failure(StatusCode::BAD_REQUEST, message.to_owned());
    let to = match (reset.to.as_str(), reset.offset, reset.timestamp_ms) {
        ("earliest", _, _) => StartAt::Earliest,
        ("latest", _, _) => StartAt::Latest,
        ("offset", Some(offset), _) => StartAt::Offset(offset),
        ("time", _, Some(ms)) => StartAt::Timestamp(ms),
        ("offset", None, _) => return Err(bad("to offset: the offset is missing")),
        ("time", _, None) => return Err(bad("to time: timestamp_ms is missing")),
        _ => return Err(bad("to must be earliest, latest, offset or time")),
    };
    let moved = async {
        let client = console.acting(&caller.who).await?;
        let plan = client
            .plan_offset_reset(&group, &reset.topic, reset.partition, to)
            .await?;
        let results = client.reset_offsets(&group, &reset.topic, &plan).await?;
        if let Some(error) = results.into_iter().flatten().next() {
            return Err(Failure(
                StatusCode::CONFLICT,
                format!("an offset was not committed: {error}"),
            ));
        }
        let offsets: Vec<Value> = plan
            .iter()
            .map(|m| json!({ "partition": m.partition, "previous": m.current, "offset": m.target }))
            .collect();
        Ok(ok(
            &json!({ "group": group, "topic": reset.topic, "offsets": offsets }),
        ))
    };
    moved
        .await
        .map_err(|f| console.failed(&caller.who, caller.peer, f))
}

async fn cluster(State(console): State<Arc<Console>>, caller: Caller) -> Result<Response, Failure> {
    let answer = cluster_json(&console, &caller.who).await;
    answer.map_err(|f| console.failed(&caller.who, caller.peer, f))
}

async fn cluster_json(console: &Console, who: &Visitor) -> Result<Response, Failure> {
    let cluster = console.client(who).await?.describe_cluster().await?;
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

async fn topics(State(console): State<Arc<Console>>, caller: Caller) -> Result<Response, Failure> {
    let listed = console.client(&caller.who).await;
    let listed = match listed {
        Ok(client) => client
            .list_topics_including(true)
            .await
            .map_err(Failure::from),
        Err(failure) => Err(failure),
    };
    let topics = listed.map_err(|f| console.failed(&caller.who, caller.peer, f))?;
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
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, Failure> {
    let described = console.client(&caller.who).await;
    let described = match described {
        Ok(client) => client
            .describe_topic_everywhere(&name)
            .await
            .map_err(Failure::from),
        Err(failure) => Err(failure),
    };
    let topic = described.map_err(|f| console.failed(&caller.who, caller.peer, f))?;
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

async fn groups(State(console): State<Arc<Console>>, caller: Caller) -> Result<Response, Failure> {
    let checked = console.authenticate(&caller.who).await;
    checked.map_err(|f| console.failed(&caller.who, caller.peer, f))?;
    let report = console.node.groups_report().await;
    let groups: Vec<Value> = report
        .groups
        .iter()
        .filter(|g| {
            console.may(
                &caller.who,
                Operation::Describe,
                ResourceType::Group,
                &g.group,
            )
        })
        .map(|g| group_json(g, false))
        .collect();
    Ok(ok(&json!({
        "complete": report.unanswered.is_empty() && !report.truncated,
        "groups": groups,
    })))
}

async fn group(
    State(console): State<Arc<Console>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, Failure> {
    let checked = console.authenticate(&caller.who).await;
    checked.map_err(|f| console.failed(&caller.who, caller.peer, f))?;
    let not_found = || Failure(StatusCode::NOT_FOUND, format!("no consumer group {name:?}"));
    if !console.may(&caller.who, Operation::Describe, ResourceType::Group, &name) {
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
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let answer = browse(&console, &caller.who, &query).await;
    answer.map_err(|f| console.failed(&caller.who, caller.peer, f))
}

async fn browse(
    console: &Console,
    who: &Visitor,
    query: &HashMap<String, String>,
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
    let client = console.client(who).await?;
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
    let mut consumer = Consumer::new(&client, topic, partition, start, false).await?;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests unwrap

    use super::*;

    #[test]
    fn basic_credentials_are_read_within_bounds() {
        let header = |text: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(text)
            )
        };
        let read = basic(header("alice:pa:ss word").as_bytes()).unwrap();
        assert_eq!(
            (read.user.as_str(), read.password.as_str()),
            ("alice", "pa:ss word")
        );
        for refused in ["alice", ":pw", "alice:"] {
            assert!(basic(header(refused).as_bytes()).is_none(), "{refused}");
        }
        assert!(basic(b"Bearer abc").is_none());
        assert!(basic(b"Basic not base64!").is_none());
        let long = format!("alice:{}", "x".repeat(4 * CREDENTIAL_BYTES_MAX));
        assert!(basic(header(&long).as_bytes()).is_none());
    }
}
