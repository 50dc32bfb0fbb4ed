//! Quiescence: idle partitions of a three-node cluster stop heartbeating, wake for a write and go
//! quiet again, and still fail over when the node leading them dies; a restarted follower is
//! brought back into its quiet groups.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // tests unwrap; sizes are small

mod common;

use std::time::Instant;

use common::*;

use quipu_storage::Offset;

const PARTITIONS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_partitions_go_quiet_wake_for_writes_and_fail_over() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut nodes, groups) = start(&dirs, PARTITIONS, &small_log()).await;
    wait_for("every replica quiet", || all_quiet(&nodes, &groups)).await;

    // A write wakes a quiet group; it commits, reaches every replica, and the group goes quiet again.
    for (i, group) in groups.iter().enumerate() {
        let leader = leader_node(&nodes, *group).unwrap();
        assert!(nodes[leader].partition(*group).unwrap().is_quiescent());
        assert_eq!(
            produce(&nodes, *group, &format!("first-{i}")).await,
            Offset(0)
        );
        // The write woke its leader as it was proposed, not at the next round (a quiet leader
        // held writes for up to a second before).
        assert!(!nodes[leader].partition(*group).unwrap().is_quiescent());
    }
    wait_for("every replica quiet after the writes", || {
        all_quiet(&nodes, &groups)
    })
    .await;
    for group in &groups {
        for node in &nodes {
            assert_eq!(node.partition(*group).unwrap().high_watermark(), Offset(1));
        }
    }

    // Kill the node that leads the most partitions while they are quiet.
    let (victim, led) = busiest_leader(&nodes, &groups);
    let victim_id = nodes[victim].id();
    assert!(!led.is_empty());
    let killed_at = Instant::now();
    nodes.remove(victim).stop().await;
    wait_for("a new leader for every partition", || {
        groups.iter().all(|g| {
            leader_node(&nodes, *g).is_some()
                && nodes.iter().all(|n| {
                    let leader = n.partition(*g).unwrap().leader();
                    leader.is_some() && leader != Some(victim_id)
                })
        })
    })
    .await;
    eprintln!(
        "failover of {} quiet partitions: every one led again after {:?}",
        led.len(),
        killed_at.elapsed()
    );

    // The acknowledged records are all there, and the survivors take new ones.
    for (i, group) in groups.iter().enumerate() {
        assert_eq!(
            produce(&nodes, *group, &format!("second-{i}")).await,
            Offset(1)
        );
        assert_eq!(
            values(&nodes, *group).await,
            vec![format!("first-{i}"), format!("second-{i}")]
        );
    }
    // With one of three nodes down, groups still go quiet (a majority is alive).
    wait_for("every surviving replica quiet", || {
        all_quiet(&nodes, &groups)
    })
    .await;
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_follower_rejoins_its_quiet_groups() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut nodes, groups) = start(&dirs, PARTITIONS, &small_log()).await;
    for (i, group) in groups.iter().enumerate() {
        produce(&nodes, *group, &format!("before-{i}")).await;
    }
    wait_for("every replica quiet", || all_quiet(&nodes, &groups)).await;

    // Restart a node on the same address and data: its replicas come back, learn their leaders
    // and become quiet again, holding everything.
    let at = 2;
    let (id, addr) = (nodes[at].id(), nodes[at].addr());
    nodes.remove(at).stop().await;
    let node = restart(&nodes, id, dirs[at].path(), addr, small_log()).await;
    nodes.push(node);
    wait_for("every replica back and quiet", || {
        all_quiet(&nodes, &groups)
    })
    .await;
    for group in &groups {
        let restarted = nodes[2].partition(*group).unwrap();
        assert!(restarted.leader().is_some());
        assert_eq!(restarted.high_watermark(), Offset(1));
        assert_eq!(restarted.log_end_offset(), Offset(1));
    }
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_shutting_down_hands_its_leadership_over_first() {
    init_tracing();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut nodes, groups) = start(&dirs, PARTITIONS, &small_log()).await;
    for (i, group) in groups.iter().enumerate() {
        produce(&nodes, *group, &format!("before-{i}")).await;
    }
    let (leaving, led) = busiest_leader(&nodes, &groups);
    let leaving_id = nodes[leaving].id();
    let controller_led = nodes[leaving].controller_leader() == Some(leaving_id);
    let started = Instant::now();
    let handed = nodes.remove(leaving).shutdown().await;
    eprintln!(
        "graceful shutdown: {handed} of {} groups handed over in {:?}",
        led.len() + usize::from(controller_led),
        started.elapsed()
    );
    assert_eq!(
        handed,
        led.len() + usize::from(controller_led),
        "every led group handed over"
    );
    // When shutdown returns, each of those groups already has a leader among the survivors: no
    // election timeout to wait out.
    for group in &led {
        assert!(
            leader_node(&nodes, *group).is_some(),
            "partition {group} is leaderless"
        );
    }
    for (i, group) in groups.iter().enumerate() {
        assert_eq!(
            produce(&nodes, *group, &format!("after-{i}")).await,
            Offset(1)
        );
        assert_eq!(
            values(&nodes, *group).await,
            vec![format!("before-{i}"), format!("after-{i}")]
        );
    }
    for node in nodes {
        node.stop().await;
    }
}
