//! End to end through the `quipu` binary: `quipu dev --nodes 3` (three real server processes),
//! then `quipu topic`, `produce`, `consume` and `cluster` against it: 100,000 records produced
//! and consumed back byte for byte, replay by offset and by timestamp, and a leader SIGKILLed
//! while producing with acks=all, after which every acknowledged record is read exactly once,
//! in order within its partition.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Dev;

const PATIENCE: Duration = Duration::from_secs(60);

/// Runs a command whose standard output is a pipe nobody reads any more (`| head` after it
/// exited): every write to it fails with EPIPE.
fn run_into_closed_pipe(dev: &Dev, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_quipu"))
        .args(args)
        .env("QUIPU_BOOTSTRAP", &dev.bootstrap)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_dev_cluster_driven_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(&dir.path().join("dev"), &[]);
    wait_until("three registered, live, healthy nodes", || {
        let info = dev.quipu(&["cluster", "info"], None);
        let alive = String::from_utf8_lossy(&info.stdout)
            .lines()
            .filter(|l| l.trim_end().ends_with("yes"))
            .count();
        alive == 3 && dev.quipu(&["cluster", "health"], None).status.success()
    });
    dev.ok(&["topic", "create", "events", "--partitions", "3"], None);
    let missing = dev.quipu(&["consume", "nope"], None);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
    assert!(stderr.contains("unknown topic"), "{stderr}");
    assert!(
        stderr.contains("quipu topic list"),
        "says what to do: {stderr}"
    );

    // Every printing command ends quietly when its reader goes away, as Unix tools do. Pins the
    // bug where `quipu topic describe idle | head -4` panicked with "failed printing to stdout".
    for args in [
        &["topic", "describe", "events"][..],
        &["topic", "list"],
        &["cluster", "info"],
        &["cluster", "health"],
    ] {
        let output = run_into_closed_pipe(&dev, args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "quipu {args:?}: {stderr}");
        assert!(stderr.is_empty(), "quipu {args:?} said: {stderr}");
    }

    // 100,000 keyed records; each acknowledged one is printed with its partition and offset.
    let input: String = (0..100_000)
        .map(|i| format!("k{}:value-{i}\n", i % 101))
        .collect();
    let before_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let acks = dev.ok(
        &[
            "produce",
            "events",
            "--key-separator",
            ":",
            "--format",
            "json",
        ],
        Some(input.as_bytes()),
    );
    let acks = json_lines(&acks);
    assert_eq!(acks.len(), 100_000);
    // Consume everything back: the same values, each once, at the offsets acknowledged.
    let consumed = json_lines(&dev.ok(&["consume", "events", "--format", "json"], None));
    assert_eq!(consumed.len(), 100_000);
    // `consume … | head`: the reader goes away with 100,000 records still to print.
    let output = run_into_closed_pipe(&dev, &["consume", "events", "--format", "json"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stderr.is_empty(),
        "consume: {stderr}"
    );
    let by_position: HashMap<(u64, u64), &serde_json::Value> = consumed
        .iter()
        .map(|r| {
            (
                (
                    r["partition"].as_u64().unwrap(),
                    r["offset"].as_u64().unwrap(),
                ),
                r,
            )
        })
        .collect();
    for (i, ack) in acks.iter().enumerate() {
        let position = (
            ack["partition"].as_u64().unwrap(),
            ack["offset"].as_u64().unwrap(),
        );
        let record = by_position[&position];
        assert_eq!(record["key"], format!("k{}", i % 101));
        assert_eq!(record["value"], format!("value-{i}"));
    }
    // Replay from an offset, and from a timestamp.
    let replay = json_lines(&dev.ok(
        &[
            "consume",
            "events",
            "--partition",
            "1",
            "--offset",
            "100",
            "--num",
            "5",
            "--format",
            "json",
        ],
        None,
    ));
    assert_eq!(
        replay
            .iter()
            .map(|r| r["offset"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [100, 101, 102, 103, 104]
    );
    let from_time = dev.ok(
        &[
            "consume",
            "events",
            "--partition",
            "0",
            "--offset",
            &format!("@{before_ms}"),
            "--num",
            "1",
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(json_lines(&from_time)[0]["offset"], 0);

    // A consumer group: each run of `consume --group` resumes where the last one stopped, and
    // `group describe` shows the committed offsets and the lag.
    let group_consume = |num: &str| {
        json_lines(&dev.ok(
            &[
                "consume", "events", "--group", "cli-app", "--num", num, "--format", "json",
            ],
            None,
        ))
    };
    let first = group_consume("30000");
    let second = group_consume("70000");
    let mut positions: Vec<(u64, u64)> = first
        .iter()
        .chain(&second)
        .map(|r| {
            (
                r["partition"].as_u64().unwrap(),
                r["offset"].as_u64().unwrap(),
            )
        })
        .collect();
    positions.sort_unstable();
    positions.dedup();
    assert_eq!(
        positions.len(),
        100_000,
        "the two runs read every record once"
    );
    assert_eq!(first.len() + second.len(), 100_000);
    let listed = dev.ok(&["group", "list"], None);
    assert!(
        // Its members left: it holds committed offsets only.
        listed
            .lines()
            .any(|l| l.starts_with("cli-app") && l.ends_with("Empty")),
        "{listed}"
    );
    let described = dev.ok(&["group", "describe", "cli-app"], None);
    let rows: Vec<Vec<&str>> = described
        .lines()
        .filter(|l| l.starts_with("events"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{described}");
    for row in &rows {
        // topic, partition, committed, high watermark, lag (0: all consumed)
        assert_eq!(row[2], row[3], "{described}");
        assert_eq!(row[4], "0", "{described}");
    }
    // Reset to the start: a dry run first, then for real; the group reads everything again.
    let plan = dev.ok(
        &[
            "group",
            "reset-offsets",
            "cli-app",
            "--topic",
            "events",
            "--to-earliest",
        ],
        None,
    );
    assert!(plan.contains("dry run"), "{plan}");
    let unchanged = dev.ok(&["group", "describe", "cli-app"], None);
    assert!(
        unchanged
            .lines()
            .filter(|l| l.starts_with("events"))
            .all(|l| l.split_whitespace().nth(4) == Some("0")),
        "a dry run changes nothing: {unchanged}"
    );
    dev.ok(
        &[
            "group",
            "reset-offsets",
            "cli-app",
            "--topic",
            "events",
            "--to-earliest",
            "--execute",
        ],
        None,
    );
    assert_eq!(group_consume("5").len(), 5, "read again from the start");
    dev.ok(&["group", "delete", "cli-app"], None);
    let gone = dev.quipu(&["group", "describe", "cli-app"], None);
    assert!(!gone.status.success());

    // The bench tool: a small run, both ways, as JSON.
    let produced: serde_json::Value = serde_json::from_str(
        dev.ok(
            &[
                "bench",
                "produce",
                "--topic",
                "bench",
                "--records",
                "2000",
                "--replication-factor",
                "2",
                "--json",
            ],
            None,
        )
        .trim(),
    )
    .unwrap();
    assert_eq!(produced["records"], 2000);
    assert_eq!(produced["failed"], 0);
    assert!(produced["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    // A record's latency is its wait in the producer plus its batch's request: each part's
    // longest is at most the whole's, and the two longest together at least cover it (within
    // the histograms' rounding to three digits).
    let longest = |part: &str| produced[part]["max"].as_f64().unwrap();
    for part in ["queued_ms", "request_ms"] {
        assert!(longest(part) <= longest("latency_ms"), "{part}: {produced}");
    }
    assert!(
        longest("latency_ms") <= (longest("queued_ms") + longest("request_ms")) * 1.01,
        "{produced}"
    );
    assert!(produced["request_ms"]["p50"].as_f64().unwrap() > 0.0);
    let consumed: serde_json::Value = serde_json::from_str(
        dev.ok(&["bench", "consume", "--topic", "bench", "--json"], None)
            .trim(),
    )
    .unwrap();
    assert_eq!(consumed["records"], 2000);

    // SIGKILL the node leading partition 0 while producing to it with acks=all.
    let info = dev.ok(&["cluster", "info"], None);
    let leader: usize = info
        .lines()
        .find_map(|l| l.strip_prefix("topic events leaders (partition:node): "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|p| p.strip_prefix("0:"))
        .unwrap()
        .parse()
        .unwrap();
    let input: String = (0..20_000).map(|i| format!("late-{i}\n")).collect();
    let producer = {
        let mut command = Command::new(env!("CARGO_BIN_EXE_quipu"));
        command
            .args([
                "produce",
                "events",
                "--partition",
                "0",
                "--format",
                "json",
                "--linger-ms",
                "1",
                "--batch-bytes",
                "2048",
            ])
            .env("QUIPU_BOOTSTRAP", &dev.bootstrap)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut pipe = child.stdin.take().unwrap();
        let killed = dev.pids[leader - 1];
        std::thread::spawn(move || {
            for (at, chunk) in input.as_bytes().chunks(4096).enumerate() {
                if pipe.write_all(chunk).is_err() {
                    return;
                }
                if at == 10 {
                    // A little was produced already: kill the leader's process, our child's child.
                    let pid =
                        rustix::process::Pid::from_raw(i32::try_from(killed).unwrap()).unwrap();
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        child
    };
    let output = producer.wait_with_output().unwrap();
    let acknowledged: Vec<u64> = json_lines(&String::from_utf8(output.stdout).unwrap())
        .iter()
        .map(|a| a["offset"].as_u64().unwrap())
        .collect();
    assert!(!acknowledged.is_empty());
    let late = json_lines(&dev.ok(
        &["consume", "events", "--partition", "0", "--format", "json"],
        None,
    ));
    let mut seen: HashMap<String, u64> = HashMap::new();
    for record in &late {
        let value = record["value"].as_str().unwrap().to_string();
        if value.starts_with("late-") {
            *seen.entry(value).or_default() += 1;
        }
    }
    // Every acknowledged record is there exactly once, at its acknowledged offset, in order.
    let offsets: HashMap<u64, &serde_json::Value> = late
        .iter()
        .map(|r| (r["offset"].as_u64().unwrap(), r))
        .collect();
    let mut last_index = None;
    for offset in &acknowledged {
        let value = offsets[offset]["value"].as_str().unwrap();
        assert_eq!(seen[value], 1, "{value} appears {} times", seen[value]);
        let index: u64 = value.strip_prefix("late-").unwrap().parse().unwrap();
        assert!(last_index < Some(index), "acknowledged records in order");
        last_index = Some(index);
    }
    eprintln!(
        "leader SIGKILLed while producing: {} of 20000 records acknowledged, all read back once",
        acknowledged.len()
    );
}
