//! Produce sessions never resend what a node may have written: a plain produce read by a node
//! whose session then ends without an answer (the node's API stopped while the batch could not
//! be committed) fails with an unknown outcome. Sent again, it would have gone to the new
//! leader and been acknowledged, and the stranded copy could still have been committed.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use std::time::{Duration, Instant};

use common::{PATIENCE, cluster};
use quipu_client::{AckLevel, ClientError, TopicConfig};

fn batch(value: &str) -> bytes::Bytes {
    let mut builder = quipu_record::BatchBuilder::new(0, quipu_record::Compression::None);
    builder.push(0, None, Some(value.as_bytes()), &[]);
    builder.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_produce_left_unanswered_by_its_session_is_an_unknown_outcome() {
    let mut cluster = cluster().await;
    let client = cluster.registered_client().await;
    client
        .create_topic("s", 1, 3, TopicConfig::default())
        .await
        .unwrap();
    // The first produce finds the leader and opens the session to it.
    let first = client
        .produce("s", 0, batch("a"), AckLevel::All)
        .await
        .unwrap();
    assert_eq!(first, Some(0));
    let group =
        quipu_node::GroupId(cluster.nodes[0].metadata().topic("s").unwrap().partitions[0].group);
    let leader = cluster
        .nodes
        .iter()
        .position(|n| n.partition(group).is_some_and(|p| p.is_leader()))
        .unwrap();
    let partition = cluster.nodes[leader].partition(group).unwrap();
    // Cut off, the leader takes the next batch but cannot commit it.
    cluster.nodes[leader].set_isolated(true);
    let stranded = {
        let client = client.clone();
        tokio::spawn(async move { client.produce("s", 0, batch("b"), AckLevel::All).await })
    };
    let start = Instant::now();
    while partition.log_end_offset() <= partition.high_watermark() {
        assert!(
            start.elapsed() < PATIENCE,
            "the batch never reached the leader"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Its API stops: the session waits for the answer it owes, then ends without one.
    let _ = cluster.stops.remove(leader).send(());
    let outcome = tokio::time::timeout(PATIENCE, stranded)
        .await
        .expect("the produce ends")
        .unwrap();
    assert!(
        matches!(outcome, Err(ClientError::UnknownOutcome(_))),
        "{outcome:?}"
    );
    cluster.nodes[leader].set_isolated(false);
    cluster.stop().await;
}
