//! The checker: reads a history and reports every anomaly it contains. Its rules follow Jepsen's
//! Kafka queue analysis, made exact by Quipu's dense offsets (every record of a partition has the
//! next offset: no transaction markers, no compaction).
//!
//! Rules (each is an [`Kind`]):
//! - **lost write**: a value acknowledged at `(partition, offset)`, or read by a poll (polls see only
//!   committed records), is missing from a complete final drain of its partition;
//! - **duplicate**: one value at two positions (acknowledgements and reads together). The
//!   producers are idempotent and the client retries each send until it is acknowledged or the op
//!   times out, so this covers every retried send, `info` ones included;
//! - **inconsistent offset**: two values at one position;
//! - **unexpected value**: a value read that no process ever sent;
//! - **failed write read**: a value whose send failed definitely, yet read;
//! - **poll skip** / **nonmonotonic poll**: within one consumer process and partition, a read that
//!   jumps past the next offset, or goes back, relative to the previous record it read; within one
//!   read, records not at consecutive offsets; a drain that does not start at the log start (0);
//! - **nonmonotonic send**: within one producer process and partition, an acknowledgement at an
//!   offset not above the previous one's;
//! - **replica divergence**: two replicas, or a replica and the drains, hold different values at an
//!   offset both call committed, or a replica's committed records have a hole (a replica's
//!   committed records also count for duplicates, inconsistent offsets and unexpected values);
//! - **replica unreadable**: after every fault healed, a replica could not be read on its node;
//! - **drain incomplete**: a partition no final drain read to its end (the cluster did not recover,
//!   so lost writes cannot be ruled out);
//! - **committed offset regressed**: a read of the consumer group's committed offsets, invoked
//!   after a commit of offset `o` for a partition was acknowledged, shows a lower offset (or none)
//!   for that partition;
//! - **commit skip**: an acknowledged commit of offset `o` for a partition while some offset below
//!   `o` was never delivered to any member of the group (a record the group would never read).
//!
//! Group members' polls count as reads for the value rules (duplicate, inconsistent offset,
//! unexpected value, lost write).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use crate::history::{F, Op, OpType, Read};

/// Examples kept per kind of anomaly (all are counted).
const EXAMPLES_MAX: usize = 8;

/// A kind of anomaly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    LostWrite,
    Duplicate,
    InconsistentOffset,
    UnexpectedValue,
    FailedWriteRead,
    PollSkip,
    NonmonotonicPoll,
    NonmonotonicSend,
    ReplicaDivergence,
    ReplicaUnreadable,
    DrainIncomplete,
    CommitRegressed,
    CommitSkip,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::LostWrite => "lost-write",
            Kind::Duplicate => "duplicate",
            Kind::InconsistentOffset => "inconsistent-offset",
            Kind::UnexpectedValue => "unexpected-value",
            Kind::FailedWriteRead => "failed-write-read",
            Kind::PollSkip => "poll-skip",
            Kind::NonmonotonicPoll => "nonmonotonic-poll",
            Kind::NonmonotonicSend => "nonmonotonic-send",
            Kind::ReplicaDivergence => "replica-divergence",
            Kind::ReplicaUnreadable => "replica-unreadable",
            Kind::DrainIncomplete => "drain-incomplete",
            Kind::CommitRegressed => "committed-offset-regressed",
            Kind::CommitSkip => "commit-skip",
        })
    }
}

/// Operation counts, for the summary.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub sends_ok: u64,
    pub sends_fail: u64,
    pub sends_info: u64,
    pub polls_ok: u64,
    pub polls_not_ok: u64,
    pub records_polled: u64,
    pub drains_ok: u64,
    pub replicas_read: u64,
    /// Replicas whose high watermark was below their partition's drained end when read.
    pub replicas_lagging: u64,
    pub faults: u64,
    pub group_polls_ok: u64,
    pub commits_ok: u64,
    pub commits_not_ok: u64,
}

/// What the checker found.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub counts: Counts,
    /// Number of anomalies of each kind.
    pub anomalies: BTreeMap<Kind, u64>,
    /// The first few of each kind, described.
    pub examples: BTreeMap<Kind, Vec<String>>,
}

impl Report {
    /// No anomaly.
    pub fn is_valid(&self) -> bool {
        self.anomalies.is_empty()
    }

    /// How many anomalies of `kind` were found.
    pub fn count(&self, kind: Kind) -> u64 {
        self.anomalies.get(&kind).copied().unwrap_or(0)
    }

    fn add(&mut self, kind: Kind, detail: impl FnOnce() -> String) {
        *self.anomalies.entry(kind).or_default() += 1;
        let examples = self.examples.entry(kind).or_default();
        if examples.len() < EXAMPLES_MAX {
            examples.push(detail());
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        writeln!(
            f,
            "sends: {} ok, {} failed, {} unknown; polls: {} ok ({} records), {} not ok; \
             drains: {} ok; replicas read: {} ({} lagging); faults: {}; group polls: {} ok; \
             commits: {} ok, {} not ok",
            c.sends_ok,
            c.sends_fail,
            c.sends_info,
            c.polls_ok,
            c.records_polled,
            c.polls_not_ok,
            c.drains_ok,
            c.replicas_read,
            c.replicas_lagging,
            c.faults,
            c.group_polls_ok,
            c.commits_ok,
            c.commits_not_ok
        )?;
        if self.is_valid() {
            return writeln!(f, "valid: no anomaly");
        }
        for (kind, count) in &self.anomalies {
            writeln!(f, "{kind}: {count}")?;
            for example in self.examples.get(kind).into_iter().flatten() {
                writeln!(f, "  {example}")?;
            }
        }
        Ok(())
    }
}

/// Where a value was seen, for the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Position {
    partition: u32,
    offset: u64,
}

/// Checks a whole history.
pub fn check(history: &[Op]) -> Report {
    let mut report = Report::default();
    let mut invoked: HashSet<u64> = HashSet::new();
    let mut failed: HashSet<u64> = HashSet::new();
    // Every position each value was seen at, and every value each position held (acks and reads).
    let mut positions_of: HashMap<u64, BTreeSet<Position>> = HashMap::new();
    let mut values_at: HashMap<Position, BTreeSet<u64>> = HashMap::new();
    // Values that must be in every complete drain: acknowledged, or read by a poll (committed).
    // value → (position, op index, how it is known)
    let mut must_survive: HashMap<u64, (Position, u64, &'static str)> = HashMap::new();
    let mut last_sent: HashMap<(i64, u32), u64> = HashMap::new();
    let mut last_polled: HashMap<(i64, u32), u64> = HashMap::new();
    let mut drains: BTreeMap<u32, Vec<&[Read]>> = BTreeMap::new();
    let mut partitions: BTreeSet<u32> = BTreeSet::new();
    let mut replicas: Vec<&Op> = Vec::new();
    let mut group = GroupOps::default();
    let mut observed = |partition: u32, offset: u64, value: u64| {
        let at = Position { partition, offset };
        positions_of.entry(value).or_default().insert(at);
        values_at.entry(at).or_default().insert(value);
    };

    for op in history {
        let partition = op.value.partition;
        if let Some(p) = partition {
            partitions.insert(p);
        }
        match (op.f, op.kind) {
            (F::Nemesis, OpType::Invoke) => report.counts.faults += 1,
            (F::Send, OpType::Invoke) => {
                if let Some(value) = op.value.value {
                    invoked.insert(value);
                }
            }
            (F::Send, OpType::Ok) => {
                report.counts.sends_ok += 1;
                let (Some(p), Some(value), Some(offset)) =
                    (partition, op.value.value, op.value.offset)
                else {
                    continue;
                };
                observed(p, offset, value);
                let at = Position {
                    partition: p,
                    offset,
                };
                must_survive
                    .entry(value)
                    .or_insert((at, op.index, "acknowledged"));
                if let Some(previous) = last_sent.insert((op.process, p), offset)
                    && offset <= previous
                {
                    report.add(Kind::NonmonotonicSend, || {
                        format!(
                            "process {} was acknowledged {value} at {p}/{offset} after an earlier send at {p}/{previous} (op {})",
                            op.process, op.index
                        )
                    });
                }
            }
            (F::Send, OpType::Fail) => {
                report.counts.sends_fail += 1;
                if let Some(value) = op.value.value {
                    failed.insert(value);
                }
            }
            (F::Send, OpType::Info) => report.counts.sends_info += 1,
            (F::Poll | F::Drain, OpType::Ok) => {
                let (Some(p), Some(records)) = (partition, op.value.records.as_deref()) else {
                    continue;
                };
                for &(offset, value) in records {
                    observed(p, offset, value);
                    if op.f == F::Poll {
                        let at = Position {
                            partition: p,
                            offset,
                        };
                        must_survive
                            .entry(value)
                            .or_insert((at, op.index, "polled"));
                    }
                }
                if op.f == F::Poll {
                    report.counts.polls_ok += 1;
                    report.counts.records_polled += records.len() as u64;
                    check_poll(&mut report, op, p, records, &mut last_polled);
                } else {
                    report.counts.drains_ok += 1;
                    check_contiguous(&mut report, op, p, records, Some(0));
                    drains.entry(p).or_default().push(records);
                }
            }
            (F::Poll, OpType::Fail | OpType::Info) => report.counts.polls_not_ok += 1,
            (F::GroupPoll, OpType::Ok) => {
                let (Some(p), Some(records)) = (partition, op.value.records.as_deref()) else {
                    continue;
                };
                report.counts.group_polls_ok += 1;
                for &(offset, value) in records {
                    observed(p, offset, value);
                    let at = Position {
                        partition: p,
                        offset,
                    };
                    must_survive
                        .entry(value)
                        .or_insert((at, op.index, "polled by a group member"));
                    group.delivered.entry(p).or_default().insert(offset);
                }
            }
            (F::Commit, OpType::Ok) => {
                report.counts.commits_ok += 1;
                for &(p, offset) in op.value.offsets.iter().flatten() {
                    group.commits.push((op.index, p, offset));
                }
            }
            (F::Commit, OpType::Fail | OpType::Info) => report.counts.commits_not_ok += 1,
            (F::Committed, OpType::Invoke) => {
                group.reads_invoked.insert(op.process, op.index);
            }
            (F::Committed, OpType::Ok) => {
                let invoked = group
                    .reads_invoked
                    .get(&op.process)
                    .copied()
                    .unwrap_or(op.index);
                group.reads.push((
                    invoked,
                    op.index,
                    op.value.offsets.clone().unwrap_or_default(),
                ));
            }
            (F::Replica, OpType::Ok) => {
                if let (Some(p), Some(hw), Some(records)) = (
                    partition,
                    op.value.high_watermark,
                    op.value.records.as_deref(),
                ) {
                    for &(offset, value) in records.iter().take_while(|(o, _)| *o < hw) {
                        observed(p, offset, value);
                    }
                }
                replicas.push(op);
            }
            (F::Replica, OpType::Info | OpType::Fail) => {
                report.add(Kind::ReplicaUnreadable, || {
                    format!(
                        "node {:?}'s replica of partition {:?} could not be read after the heal: {}",
                        op.value.node,
                        op.value.partition,
                        op.error.as_deref().unwrap_or("no reason")
                    )
                });
            }
            _ => {}
        }
    }

    for (at, values) in &values_at {
        if values.len() > 1 {
            report.add(Kind::InconsistentOffset, || {
                format!(
                    "{}/{} holds {values:?} (acknowledgements and reads)",
                    at.partition, at.offset
                )
            });
        }
    }
    let mut values: Vec<_> = positions_of.iter().collect();
    values.sort_by_key(|(value, _)| **value);
    for (value, at) in values {
        if at.len() > 1 {
            let at: Vec<String> = at
                .iter()
                .map(|a| format!("{}/{}", a.partition, a.offset))
                .collect();
            report.add(Kind::Duplicate, || {
                format!("value {value} is at {}", at.join(", "))
            });
        }
        if !invoked.contains(value) {
            report.add(Kind::UnexpectedValue, || {
                format!("value {value} was read but never sent")
            });
        }
        if failed.contains(value) {
            report.add(Kind::FailedWriteRead, || {
                format!("value {value} was read, but its send failed definitely")
            });
        }
    }

    for &p in &partitions {
        if !drains.contains_key(&p) {
            report.add(Kind::DrainIncomplete, || {
                format!("partition {p}: no final drain read it to its end")
            });
        }
    }
    let drained_values: BTreeMap<u32, Vec<HashSet<u64>>> = drains
        .iter()
        .map(|(p, reads)| {
            let sets = reads
                .iter()
                .map(|records| records.iter().map(|&(_, v)| v).collect())
                .collect();
            (*p, sets)
        })
        .collect();
    let mut survivors: Vec<_> = must_survive.iter().collect();
    survivors.sort_by_key(|(value, _)| **value);
    for (value, (at, index, how)) in survivors {
        let Some(drained) = drained_values.get(&at.partition) else {
            continue; // reported as an incomplete drain
        };
        if let Some(missing) = drained.iter().find(|set| !set.contains(value)) {
            report.add(Kind::LostWrite, || {
                format!(
                    "value {value}, {how} at {}/{} (op {index}), is missing from a final drain of {} records",
                    at.partition,
                    at.offset,
                    missing.len()
                )
            });
        }
    }

    check_replicas(&mut report, &replicas, &drains, &failed);
    check_group(&mut report, &group);
    report
}

/// What the history says of the consumer group.
#[derive(Debug, Default)]
struct GroupOps {
    /// Offsets delivered to some member, per partition.
    delivered: HashMap<u32, BTreeSet<u64>>,
    /// Acknowledged commits: (index of the `ok` line, partition, offset).
    commits: Vec<(u64, u32, u64)>,
    /// The invoke line of each process's committed-offsets read in flight.
    reads_invoked: HashMap<i64, u64>,
    /// Reads of the committed offsets.
    reads: Vec<CommittedRead>,
}

/// One read of the group's committed offsets: its invoke and ok lines, and what it read.
type CommittedRead = (u64, u64, Vec<(u32, u64)>);

/// The group rules: no read of committed offsets below an offset acknowledged before it was
/// invoked; no acknowledged commit past an offset no member was delivered.
fn check_group(report: &mut Report, group: &GroupOps) {
    for (invoked, index, offsets) in &group.reads {
        let read: HashMap<u32, u64> = offsets.iter().copied().collect();
        // The highest offset acknowledged per partition before this read started.
        let mut floor: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        for &(acked, p, offset) in &group.commits {
            if acked < *invoked && floor.get(&p).is_none_or(|(o, _)| *o < offset) {
                floor.insert(p, (offset, acked));
            }
        }
        for (p, (offset, acked)) in floor {
            let now = read.get(&p).copied();
            if now.is_none_or(|now| now < offset) {
                report.add(Kind::CommitRegressed, || {
                    format!(
                        "partition {p}: offset {offset} committed (op {acked}), then read as {now:?} (op {index})"
                    )
                });
            }
        }
    }
    for &(index, p, offset) in &group.commits {
        let delivered = group.delivered.get(&p);
        if let Some(missing) = (0..offset).find(|o| !delivered.is_some_and(|d| d.contains(o))) {
            report.add(Kind::CommitSkip, || {
                format!(
                    "partition {p}: offset {offset} committed (op {index}) but offset {missing} was never delivered to a member"
                )
            });
        }
    }
}

/// One poll, against the previous record this process read from the partition.
fn check_poll(
    report: &mut Report,
    op: &Op,
    partition: u32,
    records: &[Read],
    last_polled: &mut HashMap<(i64, u32), u64>,
) {
    let key = (op.process, partition);
    let expected_first = last_polled.get(&key).map(|last| last + 1).or(op.value.from);
    check_contiguous(report, op, partition, records, expected_first);
    if let Some(&(last, _)) = records.last() {
        last_polled.insert(key, last);
    }
}

/// The records of one read are at consecutive offsets, from `expected_first` when given.
fn check_contiguous(
    report: &mut Report,
    op: &Op,
    p: u32,
    records: &[Read],
    expected_first: Option<u64>,
) {
    let mut expected = expected_first;
    for &(offset, value) in records {
        if let Some(next) = expected {
            if offset > next {
                report.add(Kind::PollSkip, || {
                    format!(
                        "process {} read {value} at {p}/{offset} where {p}/{next} was next (op {}): offsets {next}..{offset} skipped",
                        op.process, op.index
                    )
                });
            } else if offset < next {
                report.add(Kind::NonmonotonicPoll, || {
                    format!(
                        "process {} read {value} at {p}/{offset} after reaching {p}/{} (op {})",
                        op.process,
                        next - 1,
                        op.index
                    )
                });
            }
        }
        expected = Some(offset + 1);
    }
}

/// Every committed view of a partition (each replica's records below its high watermark, and the
/// drains) agrees at every offset, and a replica's committed records have no hole.
fn check_replicas(
    report: &mut Report,
    replicas: &[&Op],
    drains: &BTreeMap<u32, Vec<&[Read]>>,
    failed: &HashSet<u64>,
) {
    // partition → offset → (value, who said so)
    let mut committed: BTreeMap<u32, BTreeMap<u64, (u64, String)>> = BTreeMap::new();
    for (p, reads) in drains {
        let view = committed.entry(*p).or_default();
        for records in reads {
            for &(offset, value) in *records {
                view.entry(offset)
                    .or_insert_with(|| (value, "the drain".to_string()));
            }
        }
    }
    for op in replicas {
        report.counts.replicas_read += 1;
        let (Some(p), Some(node), Some(hw), Some(records)) = (
            op.value.partition,
            op.value.node,
            op.value.high_watermark,
            op.value.records.as_deref(),
        ) else {
            continue;
        };
        let drained_end = drains
            .get(&p)
            .into_iter()
            .flatten()
            .filter_map(|r| r.last().map(|&(o, _)| o + 1))
            .max()
            .unwrap_or(0);
        if hw < drained_end {
            report.counts.replicas_lagging += 1;
        }
        let mut expected = op.value.from.unwrap_or(0);
        let view = committed.entry(p).or_default();
        for &(offset, value) in records.iter().take_while(|(o, _)| *o < hw) {
            if offset != expected {
                report.add(Kind::ReplicaDivergence, || {
                    format!(
                        "node {node}'s replica of partition {p} has {value} at {offset} where {expected} was next, below its high watermark {hw}"
                    )
                });
            }
            expected = offset + 1;
            let who = format!("node {node}");
            match view.get(&offset) {
                Some((other, said)) if *other != value => {
                    report.add(Kind::ReplicaDivergence, || {
                        format!(
                            "partition {p} offset {offset}: {who} has {value} committed, {said} has {other}"
                        )
                    });
                }
                Some(_) => {}
                None => {
                    view.insert(offset, (value, who));
                }
            }
            if failed.contains(&value) {
                report.add(Kind::FailedWriteRead, || {
                    format!("node {node} holds {value} committed at {p}/{offset}, but its send failed definitely")
                });
            }
        }
        if expected < hw {
            report.add(Kind::ReplicaDivergence, || {
                format!(
                    "node {node}'s replica of partition {p} ends at {expected} below its high watermark {hw}"
                )
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Value;

    /// Builds histories line by line.
    #[derive(Default)]
    struct H(Vec<Op>);

    impl H {
        fn push(&mut self, process: i64, kind: OpType, f: F, value: Value) -> &mut Self {
            let index = self.0.len() as u64;
            self.0.push(Op {
                index,
                time: index * 1000,
                process,
                kind,
                f,
                value,
                error: None,
            });
            self
        }

        /// An acknowledged send.
        fn send(&mut self, process: i64, p: u32, value: u64, offset: u64) -> &mut Self {
            self.invoke_send(process, p, value).push(
                process,
                OpType::Ok,
                F::Send,
                Value {
                    partition: Some(p),
                    value: Some(value),
                    offset: Some(offset),
                    ..Value::default()
                },
            )
        }

        fn invoke_send(&mut self, process: i64, p: u32, value: u64) -> &mut Self {
            self.push(
                process,
                OpType::Invoke,
                F::Send,
                Value {
                    partition: Some(p),
                    value: Some(value),
                    ..Value::default()
                },
            )
        }

        fn end_send(&mut self, process: i64, kind: OpType, p: u32, value: u64) -> &mut Self {
            self.push(
                process,
                kind,
                F::Send,
                Value {
                    partition: Some(p),
                    value: Some(value),
                    ..Value::default()
                },
            )
        }

        fn read(&mut self, f: F, process: i64, p: u32, from: u64, records: &[Read]) -> &mut Self {
            let asked = Value {
                partition: Some(p),
                from: Some(from),
                ..Value::default()
            };
            self.push(process, OpType::Invoke, f, asked.clone()).push(
                process,
                OpType::Ok,
                f,
                Value {
                    records: Some(records.to_vec()),
                    ..asked
                },
            )
        }

        fn poll(&mut self, process: i64, p: u32, from: u64, records: &[Read]) -> &mut Self {
            self.read(F::Poll, process, p, from, records)
        }

        fn drain(&mut self, process: i64, p: u32, records: &[Read]) -> &mut Self {
            self.read(F::Drain, process, p, 0, records)
        }

        fn replica(&mut self, node: u64, p: u32, hw: u64, records: &[Read]) -> &mut Self {
            self.push(
                100,
                OpType::Ok,
                F::Replica,
                Value {
                    partition: Some(p),
                    node: Some(node),
                    from: Some(0),
                    high_watermark: Some(hw),
                    records: Some(records.to_vec()),
                    ..Value::default()
                },
            )
        }

        fn check(&self) -> Report {
            check(&self.0)
        }

        fn group_poll(&mut self, process: i64, p: u32, records: &[Read]) -> &mut Self {
            self.read(F::GroupPoll, process, p, records[0].0, records)
        }

        fn commit(&mut self, process: i64, kind: OpType, offsets: &[(u32, u64)]) -> &mut Self {
            let asked = Value {
                offsets: Some(offsets.to_vec()),
                ..Value::default()
            };
            self.push(process, OpType::Invoke, F::Commit, asked.clone())
                .push(process, kind, F::Commit, asked)
        }

        fn committed(&mut self, process: i64, offsets: &[(u32, u64)]) -> &mut Self {
            self.push(process, OpType::Invoke, F::Committed, Value::default())
                .push(
                    process,
                    OpType::Ok,
                    F::Committed,
                    Value {
                        offsets: Some(offsets.to_vec()),
                        ..Value::default()
                    },
                )
        }
    }

    /// The valid history, plus a group member that polled partition 0 and committed through
    /// it, and reads of the committed offsets.
    fn valid_group() -> H {
        let mut h = valid();
        h.group_poll(20, 0, &[(0, 1), (1, 2)])
            .commit(20, OpType::Ok, &[(0, 2)])
            .committed(30, &[(0, 2)])
            .group_poll(21, 0, &[(2, 4)])
            // A commit whose outcome is unknown may or may not show.
            .commit(21, OpType::Info, &[(0, 3)])
            .committed(30, &[(0, 2)])
            .commit(21, OpType::Ok, &[(0, 3)])
            .committed(30, &[(0, 3)]);
        h
    }

    #[test]
    fn a_group_that_commits_what_it_read_has_no_anomaly() {
        let report = valid_group().check();
        assert!(report.is_valid(), "{report}");
        assert_eq!(report.counts.commits_ok, 2);
        assert_eq!(report.counts.group_polls_ok, 2);
    }

    #[test]
    fn a_committed_offset_that_goes_back_is_found() {
        let mut h = valid_group();
        h.committed(30, &[(0, 2)]);
        assert_eq!(h.check().anomalies.get(&Kind::CommitRegressed), Some(&1));
        // ... or that is gone.
        let mut h = valid_group();
        h.committed(30, &[]);
        assert_eq!(h.check().anomalies.get(&Kind::CommitRegressed), Some(&1));
        // A read invoked before the commit was acknowledged may miss it.
        let mut h = valid();
        h.group_poll(20, 0, &[(0, 1)])
            .push(30, OpType::Invoke, F::Committed, Value::default())
            .commit(20, OpType::Ok, &[(0, 1)])
            .push(
                30,
                OpType::Ok,
                F::Committed,
                Value {
                    offsets: Some(Vec::new()),
                    ..Value::default()
                },
            );
        assert!(h.check().is_valid());
    }

    #[test]
    fn a_commit_past_records_no_member_got_is_found() {
        let mut h = valid();
        // Offset 1 of partition 0 was never delivered to a member, yet 3 is committed.
        h.group_poll(20, 0, &[(0, 1)])
            .group_poll(21, 0, &[(2, 4)])
            .commit(21, OpType::Ok, &[(0, 3)]);
        assert_eq!(h.check().anomalies.get(&Kind::CommitSkip), Some(&1));
        // A refused commit proves nothing.
        let mut h = valid();
        h.group_poll(20, 0, &[(0, 1)])
            .commit(20, OpType::Fail, &[(0, 3)]);
        assert!(h.check().is_valid());
    }

    /// Three values in partition 0, one in partition 1, read by a poller, drained and replicated.
    fn valid() -> H {
        let mut h = H::default();
        h.send(0, 0, 1, 0)
            .send(1, 0, 2, 1)
            .send(0, 1, 3, 0)
            .poll(10, 0, 0, &[(0, 1)])
            .send(0, 0, 4, 2)
            .poll(10, 0, 1, &[(1, 2), (2, 4)])
            .invoke_send(1, 0, 5)
            .end_send(1, OpType::Info, 0, 5)
            .invoke_send(0, 1, 6)
            .end_send(0, OpType::Fail, 1, 6)
            .drain(10, 0, &[(0, 1), (1, 2), (2, 4)])
            .drain(10, 1, &[(0, 3)])
            .replica(1, 0, 3, &[(0, 1), (1, 2), (2, 4)])
            .replica(2, 0, 2, &[(0, 1), (1, 2), (2, 9)]) // uncommitted tail may differ
            .replica(1, 1, 1, &[(0, 3)]);
        h
    }

    #[test]
    fn a_valid_history_has_no_anomaly() {
        let report = valid().check();
        assert!(report.is_valid(), "{report}");
        assert_eq!(report.counts.sends_ok, 4);
        assert_eq!(report.counts.sends_fail, 1);
        assert_eq!(report.counts.sends_info, 1);
        assert_eq!(report.counts.drains_ok, 2);
        assert_eq!(report.counts.replicas_read, 3);
        assert_eq!(report.counts.replicas_lagging, 1);
    }

    #[test]
    fn an_unknown_outcome_may_appear_once_at_the_end() {
        let mut h = valid();
        h.drain(11, 0, &[(0, 1), (1, 2), (2, 4), (3, 5)]);
        let report = h.check();
        assert!(report.is_valid(), "{report}");
    }

    #[test]
    fn an_acknowledged_value_missing_from_the_drain_is_lost() {
        let mut h = H::default();
        h.send(0, 0, 1, 0).send(0, 0, 2, 1).drain(10, 0, &[(0, 1)]);
        let report = h.check();
        assert_eq!(report.count(Kind::LostWrite), 1, "{report}");
        assert!(report.examples[&Kind::LostWrite][0].contains("value 2"));
    }

    #[test]
    fn a_value_lost_in_one_of_two_drains_is_lost() {
        let mut h = H::default();
        h.send(0, 0, 1, 0).drain(10, 0, &[(0, 1)]).drain(11, 0, &[]);
        assert_eq!(h.check().count(Kind::LostWrite), 1);
    }

    #[test]
    fn a_polled_value_missing_from_the_drain_is_lost() {
        // Its send's outcome is unknown, but a poll read it: it was committed.
        let mut h = H::default();
        h.send(0, 0, 1, 0)
            .invoke_send(1, 0, 2)
            .end_send(1, OpType::Info, 0, 2)
            .poll(10, 0, 0, &[(0, 1), (1, 2)])
            .drain(10, 0, &[(0, 1)]);
        let report = h.check();
        assert_eq!(report.count(Kind::LostWrite), 1, "{report}");
        assert!(report.examples[&Kind::LostWrite][0].contains("polled"));
    }

    #[test]
    fn committed_replica_records_count_as_reads() {
        let mut h = H::default();
        h.send(0, 0, 1, 0)
            .drain(10, 0, &[(0, 1)])
            .replica(1, 0, 2, &[(0, 1), (1, 55)]);
        let report = h.check();
        assert_eq!(report.count(Kind::UnexpectedValue), 1, "{report}");
        // Beyond the replica's high watermark nothing is claimed.
        let mut h = H::default();
        h.send(0, 0, 1, 0)
            .drain(10, 0, &[(0, 1)])
            .replica(1, 0, 1, &[(0, 1), (1, 55)]);
        assert!(h.check().is_valid());
    }

    #[test]
    fn a_replica_that_cannot_be_read_after_the_heal_is_reported() {
        let mut h = H::default();
        h.send(0, 0, 1, 0).drain(10, 0, &[(0, 1)]).push(
            100,
            OpType::Info,
            F::Replica,
            Value {
                partition: Some(0),
                node: Some(2),
                ..Value::default()
            },
        );
        assert_eq!(h.check().count(Kind::ReplicaUnreadable), 1);
    }

    #[test]
    fn no_drain_of_a_partition_is_reported() {
        let mut h = H::default();
        h.send(0, 0, 1, 0).send(0, 1, 2, 0).drain(10, 0, &[(0, 1)]);
        let report = h.check();
        assert_eq!(report.count(Kind::DrainIncomplete), 1, "{report}");
        assert_eq!(report.count(Kind::LostWrite), 0);
    }

    #[test]
    fn a_value_at_two_offsets_is_a_duplicate() {
        let mut h = H::default();
        h.send(0, 0, 1, 0)
            .send(0, 0, 2, 1)
            .drain(10, 0, &[(0, 1), (1, 2), (2, 1)]);
        let report = h.check();
        assert_eq!(report.count(Kind::Duplicate), 1, "{report}");
        assert_eq!(report.count(Kind::InconsistentOffset), 0);
    }

    #[test]
    fn a_read_at_another_offset_than_acknowledged_is_caught() {
        let mut h = H::default();
        h.send(0, 0, 1, 0)
            .send(0, 0, 2, 1)
            .drain(10, 0, &[(0, 2), (1, 1)]);
        let report = h.check();
        assert_eq!(report.count(Kind::InconsistentOffset), 2, "{report}");
        assert_eq!(report.count(Kind::Duplicate), 2);
    }

    #[test]
    fn two_values_at_one_offset_are_inconsistent() {
        let mut h = H::default();
        h.invoke_send(0, 0, 1)
            .end_send(0, OpType::Info, 0, 1)
            .invoke_send(1, 0, 2)
            .end_send(1, OpType::Info, 0, 2)
            .poll(10, 0, 0, &[(0, 1)])
            .poll(11, 0, 0, &[(0, 2)])
            .drain(10, 0, &[(0, 2)]);
        let report = h.check();
        assert_eq!(report.count(Kind::InconsistentOffset), 1, "{report}");
        // 1 was read, so committed, and then gone.
        assert_eq!(report.count(Kind::LostWrite), 1);
    }

    #[test]
    fn a_value_never_sent_is_unexpected() {
        let mut h = H::default();
        h.send(0, 0, 1, 0).drain(10, 0, &[(0, 1), (1, 77)]);
        let report = h.check();
        assert_eq!(report.count(Kind::UnexpectedValue), 1, "{report}");
        assert!(report.examples[&Kind::UnexpectedValue][0].contains("77"));
    }

    #[test]
    fn a_definitely_failed_send_must_never_be_read() {
        let mut h = H::default();
        h.invoke_send(0, 0, 1)
            .end_send(0, OpType::Fail, 0, 1)
            .drain(10, 0, &[(0, 1)]);
        assert_eq!(h.check().count(Kind::FailedWriteRead), 1);
    }

    #[test]
    fn a_poll_that_jumps_ahead_skips() {
        let mut h = H::default();
        h.send(0, 0, 1, 0)
            .send(0, 0, 2, 1)
            .send(0, 0, 3, 2)
            .poll(10, 0, 0, &[(0, 1)])
            .poll(10, 0, 1, &[(2, 3)])
            .drain(10, 0, &[(0, 1), (1, 2), (2, 3)]);
        let report = h.check();
        assert_eq!(report.count(Kind::PollSkip), 1, "{report}");
        assert_eq!(report.count(Kind::NonmonotonicPoll), 0);
    }

    #[test]
    fn a_gap_inside_one_read_skips() {
        let mut h = H::default();
        h.send(0, 0, 1, 0)
            .send(0, 0, 2, 1)
            .send(0, 0, 3, 2)
            .poll(10, 0, 0, &[(0, 1), (2, 3)])
            .drain(10, 0, &[(0, 1), (1, 2), (2, 3)]);
        assert_eq!(h.check().count(Kind::PollSkip), 1);
    }

    #[test]
    fn a_drain_must_start_at_the_log_start() {
        let mut h = H::default();
        h.send(0, 0, 1, 0).send(0, 0, 2, 1).drain(10, 0, &[(1, 2)]);
        let report = h.check();
        assert_eq!(report.count(Kind::PollSkip), 1, "{report}");
        assert_eq!(report.count(Kind::LostWrite), 1);
    }

    #[test]
    fn a_poll_that_goes_back_is_nonmonotonic() {
        let mut h = H::default();
        h.send(0, 0, 1, 0)
            .send(0, 0, 2, 1)
            .poll(10, 0, 0, &[(0, 1), (1, 2)])
            .poll(10, 0, 2, &[(1, 2)])
            .drain(10, 0, &[(0, 1), (1, 2)]);
        let report = h.check();
        assert_eq!(report.count(Kind::NonmonotonicPoll), 1, "{report}");
        // Another consumer process may read from anywhere.
        let mut h = H::default();
        h.send(0, 0, 1, 0)
            .poll(10, 0, 0, &[(0, 1)])
            .poll(11, 0, 0, &[(0, 1)])
            .drain(10, 0, &[(0, 1)]);
        assert!(h.check().is_valid());
    }

    #[test]
    fn acknowledgements_going_back_within_a_producer_are_nonmonotonic() {
        let mut h = H::default();
        h.send(0, 0, 1, 5).send(0, 0, 2, 3);
        let report = h.check();
        assert_eq!(report.count(Kind::NonmonotonicSend), 1, "{report}");
        // Different producers, or different partitions, are not ordered.
        let mut h = H::default();
        h.send(0, 0, 1, 5).send(1, 0, 2, 3).send(0, 1, 3, 0);
        assert_eq!(h.check().count(Kind::NonmonotonicSend), 0);
    }

    #[test]
    fn replicas_that_disagree_below_their_watermarks_diverge() {
        let mut h = H::default();
        h.send(0, 0, 1, 0)
            .send(0, 0, 2, 1)
            .drain(10, 0, &[(0, 1), (1, 2)])
            .replica(1, 0, 2, &[(0, 1), (1, 2)])
            .replica(2, 0, 2, &[(0, 1), (1, 9)]);
        let report = h.check();
        assert_eq!(report.count(Kind::ReplicaDivergence), 1, "{report}");
        assert!(report.examples[&Kind::ReplicaDivergence][0].contains("node 2"));
    }

    #[test]
    fn replicas_are_compared_beyond_the_drain_too() {
        let mut h = H::default();
        h.send(0, 0, 1, 0)
            .drain(10, 0, &[(0, 1)])
            .invoke_send(0, 0, 2)
            .end_send(0, OpType::Info, 0, 2)
            .invoke_send(1, 0, 3)
            .end_send(1, OpType::Info, 0, 3)
            .replica(1, 0, 2, &[(0, 1), (1, 2)])
            .replica(2, 0, 2, &[(0, 1), (1, 3)]);
        assert_eq!(h.check().count(Kind::ReplicaDivergence), 1);
    }

    #[test]
    fn a_hole_in_a_replica_below_its_watermark_diverges() {
        let mut h = H::default();
        h.send(0, 0, 1, 0)
            .send(0, 0, 2, 1)
            .send(0, 0, 3, 2)
            .drain(10, 0, &[(0, 1), (1, 2), (2, 3)])
            .replica(1, 0, 3, &[(0, 1), (2, 3)]);
        assert_eq!(h.check().count(Kind::ReplicaDivergence), 1);
        let mut h = H::default();
        h.send(0, 0, 1, 0)
            .send(0, 0, 2, 1)
            .drain(10, 0, &[(0, 1), (1, 2)])
            .replica(1, 0, 2, &[(0, 1)]);
        assert_eq!(h.check().count(Kind::ReplicaDivergence), 1);
    }
}
