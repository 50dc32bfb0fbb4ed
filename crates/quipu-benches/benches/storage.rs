//! Storage engine benchmarks: append throughput under each fsync policy beside a raw
//! `write` + `fdatasync` of the same bytes, warm reads, lookups, and open (recovery) time.
//! Figures go to `docs/benchmarks.md`. Data lives in a temporary directory under `$TMPDIR`
//! (default `/tmp`); each append benchmark resets its log at 512 MiB, outside the timed region.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]
// tests unwrap; sizes are small
// The mmap + msync baseline maps a file of its own; nothing else touches that file.
#![allow(unsafe_code)]

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use quipu_record::{BatchBuilder, Compression};
use quipu_storage::{FsyncPolicy, Log, LogConfig, NewEntry, Offset};

const RECORD_BYTES: usize = 1024;
const LOG_BYTES_MAX: u64 = 512 * 1024 * 1024;

fn batch_of(batch_bytes: usize, timestamp_ms: i64) -> Bytes {
    let mut builder = BatchBuilder::new(0, Compression::None);
    let value = vec![0x5a_u8; RECORD_BYTES - 40];
    for i in 0..batch_bytes / RECORD_BYTES {
        builder.push(
            timestamp_ms + i as i64,
            Some(format!("key-{i:08}").as_bytes()),
            Some(&value),
            &[],
        );
    }
    builder.build().expect("non-empty batch")
}

fn config(fsync: FsyncPolicy) -> LogConfig {
    LogConfig {
        fsync,
        ..LogConfig::default()
    }
}

fn append_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group.measurement_time(Duration::from_secs(6));
    for batch_bytes in [16 * 1024, 256 * 1024] {
        let batch = batch_of(batch_bytes, 0);
        group.throughput(Throughput::Bytes(batch.len() as u64));
        let kib = batch_bytes / 1024;

        // The baseline: the same bytes appended to a plain file, one fdatasync per batch.
        for (name, preallocate) in [
            ("raw_write_fdatasync", false),
            ("raw_write_fdatasync_prealloc", true),
        ] {
            group.bench_function(BenchmarkId::new(name, format!("{kib}KiB")), |b| {
                let dir = tempfile::tempdir().expect("tempdir");
                let path = dir.path().join("raw");
                let file = OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .read(true)
                    .write(true)
                    .open(&path)
                    .expect("raw file");
                let mut position = 0u64;
                let prepare = |file: &std::fs::File| {
                    file.set_len(0).expect("truncate");
                    if preallocate {
                        rustix::fs::fallocate(
                            file,
                            rustix::fs::FallocateFlags::empty(),
                            0,
                            LOG_BYTES_MAX + 1024 * 1024,
                        )
                        .expect("fallocate");
                    }
                    file.sync_all().expect("sync");
                };
                prepare(&file);
                b.iter_custom(|iters| {
                    let mut elapsed = Duration::ZERO;
                    for _ in 0..iters {
                        if position > LOG_BYTES_MAX {
                            prepare(&file);
                            position = 0;
                        }
                        let start = Instant::now();
                        file.write_all_at(&batch, position).expect("write");
                        file.sync_data().expect("fdatasync");
                        elapsed += start.elapsed();
                        position += batch.len() as u64;
                    }
                    elapsed
                });
            });
        }

        // The alternative design: copy into a shared map of a preallocated file, then msync
        // (MS_SYNC) the written range.
        group.bench_function(
            BenchmarkId::new("raw_mmap_msync_prealloc", format!("{kib}KiB")),
            |b| {
                let dir = tempfile::tempdir().expect("tempdir");
                let file = OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .read(true)
                    .write(true)
                    .open(dir.path().join("mapped"))
                    .expect("mapped file");
                let len = LOG_BYTES_MAX + 1024 * 1024;
                rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, len)
                    .expect("fallocate");
                file.sync_all().expect("sync");
                // SAFETY: the file is private to this benchmark and keeps its length while mapped.
                let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.expect("map");
                let mut position = 0usize;
                b.iter_custom(|iters| {
                    let mut elapsed = Duration::ZERO;
                    for _ in 0..iters {
                        if position as u64 > LOG_BYTES_MAX {
                            position = 0;
                        }
                        let start = Instant::now();
                        map[position..position + batch.len()].copy_from_slice(&batch);
                        map.flush_range(position, batch.len()).expect("msync");
                        elapsed += start.elapsed();
                        position += batch.len();
                    }
                    elapsed
                });
            },
        );

        for (name, fsync) in [
            ("fsync_always", FsyncPolicy::Always),
            ("fsync_interval_100ms", FsyncPolicy::IntervalMs(100)),
            ("fsync_never", FsyncPolicy::Never),
        ] {
            group.bench_function(BenchmarkId::new(name, format!("{kib}KiB")), |b| {
                let dir = tempfile::tempdir().expect("tempdir");
                let log = Log::open(dir.path(), config(fsync)).expect("open");
                b.iter_custom(|iters| {
                    let mut elapsed = Duration::ZERO;
                    for _ in 0..iters {
                        if log.size_bytes() > LOG_BYTES_MAX {
                            log.reset(log.next_index(), log.next_offset())
                                .expect("reset");
                        }
                        let index = log.next_index();
                        let entry = NewEntry::records(index, 1, batch.clone());
                        let start = Instant::now();
                        log.append(std::slice::from_ref(&entry)).expect("append");
                        log.sync_by_policy(index + 1).expect("sync");
                        elapsed += start.elapsed();
                    }
                    elapsed
                });
            });
        }
    }
    group.finish();
}

/// Group commit: 4 appenders, each waiting for its own batch to be durable.
fn group_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("group_commit");
    group.measurement_time(Duration::from_secs(6));
    let batch = batch_of(16 * 1024, 0);
    let appenders = 4u64;
    group.throughput(Throughput::Bytes(batch.len() as u64 * appenders));
    group.bench_function("fsync_always_16KiB_x4_appenders", |b| {
        let dir = tempfile::tempdir().expect("tempdir");
        let log =
            std::sync::Arc::new(Log::open(dir.path(), config(FsyncPolicy::Always)).expect("open"));
        let turn = std::sync::Arc::new(std::sync::Mutex::new(()));
        b.iter_custom(|iters| {
            if log.size_bytes() > LOG_BYTES_MAX {
                log.reset(log.next_index(), log.next_offset())
                    .expect("reset");
            }
            let start = Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..appenders {
                    let (log, turn, batch) = (&log, &turn, &batch);
                    scope.spawn(move || {
                        for _ in 0..iters {
                            let appended = {
                                let _turn = turn.lock().expect("turn");
                                let index = log.next_index();
                                log.append(&[NewEntry::records(index, 1, batch.clone())])
                                    .expect("append")
                            };
                            log.sync_to(appended.last_index + 1).expect("sync");
                        }
                    });
                }
            });
            start.elapsed()
        });
    });
    group.finish();
}

/// Fills a log with `bytes` of 16 KiB batches, one ms of timestamp per batch.
fn fill(dir: &Path, bytes: u64, config: LogConfig) -> Log {
    let log = Log::open(dir, config).expect("open");
    let mut index = log.next_index();
    let mut written = 0u64;
    let mut entries = Vec::new();
    while written < bytes {
        entries.clear();
        for _ in 0..16 {
            entries.push(NewEntry::records(
                index,
                1,
                batch_of(16 * 1024, index as i64 * 1000),
            ));
            index += 1;
        }
        written += entries.iter().map(|e| e.payload.len() as u64).sum::<u64>();
        log.append(&entries).expect("append");
    }
    log.sync().expect("sync");
    log
}

fn reads_and_lookups(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = fill(dir.path(), 256 * 1024 * 1024, config(FsyncPolicy::Never));
    let end = log.next_offset();
    let mut group = c.benchmark_group("read");
    // Warm reads: 1 MiB fetches walking the whole log, as a consumer replaying history does.
    group.throughput(Throughput::Bytes(1024 * 1024));
    group.bench_function("read_records_1MiB_warm", |b| {
        let mut from = Offset(0);
        b.iter(|| {
            let got = log.read_records(from, end, 1024 * 1024).expect("read");
            from = got.last().map_or(Offset(0), |e| e.next_offset());
            if from >= end {
                from = Offset(0);
            }
            let sum: usize = got.iter().map(|e| e.payload.len()).sum();
            std::hint::black_box(sum)
        });
    });
    group.throughput(Throughput::Elements(1));
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = move |bound: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % bound
    };
    let next_index = log.next_index();
    group.bench_function("lookup_by_index", |b| {
        b.iter(|| {
            log.read_entries(random(next_index), next_index, 1)
                .expect("read")
                .len()
        })
    });
    group.bench_function("lookup_by_offset", |b| {
        b.iter(|| {
            log.read_records(Offset(random(end.0)), end, 1)
                .expect("read")
                .len()
        })
    });
    group.bench_function("lookup_by_timestamp", |b| {
        b.iter(|| {
            log.offset_for_timestamp(random(next_index) as i64 * 1000 + 7, end)
                .expect("lookup")
        })
    });
    group.finish();
}

fn open_time(c: &mut Criterion) {
    // A 1 GiB log of 256 MiB segments whose active segment is nearly full: the worst case for
    // crash recovery, which verifies every frame of the active segment.
    let dir = tempfile::tempdir().expect("tempdir");
    let segment_bytes_max = 256 * 1024 * 1024;
    let cfg = LogConfig {
        segment_bytes_max,
        ..config(FsyncPolicy::Never)
    };
    let log = fill(
        dir.path(),
        1024 * 1024 * 1024 - 8 * 1024 * 1024,
        cfg.clone(),
    );
    log.close().expect("close");
    let mut group = c.benchmark_group("open_1GiB");
    group.sample_size(10);
    group.bench_function("after_clean_close", |b| {
        b.iter_custom(|iters| time_opens(dir.path(), &cfg, iters, true));
    });
    group.bench_function("after_crash", |b| {
        // No clean close: each next open verifies the active segment.
        b.iter_custom(|iters| time_opens(dir.path(), &cfg, iters, false));
    });
    group.finish();
}

/// Opens the log in `dir` `iters` times, each then closed cleanly (`clean`) or dropped as a crash
/// leaves it; the time of the opens alone.
fn time_opens(dir: &Path, config: &LogConfig, iters: u64, clean: bool) -> Duration {
    let mut elapsed = Duration::ZERO;
    for _ in 0..iters {
        let config = config.clone();
        let start = Instant::now();
        let log = Log::open(dir, config).expect("open");
        elapsed += start.elapsed();
        if clean {
            log.close().expect("close");
        }
    }
    elapsed
}

criterion_group!(
    benches,
    append_throughput,
    group_commit,
    reads_and_lookups,
    open_time
);
criterion_main!(benches);
