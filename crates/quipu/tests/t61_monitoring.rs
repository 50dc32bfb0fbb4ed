//! `deploy/prometheus` and `deploy/grafana` against the real tools (Debian's `prometheus`
//! package: `promtool` and the server) and a running `quipu dev` cluster: the alert rules pass
//! their unit tests (`alerts.test.yml`); every metric the rules and the dashboard use is
//! documented in `docs/operations/metrics.md`; a live scrape passes promtool's lint of metric
//! names; and a Prometheus scraping the three nodes evaluates every dashboard query and every
//! rule without error, finds the cluster's series, and fires no alert on a healthy cluster.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{Dev, free_port, get};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `quipu_*` metric name in `text`, without a histogram's `_bucket`/`_count`/`_sum`.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("quipu_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.insert(base.to_owned());
        rest = &tail[end..];
    }
    names
}

/// The expressions of every panel and template variable of the dashboard.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push((
                panel["title"].as_str().unwrap().to_owned(),
                target["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    queries
}

/// A query of the dashboard as Grafana would send it with every variable at "All".
fn as_grafana_sends_it(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$instance", ".*")
        .replace("$topic", ".*")
        .replace("$group", ".*")
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server, stopped on drop.
struct Prometheus {
    child: Child,
    addr: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// The `data` of an API answer, which must be a success.
    fn api(&self, path: &str) -> serde_json::Value {
        let (status, body) = get(&self.addr, path);
        let answer: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {status} {e}: {body}"));
        assert_eq!(answer["status"], "success", "{path}: {body}");
        answer["data"].clone()
    }

    fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        self.api(&format!("/api/v1/query?query={}", url_encode(expr)))["result"]
            .as_array()
            .unwrap()
            .clone()
    }
}

#[test]
fn alert_rules_and_the_dashboard_work_on_a_live_cluster() {
    let promtool = common::tool("promtool", "prometheus");
    let prometheus = common::tool("prometheus", "prometheus");
    let deploy = repo().join("deploy");
    let rules = deploy.join("prometheus/alerts.yml");
    for args in [
        vec!["check", "rules", rules.to_str().unwrap()],
        vec!["test", "rules", "alerts.test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(deploy.join("prometheus"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Every metric the rules and the dashboard name is one the documentation lists.
    let documented = std::fs::read_to_string(repo().join("docs/operations/metrics.md")).unwrap();
    let dashboard_text = std::fs::read_to_string(deploy.join("grafana/quipu.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard_text).unwrap();
    let used = metric_names(&std::fs::read_to_string(&rules).unwrap())
        .into_iter()
        .chain(metric_names(&dashboard_text));
    for name in used {
        assert!(
            documented.contains(&format!("`{name}`")) || documented.contains(&format!("`{name}{{")),
            "{name} is used by deploy/ but not in docs/operations/metrics.md"
        );
    }

    // A cluster with a topic, records and a consumer group.
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(&dir.path().join("dev"), &[]);
    let admins: Vec<String> = dev
        .banner
        .iter()
        .filter_map(|line| {
            let url = line.split("metrics http://").nth(1)?;
            Some(url.split('/').next()?.to_owned())
        })
        .collect();
    assert_eq!(admins.len(), 3, "{:?}", dev.banner);
    let started = std::time::Instant::now();
    while !dev.quipu(&["cluster", "health"], None).status.success() {
        assert!(
            started.elapsed() < common::PATIENCE,
            "the cluster never got ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    dev.ok(&["topic", "create", "events", "--partitions", "3"], None);
    let lines: String = (0..200).map(|i| format!("e-{i}\n")).collect();
    dev.ok(&["produce", "events"], Some(lines.as_bytes()));
    dev.ok(
        &[
            "group",
            "reset-offsets",
            "billing",
            "--topic",
            "events",
            "--to-earliest",
            "--execute",
        ],
        None,
    );

    // promtool's lint of a live scrape: names, units, `_total` on counters, help text.
    let (status, scrape) = get(&admins[0], "/metrics");
    assert_eq!(status, 200);
    let mut lint = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        lint.stdin
            .take()
            .unwrap()
            .write_all(scrape.as_bytes())
            .unwrap();
    }
    let out = lint.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Prometheus scraping the three nodes every second, with the alert rules.
    let config = dir.path().join("prometheus.yml");
    let targets: Vec<String> = admins.iter().map(|a| format!("'{a}'")).collect();
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - '{}'\n\
             scrape_configs:\n  - job_name: quipu\n    static_configs:\n      - targets: [{}]\n",
            rules.display(),
            targets.join(", ")
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let server = Prometheus {
        child: Command::new(&prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        addr,
    };
    // Up, and with enough samples of the cluster for rates (a few scrapes).
    let started = std::time::Instant::now();
    loop {
        let ready = std::net::TcpStream::connect(&server.addr).is_ok()
            && server
                .query("count_over_time(quipu_node_ready[1m])")
                .iter()
                .filter(|s| s["value"][1].as_str().unwrap().parse::<f64>().unwrap() >= 4.0)
                .count()
                == 3
            && !server
                .query("quipu_group_lag{group=\"billing\"}")
                .is_empty();
        if ready {
            break;
        }
        assert!(
            started.elapsed() < common::PATIENCE * 2,
            "Prometheus never scraped the cluster"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    // Every panel's query is valid PromQL; the ones about what the cluster has now show it.
    let must_show = [
        "Nodes ready",
        "Nodes scraped",
        "fsyncs/s",
        "Disk free",
        "Log size by topic",
        "Replicas",
        "High watermark",
        "Lag by group",
        "Members",
        "Groups by state",
        "Lag by partition",
        "gRPC calls/s",
    ];
    for (title, expr) in dashboard_queries(&dashboard) {
        let result = server.query(&as_grafana_sends_it(&expr));
        if must_show.contains(&title.as_str()) {
            assert!(!result.is_empty(), "panel {title:?} shows nothing: {expr}");
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        let Some(query) = variable["definition"].as_str() else {
            continue;
        };
        // label_values(metric, label): the series of metric carry label.
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap();
        let (metric, label) = inner.split_once(", ").unwrap();
        let values = server.api(&format!(
            "/api/v1/label/{label}/values?match[]={}",
            url_encode(metric)
        ));
        assert!(
            !values.as_array().unwrap().is_empty(),
            "variable {query} has no values"
        );
    }
    let total = server.query(
        "sum(quipu_group_lag{group=\"billing\"}) / count(quipu_group_lag{group=\"billing\"})",
    );
    assert_eq!(
        total[0]["value"][1], "200",
        "every node reports the same lag: {total:?}"
    );
    // The rules evaluate, and none fires on a healthy cluster.
    let started = std::time::Instant::now();
    loop {
        let groups = server.api("/api/v1/rules");
        let rules: Vec<&serde_json::Value> = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .collect();
        assert_eq!(rules.len(), 12);
        if rules.iter().all(|r| r["health"] == "ok") {
            let firing: Vec<_> = rules.iter().filter(|r| r["state"] == "firing").collect();
            assert!(
                firing.is_empty(),
                "alerts firing on a healthy cluster: {firing:?}"
            );
            break;
        }
        assert!(
            started.elapsed() < common::PATIENCE,
            "rules not evaluated: {groups}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}
