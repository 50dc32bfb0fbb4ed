//! The web console in a real browser (Debian's chromium, driven through chromedriver with the
//! WebDriver client fantoccini): on a running node, the cluster page shows the node, the topics
//! page a topic created through the CLI, its page the partitions' offsets, the browser its
//! records (as text, JSON and hex; a record's headers; from an offset and from a time), the
//! groups page a group's lag; and record bytes that look like HTML are shown as text, never
//! run.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Server, free_port};
use fantoccini::{Client, ClientBuilder, Locator};

fn tool(name: &str, package: &str) -> String {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8(o.stdout).unwrap().trim().to_owned())
        .unwrap_or_else(|| {
            panic!("{name} is missing: install Debian's {package} (scripts/test.sh does)")
        })
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the page's `selector` element's text contains `text`; returns that text.
async fn wait_text(browser: &Client, selector: &str, text: &str) -> String {
    let started = std::time::Instant::now();
    loop {
        let seen = match browser.find(Locator::Css(selector)).await {
            Ok(element) => element.text().await.ok(),
            Err(_) => None,
        };
        if let Some(seen) = seen {
            if seen.contains(text) {
                return seen;
            }
            assert!(
                started.elapsed() < common::PATIENCE,
                "{selector} never showed {text:?}: {seen}"
            );
        }
        assert!(
            started.elapsed() < common::PATIENCE,
            "{selector} never appeared (looking for {text:?}): {}",
            browser.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_cluster_topics_groups_and_records() {
    // fantoccini's HTTP client is built with rustls, which needs its provider named.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let chromium = tool("chromium", "chromium");
    let chromedriver = tool("chromedriver", "chromium-driver");
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
    let quipu = |args: &[&str], stdin: &[u8]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_quipu"))
            .args(args)
            .env("QUIPU_BOOTSTRAP", &api)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
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

    let port = free_port();
    let _driver = KillOnDrop(
        Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let webdriver = format!("http://127.0.0.1:{port}");
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        }),
    );
    let started = std::time::Instant::now();
    let browser = loop {
        match ClientBuilder::rustls()
            .unwrap()
            .capabilities(capabilities.clone())
            .connect(&webdriver)
            .await
        {
            Ok(browser) => break browser,
            Err(e) => {
                assert!(
                    started.elapsed() < common::PATIENCE,
                    "no WebDriver session: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let console = format!("http://{admin}/");

    // The cluster: this node, ready, leading the controller.
    browser.goto(&console).await.unwrap();
    wait_text(&browser, "main", "Controller leader: node 1").await;
    let nodes = wait_text(&browser, "main table", api.as_str()).await;
    assert!(nodes.contains(&kafka), "{nodes}");
    wait_text(&browser, "#node", "node 1").await;

    // Topics, then the topic created through the CLI and its offsets.
    browser
        .find(Locator::Id("nav-topics"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&browser, "main table", "orders").await;
    browser
        .find(Locator::LinkText("orders"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let partitions = wait_text(&browser, "main table", "node 1").await;
    assert!(
        partitions.contains("0 node 1 1 0 4 4 browse"),
        "{partitions}"
    );

    // Its records, as text.
    browser
        .find(Locator::Css("main table a[href^='#/browse/orders/0']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let records = wait_text(&browser, "main table", "{\"id\":1,\"item\":\"tea\"}").await;
    assert!(records.contains("k1"), "{records}");
    assert!(records.contains("source:\nweb"), "the header: {records}");
    // Bytes that look like HTML are text on the page, and nothing ran.
    assert!(records.contains("<img src=x onerror="), "{records}");
    assert!(browser.find(Locator::Css("main table img")).await.is_err());
    assert_ne!(browser.title().await.unwrap(), "pwned");

    // As JSON and as hex, from offset 3.
    browser
        .goto(&format!(
            "{console}#/browse/orders/0?from=offset&offset=3&limit=10&format=json"
        ))
        .await
        .unwrap();
    let json = wait_text(&browser, "main table", "\"item\": \"salt\"").await;
    assert!(!json.contains("tea"), "from offset 3 only: {json}");
    browser
        .goto(&format!(
            "{console}#/browse/orders/0?from=offset&offset=0&limit=1&format=hex"
        ))
        .await
        .unwrap();
    let hex = wait_text(&browser, "main table", "7b 22 69 64 22").await; // {"id"
    assert!(!hex.contains("rice"), "one record: {hex}");
    wait_text(&browser, "main", "next records").await;
    // From a time after every record: nothing.
    browser
        .goto(&format!(
            "{console}#/browse/orders/0?from=time&time=2999-01-01T00:00:00&limit=10&format=text"
        ))
        .await
        .unwrap();
    wait_text(&browser, "#no-records", "No records there.").await;
    let page = wait_text(&browser, "main", "No records there.").await;
    assert!(!page.contains("null"), "nothing absent is printed: {page}");
    // The browse form reads another partition.
    browser
        .goto(&format!("{console}#/browse/orders/0"))
        .await
        .unwrap();
    wait_text(&browser, "main table", "tea").await;
    browser
        .find(Locator::Css("select[name=partition] option[value='1']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .find(Locator::Css("form#browse button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&browser, "#no-records", "No records there.").await;

    // Consumer groups: the group's lag, whole and by partition.
    browser
        .find(Locator::Id("nav-groups"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let groups = wait_text(&browser, "main table", "billing").await;
    assert!(groups.contains("billing classic Empty 0"), "{groups}");
    let page = wait_text(&browser, "main", "Consumer groups").await;
    assert!(!page.contains("null"), "nothing absent is printed: {page}");
    browser
        .find(Locator::LinkText("billing"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let group = wait_text(&browser, "main table", "orders").await;
    assert!(
        group.contains("orders 0 1 3"),
        "committed 1, lag 3 on partition 0: {group}"
    );
    wait_text(&browser, "main", "lag 3").await;

    // An unknown topic says so.
    browser
        .goto(&format!("{console}#/topic/nothing"))
        .await
        .unwrap();
    wait_text(&browser, "#error", "nothing").await;
    browser.close().await.unwrap();
    server.signal("-TERM");
    assert!(server.wait().success());
}
