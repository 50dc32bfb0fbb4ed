//! `quipu`: one binary for every role. Today: `quipu server`, a node of a Quipu cluster.
//!
//! Configuration comes from, in increasing precedence: built-in defaults (a single node with a
//! local data directory), a TOML file (`--config`, keys in `deploy/quipu.toml`), `QUIPU_*`
//! environment variables, and flags. The binary only parses configuration, installs logging and
//! wires `quipu-node` together.

mod config;

use anyhow::Context;
use clap::{Parser, Subcommand};
use quipu_node::Node;

#[derive(Debug, Parser)]
#[command(
    name = "quipu",
    version,
    about = "Quipu: a durable, replicated commit log that speaks Kafka"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a node. With no options: a single-node cluster with its data in ./quipu-data.
    ///
    /// Example, the first of three nodes:
    ///   quipu server --node-id 1 --data-dir /var/lib/quipu --listen 10.0.0.1:7001 \
    ///     --voters 1@10.0.0.1:7001,2@10.0.0.2:7001,3@10.0.0.3:7001
    Server(config::ServerArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("QUIPU_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match cli.command {
        Command::Server(args) => {
            let settings = config::Settings::resolve(args)?;
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(serve(settings))
        }
    }
}

async fn serve(settings: config::Settings) -> anyhow::Result<()> {
    let voters = settings.voters.clone();
    let api_listener = tokio::net::TcpListener::bind(settings.api_listen_addr)
        .await
        .with_context(|| format!("cannot listen for clients on {}", settings.api_listen_addr))?;
    let api_addr = api_listener
        .local_addr()
        .context("cannot read the API listener's address")?;
    let node = Node::start(settings.node_config(api_addr.to_string()))
        .await
        .with_context(|| {
            format!(
                "cannot start node {} on {}",
                settings.node_id, settings.listen_addr
            )
        })?;
    node.join(voters).await.context("cannot join the cluster")?;
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let api = tokio::spawn(quipu_api::serve(node.handle(), api_listener, async {
        let _ = api_stopped.await;
    }));
    // The handler is in place before "ready": a SIGTERM sent on seeing that line is graceful.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tracing::info!(node_id = node.id(), addr = %node.addr(), %api_addr, data_dir = %settings.data_dir.display(), "quipu server ready");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: stopping"),
        _ = terminate.recv() => tracing::info!("terminated: stopping"),
    }
    // Leadership moves to caught-up followers first, so clients see a new leader at once
    // instead of after an election timeout.
    // The API keeps answering during the handoff (produce gets "not leader" and clients move on).
    let handed = node.shutdown().await;
    let _ = stop_api.send(());
    match api.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "the client API failed"),
        Err(e) => tracing::warn!(error = %e, "the client API task failed"),
    }
    tracing::info!(handed, "groups handed over; node stopped");
    Ok(())
}
