//! The link from this node to one peer: a long-lived `DeliverStream` that carries the peer's
//! messages of at most [`super::STREAMED_PAYLOAD_MAX`] (opened on first use and again after it
//! ends), or single `Deliver` calls to a peer built before the stream.
//!
//! Invariant: every letter taken from the mailbox is answered exactly once (its reply, the
//! peer's refusal, or why the stream ended), and at most [`STREAM_IN_FLIGHT_MAX`] are sent and
//! unanswered at once; a stream carries the cluster stamp this node had when it opened it, and
//! a new one is opened once that changes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quipu_proto::v1::raft_transport_client::RaftTransportClient;
use quipu_proto::v1::{RaftBatchItem, RaftReply, RaftStreamMessage, RaftStreamReply};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tonic::transport::Channel;

use super::{Answer, Letter, MESSAGE_BYTES_MAX, STREAM_IN_FLIGHT_MAX, TransportClient};
use crate::identity::{ClusterIdentity, Stamp};
use crate::telemetry;

/// A peer that does not know `DeliverStream` (built before it) gets its messages by `Deliver`
/// calls for this long before the stream is tried again.
const UNSTREAMED_RETRY: Duration = Duration::from_secs(60);

/// The messages sent on one stream and not answered yet, by id, each with its in-flight permit;
/// `None` once the stream ended (its reader failed what was left).
type Pending = Arc<Mutex<Option<HashMap<u64, (Answer, OwnedSemaphorePermit)>>>>;

/// One open `DeliverStream` to a peer.
struct Session {
    outgoing: mpsc::Sender<RaftStreamMessage>,
    pending: Pending,
    /// Whether it was opened with the cluster's stamp (the receiver reads it once per stream).
    stamped: bool,
}

impl Session {
    /// Opens a stream over `channel`; a task reads its answers until it ends.
    async fn open(channel: Channel, identity: &ClusterIdentity) -> Result<Session, tonic::Status> {
        let stamped = identity.get().is_some();
        let (outgoing, mut queued) = mpsc::channel(STREAM_IN_FLIGHT_MAX);
        let requests = futures_util::stream::poll_fn(move |cx| queued.poll_recv(cx));
        let replies = client_of(channel, identity)
            .deliver_stream(requests)
            .await?
            .into_inner();
        telemetry::raft_stream_opened();
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        tokio::spawn(read_answers(replies, Arc::clone(&pending)));
        Ok(Session {
            outgoing,
            pending,
            stamped,
        })
    }

    /// Sends `message` as `id`; gives the answer back if the stream has ended.
    fn send(
        &self,
        id: u64,
        (message, answer): Letter,
        permit: OwnedSemaphorePermit,
    ) -> Result<(), Answer> {
        {
            let mut pending = lock(&self.pending);
            let Some(pending) = pending.as_mut() else {
                return Err(answer);
            };
            pending.insert(id, (answer, permit));
        }
        // Never full: it holds at most the messages not answered yet, which the permits bound.
        if self
            .outgoing
            .try_send(RaftStreamMessage {
                id,
                message: Some(message),
            })
            .is_err()
        {
            let taken = lock(&self.pending).as_mut().and_then(|p| p.remove(&id));
            if let Some((answer, _)) = taken {
                return Err(answer);
            }
        }
        Ok(())
    }

    /// Whether messages can still go on it, with the stamp this node would put on a new one.
    fn usable(&self, identity: &ClusterIdentity) -> bool {
        self.stamped == identity.get().is_some()
            && !self.outgoing.is_closed()
            && lock(&self.pending).is_some()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().expect("a transport lock poisoned by a panic")
}

/// Hands each answer of a stream to its message's caller; when the stream ends, fails every
/// message still unanswered with why it ended.
async fn read_answers(mut replies: tonic::Streaming<RaftStreamReply>, pending: Pending) {
    let ended = loop {
        match replies.message().await {
            Ok(Some(reply)) => {
                let taken = lock(&pending).as_mut().and_then(|p| p.remove(&reply.id));
                // An unknown id: the caller gave up and the stream ended meanwhile, or a
                // receiver's bug; nobody waits for it.
                if let Some((answer, _permit)) = taken {
                    let _ = answer.send(item_result(reply.item));
                }
            }
            Ok(None) => break tonic::Status::unavailable("the peer ended the stream"),
            Err(status) => break status,
        }
    };
    let left = lock(&pending).take().unwrap_or_default();
    for (answer, _permit) in left.into_values() {
        let _ = answer.send(Err(ended.clone()));
    }
}

/// One answer of a stream as the result its message alone would have had.
fn item_result(item: Option<RaftBatchItem>) -> Result<RaftReply, tonic::Status> {
    match item {
        Some(RaftBatchItem {
            reply: Some(reply),
            status_code: 0,
            ..
        }) => Ok(reply),
        Some(item) => Err(tonic::Status::new(
            tonic::Code::from(item.status_code),
            item.status_message,
        )),
        None => Err(tonic::Status::internal("the answer lacks an item")),
    }
}

/// Sends the letters of one peer's mailbox on a stream to it (opened on first use, and again
/// after it ends or when this node learned its cluster's id since), at most
/// [`STREAM_IN_FLIGHT_MAX`] unanswered at once. A letter goes out as soon as it is taken:
/// nothing waits to be grouped, HTTP/2 writes what is ready together. Ends when every sender
/// is dropped.
pub(super) async fn run_link(
    channel: Channel,
    identity: ClusterIdentity,
    mut letters: mpsc::Receiver<Letter>,
    streamed: Arc<AtomicBool>,
) {
    let permits = Arc::new(Semaphore::new(STREAM_IN_FLIGHT_MAX));
    let mut session: Option<Session> = None;
    let mut unstreamed_until: Option<tokio::time::Instant> = None;
    let mut next_id: u64 = 0;
    let alone = |letter, permit| {
        tokio::spawn(deliver_alone(
            channel.clone(),
            identity.clone(),
            letter,
            permit,
        ));
    };
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let Some(letter) = letters.recv().await else {
            return;
        };
        // A caller that already gave up (its RPC timed out) needs no delivery.
        if letter.1.is_closed() {
            continue;
        }
        if unstreamed_until.is_some_and(|until| tokio::time::Instant::now() < until) {
            alone(letter, permit);
            continue;
        }
        // A stream no longer usable is dropped: its request side ends, and its reader answers
        // what it carried until the peer ends it too.
        if session.as_ref().is_some_and(|s| !s.usable(&identity)) {
            session = None;
        }
        if session.is_none() {
            match Session::open(channel.clone(), &identity).await {
                Ok(opened) => {
                    streamed.store(true, Ordering::Relaxed);
                    session = Some(opened);
                }
                Err(status) if status.code() == tonic::Code::Unimplemented => {
                    tracing::info!(error = %status, "the peer does not take a Raft stream; its messages go by single calls for a minute");
                    unstreamed_until = Some(tokio::time::Instant::now() + UNSTREAMED_RETRY);
                    streamed.store(false, Ordering::Relaxed);
                    alone(letter, permit);
                    continue;
                }
                Err(status) => {
                    let _ = letter.1.send(Err(status));
                    continue;
                }
            }
        }
        let Some(open) = session.as_ref() else {
            continue;
        };
        next_id += 1;
        if let Err(answer) = open.send(next_id, letter, permit) {
            let _ = answer.send(Err(tonic::Status::unavailable(
                "the stream to the peer ended",
            )));
            session = None;
        }
    }
}

/// Sends one letter in a `Deliver` call of its own, holding `permit` until answered.
async fn deliver_alone(
    channel: Channel,
    identity: ClusterIdentity,
    (message, answer): Letter,
    permit: OwnedSemaphorePermit,
) {
    let _permit = permit;
    let reply = client_of(channel, &identity)
        .deliver(message)
        .await
        .map(tonic::Response::into_inner);
    let _ = answer.send(reply);
}

/// A transport client over `channel`, stamping its requests with `identity`'s cluster id.
pub(super) fn client_of(channel: Channel, identity: &ClusterIdentity) -> TransportClient {
    RaftTransportClient::with_interceptor(channel, Stamp(identity.clone()))
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX)
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use futures_util::Stream;
    use quipu_proto::v1::raft_transport_server::{RaftTransport, RaftTransportServer};
    use quipu_proto::v1::{
        CampaignReply, CampaignRequest, ControllerCall, ControllerReply, ElectLeadersReply,
        ElectLeadersRequest, JoinRequest, NodeHeartbeat, NodeHeartbeatReply, RaftBatch,
        RaftBatchReply, RaftMessage, RaftRpc, ReportReply, ReportRequest,
    };
    use tokio::sync::oneshot;
    use tonic::{Code, Request, Response, Status, Streaming};

    use super::*;
    use crate::identity::CLUSTER_ID_HEADER;
    use crate::network::Peers;

    /// How the fake peer treats the streams it is sent.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Behaviour {
        /// Answers each two messages in reverse order.
        Reverses,
        /// Knows no `DeliverStream` (a node built before it).
        Unstreamed,
        /// Ends its first stream after taking one message, unanswered; answers the others'.
        EndsFirst,
    }

    /// A peer's transport that echoes each message's payload as its reply.
    #[derive(Debug, Clone)]
    struct Fake {
        behaviour: Behaviour,
        /// The cluster stamp of each stream asked for, in order.
        streams: Arc<Mutex<Vec<Option<String>>>>,
        /// `Deliver` calls taken.
        calls: Arc<AtomicUsize>,
    }

    fn echo(id: u64, message: &RaftMessage) -> Result<RaftStreamReply, Status> {
        Ok(RaftStreamReply {
            id,
            item: Some(RaftBatchItem {
                reply: Some(RaftReply {
                    payload: message.payload.clone(),
                }),
                status_code: 0,
                status_message: String::new(),
            }),
        })
    }

    type Replies = Pin<Box<dyn Stream<Item = Result<RaftStreamReply, Status>> + Send>>;

    #[tonic::async_trait]
    impl RaftTransport for Fake {
        async fn deliver(
            &self,
            request: Request<RaftMessage>,
        ) -> Result<Response<RaftReply>, Status> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(Response::new(RaftReply {
                payload: request.into_inner().payload,
            }))
        }

        async fn deliver_batch(
            &self,
            _: Request<RaftBatch>,
        ) -> Result<Response<RaftBatchReply>, Status> {
            Err(Status::unimplemented("not in this fake"))
        }

        type DeliverStreamStream = Replies;

        async fn deliver_stream(
            &self,
            request: Request<Streaming<RaftStreamMessage>>,
        ) -> Result<Response<Replies>, Status> {
            let stamp = request
                .metadata()
                .get(CLUSTER_ID_HEADER)
                .map(|v| v.to_str().unwrap().to_owned());
            let opened = {
                let mut streams = self.streams.lock().unwrap();
                streams.push(stamp);
                streams.len()
            };
            let behaviour = self.behaviour;
            if behaviour == Behaviour::Unstreamed {
                return Err(Status::unimplemented("DeliverStream"));
            }
            let mut inbound = request.into_inner();
            let (replies, mut out) = mpsc::channel(16);
            tokio::spawn(async move {
                let mut held: Option<RaftStreamMessage> = None;
                while let Ok(Some(streamed)) = inbound.message().await {
                    let message = streamed.message.clone().unwrap();
                    match behaviour {
                        Behaviour::EndsFirst if opened == 1 => return,
                        Behaviour::Reverses => match held.take() {
                            None => held = Some(streamed),
                            Some(first) => {
                                replies.send(echo(streamed.id, &message)).await.unwrap();
                                let first_message = first.message.unwrap();
                                replies.send(echo(first.id, &first_message)).await.unwrap();
                            }
                        },
                        _ => replies.send(echo(streamed.id, &message)).await.unwrap(),
                    }
                }
            });
            Ok(Response::new(Box::pin(futures_util::stream::poll_fn(
                move |cx| out.poll_recv(cx),
            ))))
        }

        async fn heartbeat(
            &self,
            _: Request<NodeHeartbeat>,
        ) -> Result<Response<NodeHeartbeatReply>, Status> {
            Err(Status::unimplemented("not in this fake"))
        }

        async fn campaign(
            &self,
            _: Request<CampaignRequest>,
        ) -> Result<Response<CampaignReply>, Status> {
            Err(Status::unimplemented("not in this fake"))
        }

        async fn controller(
            &self,
            _: Request<ControllerCall>,
        ) -> Result<Response<ControllerReply>, Status> {
            Err(Status::unimplemented("not in this fake"))
        }

        async fn join(&self, _: Request<JoinRequest>) -> Result<Response<ControllerReply>, Status> {
            Err(Status::unimplemented("not in this fake"))
        }

        async fn elect_leaders(
            &self,
            _: Request<ElectLeadersRequest>,
        ) -> Result<Response<ElectLeadersReply>, Status> {
            Err(Status::unimplemented("not in this fake"))
        }

        async fn report(&self, _: Request<ReportRequest>) -> Result<Response<ReportReply>, Status> {
            Err(Status::unimplemented("not in this fake"))
        }
    }

    /// A fake peer listening on loopback; a node's links to it (with the node's data
    /// directory, where its cluster id would be kept).
    async fn peer(behaviour: Behaviour) -> (Fake, Peers, String, tempfile::TempDir) {
        let fake = Fake {
            behaviour,
            streams: Arc::default(),
            calls: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let incoming =
            crate::incoming::admitted(listener, crate::ConnectionLimits::new(16, 16), "test");
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RaftTransportServer::new(fake.clone()))
                .serve_with_incoming(incoming),
        );
        let dir = tempfile::tempdir().unwrap();
        let identity = ClusterIdentity::load(dir.path()).unwrap();
        (fake, Peers::new(identity, None), addr, dir)
    }

    /// Puts a message carrying `payload` in the mailbox to `addr`; its answer, once there.
    async fn post(
        peers: &Peers,
        addr: &str,
        payload: &'static [u8],
    ) -> oneshot::Receiver<Result<RaftReply, Status>> {
        let mailbox = peers.link(addr).unwrap().mailbox;
        let (answer, reply) = oneshot::channel();
        let message = RaftMessage {
            group_id: 1,
            from_node: 1,
            to_node: 2,
            rpc: RaftRpc::Vote as i32,
            payload: Bytes::from_static(payload),
        };
        mailbox.send((message, answer)).await.unwrap();
        reply
    }

    async fn payload_of(reply: oneshot::Receiver<Result<RaftReply, Status>>) -> Bytes {
        reply.await.unwrap().unwrap().payload
    }

    #[tokio::test]
    async fn answers_reach_their_callers_in_whatever_order_they_come() {
        let (fake, peers, addr, _dir) = peer(Behaviour::Reverses).await;
        let (a, b) = (
            post(&peers, &addr, b"a").await,
            post(&peers, &addr, b"b").await,
        );
        assert_eq!(payload_of(b).await, &b"b"[..]);
        assert_eq!(payload_of(a).await, &b"a"[..]);
        let (c, d) = (
            post(&peers, &addr, b"c").await,
            post(&peers, &addr, b"d").await,
        );
        assert_eq!(
            (payload_of(c).await, payload_of(d).await),
            (Bytes::from_static(b"c"), Bytes::from_static(b"d"))
        );
        assert_eq!(
            *fake.streams.lock().unwrap(),
            vec![None],
            "one stream carries them all"
        );

        // Once this node knows its cluster, its messages go on a stream that carries the stamp.
        let id = crate::identity::new_cluster_id();
        peers.identity.learn(&id).unwrap();
        let (e, f) = (
            post(&peers, &addr, b"e").await,
            post(&peers, &addr, b"f").await,
        );
        assert_eq!(payload_of(e).await, &b"e"[..]);
        assert_eq!(payload_of(f).await, &b"f"[..]);
        assert_eq!(*fake.streams.lock().unwrap(), vec![None, Some(id)]);
        assert_eq!(fake.calls.load(Ordering::SeqCst), 0);
        assert!(peers.link(&addr).unwrap().streamed.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_peer_without_the_stream_gets_single_calls() {
        let (fake, peers, addr, _dir) = peer(Behaviour::Unstreamed).await;
        assert_eq!(payload_of(post(&peers, &addr, b"a").await).await, &b"a"[..]);
        assert_eq!(payload_of(post(&peers, &addr, b"b").await).await, &b"b"[..]);
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
        assert_eq!(
            fake.streams.lock().unwrap().len(),
            1,
            "not asked again so soon"
        );
        assert!(
            !peers.link(&addr).unwrap().streamed.load(Ordering::SeqCst),
            "its groups keep one AppendEntries in flight"
        );
    }

    #[tokio::test]
    async fn a_stream_that_ends_fails_what_it_carried_and_another_is_opened() {
        let (fake, peers, addr, _dir) = peer(Behaviour::EndsFirst).await;
        let lost = post(&peers, &addr, b"a").await.await.unwrap().unwrap_err();
        assert_eq!(lost.code(), Code::Unavailable, "{lost:?}");
        assert_eq!(payload_of(post(&peers, &addr, b"b").await).await, &b"b"[..]);
        assert_eq!(fake.streams.lock().unwrap().len(), 2);
    }
}
