//! Replication stream.

pub(crate) mod callbacks;
pub(crate) mod hint;
mod replication_session_id;
pub(crate) mod request;
pub(crate) mod request_id;
pub(crate) mod response;

use std::sync::Arc;
use std::time::Duration;

use anyerror::AnyError;
use futures::future::FutureExt;
use futures::stream::FuturesOrdered;
use futures::StreamExt;
pub(crate) use replication_session_id::ReplicationSessionId;
use request::Data;
use request::DataWithId;
use request::Replicate;
use response::ReplicationResult;
pub(crate) use response::Response;
use tokio::select;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::sync::Mutex;
use tracing_futures::Instrument;

use crate::config::Config;
use crate::core::notify::Notify;
use crate::core::sm::handle::SnapshotReader;
use crate::display_ext::DisplayOptionExt;
use crate::error::decompose::DecomposeResult;
use crate::error::HigherVote;
use crate::error::PayloadTooLarge;
use crate::error::RPCError;
use crate::error::ReplicationClosed;
use crate::error::ReplicationError;
use crate::error::Timeout;
use crate::log_id::LogIdOptionExt;
use crate::log_id_range::LogIdRange;
use crate::network::Backoff;
use crate::network::RPCOption;
use crate::network::RPCTypes;
use crate::network::RaftNetwork;
use crate::network::RaftNetworkFactory;
use crate::raft::AppendEntriesRequest;
use crate::raft::AppendEntriesResponse;
use crate::replication::callbacks::SnapshotCallback;
use crate::replication::hint::ReplicationHint;
use crate::replication::request_id::RequestId;
use crate::storage::RaftLogReader;
use crate::storage::RaftLogStorage;
use crate::storage::Snapshot;
use crate::type_config::alias::InstantOf;
use crate::type_config::alias::JoinHandleOf;
use crate::type_config::alias::LogIdOf;
use crate::type_config::TypeConfigExt;
use crate::AsyncRuntime;
use crate::LogId;
use crate::MessageSummary;
use crate::RaftLogId;
use crate::RaftTypeConfig;
use crate::StorageError;
use crate::StorageIOError;
use crate::Vote;

/// Quipu patch: an AppendEntries in flight in a pipeline: its network (given back), its answer,
/// the range it carries and when it was sent.
type PipelinedAppend<C, N> = futures::future::BoxFuture<
    'static,
    (
        <N as RaftNetworkFactory<C>>::Network,
        Result<AppendEntriesResponse<<C as RaftTypeConfig>::NodeId>, RPCError<<C as RaftTypeConfig>::NodeId, <C as RaftTypeConfig>::Node>>,
        LogIdRange<<C as RaftTypeConfig>::NodeId>,
        InstantOf<C>,
    ),
>;

/// The handle to a spawned replication stream.
pub(crate) struct ReplicationHandle<C>
where C: RaftTypeConfig
{
    /// The spawn handle the `ReplicationCore` task.
    pub(crate) join_handle: JoinHandleOf<C, Result<(), ReplicationClosed>>,

    /// The channel used for communicating with the replication task.
    pub(crate) tx_repl: mpsc::UnboundedSender<Replicate<C>>,
}

/// A task responsible for sending replication events to a target follower in the Raft cluster.
///
/// NOTE: upstream does not stack replication requests to targets because this could result in
/// out-of-order delivery: it buffers until it receives a success response, then sends the next
/// payload from the buffer. Quipu patch: with `Config::replication_window` above 1, a range the
/// engine extends goes out while earlier AppendEntries are in flight (`pipeline_log_entries`),
/// over a network that keeps them in order (`RaftNetwork::pipelines`).
pub(crate) struct ReplicationCore<C, N, LS>
where
    C: RaftTypeConfig,
    N: RaftNetworkFactory<C>,
    LS: RaftLogStorage<C>,
{
    /// The ID of the target Raft node which replication events are to be sent to.
    target: C::NodeId,

    /// Identifies which session this replication belongs to.
    session_id: ReplicationSessionId<C::NodeId>,

    /// A channel for sending events to the RaftCore.
    #[allow(clippy::type_complexity)]
    tx_raft_core: mpsc::UnboundedSender<Notify<C>>,

    /// A channel for receiving events from the RaftCore and snapshot transmitting task.
    rx_event: mpsc::UnboundedReceiver<Replicate<C>>,

    /// A weak reference to the Sender for the separate sending-snapshot task to send callback.
    ///
    /// Because 1) ReplicationCore replies on the `close` event to shutdown.
    /// 2) ReplicationCore holds this tx; It is made a weak so that when
    /// RaftCore drops the only non-weak tx, the Receiver `rx_repl` will be closed.
    weak_tx_event: mpsc::WeakUnboundedSender<Replicate<C>>,

    /// The `RaftNetwork` interface for replicating logs and heartbeat.
    network: N::Network,

    /// Quipu patch (`Config::replication_window`): one `RaftNetwork` client per AppendEntries
    /// that may be in flight at once when the range in flight is extended; each is taken by an
    /// AppendEntries sent and given back with its answer.
    window_networks: Vec<N::Network>,

    /// Quipu patch: the highest request id whose failure or conflict this task reported. The
    /// engine starts a new request after it; a range it extended before it learned of the
    /// failure (the same id) arrives late and is not sent.
    abandoned: Option<u64>,

    /// Quipu patch: the request a pipeline last acknowledged part of, and how far. A range the
    /// engine extended after it, under the same request, starts there.
    pipeline_acked: Option<(RequestId, Option<LogId<C::NodeId>>)>,

    /// Another `RaftNetwork` specific for snapshot replication.
    ///
    /// Snapshot transmitting is a long running task, and is processed in a separate task.
    snapshot_network: Arc<Mutex<N::Network>>,

    /// The current snapshot replication state.
    ///
    /// It includes a cancel signaler and the join handle of the snapshot replication task.
    /// When ReplicationCore is dropped, this Sender is dropped, the snapshot task will be notified
    /// to quit.
    snapshot_state: Option<(oneshot::Sender<()>, JoinHandleOf<C, ()>)>,

    /// The backoff policy if an [`Unreachable`](`crate::error::Unreachable`) error is returned.
    /// It will be reset to `None` when an successful response is received.
    backoff: Option<Backoff>,

    /// The `RaftLogReader` of a `RaftStorage` interface.
    log_reader: LS::LogReader,

    /// The handle to get a snapshot directly from state machine.
    snapshot_reader: SnapshotReader<C>,

    /// The Raft's runtime config.
    config: Arc<Config>,

    /// The log id of the highest log entry which is known to be committed in the cluster.
    committed: Option<LogId<C::NodeId>>,

    /// Last matching log id on a follower/learner
    matching: Option<LogId<C::NodeId>>,

    /// Next replication action to run.
    next_action: Option<Data<C>>,

    /// Appropriate number of entries to send.
    /// This is only used by AppendEntries RPC.
    entries_hint: ReplicationHint,

    /// Quipu patch: when the commit index moved with nothing to send, the time by which an
    /// empty AppendEntries carries it to this follower, unless entries go first. Cleared by
    /// every AppendEntries sent (each carries the commit index).
    commit_notice_due: Option<InstantOf<C>>,
}

impl<C, N, LS> ReplicationCore<C, N, LS>
where
    C: RaftTypeConfig,
    N: RaftNetworkFactory<C>,
    LS: RaftLogStorage<C>,
{
    /// Spawn a new replication task for the target node.
    #[tracing::instrument(level = "trace", skip_all,fields(target=display(&target), session_id=display(&session_id)))]
    #[allow(clippy::type_complexity)]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn spawn(
        target: C::NodeId,
        session_id: ReplicationSessionId<C::NodeId>,
        config: Arc<Config>,
        committed: Option<LogId<C::NodeId>>,
        matching: Option<LogId<C::NodeId>>,
        network: N::Network,
        window_networks: Vec<N::Network>,
        snapshot_network: N::Network,
        log_reader: LS::LogReader,
        snapshot_reader: SnapshotReader<C>,
        tx_raft_core: mpsc::UnboundedSender<Notify<C>>,
        span: tracing::Span,
    ) -> ReplicationHandle<C> {
        tracing::debug!(
            session_id = display(&session_id),
            target = display(&target),
            committed = display(committed.summary()),
            matching = debug(&matching),
            "spawn replication"
        );

        // other component to ReplicationStream
        let (tx_event, rx_event) = mpsc::unbounded_channel();

        let this = Self {
            target,
            session_id,
            network,
            window_networks,
            abandoned: None,
            pipeline_acked: None,
            snapshot_network: Arc::new(Mutex::new(snapshot_network)),
            snapshot_state: None,
            backoff: None,
            log_reader,
            snapshot_reader,
            config,
            committed,
            matching,
            tx_raft_core,
            rx_event,
            weak_tx_event: tx_event.downgrade(),
            next_action: None,
            entries_hint: Default::default(),
            commit_notice_due: None,
        };

        let join_handle = C::AsyncRuntime::spawn(this.main().instrument(span));

        ReplicationHandle {
            join_handle,
            tx_repl: tx_event,
        }
    }

    #[tracing::instrument(level="debug", skip(self), fields(session=%self.session_id, target=display(&self.target), cluster=%self.config.cluster_name))]
    async fn main(mut self) -> Result<(), ReplicationClosed> {
        loop {
            let action = self.next_action.take();

            let Some(d) = action else {
                // A commit index waiting for entries to ride on waits no longer than its due
                // time (Quipu patch, in `drain_events`), after any back-off.
                self.drain_events_with_backoff().await?;
                continue;
            };

            if matches!(d, Data::Heartbeat | Data::Logs(_)) {
                // Quipu patch: this AppendEntries carries the commit index.
                self.commit_notice_due = None;
            }

            // Backup the log data for retrying.
            let mut log_data = None;

            tracing::debug!(replication_data = display(&d), "{} send replication RPC", func_name!());

            let request_id = d.request_id();

            let res = match d {
                Data::Heartbeat => {
                    let m = &self.matching;
                    // request_id==None will be ignored by RaftCore.
                    let d = DataWithId::new(RequestId::new_heartbeat(), LogIdRange::new(m.clone(), m.clone()));

                    log_data = Some(d.clone());
                    self.send_log_entries(d).await
                }
                Data::Logs(log) => {
                    log_data = Some(log.clone());
                    if self.window_networks.is_empty() {
                        self.send_log_entries(log).await
                    } else {
                        self.pipeline_log_entries(log).await
                    }
                }
                Data::Snapshot(snap) => self.stream_snapshot(snap).await,
                Data::SnapshotCallback(resp) => self.handle_snapshot_callback(resp),
            };

            tracing::debug!(res = debug(&res), "replication action done");

            match res {
                Ok(next) => {
                    // reset backoff at once if replication succeeds
                    self.backoff = None;

                    // If the RPC was successful but not finished, continue.
                    if let Some(next) = next {
                        self.next_action = Some(next);
                    }
                }
                Err(err) => {
                    tracing::warn!(error=%err, "error replication to target={}", self.target);

                    match err {
                        ReplicationError::Closed(closed) => {
                            return Err(closed);
                        }
                        ReplicationError::HigherVote(h) => {
                            let _ = self.tx_raft_core.send(Notify::Network {
                                response: Response::HigherVote {
                                    target: self.target,
                                    higher: h.higher,
                                    sender_vote: self.session_id.vote_ref().clone(),
                                },
                            });
                            return Ok(());
                        }
                        ReplicationError::StorageError(error) => {
                            tracing::error!(error=%error, "error replication to target={}", self.target);

                            // TODO: report this error
                            let _ = self.tx_raft_core.send(Notify::Network {
                                response: Response::StorageError { error },
                            });
                            return Ok(());
                        }
                        ReplicationError::RPCError(err) => {
                            tracing::error!(err = display(&err), "RPCError");

                            let retry = match &err {
                                RPCError::Timeout(_) => false,
                                RPCError::Unreachable(_unreachable) => {
                                    // If there is an [`Unreachable`] error, we will backoff for a
                                    // period of time. Backoff will be reset if there is a
                                    // successful RPC is sent.
                                    if self.backoff.is_none() {
                                        self.backoff = Some(self.network.backoff());
                                    }
                                    false
                                }
                                RPCError::PayloadTooLarge(too_large) => {
                                    self.update_hint(too_large);

                                    // PayloadTooLarge is a retryable error: retry at once.
                                    self.next_action = Some(Data::Logs(log_data.unwrap()));
                                    true
                                }
                                RPCError::Network(_) => false,
                                RPCError::RemoteError(_) => false,
                            };

                            if retry {
                                debug_assert!(self.next_action.is_some(), "next_action must be Some");
                            } else {
                                self.send_progress_error(request_id, err);
                            }
                        }
                    };
                }
            };

            self.drain_events_with_backoff().await?;
        }
    }

    async fn drain_events_with_backoff(&mut self) -> Result<(), ReplicationClosed> {
        if let Some(b) = &mut self.backoff {
            let duration = b.next().unwrap_or_else(|| {
                tracing::warn!("backoff exhausted, using default");
                Duration::from_millis(500)
            });

            self.backoff_drain_events(C::now() + duration).await?;
        }

        self.drain_events().await?;
        Ok(())
    }

    /// When a [`PayloadTooLarge`] error is received, update the hint for the next several RPC.
    fn update_hint(&mut self, too_large: &PayloadTooLarge) {
        const DEFAULT_ENTRIES_HINT_TTL: u64 = 10;

        match too_large.action() {
            RPCTypes::Vote => {
                unreachable!("Vote RPC should not be too large")
            }
            RPCTypes::AppendEntries => {
                self.entries_hint = ReplicationHint::new(too_large.entries_hint(), DEFAULT_ENTRIES_HINT_TTL);
                tracing::debug!(entries_hint = debug(&self.entries_hint), "updated entries hint");
            }
            RPCTypes::InstallSnapshot => {
                // TODO: handle too large
                tracing::error!("InstallSnapshot RPC is too large, but it is not supported yet");
            }
        }
    }

    /// Send an AppendEntries RPC to the target.
    ///
    /// This request will timeout if no response is received within the
    /// configured heartbeat interval.
    ///
    /// If an RPC is made but not completely finished, it returns the next action expected to do.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn send_log_entries(
        &mut self,
        log_ids: DataWithId<LogIdRange<C::NodeId>>,
    ) -> Result<Option<Data<C>>, ReplicationError<C::NodeId, C::Node>> {
        let request_id = log_ids.request_id();

        tracing::debug!(
            request_id = display(request_id),
            log_id_range = display(log_ids.data()),
            "send_log_entries",
        );

        let (payload, sending_range) = self.build_append(&log_ids).await?;
        let leader_time = C::now();

        // Send the payload.
        tracing::debug!(
            payload=%payload.summary(),
            now = debug(leader_time),
            "start sending append_entries, timeout: {:?}",
            self.config.heartbeat_interval
        );

        let the_timeout = Duration::from_millis(self.config.heartbeat_interval);
        let option = RPCOption::new(the_timeout);
        let res = C::timeout(the_timeout, self.network.append_entries(payload, option)).await;

        tracing::debug!("append_entries res: {:?}", res);

        let append_res = res.map_err(|_e| self.timeout_error(the_timeout))?; // return Timeout error

        let append_resp = DecomposeResult::<C, _, _>::decompose_infallible(append_res)?;

        self.take_append_answer(append_resp, sending_range, leader_time, log_ids)
    }

    /// The error of an AppendEntries not answered within `timeout`.
    fn timeout_error(&self, timeout: Duration) -> RPCError<C::NodeId, C::Node> {
        RPCError::Timeout(Timeout {
            action: RPCTypes::AppendEntries,
            id: self.session_id.vote_ref().leader_id().voted_for().unwrap(),
            target: self.target.clone(),
            timeout,
        })
    }

    /// The AppendEntries that sends (a part of) `log_ids`, and the range it carries: its entries
    /// are read from the log, at most as many as the hint allows. (Split out of upstream's
    /// `send_log_entries` by a Quipu patch, for `pipeline_log_entries`.)
    async fn build_append(
        &mut self,
        log_ids: &DataWithId<LogIdRange<C::NodeId>>,
    ) -> Result<(AppendEntriesRequest<C>, LogIdRange<C::NodeId>), ReplicationError<C::NodeId, C::Node>> {
        // Series of logs to send, and the last log id to send
        let (logs, sending_range) = {
            let rng = log_ids.data();

            // The log index start and end to send.
            let (start, end) = {
                let start = rng.prev.next_index();
                let end = rng.last.next_index();

                if let Some(hint) = self.entries_hint.get() {
                    let hint_end = start + hint;
                    (start, std::cmp::min(end, hint_end))
                } else {
                    (start, end)
                }
            };

            if start == end {
                // Heartbeat RPC, no logs to send, last log id is the same as prev_log_id
                let r = LogIdRange::new(rng.prev.clone(), rng.prev.clone());
                (vec![], r)
            } else {
                // limited_get_log_entries will return logs smaller than the range [start, end).
                let logs = self.log_reader.limited_get_log_entries(start, end).await?;

                // Handle an empty result gracefully by treating it as a heartbeat.
                // Returning nothing for a non-empty range violates the API contract, but a
                // faulty store must not panic replication. Sleep briefly first: `log_id_range`
                // does not advance when no logs are returned, so retrying at once would spin.
                if logs.is_empty() {
                    let sleep_duration = Duration::from_millis(10);
                    tracing::warn!(
                        "limited_get_log_entries({}, {}) returned empty; \
                         this violates the API contract but is handled gracefully as a heartbeat. \
                         Sleeping {:?} to avoid a tight loop.",
                        start,
                        end,
                        sleep_duration
                    );
                    C::sleep(sleep_duration).await;

                    let r = LogIdRange::new(rng.prev.clone(), rng.prev.clone());
                    (vec![], r)
                } else {
                    let first = logs.first().map(|x| x.get_log_id().clone()).unwrap();
                    let last = logs.last().map(|x| x.get_log_id().clone()).unwrap();

                    debug_assert!(
                        logs.len() <= (end - start) as usize,
                        "expect logs ⊆ [{}..{}) but got {} entries, first: {}, last: {}",
                        start,
                        end,
                        logs.len(),
                        first,
                        last
                    );

                    let r = LogIdRange::new(rng.prev.clone(), Some(last));
                    (logs, r)
                }
            }
        };

        // Build the heartbeat frame to be sent to the follower.
        let payload = AppendEntriesRequest {
            vote: self.session_id.vote_ref().clone(),
            prev_log_id: sending_range.prev.clone(),
            leader_commit: self.committed.clone(),
            entries: logs,
        };
        Ok((payload, sending_range))
    }

    /// What the follower's answer `append_resp` to the AppendEntries of `sending_range` (sent at
    /// `leader_time` for `log_ids`) means: progress reported, and what to send next.
    fn take_append_answer(
        &mut self,
        append_resp: AppendEntriesResponse<C::NodeId>,
        sending_range: LogIdRange<C::NodeId>,
        leader_time: InstantOf<C>,
        log_ids: DataWithId<LogIdRange<C::NodeId>>,
    ) -> Result<Option<Data<C>>, ReplicationError<C::NodeId, C::Node>> {
        let request_id = log_ids.request_id();
        tracing::debug!(
            req = display(&sending_range),
            resp = display(&append_resp),
            "append_entries resp"
        );

        match append_resp {
            AppendEntriesResponse::Success => {
                let matching = sending_range.last;
                let next = self.finish_success_append(matching, leader_time, log_ids);
                Ok(next)
            }
            AppendEntriesResponse::PartialSuccess(matching) => {
                Self::debug_assert_partial_success(&sending_range, &matching);
                let next = self.finish_success_append(matching, leader_time, log_ids);
                Ok(next)
            }
            AppendEntriesResponse::HigherVote(vote) => {
                debug_assert!(
                    &vote > self.session_id.vote_ref(),
                    "higher vote({}) should be greater than leader's vote({})",
                    vote,
                    self.session_id.vote_ref(),
                );
                tracing::debug!(%vote, "append entries failed. converting to follower");

                Err(ReplicationError::HigherVote(HigherVote {
                    higher: vote,
                    sender_vote: self.session_id.vote_ref().clone(),
                }))
            }
            AppendEntriesResponse::Conflict => {
                let conflict = sending_range.prev.clone();
                debug_assert!(conflict.is_some(), "prev_log_id=None never conflict");

                let conflict = conflict.unwrap();
                self.abandon(request_id);
                self.send_progress(request_id, ReplicationResult::new(leader_time, Err(conflict)));

                Ok(None)
            }
        }
    }

    /// Quipu patch: notes that `request_id`'s failure or conflict is being reported.
    fn abandon(&mut self, request_id: RequestId) {
        if let Some(id) = request_id.request_id() {
            self.abandoned = Some(self.abandoned.map_or(id, |abandoned| abandoned.max(id)));
        }
    }

    /// Quipu patch (`Config::replication_window`, vendor/README.md): sends the range of `log_ids`
    /// and what the engine adds to it meanwhile (the same request, a later last log id), in
    /// AppendEntries of at most the hint's entries each, up to one per window network in flight
    /// at once, and takes their answers in the order sent: each success is reported as the
    /// request's progress (the engine's in-flight range shrinks from its start). Returns once
    /// every AppendEntries sent is answered and the range is sent whole, or at the first answer
    /// that ends the request (an error, a conflict, a higher vote): then the ones still in flight
    /// are awaited and their answers dropped. A partial success, a payload too large, and a
    /// conflict at the log id an earlier answer here just acknowledged (the AppendEntries
    /// overtook that one: retried once) send again from the last acknowledged log id.
    async fn pipeline_log_entries(
        &mut self,
        log_ids: DataWithId<LogIdRange<C::NodeId>>,
    ) -> Result<Option<Data<C>>, ReplicationError<C::NodeId, C::Node>> {
        let request_id = log_ids.request_id();
        let mut target = log_ids.data().clone();
        // A range the engine extended after this task acknowledged part of it starts after that
        // part (the engine had not taken the acknowledgement yet).
        let mut sent_upto = match &self.pipeline_acked {
            Some((acked_request, acked)) if *acked_request == request_id && acked > &target.prev && acked <= &target.last => {
                acked.clone()
            }
            _ => target.prev.clone(),
        };
        // Where to send from again after dropping what is in flight.
        let mut acked_upto = sent_upto.clone();
        let the_timeout = Duration::from_millis(self.config.heartbeat_interval);
        let mut in_flight = FuturesOrdered::new();
        // Whether an answer taken here acknowledged `acked_upto`, and where a conflict was
        // retried.
        let mut acked_here = false;
        let mut retried_at: Option<Option<LogId<C::NodeId>>> = None;

        loop {
            // Send what is not on its way yet, while a window network is free (one at a time
            // while the network does not pipeline to this target).
            while sent_upto < target.last && (in_flight.is_empty() || self.network.pipelines()) {
                let Some(mut network) = self.window_networks.pop() else {
                    break;
                };
                let part = DataWithId::new(request_id, LogIdRange::new(sent_upto.clone(), target.last.clone()));
                let built = self.build_append(&part).await;
                let (payload, sending_range) = match built {
                    Ok(built) => built,
                    Err(e) => {
                        self.window_networks.push(network);
                        Self::settle(&mut in_flight, &mut self.window_networks).await;
                        return Err(e);
                    }
                };
                if sending_range.last == sending_range.prev {
                    // The log returned nothing for a non-empty range (`build_append` slept).
                    self.window_networks.push(network);
                    if in_flight.is_empty() {
                        // As upstream: a heartbeat goes instead, and the task's main loop takes
                        // its events before the range is tried again.
                        return self.send_log_entries(part).await;
                    }
                    break;
                }
                // Every AppendEntries carries the commit index.
                self.commit_notice_due = None;
                sent_upto = sending_range.last.clone();
                let leader_time = C::now();
                // The follower appends (and syncs) them one after another: the k-th in flight
                // may wait for the k - 1 before it, so it gets k times the time to live.
                let queued = u32::try_from(in_flight.len()).unwrap_or(u32::MAX);
                let the_timeout = the_timeout.saturating_mul(queued.saturating_add(1));
                let on_timeout = self.timeout_error(the_timeout);
                in_flight.push_back(
                    async move {
                        let option = RPCOption::new(the_timeout);
                        let res = C::timeout(the_timeout, network.append_entries(payload, option)).await;
                        let res = match res {
                            Ok(res) => DecomposeResult::<C, _, _>::decompose_infallible(res),
                            Err(_elapsed) => Err(on_timeout),
                        };
                        (network, res, sending_range, leader_time)
                    }
                    .boxed(),
                );
            }

            if in_flight.is_empty() {
                // Everything was sent and answered (the loop above sends while nothing is in
                // flight, or hands over to `send_log_entries`).
                return Ok(None);
            }

            select! {
                event = self.rx_event.recv() => {
                    let event = event.ok_or(ReplicationClosed::new("RaftCore closed replication"))?;
                    match event {
                        Replicate::Data(Data::Logs(more)) if more.request_id() == request_id => {
                            if more.data().last > target.last {
                                target.last = more.data().last.clone();
                            }
                        }
                        event => self.process_event(event),
                    }
                }
                answered = in_flight.next() => {
                    let Some((network, res, sending_range, leader_time)) = answered else {
                        continue;
                    };
                    self.window_networks.push(network);
                    let resp = match res {
                        Ok(resp) => resp,
                        Err(RPCError::PayloadTooLarge(too_large)) => {
                            self.update_hint(&too_large);
                            Self::settle(&mut in_flight, &mut self.window_networks).await;
                            sent_upto = acked_upto.clone();
                            continue;
                        }
                        Err(e) => {
                            Self::settle(&mut in_flight, &mut self.window_networks).await;
                            return Err(e.into());
                        }
                    };
                    // A success is a partial success up to the range's end.
                    let resp = match resp {
                        AppendEntriesResponse::Success => AppendEntriesResponse::PartialSuccess(sending_range.last.clone()),
                        resp => resp,
                    };
                    match resp {
                        AppendEntriesResponse::PartialSuccess(matching) => {
                            Self::debug_assert_partial_success(&sending_range, &matching);
                            let partial = matching < sending_range.last;
                            acked_here = true;
                            acked_upto = matching.clone();
                            self.pipeline_acked = Some((request_id, matching.clone()));
                            self.send_progress(request_id, ReplicationResult::new(leader_time, Ok(matching)));
                            if partial {
                                // What went after it was built on entries the follower lacks.
                                Self::settle(&mut in_flight, &mut self.window_networks).await;
                                sent_upto = acked_upto.clone();
                            }
                        }
                        AppendEntriesResponse::Conflict
                            if acked_here
                                && acked_upto == sending_range.prev
                                && retried_at.as_ref() != Some(&sending_range.prev) =>
                        {
                            // The follower just acknowledged the log id it now lacks: this one
                            // overtook the earlier AppendEntries. Sent again from there, once.
                            tracing::debug!(prev = display(sending_range.prev.display()), "an AppendEntries overtook an earlier one; sent again");
                            retried_at = Some(sending_range.prev.clone());
                            Self::settle(&mut in_flight, &mut self.window_networks).await;
                            sent_upto = acked_upto.clone();
                        }
                        resp => {
                            // A higher vote or a conflict ends the request.
                            Self::settle(&mut in_flight, &mut self.window_networks).await;
                            let part = DataWithId::new(request_id, sending_range.clone());
                            return self.take_append_answer(resp, sending_range, leader_time, part);
                        }
                    }
                }
            }
        }
    }

    /// Awaits the AppendEntries still in flight, drops their answers and gives their networks
    /// back.
    async fn settle(in_flight: &mut FuturesOrdered<PipelinedAppend<C, N>>, networks: &mut Vec<N::Network>) {
        while let Some((network, ..)) = in_flight.next().await {
            networks.push(network);
        }
    }

    /// Send the error result to RaftCore.
    /// RaftCore will then submit another replication command.
    fn send_progress_error(&mut self, request_id: RequestId, err: RPCError<C::NodeId, C::Node>) {
        self.abandon(request_id);
        let _ = self.tx_raft_core.send(Notify::Network {
            response: Response::Progress {
                target: self.target.clone(),
                request_id,
                result: Err(err.to_string()),
                session_id: self.session_id.clone(),
            },
        });
    }

    /// Send the success replication result(log matching or conflict) to RaftCore.
    fn send_progress(&mut self, request_id: RequestId, replication_result: ReplicationResult<C>) {
        tracing::debug!(
            request_id = display(request_id),
            target = display(&self.target),
            curr_matching = display(self.matching.display()),
            result = display(&replication_result),
            "{}",
            func_name!()
        );

        match &replication_result.result {
            Ok(matching) => {
                self.validate_matching(matching.clone());
                self.matching = matching.clone();
            }
            Err(_conflict) => {
                // Conflict is not allowed to be less than the current matching.
            }
        }

        let _ = self.tx_raft_core.send({
            Notify::Network {
                response: Response::Progress {
                    session_id: self.session_id.clone(),
                    request_id,
                    target: self.target.clone(),
                    result: Ok(replication_result),
                },
            }
        });
    }

    /// Validate the value for updating matching log id.
    ///
    /// If the matching log id is reverted to a smaller value:
    /// - log a warning message if [`loosen-follower-log-revert`] feature flag is enabled;
    /// - otherwise panic, consider it as a bug.
    ///
    /// [`loosen-follower-log-revert`]: crate::docs::feature_flags#feature-flag-loosen-follower-log-revert
    fn validate_matching(&self, matching: Option<LogId<C::NodeId>>) {
        if cfg!(feature = "loosen-follower-log-revert") {
            if self.matching > matching {
                tracing::warn!(
                    "follower log is reverted from {} to {}; with 'loosen-follower-log-revert' enabled, this is allowed",
                    self.matching.display(),
                    matching.display(),
                );
            }
        } else {
            debug_assert!(
                self.matching <= matching,
                "follower log is reverted from {} to {}",
                self.matching.display(),
                matching.display(),
            );
        }
    }

    /// Drain all events in the channel in backoff mode, i.e., there was an un-retry-able error and
    /// should not send out anything before backoff interval expired.
    ///
    /// In the backoff period, we should not send out any RPCs, but we should still receive events,
    /// in case the channel is closed, it should quit at once.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn backoff_drain_events(&mut self, until: InstantOf<C>) -> Result<(), ReplicationClosed> {
        let d = until - C::now();
        tracing::warn!(
            interval = debug(d),
            "{} backoff mode: drain events without processing them",
            func_name!()
        );

        loop {
            let sleep_duration = until - C::now();
            let sleep = C::sleep(sleep_duration);

            let recv = self.rx_event.recv();

            tracing::debug!("backoff timeout: {:?}", sleep_duration);

            select! {
                _ = sleep => {
                    tracing::debug!("backoff timeout");
                    return Ok(());
                }
                recv_res = recv => {
                    let event = recv_res.ok_or(ReplicationClosed::new("RaftCore closed replication"))?;
                    self.process_event(event);
                }
            }
        }
    }

    /// Receive and process events from RaftCore, until `next_action` is filled.
    ///
    /// It blocks until at least one event is received.
    #[tracing::instrument(level = "trace", skip_all)]
    pub async fn drain_events(&mut self) -> Result<(), ReplicationClosed> {
        tracing::debug!("drain_events");

        // If there is next action to run, do not block waiting for events,
        // instead, just try the best to drain all events.
        if self.next_action.is_none() {
            // Quipu patch: a commit index waiting for entries to ride on goes alone once due, even
            // if it was set while an AppendEntries was on its way or during a back-off.
            if let Some(due) = self.commit_notice_due.clone() {
                match C::timeout_at(due, self.rx_event.recv()).await {
                    Ok(Some(event)) => self.process_event(event),
                    Ok(None) => return Err(ReplicationClosed::new("rx_repl is closed in drain_event()")),
                    Err(_elapsed) => self.next_action = Some(Data::new_heartbeat()),
                }
            } else {
                let event =
                    self.rx_event.recv().await.ok_or(ReplicationClosed::new("rx_repl is closed in drain_event()"))?;
                self.process_event(event);
            }
        }

        // Returning from process_event(), next_action may still be None: a commit index alone
        // waits for `commit_notice_due` (Quipu patch).

        self.try_drain_events().await?;

        Ok(())
    }

    #[tracing::instrument(level = "trace", skip(self))]
    pub async fn try_drain_events(&mut self) -> Result<(), ReplicationClosed> {
        tracing::debug!("{}", func_name!());

        // Just drain all events in the channel.
        // There should NOT be more than one `Replicate::Data` event in the channel.
        // Looping it just collect all commit events and heartbeat events.
        loop {
            let maybe_res = self.rx_event.recv().now_or_never();

            let Some(recv_res) = maybe_res else {
                // No more event found in self.repl_rx
                return Ok(());
            };

            let event = recv_res.ok_or(ReplicationClosed::new("rx_repl is closed in try_drain_event"))?;

            self.process_event(event);
        }
    }

    #[tracing::instrument(level = "trace", skip_all)]
    pub fn process_event(&mut self, event: Replicate<C>) {
        tracing::debug!(event=%event.summary(), "process_event");

        match event {
            Replicate::Committed(c) => {
                // RaftCore may send a committed equals to the initial value.
                debug_assert!(
                    c >= self.committed,
                    "expect new committed {} > self.committed {}",
                    c.summary(),
                    self.committed.summary()
                );

                self.committed = c;

                // Quipu patch (vendor/README.md): upstream fills in a heartbeat here at once, so
                // every entry that commits while nothing else waits for this follower costs one
                // more AppendEntries (empty, carrying the commit index), and the follower's next
                // entries wait behind it. With `Config::commit_notice_delay` set, the commit
                // index waits that long for entries to ride on, and goes alone, in an empty
                // AppendEntries, only if none come. Raft's safety does not depend on when a
                // follower learns the commit index.
                if self.next_action.is_none() {
                    if self.config.commit_notice_delay == 0 {
                        // Upstream's behaviour: the commit index goes at once.
                        self.next_action = Some(Data::new_heartbeat());
                    } else if self.commit_notice_due.is_none() {
                        let delay = Duration::from_millis(self.config.commit_notice_delay);
                        self.commit_notice_due = Some(C::now() + delay);
                    }
                }
            }
            Replicate::Heartbeat => {
                // Never overwrite action with payload.
                if self.next_action.is_none() {
                    self.next_action = Some(Data::new_heartbeat());
                }
            }
            Replicate::Data(d) => {
                // Quipu patch (`Config::replication_window`): a range the engine extended after
                // this task reported its request failed is not sent; one extending the range
                // waiting to be sent (the same request) replaces it.
                if let Data::Logs(logs) = &d {
                    if let Some(id) = logs.request_id().request_id() {
                        if self.abandoned.is_some_and(|abandoned| id <= abandoned) {
                            tracing::debug!(request_id = id, "a range of a request already failed is not sent");
                            return;
                        }
                    }
                    if let Some(Data::Logs(waiting)) = &self.next_action {
                        if waiting.request_id() == logs.request_id() {
                            self.next_action = Some(d);
                            return;
                        }
                    }
                }
                // At most one request with payload is in flight (an extension of it, the same
                // request, was taken above).
                debug_assert!(
                    !self.next_action.as_ref().map(|d| d.has_payload()).unwrap_or(false),
                    "there can not be two actions with payload in flight, curr: {}",
                    self.next_action.as_ref().map(|d| d.to_string()).display()
                );

                if cfg!(debug_assertions) {
                    match &d {
                        Data::SnapshotCallback(_) => {
                            debug_assert!(
                                self.snapshot_state.is_some(),
                                "snapshot state must be Some to receive callback"
                            );
                        }
                        _ => {
                            debug_assert!(
                                self.snapshot_state.is_none(),
                                "can not send other data while sending snapshot"
                            );
                        }
                    }
                }

                self.next_action = Some(d);
            }
        }
    }

    #[tracing::instrument(level = "info", skip_all)]
    async fn stream_snapshot(
        &mut self,
        snapshot_req: DataWithId<Option<LogIdOf<C>>>,
    ) -> Result<Option<Data<C>>, ReplicationError<C::NodeId, C::Node>> {
        let request_id = snapshot_req.request_id();

        tracing::info!(request_id = display(request_id), "{}", func_name!());

        let snapshot = self.snapshot_reader.get_snapshot().await.map_err(|reason| {
            tracing::warn!(error = display(&reason), "failed to get snapshot from state machine");
            ReplicationClosed::new(reason)
        })?;

        tracing::info!(
            "received snapshot: request_id={}; meta:{}",
            request_id,
            snapshot.as_ref().map(|x| &x.meta).summary()
        );

        let snapshot = match snapshot {
            None => {
                let io_err = StorageIOError::read_snapshot(None, AnyError::error("snapshot not found"));
                let sto_err = StorageError::IO { source: io_err };
                return Err(ReplicationError::StorageError(sto_err));
            }
            Some(x) => x,
        };

        let mut option = RPCOption::new(self.config.install_snapshot_timeout());
        option.snapshot_chunk_size = Some(self.config.snapshot_max_chunk_size as usize);

        let (tx_cancel, rx_cancel) = oneshot::channel();

        let jh = C::spawn(Self::send_snapshot(
            request_id,
            self.snapshot_network.clone(),
            self.session_id.vote_ref().clone(),
            snapshot,
            option,
            rx_cancel,
            self.weak_tx_event.clone(),
        ));

        // When self.rx_event is dropped:
        // 1) ReplicationCore will return from the main loop;
        // 2) and tx_cancel is dropped;
        // 3) and the snapshot task will be notified.
        self.snapshot_state = Some((tx_cancel, jh));
        Ok(None)
    }

    async fn send_snapshot(
        request_id: RequestId,
        network: Arc<Mutex<N::Network>>,
        vote: Vote<C::NodeId>,
        snapshot: Snapshot<C>,
        option: RPCOption,
        cancel: oneshot::Receiver<()>,
        weak_tx: mpsc::WeakUnboundedSender<Replicate<C>>,
    ) {
        let meta = snapshot.meta.clone();

        let mut net = network.lock().await;

        let start_time = C::now();

        let cancel = async move {
            let _ = cancel.await;
            ReplicationClosed::new("ReplicationCore is dropped")
        };

        let res = net.full_snapshot(vote, snapshot, cancel, option).await;
        if let Err(e) = &res {
            tracing::warn!(error = display(e), "failed to send snapshot");
        }

        let res = res.decompose_infallible();

        if let Some(tx_noty) = weak_tx.upgrade() {
            let data = Data::new_snapshot_callback(request_id, start_time, meta, res);
            let send_res = tx_noty.send(Replicate::new_data(data));
            if send_res.is_err() {
                tracing::warn!("weak_tx failed to send snapshot result to ReplicationCore");
            }
        } else {
            tracing::warn!("weak_tx is dropped, no response is sent to ReplicationCore");
        }
    }

    fn handle_snapshot_callback(
        &mut self,
        callback: DataWithId<SnapshotCallback<C>>,
    ) -> Result<Option<Data<C>>, ReplicationError<C::NodeId, C::Node>> {
        tracing::debug!(
            request_id = debug(callback.request_id()),
            response = display(callback.data()),
            matching = display(self.matching.display()),
            "handle_snapshot_response"
        );

        self.snapshot_state = None;

        let request_id = callback.request_id();
        let SnapshotCallback {
            start_time,
            result,
            snapshot_meta,
        } = callback.into_data();

        let resp = result?;

        // Handle response conditions.
        let sender_vote = self.session_id.vote_ref().clone();
        if resp.vote > sender_vote {
            return Err(ReplicationError::HigherVote(HigherVote {
                higher: resp.vote,
                sender_vote,
            }));
        }

        self.send_progress(
            request_id,
            ReplicationResult::new(start_time, Ok(snapshot_meta.last_log_id)),
        );

        Ok(None)
    }

    /// Update matching and build a return value for a successful append-entries RPC.
    ///
    /// If there are more logs to send, it returns a new `Some(Data::Logs)` to send.
    fn finish_success_append(
        &mut self,
        matching: Option<LogId<C::NodeId>>,
        leader_time: InstantOf<C>,
        log_ids: DataWithId<LogIdRange<C::NodeId>>,
    ) -> Option<Data<C>> {
        self.send_progress(
            log_ids.request_id(),
            ReplicationResult::new(leader_time, Ok(matching.clone())),
        );

        if matching < log_ids.data().last {
            Some(Data::new_logs(
                log_ids.request_id(),
                LogIdRange::new(matching, log_ids.data().last.clone()),
            ))
        } else {
            None
        }
    }

    /// Check if partial success result(`matching`) is valid for a given log range to send.
    fn debug_assert_partial_success(to_send: &LogIdRange<C::NodeId>, matching: &Option<LogId<C::NodeId>>) {
        debug_assert!(
            matching <= &to_send.last,
            "matching ({}) should be <= last_log_id ({})",
            matching.display(),
            to_send.last.display()
        );
        debug_assert!(
            matching.index() <= to_send.last.index(),
            "matching.index ({}) should be <= last_log_id.index ({})",
            matching.index().display(),
            to_send.last.index().display()
        );
        debug_assert!(
            matching >= &to_send.prev,
            "matching ({}) should be >= prev_log_id ({})",
            matching.display(),
            to_send.prev.display()
        );
        debug_assert!(
            matching.index() >= to_send.prev.index(),
            "matching.index ({}) should be >= prev_log_id.index ({})",
            matching.index().display(),
            to_send.prev.index().display()
        );
    }
}
