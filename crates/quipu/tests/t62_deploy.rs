//! `deploy/` without Docker or a cluster: the Dockerfile, the Compose file, the Kubernetes
//! manifests and the systemd unit parse; every `QUIPU_*` variable they set is one `quipu server`
//! reads; their ports agree with each other and with `deploy/quipu.toml`; the Kubernetes
//! ConfigMap is `deploy/quipu.toml` itself (`QUIPU_BLESS=1` regenerates it); and a node started
//! the way the StatefulSet starts one (its shell command, its variables, the ConfigMap's file;
//! loopback addresses in place of the pod's) takes its id from the pod ordinal and answers the
//! probes' paths on the probes' port.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy().join(path)).unwrap()
}

fn yaml(path: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The default port of each listener, from `deploy/quipu.toml`.
fn ports() -> BTreeMap<&'static str, u16> {
    let config: toml::Table = read("quipu.toml").parse().unwrap();
    let port = |key: &str| -> u16 {
        let addr = config[key].as_str().unwrap();
        addr.rsplit_once(':').unwrap().1.parse().unwrap()
    };
    BTreeMap::from([
        ("transport", port("listen_addr")),
        ("api", port("api_listen_addr")),
        ("kafka", port("kafka_listen_addr")),
        ("admin", port("admin_listen_addr")),
    ])
}

/// The environment variables `quipu server` reads (its `--help` lists each).
fn server_variables() -> BTreeSet<String> {
    let help = Command::new(env!("CARGO_BIN_EXE_quipu"))
        .args(["server", "--help"])
        .output()
        .unwrap();
    String::from_utf8(help.stdout)
        .unwrap()
        .split("[env: ")
        .skip(1)
        .map(|rest| rest.split('=').next().unwrap().to_owned())
        .collect()
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// The ConfigMap that carries `deploy/quipu.toml` to the pods, as it must read.
fn configmap() -> String {
    let mut text = String::from(
        "# Generated from deploy/quipu.toml by crates/quipu/tests/t62_deploy.rs\n\
         # (QUIPU_BLESS=1 cargo test -p quipu --test t62_deploy): do not edit. The StatefulSet's\n\
         # QUIPU_* variables override the node's id, addresses, voters and data directory.\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: quipu-config\n  \
         labels: {app.kubernetes.io/name: quipu}\ndata:\n  quipu.toml: |\n",
    );
    for line in read("quipu.toml").lines() {
        if line.is_empty() {
            text.push('\n');
        } else {
            text.push_str("    ");
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

#[test]
fn the_configmap_is_deploy_quipu_toml() {
    let path = deploy().join("kubernetes/configmap.yaml");
    if std::env::var_os("QUIPU_BLESS").is_some() {
        std::fs::write(&path, configmap()).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&path).unwrap_or_default(),
        configmap(),
        "deploy/kubernetes/configmap.yaml is stale: QUIPU_BLESS=1 cargo test -p quipu --test t62_deploy"
    );
    let docs = yaml("kubernetes/configmap.yaml");
    let embedded = docs[0]["data"]["quipu.toml"].as_str().unwrap();
    assert_eq!(embedded, read("quipu.toml"));
}

#[test]
fn the_image_compose_and_unit_agree_with_the_server() {
    let ports = ports();
    let variables = server_variables();
    // The Dockerfile: two stages, a non-root user, the listeners' ports.
    let dockerfile = read("docker/Dockerfile");
    let instructions: Vec<&str> = dockerfile
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with(' ') && !l.is_empty())
        .collect();
    assert_eq!(
        instructions
            .iter()
            .filter(|l| l.starts_with("FROM "))
            .count(),
        2
    );
    let user = instructions
        .iter()
        .find_map(|l| l.strip_prefix("USER "))
        .unwrap();
    assert!(
        !user.starts_with("0") && user != "root",
        "runs as root: {user}"
    );
    let exposed: BTreeSet<u16> = instructions
        .iter()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .unwrap()
        .split(' ')
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(exposed, ports.values().copied().collect());
    let env: Vec<(&str, &str)> = dockerfile
        .split("ENV ")
        .nth(1)
        .unwrap()
        .split("\nVOLUME")
        .next()
        .unwrap()
        .split('\\')
        .map(|pair| pair.trim().split_once('=').unwrap())
        .collect();
    for (name, value) in &env {
        assert!(
            variables.contains(*name),
            "the Dockerfile sets {name}, which quipu does not read"
        );
        if let Some(listener) = name
            .strip_prefix("QUIPU_")
            .and_then(|n| n.strip_suffix("LISTEN"))
        {
            let listener = match listener {
                "" => "transport",
                "API_" => "api",
                "KAFKA_" => "kafka",
                "ADMIN_" => "admin",
                other => panic!("{other}"),
            };
            assert_eq!(port_of(value), ports[listener], "{name}");
        }
    }
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/quipu\", \"server\"]"));
    assert!(dockerfile.contains("-p quipu"));

    // Compose: three nodes, each advertising the host ports it publishes.
    let compose = &yaml("docker/compose.yaml")[0];
    let services = compose["services"].as_hash().unwrap();
    assert_eq!(services.len(), 3);
    let mut voters = BTreeSet::new();
    for (id, (name, service)) in services.iter().enumerate() {
        let name = name.as_str().unwrap();
        let environment = service["environment"].as_hash().unwrap();
        let var = |key: &str| environment[&Yaml::String(key.into())].as_str().unwrap();
        for key in environment.keys() {
            let key = key.as_str().unwrap();
            assert!(
                variables.contains(key),
                "compose sets {key}, which quipu does not read"
            );
        }
        assert_eq!(var("QUIPU_NODE_ID"), (id + 1).to_string());
        assert_eq!(
            var("QUIPU_ADVERTISED"),
            format!("{name}:{}", ports["transport"])
        );
        voters.insert(var("QUIPU_VOTERS").to_owned());
        let published: BTreeMap<u16, u16> = service["ports"]
            .as_vec()
            .unwrap()
            .iter()
            .map(|p| {
                let (host, container) = p.as_str().unwrap().split_once(':').unwrap();
                (container.parse().unwrap(), host.parse().unwrap())
            })
            .collect();
        assert_eq!(
            published[&ports["kafka"]],
            port_of(var("QUIPU_KAFKA_ADVERTISED"))
        );
        assert_eq!(
            published[&ports["api"]],
            port_of(var("QUIPU_API_ADVERTISED"))
        );
        assert!(published.contains_key(&ports["admin"]));
        let volume = service["volumes"][0].as_str().unwrap();
        assert!(volume.ends_with(":/var/lib/quipu"), "{volume}");
        assert!(!compose["volumes"][volume.split(':').next().unwrap()].is_badvalue());
    }
    assert_eq!(
        voters.len(),
        1,
        "every node names the same voters: {voters:?}"
    );
    let voters = voters.into_iter().next().unwrap();
    let names: Vec<String> = services
        .keys()
        .enumerate()
        .map(|(i, n)| format!("{}@{}:{}", i + 1, n.as_str().unwrap(), ports["transport"]))
        .collect();
    assert_eq!(voters, names.join(","));

    // systemd: the unit runs the server with the canonical file, in its state directory.
    let unit = read("systemd/quipu.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    assert_eq!(
        exec,
        "/usr/local/bin/quipu server --config /etc/quipu/quipu.toml --data-dir /var/lib/quipu"
    );
    assert!(unit.contains("StateDirectory=quipu\n"));
    assert!(unit.contains("ReadWritePaths=/var/lib/quipu\n"));
    assert!(unit.contains("KillSignal=SIGTERM\n"));
}

#[test]
fn a_node_started_as_the_statefulset_starts_one_answers_its_probes() {
    let ports = ports();
    let variables = server_variables();
    let docs: Vec<Yaml> = ["statefulset.yaml", "service.yaml", "pdb.yaml"]
        .iter()
        .flat_map(|f| yaml(&format!("kubernetes/{f}")))
        .collect();
    let kustomization = &yaml("kubernetes/kustomization.yaml")[0];
    for resource in kustomization["resources"].as_vec().unwrap() {
        assert!(
            deploy()
                .join("kubernetes")
                .join(resource.as_str().unwrap())
                .exists()
        );
    }
    let kind = |k: &'static str| docs.iter().filter(move |d| d["kind"].as_str() == Some(k));
    let set = kind("StatefulSet").next().unwrap();
    let spec = &set["spec"];
    assert_eq!(spec["podManagementPolicy"].as_str(), Some("Parallel"));
    let headless = kind("Service")
        .find(|s| s["metadata"]["name"].as_str() == spec["serviceName"].as_str())
        .unwrap();
    assert_eq!(headless["spec"]["clusterIP"].as_str(), Some("None"));
    assert_eq!(
        headless["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true)
    );
    assert!(kind("PodDisruptionBudget").next().is_some());
    let claim = spec["volumeClaimTemplates"][0]["metadata"]["name"]
        .as_str()
        .unwrap();
    let container = &spec["template"]["spec"]["containers"][0];
    assert!(
        container["volumeMounts"]
            .as_vec()
            .unwrap()
            .iter()
            .any(|m| m["name"].as_str() == Some(claim)
                && m["mountPath"].as_str() == Some("/var/lib/quipu"))
    );
    // Named container ports: the listeners' ports; every Service port targets one of them.
    let container_ports: BTreeMap<String, u16> = container["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                u16::try_from(p["containerPort"].as_i64().unwrap()).unwrap(),
            )
        })
        .collect();
    for (name, port) in &ports {
        assert_eq!(
            container_ports.get(*name),
            Some(port),
            "container port {name}"
        );
    }
    for service in kind("Service") {
        for port in service["spec"]["ports"].as_vec().unwrap() {
            let target = port["targetPort"].as_str().unwrap();
            assert_eq!(
                i64::from(container_ports[target]),
                port["port"].as_i64().unwrap(),
                "{target}"
            );
        }
    }
    // The container's variables, with the pod's addresses replaced by loopback ones.
    let env: Vec<(String, String)> = container["env"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let local: BTreeMap<&str, u16> = ports.keys().map(|k| (*k, common::free_port())).collect();
    let mut vars = BTreeMap::new();
    for (name, value) in &env {
        assert!(
            variables.contains(name),
            "the StatefulSet sets {name}, which quipu does not read"
        );
        let value = if let Some(listener) = name.strip_prefix("QUIPU_").and_then(|n| {
            n.strip_suffix("LISTEN")
                .or_else(|| n.strip_suffix("ADVERTISED"))
        }) {
            let listener = match listener {
                "" => "transport",
                "API_" => "api",
                "KAFKA_" => "kafka",
                "ADMIN_" => "admin",
                other => panic!("{other}"),
            };
            assert_eq!(port_of(value), ports[listener], "{name}");
            format!("127.0.0.1:{}", local[listener])
        } else if name == "QUIPU_VOTERS" {
            // Three voters, pod i being node i + 1; here the pod is quipu-2, alone.
            assert!(value.starts_with("1@quipu-0.quipu.") && value.contains(",3@quipu-2.quipu."));
            format!("3@127.0.0.1:{}", local["transport"])
        } else if name == "QUIPU_DATA_DIR" {
            assert_eq!(value, "/var/lib/quipu");
            continue;
        } else {
            value.clone()
        };
        vars.insert(name.clone(), value);
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("quipu.toml");
    let docs = yaml("kubernetes/configmap.yaml");
    std::fs::write(&config, docs[0]["data"]["quipu.toml"].as_str().unwrap()).unwrap();
    let command: Vec<&str> = container["command"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(command, ["/bin/sh", "-c"]);
    let script = container["args"][0]
        .as_str()
        .unwrap()
        .replace("/usr/local/bin/quipu", env!("CARGO_BIN_EXE_quipu"))
        .replace("/etc/quipu/quipu.toml", config.to_str().unwrap());
    let mut node = Command::new(command[0]);
    node.args([command[1], &script])
        .envs(&vars)
        .env("QUIPU_DATA_DIR", dir.path().join("data"))
        .env("HOSTNAME", "quipu-2")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let child = node.spawn().unwrap();
    let _stop = KillOnDrop(child);
    let admin = format!("127.0.0.1:{}", local["admin"]);
    let probe = |name: &str| -> String {
        let probe = &container[name]["httpGet"];
        let port = probe["port"].as_str().unwrap();
        assert_eq!(container_ports[port], ports["admin"], "{name} port");
        probe["path"].as_str().unwrap().to_owned()
    };
    let (ready, alive, startup) = (
        probe("readinessProbe"),
        probe("livenessProbe"),
        probe("startupProbe"),
    );
    let started = std::time::Instant::now();
    loop {
        if std::net::TcpStream::connect(&admin).is_ok() {
            let (status, body) = common::get(&admin, &ready);
            if status == 200 {
                assert!(body.contains("\"node_id\":3"), "quipu-2 is node 3: {body}");
                break;
            }
        }
        assert!(
            started.elapsed() < common::PATIENCE,
            "the node never got ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(common::get(&admin, &alive).0, 200);
    assert_eq!(common::get(&admin, &startup).0, 200);
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
