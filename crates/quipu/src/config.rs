//! `quipu server` configuration: defaults, the TOML file, `QUIPU_*` environment variables and
//! flags, in increasing precedence. Every key is listed with its default and unit in
//! `deploy/quipu.toml`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use quipu_meta::TopicKey;
use quipu_node::NodeConfig;
use quipu_storage::LogConfig;
use serde::Deserialize;

/// Flags and environment of `quipu server`.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// TOML configuration file (keys: deploy/quipu.toml).
    #[arg(long, env = "QUIPU_CONFIG")]
    config: Option<PathBuf>,
    /// This node's id, unique in the cluster [default: 1].
    #[arg(long, env = "QUIPU_NODE_ID")]
    node_id: Option<u64>,
    /// Data directory [default: ./quipu-data].
    #[arg(long, env = "QUIPU_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the node-to-node Raft transport [default: 127.0.0.1:7001].
    #[arg(long, env = "QUIPU_LISTEN")]
    listen: Option<SocketAddr>,
    /// Address other nodes reach this node's Raft transport at, HOST:PORT (a DNS name in a
    /// container) [default: the listen address].
    #[arg(long, env = "QUIPU_ADVERTISED")]
    advertised: Option<String>,
    /// Address of the client gRPC API [default: 127.0.0.1:7101].
    #[arg(long, env = "QUIPU_API_LISTEN")]
    api_listen: Option<SocketAddr>,
    /// Address clients are told to reach this node's API at [default: the API listen address].
    #[arg(long, env = "QUIPU_API_ADVERTISED")]
    api_advertised: Option<String>,
    /// Address of the Kafka listener [default: 127.0.0.1:9092].
    #[arg(long, env = "QUIPU_KAFKA_LISTEN")]
    kafka_listen: Option<SocketAddr>,
    /// Address of the HTTP admin listener: /metrics, /healthz, /readyz [default: 127.0.0.1:7201].
    #[arg(long, env = "QUIPU_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// Address Kafka clients are told to reach this node at, HOST:PORT [default: the Kafka
    /// listen address].
    #[arg(long, env = "QUIPU_KAFKA_ADVERTISED")]
    kafka_advertised: Option<String>,
    /// Whether Kafka Metadata requests create unknown topics [default: false].
    #[arg(long, env = "QUIPU_AUTO_CREATE_TOPICS")]
    auto_create_topics: Option<bool>,
    /// Initial controller voters, as ID@HOST:PORT separated by commas [default: this node alone].
    #[arg(long, env = "QUIPU_VOTERS", value_delimiter = ',')]
    voters: Vec<String>,
    /// Joins an existing cluster through any member's Raft address, HOST:PORT, instead of
    /// forming one with --voters (the controller admits this node; it needs its own --node-id).
    #[arg(long, env = "QUIPU_JOIN", conflicts_with = "voters")]
    join: Option<String>,
    /// This node's rack (failure domain): replicas of a partition go to distinct racks where
    /// there are enough [default: none].
    #[arg(long, env = "QUIPU_RACK")]
    rack: Option<String>,
    /// Threads that run the node's async work (network, Raft, requests), 1 to 1024 [default:
    /// one per core]. Blocking disk work (appends, fsyncs) runs on other threads.
    #[arg(long, env = "QUIPU_WORKER_THREADS")]
    worker_threads: Option<usize>,
}

/// The `[cluster]` table: the cluster's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFile {
    controller_voters: Option<usize>,
    leader_rebalance_interval_ms: Option<u64>,
    move_bytes_per_sec: Option<u64>,
}

/// The `[log]` table: per-partition storage settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogFile {
    segment_bytes_max: Option<u64>,
    segment_ms_max: Option<i64>,
    entry_bytes_max: Option<u64>,
    index_interval_bytes: Option<u64>,
    index_bytes_max: Option<u64>,
    preallocate_bytes: Option<u64>,
    recycle_segments: Option<bool>,
    /// `"always"`, `"never"`, or a number of milliseconds.
    fsync: Option<toml::Value>,
    /// `"file"` or `"filesystem"`.
    sync_scope: Option<String>,
    retention_bytes: Option<i64>,
    retention_ms: Option<i64>,
    retention_check_interval_ms: Option<u64>,
    message_timestamp_before_max_ms: Option<i64>,
    message_timestamp_after_max_ms: Option<i64>,
    /// `"CreateTime"` or `"LogAppendTime"`.
    message_timestamp_type: Option<String>,
}

/// The `[api]` table: limits of the client gRPC API.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiFile {
    connections_max: Option<usize>,
    connections_per_address_max: Option<usize>,
    streams_per_connection_max: Option<u32>,
    tls: Option<TlsFile>,
}

/// A listener's `tls` table (`[api.tls]`, `[kafka.tls]`): PEM files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: PathBuf,
    key_file: PathBuf,
    ca_file: Option<PathBuf>,
    /// `"none"`, `"requested"` or `"required"`.
    client_auth: Option<String>,
}

/// The `[transport]` table: the node-to-node Raft transport.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransportFile {
    tls: Option<TransportTlsFile>,
}

/// `[transport.tls]`: mutual TLS between nodes (client certificates are always required).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransportTlsFile {
    cert_file: PathBuf,
    key_file: PathBuf,
    ca_file: PathBuf,
}

/// A listener's TLS from its table: the files are read now, so a broken one stops the server
/// at start with a message naming the key.
fn listener_tls(
    table: &str,
    file: Option<&TlsFile>,
) -> anyhow::Result<Option<std::sync::Arc<quipu_tls::ServerTls>>> {
    let Some(file) = file else {
        return Ok(None);
    };
    let client_auth: quipu_tls::ClientAuth = match &file.client_auth {
        None => quipu_tls::ClientAuth::None,
        Some(text) => text
            .parse()
            .map_err(|e| anyhow::anyhow!("{table}.client_auth: {e}"))?,
    };
    let alpn: &[&[u8]] = if table == "api.tls" { &[b"h2"] } else { &[] };
    let tls = quipu_tls::ServerTls::new(
        quipu_tls::ServerFiles {
            cert: file.cert_file.clone(),
            key: file.key_file.clone(),
            ca: file.ca_file.clone(),
        },
        client_auth,
        alpn,
    )
    .with_context(|| format!("invalid [{table}]"))?;
    Ok(Some(tls))
}

/// The `[kafka]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KafkaFile {
    connections_max: Option<usize>,
    connections_per_address_max: Option<usize>,
    request_bytes_max: Option<usize>,
    requests_in_flight_max: Option<usize>,
    queued_request_bytes_max: Option<usize>,
    connections_max_idle_ms: Option<u64>,
    auto_create_topics: Option<bool>,
    default_partitions: Option<usize>,
    default_replication_factor: Option<usize>,
    tls: Option<TlsFile>,
    /// SASL mechanism names.
    sasl_mechanisms: Option<Vec<String>>,
}

/// The `[limits]` table: node-wide bounds on what clients make the node hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    produce_bytes_in_flight_max: Option<u64>,
    topics_max: Option<usize>,
    partitions_per_node_max: Option<usize>,
    disk_reserve_bytes: Option<u64>,
}

/// The `[producers]` table: what each partition keeps of its idempotent producers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProducersFile {
    per_partition_max: Option<usize>,
    expiration_ms: Option<i64>,
}

/// The `[groups]` table: consumer groups.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupsFile {
    offsets_partitions: Option<usize>,
    offsets_replication_factor: Option<usize>,
    session_timeout_min_ms: Option<i32>,
    session_timeout_max_ms: Option<i32>,
    initial_rebalance_delay_ms: Option<i32>,
    members_max: Option<usize>,
    consumer_session_timeout_ms: Option<i32>,
    consumer_heartbeat_interval_ms: Option<i32>,
}

/// The `[authorization]` table: access control on both client listeners.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizationFile {
    enabled: Option<bool>,
    super_users: Option<Vec<String>>,
}

/// `[authorization]`, checked: superusers are `User:NAME` principals, each named once.
fn authorization(file: &AuthorizationFile) -> anyhow::Result<quipu_node::AuthorizationConfig> {
    let mut super_users: Vec<String> = Vec::new();
    for principal in file.super_users.iter().flatten() {
        let named = principal
            .strip_prefix("User:")
            .is_some_and(|name| !name.is_empty() && !name.chars().any(char::is_control));
        if !named {
            bail!(
                "authorization.super_users: {:?} is not a principal (User:NAME)",
                quipu_meta::shown(principal)
            );
        }
        if super_users.contains(principal) {
            bail!("authorization.super_users names {principal} twice");
        }
        super_users.push(principal.clone());
    }
    Ok(quipu_node::AuthorizationConfig {
        enabled: file.enabled.unwrap_or(false),
        super_users,
    })
}

/// The `[raft]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RaftFile {
    heartbeat_interval_ms: Option<u64>,
    election_timeout_min_ms: Option<u64>,
    election_timeout_max_ms: Option<u64>,
    quiesce_idle_groups: Option<bool>,
}

/// The TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    node_id: Option<u64>,
    data_dir: Option<PathBuf>,
    listen_addr: Option<SocketAddr>,
    advertised_addr: Option<String>,
    api_listen_addr: Option<SocketAddr>,
    api_advertised_addr: Option<String>,
    kafka_listen_addr: Option<SocketAddr>,
    kafka_advertised_addr: Option<String>,
    admin_listen_addr: Option<SocketAddr>,
    voters: Option<Vec<String>>,
    join: Option<String>,
    rack: Option<String>,
    worker_threads: Option<usize>,
    #[serde(default)]
    cluster: ClusterFile,
    #[serde(default)]
    log: LogFile,
    #[serde(default)]
    api: ApiFile,
    #[serde(default)]
    kafka: KafkaFile,
    #[serde(default)]
    transport: TransportFile,
    #[serde(default)]
    raft: RaftFile,
    #[serde(default)]
    limits: LimitsFile,
    #[serde(default)]
    producers: ProducersFile,
    #[serde(default)]
    groups: GroupsFile,
    #[serde(default)]
    authorization: AuthorizationFile,
    #[serde(default)]
    admin: AdminFile,
}

/// The `[admin]` table: the HTTP admin listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminFile {
    metrics: Option<bool>,
    partition_series_max: Option<usize>,
    console: Option<bool>,
    console_actions: Option<bool>,
    console_ca_file: Option<PathBuf>,
    tls: Option<AdminTlsFile>,
}

/// `[admin.tls]`: the admin listener's certificate (no client certificates are asked for).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminTlsFile {
    cert_file: PathBuf,
    key_file: PathBuf,
}

/// The admin listener's TLS, and the TLS the console checks this node's client API with
/// (`admin.console_ca_file`, else `api.tls.ca_file`); refuses console actions where a password
/// would cross the network in the clear or could not be passed on.
#[allow(clippy::type_complexity)]
fn admin_tls(
    file: &AdminFile,
    api: Option<&TlsFile>,
) -> anyhow::Result<(
    Option<std::sync::Arc<quipu_tls::ServerTls>>,
    Option<std::sync::Arc<quipu_tls::ClientTls>>,
)> {
    let server = match &file.tls {
        None => None,
        Some(tls) => Some(
            quipu_tls::ServerTls::new(
                quipu_tls::ServerFiles {
                    cert: tls.cert_file.clone(),
                    key: tls.key_file.clone(),
                    ca: None,
                },
                quipu_tls::ClientAuth::None,
                &[b"http/1.1"],
            )
            .context("invalid [admin.tls]")?,
        ),
    };
    let console = file.console.unwrap_or(true);
    if file.console_ca_file.is_some() && api.is_none() {
        bail!(
            "admin.console_ca_file is set but the client API serves no TLS ([api.tls]): there is no certificate for it to check"
        );
    }
    let ca = file
        .console_ca_file
        .clone()
        .or_else(|| api.and_then(|tls| tls.ca_file.clone()));
    let client = match ca.filter(|_| console && api.is_some()) {
        None => None,
        Some(ca) => Some(
            quipu_tls::ClientTls::new(
                quipu_tls::ClientFiles {
                    ca,
                    cert: None,
                    key: None,
                },
                &[b"h2"],
            )
            .context("invalid admin.console_ca_file (or api.tls.ca_file, its default)")?,
        ),
    };
    if file.console_actions.unwrap_or(false) {
        if !console {
            bail!("admin.console_actions needs the console (admin.console = true)");
        }
        if server.is_none() {
            bail!(
                "admin.console_actions needs [admin.tls]: a user signs in to the console with a password, which must not cross the network in the clear"
            );
        }
        if api.is_none() {
            bail!(
                "admin.console_actions needs [api.tls]: the console acts through the client API as the signed-in user, passing on the password"
            );
        }
        if client.is_none() {
            bail!(
                "admin.console_actions needs a CA to check the client API's certificate: set admin.console_ca_file (or api.tls.ca_file)"
            );
        }
    }
    Ok((server, client))
}

/// Most worker threads a node's runtime may have.
pub const WORKER_THREADS_MAX: usize = 1024;

/// The cores this process may run on (cgroup quotas and affinity counted); 1 if unknown.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// The resolved settings of a server.
#[derive(Debug)]
pub struct Settings {
    pub node_id: u64,
    pub data_dir: PathBuf,
    pub listen_addr: SocketAddr,
    /// What other nodes reach the transport at.
    pub advertised_addr: String,
    pub api_listen_addr: SocketAddr,
    /// `None`: the address the API listener got.
    pub api_advertised_addr: Option<String>,
    pub kafka_listen_addr: SocketAddr,
    /// `None`: the address the Kafka listener got.
    pub kafka_advertised_addr: Option<String>,
    pub admin_listen_addr: SocketAddr,
    pub admin: quipu_admin::AdminConfig,
    pub kafka: quipu_kafka::KafkaConfig,
    pub api: quipu_api::ApiLimits,
    /// TLS of the client API listener.
    pub api_tls: Option<std::sync::Arc<quipu_tls::ServerTls>>,
    /// What the console checks the client API's certificate with (when the API serves TLS and
    /// a CA is known).
    pub console_api_tls: Option<std::sync::Arc<quipu_tls::ClientTls>>,
    /// Mutual TLS of the Raft transport.
    transport_tls: Option<quipu_node::TransportTls>,
    /// Access control on both client listeners.
    pub authorization: quipu_node::AuthorizationConfig,
    pub voters: Vec<(u64, String)>,
    /// A member's Raft address to join the cluster through (instead of `voters`).
    pub join: Option<String>,
    /// Worker threads of the node's async runtime.
    pub worker_threads: usize,
    rack: String,
    controller_voters: usize,
    /// `None`: never.
    leader_rebalance_interval: Option<std::time::Duration>,
    /// `None`: unbounded.
    move_bytes_per_sec: Option<u64>,
    log: LogConfig,
    sync_scope: quipu_node::SyncScope,
    retention_check_interval_ms: Option<u64>,
    timestamp_before_max_ms: Option<i64>,
    timestamp_after_max_ms: Option<i64>,
    log_append_time: bool,
    produce_bytes_in_flight_max: u64,
    disk_reserve_bytes: u64,
    cluster_limits: quipu_meta::ClusterLimits,
    producers: quipu_node::ProducerLimits,
    groups: quipu_node::GroupsConfig,
    raft: openraft_config::Timings,
}

/// Raft timings, kept apart so the binary does not depend on openraft.
mod openraft_config {
    #[derive(Debug, Default)]
    pub struct Timings {
        pub heartbeat_interval_ms: Option<u64>,
        pub election_timeout_min_ms: Option<u64>,
        pub election_timeout_max_ms: Option<u64>,
        pub quiesce_idle_groups: Option<bool>,
    }
}

/// `value` if it is in `key`'s range, else an error naming the server setting (the same ranges
/// as the topic settings the server's values are defaults of).
fn checked(key: TopicKey, value: i64) -> anyhow::Result<i64> {
    key.check(value).map_err(|_| {
        anyhow::anyhow!(
            "{} = {value} is out of range: {}",
            key.server_key(),
            key.allowed()
        )
    })?;
    Ok(value)
}

/// -1 (Kafka's "unlimited") as no limit.
fn unlimited(value: i64) -> Option<i64> {
    (value != -1).then_some(value)
}

/// A size setting that is a topic default: checked, or the built-in default.
fn topic_default(key: TopicKey, value: Option<u64>, default: u64) -> anyhow::Result<u64> {
    let Some(value) = value else {
        return Ok(default);
    };
    let signed = i64::try_from(value).unwrap_or(i64::MAX);
    checked(key, signed)?;
    Ok(value)
}

/// `log.entry_bytes_max`: a topic default (`max.message.bytes`) that must also fit the Raft
/// transport's and the client API's messages.
fn entry_bytes_max(value: Option<u64>, default: u64) -> anyhow::Result<u64> {
    let value = topic_default(TopicKey::MaxMessageBytes, value, default)?;
    let limit = quipu_node::ENTRY_BYTES_LIMIT.min(quipu_api::ENTRY_BYTES_LIMIT);
    if value > limit {
        bail!(
            "log.entry_bytes_max = {value} is out of range: at most {limit} bytes (a batch must fit one message of the Raft transport and of the client API)"
        );
    }
    Ok(value)
}

/// A count setting in `1..=max`, or its default.
pub(crate) fn bounded(
    key: &str,
    value: Option<usize>,
    default: usize,
    max: usize,
) -> anyhow::Result<usize> {
    let value = value.unwrap_or(default);
    if value == 0 || value > max {
        bail!("{key} = {value} is out of range: 1 to {max}");
    }
    Ok(value)
}

/// The client API's limits: the `[api]` table over the defaults, each checked.
fn api_limits(file: &ApiFile) -> anyhow::Result<quipu_api::ApiLimits> {
    let defaults = quipu_api::ApiLimits::default();
    let streams = bounded(
        "api.streams_per_connection_max",
        file.streams_per_connection_max.map(|s| s as usize),
        defaults.streams_per_connection_max as usize,
        100_000,
    )?;
    Ok(quipu_api::ApiLimits {
        connections_max: bounded(
            "api.connections_max",
            file.connections_max,
            defaults.connections_max,
            1_000_000,
        )?,
        connections_per_address_max: bounded(
            "api.connections_per_address_max",
            file.connections_per_address_max,
            defaults.connections_per_address_max,
            1_000_000,
        )?,
        streams_per_connection_max: u32::try_from(streams).expect("at most 100,000"),
    })
}

/// The Kafka listener's settings: the `[kafka]` table over the defaults, each checked.
fn kafka_config(
    file: &KafkaFile,
    auto_create_flag: Option<bool>,
) -> anyhow::Result<quipu_kafka::KafkaConfig> {
    let defaults = quipu_kafka::KafkaConfig::default();
    let request_bytes_max = bounded(
        "kafka.request_bytes_max",
        file.request_bytes_max,
        defaults.request_bytes_max,
        i32::MAX as usize,
    )?;
    let queued_request_bytes_max = bounded(
        "kafka.queued_request_bytes_max",
        file.queued_request_bytes_max,
        defaults.queued_request_bytes_max.max(request_bytes_max),
        usize::MAX >> 4,
    )?;
    if queued_request_bytes_max < request_bytes_max {
        bail!(
            "kafka.queued_request_bytes_max = {queued_request_bytes_max} is out of range: at least kafka.request_bytes_max ({request_bytes_max})"
        );
    }
    Ok(quipu_kafka::KafkaConfig {
        connections_max: bounded(
            "kafka.connections_max",
            file.connections_max,
            defaults.connections_max,
            1_000_000,
        )?,
        connections_per_address_max: bounded(
            "kafka.connections_per_address_max",
            file.connections_per_address_max,
            defaults.connections_per_address_max,
            1_000_000,
        )?,
        request_bytes_max,
        queued_request_bytes_max,
        connections_max_idle_ms: bounded(
            "kafka.connections_max_idle_ms",
            file.connections_max_idle_ms
                .map(|ms| usize::try_from(ms).unwrap_or(usize::MAX)),
            usize::try_from(defaults.connections_max_idle_ms).unwrap_or(usize::MAX),
            86_400_000,
        )? as u64,
        requests_in_flight_max: bounded(
            "kafka.requests_in_flight_max",
            file.requests_in_flight_max,
            defaults.requests_in_flight_max,
            1024,
        )?,
        auto_create_topics: auto_create_flag
            .or(file.auto_create_topics)
            .unwrap_or(defaults.auto_create_topics),
        default_partitions: bounded(
            "kafka.default_partitions",
            file.default_partitions,
            defaults.default_partitions,
            quipu_meta::PARTITIONS_PER_TOPIC_MAX,
        )?,
        default_replication_factor: bounded(
            "kafka.default_replication_factor",
            file.default_replication_factor,
            defaults.default_replication_factor,
            9,
        )?,
        tls: listener_tls("kafka.tls", file.tls.as_ref())?,
        sasl_mechanisms: sasl_mechanisms(file)?,
    })
}

/// `kafka.sasl_mechanisms`: known names, each once.
fn sasl_mechanisms(file: &KafkaFile) -> anyhow::Result<Vec<quipu_kafka::SaslMechanism>> {
    let mut mechanisms = Vec::new();
    for name in file.sasl_mechanisms.iter().flatten() {
        let mechanism = quipu_kafka::SaslMechanism::from_name(name).with_context(|| {
            format!(
                "kafka.sasl_mechanisms: {:?} is not one of \"PLAIN\", \"SCRAM-SHA-256\", \"SCRAM-SHA-512\"",
                quipu_meta::shown(name)
            )
        })?;
        if mechanisms.contains(&mechanism) {
            bail!("kafka.sasl_mechanisms names {name} twice");
        }
        mechanisms.push(mechanism);
    }
    if mechanisms.contains(&quipu_kafka::SaslMechanism::Plain) && file.tls.is_none() {
        tracing::warn!(
            "kafka.sasl_mechanisms offers PLAIN without [kafka.tls]: passwords cross the network in the clear"
        );
    }
    Ok(mechanisms)
}

fn parse_voter(text: &str) -> anyhow::Result<(u64, String)> {
    let (id, addr) = text
        .split_once('@')
        .with_context(|| format!("voter {text:?} is not ID@HOST:PORT"))?;
    let id = id
        .trim()
        .parse()
        .with_context(|| format!("voter {text:?}: bad node id"))?;
    let addr: SocketAddr = addr
        .trim()
        .parse()
        .with_context(|| format!("voter {text:?}: bad address"))?;
    Ok((id, addr.to_string()))
}

impl Settings {
    /// Every TLS configuration of the server, to reload when its files change or on SIGHUP.
    pub fn reloadable_tls(&self) -> Vec<std::sync::Arc<dyn quipu_tls::Reload>> {
        let mut all: Vec<std::sync::Arc<dyn quipu_tls::Reload>> = Vec::new();
        if let Some(tls) = &self.api_tls {
            all.push(tls.clone());
        }
        if let Some(tls) = &self.kafka.tls {
            all.push(tls.clone());
        }
        if let Some(tls) = &self.admin.tls {
            all.push(tls.clone());
        }
        if let Some(tls) = &self.console_api_tls {
            all.push(tls.clone());
        }
        if let Some(tls) = &self.transport_tls {
            all.push(tls.server.clone());
            all.push(tls.client.clone());
        }
        all
    }

    /// Merges defaults, the file, the environment and the flags.
    pub fn resolve(args: ServerArgs) -> anyhow::Result<Settings> {
        let file: File = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("invalid configuration in {}", path.display()))?
            }
            None => File::default(),
        };
        let node_id = args.node_id.or(file.node_id).unwrap_or(1);
        let worker_threads = bounded(
            "worker_threads",
            args.worker_threads.or(file.worker_threads),
            cores(),
            WORKER_THREADS_MAX,
        )?;
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("quipu-data"));
        let listen_addr = args
            .listen
            .or(file.listen_addr)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7001)));
        let advertised_addr = match args.advertised.or(file.advertised_addr) {
            Some(addr) => {
                check_host_port("advertised_addr", &addr)?;
                addr
            }
            None if listen_addr.ip().is_unspecified() => bail!(
                "listen_addr {listen_addr} is a wildcard address other nodes cannot reach: set advertised_addr (--advertised, QUIPU_ADVERTISED) to the HOST:PORT they reach this node at"
            ),
            None => listen_addr.to_string(),
        };
        let api_listen_addr = args
            .api_listen
            .or(file.api_listen_addr)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7101)));
        let api_advertised_addr = args.api_advertised.or(file.api_advertised_addr);
        let kafka_listen_addr = args
            .kafka_listen
            .or(file.kafka_listen_addr)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9092)));
        let kafka_advertised_addr = args.kafka_advertised.or(file.kafka_advertised_addr);
        let admin_listen_addr = args
            .admin_listen
            .or(file.admin_listen_addr)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7201)));
        let (admin_tls, console_api_tls) = admin_tls(&file.admin, file.api.tls.as_ref())?;
        let admin = quipu_admin::AdminConfig {
            metrics: file.admin.metrics.unwrap_or(true),
            partition_series_max: bounded(
                "admin.partition_series_max",
                file.admin.partition_series_max,
                quipu_admin::PARTITION_SERIES_MAX,
                1_000_000,
            )?,
            console: file.admin.console.unwrap_or(true),
            console_actions: file.admin.console_actions.unwrap_or(false),
            console_api: None, // the address the API listener gets, set when it is bound
            tls: admin_tls,
        };
        let kafka = kafka_config(&file.kafka, args.auto_create_topics)?;
        let api = api_limits(&file.api)?;
        let api_tls = listener_tls("api.tls", file.api.tls.as_ref())?;
        let authorization = authorization(&file.authorization)?;
        let transport_tls = match &file.transport.tls {
            None => None,
            Some(tls) => Some(
                quipu_node::TransportTls::load(
                    node_id,
                    tls.cert_file.clone(),
                    tls.key_file.clone(),
                    tls.ca_file.clone(),
                )
                .context("invalid [transport.tls]")?,
            ),
        };
        let join = args.join.or(file.join);
        let voter_texts = if args.voters.is_empty() {
            file.voters.unwrap_or_default()
        } else {
            args.voters
        };
        if join.is_some() && !voter_texts.is_empty() {
            bail!(
                "join and voters exclude each other: a node either forms a cluster with its voters or joins an existing one"
            );
        }
        let rack = args.rack.or(file.rack).unwrap_or_default();
        let controller_voters = file.cluster.controller_voters.unwrap_or(3);
        if !quipu_node::CONTROLLER_VOTERS_ALLOWED.contains(&controller_voters) {
            bail!("cluster.controller_voters = {controller_voters} is out of range: 1, 3 or 5");
        }
        let leader_rebalance_interval = match file.cluster.leader_rebalance_interval_ms {
            None => Some(quipu_node::DEFAULT_LEADER_REBALANCE_INTERVAL),
            Some(0) => None,
            Some(ms) if ms < 1000 => bail!(
                "cluster.leader_rebalance_interval_ms = {ms} is out of range: at least 1000 ms, or 0 for never"
            ),
            Some(ms) => Some(std::time::Duration::from_millis(ms)),
        };
        let move_bytes_per_sec = match file.cluster.move_bytes_per_sec {
            None | Some(0) => None,
            Some(rate) if rate < quipu_node::MOVE_BYTES_PER_SEC_MIN => bail!(
                "cluster.move_bytes_per_sec = {rate} is out of range: at least {} bytes per second, or 0 for unbounded",
                quipu_node::MOVE_BYTES_PER_SEC_MIN
            ),
            Some(rate) => Some(rate),
        };
        let mut voters = voter_texts
            .iter()
            .map(|v| parse_voter(v))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if voters.is_empty() && join.is_none() {
            voters.push((node_id, advertised_addr.clone()));
        }
        if join.is_none() && !voters.iter().any(|(id, _)| *id == node_id) {
            bail!(
                "node {node_id} is not among the voters {voters:?}: a node must be one of the initial voters"
            );
        }
        let defaults = LogConfig::default();
        let fsync = match file.log.fsync {
            None => defaults.fsync,
            Some(toml::Value::String(s)) if s == "always" => quipu_storage::FsyncPolicy::Always,
            Some(toml::Value::String(s)) if s == "never" => quipu_storage::FsyncPolicy::Never,
            Some(toml::Value::Integer(ms)) if ms > 0 => {
                quipu_storage::FsyncPolicy::IntervalMs(ms.unsigned_abs())
            }
            Some(other) => bail!(
                "log.fsync must be \"always\", \"never\" or a positive number of ms, not {other}"
            ),
        };
        let log = LogConfig {
            segment_bytes_max: topic_default(
                TopicKey::SegmentBytes,
                file.log.segment_bytes_max,
                defaults.segment_bytes_max,
            )?,
            segment_ms_max: match file.log.segment_ms_max {
                Some(ms) => checked(TopicKey::SegmentMs, ms)?,
                None => defaults.segment_ms_max,
            },
            entry_bytes_max: entry_bytes_max(file.log.entry_bytes_max, defaults.entry_bytes_max)?,
            index_interval_bytes: file
                .log
                .index_interval_bytes
                .unwrap_or(defaults.index_interval_bytes),
            index_bytes_max: file.log.index_bytes_max.unwrap_or(defaults.index_bytes_max),
            preallocate_bytes: file
                .log
                .preallocate_bytes
                .unwrap_or(defaults.preallocate_bytes),
            recycle_segments: file
                .log
                .recycle_segments
                .unwrap_or(defaults.recycle_segments),
            fsync,
            retention_bytes: match file.log.retention_bytes {
                Some(bytes) => unlimited(checked(TopicKey::RetentionBytes, bytes)?)
                    .map(|b| u64::try_from(b).expect("checked positive")),
                None => defaults.retention_bytes,
            },
            retention_ms: match file.log.retention_ms {
                Some(ms) => unlimited(checked(TopicKey::RetentionMs, ms)?),
                None => defaults.retention_ms,
            },
            ..defaults
        };
        log.validate().map_err(|e| {
            anyhow::anyhow!("log.{} = {} is out of range: {}", e.key, e.value, e.allowed)
        })?;
        let timestamp_before_max_ms = file
            .log
            .message_timestamp_before_max_ms
            .map(|ms| checked(TopicKey::TimestampBeforeMaxMs, ms))
            .transpose()?;
        let timestamp_after_max_ms = file
            .log
            .message_timestamp_after_max_ms
            .map(|ms| checked(TopicKey::TimestampAfterMaxMs, ms))
            .transpose()?;
        let produce_bytes_in_flight_max = file
            .limits
            .produce_bytes_in_flight_max
            .unwrap_or(quipu_node::DEFAULT_PRODUCE_BYTES_IN_FLIGHT_MAX);
        if produce_bytes_in_flight_max < log.entry_bytes_max
            || produce_bytes_in_flight_max > quipu_node::PRODUCE_BYTES_IN_FLIGHT_LIMIT
        {
            bail!(
                "limits.produce_bytes_in_flight_max = {produce_bytes_in_flight_max} is out of range: log.entry_bytes_max ({}) to {} bytes",
                log.entry_bytes_max,
                quipu_node::PRODUCE_BYTES_IN_FLIGHT_LIMIT
            );
        }
        let limit_defaults = quipu_meta::ClusterLimits::default();
        let cluster_limits = quipu_meta::ClusterLimits {
            topics_max: bounded(
                "limits.topics_max",
                file.limits.topics_max,
                limit_defaults.topics_max,
                quipu_node::CLUSTER_LIMIT_MAX,
            )?,
            partitions_per_node_max: bounded(
                "limits.partitions_per_node_max",
                file.limits.partitions_per_node_max,
                limit_defaults.partitions_per_node_max,
                quipu_node::CLUSTER_LIMIT_MAX,
            )?,
        };
        let producer_defaults = quipu_node::ProducerLimits::default();
        let producers = quipu_node::ProducerLimits {
            max: bounded(
                "producers.per_partition_max",
                file.producers.per_partition_max,
                producer_defaults.max,
                quipu_node::PRODUCERS_PER_PARTITION_LIMIT,
            )?,
            expiration_ms: match file.producers.expiration_ms {
                Some(ms) if ms < 1 => {
                    bail!(
                        "producers.expiration_ms = {ms} is out of range: 1 to {} ms",
                        i64::MAX
                    )
                }
                Some(ms) => ms,
                None => producer_defaults.expiration_ms,
            },
        };
        let group_defaults = quipu_node::GroupsConfig::default();
        let groups = quipu_node::GroupsConfig {
            offsets_partitions: bounded(
                "groups.offsets_partitions",
                file.groups.offsets_partitions,
                group_defaults.offsets_partitions,
                quipu_node::OFFSETS_PARTITIONS_LIMIT,
            )?,
            offsets_replication_factor: bounded(
                "groups.offsets_replication_factor",
                file.groups.offsets_replication_factor,
                group_defaults.offsets_replication_factor,
                1000,
            )?,
            limits: quipu_node::GroupLimits {
                session_timeout_min_ms: file
                    .groups
                    .session_timeout_min_ms
                    .unwrap_or(group_defaults.limits.session_timeout_min_ms),
                session_timeout_max_ms: file
                    .groups
                    .session_timeout_max_ms
                    .unwrap_or(group_defaults.limits.session_timeout_max_ms),
                initial_rebalance_delay_ms: file
                    .groups
                    .initial_rebalance_delay_ms
                    .unwrap_or(group_defaults.limits.initial_rebalance_delay_ms),
                members_max: bounded(
                    "groups.members_max",
                    file.groups.members_max,
                    group_defaults.limits.members_max,
                    1_000_000,
                )?,
            },
            consumer: quipu_node::ConsumerLimits {
                session_timeout_ms: file
                    .groups
                    .consumer_session_timeout_ms
                    .unwrap_or(group_defaults.consumer.session_timeout_ms),
                heartbeat_interval_ms: file
                    .groups
                    .consumer_heartbeat_interval_ms
                    .unwrap_or(group_defaults.consumer.heartbeat_interval_ms),
                members_max: bounded(
                    "groups.members_max",
                    file.groups.members_max,
                    group_defaults.limits.members_max,
                    1_000_000,
                )?,
            },
        };
        let log_append_time = match file.log.message_timestamp_type.as_deref() {
            None => false,
            Some(text) => {
                TopicKey::TimestampType.parse(text).map_err(|_| {
                    anyhow::anyhow!(
                        "log.message_timestamp_type = {:?} is out of range: {}",
                        quipu_meta::shown(text),
                        TopicKey::TimestampType.allowed()
                    )
                })? == 1
            }
        };
        let sync_scope = match file.log.sync_scope.as_deref() {
            None | Some("file") => quipu_node::SyncScope::File,
            Some("filesystem") => quipu_node::SyncScope::Filesystem,
            Some(other) => bail!(
                "log.sync_scope must be \"file\" or \"filesystem\", not {:?}",
                quipu_meta::shown(other)
            ),
        };
        if file.log.retention_check_interval_ms == Some(0) {
            bail!("log.retention_check_interval_ms = 0 is out of range: at least 1 ms");
        }
        let raft = openraft_config::Timings {
            heartbeat_interval_ms: file.raft.heartbeat_interval_ms,
            election_timeout_min_ms: file.raft.election_timeout_min_ms,
            election_timeout_max_ms: file.raft.election_timeout_max_ms,
            quiesce_idle_groups: file.raft.quiesce_idle_groups,
        };
        Ok(Settings {
            node_id,
            worker_threads,
            data_dir,
            listen_addr,
            advertised_addr,
            api_listen_addr,
            api_advertised_addr,
            kafka_listen_addr,
            kafka_advertised_addr,
            admin_listen_addr,
            admin,
            kafka,
            api,
            api_tls,
            console_api_tls,
            transport_tls,
            authorization,
            voters,
            join,
            rack,
            controller_voters,
            leader_rebalance_interval,
            move_bytes_per_sec,
            log,
            sync_scope,
            retention_check_interval_ms: file.log.retention_check_interval_ms,
            timestamp_before_max_ms,
            timestamp_after_max_ms,
            log_append_time,
            produce_bytes_in_flight_max,
            disk_reserve_bytes: file
                .limits
                .disk_reserve_bytes
                .unwrap_or(quipu_node::DEFAULT_DISK_RESERVE_BYTES),
            cluster_limits,
            producers,
            groups,
            raft,
        })
    }

    /// The node configuration these settings describe; `api_addr` and `kafka_addr` are the
    /// addresses the listeners got (advertised unless the settings name others).
    pub fn node_config(&self, api_addr: String, kafka_addr: String) -> NodeConfig {
        let mut raft = NodeConfig::default_raft();
        if let Some(ms) = self.raft.heartbeat_interval_ms {
            raft.heartbeat_interval = ms;
        }
        if let Some(ms) = self.raft.election_timeout_min_ms {
            raft.election_timeout_min = ms;
        }
        if let Some(ms) = self.raft.election_timeout_max_ms {
            raft.election_timeout_max = ms;
        }
        NodeConfig {
            raft,
            log: self.log.clone(),
            sync_scope: self.sync_scope,
            quiesce: self.raft.quiesce_idle_groups.unwrap_or(true),
            retention_check_interval: self.retention_check_interval_ms.map_or(
                quipu_node::DEFAULT_RETENTION_CHECK_INTERVAL,
                std::time::Duration::from_millis,
            ),
            advertised_addr: Some(self.advertised_addr.clone()),
            api_addr: Some(self.api_advertised_addr.clone().unwrap_or(api_addr)),
            kafka_addr: Some(self.kafka_advertised_addr.clone().unwrap_or(kafka_addr)),
            timestamp_before_max_ms: self.timestamp_before_max_ms.unwrap_or(i64::MAX),
            timestamp_after_max_ms: self
                .timestamp_after_max_ms
                .unwrap_or(quipu_node::DEFAULT_TIMESTAMP_AFTER_MAX_MS),
            log_append_time: self.log_append_time,
            produce_bytes_in_flight_max: self.produce_bytes_in_flight_max,
            disk_reserve_bytes: self.disk_reserve_bytes,
            cluster_limits: self.cluster_limits,
            producers: self.producers,
            groups: self.groups,
            rack: self.rack.clone(),
            controller_voters: self.controller_voters,
            leader_rebalance_interval: self.leader_rebalance_interval,
            move_bytes_per_sec: self.move_bytes_per_sec,
            transport_tls: self.transport_tls.clone(),
            authorization: self.authorization.clone(),
            ..NodeConfig::new(self.node_id, self.data_dir.clone(), self.listen_addr)
        }
    }
}

/// `addr` must be HOST:PORT (a name or an address, and a port number).
fn check_host_port(key: &str, addr: &str) -> anyhow::Result<()> {
    let valid = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !valid {
        bail!("{key} = {addr:?} is not HOST:PORT");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests unwrap

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        server: ServerArgs,
    }

    /// Resolves the settings of a server whose `[log]` table is `log`.
    fn resolve(log: &str) -> anyhow::Result<Settings> {
        resolve_file(&format!("[log]\n{log}\n"))
    }

    /// Resolves the settings of a server whose configuration file is `text`.
    fn resolve_file(text: &str) -> anyhow::Result<Settings> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quipu.toml");
        std::fs::write(&path, text).unwrap();
        let cli = Cli::try_parse_from(["quipu", "--config", path.to_str().unwrap()]).unwrap();
        Settings::resolve(cli.server)
    }

    #[test]
    fn a_wildcard_listen_address_needs_an_advertised_one() {
        let error = resolve_file("listen_addr = \"0.0.0.0:7001\"\n").unwrap_err();
        assert!(error.to_string().contains("set advertised_addr"), "{error}");
        let settings = resolve_file(
            "listen_addr = \"0.0.0.0:7001\"\nadvertised_addr = \"quipu-1.example:7001\"\n",
        )
        .unwrap();
        assert_eq!(settings.advertised_addr, "quipu-1.example:7001");
        // Alone, the node is its only voter, at the address others reach it at.
        assert_eq!(settings.voters, [(1, "quipu-1.example:7001".to_owned())]);
        let error = resolve_file("advertised_addr = \"quipu-1\"\n").unwrap_err();
        assert!(error.to_string().contains("not HOST:PORT"), "{error}");
    }

    #[test]
    fn worker_threads_default_to_the_cores_and_are_bounded() {
        assert_eq!(resolve_file("").unwrap().worker_threads, cores());
        assert_eq!(
            resolve_file("worker_threads = 3\n").unwrap().worker_threads,
            3
        );
        for refused in ["0", "1025"] {
            let error = resolve_file(&format!("worker_threads = {refused}\n")).unwrap_err();
            assert!(
                error.to_string().contains("worker_threads")
                    && error.to_string().contains("out of range: 1 to 1024"),
                "{error}"
            );
        }
    }

    /// Console actions need a password to travel only over TLS, both from the browser and on
    /// to the client API, and a CA to check the API with.
    #[test]
    fn console_actions_need_tls_on_both_listeners() {
        let dir = tempfile::tempdir().unwrap();
        let pki = quipu_tls::dev::write_dev_pki(dir.path(), &[1], &["127.0.0.1"]).unwrap();
        let (_, cert, key) = &pki.nodes[0];
        let files = |ca: bool| {
            let ca = if ca {
                format!("ca_file = {:?}\n", pki.ca.display().to_string())
            } else {
                String::new()
            };
            format!(
                "cert_file = {:?}\nkey_file = {:?}\n{ca}",
                cert.display().to_string(),
                key.display().to_string()
            )
        };
        let admin_tls = format!("[admin.tls]\n{}", files(false));
        let api_tls = |ca| format!("[api.tls]\n{}", files(ca));
        let actions = "[admin]\nconsole_actions = true\n";
        let cases = [
            (format!("{actions}{}", api_tls(true)), "needs [admin.tls]"),
            (format!("{actions}{admin_tls}"), "needs [api.tls]"),
            (
                format!("{actions}{admin_tls}{}", api_tls(false)),
                "set admin.console_ca_file",
            ),
            (
                format!(
                    "[admin]\nconsole_actions = true\nconsole = false\n{admin_tls}{}",
                    api_tls(true)
                ),
                "needs the console",
            ),
            (
                format!(
                    "[admin]\nconsole_ca_file = {:?}\n",
                    pki.ca.display().to_string()
                ),
                "serves no TLS",
            ),
        ];
        for (text, said) in cases {
            let error = resolve_file(&text).unwrap_err();
            assert!(format!("{error:#}").contains(said), "{text}: {error:#}");
        }
        // Read-only by default; with both listeners on TLS and a CA, actions are on.
        let settings = resolve_file(&format!("{admin_tls}{}", api_tls(true))).unwrap();
        assert!(!settings.admin.console_actions);
        assert!(settings.admin.tls.is_some() && settings.console_api_tls.is_some());
        let settings = resolve_file(&format!("{actions}{admin_tls}{}", api_tls(true))).unwrap();
        assert!(settings.admin.console_actions);
        // The CA may be named for the console alone.
        let settings = resolve_file(&format!(
            "[admin]\nconsole_ca_file = {:?}\n{}",
            pki.ca.display().to_string(),
            api_tls(false)
        ))
        .unwrap();
        assert!(settings.console_api_tls.is_some());
    }

    #[test]
    fn the_sync_scope_is_read_and_file_by_default() {
        assert_eq!(resolve("").unwrap().sync_scope, quipu_node::SyncScope::File);
        for (text, scope) in [
            ("filesystem", quipu_node::SyncScope::Filesystem),
            ("file", quipu_node::SyncScope::File),
        ] {
            let settings = resolve(&format!("sync_scope = \"{text}\"")).unwrap();
            assert_eq!(settings.sync_scope, scope);
            let node = settings.node_config(String::new(), String::new());
            assert_eq!(node.sync_scope, scope, "{text} reaches the node");
        }
    }

    #[test]
    fn segment_recycling_is_read_and_on_by_default() {
        assert!(resolve("").unwrap().log.recycle_segments);
        for on in [false, true] {
            let settings = resolve(&format!("recycle_segments = {on}")).unwrap();
            assert_eq!(settings.log.recycle_segments, on);
            let node = settings.node_config(String::new(), String::new());
            assert_eq!(node.log.recycle_segments, on, "{on} reaches the node");
        }
        assert!(resolve("recycle_segments = 1").is_err());
    }

    #[test]
    fn minus_one_means_unlimited_retention() {
        let settings = resolve("retention_ms = -1\nretention_bytes = -1").unwrap();
        assert_eq!(settings.log.retention_ms, None);
        assert_eq!(settings.log.retention_bytes, None);
        let settings = resolve("retention_ms = 60000\nretention_bytes = 1000000").unwrap();
        assert_eq!(settings.log.retention_ms, Some(60_000));
        assert_eq!(settings.log.retention_bytes, Some(1_000_000));
    }

    /// Pins the bugs where `retention_ms = -1` deleted every sealed segment and
    /// `retention_check_interval_ms = 0` made the retention task panic silently.
    #[test]
    fn values_out_of_range_are_refused_naming_the_key_and_the_range() {
        let cases = [
            ("retention_ms = 0", "log.retention_ms"),
            ("retention_ms = -2", "log.retention_ms"),
            ("retention_bytes = 0", "log.retention_bytes"),
            (
                "retention_check_interval_ms = 0",
                "log.retention_check_interval_ms",
            ),
            ("segment_bytes_max = 0", "log.segment_bytes_max"),
            ("segment_ms_max = 0", "log.segment_ms_max"),
            ("entry_bytes_max = 0", "log.entry_bytes_max"),
            ("entry_bytes_max = 1073741824", "log.entry_bytes_max"),
            ("index_interval_bytes = 0", "log.index_interval_bytes"),
            ("fsync = 0", "log.fsync"),
            ("sync_scope = \"disk\"", "log.sync_scope"),
            (
                "message_timestamp_after_max_ms = -1",
                "log.message_timestamp_after_max_ms",
            ),
            (
                "message_timestamp_type = \"AppendTime\"",
                "log.message_timestamp_type",
            ),
        ];
        for (line, key) in cases {
            let message = format!("{:#}", resolve(line).err().unwrap());
            assert!(message.contains(key), "{line}: {message}");
            assert!(
                message.contains("range") || message.contains("must be"),
                "{line}: {message}"
            );
        }
    }

    #[test]
    fn cluster_limits_are_read_and_checked() {
        let settings =
            resolve_file("[limits]\ntopics_max = 5\npartitions_per_node_max = 7\n").unwrap();
        assert_eq!(
            settings.cluster_limits,
            quipu_meta::ClusterLimits {
                topics_max: 5,
                partitions_per_node_max: 7
            }
        );
        for (text, key) in [
            ("[limits]\ntopics_max = 0\n", "limits.topics_max"),
            (
                "[limits]\npartitions_per_node_max = 1000001\n",
                "limits.partitions_per_node_max",
            ),
        ] {
            let message = format!("{:#}", resolve_file(text).err().unwrap());
            assert!(
                message.contains(key) && message.contains("range"),
                "{message}"
            );
        }
    }

    #[test]
    fn the_produce_budget_holds_at_least_one_batch() {
        let settings =
            resolve_file("[producers]\nper_partition_max = 50\nexpiration_ms = 60000\n").unwrap();
        assert_eq!(
            settings.producers,
            quipu_node::ProducerLimits {
                max: 50,
                expiration_ms: 60_000
            }
        );
        for (text, key) in [
            (
                "[producers]\nper_partition_max = 0\n",
                "producers.per_partition_max",
            ),
            (
                "[producers]\nper_partition_max = 100001\n",
                "producers.per_partition_max",
            ),
            (
                "[producers]\nexpiration_ms = 0\n",
                "producers.expiration_ms",
            ),
        ] {
            let message = resolve_file(text).unwrap_err().to_string();
            assert!(
                message.contains(key) && message.contains("range"),
                "{message}"
            );
        }
        let settings = resolve_file("[limits]\nproduce_bytes_in_flight_max = 16777216\n").unwrap();
        assert_eq!(settings.produce_bytes_in_flight_max, 16_777_216);
        for text in [
            "[limits]\nproduce_bytes_in_flight_max = 1000\n",
            "[log]\nentry_bytes_max = 1048576\n[limits]\nproduce_bytes_in_flight_max = 1048575\n",
            "[limits]\nproduce_bytes_in_flight_max = 2000000000000\n",
        ] {
            let message = format!("{:#}", resolve_file(text).err().unwrap());
            assert!(
                message.contains("limits.produce_bytes_in_flight_max") && message.contains("range"),
                "{text}: {message}"
            );
        }
    }
}
