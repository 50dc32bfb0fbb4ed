//! A graceful stop closes every replica's log and the controller's (synced, with its
//! clean-shutdown marker), so the next start trusts the active segments instead of recovering
//! them; the records are all there.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use common::*;
use quipu_storage::Offset;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_closes_every_log_and_the_next_start_opens_them_clean() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let log = small_log();
    let (nodes, groups) = start(&dirs, 2, &log).await;
    for group in &groups {
        for i in 0..20 {
            produce(&nodes, *group, &format!("v{i}")).await;
        }
    }
    let addrs: Vec<_> = nodes.iter().map(|n| (n.id(), n.addr())).collect();
    for node in nodes {
        node.stop().await;
    }
    let marker = |dir: &std::path::Path, group: quipu_node::GroupId| {
        dir.join("partitions")
            .join(format!("{:020}", group.0))
            .join("clean_shutdown")
    };
    for dir in &dirs {
        let controller = dir.path().join("controller").join("clean_shutdown");
        assert!(
            controller.exists(),
            "{} has no clean-shutdown marker",
            controller.display()
        );
        for group in &groups {
            assert!(
                marker(dir.path(), *group).exists(),
                "{} has no clean-shutdown marker",
                marker(dir.path(), *group).display()
            );
        }
    }
    // Back up: every replica opens (consuming its marker) with every record.
    let mut nodes = Vec::new();
    for ((id, addr), dir) in addrs.iter().zip(&dirs) {
        nodes.push(
            quipu_node::Node::start(config(*id, dir.path(), *addr, log.clone()))
                .await
                .unwrap(),
        );
    }
    let voters = voters(&nodes);
    for node in &nodes {
        node.join(voters.clone()).await.unwrap();
    }
    wait_for("every replica led, caught up", || {
        every_replica_led(&nodes, &groups)
            && groups.iter().all(|g| {
                nodes
                    .iter()
                    .all(|n| n.partition(*g).unwrap().high_watermark() == Offset(20))
            })
    })
    .await;
    for dir in &dirs {
        for group in &groups {
            assert!(
                !marker(dir.path(), *group).exists(),
                "the marker is taken at open"
            );
        }
    }
    for group in &groups {
        assert_eq!(values(&nodes, *group).await.len(), 20);
    }
    for node in nodes {
        node.stop().await;
    }
}
