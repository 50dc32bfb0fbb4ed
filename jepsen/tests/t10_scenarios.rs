//! The short fault-injection scenarios of CI (`docs/reliability.md`): partitions and kills, pauses
//! and power loss, disk corruption on a minority, a disk filled past its reserve, partition moves
//! and node replacements (with TLS everywhere), each against three (four for membership) real
//! `quipu server` processes in network namespaces, each with a fresh seed printed first so that a failure can be
//! replayed with `QUIPU_JEPSEN_SEED`. A failing scenario leaves its history, checker report and
//! node logs under `target/tmp/jepsen/<seed>/`.
//!
//! Needs root (network namespaces, nftables) and the `quipu` binary built with the
//! `fault-injection` feature beside `quipu-jepsen`, as the workspace test command
//! (`--all-features`) builds it.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn short_scenarios_find_no_anomaly() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the fault-injection scenarios need root: they create network namespaces"
    );
    let seed = std::env::var("QUIPU_JEPSEN_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("the clock is after 1970");
            now.as_secs() ^ u64::from(now.subsec_nanos())
        });
    println!("jepsen seed {seed} (replay: QUIPU_JEPSEN_SEED={seed})");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("jepsen")
        .join(seed.to_string());
    // The membership scenario runs with TLS everywhere (nodes joining with certificates of the
    // run's CA, the workload with a client certificate); the others in plaintext.
    for (scenarios, tls) in [
        (
            "partition-kill,pause-power-loss,corrupt-minority,disk-full",
            false,
        ),
        ("membership", true),
    ] {
        let out = out.join(if tls { "tls" } else { "plain" });
        let mut command = Command::new(env!("CARGO_BIN_EXE_quipu-jepsen"));
        command
            .args([
                "run",
                "--scenarios",
                scenarios,
                "--duration-secs",
                "40",
                "--seed",
                &seed.to_string(),
                "--out",
            ])
            .arg(&out)
            .env_remove("QUIPU_JEPSEN_SEED");
        if tls {
            command.arg("--tls");
        }
        let status = command.status().expect("quipu-jepsen runs");
        assert!(
            status.success(),
            "a scenario failed (seed {seed}); its history, report and node logs are in {}",
            out.display()
        );
    }
}
