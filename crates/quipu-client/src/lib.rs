//! The Rust client of Quipu, over the `quipu.v1` gRPC API (`docs/protocol/grpc.md`).
//!
//! - [`Client::connect`] bootstraps from any node(s); the client learns every node's API address
//!   and each partition's leader, and follows "not leader" answers.
//! - Admin: [`Client::create_topic`] and friends, [`Client::describe_cluster`].
//! - [`Client::produce`] sends one record batch to a partition's leader; [`Producer`] batches
//!   records (linger, batch bytes) and picks partitions as Kafka's default partitioner does
//!   (murmur2 of the key, see [`partition_for_key`]).
//! - [`Consumer`] reads a partition from an offset, a timestamp, the start or the end.
//!
//! Retries: a call refused before anything happened (not leader, no leader yet, not enough
//! replicas, a node that cannot be connected to) is retried with backoff until
//! [`ClientConfig::retry_deadline`]. A plain produce whose outcome is unknown is **not** retried
//! (it could write the records twice): it fails with [`ClientError::UnknownOutcome`]. An
//! idempotent one ([`Client::produce_idempotent`], what [`Producer`] sends by default) is
//! retried until acknowledged or its delivery timeout: the partition writes it once.

mod consumer;
mod error;
mod groups;
mod idempotent;
mod murmur2;
mod producer;
mod session;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use quipu_proto::v1::admin_client::AdminClient;
use quipu_proto::v1::data_client::DataClient;
use quipu_proto::v1::{
    Acks, AddPartitionsRequest, AlterTopicConfigRequest, ClusterDescription, CreateTopicRequest,
    DeleteTopicRequest, DescribeClusterRequest, DescribeTopicRequest, DrainNodeRequest,
    ElectPreferredLeadersRequest, HealthRequest, HealthResponse, InitProducerIdRequest,
    ListOffsetsRequest, ListTopicsRequest, MovePartitionRequest, OffsetSpec, ProduceRequest,
    ReadReplicaRequest, RebalanceRequest, RebalanceResponse, RemoveNodeRequest, TopicDescription,
};
use quipu_proto::v1::{
    AlterUsersRequest, ListUsersRequest, ScramMechanism, UserCredentialDelete, UserCredentialUpsert,
};
use tonic::transport::{Channel, Endpoint};

/// Bytes of the random salt of a new credential.
const SALT_BYTES: usize = 16;

fn proto_mechanism(mechanism: quipu_meta::ScramMechanism) -> ScramMechanism {
    match mechanism {
        quipu_meta::ScramMechanism::Sha256 => ScramMechanism::Sha256,
        quipu_meta::ScramMechanism::Sha512 => ScramMechanism::Sha512,
    }
}

pub use consumer::{ConsumedRecord, Consumer, StartAt};

/// One replica's whole log, as [`Client::read_whole_replica`] read it.
#[derive(Debug, Clone)]
pub struct WholeReplica {
    /// Records below it are known committed by the replica (at the first read).
    pub high_watermark: u64,
    /// Its first offset (at the first read).
    pub log_start_offset: u64,
    /// The offset its next record gets (at the first read).
    pub log_end_offset: u64,
    /// Its records in offset order.
    pub records: Vec<ConsumedRecord>,
}
pub use error::ClientError;
pub use groups::{Assignment, Committed, GroupConsumer, GroupConsumerConfig, OffsetMove};
pub use idempotent::IN_FLIGHT_MAX;
pub use murmur2::{murmur2, partition_for_key};
pub use producer::{Producer, ProducerConfig, RECORD_OVERHEAD_BYTES, Sent};
pub use quipu_proto::v1::{
    ClusterDescription as Cluster, GroupDescription, GroupMember, ListedGroup, NodeDescription,
    PartitionDescription, ReadReplicaResponse as ReplicaContents, TopicConfig,
    TopicDescription as Topic,
};

use crate::error::{Attempt, Failure, classify};

/// How long [`Client::connect`] tries the bootstrap addresses.
const CONNECT_PATIENCE: Duration = Duration::from_secs(3);

/// Largest message the client sends or accepts.
const MESSAGE_BYTES_MAX: usize = 32 * 1024 * 1024;
/// How often a connection with calls open is pinged, and how long an answer may take before the
/// connection is taken for dead.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// How a client retries and waits.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// How long one call may take before it fails.
    pub request_timeout: Duration,
    /// How long a call is retried (with backoff) while the cluster cannot serve it yet.
    pub retry_deadline: Duration,
    /// First pause between retries; it doubles up to one second.
    pub retry_backoff: Duration,
    /// TLS to every node (the CA trusted and, for mutual TLS, the client's certificate);
    /// `None`: plaintext.
    pub tls: Option<Arc<quipu_tls::ClientTls>>,
    /// A user and password sent with every call (only over TLS); `None`: the client is its
    /// certificate's subject, or anonymous.
    pub credentials: Option<Credentials>,
}

/// A user and its password, sent with every call as HTTP basic authentication.
#[derive(Clone)]
pub struct Credentials {
    /// The user.
    pub user: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Adds the client's `authorization` header (if any) to every call.
#[derive(Debug, Clone)]
pub(crate) struct Authorization(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Authorization {
    fn of(credentials: Option<&Credentials>) -> Result<Authorization, ClientError> {
        use base64::Engine;
        let Some(c) = credentials else {
            return Ok(Authorization(None));
        };
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.user, c.password));
        let mut value: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
            format!("Basic {token}").parse().map_err(|_| {
                ClientError::InvalidArgument("the credentials cannot be sent".to_owned())
            })?;
        // Never indexed by HTTP/2 header compression.
        value.set_sensitive(true);
        Ok(Authorization(Some(value)))
    }
}

impl tonic::service::Interceptor for Authorization {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel to one node, carrying the client's credentials.
pub(crate) type Rpc = tonic::service::interceptor::InterceptedService<Channel, Authorization>;

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout: Duration::from_secs(30),
            retry_deadline: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(50),
            tls: None,
            credentials: None,
        }
    }
}

/// The error of a call addressed to one node, which is not retried elsewhere.
fn one_node_error(status: &tonic::Status) -> ClientError {
    match classify(status, true) {
        Failure::Fatal(e) | Failure::Retry(e) => e,
        Failure::NotLeader(_) => ClientError::Other(status.message().to_string()),
    }
}

/// Which record a produce must be acknowledged after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckLevel {
    /// Committed by a majority of replicas (`acks=all`).
    #[default]
    All,
    /// Durable in the leader's log (`acks=1`).
    Leader,
    /// Not acknowledged (`acks=0`).
    None,
}

/// A connection to a Quipu cluster. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    /// Addresses to try for calls any node answers: the bootstrap list, then every node learnt.
    addrs: Mutex<Vec<String>>,
    channels: Mutex<HashMap<String, Channel>>,
    /// Each node's produce session, by API address (`session.rs`).
    sessions: Mutex<HashMap<String, Arc<session::Session>>>,
    authorization: Authorization,
    /// Leader API address of (topic, partition), as last learnt.
    leaders: Mutex<HashMap<(String, u32), String>>,
    /// Per topic, held while its leaders are being learnt: the tasks that miss the same
    /// topic's leaders at once wait for one description instead of each asking for one (a
    /// producer starting on 2,000 partitions would otherwise send hundreds at once). A topic's
    /// lock leaves the map when its last holder is done.
    learning: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Client {
    /// Connects to the cluster through any of `bootstrap` (API addresses, `host:port`).
    pub async fn connect(
        bootstrap: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Client, ClientError> {
        Client::connect_with(bootstrap, ClientConfig::default()).await
    }

    /// [`Client::connect`] with a configuration.
    pub async fn connect_with(
        bootstrap: impl IntoIterator<Item = impl Into<String>>,
        config: ClientConfig,
    ) -> Result<Client, ClientError> {
        let addrs: Vec<String> = bootstrap.into_iter().map(Into::into).collect();
        if addrs.is_empty() {
            return Err(ClientError::InvalidArgument(
                "no bootstrap address given".to_string(),
            ));
        }
        if config.credentials.is_some() && config.tls.is_none() {
            return Err(ClientError::InvalidArgument(
                "a password is sent only over TLS: give the cluster's CA (--tls-ca)".to_string(),
            ));
        }
        let authorization = Authorization::of(config.credentials.as_ref())?;
        let client = Client {
            inner: Arc::new(Inner {
                authorization,
                config,
                addrs: Mutex::new(addrs),
                channels: Mutex::new(HashMap::new()),
                sessions: Mutex::new(HashMap::new()),
                leaders: Mutex::new(HashMap::new()),
                learning: Mutex::new(HashMap::new()),
            }),
        };
        // One answer proves the address, and teaches the client every node; a cluster that is
        // not there is reported within a few seconds, not after the whole retry deadline.
        let cluster = client
            .any_node_until(true, CONNECT_PATIENCE, Client::admin, |mut c| async move {
                c.describe_cluster(DescribeClusterRequest {}).await
            })
            .await?;
        client.learn_nodes(&cluster);
        Ok(client)
    }

    fn channel(&self, addr: &str) -> Result<Channel, ClientError> {
        let mut channels = self
            .inner
            .channels
            .lock()
            .expect("client channels lock poisoned by a panic");
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| ClientError::InvalidArgument(format!("bad address {addr:?}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(self.inner.config.request_timeout)
            .tcp_nodelay(true)
            // A connection that stopped answering is closed (its calls and produce sessions
            // fail) instead of holding a session open that nothing reaches.
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_INTERVAL)
            .max_frame_size(quipu_proto::HTTP2_FRAME_BYTES_MAX);
        // With TLS the connector makes each connection (tonic speaks HTTP/2 over it).
        let channel = match &self.inner.config.tls {
            None => endpoint.connect_lazy(),
            Some(tls) => {
                endpoint.connect_with_connector_lazy(quipu_tls::Connector(Arc::clone(tls)))
            }
        };
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// A channel to `addr` that carries the client's credentials.
    fn rpc(&self, addr: &str) -> Result<Rpc, ClientError> {
        Ok(tonic::service::interceptor::InterceptedService::new(
            self.channel(addr)?,
            self.inner.authorization.clone(),
        ))
    }

    fn admin(&self, addr: &str) -> Result<AdminClient<Rpc>, ClientError> {
        Ok(AdminClient::new(self.rpc(addr)?)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX))
    }

    fn data(&self, addr: &str) -> Result<DataClient<Rpc>, ClientError> {
        Ok(DataClient::new(self.rpc(addr)?)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX))
    }

    /// The produce session to `addr`: the open one, or a new one if it ended (one the node
    /// refused stays: that node takes `Produce` calls).
    fn session(&self, addr: &str) -> Result<Arc<session::Session>, ClientError> {
        let mut sessions = self
            .inner
            .sessions
            .lock()
            .expect("client sessions lock poisoned by a panic");
        if let Some(session) = sessions.get(addr)
            && (session.ended().is_none() || session.refused())
        {
            return Ok(Arc::clone(session));
        }
        let session = Arc::new(session::Session::open(self.data(addr)?));
        sessions.insert(addr.to_string(), Arc::clone(&session));
        Ok(session)
    }

    fn addrs(&self) -> Vec<String> {
        self.inner
            .addrs
            .lock()
            .expect("client addresses lock poisoned by a panic")
            .clone()
    }

    fn learn_nodes(&self, cluster: &ClusterDescription) {
        let mut addrs = self
            .inner
            .addrs
            .lock()
            .expect("client addresses lock poisoned by a panic");
        for node in &cluster.nodes {
            if !node.api_addr.is_empty() && !addrs.contains(&node.api_addr) {
                addrs.push(node.api_addr.clone());
            }
        }
    }

    /// Runs an admin call on any node that answers, retrying while the cluster cannot serve it.
    async fn any_node<T, F, Fut>(&self, idempotent: bool, call: F) -> Result<T, ClientError>
    where
        F: Fn(AdminClient<Rpc>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.any_node_until(
            idempotent,
            self.inner.config.retry_deadline,
            Client::admin,
            call,
        )
        .await
    }

    /// Runs a call of service client `C` (made by `connect`) on any node that answers, retrying
    /// for at most `patience` while the cluster cannot serve it.
    async fn any_node_until<C, T, F, Fut>(
        &self,
        idempotent: bool,
        patience: Duration,
        connect: fn(&Client, &str) -> Result<C, ClientError>,
        call: F,
    ) -> Result<T, ClientError>
    where
        F: Fn(C) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = tokio::time::Instant::now() + patience;
        let mut backoff = self.inner.config.retry_backoff;
        loop {
            let mut last = None;
            for addr in self.addrs() {
                match call(connect(self, &addr)?).await {
                    Ok(response) => return Ok(response.into_inner()),
                    Err(status) => match classify(&status, idempotent) {
                        Failure::Fatal(e) => return Err(e),
                        Failure::NotLeader(_) => {
                            last = Some(ClientError::Unavailable(status.message().to_string()));
                        }
                        Failure::Retry(e) => last = Some(e),
                    },
                }
            }
            if tokio::time::Instant::now() + backoff >= deadline {
                return Err(match last {
                    Some(ClientError::Unavailable(m)) if m.contains("connect") => {
                        ClientError::Unreachable {
                            addrs: self.addrs().join(", "),
                        }
                    }
                    Some(e) => e,
                    None => ClientError::Unreachable {
                        addrs: self.addrs().join(", "),
                    },
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// The cluster's nodes and controller leader, as the first node that answers sees them.
    pub async fn describe_cluster(&self) -> Result<ClusterDescription, ClientError> {
        let cluster = self
            .any_node(true, |mut c| async move {
                c.describe_cluster(DescribeClusterRequest {}).await
            })
            .await?;
        self.learn_nodes(&cluster);
        Ok(cluster)
    }

    /// The health of the node at `addr`.
    pub async fn health(&self, addr: &str) -> Result<HealthResponse, ClientError> {
        self.admin(addr)?
            .health(HealthRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| one_node_error(&status))
    }

    /// Verification: what the replica of `topic`/`partition` on the node at `addr` holds from
    /// `offset` on, committed or not, leader or follower (`Data.ReadReplica`). Not retried.
    pub async fn read_replica(
        &self,
        addr: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<ReplicaContents, ClientError> {
        let request = ReadReplicaRequest {
            topic: topic.to_string(),
            partition,
            offset,
            max_bytes: 0,
        };
        self.data(addr)?
            .read_replica(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| one_node_error(&status))
    }

    /// Verification: every record the replica of `topic`/`partition` on the node at `addr`
    /// holds, from its log start to its log end as of the first read, committed or not
    /// (`Data.ReadReplica`, asked as often as its answers are bounded). Not retried.
    pub async fn read_whole_replica(
        &self,
        addr: &str,
        topic: &str,
        partition: u32,
    ) -> Result<WholeReplica, ClientError> {
        let mut contents = self.read_replica(addr, topic, partition, 0).await?;
        let name: std::sync::Arc<str> = std::sync::Arc::from(topic);
        let mut whole = WholeReplica {
            high_watermark: contents.high_watermark,
            log_start_offset: contents.log_start_offset,
            log_end_offset: contents.log_end_offset,
            records: Vec::new(),
        };
        let mut next = whole.log_start_offset;
        loop {
            let asked = next;
            whole.records.extend(consumer::decode_batches(
                &name,
                partition,
                &contents.record_batches,
                &mut next,
            )?);
            // Done at the log end, or when an answer brings nothing new (the log was cut).
            if next >= whole.log_end_offset || next == asked {
                return Ok(whole);
            }
            contents = self.read_replica(addr, topic, partition, next).await?;
        }
    }

    /// Creates a topic.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        config: TopicConfig,
    ) -> Result<(), ClientError> {
        let request = CreateTopicRequest {
            name: name.to_string(),
            partitions,
            replication_factor,
            config: Some(config),
        };
        self.any_node(false, |mut c| {
            let request = request.clone();
            async move { c.create_topic(request).await }
        })
        .await
        .map(|_| ())
    }

    /// Deletes a topic and its data.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let request = DeleteTopicRequest {
            name: name.to_string(),
        };
        self.any_node(false, |mut c| {
            let request = request.clone();
            async move { c.delete_topic(request).await }
        })
        .await
        .map(|_| ())
    }

    /// Every topic.
    pub async fn list_topics(&self) -> Result<Vec<TopicDescription>, ClientError> {
        self.list_topics_including(false).await
    }

    /// Every topic, internal ones (the consumer groups' `__consumer_offsets`) too if
    /// `include_internal`.
    pub async fn list_topics_including(
        &self,
        include_internal: bool,
    ) -> Result<Vec<TopicDescription>, ClientError> {
        self.any_node(true, |mut c| async move {
            c.list_topics(ListTopicsRequest { include_internal }).await
        })
        .await
        .map(|r| r.topics)
    }

    /// One topic, with each partition's replicas. Leaders, offsets and lag come from the nodes
    /// that lead the partitions ([`Client::describe_topic_everywhere`] merges them).
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, ClientError> {
        let request = DescribeTopicRequest {
            name: name.to_string(),
        };
        self.any_node(true, |mut c| {
            let request = request.clone();
            async move { c.describe_topic(request).await }
        })
        .await
    }

    /// One topic as every node sees it, merged: each partition's leader, offsets and follower
    /// lag come from the node that leads it.
    pub async fn describe_topic_everywhere(
        &self,
        name: &str,
    ) -> Result<TopicDescription, ClientError> {
        let mut merged = self.describe_topic(name).await?;
        for addr in self.addrs() {
            let Ok(mut admin) = self.admin(&addr) else {
                continue;
            };
            let Ok(view) = admin
                .describe_topic(DescribeTopicRequest {
                    name: name.to_string(),
                })
                .await
            else {
                continue; // a node that is down says nothing
            };
            for (partition, seen) in merged
                .partitions
                .iter_mut()
                .zip(view.into_inner().partitions)
            {
                if seen.high_watermark.is_some() {
                    *partition = seen; // from the leader itself
                } else if partition.leader.is_none() {
                    partition.leader = seen.leader;
                }
            }
        }
        Ok(merged)
    }

    /// Changes a topic's settings in place: each `(key, value)` of `set` is set (keys by their
    /// Kafka names, such as `retention.ms`), each key of `reset` returns to the node's default.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        set: &[(String, String)],
        reset: &[String],
    ) -> Result<(), ClientError> {
        let request = AlterTopicConfigRequest {
            name: name.to_string(),
            set: set.iter().cloned().collect(),
            reset: reset.to_vec(),
        };
        self.any_node(false, |mut c| {
            let request = request.clone();
            async move { c.alter_topic_config(request).await }
        })
        .await
        .map(|_| ())
    }

    /// Adds `count` partitions to a topic.
    pub async fn add_partitions(&self, name: &str, count: u32) -> Result<(), ClientError> {
        let request = AddPartitionsRequest {
            name: name.to_string(),
            count,
        };
        self.any_node(false, |mut c| {
            let request = request.clone();
            async move { c.add_partitions(request).await }
        })
        .await
        .map(|_| ())
    }

    /// Drains node `id`: it leads nothing and gets no new replicas, and its replicas move to
    /// other nodes. Returns once the moves are under way.
    pub async fn drain_node(&self, id: u64) -> Result<(), ClientError> {
        let request = DrainNodeRequest { node_id: id };
        self.any_node(false, |mut c| async move { c.drain_node(request).await })
            .await
            .map(|_| ())
    }

    /// Removes node `id` for good; with `force`, one that still holds replicas (gone for
    /// good): they are re-created on other nodes from the surviving ones.
    pub async fn remove_node(&self, id: u64, force: bool) -> Result<(), ClientError> {
        let request = RemoveNodeRequest { node_id: id, force };
        self.any_node(false, |mut c| async move { c.remove_node(request).await })
            .await
            .map(|_| ())
    }

    /// Moves partition `partition` of `topic` to `replicas` (preferred leader first). Returns
    /// once the move is under way.
    pub async fn move_partition(
        &self,
        topic: &str,
        partition: u32,
        replicas: Vec<u64>,
    ) -> Result<(), ClientError> {
        let request = MovePartitionRequest {
            topic: topic.to_string(),
            partition,
            replicas,
        };
        self.any_node(false, |mut c| {
            let request = request.clone();
            async move { c.move_partition(request).await }
        })
        .await
        .map(|_| ())
    }

    /// The moves that would spread replicas and preferred leaders evenly; with `execute`, the
    /// controller starts them (`started` says how many).
    pub async fn rebalance(&self, execute: bool) -> Result<RebalanceResponse, ClientError> {
        let request = RebalanceRequest { execute };
        self.any_node(!execute, |mut c| async move { c.rebalance(request).await })
            .await
    }

    /// Hands each partition (of `topic`, or all) to its preferred replica where that replica
    /// is alive and caught up; returns how many changed hands.
    pub async fn elect_preferred_leaders(&self, topic: Option<&str>) -> Result<u32, ClientError> {
        let request = ElectPreferredLeadersRequest {
            topic: topic.unwrap_or_default().to_string(),
        };
        self.any_node(true, |mut c| {
            let request = request.clone();
            async move { c.elect_preferred_leaders(request).await }
        })
        .await
        .map(|r| r.elected)
    }

    /// Sets `user`'s password for `mechanism` (creating the user if new): the password is
    /// salted and hashed here, with a fresh random salt and `iterations` (4,096 to 16,384);
    /// only the salted password travels, and the cluster keeps only keys derived from it.
    pub async fn set_user_password(
        &self,
        user: &str,
        mechanism: quipu_meta::ScramMechanism,
        password: &[u8],
        iterations: u32,
    ) -> Result<(), ClientError> {
        let salt = quipu_auth::random_bytes(SALT_BYTES);
        let request = AlterUsersRequest {
            upserts: vec![UserCredentialUpsert {
                user: user.to_string(),
                mechanism: proto_mechanism(mechanism) as i32,
                iterations,
                salted_password: quipu_auth::salted_password(
                    mechanism, password, &salt, iterations,
                ),
                salt,
            }],
            deletes: Vec::new(),
        };
        self.any_node(false, |mut c| {
            let request = request.clone();
            async move { c.alter_users(request).await }
        })
        .await
        .map(|_| ())
    }

    /// Deletes `user`'s credential for `mechanism` (the user goes with its last one).
    pub async fn delete_user_credential(
        &self,
        user: &str,
        mechanism: quipu_meta::ScramMechanism,
    ) -> Result<(), ClientError> {
        let request = AlterUsersRequest {
            upserts: Vec::new(),
            deletes: vec![UserCredentialDelete {
                user: user.to_string(),
                mechanism: proto_mechanism(mechanism) as i32,
            }],
        };
        self.any_node(false, |mut c| {
            let request = request.clone();
            async move { c.alter_users(request).await }
        })
        .await
        .map(|_| ())
    }

    /// Every user, with its credentials' mechanisms and iteration counts, by name.
    pub async fn list_users(
        &self,
    ) -> Result<Vec<(String, Vec<(quipu_meta::ScramMechanism, u32)>)>, ClientError> {
        let response = self
            .any_node(true, |mut c| async move {
                c.list_users(ListUsersRequest {}).await
            })
            .await?;
        Ok(response
            .users
            .into_iter()
            .map(|u| {
                let credentials = u
                    .credentials
                    .iter()
                    .filter_map(|c| {
                        let mechanism = match ScramMechanism::try_from(c.mechanism) {
                            Ok(ScramMechanism::Sha256) => quipu_meta::ScramMechanism::Sha256,
                            Ok(ScramMechanism::Sha512) => quipu_meta::ScramMechanism::Sha512,
                            _ => return None,
                        };
                        Some((mechanism, c.iterations))
                    })
                    .collect();
                (u.user, credentials)
            })
            .collect())
    }

    /// Creates access control bindings (all or none).
    pub async fn create_acls(
        &self,
        bindings: &[quipu_meta::acls::AclBinding],
    ) -> Result<(), ClientError> {
        let request = quipu_proto::v1::CreateAclsRequest {
            bindings: bindings.iter().map(acl_to_proto).collect(),
        };
        self.any_node(false, |mut c| {
            let request = request.clone();
            async move { c.create_acls(request).await }
        })
        .await
        .map(|_| ())
    }

    /// Deletes every binding any of `filters` selects; returns them.
    pub async fn delete_acls(
        &self,
        filters: &[quipu_meta::acls::AclFilter],
    ) -> Result<Vec<quipu_meta::acls::AclBinding>, ClientError> {
        let request = quipu_proto::v1::DeleteAclsRequest {
            filters: filters.iter().map(acl_filter_to_proto).collect(),
        };
        let response = self
            .any_node(false, |mut c| {
                let request = request.clone();
                async move { c.delete_acls(request).await }
            })
            .await?;
        response.deleted.into_iter().map(acl_from_proto).collect()
    }

    /// The bindings `filter` selects.
    pub async fn list_acls(
        &self,
        filter: &quipu_meta::acls::AclFilter,
    ) -> Result<Vec<quipu_meta::acls::AclBinding>, ClientError> {
        let request = quipu_proto::v1::ListAclsRequest {
            filter: Some(acl_filter_to_proto(filter)),
        };
        let response = self
            .any_node(true, |mut c| {
                let request = request.clone();
                async move { c.list_acls(request).await }
            })
            .await?;
        response.bindings.into_iter().map(acl_from_proto).collect()
    }

    fn cached_leader(&self, topic: &str, partition: u32) -> Option<String> {
        self.inner
            .leaders
            .lock()
            .expect("client leaders lock poisoned by a panic")
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    fn set_leader(&self, topic: &str, partition: u32, addr: Option<String>) {
        let mut leaders = self
            .inner
            .leaders
            .lock()
            .expect("client leaders lock poisoned by a panic");
        match addr {
            Some(addr) => leaders.insert((topic.to_string(), partition), addr),
            None => leaders.remove(&(topic.to_string(), partition)),
        };
    }

    /// Where to send a partition's data calls: its known leader, else a node that hosts a replica
    /// (it names the leader), else any node.
    async fn route(&self, topic: &str, partition: u32) -> Result<String, ClientError> {
        if let Some(addr) = self.cached_leader(topic, partition) {
            return Ok(addr);
        }
        let learning = Arc::clone(
            self.inner
                .learning
                .lock()
                .expect("client learning lock poisoned by a panic")
                .entry(topic.to_string())
                .or_default(),
        );
        let learnt = {
            let _learning = learning.lock().await;
            self.learn_route(topic, partition).await
        };
        // The lock goes once no other task holds it (a task that took it meanwhile keeps it in
        // the map): the map holds the topics being learnt, not every topic ever touched.
        let mut locks = self
            .inner
            .learning
            .lock()
            .expect("client learning lock poisoned by a panic");
        if Arc::strong_count(&learning) == 2 {
            locks.remove(topic);
        }
        learnt
    }

    /// [`Client::route`] once it holds the topic's learning lock: the cached leader if another
    /// task learnt it meanwhile, else what one description of the topic says.
    async fn learn_route(&self, topic: &str, partition: u32) -> Result<String, ClientError> {
        if let Some(addr) = self.cached_leader(topic, partition) {
            return Ok(addr);
        }
        let cluster = self.describe_cluster().await?;
        let description = self.describe_topic_everywhere(topic).await?;
        // One description names every partition's leader: keep them all, so that a producer
        // touching N partitions describes the topic once, not N times (each description lists
        // all N partitions, and asks every node).
        let known = known_leaders(&cluster, &description);
        for (p, addr) in &known {
            self.set_leader(topic, *p, Some(addr.clone()));
        }
        if let Some((_, addr)) = known.into_iter().find(|(p, _)| *p == partition) {
            return Ok(addr);
        }
        let assignment = description
            .partitions
            .iter()
            .find(|p| p.partition == partition)
            .ok_or_else(|| {
                ClientError::UnknownPartition(format!(
                    "topic {topic} has {} partitions; there is no partition {partition}",
                    description.partitions.len()
                ))
            })?;
        let addr_of = |id: u64| api_addr(&cluster, id);
        // Without a known leader: a replica whose node is alive knows the leader (or will).
        let alive = |id: &u64| cluster.nodes.iter().any(|n| n.node_id == *id && n.alive);
        let addr = assignment
            .replicas
            .iter()
            .copied()
            .filter(alive)
            .find_map(addr_of)
            .or_else(|| assignment.replicas.iter().copied().find_map(addr_of))
            .ok_or_else(|| {
                ClientError::Unavailable(format!("no node of {topic}/{partition} is known"))
            })?;
        self.set_leader(topic, partition, Some(addr.clone()));
        Ok(addr)
    }

    /// Runs a data call on the partition's leader, following "not leader" answers and retrying
    /// while the cluster cannot serve it (see the crate documentation for what is retried).
    async fn on_leader<T, F, Fut>(
        &self,
        topic: &str,
        partition: u32,
        idempotent: bool,
        call: F,
    ) -> Result<T, ClientError>
    where
        F: Fn(DataClient<Rpc>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let patience = self.inner.config.retry_deadline;
        self.try_leader_until(topic, partition, idempotent, patience, |addr| {
            let data = self.data(addr).map(&call);
            async move {
                match data {
                    Ok(called) => called
                        .await
                        .map(tonic::Response::into_inner)
                        .map_err(Attempt::Status),
                    Err(e) => Err(Attempt::Fatal(e)),
                }
            }
        })
        .await
    }

    /// Tries `attempt` on the partition's leader (its API address) until it succeeds or fails
    /// for good, following "not leader" answers and retrying for at most `patience` what can be
    /// retried (see the crate documentation).
    async fn try_leader_until<T, F, Fut>(
        &self,
        topic: &str,
        partition: u32,
        idempotent: bool,
        patience: Duration,
        attempt: F,
    ) -> Result<T, ClientError>
    where
        F: Fn(&str) -> Fut,
        Fut: std::future::Future<Output = Result<T, Attempt>>,
    {
        let deadline = tokio::time::Instant::now() + patience;
        let mut backoff = self.inner.config.retry_backoff;
        loop {
            let addr = self.route(topic, partition).await?;
            let failure = match attempt(&addr).await {
                Ok(answer) => return Ok(answer),
                Err(Attempt::Status(status)) => {
                    tracing::debug!(%topic, partition, %addr, code = ?status.code(), message = status.message(), "data call failed");
                    classify(&status, idempotent)
                }
                Err(Attempt::NotSent(e)) => Failure::Retry(e),
                Err(Attempt::Fatal(e)) => return Err(e),
            };
            let last = match failure {
                Failure::Fatal(e) => return Err(e),
                Failure::NotLeader(Some(leader)) if leader != addr => {
                    self.set_leader(topic, partition, Some(leader));
                    continue; // straight to the named leader
                }
                Failure::NotLeader(_) => {
                    self.set_leader(topic, partition, None);
                    ClientError::Unavailable(format!("{topic}/{partition} has no leader yet"))
                }
                Failure::Retry(e) => {
                    self.set_leader(topic, partition, None);
                    e
                }
            };
            if tokio::time::Instant::now() + backoff >= deadline {
                return Err(last);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Sends one record batch (Kafka RecordBatch v2, e.g. from `quipu_record::BatchBuilder`) to
    /// a partition's leader. Returns the offset of its first record (`None` with
    /// [`AckLevel::None`]).
    pub async fn produce(
        &self,
        topic: &str,
        partition: u32,
        batch: Bytes,
        acks: AckLevel,
    ) -> Result<Option<u64>, ClientError> {
        let acks = match acks {
            AckLevel::All => Acks::All,
            AckLevel::Leader => Acks::Leader,
            AckLevel::None => Acks::None,
        };
        let patience = self.inner.config.retry_deadline;
        self.send_batch(topic, partition, batch, acks, false, patience)
            .await
            .map(|r| r.base_offset)
    }

    /// One produce request on the partition's leader, on the leader's produce session
    /// (`session.rs`), retried as [`Client::try_leader_until`] retries (`idempotent`: also when
    /// its outcome is unknown).
    async fn send_batch(
        &self,
        topic: &str,
        partition: u32,
        batch: Bytes,
        acks: Acks,
        idempotent: bool,
        patience: Duration,
    ) -> Result<quipu_proto::v1::ProduceResponse, ClientError> {
        let request = ProduceRequest {
            topic: topic.to_string(),
            partition,
            acks: acks as i32,
            record_batch: batch,
        };
        let timeout = self.inner.config.request_timeout;
        let request = &request;
        self.try_leader_until(topic, partition, idempotent, patience, |addr| {
            let session = self.session(addr);
            async move {
                let session = session.map_err(Attempt::Fatal)?;
                if !session.refused() {
                    let answered = session.produce(request, timeout).await;
                    if !session.refused() {
                        return answered;
                    }
                }
                // The node refused the session (an older version), so nothing on it was read:
                // a `Produce` call instead.
                session
                    .data()
                    .produce(request.clone())
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(Attempt::Status)
            }
        })
        .await
    }

    /// Sends one batch of an idempotent producer (its header carries the producer id, epoch
    /// and base sequence from [`Client::init_producer_id`]) and retries it, whatever the
    /// outcome of the last try, until it is acknowledged or `patience` has passed: the partition
    /// writes it once however often it arrives (`docs/protocol/idempotence.md`). Returns the
    /// offset of its first record. Acks must be [`AckLevel::All`] or [`AckLevel::Leader`].
    ///
    /// Once a try may have reached a leader, only an answer proves what happened: a batch that
    /// runs out of `patience` while the cluster is unavailable fails with
    /// [`ClientError::UnknownOutcome`] (it may still be written), never with
    /// [`ClientError::Unavailable`]. Its sequence numbers must then never be used for other
    /// records: the partition would take those for a retry of this batch.
    pub async fn produce_idempotent(
        &self,
        topic: &str,
        partition: u32,
        batch: Bytes,
        acks: AckLevel,
        patience: Duration,
    ) -> Result<u64, ClientError> {
        let acks = match acks {
            AckLevel::All => Acks::All,
            AckLevel::Leader => Acks::Leader,
            AckLevel::None => {
                return Err(ClientError::InvalidArgument(
                    "an idempotent produce needs acknowledgements (acks 1 or all)".to_string(),
                ));
            }
        };
        let response = self
            .send_batch(topic, partition, batch, acks, true, patience)
            .await
            .map_err(error::after_idempotent_retries)?;
        response.base_offset.ok_or_else(|| {
            ClientError::Other("the leader acknowledged the batch without an offset".to_string())
        })
    }

    /// A new idempotent producer id and its epoch, unique in the cluster, from any node.
    pub async fn init_producer_id(&self) -> Result<(i64, i16), ClientError> {
        let response = self
            .any_node_until(
                true,
                self.inner.config.retry_deadline,
                Client::data,
                |mut c| async move { c.init_producer_id(InitProducerIdRequest {}).await },
            )
            .await?;
        let epoch = i16::try_from(response.producer_epoch).map_err(|_| {
            ClientError::Other(format!(
                "producer epoch {} out of range",
                response.producer_epoch
            ))
        })?;
        Ok((response.producer_id, epoch))
    }

    /// The earliest offset, the high watermark, or the first offset at or after a timestamp.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: u32,
        at: StartAt,
    ) -> Result<u64, ClientError> {
        let (spec, timestamp_ms) = match at {
            StartAt::Earliest => (OffsetSpec::Earliest, 0),
            StartAt::Latest => (OffsetSpec::Latest, 0),
            StartAt::Timestamp(ms) => (OffsetSpec::Timestamp, ms),
            StartAt::Offset(offset) => return Ok(offset),
        };
        let request = ListOffsetsRequest {
            topic: topic.to_string(),
            partition,
            spec: spec as i32,
            timestamp_ms,
        };
        self.on_leader(topic, partition, true, |mut c| {
            let request = request.clone();
            async move { c.list_offsets(request).await }
        })
        .await
        .map(|r| r.offset)
    }
}

fn acl_to_proto(b: &quipu_meta::acls::AclBinding) -> quipu_proto::v1::AclBinding {
    quipu_proto::v1::AclBinding {
        resource_type: b.resource_type.name().to_owned(),
        resource_name: b.resource_name.clone(),
        pattern_type: b.pattern_type.name().to_owned(),
        principal: b.principal.clone(),
        host: b.host.clone(),
        operation: b.operation.name().to_owned(),
        permission: b.permission.name().to_owned(),
    }
}

/// The partitions of `topic` whose leader is known and has an API address in `cluster`, with
/// that address.
fn known_leaders(cluster: &Cluster, topic: &Topic) -> Vec<(u32, String)> {
    topic
        .partitions
        .iter()
        .filter_map(|p| Some((p.partition, api_addr(cluster, p.leader?)?)))
        .collect()
}

/// The API address of node `id`, if `cluster` names one.
fn api_addr(cluster: &Cluster, id: u64) -> Option<String> {
    cluster
        .nodes
        .iter()
        .find(|n| n.node_id == id && !n.api_addr.is_empty())
        .map(|n| n.api_addr.clone())
}

fn acl_filter_to_proto(f: &quipu_meta::acls::AclFilter) -> quipu_proto::v1::AclFilter {
    use quipu_meta::acls::PatternFilter;
    quipu_proto::v1::AclFilter {
        resource_type: f.resource_type.map(|t| t.name().to_owned()),
        resource_name: f.resource_name.clone(),
        pattern_type: match f.pattern {
            PatternFilter::Any => None,
            PatternFilter::Match => Some("match".to_owned()),
            PatternFilter::Exactly(p) => Some(p.name().to_owned()),
        },
        principal: f.principal.clone(),
        host: f.host.clone(),
        operation: f.operation.map(|o| o.name().to_owned()),
        permission: f.permission.map(|p| p.name().to_owned()),
    }
}

fn acl_from_proto(
    b: quipu_proto::v1::AclBinding,
) -> Result<quipu_meta::acls::AclBinding, ClientError> {
    use quipu_meta::acls::{Operation, PatternType, Permission, ResourceType};
    fn named<T>(name: &str, parse: impl Fn(&str) -> Option<T>) -> Result<T, ClientError> {
        parse(name).ok_or_else(|| ClientError::Other(format!("the server named {name:?}")))
    }
    Ok(quipu_meta::acls::AclBinding {
        resource_type: named(&b.resource_type, ResourceType::from_name)?,
        resource_name: b.resource_name,
        pattern_type: named(&b.pattern_type, PatternType::from_name)?,
        principal: b.principal,
        host: b.host,
        operation: named(&b.operation, Operation::from_name)?,
        permission: named(&b.permission, Permission::from_name)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(partition: u32, leader: Option<u64>) -> PartitionDescription {
        PartitionDescription {
            partition,
            leader,
            replicas: vec![1, 2, 3],
            ..PartitionDescription::default()
        }
    }

    #[test]
    fn one_description_gives_every_partition_whose_leader_has_an_address() {
        let node = |node_id: u64, api_addr: &str| NodeDescription {
            node_id,
            api_addr: api_addr.to_string(),
            alive: true,
            ..NodeDescription::default()
        };
        let cluster = Cluster {
            nodes: vec![node(1, "127.0.0.1:1"), node(2, "127.0.0.1:2"), node(3, "")],
            ..Cluster::default()
        };
        let topic = Topic {
            partitions: vec![
                partition(0, Some(2)),
                partition(1, None),
                partition(2, Some(1)),
                partition(3, Some(3)), // no API address known
                partition(4, Some(9)), // not in the cluster description
            ],
            ..Topic::default()
        };
        assert_eq!(
            known_leaders(&cluster, &topic),
            vec![
                (0, "127.0.0.1:2".to_string()),
                (2, "127.0.0.1:1".to_string())
            ]
        );
    }
}
