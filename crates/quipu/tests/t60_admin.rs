//! The HTTP admin listener of `quipu server`: `/healthz` answers as soon as the process is up
//! (and `/metrics` is 404 with `[admin] metrics = false`),
//! `/readyz` says 503 and why while the node cannot serve (here: no controller majority) and 200
//! once it can, and `/metrics` shows, in Prometheus' text format, each partition replica's
//! offsets and the produce and fetch counters after a CLI produce and consume; in a `quipu dev`
//! cluster, each leader reports its followers' lag, and the listeners their connections and
//! Kafka requests; a consumer group's lag is the same whichever node is scraped.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{Dev, Server, free_port, get, sample, series};

#[test]
fn probes_and_metrics_describe_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let api = format!("127.0.0.1:{}", free_port());
    // Node 1 of three whose other two never start: up, but never ready; its metrics are off.
    let config = dir.path().join("no-metrics.toml");
    std::fs::write(&config, "[admin]\nmetrics = false\n").unwrap();
    let lonely = Server::start(&[
        "--config",
        config.to_str().unwrap(),
        "--node-id",
        "1",
        "--data-dir",
        dir.path().join("lonely").to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--api-listen",
        "127.0.0.1:0",
        "--kafka-listen",
        "127.0.0.1:0",
        "--admin-listen",
        &admin,
        "--voters",
        &format!(
            "1@127.0.0.1:{},2@127.0.0.1:{},3@127.0.0.1:{}",
            free_port(),
            free_port(),
            free_port()
        ),
    ]);
    let started = std::time::Instant::now();
    let (status, body) = loop {
        if let Ok(stream) = std::net::TcpStream::connect(&admin) {
            drop(stream);
            break get(&admin, "/healthz");
        }
        assert!(started.elapsed() < common::PATIENCE, "no admin listener");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = get(&admin, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no controller leader known"), "{body}");
    let (status, body) = get(&admin, "/metrics");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("metrics are off"), "{body}");
    lonely.kill();

    let server = Server::start(&[
        "--data-dir",
        dir.path().join("single").to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--api-listen",
        &api,
        "--kafka-listen",
        "127.0.0.1:0",
        "--admin-listen",
        &admin,
    ]);
    server.wait_for("quipu server ready");
    let quipu = |args: &[&str], stdin: &[u8]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_quipu"))
            .args(args)
            .env("QUIPU_BOOTSTRAP", &api)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "quipu {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    quipu(
        &[
            "topic",
            "create",
            "m",
            "--partitions",
            "2",
            "--replication-factor",
            "1",
        ],
        b"",
    );
    let lines: String = (0..100).map(|i| format!("record-{i}\n")).collect();
    quipu(&["produce", "m", "--partition", "1"], lines.as_bytes());
    quipu(
        &[
            "consume",
            "m",
            "--partition",
            "1",
            "--offset",
            "0",
            "--num",
            "100",
        ],
        b"",
    );
    let started = std::time::Instant::now();
    loop {
        let (status, body) = get(&admin, "/readyz");
        if status == 200 {
            assert!(body.contains("\"ready\":true"), "{body}");
            assert!(body.contains("\"missing_replicas\":0"), "{body}");
            break;
        }
        assert!(started.elapsed() < common::PATIENCE, "never ready: {body}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (status, scrape) = get(&admin, "/metrics");
    assert_eq!(status, 200);
    let partition =
        |name: &str, p: u32| sample(&scrape, &format!("{name}{{topic=\"m\",partition=\"{p}\"}}"));
    assert_eq!(
        partition("quipu_partition_high_watermark", 1),
        Some(100.0),
        "{scrape}"
    );
    assert_eq!(
        partition("quipu_partition_high_watermark", 0),
        Some(0.0),
        "{scrape}"
    );
    assert_eq!(
        partition("quipu_partition_leader", 1),
        Some(1.0),
        "{scrape}"
    );
    assert!(
        partition("quipu_partition_size_bytes", 1).unwrap() > 0.0,
        "{scrape}"
    );
    assert!(
        sample(
            &scrape,
            "quipu_produce_requests_total{api=\"grpc\",result=\"ok\"}"
        )
        .unwrap()
            >= 1.0,
        "{scrape}"
    );
    assert!(
        sample(&scrape, "quipu_fetch_bytes_total{api=\"grpc\"}").unwrap() > 0.0,
        "{scrape}"
    );
    assert!(
        scrape.contains("quipu_produce_duration_seconds_bucket{api=\"grpc\""),
        "{scrape}"
    );
    // Each produce's phases on the leader: every batch queued, and those answered through the
    // leader's log timed into it and to the commit.
    let phase = |name: &str| {
        sample(
            &scrape,
            &format!("quipu_produce_phase_seconds_count{{phase=\"{name}\"}}"),
        )
        .unwrap_or(0.0)
    };
    assert!(phase("queued") >= 1.0, "{scrape}");
    assert!(phase("leader_log") >= 1.0, "{scrape}");
    assert!(phase("commit") >= 1.0, "{scrape}");
    // An entry a majority held before the leader's log did has no `leader_log`, but a `commit`.
    assert!(phase("commit") <= phase("queued"), "{scrape}");
    assert!(phase("leader_log") <= phase("queued"), "{scrape}");
    assert_eq!(sample(&scrape, "quipu_node_ready"), Some(1.0), "{scrape}");
    assert_eq!(
        sample(&scrape, "quipu_replicas_missing"),
        Some(0.0),
        "{scrape}"
    );
    // Raft and the disk: the replica's segments, role and leader, its fsyncs and their times.
    assert_eq!(partition("quipu_partition_voter", 1), Some(1.0), "{scrape}");
    assert!(
        partition("quipu_partition_segments", 1).unwrap() >= 1.0,
        "{scrape}"
    );
    assert!(
        partition("quipu_partition_leader_changes", 1).unwrap() >= 1.0,
        "{scrape}"
    );
    assert!(
        partition("quipu_partition_last_fsync_age_seconds", 1).unwrap() >= 0.0,
        "{scrape}"
    );
    assert!(
        sample(&scrape, "quipu_leader_changes_total").unwrap() >= 2.0,
        "{scrape}"
    );
    assert!(
        sample(&scrape, "quipu_fsync_duration_seconds_count").unwrap() >= 1.0,
        "{scrape}"
    );
    assert!(
        sample(&scrape, "quipu_partitions_quiescent").is_some(),
        "{scrape}"
    );
    assert!(
        scrape.contains("quipu_produce_batch_bytes_bucket{api=\"grpc\",le=\"128\"}"),
        "{scrape}"
    );
    // Every gRPC call by method and status, an unknown one under one label.
    assert_eq!(
        sample(
            &scrape,
            "quipu_grpc_requests_total{method=\"Admin/CreateTopic\",code=\"OK\"}"
        ),
        Some(1.0),
        "{scrape}"
    );
    assert!(
        sample(
            &scrape,
            "quipu_grpc_request_duration_seconds_count{method=\"Data/Produce\"}"
        )
        .is_some()
            || scrape.contains("method=\"Data/ProduceSession\""),
        "{scrape}"
    );
    assert!(sample(&scrape, "quipu_disk_free_bytes").unwrap() > 0.0);
    // A deleted topic's series leave the exposition (stale gauges are dropped).
    quipu(&["topic", "delete", "m"], b"");
    let started = std::time::Instant::now();
    loop {
        let (_, scrape) = get(&admin, "/metrics");
        if !scrape.contains("topic=\"m\"") {
            break;
        }
        assert!(
            started.elapsed() < common::PATIENCE,
            "the deleted topic's series stay: {scrape}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    server.signal("-TERM");
    assert!(server.wait().success());
}

#[test]
fn leaders_report_their_followers_lag_and_listeners_their_connections() {
    let kcat = Command::new("sh")
        .args(["-c", "command -v kcat"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8(o.stdout).unwrap().trim().to_owned())
        .expect("kcat is missing: install Debian's kcat (scripts/test.sh does)");
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(&dir.path().join("dev"), &[]);
    let admins: Vec<String> = dev
        .banner
        .iter()
        .filter_map(|line| {
            let url = line.split("metrics http://").nth(1)?;
            Some(url.split('/').next()?.to_owned())
        })
        .collect();
    assert_eq!(admins.len(), 3, "{:?}", dev.banner);
    let kafka = dev
        .banner
        .iter()
        .find_map(|line| line.strip_prefix("kafka bootstrap: "))
        .unwrap()
        .to_owned();
    let started = std::time::Instant::now();
    while !dev.quipu(&["cluster", "health"], None).status.success() {
        assert!(
            started.elapsed() < common::PATIENCE,
            "the cluster never got ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    dev.ok(&["topic", "create", "f", "--partitions", "3"], None);
    let lines: String = (0..300).map(|i| format!("r-{i}\n")).collect();
    dev.ok(&["produce", "f", "--key", "k"], Some(lines.as_bytes()));
    let listed = Command::new(&kcat)
        .args(["-b", &kafka, "-L", "-m", "10"])
        .output()
        .unwrap();
    assert!(listed.status.success(), "kcat -L failed");
    // Each partition's leader reports its two followers; once caught up, their lag is 0.
    let started = std::time::Instant::now();
    loop {
        let scrapes: Vec<String> = admins.iter().map(|a| get(a, "/metrics").1).collect();
        let lags: Vec<&str> = scrapes
            .iter()
            .flat_map(|s| series(s, "quipu_partition_follower_lag_entries{topic=\"f\""))
            .collect();
        let caught_up = lags.iter().all(|line| line.ends_with(" 0"));
        if lags.len() == 6 && caught_up {
            let all = scrapes.join("\n");
            assert!(
                series(&all, "quipu_kafka_requests_total{request=\"Metadata\"}").len() == 1,
                "{all}"
            );
            assert!(
                !series(&all, "quipu_connections_accepted_total{listener=\"grpc\"}").is_empty()
            );
            assert!(
                !series(
                    &all,
                    "quipu_connections_accepted_total{listener=\"transport\"}"
                )
                .is_empty()
            );
            assert!(!series(&all, "quipu_partition_follower_lag_bytes{topic=\"f\"").is_empty());
            // The transport: appends sent and answered, received and handed to their groups,
            // their entries, the streams that carried them, and the times of
            // those carrying entries on both sides.
            for prefix in [
                "quipu_raft_messages_sent_total{rpc=\"append_entries\",result=\"ok\"}",
                "quipu_raft_messages_received_total{rpc=\"append_entries\",result=\"ok\"}",
                "quipu_raft_sent_bytes_total{rpc=\"append_entries\"}",
                "quipu_raft_append_entries_bucket{le=\"1\"}",
                "quipu_raft_streams_opened_total",
                "quipu_raft_append_round_trip_seconds_count",
                "quipu_raft_append_handling_seconds_count",
            ] {
                let values: Vec<f64> = series(&all, prefix)
                    .iter()
                    .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
                    .collect();
                assert!(values.iter().sum::<f64>() > 0.0, "{prefix}: {all}");
            }
            break;
        }
        assert!(
            started.elapsed() < common::PATIENCE,
            "follower lag series: {lags:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // A group's lag reads the same on every node: 300 keyed records in one partition, the
    // group's offsets set to 100 on each partition (clamped to the end of the empty ones).
    dev.ok(
        &[
            "group",
            "reset-offsets",
            "lagging",
            "--topic",
            "f",
            "--to-offset",
            "100",
            "--execute",
        ],
        None,
    );
    for admin in &admins {
        let (_, scrape) = get(admin, "/metrics");
        assert_eq!(
            sample(&scrape, "quipu_group_lag{group=\"lagging\"}"),
            Some(200.0),
            "{admin}: {scrape}"
        );
        assert_eq!(
            series(
                &scrape,
                "quipu_group_partition_lag{group=\"lagging\",topic=\"f\""
            )
            .len(),
            3,
            "{admin}: {scrape}"
        );
        assert_eq!(
            sample(&scrape, "quipu_group_members{group=\"lagging\"}"),
            Some(0.0),
            "{scrape}"
        );
        assert!(sample(&scrape, "quipu_groups{state=\"Empty\"}").unwrap() >= 1.0);
        assert_eq!(sample(&scrape, "quipu_group_report_complete"), Some(1.0));
    }
}
