//! `ProduceSession`: a producer's requests pipelined on one stream, each answered by its id with
//! what a `Produce` call would have answered; a stopping server answers what it read, then ends
//! the session with SHUTTING_DOWN instead of waiting for the producer to go.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Api, batch};
use prost::Message;
use quipu_api::ApiLimits;
use quipu_proto::v1::data_client::DataClient;
use quipu_proto::v1::{
    Acks, ErrorDetail, ErrorReason, ProduceRequest, ProduceSessionReply, ProduceSessionRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

fn request(id: u64, topic: &str, partition: u32, value: &str) -> ProduceSessionRequest {
    ProduceSessionRequest {
        id,
        request: Some(ProduceRequest {
            topic: topic.to_string(),
            partition,
            acks: Acks::All as i32,
            record_batch: batch(value),
        }),
    }
}

/// Waits until the node leads every partition of `topic`.
async fn wait_leading(api: &Api, topic: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let groups: Vec<u64> = api
            .node
            .metadata()
            .topic(topic)
            .map(|t| t.partitions.iter().map(|p| p.group).collect())
            .unwrap_or_default();
        let leading = !groups.is_empty()
            && groups.iter().all(|g| {
                api.node
                    .partition(quipu_node::GroupId(*g))
                    .is_some_and(|p| p.is_leader())
            });
        if leading {
            return;
        }
        assert!(Instant::now() < deadline, "no leader for {topic}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A session on a fresh one-node API whose topic `topic` has `partitions` partitions, led here.
async fn session(
    topic: &str,
    partitions: usize,
) -> (
    Api,
    DataClient<tonic::transport::Channel>,
    mpsc::Sender<ProduceSessionRequest>,
    tonic::Streaming<ProduceSessionReply>,
) {
    let api = Api::start(ApiLimits::default()).await;
    api.node.create_topic(topic, partitions, 1).await.unwrap();
    wait_leading(&api, topic).await;
    let mut client = DataClient::connect(format!("http://{}", api.addr))
        .await
        .unwrap()
        .max_encoding_message_size(64 * 1024 * 1024);
    let (tx, rx) = mpsc::channel(16);
    let replies = client
        .produce_session(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (api, client, tx, replies)
}

/// The error reason in a reply's status details.
fn reason(reply: &ProduceSessionReply) -> ErrorReason {
    ErrorReason::try_from(
        ErrorDetail::decode(reply.status_details.as_slice())
            .unwrap()
            .reason,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_answers_each_request_by_its_id() {
    let (api, _client, tx, mut replies) = session("s", 2).await;
    tx.send(request(7, "s", 0, "a")).await.unwrap();
    tx.send(request(8, "missing", 0, "b")).await.unwrap();
    tx.send(request(9, "s", 1, "c")).await.unwrap();
    tx.send(ProduceSessionRequest {
        id: 10,
        request: None,
    })
    .await
    .unwrap();
    let mut answers = HashMap::new();
    while answers.len() < 4 {
        let reply = replies.message().await.unwrap().unwrap();
        assert!(
            answers.insert(reply.id, reply).is_none(),
            "one answer per id"
        );
    }
    assert_eq!(answers[&7].status_code, 0);
    assert_eq!(answers[&7].response.unwrap().base_offset, Some(0));
    assert_eq!(answers[&9].status_code, 0);
    assert_eq!(answers[&9].response.unwrap().base_offset, Some(0));
    // Errors carry what a Produce call would have: its code, message and detail.
    assert_eq!(answers[&8].status_code, tonic::Code::NotFound as i32);
    assert_eq!(reason(&answers[&8]), ErrorReason::UnknownTopic);
    assert!(answers[&8].status_message.contains("missing"));
    assert_eq!(
        answers[&10].status_code,
        tonic::Code::InvalidArgument as i32
    );
    assert_eq!(reason(&answers[&10]), ErrorReason::InvalidArgument);
    // The next batch of partition 0 follows the first.
    tx.send(request(11, "s", 0, "d")).await.unwrap();
    let reply = replies.message().await.unwrap().unwrap();
    assert_eq!((reply.id, reply.status_code), (11, 0));
    assert_eq!(reply.response.unwrap().base_offset, Some(1));
    // The client ends its side: the stream ends after the last answer, with no error.
    drop(tx);
    assert!(replies.message().await.unwrap().is_none());
    api.stop().await;
}

/// A graceful stop waits for open streams, and a producer keeps its session open for as long as
/// it lives: without the stop ending sessions, this test's `stop` would never return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_server_answers_what_it_read_then_ends_the_session() {
    let (api, client, tx, mut replies) = session("s", 1).await;
    tx.send(request(1, "s", 0, "a")).await.unwrap();
    let reply = replies.message().await.unwrap().unwrap();
    assert_eq!((reply.id, reply.status_code), (1, 0));
    let Api {
        node,
        stop,
        server,
        _dir,
        ..
    } = api;
    stop.send(()).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(30), replies.message())
        .await
        .expect("the session ends when the server stops")
        .unwrap_err();
    assert_eq!(ended.code(), tonic::Code::Unavailable);
    let detail = ErrorDetail::decode(ended.details()).unwrap();
    assert_eq!(detail.reason, ErrorReason::ShuttingDown as i32);
    // The session still open on the client's side does not hold the stop.
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("the server stops with a session open")
        .unwrap()
        .unwrap();
    drop((tx, replies, client));
    node.stop().await;
}

/// A message the node cannot read (over the 32 MiB a message may carry) ends the session after
/// the answers owed, with INVALID_ARGUMENT saying the rest were not read; the requests before it
/// were answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_message_ends_the_session_after_the_answers_owed() {
    let (api, client, tx, mut replies) = session("s", 1).await;
    tx.send(request(1, "s", 0, "a")).await.unwrap();
    let reply = replies.message().await.unwrap().unwrap();
    assert_eq!((reply.id, reply.status_code), (1, 0));
    let mut oversized = request(2, "s", 0, "b");
    oversized.request.as_mut().unwrap().record_batch =
        bytes::Bytes::from(vec![0u8; quipu_api::API_MESSAGE_BYTES_MAX + 1]);
    tx.send(oversized).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(30), replies.message())
        .await
        .expect("the session ends")
        .unwrap_err();
    assert_eq!(ended.code(), tonic::Code::InvalidArgument, "{ended:?}");
    let detail = ErrorDetail::decode(ended.details()).unwrap();
    assert_eq!(detail.reason, ErrorReason::InvalidArgument as i32);
    assert!(ended.message().contains("not read"), "{ended:?}");
    drop((tx, replies, client));
    api.stop().await;
}
