//! A healthy log directory (several segments, their indexes, a clean-shutdown marker) with one of
//! its files replaced by arbitrary bytes: opening it recovers or fails with an error naming the
//! damage, never a panic; what opens can be read.
#![no_main]

#[global_allocator]
static ALLOCATOR: quipu_alloc::ReservingAllocator = quipu_alloc::ReservingAllocator;

use std::path::PathBuf;
use std::sync::OnceLock;

fn config() -> quipu_storage::LogConfig {
    quipu_storage::LogConfig {
        segment_bytes_max: 4096,
        entry_bytes_max: 2048,
        index_interval_bytes: 256,
        index_bytes_max: 1024,
        preallocate_bytes: 0,
        ..quipu_storage::LogConfig::default()
    }
}

/// A log of 40 entries over several segments, closed cleanly, made once.
fn template() -> &'static (tempfile::TempDir, Vec<PathBuf>) {
    static TEMPLATE: OnceLock<(tempfile::TempDir, Vec<PathBuf>)> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = quipu_storage::Log::open(dir.path(), config()).expect("a fresh log");
        for index in 0..40u64 {
            let mut builder = quipu_record::BatchBuilder::new(0, quipu_record::Compression::None);
            builder.push(1_000 + index as i64, Some(b"key"), Some(&[b'v'; 200]), &[]);
            let batch = builder.build().expect("a batch");
            log.append(&[quipu_storage::NewEntry::records(index, 1, batch)])
                .expect("append");
        }
        log.close().expect("a clean close");
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .expect("list the log")
            .map(|e| e.expect("an entry").path())
            .filter(|p| p.file_name().is_some_and(|n| n != "LOCK"))
            .collect();
        files.sort();
        (dir, files)
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let (template, files) = template();
    let dir = tempfile::tempdir().expect("a temporary directory");
    for file in files {
        let name = file.file_name().expect("a file name");
        std::fs::copy(file, dir.path().join(name)).expect("copy the template");
    }
    let damaged = &files[usize::from(which) % files.len()];
    std::fs::write(dir.path().join(damaged.file_name().expect("a file name")), bytes)
        .expect("damage a file");
    let _ = template;
    let Ok(log) = quipu_storage::Log::open(dir.path(), config()) else {
        return;
    };
    let (first, next) = (log.first_index(), log.next_index());
    let _ = log.read_entries(first, next, u64::MAX);
    let _ = log.read_records(log.start_offset(), log.next_offset(), u64::MAX);
    let _ = log.offset_for_timestamp(1_010, log.next_offset());
});
