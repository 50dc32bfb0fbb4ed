//! `quipu dev`: a local cluster of N `quipu server` processes (this executable), for trying Quipu
//! and for tests. Node i keeps its data in `<data-dir>/node-i`, its log in
//! `<data-dir>/node-i/quipu.log`, listens for Raft on `127.0.0.1:<raft-port + i - 1>` and for
//! clients on `127.0.0.1:<api-port + i - 1>` (gRPC) and `127.0.0.1:<kafka-port + i - 1>` (Kafka,
//! with topic auto-creation on). Ctrl-C or SIGTERM stops every node gracefully;
//! running it again restarts the same cluster from the same data.

/// Prints a line for the person watching; a reader that went away is ignored, because the
/// cluster must still be stopped (its nodes are this process's children).
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, bail};
use clap::Args;

/// `quipu dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// Where the nodes keep their data.
    #[arg(long, default_value = "quipu-dev")]
    data_dir: PathBuf,
    /// Raft transport port of node 1; node i uses this + i - 1.
    #[arg(long, default_value_t = 7001)]
    raft_port: u16,
    /// Client API port of node 1; node i uses this + i - 1.
    #[arg(long, default_value_t = 7101)]
    api_port: u16,
    /// Kafka listener port of node 1; node i uses this + i - 1.
    #[arg(long, default_value_t = 9092)]
    kafka_port: u16,
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.nodes > 9 {
        bail!("--nodes must be between 1 and 9");
    }
    let exe = std::env::current_exe().context("cannot find the quipu executable")?;
    let ids: Vec<u16> = (1..=args.nodes).collect();
    let port = |base: u16, id: u16| base.checked_add(id - 1).context("port out of range");
    let mut voters = Vec::new();
    for id in &ids {
        voters.push(format!("{id}@127.0.0.1:{}", port(args.raft_port, *id)?));
    }
    let voters = voters.join(",");
    let mut bootstrap = Vec::new();
    let mut kafka_bootstrap = Vec::new();
    let mut children = Vec::new();
    for id in &ids {
        let dir = args.data_dir.join(format!("node-{id}"));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("quipu.log"))
            .with_context(|| format!("cannot open {}", dir.join("quipu.log").display()))?;
        let api = format!("127.0.0.1:{}", port(args.api_port, *id)?);
        let kafka = format!("127.0.0.1:{}", port(args.kafka_port, *id)?);
        let child = tokio::process::Command::new(&exe)
            .arg("server")
            .args(["--node-id", &id.to_string()])
            .arg("--data-dir")
            .arg(&dir)
            .args([
                "--listen",
                &format!("127.0.0.1:{}", port(args.raft_port, *id)?),
            ])
            .args(["--api-listen", &api])
            .args(["--kafka-listen", &kafka])
            .args(["--auto-create-topics", "true"])
            .args(["--voters", &voters])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("cannot share the log file")?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start node {id}"))?;
        note!(
            "node {id}: pid {}, api {api}, kafka {kafka}, data {}",
            child.id().unwrap_or(0),
            dir.display()
        );
        bootstrap.push(api);
        kafka_bootstrap.push(kafka);
        children.push((*id, child));
    }
    note!("kafka bootstrap: {}", kafka_bootstrap.join(","));
    note!("bootstrap: {}", bootstrap.join(","));
    note!("(Ctrl-C stops the cluster; node logs are in each data directory's quipu.log)");

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    // Watch the nodes until asked to stop; report any that exits on its own.
    let mut running: Vec<(u16, tokio::process::Child)> = children;
    loop {
        let exited = async {
            loop {
                for (at, (_, child)) in running.iter_mut().enumerate() {
                    if let Ok(Some(status)) = child.try_wait() {
                        return (at, status);
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            (at, status) = exited => {
                let (id, _) = running.remove(at);
                eprintln!("node {id} exited: {status}");
                if running.is_empty() {
                    bail!("every node exited");
                }
            }
        }
    }
    note!("stopping {} nodes", running.len());
    for (_, child) in &running {
        // SIGTERM: each node hands its leadership over and syncs before it exits.
        if let Some(pid) = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
    for (id, child) in &mut running {
        let status = child.wait().await.context("cannot wait for a node")?;
        if !status.success() {
            eprintln!("node {id} exited: {status}");
        }
    }
    note!("stopped");
    Ok(())
}
