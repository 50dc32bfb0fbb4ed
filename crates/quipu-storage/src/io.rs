//! Every file mutation the engine performs goes through this module, so that each write, truncate,
//! fsync, rename and directory sync is deliberate, named, and visible to the power-loss simulation
//! (`fault-injection` feature, see `fault.rs`).
//!
//! Every fsync, fdatasync and directory sync is timed into the `quipu_fsync_duration_seconds`
//! histogram (the `metrics` facade: an atomic load when no recorder is installed).
//!
//! Invariant: a caller that needs a new file's directory entry to survive a crash calls [`sync_dir`]
//! before it reports anything that depends on that file as durable.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::fault;

/// Runs one sync, recording how long it took (failed ones too: a slow failing disk shows).
fn timed_sync(sync: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    let started = std::time::Instant::now();
    let result = sync();
    metrics::histogram!("quipu_fsync_duration_seconds").record(started.elapsed().as_secs_f64());
    result
}

/// Creates a new file (failing if it exists) opened for reading and writing.
pub(crate) fn create(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    fault::on_create(path);
    Ok(file)
}

/// Opens an existing file for reading and writing.
pub(crate) fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

/// Writes all of `buf` at `position`.
pub(crate) fn write_at(file: &File, path: &Path, buf: &[u8], position: u64) -> io::Result<()> {
    if let Some(error) = fault::injected_failure(path) {
        return Err(error);
    }
    let overwrite = fault::before_write(file, path, position, buf.len() as u64);
    file.write_all_at(buf, position)?;
    fault::on_write(path, position, buf.len() as u64, overwrite);
    Ok(())
}

/// `fdatasync`: the file's data and the metadata needed to read it back (its size) are durable.
pub(crate) fn sync_data(file: &File, path: &Path) -> io::Result<()> {
    if let Some(error) =
        fault::injected_failure(path).or_else(|| fault::injected_sync_failure(path))
    {
        return Err(error);
    }
    fault::wait_while_held(path);
    timed_sync(|| file.sync_data())?;
    fault::on_sync(path);
    Ok(())
}

/// `syncfs` of the filesystem holding `dir` (`handle` is `dir`, opened): every file on it, data
/// and metadata, is durable, and the device's cache is flushed. Reports a writeback error of any
/// file on the filesystem since `handle` was opened or last reported one.
pub(crate) fn sync_filesystem(handle: &File, dir: &Path) -> io::Result<()> {
    if let Some(error) = fault::injected_filesystem_sync_failure(dir) {
        return Err(error);
    }
    fault::wait_while_held(dir);
    let written = fault::written_under(dir);
    timed_sync(|| rustix::fs::syncfs(handle).map_err(io::Error::from))?;
    fault::on_filesystem_sync(written);
    Ok(())
}

/// `fsync`: data and all metadata are durable.
pub(crate) fn sync_all(file: &File, path: &Path) -> io::Result<()> {
    if let Some(error) =
        fault::injected_failure(path).or_else(|| fault::injected_sync_failure(path))
    {
        return Err(error);
    }
    fault::wait_while_held(path);
    timed_sync(|| file.sync_all())?;
    fault::on_sync(path);
    Ok(())
}

/// Sets the file length. Shrinking discards the bytes past `len`; growing adds a sparse zero
/// region. Callers that shrink must sync before the shrink is relied upon.
pub(crate) fn set_len(file: &File, path: &Path, len: u64) -> io::Result<()> {
    file.set_len(len)?;
    fault::on_set_len(path, len);
    Ok(())
}

/// Allocates real blocks for `[offset, offset + len)` (zero-filled, extending the file), so that
/// later writes and `fdatasync`s into the region need no block allocation. Falls back to a sparse
/// `set_len` where the file system cannot preallocate.
pub(crate) fn preallocate(file: &File, path: &Path, offset: u64, len: u64) -> io::Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), offset, len) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP) => {
            let end = offset.saturating_add(len);
            if file.metadata()?.len() < end {
                set_len(file, path, end)?;
            }
            Ok(())
        }
        Err(errno) => Err(errno.into()),
    }
}

/// Removes a file. The removal is durable only after [`sync_dir`] on its directory.
pub(crate) fn remove(path: &Path) -> io::Result<()> {
    std::fs::remove_file(path)?;
    fault::on_remove(path);
    Ok(())
}

/// [`remove`], where a file already gone is not an error.
pub(crate) fn remove_if_present(path: &Path) -> io::Result<()> {
    match remove(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Renames `from` over `to` atomically. Durable only after [`sync_dir`].
pub(crate) fn rename(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)?;
    fault::on_rename(from, to);
    Ok(())
}

/// Renames `from` to `to`, which must not exist (`RENAME_NOREPLACE`; where the filesystem lacks
/// it, checked first). Durable only after [`sync_dir`].
pub(crate) fn rename_new(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => {}
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            if to.exists() {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            std::fs::rename(from, to)?;
        }
        Err(errno) => return Err(errno.into()),
    }
    fault::on_rename(from, to);
    Ok(())
}

/// Makes the directory's entries (created, removed, renamed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    if let Some(error) = fault::injected_failure(dir) {
        return Err(error);
    }
    let file = File::open(dir)?;
    timed_sync(|| file.sync_all())?;
    fault::on_sync_dir(dir);
    Ok(())
}
