//! A headless browser for the console tests: Debian's chromium, driven through chromedriver
//! with the WebDriver client fantoccini. Both are stopped when the [`Browser`] is dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A WebDriver session with a headless chromium.
pub struct Browser {
    pub client: Client,
    _driver: KillOnDrop,
}

impl Browser {
    /// Starts chromedriver and a session; `insecure`: accept any TLS certificate (a test's
    /// throwaway CA, which chromium does not know).
    pub async fn start(insecure: bool) -> Browser {
        // fantoccini's HTTP client is built with rustls, which needs its provider named.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let chromium = super::tool("chromium", "chromium");
        let chromedriver = super::tool("chromedriver", "chromium-driver");
        let port = super::free_port();
        let driver = KillOnDrop(
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
        if insecure {
            capabilities.insert("acceptInsecureCerts".to_owned(), true.into());
        }
        let started = std::time::Instant::now();
        let client = loop {
            match ClientBuilder::rustls()
                .unwrap()
                .capabilities(capabilities.clone())
                .connect(&webdriver)
                .await
            {
                Ok(client) => break client,
                Err(e) => {
                    assert!(
                        started.elapsed() < super::PATIENCE,
                        "no WebDriver session: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        Browser {
            client,
            _driver: driver,
        }
    }

    /// Waits until the page's `selector` element's text contains `text`; returns that text.
    pub async fn wait_text(&self, selector: &str, text: &str) -> String {
        let started = std::time::Instant::now();
        loop {
            let seen = match self.client.find(Locator::Css(selector)).await {
                Ok(element) => element.text().await.ok(),
                Err(_) => None,
            };
            if let Some(seen) = seen {
                if seen.contains(text) {
                    return seen;
                }
                assert!(
                    started.elapsed() < super::PATIENCE,
                    "{selector} never showed {text:?}: {seen}"
                );
            }
            assert!(
                started.elapsed() < super::PATIENCE,
                "{selector} never appeared (looking for {text:?}): {}",
                self.client.source().await.unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The element `locator` finds, once the page shows it (pages render after their fetches).
    pub async fn wait_for(&self, locator: Locator<'_>) -> fantoccini::elements::Element {
        let started = std::time::Instant::now();
        loop {
            match self.client.find(locator).await {
                Ok(element) => return element,
                Err(e) => assert!(
                    started.elapsed() < super::PATIENCE,
                    "{locator:?} never appeared: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks the element `locator` finds, once there.
    pub async fn click(&self, locator: Locator<'_>) {
        self.wait_for(locator).await.click().await.unwrap();
    }

    /// Replaces the text of the input `css` finds, once there, with `text`.
    pub async fn fill(&self, css: &str, text: &str) {
        let input = self.wait_for(Locator::Css(css)).await;
        input.clear().await.unwrap();
        input.send_keys(text).await.unwrap();
    }

    /// Runs `script` (a function body) in the page and returns what it returns, a promise's
    /// value once it settles.
    pub async fn run(&self, script: &str) -> serde_json::Value {
        self.client.execute(script, Vec::new()).await.unwrap()
    }
}
