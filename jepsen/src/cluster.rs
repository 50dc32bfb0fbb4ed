//! The cluster under test: one `quipu server` process per node, each started in its node's
//! network namespace (`ip netns exec`, which execs the server: the child's pid is the server's),
//! with its own configuration file, data directory and log file under the run's directory.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustix::process::{Pid, Signal, kill_process};

use crate::net::{Host, Net, faketime_library};

/// Raft transport port of every node (each has its own address).
pub const RAFT_PORT: u16 = 7001;
/// Client API port of every node.
pub const API_PORT: u16 = 7101;
/// Segments are small so that a run has sealed segments to corrupt.
const SEGMENT_BYTES: u64 = 64 << 10;
/// Largest Raft entry (a record batch and its framing); must fit a segment.
const ENTRY_BYTES: u64 = 32 << 10;
/// Size of each node's own file system (an ext4 image on a loop device) in runs with
/// disk-full faults: room for a run's data and a ballast.
const DISK_BYTES: u64 = 256 << 20;
/// The free space every node keeps (`disk_reserve_bytes`): below it, it refuses produce.
pub const DISK_RESERVE: u64 = 16 << 20;

/// One node.
#[derive(Debug)]
pub struct Node {
    /// Its node id (1-based).
    pub id: u64,
    /// Its namespace and address.
    pub host: Host,
    /// Where its configuration, data and log live.
    pub dir: PathBuf,
    child: Option<Child>,
    /// Stopped with SIGSTOP.
    pub paused: bool,
    /// Clock offset in seconds applied by libfaketime at the next start (`None`: the real clock).
    pub skew_secs: Option<i64>,
    /// Started and not stopped since: if it is not running, it exited by itself.
    wanted: bool,
    /// Its data directory is its own file system (`disk.img`, loop-mounted).
    mounted: bool,
}

impl Node {
    /// The node's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The ballast file that fills its disk in a disk-full fault.
    fn ballast(&self) -> PathBuf {
        self.data_dir().join("ballast")
    }

    /// Its client API address.
    pub fn api_addr(&self) -> String {
        format!("{}:{API_PORT}", self.host.ip)
    }

    fn pid(&self) -> Option<Pid> {
        let child = self.child.as_ref()?;
        Pid::from_raw(i32::try_from(child.id()).ok()?)
    }

    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill_process(pid, signal);
        }
    }

    /// Whether the node was started and not stopped since.
    pub fn expected_running(&self) -> bool {
        self.wanted
    }

    /// Notes that the node's exit has been seen (it is not reported twice).
    pub fn forget_exit(&mut self) {
        self.wanted = false;
    }

    /// Whether the process runs (a paused one counts); reaps it if it exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// The last line of the node's log, to say why it exited.
    pub fn last_log_line(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log"))
            .ok()
            .and_then(|log| log.lines().last().map(str::to_string))
            .unwrap_or_default()
    }

    /// Waits up to `patience` for the process to exit; returns its exit status text.
    fn wait_exit(&mut self, patience: Duration) -> Option<String> {
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            match self.child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => {
                    self.child = None;
                    return Some(status.to_string());
                }
                Some(Ok(None)) => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    self.child = None;
                    return Some("gone".to_string());
                }
            }
        }
        None
    }
}

/// Node `id`'s configuration file; `membership` is its `voters = [...]` or `join = "..."` line.
/// Odd ids share syncs across their logs (`sync_scope = "filesystem"`), even ids sync each log's
/// own files, so that every fault meets both.
fn config_text(id: u64, dir: &Path, host: &Host, membership: &str) -> String {
    let sync_scope = if id % 2 == 1 { "filesystem" } else { "file" };
    format!(
        "# Written by quipu-jepsen for node {id}.\n\
         node_id = {id}\n\
         data_dir = \"{data}\"\n\
         listen_addr = \"{ip}:{RAFT_PORT}\"\n\
         api_listen_addr = \"{ip}:{API_PORT}\"\n\
         {membership}\n\
         \n\
         [log]\n\
         segment_bytes_max = {SEGMENT_BYTES}\n\
         entry_bytes_max = {ENTRY_BYTES}\n\
         index_bytes_max = {SEGMENT_BYTES}\n\
         preallocate_bytes = {SEGMENT_BYTES}\n\
         fsync = \"always\"\n\
         sync_scope = \"{sync_scope}\"\n\
         \n\
         [limits]\n\
         disk_reserve_bytes = {DISK_RESERVE}\n\
         \n\
         [groups]\n\
         offsets_partitions = 4\n\
         consumer_session_timeout_ms = 3000\n\
         consumer_heartbeat_interval_ms = 300\n",
        data = dir.join("data").display(),
        ip = host.ip,
    )
}

/// All nodes of the run.
#[derive(Debug)]
pub struct Cluster {
    /// Node slot `i` (first node id `i + 1`; a replaced node gets a new id in the same slot).
    pub nodes: Vec<Node>,
    quipu: PathBuf,
    /// The client namespace, where admin commands run.
    client_ns: String,
    /// With TLS: the run's CA, and where its certificate and the clients' are.
    tls: Option<RunTls>,
}

/// A run with TLS everywhere: a CA made for it, which issues each node's certificate (also for
/// the fresh ids of replaced nodes) and the clients' one.
#[derive(Debug)]
struct RunTls {
    ca: quipu_tls::dev::DevCa,
    dir: PathBuf,
}

impl RunTls {
    fn new(root: &Path) -> anyhow::Result<RunTls> {
        let dir = root.join("tls");
        std::fs::create_dir_all(&dir)?;
        let ca = quipu_tls::dev::DevCa::new()?;
        quipu_tls::dev::write(&dir.join("ca.pem"), &ca.cert_pem(), false)?;
        let client = ca.issue(
            "jepsen-client",
            &["jepsen-client".to_owned()],
            quipu_tls::dev::Validity::Current,
        )?;
        quipu_tls::dev::write(&dir.join("client.pem"), &client.cert_pem, false)?;
        quipu_tls::dev::write(&dir.join("client.key"), &client.key_pem, true)?;
        Ok(RunTls { ca, dir })
    }

    /// Issues node `id`'s certificate (for its address) into its directory; returns the
    /// configuration tables that use it.
    fn node_tables(&self, id: u64, dir: &Path, host: &Host) -> anyhow::Result<String> {
        let issued = self.ca.issue_node(id, &[&host.ip.to_string()])?;
        let (cert, key) = (dir.join("node.pem"), dir.join("node.key"));
        quipu_tls::dev::write(&cert, &issued.cert_pem, false)?;
        quipu_tls::dev::write(&key, &issued.key_pem, true)?;
        let files = format!(
            "cert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\n",
            cert.display(),
            key.display(),
            self.dir.join("ca.pem").display()
        );
        Ok(format!(
            "\n[transport.tls]\n{files}\n[api.tls]\n{files}client_auth = \"required\"\n"
        ))
    }

    /// The client's CA and certificate files, as (ca, cert, key).
    fn client_files(&self) -> [PathBuf; 3] {
        [
            self.dir.join("ca.pem"),
            self.dir.join("client.pem"),
            self.dir.join("client.key"),
        ]
    }
}

impl Cluster {
    /// Writes every node's configuration under `root`; starts nothing. With `own_disks`, each
    /// node's data directory is its own small ext4 file system (`n<id>/disk.img` on a loop
    /// device), which disk-full faults fill.
    pub fn new(
        net: &Net,
        quipu: &Path,
        root: &Path,
        own_disks: bool,
        tls: bool,
    ) -> anyhow::Result<Cluster> {
        let tls = tls.then(|| RunTls::new(root)).transpose()?;
        let voters: Vec<String> = net
            .nodes
            .iter()
            .enumerate()
            .map(|(i, h)| format!("\"{}@{}:{RAFT_PORT}\"", i + 1, h.ip))
            .collect();
        let mut nodes = Vec::new();
        for (i, host) in net.nodes.iter().enumerate() {
            let id = i as u64 + 1;
            let dir = root.join(format!("n{id}"));
            std::fs::create_dir_all(&dir)?;
            let mut config =
                config_text(id, &dir, host, &format!("voters = [{}]", voters.join(", ")));
            if let Some(tls) = &tls {
                config.push_str(&tls.node_tables(id, &dir, host)?);
            }
            std::fs::write(dir.join("quipu.toml"), config)?;
            nodes.push(Node {
                id,
                host: host.clone(),
                dir,
                child: None,
                paused: false,
                skew_secs: None,
                wanted: false,
                mounted: false,
            });
        }
        let mut cluster = Cluster {
            nodes,
            quipu: quipu.to_path_buf(),
            client_ns: net.client.ns.clone(),
            tls,
        };
        if own_disks {
            for node in &mut cluster.nodes {
                mount_own_disk(node)?;
            }
        }
        Ok(cluster)
    }

    /// Fills node index `i`'s disk with a ballast file until at most `left` bytes are free
    /// (or the disk is full); returns the free bytes then.
    pub fn fill_disk(&self, i: usize, left: u64) -> anyhow::Result<u64> {
        let node = &self.nodes[i];
        if !node.mounted {
            bail!("node {} has no disk of its own to fill", node.id);
        }
        let data = node.data_dir();
        let free = free_bytes(&data)?;
        let mut ballast = OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.ballast())?;
        let chunk = vec![0x5A_u8; 1 << 20];
        let mut to_write = free.saturating_sub(left);
        while to_write > 0 {
            let n = usize::try_from(to_write.min(chunk.len() as u64)).unwrap_or(chunk.len());
            if std::io::Write::write_all(&mut ballast, &chunk[..n]).is_err() {
                break; // full: the ballast took what there was
            }
            to_write -= n as u64;
        }
        let _ = ballast.sync_all();
        free_bytes(&data)
    }

    /// Removes node index `i`'s ballast: its disk has its space back.
    pub fn empty_disk(&self, i: usize) -> anyhow::Result<()> {
        match std::fs::remove_file(self.nodes[i].ballast()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Runs `quipu ARGS` in the client namespace against the cluster (never from this
    /// namespace: its addresses are unreachable from here by design); returns standard output.
    pub fn admin(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.client_ns])
            .arg(&self.quipu)
            .args(args)
            .env("QUIPU_BOOTSTRAP", self.api_addrs().join(","))
            .stdin(Stdio::null());
        if let Some(tls) = &self.tls {
            let [ca, cert, key] = tls.client_files();
            command
                .env("QUIPU_TLS_CA", ca)
                .env("QUIPU_TLS_CERT", cert)
                .env("QUIPU_TLS_KEY", key);
        }
        let output = command
            .output()
            .context("cannot run quipu in the client namespace")?;
        if !output.status.success() {
            bail!(
                "quipu {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Replaces the node in slot `i` (stopped, removed from the cluster) by a fresh one: a new
    /// id, an empty data directory, joining through another slot's node. Not started.
    pub fn replace(&mut self, i: usize, new_id: u64) -> anyhow::Result<()> {
        let seed = (i + 1) % self.nodes.len();
        let seed_addr = format!("{}:{RAFT_PORT}", self.nodes[seed].host.ip);
        let node = &mut self.nodes[i];
        let data = node.data_dir();
        // Only the contents: an own disk stays mounted there.
        if data.exists() {
            for entry in std::fs::read_dir(&data)? {
                let path = entry?.path();
                if path.is_dir() {
                    std::fs::remove_dir_all(&path)?;
                } else {
                    std::fs::remove_file(&path)?;
                }
            }
        }
        let mut config = config_text(
            new_id,
            &node.dir,
            &node.host,
            &format!("join = \"{seed_addr}\""),
        );
        if let Some(tls) = &self.tls {
            config.push_str(&tls.node_tables(new_id, &node.dir, &node.host)?);
        }
        std::fs::write(node.dir.join("quipu.toml"), config)?;
        node.id = new_id;
        Ok(())
    }

    /// The workload's TLS flags (none without TLS).
    pub fn client_tls_args(&self) -> Vec<std::ffi::OsString> {
        let Some(tls) = &self.tls else {
            return Vec::new();
        };
        let [ca, cert, key] = tls.client_files();
        vec![
            "--tls-ca".into(),
            ca.into_os_string(),
            "--tls-cert".into(),
            cert.into_os_string(),
            "--tls-key".into(),
            key.into_os_string(),
        ]
    }

    /// Every node's API address.
    pub fn api_addrs(&self) -> Vec<String> {
        self.nodes.iter().map(Node::api_addr).collect()
    }

    /// Starts node index `i` (no-op if it runs). Its output goes to `n<id>/node.log`.
    pub fn start(&mut self, i: usize) -> anyhow::Result<()> {
        let quipu = self.quipu.clone();
        let node = &mut self.nodes[i];
        if node.is_running() {
            return Ok(());
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("node.log"))?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &node.host.ns])
            .arg(&quipu)
            .arg("server")
            .arg("--config")
            .arg(node.dir.join("quipu.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(secs) = node.skew_secs {
            let library = faketime_library().context("clock skew needs libfaketime")?;
            command
                .env("LD_PRELOAD", library)
                .env("FAKETIME", format!("{secs:+}s"))
                // Timers and timeouts keep the real monotonic clock; the wall clock is skewed.
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", quipu.display()))?;
        node.child = Some(child);
        node.paused = false;
        node.wanted = true;
        Ok(())
    }

    /// SIGKILLs node index `i` and reaps it.
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.wanted = false;
        node.signal(Signal::KILL);
        node.wait_exit(Duration::from_secs(10));
        node.paused = false;
    }

    /// SIGSTOPs node index `i`.
    pub fn pause(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.signal(Signal::STOP);
        node.paused = true;
    }

    /// SIGCONTs node index `i`.
    pub fn resume(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.signal(Signal::CONT);
        node.paused = false;
    }

    /// Simulated power loss of node index `i`: SIGUSR1 makes a server built with
    /// `fault-injection` drop every write it had not synced and exit at once.
    pub fn power_loss(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        node.wanted = false;
        if node.paused {
            node.signal(Signal::CONT);
            node.paused = false;
        }
        node.signal(Signal::USR1);
        match node.wait_exit(Duration::from_secs(10)) {
            Some(status) if status.contains("137") => Ok(()),
            Some(status) => bail!(
                "node {} exited with {status} on SIGUSR1: is quipu built with the fault-injection feature?",
                node.id
            ),
            None => {
                node.signal(Signal::KILL);
                node.wait_exit(Duration::from_secs(10));
                bail!(
                    "node {} did not simulate a power loss within 10 s of SIGUSR1: is quipu built with the fault-injection feature?",
                    node.id
                )
            }
        }
    }

    /// Stops every node: SIGTERM (a graceful handoff), SIGKILL after `patience`.
    pub fn stop_all(&mut self, patience: Duration) {
        for node in &mut self.nodes {
            node.wanted = false;
            node.signal(Signal::CONT);
            node.signal(Signal::TERM);
        }
        for node in &mut self.nodes {
            if node.wait_exit(patience).is_none() {
                node.signal(Signal::KILL);
                node.wait_exit(Duration::from_secs(10));
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.signal(Signal::KILL);
            node.wait_exit(Duration::from_secs(5));
            if node.mounted {
                // The loop device goes with the mount (`-o loop` sets autoclear); the image
                // stays, with the node's data, for a failed run's inspection.
                let _ = crate::net::run("umount", &[&node.data_dir().to_string_lossy()]);
                node.mounted = false;
            }
        }
    }
}

/// Makes node's data directory its own ext4 file system of [`DISK_BYTES`]: an image file in its
/// directory, loop-mounted. No blocks are reserved for root (the server runs as root).
fn mount_own_disk(node: &mut Node) -> anyhow::Result<()> {
    let image = node.dir.join("disk.img");
    std::fs::File::create(&image)?.set_len(DISK_BYTES)?;
    let image_text = image.to_string_lossy().into_owned();
    crate::net::run("mkfs.ext4", &["-q", "-F", "-m", "0", &image_text])?;
    let data = node.data_dir();
    std::fs::create_dir_all(&data)?;
    crate::net::run(
        "mount",
        &["-o", "loop", &image_text, &data.to_string_lossy()],
    )?;
    node.mounted = true;
    Ok(())
}

/// Bytes free on the file system holding `dir`.
fn free_bytes(dir: &Path) -> anyhow::Result<u64> {
    let stat =
        rustix::fs::statvfs(dir).with_context(|| format!("cannot stat {}", dir.display()))?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}
