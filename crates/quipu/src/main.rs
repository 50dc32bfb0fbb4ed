//! `quipu`: one binary for every role: `quipu server` (a node), `quipu dev` (a local cluster), and
//! the client commands `topic`, `produce`, `consume` and `cluster`.
//!
//! Configuration comes from, in increasing precedence: built-in defaults (a single node with a
//! local data directory), a TOML file (`--config`, keys in `deploy/quipu.toml`), `QUIPU_*`
//! environment variables, and flags. The binary only parses configuration, installs logging and
//! wires `quipu-node` together.

/// Huge allocations are reserved, not committed: a count read off the wire (a Kafka request
/// claiming billions of elements) cannot make `malloc` fail and abort the node.
#[global_allocator]
static ALLOCATOR: quipu_alloc::ReservingAllocator = quipu_alloc::ReservingAllocator;

mod acls;
mod bench;
mod bench_kafka;
mod commands;
mod config;
mod dev;
mod groups;
mod output;
mod users;

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
    /// Starts a local cluster of N nodes (processes) with its data in ./quipu-dev; Ctrl-C stops
    /// it, and running it again restarts it from the same data.
    ///
    /// Example: quipu dev --nodes 3
    Dev(dev::DevArgs),
    /// Creates, deletes, lists, describes and changes topics.
    Topic {
        #[command(subcommand)]
        command: commands::TopicCommand,
        #[command(flatten)]
        connection: commands::Connection,
    },
    /// Writes the lines of standard input as records, one per line.
    ///
    /// Example: seq 1 1000 | quipu produce orders --acks all --format json
    Produce(commands::ProduceArgs),
    /// Prints records of a topic.
    ///
    /// Example: quipu consume orders --offset @1764000000000 --num 10 --format json
    Consume(commands::ConsumeArgs),
    /// Measures produce or consume throughput and latency against a running cluster.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// Lists, describes, deletes consumer groups and resets their offsets.
    Group {
        #[command(subcommand)]
        command: groups::GroupCommand,
        #[command(flatten)]
        connection: commands::Connection,
    },
    /// Lists, drains and removes nodes.
    Node {
        #[command(subcommand)]
        command: commands::NodeCommand,
        #[command(flatten)]
        connection: commands::Connection,
    },
    /// Creates, deletes and lists the users Kafka clients authenticate as (SASL SCRAM, PLAIN).
    User {
        #[command(subcommand)]
        command: users::UserCommand,
        #[command(flatten)]
        connection: commands::Connection,
    },
    /// Creates, lists and deletes ACLs: what each principal may do (with [authorization] on).
    Acl {
        #[command(subcommand)]
        command: acls::AclCommand,
        #[command(flatten)]
        connection: commands::Connection,
    },
    /// Shows the cluster's nodes and health; rebalances replicas and leaders.
    Cluster {
        #[command(subcommand)]
        command: commands::ClusterCommand,
        #[command(flatten)]
        connection: commands::Connection,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // A server logs at info; client commands only say what failed (QUIPU_LOG overrides).
    // A server logs at info to standard output; client commands keep standard output for data
    // and only say what went wrong, on standard error (QUIPU_LOG overrides the level).
    let server = matches!(cli.command, Command::Server(_));
    let filter = |default: &str| {
        tracing_subscriber::EnvFilter::try_from_env("QUIPU_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default))
    };
    if server {
        // Colours only on a terminal: log files and journals get plain text.
        tracing_subscriber::fmt()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_env_filter(filter("info"))
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_env_filter(filter("warn"))
            .init();
    }
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader of standard output went away (`| head`): end quietly, as Unix tools do.
        Err(e) if output::is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line: what failed, why, and what to do where that is clear.
            let causes: Vec<String> = e.chain().map(ToString::to_string).collect();
            let hint = match e
                .chain()
                .find_map(|c| c.downcast_ref::<quipu_client::ClientError>())
            {
                Some(quipu_client::ClientError::UnknownTopic(_)) => {
                    " (`quipu topic list` shows the topics; `quipu topic create` makes one)"
                }
                Some(quipu_client::ClientError::UnknownPartition(_)) => {
                    " (`quipu topic describe` shows the partitions)"
                }
                Some(quipu_client::ClientError::Unavailable(_)) => {
                    " (`quipu cluster health` shows which nodes are down)"
                }
                _ => "",
            };
            eprintln!("error: {}{hint}", causes.join(": "));
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // Clients get a runtime one worker per core; the server one its settings size.
    let runtime = || tokio::runtime::Runtime::new().context("cannot start the async runtime");
    match cli.command {
        Command::Server(args) => {
            let settings = config::Settings::resolve(args)?;
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(settings.worker_threads)
                .enable_all()
                .build()
                .context("cannot start the async runtime")?
                .block_on(serve(settings))
        }
        Command::Dev(args) => runtime()?.block_on(dev::run(args)),
        Command::Topic {
            command,
            connection,
        } => runtime()?.block_on(commands::topic(&connection, command)),
        Command::Produce(args) => runtime()?.block_on(commands::produce(args)),
        Command::Consume(args) => runtime()?.block_on(commands::consume(args)),
        Command::Cluster {
            command,
            connection,
        } => runtime()?.block_on(commands::cluster(&connection, command)),
        Command::Bench { command } => runtime()?.block_on(bench::run(command)),
        Command::Node {
            command,
            connection,
        } => runtime()?.block_on(commands::node(&connection, command)),
        Command::User {
            command,
            connection,
        } => runtime()?.block_on(users::user(&connection, command)),
        Command::Acl {
            command,
            connection,
        } => runtime()?.block_on(acls::acl(&connection, command)),
        Command::Group {
            command,
            connection,
        } => runtime()?.block_on(groups::run(&connection, command)),
    }
}

/// Raises the open-file limit to its hard limit: every replica holds three files per segment.
fn raise_open_file_limit() {
    match quipu_node::raise_open_file_limit() {
        Ok((before, after)) => {
            tracing::info!(?before, ?after, "open-file limit (RLIMIT_NOFILE)");
        }
        Err(e) => tracing::warn!(
            error = &e as &dyn std::error::Error,
            "cannot raise the open-file limit"
        ),
    }
}

/// Longest a server started with `--join` keeps asking to be admitted.
const JOIN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Longest a starting server waits for the metadata it had to be applied again before it serves.
const METADATA_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);
/// Longest a listener's graceful stop may take (its open calls and streams finishing: a client
/// that stops reading holds its stream) before the listener is cut.
const LISTENER_STOP_MAX: std::time::Duration = std::time::Duration::from_secs(15);

async fn serve(settings: config::Settings) -> anyhow::Result<()> {
    raise_open_file_limit();
    tracing::info!(
        worker_threads = settings.worker_threads,
        "async runtime (worker_threads)"
    );
    let voters = settings.voters.clone();
    let api_listener = tokio::net::TcpListener::bind(settings.api_listen_addr)
        .await
        .with_context(|| format!("cannot listen for clients on {}", settings.api_listen_addr))?;
    let api_addr = api_listener
        .local_addr()
        .context("cannot read the API listener's address")?;
    let kafka_listener = tokio::net::TcpListener::bind(settings.kafka_listen_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen for Kafka clients on {}",
                settings.kafka_listen_addr
            )
        })?;
    let kafka_addr = kafka_listener
        .local_addr()
        .context("cannot read the Kafka listener's address")?;
    let admin_listener = tokio::net::TcpListener::bind(settings.admin_listen_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen for the admin API (metrics, probes) on {}",
                settings.admin_listen_addr
            )
        })?;
    let admin_addr = admin_listener
        .local_addr()
        .context("cannot read the admin listener's address")?;
    let recorder = if settings.admin.metrics {
        Some(quipu_admin::install_recorder().context("cannot install the metrics recorder")?)
    } else {
        None
    };
    let node = Node::start(settings.node_config(api_addr.to_string(), kafka_addr.to_string()))
        .await
        .with_context(|| {
            format!(
                "cannot start node {} on {}",
                settings.node_id, settings.listen_addr
            )
        })?;
    // Probes answer from here on: /healthz at once, /readyz once the node can serve.
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    // The console reads through this node's own API (on loopback when it listens on all
    // interfaces), over TLS when the API serves it.
    let mut admin_config = settings.admin.clone();
    let mut local = api_addr;
    if local.ip().is_unspecified() {
        local.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    admin_config.console_api = match (&settings.api_tls, &settings.console_api_tls) {
        (None, _) => Some(quipu_admin::ConsoleApi {
            addr: local.to_string(),
            tls: None,
        }),
        (Some(_), Some(tls)) => Some(quipu_admin::ConsoleApi {
            addr: local.to_string(),
            tls: Some(tls.clone()),
        }),
        (Some(_), None) => {
            if settings.admin.console {
                tracing::warn!(
                    "the console cannot read the client API: it serves TLS and no CA is known to check its certificate (set [admin] console_ca_file or [api.tls] ca_file)"
                );
            }
            None
        }
    };
    let admin = tokio::spawn(quipu_admin::serve(
        node.handle(),
        admin_listener,
        recorder,
        admin_config,
        async {
            let _ = admin_stopped.await;
        },
    ));
    match &settings.join {
        Some(seed) => node
            .join_through(seed, JOIN_PATIENCE)
            .await
            .with_context(|| format!("cannot join the cluster through {seed}"))?,
        None => node.join(voters).await.context("cannot join the cluster")?,
    }
    if settings.join.is_some() && !node.wait_until_registered(METADATA_PATIENCE).await {
        tracing::warn!(
            patience_s = METADATA_PATIENCE.as_secs(),
            "this node has not registered with the controller yet: serving anyway"
        );
    }
    // A restarted node serves clients once its metadata is back (the controller leader has said
    // its log is committed), so that it never calls an existing topic unknown. Bounded: without
    // a controller majority it serves anyway, saying so.
    if !node.wait_for_metadata(METADATA_PATIENCE).await {
        tracing::warn!(
            patience_s = METADATA_PATIENCE.as_secs(),
            "the cluster's metadata this node had is not applied again yet (no controller leader?): serving anyway, topics may look unknown until it is"
        );
    }
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let api = tokio::spawn(quipu_api::serve_tls(
        node.handle(),
        api_listener,
        settings.api,
        settings.api_tls.clone(),
        async {
            let _ = api_stopped.await;
        },
    ));
    let (stop_kafka, kafka_stopped) = tokio::sync::oneshot::channel::<()>();
    let kafka = tokio::spawn(quipu_kafka::serve(
        node.handle(),
        kafka_listener,
        settings.kafka.clone(),
        async {
            let _ = kafka_stopped.await;
        },
    ));
    // Certificates are read again when their files change, and at once on SIGHUP.
    let tls = settings.reloadable_tls();
    let reloader = quipu_tls::spawn_reloader(tls.clone());
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot listen for SIGHUP")?;
    drop(tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading certificates");
            quipu_tls::reload_all(&tls, true);
        }
    }));
    // The handler is in place before "ready": a SIGTERM sent on seeing that line is graceful.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tracing::info!(node_id = node.id(), addr = %node.addr(), %api_addr, %kafka_addr, %admin_addr, data_dir = %settings.data_dir.display(), "quipu server ready");
    let power_loss = power_loss_signal()?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: stopping"),
        _ = terminate.recv() => tracing::info!("terminated: stopping"),
        () = power_loss => simulate_power_loss().await,
    }
    // Leadership moves to caught-up followers first, so clients see a new leader at once
    // instead of after an election timeout.
    // The API keeps answering during the handoff (produce gets "not leader" and clients move on).
    let handed = node.shutdown().await;
    let _ = stop_api.send(());
    let _ = stop_kafka.send(());
    stop_listener("kafka", kafka).await;
    stop_listener("api", api).await;
    let _ = stop_admin.send(());
    stop_listener("admin", admin).await;
    reloader.abort();
    tracing::info!(handed, "groups handed over; node stopped");
    Ok(())
}

/// Waits at most [`LISTENER_STOP_MAX`] for a listener told to stop (`what`: kafka, api or
/// admin), then cuts it.
async fn stop_listener<E: std::error::Error + 'static>(
    what: &str,
    listener: tokio::task::JoinHandle<Result<(), E>>,
) {
    let cut = listener.abort_handle();
    match tokio::time::timeout(LISTENER_STOP_MAX, listener).await {
        Ok(ended) => log_listener_end(what, ended),
        Err(_) => {
            cut.abort();
            tracing::warn!(
                listener = what,
                waited_s = LISTENER_STOP_MAX.as_secs(),
                "the listener's connections did not finish in time: cut"
            );
        }
    }
}

/// Logs how a listener's task ended (`what`: kafka, api or admin), unless it ended well.
fn log_listener_end<E: std::error::Error + 'static>(
    what: &str,
    ended: Result<Result<(), E>, tokio::task::JoinError>,
) {
    match ended {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(
            listener = what,
            error = &e as &dyn std::error::Error,
            "a listener failed"
        ),
        Err(e) => tracing::warn!(
            listener = what,
            error = &e as &dyn std::error::Error,
            "a listener's task failed"
        ),
    }
}

/// Resolves on SIGUSR1 when built with `fault-injection`; never otherwise.
#[cfg(feature = "fault-injection")]
fn power_loss_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        .context("cannot listen for SIGUSR1")?;
    Ok(async move {
        signal.recv().await;
    })
}

#[cfg(not(feature = "fault-injection"))]
fn power_loss_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(std::future::pending())
}

/// Fault injection: the files become what a power loss at this instant could leave (each file's
/// unsynced tail cut at a random point, unsynced new files gone), then the process exits at once
/// with status 137, as if killed, without syncing or closing anything.
#[cfg(feature = "fault-injection")]
async fn simulate_power_loss() {
    use quipu_storage::fault;
    fault::freeze();
    // Writes already past the freeze check finish; no new one starts.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() ^ u64::from(d.subsec_nanos()));
    match fault::power_loss_everywhere(fault::PowerLoss::TornTail { seed }) {
        Ok(report) => tracing::warn!(
            seed,
            files_removed = report.files_removed.len(),
            tails_cut = report.tails_cut.len(),
            bytes_cut = report.tails_cut.iter().map(|t| t.2).sum::<u64>(),
            "fault injection: simulated power loss"
        ),
        Err(e) => tracing::error!(
            error = &e as &dyn std::error::Error,
            "fault injection: power loss simulation failed"
        ),
    }
    std::process::exit(137);
}

#[cfg(not(feature = "fault-injection"))]
async fn simulate_power_loss() {}
