//! The history: every operation of every client process, as invoked and as completed, plus the
//! nemesis's faults, one JSON object per line (`history.jsonl`).
//!
//! An operation appears twice: an `invoke` line when the process starts it and a completion line
//! (`ok`, `fail` or `info`) with the same `process` and `f` when it ends. `fail` means the server
//! proved the operation did nothing and never will; `info` means the outcome is unknown (a
//! timeout, a lost connection, an unknown-outcome answer). The checker reads only this file.

use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The process id of the nemesis's lines.
pub const NEMESIS: i64 = -1;

/// What a line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    /// The operation started.
    Invoke,
    /// It completed and did what was asked.
    Ok,
    /// It definitely did nothing.
    Fail,
    /// Its outcome is unknown (or, for the nemesis, a fault started or ended).
    Info,
}

/// The operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum F {
    /// Append one value to one partition (acks=all).
    Send,
    /// Read a partition from the consumer's position.
    Poll,
    /// After the faults healed: read a whole partition from its start to its end.
    Drain,
    /// After the drains: one replica's log, read on its node (`Data.ReadReplica`).
    Replica,
    /// A fault starting (`invoke`) or healed (`info`).
    Nemesis,
    /// A consumer group member's poll: records of one partition it was assigned, in the order
    /// returned (its position moves past them).
    GroupPoll,
    /// A group member commits its positions (`offsets`: per partition, the next offset to read).
    Commit,
    /// The group's committed offsets as its coordinator reads them (`offsets`).
    Committed,
}

/// A record as read: (offset, value).
pub type Read = (u64, u64);

/// The operation's arguments and results; which fields are set depends on `f` and `type`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Value {
    /// The partition (the key, in Jepsen's terms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    /// Send: the value sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<u64>,
    /// Send ok: the offset the value was acknowledged at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Poll and drain: the offset read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// Poll, drain and replica ok: the records read, in the order returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<Vec<Read>>,
    /// Replica: the node read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<u64>,
    /// Replica ok: the replica's high watermark (records below it are committed, it says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_watermark: Option<u64>,
    /// Nemesis: what the fault is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    /// Commit and committed: per partition, the committed offset (the next one to read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offsets: Option<Vec<(u32, u64)>>,
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history, from 0.
    pub index: u64,
    /// Nanoseconds since the workload started.
    pub time: u64,
    /// The client process (the nemesis is [`NEMESIS`]).
    pub process: i64,
    /// Invoke or completion.
    #[serde(rename = "type")]
    pub kind: OpType,
    /// The operation.
    pub f: F,
    /// Arguments and results.
    pub value: Value,
    /// Why a `fail` or `info` ended so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Appends lines to a history file, numbering them. One writer per history.
#[derive(Debug)]
pub struct Recorder {
    out: std::io::BufWriter<std::fs::File>,
    next_index: u64,
    started: std::time::Instant,
}

impl Recorder {
    /// A new history at `path` (an existing file is replaced).
    pub fn create(path: &Path) -> std::io::Result<Recorder> {
        Ok(Recorder {
            out: std::io::BufWriter::new(std::fs::File::create(path)?),
            next_index: 0,
            started: std::time::Instant::now(),
        })
    }

    /// Appends one line and returns its index.
    pub fn record(
        &mut self,
        process: i64,
        kind: OpType,
        f: F,
        value: Value,
        error: Option<String>,
    ) -> std::io::Result<u64> {
        let op = Op {
            index: self.next_index,
            time: u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX),
            process,
            kind,
            f,
            value,
            error,
        };
        serde_json::to_writer(&mut self.out, &op)?;
        self.out.write_all(b"\n")?;
        self.next_index += 1;
        Ok(op.index)
    }

    /// Writes what is buffered to the file.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Reads a history file. A line that does not parse is an error naming its line number; a last
/// line cut short (the workload was killed mid-write) is ignored.
pub fn load(path: &Path) -> anyhow::Result<Vec<Op>> {
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot open the history {}: {e}", path.display()))?;
    // Streamed: a long run's history is hundreds of MB; only the parsed ops are kept.
    let mut lines = std::io::BufReader::new(file).lines().enumerate().peekable();
    let mut ops = Vec::new();
    while let Some((number, line)) = lines.next() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Op>(&line) {
            Ok(op) => ops.push(op),
            Err(_) if lines.peek().is_none() => break,
            Err(e) => anyhow::bail!("{} line {}: {e}", path.display(), number + 1),
        }
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_a_torn_last_line_is_ignored() {
        let dir = std::env::temp_dir().join(format!("qj-history-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("history.jsonl");
        let mut recorder = Recorder::create(&path).unwrap();
        let send = Value {
            partition: Some(2),
            value: Some(7),
            ..Value::default()
        };
        recorder
            .record(3, OpType::Invoke, F::Send, send.clone(), None)
            .unwrap();
        let acked = Value {
            offset: Some(41),
            ..send
        };
        recorder
            .record(3, OpType::Ok, F::Send, acked.clone(), None)
            .unwrap();
        recorder.flush().unwrap();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"{\"index\":2,\"ti").unwrap();
        let ops = load(&path).unwrap();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[1].value, acked);
        assert_eq!(ops[1].kind, OpType::Ok);
        assert_eq!(ops[1].index, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
