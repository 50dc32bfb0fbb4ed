//! What the Raft transport refuses, sent over the real transport as a stranger or a broken peer
//! would: messages stamped with another cluster's id, votes with terms no leader epoch can
//! hold, votes and appends carrying another node's vote, messages from nodes that are not
//! members of the group, snapshot chunks far past any snapshot, and a node registering another
//! node's addresses. The cluster is named once and keeps its name across restarts.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use std::time::Duration;

use common::{config, produce, restart, small_log, start, start_single, wait_for};
use openraft::raft::{InstallSnapshotRequest, VoteRequest};
use openraft::{SnapshotMeta, Vote};
use quipu_node::{ControllerRequest, GroupId, Node, TransportTls};
use quipu_proto::v1::raft_transport_client::RaftTransportClient;
use quipu_proto::v1::{ControllerCall, NodeHeartbeat, RaftMessage, RaftRpc, RaftStreamMessage};
use quipu_raft::TypeConfig;
use tonic::Code;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

async fn client(node: &Node) -> RaftTransportClient<Channel> {
    RaftTransportClient::connect(format!("http://{}", node.addr()))
        .await
        .unwrap()
}

fn message(group: GroupId, from: u64, to: u64, rpc: RaftRpc, payload: Vec<u8>) -> RaftMessage {
    RaftMessage {
        group_id: group.0,
        from_node: from,
        to_node: to,
        rpc: rpc as i32,
        payload: payload.into(),
    }
}

fn vote(term: u64, candidate: u64) -> Vec<u8> {
    let request = VoteRequest {
        vote: Vote::new(term, candidate),
        last_log_id: None,
    };
    postcard::to_allocvec(&request).unwrap()
}

/// Sends `messages` on one `DeliverStream` (stamped with `cluster`, if given) and returns the
/// status code of each one's answer, in the order sent.
async fn streamed_codes(
    client: &mut RaftTransportClient<Channel>,
    messages: Vec<RaftMessage>,
    cluster: Option<&str>,
) -> Vec<Code> {
    let count = messages.len();
    let streamed: Vec<RaftStreamMessage> = (0..)
        .zip(messages)
        .map(|(id, message)| RaftStreamMessage {
            id,
            message: Some(message),
        })
        .collect();
    let mut request = tonic::Request::new(futures_util::stream::iter(streamed));
    if let Some(cluster) = cluster {
        request.metadata_mut().insert(
            "quipu-cluster-id",
            AsciiMetadataValue::try_from(cluster).unwrap(),
        );
    }
    let mut replies = client.deliver_stream(request).await.unwrap().into_inner();
    let mut codes = vec![None; count];
    while let Some(reply) = replies.message().await.unwrap() {
        let at = usize::try_from(reply.id).unwrap();
        assert!(codes[at].is_none(), "one answer per message");
        codes[at] = Some(Code::from(reply.item.unwrap().status_code));
    }
    codes
        .into_iter()
        .map(|code| code.expect("every message answered"))
        .collect()
}

async fn wait_for_cluster_id(nodes: &[Node]) -> String {
    wait_for("every node to know the cluster id", || {
        nodes.iter().all(|n| n.cluster_id().is_some())
    })
    .await;
    nodes[0].cluster_id().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn impossible_or_foreign_raft_messages_are_refused_before_raft_sees_them() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (nodes, groups) = start(&dirs, 1, &small_log()).await;
    let group = groups[0];
    produce(&nodes, group, "before").await;
    let mut to_node_1 = client(&nodes[0]).await;

    // A vote whose term no Kafka leader epoch can hold, from a member, in the controller group
    // and in a partition's.
    for g in [GroupId::CONTROLLER, group] {
        let forged = message(g, 2, 1, RaftRpc::Vote, vote(u64::from(u32::MAX) + 7, 2));
        let refused = to_node_1.deliver(forged).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    }
    // A vote for another node than its sender.
    let forged = message(group, 2, 1, RaftRpc::Vote, vote(50, 3));
    let refused = to_node_1.deliver(forged).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    // A vote from a node that is no member of the group (nor of the cluster).
    let forged = message(group, 42, 1, RaftRpc::Vote, vote(50, 42));
    let refused = to_node_1.deliver(forged).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // A snapshot chunk at 2^44 bytes (it would make the receiver reserve 16 TiB).
    let chunk = InstallSnapshotRequest::<TypeConfig> {
        vote: Vote::new_committed(1, 2),
        meta: SnapshotMeta::default(),
        offset: 1 << 44,
        data: vec![1],
        done: false,
    };
    let forged = message(
        group,
        2,
        1,
        RaftRpc::InstallSnapshot,
        postcard::to_allocvec(&chunk).unwrap(),
    );
    let refused = to_node_1.deliver(forged.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");

    // The same messages on one stream, as peers send them: each is refused as it is alone, and
    // the stream carries on after each refusal.
    let streamed = vec![
        message(group, 2, 1, RaftRpc::Vote, vote(u64::from(u32::MAX) + 7, 2)),
        message(group, 2, 1, RaftRpc::Vote, vote(50, 3)),
        message(group, 42, 1, RaftRpc::Vote, vote(50, 42)),
        forged,
        message(group, 2, 7, RaftRpc::Vote, vote(50, 2)),
    ];
    assert_eq!(
        streamed_codes(&mut to_node_1, streamed, None).await,
        [
            Code::InvalidArgument,
            Code::InvalidArgument,
            Code::PermissionDenied,
            Code::InvalidArgument,
            Code::FailedPrecondition,
        ]
    );

    // Nothing of it reached the groups: the partition takes records under a small epoch, and
    // the controller still plans and commits.
    produce(&nodes, group, "after").await;
    let epoch = nodes
        .iter()
        .find_map(|n| n.partition(group).filter(|p| p.is_leader()))
        .unwrap()
        .leader_epoch();
    assert!(epoch < 100, "leader epoch {epoch}");
    nodes[1].create_topic("still-works", 1, 3).await.unwrap();

    // A node may register itself only, never overwrite another node's addresses.
    let cluster_id = wait_for_cluster_id(&nodes).await;
    let leader = nodes
        .iter()
        .find(|n| n.controller_leader() == Some(n.id()))
        .unwrap();
    let mut victim = leader.metadata().node(3).unwrap().clone();
    victim.raft_addr = "127.0.0.1:9".to_owned();
    let other = if leader.id() == 1 { 2 } else { 1 };
    let call = ControllerCall {
        from_node: other,
        to_node: leader.id(),
        request: postcard::to_allocvec(&ControllerRequest::RegisterNode(victim)).unwrap(),
    };
    let refused = client(leader).await.controller(call).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_ne!(leader.metadata().node(3).unwrap().raft_addr, "127.0.0.1:9");

    // A message stamped with another cluster's id is refused; with this one's it passes.
    let heartbeat = |cluster: &str| {
        let mut request = tonic::Request::new(NodeHeartbeat {
            from_node: 2,
            to_node: 1,
            incarnation: 1,
            quiet: Vec::new(),
        });
        request.metadata_mut().insert(
            "quipu-cluster-id",
            AsciiMetadataValue::try_from(cluster).unwrap(),
        );
        request
    };
    let refused = to_node_1
        .heartbeat(heartbeat("another-cluster"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    to_node_1.heartbeat(heartbeat(&cluster_id)).await.unwrap();
    // A stream is stamped once, when it opens: another cluster's is refused then.
    let mut stamped = tonic::Request::new(futures_util::stream::iter(Vec::new()));
    stamped.metadata_mut().insert(
        "quipu-cluster-id",
        AsciiMetadataValue::from_static("another-cluster"),
    );
    let refused = to_node_1.deliver_stream(stamped).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let ours = message(group, 2, 1, RaftRpc::Vote, vote(u64::from(u32::MAX) + 7, 2));
    assert_eq!(
        streamed_codes(&mut to_node_1, vec![ours], Some(&cluster_id)).await,
        [Code::InvalidArgument],
        "a stream stamped with this cluster's id is heard (and its message checked)"
    );
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_is_named_once_keeps_its_name_and_talks_to_no_other_cluster() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut nodes, _) = start(&dirs, 1, &small_log()).await;
    let id = wait_for_cluster_id(&nodes).await;
    assert!(
        nodes
            .iter()
            .all(|n| n.cluster_id().as_deref() == Some(id.as_str()))
    );
    assert!(quipu_meta::valid_cluster_id(&id), "{id}");
    // A restarted node knows it from its data directory at once.
    let stopped = nodes.remove(2);
    let addr = stopped.addr();
    stopped.stop().await;
    let back = restart(&nodes, 3, dirs[2].path(), addr, small_log()).await;
    assert_eq!(back.cluster_id().as_deref(), Some(id.as_str()));
    nodes.push(back);

    // A node of another cluster cannot join this one: its requests carry its own cluster's id.
    let elsewhere_dir = tempfile::tempdir().unwrap();
    let elsewhere = start_single(config(
        7,
        elsewhere_dir.path(),
        "127.0.0.1:0".parse().unwrap(),
        small_log(),
    ))
    .await;
    wait_for_cluster_id(std::slice::from_ref(&elsewhere)).await;
    assert_ne!(elsewhere.cluster_id(), Some(id.clone()));
    let refused = elsewhere
        .join_through(&nodes[0].addr().to_string(), Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(
        format!("{refused:?}").contains("reached a node of cluster"),
        "{refused:?}"
    );
    assert!(nodes[0].metadata().node(7).is_none());
    elsewhere.stop().await;
    for node in nodes {
        node.stop().await;
    }
}

/// A node started with mutual TLS on its transport, with the certificate `pki` made for it.
async fn start_tls_node(id: u64, dir: &std::path::Path, pki: &quipu_tls::dev::DevPki) -> Node {
    let (_, cert, key) = pki.nodes.iter().find(|(n, _, _)| *n == id).unwrap().clone();
    let mut config = config(id, dir, "127.0.0.1:0".parse().unwrap(), small_log());
    config.transport_tls = Some(TransportTls::load(id, cert, key, pki.ca.clone()).unwrap());
    Node::start(config).await.unwrap()
}

/// A transport client presenting `cert` and `key`, trusting `ca`.
async fn tls_client(
    node: &Node,
    ca: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> RaftTransportClient<Channel> {
    let tls = quipu_tls::ClientTls::new(
        quipu_tls::ClientFiles {
            ca: ca.to_path_buf(),
            cert: Some(cert.to_path_buf()),
            key: Some(key.to_path_buf()),
        },
        &[b"h2"],
    )
    .unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.addr()))
        .unwrap()
        .connect_with_connector(quipu_tls::Connector(tls))
        .await
        .unwrap();
    RaftTransportClient::new(channel)
}

fn heartbeat(from: u64, to: u64) -> NodeHeartbeat {
    NodeHeartbeat {
        from_node: from,
        to_node: to,
        incarnation: 1,
        quiet: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_mutual_tls_only_the_node_a_certificate_names_is_heard() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = quipu_tls::dev::write_dev_pki(pki_dir.path(), &[1, 2, 3, 4], &["127.0.0.1"]).unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    for (id, dir) in (1..=3).zip(&dirs) {
        nodes.push(start_tls_node(id, dir.path(), &pki).await);
    }
    common::form_cluster(&nodes).await;
    nodes[0].create_topic("secure", 1, 3).await.unwrap();
    let group = common::groups_of(&nodes[0], "secure")[0];
    produce(&nodes, group, "over mutual TLS").await;
    // A fourth node with its own cluster certificate joins and registers.
    let fourth = start_tls_node(4, dirs[3].path(), &pki).await;
    fourth
        .join_through(&nodes[0].addr().to_string(), Duration::from_secs(20))
        .await
        .unwrap();
    assert!(fourth.wait_until_registered(Duration::from_secs(20)).await);
    nodes.push(fourth);

    // Node 2's certificate speaks for node 2 only.
    let (_, cert2, key2) = pki.nodes[1].clone();
    let mut as_node_2 = tls_client(&nodes[0], &pki.ca, &cert2, &key2).await;
    as_node_2.heartbeat(heartbeat(2, 1)).await.unwrap();
    let refused = as_node_2.heartbeat(heartbeat(3, 1)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let forged = message(group, 3, 1, RaftRpc::Vote, vote(50, 3));
    let refused = as_node_2.deliver(forged).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // A certificate of the CA that names no node (a client's) is heard by nobody.
    let mut as_client = tls_client(&nodes[0], &pki.ca, &pki.client.0, &pki.client.1).await;
    let refused = as_client.heartbeat(heartbeat(2, 1)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // A node with another CA's certificate cannot join, nor can a plaintext client talk.
    let stranger_dir = tempfile::tempdir().unwrap();
    let stranger_pki =
        quipu_tls::dev::write_dev_pki(stranger_dir.path(), &[5], &["127.0.0.1"]).unwrap();
    let fifth_dir = tempfile::tempdir().unwrap();
    let fifth = start_tls_node(5, fifth_dir.path(), &stranger_pki).await;
    assert!(
        fifth
            .join_through(&nodes[0].addr().to_string(), Duration::from_secs(2))
            .await
            .is_err()
    );
    assert!(nodes[0].metadata().node(5).is_none());
    fifth.stop().await;
    let plain = RaftTransportClient::connect(format!("http://{}", nodes[0].addr())).await;
    match plain {
        Err(_) => {}
        Ok(mut plain) => assert!(plain.heartbeat(heartbeat(2, 1)).await.is_err()),
    }
    produce(&nodes, group, "still served").await;
    for node in nodes {
        node.stop().await;
    }
}
