//! The console's actions in a real browser, on a node with TLS on its admin listener and client
//! API, authorization on, and `admin.console_actions` on: an anonymous visitor sees nothing the
//! ACLs do not give it and no action; a wrong password is refused; alice, signed in, sees what
//! her ACLs allow, creates a topic her ACLs allow (and not one they do not), and resets a
//! group's offsets; bob, without those ACLs, is refused the same actions. The CLI, as the
//! superuser, sees the topic and the offsets the console made.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::browser::Browser;
use common::{Server, free_port};
use fantoccini::Locator;
use quipu_tls::dev::{DevCa, Validity, write};

/// `quipu COMMAND --tls-ca CA <admin's certificate> ARGS...` as the superuser.
fn quipu(bootstrap: &str, ca: &Path, admin: &[PathBuf; 2], args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_quipu"))
        .arg(args[0])
        .arg("--tls-ca")
        .arg(ca)
        .arg("--tls-cert")
        .arg(&admin[0])
        .arg("--tls-key")
        .arg(&admin[1])
        .args(&args[1..])
        .env("QUIPU_BOOTSTRAP", bootstrap)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_user_acts_in_the_console_as_the_acls_allow() {
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
    let admin_id = [admin_cert, admin_key];
    let config = dir.path().join("quipu.toml");
    let quoted = |p: &Path| format!("{:?}", p.display().to_string());
    std::fs::write(
        &config,
        format!(
            "[api.tls]\ncert_file = {c}\nkey_file = {k}\nca_file = {a}\nclient_auth = \"requested\"\n\n\
             [authorization]\nenabled = true\nsuper_users = [\"User:CN=admin\"]\n\n\
             [admin]\nconsole_actions = true\n\n\
             [admin.tls]\ncert_file = {c}\nkey_file = {k}\n",
            c = quoted(&cert),
            k = quoted(&key),
            a = quoted(&ca_file)
        ),
    )
    .unwrap();
    let api = format!("127.0.0.1:{}", free_port());
    let admin_addr = format!("127.0.0.1:{}", free_port());
    let server = Server::start(&[
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--api-listen",
        &api,
        "--kafka-listen",
        "127.0.0.1:0",
        "--admin-listen",
        &admin_addr,
    ]);
    server.wait_for("quipu server ready");
    let ok = |args: &[&str], stdin: &[u8]| {
        let out = quipu(&api, &ca_file, &admin_id, args, stdin);
        assert!(
            out.status.success(),
            "quipu {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // As the superuser: a topic with records, a group that committed offset 1, two users,
    // and alice's ACLs.
    ok(
        &["topic", "create", "orders", "--replication-factor", "1"],
        b"",
    );
    ok(&["produce", "orders", "--partition", "0"], b"a\nb\nc\n");
    ok(
        &[
            "group",
            "reset-offsets",
            "billing",
            "--topic",
            "orders",
            "--to-offset",
            "1",
            "--execute",
        ],
        b"",
    );
    ok(&["user", "create", "alice"], b"alice-pw\n");
    ok(&["user", "create", "bob"], b"bob-pw\n");
    let allow = |principal: &str, operation: &str, resource: &[&str]| {
        let mut args = vec![
            "acl",
            "create",
            "--principal",
            principal,
            "--operation",
            operation,
        ];
        args.extend_from_slice(resource);
        ok(&args, b"");
    };
    allow("User:alice", "describe", &["--topic", "*"]);
    allow("User:alice", "create", &["--topic", "pay", "--prefixed"]);
    allow("User:alice", "read", &["--topic", "orders"]);
    allow("User:alice", "read", &["--group", "billing"]);
    allow("User:alice", "describe", &["--group", "billing"]);
    allow("User:bob", "describe", &["--topic", "*"]);

    let browser = Browser::start(true).await;
    let console = format!("https://{admin_addr}/");

    // Anonymous: no topic is visible (deny by default), no form; a sign-in link.
    browser
        .client
        .goto(&format!("{console}#/topics"))
        .await
        .unwrap();
    browser.wait_text("main", "No topics yet.").await;
    assert!(
        browser
            .client
            .find(Locator::Css("#create-topic"))
            .await
            .is_err()
    );
    browser.wait_text("#mode", "Read-only.").await;

    // A wrong password is refused.
    browser.click(Locator::Id("nav-sign-in")).await;
    browser.fill("#sign-in input[name=user]", "alice").await;
    browser.fill("#sign-in input[name=password]", "guess").await;
    browser.click(Locator::Css("#sign-in button")).await;
    browser
        .wait_text("#sign-in-error", "not authenticated")
        .await;

    // Alice signs in, sees the topic, and may create a pay… topic, not another.
    browser
        .fill("#sign-in input[name=password]", "alice-pw")
        .await;
    browser.click(Locator::Css("#sign-in button")).await;
    browser.wait_text("#who", "signed in as alice").await;
    browser.wait_text("#mode", "as the ACLs permit").await;
    browser.click(Locator::Id("nav-topics")).await;
    browser.wait_text("main table", "orders").await;
    browser
        .fill("#create-topic input[name=name]", "payments")
        .await;
    browser
        .fill("#create-topic input[name=partitions]", "3")
        .await;
    browser.click(Locator::Css("#create-topic button")).await;
    browser.wait_text("#done", "Created topic payments.").await;
    browser.wait_text("main table", "payments").await;
    browser
        .fill("#create-topic input[name=name]", "secrets")
        .await;
    browser.click(Locator::Css("#create-topic button")).await;
    browser
        .wait_text("#create-topic-error", "not authorized")
        .await;
    let described = ok(&["topic", "describe", "payments"], b"");
    assert!(described.contains("payments"), "{described}");
    let listed = ok(&["topic", "list"], b"");
    assert!(!listed.contains("secrets"), "{listed}");

    // Her group: committed 1 of 3, reset to the earliest offset.
    browser.click(Locator::Id("nav-groups")).await;
    browser.click(Locator::LinkText("billing")).await;
    let offsets = browser.wait_text("main table", "orders").await;
    assert!(offsets.contains("orders 0 1 2"), "{offsets}");
    browser
        .click(Locator::Css(
            "#reset-offsets select[name=to] option[value=earliest]",
        ))
        .await;
    browser.click(Locator::Css("#reset-offsets button")).await;
    browser.wait_text("#done", "partition 0 to 0").await;
    browser.wait_text("main table", "orders 0 0 3").await;
    let group = ok(&["group", "describe", "billing"], b"");
    let row: Vec<&str> = group
        .lines()
        .find(|l| l.starts_with("orders "))
        .unwrap_or_else(|| panic!("no orders row: {group}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[..5], ["orders", "0", "0", "3", "3"], "{group}");

    // Bob: sees topics, not alice's group, and may create nothing.
    browser.click(Locator::Id("sign-out")).await;
    browser.wait_text("#who", "Sign in").await;
    browser.click(Locator::Id("nav-sign-in")).await;
    browser.fill("#sign-in input[name=user]", "bob").await;
    browser
        .fill("#sign-in input[name=password]", "bob-pw")
        .await;
    browser.click(Locator::Css("#sign-in button")).await;
    browser.wait_text("#who", "signed in as bob").await;
    browser.click(Locator::Id("nav-groups")).await;
    browser.wait_text("main", "No consumer groups yet.").await;
    browser.click(Locator::Id("nav-topics")).await;
    browser.wait_text("main table", "payments").await;
    browser
        .fill("#create-topic input[name=name]", "pay-bob")
        .await;
    browser.click(Locator::Css("#create-topic button")).await;
    browser
        .wait_text("#create-topic-error", "not authorized")
        .await;
    let reset = browser
        .run(
            "return fetch('/api/groups/billing/offsets', { method: 'POST', headers: { \
             'content-type': 'application/json', authorization: 'Basic ' + btoa('bob:bob-pw') }, \
             body: JSON.stringify({ topic: 'orders', to: 'latest' }) }).then((r) => r.status);",
        )
        .await;
    assert_eq!(reset, 403, "bob may not reset billing's offsets");

    browser.client.close().await.unwrap();
    server.signal("-TERM");
    assert!(server.wait().success());
}
