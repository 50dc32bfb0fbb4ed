//! `quipu-jepsen`: runs fault-injection scenarios against real `quipu server` processes and checks
//! their histories. See `docs/reliability.md`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use quipu_jepsen::{checker, history, net, run, workload};

#[derive(Debug, Parser)]
#[command(
    name = "quipu-jepsen",
    about = "Fault-injection tests of a Quipu cluster",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs scenarios: servers in network namespaces, faults, a workload, the checker.
    ///
    /// Example: quipu-jepsen run --scenarios all --duration-secs 1800 --seed 42
    Run(run::RunArgs),
    /// Checks a recorded history and prints its anomalies.
    ///
    /// Example: quipu-jepsen check target/jepsen/42/all/history.jsonl
    Check {
        /// The history (JSONL).
        history: PathBuf,
    },
    /// Removes the namespaces (and their processes) left by runs that no longer exist.
    Sweep,
    /// Internal: the workload, run by `run` inside the client namespace.
    #[command(hide = true)]
    Workload(workload::WorkloadArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run_all(&args),
        Command::Check { history } => history::load(&history).map(|ops| {
            let report = checker::check(&ops);
            print!("{report}");
            report.is_valid()
        }),
        Command::Sweep => {
            for name in net::sweep() {
                println!("removed {name}");
            }
            Ok(true)
        }
        Command::Workload(args) => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(workload::run(args)))
            .map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("quipu-jepsen: {e:#}");
            ExitCode::from(2)
        }
    }
}
