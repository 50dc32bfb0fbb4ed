//! Authorization through the `quipu` binary: a server with `[authorization]` on and TLS on its
//! client API, whose superuser is named by a client certificate (`User:CN=admin`), makes a user
//! with `quipu user create`; that user, authenticating with `--user` and a password file, is
//! denied everything until `quipu acl create` allows it (a prefixed ALLOW), a DENY overrides an
//! ALLOW, `quipu acl list|delete` see and remove bindings, a wrong password is refused, and
//! `Data.ReadReplica` needs cluster permission; a following fetch stream ends when READ is denied
//! while it runs.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{Server, free_port};
use quipu_tls::dev::{DevCa, Validity, write};

struct Cli {
    bootstrap: String,
    ca: PathBuf,
}

impl Cli {
    /// `quipu COMMAND --tls-ca CA [who's credentials] ARGS...`.
    fn run(&self, who: &[String], command: &str, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_quipu"))
            .arg(command)
            .arg("--tls-ca")
            .arg(&self.ca)
            .args(who)
            .args(args)
            .env("QUIPU_BOOTSTRAP", &self.bootstrap)
            .env_remove("QUIPU_PASSWORD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    fn ok(&self, who: &[String], command: &str, args: &[&str], stdin: &[u8]) -> String {
        let out = self.run(who, command, args, stdin);
        assert!(
            out.status.success(),
            "quipu {command} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs until it fails with `said` in its error (bindings reach the answering node a moment
    /// after the controller commits them), bounded.
    fn refused(&self, who: &[String], command: &str, args: &[&str], stdin: &[u8], said: &str) {
        let started = std::time::Instant::now();
        loop {
            let out = self.run(who, command, args, stdin);
            let stderr = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() && stderr.contains(said) {
                return;
            }
            assert!(
                started.elapsed() < common::PATIENCE,
                "quipu {command} {args:?} was not refused with {said:?}: {stderr}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Runs until it succeeds, bounded; its output.
    fn eventually(&self, who: &[String], command: &str, args: &[&str], stdin: &[u8]) -> String {
        let started = std::time::Instant::now();
        loop {
            let out = self.run(who, command, args, stdin);
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            assert!(
                started.elapsed() < common::PATIENCE,
                "quipu {command} {args:?} never succeeded: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

#[test]
fn acls_decide_what_an_authenticated_user_may_do_through_the_grpc_api() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new().unwrap();
    let ca_file = dir.path().join("ca.pem");
    write(&ca_file, &ca.cert_pem(), false).unwrap();
    let (cert, key) = ca
        .issue_files(dir.path(), "server", &["127.0.0.1"], Validity::Current)
        .unwrap();
    let (admin_cert, admin_key) = ca
        .issue_files(dir.path(), "admin", &["admin"], Validity::Current)
        .unwrap();
    let config = dir.path().join("quipu.toml");
    let quoted = |p: &Path| format!("{:?}", p.display().to_string());
    std::fs::write(
        &config,
        format!(
            "[api.tls]\ncert_file = {c}\nkey_file = {k}\nca_file = {a}\nclient_auth = \"requested\"\n\n\
             [authorization]\nenabled = true\nsuper_users = [\"User:CN=admin\"]\n",
            c = quoted(&cert),
            k = quoted(&key),
            a = quoted(&ca_file)
        ),
    )
    .unwrap();
    let api = free_port();
    let bootstrap = format!("127.0.0.1:{api}");
    let data = dir.path().join("data");
    let server = Server::start(&[
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--api-listen",
        &bootstrap,
        "--kafka-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    server.wait_for("quipu server ready");
    let cli = Cli {
        bootstrap: bootstrap.clone(),
        ca: ca_file.clone(),
    };
    let admin = vec![
        "--tls-cert".to_owned(),
        admin_cert.display().to_string(),
        "--tls-key".to_owned(),
        admin_key.display().to_string(),
    ];
    let password_file = dir.path().join("alice.password");
    std::fs::write(&password_file, "s3cret\n").unwrap();
    let alice = vec![
        "--user".to_owned(),
        "alice".to_owned(),
        "--password-file".to_owned(),
        password_file.display().to_string(),
    ];
    let wrong_file = dir.path().join("wrong.password");
    std::fs::write(&wrong_file, "guess\n").unwrap();
    let mallory = vec![
        "--user".to_owned(),
        "alice".to_owned(),
        "--password-file".to_owned(),
        wrong_file.display().to_string(),
    ];

    // The superuser (by certificate) makes topics and the user.
    for topic in ["logs-a", "orders"] {
        cli.ok(
            &admin,
            "topic",
            &["create", topic, "--replication-factor", "1"],
            b"",
        );
    }
    cli.ok(&admin, "user", &["create", "alice"], b"s3cret\n");

    // No ACL: alice sees no topic and may not produce; anonymous clients neither.
    cli.refused(&alice, "produce", &["logs-a"], b"x\n", "not authorized");
    let listed = cli.ok(&alice, "topic", &["list"], b"");
    assert!(!listed.contains("logs-a"), "{listed}");
    cli.refused(&[], "produce", &["logs-a"], b"x\n", "not authorized");
    cli.refused(&mallory, "topic", &["list"], b"", "not authenticated");
    // Describing the cluster needs no permission, but a wrong password is refused there too.
    cli.refused(&mallory, "cluster", &["info"], b"", "not authenticated");

    // A prefixed ALLOW WRITE on logs-: produce to logs-a, not to orders; logs-a is listed.
    cli.ok(
        &admin,
        "acl",
        &[
            "create",
            "--principal",
            "User:alice",
            "--operation",
            "write",
            "--topic",
            "logs-",
            "--prefixed",
        ],
        b"",
    );
    cli.eventually(&alice, "produce", &["logs-a"], b"one\ntwo\n");
    cli.refused(&alice, "produce", &["orders"], b"x\n", "not authorized");
    let listed = cli.ok(&alice, "topic", &["list"], b"");
    assert!(
        listed.contains("logs-a") && !listed.contains("orders"),
        "{listed}"
    );
    // She may not manage ACLs or users.
    cli.refused(&alice, "acl", &["list"], b"", "not authorized");
    cli.refused(&alice, "user", &["list"], b"", "not authorized");

    // READ allowed, then denied: the DENY wins.
    // READ on logs-a for alice: allowed, or denied with "--deny".
    let read_acl = |extra: &[&str]| {
        let mut args = vec![
            "create",
            "--principal",
            "User:alice",
            "--operation",
            "read",
            "--topic",
            "logs-a",
        ];
        args.extend_from_slice(extra);
        cli.ok(&admin, "acl", &args, b"");
    };
    read_acl(&[]);
    let read = cli.eventually(
        &alice,
        "consume",
        &["logs-a", "--offset", "0", "--num", "2"],
        b"",
    );
    assert_eq!(read.lines().collect::<Vec<_>>(), ["one", "two"], "{read}");
    read_acl(&["--deny"]);
    cli.refused(
        &alice,
        "consume",
        &["logs-a", "--offset", "0", "--num", "2"],
        b"",
        "not authorized",
    );
    let bindings = cli.ok(
        &admin,
        "acl",
        &["list", "--topic", "logs-a", "--pattern", "match"],
        b"",
    );
    assert_eq!(
        bindings.lines().count(),
        4,
        "a header and three bindings: {bindings}"
    );
    let deleted = cli.ok(
        &admin,
        "acl",
        &[
            "delete",
            "--principal",
            "User:alice",
            "--permission",
            "deny",
        ],
        b"",
    );
    assert_eq!(deleted.lines().count(), 2, "{deleted}");
    cli.eventually(
        &alice,
        "consume",
        &["logs-a", "--offset", "0", "--num", "2"],
        b"",
    );

    // Uncommitted replica data needs CLUSTER_ACTION on the cluster.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let tls = quipu_tls::ClientTls::from_options(Some(&ca_file), None, None, &[b"h2"]).unwrap();
        let client = quipu_client::Client::connect_with(
            [bootstrap.clone()],
            quipu_client::ClientConfig {
                tls,
                credentials: Some(quipu_client::Credentials {
                    user: "alice".to_owned(),
                    password: "s3cret".to_owned(),
                }),
                ..quipu_client::ClientConfig::default()
            },
        )
        .await
        .unwrap();
        let refused = client.read_replica(&bootstrap, "logs-a", 0, 0).await;
        assert!(
            matches!(refused, Err(quipu_client::ClientError::NotAuthorized(_))),
            "{refused:?}"
        );

        // A fetch stream that follows the partition ends, not authorized, once a DENY READ
        // reaches the node: it is authorized again before each message, not only at its start.
        let mut consumer = quipu_client::Consumer::new(
            &client,
            "logs-a",
            0,
            quipu_client::StartAt::Offset(0),
            true,
        )
        .await
        .unwrap();
        let first = consumer.next_batch().await.unwrap().unwrap();
        assert!(!first.is_empty());
        read_acl(&["--deny"]);
        let ended = tokio::time::timeout(common::PATIENCE, async {
            loop {
                match consumer.next_batch().await {
                    Ok(_) => continue,
                    Err(e) => return e,
                }
            }
        })
        .await
        .expect("the stream went on after READ was denied");
        assert!(
            matches!(ended, quipu_client::ClientError::NotAuthorized(_)),
            "{ended:?}"
        );
    });
    server.signal("-TERM");
    assert!(server.wait().success());
}
