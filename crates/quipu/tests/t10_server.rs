//! `quipu server` as a process: it starts from the defaults and from `deploy/quipu.toml`, forms a
//! three-process cluster on 127.0.0.1, survives SIGKILL of one node and its restart from the
//! same data, and stops cleanly on SIGTERM, handing its leadership over first.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{PATIENCE, Server, free_port};

#[test]
fn a_single_node_starts_from_the_shipped_config_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/quipu.toml");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let voters = format!("1@{listen}");
    let data = dir.path().join("data");
    let server = Server::start(&[
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &listen,
        "--api-listen",
        "127.0.0.1:0",
        "--kafka-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--voters",
        &voters,
    ]);
    server.wait_for("quipu server ready");
    server.signal("-TERM");
    assert!(server.wait().success());
    assert!(
        data.join("controller").join("raft_meta").exists(),
        "the controller voted and kept its vote"
    );
}

#[test]
fn three_processes_survive_sigkill_of_one_and_its_restart() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let voters = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let start = |i: usize| {
        let listen = format!("127.0.0.1:{}", ports[i]);
        let id = (i + 1).to_string();
        Server::start(&[
            "--node-id",
            &id,
            "--data-dir",
            dirs[i].path().to_str().unwrap(),
            "--listen",
            &listen,
            "--api-listen",
            "127.0.0.1:0",
            "--kafka-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--voters",
            &voters,
        ])
    };
    let mut servers: Vec<Server> = (0..3).map(start).collect();
    for server in &servers {
        server.wait_for("quipu server ready");
    }
    // Node 1 formed the cluster; once a controller leader exists every node's vote is on disk.
    let deadline = Instant::now() + PATIENCE;
    while !dirs
        .iter()
        .all(|d| d.path().join("controller").join("raft_meta").exists())
    {
        assert!(
            Instant::now() < deadline,
            "the controller group did not form"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    servers[1].signal("-KILL");
    let killed = servers.remove(1);
    assert!(!killed.wait().success());
    let restarted = start(1);
    restarted.wait_for("quipu server ready");
    servers.insert(1, restarted);
    // SIGTERM: each node hands over what it leads to a live follower (the last one has none left),
    // then exits successfully.
    for (left, server) in servers.into_iter().enumerate().map(|(i, s)| (2 - i, s)) {
        server.signal("-TERM");
        let line = server.wait_for("leadership handed over");
        let field = |name: &str| -> u64 {
            let at = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
            line[at..]
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        // Whether every group moves within the handoff's 5 s depends on timing on a loaded
        // machine (a restarted node still catching up, leases); the exact handoff is tested
        // in-process (`quipu-node` `t30_quiescence`). Here: the server tried, and says so.
        assert!(field("handed") <= field("led"), "{line}");
        if left > 0 && field("handed") < field("led") {
            eprintln!("handoff incomplete under load: {line}");
        }
        assert!(server.wait().success());
    }
}
