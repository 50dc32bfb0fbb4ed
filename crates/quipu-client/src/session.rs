//! Produce sessions: a client's produce requests to one node pipelined on one `ProduceSession`
//! stream (`docs/protocol/grpc.md`), each answered by id as soon as it is ready, instead of a
//! gRPC call each (a call costs both ends an HTTP/2 stream: headers, trailers, its own task).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use quipu_proto::v1::data_client::DataClient;
use quipu_proto::v1::{
    ProduceRequest, ProduceResponse, ProduceSessionReply, ProduceSessionRequest,
};
use tokio::sync::{mpsc, oneshot};

use crate::error::Attempt;
use crate::{ClientError, Rpc};

/// Requests queued for a session's stream before a sender waits (the node reads at most 1,024
/// unanswered ones; the rest wait in HTTP/2's flow control).
const QUEUE: usize = 64;

type Answer = oneshot::Sender<Result<ProduceResponse, tonic::Status>>;

#[derive(Default)]
struct State {
    next_id: u64,
    /// Requests sent and not answered, by id.
    waiting: HashMap<u64, Answer>,
    /// Why the session ended; every request waiting then got it.
    ended: Option<tonic::Status>,
}

/// One node's produce session. It ends when its stream does (the node stopped, the connection
/// broke) or when the last clone is dropped; the client then opens another for the next request.
pub(crate) struct Session {
    requests: mpsc::Sender<ProduceSessionRequest>,
    state: Arc<Mutex<State>>,
    /// The node's data client the session was opened on (for `Produce` calls when the node
    /// refused the session).
    data: DataClient<Rpc>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("ended", &self.ended())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Opens a session on `data` (the stream starts with the first request).
    pub(crate) fn open(data: DataClient<Rpc>) -> Session {
        let (requests, queued) = mpsc::channel(QUEUE);
        let state = Arc::new(Mutex::new(State::default()));
        tokio::spawn(run(data.clone(), queued, Arc::clone(&state)));
        Session {
            requests,
            state,
            data,
        }
    }

    /// Why the session ended, if it did.
    pub(crate) fn ended(&self) -> Option<tonic::Status> {
        lock(&self.state).ended.clone()
    }

    /// Whether the node refused the session (an older version, UNIMPLEMENTED): nothing sent on
    /// it was read, and the node takes `Produce` calls instead.
    pub(crate) fn refused(&self) -> bool {
        self.ended()
            .is_some_and(|ended| ended.code() == tonic::Code::Unimplemented)
    }

    /// The node's data client, for a `Produce` call.
    pub(crate) fn data(&self) -> DataClient<Rpc> {
        self.data.clone()
    }

    /// Sends one produce request and waits at most `timeout` for its answer (queueing it
    /// included: a node that stopped reading holds the queue).
    pub(crate) async fn produce(
        &self,
        request: &ProduceRequest,
        timeout: Duration,
    ) -> Result<ProduceResponse, Attempt> {
        // Tonic would refuse a message this large by resetting the stream, and with it every
        // request waiting on it.
        let bytes = request.encoded_len() + 16;
        if bytes > crate::MESSAGE_BYTES_MAX {
            return Err(Attempt::Fatal(ClientError::MessageTooLarge(format!(
                "a produce request of {bytes} bytes is over the {} a message may carry",
                crate::MESSAGE_BYTES_MAX
            ))));
        }
        let (answer, answered) = oneshot::channel();
        let id = {
            let mut state = lock(&self.state);
            if let Some(ended) = &state.ended {
                return Err(not_sent(ended));
            }
            let id = state.next_id;
            state.next_id += 1;
            state.waiting.insert(id, answer);
            id
        };
        // Whatever ends the wait (an answer, a timeout, the caller giving up), the request is
        // no longer waited for.
        let _waiting = Waiting {
            state: &self.state,
            id,
        };
        let message = ProduceSessionRequest {
            id,
            request: Some(request.clone()),
        };
        let deadline = tokio::time::Instant::now() + timeout;
        match tokio::time::timeout_at(deadline, self.requests.send(message)).await {
            Ok(Ok(())) => {}
            // The session's task is gone (it ended), or the queue stayed full: either way the
            // request never entered the stream (a send that times out queues nothing).
            Ok(Err(_)) => {
                return Err(match self.ended() {
                    Some(ended) => not_sent(&ended),
                    None => Attempt::NotSent(ClientError::Unavailable(
                        "the produce session ended".to_string(),
                    )),
                });
            }
            Err(_) => {
                return Err(Attempt::NotSent(ClientError::Unavailable(format!(
                    "the produce session took no request for {} ms; the request was not sent",
                    timeout.as_millis()
                ))));
            }
        }
        match tokio::time::timeout_at(deadline, answered).await {
            Ok(Ok(Ok(response))) => Ok(response),
            Ok(Ok(Err(status))) => Err(Attempt::Status(status)),
            // Every waiting request is answered before the task lets go of it; this would be a
            // task that panicked, after which nothing is known of the request.
            Ok(Err(_)) => Err(Attempt::Status(tonic::Status::unknown(
                "the produce session stopped without answering",
            ))),
            Err(_) => Err(Attempt::Status(tonic::Status::deadline_exceeded(format!(
                "no answer within {} ms on the produce session",
                timeout.as_millis()
            )))),
        }
    }
}

/// Removes a request from those waiting for an answer when its wait ends.
struct Waiting<'a> {
    state: &'a Mutex<State>,
    id: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        lock(self.state).waiting.remove(&self.id);
    }
}

/// What a request gets when the session had ended before it was sent.
fn not_sent(ended: &tonic::Status) -> Attempt {
    Attempt::NotSent(ClientError::Unavailable(format!(
        "the produce session ended ({}: {}); the request was not sent",
        ended.code(),
        ended.message()
    )))
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .expect("produce session lock poisoned by a panic")
}

/// Carries the session's stream: answers go to their waiting requests; when the stream ends,
/// every request still waiting gets the reason.
async fn run(
    mut data: DataClient<Rpc>,
    queued: mpsc::Receiver<ProduceSessionRequest>,
    state: Arc<Mutex<State>>,
) {
    let requests = tokio_stream::wrappers::ReceiverStream::new(queued);
    let end = match data.produce_session(requests).await {
        Err(status) => status,
        Ok(replies) => {
            let mut replies = replies.into_inner();
            loop {
                match replies.message().await {
                    Ok(Some(reply)) => answer(&state, reply),
                    // The node ends a session without a status only once this side ended, which
                    // it does not while anyone can send: so this is unexpected, and what the
                    // node did with the requests still waiting is not known.
                    Ok(None) => {
                        break tonic::Status::unknown("the node ended the produce session");
                    }
                    Err(status) => break status,
                }
            }
        }
    };
    tracing::debug!(code = ?end.code(), message = end.message(), "produce session ended");
    let waiting = {
        let mut state = lock(&state);
        state.ended = Some(end.clone());
        std::mem::take(&mut state.waiting)
    };
    for (_, waiter) in waiting {
        let _ = waiter.send(Err(end.clone()));
    }
}

/// Hands one answer to the request waiting for it (none if it timed out meanwhile).
fn answer(state: &Mutex<State>, reply: ProduceSessionReply) {
    let Some(waiter) = lock(state).waiting.remove(&reply.id) else {
        return;
    };
    let answer = if reply.status_code == 0 {
        reply
            .response
            .ok_or_else(|| tonic::Status::internal("a produce session answer without a response"))
    } else {
        Err(tonic::Status::with_details(
            tonic::Code::from_i32(reply.status_code),
            reply.status_message,
            reply.status_details.into(),
        ))
    };
    let _ = waiter.send(answer);
}
