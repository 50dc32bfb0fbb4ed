//! Consumer groups through `quipu.v1.Groups`: calls routed to the group's coordinator
//! (found with `FindCoordinator`, followed on NOT_COORDINATOR), and [`GroupConsumer`], a member
//! that consumes the partitions the coordinator assigns it and commits what it consumed.

use std::collections::BTreeMap;
use std::time::Duration;

use quipu_proto::v1::groups_client::GroupsClient;
use quipu_proto::v1::{
    CommitOffsetsRequest, DeleteGroupRequest, DescribeGroupRequest, FetchOffsetsRequest,
    FindCoordinatorRequest, GroupDescription, GroupHeartbeatRequest, GroupHeartbeatResponse,
    ListGroupsRequest, ListedGroup, OffsetToCommit, TopicPartitions,
};

use crate::error::{Failure, classify};
use crate::{Client, ClientError, ConsumedRecord, Consumer, StartAt};

/// Partitions by topic.
pub type Assignment = BTreeMap<String, std::collections::BTreeSet<i32>>;

/// A committed offset as fetched (`offset` -1: none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The next offset the group reads; -1 if it committed none.
    pub offset: i64,
    /// The metadata committed with it.
    pub metadata: String,
}

/// One partition's step in a reset of a group's offsets: the offset the group committed and
/// the one it is moved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetMove {
    /// The partition.
    pub partition: u32,
    /// What the group committed (`None`: nothing yet).
    pub current: Option<i64>,
    /// Where it is moved: an offset within the partition (its log start to its end).
    pub target: u64,
}

impl Client {
    /// Where resetting `group`'s offsets on `topic` (one `partition`, or every partition) to
    /// `to` moves them; nothing is committed. An offset outside a partition is moved inside
    /// it (to its log start or end), as Kafka's reset tool does; a time past every record
    /// moves to the end.
    pub async fn plan_offset_reset(
        &self,
        group: &str,
        topic: &str,
        partition: Option<u32>,
        to: StartAt,
    ) -> Result<Vec<OffsetMove>, ClientError> {
        let partitions: Vec<u32> = match partition {
            Some(p) => vec![p],
            None => self
                .describe_topic(topic)
                .await?
                .partitions
                .iter()
                .map(|p| p.partition)
                .collect(),
        };
        let keys: Vec<(String, i32)> = partitions
            .iter()
            .map(|p| (topic.to_owned(), i32::try_from(*p).unwrap_or(i32::MAX)))
            .collect();
        let current: BTreeMap<i32, i64> = self
            .fetch_offsets(group, &keys)
            .await?
            .into_iter()
            .filter(|c| c.topic == topic && c.offset >= 0)
            .map(|c| (c.partition, c.offset))
            .collect();
        let mut plan = Vec::with_capacity(partitions.len());
        for p in partitions {
            let first = self.list_offsets(topic, p, StartAt::Earliest).await?;
            let end = self.list_offsets(topic, p, StartAt::Latest).await?;
            let target = match to {
                StartAt::Offset(o) => o.clamp(first, end),
                other => self.list_offsets(topic, p, other).await?,
            };
            plan.push(OffsetMove {
                partition: p,
                current: current.get(&i32::try_from(p).unwrap_or(i32::MAX)).copied(),
                target,
            });
        }
        Ok(plan)
    }

    /// Commits `plan` for `group` on `topic`, as an administrator (the group must have no
    /// members). Per move, why it was not committed (`None`: committed).
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        plan: &[OffsetMove],
    ) -> Result<Vec<Option<String>>, ClientError> {
        let offsets: Vec<(String, i32, i64)> = plan
            .iter()
            .map(|m| {
                (
                    topic.to_owned(),
                    i32::try_from(m.partition).unwrap_or(i32::MAX),
                    i64::try_from(m.target).unwrap_or(i64::MAX),
                )
            })
            .collect();
        self.commit_offsets(group, "", -1, &offsets).await
    }

    fn groups(&self, addr: &str) -> Result<GroupsClient<crate::Rpc>, ClientError> {
        Ok(GroupsClient::new(self.rpc(addr)?))
    }

    /// The API address of `group`'s coordinator (cached, or found from any node).
    async fn coordinator(&self, group: &str) -> Result<String, ClientError> {
        if let Some(addr) = self.cached_leader(group, u32::MAX) {
            return Ok(addr);
        }
        let request = FindCoordinatorRequest {
            group: group.to_string(),
        };
        let found = self
            .any_node_until(
                true,
                self.inner.config.retry_deadline,
                Client::groups,
                |mut c| {
                    let request = request.clone();
                    async move { c.find_coordinator(request).await }
                },
            )
            .await?;
        self.set_leader(group, u32::MAX, Some(found.api_addr.clone()));
        Ok(found.api_addr)
    }

    /// Runs a call on `group`'s coordinator, finding it again when it moves and retrying while
    /// it is not available.
    async fn on_coordinator<T, F, Fut>(&self, group: &str, call: F) -> Result<T, ClientError>
    where
        F: Fn(GroupsClient<crate::Rpc>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = tokio::time::Instant::now() + self.inner.config.retry_deadline;
        let mut backoff = self.inner.config.retry_backoff;
        loop {
            let addr = self.coordinator(group).await?;
            let failure = match call(self.groups(&addr)?).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => classify(&status, true),
            };
            let last = match failure {
                Failure::Fatal(e) => return Err(e),
                Failure::NotLeader(Some(coordinator)) if coordinator != addr => {
                    self.set_leader(group, u32::MAX, Some(coordinator));
                    continue;
                }
                Failure::NotLeader(_) => {
                    self.set_leader(group, u32::MAX, None);
                    ClientError::Unavailable(format!("group {group} has no coordinator yet"))
                }
                Failure::Retry(e) => {
                    self.set_leader(group, u32::MAX, None);
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

    /// One group heartbeat (KIP-848's), on the coordinator.
    pub async fn group_heartbeat(
        &self,
        request: GroupHeartbeatRequest,
    ) -> Result<GroupHeartbeatResponse, ClientError> {
        let group = request.group.clone();
        self.on_coordinator(&group, |mut c| {
            let request = request.clone();
            async move { c.heartbeat(request).await }
        })
        .await
    }

    /// Commits `offsets` (topic, partition, next offset) for `group`, as member `member_id` at
    /// `member_epoch` (`""` and -1 for a group without members). Returns, per offset, why it
    /// was not committed (`None`: committed).
    pub async fn commit_offsets(
        &self,
        group: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: &[(String, i32, i64)],
    ) -> Result<Vec<Option<String>>, ClientError> {
        let request = CommitOffsetsRequest {
            group: group.to_string(),
            member_id: member_id.to_string(),
            member_epoch,
            offsets: offsets
                .iter()
                .map(|(topic, partition, offset)| OffsetToCommit {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: *offset,
                    metadata: String::new(),
                })
                .collect(),
        };
        let response = self
            .on_coordinator(group, |mut c| {
                let request = request.clone();
                async move { c.commit_offsets(request).await }
            })
            .await?;
        Ok(response
            .errors
            .into_iter()
            .map(|e| (!e.is_empty()).then_some(e))
            .collect())
    }

    /// The offsets `group` committed for `partitions` (empty: all it committed).
    pub async fn fetch_offsets(
        &self,
        group: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Committed>, ClientError> {
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (topic, partition) in partitions {
            by_topic.entry(topic).or_default().push(*partition);
        }
        let request = FetchOffsetsRequest {
            group: group.to_string(),
            partitions: by_topic
                .into_iter()
                .map(|(topic, partitions)| TopicPartitions {
                    topic: topic.to_string(),
                    partitions,
                })
                .collect(),
        };
        let response = self
            .on_coordinator(group, |mut c| {
                let request = request.clone();
                async move { c.fetch_offsets(request).await }
            })
            .await?;
        Ok(response
            .offsets
            .into_iter()
            .map(|o| Committed {
                topic: o.topic,
                partition: o.partition,
                offset: o.offset,
                metadata: o.metadata,
            })
            .collect())
    }

    /// Every group in the cluster (each node lists those it coordinates), by id.
    pub async fn list_groups(&self) -> Result<Vec<ListedGroup>, ClientError> {
        let cluster = self.describe_cluster().await?;
        let mut all: BTreeMap<String, ListedGroup> = BTreeMap::new();
        for node in cluster.nodes.iter().filter(|n| !n.api_addr.is_empty()) {
            let mut c = self.groups(&node.api_addr)?;
            match c.list_groups(ListGroupsRequest {}).await {
                Ok(response) => {
                    for group in response.into_inner().groups {
                        all.insert(group.group.clone(), group);
                    }
                }
                Err(status) => match classify(&status, true) {
                    Failure::Fatal(e) => return Err(e),
                    // A node that is down coordinates nothing now (its groups moved).
                    Failure::NotLeader(_) | Failure::Retry(_) => {}
                },
            }
        }
        Ok(all.into_values().collect())
    }

    /// `group` as its coordinator describes it.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, ClientError> {
        let request = DescribeGroupRequest {
            group: group.to_string(),
        };
        self.on_coordinator(group, |mut c| {
            let request = request.clone();
            async move { c.describe_group(request).await }
        })
        .await
    }

    /// Deletes `group` (it must have no members): its committed offsets too.
    pub async fn delete_group(&self, group: &str) -> Result<(), ClientError> {
        let request = DeleteGroupRequest {
            group: group.to_string(),
        };
        self.on_coordinator(group, |mut c| {
            let request = request.clone();
            async move { c.delete_group(request).await }
        })
        .await
        .map(|_| ())
    }
}

/// How a [`GroupConsumer`] behaves.
#[derive(Debug, Clone)]
pub struct GroupConsumerConfig {
    /// The group.
    pub group: String,
    /// The topics it subscribes to.
    pub topics: Vec<String>,
    /// Where a partition the group has no committed offset for starts: `Earliest` or `Latest`.
    pub auto_offset_reset: StartAt,
    /// Commit what was consumed at this interval, and when partitions are revoked and when the
    /// consumer closes; `None`: only when [`GroupConsumer::commit`] is called.
    pub auto_commit_interval: Option<Duration>,
    /// The client id the coordinator shows.
    pub client_id: String,
    /// How long the member may take to release revoked partitions, in ms.
    pub rebalance_timeout_ms: i32,
    /// `uniform` or `range` (`None`: the group's).
    pub assignor: Option<String>,
}

impl GroupConsumerConfig {
    /// A consumer of `topics` in `group`, from the earliest offset where none is committed,
    /// committing every 5 s.
    pub fn new(group: &str, topics: &[&str]) -> GroupConsumerConfig {
        GroupConsumerConfig {
            group: group.to_string(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            auto_offset_reset: StartAt::Earliest,
            auto_commit_interval: Some(Duration::from_secs(5)),
            client_id: "quipu-client".to_string(),
            rebalance_timeout_ms: 60_000,
            assignor: None,
        }
    }
}

/// One member of a consumer group: it heartbeats to the group's coordinator, consumes the
/// partitions the coordinator assigns it (from the group's committed offsets, else
/// `auto_offset_reset`), and commits its positions (at the interval, before releasing
/// partitions, and on close). At-least-once: records consumed after the last commit are
/// consumed again by whoever gets the partition next.
#[derive(Debug)]
pub struct GroupConsumer {
    client: Client,
    config: GroupConsumerConfig,
    member_id: String,
    epoch: i32,
    interval: Duration,
    next_heartbeat: tokio::time::Instant,
    next_commit: Option<tokio::time::Instant>,
    /// The partitions held, each with the task that reads it (a following fetch stream) into
    /// `batches`.
    readers: BTreeMap<(String, i32), Reader>,
    /// Batches the readers read, tagged with their reader's id.
    batches: tokio::sync::mpsc::Receiver<(u64, Result<Vec<ConsumedRecord>, ClientError>)>,
    /// Given to each new reader.
    batches_tx: tokio::sync::mpsc::Sender<(u64, Result<Vec<ConsumedRecord>, ClientError>)>,
    /// The next reader's id.
    next_reader: u64,
    /// Per partition held, the offset after the last record returned by `poll`: what a commit
    /// commits.
    positions: BTreeMap<(String, i32), u64>,
    /// Records read and not yet returned (`poll` returns at most its `max`).
    buffered: std::collections::VecDeque<ConsumedRecord>,
    /// The position last committed per partition.
    committed: BTreeMap<(String, i32), u64>,
}

/// One held partition's reader: a task following its partition from a position.
#[derive(Debug)]
struct Reader {
    id: u64,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Batches a reader may have read ahead of `poll`, per group consumer.
const READ_AHEAD_BATCHES: usize = 16;

/// A group heartbeat's "full" fields for a join.
fn join_request(config: &GroupConsumerConfig, member_id: &str) -> GroupHeartbeatRequest {
    GroupHeartbeatRequest {
        group: config.group.clone(),
        member_id: member_id.to_string(),
        member_epoch: 0,
        instance_id: None,
        rebalance_timeout_ms: config.rebalance_timeout_ms,
        subscribed_topics: Some(quipu_proto::v1::TopicNames {
            names: config.topics.clone(),
        }),
        server_assignor: config.assignor.clone(),
        owned: Some(quipu_proto::v1::PartitionSet { topics: Vec::new() }),
        client_id: config.client_id.clone(),
    }
}

impl GroupConsumer {
    /// Joins the group.
    pub async fn join(client: &Client, config: GroupConsumerConfig) -> Result<Self, ClientError> {
        let (batches_tx, batches) = tokio::sync::mpsc::channel(READ_AHEAD_BATCHES);
        let mut consumer = GroupConsumer {
            batches,
            batches_tx,
            next_reader: 0,
            client: client.clone(),
            member_id: String::new(),
            epoch: 0,
            interval: Duration::from_secs(1),
            next_heartbeat: tokio::time::Instant::now(),
            next_commit: config
                .auto_commit_interval
                .map(|i| tokio::time::Instant::now() + i),
            readers: BTreeMap::new(),
            positions: BTreeMap::new(),
            buffered: std::collections::VecDeque::new(),
            committed: BTreeMap::new(),
            config,
        };
        consumer.heartbeat().await?;
        Ok(consumer)
    }

    /// The member id the coordinator gave this consumer.
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// Per partition held, the position a commit would commit now (the offset after the last
    /// record `poll` returned).
    pub fn positions(&self) -> Vec<(String, i32, u64)> {
        self.positions
            .iter()
            .filter(|(key, _)| self.readers.contains_key(*key))
            .map(|((topic, partition), position)| (topic.clone(), *partition, *position))
            .collect()
    }

    /// The partitions this consumer holds now.
    pub fn assignment(&self) -> Assignment {
        let mut out = Assignment::new();
        for (topic, partition) in self.readers.keys() {
            out.entry(topic.clone()).or_default().insert(*partition);
        }
        out
    }

    /// Heartbeats if due, commits if due, and returns at most `max` of the records available
    /// now in the partitions it holds (possibly none; each call waits at most about half a
    /// second for the first). Each held partition is read ahead by its own task on a following
    /// fetch stream (at most 16 batches buffered for the consumer). A commit commits what was
    /// returned, nothing more.
    pub async fn poll(&mut self, max: usize) -> Result<Vec<ConsumedRecord>, ClientError> {
        if tokio::time::Instant::now() >= self.next_heartbeat {
            self.heartbeat().await?;
        }
        if let Some(at) = self.next_commit
            && tokio::time::Instant::now() >= at
        {
            self.commit().await?;
            self.next_commit = self
                .config
                .auto_commit_interval
                .map(|i| tokio::time::Instant::now() + i);
        }
        if self.buffered.is_empty() && !self.readers.is_empty() {
            // The first batch any reader has, waiting at most half a second, then whatever
            // else is there.
            let first = tokio::time::timeout(Duration::from_millis(500), self.batches.recv()).await;
            let mut got: Vec<(u64, Result<Vec<ConsumedRecord>, ClientError>)> = Vec::new();
            if let Ok(Some(message)) = first {
                got.push(message);
                while let Ok(message) = self.batches.try_recv() {
                    got.push(message);
                }
            }
            for (id, result) in got {
                // A batch of a partition released (or restarted) since it was read is dropped.
                let Some(key) = self
                    .readers
                    .iter()
                    .find(|(_, r)| r.id == id)
                    .map(|(key, _)| key.clone())
                else {
                    continue;
                };
                match result {
                    Ok(batch) => self.buffered.extend(batch),
                    // The committed offset is gone (retention): start over where
                    // `auto_offset_reset` says.
                    Err(ClientError::OffsetOutOfRange(_)) => {
                        let reset = self.config.auto_offset_reset;
                        self.start_reader(key, reset).await?;
                    }
                    Err(e) => return Err(e),
                }
            }
        } else if self.readers.is_empty() {
            // Nothing held (yet): pace the heartbeats.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let take = max.min(self.buffered.len());
        let records: Vec<ConsumedRecord> = self.buffered.drain(..take).collect();
        for record in &records {
            let key = (
                record.topic.to_string(),
                i32::try_from(record.partition).unwrap_or(i32::MAX),
            );
            self.positions.insert(key, record.offset + 1);
        }
        Ok(records)
    }

    /// Commits the position of every partition held that moved since its last commit.
    pub async fn commit(&mut self) -> Result<(), ClientError> {
        let keys: Vec<(String, i32)> = self.readers.keys().cloned().collect();
        self.commit_partitions(&keys).await
    }

    async fn commit_partitions(&mut self, keys: &[(String, i32)]) -> Result<(), ClientError> {
        let offsets: Vec<(String, i32, i64)> = keys
            .iter()
            .filter_map(|key| {
                let position = *self.positions.get(key)?;
                (self.committed.get(key) != Some(&position)).then(|| {
                    (
                        key.0.clone(),
                        key.1,
                        i64::try_from(position).unwrap_or(i64::MAX),
                    )
                })
            })
            .collect();
        if offsets.is_empty() {
            return Ok(());
        }
        let errors = self
            .client
            .commit_offsets(&self.config.group, &self.member_id, self.epoch, &offsets)
            .await?;
        for ((topic, partition, offset), error) in offsets.into_iter().zip(errors) {
            if let Some(error) = error {
                return Err(ClientError::GroupRefused(format!(
                    "{topic}/{partition} at {offset} not committed: {error}"
                )));
            }
            self.committed
                .insert((topic, partition), u64::try_from(offset).unwrap_or(0));
        }
        Ok(())
    }

    /// Heartbeats now, and takes up the assignment it answers with.
    async fn heartbeat(&mut self) -> Result<(), ClientError> {
        let request = if self.epoch == 0 {
            join_request(&self.config, &self.member_id)
        } else {
            GroupHeartbeatRequest {
                group: self.config.group.clone(),
                member_id: self.member_id.clone(),
                member_epoch: self.epoch,
                rebalance_timeout_ms: -1,
                owned: Some(quipu_proto::v1::PartitionSet {
                    topics: to_topics(&self.assignment()),
                }),
                client_id: self.config.client_id.clone(),
                ..GroupHeartbeatRequest::default()
            }
        };
        let reply = match self.client.group_heartbeat(request).await {
            Ok(reply) => reply,
            Err(ClientError::UnknownMember(_) | ClientError::FencedMember(_)) => {
                // Fenced: drop every partition (without committing: the group moved on) and
                // rejoin with the same member id.
                self.readers.clear();
                self.positions.clear();
                self.buffered.clear();
                self.committed.clear();
                self.epoch = 0;
                return Box::pin(self.heartbeat()).await;
            }
            Err(e) => return Err(e),
        };
        self.member_id = reply.member_id;
        self.epoch = reply.member_epoch;
        self.interval =
            Duration::from_millis(u64::try_from(reply.heartbeat_interval_ms).unwrap_or(1000));
        self.next_heartbeat = tokio::time::Instant::now() + self.interval;
        if let Some(assignment) = reply.assignment {
            self.take_assignment(from_topics(&assignment.topics))
                .await?;
            // Tell the coordinator at once what is released and held now.
            self.next_heartbeat = tokio::time::Instant::now();
        }
        Ok(())
    }

    /// Releases partitions no longer assigned (committing them first) and starts reading new
    /// ones from the group's committed offsets.
    async fn take_assignment(&mut self, assignment: Assignment) -> Result<(), ClientError> {
        let held: Vec<(String, i32)> = self.readers.keys().cloned().collect();
        let revoked: Vec<(String, i32)> = held
            .into_iter()
            .filter(|(t, p)| !assignment.get(t).is_some_and(|ps| ps.contains(p)))
            .collect();
        if !revoked.is_empty() {
            if self.config.auto_commit_interval.is_some()
                && let Err(e) = self.commit_partitions(&revoked).await
            {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "cannot commit revoked partitions"
                );
            }
            for key in &revoked {
                self.readers.remove(key);
                self.positions.remove(key);
                self.committed.remove(key);
            }
            self.buffered.retain(|r| {
                let key = (
                    r.topic.to_string(),
                    i32::try_from(r.partition).unwrap_or(i32::MAX),
                );
                !revoked.contains(&key)
            });
        }
        let new: Vec<(String, i32)> = assignment
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
            .filter(|key| !self.readers.contains_key(key))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let committed = self.client.fetch_offsets(&self.config.group, &new).await?;
        for c in committed {
            let start = match u64::try_from(c.offset) {
                Ok(offset) => StartAt::Offset(offset),
                Err(_) => self.config.auto_offset_reset,
            };
            if let StartAt::Offset(offset) = start {
                self.committed
                    .insert((c.topic.clone(), c.partition), offset);
            }
            self.start_reader((c.topic, c.partition), start).await?;
        }
        Ok(())
    }

    /// Starts (or restarts) the reader of a held partition at `start`; the position is where
    /// it starts.
    async fn start_reader(
        &mut self,
        key: (String, i32),
        start: StartAt,
    ) -> Result<(), ClientError> {
        let number = u32::try_from(key.1).unwrap_or(0);
        let mut consumer = Consumer::new(&self.client, &key.0, number, start, true).await?;
        self.positions.insert(key.clone(), consumer.position());
        let id = self.next_reader;
        self.next_reader += 1;
        let tx = self.batches_tx.clone();
        let task = tokio::spawn(async move {
            loop {
                let read = match consumer.next_batch().await {
                    Ok(Some(batch)) => Ok(batch),
                    Ok(None) => continue, // a following reader does not end
                    Err(e) => Err(e),
                };
                let failed = read.is_err();
                if tx.send((id, read)).await.is_err() || failed {
                    return;
                }
            }
        });
        self.readers.insert(key, Reader { id, task });
        Ok(())
    }

    /// Commits (with auto-commit on) and leaves the group: its partitions go to the others.
    pub async fn close(mut self) -> Result<(), ClientError> {
        if self.config.auto_commit_interval.is_some() {
            self.commit().await?;
        }
        let request = GroupHeartbeatRequest {
            group: self.config.group.clone(),
            member_id: self.member_id.clone(),
            member_epoch: -1,
            rebalance_timeout_ms: -1,
            ..GroupHeartbeatRequest::default()
        };
        self.client.group_heartbeat(request).await.map(|_| ())
    }
}

fn to_topics(assignment: &Assignment) -> Vec<TopicPartitions> {
    assignment
        .iter()
        .map(|(topic, partitions)| TopicPartitions {
            topic: topic.clone(),
            partitions: partitions.iter().copied().collect(),
        })
        .collect()
}

fn from_topics(topics: &[TopicPartitions]) -> Assignment {
    let mut out = Assignment::new();
    for t in topics {
        out.entry(t.topic.clone())
            .or_default()
            .extend(t.partitions.iter().copied());
    }
    out
}
