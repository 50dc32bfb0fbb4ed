//! Helpers shared by the tests that run `quipu server` processes.
#![allow(dead_code)] // each test binary uses its own subset

pub mod browser;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const PATIENCE: Duration = Duration::from_secs(30);

/// The path of the program `name`, or a panic saying which Debian package has it.
pub fn tool(name: &str, package: &str) -> String {
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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `quipu server` whose output lines arrive on a channel.
pub struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Server {
    pub fn start<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_quipu"))
            .arg("server")
            .args(args)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        // Both streams (the log, and why it stopped) on one channel, each drained to its end.
        let err_tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if err_tx.send(line).is_err() {
                    return;
                }
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Server { child, lines }
    }

    /// Waits for an output line containing `text` and returns it.
    pub fn wait_for(&self, text: &str) -> String {
        self.try_wait_for(text).unwrap_or_else(|last| {
            panic!(
                "the server never logged {text:?}; its last lines:\n{}",
                last.join("\n")
            )
        })
    }

    /// Waits for an output line containing `text`; the server's last lines if it exited or
    /// stayed silent instead.
    pub fn try_wait_for(&self, text: &str) -> Result<String, Vec<String>> {
        let deadline = Instant::now() + PATIENCE;
        let mut last: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return Ok(line),
                Ok(line) => {
                    if last.len() == 5 {
                        last.pop_front();
                    }
                    last.push_back(line);
                }
                Err(_) => return Err(last.into()),
            }
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn wait(mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Server {
    /// SIGKILLs the server (our own child, by its PID) and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only our own child, by its PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Ports apart that [`free_ports`] starts two processes' ranges.
pub const PORT_SLOT: u16 = 32;

/// `count` (at most [`PORT_SLOT`]) consecutive free ports on 127.0.0.1, found by binding them
/// all, then released for the nodes. Each process starts from a slot of its own: tests started
/// together have neighbouring process ids, and ranges only 7 ports apart overlapped, so that two
/// tests found the same ports free before either cluster bound them (t20_cli and t60_admin run
/// side by side failed every time). A race with an unrelated process stays possible, and fails
/// the test loudly.
pub fn free_ports(count: u16) -> u16 {
    assert!(count <= PORT_SLOT, "at most {PORT_SLOT} ports at once");
    let slots = 20_000 / u32::from(PORT_SLOT);
    let seed = std::process::id() % slots;
    for attempt in 0..200u32 {
        let slot = (seed + attempt * 37) % slots;
        let base = u16::try_from(20_000 + slot * u32::from(PORT_SLOT)).unwrap();
        let held: Vec<_> = (0..count)
            .filter_map(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if held.len() == usize::from(count) {
            return base;
        }
    }
    panic!("no free port range");
}

/// A `quipu dev` cluster, stopped (SIGTERM) when dropped.
pub struct Dev {
    child: Child,
    pub bootstrap: String,
    pub pids: Vec<u32>,
    /// What it printed before its bootstrap line.
    pub banner: Vec<String>,
}

impl Dev {
    /// Starts `quipu dev --nodes 3` in `data`, with `extra` arguments.
    pub fn start(data: &Path, extra: &[&str]) -> Dev {
        let raft = free_ports(12);
        let api = raft + 3;
        let kafka = raft + 6;
        let admin = raft + 9;
        let mut child = Command::new(env!("CARGO_BIN_EXE_quipu"))
            .args(["dev", "--nodes", "3", "--data-dir"])
            .arg(data)
            .args([
                "--raft-port",
                &raft.to_string(),
                "--api-port",
                &api.to_string(),
                "--kafka-port",
                &kafka.to_string(),
                "--admin-port",
                &admin.to_string(),
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut pids = Vec::new();
        let mut banner = Vec::new();
        let bootstrap = loop {
            let line = lines.next().unwrap().unwrap();
            banner.push(line.clone());
            if let Some(rest) = line.split_once(": pid ") {
                pids.push(rest.1.split(',').next().unwrap().parse().unwrap());
            }
            if let Some(addrs) = line.strip_prefix("bootstrap: ") {
                break addrs.to_string();
            }
        };
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Dev {
            child,
            bootstrap,
            pids,
            banner,
        }
    }

    pub fn quipu(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_quipu"));
        command
            .args(args)
            .env("QUIPU_BOOTSTRAP", &self.bootstrap)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            let input = input.to_vec();
            std::thread::spawn(move || {
                let _ = pipe.write_all(&input);
            });
        }
        child.wait_with_output().unwrap()
    }

    /// Runs a command that must succeed; returns its standard output.
    pub fn ok(&self, args: &[&str], stdin: Option<&[u8]>) -> String {
        let output = self.quipu(args, stdin);
        assert!(
            output.status.success(),
            "quipu {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        // Only our own child, by its PID; it stops its nodes gracefully.
        if let Some(pid) = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on `addr`: the status code and the body. HTTP/1.0, so that no server answers
/// in chunks.
pub fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of the sample `series` (name and labels as rendered) in a scrape.
pub fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// Every series of `name` in a scrape (the lines that start with it).
pub fn series<'a>(scrape: &'a str, name: &str) -> Vec<&'a str> {
    scrape
        .lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .collect()
}
