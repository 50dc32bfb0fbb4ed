//! TLS through the `quipu` binary: `quipu dev --tls` (three processes speaking mutual TLS to each
//! other) serves the CLI and the admin listener over TLS only, `quipu user` among it; a server whose client API requires client certificates
//! refuses none, an expired one and another CA's; and certificates replaced on disk are used
//! after SIGHUP without a restart.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{Dev, Server, free_port};
use quipu_tls::dev::{DevCa, Validity, write};

/// Runs `quipu` with `args` against `bootstrap`.
fn quipu(bootstrap: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quipu"))
        .args(args)
        .env("QUIPU_BOOTSTRAP", bootstrap)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn quipu_dev_with_tls_serves_the_cli_over_tls_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let dev = Dev::start(&data, &["--tls"]);
    assert!(
        dev.banner.iter().any(|l| l.contains("TLS everywhere")),
        "{:?}",
        dev.banner
    );
    let ca = data.join("tls/ca.pem");
    // The admin listeners serve HTTPS only, with the throwaway CA's certificate.
    let admin = dev
        .banner
        .iter()
        .find_map(|l| l.split("console https://").nth(1))
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no https console URL: {:?}", dev.banner))
        .to_owned();
    let (host, port) = admin.rsplit_once(':').unwrap();
    let port: u16 = port.parse().unwrap();
    let tls = quipu_tls::ClientTls::new(
        quipu_tls::ClientFiles {
            ca: ca.clone(),
            cert: None,
            key: None,
        },
        &[],
    )
    .unwrap();
    let answer = tokio::runtime::Runtime::new().unwrap().block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // The node may not listen yet.
        let started = std::time::Instant::now();
        let mut stream = loop {
            match tls.connect(host, port).await {
                Ok(stream) => break stream,
                Err(e) => assert!(started.elapsed() < common::PATIENCE, "{e}"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: quipu\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    });
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Plaintext HTTP gets no HTTP answer (the TLS handshake fails and the connection closes).
    let mut plain = std::net::TcpStream::connect(&admin).unwrap();
    plain
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    use std::io::{Read, Write};
    plain.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("HTTP/1."),
        "plaintext HTTP is not served: {}",
        String::from_utf8_lossy(&answer)
    );
    let ca = ca.to_str().unwrap();
    dev.ok(
        &[
            "topic",
            "--tls-ca",
            ca,
            "create",
            "secure",
            "--partitions",
            "3",
        ],
        None,
    );
    let lines: String = (0..1000).map(|i| format!("line-{i}\n")).collect();
    dev.ok(
        &["produce", "secure", "--tls-ca", ca, "--key", "k"],
        Some(lines.as_bytes()),
    );
    let read = dev.ok(
        &[
            "consume", "secure", "--tls-ca", ca, "--offset", "0", "--num", "1000",
        ],
        None,
    );
    assert_eq!(read.lines().count(), 1000, "{read}");
    assert!(read.lines().any(|l| l == "line-999"));
    // Users, with passwords from standard input (never from the command line).
    dev.ok(
        &["user", "--tls-ca", ca, "create", "alice"],
        Some(b"s3cret\n"),
    );
    dev.ok(
        &[
            "user",
            "--tls-ca",
            ca,
            "create",
            "bob",
            "--mechanism",
            "SCRAM-SHA-512",
            "--iterations",
            "4096",
        ],
        Some(b"hunter2\n"),
    );
    let listed = dev.ok(&["user", "--tls-ca", ca, "list"], None);
    assert!(
        listed.contains("alice")
            && listed.contains("SCRAM-SHA-256 (8192 iterations), SCRAM-SHA-512 (8192 iterations)"),
        "{listed}"
    );
    assert!(
        listed.contains("SCRAM-SHA-512 (4096 iterations)"),
        "{listed}"
    );
    dev.ok(
        &[
            "user",
            "--tls-ca",
            ca,
            "delete",
            "alice",
            "--mechanism",
            "SCRAM-SHA-512",
        ],
        None,
    );
    let listed = dev.ok(&["user", "--tls-ca", ca, "list"], None);
    assert!(!listed.contains("SCRAM-SHA-512 (8192"), "{listed}");
    let refused = dev.quipu(
        &[
            "user",
            "--tls-ca",
            ca,
            "create",
            "carol",
            "--iterations",
            "100",
        ],
        Some(b"x\n"),
    );
    assert!(!refused.status.success());

    // Plaintext gets nothing, and is told why.
    let plain = dev.quipu(&["topic", "list"], None);
    assert!(!plain.status.success());
    let said = String::from_utf8_lossy(&plain.stderr);
    assert!(said.contains("--tls-ca"), "{said}");
    // Every node keeps the cluster's id (named by the first controller leader, within a
    // second or so of forming).
    let started = std::time::Instant::now();
    while !(1..=3).all(|id| data.join(format!("node-{id}/cluster_id")).exists()) {
        assert!(
            started.elapsed() < common::PATIENCE,
            "a node never kept the cluster id"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A certificate, key and CA file, made by `ca` in `dir` under `stem`.
fn files(
    dir: &Path,
    ca: &DevCa,
    stem: &str,
    names: &[&str],
    validity: Validity,
) -> (PathBuf, PathBuf, PathBuf) {
    let (cert, key) = ca.issue_files(dir, stem, names, validity).unwrap();
    let ca_path = dir.join(format!("{stem}-ca.pem"));
    write(&ca_path, &ca.cert_pem(), false).unwrap();
    (cert, key, ca_path)
}

#[test]
fn client_certificates_are_required_and_replaced_certificates_are_used_after_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let first = DevCa::new().unwrap();
    // The files the server reads (replaced in place later).
    let (cert, key, ca) = files(
        dir.path(),
        &first,
        "server",
        &["127.0.0.1", "quipu-node-1"],
        Validity::Current,
    );
    let config = dir.path().join("quipu.toml");
    let quoted = |p: &Path| format!("{:?}", p.display().to_string());
    std::fs::write(
        &config,
        format!(
            "[transport.tls]\ncert_file = {c}\nkey_file = {k}\nca_file = {a}\n\n\
             [api.tls]\ncert_file = {c}\nkey_file = {k}\nca_file = {a}\nclient_auth = \"required\"\n",
            c = quoted(&cert),
            k = quoted(&key),
            a = quoted(&ca)
        ),
    )
    .unwrap();
    let (raft, api) = (free_port(), free_port());
    let listen = format!("127.0.0.1:{raft}");
    let bootstrap = format!("127.0.0.1:{api}");
    let data = dir.path().join("data");
    let server = Server::start(&[
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &listen,
        "--api-listen",
        &bootstrap,
        "--kafka-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    server.wait_for("quipu server ready");
    let with = |ca: &Path, cert: Option<(&Path, &Path)>, args: &[&str]| {
        let mut all: Vec<String> =
            vec!["topic".into(), "--tls-ca".into(), ca.display().to_string()];
        if let Some((cert, key)) = cert {
            all.extend([
                "--tls-cert".into(),
                cert.display().to_string(),
                "--tls-key".into(),
                key.display().to_string(),
            ]);
        }
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        quipu(&bootstrap, &all)
    };
    let (alice, alice_key, _) = files(dir.path(), &first, "alice", &["alice"], Validity::Current);
    let created = with(
        &ca,
        Some((&alice, &alice_key)),
        &["create", "t", "--partitions", "1"],
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );

    // Refused: no client certificate, an expired one, another CA's.
    let (old, old_key, _) = files(dir.path(), &first, "old", &["old"], Validity::Expired);
    let stranger = DevCa::new().unwrap();
    let (mallory, mallory_key, _) = files(
        dir.path(),
        &stranger,
        "mallory",
        &["mallory"],
        Validity::Current,
    );
    for (what, cert) in [
        ("no certificate", None),
        (
            "an expired certificate",
            Some((old.as_path(), old_key.as_path())),
        ),
        (
            "another CA's certificate",
            Some((mallory.as_path(), mallory_key.as_path())),
        ),
    ] {
        let refused = with(&ca, cert, &["list"]);
        assert!(!refused.status.success(), "served with {what}");
    }

    // New certificates from another CA replace the files; SIGHUP makes the server use them.
    let second = DevCa::new().unwrap();
    let issued = second
        .issue(
            "server",
            &["127.0.0.1".to_owned(), "quipu-node-1".to_owned()],
            Validity::Current,
        )
        .unwrap();
    write(&cert, &issued.cert_pem, false).unwrap();
    write(&key, &issued.key_pem, true).unwrap();
    write(&ca, &second.cert_pem(), false).unwrap();
    server.signal("-HUP");
    server.wait_for("certificates reloaded");
    let (bob, bob_key, second_ca) = files(dir.path(), &second, "bob", &["bob"], Validity::Current);
    let listed = with(&second_ca, Some((&bob, &bob_key)), &["list"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains('t'));
    let first_ca = dir.path().join("alice-ca.pem");
    let stale = with(&first_ca, Some((&alice, &alice_key)), &["list"]);
    assert!(!stale.status.success(), "the old certificates still served");
    server.signal("-TERM");
    assert!(server.wait().success());
}
