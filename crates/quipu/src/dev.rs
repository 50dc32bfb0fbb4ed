//! `quipu dev`: a local cluster of N `quipu server` processes (this executable), for trying Quipu
//! and for tests. Node i keeps its data in `<data-dir>/node-i`, its log in
//! `<data-dir>/node-i/quipu.log`, listens for Raft on `127.0.0.1:<raft-port + i - 1>` and for
//! clients on `127.0.0.1:<api-port + i - 1>` (gRPC) and `127.0.0.1:<kafka-port + i - 1>` (Kafka,
//! with topic auto-creation on), and serves metrics and probes on
//! `http://127.0.0.1:<admin-port + i - 1>` (`/metrics`, `/healthz`, `/readyz`, and the web
//! console at `/`). Ctrl-C or SIGTERM stops every node gracefully;
//! running it again restarts the same cluster from the same data.
//!
//! With `--tls`, a throwaway CA and certificates are made in `<data-dir>/tls` (kept, and used
//! again on the next run): the nodes speak mutual TLS to each other, and their client API, Kafka
//! listener and admin listener take TLS only; the console (`https://`) lets a user signed in
//! with a password act (`admin.console_actions`), as the ACLs allow.

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
    /// HTTP admin port (metrics, probes) of node 1; node i uses this + i - 1.
    #[arg(long, default_value_t = 7201)]
    admin_port: u16,
    /// TLS everywhere, with a throwaway CA made in <data-dir>/tls: mutual TLS between nodes,
    /// TLS on the client API and the Kafka listener.
    #[arg(long)]
    tls: bool,
    /// Worker threads of each node's runtime [default: the machine's cores shared among the
    /// nodes, at least 1 each]. The nodes share the machine: a runtime per node as wide as the
    /// machine makes threads wait for cores.
    #[arg(long, env = "QUIPU_WORKER_THREADS")]
    worker_threads: Option<usize>,
}

/// With `--tls`: the CA and certificates in `dir`, made on the first run.
fn dev_pki(dir: &std::path::Path, ids: &[u16]) -> anyhow::Result<quipu_tls::dev::DevPki> {
    let nodes: Vec<u64> = ids.iter().map(|id| u64::from(*id)).collect();
    let existing = quipu_tls::dev::DevPki {
        ca: dir.join("ca.pem"),
        nodes: nodes
            .iter()
            .map(|id| {
                (
                    *id,
                    dir.join(format!("node-{id}.pem")),
                    dir.join(format!("node-{id}.key")),
                )
            })
            .collect(),
        client: (dir.join("client.pem"), dir.join("client.key")),
    };
    let complete = existing.ca.exists()
        && existing.client.0.exists()
        && existing
            .nodes
            .iter()
            .all(|(_, c, k)| c.exists() && k.exists());
    if complete {
        return Ok(existing);
    }
    quipu_tls::dev::write_dev_pki(dir, &nodes, &["127.0.0.1", "localhost"])
        .with_context(|| format!("cannot make throwaway certificates in {}", dir.display()))
}

/// The configuration file of node `id` with `--tls`: every listener on TLS.
fn tls_config(pki: &quipu_tls::dev::DevPki, id: u16) -> anyhow::Result<String> {
    let (_, cert, key) = pki
        .nodes
        .iter()
        .find(|(n, _, _)| *n == u64::from(id))
        .context("no certificate for this node")?;
    let quoted = |path: &std::path::Path| format!("{:?}", path.display().to_string());
    let (cert, key, ca) = (quoted(cert), quoted(key), quoted(&pki.ca));
    Ok(format!(
        "# Written by `quipu dev --tls`: throwaway certificates, never for production.\n\
         [transport.tls]\ncert_file = {cert}\nkey_file = {key}\nca_file = {ca}\n\n\
         [api.tls]\ncert_file = {cert}\nkey_file = {key}\nca_file = {ca}\nclient_auth = \"requested\"\n\n\
         [kafka.tls]\ncert_file = {cert}\nkey_file = {key}\nca_file = {ca}\nclient_auth = \"requested\"\n\n\
         [admin]\nconsole_actions = true\n\n\
         [admin.tls]\ncert_file = {cert}\nkey_file = {key}\n"
    ))
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.nodes > 9 {
        bail!("--nodes must be between 1 and 9");
    }
    let exe = std::env::current_exe().context("cannot find the quipu executable")?;
    let ids: Vec<u16> = (1..=args.nodes).collect();
    // Refused here, before any node starts, with the nodes' own bounds.
    let worker_threads = crate::config::bounded(
        "--worker-threads",
        args.worker_threads,
        (crate::config::cores() / usize::from(args.nodes)).max(1),
        crate::config::WORKER_THREADS_MAX,
    )?;
    let port = |base: u16, id: u16| base.checked_add(id - 1).context("port out of range");
    let mut voters = Vec::new();
    for id in &ids {
        voters.push(format!("{id}@127.0.0.1:{}", port(args.raft_port, *id)?));
    }
    let voters = voters.join(",");
    let mut bootstrap = Vec::new();
    let mut kafka_bootstrap = Vec::new();
    let mut children = Vec::new();
    let pki = if args.tls {
        let pki = dev_pki(&args.data_dir.join("tls"), &ids)?;
        Some(pki)
    } else {
        None
    };
    for id in &ids {
        let dir = args.data_dir.join(format!("node-{id}"));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let mut config_args: Vec<std::ffi::OsString> = Vec::new();
        if let Some(pki) = &pki {
            let path = dir.join("quipu.toml");
            std::fs::write(&path, tls_config(pki, *id)?)
                .with_context(|| format!("cannot write {}", path.display()))?;
            config_args.push("--config".into());
            config_args.push(path.into_os_string());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("quipu.log"))
            .with_context(|| format!("cannot open {}", dir.join("quipu.log").display()))?;
        let api = format!("127.0.0.1:{}", port(args.api_port, *id)?);
        let kafka = format!("127.0.0.1:{}", port(args.kafka_port, *id)?);
        let admin = format!("127.0.0.1:{}", port(args.admin_port, *id)?);
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
            .args(["--admin-listen", &admin])
            .args(["--auto-create-topics", "true"])
            .args(["--voters", &voters])
            .args(["--worker-threads", &worker_threads.to_string()])
            .args(&config_args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("cannot share the log file")?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start node {id}"))?;
        let web = if pki.is_some() { "https" } else { "http" };
        note!(
            "node {id}: pid {}, api {api}, kafka {kafka}, metrics {web}://{admin}/metrics, console {web}://{admin}/, data {}",
            child.id().unwrap_or(0),
            dir.display()
        );
        bootstrap.push(api);
        kafka_bootstrap.push(kafka);
        children.push((*id, child));
    }
    if let Some(pki) = &pki {
        let (ca, (cert, key)) = (
            pki.ca.display(),
            (pki.client.0.display(), pki.client.1.display()),
        );
        note!("TLS everywhere (throwaway CA {ca}); clients:");
        note!("  quipu topic --tls-ca {ca} --tls-cert {cert} --tls-key {key} list");
        note!(
            "  console sign-in: make a user first, e.g. quipu user --tls-ca {ca} --tls-cert {cert} --tls-key {key} create alice"
        );
        note!(
            "  kcat -b {} -X security.protocol=SSL -X ssl.ca.location={ca} -L",
            kafka_bootstrap.join(",")
        );
    }
    note!("each node runs {worker_threads} async worker thread(s) (--worker-threads)");
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
