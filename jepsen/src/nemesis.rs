//! The nemesis: faults, their schedule from one seed, and how each is applied and healed.
//!
//! One fault at a time: a quiet spell, a fault held for a while, its heal, again, until the run's
//! time is up. Every fault keeps at most a minority of nodes (and of each partition's replicas)
//! faulty, so an acknowledged record must survive all of them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::cluster::Cluster;
use crate::net::{Capabilities, Net};
use crate::rng::Rng;

/// How a disk is damaged while its node is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// One bit of one segment's data flipped.
    BitFlip,
    /// The end of the newest segment's data cut off.
    TruncateTail,
    /// One 4 KiB page of a sealed segment zeroed.
    ZeroPage,
}

/// One fault. Node numbers are indexes (node id − 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// A node cut off from the other nodes (clients still reach it).
    Isolate(usize),
    /// The nodes split in a minority and a majority.
    Split(Vec<usize>),
    /// Two groups of nodes that cannot see each other, and one node that sees both.
    Bridge {
        bridge: usize,
        left: Vec<usize>,
        right: Vec<usize>,
    },
    /// The clients cut off from a node (the nodes still see each other).
    ClientCut(usize),
    /// SIGKILL; restarted at the heal.
    Kill(usize),
    /// SIGSTOP; SIGCONT at the heal.
    Pause(usize),
    /// Every write the node had not synced is lost, and it stops; restarted at the heal.
    PowerLoss(usize),
    /// Jepsen's NATS scenario: a minority paused, another node loses power; at the heal the
    /// paused ones resume and the other restarts.
    PauseAndPowerLoss { paused: Vec<usize>, lost: usize },
    /// The node killed, its files damaged while it is down; restarted at the heal.
    Corrupt { node: usize, how: Corruption },
    /// The node restarted with its wall clock off by `secs`; restarted with the real clock at the
    /// heal.
    Skew { node: usize, secs: i64 },
    /// The node's disk filled by a ballast until less than its reserve is free (it refuses
    /// produce, keeps replicating); the ballast removed at the heal.
    DiskFull(usize),
    /// A partition of the test topic moved to the nodes in these slots (`quipu topic move`,
    /// preferred leader first); the heal waits until the move completed.
    Move { partition: u32, to: Vec<usize> },
    /// The node in this slot drained (`quipu node drain`); at the heal, once it holds nothing,
    /// removed (`quipu node remove`), stopped and replaced by a fresh node with a new id that
    /// joins through another (`--join`).
    Replace(usize),
    /// The node in this slot SIGKILLed for good and removed at once with `quipu node remove
    /// --force` (its partitions regain their replicas from the survivors); at the heal, once
    /// no partition is moving, replaced by a fresh node with a new id that joins through another.
    ReplaceDead(usize),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |i: &usize| format!("n{}", i + 1);
        let ns = |v: &[usize]| v.iter().map(n).collect::<Vec<_>>().join(",");
        match self {
            Fault::Isolate(i) => write!(f, "isolate {}", n(i)),
            Fault::Split(minority) => write!(f, "split minority {}", ns(minority)),
            Fault::Bridge {
                bridge,
                left,
                right,
            } => write!(
                f,
                "bridge {} between {} | {}",
                n(bridge),
                ns(left),
                ns(right)
            ),
            Fault::ClientCut(i) => write!(f, "cut clients from {}", n(i)),
            Fault::Kill(i) => write!(f, "kill {}", n(i)),
            Fault::Pause(i) => write!(f, "pause {}", n(i)),
            Fault::PowerLoss(i) => write!(f, "power-loss {}", n(i)),
            Fault::PauseAndPowerLoss { paused, lost } => {
                write!(f, "pause {} then power-loss {}", ns(paused), n(lost))
            }
            Fault::Corrupt { node, how } => write!(f, "corrupt {} ({how:?})", n(node)),
            Fault::Skew { node, secs } => write!(f, "skew {} clock by {secs:+} s", n(node)),
            Fault::DiskFull(i) => write!(f, "fill the disk of {} below its reserve", n(i)),
            Fault::Move { partition, to } => {
                write!(f, "move partition {partition} to slots {}", ns(to))
            }
            Fault::Replace(i) => write!(f, "drain, remove and replace slot {}", n(i)),
            Fault::ReplaceDead(i) => write!(
                f,
                "kill slot {} for good, remove it with --force, replace it",
                n(i)
            ),
        }
    }
}

/// The kinds of fault a scenario draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    Partition,
    ClientPartition,
    Kill,
    Pause,
    PowerLoss,
    PauseAndPowerLoss,
    Corrupt,
    Skew,
    DiskFull,
    Membership,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 10] = [
        FaultKind::Partition,
        FaultKind::ClientPartition,
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::PowerLoss,
        FaultKind::PauseAndPowerLoss,
        FaultKind::Corrupt,
        FaultKind::Skew,
        FaultKind::DiskFull,
        FaultKind::Membership,
    ];

    /// Parses a name as used on the command line.
    pub fn parse(name: &str) -> Option<FaultKind> {
        Some(match name {
            "partition" => FaultKind::Partition,
            "client-partition" => FaultKind::ClientPartition,
            "kill" => FaultKind::Kill,
            "pause" => FaultKind::Pause,
            "power-loss" => FaultKind::PowerLoss,
            "pause-power-loss" => FaultKind::PauseAndPowerLoss,
            "corrupt" => FaultKind::Corrupt,
            "skew" => FaultKind::Skew,
            "disk-full" => FaultKind::DiskFull,
            "membership" => FaultKind::Membership,
            _ => return None,
        })
    }

    /// What the kernel must offer for this kind, if anything.
    fn available(self, caps: &Capabilities) -> bool {
        match self {
            FaultKind::Partition | FaultKind::ClientPartition => caps.nftables,
            FaultKind::Skew => caps.faketime,
            FaultKind::DiskFull => caps.loop_disks,
            _ => true,
        }
    }
}

/// The kinds of the named scenario (the short ones CI runs, and `all`).
pub fn scenario(name: &str) -> Option<Vec<FaultKind>> {
    Some(match name {
        "partition-kill" => vec![
            FaultKind::Partition,
            FaultKind::ClientPartition,
            FaultKind::Kill,
        ],
        "pause-power-loss" => vec![
            FaultKind::Pause,
            FaultKind::PowerLoss,
            FaultKind::PauseAndPowerLoss,
        ],
        "corrupt-minority" => vec![FaultKind::Corrupt, FaultKind::Kill, FaultKind::Partition],
        "skew" => vec![FaultKind::Skew, FaultKind::Partition],
        "disk-full" => vec![FaultKind::DiskFull, FaultKind::Kill, FaultKind::Partition],
        // Joins, drains, removals and moves, with kills and partitions between them; four nodes.
        "membership" => vec![FaultKind::Membership, FaultKind::Kill, FaultKind::Partition],
        "all" => FaultKind::ALL.to_vec(),
        _ => return None,
    })
}

/// Draws the next fault of kind `kind` on a cluster of `nodes` nodes.
pub fn draw(kind: FaultKind, nodes: usize, partitions: u32, rng: &mut Rng) -> Fault {
    let mut order: Vec<usize> = (0..nodes).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.index(i + 1));
    }
    let one = order[0];
    let minority = (nodes - 1) / 2;
    match kind {
        FaultKind::Partition => match rng.below(3) {
            0 => Fault::Isolate(one),
            1 if minority > 0 => {
                let size = 1 + rng.index(minority);
                Fault::Split(order[..size].to_vec())
            }
            _ if nodes >= 3 => {
                let rest = &order[1..];
                let half = rest.len() / 2;
                Fault::Bridge {
                    bridge: one,
                    left: rest[..half].to_vec(),
                    right: rest[half..].to_vec(),
                }
            }
            _ => Fault::Isolate(one),
        },
        FaultKind::ClientPartition => Fault::ClientCut(one),
        FaultKind::Kill => Fault::Kill(one),
        FaultKind::Pause => Fault::Pause(one),
        FaultKind::PowerLoss => Fault::PowerLoss(one),
        FaultKind::PauseAndPowerLoss => Fault::PauseAndPowerLoss {
            paused: order[1..=minority.min(nodes - 1)].to_vec(),
            lost: one,
        },
        FaultKind::Corrupt => Fault::Corrupt {
            node: one,
            how: match rng.below(3) {
                0 => Corruption::BitFlip,
                1 => Corruption::TruncateTail,
                _ => Corruption::ZeroPage,
            },
        },
        FaultKind::DiskFull => Fault::DiskFull(one),
        // Replacing a node needs somewhere for its replicas to go: one node more than the
        // replication factor (3).
        FaultKind::Membership => match rng.below(3) {
            0 if nodes > 3 => Fault::Replace(one),
            1 if nodes > 3 => Fault::ReplaceDead(one),
            _ => Fault::Move {
                partition: u32::try_from(rng.below(u64::from(partitions.max(1)))).unwrap_or(0),
                to: order[..nodes.min(3)].to_vec(),
            },
        },
        FaultKind::Skew => {
            let secs = i64::try_from(rng.between(5, 600)).unwrap_or(60);
            Fault::Skew {
                node: one,
                secs: if rng.below(2) == 0 { secs } else { -secs },
            }
        }
    }
}

/// How long a heal waits for the moves under way to complete.
const MOVES_PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// Waits until no partition of any topic is moving (`quipu topic describe` of the test topic and
/// `quipu node list`), at most [`MOVES_PATIENCE`].
fn wait_settled(cluster: &Cluster) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + MOVES_PATIENCE;
    loop {
        let described = cluster.admin(&["topic", "describe", crate::workload::TOPIC]);
        let nodes = cluster.admin(&["node", "list"]);
        let draining_holds = nodes.as_ref().is_ok_and(|list| {
            list.lines().skip(1).any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.get(1) == Some(&"draining") && f.get(6).is_some_and(|r| *r != "0")
            })
        });
        if described.as_ref().is_ok_and(|d| !d.contains("moving to"))
            && nodes.is_ok()
            && !draining_holds
        {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("the moves did not complete within {MOVES_PATIENCE:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// Applies faults to one cluster and heals them.
#[derive(Debug)]
pub struct Nemesis {
    rng: Rng,
    /// Partition directory name → the one node whose replica of it was damaged: damage stays on
    /// a minority of every partition's replicas (Quipu does not repair a damaged replica yet, so
    /// damage accumulates over a run).
    damaged: HashMap<String, usize>,
}

impl Nemesis {
    /// A nemesis drawing its random choices from `rng`.
    pub fn new(rng: Rng) -> Nemesis {
        Nemesis {
            rng,
            damaged: HashMap::new(),
        }
    }

    /// Starts `fault`. Returns a note on what was done (the damage, say).
    pub fn apply(
        &mut self,
        fault: &Fault,
        net: &Net,
        cluster: &mut Cluster,
    ) -> anyhow::Result<String> {
        let nodes = cluster.nodes.len();
        let client = nodes;
        let mut note = String::new();
        match fault {
            Fault::Isolate(i) => {
                let others: Vec<usize> = (0..nodes).filter(|j| j != i).collect();
                net.partition(&cut(&[*i], &others))?;
            }
            Fault::Split(minority) => {
                let majority: Vec<usize> = (0..nodes).filter(|j| !minority.contains(j)).collect();
                net.partition(&cut(minority, &majority))?;
            }
            Fault::Bridge { left, right, .. } => net.partition(&cut(left, right))?,
            Fault::ClientCut(i) => net.partition(&cut(&[*i], &[client]))?,
            Fault::Kill(i) => cluster.kill(*i),
            Fault::Pause(i) => cluster.pause(*i),
            Fault::PowerLoss(i) => cluster.power_loss(*i)?,
            Fault::PauseAndPowerLoss { paused, lost } => {
                for i in paused {
                    cluster.pause(*i);
                }
                cluster.power_loss(*lost)?;
            }
            Fault::Corrupt { node, how } => {
                // The drawn node, or the next one that has a replica it may damage.
                let target = (0..nodes)
                    .map(|k| (node + k) % nodes)
                    .find(|&i| {
                        self.candidates(i, &cluster.nodes[i].data_dir())
                            .is_ok_and(|c| !c.is_empty())
                    })
                    .unwrap_or(*node);
                cluster.kill(target);
                note = format!(
                    "n{}: {}",
                    target + 1,
                    self.corrupt(target, &cluster.nodes[target].data_dir(), *how)?
                );
            }
            Fault::Skew { node, secs } => {
                cluster.kill(*node);
                cluster.nodes[*node].skew_secs = Some(*secs);
                cluster.start(*node)?;
            }
            Fault::DiskFull(i) => {
                let free = cluster.fill_disk(*i, crate::cluster::DISK_RESERVE / 2)?;
                note = format!("{free} bytes free");
            }
            Fault::Move { partition, to } => {
                let ids: Vec<String> = to
                    .iter()
                    .map(|i| cluster.nodes[*i].id.to_string())
                    .collect();
                let ids = ids.join(",");
                cluster.admin(&[
                    "topic",
                    "move",
                    crate::workload::TOPIC,
                    "--partition",
                    &partition.to_string(),
                    "--replicas",
                    &ids,
                ])?;
                note = format!("to nodes {ids}");
            }
            Fault::Replace(i) => {
                let id = cluster.nodes[*i].id.to_string();
                cluster.admin(&["node", "drain", &id])?;
                note = format!("node {id} draining");
            }
            Fault::ReplaceDead(i) => {
                let id = cluster.nodes[*i].id.to_string();
                cluster.kill(*i);
                cluster.admin(&["node", "remove", &id, "--force"])?;
                note = format!("node {id} removed while dead");
            }
        }
        Ok(note)
    }

    /// Ends `fault`: the network is whole, every node runs, unpaused, on the real clock.
    pub fn heal(&mut self, fault: &Fault, net: &Net, cluster: &mut Cluster) -> anyhow::Result<()> {
        match fault {
            Fault::Isolate(_) | Fault::Split(_) | Fault::Bridge { .. } | Fault::ClientCut(_) => {
                net.heal()?;
            }
            Fault::Pause(i) => cluster.resume(*i),
            Fault::PauseAndPowerLoss { paused, .. } => {
                for i in paused {
                    cluster.resume(*i);
                }
            }
            Fault::Skew { node, .. } => {
                cluster.kill(*node);
                cluster.nodes[*node].skew_secs = None;
            }
            Fault::DiskFull(i) => cluster.empty_disk(*i)?,
            Fault::Kill(_) | Fault::PowerLoss(_) | Fault::Corrupt { .. } => {}
            Fault::Move { .. } => wait_settled(cluster)?,
            Fault::Replace(i) => {
                wait_settled(cluster)?;
                let id = cluster.nodes[*i].id;
                cluster.admin(&["node", "remove", &id.to_string()])?;
                cluster.kill(*i);
                let next = cluster.nodes.iter().map(|n| n.id).max().unwrap_or(id) + 1;
                cluster.replace(*i, next)?;
            }
            // The survivors restore the replicas first: the fresh node joins a cluster that
            // is whole again (a later move or replacement gives it replicas).
            Fault::ReplaceDead(i) => {
                wait_settled(cluster)?;
                let id = cluster.nodes[*i].id;
                let next = cluster.nodes.iter().map(|n| n.id).max().unwrap_or(id) + 1;
                cluster.replace(*i, next)?;
            }
        }
        for i in 0..cluster.nodes.len() {
            cluster.start(i)?;
        }
        Ok(())
    }

    /// The partition replicas of `node` (data in `data`) that may be damaged: those whose other
    /// replicas never were, with their segment files in order.
    fn candidates(&self, node: usize, data: &Path) -> anyhow::Result<Vec<(String, Vec<PathBuf>)>> {
        let partitions = data.join("partitions");
        let mut candidates: Vec<(String, Vec<PathBuf>)> = Vec::new();
        for entry in std::fs::read_dir(&partitions)
            .with_context(|| format!("cannot list {}", partitions.display()))?
        {
            let dir = entry?.path();
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // Live replicas only (`<group>`), not damaged files a repair set aside.
            if name.parse::<u64>().is_err() || self.damaged.get(&name).is_some_and(|n| *n != node) {
                continue;
            }
            let mut segments: Vec<PathBuf> = std::fs::read_dir(&dir)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "log"))
                .collect();
            segments.sort();
            if !segments.is_empty() {
                candidates.push((name, segments));
            }
        }
        Ok(candidates)
    }

    /// Damages one partition replica of the (stopped) node whose data is in `data`. Picks a
    /// partition whose other replicas were never damaged.
    fn corrupt(&mut self, node: usize, data: &Path, how: Corruption) -> anyhow::Result<String> {
        let mut candidates = self.candidates(node, data)?;
        if candidates.is_empty() {
            return Ok("no partition replica could be damaged".to_string());
        }
        let (name, segments) = candidates.swap_remove(self.rng.index(candidates.len()));
        self.damaged.insert(name.clone(), node);
        let (how, file) = match how {
            Corruption::ZeroPage if segments.len() > 1 => {
                let sealed = &segments[..segments.len() - 1];
                (how, sealed[self.rng.index(sealed.len())].clone())
            }
            Corruption::ZeroPage | Corruption::TruncateTail => (
                Corruption::TruncateTail,
                segments.last().cloned().unwrap_or_default(),
            ),
            Corruption::BitFlip => (how, segments[self.rng.index(segments.len())].clone()),
        };
        let mut bytes = std::fs::read(&file)?;
        // Segments are preallocated: the data ends at the last non-zero byte.
        let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
        if end == 0 {
            return Ok(format!("{} holds no data yet", file.display()));
        }
        let what = match how {
            Corruption::BitFlip => {
                let at = self.rng.index(end);
                let bit = self.rng.below(8);
                bytes[at] ^= 1 << bit;
                std::fs::write(&file, &bytes)?;
                format!("flipped bit {bit} of byte {at}")
            }
            Corruption::TruncateTail => {
                let cut = 1 + self.rng.index(end.min(64 * 1024));
                let file_handle = std::fs::OpenOptions::new().write(true).open(&file)?;
                file_handle.set_len((end - cut) as u64)?;
                format!("cut the last {cut} bytes of data (of {end})")
            }
            Corruption::ZeroPage => {
                let page = self.rng.index(end.div_ceil(4096)) * 4096;
                let until = (page + 4096).min(bytes.len());
                bytes[page..until].fill(0);
                std::fs::write(&file, &bytes)?;
                format!("zeroed bytes {page}..{until}")
            }
        };
        Ok(format!("{}: {what}", file.display()))
    }
}

/// Drop rules that cut every host of `a` from every host of `b`, both ways.
fn cut(a: &[usize], b: &[usize]) -> BTreeMap<usize, BTreeSet<usize>> {
    let mut drops: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    for x in a {
        for y in b {
            drops.entry(*x).or_default().insert(*y);
            drops.entry(*y).or_default().insert(*x);
        }
    }
    drops
}

/// The kinds of `wanted` this machine can inject; notes on the others.
pub fn available(wanted: &[FaultKind], caps: &Capabilities) -> (Vec<FaultKind>, Vec<String>) {
    let mut kinds = Vec::new();
    let mut notes = Vec::new();
    for kind in wanted {
        if kind.available(caps) {
            kinds.push(*kind);
        } else {
            notes.push(format!("{kind:?} faults skipped: not available here"));
        }
    }
    (kinds, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fault_keeps_a_majority_whole() {
        let mut rng = Rng::new(3);
        for nodes in [3, 4, 5] {
            for _ in 0..200 {
                for kind in FaultKind::ALL {
                    let faulty: Vec<usize> = match draw(kind, nodes, 4, &mut rng) {
                        Fault::Isolate(i)
                        | Fault::ClientCut(i)
                        | Fault::Kill(i)
                        | Fault::Pause(i)
                        | Fault::PowerLoss(i)
                        | Fault::Corrupt { node: i, .. }
                        | Fault::Skew { node: i, .. }
                        | Fault::DiskFull(i) => vec![i],
                        Fault::Split(minority) => minority,
                        Fault::Bridge {
                            bridge,
                            left,
                            right,
                        } => {
                            // The bridge node sees everyone: a majority forms through it.
                            assert!(1 + left.len().max(right.len()) > nodes / 2);
                            assert!(!left.contains(&bridge) && !right.contains(&bridge));
                            continue;
                        }
                        // A majority of nodes is unavailable while it lasts, by design; the
                        // paused ones and the lost one are still distinct.
                        Fault::PauseAndPowerLoss { paused, lost } => {
                            assert!(!paused.contains(&lost));
                            assert!(paused.len() * 2 < nodes);
                            continue;
                        }
                        // One node leaves (drained first: it holds nothing when it stops).
                        Fault::Replace(i) | Fault::ReplaceDead(i) => {
                            assert!(nodes > 3, "a replacement needs a node to move to");
                            vec![i]
                        }
                        // Three distinct nodes, the replication factor; no node is down.
                        Fault::Move { partition, to } => {
                            assert!(partition < 4);
                            let mut distinct = to.clone();
                            distinct.sort_unstable();
                            distinct.dedup();
                            assert_eq!(distinct.len(), nodes.min(3));
                            continue;
                        }
                    };
                    assert!(faulty.len() * 2 < nodes, "{faulty:?} of {nodes}");
                }
            }
        }
    }

    #[test]
    fn cuts_are_symmetric() {
        let drops = cut(&[0], &[1, 2]);
        assert_eq!(drops[&0], BTreeSet::from([1, 2]));
        assert_eq!(drops[&1], BTreeSet::from([0]));
        assert_eq!(drops[&2], BTreeSet::from([0]));
    }
}
