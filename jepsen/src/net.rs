//! The test network: one network namespace per node and one for the clients, each joined by a veth
//! pair to a bridge in a switch namespace, on the private subnet 10.213.0.0/24. No namespace gets
//! a default route, and the root namespace never has an address on that subnet: nothing the test
//! sends can leave the machine. The root namespace never connects to a test address (with no
//! route, that traffic would leave the machine): everything that talks to the cluster runs in the
//! client namespace.
//!
//! Names are `qj-<pid>-<role>`, `<pid>` being the harness's. [`Net`]'s drop removes its namespaces
//! (killing what still runs in them); [`sweep`] removes those of harnesses that no longer run.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// The nftables table the partitions live in, in each namespace.
const TABLE: &str = "quipu_jepsen";

/// One end of the test network: a namespace with one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The namespace's name.
    pub ns: String,
    /// Its address on the test subnet.
    pub ip: Ipv4Addr,
}

/// The namespaces of one run.
#[derive(Debug)]
pub struct Net {
    switch: String,
    /// The nodes' hosts, node `i + 1` at index `i`.
    pub nodes: Vec<Host>,
    /// Where the workload runs.
    pub client: Host,
}

/// What this kernel and machine offer, probed at start; a missing mechanism is skipped with a
/// visible note.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Capabilities {
    /// nftables rules in a namespace (partitions).
    pub nftables: bool,
    /// libfaketime (clock skew).
    pub faketime: bool,
    /// `tc netem` (delays); not used when missing.
    pub netem: bool,
    /// Loop devices and `mkfs.ext4` (each node's own small file system, for disk-full faults).
    pub loop_disks: bool,
    /// Notes on what is missing and why.
    pub notes: Vec<String>,
}

/// Runs `program args…`, failing with its stderr.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `program args…` with `input` on its stdin.
fn run_with_input(program: &str, args: &[&str], input: &str) -> anyhow::Result<()> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    child
        .stdin
        .take()
        .context("no stdin")?
        .write_all(input.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `command` inside namespace `ns`.
fn in_namespace(ns: &str, command: &[&str]) -> anyhow::Result<String> {
    let mut args = vec!["netns", "exec", ns];
    args.extend_from_slice(command);
    run("ip", &args)
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    run("ip", args).map(|_| ())
}

impl Net {
    /// Creates the switch, `nodes` node namespaces and the client namespace.
    pub fn create(nodes: usize) -> anyhow::Result<Net> {
        if nodes == 0 || nodes > 9 {
            bail!("the test network has 1 to 9 nodes, not {nodes}");
        }
        let prefix = format!("qj-{}", std::process::id());
        let net = Net {
            switch: format!("{prefix}-sw"),
            nodes: (1..=9u8)
                .take(nodes)
                .map(|id| Host {
                    ns: format!("{prefix}-n{id}"),
                    ip: Ipv4Addr::new(10, 213, 0, 10 + id),
                })
                .collect(),
            client: Host {
                ns: format!("{prefix}-c"),
                ip: Ipv4Addr::new(10, 213, 0, 100),
            },
        };
        // From here on, a failure drops `net`, which removes what was made.
        ip(&["netns", "add", &net.switch])?;
        ip(&["-n", &net.switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &net.switch, "link", "set", "br0", "up"])?;
        for (i, host) in net.hosts().enumerate() {
            ip(&["netns", "add", &host.ns])?;
            let port = format!("p{i}");
            ip(&[
                "-n",
                &net.switch,
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &host.ns,
            ])?;
            ip(&["-n", &net.switch, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &net.switch, "link", "set", &port, "up"])?;
            ip(&[
                "-n",
                &host.ns,
                "addr",
                "add",
                &format!("{}/24", host.ip),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &host.ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &host.ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// Every host: the nodes, then the client.
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.nodes.iter().chain(std::iter::once(&self.client))
    }

    /// Probes the fault mechanisms in this run's client namespace.
    pub fn probe(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        match self.set_drops(&self.client, &BTreeSet::new()) {
            Ok(()) => caps.nftables = true,
            Err(e) => caps.notes.push(format!(
                "partitions skipped: nftables does not work here ({e}); install the Debian package nftables"
            )),
        }
        caps.faketime = faketime_library().is_some();
        if !caps.faketime {
            caps.notes.push(
                "clock skew skipped: libfaketime is missing; install the Debian package faketime"
                    .to_string(),
            );
        }
        let netem = [
            "tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay", "1ms",
        ];
        caps.netem = in_namespace(&self.client.ns, &netem).is_ok();
        if caps.netem {
            let _ = in_namespace(
                &self.client.ns,
                &["tc", "qdisc", "del", "dev", "eth0", "root"],
            );
        } else {
            caps.notes.push(
                "network delays skipped: tc netem is not available in this kernel".to_string(),
            );
        }
        caps.loop_disks =
            std::path::Path::new("/dev/loop-control").exists() && run("mkfs.ext4", &["-V"]).is_ok();
        if !caps.loop_disks {
            caps.notes.push(
                "disk-full faults skipped: loop devices or mkfs.ext4 are missing; install the Debian package e2fsprogs".to_string(),
            );
        }
        caps
    }

    /// Cuts the network as `drops` says: host index (nodes, then the client at `nodes.len()`) →
    /// the hosts whose packets it drops, both ways. Hosts not named drop nothing.
    pub fn partition(&self, drops: &BTreeMap<usize, BTreeSet<usize>>) -> anyhow::Result<()> {
        let hosts: Vec<&Host> = self.hosts().collect();
        for (i, host) in hosts.iter().enumerate() {
            let peers: BTreeSet<Ipv4Addr> = drops
                .get(&i)
                .into_iter()
                .flatten()
                .filter_map(|j| hosts.get(*j).map(|h| h.ip))
                .collect();
            self.set_drops(host, &peers)?;
        }
        Ok(())
    }

    /// Removes every partition.
    pub fn heal(&self) -> anyhow::Result<()> {
        self.partition(&BTreeMap::new())
    }

    /// Replaces `host`'s drop rules, atomically (one nft transaction).
    fn set_drops(&self, host: &Host, peers: &BTreeSet<Ipv4Addr>) -> anyhow::Result<()> {
        // Creating the table first makes the delete valid whether or not it existed.
        let mut rules = format!("table inet {TABLE}\ndelete table inet {TABLE}\n");
        if !peers.is_empty() {
            let set: Vec<String> = peers.iter().map(ToString::to_string).collect();
            let set = set.join(", ");
            rules.push_str(&format!(
                "table inet {TABLE} {{\n\
                 chain input {{ type filter hook input priority 0; policy accept; ip saddr {{ {set} }} drop; }}\n\
                 chain output {{ type filter hook output priority 0; policy accept; ip daddr {{ {set} }} drop; }}\n\
                 }}\n"
            ));
        }
        run_with_input("ip", &["netns", "exec", &host.ns, "nft", "-f", "-"], &rules)
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.hosts().map(|h| h.ns.clone()).collect();
        names.push(self.switch.clone());
        names
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for name in self.names() {
            remove_namespace(&name);
        }
    }
}

/// The shared object of libfaketime, if installed.
pub fn faketime_library() -> Option<std::path::PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.exists())
}

/// Kills every process in namespace `name` (all were started by a harness, inside it) and
/// deletes it. Errors are ignored: this is cleanup.
fn remove_namespace(name: &str) {
    if let Ok(pids) = run("ip", &["netns", "pids", name]) {
        for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
    let _ = run("ip", &["netns", "del", name]);
}

/// Removes the namespaces left by harnesses that no longer run (a crash, a SIGKILL). Returns
/// their names.
pub fn sweep() -> Vec<String> {
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for name in list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("qj-"))
    {
        let owner = name
            .split('-')
            .nth(1)
            .and_then(|pid| pid.parse::<u32>().ok());
        let alive = owner.is_some_and(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "quipu-jepsen")
        });
        if !alive {
            remove_namespace(name);
            removed.push(name.to_string());
        }
    }
    removed
}
