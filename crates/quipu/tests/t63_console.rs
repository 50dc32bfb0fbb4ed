//! The web console in a real browser (Debian's chromium, driven through chromedriver with the
//! WebDriver client fantoccini): on a running node, the cluster page shows the node, the topics
//! page a topic created through the CLI, its page the partitions' offsets, the browser its
//! records (as text, JSON and hex; a record's headers; from an offset and from a time), the
//! groups page a group's lag; and record bytes that look like HTML are shown as text, never
//! run.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::browser::Browser;
use common::{Server, free_port, tool};
use fantoccini::Locator;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_cluster_topics_groups_and_records() {
    let kcat = tool("kcat", "kcat");
    let dir = tempfile::tempdir().unwrap();
    let api = format!("127.0.0.1:{}", free_port());
    let kafka = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let server = Server::start(&[
        "--data-dir",
        dir.path().join("node").to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--api-listen",
        &api,
        "--kafka-listen",
        &kafka,
        "--admin-listen",
        &admin,
    ]);
    server.wait_for("quipu server ready");
    let run = |args: &[&str], stdin: &[u8]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_quipu"))
            .args(args)
            .env("QUIPU_BOOTSTRAP", &api)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    };
    let quipu = |args: &[&str], stdin: &[u8]| {
        let out = run(args, stdin);
        assert!(
            out.status.success(),
            "quipu {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    quipu(
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "2",
            "--replication-factor",
            "1",
        ],
        b"",
    );
    quipu(
        &["produce", "orders", "--partition", "0", "--key", "k1"],
        b"{\"id\":1,\"item\":\"tea\"}\n{\"id\":2,\"item\":\"rice\"}\n<img src=x onerror=\"document.title='pwned'\">\n",
    );
    let produced = Command::new(&kcat)
        .args([
            "-b",
            &kafka,
            "-P",
            "-t",
            "orders",
            "-p",
            "0",
            "-k",
            "k2",
            "-H",
            "source=web",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"{\"id\":3,\"item\":\"salt\"}")?;
            child.wait()
        })
        .unwrap();
    assert!(produced.success(), "kcat could not produce");
    quipu(
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

    let browser = Browser::start(false).await;
    let console = format!("http://{admin}/");

    // The cluster: this node, ready, leading the controller.
    browser.client.goto(&console).await.unwrap();
    browser.wait_text("main", "Controller leader: node 1").await;
    let nodes = browser.wait_text("main table", api.as_str()).await;
    assert!(nodes.contains(&kafka), "{nodes}");
    browser.wait_text("#node", "node 1").await;

    // Topics, then the topic created through the CLI and its offsets.
    browser
        .client
        .find(Locator::Id("nav-topics"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_text("main table", "orders").await;
    browser
        .client
        .find(Locator::LinkText("orders"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let partitions = browser.wait_text("main table", "node 1").await;
    assert!(
        partitions.contains("0 node 1 1 0 4 4 browse"),
        "{partitions}"
    );

    // Its records, as text.
    browser
        .client
        .find(Locator::Css("main table a[href^='#/browse/orders/0']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let records = browser
        .wait_text("main table", "{\"id\":1,\"item\":\"tea\"}")
        .await;
    assert!(records.contains("k1"), "{records}");
    assert!(records.contains("source:\nweb"), "the header: {records}");
    // Bytes that look like HTML are text on the page, and nothing ran.
    assert!(records.contains("<img src=x onerror="), "{records}");
    assert!(
        browser
            .client
            .find(Locator::Css("main table img"))
            .await
            .is_err()
    );
    assert_ne!(browser.client.title().await.unwrap(), "pwned");

    // As JSON and as hex, from offset 3.
    browser
        .client
        .goto(&format!(
            "{console}#/browse/orders/0?from=offset&offset=3&limit=10&format=json"
        ))
        .await
        .unwrap();
    let json = browser.wait_text("main table", "\"item\": \"salt\"").await;
    assert!(!json.contains("tea"), "from offset 3 only: {json}");
    browser
        .client
        .goto(&format!(
            "{console}#/browse/orders/0?from=offset&offset=0&limit=1&format=hex"
        ))
        .await
        .unwrap();
    let hex = browser.wait_text("main table", "7b 22 69 64 22").await; // {"id"
    assert!(!hex.contains("rice"), "one record: {hex}");
    browser.wait_text("main", "next records").await;
    // From a time after every record: nothing.
    browser
        .client
        .goto(&format!(
            "{console}#/browse/orders/0?from=time&time=2999-01-01T00:00:00&limit=10&format=text"
        ))
        .await
        .unwrap();
    browser.wait_text("#no-records", "No records there.").await;
    let page = browser.wait_text("main", "No records there.").await;
    assert!(!page.contains("null"), "nothing absent is printed: {page}");
    // The browse form reads another partition.
    browser
        .client
        .goto(&format!("{console}#/browse/orders/0"))
        .await
        .unwrap();
    browser.wait_text("main table", "tea").await;
    browser
        .client
        .find(Locator::Css("select[name=partition] option[value='1']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .client
        .find(Locator::Css("form#browse button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_text("#no-records", "No records there.").await;

    // Consumer groups: the group's lag, whole and by partition.
    browser
        .client
        .find(Locator::Id("nav-groups"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let groups = browser.wait_text("main table", "billing").await;
    assert!(groups.contains("billing classic Empty 0"), "{groups}");
    let page = browser.wait_text("main", "Consumer groups").await;
    assert!(!page.contains("null"), "nothing absent is printed: {page}");
    browser
        .client
        .find(Locator::LinkText("billing"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let group = browser.wait_text("main table", "orders").await;
    assert!(
        group.contains("orders 0 1 3"),
        "committed 1, lag 3 on partition 0: {group}"
    );
    browser.wait_text("main", "lag 3").await;

    // An unknown topic says so.
    browser
        .client
        .goto(&format!("{console}#/topic/nothing"))
        .await
        .unwrap();
    browser.wait_text("#error", "nothing").await;

    // Read-only by default: no sign-in on a plaintext admin listener, no forms, and the
    // action endpoints refuse.
    assert!(
        browser
            .client
            .find(Locator::Css("#nav-sign-in"))
            .await
            .is_err()
    );
    let session = browser
        .run("return fetch('/api/session').then((r) => r.json());")
        .await;
    assert_eq!(
        session,
        serde_json::json!({ "user": null, "sign_in": false, "actions": false })
    );
    let created = browser
        .run(
            "return fetch('/api/topics', { method: 'POST', headers: { 'content-type': 'application/json' }, \
             body: JSON.stringify({ name: 'sneaky', partitions: 1, replication_factor: 1 }) }) \
             .then(async (r) => [r.status, (await r.json()).error]);",
        )
        .await;
    assert_eq!(created[0], 403, "{created}");
    assert!(
        created[1].as_str().unwrap().contains("read-only"),
        "{created}"
    );
    let password = browser
        .run(
            "return fetch('/api/topics', { headers: { authorization: 'Basic ' + btoa('alice:s3cret') } }) \
             .then(async (r) => [r.status, (await r.json()).error]);",
        )
        .await;
    assert_eq!(password[0], 400, "{password}");
    assert!(
        password[1].as_str().unwrap().contains("[admin.tls]"),
        "{password}"
    );
    browser.client.close().await.unwrap();
    let described = run(&["topic", "describe", "sneaky"], b"");
    assert!(!described.status.success(), "sneaky was created");
    server.signal("-TERM");
    assert!(server.wait().success());
}
