//! One scenario, start to end: the network, the servers, the workload in the client namespace,
//! the nemesis's schedule, the final heal and drain, the checker.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::checker::{self, Report};
use crate::cluster::Cluster;
use crate::history;
use crate::nemesis::{self, FaultKind, Nemesis};
use crate::net::{self, Net};
use crate::rng::Rng;

/// How a scenario runs.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Scenarios to run one after the other, comma-separated: partition-kill, pause-power-loss,
    /// corrupt-minority, skew, disk-full, membership, all.
    #[arg(long, value_delimiter = ',', default_value = "partition-kill")]
    pub scenarios: Vec<String>,
    /// Fault kinds instead of a scenario's, comma-separated: partition, client-partition, kill,
    /// pause, power-loss, pause-power-loss, corrupt, skew.
    #[arg(long, value_delimiter = ',')]
    pub faults: Vec<String>,
    /// Seed of the schedule and the workload (scenario i uses seed + i); random when absent.
    #[arg(long, env = "QUIPU_JEPSEN_SEED")]
    pub seed: Option<u64>,
    /// How long faults are injected per scenario, in seconds.
    #[arg(long, default_value_t = 60)]
    pub duration_secs: u64,
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Partitions of the test topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Sends per second, all producers together.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// Where each scenario's history, report, logs and (on failure) data go
    /// (default: target/jepsen/<seed>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The quipu binary, built with `--features fault-injection` (default: the one beside this
    /// binary).
    #[arg(long, env = "QUIPU_BIN")]
    pub quipu: Option<PathBuf>,
    /// Keep the nodes' data directories of passing scenarios too.
    #[arg(long)]
    pub keep_data: bool,
    /// TLS everywhere, with a CA made for the run: mutual TLS between nodes, and the client API
    /// requiring the workload's client certificate.
    #[arg(long)]
    pub tls: bool,
}

/// What a scenario's run found, as written to `summary.json`.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub seed: u64,
    pub nodes: usize,
    pub duration_secs: u64,
    pub faults: Vec<String>,
    pub ops: usize,
    pub sends_ok: u64,
    pub sends_fail: u64,
    pub sends_info: u64,
    pub polls_ok: u64,
    pub anomalies: Vec<(String, u64)>,
    /// Nodes that exited without being told to (each a failure).
    pub unexpected_exits: Vec<String>,
    /// Faults the nemesis could not apply.
    pub nemesis_errors: Vec<String>,
    pub capability_notes: Vec<String>,
    pub valid: bool,
    pub wall_secs: f64,
}

/// Runs every scenario asked for; prints `N passed, M failed`. Returns whether all passed.
pub fn run_all(args: &RunArgs) -> anyhow::Result<bool> {
    for name in net::sweep() {
        println!("removed namespace {name} left by an earlier run");
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs() ^ u64::from(d.subsec_nanos()))
    });
    let quipu = match &args.quipu {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory around this binary")?
            .join("quipu"),
    };
    if !quipu.exists() {
        bail!(
            "no quipu binary at {}: build it with `cargo build -p quipu --features fault-injection` \
             or name it with --quipu",
            quipu.display()
        );
    }
    let out = match &args.out {
        Some(out) => out.clone(),
        None => PathBuf::from("target/jepsen").join(seed.to_string()),
    };
    let (mut passed, mut failed) = (0, 0);
    for (i, scenario) in args.scenarios.iter().enumerate() {
        let seed = seed.wrapping_add(i as u64);
        let dir = out.join(scenario);
        println!(
            "== scenario {scenario}, seed {seed}, {} s, output in {}",
            args.duration_secs,
            dir.display()
        );
        let result = run_one(args, scenario, seed, &quipu, &dir);
        match result {
            Ok(summary) if summary.valid => {
                passed += 1;
                println!("scenario {scenario} (seed {seed}): PASSED");
            }
            Ok(_) => {
                failed += 1;
                println!(
                    "scenario {scenario} (seed {seed}): FAILED; history, report and node logs in {}",
                    dir.display()
                );
            }
            Err(e) => {
                failed += 1;
                println!("scenario {scenario} (seed {seed}): FAILED to run: {e:#}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

/// Prints a line with the time since `started`.
fn say(started: Instant, text: &str) {
    println!("[{:7.1} s] {text}", started.elapsed().as_secs_f64());
}

/// The workload process and its stdout lines.
struct Workload {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Workload {
    fn send(&mut self, line: &str) -> anyhow::Result<()> {
        writeln!(self.stdin, "{line}").context("the workload went away")?;
        self.stdin.flush()?;
        Ok(())
    }

    /// Waits for the line `wanted` on the workload's stdout. Fails at once if a node exits by
    /// itself meanwhile.
    fn wait_for(
        &mut self,
        wanted: &str,
        patience: Duration,
        cluster: &mut Cluster,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + patience;
        loop {
            for node in &mut cluster.nodes {
                if node.expected_running() && !node.is_running() {
                    bail!(
                        "node {} exited while the workload was to say {wanted:?}: {}",
                        node.id,
                        node.last_log_line()
                    );
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(500)))
            {
                Ok(line) if line == wanted => return Ok(()),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) if left.is_zero() => {
                    bail!("the workload did not say {wanted:?} within {patience:?}")
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("the workload exited before saying {wanted:?} (see workload.log)")
                }
            }
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_workload(
    net: &Net,
    cluster: &Cluster,
    args: &RunArgs,
    nodes: usize,
    seed: u64,
    dir: &Path,
) -> anyhow::Result<Workload> {
    let log = std::fs::File::create(dir.join("workload.log"))?;
    let history = dir.join("history.jsonl");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &net.client.ns])
        .arg(std::env::current_exe()?)
        .arg("workload")
        .arg("--bootstrap")
        .arg(cluster.api_addrs().join(","))
        .arg("--partitions")
        .arg(args.partitions.to_string())
        .arg("--replication")
        .arg(nodes.min(3).to_string())
        .arg("--rate")
        .arg(args.rate.to_string())
        .arg("--seed")
        .arg(seed.to_string())
        .arg("--history")
        .arg(&history)
        .args(cluster.client_tls_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("cannot start the workload")?;
    let stdin = child.stdin.take().context("no stdin")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(Workload {
        child,
        stdin,
        lines,
    })
}

fn run_one(
    args: &RunArgs,
    scenario: &str,
    seed: u64,
    quipu: &Path,
    dir: &Path,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let wanted: Vec<FaultKind> = if args.faults.is_empty() {
        nemesis::scenario(scenario).with_context(|| format!("unknown scenario {scenario}"))?
    } else {
        args.faults
            .iter()
            .map(|f| FaultKind::parse(f).with_context(|| format!("unknown fault kind {f}")))
            .collect::<anyhow::Result<_>>()?
    };

    // Membership faults move replicas between nodes: one node more than the replication factor.
    let nodes = if wanted.contains(&FaultKind::Membership) {
        args.nodes.max(4)
    } else {
        args.nodes
    };
    let net = Net::create(nodes)?;
    let caps = net.probe();
    let (kinds, mut notes) = nemesis::available(&wanted, &caps);
    notes.extend(caps.notes.iter().cloned());
    for note in &notes {
        say(started, &format!("note: {note}"));
    }
    if kinds.is_empty() {
        bail!("none of the scenario's faults can be injected here");
    }
    let mut cluster = Cluster::new(
        &net,
        quipu,
        dir,
        kinds.contains(&FaultKind::DiskFull),
        args.tls,
    )?;
    for i in 0..nodes {
        cluster.start(i)?;
    }
    let mut workload = start_workload(&net, &cluster, args, nodes, seed, dir)?;
    workload.wait_for("ready", Duration::from_secs(150), &mut cluster)?;
    say(started, "cluster ready, workload running");

    let mut rng = Rng::new(seed);
    let mut nemesis = Nemesis::new(rng.fork());
    let mut unexpected_exits = Vec::new();
    let mut nemesis_errors = Vec::new();
    let mut faults = Vec::new();
    let end = Instant::now() + Duration::from_secs(args.duration_secs);
    loop {
        let quiet = Duration::from_millis(rng.between(2_000, 6_000));
        let hold = Duration::from_millis(rng.between(3_000, 10_000));
        if Instant::now() + quiet + hold > end {
            break;
        }
        std::thread::sleep(quiet);
        note_exits(&mut cluster, started, &mut unexpected_exits);
        // Every kind once, in the scenario's order, before any is drawn at random: a short run
        // injects each of its kinds (the CI scenarios run about five faults each).
        let kind = kinds
            .get(faults.len())
            .copied()
            .unwrap_or_else(|| kinds[rng.index(kinds.len())]);
        let fault = nemesis::draw(kind, nodes, args.partitions, &mut rng);
        workload.send(&format!("nemesis start {fault}"))?;
        match nemesis.apply(&fault, &net, &mut cluster) {
            Ok(note) if note.is_empty() => say(started, &format!("fault: {fault}")),
            Ok(note) => say(started, &format!("fault: {fault}: {note}")),
            Err(e) => {
                say(
                    started,
                    &format!("fault: {fault} could not be applied: {e:#}"),
                );
                nemesis_errors.push(format!("{fault}: {e:#}"));
            }
        }
        faults.push(fault.to_string());
        std::thread::sleep(hold);
        nemesis.heal(&fault, &net, &mut cluster)?;
        workload.send(&format!("nemesis end {fault}"))?;
        say(started, &format!("healed: {fault}"));
    }
    note_exits(&mut cluster, started, &mut unexpected_exits);
    // Everything heals: the network is whole and every node runs. Without nftables no partition
    // was made, and `nft` may not even exist here.
    if caps.nftables {
        net.heal()?;
    }
    for i in 0..nodes {
        cluster.resume(i);
        cluster.start(i)?;
    }
    say(started, "all healed; final drain");
    workload.send("final")?;
    let done = workload.wait_for("done", Duration::from_secs(600), &mut cluster);
    note_exits(&mut cluster, started, &mut unexpected_exits);
    done?;
    cluster.stop_all(Duration::from_secs(10));
    drop(workload);

    let ops = history::load(&dir.join("history.jsonl"))?;
    let report: Report = checker::check(&ops);
    let text = report.to_string();
    std::fs::write(dir.join("report.txt"), &text)?;
    print!("{text}");
    for exit in &unexpected_exits {
        println!("unexpected exit: {exit}");
    }
    let valid = report.is_valid() && unexpected_exits.is_empty() && nemesis_errors.is_empty();
    let summary = Summary {
        scenario: scenario.to_string(),
        seed,
        nodes,
        duration_secs: args.duration_secs,
        faults,
        ops: ops.len(),
        sends_ok: report.counts.sends_ok,
        sends_fail: report.counts.sends_fail,
        sends_info: report.counts.sends_info,
        polls_ok: report.counts.polls_ok,
        anomalies: report
            .anomalies
            .iter()
            .map(|(k, n)| (k.to_string(), *n))
            .collect(),
        unexpected_exits,
        nemesis_errors,
        capability_notes: notes,
        valid,
        wall_secs: started.elapsed().as_secs_f64(),
    };
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    if valid && !args.keep_data {
        let dirs: Vec<PathBuf> = cluster.nodes.iter().map(|n| n.dir.clone()).collect();
        // Unmounts the nodes' own disks, if they have them.
        drop(cluster);
        for node_dir in dirs {
            let _ = std::fs::remove_dir_all(node_dir.join("data"));
            let _ = std::fs::remove_file(node_dir.join("disk.img"));
        }
    }
    Ok(summary)
}

/// Records nodes that exited although no fault stopped them.
fn note_exits(cluster: &mut Cluster, started: Instant, exits: &mut Vec<String>) {
    for node in &mut cluster.nodes {
        if node.expected_running() && !node.is_running() {
            let text = format!(
                "node {} exited by itself (see {})",
                node.id,
                node.dir.join("node.log").display()
            );
            say(started, &format!("{text}: {}", node.last_log_line()));
            exits.push(text);
            node.forget_exit();
        }
    }
}
