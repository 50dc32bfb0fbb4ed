//! Power-loss simulation (cargo feature `fault-injection`; without it every hook is a no-op).
//!
//! A `kill -9` never loses data that reached the page cache, so it cannot prove the fsync
//! discipline. This module records, for every file the engine touches, how far it was written and
//! how far that was synced, which files were created without a directory sync since, and which
//! memory-mapped index files were written since their last sync. [`power_loss`] then rewrites the
//! directory as a machine that lost power at that instant could have left it.
//!
//! Model: data written past the last sync is lost (zeroed, as a preallocated region reads) or, in
//! [`PowerLoss::TornTail`], a random prefix of it survives; data written since the last sync over
//! bytes that were durable (a recycled segment file, a header rewritten) goes back to those bytes,
//! or in [`PowerLoss::TornTail`] a random prefix of each such write survives; a file whose creation was not followed
//! by a directory sync disappears; a memory-mapped file written since its last sync loses a random
//! suffix of its content. Not modelled: a removal or rename that was not followed by a directory
//! sync (its old state cannot be reconstructed); the engine syncs the directory after each.
//!
//! Cost: every tracked operation takes one process-wide lock. A crate's bench targets are built
//! with its dev-dependencies, which turn the feature on here and in quipu-node, so the criterion
//! benchmarks live in `crates/quipu-benches`, which never does (opening a 1 GiB log after a
//! crash measured 44–45 ms with the model, 28 ms without). The table is kept by directory so
//! that a directory's sync or a power loss touches that directory's files only.
//! (Kept as one flat table, a directory sync walked every file the process tracked: with 3,000
//! replicas the idle bench's nodes needed 47 s to open and stopped for many minutes, every
//! vote saved behind the lock.)

#[cfg(feature = "fault-injection")]
pub use enabled::*;

#[cfg(not(feature = "fault-injection"))]
mod disabled {
    use std::path::Path;
    pub(crate) fn on_create(_: &Path) {}
    pub(crate) fn before_write(_: &std::fs::File, _: &Path, _: u64, _: u64) -> Option<u64> {
        None
    }
    pub(crate) fn on_write(_: &Path, _: u64, _: u64, _: Option<u64>) {}
    pub(crate) fn on_sync(_: &Path) {}
    pub(crate) fn on_set_len(_: &Path, _: u64) {}
    pub(crate) fn on_remove(_: &Path) {}
    pub(crate) fn on_rename(_: &Path, _: &Path) {}
    pub(crate) fn on_sync_dir(_: &Path) {}
    pub(crate) fn on_mmap_write(_: &Path) {}
    pub(crate) fn injected_failure(_: &Path) -> Option<std::io::Error> {
        None
    }
    pub(crate) fn injected_sync_failure(_: &Path) -> Option<std::io::Error> {
        None
    }
    pub(crate) fn injected_filesystem_sync_failure(_: &Path) -> Option<std::io::Error> {
        None
    }
    pub(crate) struct Written;
    pub(crate) fn written_under(_: &Path) -> Written {
        Written
    }
    pub(crate) fn on_filesystem_sync(_: Written) {}
    pub(crate) fn wait_while_held(_: &Path) {}
}
#[cfg(not(feature = "fault-injection"))]
pub(crate) use disabled::*;

#[cfg(feature = "fault-injection")]
mod enabled {
    use std::collections::HashMap;
    use std::ffi::{OsStr, OsString};
    use std::fs::{File, OpenOptions};
    use std::os::unix::fs::FileExt;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Mutex, MutexGuard};

    /// What a simulated power loss keeps of the data written after the last sync.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum PowerLoss {
        /// Everything not synced is lost.
        LoseUnsynced,
        /// A random prefix of each file's unsynced tail survives (a torn write); `seed` makes the
        /// choice reproducible.
        TornTail {
            /// Seed of the choice of surviving prefixes.
            seed: u64,
        },
    }

    /// What [`power_loss`] did, for the test's assertions and failure messages.
    #[derive(Debug, Default, Clone, PartialEq, Eq)]
    pub struct PowerLossReport {
        /// Files removed because their creation was never made durable.
        pub files_removed: Vec<PathBuf>,
        /// Files whose unsynced tail was cut: path, synced length, bytes zeroed.
        pub tails_cut: Vec<(PathBuf, u64, u64)>,
        /// Data files whose truncation was never synced: the simulation cannot restore the lost
        /// bytes, and the engine promises to sync every data truncation before relying on it.
        /// (Index files are derived data: an unsynced resize is modelled as losing their content.)
        pub unsynced_truncations: Vec<PathBuf>,
        /// Writes over durable bytes taken back: path, position, bytes restored.
        pub overwrites_undone: Vec<(PathBuf, u64, u64)>,
    }

    #[derive(Debug, Default, Clone)]
    struct Track {
        written_end: u64,
        synced_end: u64,
        created_unsynced: bool,
        truncated_unsynced: bool,
        mmap_dirty: bool,
        /// Writes since the last sync over durable bytes (below `synced_end`), oldest first:
        /// where, the bytes that were there before, and the order of the write.
        overwritten: Vec<Overwrite>,
        /// Writes over durable bytes so far: each [`Overwrite`]'s place in that order.
        overwrites: u64,
    }

    #[derive(Debug, Clone)]
    struct Overwrite {
        position: u64,
        before: Vec<u8>,
        /// The write's place among the file's writes over durable bytes, once it is written
        /// ([`on_write`]); `None` before: a filesystem sync that starts meanwhile does not cover
        /// it.
        seq: Option<u64>,
        /// Pairs the record with its write ([`before_write`]'s answer).
        token: u64,
    }

    static TOKENS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    /// The tracked files, by directory and then by name: a directory's sync and a power loss
    /// touch that directory's files only, so each costs what the directory holds, not what the
    /// process tracks (thousands of logs' files in a node's tests and benches).
    static FILES: Mutex<Option<Files>> = Mutex::new(None);

    #[derive(Default)]
    struct Files(HashMap<PathBuf, HashMap<OsString, Track>>);

    /// A tracked file's directory and name.
    fn split(path: &Path) -> (&Path, &OsStr) {
        (
            path.parent().unwrap_or(Path::new("")),
            path.file_name().unwrap_or(path.as_os_str()),
        )
    }

    impl Files {
        fn contains(&self, path: &Path) -> bool {
            let (dir, name) = split(path);
            self.0
                .get(dir)
                .is_some_and(|names| names.contains_key(name))
        }

        fn get_mut(&mut self, path: &Path) -> Option<&mut Track> {
            let (dir, name) = split(path);
            self.0.get_mut(dir)?.get_mut(name)
        }

        /// The track of `path`, made by `new` if there is none (the names are copied only then:
        /// this runs at every tracked write).
        fn get_or_insert_with(&mut self, path: &Path, new: impl FnOnce() -> Track) -> &mut Track {
            if !self.contains(path) {
                self.insert(path, new());
            }
            self.get_mut(path).expect("inserted above")
        }

        fn insert(&mut self, path: &Path, track: Track) {
            let (dir, name) = split(path);
            self.0
                .entry(dir.to_path_buf())
                .or_default()
                .insert(name.to_os_string(), track);
        }

        fn remove(&mut self, path: &Path) -> Option<Track> {
            let (dir, name) = split(path);
            let names = self.0.get_mut(dir)?;
            let track = names.remove(name);
            if names.is_empty() {
                self.0.remove(dir);
            }
            track
        }

        /// The tracks of the files directly in `dir`.
        fn in_dir_mut(&mut self, dir: &Path) -> impl Iterator<Item = &mut Track> {
            self.0
                .get_mut(dir)
                .into_iter()
                .flat_map(HashMap::values_mut)
        }

        /// Takes the tracks of the files directly in `dir` out of the table.
        fn take_dir(&mut self, dir: &Path) -> Vec<(PathBuf, Track)> {
            self.0
                .remove(dir)
                .into_iter()
                .flatten()
                .map(|(name, track)| (dir.join(name), track))
                .collect()
        }

        /// Every tracked file under `root` (at any depth), with its track.
        fn under<'a>(&'a self, root: &'a Path) -> impl Iterator<Item = (PathBuf, &'a Track)> {
            self.0
                .iter()
                .filter(move |(dir, _)| dir.starts_with(root))
                .flat_map(|(dir, names)| names.iter().map(|(name, track)| (dir.join(name), track)))
        }

        fn dirs(&self) -> impl Iterator<Item = &PathBuf> {
            self.0.keys()
        }
    }
    static FROZEN: AtomicBool = AtomicBool::new(false);
    static FAILING_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    static FAIL_NEXT_SYNC: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    static HELD_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    static RELEASED: std::sync::Condvar = std::sync::Condvar::new();

    /// Every `fdatasync`/`fsync` of a file in `dir` (and `syncfs` covering it) blocks, as on a
    /// disk that has stopped answering flushes, until the returned guard is released or dropped
    /// (so a failing test does not leave threads blocked): what is written stays readable, and
    /// nothing of it becomes durable.
    #[must_use = "the syncs are held only until the guard is dropped"]
    pub fn hold_syncs(dir: &Path) -> SyncsHeld {
        HELD_DIRS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(dir.to_path_buf());
        SyncsHeld(dir.to_path_buf())
    }

    /// Syncs held by [`hold_syncs`] until this is released or dropped.
    #[derive(Debug)]
    pub struct SyncsHeld(PathBuf);

    impl SyncsHeld {
        /// Lets the held syncs (and later ones) go on.
        pub fn release(self) {}
    }

    impl Drop for SyncsHeld {
        /// Removes this guard's own hold only: another hold of the same directory stays.
        fn drop(&mut self) {
            let mut held = HELD_DIRS.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(at) = held.iter().position(|dir| *dir == self.0) {
                held.swap_remove(at);
            }
            drop(held);
            RELEASED.notify_all();
        }
    }

    /// Whether a hold covers a sync of `path` (a file, or a filesystem's root).
    fn held_for(held: &[PathBuf], path: &Path) -> bool {
        held.iter()
            .any(|dir| path.parent() == Some(dir.as_path()) || dir.starts_with(path))
    }

    /// Blocks while a sync of `path` (a file, or a filesystem's root) is held.
    pub(crate) fn wait_while_held(path: &Path) {
        let mut held = HELD_DIRS.lock().unwrap_or_else(|e| e.into_inner());
        while held_for(&held, path) {
            held = RELEASED.wait(held).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The next `fdatasync`/`fsync` of a file in `dir` fails and later ones succeed again: what
    /// Linux does after a writeback error, which it reports once per file description. A caller
    /// that retried the sync would wrongly see success.
    pub fn fail_next_sync(dir: &Path) {
        FAIL_NEXT_SYNC
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(dir.to_path_buf());
    }

    pub(crate) fn injected_sync_failure(path: &Path) -> Option<std::io::Error> {
        take_next_sync_failure(|dir| path.parent() == Some(dir))
    }

    /// A filesystem sync (`syncfs`) covering `root` fails if a file under it would fail a sync:
    /// a writeback error of any file on the filesystem is reported by the next `syncfs`.
    pub(crate) fn injected_filesystem_sync_failure(root: &Path) -> Option<std::io::Error> {
        frozen()
            .or_else(|| failing_io(|dir| dir.starts_with(root)))
            .or_else(|| take_next_sync_failure(|dir| dir.starts_with(root)))
    }

    /// The error of every write and sync once the process is [`freeze`]d.
    fn frozen() -> Option<std::io::Error> {
        FROZEN
            .load(Ordering::SeqCst)
            .then(|| std::io::Error::other("frozen for a simulated power loss"))
    }

    /// The error of an I/O on a directory [`fail_io`] named that `affects` the I/O.
    fn failing_io(affects: impl Fn(&Path) -> bool) -> Option<std::io::Error> {
        FAILING_DIRS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|dir| affects(dir))
            .then(|| std::io::Error::other("injected i/o failure"))
    }

    /// Takes the first [`fail_next_sync`] whose directory `affects` the sync: its error.
    fn take_next_sync_failure(affects: impl Fn(&Path) -> bool) -> Option<std::io::Error> {
        let mut once = FAIL_NEXT_SYNC.lock().unwrap_or_else(|e| e.into_inner());
        let at = once.iter().position(|dir| affects(dir))?;
        once.remove(at);
        Some(std::io::Error::other("injected writeback error"))
    }

    /// How far each tracked file under `root` was written, and how many of its writes over
    /// durable bytes there were, taken before a filesystem sync: the sync makes that much
    /// durable (writes racing with it are not counted).
    pub(crate) struct Written(Vec<(PathBuf, u64, u64)>);

    pub(crate) fn written_under(root: &Path) -> Written {
        Written(with_files(|files| {
            files
                .under(root)
                .map(|(path, track)| (path, track.written_end, track.overwrites))
                .collect()
        }))
    }

    /// A filesystem sync succeeded: the data `written` names is durable. Only file data is
    /// counted, not directory entries, truncations or mapped writes, which the engine syncs
    /// itself whatever the sync scope: the simulation then proves it does not depend on more.
    pub(crate) fn on_filesystem_sync(written: Written) {
        with_files(|files| {
            for (path, end, overwrites) in written.0 {
                if let Some(track) = files.get_mut(&path) {
                    track.synced_end = track.synced_end.max(end.min(track.written_end));
                    track
                        .overwritten
                        .retain(|overwrite| overwrite.seq.is_none_or(|seq| seq >= overwrites));
                }
            }
        });
    }

    /// From now on every write and sync of a file in `dir` fails with an I/O error, as a dying
    /// disk's would, until [`stop_failing_io`] is called for `dir`.
    pub fn fail_io(dir: &Path) {
        FAILING_DIRS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(dir.to_path_buf());
    }

    /// Ends [`fail_io`] for `dir`.
    pub fn stop_failing_io(dir: &Path) {
        FAILING_DIRS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|d| d != dir);
    }

    /// From now on every write and sync in this process fails: the first step of a whole-process
    /// power loss ([`power_loss_everywhere`]), so that nothing changes the files while they are
    /// rewritten. There is no way back: the process is meant to exit next.
    pub fn freeze() {
        FROZEN.store(true, Ordering::SeqCst);
    }

    pub(crate) fn injected_failure(path: &Path) -> Option<std::io::Error> {
        frozen().or_else(|| failing_io(|dir| path.parent() == Some(dir) || path == dir))
    }

    fn with_files<R>(f: impl FnOnce(&mut Files) -> R) -> R {
        let mut guard: MutexGuard<'_, _> = FILES.lock().unwrap_or_else(|e| e.into_inner());
        f(guard.get_or_insert_with(Files::default))
    }

    pub(crate) fn on_create(path: &Path) {
        with_files(|files| {
            files.insert(
                path,
                Track {
                    created_unsynced: true,
                    ..Track::default()
                },
            );
        });
    }

    /// The track of `path`. A file first seen now was last changed before tracking began (by an
    /// earlier process, or before the last simulated power loss): its first `durable_end` bytes
    /// are taken as durable.
    fn track<'a>(files: &'a mut Files, path: &Path, durable_end: u64) -> &'a mut Track {
        files.get_or_insert_with(path, || Track {
            written_end: durable_end,
            synced_end: durable_end,
            ..Track::default()
        })
    }

    /// Before a write of `len` bytes at `position` of `file`: what it overwrites of the durable
    /// bytes is kept, to go back to at a power loss before the next sync. Returns the token to
    /// hand [`on_write`] once the write is done, if it overwrites any.
    pub(crate) fn before_write(file: &File, path: &Path, position: u64, len: u64) -> Option<u64> {
        with_files(|files| {
            // A file first seen now: all it holds was written before tracking began (its length
            // is read only then, not at every write).
            if !files.contains(path) {
                let file_len = file.metadata().map_or(0, |m| m.len());
                track(files, path, file_len);
            }
            let track = track(files, path, 0);
            let end = position.saturating_add(len).min(track.synced_end);
            if position >= end {
                return None;
            }
            let mut before = vec![0u8; usize::try_from(end - position).expect("test writes fit")];
            file.read_exact_at(&mut before, position).ok()?;
            let token = TOKENS.fetch_add(1, Ordering::Relaxed);
            track.overwritten.push(Overwrite {
                position,
                before,
                seq: None,
                token,
            });
            Some(token)
        })
    }

    pub(crate) fn on_write(path: &Path, position: u64, len: u64, token: Option<u64>) {
        with_files(|files| {
            let track = track(files, path, position);
            track.written_end = track.written_end.max(position + len);
            if let Some(token) = token
                && let Some(written) = track.overwritten.iter_mut().find(|o| o.token == token)
            {
                written.seq = Some(track.overwrites);
                track.overwrites += 1;
            }
        });
    }

    pub(crate) fn on_sync(path: &Path) {
        with_files(|files| {
            if let Some(track) = files.get_mut(path) {
                track.synced_end = track.written_end;
                track.truncated_unsynced = false;
                track.mmap_dirty = false;
                track.overwritten.clear();
            }
        });
    }

    pub(crate) fn on_set_len(path: &Path, len: u64) {
        with_files(|files| {
            let known = files.contains(path);
            let track = track(files, path, len);
            if len < track.written_end || !known {
                track.written_end = track.written_end.min(len);
                track.synced_end = track.synced_end.min(len);
                track.truncated_unsynced = true;
                track.overwritten.retain_mut(|overwrite| {
                    let kept = len.saturating_sub(overwrite.position);
                    overwrite
                        .before
                        .truncate(usize::try_from(kept).unwrap_or(usize::MAX));
                    !overwrite.before.is_empty()
                });
            }
        });
    }

    pub(crate) fn on_remove(path: &Path) {
        with_files(|files| {
            files.remove(path);
        });
    }

    pub(crate) fn on_rename(from: &Path, to: &Path) {
        with_files(|files| {
            if let Some(mut track) = files.remove(from) {
                // The new name only survives a crash once the directory is synced.
                track.created_unsynced = true;
                files.insert(to, track);
            }
        });
    }

    pub(crate) fn on_sync_dir(dir: &Path) {
        with_files(|files| {
            for track in files.in_dir_mut(dir) {
                track.created_unsynced = false;
            }
        });
    }

    pub(crate) fn on_mmap_write(path: &Path) {
        with_files(|files| files.get_or_insert_with(path, Track::default).mmap_dirty = true);
    }

    /// Simulates a power loss for every tracked file in `dir`. Call it after the log was dropped
    /// (never closed: closing syncs everything). Tracking for `dir` is reset afterwards, since
    /// what is left on disk is by definition durable.
    pub fn power_loss(dir: &Path, mode: PowerLoss) -> std::io::Result<PowerLossReport> {
        let tracked: Vec<(PathBuf, Track)> = with_files(|files| files.take_dir(dir));
        let mut rng = SplitMix64(match mode {
            PowerLoss::LoseUnsynced => 0,
            PowerLoss::TornTail { seed } => seed,
        });
        let mut report = PowerLossReport::default();
        for (path, track) in tracked {
            // A file the deleter has (purged, truncated or reset away) goes at the next open
            // whatever it holds, and the deleter may remove it meanwhile.
            let deleted = path
                .to_str()
                .is_some_and(|name| name.ends_with(crate::deleter::DELETED_SUFFIX));
            if deleted || !path.exists() {
                continue;
            }
            if track.created_unsynced {
                std::fs::remove_file(&path)?;
                report.files_removed.push(path);
                continue;
            }
            let is_data = path.extension().is_some_and(|e| e == "log");
            if track.truncated_unsynced && is_data {
                report.unsynced_truncations.push(path.clone());
            }
            let file = OpenOptions::new().write(true).open(&path)?;
            let file_len = file.metadata()?.len();
            let mut keep_from = track.synced_end;
            let mut zero_to = track.written_end.min(file_len);
            if track.mmap_dirty || (track.truncated_unsynced && !is_data) {
                // Mapped writes are not tracked byte by byte: any page may not have reached disk.
                keep_from = 0;
                zero_to = file_len;
            }
            if zero_to > keep_from {
                if let PowerLoss::TornTail { .. } = mode {
                    keep_from += rng.next() % (zero_to - keep_from + 1);
                }
                if zero_to > keep_from {
                    let zeros = vec![
                        0u8;
                        usize::try_from(zero_to - keep_from)
                            .expect("test file fits in memory")
                    ];
                    file.write_all_at(&zeros, keep_from)?;
                    report
                        .tails_cut
                        .push((path.clone(), keep_from, zero_to - keep_from));
                }
            }
            // Writes over durable bytes go back to what was there, newest first so that the
            // durable bytes win where writes overlap; torn, a random prefix of each survives.
            for overwrite in track.overwritten.iter().rev() {
                let len = overwrite.before.len() as u64;
                let kept = match mode {
                    PowerLoss::LoseUnsynced => 0,
                    PowerLoss::TornTail { .. } => rng.next() % (len + 1),
                };
                let from = usize::try_from(kept).expect("test writes fit");
                file.write_all_at(&overwrite.before[from..], overwrite.position + kept)?;
                report.overwrites_undone.push((
                    path.clone(),
                    overwrite.position + kept,
                    len - kept,
                ));
            }
            if zero_to > keep_from || !track.overwritten.is_empty() {
                file.sync_all()?;
            }
        }
        Ok(report)
    }

    /// [`power_loss`] for every directory holding a tracked file: what the whole process's files
    /// look like after a power loss now. Call [`freeze`] first (and let in-flight writes finish),
    /// then exit without closing anything.
    pub fn power_loss_everywhere(mode: PowerLoss) -> std::io::Result<PowerLossReport> {
        let mut dirs: Vec<PathBuf> = with_files(|files| files.dirs().cloned().collect());
        dirs.sort();
        let mut report = PowerLossReport::default();
        for (i, dir) in dirs.iter().enumerate() {
            let mode = match mode {
                PowerLoss::LoseUnsynced => mode,
                PowerLoss::TornTail { seed } => PowerLoss::TornTail {
                    seed: seed.wrapping_add(i as u64),
                },
            };
            let one = power_loss(dir, mode)?;
            report.files_removed.extend(one.files_removed);
            report.tails_cut.extend(one.tails_cut);
            report.unsynced_truncations.extend(one.unsynced_truncations);
            report.overwrites_undone.extend(one.overwrites_undone);
        }
        Ok(report)
    }

    /// A tiny deterministic generator, so that the simulation needs no dependency.
    struct SplitMix64(u64);

    impl SplitMix64 {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn is_held(path: &Path) -> bool {
            held_for(&HELD_DIRS.lock().unwrap_or_else(|e| e.into_inner()), path)
        }

        /// The table by directory answers as the flat one did: a directory's sync and a power
        /// loss take the files directly in it, a filesystem sync every file under its root.
        #[test]
        fn the_table_of_files_sees_a_directory_as_its_direct_files_only() {
            let mut files = Files::default();
            let top = Path::new("/data/p1/00000000000000000000.log");
            let nested = Path::new("/data/p1/sub/00000000000000000000.log");
            let other = Path::new("/data/p2/00000000000000000000.log");
            for path in [top, nested, other] {
                files.insert(
                    path,
                    Track {
                        created_unsynced: true,
                        ..Track::default()
                    },
                );
            }
            for track in files.in_dir_mut(Path::new("/data/p1")) {
                track.created_unsynced = false;
            }
            assert!(!files.get_mut(top).unwrap().created_unsynced);
            assert!(files.get_mut(nested).unwrap().created_unsynced);
            assert!(files.get_mut(other).unwrap().created_unsynced);

            let mut under: Vec<PathBuf> =
                files.under(Path::new("/data/p1")).map(|(p, _)| p).collect();
            under.sort();
            assert_eq!(under, [top, nested]);

            files.insert(
                nested,
                Track {
                    written_end: 7,
                    ..Track::default()
                },
            );
            assert_eq!(
                files.get_mut(nested).unwrap().written_end,
                7,
                "insert replaces"
            );
            let taken: Vec<PathBuf> = files
                .take_dir(Path::new("/data/p1"))
                .into_iter()
                .map(|(p, _)| p)
                .collect();
            assert_eq!(taken, [top]);
            assert!(!files.contains(top));
            assert!(files.contains(nested));

            assert!(files.remove(nested).is_some());
            assert!(files.remove(nested).is_none());
            let dirs: Vec<&PathBuf> = files.dirs().collect();
            assert_eq!(
                dirs,
                [Path::new("/data/p2")],
                "an emptied directory leaves the table"
            );
        }

        #[test]
        fn two_holds_of_one_directory_end_one_at_a_time() {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("00000000000000000000.log");
            let first = hold_syncs(dir.path());
            let second = hold_syncs(dir.path());
            first.release();
            assert!(is_held(&file), "the second hold ended with the first");
            drop(second);
            assert!(!is_held(&file));
        }
    }
}
