//! A node refuses a new replica, with an error naming the resource, while its process is close to
//! the open-file limit; the replicas it holds keep working. (One test in its own binary: it
//! lowers the process's own open-file limit.)
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use common::*;
use quipu_node::{GroupId, NodeError, Resource};
use rustix::process::{Resource as Limit, Rlimit, getrlimit, setrlimit};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replica_is_refused_near_the_open_file_limit() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_single(config(
        1,
        dir.path(),
        "127.0.0.1:0".parse().unwrap(),
        small_log(),
    ))
    .await;
    let group = single_partition(&node, "held").await.group();

    // Leave this process 100 descriptors more than it uses: less than the 256 a new replica
    // must leave free.
    let before = getrlimit(Limit::Nofile);
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    setrlimit(
        Limit::Nofile,
        Rlimit {
            current: Some(open + 100),
            maximum: before.maximum,
        },
    )
    .unwrap();
    let refused = node.open_partition(GroupId(999)).await.unwrap_err();
    match &refused {
        NodeError::Resources { group, source } => {
            assert_eq!(*group, GroupId(999));
            assert_eq!(source.resource, Resource::OpenFiles);
            assert_eq!(source.limit, open + 100);
        }
        other => panic!("expected a refusal for open files, got {other:?}"),
    }
    assert!(
        !dir.path()
            .join("partitions")
            .join(format!("{:020}", 999))
            .exists(),
        "nothing was created for the refused replica"
    );
    // The replica the node holds still takes records.
    let nodes = [node];
    assert_eq!(produce(&nodes, group, "still here").await.0, 0);
    setrlimit(Limit::Nofile, before).unwrap();
    let [node] = nodes;
    node.stop().await;
}
