//! `quipu.v1.Data`: produce, fetch and offsets, on the partition's leader.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quipu_node::{GroupId, NodeHandle, Partition};
use quipu_proto::v1::data_server::Data;
use quipu_proto::v1::{
    Acks, ErrorReason, FetchRequest, FetchResponse, InitProducerIdRequest, InitProducerIdResponse,
    ListOffsetsRequest, ListOffsetsResponse, OffsetSpec, ProduceRequest, ProduceResponse,
    ProduceSessionReply, ProduceSessionRequest, ProduceStreamItem, ProduceStreamResponse,
    ReadReplicaRequest, ReadReplicaResponse,
};
use quipu_storage::Offset;
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status, Streaming};

use quipu_meta::acls::Operation;

use crate::auth::Gate;
use crate::error::{
    from_controller, from_fetch, from_produce, invalid, not_leader, status, unknown_topic,
};

/// Most produce requests on one `ProduceStream`.
pub const PRODUCE_STREAM_REQUESTS_MAX: usize = 10_000;
/// Most requests of one `ProduceSession` read and not yet answered: the session reads no more
/// until answers go out (the producer's own limit is its buffer, 512 batches of 64 KiB by
/// default).
pub const PRODUCE_SESSION_IN_FLIGHT_MAX: usize = 1_024;
/// Most bytes of record batches of one `ProduceSession` read and not yet answered (one larger
/// request is read alone).
pub const PRODUCE_SESSION_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Most bytes of record batches read and not yet answered on all of a node's produce sessions
/// together (a client may open up to `streams_per_connection_max` sessions on a connection).
pub const PRODUCE_SESSIONS_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Longest a session that ends (the server stops, a request cannot be read) waits for the
/// answers it owes to go out before it drops them.
const PRODUCE_SESSION_DRAIN: Duration = Duration::from_secs(10);
/// Most bytes of batches in one fetch message.
pub const FETCH_BYTES_MAX: u32 = 16 * 1024 * 1024;
/// Longest `max_wait_ms` of a fetch.
pub const FETCH_WAIT_MS_MAX: u32 = 30_000;
/// Shortest wait of a following fetch: with `follow`, a smaller `max_wait_ms` (0, say) is raised
/// to this, so an idle partition gets an empty message at most this often instead of a stream of
/// them as fast as the client reads.
pub const FOLLOW_WAIT_MS_MIN: u32 = 100;
/// Fetch messages buffered per stream before the server waits for the client to read.
const FETCH_STREAM_BUFFER: usize = 4;
/// An acks=all or acks=1 produce that got no answer in this time fails with an unknown outcome
/// (Kafka's `request.timeout.ms` default).
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);

/// The Data service of one node.
#[derive(Debug, Clone)]
pub(crate) struct DataService {
    pub node: NodeHandle,
    pub gate: Arc<Gate>,
    /// True once the server stops: produce sessions then read no more requests.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Room for [`PRODUCE_SESSIONS_BYTES_MAX`] bytes read on the node's produce sessions.
    pub session_bytes: Arc<tokio::sync::Semaphore>,
}

impl DataService {
    /// This node's replica of `topic`/`partition`, or the error a client should see.
    fn replica(&self, topic: &str, partition: u32) -> Result<Arc<Partition>, Status> {
        // Looked up in place: this runs for every produce and fetch.
        let (group, preferred, hosts) = self.node.with_metadata(|metadata| {
            let info = metadata.topic(topic).ok_or_else(|| unknown_topic(topic))?;
            let assignment = usize::try_from(partition)
                .ok()
                .and_then(|p| info.partitions.get(p))
                .ok_or_else(|| {
                    status(
                        Code::NotFound,
                        ErrorReason::UnknownPartition,
                        format!(
                            "topic {topic} has {} partitions; there is no partition {partition}",
                            info.partitions.len()
                        ),
                        None,
                    )
                })?;
            let hosts = assignment.replicas.contains(&self.node.id());
            Ok::<_, Status>((
                assignment.group,
                assignment.replicas.first().copied(),
                hosts,
            ))
        })?;
        self.node.partition(GroupId(group)).ok_or_else(|| {
            if hosts {
                // Assigned here but not open: starting, or its log failed to open (the node's
                // log says why). Clients go to the leader as for any unavailable replica.
                return status(
                    Code::Unavailable,
                    ErrorReason::NotLeader,
                    format!(
                        "this node's replica of {topic}/{partition} is not open (starting, or its log failed to open: see the node's log)"
                    ),
                    None,
                );
            }
            // A node without a replica points at the preferred leader, which knows the leader.
            not_leader(&self.node, &format!("{topic}/{partition}"), preferred)
        })
    }

    /// This node's replica of `topic`/`partition` if it leads it; otherwise the not-leader error
    /// naming the leader.
    fn leader_replica(&self, topic: &str, partition: u32) -> Result<Arc<Partition>, Status> {
        let replica = self.replica(topic, partition)?;
        if !replica.is_leader() {
            return Err(not_leader(
                &self.node,
                &format!("{topic}/{partition}"),
                replica.leader(),
            ));
        }
        Ok(replica)
    }

    /// Fails an acks=all produce at once, with nothing proposed, when a majority of the
    /// partition's voters is not alive (Kafka's NOT_ENOUGH_REPLICAS).
    fn check_replicas(&self, partition: &Partition) -> Result<(), Status> {
        let voters = partition.voters();
        let alive = voters.iter().filter(|v| self.node.is_alive(**v)).count();
        if alive * 2 <= voters.len() {
            return Err(status(
                Code::Unavailable,
                ErrorReason::NotEnoughReplicas,
                format!(
                    "only {alive} of the partition's {} replicas are reachable; acks=all needs a majority",
                    voters.len()
                ),
                None,
            ));
        }
        Ok(())
    }

    /// Produces one batch for `who`, which needs WRITE on the topic.
    async fn produce_one(
        &self,
        who: &quipu_node::Principal,
        request: ProduceRequest,
    ) -> Result<ProduceResponse, Status> {
        self.gate.topic(who, Operation::Write, &request.topic)?;
        let started = std::time::Instant::now();
        let bytes = request.record_batch.len();
        let produced = self.produce_stored(request).await;
        quipu_node::telemetry::produced(
            quipu_node::telemetry::Api::Grpc,
            produced.is_ok(),
            bytes,
            started.elapsed(),
        );
        produced
    }

    /// Produces one batch.
    async fn produce_stored(&self, request: ProduceRequest) -> Result<ProduceResponse, Status> {
        let partition = self.replica(&request.topic, request.partition)?;
        let batch = request.record_batch;
        let acks = Acks::try_from(request.acks)
            .map_err(|_| invalid(format!("unknown acks value {}", request.acks)))?;
        let timed_out = || {
            status(
                Code::DeadlineExceeded,
                ErrorReason::UnknownOutcome,
                "no answer in time; the batch may or may not be committed",
                None,
            )
        };
        let base_offset = match acks {
            Acks::All => {
                self.check_replicas(&partition)?;
                let produced = tokio::time::timeout(PRODUCE_TIMEOUT, partition.produce(batch))
                    .await
                    .map_err(|_| timed_out())?;
                Some(produced.map_err(|e| from_produce(&self.node, e))?.0)
            }
            Acks::Leader => {
                let produced =
                    tokio::time::timeout(PRODUCE_TIMEOUT, partition.produce_leader_ack(batch))
                        .await
                        .map_err(|_| timed_out())?;
                Some(produced.map_err(|e| from_produce(&self.node, e))?.0)
            }
            Acks::None => {
                partition
                    .produce_unacknowledged(batch)
                    .await
                    .map_err(|e| from_produce(&self.node, e))?;
                None
            }
        };
        Ok(ProduceResponse { base_offset })
    }
}

type FetchStream = Pin<Box<dyn Stream<Item = Result<FetchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Data for DataService {
    async fn produce(
        &self,
        request: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        let who = self.gate.principal(&request).await?;
        self.produce_one(&who, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn produce_stream(
        &self,
        request: Request<Streaming<ProduceRequest>>,
    ) -> Result<Response<ProduceStreamResponse>, Status> {
        let who = self.gate.principal(&request).await?;
        let mut stream = request.into_inner();
        let mut items = Vec::new();
        while let Some(request) = stream.next().await {
            if items.len() == PRODUCE_STREAM_REQUESTS_MAX {
                return Err(invalid(format!(
                    "a produce stream carries at most {PRODUCE_STREAM_REQUESTS_MAX} requests"
                )));
            }
            let item = match self.produce_one(&who, request?).await {
                Ok(response) => ProduceStreamItem {
                    response: Some(response),
                    status_code: 0,
                    status_message: String::new(),
                },
                Err(status) => ProduceStreamItem {
                    response: None,
                    status_code: status.code() as i32,
                    status_message: status.message().to_string(),
                },
            };
            items.push(item);
        }
        Ok(Response::new(ProduceStreamResponse { items }))
    }

    type ProduceSessionStream =
        tokio_stream::wrappers::ReceiverStream<Result<ProduceSessionReply, Status>>;

    async fn produce_session(
        &self,
        request: Request<Streaming<ProduceSessionRequest>>,
    ) -> Result<Response<Self::ProduceSessionStream>, Status> {
        let who = self.gate.principal(&request).await?;
        let requests = request.into_inner();
        // Room for every answer a full window can owe, so an answer waits for the client only
        // when it stopped reading.
        let (tx, rx) = tokio::sync::mpsc::channel(PRODUCE_SESSION_IN_FLIGHT_MAX);
        tokio::spawn(serve_session(self.clone(), who, requests, tx));
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    type FetchStream = FetchStream;

    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        let who = self
            .gate
            .topic_caller(&request, Operation::Read, &request.get_ref().topic)
            .await?;
        let request = request.into_inner();
        let partition = self.leader_replica(&request.topic, request.partition)?;
        let start = partition.log_start_offset();
        if request.offset < start.0 {
            return Err(status(
                Code::OutOfRange,
                ErrorReason::OffsetOutOfRange,
                format!(
                    "offset {} is below the log start offset {} (removed by retention)",
                    request.offset, start.0
                ),
                None,
            ));
        }
        let most = partition.fetch_offset_max();
        if request.offset > most.0 {
            return Err(status(
                Code::OutOfRange,
                ErrorReason::OffsetOutOfRange,
                format!(
                    "offset {} is beyond the log end offset {}",
                    request.offset, most.0
                ),
                None,
            ));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(FETCH_STREAM_BUFFER);
        let node = self.node.clone();
        let gate = std::sync::Arc::clone(&self.gate);
        // Authorized again before each message: a stream outlives an ACL that is deleted
        // while it runs (Kafka checks every Fetch request).
        let allowed = move |topic: &str| gate.topic(&who, Operation::Read, topic);
        tokio::spawn(async move {
            if let Err(status) = stream_fetch(&node, &partition, &request, &tx, allowed).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list_offsets(
        &self,
        request: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        self.gate
            .topic_caller(&request, Operation::Describe, &request.get_ref().topic)
            .await?;
        let request = request.into_inner();
        let partition = self.leader_replica(&request.topic, request.partition)?;
        let spec = OffsetSpec::try_from(request.spec)
            .map_err(|_| invalid(format!("unknown offset spec {}", request.spec)))?;
        let offset = match spec {
            OffsetSpec::Earliest => partition.log_start_offset(),
            OffsetSpec::Latest => partition.high_watermark(),
            OffsetSpec::Timestamp => partition
                .offset_for_timestamp(request.timestamp_ms)
                .await
                .map_err(|e| from_fetch(&self.node, e))?,
        };
        Ok(Response::new(ListOffsetsResponse { offset: offset.0 }))
    }

    async fn init_producer_id(
        &self,
        request: Request<InitProducerIdRequest>,
    ) -> Result<Response<InitProducerIdResponse>, Status> {
        let who = self.gate.principal(&request).await?;
        self.gate.idempotent_writer(&who)?;
        let producer_id = self
            .node
            .init_producer_id()
            .await
            .map_err(|e| from_controller(&self.node, e))?;
        Ok(Response::new(InitProducerIdResponse {
            producer_id,
            producer_epoch: 0,
        }))
    }

    async fn read_replica(
        &self,
        request: Request<ReadReplicaRequest>,
    ) -> Result<Response<ReadReplicaResponse>, Status> {
        // Uncommitted data of any replica: for node-level tools only (CLUSTER_ACTION).
        self.gate
            .cluster_caller(&request, Operation::ClusterAction)
            .await?;
        let request = request.into_inner();
        let partition = self.replica(&request.topic, request.partition)?;
        let max_bytes = u64::from(match request.max_bytes {
            0 => FETCH_BYTES_MAX,
            n => n.min(FETCH_BYTES_MAX),
        });
        // Read the watermark first: every record below it is in the log read after.
        let high_watermark = partition.high_watermark();
        let entries = partition
            .read_replica(Offset(request.offset), max_bytes)
            .await
            .map_err(|e| from_fetch(&self.node, e))?;
        Ok(Response::new(ReadReplicaResponse {
            record_batches: entries.into_iter().flat_map(|e| batches_of(&e)).collect(),
            high_watermark: high_watermark.0,
            log_end_offset: partition.log_end_offset().0,
            log_start_offset: partition.log_start_offset().0,
            leader: partition.is_leader(),
        }))
    }
}

/// Reads a produce session's requests in order and produces each on a task of its own (so
/// requests for different partitions proceed side by side, as separate `Produce` calls would),
/// each answer going out with its id as soon as it is ready. At most
/// [`PRODUCE_SESSION_IN_FLIGHT_MAX`] requests and [`PRODUCE_SESSION_BYTES_MAX`] bytes of them are
/// read and unanswered at once (and at most [`PRODUCE_SESSIONS_BYTES_MAX`] on all the node's
/// sessions). When the client ends its side, the answers owed still go out.
/// When the server stops, or a request cannot be read (the stream broke, or a message did not
/// decode), it reads no more, waits at most [`PRODUCE_SESSION_DRAIN`] for the answers it owes to
/// go out, then ends the stream with an error that says the requests left unanswered were not
/// read (SHUTTING_DOWN, or INVALID_ARGUMENT naming what could not be read). If the answers owed
/// do not go out in that time (a client that stopped reading them), it drops them and ends the
/// stream with no such claim.
async fn serve_session(
    service: DataService,
    who: quipu_node::Principal,
    mut requests: Streaming<ProduceSessionRequest>,
    tx: tokio::sync::mpsc::Sender<Result<ProduceSessionReply, Status>>,
) {
    let count = Arc::new(tokio::sync::Semaphore::new(PRODUCE_SESSION_IN_FLIGHT_MAX));
    let bytes = Arc::new(tokio::sync::Semaphore::new(PRODUCE_SESSION_BYTES_MAX));
    let who = Arc::new(who);
    let mut stopping = service.stopping.clone();
    let mut tasks = tokio::task::JoinSet::new();
    let end = loop {
        // Finished tasks leave the set as they go.
        while tasks.try_join_next().is_some() {}
        let Some(counted) =
            unless_stopping(&mut stopping, Arc::clone(&count).acquire_owned()).await
        else {
            break Some(stopping_status());
        };
        let Some(next) = unless_stopping(&mut stopping, requests.message()).await else {
            break Some(stopping_status());
        };
        let message = match next {
            Ok(Some(message)) => message,
            // The client ended its side: the answers owed still go out.
            Ok(None) => break None,
            Err(cause) => {
                break Some(invalid(format!(
                    "a request on this produce session could not be read ({}: {}); the \
                     requests after the last answer were not read (nothing was done for them)",
                    cause.code(),
                    cause.message()
                )));
            }
        };
        // Its bytes count once read; a message larger than the whole window takes all of it.
        let size = message
            .request
            .as_ref()
            .map_or(0, |r| r.record_batch.len())
            .clamp(1, PRODUCE_SESSION_BYTES_MAX);
        let size = u32::try_from(size).expect("the session's byte window fits in u32");
        let room = async {
            let session = Arc::clone(&bytes).acquire_many_owned(size).await;
            let node = Arc::clone(&service.session_bytes)
                .acquire_many_owned(size)
                .await;
            (session, node)
        };
        let Some(sized) = unless_stopping(&mut stopping, room).await else {
            // Read, so it is answered: refused, as the node is stopping.
            let (id, tx) = (message.id, tx.clone());
            tasks.spawn(async move { tx.send(Ok(reply(id, Err(stopping_status())))).await });
            break Some(stopping_status());
        };
        let (service, who, tx) = (service.clone(), Arc::clone(&who), tx.clone());
        tasks.spawn(async move {
            let answer = match message.request {
                Some(request) => service.produce_one(&who, request).await,
                None => Err(invalid("a produce session request without a request")),
            };
            // A client that went away gets nothing.
            let sent = tx.send(Ok(reply(message.id, answer))).await;
            drop((counted, sized));
            sent
        });
    };
    let Some(end) = end else {
        // The tasks answer on their own; the stream ends after the last answer.
        tasks.detach_all();
        return;
    };
    let drained = tokio::time::timeout(PRODUCE_SESSION_DRAIN, async {
        while tasks.join_next().await.is_some() {}
        tx.send(Err(end)).await
    })
    .await;
    if drained.is_err() {
        // The client does not read its answers: they are dropped, and the stream ends without
        // saying what was read.
        tasks.abort_all();
        tracing::debug!("a produce session's answers were not read in time: dropped");
    }
}

/// The end of a session whose server stops.
fn stopping_status() -> Status {
    status(
        Code::Unavailable,
        ErrorReason::ShuttingDown,
        "the node is stopping: every request it read on this session was answered, the rest \
         were not read (nothing was done for them)",
        None,
    )
}

/// Runs `work` unless the server stops first (`None`).
async fn unless_stopping<T>(
    stopping: &mut tokio::sync::watch::Receiver<bool>,
    work: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        _ = stopping.wait_for(|stopping| *stopping) => None,
        done = work => Some(done),
    }
}

/// A session's answer to request `id`: the response, or the status a `Produce` call would have
/// got.
fn reply(id: u64, answer: Result<ProduceResponse, Status>) -> ProduceSessionReply {
    match answer {
        Ok(response) => ProduceSessionReply {
            id,
            response: Some(response),
            status_code: 0,
            status_message: String::new(),
            status_details: Vec::new(),
        },
        Err(status) => ProduceSessionReply {
            id,
            response: None,
            status_code: status.code() as i32,
            status_message: status.message().to_string(),
            status_details: status.details().to_vec(),
        },
    }
}

/// Sends committed batches from `request.offset` on, each message once `min_bytes` are there or
/// `max_wait_ms` passed; ends at the high watermark unless `follow`, or when the client goes,
/// or (PERMISSION_DENIED) when `allowed` no longer lets it read the topic.
async fn stream_fetch(
    node: &NodeHandle,
    partition: &Partition,
    request: &FetchRequest,
    tx: &tokio::sync::mpsc::Sender<Result<FetchResponse, Status>>,
    allowed: impl Fn(&str) -> Result<(), Status>,
) -> Result<(), Status> {
    let max_bytes = u64::from(match request.max_bytes {
        0 => FETCH_BYTES_MAX,
        n => n.min(FETCH_BYTES_MAX),
    });
    let min_bytes = u64::from(request.min_bytes).min(max_bytes);
    let wait_ms = if request.follow {
        request
            .max_wait_ms
            .clamp(FOLLOW_WAIT_MS_MIN, FETCH_WAIT_MS_MAX)
    } else {
        request.max_wait_ms.min(FETCH_WAIT_MS_MAX)
    };
    let max_wait = Duration::from_millis(u64::from(wait_ms));
    let mut watermark = partition.watch_high_watermark();
    let mut offset = Offset(request.offset);
    loop {
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut batches: Vec<Bytes> = Vec::new();
        let mut bytes = 0u64;
        loop {
            let entries = partition
                .fetch(offset, max_bytes - bytes)
                .await
                .map_err(|e| from_fetch(node, e))?;
            for entry in entries {
                bytes += entry.payload.len() as u64;
                offset = entry.next_offset();
                batches.extend(batches_of(&entry));
            }
            if bytes >= min_bytes.max(1) || bytes >= max_bytes {
                break;
            }
            // Not enough yet: wait for the watermark to move, at most until the deadline.
            watermark.borrow_and_update();
            if offset < partition.high_watermark() {
                continue;
            }
            match tokio::time::timeout_at(deadline, watermark.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => {
                    return Err(status(
                        Code::Unavailable,
                        ErrorReason::Unspecified,
                        "the partition replica stopped",
                        None,
                    ));
                }
                Err(_) => break, // max_wait passed
            }
        }
        let high_watermark = partition.high_watermark();
        let done = !request.follow && offset >= high_watermark;
        if !batches.is_empty() || request.follow {
            allowed(&request.topic)?;
            quipu_node::telemetry::fetched(quipu_node::telemetry::Api::Grpc, bytes);
            let message = FetchResponse {
                record_batches: batches,
                high_watermark: high_watermark.0,
                log_start_offset: partition.log_start_offset().0,
            };
            if tx.send(Ok(message)).await.is_err() {
                return Ok(()); // the client went away
            }
        }
        if done {
            return Ok(());
        }
        if tx.is_closed() {
            return Ok(());
        }
    }
}

/// The batches of a stored entry (one, or several a leader proposed together), each a zero-copy
/// slice: the API sends one batch per `record_batches` element. The log validated them on
/// append; bytes that do not split (never expected) go as they are, for the client to refuse.
fn batches_of(entry: &quipu_storage::Entry) -> impl Iterator<Item = Bytes> + use<> {
    let mut split = entry.batches();
    // After an error the split yields nothing more, so the remainder goes once.
    std::iter::from_fn(move || match split.next()? {
        Ok(batch) => Some(batch),
        Err(_) => Some(split.remainder().clone()),
    })
}
