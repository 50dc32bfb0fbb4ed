//! Helpers shared by the storage integration tests.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // tests unwrap; sizes are small
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use quipu_record::{BatchBuilder, Compression};
use quipu_storage::{Clock, FsyncPolicy, LogConfig, NewEntry};

/// A clock the test moves by hand.
#[derive(Clone, Debug)]
pub struct ManualClock(pub Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start_ms: i64) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(start_ms)))
    }
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
    pub fn clock(&self) -> Clock {
        let now = Arc::clone(&self.0);
        Arc::new(move || now.load(Ordering::SeqCst))
    }
}

/// A small-segment config so that tests cross segment boundaries often.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 4096,
        entry_bytes_max: 2048,
        index_interval_bytes: 256,
        index_bytes_max: 64 * 16,
        preallocate_bytes: 1024,
        fsync: FsyncPolicy::Always,
        clock: ManualClock::new(1_000_000).clock(),
        ..LogConfig::default()
    }
}

/// A batch of `count` records whose values encode `(tag, i)`, timestamps from `timestamp_ms`.
pub fn batch(tag: u64, count: usize, value_len: usize, timestamp_ms: i64) -> Bytes {
    batch_with(tag, count, value_len, timestamp_ms, Compression::None)
}

pub fn batch_with(
    tag: u64,
    count: usize,
    value_len: usize,
    timestamp_ms: i64,
    compression: Compression,
) -> Bytes {
    let mut builder = BatchBuilder::new(0, compression);
    for i in 0..count {
        let mut value = format!("{tag}:{i}:").into_bytes();
        value.resize(value_len.max(value.len()), b'x');
        builder.push(
            timestamp_ms + i as i64,
            Some(format!("k{i}").as_bytes()),
            Some(&value),
            &[],
        );
    }
    builder.build().expect("non-empty batch builds")
}

pub fn records(
    index: u64,
    term: u64,
    tag: u64,
    count: usize,
    value_len: usize,
    timestamp_ms: i64,
) -> NewEntry {
    NewEntry::records(index, term, batch(tag, count, value_len, timestamp_ms))
}

pub fn internal(index: u64, term: u64, bytes: &[u8]) -> NewEntry {
    NewEntry::internal(index, term, Bytes::copy_from_slice(bytes))
}

/// The files of `dir` with extension `ext`, sorted.
pub fn files_with_extension(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

/// Copies every file of `from` into `to` (created if missing).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

/// A small deterministic generator (xorshift64) for test workloads.
pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}
