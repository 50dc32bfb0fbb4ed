//! Property test: random sequences of append, read, truncate, purge, reset and reopen agree with
//! a simple in-memory model of the log.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // tests unwrap; sizes are small

mod common;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use quipu_record::BatchHeader;
use quipu_storage::{EntryKind, FsyncPolicy, Log, LogConfig, NewEntry, Offset};

#[derive(Debug, Clone)]
enum Op {
    /// Entries to append: (is_records, record count or payload length, term bump).
    Append(Vec<(bool, usize, bool)>),
    Truncate(u8),
    Purge(u8),
    Reset(u8),
    Reopen {
        clean: bool,
    },
    ReadOffsets(u8, u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec((any::<bool>(), 0usize..6, prop::bool::weighted(0.1)), 1..5).prop_map(Op::Append),
        1 => any::<u8>().prop_map(Op::Truncate),
        1 => any::<u8>().prop_map(Op::Purge),
        1 => (0u8..3).prop_map(Op::Reset),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
        2 => (any::<u8>(), any::<u16>()).prop_map(|(at, bytes)| Op::ReadOffsets(at, bytes)),
    ]
}

#[derive(Debug, Clone)]
struct ModelEntry {
    index: u64,
    term: u64,
    base_offset: u64,
    record_count: u32,
    original: NewEntry,
}

#[derive(Debug, Default)]
struct Model {
    entries: Vec<ModelEntry>,
    first_index: u64,
    start_offset: u64,
    next_index: u64,
    next_offset: u64,
    last_term: u64,
}

fn config() -> LogConfig {
    LogConfig {
        fsync: FsyncPolicy::Never,
        ..small_config()
    }
}

fn check(log: &Log, model: &Model) {
    assert_eq!(log.next_index(), model.next_index);
    assert_eq!(log.next_offset(), Offset(model.next_offset));
    assert_eq!(log.first_index(), model.first_index);
    assert_eq!(log.start_offset(), Offset(model.start_offset));
    let got = log
        .read_entries(model.first_index, model.next_index, u64::MAX)
        .unwrap();
    assert_eq!(got.len(), model.entries.len());
    for (entry, want) in got.iter().zip(&model.entries) {
        assert_eq!(
            (
                entry.index,
                entry.term,
                entry.base_offset.0,
                entry.record_count
            ),
            (want.index, want.term, want.base_offset, want.record_count)
        );
        assert_eq!(entry.kind, want.original.kind);
        let original = &want.original.payload;
        match entry.kind {
            EntryKind::Internal => assert_eq!(entry.payload, *original),
            EntryKind::Records => {
                // Batch by batch: each gets the next offsets and the term, nothing else changes.
                let stored = quipu_record::batch_ranges(&entry.payload, usize::MAX);
                let sent = quipu_record::batch_ranges(original, usize::MAX);
                let mut base = want.base_offset;
                let mut batches = 0;
                for (stored, sent) in stored.zip(sent) {
                    let (stored, sent) =
                        (&entry.payload[stored.unwrap()], &original[sent.unwrap()]);
                    let header = BatchHeader::parse(stored).unwrap();
                    assert_eq!(header.base_offset as u64, base);
                    assert_eq!(header.partition_leader_epoch as u64, want.term);
                    assert_eq!(stored[8..12], sent[8..12]);
                    assert_eq!(stored[16..], sent[16..]);
                    base += header.offset_count();
                    batches += 1;
                }
                assert_eq!(entry.payload.len(), original.len());
                assert_eq!(base, want.base_offset + u64::from(want.record_count));
                assert!(batches >= 1);
            }
        }
    }
}

fn apply(dir: &std::path::Path, log: &mut Option<Log>, model: &mut Model, op: &Op, tag: &mut u64) {
    let current = log.as_ref().unwrap();
    match op {
        Op::Append(specs) => {
            let mut batch_entries = Vec::new();
            let (mut index, mut offset, mut term) =
                (model.next_index, model.next_offset, model.last_term.max(1));
            for (is_records, size, bump) in specs {
                term += u64::from(*bump);
                *tag += 1;
                let entry = if *is_records {
                    // Every third records entry holds two batches, as a leader's group commit
                    // writes them.
                    let second = if tag.is_multiple_of(3) {
                        size / 2 + 1
                    } else {
                        0
                    };
                    // Values shorter when there are two, so that entries stay as large.
                    let value_len = (*tag as usize * 37) % 300 / if second > 0 { 2 } else { 1 };
                    let mut payload = batch(*tag, size + 1, value_len, *tag as i64).to_vec();
                    if second > 0 {
                        payload.extend_from_slice(&batch(*tag, second, value_len, 0));
                    }
                    NewEntry::records(index, term, Bytes::from(payload))
                } else {
                    NewEntry::internal(index, term, Bytes::from(vec![*tag as u8; size * 40]))
                };
                let count = if *is_records {
                    quipu_record::offset_count_of(&entry.payload).unwrap() as u32
                } else {
                    0
                };
                model.entries.push(ModelEntry {
                    index,
                    term,
                    base_offset: offset,
                    record_count: count,
                    original: entry.clone(),
                });
                batch_entries.push(entry);
                index += 1;
                offset += u64::from(count);
            }
            if tag.is_multiple_of(2) {
                current.append(&batch_entries).unwrap();
            } else {
                // The entries an append keeps are what reading them back returns (the last
                // ones, all of them unless the append rolled a segment).
                let (appended, kept) = current.append_kept(&batch_entries).unwrap();
                assert!(!kept.is_empty() && kept.len() <= batch_entries.len());
                assert_eq!(kept.last().unwrap().index, appended.last_index);
                let first_kept = kept[0].index;
                let read = current
                    .read_entries(first_kept, appended.last_index + 1, u64::MAX)
                    .unwrap();
                assert_eq!(kept, read);
            }
            (model.next_index, model.next_offset, model.last_term) = (index, offset, term);
        }
        Op::Truncate(at) => {
            let span = model.next_index - model.first_index;
            let keep = u64::from(*at) % (span + 1);
            let keep_next = model.first_index + keep;
            if keep_next == 0 {
                return;
            }
            current.truncate_suffix(keep_next - 1).unwrap();
            model.entries.truncate(keep as usize);
            model.next_index = keep_next;
            model.next_offset = model.entries.last().map_or(model.start_offset, |e| {
                e.base_offset + u64::from(e.record_count)
            });
            model.last_term = model.entries.last().map_or(0, |e| e.term);
        }
        Op::Purge(at) => {
            let span = model.next_index - model.first_index;
            let before = model.first_index + u64::from(*at) % (span + 1);
            current.purge_prefix(before).unwrap();
            let first = current.first_index();
            assert!(
                first <= before.max(model.first_index),
                "purged past the bound"
            );
            let dropped = (first - model.first_index) as usize;
            if dropped > 0 {
                model.start_offset = model.entries[dropped - 1].base_offset
                    + u64::from(model.entries[dropped - 1].record_count);
            }
            model.entries.drain(..dropped);
            model.first_index = first;
        }
        Op::Reset(skip) => {
            let (index, offset) = (
                model.next_index + u64::from(*skip),
                model.next_offset + u64::from(*skip) * 3,
            );
            current.reset(index, Offset(offset)).unwrap();
            *model = Model {
                first_index: index,
                next_index: index,
                start_offset: offset,
                next_offset: offset,
                ..Model::default()
            };
        }
        Op::Reopen { clean } => {
            let old = log.take().unwrap();
            if *clean {
                old.close().unwrap();
            } else {
                drop(old);
            }
            *log = Some(Log::open(dir, config()).unwrap());
            // After a reopen the model's last term is what the log recovered.
            model.last_term = model.entries.last().map_or(0, |e| e.term);
        }
        Op::ReadOffsets(at, max_bytes) => {
            let span = model.next_offset - model.start_offset;
            let from = model.start_offset + u64::from(*at) % (span + 1);
            let got = current
                .read_records(
                    Offset(from),
                    Offset(model.next_offset),
                    u64::from(*max_bytes),
                )
                .unwrap();
            let want: Vec<&ModelEntry> = model
                .entries
                .iter()
                .filter(|e| {
                    e.original.kind == EntryKind::Records
                        && e.base_offset + u64::from(e.record_count) > from
                })
                .collect();
            assert!(got.len() <= want.len());
            if !want.is_empty() {
                assert!(!got.is_empty(), "the first batch is always returned");
            }
            let mut total = 0;
            for (i, (entry, want)) in got.iter().zip(&want).enumerate() {
                assert_eq!(entry.index, want.index);
                total += entry.payload.len() as u64;
                if i > 0 {
                    assert!(total <= u64::from(*max_bytes));
                }
            }
            if got.len() < want.len() {
                assert!(
                    total + want[got.len()].original.payload.len() as u64 > u64::from(*max_bytes)
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn log_agrees_with_model(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Some(Log::open(dir.path(), config()).unwrap());
        let mut model = Model::default();
        let mut tag = 0;
        for op in &ops {
            apply(dir.path(), &mut log, &mut model, op, &mut tag);
            check(log.as_ref().unwrap(), &model);
        }
    }
}

/// The model starts with term 0 entries allowed: a fresh log accepts term 0.
#[test]
fn fresh_log_is_empty_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(
        (
            log.first_index(),
            log.next_index(),
            log.next_offset(),
            log.last_term()
        ),
        (0, 0, Offset(0), 0)
    );
    assert!(log.read_entries(0, 10, 100).unwrap().is_empty());
    assert!(
        log.read_records(Offset(0), Offset(0), 100)
            .unwrap()
            .is_empty()
    );
}
